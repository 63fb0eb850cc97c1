"""`rebuilds` reads only a stale checkpoint's errors as "made for another architecture or version"
(issue 46): a bug in the code propagates as itself."""

import pytest

from cfgan.errors import UserError
from cfgan.models import build_discriminator, build_generator


def _gan_checkpoint(tiny_params):
    g = build_generator("cnn_unet", tiny_params["generator"], 32)
    d = build_discriminator("resnet3", tiny_params["discriminator"], 32, 3)
    return {"kind": "gan", "g": g.state_dict(), "d": d.state_dict(), "params": tiny_params, "file": "x/checkpoint.pt",
            "summary": {"run": "cnn_unet-resnet3-c1-s0", "generator": "cnn_unet", "discriminator": "resnet3", "image_size": 32}}


def test_a_bug_inside_a_constructor_propagates(tiny_params, monkeypatch):
    """Old behaviour: any TypeError (or KeyError, ValueError, RuntimeError) became the UserError
    'made for another architecture or version', hiding the bug and its traceback."""
    from cfgan.train import gan

    def broken(*args, **kwargs):
        raise TypeError("a bug: unexpected keyword argument 'widht'")

    monkeypatch.setattr(gan, "build_generator", broken)
    with pytest.raises(TypeError, match="widht"):
        gan.load_gan(_gan_checkpoint(tiny_params))

    def lookup_bug(*args, **kwargs):
        return {}["not a checkpoint key"]  # a KeyError of the code's own dict, not of the checkpoint

    monkeypatch.setattr(gan, "build_generator", lookup_bug)
    with pytest.raises(KeyError) as caught:
        gan.load_gan(_gan_checkpoint(tiny_params))
    assert not isinstance(caught.value, UserError)


@pytest.mark.parametrize("change, detail", [
    (lambda c: c["g"].pop(next(iter(c["g"]))), "Missing key(s)"),  # a state dict without one of its keys
    (lambda c: c["summary"].pop("image_size"), "no entry 'image_size'"),  # a summary key missing
    (lambda c: c["params"]["generator"]["cnn_unet"].pop("upsample"), "no entry 'upsample'"),  # a params key of older code
    (lambda c: c["summary"].update(discriminator="vit"), "unknown discriminator 'vit'"),  # a name the registry lacks
])
def test_a_stale_checkpoint_still_gets_the_friendly_message(tiny_params, change, detail):
    from cfgan.train.gan import load_gan
    import copy
    ckpt = copy.deepcopy(_gan_checkpoint(tiny_params))
    change(ckpt)
    with pytest.raises(UserError, match="another architecture or version") as caught:
        load_gan(ckpt)
    assert detail in str(caught.value) and str(caught.value).startswith("x/checkpoint.pt: cannot rebuild its models")
    g, d, _ = load_gan(_gan_checkpoint(tiny_params))  # the intact checkpoint rebuilds
    assert not g.training and not d.training
