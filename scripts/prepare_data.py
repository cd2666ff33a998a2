"""Prepares tfds datasets into a tfds data_dir, on this disk or in a bucket (gs://): DIV2K
(tfds' own `div2k/bicubic_x{s}` builder, `config.data.source="div2k"`) and the SR benchmark sets
(validation and evaluation).

  python scripts/prepare_data.py --sets=div2k --scale=4 --data-dir=~/tensorflow_datasets
  python scripts/prepare_data.py --sets=div2k,set5,set14,b100,urban100 --scale=4 \\
      --manual-dir=~/sr_data --data-dir=gs://BUCKET/tfds

DIV2K: with `DIV2K_train_HR.zip`, `DIV2K_valid_HR.zip` and `DIV2K_{train,valid}_LR_bicubic_X{s}.zip`
in --manual-dir (as the DIV2K site names them) tfds extracts those; otherwise tfds downloads them
(~4.2 GB at x4). Benchmarks: HR images in `<manual-dir>/<Set>/HR/` (docs/data.md), or --download.
A gs:// --data-dir is prepared in this machine's cache folder and uploaded through gcsfs; training
and evaluation copy it back the same way (mspan_jax.storage.local_tfds_dir, docs/tpu_pod.md).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from absl import flags

from mspan_jax import cli
from mspan_jax.errors import ConfigError
from mspan_jax.extras import require
from mspan_jax.storage import is_remote, local_tfds_dir, upload_tree

_SETS = flags.DEFINE_list("sets", None, "What to prepare: div2k and/or benchmark sets "
                          "(set5,set14,b100,urban100,manga109).")
_SCALE = flags.DEFINE_integer("scale", 4, "Scale: DIV2K bicubic_x{scale} (2, 3, 4), the benchmarks' LR.")
_DEGRADATION = flags.DEFINE_string("degradation", "BI", "The benchmarks' LR degradation (BI, BD, DN).")
_DATA_DIR = flags.DEFINE_string("data-dir", None, "tfds data_dir to prepare into: a folder or gs://...")
_MANUAL_DIR = flags.DEFINE_string("manual-dir", None, "Folder of the DIV2K zips and the benchmarks' HR "
                                  "folders (default: tfds's <data_dir>/downloads/manual).")
_DOWNLOAD = flags.DEFINE_bool("download", False, "Benchmarks missing from --manual-dir: fetch EDSR's "
                              "benchmark.tar (Set5/Set14/B100/Urban100).")
flags.mark_flags_as_required(["sets", "data-dir"])


def prepare_div2k(scale: int, data_dir: str, manual_dir: str | None) -> str:
    """Prepares tfds `div2k/bicubic_x{scale}` into the local `data_dir`; returns its folder there."""
    if scale not in (2, 3, 4):
        raise ConfigError(f"--scale={scale}: tfds DIV2K has bicubic LR for scales 2, 3 and 4")
    import tensorflow_datasets as tfds

    from mspan_jax.data.builders.div2k import div2k_builder

    builder = div2k_builder(scale, data_dir)
    if not builder.is_prepared():
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=os.fspath(Path(manual_dir).expanduser()) if manual_dir else None))
    return f"div2k/bicubic_x{scale}"


def main(argv: Sequence[str]) -> None:
    require("tfds", "scripts/prepare_data.py (tfds builders)")
    from mspan_jax.data.datasets import load_benchmark

    data_dir, scale = _DATA_DIR.value, _SCALE.value
    remote = is_remote(data_dir)
    for name in [s.strip().lower() for s in _SETS.value if s.strip()]:
        folder = (f"div2k/bicubic_x{scale}" if name == "div2k"
                  else f"{name}/{_DEGRADATION.value.lower()}_x{scale}")
        # gs://: what the bucket holds already is copied here first (then nothing is rebuilt).
        local = (local_tfds_dir(data_dir, folder, "--data-dir") if remote
                 else os.path.expanduser(data_dir))
        if name == "div2k":
            prepare_div2k(scale, local, _MANUAL_DIR.value)
            what = f"tfds div2k/bicubic_x{scale}"
        else:
            pairs = load_benchmark(name, scale, _DEGRADATION.value, data_dir=local,
                                   manual_dir=_MANUAL_DIR.value, download=_DOWNLOAD.value)
            what = f"{name} {_DEGRADATION.value.upper()} x{scale} ({len(pairs)} images)"
        if remote:
            count = upload_tree(Path(local) / folder, f"{data_dir.rstrip('/')}/{folder}")
            print(f"{what}: uploaded {count} files to {data_dir.rstrip('/')}/{folder}", flush=True)
        else:
            print(f"{what}: prepared in {Path(local) / folder}", flush=True)


if __name__ == "__main__":
    cli.run(main)
