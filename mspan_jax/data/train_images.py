"""This process's training images, decoded once: each image read by its loader (`sources.py`), aligned
and degraded (`prepare_image`), and kept in a `DecodedImages` (`decoded_cache.py`): in memory, in a
shared temporary file when worker processes cut the batches, or in `config.data.cache_dir`, where a
restarted run finds it instead of decoding again.

When the LR is made on the fly, BI / BD are applied to the whole image here, once; DN only its
bicubic part (the noise is drawn per patch, `patches.py`). The decoding runs in the
`config.data.num_workers` grain workers (`grain_workers.py`), in input order.
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import numpy as np

from mspan_jax.data.decoded_cache import (
    CacheWriter,
    DecodedImages,
    DiskCache,
    TrainImage,
    fingerprint,
)
from mspan_jax.data.degradations import degrade, rgb_to_gray
from mspan_jax.data.grain_workers import in_workers
from mspan_jax.data.imresize import bicubic_downscale, modcrop
from mspan_jax.data.sources import (
    LoadedItem,
    Loader,
    div2k_tfds,
    div2k_tfds_items,
    shard,
    source_loaders,
)
from mspan_jax.data.train_spec import PipelineSpec
from mspan_jax.errors import DataError
from mspan_jax.progress import ProgressLine


class ModcropWarning(UserWarning):
    """A training image not divisible by the scale was cropped to it: summed up in one line."""


def prepare_image(spec: PipelineSpec, name: str, target: np.ndarray, source: np.ndarray | None,
                  origin: str) -> TrainImage | None:
    """Aligns / degrades one decoded image; None (with a warning naming `origin`) when it cannot give a
    patch. HR not divisible by the scale is cropped (warning); a premade LR of the wrong size is
    skipped."""
    s, p = spec.scale, spec.lr_patch
    lr_size = (target.shape[0] // s, target.shape[1] // s)
    if target.shape[0] % s or target.shape[1] % s:
        lr_matches = source is not None and source.shape[:2] == lr_size
        if not lr_matches and spec.source != "skimage":  # bundled photos: modcrop is expected
            warnings.warn(f"{origin}: {target.shape[1]}x{target.shape[0]} is not divisible by "
                          f"scale {s}; HR cropped to a multiple of it (modcrop)", ModcropWarning,
                          stacklevel=2)
        target = modcrop(target, s)
    if source is not None and source.shape[:2] != (target.shape[0] // s, target.shape[1] // s):
        warnings.warn(f"skipped: {origin}: LR is {source.shape[1]}x{source.shape[0]}, expected "
                      f"{target.shape[1] // s}x{target.shape[0] // s} for scale {s}", stacklevel=2)
        return None
    if min(target.shape[:2]) < p * s:
        warnings.warn(f"skipped: {origin}: {target.shape[1]}x{target.shape[0]} is smaller than the "
                      f"{p * s}x{p * s} patch", stacklevel=2)
        return None
    if source is None and not spec.restoration:
        # BI / BD: the whole LR image once. DN: its bicubic part once, fresh noise per patch.
        source = bicubic_downscale(target, s) if spec.degradation == "DN" else \
            degrade(target, s, spec.degradation)
    if spec.gray_output:
        target = rgb_to_gray(target)
        source = None if source is None else rgb_to_gray(source)
    target = np.ascontiguousarray(target)
    return TrainImage(name, target, None if source is None else np.ascontiguousarray(source))


def _prepare_recorded(spec: PipelineSpec, item: LoadedItem) -> tuple[Any, list]:
    """`prepare_image` of a loaded item, with the warnings it raised returned (as (message, category)
    pairs) instead of shown, so that a worker process can hand them to the training process."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = None if item is None else prepare_image(spec, *item)
    found = None if image is None else (image.name, image.target, image.source)
    return found, [(str(w.message), w.category) for w in caught]


def _load_and_prepare(spec: PipelineSpec, loader: Loader) -> tuple[Any, list]:
    """One input read and prepared (in a decoding worker), its warnings recorded as `_prepare_recorded`
    records them."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        item = loader()
    found, messages = _prepare_recorded(spec, item)
    return found, [(str(w.message), w.category) for w in caught] + messages


def _decoded_items(spec: PipelineSpec, loaders: Sequence[Loader] | None, tfds_source: Any
                   ) -> Iterator[tuple[Any, list]]:
    """(prepared image or None, warnings) per input, in input order."""
    if loaders is None:  # tfds: tf.data decodes in its own threads; degradation (if any) here
        for item in div2k_tfds_items(spec, *tfds_source):
            yield _prepare_recorded(spec, item)
        return
    work = functools.partial(_load_and_prepare, spec)
    workers = min(spec.num_workers, len(loaders))
    if workers == 0:
        yield from map(work, loaders)
        return
    iterator = iter(in_workers(grain.MapDataset.source(list(loaders)).map(work), workers, 1))
    try:
        yield from iterator
    finally:
        iterator.close()


def _cache_key(spec: PipelineSpec, inputs: list) -> dict[str, Any]:
    """What the decoded bytes depend on (JSON-normalised, as the index stores it)."""
    key = dict(source=spec.source, scale=spec.scale, hr_patch=spec.lr_patch * spec.scale,
               degradation=spec.degradation, restoration=spec.restoration, gray=spec.gray_output,
               shard=[spec.process_index, spec.process_count], image_range=list(spec.image_range),
               inputs=fingerprint(inputs), num_inputs=len(inputs))
    return json.loads(json.dumps(key))


def _say_cropped(messages: list[str], total: int, scale: int) -> None:
    """One warning for every training image modcrop cropped, with the first as the example."""
    example = messages[0].split(" is not divisible")[0]
    warnings.warn(f"{len(messages)} of {total} training images are not divisible by scale {scale}; "
                  f"HR cropped to a multiple of it (modcrop), e.g. {example}", ModcropWarning,
                  stacklevel=3)


def load_train_images(spec: PipelineSpec, verbose: bool = True) -> DecodedImages:
    """Decodes this process's shard once, in a fixed order, with `spec.num_workers` processes; raises
    if nothing is usable. The images are file-backed (shareable with worker processes) when there are
    workers or a `cache_dir`; a valid cache in `cache_dir` is mapped instead of decoding."""
    what = f"decoding {spec.source} shard {spec.process_index + 1}/{spec.process_count}:"
    loaders: list[Loader] | None = None
    tfds_source = None
    if spec.source == "div2k":
        tfds_source = div2k_tfds(spec)
        builder, split, _ = tfds_source
        inputs = [builder.name, str(builder.version), str(builder.data_dir), str(split)]
        try:
            total = int(builder.info.splits[split].num_examples)
        except (KeyError, ValueError, TypeError):
            total = 0
    else:
        loaders = shard(source_loaders(spec), spec.process_index, spec.process_count)
        if not loaders:
            raise DataError(f"config.data.source={spec.source!r}: process {spec.process_index} of "
                             f"{spec.process_count} has no images (fewer images than processes)")
        inputs, total = [loader.inputs() for loader in loaders], len(loaders)

    cache = None
    if spec.cache_dir:
        tag = (f"{spec.source}-x{spec.scale}-{spec.degradation.lower()}"
               f"-p{spec.process_index + 1}of{spec.process_count}")
        cache = DiskCache(spec.cache_dir, tag, _cache_key(spec, inputs))
        found = cache.open(verbose)
        if found is not None:
            return found
        writer: CacheWriter | None = cache.writer()
    elif spec.num_workers:
        writer = CacheWriter(None, temporary=True, expected_images=max(total, 1))
    else:
        writer = None

    kept: list[TrainImage] = []  # in memory (no writer)
    written = 0
    cropped: list[str] = []  # ModcropWarning messages: said once, with their count
    progress = ProgressLine(total, what, enabled=verbose and total > 0)
    try:
        for found, messages in _decoded_items(spec, loaders, tfds_source):
            for message, category in messages:
                if issubclass(category, ModcropWarning):
                    cropped.append(message)
                else:
                    warnings.warn(message, category, stacklevel=2)
            progress.update("images")
            if found is None:
                continue
            image = TrainImage(*found)
            if writer is not None:
                writer.add(image)
                written += 1
            else:
                kept.append(image)
        if not kept and not written:
            raise DataError(f"config.data.source={spec.source!r}: every training image was skipped "
                             f"(see the warnings above; need images of at least "
                             f"{spec.lr_patch * spec.scale}px per side)")
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        if cropped:
            _say_cropped(cropped, total, spec.scale)
    if writer is None:
        return DecodedImages(kept)
    return cache.commit(writer) if cache is not None else writer.finish()
