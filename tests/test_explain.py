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
