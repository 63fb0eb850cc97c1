"""How often `cfgan explain` flags an image as out of distribution, per kind of image.

For a trained run: its own test crops (should be flagged at about the chosen false-alarm rate,
cfgan.ood.ALPHA), photos of another domain (apples; should be near 1), blank images, and the run's
own source images at another scale (whole images resized to the crop size). Images go through
exactly what `cfgan explain` does (cfgan.explain.inputs, the run's stored calibration).

    python benchmarks/ood.py --run results/synthetic/base/runs/cnn_unet-resnet3-c1-s0 \\
        --manifest data/processed/synthetic/manifest.csv --foreign ../shared/data/apples \\
        --raw data/raw/synthetic/images
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
import torch

from cfgan.data.datasets import load_split
from cfgan.data.images import list_images, read_rgb
from cfgan.explain import inputs
from cfgan.ood import ALPHA, assess, calibrate_run, outputs, signals
from cfgan.train.gan import load_gan


def images_in(folder: Path, limit: int, rng: random.Random) -> list[Path]:
    files = sorted(p for d in [folder, *sorted(q for q in folder.rglob("*") if q.is_dir())] for p in list_images(d))
    return sorted(rng.sample(files, min(limit, len(files))))


def flagged(g, d, calibration, x: torch.Tensor, seed: int = 0) -> tuple[float, dict[str, float]]:
    """The fraction flagged (as `cfgan explain` decides), and by each signal alone."""
    values = signals(outputs(g, d, x, seed), calibration)
    flags = [assess({k: v[i] for k, v in values.items()}, calibration)[0] for i in range(len(x))]
    return float(np.mean(flags)), {k: float(np.mean(values[k] > t)) for k, t in calibration["thresholds"].items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--foreign", type=Path, nargs="*", default=[], help="folders of another domain's photos")
    parser.add_argument("--raw", type=Path, help="the data set's whole source images (another scale)")
    parser.add_argument("--limit", type=int, default=300, help="images per set (seeded sample)")
    parser.add_argument("--recalibrate", action="store_true",
                        help="calibrate again from the manifest's train and val splits with this code (as training would)")
    args = parser.parse_args()
    rng = random.Random(0)
    g, d, ckpt = load_gan(args.run / "checkpoint.pt" if args.run.is_dir() else args.run)
    calibration, size = ckpt["summary"].get("ood"), ckpt["summary"]["image_size"]
    if args.recalibrate:
        calibration = calibrate_run(g, d, ckpt, load_split(args.manifest, "train"), load_split(args.manifest, "val"),
                                    ckpt["params"]["seed"], "cpu")
    if not calibration:
        print(f"{args.run}: no calibration in this checkpoint (trained before cfgan.ood)", file=sys.stderr)
        return 1
    print(f"run {ckpt['summary']['run']}: thresholds {calibration['thresholds']} "
          f"({100 * calibration['quantile']:.1f}th percentiles of {calibration['n_val']} val crops; alpha {ALPHA})")
    sets = {"own test crops": load_split(args.manifest, "test").images.float() / 255}
    for folder in args.foreign:
        sets[f"{folder.name} photos"] = inputs([read_rgb(p) for p in images_in(folder, args.limit, rng)], size)
    levels = np.linspace(0, 255, 9).astype(np.uint8)
    blanks = [np.full((size, size, 3), v, np.uint8) for v in levels]
    blanks += [np.full((size, size, 3), c, np.uint8) for c in ([255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 64, 0])]
    sets["blank images"] = inputs(blanks, size)
    if args.raw:
        sets["whole source images (another scale)"] = inputs([read_rgb(p) for p in images_in(args.raw, args.limit, rng)], size)
    names = list(calibration["thresholds"])
    print(f"\n| images | n | flagged out of distribution | " + " | ".join(f"by {n}" for n in names) + " |")
    print("|---|---:|---:|" + "---:|" * len(names))
    for name, x in sets.items():
        rate, per = flagged(g, d, calibration, x)
        print(f"| {name} | {len(x)} | {rate:.3f} | " + " | ".join(f"{per[n]:.3f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
