"""The compute setting (device, precision): what `auto` resolves to, clear errors for a device that
is not there, and the bf16 paths checked on the CPU (the GPU runs the same code)."""

import pandas as pd
import pytest
import torch

from cfgan import compute
from cfgan.compute import Compute, cpu_model, resolve
from cfgan.errors import UserError
from cfgan.models import build_discriminator, build_generator
from cfgan.models.quantize import VectorQuantizer
from cfgan.train.gan import gan_step, optimizers
from conftest import ROOT
from test_models import DIS_CFG, GEN_CFG

BF16 = Compute(torch.device("cpu"), "bf16", channels_last=True)
FP32 = Compute(torch.device("cpu"), "fp32", channels_last=False)


@pytest.mark.parametrize("amx,expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_is_bf16_only_where_the_cpu_has_native_bf16(monkeypatch, amx, expected):
    monkeypatch.delenv(compute.ENV_DEVICE, raising=False)
    monkeypatch.setattr(compute, "cpu_has_native_bf16", lambda: amx)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cx = resolve({"compute": {"device": "auto", "precision": "auto"}})
    assert (cx.device.type, cx.precision, cx.channels_last) == ("cpu", expected, expected == "bf16")
    assert resolve({}).precision == expected  # params without a compute block: auto
    assert resolve({"compute": {"precision": "fp32"}}).precision == "fp32"  # an explicit choice wins
    assert resolve({"compute": {"precision": "bf16"}}).channels_last


def test_channels_last_auto_follows_bf16_and_an_explicit_setting_wins(monkeypatch):
    monkeypatch.delenv(compute.ENV_DEVICE, raising=False)
    monkeypatch.setattr(compute, "cpu_has_native_bf16", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not resolve({"compute": {"channels_last": "auto"}}).channels_last          # fp32 on a CPU
    assert resolve({"compute": {"channels_last": True}}).channels_last                # narrow models in fp32
    assert not resolve({"compute": {"precision": "bf16", "channels_last": False}}).channels_last
    with pytest.raises(UserError, match="compute.channels_last is 'yes'; allowed values: auto, true, false"):
        resolve({"compute": {"channels_last": "yes"}})
    model = resolve({"compute": {"channels_last": True}}).prepare(torch.nn.Conv2d(3, 4, 3))
    assert model.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("amx", [True, False])
def test_bf16_forced_on_a_cpu_without_bf16_units_warns_once(monkeypatch, capsys, amx):
    """There torch emulates bf16 (tens of times slower than fp32): the user is told, once, on stderr."""
    monkeypatch.delenv(compute.ENV_DEVICE, raising=False)
    monkeypatch.setattr(compute, "cpu_has_native_bf16", lambda: amx)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    compute.warn_emulated_bf16.cache_clear()
    for _ in range(2):
        assert resolve({"compute": {"precision": "bf16"}}).precision == "bf16"
    resolve({"compute": {"precision": "auto"}})
    err = capsys.readouterr().err
    assert err.count("WARNING compute.precision: bf16 on a CPU without native bf16") == (0 if amx else 1)


@pytest.mark.parametrize("amx,avx512_bf16,native", [(True, False, True), (False, True, True), (False, False, False)])
def test_native_bf16_is_amx_or_avx512_bf16(monkeypatch, amx, avx512_bf16, native):
    """AVX512-BF16 without AMX (AMD Zen 4/5, Intel Cooper Lake) counts: measured on a 2-core Zen 5, bf16
    matmuls 4.1-4.9x and the CrackForest GAN step 2.0-2.5x faster than fp32 (benchmarks/README.md)."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert compute.cpu_has_native_bf16() is native


def test_cuda_asked_for_where_there_is_none_is_an_error_naming_what_is_missing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv(compute.ENV_DEVICE, raising=False)
    with pytest.raises(UserError, match=r"compute.device is 'cuda', but there is no CUDA device: .*(driver|CPU-only|CUDA_VISIBLE)"):
        resolve({"compute": {"device": "cuda"}})
    monkeypatch.setenv(compute.ENV_DEVICE, "cuda")  # the environment overrides params, and the error says so
    with pytest.raises(UserError, match="CFGAN_DEVICE is 'cuda'"):
        resolve({"compute": {"device": "cpu"}})
    monkeypatch.setenv(compute.ENV_DEVICE, "tpu")
    with pytest.raises(UserError, match="CFGAN_DEVICE is 'tpu'; allowed values: auto, cuda, cpu"):
        resolve({})
    monkeypatch.setenv(compute.ENV_DEVICE, "cpu")
    assert resolve({"compute": {"device": "cuda"}}).device.type == "cpu"


def test_cfgan_train_with_cuda_missing_exits_2_and_writes_nothing(small_manifest, tmp_path, monkeypatch, capsys):
    from cfgan.cli import main
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(compute.ENV_DEVICE, "cuda")
    _, manifest = small_manifest
    run = tmp_path / "run"
    assert main(["train", "--params", str(ROOT / "params.yaml"), "--manifest", str(manifest), "--dataset", "synthetic",
                 "--run", "cnn_unet-resnet3-c0-s0", "--out", str(run)]) == 2
    assert "there is no CUDA device" in capsys.readouterr().err
    assert not run.exists()


def test_the_vq_layer_picks_the_same_codes_under_bf16_autocast_as_in_fp32():
    """z^2 - 2ze + e^2 cancels badly: computed in bf16 (what autocast does to the product even after
    .float()), codes close to each other swap. The layer turns autocast off for its distances."""
    torch.manual_seed(0)
    vq = VectorQuantizer(512, 64)
    with torch.no_grad():  # codes far from 0 and close to each other, as bottleneck features can be
        vq.codebook.weight.copy_(5 + 0.1 * torch.randn(512, 64))
    z = vq.codebook.weight[torch.randint(512, (2048,))] + 0.03 * torch.randn(2048, 64)  # near, not at, a code
    codes = lambda q: torch.cdist(q.reshape(-1, 64).float(), vq.codebook.weight).argmin(1)  # noqa: E731
    q32, _ = vq(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        q16, _ = vq(z)
        flat = z.float()  # what the layer did before: autocast runs this product in bf16
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ vq.codebook.weight.float().t() + vq.codebook.weight.float().pow(2).sum(1)
    assert torch.equal(codes(q16), codes(q32))
    assert (dist.argmin(1) != codes(q32)).any()  # the unprotected distances do pick other codes: the test can fail


@pytest.mark.parametrize("gname", ["cnn_unet", "swin_unet"])
def test_every_pairing_trains_at_32px_in_bf16_channels_last_with_finite_losses(gname):
    """The GPU's path (bf16 autocast, channels-last) on the CPU, every generator x discriminator."""
    from cfgan.models import DISCRIMINATORS
    cfg = {"lr_g": 1e-3, "lr_d": 1e-3, "betas": [0.5, 0.999], "d_in_g_update": "mixed", "cycle_weights": [1.0],
           "loss": {"adversarial": 1.0, "auxiliary": 1.0, "l1": 3.0, "cycle": 1.0, "vq": 1.0}}
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 0, 1])
    for dname in DISCRIMINATORS:
        torch.manual_seed(0)
        g = BF16.prepare(build_generator(gname, GEN_CFG, 32))
        d = BF16.prepare(build_discriminator(dname, DIS_CFG, 32, 3))
        opt_g, opt_d = optimizers(g, d, cfg)
        before = [p.detach().clone() for p in g.parameters()]
        losses = gan_step(g, d, opt_g, opt_d, x, y, cfg, cycles=1, update_g=True, compute=BF16)
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values()), (dname, losses)  # losses in fp32
        assert all(p.dtype == torch.float32 for p in g.parameters())  # master weights (and Adam's state) stay fp32
        assert any(not torch.equal(a, b) for a, b in zip(before, g.parameters())), dname


def test_bf16_and_fp32_steps_agree_to_bf16_accuracy():
    """The same step in both precisions from the same weights: D's loss within bf16's few digits."""
    losses = {}
    for cx in (FP32, BF16):
        torch.manual_seed(0)
        g = cx.prepare(build_generator("cnn_unet", GEN_CFG, 32))
        d = cx.prepare(build_discriminator("resnet3", DIS_CFG, 32, 3))
        opt_g, opt_d = optimizers(g, d, {"lr_g": 1e-3, "lr_d": 1e-3, "betas": [0.5, 0.999]})
        torch.manual_seed(1)
        x, y = torch.rand(8, 3, 32, 32), torch.tensor([0, 1] * 4)
        cfg = {"d_in_g_update": "mixed", "cycle_weights": [1.0],
               "loss": {"adversarial": 1.0, "auxiliary": 1.0, "l1": 3.0, "cycle": 1.0, "vq": 1.0}}
        losses[cx.precision] = gan_step(g, d, opt_g, opt_d, x, y, cfg, cycles=1, update_g=True, compute=cx)
    for k in losses["fp32"]:
        assert abs(float(losses["bf16"][k]) - float(losses["fp32"][k])) < 0.05 * (1 + abs(float(losses["fp32"][k]))), k


def test_checkpoints_and_tables_record_the_precision(small_manifest, tmp_path):
    from cfgan.evaluate.run import run_classify
    from cfgan.train import gan
    params, manifest = small_manifest
    params = {**params, "compute": {**params.get("compute", {}), "fp32_image_layers": "discriminator"}}  # recorded under bf16
    gan.train_gan(params, manifest, "cnn_unet-resnet3-c0-s0", tmp_path / "run")
    ckpt = torch.load(tmp_path / "run/checkpoint.pt", weights_only=True)
    cx = resolve(params)
    assert ckpt["compute"]["precision"] == cx.precision and ckpt["compute"]["device"] == "cpu"
    assert ckpt["format"] == 2
    frame = run_classify({**params, "seed": 0}, manifest, tmp_path / "run/checkpoint.pt", "synthetic")
    assert isinstance(frame, pd.DataFrame)
    assert frame["note"].str.contains(f"trained at {cx.precision} on cpu, evaluated at {cx.precision} on cpu").all()
    assert ckpt["compute"]["cpu"] == cpu_model() and frame["note"].str.contains(f"; CPU {cpu_model()}", regex=False).all()
    moved = {**ckpt, "compute": {**ckpt["compute"], "cpu": "Another CPU (family 26, model 2)"}}
    torch.save(moved, tmp_path / "moved.pt")  # the same checkpoint, as if trained on another machine
    note = run_classify({**params, "seed": 0}, manifest, tmp_path / "moved.pt", "synthetic")["note"].iloc[0]
    assert f"; trained on CPU Another CPU (family 26, model 2), evaluated on CPU {cpu_model()}" in note
    if cx.precision == "bf16":  # on a bf16 machine the rows say which models read the image in fp32
        assert ckpt["compute"]["fp32_image_layers"] == cx.fp32_image_layers
        layers = f"(image layers in fp32: {cx.fp32_image_layers} in training, {cx.fp32_image_layers} in evaluation)"
        assert frame["note"].str.contains(layers, regex=False).all()


def test_fp32_image_layers_let_d_see_a_change_below_bf16s_resolution():
    """bf16 rounds 0.751 to 0.75 (a step of 1/256 in [0.5, 1)): a counterfactual that small is
    invisible to D's first convolution under plain bf16; with compute.fp32_image_layers those layers
    read the image in fp32. Checkpoints are the same either way."""
    assert resolve({"compute": {"precision": "bf16", "fp32_image_layers": True}}).fp32_image_layers
    assert not resolve({"compute": {"precision": "bf16"}}).fp32_image_layers
    x = torch.full((1, 3, 16, 16), 0.75)
    x_cf = x + 0.001
    seen = {}
    for keep in (True, False):
        cx = Compute(torch.device("cpu"), "bf16", channels_last=True, fp32_image_layers=keep)
        torch.manual_seed(0)
        d = cx.prepare(build_discriminator("resnet3", DIS_CFG, 16, 3)).eval()
        with torch.no_grad(), cx.autocast():
            seen[keep] = not torch.equal(d.stem[0](x), d.stem[0](x_cf))
        assert set(d.state_dict()) == set(build_discriminator("resnet3", DIS_CFG, 16, 3).state_dict())
    assert seen == {True: True, False: False}


def test_fp32_image_layers_can_name_one_kind_of_model():
    """`compute.fp32_image_layers: discriminator` keeps only the classifiers'
    image layers (D, the plain twin) in fp32, `generator` only G's and the segmenters'; a model
    prepared without a role gets them only under `true`. Checkpoints and logs record the setting
    under bf16; anything else is refused with the allowed values."""
    for setting, wrapped in (("discriminator", {"discriminator"}), ("generator", {"generator"}),
                             (True, {"discriminator", "generator", None}), (False, set())):
        cx = resolve({"compute": {"precision": "bf16", "fp32_image_layers": setting}})
        assert cx.fp32_image_layers == setting and cx.describe()["fp32_image_layers"] == setting  # checkpoints record it
        assert ("image layers in fp32" in cx.summary()) == bool(setting)                          # and the logs say it
        for role in ("discriminator", "generator", None):
            model = cx.prepare(build_discriminator("resnet3", DIS_CFG, 16, 3) if role != "generator"
                               else build_generator("cnn_unet", GEN_CFG, 16), role)
            marked = any(getattr(m, "_cfgan_fp32", False) for m in model.modules())
            assert marked == (role in wrapped), (setting, role)
    assert "fp32_image_layers" not in resolve({"compute": {"precision": "fp32", "fp32_image_layers": "discriminator"}}).describe()
    with pytest.raises(UserError, match="compute.fp32_image_layers is 'd'; allowed values: false, true, discriminator, generator"):
        resolve({"compute": {"precision": "bf16", "fp32_image_layers": "d"}})


def test_cpu_model_names_the_first_processor_with_its_family_and_model(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                    "model name\t: AMD EPYC\nflags\t\t: avx512_bf16\n\nprocessor\t: 1\ncpu family\t: 26\nmodel\t\t: 2\n")
    assert cpu_model(info) == "AMD EPYC (family 25, model 17)"   # a VM's bare name says nothing of the generation
    assert "family" not in cpu_model(tmp_path / "absent")         # no /proc/cpuinfo (macOS): platform's words, no numbers made up
    assert resolve({"compute": {"device": "cpu"}}).describe()["cpu"] == cpu_model()
