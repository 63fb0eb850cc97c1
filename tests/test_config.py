import pytest
import yaml

from cfgan.config import baseline_runs, grid_runs, load_params, parse_run_name, run_name, schema, segmenter_runs, split_seed
from cfgan.errors import UserError
from cfgan.models import DISCRIMINATORS, GENERATORS
from conftest import ROOT, TINY


def test_paper_and_tiny_params_are_valid():
    paper = load_params([ROOT / "params.yaml"])
    tiny = load_params(TINY)
    assert paper["train"]["g_every"] == 2  # the paper's G-every-second-D-step schedule
    assert tiny["run_datasets"] == ["synthetic"]
    assert tiny["train"]["loss"] == paper["train"]["loss"]  # the overlay merges, not replaces


def test_unknown_key_is_named_with_allowed_keys(write_params):
    with pytest.raises(UserError) as err:
        load_params(write_params({"train": {"stepz": 3}}))
    msg = str(err.value)
    assert "train" in msg and "stepz" in msg and "steps" in msg


def test_wrong_type_is_named(write_params):
    with pytest.raises(UserError, match=r"train\.batch_size"):
        load_params(write_params({"train": {"batch_size": "big"}}))


def test_unknown_model_name_lists_allowed_values(write_params):
    with pytest.raises(UserError) as err:
        load_params(write_params({"grid": {"discriminators": ["resnet9000"]}}))
    msg = str(err.value)
    assert "grid.discriminators.0" in msg and "resnet9000" in msg and "resnet18" in msg


def test_missing_key_is_named(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    del params["train"]["lr_g"]
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(UserError, match="lr_g"):
        load_params([path])


def test_missing_params_file_and_bad_yaml(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_params([tmp_path / "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params([bad])


def test_schema_model_names_match_the_registry():
    props = schema()["properties"]["grid"]["properties"]
    assert set(props["generators"]["items"]["enum"]) == set(GENERATORS)
    assert set(props["discriminators"]["items"]["enum"]) == set(DISCRIMINATORS)


def test_schema_map_forms_match_the_saliency_code():
    from cfgan.maps import COUNTERFACTUAL_FORMS
    assert schema()["$defs"]["map_form"]["enum"] == list(COUNTERFACTUAL_FORMS)


def test_run_names_round_trip():
    assert parse_run_name("cnn_unet-resnet18-c1-s2") == ("cnn_unet", "resnet18", 1, 2)
    assert run_name("cnn_unet", "resnet18", 1, 2) == "cnn_unet-resnet18-c1-s2"
    for bad in ("cnn_unet_resnet18", "cnn_unet-resnet18-c1", "cnn_unet-resnet18-c1-x2"):
        with pytest.raises(UserError, match="expected"):
            parse_run_name(bad)
    assert split_seed("baseline-resnet3-s4") == ("baseline-resnet3", 4)
    assert split_seed("references") == ("references", None)


def test_seeds_multiply_every_training_run(write_params):
    params = load_params(write_params({"grid": {"generators": ["cnn_unet"], "discriminators": ["resnet3", "resnet18"],
                                                "cycles": [1], "seeds": [0, 7]},
                                       "segmenter": {"architectures": ["cnn_unet"]},
                                       "report": {"showcase": {"generator": "cnn_unet", "discriminator": "resnet3", "cycles": 1}}}))
    assert grid_runs(params) == ["cnn_unet-resnet3-c1-s0", "cnn_unet-resnet3-c1-s7",
                                 "cnn_unet-resnet18-c1-s0", "cnn_unet-resnet18-c1-s7"]
    assert baseline_runs(params) == ["baseline-resnet3-s0", "baseline-resnet3-s7", "baseline-resnet18-s0", "baseline-resnet18-s7"]
    assert segmenter_runs(params) == ["segmenter-cnn_unet-s0", "segmenter-cnn_unet-s7"]


def test_train_negatives_is_a_named_choice_globally_and_per_data_set(write_params):
    from cfgan.train.gan import train_config
    params = load_params(write_params({"datasets": {"synthetic": {"train": {"negatives": "same_photos"}}}}, "a.yaml"))
    assert train_config(params, "synthetic")["negatives"] == "same_photos"
    assert "negatives" not in params["train"]          # off (all) unless asked for: the paper's configuration
    with pytest.raises(UserError, match="negatives"):
        load_params(write_params({"train": {"negatives": "nearby"}}, "b.yaml"))
