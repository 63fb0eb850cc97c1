import pytest
import torch

from cfgan.models import DISCRIMINATORS, build_discriminator, build_generator
from cfgan.train.losses import discriminator_loss, generator_losses

GEN_CFG = {"width": 8, "depth": 2, "noise_dim": 4, "noise_channels": 1, "dropout": 0.5}


def test_cnn_unet_shapes_identity_start_and_noise():
    g = build_generator("cnn_unet", GEN_CFG, 16)
    x = torch.rand(3, 3, 16, 16)
    x_cf, logits = g.eval()(x)
    assert x_cf.shape == x.shape and logits.shape == (3, 2)
    assert torch.equal(x_cf, x)  # the image branch starts as the identity
    torch.nn.init.normal_(g.to_image.weight, std=0.5)
    a, _ = g(x, torch.zeros(3, 4))
    b, _ = g(x, torch.ones(3, 4))
    assert not torch.allclose(a, b)  # z reaches the output through every upsampling layer
    assert a.min() >= 0 and a.max() <= 1


def test_unet_rejects_a_size_it_cannot_halve():
    with pytest.raises(ValueError, match="divisible"):
        build_generator("cnn_unet", GEN_CFG, 18)


@pytest.mark.parametrize("name", sorted(DISCRIMINATORS))
def test_discriminators_give_three_logits_and_baselines_two(name):
    x = torch.rand(2, 3, 32, 32)
    assert build_discriminator(name, {"width": 8}, 3).eval()(x).shape == (2, 3)
    assert build_discriminator(name, {"width": 8}, 2).eval()(x).shape == (2, 2)


def test_unknown_model_name():
    with pytest.raises(KeyError, match="known"):
        build_discriminator("vgg", {"width": 8})


def test_missing_local_weight_file_is_a_clear_error():
    from cfgan.errors import UserError
    with pytest.raises(UserError, match="not found"):
        build_discriminator("resnet18", {"width": 8, "weights": {"resnet18": "/nope/resnet18.pth"}})


def test_losses_cycle_term_and_weights():
    torch.manual_seed(0)
    g = build_generator("cnn_unet", GEN_CFG, 16)
    torch.nn.init.normal_(g.to_image.weight, std=0.1)
    d = build_discriminator("resnet3", {"width": 8}, 3)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 0, 1])
    x_cf, logits = g(x)
    w = {"adversarial": 1.0, "auxiliary": 1.0, "l1": 10.0, "cycle": 1.0}
    none = generator_losses(g, d, x, y, x_cf, logits, w, cycles=0, cycle_weights=[1.0])
    assert none["cycle"].item() == 0
    one = generator_losses(g, d, x, y, x_cf, logits, w, cycles=1, cycle_weights=[1.0])
    assert one["cycle"].item() > 0
    assert torch.isclose(one["l1"], 10 * (x - x_cf).abs().mean())
    assert torch.isclose(one["total"], one["adversarial"] + one["auxiliary"] + one["l1"] + one["cycle"])
    half = generator_losses(g, d, x, y, x_cf, logits, {**w, "cycle": 0.5}, cycles=1, cycle_weights=[1.0])
    assert half["cycle"].item() < one["cycle"].item()
    assert discriminator_loss(d, x, y, x_cf).item() > 0
