"""CPU tests of GPU-only paths (issue 24, items 4 and 6).

1. A device audit: on a GPU, a tensor created without `device=` lands on the CPU, and using it
   beside CUDA tensors either fails (on the GPU only, so CI would never see it) or costs a host
   copy and often a sync every step. `ast` finds every torch.zeros/ones/full/rand/... call in the
   modules the training and evaluation loops run; each must pass `device=`, draw from an explicit
   (CPU) `generator=` (repeatable draws, the same on CPU and GPU, moved in one copy), or be listed
   in ALLOWED with the reason it is CPU-side by design. `*_like` calls inherit their input's
   device and are not checked.
2. The determinism settings `compute.resolve` applies when the device is cuda (faked here).
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src/cfgan"
AUDITED = sorted((SRC / "train").glob("*.py")) + sorted((SRC / "evaluate").glob("*.py")) + \
    [SRC / "inference.py", SRC / "ood.py", SRC / "attacks.py", SRC / "data/augment.py"]
FACTORIES = {"zeros", "ones", "full", "rand", "randn", "randint", "arange", "empty", "tensor", "randperm",
             "linspace", "as_tensor", "eye", "normal"}

# (file, enclosing function, the call as ast.unparse writes it) -> why it is CPU-side by design
ALLOWED = {
    ("evaluate/adversarial_maps.py", "*", "torch.arange(start, min(start + batch_size, len(split)))"):
        "indices into the CPU-held split; split.batch(idx, device) moves the crops",
    ("evaluate/adversarial_maps.py", "movement", "torch.as_tensor(vsub, dtype=torch.long)"):
        "indices of a crop subset, used to index the CPU-held split",
    ("train/posthoc.py", "*", "torch.arange(start, min(start + batch_size, len(split)))"):
        "indices into the CPU-held split; split.batch(idx, device) moves the crops",
    ("train/posthoc.py", "validate", "torch.arange(start, min(start + batch_size, len(val)))"):
        "indices into the CPU-held split; val.batch(idx, device) moves the crops",
    ("train/posthoc.py", "colour_distance", "torch.as_tensor(calibration['colour_mean'])"):
        "calibration statistics applied to colour statistics of images on the CPU (results go to numpy)",
    ("train/posthoc.py", "colour_distance", "torch.as_tensor(calibration['colour_std'])"):
        "calibration statistics applied to colour statistics of images on the CPU (results go to numpy)",
    ("evaluate/attributions.py", "attribution_maps", "torch.arange(start, min(start + batch_size, len(split)))"):
        "indices into the CPU-held split; split.batch(idx, device) moves the crops",
    ("evaluate/model_maps.py", "_tensor", "torch.as_tensor(idx, dtype=torch.long)"):
        "indices of a crop subset, used to index the CPU-held split",
    ("evaluate/references.py", "_subset_rows", "torch.as_tensor(tsub)"):
        "indices of a crop subset, used to index the CPU-held split",
    ("train/common.py", "batch_indices", "torch.full((len(classes),), batch_size // len(classes))"):
        "per-class counts of a batch, drawn on the CPU like the indices into the CPU-held split",
    ("train/segmenters.py", "predict_masks", "torch.arange(start, min(start + batch_size, len(split)))"):
        "indices into the CPU-held split; split.batch(idx, device) moves the crops",
    ("evaluate/multiclass.py", "*", "torch.arange(start, min(start + batch_size, len(split)))"):
        "indices into the CPU-held split; split.batch(idx, device) moves the crops",
    ("attacks.py", "*", "torch.arange(start, min(start + batch_size, len(split)))"):
        "indices into the CPU-held split; split.batch(idx, device) moves the crops",
    ("evaluate/saliency.py", "*", "torch.arange(start, min(start + batch_size, len(split)))"):
        "indices into the CPU-held split; split.batch(idx, device) moves the crops",
    ("inference.py", "*", "torch.arange(start, min(start + batch_size, len(split)))"):
        "indices into the CPU-held split; split.batch(idx, device) moves the crops",
    ("evaluate/uncertainty.py", "nll", "torch.arange(len(labels))"):
        "indexes probabilities that are already on the CPU (the result goes to numpy)",
    ("ood.py", "signals", "torch.as_tensor(calibration[f'{key}_mean'])"):
        "calibration statistics applied to model outputs already moved to the CPU (results go to numpy)",
    ("ood.py", "signals", "torch.as_tensor(calibration[f'{key}_std'])"):
        "calibration statistics applied to model outputs already moved to the CPU (results go to numpy)",
    ("data/augment.py", "<module>", "torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])"):
        "a 3x3 constant; the per-batch colour matrix built from it is moved with .to(x.device) once",
    ("data/augment.py", "augment", "torch.ones(b)"):
        "flip signs beside the CPU draws of the same warp; theta goes to the device in one copy",
    ("data/augment.py", "augment", "torch.zeros(b, 3, 3)"):
        "per-sample hue rotations built from CPU draws; the colour matrix goes to the device in one copy",
}


def _calls(path: Path):
    """(enclosing function name, ast.Call) for every torch.<factory>(...) call of a file."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, where):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else where
            if (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr in FACTORIES
                    and isinstance(child.func.value, ast.Name) and child.func.value.id == "torch"):
                found.append((where, child))
            visit(child, inner)

    visit(tree, "<module>")
    return found


def _offenders():
    out, used = [], set()
    for path in AUDITED:
        rel = str(path.relative_to(SRC))
        for where, call in _calls(path):
            keywords = {k.arg for k in call.keywords}
            if keywords & {"device", "generator"}:
                continue
            text = ast.unparse(call)
            key = next((k for k in ((rel, where, text), (rel, "*", text)) if k in ALLOWED), None)
            if key is None:
                out.append(f"{rel}:{call.lineno} in {where}(): {text}")
            else:
                used.add(key)
    return out, used


def test_no_tensor_is_created_without_an_explicit_device_on_the_gpu_paths():
    offenders, _ = _offenders()
    assert not offenders, ("tensors created without device= (add device=x.device, draw from a CPU generator=, or "
                           "list them in ALLOWED with the reason they are CPU-side):\n" + "\n".join(offenders))


def test_the_allow_list_has_no_stale_entries():
    _, used = _offenders()
    assert set(ALLOWED) == used, f"entries matching no call any more: {sorted(set(ALLOWED) - used)}"


def test_the_audit_finds_a_planted_offender(tmp_path):
    planted = tmp_path / "loop.py"
    planted.write_text("import torch\n\ndef step(x):\n    noise = torch.randn(x.shape)\n"
                       "    ok = torch.zeros(3, device=x.device)\n    return x + noise\n")
    calls = [(w, ast.unparse(c), {k.arg for k in c.keywords}) for w, c in _calls(planted)]
    assert calls == [("step", "torch.randn(x.shape)", set()), ("step", "torch.zeros(3, device=x.device)", {"device"})]


@pytest.fixture
def restore_determinism():
    state = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    yield
    torch.use_deterministic_algorithms(state[0], warn_only=state[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = state[2], state[3]
    if state[4] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = state[4]


def test_cuda_steps_get_the_determinism_settings(monkeypatch, restore_determinism):
    from cfgan.compute import resolve
    monkeypatch.delenv("CFGAN_DEVICE", raising=False)
    monkeypatch.delenv("CFGAN_DETERMINISTIC", raising=False)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    resolve({"compute": {"device": "cpu"}})  # the CPU path changes nothing
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a faked GPU: resolve touches no CUDA API
    torch.backends.cudnn.benchmark = True
    cx = resolve({"compute": {"device": "cuda", "precision": "bf16"}})
    assert cx.device.type == "cuda"
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert torch.backends.cudnn.benchmark is False and torch.backends.cudnn.deterministic is True
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"

    torch.use_deterministic_algorithms(False)
    monkeypatch.setenv("CFGAN_DETERMINISTIC", "0")
    resolve({"compute": {"device": "cuda"}})
    assert not torch.are_deterministic_algorithms_enabled()


def test_a_training_split_moved_to_the_device_builds_batches_there_and_draws_on_the_cpu():
    """Split.to: crops and masks go to the device once (a GPU loop then indexes them there); the
    labels that batches are drawn from stay on the CPU. The meta device stands in for a GPU."""
    import torch
    from cfgan.data.datasets import Split
    split = Split(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), torch.zeros(4, 8, 8, dtype=torch.bool),
                  ["a", "b", "c", "d"])
    moved = split.to("meta")
    assert moved.images.device.type == "meta" and moved.masks.device.type == "meta"
    assert moved.labels is split.labels and moved.labels.device.type == "cpu"
    x, y = moved.batch(torch.tensor([1, 3]), "meta")
    assert x.device.type == "meta" and x.dtype == torch.float32 and y.device.type == "meta"
    assert split.to("cpu").images is split.images  # a no-op on the CPU
