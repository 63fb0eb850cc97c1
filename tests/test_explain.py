import json

import pytest

from cfgan.cli import main
from cfgan.train import gan
from conftest import need_shared, save_image


@pytest.fixture
def trained_run(small_manifest, tmp_path):
    params, manifest = small_manifest
    gan.train_gan(params, manifest, "cnn_unet-resnet3-c1-s0", tmp_path / "run")
    return tmp_path / "run"


def test_explain_writes_counterfactual_overlay_and_probabilities(trained_run, tmp_path, capsys):
    image = save_image(tmp_path / "mine.png", (50, 40))
    out = tmp_path / "expl"
    assert main(["explain", "--run", str(trained_run), str(image), "--out", str(out)]) == 0
    record = json.loads((out / "mine.json").read_text())
    assert abs(record["p_undamaged"] + record["p_damaged"] - 1) < 1e-6 and 0 <= record["p_fake"] <= 1
    assert (out / "mine_counterfactual.png").stat().st_size > 0 and (out / "mine_saliency.png").stat().st_size > 0
    # a second run refuses to overwrite what the user already has
    assert main(["explain", "--run", str(trained_run), str(image), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert record["saliency_form"] == "abs"
    # --form draws the map chosen on val instead of the paper's |x - G(x)|, and says which in the JSON
    assert main(["explain", "--run", str(trained_run), str(image), "--out", str(out), "--force", "--form", "dark-decast"]) == 0
    signed = json.loads((out / "mine.json").read_text())
    assert signed["saliency_form"] == "dark-decast" and abs(signed["saliency_mean"]) < 1e-6  # decast: zero mean per crop
    # a form chosen with evaluate.saliency.turns, as the table's note names it
    assert main(["explain", "--run", str(trained_run), str(image), "--out", str(out), "--force", "--form", "dark-decast+turns8"]) == 0
    turned = json.loads((out / "mine.json").read_text())
    assert turned["saliency_form"] == "dark-decast+turns8" and abs(turned["saliency_mean"]) < 1e-6
    assert main(["explain", "--run", str(trained_run), str(image), "--out", str(out), "--force", "--form", "abs+turns3"]) == 2
    assert main(["explain", "--run", str(trained_run), str(image), "--out", str(out), "--force", "--form", "luma"]) == 2
    assert "--form luma: not a map form" in capsys.readouterr().err
    # a '-keep' form needs a keep-mode G: the tiny run's has none
    assert main(["explain", "--run", str(trained_run), str(image), "--out", str(out), "--force", "--form", "abs-keep"]) == 2
    assert "has no keep mode" in capsys.readouterr().err


def test_explain_on_a_real_apple(trained_run, tmp_path):
    apple = sorted((need_shared("apples") / "defective").iterdir())[0]
    assert main(["explain", "--run", str(trained_run), str(apple), "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / f"{apple.stem}.json").read_text())["prediction"] in ("damaged", "undamaged")


def test_explain_names_a_corrupt_file_and_writes_nothing(trained_run, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    out = tmp_path / "e"
    assert main(["explain", "--run", str(trained_run), str(bad), "--out", str(out)]) == 2
    assert "broken.jpg: not a readable image" in capsys.readouterr().err
    assert not out.exists()


def test_explain_without_a_checkpoint(tmp_path, capsys):
    assert main(["explain", "--run", str(tmp_path / "nope"), str(tmp_path / "x.png")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


# --- out of distribution (cfgan.ood) -----------------------------------------------------------

def _set_calibration(run, calibration):
    import torch
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    if calibration is None:
        ckpt["summary"].pop("ood")
    else:
        ckpt["summary"]["ood"] = {**ckpt["summary"]["ood"], **calibration}
    torch.save(ckpt, run / "checkpoint.pt")


def test_training_stores_a_calibration_from_the_val_split(trained_run, small_manifest):
    import torch
    from cfgan.data.datasets import load_split
    ood = torch.load(trained_run / "checkpoint.pt", weights_only=True)["summary"]["ood"]
    manifest = small_manifest[1]
    assert ood["n_val"] == len(load_split(manifest, "val")) and ood["n_train"] == len(load_split(manifest, "train"))
    assert set(ood["thresholds"]) == {"p_fake", "disagreement", "feature_distance", "colour_distance"} and ood["alpha"] == 0.05
    assert 0 <= ood["thresholds"]["p_fake"] <= 1 and ood["features_mean"].shape == ood["features_std"].shape
    assert ood["colour_mean"].shape == (6,)  # per-channel mean and sd


def test_explain_flags_an_image_beyond_the_thresholds_in_the_json_and_the_title(trained_run, tmp_path, monkeypatch):
    import matplotlib.figure
    titles = []
    original = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(matplotlib.figure.Figure, "suptitle", lambda self, t, **kw: titles.append(t) or original(self, t, **kw))
    image = save_image(tmp_path / "mine.png", (50, 40))
    out = tmp_path / "expl"
    _set_calibration(trained_run, {"thresholds": {"p_fake": -1.0, "disagreement": 2.0}})  # every p_fake is above -1
    assert main(["explain", "--run", str(trained_run), str(image), "--out", str(out)]) == 0
    record = json.loads((out / "mine.json").read_text())
    assert record["out_of_distribution"] is True and len(record["out_of_distribution_reasons"]) == 1
    assert "fake probability" in record["out_of_distribution_reasons"][0] and "val crops" in record["out_of_distribution_reasons"][0]
    assert record["size"] == [50, 40] and titles and "OUT OF DISTRIBUTION" in titles[0]
    _set_calibration(trained_run, {"thresholds": {"p_fake": 2.0, "disagreement": 2.0}})  # nothing exceeds 2
    titles.clear()
    assert main(["explain", "--run", str(trained_run), str(image), "--out", str(out), "--force"]) == 0
    record = json.loads((out / "mine.json").read_text())
    assert record["out_of_distribution"] is False and record["out_of_distribution_reasons"] == [] and not titles
    _set_calibration(trained_run, None)  # a checkpoint without calibration cannot tell, and says so
    assert main(["explain", "--run", str(trained_run), str(image), "--out", str(out), "--force"]) == 0
    record = json.loads((out / "mine.json").read_text())
    assert record["out_of_distribution"] is None and "no val calibration" in record["out_of_distribution_reasons"][0]


def test_the_calibration_keeps_false_alarms_near_alpha_on_fresh_in_distribution_samples():
    import torch
    from cfgan.ood import ALPHA, assess, calibrate, signals

    def sample(n, seed):
        torch.manual_seed(seed)
        d = torch.distributions.Dirichlet(torch.tensor([4.0, 4.0, 1.0])).sample((n,))
        g = torch.rand(n)
        return {"d_logits": d.log(), "g_probs": torch.stack([1 - g, g], 1), "features": torch.randn(n, 16) * 3 + 1,
                "colour": torch.rand(n, 6)}

    calibration = calibrate(sample(5000, 0), sample(5000, 1))
    fresh = signals(sample(20000, 2), calibration)
    assert len(fresh) == 4
    rate = sum(assess({k: v[i] for k, v in fresh.items()}, calibration)[0] for i in range(20000)) / 20000
    assert abs(rate - ALPHA) < 0.01, rate


def test_explain_with_cuda_asked_for_and_none_there_exits_2_and_writes_nothing(trained_run, tmp_path, monkeypatch, capsys):
    import torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CFGAN_DEVICE", "cuda")
    image = save_image(tmp_path / "mine.png", (50, 40))
    out = tmp_path / "expl"
    assert main(["explain", "--run", str(trained_run), str(image), "--out", str(out)]) == 2
    assert "CFGAN_DEVICE is 'cuda', but there is no CUDA device" in capsys.readouterr().err
    assert not out.exists()
