import pytest
import torch

from cfgan.models import DISCRIMINATORS, build_discriminator, build_generator, build_segmenter
from cfgan.train.losses import discriminator_loss, generator_losses

GEN_CFG = {"noise_dim": 4, "noise_channels": 1, "dropout": 0.5, "cnn_unet": {"width": 8, "depth": 2, "upsample": "resize", "padding": "reflect"},
           "swin_unet": {"encoder": "swin_tiny_patch4_window7_224", "window_size": 2, "encoder_weights": None,
                         "codebook_size": 16, "decoder_depth": 1}}
DIS_CFG = {"resnet3": {"width": 8}, "swin": {"window_size": 2}}


@pytest.mark.parametrize("upsample,padding", [("resize", "reflect"), ("transpose", "zeros")])
def test_cnn_unet_shapes_identity_start_and_noise(upsample, padding):
    cfg = {**GEN_CFG, "cnn_unet": {**GEN_CFG["cnn_unet"], "upsample": upsample, "padding": padding}}
    g = build_generator("cnn_unet", cfg, 16)
    has_transpose = any(isinstance(m, torch.nn.ConvTranspose2d) for m in g.modules())
    assert has_transpose == (upsample == "transpose")
    assert all(m.padding_mode == padding for m in g.modules() if type(m) is torch.nn.Conv2d and m.padding != (0, 0))
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
    assert build_discriminator(name, DIS_CFG, 32, 3).eval()(x).shape == (2, 3)
    assert build_discriminator(name, DIS_CFG, 32, 2).eval()(x).shape == (2, 2)


def test_unknown_model_name():
    with pytest.raises(KeyError, match="known"):
        build_discriminator("vgg", DIS_CFG, 32)


def test_missing_local_weight_file_is_a_clear_error():
    from cfgan.errors import UserError
    with pytest.raises(UserError, match="not found"):
        build_discriminator("resnet18", {**DIS_CFG, "weights": {"resnet18": "/nope/resnet18.pth"}}, 32)


def test_losses_cycle_term_and_weights():
    torch.manual_seed(0)
    g = build_generator("cnn_unet", GEN_CFG, 16)
    torch.nn.init.normal_(g.to_image.weight, std=0.1)
    d = build_discriminator("resnet3", DIS_CFG, 16, 3)
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 0, 1])
    x_cf, logits = g(x)
    w = {"adversarial": 1.0, "auxiliary": 1.0, "l1": 10.0, "cycle": 1.0, "vq": 1.0}
    none = generator_losses(g, d, x, y, x_cf, logits, w, cycles=0, cycle_weights=[1.0])
    assert none["cycle"].item() == 0
    one = generator_losses(g, d, x, y, x_cf, logits, w, cycles=1, cycle_weights=[1.0])
    assert one["cycle"].item() > 0
    assert torch.isclose(one["l1"], 10 * (x - x_cf).abs().mean())
    assert one["vq"].item() == 0  # the CNN UNet has no VQ bottleneck
    assert torch.isclose(one["total"], one["adversarial"] + one["auxiliary"] + one["l1"] + one["cycle"])
    half = generator_losses(g, d, x, y, x_cf, logits, {**w, "cycle": 0.5}, cycles=1, cycle_weights=[1.0])
    assert half["cycle"].item() < one["cycle"].item()
    assert discriminator_loss(d, x, y, x_cf).item() > 0


def test_swin_unet_identity_start_vq_loss_and_noise():
    g = build_generator("swin_unet", GEN_CFG, 64)
    x = torch.rand(2, 3, 64, 64)
    x_cf, logits = g.eval()(x)
    assert torch.equal(x_cf, x) and logits.shape == (2, 2)
    assert g.aux_loss.item() > 0  # codebook + commitment loss of the VQ bottleneck
    torch.nn.init.normal_(g.to_image.weight, std=0.5)
    a, _ = g(x, torch.zeros(2, 4))
    b, _ = g(x, torch.ones(2, 4))
    assert not torch.allclose(a, b)


def test_vq_straight_through_gradient():
    from cfgan.models.quantize import VectorQuantizer
    vq = VectorQuantizer(8, 4)
    z = torch.randn(5, 4, requires_grad=True)
    q, loss = vq(z)
    assert torch.allclose(q, vq.codebook.weight[((z[:, None] - vq.codebook.weight[None]) ** 2).sum(-1).argmin(1)])
    q.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # straight through


def test_augmentation_is_identity_when_disabled_and_stays_in_range():
    from cfgan.data.augment import augment
    x = torch.rand(4, 3, 16, 16)
    off = {"scale": [1.0, 1.0], "rotation": 0, "rot90": False, "hflip": False, "vflip": False,
           "brightness": 0.0, "hue": 0.0, "blur_p": 0.0}
    assert torch.allclose(augment(x, off, torch.Generator().manual_seed(0)), x, atol=1e-5)
    on = {"scale": [0.5, 1.0], "rotation": 20, "rot90": True, "hflip": True, "vflip": True,
          "brightness": 0.2, "hue": 0.05, "blur_p": 0.5}
    y = augment(x, on, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and not torch.allclose(y, x)
    flip_only = {**off, "hflip": True}
    flips = [augment(x[:1], flip_only, torch.Generator().manual_seed(s)) for s in range(8)]
    assert any(torch.allclose(f, x[:1].flip(3), atol=1e-5) for f in flips)


@pytest.mark.slow
def test_every_paper_pairing_trains_one_step_at_224px():
    """The paper grid at its real size: every generator x discriminator, one D and one G step, at
    the default precision (bf16 and channels-last on a CPU with native bf16)."""
    from cfgan.compute import resolve
    from cfgan.config import load_params
    from cfgan.models import DISCRIMINATORS, GENERATORS
    from cfgan.train.gan import gan_step, optimizers
    from conftest import ROOT
    params = load_params([ROOT / "params.yaml"])
    assert set(params["grid"]["generators"]) == set(GENERATORS)
    assert set(params["grid"]["discriminators"]) == set(DISCRIMINATORS)
    cfg, cx = params["train"], resolve(params)
    x, y = torch.rand(2, 3, 224, 224), torch.tensor([0, 1])
    for gname in params["grid"]["generators"]:
        g = cx.prepare(build_generator(gname, params["generator"], 224))
        for dname in params["grid"]["discriminators"]:
            d = cx.prepare(build_discriminator(dname, params["discriminator"], 224, 3))
            opt_g, opt_d = optimizers(g, d, cfg)
            before = [p.detach().clone() for p in g.parameters()]
            losses = gan_step(g, d, opt_g, opt_d, x, y, cfg, cycles=1, update_g=True, compute=cx)
            assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), (gname, dname, losses)
            assert any(not torch.equal(a, b) for a, b in zip(before, g.parameters())), (gname, dname)


def test_timm_backbones_load_weights_from_a_local_file(tmp_path):
    """No hub here: ImageNet weights come from a file named in params (classifier dropped)."""
    import timm
    source = timm.create_model("resnet18", pretrained=False, num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    d = build_discriminator("resnet18", {**DIS_CFG, "weights": {"resnet18": str(path)}}, 32, 3)
    assert torch.equal(d.conv1.weight, source.conv1.weight)
    assert d.fc.out_features == 3
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
    spath = tmp_path / "swin_tiny.pth"
    torch.save(swin.state_dict(), spath)
    g = build_generator("swin_unet", {**GEN_CFG, "swin_unet": {**GEN_CFG["swin_unet"], "encoder_weights": str(spath)}}, 64)
    assert torch.equal(g.encoder.patch_embed.proj.weight, swin.patch_embed.proj.weight)


def test_steps_without_timm_models_do_not_import_torchvision():
    """timm, torchattacks and pytorch-fid each pull in torchvision (~2 s of CPU per process, and
    the tiny profile starts ~20 processes): they are imported only where they are used."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import cfgan.train.gan, cfgan.train.baselines, cfgan.train.segmenters, cfgan.evaluate.run, "
            "cfgan.evaluate.references, cfgan.evaluate.multiclass, cfgan.report.build, cfgan.explain\n"
            "from cfgan.models import build_discriminator, build_generator, build_segmenter\n"
            "from cfgan.train.common import versions\n"
            f"build_generator('cnn_unet', {GEN_CFG!r}, 16); build_discriminator('resnet3', {DIS_CFG!r}, 16, 3)\n"
            f"build_segmenter('cnn_unet', {GEN_CFG!r}, 16); versions()\n"
            "print(sorted(m for m in ('torchvision', 'timm', 'torchattacks', 'pytorch_fid') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    # and a timm architecture still builds (the import moved, it did not go away)
    assert build_discriminator("resnet18", DIS_CFG, 32, 3).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    assert build_segmenter("swin_unet", GEN_CFG, 32)(torch.rand(1, 3, 32, 32)).shape == (1, 32, 32)
    assert build_segmenter("cnn_unet", GEN_CFG, 16)(torch.rand(1, 3, 16, 16)).shape == (1, 16, 16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_resnet3_strided_skip_is_the_strided_1x1_convolution_to_the_bit(dtype, layout):
    """ResNet3's strided skip (StridedConv1x1) gives nn.Conv2d(cin, cout, 1, 2)'s outputs and gradients
    bit for bit, with its parameters under the same keys: old checkpoints load and give the same numbers."""
    from cfgan.models.discriminators import StridedConv1x1
    torch.manual_seed(0)
    ours, plain = StridedConv1x1(16, 32, 2), torch.nn.Conv2d(16, 32, 1, 2, bias=False)
    plain.load_state_dict(ours.state_dict())
    results = []
    for conv in (ours, plain):
        conv = conv.to(memory_format=layout)
        x = torch.rand(4, 16, 24, 24, generator=torch.Generator().manual_seed(1)).to(memory_format=layout).requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = conv(x)
        out.float().square().sum().backward()
        results.append((out.detach(), x.grad, conv.weight.grad))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_narrow_resnet3_trains_channels_last_at_odd_batch_sizes():
    """Width 8, channels-last, batches of 3 and 5, backward: a strided 1x1 nn.Conv2d there corrupts the heap on
    AVX-512 CPUs under torch 2.14 (a crash). In a child process, so that a crash fails this test only."""
    import subprocess
    import sys
    code = """
import torch
from cfgan.config import load_params
from cfgan.models import build_discriminator
from pathlib import Path
p = load_params([Path('params.yaml')])
d = build_discriminator('resnet3', {**p['discriminator'], 'resnet3': {'width': 8}}, 32, 3).to(memory_format=torch.channels_last)
for n in (3, 5, 3, 5):
    for bf16 in (False, True):
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            out = d(torch.rand(n, 3, 32, 32).to(memory_format=torch.channels_last))
        out.float().sum().backward()
print('ok')
"""
    from conftest import ROOT
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def test_resnet3_max_pool_keeps_a_small_defects_response_whatever_its_share_of_the_crop(write_params):
    """discriminator.resnet3.pool: max (not from the paper) pools the last stage by its maximum, so a
    response confined to one position counts in full, where the average divides it by the positions;
    the weights are the same either way (a checkpoint's state dict fits both), and the schema names
    the allowed pools."""
    from cfgan.config import load_params
    from cfgan.errors import UserError
    torch.manual_seed(0)
    avg = build_discriminator("resnet3", {**DIS_CFG, "resnet3": {"width": 8}}, 16, 3).eval()
    mx = build_discriminator("resnet3", {**DIS_CFG, "resnet3": {"width": 8, "pool": "max"}}, 16, 3).eval()
    mx.load_state_dict(avg.state_dict())
    features = torch.zeros(1, 32, 4, 4)
    features[0, 0, 1, 2] = 16.0                  # one position of 16 lights up one channel
    linear = avg.head[-1]
    with torch.no_grad():
        assert torch.allclose(avg.head(features), linear(torch.eye(32)[:1] * 1.0))    # 16 / 16 positions
        assert torch.allclose(mx.head(features), linear(torch.eye(32)[:1] * 16.0))   # the position's own value
        x = torch.rand(2, 3, 16, 16)
        assert mx(x).shape == avg(x).shape == (2, 3) and not torch.allclose(mx(x), avg(x))
    assert load_params(write_params({"discriminator": {"resnet3": {"width": 8, "pool": "max"}}}, "a.yaml"))["discriminator"]["resnet3"]["pool"] == "max"
    with pytest.raises(UserError, match="pool"):
        load_params(write_params({"discriminator": {"resnet3": {"width": 8, "pool": "min"}}}, "b.yaml"))


def _layout(t):
    """'cf', 'cl' or 'other' for a 4-D tensor of more than 3 channels and more than one pixel; None otherwise
    (image-sized tensors and one-channel planes are contiguous in both layouts or meant to be channels-first)."""
    if not isinstance(t, torch.Tensor) or t.dim() != 4 or t.shape[1] <= 3 or t.shape[2] * t.shape[3] == 1:
        return None
    if t.is_contiguous():
        return "cf"
    return "cl" if t.is_contiguous(memory_format=torch.channels_last) else "other"


@pytest.mark.parametrize("upsample", ["resize", "transpose"])
def test_channels_last_models_never_mix_layouts_in_a_training_step(upsample):
    """Under compute.channels_last, every op of G's and D's forward and backward reads its feature maps in one
    layout: a backward kernel that returns a channels-first gradient (a global average pool, a slice, a sum over
    the pixels, cat's parts) made each element-wise op after it read two layouts, 20-30x slower (models/layout.py)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from cfgan.models.layout import keep_layout

    class Mixed(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            layouts = {_layout(a) for a in [*args, *(kwargs or {}).values()]} - {None}
            if len(layouts) > 1:
                self.ops.add(f"{func} {sorted(layouts)}")
            return func(*args, **(kwargs or {}))

    cfg = {**GEN_CFG, "cnn_unet": {**GEN_CFG["cnn_unet"], "upsample": upsample}}
    g = build_generator("cnn_unet", cfg, 16).to(memory_format=torch.channels_last)
    d = build_discriminator("resnet3", DIS_CFG, 16, 3).to(memory_format=torch.channels_last)
    x = torch.rand(4, 3, 16, 16)
    mixed = Mixed()
    with mixed, torch.autocast("cpu", dtype=torch.bfloat16):
        x_cf, logits = g(x)
        loss = d(torch.cat([x, x_cf])).float().logsumexp(1).mean() + logits.float().logsumexp(1).mean()
        loss.backward()
    assert not mixed.ops, mixed.ops
    # keep_layout changes the layout of a gradient, never its values
    h = torch.rand(2, 8, 5, 5).to(memory_format=torch.channels_last).requires_grad_()
    plain = h.detach().clone().requires_grad_()
    keep_layout(h).mean((2, 3)).square().sum().backward()
    plain.mean((2, 3)).square().sum().backward()
    assert h.grad.is_contiguous(memory_format=torch.channels_last) and torch.equal(h.grad, plain.grad)
