"""Safe image reading and atomic writing: every image enters the package as uint8 (H, W, 3) RGB.

Anything that is not 8-bit RGB is converted with a warning naming the file, and anything that
cannot be decoded raises one `ImageReadError` line naming the file, so a bad file in a dataset is
reported, never silently skipped or fed to a model in the wrong layout.
"""

from __future__ import annotations

import os
import sys
import uuid
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mspan_jax.metrics import to_uint8

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
WRITE_FORMATS = {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".jpeg": "JPEG"}
_SWAPPED_16BIT = {"16B": "16L", "16L": "16B", "16N": "16B" if sys.byteorder == "little" else "16L"}


# MATLAB rgb2gray's weights (ITU-R BT.601 luma): gray = GRAY_WEIGHTS . (R, G, B).
GRAY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def rgb_to_gray(img: np.ndarray) -> np.ndarray:
    """MATLAB rgb2gray of an (H, W, 3) image, unrounded, in the input's units: float64 (H, W)."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb_to_gray needs an (H, W, 3) image, got shape {img.shape}")
    return img.astype(np.float64) @ GRAY_WEIGHTS


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message is one line naming the file."""


def _sixteen_bit_rawmode(im: Image.Image) -> str | None:
    """The rawmode of a 16-bit-per-channel RGB(A) file that Pillow would reduce to 8 bits."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return None
    args = im.tile[0].args
    rawmode = args if isinstance(args, str) else (args[0] if args and isinstance(args[0], str) else "")
    return rawmode if rawmode[-3:] in _SWAPPED_16BIT else None


def _read_16bit_rgb(path: Path, rawmode: str) -> np.ndarray:
    """Full-precision uint16 RGB(A) of a 16-bit file: Pillow keeps only the high byte of each
    sample, so the file is decoded a second time with the byte order swapped to get the low byte."""
    with Image.open(path) as im:
        high = np.asarray(im).astype(np.uint16)
    swapped = rawmode[:-3] + _SWAPPED_16BIT[rawmode[-3:]]
    with Image.open(path) as im:
        im.tile = [t._replace(args=swapped if isinstance(t.args, str) else (swapped, *t.args[1:]))
                   for t in im.tile]
        low = np.asarray(im).astype(np.uint16)
    return high * 256 + low


def _sixteen_to_eight(x: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255 by rounding x / 257 (65535 / 257 = 255 exactly)."""
    return np.floor(np.clip(x, 0, 65535).astype(np.float64) / 257.0 + 0.5).astype(np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as uint8 RGB (H, W, 3).

    Grayscale, alpha (dropped), 16-bit (rounded x / 257), palette and other colour modes are
    converted to 8-bit RGB with a `warnings.warn` naming the file. Raises `ImageReadError` for a
    missing, corrupt, truncated or non-image file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with Image.open(path) as im:
            mode = im.mode
            rawmode16 = _sixteen_bit_rawmode(im)
            im.load()
            if rawmode16 is None:
                arr = np.asarray(im) if mode not in ("P", "PA", "1", "CMYK", "YCbCr", "LAB", "HSV") \
                    else np.asarray(im.convert("RGBA" if mode in ("P", "PA") else "RGB"))
        if rawmode16 is not None:
            arr = _read_16bit_rgb(path, rawmode16)
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file Pillow can decode") from None
    except PermissionError:
        raise ImageReadError(f"{path}: cannot be read (permission denied)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageReadError(f"{path}: corrupt or truncated image ({detail})") from None

    notes = []
    if mode in ("P", "PA"):
        notes.append("palette image converted to RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        notes.append(f"{mode} image converted to RGB")
    elif mode == "1":
        notes.append("1-bit image converted to 8-bit")
    if mode == "F" or arr.dtype.kind == "f":
        raise ImageReadError(f"{path}: floating-point image (mode {mode}) is not supported; "
                             "save it as 8-bit or 16-bit")
    if arr.dtype != np.uint8:
        notes.append("16-bit image reduced to 8-bit (rounded x / 257)")
        arr = _sixteen_to_eight(arr)
    if arr.ndim == 2:
        if mode != "1":
            notes.append("grayscale image converted to RGB")
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.shape[2] == 2:  # LA
        notes.append("grayscale image converted to RGB, alpha channel dropped")
        arr = np.repeat(arr[:, :, :1], 3, axis=2)
    elif arr.shape[2] == 4:
        if mode not in ("P", "PA"):
            notes.append("alpha channel dropped")
        arr = arr[:, :, :3]
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ImageReadError(f"{path}: unsupported image layout {arr.shape} (mode {mode})")
    if notes:
        warnings.warn(f"{path}: {'; '.join(notes)}", stacklevel=2)
    return np.ascontiguousarray(arr)


def write_image(path: str | os.PathLike, img: np.ndarray) -> None:
    """Writes uint8 (H, W, 3), or float in [0, 1] (rounded), to `path` atomically.

    The format follows the suffix (.png, .bmp, .jpg/.jpeg); parent folders are created. The file
    is written to a temporary name in the same folder and renamed, so no partial file is left.
    """
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"{path}: cannot write suffix {path.suffix!r}; "
                         f"use one of {sorted(WRITE_FORMATS)}")
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{path}: write_image needs an (H, W, 3) image, got shape {img.shape}")
    if img.dtype.kind == "f":
        img = to_uint8(img)
    elif img.dtype != np.uint8:
        raise ValueError(f"{path}: write_image needs uint8 or float in [0, 1], got {img.dtype}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"  # open(..., "xb") keeps the umask
    try:
        with open(tmp, "xb") as f:
            options = {"quality": 95} if fmt == "JPEG" else {}
            Image.fromarray(img, "RGB").save(f, format=fmt, **options)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (png/bmp/jpg/jpeg/tif/tiff, any case) directly in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.exists():
        raise ValueError(f"{folder}: image folder does not exist")
    if not folder.is_dir():
        raise ValueError(f"{folder}: is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"{folder}: holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files
