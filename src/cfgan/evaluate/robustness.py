"""Figure 3's robustness step: its attacks and sweeps live in `cfgan.attacks`, one layer down, because
training's val robustness curve (`train.val_pgd`) uses the same code; re-exported here for the
evaluation steps and scripts that attack test."""

from ..attacks import Columns, RealLogits, f1_under_pgd, gaussian_noise, pgd, stratified_subset, sweep

__all__ = ["Columns", "RealLogits", "f1_under_pgd", "gaussian_noise", "pgd", "stratified_subset", "sweep"]
