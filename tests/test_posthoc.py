"""The post-hoc explainer of a frozen classifier (Charachon et al.; train/posthoc.py): its model and losses,
training against a plain twin (resume, checkpoint, the saliency step's `posthoc` row), a user's own classifier
(models/external.py) with its refusals, `cfgan explain --classifier` as docs/own-data.md writes it, and the
pipeline's plan (rules, DVC stages, params keys)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from conftest import ROOT, save_image

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # torch 2.14 calls TorchScript deprecated

SIZES = {"generator": {"noise_dim": 8, "cnn_unet": {"width": 8, "depth": 2}}, "discriminator": {"resnet3": {"width": 8}},
         "train": {"val_every": 2}, "baseline": {"steps": 4, "batch_size": 8}, "posthoc": {"steps": 4, "batch_size": 8},
         "evaluate": {"batch_size": 32}, "compute": {"precision": "fp32"}}


@pytest.fixture
def setup(small_manifest, tmp_path):
    """(params files: params.yaml, the data overlay, the sizes overlay; the manifest)."""
    sizes = tmp_path / "sizes.yaml"
    sizes.write_text(yaml.safe_dump(SIZES))
    return [str(ROOT / "params.yaml"), str(tmp_path / "overlay.yaml"), str(sizes)], small_manifest[1]


def _cli(*args) -> int:
    from cfgan.cli import main
    return main([str(a) for a in args])


# --- the model ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shared", [True, False])
def test_the_explainer_starts_as_the_identity_with_one_or_two_unets(shared):
    from cfgan.train.posthoc import Explainer
    e = Explainer(SIZES["generator"] | {"noise_channels": 1, "dropout": 0.0,
                                       "cnn_unet": {"width": 8, "depth": 2, "upsample": "resize", "padding": "reflect"}},
                  16, shared).eval()
    x = torch.rand(2, 3, 16, 16)
    x_s, x_a = e(x)
    assert torch.equal(x_s, x) and torch.equal(x_a, x)  # zero-initialised heads: both start at x, the map empty
    units = [m for m in e.modules() if type(m).__name__ == "CNNUNet"]
    assert len(units) == (1 if shared else 2)


def test_two_logits_read_the_damaged_output_against_the_others():
    from cfgan.models.external import binary_logits
    out = torch.tensor([[1.0, 2.0, 3.0]])
    assert torch.allclose(binary_logits(out[:, :2], 1), torch.tensor([[1.0, 2.0]]))
    assert torch.allclose(binary_logits(out[:, :2], 0), torch.tensor([[2.0, 1.0]]))
    assert torch.allclose(binary_logits(out[:, :1], 0), torch.tensor([[0.0, 1.0]]))  # one logit: damaged against 0
    assert torch.allclose(binary_logits(out, 2), torch.tensor([[torch.tensor([1.0, 2.0]).logsumexp(0), 3.0]]))


# --- against a plain twin: training, resume, the checkpoint, Table 5's row ------------------------

def test_a_twins_explainer_trains_resumes_bit_for_bit_and_scores_its_maps(setup, tmp_path, monkeypatch, capsys):
    params, manifest = setup
    base = tmp_path / "baselines/resnet3-s0"
    assert _cli("train-baseline", "--params", *params, "--manifest", manifest, "--backbone", "resnet3", "--seed", 0, "--out", base) == 0
    whole, killed = tmp_path / "posthoc/resnet3-s0", tmp_path / "killed/resnet3-s0"
    common = ["--params", *params, "--manifest", manifest, "--classifier", base / "checkpoint.pt", "--seed", 0]
    assert _cli("train-posthoc", *common, "--out", whole) == 0
    assert "posthoc-resnet3-s0: explains plain twin baseline-resnet3-s0" in capsys.readouterr().out

    import cfgan.train.posthoc as posthoc
    real_save = posthoc.save_run
    def killed_at_the_end(*a, **k):
        raise KeyboardInterrupt  # a kill after the last validation: resume.pt holds step 2 of 4
    monkeypatch.setattr(posthoc, "save_run", killed_at_the_end)
    with pytest.raises(KeyboardInterrupt):
        _cli("train-posthoc", *common, "--out", killed)
    assert (killed / "resume.pt").is_file() and not (killed / "checkpoint.pt").exists()
    monkeypatch.setattr(posthoc, "save_run", real_save)
    assert _cli("train-posthoc", *common, "--out", killed) == 0
    assert "from step 2" in capsys.readouterr().out and not (killed / "resume.pt").exists()

    from cfgan.train.common import load_checkpoint  # weights_only: a checkpoint of tensors and plain values
    a, b = load_checkpoint(whole / "checkpoint.pt"), load_checkpoint(killed / "checkpoint.pt")
    assert a["kind"] == "posthoc" and a["summary"]["run"] == "posthoc-resnet3-s0" and a["classifier"]["kind"] == "twin"
    assert a["summary"]["selected_on"] == "val_score" and set(a["summary"]["val"]) >= {"val_keep", "val_flip", "val_map_mean"}
    assert all(torch.equal(a["explainer"][k], b["explainer"][k]) for k in a["explainer"])
    assert pd.read_csv(whole / "log.csv").equals(pd.read_csv(killed / "log.csv"))
    assert a["summary"]["ood"]["thresholds"].keys() == {"colour_distance"}

    out, examples = tmp_path / "sal.csv", tmp_path / "ex.npz"
    assert _cli("saliency", "--params", *params, "--manifest", manifest, "--checkpoint", whole / "checkpoint.pt",
                "--dataset", "synthetic", "--out", out, "--examples", examples) == 0
    rows = pd.read_csv(out)
    assert set(rows["model"]) == {"posthoc"} and set(rows["run"]) == {"posthoc-resnet3-s0"}
    assert {"iou_median", "f1_tol2_mean", "threshold", "val_iou", "coverage", "accuracy", "f1", "pixel_auroc"} <= set(rows["metric"])
    assert "post-hoc explainer (Charachon et al." in rows["note"].iloc[0] and "chosen" not in rows["note"].iloc[0]
    assert "posthoc" in np.load(examples)
    from cfgan.report.tables import table5_segmentation
    t5 = table5_segmentation(rows, pd.DataFrame(columns=["run", "model", "metric", "value"]))
    t5 = t5[t5["crops"] == "all"] if "crops" in t5 else t5  # (the rows of every damaged test crop)
    assert list(t5["saliency"]) == ["posthoc"] and t5["accuracy"].notna().all()  # the twin's own calls, as a segmenter's


# --- a user's own classifier ----------------------------------------------------------------------

class _Tiny(nn.Module):
    def __init__(self, outputs: int = 2):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, outputs))

    def forward(self, x):
        return self.net(x)


class _Image(nn.Module):
    def forward(self, x):
        return x * 2  # an image-to-image model, not a classifier


def _fixed_size(side: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * side * side, 2))


def _script(model: nn.Module, path):
    torch.jit.save(torch.jit.script(model.eval()), str(path))
    return path


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"),
    ("random_bytes", "is not a TorchScript file"),
    ("an_image_model", "is not a classifier of images"),
    ("wrong_input_size", "fails on a batch of 2 x 3 x 64 x 64 images"),
    ("no_such_output", "damaged_index: 2, but the classifier has 2 output"),
])
def test_a_file_that_is_not_the_classifier_it_claims_is_refused_and_nothing_written(setup, tmp_path, capsys, case, message):
    params, manifest = setup
    path = tmp_path / f"{case}.pt"
    spec = {"kind": "torchscript", "path": str(path), "input_size": 64}
    if case == "random_bytes":
        path.write_bytes(os.urandom(3000))
    elif case == "an_image_model":
        _script(_Image(), path)
    elif case == "wrong_input_size":
        _script(_fixed_size(48), path)  # made for 48 px
    elif case == "no_such_output":
        _script(_Tiny(), path)
        spec["damaged_index"] = 2
    overlay = tmp_path / "spec.yaml"
    overlay.write_text(yaml.safe_dump({"posthoc": {"classifier": spec}}))
    out = tmp_path / "never"
    assert _cli("train-posthoc", "--params", *params, str(overlay), "--manifest", manifest, "--classifier-spec",
                "--seed", 0, "--out", out) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_a_timm_classifier_from_a_local_state_dict(tmp_path):
    import timm
    from cfgan.errors import UserError
    from cfgan.models.external import user_classifier
    weights = tmp_path / "r18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=2).state_dict(), weights)
    spec = {"kind": "timm", "arch": "resnet18", "weights": str(weights), "input_size": 32, "damaged_index": 0}
    model, record = user_classifier(spec)
    assert model(torch.rand(3, 3, 20, 20)).shape == (3, 2) and record["sha256"] and record["outputs"] == 2
    with pytest.raises(UserError, match="does not fit timm's resnet18 with num_classes 5"):
        user_classifier({**spec, "num_classes": 5})


# --- docs/own-data.md: explaining your own classifier, as written -----------------------------------

def _own_classifier_docs() -> tuple[dict, list[str]]:
    text = (ROOT / "docs/own-data.md").read_text()
    section = text[re.search(r"^## Explaining your own classifier$", text, re.M).start():]
    overlay = re.search(r"```yaml\n# my-classifier.yaml\n(.*?)```", section, re.S).group(1)
    commands = re.search(r"```bash\n(.*?)```", section, re.S).group(1).strip().splitlines()
    return yaml.safe_load(overlay), commands


def test_the_docs_commands_explain_your_own_torchscript_classifier(setup, tmp_path, capsys):
    params, manifest = setup
    from cfgan.data.datasets import load_split
    torch.manual_seed(0)  # the user's classifier: a tiny CNN trained a few steps on the generated crops
    train = load_split(manifest, "train")
    model = _Tiny()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(5):
        idx = torch.randint(len(train), (16,))
        x, y = train.batch(idx)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
    clf = _script(model, tmp_path / "my_classifier.pt")

    overlay, commands = _own_classifier_docs()
    assert overlay["posthoc"]["classifier"]["path"] == "my_classifier.pt"
    overlay["posthoc"]["classifier"]["path"] = str(clf)  # only the place differs from the docs
    (tmp_path / "my-classifier.yaml").write_text(yaml.safe_dump(overlay))
    assert len(commands) == 3 and commands[0].startswith("snakemake data/processed/mine/manifest.csv")  # the user's crops
    photo = save_image(tmp_path / "photo.png", (50, 40))
    shorter = tmp_path / "fewer-steps.yaml"  # the docs' 2000 steps, cut for a test
    shorter.write_text(yaml.safe_dump({"posthoc": {"steps": 4}}))
    swap = {"params.yaml my.yaml my-classifier.yaml": " ".join([*params, str(tmp_path / "my-classifier.yaml"), str(shorter)]),
            "data/processed/mine/manifest.csv": str(manifest), "results/mine/posthoc/my-classifier": str(tmp_path / "explainer"),
            "my_classifier.pt": str(clf), "photo.jpg": str(photo), "explanations/": str(tmp_path / "explanations")}
    for command in commands[1:]:
        for old, new in swap.items():
            command = command.replace(old, new)
        words = command.split()
        assert words[0] == "cfgan" and _cli(*words[1:]) == 0, capsys.readouterr().err[-2000:]
    out = tmp_path / "explanations"
    record = json.loads((out / "photo.json").read_text())
    assert (out / "photo_counterfactual.png").is_file() and (out / "photo_saliency.png").is_file()
    assert record["run"] == "posthoc-own_my_classifier-s0" and record["prediction"] in ("damaged", "undamaged")
    assert abs(record["p_damaged"] + record["p_undamaged"] - 1) < 1e-5 and record["resized_to"] == 32
    assert isinstance(record["counterfactual_flips_the_call"], bool) and record["out_of_distribution"] in (True, False)
    assert set(record["ood_signals"]) == {"colour_distance"} and "p_fake" in record["ood_not_computable"]
    with torch.no_grad():  # its probabilities are the classifier's own, on the photo as the explainer sees it
        from cfgan.data.images import read_rgb
        from cfgan.explain import inputs
        x = inputs([read_rgb(photo)], 32)
        x = nn.functional.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False)
        mean, std = (torch.tensor(overlay["posthoc"]["classifier"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
        p = model((x - mean) / std).softmax(1)[0]
    assert abs(record["p_damaged"] - float(p[1])) < 1e-4

    broken = tmp_path / "broken.pt"  # random bytes: refused, nothing written
    broken.write_bytes(os.urandom(4000))
    assert _cli("explain", "--run", tmp_path / "explainer", "--classifier", broken, photo, "--out", tmp_path / "none") == 2
    assert "not the classifier this explainer was trained for" in capsys.readouterr().err and not (tmp_path / "none").exists()
    assert _cli("explain", "--run", tmp_path / "explainer", photo, "--out", tmp_path / "again") == 0  # the recorded file


# --- the pipeline's plan --------------------------------------------------------------------------

def test_one_explainer_per_twin_is_planned_and_none_when_disabled(tiny_params):
    from cfgan.config import posthoc_runs
    from cfgan.dvc_pipeline import build
    from cfgan.steps import keys_for
    assert posthoc_runs(tiny_params) == ["posthoc-resnet3-s0"]
    assert posthoc_runs({**tiny_params, "posthoc": {**tiny_params["posthoc"], "enabled": False}}) == []
    stages = build([str(ROOT / "params.yaml"), str(ROOT / "workflow/profiles/tiny/params.yaml")], None)["stages"]
    train, maps = stages["train_posthoc_synthetic"], stages["saliency_posthoc_synthetic"]
    assert train["matrix"] == {"backbone": ["resnet3"], "seed": [0]} and "--classifier results/synthetic/base/baselines/" in train["cmd"]
    assert "src/cfgan/train/posthoc.py" in train["deps"] and "posthoc" in train["params"]
    assert "results/synthetic/base/evaluations/saliency/posthoc-resnet3-s0.csv" in stages["report_synthetic"]["deps"]
    assert "posthoc/${item.backbone}-s${item.seed}/checkpoint.pt" in maps["cmd"]
    assert {"posthoc", "baseline.steps", "train.augment"} <= set(keys_for("train-posthoc"))
    rules = (ROOT / "workflow/rules/train.smk").read_text() + (ROOT / "workflow/rules/evaluate.smk").read_text()
    assert re.search(r"^rule train_posthoc:", rules, re.M) and re.search(r"^rule saliency_posthoc:", rules, re.M)


def test_selection_on_the_maps_val_iou_only_when_asked_and_said_in_every_row(setup, tmp_path, capsys):
    params, manifest = setup
    base = tmp_path / "twin"
    assert _cli("train-baseline", "--params", *params, "--manifest", manifest, "--backbone", "resnet3", "--seed", 0, "--out", base) == 0
    maps = tmp_path / "maps.yaml"
    maps.write_text(yaml.safe_dump({"posthoc": {"val_maps": True}}))
    out = tmp_path / "explainer"
    assert _cli("train-posthoc", "--params", *params, maps, "--manifest", manifest, "--classifier", base / "checkpoint.pt",
                "--seed", 0, "--out", out) == 0
    from cfgan.train.common import load_checkpoint
    summary = load_checkpoint(out / "checkpoint.pt")["summary"]
    assert summary["selected_on"] == "val_map_iou" and "val_map_iou" in summary["val"]
    assert _cli("saliency", "--params", *params, maps, "--manifest", manifest, "--checkpoint", out / "checkpoint.pt",
                "--dataset", "synthetic", "--out", tmp_path / "s.csv", "--examples", tmp_path / "e.npz") == 0
    assert "val masks read: posthoc.val_maps" in pd.read_csv(tmp_path / "s.csv")["note"].iloc[0]
    photo = save_image(tmp_path / "photos/a.png", (40, 40))  # a folder (the gallery) is refused for these, before writing
    assert _cli("explain", "--run", out, photo.parent, "--out", tmp_path / "gallery") == 2
    assert "not supported for a post-hoc explainer" in capsys.readouterr().err and not (tmp_path / "gallery").exists()
