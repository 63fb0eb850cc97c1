"""The adversarial loop: D every step, G every `g_every`-th step, model selection on val.

Reads the train and val splits of a manifest; writes checkpoint.pt (best val F1 of D; state
dicts + resolved config + versions) and log.csv. A `resume.pt` beside them lets a killed run
continue where it stopped; it is removed when the run completes.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from tqdm import tqdm

from ..config import parse_run_name
from ..data.augment import augment
from ..data.datasets import load_split
from ..evaluate.metrics import binary_metrics
from ..evaluate.predict import predict, real_class_probs
from ..models import build_discriminator, build_generator
from ..ood import calibrate_run
from .common import as_checkpoint, autocast, device, load_checkpoint, prepare, save_checkpoint, save_run, seed_everything
from .common import rebuilds
from .losses import discriminator_loss, generator_losses


def val_f1(d, split, batch_size, dev) -> float:
    d.eval()
    probs = predict(split, d=d, batch_size=batch_size, device=dev)["d_probs"]
    d.train()
    return binary_metrics(split.labels.numpy(), real_class_probs(probs).argmax(1).numpy())["f1"]


def gan_step(g, d, opt_g, opt_d, x, y, cfg: dict, cycles: int, update_g: bool) -> dict:
    """One D update (eq. 1) and, when `update_g`, one G update (eq. 2-6). Returns the losses."""
    dev = x.device
    with torch.no_grad(), autocast(dev):
        x_cf, _ = g(x)
    with autocast(dev):
        loss_d = discriminator_loss(d, x, y, x_cf)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    out = {"loss_d": loss_d.item()}
    if update_g:
        with autocast(dev):
            x_cf, logits = g(x)
            terms = generator_losses(g, d, x, y, x_cf, logits, cfg["loss"], cycles, cfg["cycle_weights"])
        opt_g.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt_g.step()
        out.update({f"loss_g_{k}": v.item() for k, v in terms.items()})
    return out


def optimizers(g, d, cfg: dict):
    return (torch.optim.Adam(g.parameters(), lr=cfg["lr_g"], betas=tuple(cfg["betas"])),
            torch.optim.Adam(d.parameters(), lr=cfg["lr_d"], betas=tuple(cfg["betas"])))


def train_gan(params: dict, manifest: Path, run: str, out_dir: Path) -> dict:
    gen_name, dis_name, cycles = parse_run_name(run)
    cfg = params["train"]
    rng = seed_everything(params["seed"])
    dev = device()
    train, val = load_split(manifest, "train"), load_split(manifest, "val")
    image_size = train.images.shape[-1]
    g = prepare(build_generator(gen_name, params["generator"], image_size), dev)
    d = prepare(build_discriminator(dis_name, params["discriminator"], image_size, 3), dev)
    opt_g, opt_d = optimizers(g, d, cfg)
    resume_path = out_dir / "resume.pt"
    start, log, best = 0, [], {"f1": -1.0, "step": 0, "g": None, "d": None}
    if resume_path.exists():
        state = load_checkpoint(resume_path)
        if state["params"] == params and state["run"] == run:
            g.load_state_dict(state["g"]); d.load_state_dict(state["d"])
            opt_g.load_state_dict(state["opt_g"]); opt_d.load_state_dict(state["opt_d"])
            rng.set_state(state["rng"]); torch.set_rng_state(state["torch_rng"])
            start, log, best = state["step"], state["log"], state["best"]
            print(f"resuming {run} from step {start}")
    g.train(); d.train()
    for step in tqdm(range(start, cfg["steps"]), initial=start, total=cfg["steps"], desc=run, unit="step"):
        idx = torch.randint(len(train), (cfg["batch_size"],), generator=rng)
        x, y = train.batch(idx, dev)
        x = augment(x, cfg["augment"], rng)
        row = {"step": step + 1, **gan_step(g, d, opt_g, opt_d, x, y, cfg, cycles, update_g=(step + 1) % cfg["g_every"] == 0)}
        last = step + 1 == cfg["steps"]
        if (step + 1) % cfg["val_every"] == 0 or last:
            f1 = val_f1(d, val, params["evaluate"]["batch_size"], dev)
            row["val_f1_d"] = f1
            if f1 > best["f1"]:
                best = {"f1": f1, "step": step + 1, "g": copy.deepcopy(g.state_dict()), "d": copy.deepcopy(d.state_dict())}
            if not last:
                save_checkpoint(resume_path, {"params": params, "run": run, "step": step + 1, "g": g.state_dict(),
                                              "d": d.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                                              "rng": rng.get_state(), "torch_rng": torch.get_rng_state(),
                                              "log": log + [row], "best": best})
        log.append(row)
    summary = {"run": run, "generator": gen_name, "discriminator": dis_name, "cycles": cycles,
               "best_step": best["step"], "val_f1_d": best["f1"], "image_size": image_size}
    summary["ood"] = calibrate_run(g, d, best, train, val, params["seed"], dev)  # for `cfgan explain`
    save_run(out_dir, {"kind": "gan", "g": best["g"], "d": best["d"], "params": params, "summary": summary}, log)
    resume_path.unlink(missing_ok=True)
    return summary


@rebuilds
def load_gan(source, dev="cpu"):
    """Rebuild G and D from a checkpoint, in eval mode."""
    ckpt = as_checkpoint(source)
    s, p = ckpt["summary"], ckpt["params"]
    g = build_generator(s["generator"], p["generator"], s["image_size"])
    d = build_discriminator(s["discriminator"], p["discriminator"], s["image_size"], 3)
    g.load_state_dict(ckpt["g"]); d.load_state_dict(ckpt["d"])
    return g.to(dev).eval(), d.to(dev).eval(), ckpt
