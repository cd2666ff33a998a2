"""Does the training input pipeline keep up with training? Patches/s of `create_train_iterator`
next to the patches/s a jitted full-size MSPAN x4 train step (L1, Adam) consumes at the same batch,
both measured in this run on this machine. Target: pipeline >= 3x the train step.

    python benchmarks/input_pipeline.py [--json] [--images 8] [--batches 100] [--steps 3]

The pipeline reads a folder of synthetic 2K-class PNGs written to a temp dir (source "folder", LR made
by BI on the fly), so decoding and degradation are real; the decode-once start-up is reported apart.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from mspan_jax.config_base import sr_config
from mspan_jax.data.images import write_image
from mspan_jax.data.pipeline import create_train_iterator
from mspan_jax.models.registry import get_model
from mspan_jax.train.state import create_optimizer, create_train_state, learning_rate_schedule
from mspan_jax.train.step import train_step


def synthetic_photo(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour fields plus fine texture: compresses and decodes like a photo, not like noise."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (h // 16 + 1, w // 16 + 1, 3))
    base = ndimage.zoom(small, (16, 16, 1), order=3)[:h, :w]
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def measure_pipeline(config, folder: Path, batches: int) -> dict[str, float]:
    config.data.source, config.data.train_dir = "folder", str(folder)
    start = time.perf_counter()
    with create_train_iterator(config, process_index=0, process_count=1, verbose=False) as it:
        next(it)
        startup = time.perf_counter() - start
        for _ in range(3):  # let the prefetch queue reach steady state
            next(it)
        start = time.perf_counter()
        for _ in range(batches):
            next(it)
        elapsed = time.perf_counter() - start
    return {"startup_s": startup,
            "pipeline_patches_per_s": batches * config.train.batch_size / elapsed}


def measure_train_step(config, steps: int) -> dict[str, float]:
    model = get_model(config.model)
    s, b = config.model.scale, config.train.batch_size
    p = config.data.hr_patch_size // s
    rng = np.random.default_rng(0)
    batch = {"lr": jnp.asarray(rng.uniform(0, 1, (b, p, p, 3)), jnp.float32),
             "hr": jnp.asarray(rng.uniform(0, 1, (b, p * s, p * s, 3)), jnp.float32)}
    params = model.init(jax.random.PRNGKey(0), batch["lr"][:1])["params"]
    optimizer = create_optimizer(config.train)
    state = create_train_state(params, optimizer, ema_decay=0.0)
    step = jax.jit(functools.partial(train_step, apply_fn=model.apply, optimizer=optimizer,
                                     loss=config.train.loss, ema_decay=0.0,
                                     schedule=learning_rate_schedule(config.train)), donate_argnums=0)
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics["loss"])
    elapsed = time.perf_counter() - start
    return {"compile_and_first_step_s": compile_s, "train_step_s": elapsed / steps,
            "train_step_patches_per_s": steps * b / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--images", type=int, default=8, help="synthetic HR images (1020x1356 each)")
    parser.add_argument("--batches", type=int, default=100, help="pipeline batches timed")
    parser.add_argument("--steps", type=int, default=3, help="train steps timed after the first")
    args = parser.parse_args()
    if min(args.images, args.batches, args.steps) < 1:
        print("error: --images, --batches and --steps must be >= 1", file=sys.stderr)
        sys.exit(2)
    config = sr_config("mspan", 4)  # = configs/x4.py: full-size MSPAN, batch 16, HR patch 192
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    with tempfile.TemporaryDirectory(prefix="mspan_pipeline_bench_") as tmp:
        say(f"writing {args.images} synthetic 1356x1020 PNGs ...")
        for k in range(args.images):
            write_image(Path(tmp) / f"{k + 1:04d}.png", synthetic_photo(1020, 1356, k))
        say("timing the input pipeline ...")
        result = measure_pipeline(config, Path(tmp), args.batches)
    say(f"timing the jitted MSPAN x4 train step on {jax.devices()[0].platform} (compiling first) ...")
    result.update(measure_train_step(config, args.steps))
    result.update(
        ratio=result["pipeline_patches_per_s"] / result["train_step_patches_per_s"],
        batch_size=config.train.batch_size, lr_patch=config.data.hr_patch_size // config.model.scale,
        scale=config.model.scale, images=args.images, device=str(jax.devices()[0].device_kind),
        target_ratio=3.0,
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return
    print(f"input pipeline : {result['pipeline_patches_per_s']:10.1f} patches/s "
          f"(decode-once start-up {result['startup_s']:.1f} s for {args.images} images)")
    print(f"train step     : {result['train_step_patches_per_s']:10.1f} patches/s "
          f"({result['train_step_s']:.2f} s/step at batch {config.train.batch_size}, "
          f"{result['device']})")
    verdict = "OK" if result["ratio"] >= 3 else "BELOW TARGET"
    print(f"ratio          : {result['ratio']:10.1f}x  (target >= 3x: {verdict})")


if __name__ == "__main__":
    main()
