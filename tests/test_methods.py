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


def _experiment_commands() -> list[tuple[str, str]]:
    """(profile, experiment) of every `snakemake --profile ... --config experiment=...` command that an
    overlay's header names (the commands its published figures came from)."""
    import glob
    import re
    out = []
    for path in sorted(glob.glob("workflow/experiments/*.yaml")):
        text = open(path).read()
        found = re.findall(r"snakemake --profile workflow/profiles/(\S+) all --config experiment=(\S+)", text)
        assert found, f"{path}: its header names no command that runs it"
        out += found
    return out


def test_every_experiment_loads_over_the_profiles_it_names_and_writes_apart_on_the_same_crops():
    from cfgan.config import results_dir
    commands = _experiment_commands()
    assert commands
    for profile, name in commands:
        profile_files = yaml.safe_load(open(f"workflow/profiles/{profile}/config.yaml"))["configfile"]
        base = load_params(profile_files)
        exp = load_params([*profile_files, f"workflow/experiments/{name}.yaml"])
        assert exp["experiment"] == name and base.get("experiment", "base") == "base"
        for ds in exp["run_datasets"]:
            assert results_dir(exp, ds) == f"results/{ds}/{name}" != results_dir(base, ds)
            # the experiment's crops are the data set's, cut the same way as under the profile
            assert exp["datasets"][ds]["crop"] == base["datasets"][ds]["crop"]
            assert exp["datasets"][ds]["source"] == base["datasets"][ds]["source"]
        # a run that selects its checkpoint on the maps' val IoU scores the maps as its saliency step will
        if exp["train"].get("val_maps", {}).get("select"):
            from cfgan.train.val_curves import val_maps_settings
            curve, saliency = val_maps_settings(exp["train"], exp["evaluate"]["saliency"]), exp["evaluate"]["saliency"]
            assert (curve["forms"], curve["quantiles"], curve["smooth_sigma"]) == (
                saliency["counterfactual_forms"], saliency["quantiles"], saliency["smooth_sigma"]), name


def test_an_overlay_names_itself_leaves_the_crops_alone_and_must_be_passed(tmp_path):
    from cfgan.errors import UserError
    profile = ["params.yaml", "workflow/profiles/tiny/params.yaml"]
    cases = {
        "wrong-name": ("experiment: other\n", "named by its overlay file"),
        "crops": ("experiment: crops\ndatasets: {synthetic: {crop: {image_size: 16}}}\n", "datasets.synthetic.crop"),
        "split": ("experiment: split\nsplit: {train: 0.8, val: 0.1, test: 0.1}\n", "may not set split"),
    }
    for stem, (text, message) in cases.items():
        path = tmp_path / f"{stem}.yaml"
        path.write_text(text)
        with pytest.raises(UserError, match=message):
            load_params([*profile, path])
    # `experiment: r1` set in params.yaml itself (`dvc exp run -S experiment=r1`) is refused, not run without r1's overlay
    params = tmp_path / "params.yaml"
    params.write_text(open("params.yaml").read().replace("experiment: base", "experiment: r1"))
    with pytest.raises(UserError, match="workflow/experiments/r1.yaml"):
        load_params([params, profile[1]])

def _configurations():
    """(name, merged params, the method its files name) of params.yaml, of every profile, and of every
    experiment over every profile (issue 46: the rules below hold for any pairing, not only the published ones)."""
    import glob
    from pathlib import Path
    from cfgan.errors import UserError
    profiles = [("params.yaml", ["params.yaml"])]
    for cfg in sorted(glob.glob("workflow/profiles/*/config.yaml")):
        files = yaml.safe_load(open(cfg)).get("configfile")
        if files:
            profiles.append((Path(cfg).parent.name, files if isinstance(files, list) else [files]))
    out = []
    for name, files in profiles:
        out.append((name, files))
        out += [(f"{name} + {Path(e).stem}", [*files, e]) for e in sorted(glob.glob("workflow/experiments/*.yaml"))]
    for name, files in out:
        try:
            params = load_params(files)
        except UserError:
            assert "+" in name, name  # a profile itself must load; an experiment may not suit every profile
            continue
        method = next((m for f in reversed(files) if (m := (yaml.safe_load(open(f)) or {}).get("method"))), "paper")
        yield name, params, method


def test_the_papers_configurations_score_the_raw_map_and_segmenters_train_as_long_as_the_gan():
    """Issue 46: every configuration whose method is the paper's (`paper`, `paper-1800` over the crackforest
    profile's 1 px blur, ...) scores the paper's raw map, one pass; and wherever a supervised segmenter is
    trained, it trains at least as many steps as the GAN it is compared with (a shorter one would flatter G's maps)."""
    from cfgan.steps import has_masks
    from cfgan.train.gan import train_config
    named = {f"{profile} + {name}" for profile, name in _experiment_commands()}
    seen = set()
    for name, params, method in _configurations():
        seen.add(name)
        saliency = params["evaluate"]["saliency"]
        masked = [ds for ds in params["run_datasets"] if has_masks(params["datasets"][ds])]
        if method == "paper" and masked:  # (without masks no map is scored)
            assert saliency["smooth_sigma"] == 0, f"{name}: method paper blurs its maps ({saliency['smooth_sigma']} px)"
            assert saliency.get("turns", [1]) == [1], f"{name}: method paper averages its maps over turns {saliency['turns']}"
        if params["segmenter"]["architectures"]:
            for ds in masked:
                gan = train_config(params, ds)["steps"]
                assert params["segmenter"]["steps"] >= gan, f"{name}: segmenter {params['segmenter']['steps']} steps < GAN {gan} on {ds}"
    assert named <= seen and {"crackforest + paper", "crackforest + paper-1800", "crackforest + r1-1800", "neu"} <= seen
