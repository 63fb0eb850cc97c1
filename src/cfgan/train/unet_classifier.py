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

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..compute import resolve
from ..data.datasets import load_split
from ..inference import predict
from ..metrics import binary_metrics
from ..models import build_generator
from ..progress import progress
from .batches import draw_batch
from .common import as_checkpoint, read_losses, rebuilds, save_run, seed_everything
from .ema import averaged_copy, update_ema

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
    opt = torch.optim.Adam(g.parameters(), lr=cfg["lr"])
    decay = cfg.get("ema", 0)  # baseline.ema: an average of the network, as for the plain twin
    judged = averaged_copy(g) if decay > 0 else g
    vq_weight = params["train"]["loss"]["vq"]
    val_every, batch_size = params["train"]["val_every"], params["evaluate"]["batch_size"]
    best, log = {"f1": -1.0, "step": 0, "state": None}, []
    g.train()
    for step in progress(range(cfg["steps"]), desc=name, unit="step"):
        x, y = draw_batch(train, cfg["batch_size"], cfg.get("balance", False), params["train"], rng, dev)
        with cx.autocast():
            loss = _head_loss(g, x, y, vq_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if decay > 0:
            update_ema(judged, g, decay)
        row = {"step": step + 1, "loss": loss.detach()}
        if (step + 1) % val_every == 0 or step + 1 == cfg["steps"]:
            judged.eval()
            with cx.autocast():
                probs = predict(val, d=HeadClassifier(judged, seed), batch_size=batch_size, device=dev)["d_probs"]
            g.train()
            f1 = binary_metrics(val.labels.numpy(), probs.argmax(1).numpy())["f1"]
            row["val_f1"] = f1
            if f1 > best["f1"]:
                best = {"f1": f1, "step": step + 1, "state": copy.deepcopy(judged.state_dict())}
        log.append(row)
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
