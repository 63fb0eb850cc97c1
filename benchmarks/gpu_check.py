"""The prepared first look on a GPU (issue 24, item 7): at most 5 minutes on one H200.

A later session with a GPU runs, from the repository root (the `run` tool of this workplace):

    here, once:  python -m pip download jsonschema==4.26.0 --only-binary=:all: --python-version 3.12 \\
                     --platform manylinux2014_x86_64 -d benchmarks/wheels     # git-ignored
    run(command="python3 -m pip install -q --no-deps --no-index benchmarks/wheels/jsonschema-*.whl "
                "benchmarks/wheels/jsonschema_specifications-*.whl benchmarks/wheels/referencing-*.whl "
                "benchmarks/wheels/rpds_py-*.whl && PYTHONPATH=src python3 benchmarks/gpu_check.py --out $OUT/gpu.json",
        carry=["benchmarks/wheels"], timeout_s=420)

The device machine (torch 2.11, Python 3.12, timm, pandas, scipy, matplotlib, seaborn, tqdm, pyyaml)
lacks jsonschema (cfgan's params validation: hence the four wheels), snakemake, dvc, grad-cam,
torchattacks and pytorch-fid; nothing here imports those, and the CLI steps below are those that run
without them (no fid, no robustness, no Grad-CAM saliency). Without the wheels the CLI section is
skipped with that reason and the rest still runs.

What it writes (`--out`, JSON): `env` (torch, CUDA, cuDNN, GPU, driver, bf16 support, cfgan version,
which optional packages are there); `pairings`: per paper pairing (generator x discriminator), 50
adversarial training steps (D + G with one cycle, the loop's own `gan_step` and on-device
augmentation) at 224 px, batch 32, `compute.precision: auto`, timed with torch.cuda.synchronize,
with FLOPs of one step counted (torch.utils.flop_counter) and the host syncs of the timed steps
counted by torch.cuda.set_sync_debug_mode("warn"); `cli`: the tiny profile's steps through `cfgan`
commands with CFGAN_DEVICE=cuda (synthetic, split, crop, train, train-baseline, train-segmenter,
classify (a GAN run and a twin), uncertainty, saliency of a segmenter, explain; a GAN run's saliency
step also draws Grad-CAM maps, which need grad-cam), each with its wall time,
return code and `compute` line. `--budget-s` stops starting new pairings once spent.

`--dry`: the same code on the CPU at toy sizes (32 px, 2 steps, tiny widths), with the packages the
device machine lacks made unimportable for the CLI steps; under a minute (CI: tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import cfgan  # noqa: E402
from cfgan import cpu  # noqa: E402
from cfgan.compute import Compute  # noqa: E402
from cfgan.data.augment import augment  # noqa: E402
from cfgan.models import build_discriminator, build_generator  # noqa: E402
from cfgan.train.gan import gan_step, optimizers  # noqa: E402

ABSENT_THERE = ["snakemake", "dvc", "pytorch_grad_cam", "torchattacks", "pytorch_fid"]  # not on the device machine
OPTIONAL = ["jsonschema", "timm", *ABSENT_THERE]
PAPER_GRID = {"generators": ["cnn_unet", "swin_unet"],
              "discriminators": ["resnet3", "resnet18", "resnet50", "swin_small", "hybrid"]}
# --dry: the toy widths of tests/test_models.py
TOY_GEN = {"noise_dim": 4, "noise_channels": 1, "dropout": 0.5,
           "cnn_unet": {"width": 8, "depth": 2, "upsample": "resize", "padding": "reflect"},
           "swin_unet": {"encoder": "swin_tiny_patch4_window7_224", "window_size": 2, "encoder_weights": None,
                         "codebook_size": 16, "decoder_depth": 1}}
TOY_DIS = {"resnet3": {"width": 8}, "swin": {"window_size": 2}}
# --dry on a 2-core CI machine: the CNN UNet and the Swin UNet (with its VQ layer); a Swin D takes
# 10-20 s a step there. tests/test_compute.py steps all ten pairings at 32 px already.
DRY_PAIRINGS = ["cnn_unet:resnet3", "swin_unet:resnet3"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cfgan": cfgan.__version__, "device": str(device), "cpu_threads": torch.get_num_threads(),
           "packages": {name: importlib.util.find_spec(name) is not None for name in OPTIONAL}}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                   multiprocessors=props.multi_processor_count, bf16=torch.cuda.is_bf16_supported())
        smi = shutil.which("nvidia-smi")
        if smi:
            out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True)
            env["driver"] = out.stdout.strip() or out.stderr.strip()
    else:
        env.update(gpu=None, bf16=None, driver=None)
    return env


def pairing(gname: str, dname: str, gcfg: dict, dcfg: dict, train_cfg: dict, size: int, batch: int, steps: int,
            cx: Compute, warmup: int = 2) -> dict:
    from torch.utils.flop_counter import FlopCounterMode
    torch.manual_seed(0)
    g = cx.prepare(build_generator(gname, gcfg, size), "generator")
    d = cx.prepare(build_discriminator(dname, dcfg, size, 3), "discriminator")
    opt_g, opt_d = optimizers(g, d, train_cfg)
    x = torch.rand(batch, 3, size, size, device=cx.device)
    y = (torch.arange(batch, device=cx.device) % 2)
    gen = torch.Generator().manual_seed(0)

    def step(update_g: bool = True):
        xa = augment(x, train_cfg["augment"], gen)
        return gan_step(g, d, opt_g, opt_d, xa, y, train_cfg, cycles=1, update_g=update_g, compute=cx)

    for _ in range(warmup):  # kernel selection, allocator
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    if cx.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.set_sync_debug_mode("warn")
    sync(cx.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        for _ in range(steps):
            losses = step()  # every step with a G update: the dearer kind (params.yaml updates G every 2nd)
        sync(cx.device)
        seconds = (time.perf_counter() - start) / steps
    if cx.device.type == "cuda":
        torch.cuda.set_sync_debug_mode(0)
    syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
    out = {"pairing": f"{gname}:{dname}", "size": size, "batch": batch, "steps": steps, "precision": cx.precision,
           "s_per_step": seconds, "img_per_s": batch / seconds, "gflop_per_image_step": flops / batch / 1e9,
           "tflop_per_s": flops / seconds / 1e12, "sync_warnings": len(syncs), "sync_warnings_per_step": len(syncs) / steps,
           "sync_examples": sorted(set(syncs))[:5],
           "losses_finite": all(bool(torch.isfinite(v)) for v in losses.values())}
    if cx.device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    del g, d, opt_g, opt_d
    if cx.device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def cli_env(device: str, blocker: Path | None = None) -> dict:
    """The cfgan steps' environment: src first, then the caller's PYTHONPATH (where wheels carried
    to the device machine are installed with `pip install --target`: dropping it loses jsonschema);
    `blocker` (dry runs) goes before both, one thread."""
    paths = [str(ROOT / "src")] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = {**os.environ, "CFGAN_DEVICE": device, "PYTHONPATH": os.pathsep.join(([str(blocker)] if blocker else []) + paths)}
    if blocker:
        env["OMP_NUM_THREADS"] = "1"
    return env


def _blocker(folder: Path) -> Path:
    """Stub packages that fail to import, first on PYTHONPATH: the device machine's missing ones."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ABSENT_THERE:
        (folder / f"{name}.py").write_text(f"raise ImportError('{name} is not on the device machine (gpu_check --dry)')\n")
    return folder


def cli_steps(work: Path, dry: bool, device: str) -> list[dict]:
    """The tiny profile's model-free and model steps through `cfgan`, on `device`."""
    (work / "overlay.yaml").write_text(
        "train: {steps: %d, val_every: %d, batch_size: %d}\nbaseline: {steps: %d}\nsegmenter: {steps: %d}\n"
        "datasets:\n  synthetic:\n    source: {kind: synthetic, n_sources: %d, size: 96, damaged_fraction: 0.7}\n"
        % ((2, 2, 8, 2, 2, 12) if dry else (100, 50, 32, 100, 100, 60)))
    shutil.copy2(ROOT / "params.yaml", work / "params.yaml")
    shutil.copy2(ROOT / "workflow/profiles/tiny/params.yaml", work / "tiny.yaml")
    p = ["--params", "params.yaml", "tiny.yaml", "overlay.yaml"]
    m = ["--manifest", "data/processed/synthetic/manifest.csv", "--dataset", "synthetic"]
    run, seg = "cnn_unet-resnet3-c1-s0", "cnn_unet-s0"
    steps = [
        ("synthetic", ["synthetic", *p, "--dataset", "synthetic", "--out", "data/raw/synthetic"]),
        ("split", ["split", *p, "--index", "data/raw/synthetic/index.csv", "--out", "data/interim/synthetic/split.csv"]),
        ("crop", ["crop", *p, "--dataset", "synthetic", "--split-index", "data/interim/synthetic/split.csv", "--out", "data/processed/synthetic"]),
        ("train", ["train", *p, *m, "--run", run, "--out", f"results/synthetic/base/runs/{run}"]),
        ("train-baseline", ["train-baseline", *p, m[0], m[1], "--backbone", "resnet3", "--seed", "0", "--out", "results/synthetic/base/baselines/resnet3-s0"]),
        ("train-segmenter", ["train-segmenter", *p, m[0], m[1], "--arch", "cnn_unet", "--seed", "0", "--out", f"results/synthetic/base/segmenters/{seg}"]),
        ("classify", ["classify", *p, *m, "--checkpoint", f"results/synthetic/base/runs/{run}/checkpoint.pt", "--out", "eval/classify.csv"]),
        ("classify-baseline", ["classify", *p, *m, "--checkpoint", "results/synthetic/base/baselines/resnet3-s0/checkpoint.pt", "--out", "eval/classify_b.csv"]),
        ("uncertainty", ["uncertainty", *p, *m, "--checkpoint", f"results/synthetic/base/runs/{run}/checkpoint.pt", "--out", "eval/uncertainty.csv"]),
        ("saliency-segmenter", ["saliency", *p, *m, "--checkpoint", f"results/synthetic/base/segmenters/{seg}/checkpoint.pt",
                                "--out", "eval/saliency_seg.csv", "--examples", "eval/saliency_seg.npz"]),
    ]
    env = cli_env(device, _blocker(work / "blocked") if dry else None)
    out = []
    for name, args in steps:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "cfgan.cli", *args], cwd=work, env=env, capture_output=True, text=True)
        line = next((ln for ln in proc.stderr.splitlines() if ": compute " in ln), None)
        out.append({"step": name, "rc": proc.returncode, "wall_s": time.perf_counter() - start, "compute": line,
                    "tail": None if proc.returncode == 0 else proc.stderr[-1500:]})
        if proc.returncode != 0 and name in ("synthetic", "split", "crop", "train"):
            break  # the rest needs these
    crops = sorted((work / "data/processed/synthetic").rglob("*.png"))[:2]
    if crops and (work / f"results/synthetic/base/runs/{run}/checkpoint.pt").exists():
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "cfgan.cli", "explain", "--run", f"results/synthetic/base/runs/{run}",
                               *map(str, crops), "--out", "explanations"], cwd=work, env=env, capture_output=True, text=True)
        out.append({"step": "explain", "rc": proc.returncode, "wall_s": time.perf_counter() - start, "compute": None,
                    "tail": None if proc.returncode == 0 else proc.stderr[-1500:]})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--dry", action="store_true", help="CPU, toy sizes (CI)")
    parser.add_argument("--steps", type=int, help="timed steps per pairing (50; --dry 2)")
    parser.add_argument("--budget-s", type=float, default=240, help="start no new pairing after this many seconds")
    parser.add_argument("--no-cli", action="store_true", help="skip the cfgan command steps")
    parser.add_argument("--pairings", help="comma-separated G:D (default: all ten; --dry: " + ",".join(DRY_PAIRINGS) + ")")
    args = parser.parse_args()
    cpu.tune()
    t0 = time.perf_counter()
    if args.dry:
        device, size, batch, steps = torch.device("cpu"), 32, 4, args.steps or 2
        gcfg, dcfg = TOY_GEN, TOY_DIS
        precision = "fp32"
    else:
        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device (use --dry on a CPU)", file=sys.stderr)
            return 2
        device, size, batch, steps = torch.device("cuda"), 224, 32, args.steps or 50
        import yaml
        paper = yaml.safe_load((ROOT / "params.yaml").read_text())  # no jsonschema needed for this part
        gcfg, dcfg = paper["generator"], paper["discriminator"]
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        from cfgan.compute import deterministic_cuda
        deterministic_cuda()  # what every cuda step does
    import yaml
    train_cfg = yaml.safe_load((ROOT / "params.yaml").read_text())["train"]
    cx = Compute(device, precision, channels_last=precision == "bf16" or device.type == "cuda")
    report = {"mode": "dry" if args.dry else "gpu", "env": environment(device), "pairings": [], "cli": None}
    wanted = args.pairings.split(",") if args.pairings else DRY_PAIRINGS if args.dry else \
        [f"{g}:{d}" for g in PAPER_GRID["generators"] for d in PAPER_GRID["discriminators"]]
    for name in wanted:
        g, d = name.split(":")
        if time.perf_counter() - t0 > args.budget_s:
            report["pairings"].append({"pairing": name, "skipped": f"budget of {args.budget_s:g} s spent"})
            continue
        try:
            row = pairing(g, d, gcfg, dcfg, train_cfg, size, batch, steps, cx, warmup=1 if args.dry else 2)
        except Exception as exc:  # noqa: BLE001 - a report, not a test: record and go on
            row = {"pairing": name, "error": f"{type(exc).__name__}: {exc}"[:1500]}
        report["pairings"].append(row)
        print(json.dumps(row), flush=True)
    if args.no_cli:
        report["cli"] = {"skipped": "--no-cli"}
    elif importlib.util.find_spec("jsonschema") is None:
        report["cli"] = {"skipped": "jsonschema is missing (cfgan validates params with it): carry its wheels, see the top of this file"}
    else:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
            report["cli"] = cli_steps(Path(work), args.dry, device.type)
    report["wall_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"gpu_check: wrote {args.out} in {report['wall_s']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
