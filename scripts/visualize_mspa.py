"""The MSPAN paper's MSPA figure (`feature_maps.png`): what multi-semantic pixel attention does.

  python scripts/visualize_mspa.py --checkpoint mspan_x4 \\
      --image skimage:chelsea --as-hr --blocks 2,4,6 --out mspa.png

The paper's layout: one column per chosen MSPA (default the paper's 2nd, 4th and 6th; evenly spaced
blocks for a model of fewer than 6), three rows of channel-averaged maps: the features entering MSPA
(gray), the attention matrix (sigmoid, in (0, 1); viridis) and the reweighted output (features x
attention, before the block's residual; gray), each captioned below as the paper does:
Tenengrad (mean squared Sobel gradient: sharpness) / standard deviation / mean. The image is the
model's input as given (for an SR model, the LR image; with --as-hr, its MATLAB bicubic LR),
centre-cropped to --max-side; `skimage:NAME` names a photo bundled with scikit-image. The maps are
captured with flax `sow` inside the model (MSPA records its input, attention and output when the
"intermediates" collection is mutable), so any checkpoint of `mspan` or `mspan_ir` with MSPA
(config.model.attention "mspa") works: converted, trained, or a training workdir. Needs matplotlib
(`pip install -e ".[figures]"`; without it, one line says so).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from mspan_jax import cli
from mspan_jax.checkpoints.resolve import load_model
from mspan_jax.config_base import is_restoration
from mspan_jax.data.images import gray_plane
from mspan_jax.data.imresize import bicubic_downscale
from mspan_jax.data.sample_images import read_image_or_sample
from mspan_jax.errors import ConfigError
from mspan_jax.extras import require
from mspan_jax.files import check_output_file, write_bytes_atomic

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (default: the model the "
                                           "checkpoint records), e.g. configs/x4.py.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Params checkpoint or training workdir.")
_IMAGE = flags.DEFINE_string("image", None, "Model input image, or skimage:NAME (e.g. skimage:chelsea).")
_BLOCKS = flags.DEFINE_list("blocks", None, "IDDBs whose MSPA to show, 1-based (default: the paper's "
                            "2,4,6; evenly spaced blocks for a model of fewer than 6).")
_AS_HR = flags.DEFINE_bool("as-hr", False, "Treat --image as HR: feed an SR model its MATLAB "
                           "bicubic LR.")
_MAX_SIDE = flags.DEFINE_integer("max-side", 256, "Centre-crop larger inputs to this many pixels "
                                 "a side.")
_DPI = flags.DEFINE_integer("dpi", 100, "Resolution of the figure (pixels per inch of 2.4-inch panels).")

_OUT = flags.DEFINE_string("out", None, "The figure, a .png file.")
flags.mark_flags_as_required(["checkpoint", "image", "out"])

MSPA_MODELS = ("mspan", "mspan_ir")
STAGES = (("input", "features entering MSPA"), ("attention", "attention matrix"),
          ("output", "reweighted output"))
PAPER_BLOCKS = (2, 4, 6)  # feature_maps.png: the 2nd, 4th and 6th MSPA
COLOUR_MAPS = {"input": "gray", "attention": "viridis", "output": "gray"}  # as the paper draws them


def tenengrad(x: np.ndarray) -> float:
    """Mean of Gx^2 + Gy^2 over the interior, Gx/Gy the 3x3 Sobel responses (a sharpness measure)."""
    x = np.asarray(x, np.float64)
    gx = (x[:-2, 2:] + 2 * x[1:-1, 2:] + x[2:, 2:]) - (x[:-2, :-2] + 2 * x[1:-1, :-2] + x[2:, :-2])
    gy = (x[2:, :-2] + 2 * x[2:, 1:-1] + x[2:, 2:]) - (x[:-2, :-2] + 2 * x[:-2, 1:-1] + x[:-2, 2:])
    return float(np.mean(gx**2 + gy**2))


def map_stats(x: np.ndarray) -> dict[str, float]:
    """Tenengrad, standard deviation and mean of one 2-D map."""
    return {"tenengrad": tenengrad(x), "std": float(np.std(x)), "mean": float(np.mean(x))}


def default_blocks(num_blocks: int) -> list[int]:
    """The paper's 2nd, 4th and 6th MSPA; for fewer than 6 blocks, up to three evenly spaced ones
    ending with the last (ceil(k * n / 3), k = 1..3: 4 blocks give 2, 3, 4; 2 give 1, 2)."""
    if num_blocks >= max(PAPER_BLOCKS):
        return list(PAPER_BLOCKS)
    return sorted({math.ceil(k * num_blocks / 3) for k in (1, 2, 3)})


def parse_blocks(values: Sequence[str] | None, num_blocks: int) -> list[int]:
    """The 1-based blocks of --blocks (default `default_blocks`), each checked against the model."""
    if not values:
        return default_blocks(num_blocks)
    try:
        blocks = [int(v) for v in values]
    except ValueError:
        raise ConfigError(f"--blocks {','.join(values)}: give block numbers, e.g. 2,4,6") from None
    bad = [b for b in blocks if not 1 <= b <= num_blocks]
    if bad:
        raise ConfigError(f"--blocks {bad}: the model has IDDB1..IDDB{num_blocks}")
    return blocks


def centre_crop(img: np.ndarray, max_side: int) -> np.ndarray:
    """The central at most max_side x max_side part of an (H, W, ...) image."""
    h, w = img.shape[:2]
    ch, cw = min(h, max_side), min(w, max_side)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


def mspa_maps(model: Any, variables: Any, x: np.ndarray,
              blocks: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
    """{block: {"input"|"attention"|"output": channel-averaged (H, W) map}} of one float image."""
    def block(tree, b):  # MSPAN: body/IDDB{b}; MSPAN-IR (figure (c)): stage{b}/iddb
        return tree["body"][f"IDDB{b}"] if "body" in tree else tree[f"stage{b}"]["iddb"]

    def run(v, batch):
        _, state = model.apply(v, batch, mutable=["intermediates"])
        return {b: {k: jnp.mean(block(state["intermediates"], b)["mspa"][k][0][0], axis=-1)
                    for k, _ in STAGES} for b in blocks}

    return jax.tree.map(np.asarray, jax.jit(run)(variables, jnp.asarray(x[None])))


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend; MissingExtraError (one line) when it is not installed."""
    require("figures", "scripts/visualize_mspa.py (the figure is drawn with matplotlib)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def caption(stats: dict[str, float]) -> str:
    """The paper's caption under a map: Tenengrad / standard deviation / mean."""
    return f"{stats['tenengrad']:.3g} / {stats['std']:.3g} / {stats['mean']:.3g}"


def draw_figure(maps: dict[int, dict[str, np.ndarray]], title: str, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, laid out as the paper's: one column per block, rows input /
    attention / output, each map captioned with Tenengrad / std / mean below it."""
    plt = pyplot()
    cols = len(maps)
    h, w = next(iter(maps.values()))["input"].shape
    panel = 2.4
    size = (cols * panel * max(w / h, 0.6) + 0.6, len(STAGES) * (panel + 0.45) + 0.6)
    fig, axes = plt.subplots(len(STAGES), cols, squeeze=False, figsize=size)
    for col, (block, stages) in enumerate(maps.items()):
        for row, (key, label) in enumerate(STAGES):
            ax, m = axes[row, col], stages[key]
            ax.imshow(m, cmap=COLOUR_MAPS[key], interpolation="nearest")
            ax.set_xlabel(caption(map_stats(m)), fontsize=9, style="italic")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"MSPA of IDDB{block}", fontsize=9)
            if col == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(f"{title}\ncaptions: Tenengrad / standard deviation / mean", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def main(argv: Sequence[str]) -> None:
    pyplot()  # fail before any work when matplotlib is missing
    if not str(_OUT.value).lower().endswith(".png"):
        raise ConfigError(f"--out {_OUT.value}: the figure is written as PNG; give a .png path")
    check_output_file(_OUT.value, "--out")
    loaded = load_model(_CHECKPOINT.value, _CONFIG.value)
    config = loaded.config
    if config.model.name not in MSPA_MODELS:
        raise ConfigError(f"config.model.name={config.model.name!r} has no MSPA; visualize_mspa.py "
                          f"shows {' or '.join(MSPA_MODELS)} models")
    if config.model.get("attention", "mspa") != "mspa":
        raise ConfigError(f"config.model.attention={config.model.attention!r}: this model has no MSPA "
                          "(visualize_mspa.py shows models with attention 'mspa')")
    if not 20 <= _DPI.value <= 600:
        raise ConfigError(f"--dpi must be between 20 and 600, got {_DPI.value}")
    if _MAX_SIDE.value < 8:
        raise ConfigError(f"--max-side must be at least 8, got {_MAX_SIDE.value}")
    blocks = parse_blocks(_BLOCKS.value, int(config.model.num_blocks))
    name, img = read_image_or_sample(_IMAGE.value)
    if _AS_HR.value and not is_restoration(config):  # SR: the LR of the image
        img = bicubic_downscale(img, int(config.model.scale))
    img = centre_crop(img, _MAX_SIDE.value)
    x = img.astype(np.float32) / 255.0
    if int(config.model.in_channels) == 1:
        x = gray_plane(x)[..., None].astype(np.float32)
    maps = mspa_maps(loaded.model, loaded.variables, x, blocks)
    for block, stages in maps.items():
        print(f"IDDB{block}: " + "; ".join(
            f"{key} " + " ".join(f"{k}={v:.4g}" for k, v in map_stats(stages[key]).items())
            for key, _ in STAGES))
    weights = Path(_CHECKPOINT.value).absolute().name
    title = (f"MSPA of {config.model.name} x{config.model.scale} ({weights}) on {name} "
             f"({img.shape[1]}x{img.shape[0]}), channel means")
    write_bytes_atomic(_OUT.value, draw_figure(maps, title, _DPI.value))
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    cli.run(main)
