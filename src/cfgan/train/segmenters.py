"""Supervised segmenters (CNN UNet, Swin UNet trained on the masks): the upper reference of
the saliency comparison (table 5, figure 5). Model selection on the val split's mean IoU."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.datasets import load_split
from ..errors import UserError
from ..evaluate.metrics import iou
from ..models import build_segmenter
from .common import as_checkpoint, autocast, device, prepare, save_run, seed_everything
from .common import rebuilds


@torch.no_grad()
def predict_masks(model, split, batch_size: int, device="cpu") -> torch.Tensor:
    out = []
    for start in range(0, len(split), batch_size):
        x, _ = split.batch(torch.arange(start, min(start + batch_size, len(split))), device)
        out.append(torch.sigmoid(model(x).float()).cpu())
    return torch.cat(out)


def train_segmenter(params: dict, manifest: Path, arch: str, out_dir: Path) -> dict:
    cfg = params["segmenter"]
    rng = seed_everything(params["seed"])
    dev = device()
    train, val = load_split(manifest, "train"), load_split(manifest, "val")
    if train.masks is None:
        raise UserError(f"{manifest}: crops have no masks, so a segmenter cannot be trained on this data set")
    image_size = train.images.shape[-1]
    model = prepare(build_segmenter(arch, params["generator"], image_size), dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    best, log = {"iou": -1.0, "step": 0, "state": None}, []
    damaged_val = val.labels == 1
    model.train()
    for step in tqdm(range(cfg["steps"]), desc=f"segmenter-{arch}", unit="step"):
        idx = torch.randint(len(train), (cfg["batch_size"],), generator=rng)
        x, _ = train.batch(idx, dev)
        target = train.masks[idx].to(dev).float()
        with autocast(dev):
            loss = F.binary_cross_entropy_with_logits(model(x).float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        row = {"step": step + 1, "loss": loss.item()}
        if (step + 1) % params["train"]["val_every"] == 0 or step + 1 == cfg["steps"]:
            model.eval()
            probs = predict_masks(model, val, params["evaluate"]["batch_size"], dev)
            model.train()
            score = float(sum(iou(p >= 0.5, m) for p, m in zip(probs[damaged_val], val.masks[damaged_val])) / max(int(damaged_val.sum()), 1))
            row["val_iou"] = score
            if score > best["iou"]:
                best = {"iou": score, "step": step + 1, "state": copy.deepcopy(model.state_dict())}
        log.append(row)
    summary = {"run": f"segmenter-{arch}", "arch": arch, "best_step": best["step"], "val_iou": best["iou"], "image_size": image_size}
    save_run(out_dir, {"kind": "segmenter", "model": best["state"], "params": params, "summary": summary}, log)
    return summary


@rebuilds
def load_segmenter(source, dev="cpu"):
    ckpt = as_checkpoint(source)
    s = ckpt["summary"]
    model = build_segmenter(s["arch"], ckpt["params"]["generator"], s["image_size"])
    model.load_state_dict(ckpt["model"])
    return model.to(dev).eval(), ckpt
