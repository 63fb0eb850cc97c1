"""Figure 3's attacks: targeted PGD (torchattacks) and Gaussian noise sweeps -> F1 per strength.

Below training and evaluation both: the robustness step attacks test with them, and training's
`train.val_pgd` curve attacks val with the same code (so editing an evaluation step never reruns
training, and the curve's figures are the step's). `cfgan.evaluate.robustness` re-exports them.

torchattacks wants a model that maps [0, 1] images to one logits tensor, so D is wrapped to
return its two real-class logits; the target of the attack is the opposite class. For D the
mean fake probability on the perturbed images is reported alongside.
"""

from __future__ import annotations

import torch
from torch import nn

from .metrics import binary_metrics


class RealLogits(nn.Module):
    """D's undamaged/damaged logits, the classifier that an attacker targets."""

    def __init__(self, d: nn.Module):
        super().__init__()
        self.d = d

    def forward(self, x):
        return self.d(x)[:, :2]


class Columns(nn.Module):
    """Two of a K+1-class classifier's logits (undamaged, one defect class): the plain multi-class
    twin seen as the binary classifier of one defect class's task."""

    def __init__(self, model: nn.Module, columns: list[int]):
        super().__init__()
        self.model, self.columns = model, columns

    def forward(self, x):
        return self.model(x)[:, self.columns]


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, step_size: float, steps: int, eps: float | None,
        targeted: bool = True) -> torch.Tensor:
    """`steps` PGD steps of `step_size` within `eps` (None: steps x step size); targeted at the
    opposite binary class, or untargeted (several classes have no single opposite)."""
    if step_size == 0:
        return x
    import torchattacks  # here: it imports torchvision, which only the PGD sweeps need

    attack = torchattacks.PGD(model, eps=eps if eps is not None else step_size * steps, alpha=step_size,
                              steps=steps, random_start=False)
    if targeted:
        attack.set_mode_targeted_by_function(lambda images, labels: 1 - labels)
    return attack(x, y)


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    if std == 0:
        return x
    return (x + std * torch.randn(x.shape, generator=generator).to(x.device)).clamp(0, 1)


def stratified_subset(split, n: int | None, seed: int):
    """At most `n` crops of `split`, each label in its own proportion (at least one of each), drawn
    with `seed` and kept in manifest order, so every model of a run is attacked on the same crops.
    None (or n >= len(split)) returns the split itself."""
    if n is None or n >= len(split):
        return split
    gen = torch.Generator().manual_seed(seed)
    labels = split.labels
    keep = []
    for label in labels.unique().tolist():
        members = torch.nonzero(labels == label).flatten()
        share = max(1, round(n * len(members) / len(labels)))
        keep.append(members[torch.randperm(len(members), generator=gen)[:share]])
    return split.subset(torch.cat(keep).sort().values)


def sweep(split, classifier: nn.Module, d3: nn.Module | None, cfg: dict, batch_size: int, seed: int, device="cpu") -> list[dict]:
    """Rows (attack, strength, metric, value). `classifier` gives 2 logits; `d3`, if given, is the
    3-logit D whose fake probability is reported."""
    classifier = classifier.to(device).eval()
    rows = []
    settings = [("pgd", s) for s in cfg["pgd"]["step_sizes"]] + [("noise", s) for s in cfg["noise"]["stds"]]
    for attack, strength in settings:
        gen = torch.Generator().manual_seed(seed)
        preds, fakes = [], []
        for start in range(0, len(split), batch_size):
            idx = torch.arange(start, min(start + batch_size, len(split)))
            x, y = split.batch(idx, device)
            if attack == "pgd":
                xa = pgd(classifier, x, y, strength, cfg["pgd"]["steps"], cfg["pgd"]["eps"])
            else:
                xa = gaussian_noise(x, strength, gen)
            with torch.no_grad():
                preds.append(classifier(xa).argmax(1).cpu())
                if d3 is not None:
                    fakes.append(d3(xa).float().softmax(1)[:, 2].cpu())
        m = binary_metrics(split.labels.numpy(), torch.cat(preds).numpy())
        rows.append({"metric": "f1", "condition": f"{attack}={strength}", "value": m["f1"]})
        rows.append({"metric": "accuracy", "condition": f"{attack}={strength}", "value": m["accuracy"]})
        if fakes:
            rows.append({"metric": "mean_p_fake", "condition": f"{attack}={strength}", "value": float(torch.cat(fakes).mean())})
    return rows


def f1_under_pgd(split, classifier: nn.Module, pgd_cfg: dict, step_sizes: list[float], batch_size: int, seed: int,
                 device="cpu") -> dict[str, float]:
    """`sweep` for targeted PGD alone at these step sizes (`pgd_cfg`'s steps and eps): F1 per "pgd=<step size>"."""
    rows = sweep(split, classifier, None, {"pgd": {**pgd_cfg, "step_sizes": step_sizes}, "noise": {"stds": []}},
                 batch_size, seed, device)
    return {r["condition"]: r["value"] for r in rows if r["metric"] == "f1"}
