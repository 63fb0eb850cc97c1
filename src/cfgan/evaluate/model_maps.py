"""Every map a model draws, scored by one rule: the Table 5 rows of the saliency step.

A `MapMethod` is a row: its name (`counterfactual`, `gradcam`, `occlusion`, ...), the model it explains
(G, D, the plain twin, a segmenter), and how it draws maps of a split's crops for a list of candidates.
A candidate is a (form, turns) pair (`maps.candidate_name`): the form as the method defines it (a map form,
a Grad-CAM scaling, an attribution's sign), turns the number of the crop's flips and quarter turns its maps
are averaged over (`evaluate.saliency.turns`, `maps.turned_maps`; the counterfactual averages G's output
instead). All candidates are scored on val, the best goes to test, then the threshold is chosen on val
(`references.saliency_rows`), for every row alike: the same test-time options for every explainer.

`evaluate.saliency.attribution_crops` N (absent or null: off): the attribution rows (evaluate/attributions.py)
run the model hundreds of times per crop, so they are drawn on a subset, at most N damaged val and N damaged
test crops of each task (only damaged crops are scored; drawn with params' `seed`, so every run, twin and
reference of a data set reads the same crops). Every other row of the step is then also scored on that
subset, its form, turns and threshold chosen again on the val subset: the comparison is read on the same
crops. Those rows carry the conditions `val_subset` / `test_subset` (per crop `subset:<path>`); Table 5 shows
them with `crops` = `subset`. Every row's note gives its measured cost per crop (the test pass of the chosen
candidate, on the device of the step) and its number of crops.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .. import maps
from ..metrics import choose_form
from .references import on_subset, saliency_rows, subset_pair


@dataclass
class MapMethod:
    name: str                  # the Table 5 row
    explains: str              # the model whose maps these are (G, D, twin, segmenter), named in the note
    draw: Callable             # (split, candidate names) -> {candidate: N x H x W maps of every crop of the split}
    candidates: list[str]      # (form, turns) names, scored on val
    words: str = "map form"    # how the note names the chosen candidate
    subset_only: bool = False  # drawn on the attribution subset only
    extra: str = ""            # what the note adds (a blur, the attribution's settings)
    turned: str = "the map"    # what evaluate.saliency.turns averages


def model_method(name: str, explains: str, one_pass: Callable, forms, turns, **kw) -> MapMethod:
    """A row whose one-pass maps are `one_pass(split, forms) -> {form: maps}`: its candidates are every form at
    every count of `turns`, the maps of a count averaged over the crop's turns (`maps.candidate_maps`)."""
    forms = tuple(forms)
    candidates = [maps.candidate_name(f, k) for k in turns for f in forms]
    return MapMethod(name, explains, lambda split, names: maps.candidate_maps(one_pass, split, names, forms), candidates, **kw)


def turns_note(method: MapMethod, chosen: str, turns) -> str:
    """What the note says about evaluate.saliency.turns for one row (nothing when every map is one pass)."""
    k = turns_of(chosen)
    what = f" ({method.turned} averaged over the crop's {k} flips and quarter turns)" if k > 1 else " (one pass)"
    if len(turns) > 1:
        return f"; turns {k} chosen on val from {list(turns)}{what}"
    return f"; turns {k}{what}" if k > 1 else ""


@dataclass
class Scored:
    form: str                  # the candidate chosen on val
    val_maps: np.ndarray       # its maps of the val damaged crops
    test_maps: np.ndarray      # its maps of every test crop
    threshold: float
    note: str


def _timed(draw, split, names):
    start = time.perf_counter()
    out = draw(split, names)
    return out, (time.perf_counter() - start) / max(len(split), 1)


def _chosen(method: MapMethod, form: str) -> str:
    return f"; {method.words} '{form}' chosen on val from {list(method.candidates)}" if len(method.candidates) > 1 else ""


def score_methods(methods: list[MapMethod], val, test, vmask, tmask, cfg: dict, seed: int,
                  note: str) -> tuple[list[dict], dict, dict[str, Scored]]:
    """Rows of every method on one task (see the module's docstring), the example maps (every test crop, the
    full rows' methods only; `<method>_form` where there was a choice) and each full row's choice."""
    quantiles, turns = cfg["quantiles"], cfg.get("turns", [1])
    val_masks = val.masks.numpy()[vmask]
    n_subset = cfg.get("attribution_crops")
    if n_subset is not None:
        vsub, tsub, subset_note = subset_pair(vmask, tmask, n_subset, seed)
    rows, examples, scored = [], {}, {}
    for m in methods:
        full_val = None
        if not m.subset_only:
            full_val = m.draw(val, m.candidates)
            form = choose_form({f: c[vmask] for f, c in full_val.items()}, val_masks, quantiles)
            drawn, cost = _timed(m.draw, test, [form])
            test_maps = drawn[form]
            text = (f"{m.extra}; explains {m.explains}{_chosen(m, form)}{turns_note(m, form, turns)}"
                    f"; {cost:.3g} s per crop (measured on {len(test)} test crops){note}")
            new, t = saliency_rows(m.name, full_val[form][vmask], val_masks, test_maps, test, tmask, quantiles, text)
            rows += new + [_turns_row(m, form, "val", text)]
            scored[m.name] = Scored(form, full_val[form][vmask], test_maps, t, text)
            examples[m.name] = test_maps
            if len(m.candidates) > 1:  # figure 4 names the form it shows (the paper's one form: nothing to say)
                examples[f"{m.name}_form"] = form
        if n_subset is None:
            continue
        if full_val is None:
            val_s = m.draw(val.subset(_tensor(vsub)), m.candidates)
        else:
            val_s = {f: c[vsub] for f, c in full_val.items()}
        form_s = choose_form(val_s, val.masks.numpy()[vsub], quantiles)
        test_split = test.subset(_tensor(tsub))
        if full_val is None:
            drawn, cost = _timed(m.draw, test_split, [form_s])
            test_s = drawn[form_s]
        else:  # drawn on every test crop, as the full row, so that the subset's maps are the same bits
            test_s = (scored[m.name].test_maps if form_s == scored[m.name].form else m.draw(test, [form_s])[form_s])[tsub]
        text = (f"{m.extra}; explains {m.explains}{_chosen(m, form_s)}{turns_note(m, form_s, turns)}{subset_note}"
                f"; {cost:.3g} s per crop (measured on {len(test_split) if full_val is None else len(test)} test crops){note}")
        new, _ = saliency_rows(m.name, val_s[form_s], val.masks.numpy()[vsub], test_s, test_split,
                               np.ones(len(tsub), bool), quantiles, text)
        rows += on_subset(new + [_turns_row(m, form_s, "val", text)])
    return rows, examples, scored


def _turns_row(method: MapMethod, form: str, condition: str, note: str) -> dict:
    """The number of turns chosen on val, as a row Table 5 reads (1: one pass)."""
    return {"model": method.name, "metric": "turns", "condition": condition, "note": note,
            "value": float(turns_of(form))}


def turns_of(candidate: str) -> int:
    """K of a `maps.candidate_name` (1: one pass)."""
    return int(candidate.partition("+turns")[2] or 1)


def _tensor(idx: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(idx, dtype=torch.long)


def attribution_methods(model, explains: str, cfg: dict, batch_size: int, device, seed: int) -> list[MapMethod]:
    """The Captum rows (`evaluate.saliency.attributions.methods`) explaining `model`'s damaged score, each with
    `positive` and `abs` forms at every count of `turns`; drawn on the attribution subset where one is set."""
    from .attributions import FORMS, attribution_maps
    a = cfg.get("attributions") or {}
    target = {"margin": "damaged-minus-undamaged logit", "damaged": "damaged logit"}[a.get("target", "margin")]
    settings = {"occlusion": lambda: f"window {a['occlusion']['window']} px, stride {a['occlusion']['stride']} px",
                "integrated_gradients": lambda: f"{a['integrated_gradients']['n_steps']} steps",
                "kernelshap_slic": lambda: _slic_words(a), "lime_slic": lambda: _slic_words(a)}
    out = []
    for name in a.get("methods", []):
        one_pass = (lambda split, forms, name=name: attribution_maps(model, split, name, forms, a, batch_size, device, seed))
        extra = f"; Captum {name} of {explains}'s {target}, {settings[name]()}, baseline '{a.get('baseline', 'mean')}'"
        out.append(model_method(name, explains, one_pass, FORMS, cfg.get("turns", [1]), extra=extra,
                                subset_only=cfg.get("attribution_crops") is not None))
    return out


def _slic_words(a: dict) -> str:
    sp = a["superpixels"]
    return f"SLIC n_segments {sp['n_segments']}, compactness {sp['compactness']:g}, {sp['n_samples']} samples"
