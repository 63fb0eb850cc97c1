"""`train.warmup`: warm starts before the adversarial loop, beyond the paper (off in its configuration)."""

from __future__ import annotations

import torch.nn.functional as F
from ..progress import progress

from ..compute import Compute
from .batches import training_batch
from .common import batch_indices


def warm_up(g, d, opt_g, opt_d, train, cfg: dict, rng, compute: Compute, run: str) -> None:
    """`train.warmup` (off in the paper's configuration): optional warm starts for few-step runs.

    d_steps: D trained on real crops only, to their class (cross-entropy over its three logits, so
    it also learns that real crops are not fake): the adversarial loop then starts with a D that
    already tells damaged from undamaged, the signal G's counterfactuals need.
    g_steps: G trained to reproduce its input (the L1 term) while its head learns the class (the
    auxiliary term), with the loss weights of eq. 5: the loop then starts from a near-identity G
    whose head already knows the class it is to flip (the CNN UNet starts as the identity, so there
    it is the head that learns).
    Both use the loop's own optimizers and balanced, augmented batches."""
    warm = cfg.get("warmup", {})
    balance = cfg.get("balance", False)
    for who, steps in (("D", warm.get("d_steps", 0)), ("G", warm.get("g_steps", 0))):
        for _ in progress(range(steps), desc=f"{run} {who} warm-up", unit="step", disable=steps == 0):
            x, y = training_batch(train, batch_indices(train.labels, cfg["batch_size"], rng, balance), cfg, rng, compute.device)
            with compute.autocast():
                if who == "D":
                    loss, opt = F.cross_entropy(d(x).float(), y), opt_d
                else:
                    x_rec, logits = g(x)
                    loss = (cfg["loss"]["l1"] * (x - x_rec.float()).abs().mean()
                            + cfg["loss"]["auxiliary"] * F.cross_entropy(logits.float(), y))
                    opt = opt_g
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
