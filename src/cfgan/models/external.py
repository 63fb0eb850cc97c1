"""A classifier that is not ours to train, as the post-hoc explainer (train/posthoc.py) sees it: a module
taking N x 3 x S x S images in [0, 1] and returning 2 logits (undamaged, damaged).

Three kinds, each described by a plain dict (`posthoc.classifier` in params, and what a post-hoc
checkpoint records):
- `twin`: a plain twin written by `cfgan train-baseline` (its weights travel inside the explainer's
  checkpoint, so the pipeline's explainers stand on their own; read in train/posthoc.py, above this layer);
- `torchscript`: a user's TorchScript file (`torch.jit.save`), referenced by path and sha256;
- `timm`: a timm architecture with a local state-dict file (`.pt`/`.pth`, read with weights_only, or
  `.safetensors`), referenced the same way.
The user's kinds add `input_size` (the classifier's own input side; images are resized to it),
`mean`/`std` (its normalisation, per channel) and `damaged_index` (which output is the damaged class).
Outputs: one logit is read as damaged against 0; K >= 2 as the damaged logit against the log-sum-exp
of the others (for K = 2 exactly the other logit).
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

KINDS = ("twin", "torchscript", "timm")
PROBES = 2  # images in the probe that checks a user's classifier before anything is trained or written


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class TwoLogits(nn.Module):
    """[0, 1] images -> (undamaged, damaged) logits of a classifier with its own input size and normalisation."""

    def __init__(self, model: nn.Module, input_size: int | None = None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                 damaged_index: int = 1):
        super().__init__()
        self.model, self.input_size, self.damaged_index = model, input_size, damaged_index
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_size is not None and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        out = self.model((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))
        return binary_logits(out, self.damaged_index)


def binary_logits(out: torch.Tensor, damaged_index: int) -> torch.Tensor:
    """(undamaged, damaged) logits of N x K outputs (see the module's docstring)."""
    if out.shape[1] == 1:
        return torch.cat([torch.zeros_like(out), out], dim=1)
    others = torch.cat([out[:, :damaged_index], out[:, damaged_index + 1:]], dim=1)
    return torch.stack([others.logsumexp(1), out[:, damaged_index]], dim=1)


class AnyDefect(nn.Module):
    """A multi-class plain twin (undamaged + K defect classes) as one binary classifier: damaged = any defect
    class (the log-sum-exp of their logits) against undamaged."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        return out if out.shape[1] == 2 else torch.stack([out[:, 0], out[:, 1:].logsumexp(1)], dim=1)


# --- a user's classifier ------------------------------------------------------------------------

def _file(spec: dict, key: str, where: str) -> Path:
    if not spec.get(key):
        raise UserError(f"{where}.{key}: missing (the file of your classifier)")
    path = Path(spec[key])
    if not path.is_file():
        raise UserError(f"{where}.{key}: {path} not found")
    if path.stat().st_size == 0:
        raise UserError(f"{where}.{key}: {path} is empty (0 bytes)")
    return path


def _is_torchscript(path: Path) -> bool:
    """Whether the file is a TorchScript archive (a zip with code/ and constants.pkl), read without running it."""
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any("/code/" in n or n.startswith("code/") for n in names) and any(n.endswith("constants.pkl") for n in names)


def _torchscript(path: Path, where: str) -> nn.Module:
    if not _is_torchscript(path):
        raise UserError(f"{where}: {path} is not a TorchScript file (torch.jit.save writes a zip archive with code/ "
                        f"inside; this file is not one). Save your model with torch.jit.save(torch.jit.script(model), ...) "
                        f"or torch.jit.trace")
    try:
        with warnings.catch_warnings():  # torch 2.14 calls TorchScript deprecated, but loads it: not the user's business here
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError and others for archives it cannot read
        raise UserError(f"{where}: {path} could not be loaded as TorchScript ({exc.__class__.__name__}: "
                        f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else 'no detail'})") from None


def _timm(spec: dict, path: Path, where: str) -> nn.Module:
    import timm
    if not spec.get("arch"):
        raise UserError(f"{where}.arch: missing (the timm architecture, e.g. resnet18)")
    try:
        model = timm.create_model(spec["arch"], pretrained=False, num_classes=int(spec.get("num_classes", 2)))
    except Exception as exc:
        raise UserError(f"{where}.arch: timm cannot build {spec['arch']!r} ({exc})") from None
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{where}.weights: {path} is not a readable state dict (.pt/.pth saved with torch.save(model."
                        f"state_dict()), or .safetensors): {exc.__class__.__name__}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise UserError(f"{where}.weights: {path} does not fit timm's {spec['arch']} with num_classes "
                        f"{spec.get('num_classes', 2)} ({detail})") from None
    return model


def user_classifier(spec: dict, where: str = "posthoc.classifier", path: str | Path | None = None) -> tuple[nn.Module, dict]:
    """The classifier a spec describes, wrapped (TwoLogits, eval mode, frozen), and the record a post-hoc
    checkpoint keeps of it (the spec with the file's sha256). `path`: the file to read instead of the spec's
    (the same classifier moved elsewhere). Every way the file can be wrong is a UserError, found before
    anything is trained or written: missing, not a classifier, outputs of the wrong shape, an input size it
    refuses."""
    kind = spec.get("kind")
    if kind not in ("torchscript", "timm"):
        raise UserError(f"{where}.kind: {kind!r}; one of torchscript, timm")
    key = "path" if kind == "torchscript" else "weights"
    spec = {**spec, **({key: str(path)} if path is not None else {})}
    file = _file(spec, key, where)
    model = _torchscript(file, where) if kind == "torchscript" else _timm(spec, file, where)
    size = spec.get("input_size")
    if size is None:
        raise UserError(f"{where}.input_size: missing (the side in pixels of the square images your classifier takes)")
    damaged = int(spec.get("damaged_index", 1))
    mean, std = list(spec.get("mean", [0.0, 0.0, 0.0])), list(spec.get("std", [1.0, 1.0, 1.0]))
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise UserError(f"{where}: mean and std must give 3 values each (one per RGB channel), std above 0")
    wrapped = TwoLogits(model, int(size), mean, std, damaged).eval().requires_grad_(False)
    probe = torch.rand(PROBES, 3, int(size), int(size), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = model((probe - wrapped.mean) / wrapped.std)
    except Exception as exc:
        raise UserError(f"{where}: {file} fails on a batch of {PROBES} x 3 x {size} x {size} images (input_size {size}: "
                        f"is that the size it was made for?): {exc.__class__.__name__}: "
                        f"{' '.join(str(exc).split())[:200] or 'no detail'}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != PROBES or not torch.is_floating_point(out):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"{where}: {file} is not a classifier of images: on {PROBES} images it returned {shape}, "
                        f"expected a float tensor of {PROBES} x K class scores (logits)")
    if not 0 <= damaged < max(out.shape[1], 1) or (out.shape[1] == 1 and damaged != 0):
        raise UserError(f"{where}.damaged_index: {damaged}, but the classifier has {out.shape[1]} output(s)")
    record = {"kind": kind, key: str(file), "sha256": sha256(file), "input_size": int(size), "mean": mean, "std": std,
              "damaged_index": damaged, "outputs": int(out.shape[1]),
              **({"arch": spec["arch"], "num_classes": int(spec.get("num_classes", 2))} if kind == "timm" else {})}
    return wrapped, record


def rebuild_user(record: dict, path: str | Path | None = None) -> nn.Module:
    """A user's classifier a post-hoc checkpoint's record names (frozen, eval mode), from its file (`path`, or the
    recorded one), which must be the same file (sha256)."""
    key = "path" if record["kind"] == "torchscript" else "weights"
    file = Path(path if path is not None else record[key])
    if not file.is_file():
        raise UserError(f"the explainer was trained for the classifier {record[key]}, which is not there: pass its file "
                        f"with --classifier")
    digest = sha256(file)
    if digest != record["sha256"]:
        raise UserError(f"--classifier {file}: not the classifier this explainer was trained for (sha256 {digest[:12]}..., "
                        f"expected {record['sha256'][:12]}... of {record[key]}); train an explainer for it (cfgan train-posthoc)")
    return user_classifier(record, "the explainer's classifier", file)[0]
