"""`method:` in params.yaml: a named set of options beyond the paper, expanded at load time."""

import pytest
import yaml

from cfgan import methods
from cfgan.config import load_params
from cfgan.errors import UserError
from cfgan.steps import has_key, keys_for, select


def _write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key


@pytest.fixture
def extra_method(monkeypatch):
    options = {"train": {"ema_g": 0.9, "loss": {"cast": 2.0}}, "evaluate": {"saliency": {"counterfactual_forms": ["abs", "dark"]}}}
    monkeypatch.setitem(methods.METHODS, "testing", options)
    return options


def test_paper_adds_nothing_and_leaves_no_method_key():
    params = load_params(["params.yaml"])
    assert "method" not in params and "ema_g" not in params["train"]
    assert "counterfactual_forms" not in params["evaluate"]["saliency"]


def test_a_method_fills_its_options_and_an_explicit_key_wins(tmp_path, extra_method):
    chosen = load_params(["params.yaml", _write(tmp_path, "m.yaml", {"method": "testing"})])
    assert chosen["method"] == "testing" and chosen["train"]["ema_g"] == 0.9 and chosen["train"]["loss"]["cast"] == 2.0
    assert chosen["train"]["loss"]["l1"] == 3.0  # what the method does not name stays params.yaml's
    assert chosen["evaluate"]["saliency"]["counterfactual_forms"] == ["abs", "dark"]
    own = load_params(["params.yaml", _write(tmp_path, "own.yaml", {"method": "testing", "train": {"ema_g": 0.5}})])
    assert own["train"]["ema_g"] == 0.5 and own["train"]["loss"]["cast"] == 2.0
    # the train and saliency steps see the method (so changing it reruns them, and checkpoints record it)
    assert select(chosen, keys_for("train", "synthetic"))["method"] == "testing"
    assert select(chosen, keys_for("saliency"))["method"] == "testing"


def test_an_unknown_method_names_the_key_and_the_known_ones(tmp_path):
    with pytest.raises(UserError, match=r"at 'method': unknown method 'fancy'; known methods: paper"):
        load_params(["params.yaml", _write(tmp_path, "m.yaml", {"method": "fancy"})])


def test_no_method_option_is_a_key_params_yaml_sets():
    # otherwise params.yaml's own (paper) value would win over the method and the method would do nothing
    base = yaml.safe_load(open("params.yaml"))
    for name, options in methods.METHODS.items():
        for key in _leaves(options):
            assert not has_key(base, key), f"method {name}: option {key} is set in params.yaml, so the method cannot set it"


def test_every_profile_s_params_files_load_and_the_paper_profiles_write_apart_from_the_method_s():
    import glob
    loaded = {}
    for config in sorted(glob.glob("workflow/profiles/*/config.yaml")):
        files = yaml.safe_load(open(config)).get("configfile")
        if files:  # (default and slurm add params through their own overlays or none)
            loaded[config.split("/")[2]] = load_params(files)
    assert {"crackforest", "crackforest-paper", "apples", "apples-paper", "tiny"} <= set(loaded)
    for name in ("crackforest", "apples"):
        method, paper = loaded[name], loaded[f"{name}-paper"]
        assert method["method"] == "roundtrip" and "method" not in paper
        assert method["train"]["steps"] == paper["train"]["steps"] and method["train"]["lr_d"] == paper["train"]["lr_d"]
        _assert_beside(method, paper)
    for name, beside in (("crackforest-r1", "crackforest"), ("neu-r1", "neu")):
        method, other = loaded[name], loaded[beside]
        assert method["method"] == "roundtrip-r1" and method["method"] != other.get("method")
        _assert_beside(method, other)
    # the long CrackForest profile: roundtrip-r1 for 1,200 steps, its checkpoint chosen on the maps' val IoU
    long, short = loaded["crackforest-r1-long"], loaded["crackforest-r1"]
    assert long["method"] == short["method"] and long["train"]["steps"] == long["baseline"]["steps"] > short["train"]["steps"]
    assert long["train"]["val_maps"]["select"] and "val_maps" not in short["train"]
    _assert_beside(long, short)
    # the tolerance variant trains exactly as the long profile (only the kept step can differ), apart from it
    tol = loaded["crackforest-r1-tol"]
    assert tol["train"]["val_maps"] == {**long["train"]["val_maps"], "tolerance": 0.01}
    assert {**tol, "train": {**tol["train"], "val_maps": long["train"]["val_maps"]}, "run_datasets": long["run_datasets"],
            "datasets": long["datasets"]} == long
    _assert_beside(tol, long)
    # a profile that selects its checkpoint on the maps' val IoU scores the maps as its saliency step will
    selecting = {name for name, p in loaded.items() if p["train"].get("val_maps", {}).get("select")}
    assert {"crackforest-r1-long", "crackforest-r1-tol", "neu-r1"} <= selecting
    from cfgan.train.gan import val_maps_settings
    for name in selecting:
        curve, saliency = val_maps_settings(loaded[name]["train"], loaded[name]["evaluate"]["saliency"]), loaded[name]["evaluate"]["saliency"]
        assert (curve["forms"], curve["quantiles"], curve["smooth_sigma"]) == (
            saliency["counterfactual_forms"], saliency["quantiles"], saliency["smooth_sigma"]), name


def _assert_beside(method: dict, other: dict) -> None:
    """A profile whose rows stand beside another's: results/<data set> of its own, the same photos cut the same way."""
    assert set(method["run_datasets"]).isdisjoint(other["run_datasets"])
    own, twin = (p["datasets"][p["run_datasets"][0]] for p in (method, other))
    assert own["crop"] == twin["crop"] and own["source"] == twin["source"]
