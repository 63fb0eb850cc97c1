"""The map forms and training levers of issue 23 (all off in the paper's configuration)."""

import copy

import numpy as np
import pytest
import torch

from cfgan.data.datasets import Split
from cfgan.evaluate import saliency
from cfgan.maps import best_form_iou, counterfactual_form
from cfgan.metrics import choose_form
from cfgan.models.discriminators import ResNet3
from cfgan.models.unet import CNNUNet
from cfgan.train.ema import update_ema
from cfgan.train.losses import generator_losses


def test_decast_forms_ignore_a_uniform_colour_cast_and_keep_a_removed_crack():
    x = torch.full((1, 3, 8, 8), 0.5)
    x[0, :, 4, :] = 0.1                       # a dark crack along row 4
    x_cf = x.clone()
    x_cf[0, :, 4, :] = 0.5                    # G brightened it away ...
    x_cf = x_cf + torch.tensor([0.05, -0.02, 0.03]).view(1, 3, 1, 1)  # ... and cast the whole crop
    abs_map = counterfactual_form(x, x_cf, "abs")[0]
    assert abs_map[0, 0] > 0.02               # the paper's map: the cast shows everywhere
    for form in ("abs-decast", "dark-decast"):
        m = counterfactual_form(x, x_cf, form)[0]
        assert m[4].min() > 5 * m[0].abs().max()   # the crack stands out, the cast is (nearly) gone
    dark, bright = (counterfactual_form(x, x_cf, f)[0] for f in ("dark", "bright"))
    assert dark[4].mean() > 0 > bright[4].mean()  # dark: x darker than its counterfactual
    with pytest.raises(ValueError, match="counterfactual_forms"):
        counterfactual_form(x, x_cf, "luma")


def test_choose_form_picks_the_candidate_with_the_best_val_iou_and_the_first_on_a_tie():
    masks = np.zeros((4, 8, 8), bool)
    masks[:, 2:4, :] = True
    good = masks.astype(np.float32) + 0.01 * np.random.default_rng(0).random(masks.shape, dtype=np.float32)
    bad = np.random.default_rng(1).random(masks.shape, dtype=np.float32)
    assert choose_form({"bad": bad, "good": good}, masks, [0.5, 0.75]) == "good"
    assert choose_form({"a": good, "b": good.copy()}, masks, [0.5, 0.75]) == "a"


def test_absolute_gradcam_keeps_the_scale_across_crops_and_per_crop_stretches_each():
    torch.manual_seed(0)
    d = ResNet3(3, width=8).eval()
    with torch.no_grad():
        d.head[-1].weight.abs_()  # the CAM is then a positive mix of ReLU features: never all zero
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    images[2:] = 128                             # two flat crops: little for D to point at
    split = Split(images, torch.tensor([0, 1, 0, 1]), None, [f"c{i}" for i in range(4)])
    per_crop = saliency.gradcam_maps(d, split, 4, scaling="per_crop")
    absolute = saliency.gradcam_maps(d, split, 4, scaling="absolute")
    assert per_crop.shape == absolute.shape == (4, 16, 16) and absolute.dtype == np.float32
    busy = per_crop[:2].reshape(2, -1).max(1)
    np.testing.assert_allclose(busy, 1.0, atol=1e-3)           # the library's min-max: every crop peaks at 1
    assert (absolute >= 0).all()
    assert not np.allclose(absolute.reshape(4, -1).max(1), absolute.reshape(4, -1).max(1)[0])  # scales differ by crop
    with pytest.raises(ValueError, match="gradcam_scaling"):
        saliency.gradcam_maps(d, split, 4, scaling="softmax")


def _losses(weights, cycles=0):
    torch.manual_seed(0)
    g, d = CNNUNet(16, width=8, depth=2, noise_dim=4), ResNet3(3, width=8)
    with torch.no_grad():
        g.to_image.bias.fill_(0.1)            # a G that casts every crop
    x, y = torch.rand(4, 3, 16, 16) * 0.5, torch.tensor([0, 1, 0, 1])
    x_cf, logits = g(x)
    return generator_losses(g, d, x, y, x_cf, logits, weights, cycles, [1.0])


def test_beyond_paper_terms_appear_only_when_weighted_and_price_what_they_say():
    paper = {"adversarial": 1.0, "auxiliary": 1.0, "l1": 3.0, "cycle": 1.0, "vq": 1.0}
    assert set(_losses(paper)) == {"adversarial", "auxiliary", "l1", "cycle", "vq", "total"}
    out = _losses({**paper, "pixel_cycle": 2.0, "cast": 5.0})
    # the bias adds tanh(0.1) to every pixel (the inputs sit well inside [0, 1]): the cast is that
    assert out["cast"].item() == pytest.approx(5.0 * np.tanh(0.1), rel=1e-3)
    assert out["pixel_cycle"].item() == pytest.approx(2.0 * 2 * np.tanh(0.1), rel=1e-3)  # two casts on the round trip
    assert out["total"].item() == pytest.approx(sum(v.item() for k, v in out.items() if k != "total"), rel=1e-5)
    with_cycle = _losses({**paper, "pixel_cycle": 1.0}, cycles=1)
    assert with_cycle["pixel_cycle"].item() == pytest.approx(2 * np.tanh(0.1), rel=1e-3)  # reuses G(G(x)) of the cycle


def test_ema_moves_parameters_and_statistics_part_way_and_leaves_counters_exact():
    g = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = copy.deepcopy(g)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
    g.train()(torch.randn(8, 2))
    update_ema(ema, g, decay=0.75)
    for e, p, p0 in zip(ema.parameters(), g.parameters(), copy.deepcopy(g).parameters()):
        torch.testing.assert_close(e, p - 0.75)  # a quarter of the way from the old weights (p - 1) to the new
    assert ema[1].num_batches_tracked.item() == g[1].num_batches_tracked.item() == 1
    assert not torch.equal(ema[1].running_mean, g[1].running_mean)


def test_table2_says_in_one_line_when_every_learned_classifier_is_at_the_trivial_level():
    import pandas as pd
    from cfgan.report.tables import trivial_level_note
    table = pd.DataFrame({"config": ["cnn_unet-resnet3-c1", "cnn_unet-resnet3-c1", "baseline-resnet3", "references", "references"],
                          "model": ["D", "G_head", "twin", "all_damaged", "all_undamaged"],
                          "f1": [0.47, 0.45, 0.474, 0.453, 0.0]})
    note = trivial_level_note(table)
    assert note.count("\n") == 0 and "every learned classifier scores at the trivial classifiers' level" in note
    assert "best F1 0.474, all_damaged 0.453" in note
    table.loc[2, "f1"] = 0.71  # one classifier that learned something: no flag
    assert trivial_level_note(table) == ""


def test_mask_infill_starts_near_the_identity_changes_only_masked_pixels_and_prices_its_mask():
    torch.manual_seed(0)
    g = CNNUNet(16, width=8, depth=2, noise_dim=4, output="mask_infill")
    x = torch.rand(2, 3, 16, 16)
    x_cf, _ = g(x)
    assert (x_cf - x).abs().max() < 0.02          # m = sigmoid(-4) and an infill equal to x at the start
    with torch.no_grad():
        g.to_mask.bias.fill_(-30.0)               # a mask of zeros: G cannot change a pixel, whatever its infill
        g.to_image.bias.fill_(1.0)
    torch.testing.assert_close(g(x)[0], x)
    paper = {"adversarial": 1.0, "auxiliary": 1.0, "l1": 3.0, "cycle": 1.0, "vq": 1.0}
    x_cf, logits = g(x)
    out = generator_losses(g, ResNet3(3, width=8), x, torch.tensor([0, 1]), x_cf, logits, {**paper, "mask_area": 1.0}, 0, [1.0])
    assert "mask_tv" not in out and out["mask_area"].item() == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="mask_infill"):
        generator_losses(CNNUNet(16, width=8, depth=2, noise_dim=4), ResNet3(3, width=8), x, torch.tensor([0, 1]),
                         x_cf, logits, {**paper, "mask_tv": 1.0}, 0, [1.0])


def test_diffaugment_transforms_every_image_on_its_own_and_lets_gradients_through():
    from cfgan.train.diffaugment import AugmentedD, diff_augment
    torch.manual_seed(0)
    x = torch.rand(6, 3, 16, 16, requires_grad=True)
    shifted = diff_augment(x, ["translation"])
    assert shifted.shape == x.shape
    for i in range(6):  # each image is its own, shifted by at most 2 px (1/8 of 16) and zero-filled
        found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(shifted[i, :, 4:12, 4:12], x[i, :, 4 + dy:12 + dy, 4 + dx:12 + dx])]
        assert found, f"image {i} is not a shift of its input"
    assert any(not torch.equal(shifted[i], x[i]) for i in range(6))
    cut = diff_augment(x, ["cutout"])
    zeros = (cut == 0).all(1).flatten(1).sum(1)
    assert ((zeros > 0) & (zeros <= 64)).all()          # a square of at most 8 x 8 px, clipped at the border
    colour = diff_augment(x, ["color"])
    assert not torch.allclose(colour, x) and colour.shape == x.shape
    diff_augment(x, ["color", "translation", "cutout"]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="train.diffaugment"):
        AugmentedD(ResNet3(3, width=8), ["mixup"])


def test_r1_adds_half_gamma_times_the_squared_input_gradient_of_the_real_crops_loss():
    from cfgan.train.losses import discriminator_loss
    torch.manual_seed(0)
    w = torch.randn(3, 12)
    d = lambda x: x.flatten(1) @ w.T                     # a linear D: its input gradient is known
    x, x_cf, y = torch.rand(4, 3, 2, 2), torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 0, 1])
    plain = discriminator_loss(d, x, y, x_cf)
    p = (x.flatten(1) @ w.T).softmax(1)
    grad = (p - torch.nn.functional.one_hot(y, 3).float()) @ w   # d CE(x_i) / d x_i, per crop
    expected = plain + 10.0 / 2 * grad.pow(2).sum(1).mean()
    assert torch.allclose(discriminator_loss(d, x, y, x_cf, r1=10.0), expected, rtol=1e-5)
    assert torch.allclose(discriminator_loss(d, x, y, x_cf, r1=0.0), plain)


def test_d_real_weights_only_the_real_crops_term_of_eq_1():
    from cfgan.train.losses import FAKE, discriminator_loss
    torch.manual_seed(0)
    w = torch.randn(3, 12)
    d = lambda x: x.flatten(1) @ w.T
    x, x_cf, y = torch.rand(4, 3, 2, 2), torch.rand(4, 3, 2, 2), torch.tensor([0, 1, 0, 1])
    ce = torch.nn.functional.cross_entropy
    logits = d(torch.cat([x, x_cf]))                    # one forward over both, as eq. 1 is computed
    real, fake = ce(logits[:4], y), ce(logits[4:], torch.full_like(y, FAKE))
    assert torch.allclose(discriminator_loss(d, x, y, x_cf, real_weight=3.0), 3 * real + fake)
    assert torch.equal(discriminator_loss(d, x, y, x_cf, real_weight=1.0), real + fake)   # the paper's sum, to the bit


def test_figure_4_names_the_map_form_chosen_on_val_and_old_example_files_read_as_abs(tmp_path):
    from cfgan.evaluate.references import save_saliency_examples
    from cfgan.report.build import _chosen_forms
    from cfgan.report.figures import _form_label, fig4_saliency
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    test = Split(images, torch.tensor([1, 1, 0]), torch.zeros(3, 8, 8, dtype=torch.bool), ["a", "b", "c"])
    maps = {"counterfactual": np.random.default_rng(0).random((3, 8, 8), dtype=np.float32), "gradcam": np.zeros((3, 8, 8), np.float32)}
    save_saliency_examples(tmp_path / "new.npz", {None: (test, {**maps, "counterfactual_form": "dark-decast"})})
    save_saliency_examples(tmp_path / "old.npz", {None: (test, maps)})
    assert _chosen_forms(tmp_path / "new.npz", [None], "counterfactual") == ["dark-decast"]
    assert _chosen_forms(tmp_path / "old.npz", [None], "counterfactual") == ["abs"]
    assert _chosen_forms(tmp_path / "old.npz", [None], "gradcam") == ["per_crop"]   # not titled |x-G(x)|
    assert _form_label(["dark-decast"]) == "darker than G(x) decast" and _form_label(["abs"]) == "|x-G(x)|"
    assert _form_label(["bright-decast+turns8"]) == "brighter than G(x) decast, mean of 8 turns"
    with np.load(tmp_path / "new.npz") as f:
        examples = {k: f[k] for k in ("x", "mask", "counterfactual", "gradcam")}
    fig4_saliency(examples, tmp_path / "fig4.png", "t", forms={"counterfactual": ["dark-decast"], "gradcam": ["absolute"]})
    assert (tmp_path / "fig4.png").stat().st_size > 0


def test_keep_mode_trains_the_keep_pass_to_the_identity_and_keep_forms_cancel_what_both_modes_draw():
    torch.manual_seed(0)
    g, d = CNNUNet(16, width=8, depth=2, noise_dim=4, keep_mode=True), ResNet3(3, width=8)
    x, y = torch.rand(4, 3, 16, 16) * 0.5 + 0.25, torch.tensor([0, 1, 0, 1])
    z = torch.randn(4, 4)
    with pytest.raises(ValueError, match="keep_mode"):
        CNNUNet(16, width=8, depth=2, noise_dim=4)(x, z, keep=True)
    with torch.no_grad():
        g.to_image.bias.fill_(0.1)            # both modes draw the same cast: the -keep forms cancel it
    g.eval()
    x_cf, x_keep = g(x, z)[0], g(x, z, keep=True)[0]
    assert counterfactual_form(x, x_cf, "abs").mean() > 0.05
    assert counterfactual_form(x, x_cf, "abs-keep", x_keep).abs().max() < 0.02
    with pytest.raises(ValueError, match="keep_mode"):
        counterfactual_form(x, x_cf, "dark-keep")
    # in training the modes must differ too: batch norm after the first convolution erases a mode
    # plane that is constant over the batch (and, reflect-padded, over the borders), so the two modes share one batch
    sharp = CNNUNet(16, width=8, depth=2, noise_dim=4, dropout=0.0, padding="reflect", keep_mode=True).train()
    torch.nn.init.normal_(sharp.to_image.weight, std=0.5)
    assert (sharp(x, z)[0] - sharp(x, z, keep=True)[0]).abs().max() > 1e-3
    g.train()
    weights = {"adversarial": 0.0, "auxiliary": 0.0, "l1": 0.0, "cycle": 0.0, "vq": 0.0, "identity": 1.0}
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    first = None
    for _ in range(30):                       # the identity term alone: G(x, keep), of G(x)'s own forward, is pulled back to x
        out = generator_losses(g, d, x, y, *g(x), weights, 0, [1.0])
        first = out["identity"].item() if first is None else first
        opt.zero_grad(); out["total"].backward(); opt.step()
    assert set(out) == {"adversarial", "auxiliary", "l1", "cycle", "vq", "identity", "total"}
    assert out["identity"].item() < 0.3 * first
    g.eval()                                  # one mode per call, normalised by statistics of both: still the identity
    with torch.no_grad():
        assert (g(x, z, keep=True)[0] - x).abs().mean().item() < 0.3 * first
    with pytest.raises(ValueError, match="keep_mode"):
        generator_losses(CNNUNet(16, width=8, depth=2, noise_dim=4), d, x, y, x, torch.zeros(4, 2), weights, 0, [1.0])


class _Brighten(torch.nn.Module):
    """A stand-in G that brightens rows 2-3 of every crop (the masked rows below): its `dark` map is the mask."""
    noise_dim = 4

    def forward(self, x, z=None, keep=False):
        x_cf = x.clone()
        x_cf[:, :, 2:4, :] += 0.3
        return x_cf, torch.zeros(len(x), 2)


def test_best_form_iou_scores_the_damaged_crops_and_names_the_best_form():
    images = torch.randint(0, 200, (6, 3, 8, 8), dtype=torch.uint8)
    masks = torch.zeros(6, 8, 8, dtype=torch.bool)
    masks[:, 2:4, :] = True
    labels = torch.tensor([1, 1, 1, 0, 0, 0])
    masks[3:] = False                             # undamaged crops carry no mask; they must not be scored
    split = Split(images, labels, masks, [f"c{i}" for i in range(6)])
    form, score = best_form_iou(_Brighten(), split, ["bright", "dark"], [0.5, 0.75], 3, seed=0)
    assert (form, score) == ("dark", 1.0)
    assert best_form_iou(_Brighten(), split, ["bright"], [0.5, 0.75], 3, seed=0)[1] < 0.5
    with pytest.raises(ValueError, match="masks"):
        best_form_iou(_Brighten(), Split(images, labels, None, split.paths), ["dark"], [0.5], 3, seed=0)


def test_turns_average_gs_counterfactual_over_flips_and_quarter_turns_undone_and_are_named_candidates():
    """evaluate.saliency.turns: turns 1 is the one-pass map; more turns average G's output over the crop's flips
    and quarter turns, each undone, so a G that changes pixels wherever they are gives the same map, and one
    that paints a fixed place of the frame (not the defect) spreads its change over the turned places."""
    from cfgan.maps import candidate_name, counterfactual_candidates, counterfactual_maps, dihedral_mean, parse_candidate
    images = torch.randint(0, 200, (4, 3, 8, 8), dtype=torch.uint8)
    split = Split(images, torch.tensor([1, 1, 0, 0]), None, [f"c{i}" for i in range(4)])
    maps = counterfactual_candidates(_Brighten(), split, 3, 0, names=["dark", "dark+turns8", "abs+turns4"])
    assert list(maps) == ["dark", "dark+turns8", "abs+turns4"]
    assert np.array_equal(maps["dark"], counterfactual_maps(_Brighten(), split, 3, 0, forms=["dark"])["dark"])
    assert np.allclose(maps["dark"][:, 2:4, :], 0.3, atol=1e-6) and np.allclose(maps["dark"][:, 4:, :], 0, atol=1e-6)
    turned = maps["dark+turns8"]   # rows 2-3 of each turned frame: rows 2-3, 4-5 and columns 2-3, 4-5 here
    assert np.allclose(turned[:, :2, :2], 0, atol=1e-6) and (turned[:, 2, 0] > 0).all() and (turned[:, 4, 0] > 0).all() and (turned[:, 0, 2] > 0).all()
    assert turned.max() < 0.3 - 1e-3 and np.isclose(turned.sum(), maps["dark"].sum(), rtol=1e-4)
    x = torch.rand(2, 3, 6, 6)
    assert torch.allclose(dihedral_mean(lambda t: t.square(), x, 8), x.square())   # a pixel-wise change: unchanged
    assert parse_candidate(candidate_name("dark-decast", 8)) == ("dark-decast", 8) and candidate_name("abs", 1) == "abs"
    with pytest.raises(ValueError, match="turns"):
        dihedral_mean(lambda t: t, x, 3)


def test_the_saliency_step_chooses_turns_on_val_with_the_form_and_says_which(small_manifest, tmp_path):
    """evaluate.saliency.turns [1, 8]: every (form, turns) pair is a val candidate, the note names the one chosen and
    the list it came from; the test rows are the chosen candidate's."""
    import copy
    from cfgan.config import load_params
    from cfgan.evaluate.run import run_saliency
    from cfgan.train import gan
    params, manifest = small_manifest
    gan.train_gan(params, manifest, "cnn_unet-resnet3-c1-s0", tmp_path / "run")
    from conftest import ROOT
    full = load_params([str(ROOT / "params.yaml")])
    full = {**full, "generator": params["generator"], "discriminator": params["discriminator"],
            "evaluate": {**full["evaluate"], "batch_size": 32}}
    full["evaluate"]["saliency"] = {**copy.deepcopy(full["evaluate"]["saliency"]), "counterfactual_forms": ["abs", "dark"], "turns": [1, 8]}
    frame = run_saliency(full, manifest, tmp_path / "run/checkpoint.pt", "synthetic", tmp_path / "examples.npz")
    note = frame[frame.model == "counterfactual"].note.iloc[0]
    assert "chosen on val from ['abs', 'dark', 'abs+turns8', 'dark+turns8']" in note
    chosen = note.split("map form '")[1].split("'")[0]
    assert chosen in ("abs", "dark", "abs+turns8", "dark+turns8")
