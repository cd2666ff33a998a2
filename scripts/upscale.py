"""Super-resolves (or, with a scale-1 restoration model, restores) your own images of any size.

  python scripts/upscale.py --checkpoint /tmp/imdn4 \
      --input photos/ --output sr/ [--tile 256 --tile-overlap 16] [--self-ensemble]

Writes <output>/<stem>_x<scale>.png for every input image, atomically, keeping what the input was:
  - 16-bit PNG/TIFF give 16-bit PNG (the model runs in float32 on x / 65535, not on 8 bits);
  - grayscale gives grayscale: the gray plane goes through an RGB model as R = G = B and the output
    comes back with MATLAB rgb2gray's weights (a gray model, in_channels 1, takes it directly);
  - an alpha channel is kept: upscaled with the MATLAB bicubic (imresize, unrounded, clipped to
    [0, 1]), not by the model, which was trained on photos, not masks; a scale-1 model keeps it as is.
Images up to --tile LR pixels a side run whole; larger ones run as overlapping tiles that all share
one compiled program, each with --tile-overlap pixels of context that are predicted and discarded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import flags
from ml_collections import config_flags

from mspan_jax import cli
from mspan_jax.checkpoints.resolve import load_model
from mspan_jax.data.images import (
    StoredImage,
    gray_plane,
    list_images,
    read_stored_image,
    write_stored_image,
)
from mspan_jax.data.imresize import imresize
from mspan_jax.errors import ConfigError
from mspan_jax.inference import Predictor, upscale_image
from mspan_jax.progress import ProgressLine

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/x4.py "
                                           "(default: the model the checkpoint records).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Params checkpoint or training workdir.")
_INPUT = flags.DEFINE_string("input", None, "An image file or a folder of images.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the output PNGs (created if missing); "
                              "bit depth, gray and alpha follow the input (alpha: MATLAB bicubic).")
_TILE = flags.DEFINE_integer("tile", 256, "LR tile size for large images (whole image when it fits).")
_TILE_OVERLAP = flags.DEFINE_integer("tile-overlap", 16, "LR context pixels around each tile.")
_SELF_ENSEMBLE = flags.DEFINE_bool("self-ensemble", False, "Average the x8 flips/rotations (8x time).")
_BUCKET = flags.DEFINE_integer("bucket", 64, "Pad whole-image sizes up to multiples of this.")
flags.mark_flags_as_required(["checkpoint", "input", "output"])


def input_images(path: Path) -> list[Path]:
    """The one file, or the images of a folder."""
    if path.is_file():
        return [path]
    if not path.exists():
        raise ConfigError(f"--input {path} does not exist")
    return list_images(path)


def run_stored(predictor: Predictor, image: StoredImage, in_channels: int, **options) -> StoredImage:
    """The model's output for a StoredImage, in the input's layout: gray in -> gray out (through
    R = G = B and rgb2gray for an RGB model), alpha upscaled with the MATLAB bicubic, same bits."""
    x = image.color
    if in_channels == 3 and x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    elif in_channels == 1 and x.shape[2] == 3:
        x = gray_plane(x)[:, :, None].astype(np.float32)
    y = upscale_image(predictor, x, **options)
    if image.color.shape[2] == 1 and y.shape[2] == 3:
        y = gray_plane(y)[:, :, None].astype(np.float32)
    alpha = image.alpha
    if alpha is not None and predictor.scale != 1:
        alpha = np.clip(imresize(alpha.astype(np.float64), float(predictor.scale)), 0.0, 1.0)
    return StoredImage(color=y, alpha=alpha, bits=image.bits)


def main(argv: Sequence[str]) -> None:
    loaded = load_model(_CHECKPOINT.value, _CONFIG.value)
    config = loaded.config
    if _TILE.value < 1 or _TILE_OVERLAP.value < 0 or _TILE.value <= 2 * _TILE_OVERLAP.value:
        raise ConfigError(f"--tile ({_TILE.value}) must exceed 2 x --tile-overlap "
                          f"({_TILE_OVERLAP.value})")
    if _BUCKET.value < 1:
        raise ConfigError(f"--bucket must be a positive integer, got {_BUCKET.value}")
    paths = input_images(Path(_INPUT.value))
    out_dir = Path(_OUTPUT.value)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--output {out_dir} exists and is not a folder")
    scale = int(config.model.scale)
    names: dict[str, Path] = {}
    for path in paths:
        name = f"{path.stem}_x{scale}.png"
        if name in names:
            raise ConfigError(f"{path} and {names[name]} would both be written as {name}")
        names[name] = path

    predictor = Predictor(loaded.model.apply, loaded.variables, scale=scale, bucket=_BUCKET.value)
    progress = ProgressLine(len(paths), f"x{scale}")
    for name, path in names.items():
        lr = read_stored_image(path)
        sr = run_stored(predictor, lr, int(config.model.in_channels), tile=_TILE.value,
                        tile_overlap=_TILE_OVERLAP.value, self_ensemble=_SELF_ENSEMBLE.value,
                        progress=len(paths) == 1)
        write_stored_image(out_dir / name, sr)
        (h, w), (sh, sw) = lr.color.shape[:2], sr.color.shape[:2]
        progress.update(f"{path.name} {w}x{h} -> {sw}x{sh} ({lr.describe()})")
    print(f"wrote {len(paths)} images to {out_dir}; compiled programs: {predictor.num_compiled}")


if __name__ == "__main__":
    cli.run(main)
