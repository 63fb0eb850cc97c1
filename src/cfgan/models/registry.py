"""Names in params.yaml -> model constructors (one place; the schema's enums must match).

Generators take (params['generator'], image_size); discriminators take
(params['discriminator'], image_size, num_classes): 3 logits for D, 2 for the plain twin.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .discriminators import Hybrid, ResNet3, timm_backbone
from .unet import CNNUNet


def _cnn_unet(cfg: dict, image_size: int) -> nn.Module:
    c = cfg["cnn_unet"]
    return CNNUNet(image_size, c["width"], c["depth"], cfg["noise_dim"], cfg["noise_channels"], cfg["dropout"],
                   upsample=c["upsample"], padding=c["padding"], output=c.get("output", "residual"),
                   keep_mode=c.get("keep_mode", False))


def _swin_unet(cfg: dict, image_size: int) -> nn.Module:
    from .swin_unet import SwinUNet  # imports timm: only when a Swin UNet is built (see timm_backbone)

    c = cfg["swin_unet"]
    return SwinUNet(image_size, c["encoder"], c["window_size"], c.get("encoder_weights"), cfg["noise_dim"],
                    cfg["noise_channels"], cfg["dropout"], c["codebook_size"], decoder_depth=c["decoder_depth"])


GENERATORS: dict[str, Callable[[dict, int], nn.Module]] = {"cnn_unet": _cnn_unet, "swin_unet": _swin_unet}


def _weights(cfg: dict, key: str) -> str | None:
    return (cfg.get("weights") or {}).get(key)


def _swin(cfg: dict, image_size: int, n: int, timm_name: str, key: str) -> nn.Module:
    return timm_backbone(timm_name, n, _weights(cfg, key), key, img_size=image_size, window_size=cfg["swin"]["window_size"])


def _resnet3(cfg: dict, n: int) -> ResNet3:
    return ResNet3(n, cfg["resnet3"]["width"], pool=cfg["resnet3"].get("pool", "avg"))  # pool: absent in older checkpoints


DISCRIMINATORS: dict[str, Callable[[dict, int, int], nn.Module]] = {
    "resnet3": lambda cfg, size, n: _resnet3(cfg, n),
    "resnet18": lambda cfg, size, n: timm_backbone("resnet18", n, _weights(cfg, "resnet18"), "resnet18"),
    "resnet50": lambda cfg, size, n: timm_backbone("resnet50", n, _weights(cfg, "resnet50"), "resnet50"),
    "swin_small": lambda cfg, size, n: _swin(cfg, size, n, "swin_small_patch4_window7_224", "swin_small"),
    "hybrid": lambda cfg, size, n: Hybrid(_resnet3(cfg, n),
                                          _swin(cfg, size, n, "swin_tiny_patch4_window7_224", "swin_tiny")),
}


class UnknownModel(KeyError):
    """A generator or discriminator name the registry lacks (a checkpoint of another version names one)."""


def build_generator(name: str, cfg: dict, image_size: int) -> nn.Module:
    if name not in GENERATORS:
        raise UnknownModel(f"unknown generator {name!r}; known: {', '.join(GENERATORS)}")
    return GENERATORS[name](cfg, image_size)


class Segmenter(nn.Module):
    """A generator architecture as a supervised segmenter (the saliency baselines of table 5):
    its decoder's last feature map -> one mask logit per pixel; no noise (z = 0)."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        width = unet.to_image.in_features if isinstance(unet.to_image, nn.Linear) else unet.to_image.in_channels
        self.mask_head = nn.Linear(width, 1)
        self.nhwc = getattr(unet, "decodes_nhwc", False)  # the Swin UNet's decoder keeps channels last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.zeros(x.shape[0], self.unet.noise_dim, device=x.device, dtype=x.dtype)
        h, _ = self.unet.decode(x, z)
        h = h if self.nhwc else h.permute(0, 2, 3, 1)
        return self.mask_head(h)[..., 0]  # B x H x W logits


def build_segmenter(name: str, cfg: dict, image_size: int) -> nn.Module:
    return Segmenter(build_generator(name, cfg, image_size))


def build_discriminator(name: str, cfg: dict, image_size: int, num_classes: int = 3) -> nn.Module:
    if name not in DISCRIMINATORS:
        raise UnknownModel(f"unknown discriminator {name!r}; known: {', '.join(DISCRIMINATORS)}")
    return DISCRIMINATORS[name](cfg, image_size, num_classes)


def _nhwc_to_nchw(t):
    return t.permute(0, 3, 1, 2)


def cam_target_layer(model: nn.Module) -> tuple[nn.Module, Callable | None]:
    """Where Grad-CAM reads activations and gradients, and how to make them NCHW.

    CNNs: the last convolutional stage. timm Swin: the last block's norm2, whose output is NHWC.
    Hybrid: its ResNet3 branch (the Swin branch's maps are coarser)."""
    if isinstance(model, Hybrid):
        return cam_target_layer(model.resnet)
    if isinstance(model, ResNet3):
        return model.stages[-1], None
    if hasattr(model, "layer4"):
        return model.layer4, None
    if hasattr(model, "layers") and hasattr(model.layers[-1], "blocks"):
        return model.layers[-1].blocks[-1].norm2, _nhwc_to_nchw
    raise KeyError(f"no Grad-CAM layer known for {type(model).__name__}")
