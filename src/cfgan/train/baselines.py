"""The plain (non-adversarial) classifier on the same backbone as D: the twin that Table 2 and
Figure 3 compare against. Two classes on binary data; on a multi-class data set one K+1-class
classifier (undamaged and each defect class), selected on val by macro F1."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn.functional as F
from ..progress import progress

from ..compute import resolve
from ..data.datasets import defect_names, load_split, read_manifest
from ..inference import predict
from ..metrics import binary_metrics, multiclass_metrics
from ..models import build_discriminator
from .batches import draw_batch
from .common import as_checkpoint, read_losses, rebuilds, save_run, seed_everything
from .ema import averaged_copy, update_ema


def train_baseline(params: dict, manifest: Path, backbone: str, out_dir: Path, seed: int = 0) -> dict:
    cfg = params["baseline"]
    rng = seed_everything(seed)
    name = f"baseline-{backbone}-s{seed}"
    cx = resolve(params)
    dev = cx.device
    train, val = load_split(manifest, "train").to(dev), load_split(manifest, "val")
    classes = ["undamaged", *defect_names(read_manifest(manifest))] if train.classes is not train.labels else None
    n_out = len(classes) if classes else 2
    image_size = train.images.shape[-1]
    model = cx.prepare(build_discriminator(backbone, params["discriminator"], image_size, n_out), "discriminator")
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    best, log = {"f1": -1.0, "step": 0, "state": None}, []
    decay = cfg.get("ema", 0)  # an average of the twin, as train.ema_d averages D: the fair twin of an averaged D
    judged = averaged_copy(model) if decay > 0 else model
    val_every = params["train"]["val_every"]
    model.train()
    for step in progress(range(cfg["steps"]), desc=name, unit="step"):
        # the GAN's batch builder: the same balance, augmentation and relabelling of crops whose defect
        # the augmentation cut away (to undamaged, class 0), over the twin's classes
        x, y = draw_batch(train, cfg["batch_size"], cfg.get("balance", False), params["train"], rng, dev, train.classes)
        with cx.autocast():
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if decay > 0:
            update_ema(judged, model, decay)
        row = {"step": step + 1, "loss": loss.detach()}
        if (step + 1) % val_every == 0 or step + 1 == cfg["steps"]:
            judged.eval()
            with cx.autocast():
                probs = predict(val, d=judged, batch_size=params["evaluate"]["batch_size"], device=dev)["d_probs"]
            model.train()
            pred = probs.argmax(1).numpy()
            f1 = multiclass_metrics(val.classes.numpy(), pred, n_out)["macro_f1"] if classes else \
                binary_metrics(val.labels.numpy(), pred)["f1"]
            row["val_f1"] = f1
            if f1 > best["f1"]:
                best = {"f1": f1, "step": step + 1, "state": copy.deepcopy(judged.state_dict())}
        log.append(row)
    summary = {"run": name, "backbone": backbone, "seed": seed, "balance": cfg.get("balance", False), "best_step": best["step"], "val_f1": best["f1"],
               "image_size": image_size, **({"classes": classes} if classes else {}), **({"ema": decay} if decay > 0 else {})}
    log = read_losses(log)
    save_run(out_dir, {"kind": "baseline", "model": best["state"], "params": params, "summary": summary}, log, cx)
    return summary


@rebuilds
def load_baseline(source, compute=None):
    ckpt = as_checkpoint(source)
    s = ckpt["summary"]
    model = build_discriminator(s["backbone"], ckpt["params"]["discriminator"], s["image_size"], len(s.get("classes", [0, 1])))
    model.load_state_dict(ckpt["model"])
    return (model if compute is None else compute.prepare(model, "discriminator")).eval(), ckpt
