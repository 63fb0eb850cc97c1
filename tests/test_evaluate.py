import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

from cfgan.data.datasets import Split
from cfgan.evaluate import fid, robustness
from cfgan.maps import smooth
from cfgan.metrics import binary_metrics, choose_threshold, iou, per_image_iou
from cfgan.evaluate.uncertainty import fakeness_correlation, pearson
from cfgan.errors import UserError


def test_binary_metrics_known_case():
    m = binary_metrics([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert binary_metrics([0, 0], [0, 0])["f1"] == 0.0


def test_iou_known_masks():
    a = np.zeros((4, 4), bool); a[:2] = True
    b = np.zeros((4, 4), bool); b[1:3] = True
    assert iou(a, b) == pytest.approx(4 / 12)
    assert iou(a, a) == 1.0 and iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_threshold_choice_recovers_the_true_region():
    masks = np.zeros((3, 8, 8), bool); masks[:, 2:6, :] = True   # half of the pixels
    maps = masks * 1.0 + 0.3 * np.random.default_rng(0).random((3, 8, 8))
    t, val_iou = choose_threshold(maps, masks, [0.1, 0.5, 0.8, 0.95])
    assert val_iou == 1.0 and per_image_iou(maps, masks, t).mean() == 1.0
    assert 0.3 < t <= 1.0  # the median: between the background and the region


def test_threshold_is_absolute_so_a_near_identity_map_is_not_stretched():
    """Relative-to-maximum thresholds turned an identity G's one-grey-level noise into full masks;
    one threshold for the whole val set keeps a flat map flat: its masks stay small and wrong."""
    rng = np.random.default_rng(1)
    masks = np.zeros((20, 16, 16), bool); masks[:, 6:10, :] = True   # a quarter of the pixels
    good = masks * 0.5 + 0.05 * rng.random(masks.shape)
    flat = 0.004 * rng.random(masks.shape)   # under one grey level everywhere
    t_good, iou_good = choose_threshold(good, masks, [0.5, 0.75, 0.9])
    t_flat, iou_flat = choose_threshold(flat, masks, [0.5, 0.75, 0.9])
    assert iou_good == 1.0 and iou_flat < 0.3


def test_smoothing_spreads_a_speckle_and_keeps_a_line():
    maps = torch.zeros(1, 21, 21)
    maps[0, 10, :] = 1.0          # a line (a crack's change)
    maps[0, 3, 3] = 1.0           # an isolated speckle of the same height
    assert torch.equal(smooth(maps, 0.0), maps)
    out = smooth(maps, 2.0)[0]
    assert out[10, 10] > 3 * out[3, 3]  # after blurring the line dominates the speckle
    assert out.sum() == pytest.approx(maps.sum().item(), rel=0.05)


def test_cached_real_features_are_checked_against_the_step(tmp_path):
    feats, labels = np.random.default_rng(0).normal(size=(6, 64)), np.array([0, 1, 0, 1, 0, 1])
    path = tmp_path / "fid_real.npz"
    fid.save_features(path, feats, labels, "note", 64, tmp_path / "manifest.csv")
    loaded, loaded_labels, note = fid.load_features(path, 64, labels)
    assert np.allclose(loaded, feats, atol=1e-6) and note == "note" and (loaded_labels == labels).all()
    with pytest.raises(UserError, match="64-dim features, evaluate.fid.dims is 2048"):
        fid.load_features(path, 2048, labels)
    with pytest.raises(UserError, match="another test split"):
        fid.load_features(path, 64, labels[:5])
    with pytest.raises(UserError, match="run the fid-real step"):
        fid.load_features(tmp_path / "missing.npz", 64, labels)


def test_pearson_known_arrays():
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    assert np.isnan(pearson([1, 1, 1], [1, 2, 3]))
    d = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.45, 0.45, 0.1], [0.05, 0.9, 0.05]])
    rows = fakeness_correlation(d, torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5], [0.1, 0.9]]), torch.tensor([0, 1, 0, 1]))
    assert {r["model"] for r in rows} == {"D", "G"} and all(-1 <= r["value"] <= 1 for r in rows)


def test_fid_of_a_set_against_itself_is_zero_and_matches_pytorch_fid():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 8)), rng.normal(0.5, 1.2, size=(200, 8))
    assert fid.frechet(a, a) == pytest.approx(0.0, abs=1e-6)
    ours = fid.frechet(a, b)
    theirs = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert ours == pytest.approx(theirs) and ours > 0.5


def test_fid_subsets_follow_appendix_a2():
    rng = np.random.default_rng(1)
    real, fake = rng.normal(size=(40, 4)), rng.normal(size=(40, 4))
    labels = np.array([0] * 30 + [1] * 10)
    out = fid.fid_subsets(real, fake, labels)
    assert out["und"][1:] == (30, 10) and out["dam"][1:] == (10, 30) and out["full"][1:] == (40, 40)


def test_untrained_inception_needs_permission_and_says_so():
    with pytest.raises(UserError, match="inception_weights"):
        fid.inception(64, None, allow_untrained=False)
    with pytest.raises(UserError, match="not found"):
        fid.inception(64, "/nope/pt_inception.pth", allow_untrained=False)
    net, note = fid.inception(64, None, allow_untrained=True)
    assert "not comparable" in note
    feats = fid.activations(net, torch.rand(3, 3, 32, 32), batch_size=2)
    assert feats.shape == (3, 64)


class Threshold(torch.nn.Module):
    """A fixed classifier: damaged iff the mean brightness is above 0.5 (gradients flow)."""

    def forward(self, x):
        s = (x.mean(dim=(1, 2, 3)) - 0.5) * 50
        return torch.stack([-s, s], dim=1)


def _split(n=16):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 2
    images = (labels.view(-1, 1, 1, 1) * 0.2 + 0.4 + 0.02 * torch.rand(n, 3, 8, 8, generator=g)) * 255
    return Split(images.round().to(torch.uint8), labels, None, [str(i) for i in range(n)])


def test_pgd_and_noise_at_strength_zero_leave_f1_unchanged_and_pgd_hurts():
    split = _split()
    cfg = {"pgd": {"steps": 10, "step_sizes": [0.0, 0.05], "eps": None}, "noise": {"stds": [0.0, 1.0]}}
    rows = {r["condition"]: r["value"] for r in robustness.sweep(split, Threshold(), None, cfg, 8, 0) if r["metric"] == "f1"}
    clean = binary_metrics(split.labels.numpy(), Threshold()(split.images.float() / 255).argmax(1).numpy())["f1"]
    assert clean == 1.0
    assert rows["pgd=0.0"] == clean and rows["noise=0.0"] == clean
    assert rows["pgd=0.05"] < clean  # a targeted attack flips the fixed classifier
