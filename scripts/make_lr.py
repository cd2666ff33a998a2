"""Writes MATLAB-bicubic LR images (the benchmarks' BI degradation) of a folder of HR images.

  python scripts/make_lr.py --hr-dir HR/ --out-dir LR_bicubic/X4 --scale 4

Each HR image is cropped to a multiple of the scale and downscaled with `bicubic_downscale`
(bit-identical to MATLAB's imresize); the LR is written as <out-dir>/<HR stem><suffix>.png
(default suffix x<scale>: baby.png -> babyx4.png, the published sets' naming), atomically.
Existing files of the same name are overwritten; the output folder is checked before any work.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from absl import flags

from mspan_jax import cli
from mspan_jax.data.images import list_images, read_image, write_image
from mspan_jax.data.imresize import bicubic_downscale
from mspan_jax.errors import ConfigError, DataError
from mspan_jax.files import check_output_dir
from mspan_jax.progress import ProgressLine, count

_HR_DIR = flags.DEFINE_string("hr-dir", None, "Folder of HR images (any format Pillow reads).")
_OUT_DIR = flags.DEFINE_string("out-dir", None, "Folder for the LR PNGs (created if missing).")
_SCALE = flags.DEFINE_integer("scale", None, "Integer downscaling factor, e.g. 2, 3 or 4.")
_SUFFIX = flags.DEFINE_string("suffix", "x{scale}", "Appended to each HR stem ({scale}: the scale); "
                              "'' keeps the HR names.")
flags.mark_flags_as_required(["hr-dir", "out-dir", "scale"])


def main(argv: Sequence[str]) -> None:
    scale = _SCALE.value
    if scale < 1:
        raise ConfigError(f"--scale must be a positive integer, got {scale}")
    out_dir = check_output_dir(_OUT_DIR.value, "--out-dir")
    hr_paths = list_images(_HR_DIR.value)
    try:
        suffix = _SUFFIX.value.format(scale=scale)
    except (KeyError, IndexError, ValueError):
        raise ConfigError(f"--suffix {_SUFFIX.value!r}: only {{scale}} may stand in braces") from None
    if out_dir.resolve() == Path(_HR_DIR.value).resolve():
        raise ConfigError(f"--out-dir {out_dir} is the HR folder; choose another folder")
    names: dict[str, Path] = {}
    for path in hr_paths:
        name = f"{path.stem}{suffix}.png"
        if name in names:
            raise ConfigError(f"{path} and {names[name]} would both be written as {out_dir / name}")
        names[name] = path
    progress = ProgressLine(len(hr_paths), f"x{scale} LR")
    for name, path in names.items():
        hr = read_image(path)
        try:
            lr = bicubic_downscale(hr, scale)
        except DataError as e:  # smaller than the scale
            raise DataError(f"{path}: {e}") from None
        write_image(out_dir / name, lr)
        progress.update(f"{path.name} -> {lr.shape[1]}x{lr.shape[0]}")
    print(f"wrote {count(len(hr_paths), 'LR image')} (x{scale}, MATLAB bicubic) to {out_dir}")


if __name__ == "__main__":
    cli.run(main)
