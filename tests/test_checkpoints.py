"""Checkpoints are read with weights_only=True: a crafted file is refused without running its code,
and damaged, foreign or incompatible checkpoints fail with an error naming the file."""

import os
import pickle

import pytest
import torch

from cfgan.cli import main
from cfgan.errors import UserError
from cfgan.train import gan
from cfgan.train.common import CHECKPOINT_FORMAT, load_checkpoint


class _Payload:
    """Unpickling this would run code: it creates the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def trained_run(small_manifest, tmp_path):
    params, manifest = small_manifest
    gan.train_gan(params, manifest, "cnn_unet-resnet3-c1-s0", tmp_path / "run")
    return tmp_path / "run", manifest


def _evaluate(run_dir, manifest, tmp_path):
    """Both ways a shared checkpoint gets loaded: `cfgan explain --run` and an evaluation step."""
    from conftest import ROOT, save_image
    image = save_image(tmp_path / "img.png", (40, 40))
    a = main(["explain", "--run", str(run_dir), str(image), "--out", str(tmp_path / "expl")])
    b = main(["classify", "--params", str(ROOT / "params.yaml"), "--manifest", str(manifest), "--checkpoint",
              str(run_dir / "checkpoint.pt"), "--dataset", "synthetic", "--out", str(tmp_path / "cls.csv")])
    return a, b


def test_a_trained_checkpoint_holds_only_tensors_and_plain_values(trained_run):
    run, _ = trained_run
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)  # would raise on anything else
    assert ckpt["format"] == CHECKPOINT_FORMAT and type(ckpt["versions"]["torch"]) is str
    assert load_checkpoint(run / "checkpoint.pt")["summary"]["run"] == "cnn_unet-resnet3-c1-s0"


@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_a_checkpoint_whose_unpickling_runs_code_is_refused_and_the_code_does_not_run(trained_run, tmp_path, capsys, how):
    run, manifest = trained_run
    marker = tmp_path / "pwned"
    evil = {**torch.load(run / "checkpoint.pt", weights_only=True), "summary": _Payload(marker)}
    with open(run / "checkpoint.pt", "wb") as f:
        torch.save(evil, f) if how == "torch.save" else pickle.dump(evil, f)
    assert _evaluate(run, manifest, tmp_path) == (2, 2)
    err = capsys.readouterr().err
    assert err.count(f"{run / 'checkpoint.pt'}: refused to load") == 2 and "could run code" in err
    assert not marker.exists()
    assert not (tmp_path / "expl").exists() and not (tmp_path / "cls.csv").exists()


@pytest.mark.parametrize("damage, message", [(lambda b: b"", "checkpoint is empty (0 bytes)"),
                                             (lambda b: b[: len(b) // 2], "truncated or corrupt"),
                                             (lambda b: b"\x00garbage" * 10, "truncated or corrupt")])
def test_a_damaged_checkpoint_gets_a_clear_error(trained_run, tmp_path, capsys, damage, message):
    run, manifest = trained_run
    path = run / "checkpoint.pt"
    path.write_bytes(damage(path.read_bytes()))
    assert _evaluate(run, manifest, tmp_path) == (2, 2)
    err = capsys.readouterr().err
    assert err.count(f"{path}: ") >= 2 and message in err and "Traceback" not in err


def _rewrite(path, change):
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    torch.save(ckpt, path)


def test_a_checkpoint_of_another_format_version_says_so(trained_run):
    run, _ = trained_run
    _rewrite(run / "checkpoint.pt", lambda c: c.update(format=CHECKPOINT_FORMAT + 1, versions={"cfgan": "9.9.9"}))
    with pytest.raises(UserError, match=rf"checkpoint format {CHECKPOINT_FORMAT + 1} written by cfgan 9.9.9"):
        load_checkpoint(run / "checkpoint.pt")
    _rewrite(run / "checkpoint.pt", lambda c: c.pop("format"))
    with pytest.raises(UserError, match=r"checkpoint format \(none\)"):
        load_checkpoint(run / "checkpoint.pt")


@pytest.mark.parametrize("change, detail", [
    (lambda c: c["params"]["generator"]["cnn_unet"].update(width=16), "size mismatch"),  # another width
    (lambda c: c["summary"].update(generator="vit_unet"), "unknown generator 'vit_unet'"),  # another architecture
    (lambda c: c.pop("d"), "KeyError"),  # an entry missing
])
def test_a_checkpoint_for_another_architecture_says_so(trained_run, tmp_path, capsys, change, detail):
    run, manifest = trained_run
    _rewrite(run / "checkpoint.pt", change)
    assert _evaluate(run, manifest, tmp_path) == (2, 2)
    err = capsys.readouterr().err
    assert err.count(f"{run / 'checkpoint.pt'}: cannot rebuild its models") == 2 and detail in err
    assert "another architecture or version" in err


def test_the_same_payload_gives_the_same_checkpoint_bytes(tmp_path):
    # (torch.save to a path names the archive's folder after the random temporary file: the bytes differed)
    import torch
    from cfgan.train.common import save_checkpoint
    payload = {"kind": "gan", "g": {"w": torch.arange(4.0)}, "summary": {"run": "x"}}
    save_checkpoint(tmp_path / "a.pt", payload)
    save_checkpoint(tmp_path / "b.pt", payload)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
