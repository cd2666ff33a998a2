"""The SR papers' visual comparison: one image, a marked box, and that box from every method.

  python scripts/compare.py --image skimage:chelsea \\
      --model mspan_x4 --model /tmp/mspan_quickstart \\
      --labels "MSPAN x4 (shipped),MSPAN x4 (quickstart)" --out compare.png

The image is the reference (HR, or the clean image for a restoration model); `skimage:NAME` names a
photo bundled with scikit-image. The models' input is --lq when given (an LR image, or the rainy /
noisy LQ of a paired set), else made as evaluation makes it: the MATLAB bicubic LR
(config.data.degradation of the first model) for SR models, or Gaussian noise of --sigma seeded by
the image's name for scale-1 restoration models (MSPAN-IR), so every run and every model sees the
same input. The figure shows the reference with the box outlined, then the box cropped (enlarged
--zoom times, nearest neighbour) from the reference, from bicubic upscaling (or the LQ input) and
from each --model, labelled with the whole image's PSNR / SSIM as the first model's config.eval
scores (SR: Y with `scale` pixels shaved). All models must share one scale and input channels; for
gray models (in_channels 1) the reference is converted with MATLAB rgb2gray.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import flags

from mspan_jax import cli, metrics
from mspan_jax.checkpoints.resolve import LoadedModel, load_model
from mspan_jax.config_base import is_restoration
from mspan_jax.data.degradations import degrade, rgb_to_gray
from mspan_jax.data.images import gray_plane, read_image, to_uint8, write_image
from mspan_jax.data.imresize import bicubic_upscale, modcrop
from mspan_jax.data.pairs import noisy_pairs
from mspan_jax.data.sample_images import read_image_or_sample
from mspan_jax.drawing import Panel, comparison_figure, zoom
from mspan_jax.errors import ConfigError
from mspan_jax.files import check_output_file
from mspan_jax.inference import Predictor

_IMAGE = flags.DEFINE_string("image", None, "The reference (HR / clean) image, or skimage:NAME.")
_MODEL = flags.DEFINE_multi_string("model", None, "CHECKPOINT (its recorded model), "
                                   "CONFIG=CHECKPOINT (e.g. configs/x4.py=ckpt/x4; CONFIG may be "
                                   "path:arg) or NAME_xS=WEIGHTS.pth for PyTorch weights (e.g. "
                                   "imdn_x4=IMDN_x4.pth); repeat for more models.")
_LABELS = flags.DEFINE_list("labels", None, "One label per --model (default: model name and "
                            "checkpoint folder).")
_BOX = flags.DEFINE_list("box", None, "TOP,LEFT of the box in reference pixels (default: the "
                         "window with the most texture, by Sobel energy).")
_CROP = flags.DEFINE_integer("crop", 64, "Side of the box in reference pixels.")
_ZOOM = flags.DEFINE_integer("zoom", 3, "Enlargement of the crops (nearest neighbour).")
_COLUMNS = flags.DEFINE_integer("columns", None, "Crops per row (default: two rows).")
_LQ = flags.DEFINE_string("lq", None, "The models' input (LR, or the noisy / rainy LQ of a paired "
                          "set) instead of making it from --image.")
_SIGMA = flags.DEFINE_float("sigma", 25.0, "Noise std (0..255) for scale-1 (restoration) models.")
_OUT = flags.DEFINE_string("out", None, "The figure (.png).")
flags.mark_flags_as_required(["image", "model", "out"])


def parse_model(spec: str) -> tuple[str | None, tuple[str, int] | None, str]:
    """(config file or None, (model, scale) or None, checkpoint) of a --model: CONFIG=CHECKPOINT,
    NAME_xS=CHECKPOINT (a PyTorch weight file's model, as upscale.py's --model NAME --scale S), or a
    bare CHECKPOINT whose recorded model is used."""
    config, sep, checkpoint = spec.partition("=")
    if not sep:
        config, checkpoint = None, spec
    if not checkpoint or config == "":
        raise ConfigError(f"--model {spec!r}: give CHECKPOINT, CONFIG=CHECKPOINT or NAME_xS=WEIGHTS, "
                          "e.g. weights/mspan_x4, configs/x4.py=ckpt/x4 or imdn_x4=IMDN_x4.pth")
    named = re.fullmatch(r"([a-z][a-z0-9_]*)_x(\d+)", config or "")
    if named and not Path(config).exists():
        return None, (named.group(1), int(named.group(2))), checkpoint
    return config, None, checkpoint


def textured_box(img: np.ndarray, size: int) -> tuple[int, int]:
    """(top, left) of the `size` window of `img` with the largest summed squared Sobel gradient."""
    gray = gray_plane(img)
    gx = np.zeros_like(gray)
    gy = np.zeros_like(gray)
    gx[1:-1, 1:-1] = (gray[:-2, 2:] + 2 * gray[1:-1, 2:] + gray[2:, 2:]
                      - gray[:-2, :-2] - 2 * gray[1:-1, :-2] - gray[2:, :-2])
    gy[1:-1, 1:-1] = (gray[2:, :-2] + 2 * gray[2:, 1:-1] + gray[2:, 2:]
                      - gray[:-2, :-2] - 2 * gray[:-2, 1:-1] - gray[:-2, 2:])
    energy = np.pad(gx**2 + gy**2, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    sums = (energy[size:, size:] - energy[:-size, size:] - energy[size:, :-size]
            + energy[:-size, :-size])
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left)


def choose_box(img: np.ndarray, size: int, box: Sequence[str] | None) -> tuple[int, int, int, int]:
    h, w = img.shape[:2]
    if not 8 <= size <= min(h, w):
        raise ConfigError(f"--crop {size}: must be between 8 and the image's shorter side {min(h, w)}")
    if box is None:
        top, left = textured_box(img, size)
    else:
        try:
            top, left = (int(v) for v in box)
        except ValueError:
            raise ConfigError(f"--box {','.join(box)}: give TOP,LEFT in pixels, e.g. 40,120") from None
        if not (0 <= top <= h - size and 0 <= left <= w - size):
            raise ConfigError(f"--box {top},{left} with --crop {size} leaves the {w}x{h} image")
    return top, left, size, size


def as_gray(img: np.ndarray) -> np.ndarray:
    """MATLAB rgb2gray of a uint8 RGB image, as uint8 R = G = B (how gray pictures are shown)."""
    return np.repeat(rgb_to_gray(img), 3, axis=2)


def run_model(loaded: LoadedModel, lq: np.ndarray) -> np.ndarray:
    """The model's uint8 (H, W, 3) output for an (h, w, 3) input, uint8 or float in [0, 1] units
    (synthetic noise, unclipped); a gray model (in_channels 1) sees the R plane of an R = G = B
    input and its output is shown as R = G = B."""
    config = loaded.config
    x = lq.astype(np.float32) / 255.0 if lq.dtype == np.uint8 else lq.astype(np.float32)
    if int(config.model.in_channels) == 1:
        x = x[:, :, :1]
    y = Predictor(loaded.model.apply, loaded.variables, scale=int(config.model.scale))(x)
    return to_uint8(np.repeat(y, 3, axis=2) if y.shape[2] == 1 else y)


def model_input(config, name: str, hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(input, baseline picture, baseline label): --lq as given, else made from the reference as
    evaluation makes it (the config's degradation for SR; seeded Gaussian noise for restoration).
    Gray models get R = G = B inputs."""
    gray = int(config.model.in_channels) == 1
    restoration = is_restoration(config)
    if _LQ.value is not None:
        lq = read_image(_LQ.value)
        if gray:
            lq = as_gray(lq)
        if lq.shape[0] * scale != hr.shape[0] or lq.shape[1] * scale != hr.shape[1]:
            raise ConfigError(f"--lq {_LQ.value} is {lq.shape[1]}x{lq.shape[0]}, but x{scale} of it "
                              f"must be the reference's {hr.shape[1]}x{hr.shape[0]}")
        if restoration:
            return lq, lq, "input"
    elif restoration:  # evaluation's noisy sets: float noise seeded by the name, unclipped
        lq = noisy_pairs([(name, hr)], _SIGMA.value, gray_noise=gray)[0].lr
        return lq, lq, f"noisy (sigma {_SIGMA.value:g})"
    else:
        lq = degrade(hr, scale, config.data.get("degradation", "BI"))
    return lq, bicubic_upscale(lq, scale), "bicubic"


def main(argv: Sequence[str]) -> None:
    if not str(_OUT.value).lower().endswith(".png"):
        raise ConfigError(f"--out {_OUT.value}: the figure is written as PNG; give a .png path")
    check_output_file(_OUT.value, "--out")
    if _ZOOM.value < 1:
        raise ConfigError(f"--zoom must be a positive integer, got {_ZOOM.value}")
    specs = [parse_model(s) for s in _MODEL.value]
    labels = _LABELS.value or [None] * len(specs)
    if len(labels) != len(specs):
        raise ConfigError(f"--labels has {len(labels)} labels for {len(specs)} --model")
    models = [load_model(ckpt, cli.load_config(c) if c else None, model=m) for c, m, ckpt in specs]
    configs = [m.config for m in models]
    kinds = {(int(c.model.scale), int(c.model.in_channels)) for c in configs}
    if len(kinds) > 1:
        raise ConfigError(f"the models differ in (scale, input channels) {sorted(kinds)}; "
                          "compare one kind at a time")
    scale, channels = kinds.pop()
    name, hr = read_image_or_sample(_IMAGE.value)
    hr = modcrop(hr, scale)
    if channels == 1:  # a gray model: the reference in gray
        hr = as_gray(hr)
    lq, baseline, base_label = model_input(configs[0], name, hr, scale)
    # Scores as the first model's config evaluates (config.eval: Y or RGB, pixels shaved).
    opts = dict(crop_border=int(configs[0].eval.crop_border), y_channel=bool(configs[0].eval.y_channel))
    box = choose_box(hr, _CROP.value, _BOX.value)
    top, left, size, _ = box

    def panel(img: np.ndarray, title: str, scored: bool = True) -> Panel:
        """A crop of `img` (uint8, or a float noisy input in [0, 1]: scored unclipped, as
        evaluate.py scores the input baseline, and shown rounded)."""
        if img.dtype != np.uint8:
            img, shown = img.astype(np.float64) * 255.0, to_uint8(img)
        else:
            shown = img
        both = dict(opts, unquantized=img.dtype != np.uint8)
        caption = (f"{metrics.psnr(img, hr, **both):.2f} dB / {metrics.ssim(img, hr, **both):.4f}"
                   if scored else "reference")
        return Panel(zoom(shown[top:top + size, left:left + size], _ZOOM.value), title, caption)

    restoration = is_restoration(configs[0])
    panels = [panel(hr, "clean" if restoration else "HR", scored=False), panel(baseline, base_label)]
    for (_, _, checkpoint), loaded, label in zip(specs, models, labels, strict=True):
        config = loaded.config
        out = run_model(loaded, lq)
        label = label or f"{config.model.name} ({Path(checkpoint).name})"
        panels.append(panel(out, label))
        print(f"{label}: {panels[-1].caption}")
    print(f"{base_label}: {panels[1].caption}")
    measured = f"{'Y' if opts['y_channel'] else 'RGB'}, {opts['crop_border']} pixels shaved"
    reference = Panel(hr, name if restoration else f"{name} ({hr.shape[1]}x{hr.shape[0]}), x{scale}",
                      f"PSNR / SSIM of the whole image on {measured}")
    columns = _COLUMNS.value or math.ceil(len(panels) / 2)
    write_image(_OUT.value, comparison_figure(reference, box, panels, columns))
    print(f"wrote {_OUT.value} (box top={top}, left={left}, size={size})")


if __name__ == "__main__":
    cli.run(main)
