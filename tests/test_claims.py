"""What the claims rest on: the losses' targets, D untouched by the G update, balanced batches,
the training-free saliency references, the tolerant F1, and tables over seeds."""

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from cfgan.compute import Compute
from cfgan.evaluate import saliency
from cfgan.metrics import choose_threshold, iou
from cfgan.models import build_discriminator, build_generator
from cfgan.report.tables import table2_classification, table5_segmentation
from cfgan.train.common import batch_indices
from cfgan.train.gan import gan_step, generator_step, optimizers
from cfgan.train.selection import collapse_signs

FP32 = Compute(torch.device("cpu"), "fp32", channels_last=False)
from cfgan.train.losses import FAKE, discriminator_loss, generator_losses


class FixedD(torch.nn.Module):
    """A 'discriminator' whose logits are a fixed function of the input's mean, so every loss's
    target can be read off."""

    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True)
        return torch.cat([m, 2 * m, -m], 1)


WEIGHTS = {"adversarial": 1.0, "auxiliary": 0.0, "l1": 0.0, "cycle": 0.0, "vq": 0.0}


def test_each_loss_scores_its_own_target():
    d, x = FixedD(), torch.rand(6, 3, 8, 8)
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    x_cf = torch.rand(6, 3, 8, 8)
    expected_d = F.cross_entropy(d(x), y) + F.cross_entropy(d(x_cf), torch.full_like(y, FAKE))
    assert torch.allclose(discriminator_loss(d, x, y, x_cf), expected_d)
    logits = torch.randn(6, 2)
    terms = generator_losses(None, d, x, y, x_cf, logits, {**WEIGHTS, "auxiliary": 1.0, "l1": 1.0}, 0, [])
    assert torch.allclose(terms["adversarial"], F.cross_entropy(d(x_cf), 1 - y))       # eq. 2: the opposite class
    assert not torch.allclose(terms["adversarial"], F.cross_entropy(d(x_cf), y))
    assert torch.allclose(terms["auxiliary"], F.cross_entropy(logits, y))               # eq. 3: x's own class
    assert torch.allclose(terms["l1"], (x - x_cf).abs().mean())


def test_the_cycle_term_alternates_its_targets():
    d, x, y = FixedD(), torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 1, 0])

    class Shift(torch.nn.Module):
        noise_dim = 1

        def forward(self, x, z=None):
            return (x + 0.1).clamp(0, 1), torch.zeros(len(x), 2)

    g = Shift()
    x_cf, _ = g(x)
    terms = generator_losses(g, d, x, y, x_cf, torch.zeros(4, 2), {**WEIGHTS, "cycle": 1.0}, 2, [1.0, 0.5])
    g2, _ = g(x_cf); g3, _ = g(g2); g4, _ = g(g3)
    expected = F.cross_entropy(d(g2), y) + 0.5 * F.cross_entropy(d(g3), 1 - y) + 0.5 * F.cross_entropy(d(g4), y)
    assert torch.allclose(terms["cycle"], expected)


def _models(size=16):
    g = build_generator("cnn_unet", {"noise_dim": 4, "noise_channels": 1, "dropout": 0.0,
                                     "cnn_unet": {"width": 4, "depth": 2, "upsample": "resize", "padding": "reflect"}}, size)
    d = build_discriminator("resnet3", {"resnet3": {"width": 4}, "swin": {"window_size": 2}}, size, 3)
    return g, d


CFG = {"lr_g": 1e-3, "lr_d": 1e-3, "betas": [0.5, 0.999], "loss": {**WEIGHTS, "auxiliary": 1.0, "l1": 1.0, "cycle": 1.0},
       "cycle_weights": [1.0]}


def test_the_generator_update_leaves_d_parameters_and_statistics_alone():
    torch.manual_seed(0)
    g, d = _models()
    opt_g, _ = optimizers(g, d, CFG)
    d.train()
    before = {k: v.clone() for k, v in d.state_dict().items()}
    g_before = [p.clone() for p in g.parameters()]
    x, y = torch.rand(8, 3, 16, 16), torch.tensor([0, 1] * 4)
    generator_step(g, d, opt_g, x, y, CFG, cycles=1, compute=FP32)
    after = d.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the G update changed D's weights or BN statistics"
    assert d.training and all(p.requires_grad for p in d.parameters())  # D is given back as it was
    assert any(not torch.equal(a, b) for a, b in zip(g_before, g.parameters()))  # while G did learn


def test_d_eval_and_train_outputs_agree_on_a_mixed_batch_after_training():
    """D's running statistics come from its own real+fake batches only, so eval mode (used to
    select and evaluate) sees D as training did."""
    torch.manual_seed(0)
    g, d = _models()
    cfg = {**CFG, "lr_g": 1e-12, "lr_d": 1e-12}  # (nearly) fixed weights: only the statistics move
    opt_g, opt_d = optimizers(g, d, cfg)
    x, y = torch.rand(16, 3, 16, 16), torch.tensor([0, 1] * 8)
    g.eval()  # no dropout: the same counterfactuals every step
    for _ in range(80):
        gan_step(g, d, opt_g, opt_d, x, y, cfg, cycles=1, update_g=True, compute=FP32)
    with torch.no_grad():
        x_cf, _ = g(x, torch.zeros(16, g.noise_dim))
        mixed = torch.cat([x, x_cf])
        d.train(); p_train = d(mixed).softmax(1)
        d.eval(); p_eval = d(mixed).softmax(1)
    assert (p_train - p_eval).abs().max() < 0.02


def test_balanced_batches_hold_the_classes_equally():
    labels = torch.tensor([0] * 90 + [1] * 10)
    rng = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = batch_indices(labels, 32, rng, balance=True)
        assert len(idx) == 32 and int(labels[idx].sum()) == 16
    plain = torch.cat([batch_indices(labels, 32, rng, balance=False) for _ in range(20)])
    assert float(labels[plain].float().mean()) < 0.2  # without balance the minority stays a minority
    odd = batch_indices(torch.tensor([0] * 5 + [1] * 3 + [2] * 2), 7, rng, balance=True)
    counts = np.bincount(torch.tensor([0] * 5 + [1] * 3 + [2] * 2)[odd].numpy(), minlength=3)
    assert sorted(counts) == [2, 2, 3]


def test_collapse_signs_name_what_went_wrong():
    healthy = {"val_change": 0.05, "val_damaged_rate_g": 0.4, "val_damaged_rate_d": 0.5, "val_p_fake_real": 0.1, "val_auc_fake": 0.8}
    assert collapse_signs(healthy) == []
    # calling real crops fake more often than not, while ranking counterfactuals above them, is the game, not a collapse
    assert collapse_signs({**healthy, "val_p_fake_real": 0.6}) == []
    identity = {**healthy, "val_change": 0.5 / 255, "val_damaged_rate_g": 0.0, "val_p_fake_real": 0.86, "val_auc_fake": 0.45}
    signs = " | ".join(collapse_signs(identity))
    assert "identity" in signs and "G head predicts one class" in signs and "more fake than its own counterfactuals" in signs


def test_a_g_head_near_chance_while_d_classifies_is_flagged():
    """A checkpoint whose G head calls 76 % of val crops damaged at balanced accuracy 0.61, D far above,
    raised no flag (the one-class flag needs 98 %); it was kept (CrackForest val, 2026-12-04; D there at 0.87)."""
    healthy = {"val_change": 0.05, "val_damaged_rate_g": 0.3, "val_damaged_rate_d": 0.3, "val_p_fake_real": 0.1,
               "val_auc_fake": 0.8, "val_bacc_g": 0.90, "val_bacc_d": 0.90}
    assert collapse_signs(healthy) == []
    broken = {**healthy, "val_bacc_g": 0.61, "val_damaged_rate_g": 0.76}
    assert collapse_signs(broken) == ["G head near chance while D classifies (balanced accuracy 0.61 against D's 0.90)"]
    assert collapse_signs({**broken, "val_bacc_d": 0.70}) == []          # D itself near chance: G keeps half its margin
    assert collapse_signs({k: v for k, v in broken.items() if k != "val_bacc_d"}) == []   # logs from before the column
    assert collapse_signs({**broken, "val_bacc_d": float("nan")}) == []


def test_balanced_accuracy_is_the_mean_of_both_recalls():
    from cfgan.metrics import balanced_accuracy
    y = np.array([1, 1, 1, 0])
    assert balanced_accuracy(y, np.array([1, 1, 1, 1])) == 0.5
    assert balanced_accuracy(y, np.array([1, 0, 0, 0])) == (1 / 3 + 1) / 2


def test_fake_score_auc_ranks_counterfactuals_against_real_crops():
    from cfgan.train.selection import fake_score_auc
    assert fake_score_auc(np.array([0.9, 0.8]), np.array([0.1, 0.2, 0.3])) == 1.0
    assert fake_score_auc(np.array([0.1]), np.array([0.9])) == 0.0
    assert fake_score_auc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5  # ties count half


def test_a_counterfactual_d_is_sure_is_fake_is_not_counted_as_flipped(monkeypatch):
    """Selection's flip rate: D's argmax over all three logits must be the opposite real class. (It
    was the argmax over the two real logits only: a counterfactual D called fake with near
    certainty still counted as flipped whenever its opposite-class logit edged out its own.)"""
    from cfgan.train import selection
    y = torch.tensor([0, 1, 0, 1])
    cf = torch.tensor([[0.0, 1.0, 9.0], [1.0, 0.0, 9.0], [0.0, 2.0, 1.0], [0.0, 3.0, -1.0]])  # sure fake, sure fake, flipped, not
    out = {"d_logits": torch.tensor([[2.0, 0.0, -3.0], [0.0, 2.0, -3.0]] * 2), "g_probs": torch.tensor([[0.9, 0.1], [0.1, 0.9]] * 2),
           "d_logits_cf": cf, "change": torch.full((4,), 0.05)}
    out["d_probs"], out["d_probs_cf"] = out["d_logits"].softmax(1), cf.softmax(1)
    monkeypatch.setattr(selection, "predict", lambda *a, **k: out)
    split = type("S", (), {"labels": y})()
    g = d = torch.nn.Identity()
    row = selection.validate(g, d, split, 4, FP32, 0)
    assert row["val_flip"] == 0.25  # only the third: the first two are fake to D, the fourth kept its class
    assert row["val_auc_fake"] == 1.0


def _crack_crops(n=12, size=32, seed=0):
    """Textured grey crops with a dark one-pixel-wide line: its mask is the line."""
    rng = np.random.default_rng(seed)
    images = (150 + 20 * rng.standard_normal((n, 3, size, size))).clip(0, 255)
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        row = rng.integers(6, size - 6)
        masks[i, row, :] = True
        images[i, :, row, :] -= 80
    return torch.from_numpy(images.astype(np.uint8)), masks


def test_local_contrast_finds_a_dark_line():
    images, masks = _crack_crops()
    maps = saliency.local_contrast_maps(images, 1.0, 8.0, "dark")
    t, val_iou = choose_threshold(maps, masks, [0.5, 0.8, 0.9, 0.95, 0.97, 0.99])
    assert val_iou > 0.5
    bright = saliency.local_contrast_maps(images, 1.0, 8.0, "bright")
    assert choose_threshold(bright, masks, [0.5, 0.8, 0.9, 0.95, 0.97, 0.99])[1] < 0.1  # wrong polarity


def test_random_and_all_pixel_references_sit_at_chance():
    _, masks = _crack_crops(n=40)
    rate = masks.mean()
    rnd = saliency.random_maps(masks.shape, 0)
    t, _ = choose_threshold(rnd, masks, [0.5, 0.8, 0.9, 0.97])
    scores = saliency.score_test(saliency.random_maps(masks.shape, 1), masks, t)
    assert scores["iou"].mean() < 2 * rate  # chance: about the masks' pixel rate, far from a localisation
    every = saliency.score_test(saliency.all_pixel_maps(masks.shape), masks, 1.0)
    assert np.allclose(every["iou"], masks.reshape(len(masks), -1).mean(1)) and every["coverage"].mean() == 1.0


def test_tolerant_f1_forgives_a_one_pixel_offset_that_iou_punishes():
    truth = np.zeros((20, 20), bool); truth[10, 2:18] = True
    shifted = np.roll(truth, 1, axis=0)
    assert iou(shifted, truth) == 0.0
    assert saliency.tolerant_f1(shifted, truth) == 1.0
    far = np.roll(truth, 5, axis=0)
    assert saliency.tolerant_f1(far, truth) == 0.0
    assert saliency.tolerant_f1(np.zeros_like(truth), truth) == 0.0
    assert saliency.tolerant_f1(np.zeros_like(truth), np.zeros_like(truth)) == 1.0


def test_two_seeds_give_one_row_with_a_standard_deviation():
    cls = pd.DataFrame([
        {"run": "cnn_unet-resnet3-c1-s0", "model": "D", "metric": "f1", "value": 0.6, "note": ""},
        {"run": "cnn_unet-resnet3-c1-s1", "model": "D", "metric": "f1", "value": 0.8, "note": ""},
        {"run": "baseline-resnet3-s0", "model": "baseline", "metric": "f1", "value": 0.5, "note": ""},
        {"run": "references", "model": "all_damaged", "metric": "f1", "value": 0.4, "note": ""},
    ])
    for metric in ("accuracy", "precision", "recall"):
        cls = pd.concat([cls, cls[cls["metric"] == "f1"].assign(metric=metric)], ignore_index=True)
    t = table2_classification(cls).set_index(["config", "model"])
    row = t.loc[("cnn_unet-resnet3-c1", "D")]
    assert row["f1"] == pytest.approx(0.7) and row["f1_sd"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert row["n_seeds"] == 2 and t.loc[("baseline-resnet3", "baseline"), "n_seeds"] == 1
    assert np.isnan(t.loc[("references", "all_damaged"), "f1_sd"])


def test_table5_shows_references_and_flags_all_pixel_maps():
    rows = []
    for run, model, iou, cov in (("cnn_unet-resnet3-c1-s0", "counterfactual", 0.3, 0.05),
                                 ("cnn_unet-resnet3-c1-s1", "counterfactual", 0.2, 0.06),
                                 ("references", "local_contrast", 0.25, 0.05),
                                 ("references", "all_pixels", 0.06, 1.0)):
        rows += [{"run": run, "model": model, "metric": m, "value": v, "note": ""} for m, v in
                 (("iou_median", iou), ("iou_mean", iou), ("f1_tol2_median", iou), ("f1_tol2_mean", iou), ("coverage", cov))]
    cls = pd.DataFrame([{"run": r, "model": "D", "metric": m, "value": 0.7, "note": ""}
                        for r in ("cnn_unet-resnet3-c1-s0", "cnn_unet-resnet3-c1-s1") for m in ("accuracy", "f1")])
    from cfgan.report.tables import table5_notes
    sal = pd.DataFrame(rows)
    t = table5_segmentation(sal, cls)
    assert set(t["saliency"]) == {"counterfactual", "local_contrast", "all_pixels"}
    cf = t[t["saliency"] == "counterfactual"].iloc[0]
    assert cf["iou_median"] == pytest.approx(0.25) and cf["n_seeds"] == 2 and cf["f1"] == pytest.approx(0.7)
    assert "f1_tol2_median" in t.columns
    notes = table5_notes(sal, t)
    assert "all_pixels" in notes and "FLAG" in notes and "local_contrast of" not in notes


def test_reference_steps_write_trivial_classifiers_and_reference_maps(small_manifest, tmp_path):
    """The training-free "run" through its own CLI steps: rows named `references`, every method there."""
    from cfgan.cli import main
    from conftest import ROOT
    _, manifest = small_manifest
    params = [str(ROOT / "params.yaml"), str(tmp_path / "overlay.yaml")]  # the fixture's overlay
    assert main(["classify-references", "--params", *params, "--manifest", str(manifest), "--dataset", "synthetic",
                 "--out", str(tmp_path / "cls.csv")]) == 0
    cls = pd.read_csv(tmp_path / "cls.csv")
    assert set(cls["run"]) == {"references"} and set(cls["model"]) == {"all_damaged", "all_undamaged"}
    assert cls[(cls["model"] == "all_undamaged") & (cls["metric"] == "f1")]["value"].iloc[0] == 0
    assert main(["saliency-references", "--params", *params, "--manifest", str(manifest), "--dataset", "synthetic",
                 "--out", str(tmp_path / "sal.csv"), "--examples", str(tmp_path / "sal.npz")]) == 0
    sal = pd.read_csv(tmp_path / "sal.csv")
    assert set(sal["model"]) == {"local_contrast", "random", "all_pixels"}
    medians = sal[(sal["metric"] == "iou_median") & (sal["condition"] == "test")].set_index("model")["value"]  # not the attribution subset's
    assert medians["local_contrast"] > medians["random"]  # generated cracks are dark lines
    assert set(np.load(tmp_path / "sal.npz").files) >= {"x", "mask", "local_contrast", "random", "all_pixels"}


class _BrightnessSplit:
    """Crops whose class is their brightness (dark: damaged), so a few steps can learn it."""

    masks = None

    def __init__(self, n=64, size=16):
        gen = torch.Generator().manual_seed(0)
        self.labels = torch.tensor([0, 1] * (n // 2))
        level = torch.where(self.labels == 1, 0.3, 0.7)[:, None, None, None]
        self.x = (level + 0.05 * torch.randn(n, 3, size, size, generator=gen)).clamp(0, 1)

    def batch(self, idx, dev):
        return self.x[idx].to(dev), self.labels[idx].to(dev)


def test_warm_up_teaches_d_and_g_head_the_classes_and_keeps_g_near_the_identity():
    from conftest import ROOT
    from cfgan.config import load_params
    from cfgan.train.warmup import warm_up

    torch.manual_seed(0)
    split, (g, d) = _BrightnessSplit(), _models()
    cfg = {**CFG, "batch_size": 16, "balance": True, "augment": load_params([ROOT / "params.yaml"])["train"]["augment"]}
    opt_g, opt_d = optimizers(g, d, cfg)
    rng = torch.Generator().manual_seed(0)

    def state():
        return [p.clone() for p in [*g.parameters(), *d.parameters()]]

    def d_accuracy_and_p_fake():
        d.eval()
        with torch.no_grad():
            p = d(split.x).softmax(1)
        d.train()
        return float((p[:, :2].argmax(1) == split.labels).float().mean()), float(p[:, FAKE].mean())

    def g_error_and_head_accuracy():
        g.eval()
        with torch.no_grad():
            x_rec, logits = g(split.x, torch.zeros(len(split.x), g.noise_dim))
        g.train()
        return float((split.x - x_rec).abs().mean()), float((logits.argmax(1) == split.labels).float().mean())

    before = state()
    warm_up(g, d, opt_g, opt_d, split, {**cfg, "warmup": {"d_steps": 0, "g_steps": 0}}, rng, FP32, "test")
    assert all(torch.equal(a, b) for a, b in zip(before, state()))  # off: nothing moves

    error_before, _ = g_error_and_head_accuracy()
    g_before = [p.clone() for p in g.parameters()]
    warm_up(g, d, opt_g, opt_d, split, {**cfg, "warmup": {"d_steps": 60}}, rng, FP32, "test")
    accuracy, p_fake = d_accuracy_and_p_fake()
    assert accuracy > 0.95 and p_fake < 0.2  # D tells the classes apart and calls real crops real
    assert all(torch.equal(a, b) for a, b in zip(g_before, g.parameters()))  # the D warm-up leaves G alone

    warm_up(g, d, opt_g, opt_d, split, {**cfg, "warmup": {"g_steps": 60}}, rng, FP32, "test")
    error_after, head_accuracy = g_error_and_head_accuracy()
    # the CNN UNet starts as the identity (zero residual): the warm-up keeps it there while its head learns
    assert error_before == 0 and error_after < 0.01 and head_accuracy > 0.95


def test_robustness_subset_keeps_the_class_ratio_and_is_the_same_for_every_model():
    from cfgan.data.datasets import Split
    from cfgan.evaluate.robustness import stratified_subset

    labels = torch.tensor([0] * 300 + [1] * 100)
    split = Split(torch.arange(400, dtype=torch.uint8).repeat_interleave(12).view(400, 3, 2, 2), labels,
                  torch.zeros(400, 2, 2, dtype=torch.bool), [f"crop{i}.png" for i in range(400)])
    assert stratified_subset(split, None, 0) is split and stratified_subset(split, 400, 0) is split
    a, b, other = stratified_subset(split, 100, 0), stratified_subset(split, 100, 0), stratified_subset(split, 100, 1)
    assert len(a) == 100 and int(a.labels.sum()) == 25  # 3:1 as in the test split
    assert a.paths == b.paths and a.paths != other.paths  # one draw per seed, whichever model asks
    order = [int(p[4:-4]) for p in a.paths]
    assert order == sorted(order) and all(a.images[i, 0, 0, 0] == order[i] % 256 for i in range(len(a)))
    assert a.masks.shape == (100, 2, 2)


def test_cosine_schedule_decays_both_learning_rates_and_constant_leaves_them():
    from cfgan.train.gan import schedule_lr

    g, d = _models()
    cfg = {**CFG, "lr_g": 1e-3, "lr_d": 2e-3, "steps": 100}
    opt_g, opt_d = optimizers(g, d, cfg)
    lrs = []
    for step in (0, 50, 99):
        schedule_lr(opt_g, opt_d, {**cfg, "lr_schedule": "cosine"}, step)
        lrs.append((opt_g.param_groups[0]["lr"], opt_d.param_groups[0]["lr"]))
    assert lrs[0] == (1e-3, 2e-3) and lrs[1] == pytest.approx((5e-4, 1e-3)) and lrs[2][0] < 1e-5 and lrs[2][1] < 2e-5
    schedule_lr(opt_g, opt_d, {**cfg, "lr_schedule": "constant"}, 50)
    assert opt_d.param_groups[0]["lr"] == lrs[2][1]  # constant: nothing is touched


def test_d_class_comes_from_its_real_logits_even_when_it_is_sure_the_image_is_fake():
    """Renormalising float32 probabilities fails here: both real probabilities underflow to 0."""
    from cfgan.inference import real_class_probs
    from cfgan.evaluate.uncertainty import fakeness_correlation

    logits = torch.tensor([[0.0, 3.0, 200.0], [3.0, 0.0, 200.0], [0.0, 3.0, 1.0], [3.0, 0.0, 1.0]])
    assert logits.softmax(1)[:2, :2].max() == 0  # the underflow
    assert real_class_probs(logits).argmax(1).tolist() == [1, 0, 1, 0]
    rows = fakeness_correlation(logits, torch.tensor([[0.1, 0.9], [0.9, 0.1], [0.2, 0.8], [0.8, 0.2]]), torch.tensor([1, 1, 1, 1]))
    assert all(np.isfinite(r["value"]) for r in rows)


def test_the_robustness_step_is_given_its_subset_size():
    from conftest import ROOT
    from cfgan.config import deep_merge, load_params
    from cfgan.steps import keys_for, select

    params = deep_merge(load_params([ROOT / "params.yaml"]), {"evaluate": {"robustness_crops": 400}})
    assert select(params, keys_for("robustness", "crackforest"))["evaluate"]["robustness_crops"] == 400
