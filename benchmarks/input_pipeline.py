"""Does the training input pipeline keep up with training, and scale with the cores? Patches/s of
`create_train_iterator` at each worker count (0 = in-process, 1, 2, 4, ... up to the cores), each
batch handed to the device as the training loop does (`sharding.make_global_batch`, waited for); the
training process's own time per patch when the workers are ahead, and the ceiling it implies; next to
the patches/s a jitted full-size MSPAN x4 train step (L1, Adam) consumes at the same batch, all
measured in this run on this machine; then the memory of all processes together at each worker count.

    python benchmarks/input_pipeline.py [--json] [--images 8] [--batches 200] [--rounds 3] [--steps 3]
                                        [--memory-images 100] [--cycles 20] [--quick]

`--quick` (about a minute on 2 cores): 4 images, 100 batches, 3 rounds, 10 ceiling cycles, no memory
test, no train step.

Ceiling: with `--max-workers` workers and `prefetch` 8, the benchmark sleeps until the workers have
filled their buffers, then takes their batches as fast as it can (next + hand to the device), in
`--cycles` cycles. The training process's CPU time (all its threads, `time.process_time`: receiving
from the workers, handing to the device) per patch taken is its cost per patch, and 1 / that cost the
ceiling: the patches/s no number of workers can exceed. CPU time, unlike the wall time of the drains
(also reported), does not grow when other jobs take the cores. The workers' CPU time per patch
(/proc/<pid>/stat, during the timed rounds) gives the throughput of one worker on a core of its own;
`estimate_16_cores` = min(ceiling, 15 cores x that): arithmetic, not a measurement. Batches are taken
as the training loop takes them, in the workers' shared memory (`TrainIterator(copy=False)`);
`ceiling_copy` is the ceiling with each batch copied out of its slot (`copy=True`, the default for
other callers), for comparison.

The pipeline reads a folder of synthetic 2K-class PNGs written to a temp dir (source "folder", LR made
by BI on the fly), so decoding and degradation are real; the decode-once start-up (all workers) and
the restart from `config.data.cache_dir` are reported apart. Worker counts are timed in interleaved
rounds (median reported), each after its workers started and filled their buffers, because the
machine may be shared. Targets: 2 workers >= 1.5x the patches/s of 0 workers; pipeline >= 3x the
train step; memory with N workers <= 1.3x that of 0 workers.

Memory: `--memory-images` random 2040x1356 images (DIV2K-sized; 800 would be all of DIV2K, ~7 GB)
are put in the decoded cache without decoding, 100 batches are cut, and /proc/<pid>/smaps_rollup is
summed over the training process and its workers. RSS counts a page shared by k processes k times;
PSS splits it among them, so the PSS sum is the memory of all processes together (the training process
maps the whole cache, so every cache page is counted exactly once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from mspan_jax.config_base import sr_config
from mspan_jax.data.decoded_cache import CacheWriter, DecodedImages, TrainImage, temporary_cache_path
from mspan_jax.data.images import write_image
from mspan_jax.data.input_pipeline import BatchSampler, TrainIterator, create_train_iterator
from mspan_jax.data.train_spec import host_cores, resolve_spec
from mspan_jax.models.registry import get_model
from mspan_jax.train import sharding
from mspan_jax.train.state import create_optimizer, create_train_state
from mspan_jax.train.step import make_train_step


def synthetic_photo(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour fields plus fine texture: compresses and decodes like a photo, not like noise."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (h // 16 + 1, w // 16 + 1, 3))
    base = ndimage.zoom(small, (16, 16, 1), order=3)[:h, :w]
    return np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def worker_counts(cores: int) -> list[int]:
    """0, 1, 2, 4, ... up to the cores (and the cores themselves)."""
    counts, n = [0, 1], 2
    while n < cores:
        counts.append(n)
        n *= 2
    return sorted(set(counts + [cores]))


def _take(it, mesh) -> None:
    """One batch as the training loop takes it: next, then handed to the device (and waited for)."""
    jax.block_until_ready(sharding.make_global_batch(next(it), mesh))


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _workers_cpu_s() -> float:
    """CPU seconds so far of this process's descendants (the grain workers)."""
    total = 0.0
    for pid in _process_tree(os.getpid())[1:]:
        try:
            total += _cpu_s(pid)
        except (OSError, IndexError, ValueError):
            continue
    return total


def _patches_per_s(it, mesh, batches: int, batch_size: int, workers: int, prefetch: int) -> dict:
    """End-to-end patches/s, and the CPU time per patch of this process and of its workers."""
    for _ in range(max(1, workers) * prefetch + 3):  # workers started, buffers full: steady state
        _take(it, mesh)
    cpu, workers_cpu, start = time.process_time(), _workers_cpu_s(), time.perf_counter()
    for _ in range(batches):
        _take(it, mesh)
    elapsed, patches = time.perf_counter() - start, batches * batch_size
    return {"patches_per_s": patches / elapsed,
            "process_cpu_us": (time.process_time() - cpu) / patches * 1e6,
            "workers_cpu_us": (_workers_cpu_s() - workers_cpu) / patches * 1e6}


def measure_ceiling(config, workers: int, cycles: int, rate: float, copy: bool = False) -> dict:
    """The training process's CPU time per patch taken while `workers` workers are ahead (see the
    module docstring), and the wall time of taking the buffered batches; `copy`: batches copied out
    of their slots (`TrainIterator(copy=True)`) instead of read in place as the training loop does."""
    mesh = sharding.create_mesh(jax.devices()[:1])
    config.data.num_workers, config.data.prefetch = workers, 8
    batch_size = config.train.batch_size
    ahead = workers * config.data.prefetch  # batches the workers' buffers hold
    refill_s = max(0.2, 3 * ahead * batch_size / rate)
    drain_s, cpu_s, taken = 0.0, 0.0, 0
    with create_train_iterator(config, process_index=0, process_count=1, verbose=False,
                               copy=copy) as it:
        for _ in range(ahead + 3):  # workers started
            _take(it, mesh)
        for _ in range(cycles):
            cpu = time.process_time()
            time.sleep(refill_s)  # the workers fill their buffers; this process receives
            start = time.perf_counter()
            for _ in range(ahead):
                _take(it, mesh)
            drain_s += time.perf_counter() - start
            cpu_s += time.process_time() - cpu
            taken += ahead * batch_size
    cpu_us, drain_us = cpu_s / taken * 1e6, drain_s / taken * 1e6
    return {"workers": workers, "copy": copy, "patches": taken, "process_cpu_us_per_patch": cpu_us,
            "ceiling_patches_per_s": 1e6 / cpu_us, "drain_wall_us_per_patch": drain_us,
            "drain_patches_per_s": 1e6 / drain_us, "refill_sleep_s": refill_s}


def measure_pipeline(config, folder: Path, cache: Path, batches: int, rounds: int, counts: list[int]
                     ) -> dict:
    """Decode-once start-up, restart from the cache, then patches/s per worker count (median)."""
    config.data.source, config.data.train_dir = "folder", str(folder)
    config.data.cache_dir = str(cache)
    start = time.perf_counter()
    with create_train_iterator(config, process_index=0, process_count=1, verbose=False) as it:
        next(it)
        startup = time.perf_counter() - start
    start = time.perf_counter()
    with create_train_iterator(config, process_index=0, process_count=1, verbose=False) as it:
        next(it)
        restart = time.perf_counter() - start
    mesh = sharding.create_mesh(jax.devices()[:1])
    runs: dict[int, list[dict]] = {n: [] for n in counts}
    for _ in range(rounds):
        for n in counts:
            config.data.num_workers = n
            with create_train_iterator(config, process_index=0, process_count=1, verbose=False,
                                       copy=False) as it:  # as the training loop takes them
                runs[n].append(_patches_per_s(it, mesh, batches, config.train.batch_size, n,
                                              config.data.prefetch))
    return {"startup_s": startup, "restart_from_cache_s": restart,
            "scaling": [{"workers": n,
                         "patches_per_s": statistics.median(r["patches_per_s"] for r in v),
                         "patches_per_s_rounds": [r["patches_per_s"] for r in v],
                         "process_cpu_us_per_patch": statistics.median(r["process_cpu_us"] for r in v),
                         "workers_cpu_us_per_patch": statistics.median(r["workers_cpu_us"] for r in v)}
                        for n, v in runs.items()]}


def _smaps(pid: int) -> dict[str, int]:
    """Rss / Pss of a process in bytes, from /proc/<pid>/smaps_rollup."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key] = int(rest.split()[0]) * 1024
    return values


def _process_tree(pid: int) -> list[int]:
    children, found = {}, [pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    for p in found:
        found.extend(children.get(p, []))
    return found


def measure_memory(config, images: int, counts: list[int]) -> list[dict]:
    """Summed RSS / PSS of this process and its workers with `images` 2040x1356 images cached."""
    config.data.source, config.data.train_dir, config.data.cache_dir = "skimage", "", ""
    rng = np.random.default_rng(0)
    pattern = rng.integers(0, 256, (1356, 2040, 3), dtype=np.uint8)
    s = config.model.scale
    results = []
    for n in counts:
        config.data.num_workers = n
        spec = resolve_spec(config, 0, 1)
        rolled = (np.roll(pattern, k, axis=1) for k in range(images))
        made = (TrainImage(f"{k:04d}", hr, np.ascontiguousarray(hr[::s, ::s]))
                for k, hr in enumerate(rolled))
        if n == 0:  # in memory, as the pipeline keeps it without workers
            decoded = DecodedImages(list(made))
        else:  # one temporary file in shared memory, as the pipeline makes it for workers
            writer = CacheWriter(temporary_cache_path(), temporary=True)
            for image in made:
                writer.add(image)
            decoded = writer.finish()
        with TrainIterator(BatchSampler(spec, decoded), 0, config.data.prefetch, workers=n,
                           copy=False) as it:
            for _ in range(100):
                next(it)
            for image in decoded:  # the training process maps every cache page (see the docstring)
                for array in (image.target, image.source):
                    int(array.reshape(-1)[::4096].sum())
            tree = _process_tree(os.getpid())
            use = [_smaps(pid) for pid in tree if Path(f"/proc/{pid}/smaps_rollup").exists()]
        decoded.release_temporary()
        results.append({"workers": n, "processes": len(use), "cache_mb": decoded.nbytes / 2**20,
                        "rss_sum_mb": sum(u["Rss"] for u in use) / 2**20,
                        "pss_sum_mb": sum(u["Pss"] for u in use) / 2**20})
        del decoded
    return results


def measure_train_step(config, steps: int) -> dict[str, float]:
    """Seconds and patches/s of the jitted train step (no EMA) on one random batch of `config`'s."""
    model = get_model(config.model)
    s, b = config.model.scale, config.train.batch_size
    p = config.data.hr_patch_size // s
    rng = np.random.default_rng(0)
    batch = {"lr": jnp.asarray(rng.uniform(0, 1, (b, p, p, 3)), jnp.float32),
             "hr": jnp.asarray(rng.uniform(0, 1, (b, p * s, p * s, 3)), jnp.float32)}
    params = model.init(jax.random.PRNGKey(0), batch["lr"][:1])["params"]
    train_config = config.train.copy_and_resolve_references()
    train_config.ema_decay = 0.0
    optimizer = create_optimizer(train_config)
    state = create_train_state(params, optimizer.tx, ema_decay=0.0)
    step = make_train_step(train_config, model.apply, optimizer)
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
    parser.add_argument("--images", type=int, default=8, help="synthetic HR images (1356x1020 each)")
    parser.add_argument("--batches", type=int, default=200, help="pipeline batches timed per count")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the counts")
    parser.add_argument("--max-workers", type=int, default=0, help="highest count (default: cores)")
    parser.add_argument("--steps", type=int, default=3, help="train steps timed after the first")
    parser.add_argument("--memory-images", type=int, default=100,
                        help="2040x1356 images in the memory test (0: skip it)")
    parser.add_argument("--cycles", type=int, default=20, help="fill-and-take cycles of the ceiling")
    parser.add_argument("--quick", action="store_true",
                        help="--images 4 --batches 100 --rounds 3 --cycles 10 --memory-images 0, "
                             "no train step")
    args = parser.parse_args()
    if args.quick:
        args.images, args.batches, args.rounds, args.cycles = 4, 100, 3, 10
        args.memory_images, args.steps = 0, 0
    if min(args.images, args.batches, args.rounds, args.cycles) < 1 or args.steps < 0 \
            or args.memory_images < 0:
        print("error: --images, --batches, --rounds and --cycles must be >= 1, --steps and "
              "--memory-images >= 0", file=sys.stderr)
        sys.exit(2)
    config = sr_config("mspan", 4)  # = configs/x4.py: full-size MSPAN, batch 16, HR patch 192
    cores = host_cores()
    counts = worker_counts(args.max_workers or cores)
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="mspan_pipeline_bench_") as tmp:
        folder = Path(tmp) / "images"
        say(f"writing {args.images} synthetic 1356x1020 PNGs ...")
        for k in range(args.images):
            write_image(folder / f"{k + 1:04d}.png", synthetic_photo(1020, 1356, k))
        say(f"timing the input pipeline at {counts} workers, {args.rounds} rounds ...")
        result = measure_pipeline(config, folder, Path(tmp) / "cache", args.batches, args.rounds,
                                  counts)
        speed = {row["workers"]: row["patches_per_s"] for row in result["scaling"]}
        top = max(counts)
        say(f"the training process's cost per patch, {top} workers ahead, {args.cycles} cycles ...")
        result["ceiling"] = measure_ceiling(config, top, args.cycles, speed[top])
        say("... and with each batch copied out of its slot (TrainIterator(copy=True)) ...")
        result["ceiling_copy"] = measure_ceiling(config, top, args.cycles, speed[top], copy=True)
    one = next((row for row in result["scaling"] if row["workers"] == 1), None)
    if one is not None:  # one worker's throughput on a core of its own, from its CPU time
        per_worker = 1e6 / one["workers_cpu_us_per_patch"]
        result["per_worker_patches_per_s"] = per_worker
        result["estimate_16_cores"] = min(result["ceiling"]["ceiling_patches_per_s"], 15 * per_worker)
    default_workers = min(cores, 16)
    result["pipeline_patches_per_s"] = speed.get(default_workers, max(speed.values()))
    if args.memory_images:
        say(f"memory with {args.memory_images} cached 2040x1356 images at {counts} workers ...")
        result["memory"] = measure_memory(sr_config("mspan", 4), args.memory_images, counts)
    if args.steps:
        say(f"timing the jitted MSPAN x4 train step on {jax.devices()[0].platform} (compiling first)")
        result.update(measure_train_step(config, args.steps))
        result["ratio"] = result["pipeline_patches_per_s"] / result["train_step_patches_per_s"]
    result.update(
        batch_size=config.train.batch_size, lr_patch=config.data.hr_patch_size // config.model.scale,
        scale=config.model.scale, images=args.images, device=str(jax.devices()[0].device_kind),
        target_ratio=3.0, cores=cores, default_workers=default_workers,
        load_average=[load_before, os.getloadavg()],
    )
    if 2 in speed:
        result["speedup_2_workers"] = speed[2] / speed[0]
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return
    print(f"decode-once start-up: {result['startup_s']:.1f} s for {args.images} images "
          f"({default_workers} workers); restart from cache_dir: {result['restart_from_cache_s']:.1f} s")
    for row in result["scaling"]:
        print(f"input pipeline, {row['workers']:2d} workers: {row['patches_per_s']:10.1f} patches/s "
              f"({row['patches_per_s'] / speed[0]:.2f}x of 0 workers); CPU per patch: training "
              f"process {row['process_cpu_us_per_patch']:.0f} us, workers "
              f"{row['workers_cpu_us_per_patch']:.0f} us")
    ceiling = result["ceiling"]
    print(f"training process, {ceiling['workers']} workers ahead: "
          f"{ceiling['process_cpu_us_per_patch']:.1f} us CPU per patch -> ceiling "
          f"{ceiling['ceiling_patches_per_s']:,.0f} patches/s (target >= 20,000); taking buffered"
          f" batches: {ceiling['drain_wall_us_per_patch']:.1f} us/patch wall")
    copied = result["ceiling_copy"]
    print(f"  the same with each batch copied out of its slot: {copied['process_cpu_us_per_patch']:.1f}"
          f" us -> {copied['ceiling_patches_per_s']:,.0f} patches/s")
    if "estimate_16_cores" in result:
        print(f"one worker on a core of its own: {result['per_worker_patches_per_s']:,.0f} patches/s; "
              f"16-core estimate min(ceiling, 15 x that): {result['estimate_16_cores']:,.0f} patches/s")
    for row in result.get("memory", []):
        print(f"memory, {row['workers']:2d} workers: PSS sum {row['pss_sum_mb']:7.0f} MB "
              f"({row['pss_sum_mb'] / result['memory'][0]['pss_sum_mb']:.2f}x of 0 workers), "
              f"RSS sum {row['rss_sum_mb']:7.0f} MB, {row['processes']} processes, "
              f"cache {row['cache_mb']:.0f} MB")
    if args.steps:
        print(f"train step          : {result['train_step_patches_per_s']:10.1f} patches/s "
              f"({result['train_step_s']:.2f} s/step at batch {config.train.batch_size}, "
              f"{result['device']})")
        verdict = "OK" if result["ratio"] >= 3 else "BELOW TARGET"
        print(f"ratio               : {result['ratio']:10.1f}x  (target >= 3x: {verdict})")
    print(f"load average (1, 5, 15 min) before / after: {load_before} / {os.getloadavg()}")


if __name__ == "__main__":
    main()
