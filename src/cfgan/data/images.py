"""Reading and writing images and masks, with errors that name the file.

Every read turns the picture upright by its EXIF orientation first (`ImageOps.exif_transpose`):
phone and camera photos are often stored sideways with an orientation tag, and masks drawn on
the photo as displayed only line up with the upright pixels. Grey-scale, palette, RGBA and
16-bit images become 8-bit RGB; `describe_mode` says what each conversion did, so that ingest
can print it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)
# Modes that need more than a plain convert("RGB") and what ingest says about them.
_NOTES = {"L": "grey-scale, copied to 3 channels", "LA": "grey-scale with alpha: alpha dropped",
          "1": "1-bit, copied to 3 channels", "P": "palette, expanded to RGB", "PA": "palette with alpha: alpha dropped",
          "RGBA": "alpha dropped", "CMYK": "CMYK, converted to RGB", "YCbCr": "YCbCr, converted to RGB",
          "I;16": "16-bit, scaled to 8-bit", "I;16L": "16-bit, scaled to 8-bit", "I;16B": "16-bit, scaled to 8-bit",
          "I": "32-bit integer, scaled to 8-bit", "F": "floating point, scaled to 8-bit"}


@dataclass(frozen=True)
class ImageInfo:
    width: int  # upright (after EXIF orientation)
    height: int
    mode: str  # PIL mode as stored
    orientation: int  # EXIF orientation tag (1: upright or absent)


def _open_upright(path: str | Path) -> tuple[Image.Image, int]:
    """The decoded image turned upright, and the orientation tag it carried."""
    with Image.open(path) as im:
        im.load()
        orientation = int(im.getexif().get(0x0112, 1) or 1)
        return ImageOps.exif_transpose(im), orientation  # a copy: the file is closed on return


def describe_mode(mode: str) -> str:
    """What reading an image of this PIL mode as RGB does to it ('' when nothing notable)."""
    return _NOTES.get(mode, "" if mode == "RGB" else f"mode {mode}, converted to RGB")


def _to_uint8(im: Image.Image) -> Image.Image:
    """High bit depths scaled (not clipped) to 8 bits: PIL's convert would clip 16-bit values at 255."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I"):
        a = np.asarray(im).astype(np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) <= 65535 else float(a.max())
        return Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode == "F":
        a = np.asarray(im).astype(np.float64)
        top = 1.0 if a.max(initial=0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    return im


def read_rgb(path: str | Path) -> np.ndarray:
    """HxWx3 uint8, upright; raise UserError naming the file if it cannot be decoded."""
    try:
        im, _ = _open_upright(path)
        with im:
            return np.asarray(_to_uint8(im).convert("RGB"))
    except _READ_ERRORS as exc:
        raise UserError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from exc


def read_mask_values(path: str | Path) -> np.ndarray:
    """HxW label map as stored (upright): grey level, or raw 16-bit value; colour masks as luminance."""
    try:
        im, _ = _open_upright(path)
        with im:
            if im.mode in ("I;16", "I;16L", "I;16B", "I", "F"):
                return np.asarray(im).astype(np.int64)
            if im.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"):
                rgb = np.asarray(im.convert("RGB")).astype(np.int16)
                # a colour picture, not a label map (e.g. a photo in the masks folder); JPEG-stored grey
                # masks keep a little chroma noise, hence the tolerance
                if ((rgb.max(2) - rgb.min(2)) > 16).mean() > 0.01:
                    raise UserError(f"{path}: mask is a colour image ({im.mode}); expected a grey-scale label map "
                                    "(0 = background, damage from mask_min_value up)")
            return np.asarray(im.convert("L"))
    except _READ_ERRORS as exc:
        raise UserError(f"{path}: not a readable mask ({exc.__class__.__name__}: {exc})") from exc


def read_mask(path: str | Path, min_value: int = 1) -> np.ndarray:
    """HxW bool: True where the label map is >= min_value (damage)."""
    return read_mask_values(path) >= min_value


def probe(path: str | Path) -> ImageInfo:
    """Upright size, stored mode and orientation, after checking the pixels decode."""
    try:
        im, orientation = _open_upright(path)
        with im:
            return ImageInfo(im.size[0], im.size[1], im.mode, orientation)
    except _READ_ERRORS as exc:
        raise UserError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from exc


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as displayed (after EXIF orientation), after checking the pixels decode."""
    info = probe(path)
    return info.width, info.height


def upright_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as displayed, from the header only (no decoding: a quick survey of many photos)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            turned = int(im.getexif().get(0x0112, 1) or 1) in (5, 6, 7, 8)  # a quarter turn swaps the sides
    except _READ_ERRORS as exc:
        raise UserError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from exc
    return (h, w) if turned else (w, h)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, upper- and lower-case extensions alike (`.JPG`, `.jpg`)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))


def save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG", optimize=False)
