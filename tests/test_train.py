import pandas as pd
import pytest
import torch

from cfgan.errors import UserError
from cfgan.train import batches, gan, selection, val_curves


def killed_during_step_5(monkeypatch, params, manifest, run, out) -> None:
    """Train until the process is killed during step 5 (its resume file holds step 4), then restore augment."""
    calls, real_augment = {"n": 0}, batches.augment

    def dying_augment(x, cfg, rng, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_augment(x, cfg, rng, **kw)

    monkeypatch.setattr(batches, "augment", dying_augment)
    with pytest.raises(KeyboardInterrupt):
        gan.train_gan(params, manifest, run, out)
    monkeypatch.setattr(batches, "augment", real_augment)


def test_a_killed_run_resumes_from_its_checkpoint(small_manifest, tmp_path, monkeypatch, capsys):
    params, manifest = small_manifest
    out = tmp_path / "run"
    killed_during_step_5(monkeypatch, params, manifest, "cnn_unet-resnet3-c1-s0", out)
    assert (out / "resume.pt").exists() and not (out / "checkpoint.pt").exists()
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


def test_val_maps_logs_the_map_curve_and_can_select_the_step_on_it(small_manifest, tmp_path, monkeypatch):
    from cfgan.config import deep_merge
    params, manifest = small_manifest
    maps = {"forms": ["abs", "dark"], "quantiles": [0.5, 0.9]}
    curve = gan.train_gan(deep_merge(params, {"train": {"val_maps": maps}}), manifest, "cnn_unet-resnet3-c1-s0", tmp_path / "curve")
    log = pd.read_csv(tmp_path / "curve/log.csv").dropna(subset=["val_score"])
    assert len(log) == 3 and log["val_map_iou"].between(0, 1).all() and set(log["val_map_form"]) <= {"abs", "dark"}
    # scoring the maps draws no random number the training draws: the run is the run without the curve
    gan.train_gan(params, manifest, "cnn_unet-resnet3-c1-s0", tmp_path / "plain")
    load = lambda name: torch.load(tmp_path / f"{name}/checkpoint.pt", weights_only=True)
    assert same(load("curve")["g"], load("plain")["g"]) and same(load("curve")["d"], load("plain")["d"])
    pd.testing.assert_frame_equal(log.drop(columns=["val_map_iou", "val_map_form"]),
                                  pd.read_csv(tmp_path / "plain/log.csv").dropna(subset=["val_score"]), check_dtype=False)
    rows = log.to_dict("records")
    tier = {r["step"]: not selection.collapse_signs(r) for r in rows}
    by_score = max(rows, key=lambda r: (tier[r["step"]], r["val_score"]))["step"]
    assert curve["best_step"] == by_score and curve["val_maps"]["selected_on"] == "val_score"  # logged, not used
    # select: true keeps the step whose maps score best. A curve that peaks away from val_score's choice:
    peak = next(r["step"] for r in sorted(rows, key=lambda r: (tier[r["step"]], -r["val_score"]), reverse=True) if r["step"] != by_score)
    assert tier[peak] == tier[by_score]  # the peak is in val_score's collapse tier, so the two rules disagree
    fed = iter([0.9 if r["step"] == peak else 0.1 for r in rows])
    monkeypatch.setattr(val_curves, "best_form_iou", lambda *a, **k: ("dark", next(fed)))
    chosen = gan.train_gan(deep_merge(params, {"train": {"val_maps": {**maps, "select": True}}}), manifest,
                           "cnn_unet-resnet3-c1-s0", tmp_path / "select")
    assert chosen["best_step"] == peak and chosen["val_maps"] == {"selected_on": "val_map_iou", "form": "dark"}
    from cfgan.compute import resolve
    from cfgan.evaluate.run import _run_note
    from cfgan.train.common import load_checkpoint
    notes = [_run_note(load_checkpoint(tmp_path / f"{name}/checkpoint.pt"), resolve(params)) for name in ("curve", "select")]
    assert "val masks read" not in notes[0] and f"step {peak} selected on the maps' val IoU (val masks read" in notes[1]  # every table row says so


def test_val_pgd_logs_d_s_robustness_curve_without_changing_the_run(small_manifest, tmp_path):
    from cfgan.config import deep_merge
    params, manifest = small_manifest
    from cfgan.config import load_params
    from cfgan.steps import keys_for, select
    pgd = {"step_sizes": [0.002, 0.05], "crops": 12}
    full = deep_merge(load_params(["params.yaml"]), {"train": {"val_pgd": pgd}})
    # the train step reads evaluate.pgd (the attack's iterations and eps) where train.val_pgd is set, and only there
    assert select(full, keys_for("train"))["evaluate"]["pgd"] == full["evaluate"]["pgd"]
    assert "pgd" not in select(load_params(["params.yaml"]), keys_for("train"))["evaluate"]
    gan.train_gan(deep_merge(params, {"train": {"val_pgd": pgd}, "evaluate": {"pgd": full["evaluate"]["pgd"]}}), manifest, "cnn_unet-resnet3-c1-s0", tmp_path / "curve")
    log = pd.read_csv(tmp_path / "curve/log.csv").dropna(subset=["val_score"])
    weak, strong = log["val_f1_d_pgd=0.002"], log["val_f1_d_pgd=0.05"]
    assert len(log) == 3 and weak.between(0, 1).all() and strong.between(0, 1).all()
    # the attack takes input gradients only and draws no random number: the run is the run without the curve
    gan.train_gan(params, manifest, "cnn_unet-resnet3-c1-s0", tmp_path / "plain")
    load = lambda name: torch.load(tmp_path / f"{name}/checkpoint.pt", weights_only=True)
    assert same(load("curve")["g"], load("plain")["g"]) and same(load("curve")["d"], load("plain")["d"])
    pd.testing.assert_frame_equal(log.drop(columns=list(weak.to_frame().columns) + ["val_f1_d_pgd=0.05"]),
                                  pd.read_csv(tmp_path / "plain/log.csv").dropna(subset=["val_score"]), check_dtype=False)
    # the curve's figures are the robustness step's for the same D and crops; D's mode is given back
    from cfgan.compute import resolve
    from cfgan.data.datasets import load_split
    from cfgan.evaluate import robustness
    val = load_split(manifest, "val")
    attacked = robustness.stratified_subset(val, 12, 0)
    x, _ = attacked.batch(torch.arange(len(attacked)), "cpu")
    # a D that calls a crop damaged when it is brighter than the median crop: PGD 0.05 (eps 0.5) flips every call
    d = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(x[0].numel(), 3))
    with torch.no_grad():
        d[1].weight.zero_(); d[1].weight[1] = 50 / x[0].numel()
        d[1].bias.copy_(torch.tensor([0.0, -50 * float(x.mean(dim=(1, 2, 3)).median()), -10.0]))
    curve = val_curves.pgd_curve(d.train(), attacked, full["evaluate"]["pgd"], [0.002, 0.05], 32, resolve(params), 0)
    assert d.training  # (the sweep below leaves D in eval mode)
    rows = robustness.sweep(attacked, robustness.RealLogits(d), None, {"pgd": {**full["evaluate"]["pgd"], "step_sizes": [0.0, 0.002, 0.05]},
                                                                       "noise": {"stds": []}}, 32, 0)
    f1 = {r["condition"]: r["value"] for r in rows if r["metric"] == "f1"}
    assert curve == {"val_f1_d_pgd=0.002": f1["pgd=0.002"], "val_f1_d_pgd=0.05": f1["pgd=0.05"]}
    assert f1["pgd=0.05"] < f1["pgd=0.0"]  # the attack bites: the curve measures something


HEALTHY = {"val_change": 0.03, "val_damaged_rate_d": 0.4, "val_damaged_rate_g": 0.3, "val_auc_fake": 0.7}


def test_the_step_keeper_keeps_the_best_classifier_among_maps_within_the_tolerance():
    rows = [(1, 0.30, 0.9, {}), (2, 0.375, 0.7, {}), (3, 0.383, 0.6, {}), (4, 0.50, 0.99, {"val_change": 0.0}),  # 4: G the identity
            (5, 0.39, 0.55, {}), (6, 0.20, 0.95, {}), (7, 0.385, 0.6, {})]

    def feed(keeper, part=rows):
        for step, iou, score, bad in part:
            keeper.offer(step, {**HEALTHY, "val_map_iou": iou, "val_score": score, **bad}, lambda step=step: {"g": step})
        return keeper

    plain = feed(selection.StepKeeper("val_map_iou")).kept()
    assert (plain["step"], plain["g"]) == (5, 5)  # the best maps of the healthy tier (step 4 is collapsed)
    wide = feed(selection.StepKeeper("val_map_iou", 0.01))
    assert wide.kept()["step"] == 3  # within 0.01 of 0.39: steps 3, 5, 7; the best val score, the earliest of equals
    assert [c["step"] for c in wide.candidates] == [3, 5, 7]  # 1 and 2 were candidates until the best rose past them
    assert feed(selection.StepKeeper("val_score")).kept()["step"] == 6  # label-only selection, as before
    # a resume file's state continues the same decision
    half = feed(selection.StepKeeper("val_map_iou", 0.01), rows[:4])
    resumed = feed(selection.StepKeeper("val_map_iou", 0.01, candidates=half.candidates), rows[4:])
    assert resumed.kept()["step"] == 3 and [c["key"] for c in resumed.candidates] == [c["key"] for c in wide.candidates]
    with pytest.raises(UserError, match="tolerance.*needs train.val_maps.select: true"):
        val_curves.val_maps_settings({"val_maps": {"tolerance": 0.01}}, {"quantiles": [0.5]})


def test_val_maps_tolerance_is_trained_resumed_and_named_in_every_row(small_manifest, tmp_path, monkeypatch):
    from cfgan.compute import resolve
    from cfgan.config import deep_merge
    from cfgan.evaluate.run import _run_note
    from cfgan.train.common import load_checkpoint
    params, manifest = small_manifest
    run = "cnn_unet-resnet3-c1-s0"
    curve = gan.train_gan(deep_merge(params, {"train": {"val_maps": {"quantiles": [0.5]}}}), manifest, run, tmp_path / "curve")
    log = pd.read_csv(tmp_path / "curve/log.csv").dropna(subset=["val_score"]).to_dict("records")
    assert curve["best_step"] and len(log) == 3
    # maps that the curve cannot tell apart (all three within 0.01), peaking away from the best val score: the score wins
    tier = max(not selection.collapse_signs(r) for r in log)
    want = max((r for r in log if (not selection.collapse_signs(r)) == tier), key=lambda r: (r["val_score"], -r["step"]))["step"]
    peak = next(q["step"] for q in log if q["step"] != want and (not selection.collapse_signs(q)) == tier)  # plain select would keep it
    ious = [0.405 if r["step"] == peak else 0.400 for r in log]
    cfg = deep_merge(params, {"train": {"val_maps": {"quantiles": [0.5], "select": True, "tolerance": 0.01}}})

    def fed_curve():
        it = iter(ious)
        monkeypatch.setattr(val_curves, "best_form_iou", lambda *a, **k: ("abs", next(it)))

    fed_curve()
    chosen = gan.train_gan(cfg, manifest, run, tmp_path / "tol")
    assert chosen["best_step"] == want and chosen["val_maps"] == {"selected_on": "val_map_iou", "form": "abs", "tolerance": 0.01}
    note = _run_note(load_checkpoint(tmp_path / "tol/checkpoint.pt"), resolve(params))
    assert f"step {want} selected on the best val score among steps within 0.01 of the best maps' val IoU" in note
    # killed after its second validation, resumed: the same kept step and weights
    fed_curve()
    killed_during_step_5(monkeypatch, cfg, manifest, run, tmp_path / "killed")
    it = iter(ious[2:])  # the first two validations are in the resume file
    monkeypatch.setattr(val_curves, "best_form_iou", lambda *a, **k: ("abs", next(it)))
    again = gan.train_gan(cfg, manifest, run, tmp_path / "killed")
    assert same(again, chosen)
    a, b = load_checkpoint(tmp_path / "tol/checkpoint.pt"), load_checkpoint(tmp_path / "killed/checkpoint.pt")
    assert same(a["g"], b["g"]) and same(a["d"], b["d"])


def test_ema_d_keeps_an_average_of_d_that_only_watches_and_survives_a_kill(small_manifest, tmp_path, monkeypatch):
    from cfgan.config import deep_merge
    from cfgan.train.common import load_checkpoint
    params, manifest = small_manifest
    run = "cnn_unet-resnet3-c1-s0"
    once = {"train": {"val_every": 6}}  # one validation, at the last step: both runs keep step 6
    gan.train_gan(deep_merge(params, once), manifest, run, tmp_path / "plain")
    summary = gan.train_gan(deep_merge(params, {"train": {"val_every": 6, "ema_d": 0.5}}), manifest, run, tmp_path / "ema")
    assert summary["ema_d"] == 0.5 and summary["best_step"] == 6
    from cfgan.compute import resolve
    from cfgan.evaluate.run import _run_note
    assert "D kept as an average of its weights (train.ema_d 0.5)" in _run_note(load_checkpoint(tmp_path / "ema/checkpoint.pt"), resolve(params))
    assert "average" not in _run_note(load_checkpoint(tmp_path / "plain/checkpoint.pt"), resolve(params))
    losses = [c for c in pd.read_csv(tmp_path / "plain/log.csv").columns if c.startswith("loss")]
    # training goes on with the live networks: the same losses at every step, the same G kept ...
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "plain/log.csv")[losses], pd.read_csv(tmp_path / "ema/log.csv")[losses])
    a, b = load_checkpoint(tmp_path / "plain/checkpoint.pt"), load_checkpoint(tmp_path / "ema/checkpoint.pt")
    assert same(a["g"], b["g"])
    # ... while the D kept is the average, not the last D
    assert not same(a["d"], b["d"])
    # killed after two validations and resumed: the same average as the uninterrupted run
    cfg = deep_merge(params, {"train": {"ema_d": 0.5}})
    whole = gan.train_gan(cfg, manifest, run, tmp_path / "whole")
    killed_during_step_5(monkeypatch, cfg, manifest, run, tmp_path / "killed")
    assert same(gan.train_gan(cfg, manifest, run, tmp_path / "killed"), whole)
    assert same(load_checkpoint(tmp_path / "whole/checkpoint.pt")["d"], load_checkpoint(tmp_path / "killed/checkpoint.pt")["d"])


def test_baseline_ema_averages_the_twin_it_keeps_without_changing_its_training(small_manifest, tmp_path):
    from cfgan.config import load_params
    from cfgan.train.baselines import train_baseline
    from cfgan.train.common import load_checkpoint
    _, manifest = small_manifest
    params = load_params(["params.yaml", tmp_path / "overlay.yaml"])
    short = {"steps": 4, "batch_size": 8}
    plain = train_baseline({**params, "baseline": {**params["baseline"], **short}}, manifest, "resnet3", tmp_path / "plain")
    ema = train_baseline({**params, "baseline": {**params["baseline"], **short, "ema": 0.5}}, manifest, "resnet3", tmp_path / "ema")
    assert "ema" not in plain and ema["ema"] == 0.5
    from cfgan.compute import resolve
    from cfgan.evaluate.run import _run_note
    assert "the twin kept as an average of its weights (baseline.ema 0.5)" in _run_note(load_checkpoint(tmp_path / "ema/checkpoint.pt"), resolve(params))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "plain/log.csv")[["loss"]], pd.read_csv(tmp_path / "ema/log.csv")[["loss"]])
    assert not same(load_checkpoint(tmp_path / "plain/checkpoint.pt")["model"], load_checkpoint(tmp_path / "ema/checkpoint.pt")["model"])


def test_val_maps_scores_the_maps_as_the_saliency_step_unless_it_says_otherwise():
    saliency = {"counterfactual_forms": ["dark", "abs-decast"], "quantiles": [0.8, 0.9], "smooth_sigma": 1.0}
    assert val_curves.val_maps_settings({"val_maps": {"select": True}}, saliency) == {
        "forms": ["dark", "abs-decast"], "quantiles": [0.8, 0.9], "smooth_sigma": 1.0, "select": True}
    own = val_curves.val_maps_settings({"val_maps": {"forms": ["abs"], "smooth_sigma": 0.0}}, saliency)
    assert (own["forms"], own["quantiles"], own["smooth_sigma"], own["select"]) == (["abs"], [0.8, 0.9], 0.0, False)
    assert val_curves.val_maps_settings({"val_maps": {}}, {"quantiles": [0.5]})["forms"] == ["abs"]  # the saliency step's default form
    assert val_curves.val_maps_settings({}, saliency) is None
    with pytest.raises(UserError, match="train.val_maps: no threshold quantiles"):
        val_curves.val_maps_settings({"val_maps": {}}, {})
    # the train step reads the saliency keys only where it uses them (editing them reruns no other training)
    from cfgan.steps import keys_for, present_keys, select
    keys = keys_for("train", "cracks")
    params = {"seed": 0, "train": {"steps": 1}, "evaluate": {"batch_size": 8, "saliency": saliency}}
    assert "evaluate.saliency.quantiles" not in present_keys(params, keys)
    for on in ({"train": {"steps": 1, "val_maps": {}}}, {"datasets": {"cracks": {"train": {"val_maps": {}}}}}):
        read = [k for k in present_keys({**params, **on}, keys) if k.startswith("evaluate.saliency")]
        assert select({**params, **on}, read)["evaluate"]["saliency"] == saliency, on


def test_val_maps_is_refused_where_val_has_no_masks(tmp_path):
    from types import SimpleNamespace
    with pytest.raises(UserError, match="train.val_maps.*no masks"):
        val_curves.check_val_maps({"val_maps": {"forms": ["abs"], "quantiles": [0.5]}}, SimpleNamespace(masks=None, labels=torch.tensor([0, 1])), tmp_path / "m.csv")
    assert val_curves.check_val_maps({}, None, tmp_path / "m.csv") is None
