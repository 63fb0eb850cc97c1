import pandas as pd
import pytest
import torch

from cfgan.train import gan


def test_a_killed_run_resumes_from_its_checkpoint(small_manifest, tmp_path, monkeypatch, capsys):
    params, manifest = small_manifest
    out = tmp_path / "run"
    calls = {"n": 0}
    real_augment = gan.augment

    def dying_augment(x, cfg, rng, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # the process is killed during step 5
        return real_augment(x, cfg, rng, **kw)

    monkeypatch.setattr(gan, "augment", dying_augment)
    with pytest.raises(KeyboardInterrupt):
        gan.train_gan(params, manifest, "cnn_unet-resnet3-c1-s0", out)
    assert (out / "resume.pt").exists() and not (out / "checkpoint.pt").exists()
    monkeypatch.setattr(gan, "augment", real_augment)
    gan.train_gan(params, manifest, "cnn_unet-resnet3-c1-s0", out)
    assert "resuming cnn_unet-resnet3-c1-s0 from step 4" in capsys.readouterr().out
    log = pd.read_csv(out / "log.csv")
    assert log["step"].tolist() == [1, 2, 3, 4, 5, 6]
    assert not (out / "resume.pt").exists()


def same(a, b) -> bool:
    """Equality that descends into dicts and lists and compares tensors exactly."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def test_a_seed_makes_a_run_repeat(small_manifest, tmp_path):
    params, manifest = small_manifest
    a = gan.train_gan(params, manifest, "cnn_unet-resnet3-c0-s0", tmp_path / "a")
    b = gan.train_gan(params, manifest, "cnn_unet-resnet3-c0-s0", tmp_path / "b")
    assert same(a, b)  # the summary, its OOD calibration's tensors included
    la, lb = pd.read_csv(tmp_path / "a/log.csv"), pd.read_csv(tmp_path / "b/log.csv")
    pd.testing.assert_frame_equal(la, lb)
    ca = torch.load(tmp_path / "a/checkpoint.pt", weights_only=True)["d"]
    cb = torch.load(tmp_path / "b/checkpoint.pt", weights_only=True)["d"]
    assert all(torch.equal(ca[k], cb[k]) for k in ca)
