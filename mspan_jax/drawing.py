"""Labelled picture grids with Pillow: the training loop's validation samples and scripts/compare.py.

Each panel is an image with a title and a caption (e.g. its PSNR/SSIM) written underneath; panels
sit in a grid of equal cells on white. `comparison_figure` puts a reference image with a marked box
to the left of such a grid, as the SR papers' visual comparisons do. Pillow only (no matplotlib), so
the training loop can draw its samples with the core dependencies.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_SIZE = 14
MARGIN = 6  # pixels around every panel, and between a panel's image and its text
LINE_GAP = 2
BOX_COLOR = (255, 0, 0)
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)


@dataclasses.dataclass(frozen=True)
class Panel:
    """One image of a figure and the text lines written under it."""

    image: np.ndarray  # uint8 (H, W, 3)
    title: str
    caption: str = ""

    @property
    def lines(self) -> list[str]:
        return [t for t in (self.title, self.caption) if t]


@functools.cache
def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at `size` pixels (FreeType when available, else its bitmap font)."""
    return ImageFont.load_default(size=size)


def _text_size(text: str, font) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(math.ceil(right - left)), int(math.ceil(bottom))


def _check_image(image: np.ndarray, what: str) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what} must be a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    return image


def zoom(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (pixels stay visible as squares)."""
    if factor < 1:
        raise ValueError(f"zoom factor must be a positive integer, got {factor}")
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1) if factor > 1 else image


def draw_box(image: np.ndarray, box: tuple[int, int, int, int], *, color=BOX_COLOR,
             width: int = 2) -> np.ndarray:
    """A copy of `image` with the rectangle `box` = (top, left, height, width) outlined."""
    top, left, h, w = box
    pil = Image.fromarray(_check_image(image, "image"))
    ImageDraw.Draw(pil).rectangle((left, top, left + w - 1, top + h - 1), outline=color, width=width)
    return np.asarray(pil)


def panel_grid(panels: Sequence[Panel], columns: int | None = None,
               font_size: int = FONT_SIZE) -> np.ndarray:
    """The panels in a grid of equal cells (`columns` per row, default all in one row), each image
    centred at the top of its cell with its title and caption centred underneath. uint8 (H, W, 3).

    All cells have the size of the largest image and widest text, so panels of equal image size
    sit at equal spacing."""
    if not panels:
        raise ValueError("panel_grid needs at least one panel")
    images = [_check_image(p.image, f"panel {p.title!r}") for p in panels]
    font = _font(font_size)
    line_h = _text_size("Ag", font)[1] + LINE_GAP
    text_w = max((_text_size(t, font)[0] for p in panels for t in p.lines), default=0)
    n_lines = max(len(p.lines) for p in panels)
    cell_w = max(max(im.shape[1] for im in images), text_w) + 2 * MARGIN
    image_h = max(im.shape[0] for im in images)
    cell_h = image_h + 2 * MARGIN + (MARGIN // 2 + n_lines * line_h if n_lines else 0)
    columns = len(panels) if columns is None else max(1, min(columns, len(panels)))
    rows = math.ceil(len(panels) / columns)
    canvas = Image.new("RGB", (columns * cell_w, rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for i, (panel, image) in enumerate(zip(panels, images, strict=True)):
        x0, y0 = (i % columns) * cell_w, (i // columns) * cell_h
        canvas.paste(Image.fromarray(image), (x0 + (cell_w - image.shape[1]) // 2, y0 + MARGIN))
        y = y0 + MARGIN + image_h + MARGIN // 2
        for line in panel.lines:
            draw.text((x0 + (cell_w - _text_size(line, font)[0]) // 2, y), line, fill=TEXT_COLOR,
                      font=font)
            y += line_h
    return np.asarray(canvas)


def comparison_figure(reference: Panel, box: tuple[int, int, int, int], crops: Sequence[Panel],
                      columns: int | None = None, font_size: int = FONT_SIZE) -> np.ndarray:
    """The papers' visual comparison: `reference` (e.g. the HR image) with `box` = (top, left,
    height, width) outlined, scaled to the height of the grid of `crops` beside it."""
    grid = panel_grid(crops, columns, font_size)
    marked = draw_box(reference.image, box, width=max(2, round(max(reference.image.shape[:2]) / 200)))
    font = _font(font_size)
    text_h = len(reference.lines) * (_text_size("Ag", font)[1] + LINE_GAP) + MARGIN // 2
    target_h = grid.shape[0] - 2 * MARGIN - text_h
    factor = target_h / marked.shape[0]
    size = (max(1, round(marked.shape[1] * factor)), max(1, target_h))
    scaled = np.asarray(Image.fromarray(marked).resize(size, Image.Resampling.LANCZOS))
    left = panel_grid([dataclasses.replace(reference, image=scaled)], font_size=font_size)
    height = max(left.shape[0], grid.shape[0])
    pad = [np.pad(p, ((0, height - p.shape[0]), (0, 0), (0, 0)), constant_values=255)
           for p in (left, grid)]
    return np.concatenate(pad, axis=1)
