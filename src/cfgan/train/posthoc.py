"""A post-hoc explainer of a frozen classifier C, after Charachon et al. (ICPR 2020, arXiv 2012.07332;
the paper's reference [9], refined in its [8]): not the paper's method, a baseline row of Table 5.

Two generators close to the input: a *similar* one, Gs(x), that C must still classify as it
classifies x, and an *adversarial* one, Ga(x), that C must classify the other way. Their difference
|Gs(x) - Ga(x)| is the explanation: what Ga changes beyond what Gs needs to redraw x, one forward pass
at test time. As in Charachon et al.'s code (SAGen), `posthoc.shared: true` makes them one CNN UNet
with two output heads (shared encoder and decoder); `false` two UNets. The targets are C's decisions,
not the labels: the explainer explains C, right or wrong.

Losses (weights `posthoc.loss`): cross-entropy of C(Gs(x)) against C's decision on x (`similar`), of
C(Ga(x)) against the other class (`adversarial`), and `l1` * (|Gs(x) - x|_1 + |Ga(x) - x|_1) (their
reconstruction terms, as our eq. 4). The UNets run with z = 0 (no noise: one map per image) and their
auxiliary heads unused. Training machinery as the GAN's: batches of augmented crops (`train.augment`; their
geometric augmentations) balanced between the crops C calls undamaged and damaged, the step kept on val,
resume from `resume.pt`.

Selection on val, from labels only by default: the mean of Gs's keep rate and Ga's flip rate (both
against C's val decisions); steps whose map is nearly empty are kept last. `posthoc.val_maps: true`
selects on the maps' val IoU instead (it reads the val masks; every table row then says so).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..compute import Compute, resolve
from ..config import deep_merge
from ..data.datasets import load_split
from ..errors import UserError
from ..maps import candidate_name, counterfactual_form, dihedral_mean, parse_candidate, smooth
from ..metrics import choose_form, choose_threshold
from ..models import build_generator
from ..models.external import AnyDefect, rebuild_user, sha256, user_classifier
from ..ood import ALPHA
from .batches import training_batch
from .baselines import load_baseline
from .common import as_checkpoint, batch_indices, load_checkpoint, read_losses, rebuilds, save_checkpoint, save_run, seed_everything
from .selection import IDENTITY_CHANGE


class Explainer(nn.Module):
    """x -> (Gs(x), Ga(x)), both in [0, 1], residuals of x (identity at the start)."""

    def __init__(self, generator_cfg: dict, image_size: int, shared: bool = True):
        super().__init__()
        cfg = deep_merge(generator_cfg, {"cnn_unet": {"output": "residual", "keep_mode": False}})
        self.shared = shared
        if shared:
            self.unet = build_generator("cnn_unet", cfg, image_size)
            self.to_adversarial = nn.Conv2d(self.unet.to_image.in_channels, 3, 1)
            nn.init.zeros_(self.to_adversarial.weight)
            nn.init.zeros_(self.to_adversarial.bias)
            self.noise_dim = self.unet.noise_dim
        else:
            self.similar, self.adversarial = (build_generator("cnn_unet", cfg, image_size) for _ in range(2))
            self.noise_dim = self.similar.noise_dim

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.zeros(len(x), self.noise_dim, device=x.device, dtype=x.dtype)
        if not self.shared:
            return self.similar(x, z)[0], self.adversarial(x, z)[0]
        h, _ = self.unet.decode(x, z)
        return (x + torch.tanh(self.unet.to_image(h))).clamp(0, 1), (x + torch.tanh(self.to_adversarial(h))).clamp(0, 1)


# --- the classifier it explains --------------------------------------------------------------------

def classifier_for(params: dict, checkpoint: str | Path | None) -> tuple[nn.Module, dict]:
    """(C as a frozen 2-logit module, the record a checkpoint keeps of it): a plain twin's checkpoint, or
    (None) the user's classifier of `posthoc.classifier`."""
    if checkpoint is not None:
        record = twin_record(checkpoint)
        return rebuild(record), record
    spec = params["posthoc"].get("classifier")
    if not spec:
        raise UserError("--classifier-spec: params hold no posthoc.classifier (e.g. {kind: torchscript, path: model.pt, "
                        "input_size: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225], damaged_index: 1}; "
                        "docs/own-data.md)")
    return user_classifier(spec)


def twin_record(checkpoint: str | Path) -> dict:
    """What a post-hoc checkpoint keeps of a plain twin: its weights, summary and architecture params."""
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") != "baseline":
        raise UserError(f"--classifier {checkpoint}: a {ckpt.get('kind')!r} checkpoint; the post-hoc explainer explains a "
                        f"plain twin (written by cfgan train-baseline), or your own classifier (--classifier-spec)")
    disc = {**ckpt["params"]["discriminator"], "weights": {}}  # the weights come from the state dict, not ImageNet files
    return {"kind": "twin", "file": str(checkpoint), "sha256": sha256(checkpoint), "run": ckpt["summary"]["run"],
            "summary": ckpt["summary"], "discriminator": disc, "model": ckpt["model"]}


def rebuild(record: dict, path: str | Path | None = None) -> nn.Module:
    """The classifier a post-hoc checkpoint's record names (frozen, eval mode): a twin from the weights inside it
    (seen as binary: damaged = any defect class); a user's from its file (models/external.py)."""
    if record["kind"] != "twin":
        return rebuild_user(record, path)
    model, _ = load_baseline({"summary": record["summary"], "params": {"discriminator": record["discriminator"]},
                              "model": record["model"], "file": record.get("file", "(twin)")})
    return AnyDefect(model).eval().requires_grad_(False)


def run_name(record: dict, seed: int) -> str:
    """`posthoc-<backbone>-s<seed>` for a twin (its row beside the twin's); `posthoc-own_<file stem>-s<seed>` otherwise."""
    if record["kind"] == "twin":
        return f"posthoc-{record['summary']['backbone']}-s{seed}"
    stem = re.sub(r"[^A-Za-z0-9_.]+", "_", Path(record.get("path") or record["weights"]).stem)
    return f"posthoc-own_{stem}-s{seed}"


@torch.no_grad()
def decisions(classifier: nn.Module, split, batch_size: int, compute: Compute) -> torch.Tensor:
    """C's class (0 undamaged, 1 damaged) of every crop of a split."""
    out = []
    for start in range(0, len(split), batch_size):
        x, _ = split.batch(torch.arange(start, min(start + batch_size, len(split))), compute.device)
        with compute.autocast():
            out.append(classifier(x).float().argmax(1).cpu())
    return torch.cat(out)


# --- one step -----------------------------------------------------------------------------------

def explainer_step(explainer, classifier, opt, x: torch.Tensor, loss: dict, compute: Compute) -> dict:
    """One update of the explainer against frozen C (losses as 0-d tensors)."""
    with torch.no_grad(), compute.autocast():
        decision = classifier(x).float().argmax(1)
    with compute.autocast():
        x_s, x_a = explainer(x)
        keep = F.cross_entropy(classifier(x_s).float(), decision)
        flip = F.cross_entropy(classifier(x_a).float(), 1 - decision)
    close = (x_s.float() - x).abs().mean() + (x_a.float() - x).abs().mean()
    total = loss["similar"] * keep + loss["adversarial"] * flip + loss["l1"] * close
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    return {"loss": total.detach(), "loss_similar": keep.detach(), "loss_adversarial": flip.detach(), "loss_l1": close.detach()}


# --- validation and the maps ----------------------------------------------------------------------

def pair(explainer, x: torch.Tensor, turns: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Gs(x) and Ga(x) in fp32, one pass of the explainer per turn; `turns` > 1: each the mean over that many of
    the crop's flips and quarter turns (`evaluate.saliency.turns`, maps.dihedral_mean)."""
    both = dihedral_mean(lambda xt: torch.cat(explainer(xt), 1), x, turns).float()
    return both[:, :3], both[:, 3:]


def map_candidates(forms) -> list[str]:
    """The post-hoc candidates of `evaluate.saliency.counterfactual_forms` x `turns`: each form read against Gs(x)
    in place of x (the `-keep` forms), so `abs` gives Charachon et al.'s |Gs(x) - Ga(x)|."""
    return [name if form.endswith("-keep") else candidate_name(f"{form}-keep", turns)
            for name in forms for form, turns in [parse_candidate(name)]]


@torch.no_grad()
def explainer_maps(explainer, split, batch_size: int, compute: Compute, sigma: float = 0.0,
                   names=("abs-keep",)) -> dict[str, np.ndarray]:
    """{candidate: N x H x W fp32 maps} of the explainer in eval mode (candidates as `map_candidates` names them)."""
    was_training = explainer.training
    explainer.eval()
    by_turns: dict[int, list[tuple[str, str]]] = {}
    for name in names:
        form, turns = parse_candidate(name)
        by_turns.setdefault(turns, []).append((name, form))
    parts: dict[str, list] = {name: [] for name in names}
    for start in range(0, len(split), batch_size):
        x, _ = split.batch(torch.arange(start, min(start + batch_size, len(split))), compute.device)
        for turns, group in by_turns.items():
            with compute.autocast():
                x_s, x_a = pair(explainer, x, turns)
            for name, form in group:
                parts[name].append(smooth(counterfactual_form(x, x_a, form, x_s), sigma).cpu().numpy())
    explainer.train(was_training)
    return {name: np.concatenate(p) for name, p in parts.items()}


@torch.no_grad()
def validate(explainer, classifier, val, decided: torch.Tensor, batch_size: int, compute: Compute) -> dict:
    """Gs's keep rate and Ga's flip rate against C's val decisions, their mean (the label-free score), and
    how much each changes the crops (explainer in eval mode; its mode is restored)."""
    was_training = explainer.training
    explainer.eval()
    sums = dict.fromkeys(("val_keep", "val_flip", "val_change_similar", "val_change_adversarial", "val_map_mean"), 0.0)
    for start in range(0, len(val), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(val)))
        x, _ = val.batch(idx, compute.device)
        d = decided[idx].to(compute.device)
        with compute.autocast():
            x_s, x_a = pair(explainer, x)
            keep, flip = (classifier(v).float().argmax(1) for v in (x_s, x_a))
        per_crop = lambda t: float(t.flatten(1).mean(1).sum())  # noqa: E731
        sums["val_keep"] += float((keep == d).sum()); sums["val_flip"] += float((flip != d).sum())
        sums["val_change_similar"] += per_crop((x_s - x).abs()); sums["val_change_adversarial"] += per_crop((x_a - x).abs())
        sums["val_map_mean"] += per_crop((x_s - x_a).abs())
    explainer.train(was_training)
    row = {k: v / len(val) for k, v in sums.items()}
    row["val_score"] = (row["val_keep"] + row["val_flip"]) / 2
    return row


def map_iou(explainer, val, cfg: dict, batch_size: int, compute: Compute) -> dict:
    """`posthoc.val_maps`: the best candidate's mean IoU on the damaged val crops, threshold chosen on them."""
    damaged = val.subset(torch.nonzero(val.labels == 1).flatten())
    maps = explainer_maps(explainer, damaged, batch_size, compute, cfg["smooth_sigma"], cfg["forms"])
    masks = damaged.masks.numpy()
    form = choose_form(maps, masks, cfg["quantiles"])
    return {"val_map_iou": choose_threshold(maps[form], masks, cfg["quantiles"])[1], "val_map_form": form}


def collapse_signs(row: dict) -> list[str]:
    signs = []
    if row["val_map_mean"] < IDENTITY_CHANGE:
        signs.append(f"the map is nearly empty (mean |Gs(x) - Ga(x)| {row['val_map_mean'] * 255:.2f} grey levels)")
    if row["val_flip"] == 0:
        signs.append("Ga flips no val crop's decision")
    return signs


# --- out-of-distribution: what can be computed without a discriminator ------------------------------

def colour(x: torch.Tensor) -> torch.Tensor:
    x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
    return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


def colour_distance(x: torch.Tensor, calibration: dict) -> np.ndarray:
    mean, std = torch.as_tensor(calibration["colour_mean"]), torch.as_tensor(calibration["colour_std"])
    return ((colour(x) - mean) / std).pow(2).mean(1).sqrt().double().numpy()


def calibrate_colour(train, val, alpha: float = ALPHA) -> dict:
    """cfgan.ood's colour-statistics distance, fitted on the train crops, thresholded at the (1 - alpha) quantile
    of the val crops: the one OOD signal of the GAN runs that needs neither D nor G's head."""
    v = colour(train.images.cpu())
    cal = {"alpha": alpha, "n_val": len(val), "n_train": len(train), "colour_mean": v.mean(0),
           "colour_std": v.std(0).clamp_min(1e-3 * float(v.std(0).mean()) + 1e-12), "quantile": 1 - alpha}
    cal["thresholds"] = {"colour_distance": float(np.quantile(colour_distance(val.images.cpu(), cal), 1 - alpha, method="higher"))}
    return cal


# --- the loop ------------------------------------------------------------------------------------

def val_maps_settings(cfg: dict, params: dict, val) -> dict | None:
    if not cfg.get("val_maps", False):
        return None
    if val.masks is None or not bool((val.labels == 1).any()):
        raise UserError("posthoc.val_maps: selection on the maps' val IoU needs val crops with masks, and a damaged one")
    s = params["evaluate"]["saliency"]
    return {"forms": map_candidates(s.get("counterfactual_forms", ["abs"])), "quantiles": s["quantiles"],
            "smooth_sigma": s["smooth_sigma"]}


def train_posthoc(params: dict, manifest: Path, out_dir: Path, seed: int = 0, classifier: str | Path | None = None) -> dict:
    """Train the explainer of a frozen classifier (a plain twin's checkpoint, or None: `posthoc.classifier`)
    and write checkpoint.pt and log.csv into `out_dir`."""
    cfg = params["posthoc"]
    model, record = classifier_for(params, classifier)  # every way the classifier is wrong fails here, before training
    rng = seed_everything(seed)
    name = run_name(record, seed)
    cx = resolve(params)
    dev, bs = cx.device, params["evaluate"]["batch_size"]
    train, val = load_split(manifest, "train").to(dev), load_split(manifest, "val")
    maps_cfg = val_maps_settings(cfg, params, val)
    select_on = "val_map_iou" if maps_cfg else "val_score"
    size = train.images.shape[-1]
    c = cx.prepare(model, "discriminator").eval().requires_grad_(False)
    explainer = cx.prepare(Explainer(params["generator"], size, cfg.get("shared", True)), "generator")
    opt = torch.optim.Adam(explainer.parameters(), lr=cfg["lr"], betas=(0.5, 0.999))  # pix2pix's betas, as train.betas
    steps = cfg.get("steps") or params["baseline"]["steps"]  # absent or null: as long as the twin trained
    decided = decisions(c, val, bs, cx)
    # batches hold crops C calls undamaged and damaged in equal numbers (their code's "together" batches), from
    # C's calls on the crops as they are; the targets themselves are C's calls on the augmented batch
    balance_on = decisions(c, train, bs, cx)
    resume_path = out_dir / "resume.pt"
    state = _resume(resume_path, params, record, seed, explainer, opt, rng)
    start, log, best = (state["step"], state["log"], state["best"]) if state else (0, [], None)
    augment_cfg = {"augment": params["train"]["augment"]}
    val_every = params["train"]["val_every"]
    explainer.train()
    pending = []
    for step in tqdm(range(start, steps), initial=start, total=steps, desc=name, unit="step"):
        x, _ = training_batch(train, batch_indices(balance_on, cfg["batch_size"], rng, True), augment_cfg, rng, dev)
        pending.append({"step": step + 1, **explainer_step(explainer, c, opt, x, cfg["loss"], cx)})
        last = step + 1 == steps
        if (step + 1) % val_every == 0 or last:
            pending = read_losses(pending)
            row = pending[-1]
            log, pending = log + pending, []
            row.update(validate(explainer, c, val, decided, bs, cx))
            if maps_cfg:
                row.update(map_iou(explainer, val, maps_cfg, bs, cx))
            key = (not collapse_signs(row), row[select_on])
            if best is None or key > tuple(best["key"]):
                best = {"key": key, "step": step + 1, "row": dict(row), "state": copy.deepcopy(explainer.state_dict())}
            if not last:
                save_checkpoint(resume_path, {"params": params, "classifier": _fingerprint(record), "seed": seed, "step": step + 1,
                                              "explainer": explainer.state_dict(), "opt": opt.state_dict(),
                                              "rng": rng.get_state(), "torch_rng": torch.get_rng_state(),
                                              **({"cuda_rng": torch.cuda.get_rng_state_all()} if dev.type == "cuda" else {}),
                                              "log": log, "best": best})
    collapse = collapse_signs(best["row"])
    for sign in collapse:
        print(f"WARNING {name}: at its selected step {best['step']}: {sign}")
    summary = {"run": name, "method": "posthoc", "seed": seed, "classifier": _describe(record), "shared": cfg.get("shared", True),
               "best_step": best["step"], "val_score": best["row"]["val_score"], "selected_on": select_on,
               "val": {k: v for k, v in best["row"].items() if k.startswith("val_") and k != "val_map_form"},
               "collapse": collapse, "image_size": size, "steps": steps,
               "ood": calibrate_colour(train, val)}
    if maps_cfg:  # not "val_maps": that key's note names train.val_maps.select (evaluate/run.py)
        summary["posthoc_val_maps"] = {"selected_on": "val_map_iou", "form": best["row"]["val_map_form"]}
    save_run(out_dir, {"kind": "posthoc", "explainer": best["state"], "classifier": record, "params": params,
                       "summary": summary}, log, cx)
    resume_path.unlink(missing_ok=True)
    return summary


def _fingerprint(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("model", "summary")}


def _describe(record: dict) -> str:
    if record["kind"] == "twin":
        return f"plain twin {record['run']} ({record['file']})"
    return f"{record['kind']} {record.get('arch', '')} {record.get('path') or record['weights']}".replace("  ", " ")


def _resume(path: Path, params: dict, record: dict, seed: int, explainer, opt, rng) -> dict | None:
    """A killed run's state (None: start afresh, also when resume.pt was written for other params, another
    classifier or seed)."""
    if not path.exists():
        return None
    state = load_checkpoint(path)
    if state["params"] != params or state["classifier"] != _fingerprint(record) or state["seed"] != seed:
        return None
    explainer.load_state_dict(state["explainer"]); opt.load_state_dict(state["opt"])
    rng.set_state(state["rng"]); torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and "cuda_rng" in state:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    print(f"resuming the post-hoc explainer from step {state['step']}")
    return state


@rebuilds
def load_posthoc(source, compute: Compute | None = None, classifier: str | Path | None = None):
    """(explainer, C, checkpoint), in eval mode, on `compute`'s device (None: the CPU). `classifier`: the user's
    classifier file, where it moved since training (a twin's weights are inside the checkpoint)."""
    ckpt = as_checkpoint(source)
    s = ckpt["summary"]
    explainer = Explainer(ckpt["params"]["generator"], s["image_size"], s.get("shared", True))
    explainer.load_state_dict(ckpt["explainer"])
    c = rebuild(ckpt["classifier"], classifier)
    if compute is not None:
        explainer, c = compute.prepare(explainer, "generator"), compute.prepare(c, "discriminator")
    return explainer.eval(), c.eval(), ckpt


# --- the saliency step's row (evaluate/run.py) ------------------------------------------------------

def saliency_method(ckpt: dict, compute: Compute, cfg: dict, batch_size: int):
    """For `cfgan saliency` on a post-hoc checkpoint: the method ("posthoc", make(split, candidates) -> {candidate:
    maps}, candidates), its classifier, and the note its rows carry. The candidates are
    `evaluate.saliency.counterfactual_forms` x `turns` read against Gs(x) (`map_candidates`), chosen on val as
    every row's form, blurred by `smooth_sigma` as the counterfactual maps are."""
    explainer, c, ckpt = load_posthoc(ckpt, compute)
    s = ckpt["summary"]
    names = map_candidates([candidate_name(f, k) for k in cfg.get("turns", [1]) for f in cfg.get("counterfactual_forms", ["abs"])])
    make = lambda split, forms: explainer_maps(explainer, split, batch_size, compute, cfg["smooth_sigma"], forms)  # noqa: E731
    rule = ("the maps' val IoU (val masks read: posthoc.val_maps)" if s["selected_on"] == "val_map_iou"
            else "Ga's flip and Gs's keep rate on val (no labels)")
    note = (f"; post-hoc explainer (Charachon et al.; not the paper's method) of {s['classifier']}: map Gs(x) - Ga(x) "
            f"(the '-keep' forms read Gs(x) in place of x; cost: one pass of the explainer per crop and turn), "
            f"step {s['best_step']} selected on {rule}"
            + (f"; maps blurred with a {cfg['smooth_sigma']} px Gaussian" if cfg["smooth_sigma"] > 0 else ""))
    return ("posthoc", make, names), c, note


def classifier_rows(classifier, test, batch_size: int, compute: Compute, note: str) -> list[dict]:
    """Accuracy, F1, ... of the explained classifier's calls on the test crops: table 5's classifier columns."""
    from ..metrics import binary_metrics
    predicted = decisions(classifier, test, batch_size, compute).numpy()
    return [{"model": "posthoc", "metric": k, "condition": "test", "value": v, "note": note}
            for k, v in binary_metrics(test.labels.numpy(), predicted).items()]
