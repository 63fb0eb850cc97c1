"""The adversarial loop: D every step, G every `g_every`-th step, model selection on val.

Reads the train and val splits of a manifest; writes checkpoint.pt (the val-selected step; state
dicts + resolved config + versions) and log.csv. A `resume.pt` beside them lets a killed run
continue where it stopped; it is removed when the run completes.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..compute import Compute, resolve
from ..config import deep_merge, parse_run_name, run_defect
from ..data.augment import augment
from ..data.datasets import load_split
from ..errors import UserError
from .. import attacks
from ..inference import predict, real_class_probs
from ..maps import best_form_iou
from ..metrics import balanced_accuracy, binary_metrics
from ..models import build_discriminator, build_generator
from ..ood import calibrate_run
from .common import as_checkpoint, batch_indices, load_checkpoint, read_losses, rebuilds, save_checkpoint, save_run, seed_everything, averaged_copy, update_ema
from .diffaugment import AugmentedD
from .losses import discriminator_loss, generator_losses

# A run is reported as collapsed when, at its selected step on val, ...
IDENTITY_CHANGE = 1 / 255     # ... G changes images by less than one grey level on average,
ONE_CLASS = 0.02              # ... G's head or D calls fewer than 2 % (or more than 98 %) of crops damaged,
SEPARATION = 0.5              # ... or D's fake score ranks real val crops above its own counterfactuals
                              # (AUC of p_fake, generated against real, below 0.5),
HEAD_MARGIN = 0.5             # ... or G's head keeps less than half of D's margin over chance (balanced
                              # accuracy - 0.5): a head broken while D still classifies (CrackForest val,
                              # 2026-12-04: single checkpoints at 0.55-0.68 between 0.9s, D at ~0.9, no other flag).


def train_config(params: dict, dataset: str | None) -> dict:
    """`train`, with the data set's own overrides (the paper trains cracks and fruit differently)."""
    own = params.get("datasets", {}).get(dataset, {}).get("train", {}) if dataset else {}
    return deep_merge(params["train"], own)


def fake_score_auc(p_fake_generated: np.ndarray, p_fake_real: np.ndarray) -> float:
    """AUC of D's fake probability, counterfactuals (positive) against real crops: the chance that a
    random counterfactual looks more fake to D than a random real crop (ties count half)."""
    from scipy.stats import rankdata
    ranks = rankdata(np.concatenate([p_fake_generated, p_fake_real]))
    n_pos, n_neg = len(p_fake_generated), len(p_fake_real)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def validate(g, d, split, batch_size: int, compute: Compute, seed: int) -> dict:
    """Val metrics of the whole model, in eval mode: D's F1, G's head balanced accuracy, the
    fraction of counterfactuals D assigns to the opposite real class over both the crop's own class
    and 'fake' (flip: a counterfactual D is sure is fake has not flipped), how well D's fake score
    separates counterfactuals from real crops (AUC), and the signs of collapse. `score`, the mean of
    the first three, selects the checkpoint."""
    g.eval(); d.eval()
    with compute.autocast():
        out = predict(split, d=d, g=g, batch_size=batch_size, device=compute.device, seed=seed)
    g.train(); d.train()
    y = split.labels.numpy()
    d_pred = real_class_probs(out["d_logits"]).argmax(1).numpy()
    g_pred = out["g_probs"].argmax(1).numpy()
    flip = float(np.mean(out["d_logits_cf"].argmax(1).numpy() == 1 - y))  # argmax over all three: fake is not a flip
    row = {"val_f1_d": binary_metrics(y, d_pred)["f1"], "val_bacc_g": balanced_accuracy(y, g_pred),
           "val_flip": flip, "val_change": float(out["change"].mean()), "val_p_fake_real": float(out["d_probs"][:, 2].mean()),
           "val_auc_fake": fake_score_auc(out["d_probs_cf"][:, 2].double().numpy(), out["d_probs"][:, 2].double().numpy()),
           "val_damaged_rate_d": float(d_pred.mean()), "val_damaged_rate_g": float(g_pred.mean())}
    row["val_score"] = (row["val_f1_d"] + row["val_bacc_g"] + row["val_flip"]) / 3
    row["val_bacc_d"] = balanced_accuracy(y, d_pred)  # for the broken-head flag; not in the score
    return row


def collapse_signs(row: dict) -> list[str]:
    """What went wrong at a selected step, read from its val row (empty: nothing)."""
    signs = []
    if row["val_change"] < IDENTITY_CHANGE:
        signs.append(f"G is nearly the identity (mean |x - G(x)| {row['val_change'] * 255:.2f} grey levels)")
    for who in ("g", "d"):
        rate = row[f"val_damaged_rate_{who}"]
        if rate < ONE_CLASS or rate > 1 - ONE_CLASS:
            signs.append(f"{'G head' if who == 'g' else 'D'} predicts one class ({rate:.1%} of val crops damaged)")
    # Not "p_fake on real crops > 0.5": that is where the game starts (G the identity), not a failure.
    if row["val_auc_fake"] < SEPARATION:
        signs.append(f"D finds real crops more fake than its own counterfactuals (AUC of p_fake {row['val_auc_fake']:.2f}; "
                     f"mean p_fake {row['val_p_fake_real']:.2f} on real val crops)")
    bacc_d = row.get("val_bacc_d")  # absent (or NaN in a read-back log) before 2026-12-05: no verdict then
    if bacc_d is not None and not math.isnan(bacc_d) and row["val_bacc_g"] - 0.5 < HEAD_MARGIN * (bacc_d - 0.5):
        signs.append(f"G head near chance while D classifies (balanced accuracy {row['val_bacc_g']:.2f} against D's {bacc_d:.2f})")
    return signs


def selection_key(row: dict, column: str = "val_score") -> tuple[bool, float]:
    """How selection ranks a validation row: a step without signs of collapse beats any collapsed
    one; among equals, the higher `column` (val_score, or val_map_iou under train.val_maps.select)."""
    return not collapse_signs(row), row[column]


class StepKeeper:
    """Which validated step a run keeps, decided as the run goes (a run cannot go back to a step it
    did not keep). Rows are ranked by `selection_key` on `column`.

    tolerance 0: the best row, the earliest of equals. tolerance t > 0 (`train.val_maps.tolerance`,
    not in the paper): every row of the best row's collapse tier within t of the best `column` stays a
    candidate, and the run keeps the candidate with the best label-only val_score (the earliest of
    equals). On CrackForest the maps' val IoU moves by ~0.01 between neighbouring checkpoints, about
    its standard error over ~180 damaged val crops, so among maps the curve cannot tell apart the
    better classifier wins. Candidates are pruned as the best rises: a rising curve holds one, a plateau
    within t holds all of its steps."""

    def __init__(self, column: str = "val_score", tolerance: float = 0.0, candidates: list[dict] | None = None):
        self.column, self.tolerance = column, tolerance
        # the best key so far is always a candidate's (the best row is near itself), so the candidates are the state
        self.candidates = [{**c, "key": tuple(c["key"])} for c in candidates or []]  # (a resume file's, when given)

    def offer(self, step: int, row: dict, payload) -> None:
        """Consider a validated step; `payload()` (the weights to keep) is called only if it stays."""
        key = selection_key(row, self.column)
        top = max([key] + [c["key"] for c in self.candidates])
        near = lambda k: k[0] == top[0] and k[1] >= top[1] - self.tolerance  # noqa: E731
        self.candidates = [c for c in self.candidates if near(c["key"])]
        if near(key) and (self.tolerance > 0 or not self.candidates):
            self.candidates.append({"key": key, "score": row["val_score"], "step": step, "row": dict(row), **payload()})

    def kept(self) -> dict:
        """The kept candidate: its key, val_score, step, row and payload."""
        if self.tolerance == 0:
            return self.candidates[0]
        return max(self.candidates, key=lambda c: (c["score"], -c["step"]))


def map_curve(g, split, maps_cfg: dict, batch_size: int, compute: Compute, seed: int) -> dict:
    """`train.val_maps`: the counterfactual maps' mean IoU on the damaged val crops (the best of its
    forms, the threshold chosen on those crops, as the saliency step chooses on val), G in eval mode
    as the saliency step draws them (its mode is restored afterwards)."""
    was_training = g.training
    g.eval()
    with compute.autocast():
        form, score = best_form_iou(g, split, maps_cfg["forms"], maps_cfg["quantiles"], batch_size, seed,
                                    compute.device, maps_cfg["smooth_sigma"])
    g.train(was_training)
    return {"val_map_iou": score, "val_map_form": form}


def pgd_curve(d, attacked, pgd_cfg: dict, step_sizes: list[float], batch_size: int, compute: Compute, seed: int) -> dict:
    """`train.val_pgd`: D's val F1 under targeted PGD at each step size, attacked as the robustness
    step attacks test (evaluate.pgd's steps and eps, fp32, D in eval mode; its mode is restored),
    logged as val_f1_d_pgd=<step size>. A curve only: selection never reads it. The attack takes
    input gradients alone (torchattacks' autograd.grad) and draws no random numbers, so training
    goes on with the same bits."""
    was_training = d.training
    f1 = attacks.f1_under_pgd(attacked, attacks.RealLogits(d), pgd_cfg, step_sizes, batch_size, seed, compute.device)
    d.train(was_training)
    return {f"val_f1_d_{condition}": value for condition, value in f1.items()}


def val_maps_settings(cfg: dict, saliency: dict | None) -> dict | None:
    """`train.val_maps` (None: off) with what it leaves out taken from the saliency step's
    `evaluate.saliency` (its forms, quantiles and blur), so that a checkpoint selected on the curve
    is scored as its maps will be; keys set under train.val_maps win."""
    maps_cfg = cfg.get("val_maps")
    if maps_cfg is None:
        return None
    saliency = saliency or {}
    if "quantiles" not in maps_cfg and "quantiles" not in saliency:
        raise UserError("train.val_maps: no threshold quantiles (set train.val_maps.quantiles or evaluate.saliency.quantiles)")
    if maps_cfg.get("tolerance", 0) > 0 and not maps_cfg.get("select", False):
        raise UserError("train.val_maps.tolerance widens selection on the maps' val IoU: it needs train.val_maps.select: true")
    return {"forms": saliency.get("counterfactual_forms", ["abs"]), "quantiles": saliency.get("quantiles"),
            "smooth_sigma": saliency.get("smooth_sigma", 0.0), "select": False, **maps_cfg}


def check_val_maps(cfg: dict, val, manifest: Path, saliency: dict | None = None) -> dict | None:
    """`val_maps_settings`, refused with a clear error where val has nothing to score the maps on."""
    settings = val_maps_settings(cfg, saliency)
    if settings is not None and (val.masks is None or not bool((val.labels == 1).any())):
        raise UserError(f"train.val_maps scores the maps against val masks, but the val split of {manifest} has "
                        f"{'no masks' if val.masks is None else 'no damaged crop'}: remove train.val_maps for this data set")
    return settings


def gan_step(g, d, opt_g, opt_d, x, y, cfg: dict, cycles: int, update_g: bool, compute: Compute,
             regularize: bool = True) -> dict:
    """One D update (eq. 1) and, when `update_g`, one G update (eq. 2-6). Returns the losses as
    0-d tensors (read them when logging: on a GPU every `.item()` waits for the device).
    `regularize`: this step pays `train.loss.r1` (lazily, as StyleGAN2 does: on every
    `train.r1_every`-th step, at that many times the weight; its double backward is D's dearest part).

    G runs once per step. On a G-update step that pass keeps its graph: D learns from the
    counterfactual (detached), then G's loss scores the same counterfactual through the updated D.
    (Until 2026-12-02 G ran a second time, without gradients, only for D: the same weights, another
    noise draw; dropping it saved a third of G's cost on those steps.)"""
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


def training_batch(train, idx, cfg: dict, rng, dev):
    """An augmented batch. Where crops have masks, a damaged crop whose defect the random crop
    or rotation moved entirely out of view is relabelled undamaged (it no longer shows one)."""
    x, y = train.batch(idx, dev)
    if train.masks is None:
        return augment(x, cfg["augment"], rng), y
    x, masks = augment(x, cfg["augment"], rng, masks=train.masks[idx])
    return x, torch.where(masks.flatten(1).any(1).to(y.device), y, torch.zeros_like(y))


def warm_up(g, d, opt_g, opt_d, train, cfg: dict, rng, compute: Compute, run: str) -> None:
    """`train.warmup` (off in the paper's configuration): optional warm starts for few-step runs.

    d_steps: D trained on real crops only, to their class (cross-entropy over its three logits, so
    it also learns that real crops are not fake): the adversarial loop then starts with a D that
    already tells damaged from undamaged, the signal G's counterfactuals need.
    g_steps: G trained to reproduce its input (the L1 term) while its head learns the class (the
    auxiliary term), with the loss weights of eq. 5: the loop then starts from a near-identity G
    whose head already knows the class it is to flip (the CNN UNet starts as the identity, so there
    it is the head that learns).
    Both use the loop's own optimizers and balanced, augmented batches."""
    warm = cfg.get("warmup", {})
    balance = cfg.get("balance", False)
    for who, steps in (("D", warm.get("d_steps", 0)), ("G", warm.get("g_steps", 0))):
        for _ in tqdm(range(steps), desc=f"{run} {who} warm-up", unit="step", disable=steps == 0):
            x, y = training_batch(train, batch_indices(train.labels, cfg["batch_size"], rng, balance), cfg, rng, compute.device)
            with compute.autocast():
                if who == "D":
                    loss, opt = F.cross_entropy(d(x).float(), y), opt_d
                else:
                    x_rec, logits = g(x)
                    loss = (cfg["loss"]["l1"] * (x - x_rec.float()).abs().mean()
                            + cfg["loss"]["auxiliary"] * F.cross_entropy(logits.float(), y))
                    opt = opt_g
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def train_gan(params: dict, manifest: Path, run: str, out_dir: Path, dataset: str | None = None) -> dict:
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
    start, log, keeper = 0, [], StepKeeper(select_on, tolerance)
    if resume_path.exists():
        state = load_checkpoint(resume_path)
        if state["params"] == params and state["run"] == run:
            g.load_state_dict(state["g"]); d.load_state_dict(state["d"])
            opt_g.load_state_dict(state["opt_g"]); opt_d.load_state_dict(state["opt_d"])
            rng.set_state(state["rng"]); torch.set_rng_state(state["torch_rng"])
            if dev.type == "cuda" and "cuda_rng" in state:  # G's noise and dropout draw from the device's generator there
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            start, log = state["step"], state["log"]
            # (a resume file written before 2026-12-04 holds its one kept step as "best")
            keeper = StepKeeper(select_on, tolerance, state["keeper"] if "keeper" in state else [state["best"]])
            print(f"resuming {run} from step {start}")
    g.train(); d.train()
    if start == 0:
        warm_up(g, d, opt_g, opt_d, train, cfg, rng, cx, run)
    decay = cfg.get("ema_g", 0)
    if hasattr(g, "last_mask"):
        g.last_mask = g.last_keep = None  # tensors of the warm-up's graph: deepcopy refuses those
    decay_d = cfg.get("ema_d", 0)  # D's average is updated after every D update, G's after every G update
    # the averages (None when off) are what validation, selection and the checkpoint see
    ema, ema_d = (averaged_copy(net) if rate > 0 else None for net, rate in ((g, decay), (d, decay_d)))
    for average, key in ((ema, "g_ema"), (ema_d, "d_ema")):
        if average is not None and start > 0:  # (start > 0: resumed, `state` read)
            average.load_state_dict(state[key])
    balance = cfg.get("balance", False)
    pending = []  # this interval's per-step losses, still tensors: read once, at the next validation
    for step in tqdm(range(start, cfg["steps"]), initial=start, total=cfg["steps"], desc=run, unit="step"):
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
            row.update(validate(shown, judge, val, params["evaluate"]["batch_size"], cx, seed))
            if maps_cfg:
                row.update(map_curve(shown, val, maps_cfg, params["evaluate"]["batch_size"], cx, seed))
            if pgd_cfg:
                row.update(pgd_curve(judge, attacked, params["evaluate"]["pgd"], pgd_cfg["step_sizes"],
                                     params["evaluate"]["batch_size"], cx, seed))
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
