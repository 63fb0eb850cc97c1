"""The params keys each step reads: one table for the CLI, the Snakemake rules and the DVC stages.

The CLI hands a step only these keys (so a step that reads another key fails loudly), the
Snakemake rules pass them as `params` (so editing an unrelated key reruns nothing), and the
DVC stages list them under `params:`.
"""

from __future__ import annotations

from typing import Any

STEP_KEYS: dict[str, list[str]] = {
    "synthetic": ["seed", "datasets.{dataset}.source"],
    "download": ["datasets.{dataset}.source"],
    "ingest": ["datasets.{dataset}.source"],
    "split": ["seed", "split"],
    "crop": ["seed", "datasets.{dataset}.crop", "datasets.{dataset}.source.layout.mask_classes?"],
    "train": ["method?", "seed", "generator", "discriminator", "train", "datasets.{dataset}.train?", "evaluate.batch_size", "compute?",
              # train.val_maps scores the maps as the saliency step does, unless it says otherwise:
              *(f"evaluate.saliency.{k} when train.val_maps|datasets.{{dataset}}.train.val_maps"
                for k in ("counterfactual_forms?", "quantiles", "smooth_sigma")),
              # train.val_pgd attacks val as the robustness step attacks test:
              "evaluate.pgd when train.val_pgd|datasets.{dataset}.train.val_pgd"],
    "train-baseline": ["seed", "discriminator", "baseline", "train.val_every", "train.augment", "evaluate.batch_size", "compute?"],
    # the non-adversarial UNet classifier: G's architecture, the twin's recipe and budget (baseline), the GAN's batches
    "train-unet-classifier": ["generator", "baseline", "train.val_every", "train.augment", "train.loss.vq", "evaluate.batch_size",
                              "compute?"],
    "train-segmenter": ["seed", "generator", "segmenter", "train.val_every", "evaluate.batch_size", "evaluate.saliency.quantiles", "compute?"],
    # the post-hoc explainer (Charachon et al.): posthoc.steps null trains as long as the twin (baseline.steps)
    "train-posthoc": ["seed", "generator", "posthoc", "baseline.steps", "train.val_every", "train.augment", "evaluate.batch_size", "compute?",
                      *(f"evaluate.saliency.{k} when posthoc.val_maps" for k in ("counterfactual_forms?", "quantiles", "smooth_sigma"))],
    "fid-real": ["evaluate.fid", "evaluate.batch_size", "compute?"],
    "fid": ["seed", "evaluate.fid", "evaluate.batch_size", "compute?"],
    "classify": ["seed", "evaluate.batch_size", "compute?"],
    "classify-references": [],
    "robustness": ["seed", "evaluate.pgd", "evaluate.noise", "evaluate.batch_size", "evaluate.robustness_crops?", "compute?"],
    "multiclass": ["seed", "evaluate.pgd", "evaluate.noise", "evaluate.batch_size", "compute?"],
    "uncertainty": ["seed", "evaluate.batch_size", "compute?"],
    "saliency": ["method?", "seed", "evaluate.saliency", "evaluate.batch_size", "compute?"],
    "saliency-references": ["seed", "evaluate.saliency"],
    # each explainer's map on test crops and their PGD adversarials: the robustness step's attack (its steps and eps;
    # the strengths its own), the saliency step's explainers and threshold rule
    # the whole attack block, as robustness reads it (not only its steps and eps): DVC watches only the keys a
    # profile's file holds, and a profile that sets evaluate.pgd may add `steps` to it later
    "adversarial-maps": ["method?", "seed", "evaluate.adversarial_maps", "evaluate.pgd", "evaluate.saliency",
                         "evaluate.batch_size", "compute?"],
    "report": ["grid", "segmenter.architectures", "report"],
}
# A key ending in "?" is optional: read when the params hold it, skipped when they do not.
# "KEY when A|B": read only where the params hold A or B (so that editing KEY reruns the step only
# where the step uses it).
# `method` (src/cfgan/methods.py) is read by the steps its options reach, so that changing it
# reruns them (its options are filled into their blocks when the params are loaded).
# `compute` (device, precision) is read by every step that runs a model: results differ in the
# last bits between precisions, so a change of precision reruns them.


def keys_for(step: str, dataset: str | None = None) -> list[str]:
    """The step's keys for one data set; optional keys keep their "?" and conditions their "when"
    (see `present_keys`). Without a data set, keys and conditions that name one are left out."""
    out = []
    for spec in STEP_KEYS[step]:
        key, _, when = spec.partition(" when ")
        if dataset is None and "{dataset}" in key:
            continue
        conds = [c.format(dataset=dataset) for c in when.split("|") if c and (dataset is not None or "{dataset}" not in c)]
        if when and not conds:
            continue
        out.append(key.format(dataset=dataset) + (" when " + "|".join(conds) if conds else ""))
    return out


def key_spec(spec: str) -> tuple[str, bool, list[str]]:
    """(dotted key, optional, conditions) of one entry of `keys_for`."""
    key, _, when = spec.partition(" when ")
    return key.rstrip("?"), key.endswith("?"), [c for c in when.split("|") if c]


def has_key(params: dict, dotted: str) -> bool:
    """Whether the nested dict holds the dotted key (e.g. 'train.loss.l1')."""
    for part in dotted.split("."):
        if not isinstance(params, dict) or part not in params:
            return False
        params = params[part]
    return True


def present_keys(params: dict, keys: list[str]) -> list[str]:
    """The dotted keys the step reads from these params: an optional one only where they hold it,
    a conditional one only where they hold one of its conditions."""
    out = []
    for spec in keys:
        key, optional, conds = key_spec(spec)
        if (not optional or has_key(params, key)) and (not conds or any(has_key(params, c) for c in conds)):
            out.append(key)
    return out


def select(params: dict, keys: list[str]) -> dict[str, Any]:
    """The nested sub-dict of params holding exactly `keys` (dotted paths)."""
    out: dict = {}
    for key in present_keys(params, keys):
        src, dst = params, out
        parts = key.split(".")
        for part in parts[:-1]:
            src = src[part]
            dst = dst.setdefault(part, {})
        dst[parts[-1]] = src[parts[-1]]
    return out


def has_masks(dataset_cfg: dict) -> bool:
    """Whether a data set carries damage masks (so saliency IoU applies)."""
    from .data.layouts import has_masks as layout_has_masks
    src = dataset_cfg["source"]
    return src["kind"] == "synthetic" or layout_has_masks(src.get("layout", {}))
