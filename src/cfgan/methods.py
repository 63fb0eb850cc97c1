"""Named methods: `method:` in params.yaml picks one, and it is expanded into its options when the
params are loaded (`cfgan.config.load_params`).

`paper` (the default) is the paper's configuration and adds nothing. Every other method is a set
of options beyond the paper, each of them a params key that params.yaml leaves unset (off when
absent). The method fills in only what no params file sets, so a key set explicitly, in
params.yaml or a profile, wins over the method. The expanded params keep `method: <name>` (so
checkpoints and tables say which method made them); under `paper` the key is dropped, so the
paper's runs are exactly what they were before methods existed.

What each method's options do, and the val search that chose them: docs/method.md.
"""

from __future__ import annotations

import copy

from .errors import UserError

METHODS: dict[str, dict] = {
    "paper": {},
    # chosen on CrackForest val (docs/log/method-search.md, "the search on val, and the method roundtrip"):
    "roundtrip": {
        "train": {"loss": {"pixel_cycle": 1.0}},          # |G(G(x)) - x|: artefacts of every class pay twice
        "evaluate": {"saliency": {
            "counterfactual_forms": ["abs", "dark", "bright", "both", "abs-decast", "dark-decast", "bright-decast", "both-decast"],
            "fusion": True,                                # counterfactual x local_contrast, a row of its own
            "gradcam_scalings": ["per_crop", "absolute"],  # the baseline too gets its best form on val
        }},
    },
}
# roundtrip plus a light R1 penalty on real crops (train.loss.r1 0.05, paid every 4th D update):
# on CrackForest val, three seeds at 800 steps, against roundtrip: maps' IoU 0.361 vs 0.342, D F1
# 0.827 vs 0.792, D's F1 under PGD 0.002 0.155 vs 0.007 (docs/log/method-search.md, "R1, DiffAugment and D's warm start")
METHODS["roundtrip-r1"] = {"train": {**METHODS["roundtrip"]["train"], "loss": {**METHODS["roundtrip"]["train"]["loss"], "r1": 0.05},
                                     "r1_every": 4},
                           "evaluate": METHODS["roundtrip"]["evaluate"]}


def expand(params: dict, source: str = "params") -> dict:
    """params with its method's options filled in where no file set them."""
    name = params.get("method", "paper")
    if name not in METHODS:
        raise UserError(f"{source}: at 'method': unknown method {name!r}; known methods: {', '.join(METHODS)}")
    out = _fill(params, METHODS[name])
    if name == "paper":
        out.pop("method", None)
    return out


def _fill(params: dict, options: dict) -> dict:
    out = copy.deepcopy(params)
    for key, value in options.items():
        if isinstance(value, dict):
            out[key] = _fill(out.get(key, {}), value)
        elif key not in out:
            out[key] = copy.deepcopy(value)
    return out


def method_of(params: dict) -> str:
    """The method a loaded (expanded) params dict was made with."""
    return params.get("method", "paper")
