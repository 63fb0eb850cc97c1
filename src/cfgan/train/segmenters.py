"""Supervised segmenters (CNN UNet, Swin UNet trained on the masks): the upper reference of
the saliency comparison (table 5, figure 5).

Trained as a segmentation network should be, not as a copy of the generator: no pix2pix
dropout (`segmenter.dropout`), class-balanced batches, BCE weighted by the pixel imbalance
(cracks are a few % of pixels), flips and 90-degree turns of crop and mask together, and model
selection on the val split's mean IoU under the same threshold rule that evaluation uses."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from ..progress import progress

from ..compute import resolve
from ..data.datasets import load_split
from ..errors import UserError
from ..metrics import choose_threshold
from ..models import build_segmenter
from .common import as_checkpoint, batch_indices, read_losses, rebuilds, save_run, seed_everything


@torch.no_grad()
def predict_masks(model, split, batch_size: int, device="cpu") -> torch.Tensor:
    out = []
    for start in range(0, len(split), batch_size):
        x, _ = split.batch(torch.arange(start, min(start + batch_size, len(split))), device)
        out.append(torch.sigmoid(model(x).float()).cpu())
    return torch.cat(out)


def flip_turn(x: torch.Tensor, m: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random flip and 90-degree turn for a batch of crops (B x C x H x W) and masks (B x H x W):
    exact for masks (no interpolation), so labels stay true."""
    k = int(torch.randint(4, (1,), generator=gen))
    x, m = torch.rot90(x, k, (2, 3)), torch.rot90(m, k, (1, 2))
    if torch.rand(1, generator=gen) < 0.5:
        x, m = x.flip(3), m.flip(2)
    return x, m


def _segmenter_generator_cfg(params: dict) -> dict:
    return {**params["generator"], "dropout": params["segmenter"].get("dropout", params["generator"]["dropout"])}


def train_segmenter(params: dict, manifest: Path, arch: str, out_dir: Path, seed: int = 0) -> dict:
    cfg = params["segmenter"]
    rng = seed_everything(seed)
    name = f"segmenter-{arch}-s{seed}"
    cx = resolve(params)
    dev = cx.device
    train, val = load_split(manifest, "train").to(dev), load_split(manifest, "val")
    if train.masks is None:
        raise UserError(f"{manifest}: crops have no masks, so a segmenter cannot be trained on this data set")
    image_size = train.images.shape[-1]
    model = cx.prepare(build_segmenter(arch, _segmenter_generator_cfg(params), image_size), "generator")
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    best, log = {"iou": -1.0, "step": 0, "state": None}, []
    damaged_val = (val.labels == 1).numpy()
    val_masks = val.masks.numpy()[damaged_val]
    # positives are rare: weight them by the negative/positive pixel ratio of the training masks
    positive = float(train.masks.float().mean())
    pos_weight = torch.tensor((1 - positive) / max(positive, 1e-6), device=dev).clamp(max=100.0)
    quantiles = params["evaluate"]["saliency"]["quantiles"]
    model.train()
    for step in progress(range(cfg["steps"]), desc=name, unit="step"):
        idx = batch_indices(train.labels, cfg["batch_size"], rng, cfg.get("balance", False))
        x, _ = train.batch(idx, dev)
        target = train.masks[idx].to(dev).float()
        if cfg.get("augment", False):
            x, target = flip_turn(x, target, rng)
        with cx.autocast():
            loss = F.binary_cross_entropy_with_logits(model(x).float(), target, pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        row = {"step": step + 1, "loss": loss.detach()}
        if (step + 1) % params["train"]["val_every"] == 0 or step + 1 == cfg["steps"]:
            model.eval()
            with cx.autocast():
                probs = predict_masks(model, val, params["evaluate"]["batch_size"], dev).numpy()[damaged_val]
            model.train()
            _, score = choose_threshold(probs, val_masks, quantiles)
            row["val_iou"] = score
            if score > best["iou"]:
                best = {"iou": score, "step": step + 1, "state": copy.deepcopy(model.state_dict())}
        log.append(row)
    summary = {"run": name, "arch": arch, "seed": seed, "best_step": best["step"], "val_iou": best["iou"],
               "image_size": image_size, "pos_weight": float(pos_weight)}
    log = read_losses(log)
    save_run(out_dir, {"kind": "segmenter", "model": best["state"], "params": params, "summary": summary}, log, cx)
    return summary


@rebuilds
def load_segmenter(source, compute=None):
    ckpt = as_checkpoint(source)
    s = ckpt["summary"]
    model = build_segmenter(s["arch"], _segmenter_generator_cfg(ckpt["params"]), s["image_size"])
    model.load_state_dict(ckpt["model"])
    return (model if compute is None else compute.prepare(model, "generator")).eval(), ckpt
