"""Safe image reading and atomic writing: every image enters the package as uint8 (H, W, 3) RGB,
except through `read_stored_image`, which keeps gray, alpha and 16 bits for scripts/upscale.py
(written back by `write_stored_image` as PNG, 16-bit included).

Anything that is not 8-bit RGB is converted with a warning naming the file, and anything that
cannot be decoded raises one `ImageReadError` line naming the file, so a bad file in a dataset is
reported, never silently skipped or fed to a model in the wrong layout.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
from etils import epath
from PIL import Image, UnidentifiedImageError

from mspan_jax.errors import DataError, first_line
from mspan_jax.files import write_bytes_atomic
from mspan_jax.storage import as_path

IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff")
WRITE_FORMATS = {".png": "PNG", ".bmp": "BMP", ".jpg": "JPEG", ".jpeg": "JPEG"}
_SWAPPED_16BIT = {"16B": "16L", "16L": "16B", "16N": "16B" if sys.byteorder == "little" else "16L"}


# MATLAB rgb2gray's weights (ITU-R BT.601 luma): gray = GRAY_WEIGHTS . (R, G, B).
GRAY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float image in [0, 1] -> uint8: round(clip(x, 0, 1) * 255), the package's one quantizer (what
    saving a float image writes, and what metrics score)."""
    return np.round(np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def gray_plane(img: np.ndarray) -> np.ndarray:
    """MATLAB rgb2gray of an (H, W, 3) image, unrounded, in the input's units: float64 (H, W).
    (degradations.rgb_to_gray rounds it to uint8 (H, W, 1).)"""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"gray_plane needs an (H, W, 3) image, got shape {img.shape}")
    return img.astype(np.float64) @ GRAY_WEIGHTS


class ImageReadError(DataError):
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


def _samples(im: Image.Image) -> np.ndarray:
    """The samples of a PIL image: palette as RGB, or RGBA when it carries transparency; 1-bit as
    8-bit gray; CMYK, YCbCr, LAB and HSV as RGB; other modes as they are."""
    target = {"PA": "RGBA", "1": "L", "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB"}.get(
        im.mode)
    if im.mode == "P":
        target = "RGBA" if "transparency" in im.info else "RGB"
    return np.asarray(im.convert(target)) if target else np.asarray(im)


def pil_to_array(im: Image.Image) -> np.ndarray:
    """A PIL image's samples as uint8 or uint16 (H, W[, C]) (`_samples`; 32-bit integer modes
    clipped to 0..65535); ValueError for floating-point images."""
    arr = _samples(im)
    if arr.dtype.kind == "f":
        raise ValueError(f"PIL image of mode {im.mode}: floating-point images are not supported; "
                         "give uint8, uint16 or float arrays in [0, 1]")
    if arr.dtype not in (np.uint8, np.uint16):
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    return arr


def _decode(path: Path) -> tuple[np.ndarray, str]:
    """The file's samples as Pillow gives them, at full bit depth (uint8, uint16 or int32), and its
    mode; palette (RGBA only with transparency) and non-RGB colour modes come as RGB(A), 1-bit as
    8-bit gray. ImageReadError (one
    line naming the file) for a missing, corrupt, truncated or non-image file."""
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with Image.open(path) as im:
            mode = im.mode
            rawmode16 = _sixteen_bit_rawmode(im)
            im.load()
            if rawmode16 is None:
                arr = _samples(im)
        if rawmode16 is not None and rawmode16.startswith("LA"):  # Pillow has no low-byte rawmode
            raise ImageReadError(f"{path}: 16-bit grayscale + alpha is not supported; save it as "
                                 "16-bit RGBA, 16-bit gray or 8-bit")
        if rawmode16 is not None:
            arr = _read_16bit_rgb(path, rawmode16)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file Pillow can decode") from None
    except PermissionError:
        raise ImageReadError(f"{path}: cannot be read (permission denied)") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"{path}: too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(f"{path}: corrupt or truncated image ({first_line(e)})") from None
    if mode == "F" or arr.dtype.kind == "f":
        raise ImageReadError(f"{path}: floating-point image (mode {mode}) is not supported; "
                             "save it as 8-bit or 16-bit")
    return arr, mode


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as uint8 RGB (H, W, 3).

    Grayscale, alpha (dropped), 16-bit (rounded x / 257), palette and other colour modes are
    converted to 8-bit RGB with a `warnings.warn` naming the file. Raises `ImageReadError` for a
    missing, corrupt, truncated or non-image file.
    """
    path = Path(path)
    arr, mode = _decode(path)
    notes = []
    if mode in ("P", "PA"):
        notes.append("palette image converted to RGB")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        notes.append(f"{mode} image converted to RGB")
    elif mode == "1":
        notes.append("1-bit image converted to 8-bit")
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
    `path` may be a gs:// URL.
    """
    path = as_path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(f"{path}: cannot write suffix {path.suffix!r}; "
                        f"use one of {sorted(WRITE_FORMATS)}")
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{path}: write_image needs an (H, W, 3) image, got shape {img.shape}")
    if img.dtype.kind == "f":
        img = to_uint8(img)
    elif img.dtype != np.uint8:
        raise ValueError(f"{path}: write_image needs uint8 or float in [0, 1], got {img.dtype}")
    options = {"quality": 95} if fmt == "JPEG" else {}
    _write_atomic(path, lambda f: Image.fromarray(img, "RGB").save(f, format=fmt, **options))


def _write_atomic(path: Path | epath.Path, save: Callable[[BinaryIO], None]) -> None:
    """Encodes with `save(file)` in memory, then writes `path` atomically (files.write_bytes_atomic):
    a failed encode leaves nothing behind."""
    buffer = io.BytesIO()
    save(buffer)
    write_bytes_atomic(path, buffer.getvalue())


@dataclasses.dataclass(frozen=True)
class StoredImage:
    """An image as its file stores it, in float32 [0, 1]: colour (H, W, 3) or gray (H, W, 1), the
    alpha channel (H, W) or None, and the bit depth (8 or 16) to write it back at."""

    color: np.ndarray
    alpha: np.ndarray | None
    bits: int

    def describe(self) -> str:
        kind = "gray" if self.color.shape[2] == 1 else "RGB"
        return f"{self.bits}-bit {kind}{'A' if self.alpha is not None else ''}"


def read_stored_image(path: str | os.PathLike) -> StoredImage:
    """Reads an image file keeping what `read_image` converts away: grayscale stays one channel,
    alpha is kept, 16-bit samples keep their precision (x / 65535; 8-bit: x / 255). Palette and
    other colour modes become RGB(A). ImageReadError for a file that cannot be read."""
    path = Path(path)
    arr, mode = _decode(path)
    bits = 8 if arr.dtype == np.uint8 else 16
    x = np.clip(arr.astype(np.float32) / (255.0 if bits == 8 else 65535.0), 0.0, 1.0)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4):
        raise ImageReadError(f"{path}: unsupported image layout {arr.shape} (mode {mode})")
    has_alpha = x.shape[2] in (2, 4)
    return StoredImage(color=np.ascontiguousarray(x[:, :, :-1] if has_alpha else x),
                       alpha=np.ascontiguousarray(x[:, :, -1]) if has_alpha else None, bits=bits)


def png16_bytes(samples: np.ndarray) -> bytes:
    """A 16-bit PNG (gray, gray + alpha, RGB or RGBA by the channel count) of uint16 (H, W, C):
    Pillow writes 16 bits only for plain grayscale."""
    h, w, c = samples.shape
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in samples)  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 2: 4, 3: 2, 4: 6}[c], 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))


def write_stored_image(path: str | os.PathLike, image: StoredImage) -> None:
    """Writes a StoredImage as a PNG at its bit depth, with its alpha, atomically (values rounded
    and clipped to [0, 1])."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"{path}: images that keep alpha / 16 bits / gray are written as .png")
    planes = image.color if image.alpha is None else np.concatenate(
        [image.color, image.alpha[:, :, None]], axis=2)
    top = 255.0 if image.bits == 8 else 65535.0
    samples = np.round(np.clip(np.asarray(planes, np.float64), 0.0, 1.0) * top)
    if image.bits == 8:
        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[samples.shape[2]]
        pixels = samples.astype(np.uint8)
        _write_atomic(path, lambda f: Image.fromarray(
            pixels[:, :, 0] if mode == "L" else pixels, mode).save(f, format="PNG"))
    else:
        data = png16_bytes(samples.astype(np.uint16))
        _write_atomic(path, lambda f: f.write(data))


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (png/bmp/jpg/jpeg/tif/tiff, any case) directly in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: image folder does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder}: is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DataError(f"{folder}: holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files
