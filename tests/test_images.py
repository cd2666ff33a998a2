"""Image I/O: every mode becomes uint8 RGB with a warning, bad files fail in one line, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from mspan_jax.data.images import (
    ImageReadError,
    StoredImage,
    list_images,
    png16_bytes,
    read_image,
    read_stored_image,
    write_image,
    write_stored_image,
)

RNG = np.random.default_rng(0)


def _write_png16(path, samples: np.ndarray) -> None:
    """A 16-bit PNG (grayscale, RGB or RGBA): Pillow cannot write 16-bit RGB."""
    path.write_bytes(png16_bytes(samples))


def _rounded_8bit(x16: np.ndarray) -> np.ndarray:
    return np.floor(x16 / 257.0 + 0.5).astype(np.uint8)


def test_rgb_round_trip_png_and_bmp(tmp_path):
    img = RNG.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    for suffix in (".png", ".bmp"):
        write_image(tmp_path / f"a{suffix}", img)
        out = read_image(tmp_path / f"a{suffix}")
        assert out.dtype == np.uint8 and out.shape == (9, 7, 3)
        np.testing.assert_array_equal(out, img)


def test_float_is_rounded_and_parent_dirs_made(tmp_path):
    img = np.array([[[0.0, 0.5, 1.0], [1.2, -0.1, 0.002]]])
    write_image(tmp_path / "deep" / "er" / "f.png", img)
    np.testing.assert_array_equal(read_image(tmp_path / "deep" / "er" / "f.png"),
                                  [[[0, 128, 255], [255, 0, 1]]])
    assert [p.name for p in (tmp_path / "deep" / "er").iterdir()] == ["f.png"]  # no temp file left


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="suffix"):
        write_image(tmp_path / "x.gif", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        write_image(tmp_path / "x.png", np.zeros((2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_grayscale_becomes_rgb_with_warning(tmp_path):
    gray = RNG.integers(0, 256, (5, 6), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    with pytest.warns(UserWarning, match=r"g\.png: grayscale"):
        out = read_image(tmp_path / "g.png")
    np.testing.assert_array_equal(out, np.repeat(gray[..., None], 3, axis=2))


def test_alpha_dropped_with_warning(tmp_path):
    rgba = RNG.integers(0, 256, (5, 6, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    with pytest.warns(UserWarning, match="alpha channel dropped"):
        out = read_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out, rgba[..., :3])
    Image.fromarray(rgba[..., :2], "LA").save(tmp_path / "la.png")
    with pytest.warns(UserWarning, match="grayscale.*alpha"):
        out = read_image(tmp_path / "la.png")
    np.testing.assert_array_equal(out, np.repeat(rgba[..., :1], 3, axis=2))


def test_palette_becomes_rgb_with_warning(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[:2] = (200, 10, 30)
    rgb[2:] = (5, 250, 90)
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=4).save(tmp_path / "p.png")
    with pytest.warns(UserWarning, match="palette"):
        out = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(out, rgb)


def test_16bit_grayscale_png_rounds_not_clips(tmp_path):
    # Pillow opens it as mode 'I;16'; its own convert('RGB') would clip everything above 255.
    g16 = np.array([[0, 128, 129, 256, 385, 65535, 40000, 1000]], dtype=np.uint16)
    _write_png16(tmp_path / "g16.png", g16[..., None])
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    with pytest.warns(UserWarning, match="16-bit"):
        out = read_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 0], _rounded_8bit(g16))
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_rgb_png_uses_both_bytes(tmp_path, channels):
    # Pillow alone keeps the high byte (floor(x / 256)); 128 -> 0 but 128 / 257 rounds to 0 and
    # 129 / 257 rounds to 1, 385 -> 1 by both, 65535 -> 255: the test tells the two apart.
    x16 = RNG.integers(0, 65536, (6, 5, channels), dtype=np.uint16)
    x16[0, 0, :3] = (129, 65535, 40000)
    _write_png16(tmp_path / "c16.png", x16)
    with pytest.warns(UserWarning, match="16-bit"):
        out = read_image(tmp_path / "c16.png")
    np.testing.assert_array_equal(out, _rounded_8bit(x16[..., :3]))
    assert out[0, 0, 0] == 1


@pytest.mark.parametrize("compression, byteorder", [(None, "<"), (None, ">"), ("zlib", "<")])
def test_16bit_rgb_tiff(tmp_path, compression, byteorder):
    # Pillow decodes these with rawmodes RGB;16L, RGB;16B and (libtiff) RGB;16N.
    x16 = RNG.integers(0, 65536, (6, 5, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "c16.tif", x16, compression=compression, byteorder=byteorder)
    with pytest.warns(UserWarning, match="16-bit"):
        out = read_image(tmp_path / "c16.tif")
    np.testing.assert_array_equal(out, _rounded_8bit(x16))


def test_bad_files_raise_one_line(tmp_path):
    (tmp_path / "text.png").write_text("not an image at all")
    good = tmp_path / "good.png"
    write_image(good, RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:200])
    (tmp_path / "empty.bmp").write_bytes(b"")
    for name in ("text.png", "trunc.png", "empty.bmp", "missing.png"):
        with pytest.raises(ImageReadError) as info:
            read_image(tmp_path / name)
        message = str(info.value)
        assert name in message and "\n" not in message
    with pytest.raises(ImageReadError, match="not a file"):
        read_image(tmp_path)


def test_list_images_sorted_case_insensitive(tmp_path):
    for name in ("b.PNG", "a.bmp", "c.JPeg", "d.tif", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub.png").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["a.bmp", "b.PNG", "c.JPeg", "d.tif"]


def test_list_images_errors_name_the_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "f.png").write_bytes(b"")
    with pytest.raises(ValueError, match="is not a folder"):
        list_images(tmp_path / "f.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: holds no images"):
        list_images(tmp_path / "empty")


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_stored_image_keeps_gray_alpha_and_16_bits(tmp_path, channels, bits):
    top = 255 if bits == 8 else 65535
    samples = RNG.integers(0, top + 1, (5, 7, channels)).astype(np.uint16 if bits == 16 else np.uint8)
    x = samples.astype(np.float32) / top
    alpha = x[:, :, -1] if channels in (2, 4) else None
    colour = x[:, :, :-1] if alpha is not None else x
    write_stored_image(tmp_path / "a.png", StoredImage(colour, alpha, bits))
    if channels == 2 and bits == 16:  # Pillow decodes only the high bytes of 16-bit gray + alpha
        with pytest.raises(ImageReadError, match="16-bit grayscale \\+ alpha is not supported"):
            read_stored_image(tmp_path / "a.png")
        return
    with Image.open(tmp_path / "a.png") as im:  # what other programs see
        assert im.mode == {1: "I;16" if bits == 16 else "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    back = read_stored_image(tmp_path / "a.png")
    assert back.bits == bits and back.color.shape == colour.shape
    np.testing.assert_array_equal(np.round(back.color * top), samples[:, :, :colour.shape[2]])
    if alpha is None:
        assert back.alpha is None
    else:
        np.testing.assert_array_equal(np.round(back.alpha * top), samples[:, :, -1])


def test_stored_image_reads_16bit_tiff_and_rejects_other_suffixes(tmp_path):
    g16 = RNG.integers(0, 65536, (4, 6), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", g16)
    back = read_stored_image(tmp_path / "g.tif")
    assert back.bits == 16 and back.color.shape == (4, 6, 1) and back.alpha is None
    np.testing.assert_array_equal(np.round(back.color[:, :, 0] * 65535), g16)
    with pytest.raises(ValueError, match="written as .png"):
        write_stored_image(tmp_path / "g.jpg", back)
    with pytest.raises(ImageReadError, match="not an image"):
        (tmp_path / "bad.png").write_bytes(b"nope")
        read_stored_image(tmp_path / "bad.png")


def _tiff_with_tag(path, side: int, tag: int, kind: int, value: int) -> None:
    """A side x side 8-bit gray TIFF whose IFD entry `tag` is rewritten as (type `kind`, count 1,
    `value`)."""
    import io
    import struct

    out = io.BytesIO()
    Image.new("L", (side, side)).save(out, "TIFF")
    data = bytearray(out.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for i in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * i
        if struct.unpack_from("<H", data, entry)[0] == tag:
            struct.pack_into("<HHII", data, entry, tag, kind, 1, value)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("rows, refused", [(12_517_387, "too large to decode safely"),
                                           (4_128_780, "corrupt image .its data covers 121 of the "
                                                       "45,416,580 pixels")])
def test_a_tiny_file_claiming_a_huge_image_is_refused(tmp_path, rows, refused):
    """Found by benchmarks/fuzz_readers.py: an 11 x 11 TIFF whose header claims 12,517,387 rows
    (137M pixels, under Pillow's error limit, where it only warns) decoded to 400 MB of zeros in
    seconds; with 4,128,780 rows (under the warning too), 110 MB. Refused in one line, as a
    decompression bomb or as data that covers too few of the pixels."""
    _tiff_with_tag(tmp_path / "bomb.tif", 11, 257, 4, rows)  # ImageLength, a LONG
    with pytest.raises(ImageReadError, match=f"bomb.tif: {refused}") as info:
        read_image(tmp_path / "bomb.tif")
    assert "\n" not in str(info.value)


def test_a_tiff_with_a_malformed_tag_type_fails_in_one_line(tmp_path):
    """Found by benchmarks/fuzz_readers.py: StripOffsets stored as a RATIONAL made Pillow raise a
    TypeError, which escaped the reader as a traceback."""
    _tiff_with_tag(tmp_path / "rational.tif", 4, 273, 5, 0)  # StripOffsets, a RATIONAL
    with pytest.raises(ImageReadError, match="rational.tif: corrupt image .TypeError") as info:
        read_image(tmp_path / "rational.tif")
    assert "\n" not in str(info.value)


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_and_icc_and_dpi_kept(tmp_path, orientation):
    """A phone photo stored sideways (EXIF orientation 2-8) is read upright, as
    PIL.ImageOps.exif_transpose shows it, by every reader; its ICC profile and DPI are kept."""
    from PIL import ImageOps

    from mspan_jax.data.images import pil_to_array

    stored = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)  # 10 wide, 6 high: not symmetric
    stored[:3, :5] = 0  # a dark top-left quarter, so that a wrong turn shows in the values
    exif = Image.Exif()
    exif[0x0112] = orientation
    icc = _srgb_profile()
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, icc_profile=icc, dpi=(300, 150),
                                 quality=95)
    with Image.open(tmp_path / "phone.jpg") as im:
        upright = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        np.testing.assert_array_equal(pil_to_array(im), upright)
    assert upright.shape[:2] == ((10, 6) if orientation >= 5 else (6, 10))
    np.testing.assert_array_equal(read_image(tmp_path / "phone.jpg"), upright)
    back = read_stored_image(tmp_path / "phone.jpg")
    np.testing.assert_array_equal(np.round(back.color * 255).astype(np.uint8), upright)
    assert back.meta.icc_profile == icc
    assert back.meta.dpi == ((150.0, 300.0) if orientation >= 5 else (300.0, 150.0))

    write_stored_image(tmp_path / "out.png", back)  # an output keeps both
    with Image.open(tmp_path / "out.png") as im:
        assert im.info["icc_profile"] == icc and im.info["dpi"] == pytest.approx(back.meta.dpi, abs=0.02)
        np.testing.assert_array_equal(np.asarray(im), upright)
    write_image(tmp_path / "out.jpg", upright, back.meta)
    with Image.open(tmp_path / "out.jpg") as im:
        assert im.info["icc_profile"] == icc and im.info["dpi"] == pytest.approx(back.meta.dpi)


@pytest.mark.parametrize(("bits", "channels"), [(8, 1), (8, 3), (8, 4), (16, 2), (16, 3), (16, 4)])
def test_png_streamed_in_strips_reads_back_exactly(tmp_path, bits, channels):
    """write_png encodes strips as they come, each row with the PNG filter that suits it (several
    in a smooth ramp over noise), and Pillow / our 16-bit reader decode exactly the samples."""
    import struct
    import zlib

    from mspan_jax.data.images import write_png

    top = 255 if bits == 8 else 65535
    ramp = np.linspace(0, top, 37)[None, :, None] * np.linspace(0, 1, 23)[:, None, None]
    samples = np.repeat(ramp, channels, axis=2)
    samples[10:] = RNG.integers(0, top + 1, samples[10:].shape)  # noise below a smooth ramp
    samples = samples.astype(np.uint8 if bits == 8 else np.uint16)
    strips = (samples[a:a + 7] for a in range(0, 23, 7))  # 7, 7, 7, 2 rows
    write_png(tmp_path / "s.png", strips, 23, 37, channels, bits)
    data, idat, at = (tmp_path / "s.png").read_bytes(), b"", 8
    while at < len(data):  # the IDAT chunks' data, joined
        length = struct.unpack(">I", data[at:at + 4])[0]
        idat += data[at + 8:at + 8 + length] if data[at + 4:at + 8] == b"IDAT" else b""
        at += 12 + length
    filters = set(zlib.decompress(idat)[::1 + 37 * channels * bits // 8])
    assert len(filters) >= 3 and filters <= set(range(5)), filters
    if bits == 16 and channels == 2:  # 16-bit gray + alpha: Pillow decodes only the high bytes
        with Image.open(tmp_path / "s.png") as im:
            assert im.size == (37, 23)
        return
    back = read_stored_image(tmp_path / "s.png")
    planes = back.color if back.alpha is None else np.dstack([back.color, back.alpha])
    np.testing.assert_array_equal(np.round(planes * top), samples)
    with pytest.raises(ValueError, match="strips hold 7 rows, expected 23"):
        write_png(tmp_path / "t.png", [samples[:7]], 23, 37, channels, bits)
    assert not (tmp_path / "t.png").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]


def test_a_folder_lists_every_format_pillow_reads_by_content_where_the_extension_lies(tmp_path):
    """WebP (and the rest of Pillow's formats) count as images; a JPEG without an image extension is
    one by its content; a text file is not."""
    from mspan_jax.data.images import IMAGE_EXTENSIONS

    assert {".webp", ".gif", ".tif", ".bmp", ".png", ".jpg"} <= set(IMAGE_EXTENSIONS)
    rgb = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.webp", lossless=True)
    Image.fromarray(rgb).save(tmp_path / "b.dat", format="JPEG")
    (tmp_path / "c.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["a.webp", "b.dat"]
    np.testing.assert_array_equal(read_image(tmp_path / "a.webp"), rgb)
