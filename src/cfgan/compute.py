"""Where the models run and at which precision: the `compute:` block of params.

`compute.device`: `auto` (a CUDA GPU when torch sees one, else the CPU), `cuda` or `cpu`; the
environment variable CFGAN_DEVICE overrides it. Asking for `cuda` where there is none is an error
that names what is missing, never a silent fall-back to the CPU (a paper-scale job would then run
for days and hit its time limit).

`compute.precision`: `auto` (bf16 on a CUDA GPU or on a CPU that computes bf16 natively, AMX or
AVX512-BF16; fp32 elsewhere), `bf16` or `fp32`. bf16 is `torch.autocast`: parameters, optimizer
state, batch-norm statistics and gradients stay fp32, the matrix products and convolutions run in bf16. Losses, the
saliency maps and their thresholds are computed in fp32 (the model outputs are cast back before
any of them), and the VQ codebook distances disable autocast (models/quantize.py).

`compute.channels_last`: `auto` puts models (and so their activations) channels-last with bf16 and
on a GPU: measured on a 2-core AMX CPU (benchmarks/README.md), one bf16 3x3 convolution ran 6.8x
faster channels-last than channels-first, while fp32 ran slower channels-last (CNN UNet x ResNet18
at 224 px: 36.3 vs 27.2 s per step). In fp32 on a CPU it depends on the models' width, so `auto`
leaves it off there and a profile of narrow models sets `true`: on a 2-core AVX2 CPU,
the width-16 CNN UNet x ResNet3 step ran x1.19 faster channels-last at 32 px on one thread and
x1.20 at 48 px on two, while params.yaml's width-64 models at 224 px ran x0.91 (slower).
"""

from __future__ import annotations

import functools
import os
import platform
import sys
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("auto", "bf16", "fp32")
ENV_DEVICE = "CFGAN_DEVICE"


def cpu_has_native_bf16() -> bool:
    """Whether the CPU computes bf16 products natively: AMX tiles (Intel Sapphire Rapids and later)
    or AVX512-BF16 dot products (Intel Cooper Lake, AMD Zen 4 and later). Either beats fp32 several
    times; without both (AVX2 only) torch emulates bf16, tens of times slower than fp32. Measured on
    2 cores (benchmarks/README.md): AMX Xeon, 2048^3 matmul 2,369 GFLOP/s bf16 vs 374 fp32; AMD Zen 5
    with AVX512-BF16 and no AMX, 767.5 vs 188.0 and the CrackForest GAN step x2.0-2.5."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    if all(probes):
        try:
            return any(probe() for probe in probes)
        except RuntimeError:
            pass
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.is_file() else ""
    return " amx_bf16" in flags or " avx512_bf16" in flags


@functools.lru_cache(maxsize=None)  # describe() asks on every checkpoint and table note; the CPU does not change
def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU in a few words, as checkpoints and table notes record it: its model name with family and
    model numbers from /proc/cpuinfo (`AMD EPYC (family 25, model 17)`: a virtual machine's name often hides
    the generation, the numbers do not), else what `platform` says. Why it is recorded: the same code, params
    and precision repeat their bits on one CPU but not across CPU generations (oneDNN picks other kernels),
    and a GAN turns those last bits into another run (docs/results.md: the NEU-Seg rerun on a Zen 4)."""
    fields: dict[str, str] = {}
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                if fields:
                    break  # the first processor's block is enough
                continue
            fields.setdefault(key.strip(), value.strip())
    name = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "cpu family" in fields and "model" in fields:
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def _cuda_missing() -> str:
    """Why torch sees no CUDA device, in words a user can act on."""
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is a CPU-only build: install a CUDA build of torch"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU: no GPU on this node, "
            f"or its driver is missing or older than CUDA {torch.version.cuda} needs (check `nvidia-smi`)")


@dataclass(frozen=True)
class Compute:
    device: torch.device
    precision: str          # "bf16" or "fp32": what `auto` resolved to
    channels_last: bool
    fp32_image_layers: bool | str = False  # compute.fp32_image_layers: False, True (every model) or a ROLES name

    def autocast(self):
        """The context every forward pass runs in (training and inference alike)."""
        if self.precision != "bf16":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def prepare(self, model: torch.nn.Module, role: str | None = None) -> torch.nn.Module:
        """Move to the device, channels-last where that is the faster layout; under bf16 with
        `compute.fp32_image_layers` (true, or this model's `role`, one of ROLES), the layers that read
        the image keep reading it in fp32."""
        model = model.to(self.device)
        if self.precision == "bf16" and self.fp32_image_layers in (True, role):
            image_layers_in_fp32(model)
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def describe(self) -> dict:
        """What checkpoints and tables record: device (with the GPU's name and CUDA version, or the CPU's model), precision, threads,
        and under bf16 which models' image layers ran in fp32."""
        out = {"device": str(self.device), "precision": self.precision, "channels_last": self.channels_last,
               "threads": torch.get_num_threads()}
        if self.device.type == "cpu":
            out["cpu"] = cpu_model()
        if self.precision == "bf16":  # which models' image layers ran in fp32 (false, true, or a ROLES name)
            out["fp32_image_layers"] = self.fp32_image_layers
        if self.device.type == "cuda":
            index = self.device.index or 0
            out.update(gpu=torch.cuda.get_device_name(index), cuda=str(torch.version.cuda),
                       capability=".".join(map(str, torch.cuda.get_device_capability(index))),
                       deterministic=torch.are_deterministic_algorithms_enabled())
        return out

    def summary(self) -> str:
        """One line for logs and table notes."""
        info = self.describe()
        where = f"{info['device']} ({info['gpu']}, CUDA {info['cuda']})" if "gpu" in info else f"{info['device']}, {info['cpu']}"
        kind = info.get("fp32_image_layers", False)  # set under bf16 only
        layers = {True: ", image layers in fp32", False: ""}.get(kind, f", {kind}'s image layers in fp32")
        return f"{where}, {self.precision}{layers}{', channels-last' if self.channels_last else ''}, {info['threads']} threads"


ENV_DETERMINISTIC = "CFGAN_DETERMINISTIC"


def deterministic_cuda() -> bool:
    """On a GPU, the settings that make a rerun (and a resumed run) repeat its numbers where
    PyTorch can: deterministic algorithms (warn_only: an op without a deterministic kernel warns
    once and runs anyway, e.g. the backward of some upsampling and scatter ops), no cuDNN
    autotuning (benchmark=False: the fastest kernel may differ between runs), cuDNN's
    deterministic kernels, and a fixed cuBLAS workspace (CUBLAS_WORKSPACE_CONFIG, read when cuBLAS
    starts: so set here, before any model runs). What stays only statistically reproducible:
    docs/clusters.md. CFGAN_DETERMINISTIC=0 skips them (faster; reruns then differ in the last bits).
    Returns whether they were applied."""
    if os.environ.get(ENV_DETERMINISTIC, "1") == "0":
        return False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return True


IMAGE_CHANNELS = 3
# compute.fp32_image_layers can name one kind of model: "discriminator" (D and its plain twin: the
# classifiers, which must see a counterfactual's small changes) or "generator" (G and the segmenters).
ROLES = ("discriminator", "generator")


def image_layers_in_fp32(model: torch.nn.Module) -> torch.nn.Module:
    """`compute.fp32_image_layers` (off by default): run every convolution of `model` that reads the
    RGB image with autocast off, in fp32.

    Why: bf16 keeps 8 significant bits, so an image value in [0.5, 1) is rounded to a step of
    1/256, and a counterfactual that changes pixels by less than that reaches D's first convolution
    unchanged. In every model (`true`; CrackForest val, three seeds, 400 steps) D's F1
    rose above fp32's but G changed images three times as much and the maps fell (0.177 against
    0.271 in fp32). In D (and its twin) only (`discriminator`) the published CrackForest
    configuration at 400 steps, five seeds, matches fp32 on every val measure within one fp32 sd
    (maps 0.367 against 0.372, plain bf16 0.346; D's F1 0.779 against 0.776, plain bf16 0.735),
    but at 1,200 steps, where plain bf16 matches fp32, its maps were 0.016 below plain bf16's (three
    seeds, each lower; benchmarks/README.md): hence off by default, the setting for short runs. The layers are cheap
    (3 input channels); state dicts are unchanged (only `forward` is wrapped)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == IMAGE_CHANNELS and not hasattr(module, "_cfgan_fp32"):
            module._cfgan_fp32 = True
            module.forward = _fp32_forward(module.forward)
    return model


def _fp32_forward(forward):
    def wrapped(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return forward(x.float())
    return wrapped


@functools.cache  # once per process
def warn_emulated_bf16() -> None:
    """Once per process, on stderr: bf16 asked for on a CPU without native bf16 (AMX or AVX512-BF16). There
    torch emulates bf16 products with conversions (measured on a 2-core AMD EPYC with
    AVX2 only: a 1024 x 1024 matmul at 0.9 GFLOP/s in bf16 against 52 in fp32), so a run is tens of
    times slower than at fp32. A warning, not an error: bf16 may be wanted to repeat a bf16
    machine's numbers."""
    print("WARNING compute.precision: bf16 on a CPU without native bf16 (no AMX, no AVX512-BF16): torch emulates it, "
          "tens of times slower than fp32; set compute.precision to auto or fp32 unless you need bf16's numbers",
          file=sys.stderr)


def resolve(params: dict | None) -> Compute:
    """The Compute of a step's params (`compute.device`, `compute.precision`; both `auto` when absent)."""
    cfg = (params or {}).get("compute", {}) or {}
    wanted = os.environ.get(ENV_DEVICE) or cfg.get("device", "auto")
    source = ENV_DEVICE if os.environ.get(ENV_DEVICE) else "compute.device"
    if wanted not in DEVICES:
        raise UserError(f"{source} is {wanted!r}; allowed values: {', '.join(DEVICES)}")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{source} is 'cuda', but there is no CUDA device: {_cuda_missing()}. "
                        f"Run on a GPU node, or set {source} to cpu or auto")
    device = torch.device("cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()) else "cpu")
    if device.type == "cuda":
        deterministic_cuda()
    precision = cfg.get("precision", "auto")
    if precision not in PRECISIONS:
        raise UserError(f"compute.precision is {precision!r}; allowed values: {', '.join(PRECISIONS)}")
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "fp32"
    elif precision == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        warn_emulated_bf16()
    layout = cfg.get("channels_last", "auto")
    if layout not in ("auto", True, False):
        raise UserError(f"compute.channels_last is {layout!r}; allowed values: auto, true, false")
    image_layers = cfg.get("fp32_image_layers", False)
    if image_layers not in (False, True, *ROLES):
        raise UserError(f"compute.fp32_image_layers is {image_layers!r}; allowed values: false, true, {', '.join(ROLES)}")
    return Compute(device, precision, channels_last=(precision == "bf16" or device.type == "cuda") if layout == "auto" else layout,
                   fp32_image_layers=image_layers)
