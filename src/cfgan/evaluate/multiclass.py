"""The multi-class decision of a multi-class data set: one prediction per image from the K
one-vs-rest discriminators, or from the plain K+1-class twin, scored by macro F1 on the whole
test split (every defect class and the undamaged crops), under PGD and noise like figure 3.

One-vs-rest rule: each D_k gives the log-odds of real-damaged over real-undamaged (its fake logit
left out); the image gets the defect class with the largest log-odds when that is above 0 (D_k
finds its defect more likely than none), and "undamaged" when no D does. So several confident
discriminators resolve to the most confident one, and an exact tie to the lower class id.
PGD here is untargeted (torchattacks' default): with K+1 classes there is no single opposite.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..compute import resolve
from ..config import run_defect, without_defect
from ..data.datasets import defect_names, load_split, read_manifest
from ..errors import UserError
from ..train.baselines import load_baseline
from ..train.common import load_checkpoint
from ..train.gan import load_gan
from ..metrics import multiclass_metrics
from .robustness import gaussian_noise, pgd
from .tidy import tidy_frame


class OneVsRest(nn.Module):
    """K one-vs-rest discriminators as one K+1-logit classifier: logit 0 is the threshold (0), logit
    k the log-odds damaged : undamaged of D_k."""

    def __init__(self, discriminators: list[nn.Module]):
        super().__init__()
        self.ds = nn.ModuleList(discriminators)

    def forward(self, x):
        logits = [d(x).float() for d in self.ds]
        odds = [lg[:, 1] - lg[:, 0] for lg in logits]
        return torch.stack([torch.zeros_like(odds[0]), *odds], dim=1)


def _sweep(model: nn.Module, split, cfg: dict, batch_size: int, seed: int, dev, n_classes: int) -> list[dict]:
    rows = []
    settings = [("none", 0.0)] + [("pgd", s) for s in cfg["pgd"]["step_sizes"]] + [("noise", s) for s in cfg["noise"]["stds"]]
    for attack, strength in settings:
        gen = torch.Generator().manual_seed(seed)
        preds = []
        for start in range(0, len(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            x, _ = split.batch(idx, dev)
            if attack == "pgd":
                x = pgd(model, x, split.classes[idx].to(dev), strength, cfg["pgd"]["steps"], cfg["pgd"]["eps"], targeted=False)
            elif attack == "noise":
                x = gaussian_noise(x, strength, gen)
            with torch.no_grad():
                preds.append(model(x).argmax(1).cpu())
        m = multiclass_metrics(split.classes.numpy(), torch.cat(preds).numpy(), n_classes)
        condition = "test" if attack == "none" else f"{attack}={strength}"
        metrics = m.items() if attack == "none" else [(k, m[k]) for k in ("macro_f1", "accuracy")]
        rows += [{"metric": k, "condition": condition, "value": v} for k, v in metrics]
    return rows


def _one_vs_rest(checkpoints: list[Path], names: list[str], cx) -> tuple[nn.Module, str, str]:
    """The K discriminators in class-id order, and the configuration's run name (without `-k`)."""
    by_class, bases = {}, set()
    for path in checkpoints:
        ckpt = load_checkpoint(path)
        run = ckpt["summary"]["run"]
        defect = run_defect(run)
        if defect not in names:
            raise UserError(f"{path}: run {run} is not one defect class's GAN of this manifest (classes: {', '.join(names)})")
        _, d, _ = load_gan(ckpt, cx)
        by_class[defect] = d
        bases.add(without_defect(run))
    missing = [n for n in names if n not in by_class]
    if missing or len(bases) != 1:
        raise UserError(f"multiclass: need one GAN checkpoint per defect class of one configuration and seed; "
                        f"missing {missing or 'none'}, configurations {sorted(bases)}")
    return OneVsRest([by_class[n] for n in names]).eval(), bases.pop(), "D (one-vs-rest)"


def run_multiclass(params, manifest: Path, checkpoints: list[Path], dataset: str) -> pd.DataFrame:
    cx = resolve(params)
    dev, bs = cx.device, params["evaluate"]["batch_size"]
    names = defect_names(read_manifest(manifest))
    if not names:
        raise UserError(f"{manifest}: a binary manifest; the multi-class decision needs several defect classes")
    first = load_checkpoint(checkpoints[0]) if len(checkpoints) == 1 else None
    if first is not None and first["kind"] == "baseline":
        model, ckpt = load_baseline(first, cx)
        if ckpt["summary"].get("classes") != ["undamaged", *names]:
            raise UserError(f"{checkpoints[0]}: trained for classes {ckpt['summary'].get('classes')}, "
                            f"this manifest has {['undamaged', *names]}")
        run, model_name = ckpt["summary"]["run"], "baseline (K+1 classes)"
    else:
        model, run, model_name = _one_vs_rest(checkpoints, names, cx)
    test = load_split(manifest, "test")
    with cx.autocast():
        rows = _sweep(model, test, params["evaluate"], bs, params["seed"], dev, len(names) + 1)
    labels = {f"f1_{i}": f"f1_{n}" for i, n in enumerate(["undamaged", *names])}
    for r in rows:
        r["metric"] = labels.get(r["metric"], r["metric"])
    return tidy_frame(rows, dataset, run, model_name, note=f"{len(test)} test crops, {len(names)} defect classes + undamaged; evaluated at {cx.precision} on {cx.device}")
