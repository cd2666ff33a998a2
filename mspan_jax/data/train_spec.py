"""What to train on: `config.data` (and the model / batch keys it depends on) checked once and resolved
into a `PipelineSpec`, so that the rest of the training pipeline reads plain, valid values.

Every problem is a one-line ValueError naming the config key and what to do. `train.batch_size` and
`data.hr_patch_size` are validated here and nowhere else: the training loop meets them through
`create_train_iterator`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from mspan_jax.config_base import is_restoration
from mspan_jax.data.degradations import DEGRADATIONS
from mspan_jax.errors import ConfigError

SOURCES = ("div2k", "div2k_folder", "folder", "skimage", "paired")
DATA_KEYS = {
    "source", "data_dir", "train_dir", "manual_dir", "hr_patch_size", "degradation", "noise_sigma",
    "noise_sigma_range", "noise_gray", "image_range", "augment", "prefetch", "num_workers", "cache_dir",
}
MAX_AUTO_WORKERS = 16  # num_workers=-1 starts one worker per core, at most this many


@dataclasses.dataclass(frozen=True)
class PipelineSpec:
    """The validated, resolved settings of a training pipeline."""

    source: str
    scale: int
    lr_patch: int
    batch_local: int
    process_index: int
    process_count: int
    seed: int
    restoration: bool
    degradation: str
    noise_sigma: float | tuple[float, float]
    noise_gray: bool
    gray_output: bool
    augment: bool
    prefetch: int
    num_workers: int
    cache_dir: str
    data_dir: str
    train_dir: str
    image_range: tuple[int, int]


def _fail(key: str, message: str) -> ConfigError:
    return ConfigError(f"config.{key}: {message}")


def _paired_hint(config: Any) -> str:
    """What source 'paired' needs, naming the config's benchmark (its first eval dataset)."""
    datasets = tuple(config.eval.get("datasets", ()) or ())
    name = str(datasets[0]) if datasets else "<set>"
    return (f"source 'paired' needs the {name} training pairs: --config.data.train_dir=DIR holding "
            f"DIR/LQ/ (degraded) and DIR/GT/ (clean) images matched by name, e.g. "
            f"~/ir_data/{name}/train; scripts/prepare_restoration_data.py lays out DID-MDN and PolyU "
            "as downloaded; where to get the data: docs/restoration.md")


def _as_int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise _fail(key, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _checked_patch(value: Any, scale: int) -> int:
    """`data.hr_patch_size`: an integer >= 2 that the scale divides (the LR patch is its s-th part)."""
    hr_patch = _as_int(value, "data.hr_patch_size", 2)
    if hr_patch % scale:
        raise _fail("data.hr_patch_size", f"{hr_patch} is not a multiple of model.scale={scale}; set "
                    f"it to a multiple of {scale}, e.g. {(hr_patch // scale + 1) * scale}")
    return hr_patch


def _checked_batch(value: Any, process_count: int) -> int:
    """`train.batch_size`: a positive integer that splits evenly over the processes."""
    batch = _as_int(value, "train.batch_size", 1)
    if batch % process_count:
        raise _fail("train.batch_size", f"{batch} is not divisible by the {process_count} processes; "
                    f"set it to a multiple of {process_count}")
    return batch


def resolve_spec(config: Any, process_index: int | None = None, process_count: int | None = None
                 ) -> PipelineSpec:
    """Checks `config.data` (and the batch/model keys it uses); one-line ValueError naming the key."""
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    if "data" not in config:
        raise _fail("data", "missing section")
    data = config.data
    unknown = sorted(set(data.keys()) - DATA_KEYS)
    if unknown:
        raise _fail(f"data.{unknown[0]}", f"unknown key; known keys: {sorted(DATA_KEYS)}")
    missing = sorted({"source", "hr_patch_size"} - set(data.keys()))
    if missing:
        raise _fail(f"data.{missing[0]}", "missing")
    get = data.get
    source = get("source")
    if source not in SOURCES:
        raise _fail("data.source", f"{source!r} is not a source; choose one of {list(SOURCES)}")
    scale = _as_int(config.model.scale, "model.scale", 1)
    restoration = is_restoration(config)  # ConfigError when config.task does not fit the scale
    hr_patch = _checked_patch(get("hr_patch_size"), scale)
    count = _as_int(process_count, "process_count", 1)
    index = _as_int(process_index, "process_index", 0)
    if index >= count:
        raise _fail("process_index", f"{index} is not below process_count={count}")
    batch = _checked_batch(config.train.batch_size, count)
    degradation = str(get("degradation", "BI")).upper()
    if degradation not in DEGRADATIONS:
        raise _fail("data.degradation", f"{degradation!r}; choose one of {list(DEGRADATIONS)}")
    if source == "paired" and not restoration:
        raise _fail("data.source", "'paired' LQ/GT folders are for restoration (config.task "
                    "'denoise' or 'derain', mspan_ir at scale 1)")
    sigma_range = tuple(get("noise_sigma_range", ()) or ())
    sigma: float | tuple[float, float]
    if sigma_range:
        if len(sigma_range) != 2 or not 0 <= float(sigma_range[0]) <= float(sigma_range[1]):
            raise _fail("data.noise_sigma_range", f"must be () or (lo, hi) with 0 <= lo <= hi, got "
                        f"{sigma_range}")
        sigma = (float(sigma_range[0]), float(sigma_range[1]))
    else:
        sigma = float(get("noise_sigma", 30.0))
        if sigma < 0:
            raise _fail("data.noise_sigma", f"must be >= 0, got {sigma}")
    image_range = tuple(get("image_range", (1, 800)))
    if len(image_range) != 2 or not 0 <= int(image_range[0]) <= int(image_range[1]):
        raise _fail("data.image_range", f"must be (first, last) image numbers, got {image_range}")
    train_dir = str(get("train_dir", "") or "")
    if source in ("div2k_folder", "folder", "paired"):
        if not train_dir and source == "paired":
            raise _fail("data.train_dir", _paired_hint(config))
        if not train_dir:
            raise _fail("data.train_dir", f"source {source!r} needs a folder of training images")
        if not Path(train_dir).expanduser().is_dir():
            raise _fail("data.train_dir", f"{train_dir} is not a folder")
    in_channels = int(config.model.get("in_channels", 3))
    if in_channels not in (1, 3):
        raise _fail("model.in_channels", f"the pipeline yields RGB (3) or gray (1), got {in_channels}")
    return PipelineSpec(
        source=source, scale=scale, lr_patch=hr_patch // scale, batch_local=batch // count,
        process_index=index, process_count=count, seed=int(config.get("seed", 0)),
        restoration=restoration, degradation=degradation, noise_sigma=sigma,
        noise_gray=bool(get("noise_gray", False)), gray_output=in_channels == 1,
        augment=bool(get("augment", True)), prefetch=_as_int(get("prefetch", 2), "data.prefetch", 1),
        num_workers=resolve_workers(get("num_workers", -1)),
        cache_dir=str(get("cache_dir", "") or ""), data_dir=str(get("data_dir", "") or ""),
        train_dir=train_dir,
        image_range=(int(image_range[0]), int(image_range[1])),
    )


def host_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(value: Any) -> int:
    """`config.data.num_workers`: -1 -> one per core (at most MAX_AUTO_WORKERS), 0 -> in-process."""
    if value == -1:
        return min(host_cores(), MAX_AUTO_WORKERS)
    return _as_int(value, "data.num_workers", 0)
