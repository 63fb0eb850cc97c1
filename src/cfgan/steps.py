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
    "train": ["method?", "seed", "generator", "discriminator", "train", "datasets.{dataset}.train?", "evaluate.batch_size", "compute?"],
    "train-baseline": ["seed", "discriminator", "baseline", "train.val_every", "train.augment", "evaluate.batch_size", "compute?"],
    "train-segmenter": ["seed", "generator", "segmenter", "train.val_every", "evaluate.batch_size", "evaluate.saliency.quantiles", "compute?"],
    "fid-real": ["evaluate.fid", "evaluate.batch_size", "compute?"],
    "fid": ["seed", "evaluate.fid", "evaluate.batch_size", "compute?"],
    "classify": ["seed", "evaluate.batch_size", "compute?"],
    "classify-references": [],
    "robustness": ["seed", "evaluate.pgd", "evaluate.noise", "evaluate.batch_size", "evaluate.robustness_crops?", "compute?"],
    "multiclass": ["seed", "evaluate.pgd", "evaluate.noise", "evaluate.batch_size", "compute?"],
    "uncertainty": ["seed", "evaluate.batch_size", "compute?"],
    "saliency": ["method?", "seed", "evaluate.saliency", "evaluate.batch_size", "compute?"],
    "saliency-references": ["seed", "evaluate.saliency"],
    "report": ["grid", "segmenter.architectures", "report"],
}
# A key ending in "?" is optional: read when the params hold it, skipped when they do not.
# `method` (src/cfgan/methods.py) is read by the steps its options reach, so that changing it
# reruns them (its options are filled into their blocks when the params are loaded).
# `compute` (device, precision) is read by every step that runs a model: results differ in the
# last bits between precisions, so a change of precision reruns them.


def keys_for(step: str, dataset: str | None = None) -> list[str]:
    """The step's keys for one data set; optional keys keep their "?" (see `select`, `present_keys`)."""
    return [k.format(dataset=dataset) for k in STEP_KEYS[step] if dataset is not None or "{dataset}" not in k]


def has_key(params: dict, dotted: str) -> bool:
    """Whether the nested dict holds the dotted key (e.g. 'train.loss.l1')."""
    for part in dotted.split("."):
        if not isinstance(params, dict) or part not in params:
            return False
        params = params[part]
    return True


def present_keys(params: dict, keys: list[str]) -> list[str]:
    """The keys without their "?", optional ones only where params hold them."""
    return [k.rstrip("?") for k in keys if not k.endswith("?") or has_key(params, k.rstrip("?"))]


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
    src = dataset_cfg["source"]
    layout = src.get("layout", {})
    return src["kind"] == "synthetic" or layout.get("kind") == "images_masks" or bool(layout.get("masks"))
