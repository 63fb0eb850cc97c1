"""How a counterfactual pair (x, G(x)) becomes a saliency map: the map forms, their blur, the maps
of a whole split, and how well the best form matches a split's masks.

Below the training layer, because training reads them too (`train.val_maps`' curve); the saliency
step (evaluate/saliency.py) scores these maps on test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .metrics import choose_form, choose_threshold


def smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of N x H x W maps (reflect-padded); sigma 0 leaves them as they are."""
    if sigma <= 0:
        return maps
    from torchvision.transforms.functional import gaussian_blur
    half = min(int(np.ceil(3 * sigma)), min(maps.shape[-2:]) - 1)  # reflect padding must stay inside the crop
    k = 2 * half + 1
    return gaussian_blur(maps.unsqueeze(1), [k, k], [sigma, sigma]).squeeze(1)


# How the pair (x, x') becomes one map per crop. `abs` is the paper's |x - x'| averaged over the
# colour channels; the others read the grey-level difference with a sign, as `local_contrast`
# does: `dark` where x is darker than its counterfactual (G brightened a dark defect away),
# `bright` the reverse, `both` either. A `-decast` suffix first takes out each crop's mean
# difference per channel: the uniform colour cast G adds costs L1 like a defect removed, and on
# CrackForest val it was more than half of |x - x'| (benchmarks/diagnose_maps.py). A `-keep` suffix
# (a G with `generator.cnn_unet.keep_mode` only) reads the counterfactual against G(x, keep) instead of
# x: what G draws in both modes, whatever the class, cancels.
COUNTERFACTUAL_FORMS = tuple(f"{p}{c}{k}" for k in ("", "-keep") for c in ("", "-decast") for p in ("abs", "dark", "bright", "both"))


def counterfactual_form(x: torch.Tensor, x_cf: torch.Tensor, form: str, x_keep: torch.Tensor | None = None) -> torch.Tensor:
    """N x H x W fp32 maps of N x 3 x H x W crops and their counterfactuals, in one of COUNTERFACTUAL_FORMS
    (`x_keep`, G(x, keep) with the counterfactual's noise, for the `-keep` forms)."""
    if form not in COUNTERFACTUAL_FORMS:
        raise ValueError(f"evaluate.saliency.counterfactual_forms: {form!r} is not one of {COUNTERFACTUAL_FORMS}")
    if form.endswith("-keep") and x_keep is None:
        raise ValueError(f"map form {form!r} reads G(x, keep): it needs a generator with keep_mode")
    diff = (x_keep if form.endswith("-keep") else x).float() - x_cf.float()
    form = form.removesuffix("-keep")
    if form.endswith("-decast"):
        diff = diff - diff.mean((2, 3), keepdim=True)
    polarity = form.removesuffix("-decast")
    if polarity == "abs":
        return diff.abs().mean(1)
    grey = diff.mean(1)
    return {"dark": -grey, "bright": grey, "both": grey.abs()}[polarity]


# The crop's flips and quarter turns, as (quarter turns, flip of the last axis): the identity, the two flips and the
# half turn first (`turns: 4`), then the rest (`turns: 8`).
DIHEDRAL = ((0, False), (0, True), (2, False), (2, True), (1, False), (1, True), (3, False), (3, True))
TURNS = (1, 2, 4, 8)  # the counts `evaluate.saliency.turns` may name: the first 1, 2, 4 or all 8 of DIHEDRAL


def dihedral_mean(f, x: torch.Tensor, turns: int) -> torch.Tensor:
    """The mean over the first `turns` transforms of DIHEDRAL of f(transformed x), each transform undone on f's
    output (test-time augmentation; `evaluate.saliency.turns`). turns 1: f(x) itself."""
    if turns not in TURNS:
        raise ValueError(f"evaluate.saliency.turns: {turns} is not one of {', '.join(map(str, TURNS))}")
    out = []
    for quarter, flip in DIHEDRAL[:turns]:
        xt = torch.rot90(x, quarter, (2, 3))
        y = f((xt.flip(3) if flip else xt).contiguous())
        y = y.flip(3) if flip else y
        out.append(torch.rot90(y, -quarter, (2, 3)))
    return out[0] if turns == 1 else torch.stack([o.float() for o in out]).mean(0)


def candidate_name(form: str, turns: int) -> str:
    """How a (map form, turns) candidate is named in notes and figures: the form alone for one pass."""
    return form if turns == 1 else f"{form}+turns{turns}"


def parse_candidate(name: str, forms: tuple[str, ...] = COUNTERFACTUAL_FORMS) -> tuple[str, int]:
    """(map form, turns) of a `candidate_name` whose form is one of `forms` (the counterfactual's by default; a
    method's own forms for any other map); ValueError, naming what is allowed, for anything else."""
    form, _, turns = name.partition("+turns")
    count = int(turns) if turns.isdigit() else (1 if turns == "" else 0)
    if form not in forms or count not in TURNS or (turns and count == 1):
        raise ValueError(f"not a map form; choose one of {', '.join(forms)}, each also with "
                         + ", ".join(f"+turns{k}" for k in TURNS[1:]) + " (the map averaged over the crop's turns)")
    return form, count


def turned_maps(draw, split, turns: int) -> dict[str, np.ndarray]:
    """`evaluate.saliency.turns` for any map a model draws: `draw(split) -> {name: N x H x W maps}` on each of the
    first `turns` flips and quarter turns of the crops (DIHEDRAL), each map turned back, and the mean over them
    (`dihedral_mean`; turns 1: `draw(split)` itself). Grad-CAM, the attribution maps and the segmenter's
    probabilities are averaged this way; the counterfactual averages G's output instead
    (`counterfactual_maps`), so that its map forms read one averaged counterfactual."""
    names: list[str] = []

    def on(images: torch.Tensor) -> torch.Tensor:
        out = draw(dataclasses.replace(split, images=images))
        names[:] = list(out)
        return torch.stack([torch.as_tensor(np.asarray(out[n], dtype=np.float32)) for n in names], 1)
    mean = dihedral_mean(on, split.images, turns)
    return {n: mean[:, i].numpy() for i, n in enumerate(names)}


def candidate_maps(draw, split, names, forms: tuple[str, ...]) -> dict[str, np.ndarray]:
    """{candidate_name: N x H x W maps} for (form, turns) candidates of a method whose one-pass maps are
    `draw(split, forms) -> {form: maps}` (forms among `forms`): each count of turns drawn once for all its forms
    (`turned_maps`)."""
    by_turns: dict[int, list[str]] = {}
    for name in names:
        form, turns = parse_candidate(name, tuple(forms))
        by_turns.setdefault(turns, []).append(form)
    out = {}
    for turns, wanted in by_turns.items():
        maps = turned_maps(lambda s, w=wanted: draw(s, w), split, turns)
        out.update({candidate_name(form, turns): maps[form] for form in wanted})
    return {name: out[name] for name in names}


def counterfactual_candidates(g, split, batch_size: int, seed: int, device="cpu", sigma: float = 0.0,
                              names=("abs",)) -> dict[str, np.ndarray]:
    """{candidate_name: maps} for candidates named by `candidate_name` (form, and the number of turns G's
    counterfactual is averaged over)."""
    by_turns: dict[int, list[str]] = {}
    for name in names:
        form, turns = parse_candidate(name)
        by_turns.setdefault(turns, []).append(form)
    out = {}
    for turns, forms in by_turns.items():
        maps = counterfactual_maps(g, split, batch_size, seed, device, sigma, forms, turns)
        out.update({candidate_name(form, turns): m for form, m in maps.items()})
    return {name: out[name] for name in names}


def counterfactual_maps(g, split, batch_size: int, seed: int, device="cpu", sigma: float = 0.0,
                        forms=("abs",), turns: int = 1) -> dict[str, np.ndarray]:
    """{form: N x H x W maps} of G's counterfactuals (one noise draw per crop, seeded), blurred at `sigma`;
    `turns` > 1: each counterfactual is the mean over that many flips and quarter turns of the crop (the same
    noise draw for each; `dihedral_mean`)."""
    gen = torch.Generator().manual_seed(seed)
    maps = {form: [] for form in forms}
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            x, _ = split.batch(idx, device)
            z = torch.randn(len(idx), g.noise_dim, generator=gen).to(device)
            x_cf = dihedral_mean(lambda xt: g(xt, z)[0], x, turns)
            x_keep = dihedral_mean(lambda xt: g(xt, z, keep=True)[0], x, turns) if any(f.endswith("-keep") for f in forms) else None
            for form in forms:
                maps[form].append(smooth(counterfactual_form(x, x_cf, form, x_keep), sigma).cpu().numpy())  # maps in fp32
    return {form: np.concatenate(parts) for form, parts in maps.items()}


def best_form_iou(g, split, forms, quantiles, batch_size: int, seed: int, device="cpu", sigma: float = 0.0) -> tuple[str, float]:
    """(form, mean IoU) of the best of `forms` on a masked split's damaged crops under the one-threshold
    rule, the threshold chosen on these same crops: how well G's maps match the masks, as the saliency
    step chooses its form on val (`train.val_maps`' curve)."""
    damaged = torch.nonzero(split.labels == 1).flatten()
    if split.masks is None or len(damaged) == 0:
        raise ValueError("best_form_iou needs a split with masks and at least one damaged crop")
    crops = split.subset(damaged)
    maps = counterfactual_maps(g, crops, batch_size, seed, device, sigma, forms)
    masks = crops.masks.numpy()
    form = choose_form(maps, masks, quantiles)
    return form, choose_threshold(maps[form], masks, quantiles)[1]
