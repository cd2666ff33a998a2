"""Super-resolves (or, with a scale-1 restoration model, restores) your own images of any size.

  python scripts/upscale.py --checkpoint mspan_x4 --input photos/ --output sr/
  python scripts/upscale.py --checkpoint /tmp/mspan_quickstart --input photo.jpg --output sr/
  python scripts/upscale.py --checkpoint IMDN_x4.pth --model imdn --scale 4 --input photos/ --output sr/
  python scripts/upscale.py --list-models

--checkpoint takes a params checkpoint, a training workdir, the name of shipped weights
(--list-models), a PyTorch weight file with --model/--scale (converted in memory) or an ONNX file
or TFLite file from scripts/export.py --format onnx / tflite (run by onnxruntime / LiteRT, the
[onnx] / [tflite] extra). Writes
<output>/<stem>_<suffix>.<ext> (default <stem>_x<scale>.png) for every input image, atomically,
keeping what the input was (PNG output):
  - 16-bit PNG/TIFF give 16-bit PNG (the model runs on x / 65535, not on 8 bits);
  - grayscale gives grayscale: the gray plane goes through an RGB model as R = G = B and the output
    comes back with MATLAB rgb2gray's weights (a gray model, in_channels 1, takes it directly);
  - an alpha channel is kept: upscaled with the MATLAB bicubic (imresize, unrounded, clipped to
    [0, 1]), not by the model, which was trained on photos, not masks; a scale-1 model keeps it.
Images are read upright (their EXIF orientation applied) and the outputs keep the input's ICC
profile and DPI. A folder's images are the files Pillow reads (PNG, JPEG, WebP, TIFF, BMP, ...), by
extension or, where that says otherwise, by content. A folder run upscales every image it can
read (an image smaller than the model runs on is edge-padded and cropped); files it could not read
or skipped are listed at the end, one line each, and the exit status is 1 if any failed. The
output folder is checked (writable, no two inputs on one output name) before any work. Images
up to --tile LR pixels a side run whole; larger ones run as overlapping tiles sharing one compiled
program, each with --tile-overlap pixels of context that are predicted and discarded. A PNG output
is written a row of tiles at a time, as they are made, so memory holds one row of tiles, not the
output (docs/usage.md).
"""

from __future__ import annotations

import dataclasses
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from absl import flags
from ml_collections import config_flags

from mspan_jax import cli
from mspan_jax.checkpoints.resolve import load_model, shipped_models
from mspan_jax.data.images import (
    READABLE,
    ImageReadError,
    StoredImage,
    is_image_file,
    read_stored_image,
    write_image,
    write_png,
)
from mspan_jax.deploy.onnx_runtime import ExportedPredictor, is_exported_file
from mspan_jax.errors import ConfigError, first_line
from mspan_jax.files import check_output_dir
from mspan_jax.inference import Predictor
from mspan_jax.progress import ProgressLine, count
from mspan_jax.upscaler import upscale_samples, upscale_to_array

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/x4.py "
                                           "(default: the model the checkpoint records).")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "Params checkpoint, training workdir, shipped "
                                  "weights by name (mspan_x4; see --list-models), a PyTorch .pth / "
                                  ".safetensors with --model and --scale, or an exported .onnx / "
                                  ".tflite file.")
_MODEL = flags.DEFINE_string("model", None, "Model of a PyTorch --checkpoint, e.g. imdn.")
_SCALE = flags.DEFINE_integer("scale", None, "Scale of a PyTorch --checkpoint, e.g. 4.")
_LIST = flags.DEFINE_bool("list-models", False, "List the shipped weights --checkpoint takes by name.")
_INPUT = flags.DEFINE_string("input", None, "An image file or a folder of images.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the outputs (created if missing).")
_SUFFIX = flags.DEFINE_string("suffix", "x{scale}", "Output name <stem>_<suffix>.<ext>; '' writes "
                              "<stem>.<ext>; {scale} is replaced by the model's scale.")
_EXT = flags.DEFINE_enum("ext", "png", ["png", "jpg", "auto"], "Output format: png keeps bit depth, "
                         "gray and alpha; jpg writes 8-bit RGB (alpha dropped); auto: jpg for JPEG "
                         "inputs, png for the rest.")
_SKIP_EXISTING = flags.DEFINE_bool("skip-existing", False, "Leave inputs whose output file exists.")
_DTYPE = flags.DEFINE_enum("dtype", "auto", ["auto", "float32", "bfloat16"], "Compute dtype; auto: "
                           "bfloat16 on GPU/TPU, float32 on CPU (XLA:CPU has no fast bf16 convs).")
_TILE = flags.DEFINE_integer("tile", 256, "LR tile size for large images (whole image when it fits).")
_TILE_OVERLAP = flags.DEFINE_integer("tile-overlap", 16, "LR context pixels around each tile.")
_SELF_ENSEMBLE = flags.DEFINE_bool("self-ensemble", False, "Average the x8 flips/rotations (8x time).")
_BUCKET = flags.DEFINE_integer("bucket", 64, "Pad whole-image sizes up to multiples of this.")


def input_files(path: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(the image files to upscale, [(file, why skipped)]): the one file, or a folder's image files
    (`is_image_file`) by name; other files are skipped with a reason, hidden files and subfolders
    quietly."""
    if path.is_file():
        return [path], []
    if not path.exists():
        raise ConfigError(f"--input {path} does not exist")
    if not path.is_dir():
        raise ConfigError(f"--input {path} is neither a file nor a folder")
    images, skipped = [], []
    for p in sorted(path.iterdir()):
        if not p.is_file() or p.name.startswith("."):
            continue
        if is_image_file(p):
            images.append(p)
        else:
            skipped.append((p, f"not an image ({READABLE})"))
    if not images:
        raise ConfigError(f"--input {path} holds no images ({READABLE})")
    return images, skipped


def output_name(path: Path, suffix: str, ext: str) -> str:
    """<stem>_<suffix>.<ext> (<stem>.<ext> for an empty suffix); `ext` auto follows a JPEG input."""
    if ext == "auto":
        ext = "jpg" if path.suffix.lower() in (".jpg", ".jpeg") else "png"
    return f"{path.stem}{'_' + suffix if suffix else ''}.{ext}"


def write_output(path: Path, predictor: Predictor, lr: StoredImage, in_channels: int,
                 **options: Any) -> str:
    """Upscales `lr` into `path`: PNG (bits, gray and alpha kept), streamed a row of tiles at a
    time, or JPEG (8-bit RGB, assembled first); both with the ICC profile and DPI. Returns a note
    on what JPEG dropped. `options` are `upscale_samples`'s."""
    s, (h, w) = predictor.scale, lr.color.shape[:2]
    if path.suffix == ".png":
        dtype = np.dtype(np.uint8 if lr.bits == 8 else np.uint16)
        strips = upscale_samples(predictor, lr, in_channels, dtype, **options)
        write_png(path, strips, s * h, s * w, lr.color.shape[2] + (lr.alpha is not None), lr.bits,
                  lr.meta)
        return ""
    color = upscale_to_array(predictor, dataclasses.replace(lr, alpha=None), in_channels,
                             np.dtype(np.uint8), **options)
    write_image(path, color if color.shape[2] == 3 else np.repeat(color, 3, axis=2), lr.meta)
    dropped = [what for what, lost in (("alpha", lr.alpha is not None), ("16 bits", lr.bits == 16))
               if lost]
    return f"; JPEG dropped {' and '.join(dropped)}" if dropped else ""


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def compute_dtype(choice: str) -> str:
    if choice != "auto":
        return choice
    import jax

    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def list_models() -> None:
    from mspan_jax.checkpoints.params import read_metadata

    shipped = shipped_models()
    if not shipped:
        cli.fail("no shipped weights: this install has no repository weights/ folder; give "
                 "--checkpoint the path of a clone's weights/<name>")
    print("shipped weights (--checkpoint NAME, from any folder):")
    for name, directory in shipped.items():
        model = read_metadata(directory)["model"]
        print(f"  {name:<10} {model['name']} x{model['scale']}  {directory}")


def load_predictor(model: tuple[str, int] | None) -> tuple[Predictor, Mapping[str, Any], str]:
    """(predictor, config.model, compute dtype) of --checkpoint: onnxruntime for a .onnx file,
    LiteRT for a .tflite file (scripts/export.py --format onnx / tflite), else the JAX model at
    --dtype."""
    if is_exported_file(_CHECKPOINT.value):
        if _CONFIG.value is not None or model is not None:
            raise ConfigError("--config, --model and --scale are not for a .onnx / .tflite "
                              "--checkpoint: the file records its model")
        exported = ExportedPredictor.from_file(_CHECKPOINT.value)
        return (exported, exported.model.model_config,
                f"{exported.model.runtime}, {exported.model.precision}")
    loaded = load_model(_CHECKPOINT.value, _CONFIG.value, model=model)
    config = loaded.config
    dtype = compute_dtype(_DTYPE.value)
    if dtype != config.model.get("dtype", "float32"):
        config.model.dtype = dtype
        from mspan_jax.models.registry import get_model

        model_apply = get_model(config.model).apply
    else:
        model_apply = loaded.model.apply
    return Predictor(model_apply, loaded.variables, scale=int(config.model.scale),
                     bucket=_BUCKET.value), config.model, dtype


def main(argv: Sequence[str]) -> None:
    if _LIST.value:
        list_models()
        return
    missing = [f"--{f.name}" for f in (_CHECKPOINT, _INPUT, _OUTPUT) if f.value is None]
    if missing:
        raise ConfigError(f"{', '.join(missing)} required (or --list-models)")
    if _TILE.value < 1 or _TILE_OVERLAP.value < 0 or _TILE.value <= 2 * _TILE_OVERLAP.value:
        raise ConfigError(f"--tile ({_TILE.value}) must exceed 2 x --tile-overlap "
                          f"({_TILE_OVERLAP.value})")
    if _BUCKET.value < 1:
        raise ConfigError(f"--bucket must be a positive integer, got {_BUCKET.value}")
    if (_MODEL.value is None) != (_SCALE.value is None):
        raise ConfigError("--model and --scale go together (for a PyTorch --checkpoint)")
    out_dir = check_output_dir(_OUTPUT.value, "--output")
    paths, skipped = input_files(Path(_INPUT.value))

    model = (_MODEL.value, _SCALE.value) if _MODEL.value is not None else None
    predictor, model_config, dtype = load_predictor(model)
    scale = int(model_config["scale"])
    try:
        suffix = _SUFFIX.value.format(scale=scale)
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"--suffix {_SUFFIX.value!r}: only {{scale}} may stand in braces") from None
    names: dict[str, Path] = {}
    for path in paths:
        name = output_name(path, suffix, _EXT.value)
        if name in names:
            raise ConfigError(f"{path} and {names[name]} would both be written as {out_dir / name}; "
                              "rename one or run them apart")
        if (out_dir / name).absolute() == path.absolute():
            raise ConfigError(f"{path} would be overwritten by its own output; give another --output "
                              "or --suffix")
        names[name] = path
    todo = {}
    for name, path in names.items():
        if _SKIP_EXISTING.value and (out_dir / name).exists():
            skipped.append((path, f"{out_dir / name} exists (--skip-existing)"))
        else:
            todo[name] = path

    progress = ProgressLine(len(todo), f"x{scale}")
    failed: list[tuple[Path, str]] = []
    # SIGTERM (kill, a job scheduler) ends the run as Ctrl-C does: the output being written is
    # removed, not left as a hidden temporary file.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for name, path in todo.items():
            try:
                lr = read_stored_image(path)
            except ImageReadError as e:
                failed.append((path, first_line(e)))
                progress.update(f"{path.name} FAILED")
                continue
            note = write_output(out_dir / name, predictor, lr, int(model_config.get("in_channels", 3)),
                                tile=_TILE.value, tile_overlap=_TILE_OVERLAP.value,
                                self_ensemble=_SELF_ENSEMBLE.value, progress=len(todo) == 1)
            (h, w) = lr.color.shape[:2]
            progress.update(f"{path.name} {w}x{h} -> {scale * w}x{scale * h} "
                            f"({lr.describe()}{note})")
    finally:
        signal.signal(signal.SIGTERM, previous)
    written = len(todo) - len(failed)
    print(f"wrote {count(written, 'image')} to {out_dir} ({dtype}); compiled "
          f"programs: {predictor.num_compiled}")
    for path, why in skipped:
        print(f"skipped {path}: {why}")
    for path, why in failed:
        print(f"FAILED {why}" if str(path) in why else f"FAILED {path}: {why}")
    if failed:
        first = failed[0][1] if str(failed[0][0]) in failed[0][1] else f"{failed[0][0]}: {failed[0][1]}"
        more = f" and {len(failed) - 1} more, listed above" if len(failed) > 1 else ""
        cli.fail(f"{len(failed)} of {count(len(todo), 'image')} could not be read ({first}{more}); "
                 "the others were written", code=1)


if __name__ == "__main__":
    cli.run(main)
