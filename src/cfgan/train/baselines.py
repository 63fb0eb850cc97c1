"""The plain (non-adversarial) classifier on the same backbone as D: the twin that Table 2 and
Figure 3 compare against. Two classes on binary data; on a multi-class data set one K+1-class
classifier (undamaged and each defect class), selected on val by macro F1."""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F

from ..compute import resolve
from ..data.datasets import defect_names, load_split, read_manifest
from ..inference import predict
from ..metrics import binary_metrics, multiclass_metrics
from ..models import build_discriminator
from .common import as_checkpoint, read_losses, rebuilds, save_run, seed_everything
from .supervised import fit


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
    batch_size = params["evaluate"]["batch_size"]

    def loss_of(x, y):
        with cx.autocast():
            return F.cross_entropy(model(x).float(), y)

    def val_f1_of(judged):
        with cx.autocast():
            pred = predict(val, d=judged, batch_size=batch_size, device=dev)["d_probs"].argmax(1).numpy()
        return multiclass_metrics(val.classes.numpy(), pred, n_out)["macro_f1"] if classes else binary_metrics(val.labels.numpy(), pred)["f1"]

    # an average of the twin (baseline.ema), as train.ema_d averages D: the fair twin of an averaged D; the
    # GAN's batch builder over the twin's classes (a crop whose defect the augmentation cut away is class 0)
    best, log = fit(model, loss_of, val_f1_of, train, cfg, params["train"], params["train"]["val_every"], rng, dev, name, train.classes)
    decay = cfg.get("ema", 0)
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
