"""`cfgan export`: a trained run as one self-contained file that runs without cfgan, TorchScript
(`torch.jit.load`) or ONNX (onnxruntime), with its metadata inside.

One graph, several outputs. The exported module reads a batch of images and returns, per image,
what `cfgan explain` computes for it alone (in fp32, on the CPU):

  input  `image`                 N x 3 x S x S float32, RGB, values in [0, 1] (uint8 / 255), S the run's crop size
  output `probabilities`         N x 3  D's softmax over (real_undamaged, real_damaged, fake)
         `d_logits`              N x 3  D's logits (the class decision reads the two real ones: exact when D is
                                        sure an image is fake and both real probabilities underflow)
         `g_head_probabilities`  N x 2  G's auxiliary head (undamaged, damaged)
         `counterfactual`        N x 3 x S x S  G(x), in [0, 1]
         `saliency`              N x S x S  the map (`--form`; abs: |x - G(x)| averaged over the channels)
         `ood_signals`           N x K  cfgan.ood's signals, in the order metadata["ood"]["signals"] names

G's noise z is fixed: z = torch.randn(1, noise_dim) from a generator seeded with 0, the draw `cfgan explain`
makes for one image, used for every image of a batch, so an image's outputs do not depend on the others in
its batch. One graph rather than two (D alone, G with the map): the OOD signals, which say whether an
answer can be trusted, need both networks on the same image; the price is that a caller who wants only D's
probabilities still pays for G's pass.

Preprocessing is not in the graph (a graph resizing arbitrary photos would bake in one resize library's
arithmetic); the metadata says it precisely: the whole image, RGB, resized to S x S with bilinear
interpolation (Pillow's `Image.resize(..., BILINEAR)`, as `cfgan explain` does), divided by 255. A wrong
spatial size fails inside the exported model with a message naming the expected shape (TorchScript: a
check in the scripted wrapper; ONNX: the graph's fixed dims, which onnxruntime checks).

What is not weight-like stays out of the graph, in the metadata (the JSON document `cfgan.json`:
TorchScript `_extra_files`, ONNX `metadata_props`): class names, image size, the saliency threshold and
map form chosen on val by the saliency step, the OOD thresholds from the run's val split, run name,
commit, precision, versions. The OOD calibration's feature means and spreads are weights of the signals
and live in the graph.

Before a file is renamed into place, the export runs it (TorchScript: the loaded module; ONNX:
onnxruntime, when installed) on check images against the PyTorch model and refuses a disagreement
(CHECK_TOL); the differences it measured are in the metadata (`check`). The tests exercise the CNN UNet x
ResNet3 pair; by hand (untrained weights, both formats, within 4e-7 of PyTorch) Swin UNet x ResNet18 at 64 px and
CNN UNet x Swin Small and x Hybrid at 224 px exported too. An operation an exporter cannot express is a
UserError naming it, with nothing written.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import __version__
from .config import run_defect
from .errors import UserError
from .explain import _checkpoint
from .io import atomic_path
from .maps import DIHEDRAL, TURNS, counterfactual_form, parse_candidate
from .ood import DISTANCES, SIGNALS

FORMATS = ("torchscript", "onnx")
METADATA_KEY = "cfgan.json"  # the TorchScript extra file's name and the ONNX metadata_props key
EXPORT_FORMAT = 1            # raise when the outputs or the metadata's layout change
OUTPUTS = ("probabilities", "d_logits", "g_head_probabilities", "counterfactual", "saliency", "ood_signals")
CLASS_NAMES = ("real_undamaged", "real_damaged", "fake")
SEED = 0                     # explain's noise seed
OPSET = 17
# how far the exported outputs may be from the PyTorch model's on the export's own check images (absolute and
# relative, fp32 both; measured on the tiny run: <= 6e-8 except the OOD distances, ~4e-6 on values ~1.7)
CHECK_TOL = 1e-4


def _rot90(x: torch.Tensor, k: int) -> torch.Tensor:
    """torch.rot90(x, k, (2, 3)) as flips and a transpose: ONNX (opset 17) has no rot90."""
    return (x, x.flip(3).transpose(2, 3), x.flip(2).flip(3), x.transpose(2, 3).flip(3))[k % 4]


def dihedral_mean(f, x: torch.Tensor, turns: int) -> torch.Tensor:
    """cfgan.maps.dihedral_mean (the mean of f over the crop's first `turns` flips and quarter turns, each
    undone), written with _rot90 so that it exports to ONNX too."""
    if turns not in TURNS:
        raise ValueError(f"turns: {turns} is not one of {', '.join(map(str, TURNS))}")
    out = []
    for quarter, flip in DIHEDRAL[:turns]:
        xt = _rot90(x, quarter)
        y = f((xt.flip(3) if flip else xt).contiguous())
        y = y.flip(3) if flip else y
        out.append(_rot90(y, -quarter))
    return out[0] if turns == 1 else torch.stack([o.float() for o in out]).mean(0)


class ExportedRun(nn.Module):
    """D, G and the map as one module: image batch -> the OUTPUTS (see the module docstring)."""

    def __init__(self, g: nn.Module, d: nn.Module, calibration: dict | None, form: str = "abs", seed: int = SEED):
        super().__init__()
        self.g, self.d = g.eval(), d.eval()
        self.form, self.turns = parse_candidate(form)
        self.register_buffer("z", torch.randn(1, g.noise_dim, generator=torch.Generator().manual_seed(seed)))
        # cfgan.ood.outputs' features: the input of D's last linear layer
        self._features: list[torch.Tensor] = []
        last = [m for m in d.modules() if isinstance(m, nn.Linear)][-1]
        last.register_forward_hook(lambda m, inputs, out: self._features.append(inputs[0]))
        self.signals = ["p_fake", "disagreement"]
        for name, key in DISTANCES.items():
            if calibration and f"{key}_mean" in calibration:
                self.register_buffer(f"{key}_mean", torch.as_tensor(calibration[f"{key}_mean"]).float())
                self.register_buffer(f"{key}_std", torch.as_tensor(calibration[f"{key}_std"]).float())
                self.signals.append(name)

    def forward(self, x: torch.Tensor):
        z = self.z.expand(x.shape[0], -1)
        x_cf, g_logits = self.g(x, z)
        if self.turns > 1:
            x_cf = dihedral_mean(lambda xt: self.g(xt, z)[0], x, self.turns)
        x_keep = dihedral_mean(lambda xt: self.g(xt, z, keep=True)[0], x, self.turns) if self.form.endswith("-keep") else None
        saliency = counterfactual_form(x, x_cf, self.form, x_keep)
        self._features.clear()
        d_logits = self.d(x)
        features = self._features.pop().flatten(1)
        probs, g_probs = d_logits.softmax(1), g_logits.softmax(1)
        # cfgan.ood.signals, term by term
        values = [probs[:, 2], (d_logits[:, :2].softmax(1)[:, 1] - g_probs[:, 1]).abs()]
        vectors = {"features": features, "colour": torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)}
        for name, key in DISTANCES.items():
            if name in self.signals:
                mean, std = getattr(self, f"{key}_mean"), getattr(self, f"{key}_std")
                values.append(((vectors[key] - mean) / std).pow(2).mean(1).sqrt())
        return probs, d_logits, g_probs, x_cf, saliency, torch.stack(values, 1)


class SizeChecked(nn.Module):
    """The TorchScript file's top module (scripted): refuses an input of another shape than the run's
    with a message naming it, then runs the traced ExportedRun."""
    __constants__ = ["size", "channels"]  # not class annotations: `from __future__ import annotations` hides their types

    def __init__(self, traced: nn.Module, size: int, channels: int = 3):
        super().__init__()
        self.traced, self.size, self.channels = traced, size, channels

    def forward(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != self.channels or x.shape[2] != self.size or x.shape[3] != self.size:
            raise ValueError(f"cfgan export: expected images of shape N x {self.channels} x {self.size} x {self.size} "
                             f"(float32 RGB in [0, 1], resized to {self.size} x {self.size}), got {x.shape}")
        if x.dtype != torch.float32:
            raise ValueError(f"cfgan export: expected float32 images in [0, 1] (uint8 / 255), got {x.dtype}")
        return self.traced(x)


# --- what the metadata reads -------------------------------------------------------------------

def _commit() -> str | None:
    """The git commit of this cfgan's source (with `-dirty` for uncommitted edits), or None outside a
    checkout. The checkpoint itself records no commit, only versions (`trained_with`)."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def saliency_csv(checkpoint: Path, run: str) -> Path:
    """Where the saliency step writes a run's evaluation: results/<ds>/evaluations/saliency/<run>.csv
    beside results/<ds>/runs/<run>/ (workflow/rules/evaluate.smk)."""
    return checkpoint.parent.parent.parent / "evaluations" / "saliency" / f"{run}.csv"


def val_choice(csv: Path, run: str) -> dict | None:
    """The counterfactual map's threshold, form and blur the saliency step chose on val (its tidy CSV:
    the `threshold` row at condition `val`; the form and blur from that row's note), or None without one."""
    if not csv.is_file():
        return None
    import pandas as pd
    try:
        frame = pd.read_csv(csv)
    except Exception as exc:  # noqa: BLE001 (a damaged CSV is the user's to fix; name it)
        raise UserError(f"{csv}: not a readable saliency evaluation ({exc.__class__.__name__}: {exc}); "
                        f"rerun `cfgan saliency` or pass another --saliency") from None
    need = {"run", "model", "metric", "condition", "value", "note"}
    if not need <= set(frame.columns):
        raise UserError(f"{csv}: not a saliency evaluation (columns {sorted(frame.columns)}, expected {sorted(need)})")
    rows = frame[(frame.run == run) & (frame.model == "counterfactual") & (frame.metric == "threshold") & (frame.condition == "val")]
    if rows.empty:
        return None
    row = rows.iloc[0]
    note = str(row.note)
    form = re.search(r"map form '([^']+)' chosen on val", note)
    sigma = re.search(r"maps blurred with a ([0-9.eE+-]+) px Gaussian", note)
    return {"form": form.group(1) if form else "abs", "form_named_in_note": bool(form),
            "threshold": float(row.value), "smooth_sigma": float(sigma.group(1)) if sigma else 0.0, "source": str(csv)}


def metadata(ckpt: dict, checkpoint: Path, g: nn.Module, model: ExportedRun, form: str, choice: dict | None,
             fmt: str) -> dict:
    s = ckpt["summary"]
    size = int(s["image_size"])
    cal = s.get("ood")
    defect = run_defect(s["run"])
    saliency = {"form": form, "map": f"output `saliency`: cfgan.maps form '{form}' of (x, counterfactual)"
                + ("; abs is the paper's |x - G(x)| averaged over the colour channels" if form == "abs" else ""),
                "threshold": None, "smooth_sigma": 0.0, "val_choice": choice}
    if choice is None:
        saliency["note"] = ("no saliency evaluation of this run found (`cfgan saliency` writes results/<ds>/evaluations/"
                            "saliency/<run>.csv; or pass --saliency): no threshold")
    elif choice["form"] != form:
        saliency["note"] = (f"the threshold {choice['threshold']:.6g} was chosen on val for form '{choice['form']}', not the "
                            f"exported '{form}': it does not apply (export with --form val for the chosen one)")
    else:
        saliency.update(threshold=choice["threshold"], smooth_sigma=choice["smooth_sigma"],
                        note="a pixel is salient where the map (first blurred with a Gaussian of smooth_sigma px, "
                             "reflect-padded, when smooth_sigma > 0, as the saliency step did) exceeds threshold")
        if not choice["form_named_in_note"]:
            saliency["note"] += ("; the evaluation's note names no form, so it scored one candidate: assumed 'abs' "
                                 "(evaluate.saliency.counterfactual_forms' default)")
    ood = {"signals": model.signals, "descriptions": {k: SIGNALS[k] for k in model.signals},
           "rule": "out of distribution (do not trust the explanation) when any signal exceeds its threshold"}
    if cal:
        ood.update(thresholds={k: float(v) for k, v in cal["thresholds"].items()}, alpha=float(cal["alpha"]),
                   quantile=float(cal["quantile"]), n_val=int(cal["n_val"]))
    else:
        ood.update(thresholds=None, note="this checkpoint carries no val calibration (trained by an older cfgan)")
    compute = ckpt.get("compute") or {}
    return {
        "cfgan_export": EXPORT_FORMAT, "format": fmt,
        "run": s["run"], "defect": defect, "checkpoint": str(checkpoint), "checkpoint_sha256": _sha256(checkpoint),
        "commit": _commit(), "cfgan_version": __version__,
        "exported_with": {"cfgan": __version__, "torch": str(torch.__version__)},
        "trained_with": ckpt.get("versions"),
        "precision": "fp32",
        "trained_precision": compute.get("precision"),
        "precision_note": (f"the graph computes in fp32; the run trained (and its thresholds were chosen) at "
                           f"{compute.get('precision', 'an unrecorded precision')}: outputs differ from a bf16 "
                           f"`cfgan explain` by bf16 rounding"),
        "image_size": size,
        "input": {"name": "image", "shape": ["N", 3, size, size], "dtype": "float32", "layout": "NCHW",
                  "channels": "RGB", "range": [0.0, 1.0],
                  "preprocessing": f"the whole image as RGB (EXIF orientation applied), resized to {size} x {size} "
                                   f"with bilinear interpolation (Pillow Image.resize(..., Image.BILINEAR)), no crop, "
                                   f"then uint8 / 255; no mean or spread normalisation"},
        "outputs": {"probabilities": ["N", 3], "d_logits": ["N", 3], "g_head_probabilities": ["N", 2],
                    "counterfactual": ["N", 3, size, size], "saliency": ["N", size, size], "ood_signals": ["N", len(model.signals)]},
        "class_names": list(CLASS_NAMES), "g_head_class_names": ["undamaged", "damaged"],
        "decision": ("damaged" + (f" ({defect})" if defect else "") + " when d_logits[1] > d_logits[0] (D's two real "
                     "logits; P(damaged) = softmax(d_logits[:2])[1]), otherwise undamaged; probabilities[2] is p_fake, "
                     "an uncertainty score, not a class"),
        "noise": {"seed": SEED, "dim": int(g.noise_dim),
                  "note": "z = torch.randn(1, dim) seeded with 0 (cfgan explain's draw for one image), the same for every "
                          "image of a batch; in the graph"},
        "saliency": saliency, "ood": ood,
    }


# --- the export --------------------------------------------------------------------------------

def _load(run: str):
    from .train.common import load_checkpoint
    from .train.gan import load_gan
    checkpoint = _checkpoint(run)
    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kind") != "gan" or not isinstance(ckpt.get("summary"), dict):
        raise UserError(f"{checkpoint}: a {ckpt.get('kind', 'unknown')} checkpoint; `cfgan export` exports GAN runs "
                        f"(cfgan train), whose D and G it needs")
    g, d, ckpt = load_gan(ckpt)  # CPU, fp32, eval mode
    return checkpoint, g, d, ckpt


def _check_inputs(size: int, n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _max_diffs(ours, theirs) -> dict[str, float]:
    return {name: float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
            for name, a, b in zip(OUTPUTS, ours, theirs)}


def _verify(ours, theirs, fmt: str) -> dict[str, float]:
    """The largest |exported - PyTorch| per output; a UserError unless every value is within CHECK_TOL
    (absolute and relative: the OOD distances grow far from the training crops, and their fp32 error with them)."""
    bad = [name for name, a, b in zip(OUTPUTS, ours, theirs)
           if not np.allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=CHECK_TOL, atol=CHECK_TOL)]
    diffs = _max_diffs(ours, theirs)
    if bad:
        raise UserError(f"the {fmt} export disagrees with the PyTorch model on its check images by more than "
                        f"{CHECK_TOL:g} ({', '.join(f'{k} {diffs[k]:.3g}' for k in bad)}); nothing was written. "
                        f"This model holds an operation the {fmt} exporter does not reproduce: please report it")
    return diffs


def export(run: str, fmt: str, out: Path, force: bool = False, form: str = "abs", saliency: str | None = None) -> dict:
    """Write the run's D, G and map as one `fmt` file at `out` (atomically); return its metadata."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: not a known format; choose one of {', '.join(FORMATS)}")
    if out.exists() and not force:
        raise UserError(f"{out} already exists; pass --force to overwrite it or choose another --out")
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file name (e.g. model.{'onnx' if fmt == 'onnx' else 'pt'})")
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise UserError("--format onnx needs the onnx package: pip install 'cfgan[export]' (onnx and onnxruntime)") from None
    checkpoint, g, d, ckpt = _load(run)
    choice = val_choice(Path(saliency) if saliency else saliency_csv(checkpoint, ckpt["summary"]["run"]), ckpt["summary"]["run"])
    if saliency and choice is None:
        raise UserError(f"--saliency {saliency}: no counterfactual threshold chosen on val for run {ckpt['summary']['run']} there")
    if form == "val":
        if choice is None:
            raise UserError(f"--form val: no saliency evaluation of run {ckpt['summary']['run']} found at "
                            f"{saliency_csv(checkpoint, ckpt['summary']['run'])}; run `cfgan saliency`, pass --saliency, or name a form")
        form = choice["form"]
    try:
        parse_candidate(form)
    except ValueError as e:
        raise UserError(f"--form {form}: {e}") from None
    if form.split("+")[0].endswith("-keep") and not getattr(g, "keep_mode", False):
        raise UserError(f"--form {form}: reads G(x, keep), but the run's generator has no keep mode; choose a form without '-keep'")
    model = ExportedRun(g, d, ckpt["summary"].get("ood"), form).eval()
    size = int(ckpt["summary"]["image_size"])
    meta = metadata(ckpt, checkpoint, g, model, form, choice, fmt)
    check = _check_inputs(size)
    with torch.no_grad():
        expected = [t.numpy() for t in model(check)]
    with warnings.catch_warnings():  # torch.jit and the TorchScript-based ONNX exporter announce their deprecation
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Constant folding")  # the ONNX exporter's note on strided slices
        try:
            if fmt == "torchscript":
                _torchscript(model, size, check, expected, meta, out)
            else:
                _onnx(model, size, check, expected, meta, out)
        except (torch.jit.Error, torch.onnx.OnnxExporterError) as exc:  # nothing is written (atomic_path)
            other = "onnx" if fmt == "torchscript" else "torchscript"
            raise UserError(f"the {fmt} exporter cannot express this run's models ({meta['run']}): "
                            f"{' '.join(str(exc).split())[:300]}; nothing was written. Try --format {other}") from None
    return meta


def _shareable(path: Path) -> None:
    """The permissions of a file made with the user's umask (atomic_path's temporary file is private, 0600):
    an exported model is made to be handed on."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _torchscript(model: ExportedRun, size: int, check: torch.Tensor, expected, meta: dict, out: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(model, _check_inputs(size, 2))  # another batch size than the check's: the batch stays free
        scripted = torch.jit.script(SizeChecked(traced, size))
        meta["check"] = {"images": len(check), "rtol_atol": CHECK_TOL,
                         "max_abs_diff": _verify([t.numpy() for t in scripted(check)], expected, "torchscript")}
    with atomic_path(out) as tmp:
        torch.jit.save(scripted, str(tmp), _extra_files={METADATA_KEY: json.dumps(meta, indent=2)})
        _shareable(tmp)


def _onnx(model: ExportedRun, size: int, check: torch.Tensor, expected, meta: dict, out: Path) -> None:
    import onnx
    batch = {0: "N"}
    with atomic_path(out) as tmp:
        with torch.no_grad():
            torch.onnx.export(model, (_check_inputs(size, 2),), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=["image"], output_names=list(OUTPUTS),
                              dynamic_axes={name: batch for name in ("image", *OUTPUTS)})
        proto = onnx.load(str(tmp))
        try:
            import onnxruntime as ort
        except ImportError:
            meta["check"] = {"note": "onnxruntime not installed: the export was not run against the PyTorch model"}
        else:
            session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
            meta["check"] = {"images": len(check), "rtol_atol": CHECK_TOL,
                             "max_abs_diff": _verify(session.run(list(OUTPUTS), {"image": check.numpy()}), expected, "onnx")}
        proto.producer_name, proto.producer_version = "cfgan", __version__
        proto.doc_string = (f"cfgan run {meta['run']}: image N x 3 x {size} x {size} float32 RGB in [0, 1] -> "
                            f"{', '.join(OUTPUTS)}; metadata_props['{METADATA_KEY}'] holds the rest")
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(meta, indent=2)
        onnx.save(proto, str(tmp))
        _shareable(tmp)


def read_metadata(path: Path) -> dict:
    """The metadata of an exported file, either format."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        return json.loads(props[METADATA_KEY])
    extra = {METADATA_KEY: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return json.loads(extra[METADATA_KEY])
