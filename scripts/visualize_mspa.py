"""The MSPAN paper's MSPA figure: what multi-semantic pixel attention does inside chosen IDDBs.

  python scripts/visualize_mspa.py --checkpoint /tmp/quickstart_sr \
      --image skimage:chelsea --as-hr --blocks 2,4,6 --out mspa.png

For each chosen block, three channel-averaged maps: the features entering MSPA, the attention matrix
(sigmoid, in (0, 1)) and the reweighted output (features x attention, before the block's residual),
each titled with its Tenengrad (mean squared Sobel gradient: sharpness), standard deviation and mean.
The image is the model's input as given (for an SR model, the LR image; with --as-hr, its MATLAB
bicubic LR), centre-cropped to --max-side; `skimage:NAME` names a photo bundled with scikit-image.
The maps are captured with flax `sow` inside the model (MSPA records its input, attention and
output when the "intermediates" collection is mutable), so any checkpoint of `mspan` or `mspan_ir`
works: converted, trained, or a training workdir. Needs matplotlib (`pip install -e ".[figures]"`;
without it, one line says so).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from mspan_jax import cli
from mspan_jax.data.images import gray_plane
from mspan_jax.data.imresize import bicubic_downscale
from mspan_jax.data.sample_images import read_image_or_sample
from mspan_jax.extras import require
from mspan_jax.files import write_bytes_atomic
from mspan_jax.models import get_model
from mspan_jax.weights import checkpoint_config, load_weights

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (default: the model the "
                                           "checkpoint records), e.g. configs/x4.py.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Params checkpoint or training workdir.")
_IMAGE = flags.DEFINE_string("image", None, "Model input image, or skimage:NAME (e.g. skimage:chelsea).")
_BLOCKS = flags.DEFINE_list("blocks", None, "IDDBs to show, 1-based (default: every second one, "
                            "ending with the last, e.g. 2,4,6).")
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
    """Every second block ending with the last (6 blocks: 2, 4, 6)."""
    return list(range(num_blocks, 0, -2))[::-1]


def parse_blocks(values: Sequence[str] | None, num_blocks: int) -> list[int]:
    if not values:
        return default_blocks(num_blocks)
    try:
        blocks = [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--blocks {','.join(values)}: give block numbers, e.g. 2,4,6") from None
    bad = [b for b in blocks if not 1 <= b <= num_blocks]
    if bad:
        raise ValueError(f"--blocks {bad}: the model has IDDB1..IDDB{num_blocks}")
    return blocks


def centre_crop(img: np.ndarray, max_side: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(h, max_side), min(w, max_side)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top:top + ch, left:left + cw]


def mspa_maps(model, variables, x: np.ndarray,
              blocks: Sequence[int]) -> dict[int, dict[str, np.ndarray]]:
    """{block: {"input"|"attention"|"output": channel-averaged (H, W) map}} of one float image."""
    def run(v, batch):
        _, state = model.apply(v, batch, mutable=["intermediates"])
        return {b: {k: jnp.mean(state["intermediates"]["body"][f"IDDB{b}"]["mspa"][k][0][0], axis=-1)
                    for k, _ in STAGES} for b in blocks}

    return jax.tree.map(np.asarray, jax.jit(run)(variables, jnp.asarray(x[None])))


def pyplot():
    """matplotlib.pyplot on the Agg backend; MissingExtraError (one line) when it is not installed."""
    require("figures", "scripts/visualize_mspa.py (the figure is drawn with matplotlib)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw_figure(maps: dict[int, dict[str, np.ndarray]], title: str, dpi: int = 100) -> bytes:
    """The figure as PNG bytes: one row per block, one column per stage, with colour bars."""
    plt = pyplot()
    rows = len(maps)
    h, w = next(iter(maps.values()))["input"].shape
    panel = 2.4
    size = (len(STAGES) * panel * max(w / h, 0.6) * 1.3, rows * panel * 1.2 + 0.4)
    fig, axes = plt.subplots(rows, len(STAGES), squeeze=False, figsize=size)
    for row, (block, stages) in enumerate(maps.items()):
        for col, (key, label) in enumerate(STAGES):
            ax, m = axes[row, col], stages[key]
            s = map_stats(m)
            image = ax.imshow(m, cmap="viridis", interpolation="nearest")
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
            ax.set_title(f"IDDB{block}: {label}\nTenengrad {s['tenengrad']:.3g}\n"
                         f"std {s['std']:.3g} | mean {s['mean']:.3g}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()


def main(argv: Sequence[str]) -> None:
    pyplot()  # fail before any work when matplotlib is missing
    config = checkpoint_config(_CHECKPOINT.value, _CONFIG.value)
    if not str(_OUT.value).lower().endswith(".png"):
        raise ValueError(f"--out {_OUT.value}: the figure is written as PNG; give a .png path")
    if config.model.name not in MSPA_MODELS:
        raise ValueError(f"config.model.name={config.model.name!r} has no MSPA; visualize_mspa.py "
                         f"shows {' or '.join(MSPA_MODELS)} models")
    if not 20 <= _DPI.value <= 600:
        raise ValueError(f"--dpi must be between 20 and 600, got {_DPI.value}")
    if _MAX_SIDE.value < 8:
        raise ValueError(f"--max-side must be at least 8, got {_MAX_SIDE.value}")
    blocks = parse_blocks(_BLOCKS.value, int(config.model.num_blocks))
    name, img = read_image_or_sample(_IMAGE.value)
    if _AS_HR.value and int(config.model.scale) > 1:
        img = bicubic_downscale(img, int(config.model.scale))
    img = centre_crop(img, _MAX_SIDE.value)
    x = img.astype(np.float32) / 255.0
    if int(config.model.in_channels) == 1:
        x = gray_plane(x)[..., None].astype(np.float32)
    model = get_model(config.model)
    variables = load_weights(_CHECKPOINT.value, config.model)
    maps = mspa_maps(model, variables, x, blocks)
    for block, stages in maps.items():
        print(f"IDDB{block}: " + "; ".join(
            f"{key} " + " ".join(f"{k}={v:.4g}" for k, v in map_stats(stages[key]).items())
            for key, _ in STAGES))
    title = (f"MSPA of {config.model.name} x{config.model.scale} on {name} "
             f"({img.shape[1]}x{img.shape[0]}), channel means")
    write_bytes_atomic(_OUT.value, draw_figure(maps, title, _DPI.value))
    print(f"wrote {_OUT.value}")


if __name__ == "__main__":
    cli.run(main)
