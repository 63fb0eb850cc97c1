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
            if im.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grey: PIL's convert would clip it to white
                grey = (np.asarray(im, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from exc


def read_mask(path: str | Path, min_value: int = 1) -> np.ndarray:
    """HxW bool: True where the label map is >= min_value (damage)."""
    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                rgb = np.asarray(im.convert("RGB"))
                if (rgb != rgb[..., :1]).any():  # a colour picture, not a label map (e.g. a photo in the masks folder)
                    raise UserError(f"{path}: mask is a colour image ({im.mode}); expected a grey-scale label map "
                                    f"(0 = background, >= {min_value} = damage)")
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
