"""`cfgan explain`: for a user's own images, the counterfactual, a saliency overlay, and the
class and fake probabilities of a trained run (PNG + JSON per image), and whether the image is
out of the run's depth (cfgan.ood: unlike its training data, so the explanation is not to be trusted)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from .compute import Compute, resolve  # noqa: E402
from .config import run_defect, split_seed  # noqa: E402
from .data.images import read_rgb  # noqa: E402
from .errors import UserError  # noqa: E402
from .maps import counterfactual_form, dihedral_mean, parse_candidate  # noqa: E402
from .io import atomic_path, write_text  # noqa: E402
from .ood import assess, outputs, signals  # noqa: E402
from .progress import progress as tqdm  # noqa: E402  (a bar on a terminal, plain lines in a log)
from .train.common import load_checkpoint  # noqa: E402
from .train.gan import load_gan  # noqa: E402


def _checkpoint(run: str) -> Path:
    path = Path(run)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise UserError(f"--run {run}: no checkpoint there (give a run folder such as results/synthetic/runs/"
                        f"cnn_unet-resnet3-c1-s0, or its checkpoint.pt)")
    return path


def checkpoints(runs: list[str]) -> list[Path]:
    """The checkpoints to explain with: one binary run; or the one-vs-rest runs of a multi-class
    data set, given one by one or as the configuration's name without `-k` (its sibling folders
    `<name>-k<class>-s<seed>` are then found)."""
    if len(runs) == 1 and not Path(runs[0]).exists():
        folder = Path(runs[0])
        head, seed = split_seed(folder.name)
        siblings = sorted(folder.parent.glob(f"{head}-k*-s{seed}")) if seed is not None and folder.parent.is_dir() else []
        if siblings:
            return [_checkpoint(str(p)) for p in siblings]
    return [_checkpoint(r) for r in runs]


def inputs(arrays: list[np.ndarray], size: int) -> torch.Tensor:
    """User images (HxWx3 uint8, any size) as the run's input: resized to its crop size, in [0, 1]."""
    return torch.stack([torch.from_numpy(np.array(Image.fromarray(a).resize((size, size), Image.BILINEAR))).permute(2, 0, 1)
                        for a in arrays]).float() / 255


def _model_outputs(g, d, ckpt, x: torch.Tensor, seed: int, cx: Compute, form: str = "abs") -> dict:
    z = torch.randn(len(x), g.noise_dim, generator=torch.Generator().manual_seed(seed))
    form, turns = parse_candidate(form)  # '<form>+turns<K>': G's output averaged over K turns (evaluate.saliency.turns)
    with torch.no_grad(), cx.autocast():
        x_cf, g_logits = g(x.to(cx.device), z.to(cx.device))
        if turns > 1:
            x_cf = dihedral_mean(lambda xt: g(xt, z.to(cx.device))[0], x.to(cx.device), turns)
        x_keep = (dihedral_mean(lambda xt: g(xt, z.to(cx.device), keep=True)[0], x.to(cx.device), turns).float().cpu()
                  if form.endswith("-keep") else None)
        o = outputs(g, d, x, seed, dev=cx.device)  # D's logits come from here: one D pass over the images, not two
    x_cf, g_logits = x_cf.float().cpu(), g_logits.float().cpu()
    values = signals(o, ckpt["summary"].get("ood"))
    return {"x_cf": x_cf, "g_probs": g_logits.softmax(1), "d_logits": o["d_logits"], "d_probs": o["d_logits"].softmax(1),
            "ood_values": values,
            "saliency": counterfactual_form(x, x_cf, form, x_keep).numpy()}


FORM_TITLES = {"abs": "|x - G(x)|", "dark": "darker than G(x)", "bright": "brighter than G(x)", "both": "|grey(x - G(x))|"}
FORM_TITLES.update({f"{k}-decast": f"{v}, cast removed" for k, v in list(FORM_TITLES.items())})
FORM_TITLES.update({f"{k}-keep": f"{v}, G(x, keep) for x" for k, v in list(FORM_TITLES.items())})


def _figure(x: torch.Tensor, cf: np.ndarray, saliency: np.ndarray, ood: bool | None, reasons: list[str], path: Path,
            title: str = "", form: str = "abs", map_title: str | None = None) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
    base, turns = parse_candidate(form)
    map_title = (map_title or FORM_TITLES[base]) + (f", mean of {turns} turns" if turns > 1 else "")
    for ax, im, name in zip(axes, (x.permute(1, 2, 0).numpy(), cf, None), ("input", "counterfactual", f"saliency: {map_title}")):
        if im is None:
            ax.imshow(x.permute(1, 2, 0).numpy())
            ax.imshow(np.clip(saliency, 0, None), cmap="magma", alpha=0.6)  # a signed form shows its positive side
        else:
            ax.imshow(im)
        ax.set_title(name, fontsize=8); ax.axis("off")
    head = [title] if title else []
    if ood:
        head.append("OUT OF DISTRIBUTION: unlike the run's training data; do not trust this explanation\n" + "; ".join(reasons))
    if head:
        fig.suptitle("\n".join(head), fontsize=7, color="firebrick" if ood else "black")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _as_uint8(x_cf: torch.Tensor) -> np.ndarray:
    return (x_cf.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


BATCH = 64  # images through the models at a time: a folder of photos need not fit in memory at once



def read_crops(images: list, size: int, progress: bool) -> tuple[list, torch.Tensor]:
    """Every photo's shape and its crop at `size`, all read before anything is written (a bad file
    stops the command with nothing half-done); keeps the crops only, not the photos."""
    shapes, x = [], []
    for path in tqdm(images, desc="read", unit="image", disable=not progress):
        array = read_rgb(path)
        shapes.append(array.shape)
        x.append(inputs([array], size))
    return shapes, torch.cat(x)


def output_files(images: list, out: Path, force: bool, tags=("",), names=None, also_writes=None) -> list[list[Path]]:
    """Each image's output files (counterfactual and saliency PNG per tag, then its JSON), refused
    where two images would share a name or, without `force`, where a file exists already."""
    targets, seen = [], {}
    for n, path in enumerate(images):
        stem = names[n] if names is not None else Path(path).stem
        if stem in seen:  # one image's outputs would silently replace the other's
            raise UserError(f"{seen[stem]} and {path} would both be written as {out / stem}*; explain them into separate --out folders")
        seen[stem] = path
        files = [out / f"{stem}{t}_{kind}.png" for t in tags for kind in ("counterfactual", "saliency")] + [out / f"{stem}.json"]
        clash = [str(f) for f in files + (also_writes(stem, list(tags)) if also_writes else []) if f.exists()]
        if clash and not force:
            raise UserError(f"{', '.join(clash)} already exist; pass --force to overwrite or choose another --out")
        targets.append(files)
    return targets

def explain(run: str | list[str], images: list[str], out: Path, force: bool = False, seed: int = 0,
            form: str = "abs", names: list[str] | None = None, also_writes=None, on_image=None,
            progress: bool = False) -> list[Path]:
    """One binary run, or the one-vs-rest runs of a multi-class data set (see `checkpoints`).
    `form`: the saliency map's form (cfgan.maps.COUNTERFACTUAL_FORMS; abs is the paper's
    |x - G(x)|; the saliency table's note names the form chosen on val for each run), with `+turns<K>` when
    that choice averaged G's output over K of the crop's flips and quarter turns (evaluate.saliency.turns).
    For a caller such as cfgan.report.gallery: `names`, each image's output name relative to `out` (default its
    stem); `also_writes(name, tags)`, the further files the caller will write for an image (checked for clashes
    with the others, before anything is written); `on_image(i, record, maps)` after each image's JSON, with
    the saliency map of each defect class (None for a binary run); `progress`, a progress bar."""
    try:
        base = parse_candidate(form)[0]
    except ValueError as e:
        raise UserError(f"--form {form}: {e}") from None
    ckpts = [load_checkpoint(p) for p in checkpoints([run] if isinstance(run, str) else list(run))]
    if any(ckpt.get("kind") == "posthoc" for ckpt in ckpts):  # `cfgan explain` hands these to explain_posthoc.py
        raise UserError(f"--run {run}: a post-hoc explainer (cfgan train-posthoc): explain image files with it "
                        f"(cfgan.explain_posthoc); a folder's gallery is not supported for it yet")
    cx = resolve(ckpts[0]["params"])  # the run's own compute block; CFGAN_DEVICE overrides its device
    models = [load_gan(ckpt, cx) for ckpt in ckpts]
    defects = [run_defect(ckpt["summary"]["run"]) for _, _, ckpt in models]
    multi = len(models) > 1
    if multi and None in defects:
        raise UserError(f"--run: several runs given, but {models[defects.index(None)][2]['summary']['run']} is not one "
                        f"defect class's run (-k<class> in its name)")
    if base.endswith("-keep") and not all(getattr(g, "keep_mode", False) for g, _, _ in models):
        raise UserError(f"--form {form}: reads G(x, keep), but the run's generator has no keep mode "
                        f"(generator.cnn_unet.keep_mode); choose a form without '-keep'")
    sizes = {ckpt["summary"]["image_size"] for _, _, ckpt in models}
    if len(sizes) > 1:
        raise UserError(f"--run: the runs were trained on different crop sizes {sorted(sizes)}")
    size = sizes.pop()
    shapes, x = read_crops(images, size, progress)
    tags = [f"_{k}" for k in defects] if multi else [""]
    targets = output_files(images, out, force, tags, names, also_writes)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (path, files) in enumerate(tqdm(list(zip(images, targets)), desc="explain", unit="image", disable=not progress)):
        if i % BATCH == 0:
            results = [_model_outputs(g, d, ckpt, x[i:i + BATCH], seed, cx, form) for g, d, ckpt in models]
        b = i % BATCH  # the image's place in its batch
        per_class, reasons_all, flags, maps = {}, [], [], {}
        for j, ((_, _, ckpt), res, defect) in enumerate(zip(models, results, defects)):
            cf_png, sal_png = files[2 * j], files[2 * j + 1]
            cf = _as_uint8(res["x_cf"][b])
            _save_png(cf, cf_png)
            ood, reasons = assess({k: v[b] for k, v in res["ood_values"].items()}, ckpt["summary"].get("ood"))
            reasons = [f"{defect}: {r}" for r in reasons] if multi else reasons
            reasons_all += reasons
            _figure(x[i], cf, res["saliency"][b], ood, reasons, sal_png, f"without {defect}" if multi else "", form)
            flags.append(ood)
            maps[defect] = res["saliency"][b]
            d_probs, g_probs, d_logits = res["d_probs"][b], res["g_probs"][b], res["d_logits"][b]
            real = d_logits[:2].softmax(0)  # from the logits: exact when D is sure the image is fake
            per_class[defect] = {
                "run": ckpt["summary"]["run"], "out_of_distribution": ood, "out_of_distribution_reasons": reasons,
                "ood_signals": {k: float(v[b]) for k, v in res["ood_values"].items()},
                "p_undamaged": float(real[0]), "p_damaged": float(real[1]), "p_fake": float(d_probs[2]),
                "log_odds_damaged": float(d_logits[1] - d_logits[0]),
                "d_probabilities_3class": {"real_undamaged": float(d_probs[0]), "real_damaged": float(d_probs[1]),
                                           "fake": float(d_probs[2])},
                "g_head_probabilities": {"undamaged": float(g_probs[0]), "damaged": float(g_probs[1])},
                "saliency_form": form, "saliency_mean": float(res["saliency"][b].mean()), "counterfactual": str(cf_png), "saliency_figure": str(sal_png),
            }
        record = {"image": str(path), "size": list(shapes[i][1::-1]), "resized_to": size}
        if multi:  # the multi-class decision of evaluate/multiclass.py: most confident D above even odds
            best = max(per_class, key=lambda k: per_class[k]["log_odds_damaged"])
            record.update({"runs": [c["run"] for c in per_class.values()],
                           "prediction": best if per_class[best]["log_odds_damaged"] > 0 else "undamaged",
                           "decision_rule": "the defect class whose D gives the largest log-odds of real-damaged over "
                                            "real-undamaged, when above 0; otherwise undamaged",
                           # flagged when any class's run finds the image unlike its training data
                           "out_of_distribution": True if any(flags) else None if None in flags else False,
                           "out_of_distribution_reasons": reasons_all,
                           "classes": per_class})
        else:
            one = per_class[None]
            record.update({"run": one.pop("run"), "out_of_distribution": one.pop("out_of_distribution"),
                           "out_of_distribution_reasons": one.pop("out_of_distribution_reasons"),
                           "prediction": "damaged" if one["p_damaged"] > one["p_undamaged"] else "undamaged"})
            one.pop("log_odds_damaged")
            record.update(one)
        write_text(files[-1], json.dumps(record, indent=2) + "\n")
        written += files
        if on_image is not None:
            on_image(i, record, maps)
    return written
