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

from .data.images import read_rgb  # noqa: E402
from .errors import UserError  # noqa: E402
from .io import atomic_path, write_text  # noqa: E402
from .ood import assess, outputs, signals  # noqa: E402
from .train.gan import load_gan  # noqa: E402


def _checkpoint(run: str) -> Path:
    path = Path(run)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise UserError(f"--run {run}: no checkpoint there (give a run folder such as results/synthetic/runs/"
                        f"cnn_unet-resnet3-c1, or its checkpoint.pt)")
    return path


def inputs(arrays: list[np.ndarray], size: int) -> torch.Tensor:
    """User images (HxWx3 uint8, any size) as the run's input: resized to its crop size, in [0, 1]."""
    return torch.stack([torch.from_numpy(np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))).permute(2, 0, 1)
                        for a in arrays]).float() / 255


def explain(run: str, images: list[str], out: Path, force: bool = False, seed: int = 0) -> list[Path]:
    g, d, ckpt = load_gan(_checkpoint(run))
    size = ckpt["summary"]["image_size"]
    arrays = [read_rgb(p) for p in images]  # reads all first: a bad file stops before anything is written
    targets = []
    for path in images:
        stem = Path(path).stem
        files = [out / f"{stem}_counterfactual.png", out / f"{stem}_saliency.png", out / f"{stem}.json"]
        clash = [str(f) for f in files if f.exists()]
        if clash and not force:
            raise UserError(f"{', '.join(clash)} already exist; pass --force to overwrite or choose another --out")
        targets.append(files)
    out.mkdir(parents=True, exist_ok=True)
    x = inputs(arrays, size)
    z = torch.randn(len(x), g.noise_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        x_cf, g_logits = g(x, z)
        d_probs = d(x).softmax(1)
    values = signals(outputs(g, d, x, seed), ckpt["summary"].get("ood"))
    written = []
    for i, (path, (cf_png, sal_png, js)) in enumerate(zip(images, targets)):
        cf = (x_cf[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        with atomic_path(cf_png) as tmp:
            Image.fromarray(cf).save(tmp, format="PNG")
        saliency = (x[i] - x_cf[i]).abs().mean(0).numpy()
        ood, reasons = assess({k: v[i] for k, v in values.items()}, ckpt["summary"].get("ood"))
        fig, axes = plt.subplots(1, 3, figsize=(7.5, 2.8))
        for ax, im, title in zip(axes, (x[i].permute(1, 2, 0).numpy(), cf, None), ("input", "counterfactual", "saliency |x - G(x)|")):
            if im is None:
                ax.imshow(x[i].permute(1, 2, 0).numpy())
                ax.imshow(saliency, cmap="magma", alpha=0.6)
            else:
                ax.imshow(im)
            ax.set_title(title, fontsize=8); ax.axis("off")
        if ood:
            fig.suptitle("OUT OF DISTRIBUTION: unlike the run's training data; do not trust this explanation\n"
                         + "; ".join(reasons), fontsize=7, color="firebrick")
        with atomic_path(sal_png) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
        plt.close(fig)
        real = d_probs[i, :2] / d_probs[i, :2].sum()
        record = {
            "image": str(path), "run": ckpt["summary"]["run"], "size": list(arrays[i].shape[1::-1]), "resized_to": size,
            "out_of_distribution": ood, "out_of_distribution_reasons": reasons,
            "ood_signals": {k: float(v[i]) for k, v in values.items()},
            "prediction": "damaged" if real[1] > real[0] else "undamaged",
            "p_undamaged": float(real[0]), "p_damaged": float(real[1]),
            "p_fake": float(d_probs[i, 2]),
            "d_probabilities_3class": {"real_undamaged": float(d_probs[i, 0]), "real_damaged": float(d_probs[i, 1]),
                                       "fake": float(d_probs[i, 2])},
            "g_head_probabilities": {"undamaged": float(g_logits[i].softmax(0)[0]), "damaged": float(g_logits[i].softmax(0)[1])},
            "saliency_mean": float(saliency.mean()), "counterfactual": str(cf_png), "saliency_figure": str(sal_png),
        }
        write_text(js, json.dumps(record, indent=2) + "\n")
        written += [cf_png, sal_png, js]
    return written
