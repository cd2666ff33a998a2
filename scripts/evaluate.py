"""PSNR/SSIM of a trained or converted model on SR benchmarks or a folder, beside the bicubic baseline.

  python scripts/evaluate.py --config configs/imdn_x4.py --checkpoint /tmp/imdn4 \
      --hr-dir ../shared/data/Set5/HR --lr-dir ../shared/data/Set5/LR_bicubic/X4
  python scripts/evaluate.py --config configs/x4.py --checkpoint ckpt/ --datasets set5,set14 \
      --self-ensemble --json scores.json --save-images sr/

Scores follow config.eval (Y channel, crop_border = scale); `--round-y` switches to the official
IMDN script's rounded Y. Images are padded to multiples of --bucket with a mask, so results equal
unpadded inference and the number of compiled programs stays small (printed at the end).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from mspan_jax import cli
from mspan_jax.data.images import list_images, write_image
from mspan_jax.data.pairs import EvalPair, load_folder_pairs
from mspan_jax.evaluation import EvalResult, bicubic_scores, evaluate_pairs
from mspan_jax.files import write_json_atomic
from mspan_jax.models import get_model
from mspan_jax.weights import load_weights

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/x4.py.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Params checkpoint directory (params_io).")
_HR_DIR = flags.DEFINE_string("hr-dir", None, "Evaluate on this folder of HR images, not --datasets.")
_LR_DIR = flags.DEFINE_string("lr-dir", None, "LR images for --hr-dir (<stem>x<s>.<ext> or "
                              "<stem>.<ext>); default: MATLAB bicubic of the HR.")
_DATASETS = flags.DEFINE_list("datasets", None, "Benchmarks, e.g. set5,set14,b100,urban100,manga109 "
                              "(default: config.eval.datasets).")
_DATA_DIR = flags.DEFINE_string("data-dir", None, "tfds data_dir for --datasets (default: tfds's).")
_MANUAL_DIR = flags.DEFINE_string("manual-dir", None, "Where the benchmarks' HR folders are, for the "
                                  "first preparation of --datasets (see docs/data.md).")
_DOWNLOAD = flags.DEFINE_bool("download", False, "Fetch a benchmark missing from --manual-dir "
                               "(EDSR's benchmark.tar; needs network).")
_SELF_ENSEMBLE = flags.DEFINE_bool("self-ensemble", False, "Average the x8 flips/rotations ('+').")
_SAVE_IMAGES = flags.DEFINE_string("save-images", None, "Write SR PNGs to <dir>/<dataset>/<name>.png.")
_JSON = flags.DEFINE_string("json", None, "Write {dataset: {psnr, ssim, images}} to this file.")
_ROUND_Y = flags.DEFINE_bool("round-y", False, "Round Y to integers (the official IMDN script); "
                             "default: config.eval.round_y.")
_BUCKET = flags.DEFINE_integer("bucket", 64, "Pad LR sizes up to multiples of this (fewer compiles).")
flags.mark_flags_as_required(["config", "checkpoint"])


def folder_set_name(hr_dir: Path) -> str:
    """The set's name: the folder's, or its parent's for a folder called HR (Set5/HR -> Set5)."""
    hr_dir = hr_dir.resolve()
    return hr_dir.parent.name if hr_dir.name.lower() == "hr" and hr_dir.parent.name else hr_dir.name


def eval_sets(config, scale: int) -> list[tuple[str, list[EvalPair], list[str]]]:
    """(name, pairs, names of skipped images) of every set asked for on the command line or in
    config.eval.datasets. A standard benchmark is whole or fails; a --hr-dir folder skips unreadable
    or too small files (warning naming each), reported as "N of M images"."""
    if _HR_DIR.value is not None:
        if _DATASETS.value:
            raise ValueError("give either --hr-dir or --datasets, not both")
        hr_dir = Path(_HR_DIR.value)
        pairs = load_folder_pairs(hr_dir, scale, _LR_DIR.value, skip_unusable=True)
        scored = {p.name for p in pairs}
        skipped = [path.name for path in list_images(hr_dir) if path.stem not in scored]
        return [(folder_set_name(hr_dir), pairs, skipped)]
    if _LR_DIR.value is not None:
        raise ValueError("--lr-dir needs --hr-dir")
    from mspan_jax.data.datasets import load_benchmark  # tensorflow only when benchmarks are used

    names = _DATASETS.value or list(config.eval.datasets)
    if not names:
        raise ValueError("no datasets: give --datasets or --hr-dir, or set config.eval.datasets")
    degradation = config.data.get("degradation", "BI")
    return [(name, load_benchmark(name, scale, degradation, data_dir=_DATA_DIR.value,
                                  manual_dir=_MANUAL_DIR.value, download=_DOWNLOAD.value), [])
            for name in names]


def count_line(result: EvalResult, skipped: Sequence[str]) -> str:
    """'5 images', or '2 of 3 images' when files of a folder were skipped."""
    n = len(result.images)
    return f"{n} of {n + len(skipped)} images" if skipped else f"{n} images"


def write_json(path: Path, results: dict[str, EvalResult], skipped: dict[str, list[str]]) -> None:
    """{dataset: {psnr, ssim, images[, skipped]}} written atomically (temp file + rename); `images` is
    the number scored, `skipped` the files of a folder that were not."""
    write_json_atomic(path, {name: {"psnr": r.psnr, "ssim": r.ssim, "images": len(r.images),
                                    **({"skipped": skipped[name]} if skipped.get(name) else {})}
                             for name, r in results.items()})


def print_table(name: str, scale: int, model: EvalResult, bicubic: EvalResult, tag: str,
                channel: str, skipped: Sequence[str]) -> None:
    """Per-image PSNR/SSIM of the model beside bicubic, and the means."""
    width = max(12, *(len(s.name) for s in model.images))
    print(f"\n{name} x{scale} ({count_line(model, skipped)}), PSNR (dB) / SSIM on {channel}")
    print(f"  {'image':<{width}}  {tag + ' PSNR':>13} {'SSIM':>7}  {'bicubic PSNR':>13} {'SSIM':>7}")
    rows = [(m.name, m, b) for m, b in zip(model.images, bicubic.images, strict=True)]
    for label, m, b in [*rows, ("mean", model, bicubic)]:
        print(f"  {label:<{width}}  {m.psnr:13.2f} {m.ssim:7.4f}  {b.psnr:13.2f} {b.ssim:7.4f}")


def main(argv: Sequence[str]) -> None:
    config = _CONFIG.value
    scale = int(config.model.scale)
    if _BUCKET.value < 1:
        raise ValueError(f"--bucket must be a positive integer, got {_BUCKET.value}")
    json_path = Path(_JSON.value) if _JSON.value else None
    if json_path is not None and json_path.is_dir():
        raise ValueError(f"--json {json_path} is a folder; give a file name")
    model = get_model(config.model)
    variables = load_weights(_CHECKPOINT.value, config.model)
    sets = eval_sets(config, scale)

    crop = int(config.eval.crop_border)
    y_channel = bool(config.eval.y_channel)
    round_y = _ROUND_Y.value or bool(config.eval.round_y)
    channel = ("Y, rounded" if round_y else "Y") if y_channel else "RGB"
    tag = f"{config.model.name}{'+' if _SELF_ENSEMBLE.value else ''}"
    print(f"model {config.model.name} x{scale} from {_CHECKPOINT.value}; metrics on {channel}, "
          f"crop_border={crop}; self-ensemble {'on' if _SELF_ENSEMBLE.value else 'off'}")

    results: dict[str, EvalResult] = {}
    skipped = {name: names for name, _, names in sets}
    shapes: set[tuple[int, ...]] = set()
    for name, pairs, _ in sets:
        result = evaluate_pairs(model.apply, variables, pairs, scale=scale, crop_border=crop,
                                y_channel=y_channel, round_y=round_y, self_ensemble=_SELF_ENSEMBLE.value,
                                bucket=_BUCKET.value, keep_outputs=_SAVE_IMAGES.value is not None)
        bicubic = bicubic_scores(pairs, scale=scale, crop_border=crop, y_channel=y_channel,
                                 round_y=round_y)
        print_table(name, scale, result, bicubic, tag, channel, skipped[name])
        if _SAVE_IMAGES.value is not None:
            for image_name, sr in result.outputs.items():
                write_image(Path(_SAVE_IMAGES.value) / name / f"{image_name}.png", sr)
        results[name] = result
        shapes |= result.program_shapes

    print(f"\nsummary x{scale} ({channel}, crop {crop}):")
    width = max(len(name) for name in results)
    for name, r in results.items():
        print(f"  {name:<{width}}  {r.psnr:6.2f} / {r.ssim:.4f}  ({count_line(r, skipped[name])})")
    print(f"compiled programs: {len(shapes)} (bucket {_BUCKET.value})")
    if _SAVE_IMAGES.value is not None:
        print(f"SR images written to {_SAVE_IMAGES.value}/<dataset>/")
    if json_path is not None:
        write_json(json_path, results, skipped)
        print(f"scores written to {json_path}")


if __name__ == "__main__":
    cli.run(main)
