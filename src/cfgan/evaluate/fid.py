"""FID with pytorch-fid: its Inception network and its own `calculate_frechet_distance`.

pytorch-fid fetches its Inception weights from a fixed URL only; here they come from the local
file named in params (evaluate.fid.inception_weights, checked against the hash in its name).
Without that file an untrained, seeded Inception is used only if params allow it, and every
row then says so: such FIDs rank models against each other at best and are not comparable to
published FID values.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

import numpy as np
import torch
from pytorch_fid import inception as fid_inception
from pytorch_fid.fid_score import calculate_frechet_distance

from ..errors import UserError

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
UNTRAINED_NOTE = "untrained Inception (no local FID weights): not comparable to published FID"


class _KeepRandomInit(dict):
    """Marker state dict: load nothing, keep the seeded random initialisation."""


@contextlib.contextmanager
def _local_weights(weights: str | None, allow_untrained: bool):
    original_loader = fid_inception.load_state_dict_from_url
    original_load = torch.nn.Module.load_state_dict

    def loader(url, *args, **kwargs):
        if weights is not None:
            return torch.load(weights, map_location="cpu", weights_only=True)
        return _KeepRandomInit()

    def load_state_dict(self, state_dict, *args, **kwargs):
        if isinstance(state_dict, _KeepRandomInit):
            return None
        return original_load(self, state_dict, *args, **kwargs)

    fid_inception.load_state_dict_from_url = loader
    torch.nn.Module.load_state_dict = load_state_dict
    try:
        yield
    finally:
        fid_inception.load_state_dict_from_url = original_loader
        torch.nn.Module.load_state_dict = original_load


def inception(dims: int, weights: str | None, allow_untrained: bool, device="cpu") -> tuple[torch.nn.Module, str]:
    """pytorch-fid's InceptionV3 for `dims` features, and a note saying which weights it has."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"evaluate.fid.inception_weights: {path} not found. Download {fid_inception.FID_WEIGHTS_URL} "
                            f"and put it there (or set it to null and allow_untrained_inception: true for a smoke run)")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith("6726825d"):
            raise UserError(f"{path}: sha256 {digest[:8]}... does not match {WEIGHTS_NAME}")
        note = f"FID Inception weights {path.name}"
    elif allow_untrained:
        note = UNTRAINED_NOTE
    else:
        raise UserError("evaluate.fid.inception_weights is null and allow_untrained_inception is false: "
                        f"download {fid_inception.FID_WEIGHTS_URL} and name the file in params")
    torch.manual_seed(0)  # a reproducible random Inception when untrained
    with _local_weights(weights, allow_untrained):
        model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[dims]])
    return model.to(device).eval(), note


@torch.no_grad()
def activations(model: torch.nn.Module, images: torch.Tensor, batch_size: int, device="cpu") -> np.ndarray:
    """Pool features of float images in [0, 1] (N x 3 x H x W), as pytorch-fid's get_activations does."""
    feats = []
    for start in range(0, len(images), batch_size):
        out = model(images[start:start + batch_size].to(device))[0]
        if out.shape[2:] != (1, 1):
            out = torch.nn.functional.adaptive_avg_pool2d(out, (1, 1))
        feats.append(out.squeeze(3).squeeze(2).float().cpu().numpy())
    return np.concatenate(feats).astype(np.float64)


def save_features(path: Path, feats: np.ndarray, labels: np.ndarray, note: str, dims: int, manifest: Path) -> None:
    """Real-image features for reuse by every run's FID step (float32, as pytorch-fid keeps them)."""
    np.savez(path, features=feats.astype(np.float32), labels=labels, note=np.array(note), dims=np.array(dims),
             manifest=np.array(str(manifest)))


def load_features(path: Path, dims: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Features saved by `save_features`, checked against this step's dims and test labels."""
    if not Path(path).is_file():
        raise UserError(f"{path} not found: run the fid-real step for this data set first")
    with np.load(path) as f:
        feats, saved_labels, note, saved_dims = f["features"], f["labels"], str(f["note"]), int(f["dims"])
    if saved_dims != dims:
        raise UserError(f"{path} holds {saved_dims}-dim features, evaluate.fid.dims is {dims}: rerun the fid-real step")
    if len(saved_labels) != len(labels) or (saved_labels != labels).any():
        raise UserError(f"{path} was computed on another test split ({len(saved_labels)} crops, here {len(labels)}): "
                        "rerun the fid-real step")
    return feats.astype(np.float64), saved_labels, note


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two activation sets, with pytorch-fid's own statistics and distance."""
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    return float(calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)))


def fid_subsets(real_feats: np.ndarray, fake_feats: np.ndarray, labels: np.ndarray) -> dict[str, tuple[float, int, int]]:
    """Appendix A.2: full = all real vs all counterfactuals; und. = real undamaged vs counterfactuals of
    damaged images; dam. = real damaged vs counterfactuals of undamaged images. -> (fid, n_real, n_fake)."""
    und, dam = labels == 0, labels == 1
    return {
        "full": (frechet(real_feats, fake_feats), len(real_feats), len(fake_feats)),
        "und": (frechet(real_feats[und], fake_feats[dam]), int(und.sum()), int(dam.sum())),
        "dam": (frechet(real_feats[dam], fake_feats[und]), int(dam.sum()), int(und.sum())),
    }
