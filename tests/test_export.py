"""`cfgan export`: the exported TorchScript and ONNX files compute what `cfgan explain` computes (in fp32),
carry their metadata, refuse a wrong input size with a clear message, and are written atomically or not at
all. The docs' ONNX example (examples/predict_onnx.py) runs without cfgan or torch.

Tolerances on the test crops, absolute and relative (np.allclose's rtol = atol): 1e-5 for TorchScript, 1e-4 for
ONNX. Measured on the tiny run: <= 6e-8 everywhere but the OOD feature distance (~3e-6 TorchScript, ~4e-6 ONNX,
on values ~1.6: the same fp32 convolutions at another batch size), whose error grows with the distance."""
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cfgan.cli import main
from conftest import ROOT, save_image
from test_explain import trained_run  # noqa: F401 (the fixture: a tiny trained run, as explain's tests use)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
TS_TOL, ONNX_TOL = 1e-5, 1e-4
NAMES = ("probabilities", "d_logits", "g_head_probabilities", "counterfactual", "saliency", "ood_signals")


def _reference(run: Path, x: torch.Tensor, form: str = "abs") -> list[np.ndarray]:
    """The PyTorch model's outputs through `cfgan explain`'s own code, one image at a time (as explain
    treats a single photo), in fp32 on the CPU: the outputs the export must equal."""
    from cfgan.compute import Compute
    from cfgan.explain import _model_outputs
    from cfgan.train.gan import load_gan
    g, d, ckpt = load_gan(run / "checkpoint.pt")
    fp32 = Compute(torch.device("cpu"), "fp32", False)
    per_image = []
    for i in range(len(x)):
        o = _model_outputs(g, d, ckpt, x[i:i + 1], 0, fp32, form)
        per_image.append([o["d_probs"], o["d_logits"], o["g_probs"], o["x_cf"], o["saliency"],
                          np.stack([o["ood_values"][k] for k in ("p_fake", "disagreement", "feature_distance", "colour_distance")], 1)])
    return [np.concatenate([np.asarray(p[j], np.float64) for p in per_image]) for j in range(len(NAMES))]


def _crops(manifest: Path, n: int = 5) -> torch.Tensor:
    from cfgan.data.datasets import load_split
    return load_split(manifest, "test").images[:n].float() / 255


def _max_diff(ours, theirs) -> dict[str, float]:
    return {k: float(np.abs(np.asarray(a, np.float64) - b).max()) for k, a, b in zip(NAMES, ours, theirs)}


def _far(ours, theirs, tol: float) -> dict[str, float]:
    """The outputs beyond tolerance (absolute and relative, tol each), with their largest difference."""
    diffs = _max_diff(ours, theirs)
    return {k: diffs[k] for k, a, b in zip(NAMES, ours, theirs) if not np.allclose(np.asarray(a, np.float64), b, rtol=tol, atol=tol)}


class _OffByOnePercent(torch.nn.Module):
    """An exporter that gets the probabilities wrong: what the export's own check must catch."""

    def __init__(self, traced, size: int):
        super().__init__()
        self.traced = traced

    def forward(self, x: torch.Tensor):
        p, d_logits, g_probs, x_cf, saliency, ood = self.traced(x)
        return p + 0.01, d_logits, g_probs, x_cf, saliency, ood


def test_torchscript_export_equals_the_model_and_carries_its_metadata(trained_run, small_manifest, tmp_path, capsys):
    out = tmp_path / "exported" / "model.pt"
    assert main(["export", "--run", str(trained_run), "--format", "torchscript", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and sorted(p.name for p in out.parent.iterdir()) == ["model.pt"]  # no temp left
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~mask  # made to be handed on: not atomic_path's private 0600
    extra = {"cfgan.json": ""}
    model = torch.jit.load(str(out), _extra_files=extra)
    meta = json.loads(extra["cfgan.json"])
    ckpt = torch.load(trained_run / "checkpoint.pt", weights_only=True)
    size = ckpt["summary"]["image_size"]
    assert meta["run"] == ckpt["summary"]["run"] == "cnn_unet-resnet3-c1-s0" and meta["image_size"] == size
    assert meta["class_names"] == ["real_undamaged", "real_damaged", "fake"] and meta["precision"] == "fp32"
    assert meta["trained_precision"] == ckpt["compute"]["precision"] and meta["cfgan_version"] == ckpt["versions"]["cfgan"]
    assert "commit" in meta and meta["input"]["shape"] == ["N", 3, size, size] and meta["input"]["range"] == [0.0, 1.0]
    assert meta["ood"]["thresholds"] == ckpt["summary"]["ood"]["thresholds"]
    assert meta["ood"]["signals"] == ["p_fake", "disagreement", "feature_distance", "colour_distance"]
    assert meta["saliency"]["form"] == "abs" and meta["saliency"]["threshold"] is None  # no saliency evaluation beside the run
    from cfgan.export import read_metadata
    assert read_metadata(out) == meta

    x = _crops(small_manifest[1])
    with torch.no_grad():
        ours = [t.numpy() for t in model(x)]
    assert not _far(ours, _reference(trained_run, x), TS_TOL)
    # a wrong size fails inside the exported model, naming the expected shape
    with pytest.raises(Exception, match=rf"expected images of shape N x 3 x {size} x {size}.*got \[2, 3, {size + 8}, {size}\]"):
        model(torch.rand(2, 3, size + 8, size))
    with pytest.raises(Exception, match=rf"N x 3 x {size} x {size}"):
        model(torch.rand(3, size, size))


def test_onnx_export_equals_the_model_and_the_docs_example_runs_it(trained_run, small_manifest, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "model.onnx"
    assert main(["export", "--run", str(trained_run), "--format", "onnx", "--out", str(out)]) == 0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["cfgan.json"])
    size = meta["image_size"]
    assert meta["format"] == "onnx" and meta["run"] == "cnn_unet-resnet3-c1-s0" and meta["precision"] == "fp32"
    assert [o.name for o in session.get_outputs()] == list(NAMES)
    assert session.get_inputs()[0].shape[1:] == [3, size, size]  # fixed spatial dims, a free batch
    assert set(meta["check"]["max_abs_diff"]) == set(NAMES)  # the export checked its own file

    x = _crops(small_manifest[1])
    assert not _far(session.run(list(NAMES), {"image": x.numpy()}), _reference(trained_run, x), ONNX_TOL)
    with pytest.raises(Exception, match=rf"(?s)invalid dimensions for input: image.*index: 2 Got: {size + 8} Expected: {size}"):
        session.run(None, {"image": np.zeros((1, 3, size + 8, size), np.float32)})

    # the docs' example is the example file, and it runs with onnxruntime, numpy and Pillow alone
    example = ROOT / "examples" / "predict_onnx.py"
    docs = (ROOT / "docs" / "own-data.md").read_text().split("## Exporting a model", 1)[1]
    assert re.search(r"```python\n(.*?)```", docs, re.S).group(1) == example.read_text()
    photo = save_image(tmp_path / "photo.png", (50, 40))
    no_cfgan = ("import runpy, sys; sys.modules['cfgan'] = sys.modules['torch'] = None; "
                f"sys.argv = [{str(example)!r}, {str(out)!r}, {str(photo)!r}]; runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", no_cfgan], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    # what cfgan explain says of the same photo (fp32): the same probabilities
    from cfgan.data.images import read_rgb
    from cfgan.explain import inputs
    probs, logits = _reference(trained_run, inputs([read_rgb(photo)], size))[:2]
    real = torch.from_numpy(logits[:, :2]).softmax(1)[0]
    assert abs(result["p_damaged"] - float(real[1])) <= ONNX_TOL and abs(result["p_fake"] - probs[0, 2]) <= ONNX_TOL
    assert result["prediction"] == ("damaged" if real[1] > real[0] else "undamaged") and result["run"] == meta["run"]
    assert result["out_of_distribution"] in (True, False) and "salient_fraction" not in result  # no threshold: none applied


def test_the_saliency_threshold_chosen_on_val_travels_with_its_form(trained_run, small_manifest, tmp_path):
    """The threshold the saliency step chose on val goes into the metadata only with the map form it was chosen for."""
    from cfgan.export import read_metadata
    run = tmp_path / "results" / "synthetic" / "runs" / "cnn_unet-resnet3-c1-s0"
    shutil.copytree(trained_run, run)
    csv = tmp_path / "results" / "synthetic" / "evaluations" / "saliency" / "cnn_unet-resnet3-c1-s0.csv"
    csv.parent.mkdir(parents=True)
    note = "counterfactual: threshold 0.0123 (best of quantiles [0.9] on 3 val damaged crops); map form 'dark-decast+turns4' chosen on val from ['abs', 'dark-decast+turns4']"
    csv.write_text("dataset,run,model,metric,condition,value,note\n"
                   f"synthetic,cnn_unet-resnet3-c1-s0,counterfactual,threshold,val,0.0123,\"{note}\"\n"
                   "synthetic,cnn_unet-resnet3-c1-s0,gradcam,threshold,val,0.5,\"gradcam: threshold 0.5\"\n")
    assert main(["export", "--run", str(run), "--format", "torchscript", "--out", str(tmp_path / "abs.pt")]) == 0
    meta = read_metadata(tmp_path / "abs.pt")["saliency"]
    assert meta["threshold"] is None and meta["val_choice"]["form"] == "dark-decast+turns4" and "--form val" in meta["note"]
    assert main(["export", "--run", str(run), "--format", "torchscript", "--form", "val", "--out", str(tmp_path / "val.pt")]) == 0
    meta = read_metadata(tmp_path / "val.pt")["saliency"]
    assert meta["form"] == "dark-decast+turns4" and meta["threshold"] == 0.0123 and meta["smooth_sigma"] == 0.0
    x = _crops(small_manifest[1], 3)
    with torch.no_grad():
        saliency = torch.jit.load(str(tmp_path / "val.pt"))(x)[4].numpy()
    assert np.abs(saliency - _reference(run, x, "dark-decast+turns4")[4]).max() <= TS_TOL
    # the flips and turns export to ONNX too (the export checks the file against the model before writing it)
    assert main(["export", "--run", str(run), "--format", "onnx", "--form", "val", "--out", str(tmp_path / "val.onnx")]) == 0
    assert read_metadata(tmp_path / "val.onnx")["saliency"]["threshold"] == 0.0123


def test_export_refuses_to_overwrite_and_writes_nothing_for_a_broken_run(trained_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out" / "model.pt"
    out.parent.mkdir()
    out.write_bytes(b"the user's file")
    assert main(["export", "--run", str(trained_run), "--format", "torchscript", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_bytes() == b"the user's file"
    assert main(["export", "--run", str(trained_run), "--format", "torchscript", "--out", str(out), "--force"]) == 0
    assert out.read_bytes() != b"the user's file" and sorted(p.name for p in out.parent.iterdir()) == ["model.pt"]

    fresh = tmp_path / "fresh" / "model.onnx"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "checkpoint.pt").write_bytes(b"not a checkpoint")
    baseline = tmp_path / "baseline"
    baseline.mkdir()
    ckpt = torch.load(trained_run / "checkpoint.pt", weights_only=True)
    torch.save({**ckpt, "kind": "baseline"}, baseline / "checkpoint.pt")
    cases = [(["--run", str(tmp_path / "nope"), "--format", "onnx"], "no checkpoint there"),
             (["--run", str(broken), "--format", "onnx"], "not a readable checkpoint"),
             (["--run", str(baseline), "--format", "torchscript"], "exports GAN runs"),
             (["--run", str(trained_run), "--format", "tflite"], "--format tflite: not a known format"),
             (["--run", str(trained_run), "--format", "onnx", "--form", "luma"], "--form luma: not a map form"),
             (["--run", str(trained_run), "--format", "onnx", "--form", "val"], "--form val: no saliency evaluation")]
    for args, message in cases:
        assert main(["export", *args, "--out", str(fresh)]) == 2, args
        assert message in capsys.readouterr().err
        assert not fresh.parent.exists()  # nothing written, no temporary file left
    import cfgan.export
    with monkeypatch.context() as m:  # an export that disagrees with the model is refused, not written
        m.setattr(cfgan.export, "SizeChecked", _OffByOnePercent)
        assert main(["export", "--run", str(trained_run), "--format", "torchscript", "--out", str(fresh)]) == 2
        assert "disagrees with the PyTorch model" in capsys.readouterr().err and not fresh.parent.exists()
    monkeypatch.setitem(sys.modules, "onnx", None)  # as where the onnx package is not installed
    assert main(["export", "--run", str(trained_run), "--format", "onnx", "--out", str(fresh)]) == 2
    assert "pip install 'cfgan[export]'" in capsys.readouterr().err and not fresh.parent.exists()
