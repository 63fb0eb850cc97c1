"""`cfgan explain` with a post-hoc explainer (train/posthoc.py, after Charachon et al.): for a user's images, the
adversarial image Ga(x) as the counterfactual, the map |Gs(x) - Ga(x)| over the image, and the explained
classifier's probabilities on x, on Ga(x) (did it flip?) and on Gs(x) (did it keep its call?), as PNG + JSON per
image, the files named as `cfgan explain` names them.

Out of distribution: only the colour-statistics distance can be computed (calibrated on the explainer's val
crops, as cfgan.ood calibrates it). The GAN runs' other three signals need what a post-hoc explainer lacks: a
discriminator's fake probability, an auxiliary head to disagree with, a discriminator's features (a TorchScript
classifier's inner layers are not reachable)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .compute import resolve
from .errors import UserError
from .explain import BATCH, _as_uint8, _figure, _save_png, checkpoints, output_files, read_crops
from .io import write_text
from .maps import counterfactual_form, parse_candidate
from .ood import assess
from .progress import progress as tqdm
from .train.common import load_checkpoint
from .train.posthoc import colour_distance, load_posthoc, pair

NOT_COMPUTABLE = {"p_fake": "no discriminator", "disagreement": "no auxiliary head",
                  "feature_distance": "the classifier's features are not read (a TorchScript file's layers are not reachable)"}
MAP_TITLE = "|Gs(x) - Ga(x)|"


def is_posthoc(runs: list[str]) -> bool:
    """Whether `--run` names one post-hoc explainer's run (its checkpoint's kind, read memory-mapped: no tensor is
    read). Anything unreadable is left to `explain`, which names the problem."""
    if len(runs) != 1 or not Path(runs[0]).exists():
        return False
    try:
        [path] = checkpoints(runs)
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return False
    return isinstance(ckpt, dict) and ckpt.get("kind") == "posthoc"


def explain_posthoc(run: str, images: list[str], out: Path, force: bool = False, form: str = "abs",
                    classifier: str | None = None, progress: bool = False) -> list[Path]:
    """As `cfgan.explain.explain` for one post-hoc explainer's run (its folder or checkpoint.pt). `form`: a map form of
    cfgan.maps, read with Gs(x) in place of x (`abs`: Charachon et al.'s |Gs(x) - Ga(x)|), `+turns<K>` as there.
    `classifier`: the file of the user's classifier, where it is now (checked against the recorded sha256)."""
    try:
        base, turns = parse_candidate(form)
    except ValueError as e:
        raise UserError(f"--form {form}: {e}") from None
    keep_form = base if base.endswith("-keep") else f"{base}-keep"
    [path] = checkpoints([run])
    ckpt = load_checkpoint(path)
    cx = resolve(ckpt["params"])
    explainer, c, ckpt = load_posthoc(ckpt, cx, classifier)
    s = ckpt["summary"]
    size = s["image_size"]
    shapes, x = read_crops(images, size, progress)
    targets = output_files(images, out, force)
    out.mkdir(parents=True, exist_ok=True)
    calibration = s.get("ood")
    written = []
    for i, (path, files) in enumerate(tqdm(list(zip(images, targets)), desc="explain", unit="image", disable=not progress)):
        if i % BATCH == 0:
            xb = x[i:i + BATCH]
            with torch.no_grad(), cx.autocast():
                x_s, x_a = pair(explainer, xb.to(cx.device), turns)
                probs = [c(v.to(cx.device)).float().softmax(1).cpu() for v in (xb, x_s, x_a)]
            x_s, x_a = x_s.cpu(), x_a.cpu()
            maps = counterfactual_form(xb, x_a, keep_form, x_s).numpy()
            colour = colour_distance(xb, calibration) if calibration else None
        b = i % BATCH
        cf_png, sal_png, json_path = files
        cf = _as_uint8(x_a[b])
        _save_png(cf, cf_png)
        ood, reasons = assess({"colour_distance": float(colour[b])} if colour is not None else {}, calibration)
        _figure(x[i], cf, maps[b], ood, reasons, sal_png, f"post-hoc explainer of {s['classifier']}", keep_form, MAP_TITLE)
        p, p_s, p_a = (q[b] for q in probs)
        call = int(p.argmax())
        record = {"image": str(path), "size": list(shapes[i][1::-1]), "resized_to": size, "run": s["run"],
                  "explainer": "post-hoc (Charachon et al.): the counterfactual is Ga(x), the map Gs(x) - Ga(x)",
                  "classifier": s["classifier"],
                  "prediction": "damaged" if call == 1 else "undamaged",
                  "p_undamaged": float(p[0]), "p_damaged": float(p[1]),
                  "counterfactual_p_damaged": float(p_a[1]), "counterfactual_flips_the_call": int(p_a.argmax()) != call,
                  "similar_p_damaged": float(p_s[1]), "similar_keeps_the_call": int(p_s.argmax()) == call,
                  "out_of_distribution": ood, "out_of_distribution_reasons": reasons,
                  "ood_signals": {"colour_distance": float(colour[b])} if colour is not None else {},
                  "ood_not_computable": NOT_COMPUTABLE,
                  "saliency_form": keep_form + (f"+turns{turns}" if turns > 1 else ""), "saliency_mean": float(maps[b].mean()),
                  "counterfactual": str(cf_png), "saliency_figure": str(sal_png)}
        write_text(json_path, json.dumps(record, indent=2) + "\n")
        written += files
    return written
