"""The non-adversarial UNet classifier: the paper's comparison for G's auxiliary head (table 2,
figure 3). The same generator architecture as the grid's (a `{generator}` of `grid.generators`,
built from `generator` as G is, pix2pix dropout and noise included) trained only on its auxiliary
head's classification loss (eq. 3's cross-entropy; a Swin UNet also pays its VQ codebook loss at
`train.loss.vq`, which its bottleneck needs to learn at all): no D, no adversarial, L1 or cycle term.

It is a twin of G's head as the plain twin is one of D: it gets the twin's recipe and budget, the
`baseline` block (steps, lr, batch size, balance, `ema`), and the GAN's batches (the shared builder of
`train/batches.py`: the same balance, augmentation and relabelling of crops whose defect the
augmentation cut away), with the checkpoint kept on its val F1, as the twin's. On a multi-class data
set it is one damaged-vs-undamaged classifier, evaluated on each defect class's task in turn.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..compute import resolve
from ..data.datasets import load_split
from ..inference import predict
from ..metrics import binary_metrics
from ..models import build_generator
from .common import as_checkpoint, read_losses, rebuilds, save_run, seed_everything
from .supervised import fit

KIND = "unet_classifier"


def run_name(generator: str, seed: int) -> str:
    return f"{KIND}-{generator}-s{seed}"


class HeadClassifier(nn.Module):
    """A generator seen as a classifier: its auxiliary head's two logits (undamaged, damaged). G's
    noise z is drawn from `seed` afresh on every call, so one batch always meets the same z: a fixed
    function for PGD to attack, and z fixed per seed as in every evaluation of G (docs/method.md)."""

    def __init__(self, g: nn.Module, seed: int):
        super().__init__()
        self.g, self.seed = g, seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.randn(len(x), self.g.noise_dim, generator=torch.Generator().manual_seed(self.seed)).to(x.device)
        return self.g(x, z)[1]


def _head_loss(g, x, y, vq_weight: float) -> torch.Tensor:
    _, logits = g(x)
    loss = F.cross_entropy(logits.float(), y)
    aux = getattr(g, "aux_loss", None)  # the Swin UNet's VQ codebook + commitment loss of this forward
    return loss if aux is None else loss + vq_weight * aux.float()


def train_unet_classifier(params: dict, manifest: Path, generator: str, out_dir: Path, seed: int = 0) -> dict:
    cfg = params["baseline"]
    rng = seed_everything(seed)
    name = run_name(generator, seed)
    cx = resolve(params)
    dev = cx.device
    train, val = load_split(manifest, "train").to(dev), load_split(manifest, "val")
    image_size = train.images.shape[-1]
    g = cx.prepare(build_generator(generator, params["generator"], image_size), "generator")
    vq_weight = params["train"]["loss"]["vq"]
    batch_size = params["evaluate"]["batch_size"]

    def loss_of(x, y):
        with cx.autocast():
            return _head_loss(g, x, y, vq_weight)

    def val_f1_of(judged):
        with cx.autocast():
            probs = predict(val, d=HeadClassifier(judged, seed), batch_size=batch_size, device=dev)["d_probs"]
        return binary_metrics(val.labels.numpy(), probs.argmax(1).numpy())["f1"]

    # baseline.ema: an average of the network, as for the plain twin
    best, log = fit(g, loss_of, val_f1_of, train, cfg, params["train"], params["train"]["val_every"], rng, dev, name)
    decay = cfg.get("ema", 0)
    summary = {"run": name, "generator": generator, "seed": seed, "balance": cfg.get("balance", False),
               "best_step": best["step"], "val_f1": best["f1"], "image_size": image_size,
               **({"ema": decay} if decay > 0 else {})}
    save_run(out_dir, {"kind": KIND, "model": best["state"], "params": params, "summary": summary}, read_losses(log), cx)
    return summary


@rebuilds
def load_unet_classifier(source, compute=None):
    """(the classifier, in eval mode, on `compute`'s device; the checkpoint)."""
    ckpt = as_checkpoint(source)
    s = ckpt["summary"]
    g = build_generator(s["generator"], ckpt["params"]["generator"], s["image_size"])
    g.load_state_dict(ckpt["model"])
    g = (g if compute is None else compute.prepare(g, "generator")).eval()
    return HeadClassifier(g, s["seed"]).eval(), ckpt
