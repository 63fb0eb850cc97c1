"""Names in params.yaml -> model constructors (one place; the schema's enums must match)."""

from __future__ import annotations

from torch import nn

from .discriminators import ResNet3, timm_backbone
from .unet import CNNUNet


def _cnn_unet(cfg: dict, image_size: int) -> nn.Module:
    return CNNUNet(image_size, cfg["width"], cfg["depth"], cfg["noise_dim"], cfg["noise_channels"], cfg["dropout"])


GENERATORS = {"cnn_unet": _cnn_unet}

DISCRIMINATORS = {
    "resnet3": lambda cfg, n: ResNet3(n, cfg["width"]),
    "resnet18": lambda cfg, n: timm_backbone("resnet18", n, cfg.get("weights", {}).get("resnet18")),
    "resnet50": lambda cfg, n: timm_backbone("resnet50", n, cfg.get("weights", {}).get("resnet50")),
}


def build_generator(name: str, cfg: dict, image_size: int) -> nn.Module:
    if name not in GENERATORS:
        raise KeyError(f"unknown generator {name!r}; known: {', '.join(GENERATORS)}")
    return GENERATORS[name](cfg, image_size)


def build_discriminator(name: str, cfg: dict, num_classes: int = 3) -> nn.Module:
    if name not in DISCRIMINATORS:
        raise KeyError(f"unknown discriminator {name!r}; known: {', '.join(DISCRIMINATORS)}")
    return DISCRIMINATORS[name](cfg, num_classes)


def cam_target_layer(model: nn.Module) -> nn.Module:
    """The last convolutional stage, where Grad-CAM reads activations and gradients."""
    if isinstance(model, ResNet3):
        return model.stages[-1]
    if hasattr(model, "layer4"):
        return model.layer4
    raise KeyError(f"no Grad-CAM layer known for {type(model).__name__}")
