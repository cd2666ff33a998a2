"""PSNR/SSIM of a trained or converted model on SR benchmarks or a folder, beside the bicubic baseline;
for a restoration model (scale 1: denoising, deraining), beside the LQ input itself.

  python scripts/evaluate.py --checkpoint mspan_x4 --hr-dir Set5/HR --lr-dir Set5/LR_bicubic/X4
  python scripts/evaluate.py --checkpoint IMDN_x4.pth --model imdn --scale 4 --datasets ./Set5
  python scripts/evaluate.py --checkpoint /tmp/mspan_quickstart --datasets set5,set14 \\
      --self-ensemble --json scores.json --save-images sr/
  python scripts/evaluate.py --config configs/denoise_color.py:25 --checkpoint runs/dn25 \\
      --datasets cbsd68,kodak24,mcmaster --manual-dir ~/ir_data --noise-sigma 25
  python scripts/evaluate.py --config configs/derain.py --checkpoint runs/derain \\
      --hr-dir Rain100L/test/GT --lr-dir Rain100L/test/LQ

Scores follow config.eval (SR: Y channel, crop_border = scale; denoising: RGB; deraining: Y; no
border shave for restoration); `--round-y` switches to the official IMDN script's rounded Y and
`--noround-y` back (`--self-ensemble` / `--noself-ensemble` alike; neither: the config's). Synthetic
noise is seeded per image name, so every run and every model sees the same noisy inputs. Images are
padded to multiples of --bucket with a mask where that is exact (IMDN; MSPAN without attention or
with CA), else run at their own sizes (MSPA, ESA: their pooled branches see padding), so results
equal unpadded inference either way; the number of compiled programs is printed at the end.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from absl import flags
from ml_collections import config_flags

from mspan_jax import cli
from mspan_jax.checkpoints.resolve import load_model
from mspan_jax.config_base import is_restoration, task_kind, task_of
from mspan_jax.data.images import write_image
from mspan_jax.errors import ConfigError
from mspan_jax.eval_suite import EvalSet, EvalSuite, Scoring, load_folder_set, load_sets, psnr_ssim
from mspan_jax.evaluation import EvalResult
from mspan_jax.files import check_output_dir, check_output_file, write_json_atomic
from mspan_jax.models.registry import pads_exactly

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/x4.py "
                                           "(default for SR: the model the checkpoint records).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Params checkpoint, training workdir, shipped "
                                  "weights by name (mspan_x4) or a PyTorch .pth with --model/--scale.")
_MODEL = flags.DEFINE_string("model", None, "Model of a PyTorch --checkpoint, e.g. imdn.")
_SCALE = flags.DEFINE_integer("scale", None, "Scale of a PyTorch --checkpoint, e.g. 4.")
_HR_DIR = flags.DEFINE_string("hr-dir", None, "Evaluate on this folder of HR images, not --datasets "
                              "(restoration: the clean GT images).")
_LR_DIR = flags.DEFINE_string("lr-dir", None, "LR images for --hr-dir (<stem>x<s>.<ext> or "
                              "<stem>.<ext>); default: MATLAB bicubic of the HR. Restoration: the LQ "
                              "images, paired with the GT by name (docs/data.md); default: GT + "
                              "seeded Gaussian noise of --noise-sigma.")
_DATASETS = flags.DEFINE_list("datasets", None, "Benchmarks, e.g. set5,set14,b100,urban100,manga109; "
                              "restoration: cbsd68,kodak24,mcmaster,set12,bsd68,skimage_holdout (noise "
                              "added) or sidd,rain100l,rain100h,custom (paired) "
                              "(default: config.eval.datasets).")
_NOISE_SIGMA = flags.DEFINE_float("noise-sigma", None, "Restoration: std (0..255) of the Gaussian noise "
                                  "added to clean images (default: config.data.noise_sigma).")
_DATA_DIR = flags.DEFINE_string("data-dir", None, "tfds data_dir for --datasets (default: tfds's).")
_MANUAL_DIR = flags.DEFINE_string("manual-dir", None, "Where the benchmarks' HR folders are, for the "
                                  "first preparation of --datasets (see docs/data.md).")
_DOWNLOAD = flags.DEFINE_bool("download", False, "Fetch a benchmark missing from --manual-dir "
                               "(EDSR's benchmark.tar; needs network).")
_SELF_ENSEMBLE = flags.DEFINE_bool("self-ensemble", None, "Average the x8 flips/rotations ('+'); "
                                     "--noself-ensemble: not (default: config.eval.self_ensemble).")
_SAVE_IMAGES = flags.DEFINE_string("save-images", None, "Write SR PNGs to <dir>/<dataset>/<name>.png.")
_JSON = flags.DEFINE_string("json", None, "Write {dataset: {psnr, ssim, images, channel, <baseline>: "
                            "{psnr, ssim}}} to this file.")
_ROUND_Y = flags.DEFINE_bool("round-y", None, "Round Y to integers (the official IMDN script); "
                             "--noround-y: do not (default: config.eval.round_y).")
_BUCKET = flags.DEFINE_integer("bucket", 64, "Pad LR sizes up to multiples of this (fewer compiles).")
flags.mark_flags_as_required(["checkpoint"])


def eval_sets(config, noise_sigma: float) -> list[EvalSet]:
    """The --hr-dir folder (files it cannot use skipped, reported as "N of M images"), or --datasets
    (default config.eval.datasets), each whole or failing."""
    if _HR_DIR.value is not None:
        if _DATASETS.value:
            raise ConfigError("give either --hr-dir or --datasets, not both")
        return [load_folder_set(config, _HR_DIR.value, _LR_DIR.value, noise_sigma=noise_sigma)]
    if _LR_DIR.value is not None:
        raise ConfigError("--lr-dir needs --hr-dir")
    names = _DATASETS.value or list(config.eval.datasets)
    if not names:
        raise ConfigError("no datasets: give --datasets or --hr-dir, or set config.eval.datasets")
    return load_sets(config, names, noise_sigma=noise_sigma, data_dir=_DATA_DIR.value,
                     manual_dir=_MANUAL_DIR.value, download=_DOWNLOAD.value)


def count_line(result: EvalResult, skipped: Sequence[str]) -> str:
    """'5 images', or '2 of 3 images' when files of a folder were skipped."""
    n = len(result.images)
    return f"{n} of {n + len(skipped)} images" if skipped else f"{n} images"


def write_json(path: Path, results: dict[str, EvalResult], suite: EvalSuite,
               extra: dict[str, dict]) -> None:
    """{dataset: {psnr, ssim, images[, skipped], <baseline>: {psnr, ssim}, ...extra}} written
    atomically (temp file + rename); `images` is the number scored, `skipped` the files of a folder
    that were not."""
    write_json_atomic(path, {
        name: {**psnr_ssim(r), "images": len(r.images),
               **({"skipped": list(suite.sets[name].skipped)} if suite.sets[name].skipped else {}),
               **{key: psnr_ssim(b) for key, b in suite.baselines_of(name).items()},
               **extra[name]}
        for name, r in results.items()})


def print_table(title: str, model: EvalResult, tag: str, baselines: dict[str, EvalResult]) -> None:
    """Per-image PSNR/SSIM of the model beside each baseline, and the means."""
    width = max(12, *(len(s.name) for s in model.images))
    print(f"\n{title}")
    columns = [tag, *baselines]
    print(f"  {'image':<{width}}  " + " ".join(f"{c + ' PSNR':>17} {'SSIM':>7}" for c in columns))
    results = [model, *baselines.values()]
    rows = [(m.name, [r.images[i] for r in results]) for i, m in enumerate(model.images)]
    for label, scores in [*rows, ("mean", results)]:
        print(f"  {label:<{width}}  " + " ".join(f"{s.psnr:17.2f} {s.ssim:7.4f}" for s in scores))


def main(argv: Sequence[str]) -> None:
    if _JSON.value:
        check_output_file(_JSON.value, "--json")
    if _SAVE_IMAGES.value:
        check_output_dir(_SAVE_IMAGES.value, "--save-images")
    if (_MODEL.value is None) != (_SCALE.value is None):
        raise ConfigError("--model and --scale go together (for a PyTorch --checkpoint)")
    model = (_MODEL.value, _SCALE.value) if _MODEL.value is not None else None
    loaded = load_model(_CHECKPOINT.value, _CONFIG.value, model=model)
    config, model, variables = loaded.config, loaded.model, loaded.variables
    scale = int(config.model.scale)
    restoration = is_restoration(config)
    if restoration and _CONFIG.value is None:
        raise ConfigError(f"{_CHECKPOINT.value} is a restoration model: its scoring depends on the task "
                          "(noise level, RGB or Y), so pass its --config, e.g. "
                          "configs/denoise_color.py:25")
    if _BUCKET.value < 1:
        raise ConfigError(f"--bucket must be a positive integer, got {_BUCKET.value}")
    if _NOISE_SIGMA.value is not None and not restoration:
        raise ConfigError(f"--noise-sigma is for restoration models (denoising); {config.model.name} "
                          f"is x{scale} super-resolution")
    noise_sigma = float(config.data.noise_sigma if _NOISE_SIGMA.value is None else _NOISE_SIGMA.value)
    if noise_sigma < 0:
        raise ConfigError(f"--noise-sigma must be >= 0, got {noise_sigma}")
    json_path = Path(_JSON.value) if _JSON.value else None
    if json_path is not None and json_path.is_dir():
        raise ConfigError(f"--json {json_path} is a folder; give a file name")
    sets = eval_sets(config, noise_sigma)

    scoring = Scoring.from_config(config, round_y=_ROUND_Y.value, self_ensemble=_SELF_ENSEMBLE.value,
                                  bucket=_BUCKET.value)
    channel, crop = scoring.channel, scoring.crop_border
    tag = f"{config.model.name}{'+' if scoring.self_ensemble else ''}"
    task = task_kind(task_of(config))
    print(f"model {config.model.name} x{scale} ({task}) from {_CHECKPOINT.value}; metrics on {channel}, "
          f"crop_border={crop}; self-ensemble {'on' if scoring.self_ensemble else 'off'}")

    suite = EvalSuite(sets, scoring)
    results: dict[str, EvalResult] = {}
    extra: dict[str, dict] = {}
    shapes: set[tuple[int, ...]] = set()
    for name, eval_set in suite.sets.items():
        result = suite.score(model.apply, variables, name, progress=True,
                             keep_outputs=_SAVE_IMAGES.value is not None)
        extra[name] = {"channel": channel}
        count = count_line(result, eval_set.skipped)
        title = f"{name} x{scale} ({count}), PSNR (dB) / SSIM on {channel}"
        if restoration:
            synthetic = eval_set.noise_sigma is not None
            if synthetic:
                extra[name].update(noise_sigma=eval_set.noise_sigma, noise="gaussian, seeded per "
                                   "image name, float, not clipped")
            title = (f"{name} ({count}, " + (
                f"Gaussian noise sigma {eval_set.noise_sigma:g}, seeded per image" if synthetic
                else "paired LQ/GT") + f"), PSNR (dB) / SSIM on {channel}; 'input' = the LQ itself")
        print_table(title, result, tag, suite.baselines_of(name))
        if _SAVE_IMAGES.value is not None:
            for image_name, sr in result.outputs.items():
                out = np.repeat(sr, 3, axis=2) if sr.shape[2] == 1 else sr  # gray saved as RGB PNG
                write_image(Path(_SAVE_IMAGES.value) / name / f"{image_name}.png", out)
        results[name] = result
        shapes |= result.program_shapes

    print(f"\nsummary x{scale} ({channel}, crop {crop}):")
    width = max(len(name) for name in results)
    for name, r in results.items():
        base = "  ".join(f"{key} {b.psnr:6.2f} / {b.ssim:.4f}"
                         for key, b in suite.baselines_of(name).items())
        print(f"  {name:<{width}}  {r.psnr:6.2f} / {r.ssim:.4f}  "
              f"({count_line(r, suite.sets[name].skipped)}; {base})")
    how = f"bucket {_BUCKET.value}" if pads_exactly(model) else "unpadded, one per LR size"
    print(f"compiled programs: {len(shapes)} ({how})")
    if _SAVE_IMAGES.value is not None:
        print(f"{'restored' if restoration else 'SR'} images written to {_SAVE_IMAGES.value}/<dataset>/")
    if json_path is not None:
        write_json(json_path, results, suite, extra)
        print(f"scores written to {json_path}")

if __name__ == "__main__":
    cli.run(main)
