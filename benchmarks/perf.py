"""Performance figures of the pipeline on this machine, in one run.

    python benchmarks/perf.py            # full: the paper grid at 224 px + the tiny sizes
    python benchmarks/perf.py --quick    # CI: tiny sizes only
    python benchmarks/perf.py --pairing cnn_unet:resnet18 [--no-malloc-tuning]   # one 224 px step
    python benchmarks/perf.py --precision-race   # fp32 against the default precision, two sizes

Prints: (1) the fp32 and bf16 matmul peaks; (2) per generator x discriminator pairing, one
adversarial training step (D update + G update with the cycle loss) at the default precision
(`compute.precision: auto`): seconds, images/s, FLOP/s counted by torch.utils.flop_counter and
its fraction of the peak of that precision measured around that step; (3) data
loading throughput against what training consumes; (4) FID feature extraction, one run's FID
step and the PGD sweep against pytorch-fid's and torchattacks' own entry points on the same
images (ratio, same results); (5) no-op latency of `snakemake -n` and `dvc status` on a finished
tiny results tree, when one is given.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cfgan import cpu  # noqa: E402
from cfgan.compute import Compute, cpu_has_native_bf16, resolve  # noqa: E402
from cfgan.config import load_params  # noqa: E402
from cfgan.models import build_discriminator, build_generator  # noqa: E402
from cfgan.train.gan import gan_step, optimizers  # noqa: E402


def timed(fn, repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def race(ours, theirs, rounds: int = 3):
    """Best-of-`rounds` seconds of two functions run alternately (after one warm-up call each), so
    that a noisy neighbour or a cold cache does not favour the one that ran second; and the results
    of their warm-up calls, for checking that both computed the same."""
    results = ours(), theirs()
    a, b = [], []
    for _ in range(rounds):
        a.append(timed(ours, 1, warmup=0))
        b.append(timed(theirs, 1, warmup=0))
    return min(a), min(b), results


def matmul_peak(n: int = 2048, repeat: int = 10, precision: str = "fp32") -> float:
    """FLOP/s of the fastest of `repeat` n x n matmuls in fp32 or bf16: a peak, so the best run, not
    the mean (a mean on a shared machine would understate it and flatter the fractions of (2))."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best = min(timed(lambda: a @ b, 1, warmup=0) for _ in range(repeat))
    return 2 * n ** 3 / best


def bf16_peak_line() -> str:
    """The bf16 matmul peak, in words. Without native bf16 (AMX or AVX512-BF16) torch emulates bf16 products
    (~1 GFLOP/s on a 2-core AVX2 CPU: a 2048^3 product would take ~20 s), so there it is measured
    on a 512^3 product and labelled emulated: `auto` never picks it there."""
    if cpu_has_native_bf16() or torch.cuda.is_available():
        return f"bf16 matmul peak (2048^3): {matmul_peak(precision='bf16') / 1e9:.1f} GFLOP/s"
    return (f"bf16 matmul peak (512^3): {matmul_peak(512, 3, precision='bf16') / 1e9:.1f} GFLOP/s, emulated "
            f"(this CPU has no native bf16, neither AMX nor AVX512-BF16: compute.precision auto runs fp32 here)")


FP32 = Compute(torch.device("cpu"), "fp32", channels_last=False)  # the eager fp32 path every race compares against


def training_step(gname, dname, params, size, batch, compute: Compute):
    """One GAN step of the training loop's own code (D update, G update with one cycle) on random
    images, at `compute`'s precision and layout; a fresh seed-0 model each time."""
    torch.manual_seed(0)
    g = compute.prepare(build_generator(gname, params["generator"], size), "generator")
    d = compute.prepare(build_discriminator(dname, params["discriminator"], size, 3), "discriminator")
    x, y = torch.rand(batch, 3, size, size), torch.arange(batch) % 2
    opt_g, opt_d = optimizers(g, d, params["train"])
    return lambda: gan_step(g, d, opt_g, opt_d, x, y, params["train"], cycles=1, update_g=True, compute=compute)


def step_figures(gname, dname, params, size, batch, repeat, compute: Compute):
    step = training_step(gname, dname, params, size, batch, compute)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    seconds = timed(step, repeat, warmup=0)  # the counted step above was the warm-up
    return seconds, batch / seconds, flops / seconds


def step_row(label, g, d, params, size, batch, repeat, compute: Compute) -> float:
    """Print one row of (2) and return its fraction of the peak of the precision it ran at. The
    peak is measured right before and right after the step, and the higher of the two is used: on
    a shared machine the peak of a quiet moment minutes earlier says little about the cores this
    step actually had."""
    before = matmul_peak(precision=compute.precision)
    s, ips, fps = step_figures(g, d, params, size, batch, repeat, compute)
    peak = max(before, matmul_peak(precision=compute.precision))
    print(f"    {label:28s} {size:5d} {batch:5d} {compute.precision:>5s} {s:8.3f} {ips:7.2f} {fps / 1e9:8.1f} "
          f"{peak / 1e9:8.1f} {fps / peak:8.1%}", flush=True)
    return fps / peak


RACES = {  # label -> (generator, discriminator, profile overlay, size, batch)
    "48px b32": ("cnn_unet", "resnet3", "workflow/profiles/crackforest/params.yaml", 48, 32),  # the CrackForest profile's models
    "224px b4": ("cnn_unet", "resnet3", None, 224, 4),  # params.yaml's, the dearest pairing
}


def precision_race(rounds: int = 3) -> None:
    """`race <label>: fp32 X s/step, auto Y s/step, xR`: the eager fp32 path against the default
    precision (what `compute.precision: auto` resolves to here), the same step code and models,
    timed alternately, best of `rounds` after one warm-up step each."""
    for label, (gname, dname, overlay, size, batch) in RACES.items():
        params = load_params([ROOT / "params.yaml"] + ([ROOT / overlay] if overlay else []))
        auto = resolve(load_params([ROOT / "params.yaml"]))  # the default compute (a profile may pin its published one)
        fp32, best = race(training_step(gname, dname, params, size, batch, FP32),
                          training_step(gname, dname, params, size, batch, auto), rounds)[:2]
        print(race_line(label, fp32, best), flush=True)
        print(f"  (auto = {auto.summary()}; {gname} x {dname})", flush=True)


def race_line(label: str, fp32: float, auto: float) -> str:
    """The race's verdict alone on its line, as issue 22 reads it
    (`^race (48px b32|224px b4): fp32 \\d+\\.\\d{3} s/step, auto \\d+\\.\\d{3} s/step, x\\d+\\.\\d{2}$`): what ran
    goes on the next line."""
    return f"race {label}: fp32 {fp32:.3f} s/step, auto {auto:.3f} s/step, x{fp32 / auto:.2f}"


def serving(split, batch: int, augment_cfg: dict, repeat: int = 20) -> float:
    """Images/s of what the training loop does between steps: index the in-memory split, convert,
    augment."""
    from cfgan.data.augment import augment
    gen = torch.Generator().manual_seed(0)

    def one():
        idx = torch.randint(len(split), (batch,), generator=gen)
        x, _ = split.batch(idx)
        augment(x, augment_cfg, gen)
    return batch / timed(one, repeat)


def data_loading(manifest: Path, batch: int):
    """Decoding the tiny profile's crops once (the loop keeps them in memory), serving them, and
    serving 224 px crops as the paper grid's loop would (random pixels: only the sizes matter)."""
    from cfgan.data.datasets import Split, load_split
    start = time.perf_counter()
    split = load_split(manifest, "train")
    load_s = time.perf_counter() - start
    big = Split(torch.randint(0, 256, (128, 3, 224, 224), dtype=torch.uint8), torch.arange(128) % 2, None, [""] * 128)
    cfg = load_params([ROOT / "params.yaml"])["train"]["augment"]
    return len(split) / load_s, split.images.shape[-1], serving(split, batch, cfg), serving(big, batch, cfg, repeat=5)


def save_pngs(images: torch.Tensor, folder: Path) -> list[str]:
    """uint8 N x 3 x H x W images as PNG files, the input pytorch-fid's entry points read."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    files = [str(folder / f"{i}.png") for i in range(len(images))]
    for file, im in zip(files, images.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(im).save(file)
    return files


def fid_comparison(n: int, size: int, batch: int, rounds: int):
    """Our activations (tensors, batched) vs pytorch_fid.fid_score.get_activations on PNG files."""
    from pytorch_fid.fid_score import get_activations
    from cfgan.evaluate import fid
    net, _ = fid.inception(2048, None, allow_untrained=True)
    images = torch.rand(n, 3, size, size)
    with tempfile.TemporaryDirectory() as tmp:
        files = save_pngs((images * 255).round().byte(), Path(tmp))
        ours_s, theirs_s, (_, theirs) = race(lambda: fid.activations(net, images, batch),
                                             lambda: get_activations(files, net, batch, 2048, "cpu", 0), rounds)
    # the PNG round trip quantises to 8 bits: compare on the quantised images
    quantised = fid.activations(net, (images * 255).round() / 255, batch)
    return n / ours_s, n / theirs_s, float(np.abs(quantised - theirs).max())


def fid_step_comparison(n: int, size: int, batch: int, dims: int, rounds: int):
    """One run's FID step as the pipeline does it (real features cached once per data set by the
    fid-real step; one Inception pass over the counterfactuals; three subsets) vs the plain use of
    pytorch-fid: `calculate_fid_given_paths` on folders of PNGs, once per subset.
    The generator pass is the same on both sides and left out. `dims` 2048 is the paper's; the tiny
    profile's 64 keeps the matrix square roots (the same on both sides) from dominating."""
    from pytorch_fid.fid_score import calculate_fid_given_paths
    from cfgan.evaluate import fid
    gen = torch.Generator().manual_seed(1)
    real = (torch.rand(n, 3, size, size, generator=gen) * 255).round().byte()
    fake = (torch.rand(n, 3, size, size, generator=gen) * 255).round().byte()
    labels = (torch.arange(n) % 2).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        net, note = fid.inception(dims, None, allow_untrained=True)
        fid.save_features(tmp / "fid_real.npz", fid.activations(net, real.float() / 255, batch), labels, note, dims,
                          tmp / "manifest.csv")

        def ours():
            net, _ = fid.inception(dims, None, allow_untrained=True)
            cached, _, _ = fid.load_features(tmp / "fid_real.npz", dims, labels)
            return fid.fid_subsets(cached, fid.activations(net, fake.float() / 255, batch), labels)

        und, dam = labels == 0, labels == 1
        pairs = {"full": (real, fake), "und": (real[und], fake[dam]), "dam": (real[dam], fake[und])}
        for subset, (r, f) in pairs.items():  # the PNG folders pytorch-fid reads (writing them is not timed)
            save_pngs(r, tmp / subset / "real"), save_pngs(f, tmp / subset / "fake")

        def theirs():
            out = {}
            for subset in pairs:
                torch.manual_seed(0)  # the same untrained Inception as fid.inception builds
                with fid._local_weights(None, allow_untrained=True):
                    out[subset] = calculate_fid_given_paths([str(tmp / subset / "real"), str(tmp / subset / "fake")],
                                                            batch, "cpu", dims)
            return out

        ours_s, theirs_s, (a, b) = race(ours, theirs, rounds)
    rel = max(abs(a[k][0] - b[k]) / abs(b[k]) for k in pairs)
    return n / ours_s, n / theirs_s, rel


def pgd_comparison(n: int, size: int, steps: int, alpha: float, rounds: int, batch: int = 64):
    import torchattacks
    from cfgan.data.datasets import Split
    from cfgan.evaluate import robustness
    torch.manual_seed(0)
    model = build_discriminator("resnet3", {"resnet3": {"width": 16}, "swin": {"window_size": 7}}, size, 2).eval()
    images = (torch.rand(n, 3, size, size) * 255).round().byte()
    labels = torch.arange(n) % 2
    split = Split(images, labels, None, [str(i) for i in range(n)])
    cfg = {"pgd": {"steps": steps, "step_sizes": [alpha], "eps": None}, "noise": {"stds": []}}
    x = images.float() / 255
    atk = torchattacks.PGD(model, eps=alpha * steps, alpha=alpha, steps=steps, random_start=False)
    atk.set_mode_targeted_by_function(lambda im, lab: 1 - lab)

    def theirs():  # the attack, then the predictions an F1 needs, in the same batches as the sweep
        preds = []
        for start in range(0, n, batch):
            adversarial = atk(x[start:start + batch], labels[start:start + batch])
            with torch.no_grad():
                preds.append(model(adversarial).argmax(1))
        return torch.cat(preds)
    ours_s, theirs_s, _ = race(lambda: robustness.sweep(split, model, None, cfg, batch, 0), theirs, rounds)
    ours = robustness.pgd(model, x, labels, alpha, steps, None)
    same = torch.allclose(ours, atk(x, labels))
    return n / ours_s, n / theirs_s, same


def noop_latency(tree: Path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = {}
    for name, cmd in (("snakemake -n", [sys.executable, "-m", "snakemake", "--profile", "workflow/profiles/tiny", "-n", "all"]),
                      ("dvc status", [sys.executable, "-m", "dvc", "status", "workflow/profiles/tiny/dvc.yaml"])):
        start = time.perf_counter()
        subprocess.run(cmd, cwd=tree, env=env, capture_output=True)
        out[name] = time.perf_counter() - start
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes only (CI)")
    parser.add_argument("--tree", type=Path, help="a finished tiny results tree for the no-op latencies")
    parser.add_argument("--pairing", metavar="G:D", help="sections (1) and (2) only, with this one 224 px pairing, e.g. cnn_unet:resnet18")
    parser.add_argument("--precision-race", action="store_true",
                        help="only the fp32-against-auto race at 48 px (batch 32) and 224 px (batch 4)")
    parser.add_argument("--no-malloc-tuning", action="store_true",
                        help="measure without cfgan.cpu's allocator setting (the 'before' of benchmarks/README.md)")
    args = parser.parse_args()
    if args.no_malloc_tuning:
        os.environ["CFGAN_MALLOC_TUNING"] = "0"
    kept = cpu.tune()  # what every cfgan step does first
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"glibc keeps freed memory: {kept}")
    if args.precision_race:
        precision_race()
        return 0
    print(f"(1) fp32 matmul peak (2048^3): {matmul_peak() / 1e9:.1f} GFLOP/s; {bf16_peak_line()} "
          f"(measured again around each step of (2), at its precision: its 'peak' column)")

    paper = load_params([ROOT / "params.yaml"])
    tiny = load_params([ROOT / "params.yaml", ROOT / "workflow/profiles/tiny/params.yaml"])
    auto = resolve(paper)
    print(f"(2) one adversarial training step (D + G with one cycle) at the default precision: {auto.summary()}")
    print(f"    {'pairing':28s} {'size':>5s} {'batch':>5s} {'prec':>5s} {'s/step':>8s} {'img/s':>7s} {'GFLOP/s':>8s} {'peak':>8s} {'of peak':>8s}")
    cases = [(g, d, tiny, 32, 32, 5) for g in tiny["grid"]["generators"] for d in tiny["grid"]["discriminators"]]
    if not args.quick:
        # batch 4, one timed step: a 224 px step takes 10 to 60 s on a 2-core CPU
        cases += [(g, d, paper, 224, 4, 1) for g in paper["grid"]["generators"] for d in paper["grid"]["discriminators"]
                  if args.pairing in (None, f"{g}:{d}")]
    for g, d, params, size, batch, repeat in cases:
        frac = step_row(f"{g} x {d}", g, d, params, size, batch, repeat, auto)
        if (g, d, size) == ("cnn_unet", "resnet18", 224):
            print(f"    -> target: CNN UNet x ResNet18 at 224 px >= 35% of peak: {'met' if frac >= 0.35 else 'MISSED'}")
    if args.pairing:
        return 0
    if not args.quick:  # the eager fp32 path of the same step, for comparison
        step_row("cnn_unet x resnet18 fp32", "cnn_unet", "resnet18", paper, 224, 4, 1, FP32)

    manifest = ROOT / "data/processed/synthetic/manifest.csv"
    if manifest.exists():
        decode, size, served, served_224 = data_loading(manifest, 32)
        print(f"(3) data: decode {decode:.0f} crops/s once at start; batches served {served:.0f} img/s "
              f"({size} px), {served_224:.0f} img/s (224 px); training consumes the img/s of (2)")
    else:
        print("(3) data: skipped (run the tiny profile first: data/processed/synthetic/manifest.csv)")

    n, rounds = (32, 3) if args.quick else (128, 2)
    ours, theirs, diff = fid_comparison(n, 32, 32, rounds)
    print(f"(4) FID features, {n} images: ours {ours:.1f} img/s, pytorch-fid get_activations {theirs:.1f} img/s "
          f"(x{ours / theirs:.2f}); max |difference| {diff:.2e}")
    dims = 64 if args.quick else 2048
    ours, theirs, rel = fid_step_comparison(n, 32, 32, dims, rounds)
    print(f"    FID of one run (3 subsets, {dims} features), {n} test crops: ours {ours:.1f} crops/s, pytorch-fid "
          f"calculate_fid_given_paths per subset {theirs:.1f} crops/s (x{ours / theirs:.2f}); "
          f"max relative FID difference {rel:.1e}")
    ours, theirs, same = pgd_comparison(n, 32, 10, 0.004, rounds)
    print(f"    PGD (10 steps), {n} images: ours {ours:.1f} img/s, torchattacks.PGD {theirs:.1f} img/s "
          f"(x{ours / theirs:.2f}); identical adversarials: {same}")
    if args.tree:
        lat = noop_latency(args.tree)
        print("(5) no-op latency: " + ", ".join(f"{k} {v:.2f} s" for k, v in lat.items()) + " (target <= 3 s)")
    else:
        print("(5) no-op latency: skipped (pass --tree DIR of a finished tiny run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
