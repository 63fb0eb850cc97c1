"""The paper's adversarial training: D every step, G every `g_every`-th step, the checkpoint chosen on val.

Read top to bottom: the paper's step (`gan_step`: D's update, eq. 1; G's update, eq. 2-6, every
`g_every`-th step), the optimizers, then the loop (`train_gan`). What the loop adds beyond the
paper, each off in the paper's configuration, lives in a module of its own:
`selection` (collapse flags, the tolerance rule; the val score itself is the paper's),
`val_curves` (the maps' val IoU and D's val PGD along the steps), `ema` (weight averages),
`warmup` (warm starts), `batches` (balanced, relabelled training batches), and `cfgan.ood`
(the out-of-distribution thresholds `cfgan explain` reads).

Writes checkpoint.pt (the kept step; state dicts + resolved config + versions) and log.csv. A
`resume.pt` beside them lets a killed run continue where it stopped; it is removed at the end.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from ..progress import progress

from .. import attacks
from ..compute import Compute, resolve
from ..config import deep_merge, parse_run_name, run_defect
from ..data.datasets import load_split
from ..models import build_discriminator, build_generator
from ..ood import calibrate_run
from .batches import training_batch
from .common import as_checkpoint, batch_indices, load_checkpoint, read_losses, rebuilds, save_checkpoint, save_run, seed_everything
from .diffaugment import AugmentedD
from .ema import averaged_copy, update_ema
from .losses import discriminator_loss, generator_losses
from .selection import StepKeeper, collapse_signs, validate
from .val_curves import check_val_maps, map_curve, pgd_curve
from .warmup import warm_up


# --- the paper's step ---------------------------------------------------------------------------

def gan_step(g, d, opt_g, opt_d, x, y, cfg: dict, cycles: int, update_g: bool, compute: Compute,
             regularize: bool = True) -> dict:
    """One D update (eq. 1) and, when `update_g`, one G update (eq. 2-6). Returns the losses as
    0-d tensors (read them when logging: on a GPU every `.item()` waits for the device).
    `regularize`: this step pays `train.loss.r1` (lazily, as StyleGAN2 does: on every
    `train.r1_every`-th step, at that many times the weight; its double backward is D's dearest part).

    G runs once per step. On a G-update step that pass keeps its graph: D learns from the
    counterfactual (detached), then G's loss scores the same counterfactual through the updated D
    (a second pass for D alone would cost a third more of G on those steps, for another noise draw)."""
    with compute.autocast(), torch.set_grad_enabled(update_g):
        x_cf, logits = g(x)
    critic = training_critic(d, cfg)
    with compute.autocast():
        r1 = cfg["loss"].get("r1", 0.0) * cfg.get("r1_every", 1) if regularize else 0.0
        loss_d = discriminator_loss(critic, x, y, x_cf, r1, cfg["loss"].get("d_real", 1.0))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    out = {"loss_d": loss_d.detach()}
    if update_g:
        out.update(generator_step(g, d, opt_g, x, y, cfg, cycles, compute, (x_cf, logits)))
    return out


def training_critic(d, cfg: dict):
    """D as the adversarial losses see it in training: behind `train.diffaugment`'s transforms when
    that is set (real and generated images alike), D itself otherwise."""
    policies = cfg.get("diffaugment", [])
    return AugmentedD(d, policies) if policies else d


class MixedBatchD(torch.nn.Module):
    """D as its own update sees it: each batch of generated images is scored inside a batch that
    also holds the real images, so batch norm normalises with real+fake statistics (a global colour
    shift of the fakes stays visible against the reals). Returns the generated half's logits."""

    def __init__(self, d: torch.nn.Module, real: torch.Tensor):
        super().__init__()
        self.d, self.real = d, real

    def forward(self, fake: torch.Tensor) -> torch.Tensor:
        return self.d(torch.cat([self.real, fake]))[len(self.real):]


def generator_step(g, d, opt_g, x, y, cfg: dict, cycles: int, compute: Compute, forward=None) -> dict:
    """The G update, with D frozen: no parameter gradients, and its running statistics untouched.
    `forward`: G's (counterfactual, class logits) of x, with its graph, when the caller already ran G.

    `train.d_in_g_update` says how D normalises G's images: `mixed` (default) scores them inside
    real+fake batches in train mode, exactly as D's own update does, and restores D's batch-norm
    buffers afterwards; `eval` uses D's running statistics. Either way a fake-only batch is never
    normalised by its own statistics (that hid any global colour shift from G) and G's batches
    never write into D's running statistics."""
    mode = cfg.get("d_in_g_update", "mixed")
    was_training = d.training
    saved = {k: b.clone() for k, b in d.named_buffers()}
    d.requires_grad_(False)
    d.train(mode == "mixed")
    critic = MixedBatchD(training_critic(d, cfg), x) if mode == "mixed" else training_critic(d, cfg)
    try:
        with compute.autocast():
            x_cf, logits = g(x) if forward is None else forward
            terms = generator_losses(g, critic, x, y, x_cf, logits, cfg["loss"], cycles, cfg["cycle_weights"])
        opt_g.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt_g.step()
    finally:
        with torch.no_grad():
            for k, b in d.named_buffers():
                b.copy_(saved[k])
        d.requires_grad_(True)
        d.train(was_training)
    return {f"loss_g_{k}": v.detach() for k, v in terms.items()}


def schedule_lr(opt_g, opt_d, cfg: dict, step: int) -> None:
    """`train.lr_schedule`: `constant` (the paper's; nothing changes) or `cosine` (both learning rates
    follow half a cosine from their value at step 0 to 0 at the last step; a function of the step
    alone, so a resumed run continues on the same curve)."""
    if cfg.get("lr_schedule", "constant") == "constant":
        return
    factor = 0.5 * (1 + math.cos(math.pi * step / cfg["steps"]))
    for opt, base in ((opt_g, cfg["lr_g"]), (opt_d, cfg["lr_d"])):
        for group in opt.param_groups:
            group["lr"] = base * factor


def optimizers(g, d, cfg: dict):
    return (torch.optim.Adam(g.parameters(), lr=cfg["lr_g"], betas=tuple(cfg["betas"])),
            torch.optim.Adam(d.parameters(), lr=cfg["lr_d"], betas=tuple(cfg["betas"])))



# --- the loop -------------------------------------------------------------------------------------

def train_config(params: dict, dataset: str | None) -> dict:
    """`train`, with the data set's own overrides (the paper trains cracks and fruit differently)."""
    own = params.get("datasets", {}).get(dataset, {}).get("train", {}) if dataset else {}
    return deep_merge(params["train"], own)


def train_gan(params: dict, manifest: Path, run: str, out_dir: Path, dataset: str | None = None) -> dict:
    """Train one run of the grid and write its checkpoint: the paper's steps, validated every
    `val_every` steps, the step `StepKeeper` keeps saved with the OOD thresholds."""
    gen_name, dis_name, cycles, seed = parse_run_name(run)
    cfg = train_config(params, dataset)
    rng = seed_everything(seed)
    cx = resolve(params)
    dev = cx.device
    defect = run_defect(run)  # one-vs-rest: this defect class's crops against the undamaged ones
    # train.negatives narrows the training crops only: val and test keep every undamaged crop, so
    # selection and every table score the same crops whatever the option
    train = load_split(manifest, "train", defect=defect, negatives=cfg.get("negatives", "all")).to(dev)
    val = load_split(manifest, "val", defect=defect)
    maps_cfg = check_val_maps(cfg, val, manifest, params.get("evaluate", {}).get("saliency"))
    select_on = "val_map_iou" if maps_cfg and maps_cfg["select"] else "val_score"
    pgd_cfg = cfg.get("val_pgd")  # D's robustness curve along the steps (train.val_pgd; None: off)
    attacked = attacks.stratified_subset(val, pgd_cfg.get("crops"), params["seed"]) if pgd_cfg else None
    tolerance = maps_cfg.get("tolerance", 0.0) if maps_cfg else 0.0  # (val_maps_settings refuses it without select)
    image_size = train.images.shape[-1]
    g = cx.prepare(build_generator(gen_name, params["generator"], image_size), "generator")
    d = cx.prepare(build_discriminator(dis_name, params["discriminator"], image_size, 3), "discriminator")
    opt_g, opt_d = optimizers(g, d, cfg)
    resume_path = out_dir / "resume.pt"
    state = _resume(resume_path, params, run, g, d, opt_g, opt_d, rng, dev)
    start, log = (state["step"], state["log"]) if state else (0, [])
    keeper = StepKeeper(select_on, tolerance, state["keeper"] if state else None)
    g.train(); d.train()
    if start == 0:
        warm_up(g, d, opt_g, opt_d, train, cfg, rng, cx, run)
    if hasattr(g, "last_mask"):
        g.last_mask = g.last_keep = None  # tensors of the warm-up's graph: deepcopy refuses those
    decay, decay_d = cfg.get("ema_g", 0), cfg.get("ema_d", 0)  # G's average follows G's updates, D's every D update
    # the averages (None when off) are what validation, selection and the checkpoint see
    ema, ema_d = (averaged_copy(net) if rate > 0 else None for net, rate in ((g, decay), (d, decay_d)))
    for average, key in ((ema, "g_ema"), (ema_d, "d_ema")):
        if average is not None and state:
            average.load_state_dict(state[key])
    balance = cfg.get("balance", False)
    batch_size = params["evaluate"]["batch_size"]
    pending = []  # this interval's per-step losses, still tensors: read once, at the next validation
    for step in progress(range(start, cfg["steps"]), initial=start, total=cfg["steps"], desc=run, unit="step"):
        x, y = training_batch(train, batch_indices(train.labels, cfg["batch_size"], rng, balance), cfg, rng, dev)
        schedule_lr(opt_g, opt_d, cfg, step)
        update_g = (step + 1) % cfg["g_every"] == 0
        regularize = step % cfg.get("r1_every", 1) == 0
        row = {"step": step + 1, **gan_step(g, d, opt_g, opt_d, x, y, cfg, cycles, update_g, cx, regularize)}
        if ema is not None and update_g:
            update_ema(ema, g, decay)
        if ema_d is not None:
            update_ema(ema_d, d, decay_d)
        pending.append(row)
        last = step + 1 == cfg["steps"]
        if (step + 1) % cfg["val_every"] == 0 or last:
            pending = read_losses(pending)
            row = pending[-1]  # this step's row, its losses now floats
            log, pending = log + pending, []
            shown, judge = g if ema is None else ema, d if ema_d is None else ema_d
            row.update(validate(shown, judge, val, batch_size, cx, seed))
            if maps_cfg:
                row.update(map_curve(shown, val, maps_cfg, batch_size, cx, seed))
            if pgd_cfg:
                row.update(pgd_curve(judge, attacked, params["evaluate"]["pgd"], pgd_cfg["step_sizes"], batch_size, cx, seed))
            keeper.offer(step + 1, row, lambda: {"g": copy.deepcopy(shown.state_dict()), "d": copy.deepcopy(judge.state_dict())})
            if not last:
                save_checkpoint(resume_path, {"params": params, "run": run, "step": step + 1, "g": g.state_dict(),
                                              "d": d.state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                                              "rng": rng.get_state(), "torch_rng": torch.get_rng_state(),
                                              **({"cuda_rng": torch.cuda.get_rng_state_all()} if dev.type == "cuda" else {}),
                                              **({"g_ema": ema.state_dict()} if ema is not None else {}),
                                              **({"d_ema": ema_d.state_dict()} if ema_d is not None else {}),
                                              "log": log, "keeper": keeper.candidates})
    best = keeper.kept()
    collapse = collapse_signs(best["row"])
    for sign in collapse:
        print(f"WARNING {run}: collapsed at its selected step {best['step']}: {sign}")
    summary = {"run": run, "generator": gen_name, "discriminator": dis_name, "cycles": cycles, "seed": seed,
               "best_step": best["step"], "val_score": best["score"], "val_f1_d": best["row"]["val_f1_d"],
               "val": {k: v for k, v in best["row"].items() if k.startswith("val_") and k != "val_map_form"}, "collapse": collapse,
               "balance": balance, "g_every": cfg["g_every"], "warmup": cfg.get("warmup", {}),
               "lr_schedule": cfg.get("lr_schedule", "constant"), "image_size": image_size,
               **({"ema_g": decay} if decay > 0 else {}),
               **({"ema_d": decay_d} if decay_d > 0 else {}),
               **({"val_maps": {"selected_on": select_on, "form": best["row"]["val_map_form"],
                                **({"tolerance": tolerance} if tolerance > 0 else {})}} if maps_cfg else {})}
    with cx.autocast():
        summary["ood"] = calibrate_run(g, d, best, train, val, seed, dev)  # for `cfgan explain`
    save_run(out_dir, {"kind": "gan", "g": best["g"], "d": best["d"], "params": params, "summary": summary}, log, cx)
    resume_path.unlink(missing_ok=True)
    return summary


def _resume(path: Path, params: dict, run: str, g, d, opt_g, opt_d, rng, dev) -> dict | None:
    """A killed run's state, restored into the networks, optimizers and generators (None: start
    afresh, also when resume.pt was written for other params or another run)."""
    if not path.exists():
        return None
    state = load_checkpoint(path)
    if state["params"] != params or state["run"] != run:
        return None
    g.load_state_dict(state["g"]); d.load_state_dict(state["d"])
    opt_g.load_state_dict(state["opt_g"]); opt_d.load_state_dict(state["opt_d"])
    rng.set_state(state["rng"]); torch.set_rng_state(state["torch_rng"])
    if dev.type == "cuda" and "cuda_rng" in state:  # G's noise and dropout draw from the device's generator there
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if "keeper" not in state:  # a resume file of older code holds its one kept step as "best"
        state["keeper"] = [state["best"]]
    print(f"resuming {run} from step {state['step']}")
    return state


@rebuilds
def load_gan(source, compute: Compute | None = None):
    """Rebuild G and D from a checkpoint, in eval mode, on `compute`'s device and layout (None: the CPU, as stored)."""
    ckpt = as_checkpoint(source)
    s, p = ckpt["summary"], ckpt["params"]
    g = build_generator(s["generator"], p["generator"], s["image_size"])
    d = build_discriminator(s["discriminator"], p["discriminator"], s["image_size"], 3)
    g.load_state_dict(ckpt["g"]); d.load_state_dict(ckpt["d"])
    if compute is not None:
        g, d = compute.prepare(g, "generator"), compute.prepare(d, "discriminator")
    return g.eval(), d.eval(), ckpt
