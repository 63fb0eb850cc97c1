"""The plain (non-adversarial) 2-class classifier on the same backbone as D: the twin that
Table 2 and Figure 3 compare against."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data.augment import augment
from ..data.datasets import load_split
from ..evaluate.metrics import binary_metrics
from ..evaluate.predict import predict
from ..models import build_discriminator
from .common import as_checkpoint, autocast, batch_indices, device, prepare, rebuilds, save_run, seed_everything


def train_baseline(params: dict, manifest: Path, backbone: str, out_dir: Path, seed: int = 0) -> dict:
    cfg = params["baseline"]
    rng = seed_everything(seed)
    name = f"baseline-{backbone}-s{seed}"
    dev = device()
    train, val = load_split(manifest, "train"), load_split(manifest, "val")
    image_size = train.images.shape[-1]
    model = prepare(build_discriminator(backbone, params["discriminator"], image_size, 2), dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    best, log = {"f1": -1.0, "step": 0, "state": None}, []
    val_every = params["train"]["val_every"]
    model.train()
    for step in tqdm(range(cfg["steps"]), desc=name, unit="step"):
        idx = batch_indices(train.labels, cfg["batch_size"], rng, cfg.get("balance", False))
        x, y = train.batch(idx, dev)
        with autocast(dev):
            loss = F.cross_entropy(model(augment(x, params["train"]["augment"], rng)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        row = {"step": step + 1, "loss": loss.item()}
        if (step + 1) % val_every == 0 or step + 1 == cfg["steps"]:
            model.eval()
            probs = predict(val, d=model, batch_size=params["evaluate"]["batch_size"], device=dev)["d_probs"]
            model.train()
            f1 = binary_metrics(val.labels.numpy(), probs.argmax(1).numpy())["f1"]
            row["val_f1"] = f1
            if f1 > best["f1"]:
                best = {"f1": f1, "step": step + 1, "state": copy.deepcopy(model.state_dict())}
        log.append(row)
    summary = {"run": name, "backbone": backbone, "seed": seed, "balance": cfg.get("balance", False), "best_step": best["step"], "val_f1": best["f1"],
               "image_size": image_size}
    save_run(out_dir, {"kind": "baseline", "model": best["state"], "params": params, "summary": summary}, log)
    return summary


@rebuilds
def load_baseline(source, dev="cpu"):
    ckpt = as_checkpoint(source)
    s = ckpt["summary"]
    model = build_discriminator(s["backbone"], ckpt["params"]["discriminator"], s["image_size"], 2)
    model.load_state_dict(ckpt["model"])
    return model.to(dev).eval(), ckpt
