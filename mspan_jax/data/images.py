"""Safe image reading and atomic writing: every image enters the package as uint8 (H, W, 3) RGB,
except through `read_stored_image`, which keeps gray, alpha and 16 bits for scripts/upscale.py
(written back by `write_stored_image` / `write_png` as PNG, 16-bit included, with the input's ICC
profile and DPI).

Every reader applies the file's EXIF orientation (as `PIL.ImageOps.exif_transpose` does), so a
phone photo stored sideways is read upright. A file is an image when Pillow can read it: by its
extension (`IMAGE_EXTENSIONS`, every format Pillow opens) or, where the extension says otherwise,
by its content (`is_image_file`).

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
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from mspan_jax.errors import DataError, first_line
from mspan_jax.files import atomic_output, write_bytes_atomic


def _readable_extensions() -> tuple[str, ...]:
    """The file extensions of every format this Pillow can open (PNG, JPEG, WebP, TIFF, BMP, GIF...)."""
    Image.init()
    return tuple(sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN))


IMAGE_EXTENSIONS = _readable_extensions()
READABLE = "PNG, JPEG, WebP, TIFF, BMP or another format Pillow reads"
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
    """A PIL image's samples, upright (its EXIF orientation applied, as files are read), as uint8
    or uint16 (H, W[, C]) (`_samples`; 32-bit integer modes clipped to 0..65535); ValueError for
    floating-point images."""
    arr = _samples(im)
    if arr.dtype.kind == "f":
        raise ValueError(f"PIL image of mode {im.mode}: floating-point images are not supported; "
                         "give uint8, uint16 or float arrays in [0, 1]")
    if arr.dtype not in (np.uint8, np.uint16):
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    return oriented(arr, orientation(im))


EXIF_ORIENTATION = 0x0112  # the EXIF / TIFF tag of how the stored pixels are to be shown


def orientation(im: Image.Image) -> int:
    """The image's EXIF orientation, 1 (as stored) to 8; 1 when it has none or an invalid one."""
    try:
        value = int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block only loses the orientation
        return 1
    return value if 1 <= value <= 8 else 1


def oriented(arr: np.ndarray, value: int) -> np.ndarray:
    """(H, W[, C]) samples as EXIF orientation `value` says to show them: what
    `PIL.ImageOps.exif_transpose` does to the image (5-8 swap height and width)."""
    if value in (5, 6, 7, 8):  # transposed first, then as 4, 1, 2, 3 (TIFF tag 274)
        arr = arr.swapaxes(0, 1)
        value = {5: 1, 6: 2, 7: 3, 8: 4}[value]
    if value in (2, 3):
        arr = arr[:, ::-1]
    if value in (3, 4):
        arr = arr[::-1]
    return np.ascontiguousarray(arr)


@dataclasses.dataclass(frozen=True)
class ImageMeta:
    """What a file says beyond its samples that an upscaled copy keeps: the ICC colour profile and
    the resolution (dots per inch, x and y as shown, after the EXIF orientation)."""

    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None

    @classmethod
    def of(cls, im: Image.Image, value: int = 1) -> ImageMeta:
        dpi = im.info.get("dpi")
        try:
            dpi = (float(dpi[0]), float(dpi[1])) if dpi is not None else None
        except (TypeError, ValueError, IndexError):
            dpi = None
        if dpi is not None and (value >= 5) and dpi[0] != dpi[1]:
            dpi = (dpi[1], dpi[0])
        return cls(icc_profile=im.info.get("icc_profile") or None, dpi=dpi)


def _check_tiles(im: Image.Image, path: Path) -> None:
    """Refuses an image whose data (its tiles, e.g. a TIFF's strips) covers fewer pixels than its
    header claims: a 230-byte TIFF of 9 x 4,128,780 decoded to 110 MB of zeros in seconds."""
    try:
        covered = sum((x1 - x0) * (y1 - y0) for (x0, y0, x1, y1) in (t[1] for t in im.tile))
    except (TypeError, ValueError, IndexError):  # no extents to count: left to Pillow's load
        return
    pixels = im.size[0] * im.size[1]
    if im.tile and covered < pixels:
        raise ImageReadError(f"{path}: corrupt image (its data covers {covered:,} of the "
                             f"{pixels:,} pixels its header claims)")


def _decode(path: Path) -> tuple[np.ndarray, str, ImageMeta]:
    """The file's samples as Pillow gives them, at full bit depth (uint8, uint16 or int32), upright
    (EXIF orientation applied), its mode and its metadata; palette (RGBA only with transparency) and
    non-RGB colour modes come as RGB(A), 1-bit as 8-bit gray. ImageReadError (one line naming the
    file) for a missing, corrupt, truncated or non-image file."""
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: a 243-byte TIFF whose
            # header claims 137M pixels decoded to 400 MB of zeros. Refused as a bomb instead.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                mode = im.mode
                rawmode16 = _sixteen_bit_rawmode(im)
                turn = orientation(im)
                meta = ImageMeta.of(im, turn)
                _check_tiles(im, path)
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
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"{path}: too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(f"{path}: corrupt or truncated image ({first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise TypeError, IndexError, ... on crafted files
        raise ImageReadError(f"{path}: corrupt image ({first_line(e, typed=True)})") from None
    if mode == "F" or arr.dtype.kind == "f":
        raise ImageReadError(f"{path}: floating-point image (mode {mode}) is not supported; "
                             "save it as 8-bit or 16-bit")
    return oriented(arr, turn), mode, meta


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as uint8 RGB (H, W, 3).

    Grayscale, alpha (dropped), 16-bit (rounded x / 257), palette and other colour modes are
    converted to 8-bit RGB with a `warnings.warn` naming the file. Raises `ImageReadError` for a
    missing, corrupt, truncated or non-image file.
    """
    path = Path(path)
    arr, mode, _ = _decode(path)
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


def write_image(path: str | os.PathLike, img: np.ndarray, meta: ImageMeta = ImageMeta()) -> None:
    """Writes uint8 (H, W, 3), or float in [0, 1] (rounded), to `path` atomically, with `meta`'s
    ICC profile and DPI.

    The format follows the suffix (.png, .bmp, .jpg/.jpeg); parent folders are created. The file
    is written to a temporary name in the same folder and renamed, so no partial file is left.
    """
    path = Path(path)
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
    options: dict = {"quality": 95} if fmt == "JPEG" else {}
    if meta.icc_profile and fmt != "BMP":
        options["icc_profile"] = meta.icc_profile
    if meta.dpi:
        options["dpi"] = meta.dpi
    _write_atomic(path, lambda f: Image.fromarray(img, "RGB").save(f, format=fmt, **options))


def _write_atomic(path: Path, save: Callable[[BinaryIO], None]) -> None:
    """Encodes with `save(file)` in memory, then writes `path` atomically (files.write_bytes_atomic):
    a failed encode leaves nothing behind."""
    buffer = io.BytesIO()
    save(buffer)
    write_bytes_atomic(path, buffer.getvalue())


@dataclasses.dataclass(frozen=True)
class StoredImage:
    """An image as its file stores it, in float32 [0, 1]: colour (H, W, 3) or gray (H, W, 1), the
    alpha channel (H, W) or None, the bit depth (8 or 16) to write it back at, and the metadata
    (ICC profile, DPI) an output keeps."""

    color: np.ndarray
    alpha: np.ndarray | None
    bits: int
    meta: ImageMeta = ImageMeta()

    def describe(self) -> str:
        kind = "gray" if self.color.shape[2] == 1 else "RGB"
        return f"{self.bits}-bit {kind}{'A' if self.alpha is not None else ''}"


def read_stored_image(path: str | os.PathLike) -> StoredImage:
    """Reads an image file keeping what `read_image` converts away: grayscale stays one channel,
    alpha is kept, 16-bit samples keep their precision (x / 65535; 8-bit: x / 255), and so do the
    ICC profile and DPI. Palette and other colour modes become RGB(A). ImageReadError for a file
    that cannot be read."""
    path = Path(path)
    arr, mode, meta = _decode(path)
    try:
        return stored_image(arr, meta)
    except ValueError:
        raise ImageReadError(f"{path}: unsupported image layout {arr.shape} (mode {mode})") from None


def stored_image(samples: np.ndarray, meta: ImageMeta = ImageMeta()) -> StoredImage:
    """The StoredImage of uint8 or uint16 (wider integers clipped to 16 bits) samples (H, W[, C]),
    C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA); ValueError for another layout."""
    bits = 8 if samples.dtype == np.uint8 else 16
    x = samples.astype(np.float32)  # scaled and clipped in place: one float copy of a large image
    x /= np.float32(255.0 if bits == 8 else 65535.0)
    np.clip(x, 0.0, 1.0, out=x)
    if x.ndim == 2:
        x = x[:, :, None]
    if x.ndim != 3 or x.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"unsupported image layout {samples.shape}")
    has_alpha = x.shape[2] in (2, 4)
    return StoredImage(color=np.ascontiguousarray(x[:, :, :-1] if has_alpha else x),
                       alpha=np.ascontiguousarray(x[:, :, -1]) if has_alpha else None, bits=bits,
                       meta=meta)


def quantize(planes: np.ndarray, bits: int) -> np.ndarray:
    """Float samples in [0, 1] -> uint8 (`to_uint8`) or uint16 (round(clip(x, 0, 1) * 65535))."""
    if bits == 8:
        return to_uint8(planes)
    return np.round(np.clip(np.asarray(planes, np.float64), 0.0, 1.0) * 65535.0).astype(np.uint16)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_filtered(rows: np.ndarray, above: np.ndarray, bpp: int) -> np.ndarray:
    """PNG scanlines of `rows` (n, stride) uint8: each behind its filter byte, filtered with the one
    of the five PNG filters of the least sum of |signed bytes| (libpng's and Pillow's heuristic);
    `above` is the row above the first (zeros at the top of the image)."""
    x = rows.astype(np.int16)
    up = np.concatenate([above[None].astype(np.int16), x[:-1]])
    left, upleft = np.zeros_like(x), np.zeros_like(x)
    left[:, bpp:], upleft[:, bpp:] = x[:, :-bpp], up[:, :-bpp]
    p = left + up - upleft
    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    candidates = np.stack([x, x - left, x - up, x - (left + up) // 2, x - paeth]).astype(np.uint8)
    cost = np.abs(candidates.view(np.int8).astype(np.int16)).sum(axis=2, dtype=np.int64)
    best = cost.argmin(axis=0)
    chosen = candidates[best, np.arange(len(rows))]
    return np.concatenate([best[:, None].astype(np.uint8), chosen], axis=1)


# Scanline bytes filtered at a time (at least one row): the encoder's working memory is a few
# dozen times this, whatever the image's size.
PNG_BLOCK_BYTES = 1 << 18


def png_chunks(strips: Iterable[np.ndarray], height: int, width: int, channels: int, bits: int,
               meta: ImageMeta = ImageMeta()) -> Iterator[bytes]:
    """A PNG (gray, gray + alpha, RGB or RGBA by `channels`; 8 or 16 bits; ICC profile and DPI from
    `meta`) of the uint8 / uint16 (rows, width, channels) strips, top to bottom, piece by piece, so
    that no more than a strip is held: what `write_png` streams to a file. Pillow writes 16 bits
    only for plain grayscale, and needs the whole image."""
    yield b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(
        ">IIBBBBB", width, height, bits, {1: 0, 2: 4, 3: 2, 4: 6}[channels], 0, 0, 0))
    if meta.icc_profile:
        yield _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(meta.icc_profile))
    if meta.dpi:
        per_metre = [int(round(d / 0.0254)) for d in meta.dpi]
        yield _png_chunk(b"pHYs", struct.pack(">IIB", *per_metre, 1))
    stride, bpp = width * channels * bits // 8, channels * bits // 8
    above = np.zeros(stride, np.uint8)
    compressor = zlib.compressobj(6)
    rows_seen = 0
    for strip in strips:
        if strip.shape[1:] != (width, channels) or strip.dtype != (np.uint8 if bits == 8 else np.uint16):
            raise ValueError(f"PNG strip {strip.shape} {strip.dtype} does not fit a {width}-wide, "
                             f"{channels}-channel {bits}-bit image")
        data = strip.reshape(len(strip), -1) if bits == 8 else \
            strip.astype(">u2").reshape(len(strip), -1).view(np.uint8)
        block = max(1, PNG_BLOCK_BYTES // stride)
        for i in range(0, len(data), block):
            rows = data[i:i + block]
            packed = compressor.compress(_png_filtered(rows, above, bpp).tobytes())
            above = rows[-1]
            if packed:
                yield _png_chunk(b"IDAT", packed)
        rows_seen += len(strip)
    if rows_seen != height:
        raise ValueError(f"PNG strips hold {rows_seen} rows, expected {height}")
    yield _png_chunk(b"IDAT", compressor.flush()) + _png_chunk(b"IEND", b"")


def png16_bytes(samples: np.ndarray) -> bytes:
    """A 16-bit PNG (gray, gray + alpha, RGB or RGBA by the channel count) of uint16 (H, W, C)."""
    h, w, c = samples.shape
    return b"".join(png_chunks([samples.astype(np.uint16)], h, w, c, 16))


def write_png(path: str | os.PathLike, strips: Iterable[np.ndarray], height: int, width: int,
              channels: int, bits: int, meta: ImageMeta = ImageMeta()) -> None:
    """Streams `png_chunks` to a temporary sibling of `path`, then renames it over `path`: a failed
    or interrupted write leaves nothing behind, and memory holds one strip, not the image."""
    with atomic_output(path) as f:
        for piece in png_chunks(strips, height, width, channels, bits, meta):
            f.write(piece)


def stored_planes(image: StoredImage) -> np.ndarray:
    """Colour and alpha of a StoredImage as one (H, W, C) float array (alpha last)."""
    return image.color if image.alpha is None else np.concatenate(
        [image.color, image.alpha[:, :, None]], axis=2)


def write_stored_image(path: str | os.PathLike, image: StoredImage) -> None:
    """Writes a StoredImage as a PNG at its bit depth, with its alpha and metadata, atomically
    (values rounded and clipped to [0, 1])."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"{path}: images that keep alpha / 16 bits / gray are written as .png")
    samples = quantize(stored_planes(image), image.bits)
    write_png(path, [samples], *samples.shape, image.bits, image.meta)


def is_image_file(path: Path) -> bool:
    """Whether `path` is an image to read: a file with the extension of a format Pillow reads or,
    whatever its extension says, content Pillow recognises (a WebP named .dat, a JPEG without one)."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with Image.open(path):
            return True
    except Exception:  # noqa: BLE001 - anything Pillow cannot open is not an image
        return False


def list_images(folder: str | os.PathLike) -> list[Path]:
    """The image files (`is_image_file`; hidden files left out) directly in `folder`, sorted by name."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: image folder does not exist")
    if not folder.is_dir():
        raise DataError(f"{folder}: is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and is_image_file(p))
    if not files:
        raise DataError(f"{folder}: holds no images ({READABLE})")
    return files
