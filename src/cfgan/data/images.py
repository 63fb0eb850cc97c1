"""Reading and writing images and masks, with errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}


def read_rgb(path: str | Path) -> np.ndarray:
    """HxWx3 uint8; raise UserError naming the file if it cannot be decoded."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from exc


def read_mask(path: str | Path, min_value: int = 1) -> np.ndarray:
    """HxW bool: True where the label map is >= min_value (damage)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L")) >= min_value
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable mask ({exc.__class__.__name__}: {exc})") from exc


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the header, after checking the pixels decode."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from exc


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG", optimize=False)
