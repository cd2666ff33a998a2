"""Speed of our jitted MSPAN x4 / IMDN x4 train step and inference against the PyTorch reference
models (mspan_jax/convert/torch_mspan.py, torch_imdn.py, built by torch_reference.py: the same
network, math and parameter names) at the same shapes, on the machine at hand.

    python benchmarks/speed.py [--json] [--quick] [--tiny] [--models mspan,imdn] [--rounds N]
                                [--attention mspa|esa|ca|none] [--no-torch-compile]
                                [--jax-variant NAME:KEY=VALUE[;KEY=VALUE]]... [--jax-dtypes float32]
                                [--torch-variants eager,...] [--profile CALLS]

The JAX workers run as `scripts/train.py` does by default: the host allocator keeps freed memory
(`host_allocator`) and a CPU's cores are single-threaded devices that the train step splits the
batch over (`train.cpu_devices`). `--jax-variant` adds a JAX worker with other environment variables,
timed in the same rounds as the rest: A/B settings in one run, each with its ratio to PyTorch. E.g.
`one:XLA_FLAGS=` (one device, XLA's per-op threads), `glibc:XLA_FLAGS=;MSPAN_KEEP_FREED_MEMORY=0`
(both as before issue 32), `split:MSPAN_SPLIT_CONCAT_1X1=1` (`layers.SPLIT_CONCAT_1X1`). The CPU
model and its vector flags are printed with the figures.

Train: L1 + Adam (the project's `make_train_step` and `create_optimizer`, no EMA), LR patch 48x48, batch
16 and 64. Inference: one image at LR 320x180 (720p out) and 256x256. JAX float32 and bfloat16
compute (float32 params and loss); PyTorch eager fp32, eager bf16 autocast, channels_last fp32 and
torch.compile fp32 (skipped, with the error, where it does not compile within --compile-timeout).

JAX and PyTorch run in separate worker processes that this script drives over pipes. On a CPU both
stay alive and all variants of one shape (both models, every framework and dtype) are timed
round-robin, one round at a time, so a noisy shared machine slows all of them alike; on a GPU the
JAX worker finishes before PyTorch starts, so the two allocators never share the device. The first
call (compilation) is reported apart as `compile_s`, never in the step times, which are medians
over rounds. `--quick` (batch 16, smaller inference, 3 rounds, no torch.compile) fits a few minutes
on an idle 2-core CPU; `--tiny` swaps in test-sized models for checking the output schema;
`--attention` times MSPAN with another block attention of the paper's ablation (default: the
config's, MSPA). `--json` prints one object: `machine` (with the load average at start and end:
say it beside the numbers), `train` rows {framework, variant, model, dtype, batch, s_per_step,
cpu_s_per_step, compile_s}, `infer` rows {framework, variant, model, dtype, lr_hw, s_per_image,
cpu_s_per_image, compile_s}, `ratios` (ours / PyTorch, wall and process-CPU time; < 1 is faster)
and a `summary` (MSPAN / IMDN and bfloat16 / float32 train-step ratios). `--profile CALLS` then
profiles each row over CALLS more calls (jax.profiler's trace of XLA:CPU's ops, torch.profiler's
aten ops) and gives its `profile`: ms per call in op categories that mean the same for both
frameworks, and the time in no op (`profile_breakdown.py`; CPU only).

The PyTorch baseline runs as its users run it: default thread settings (`torch.get_num_threads()`,
OpenMP's own wait policy; whatever OMP_* variables the caller set are passed through untouched
and reported), alone in its process, and only while the JAX worker waits on its pipe. The
process-CPU time is the steadier measure of work on a shared CPU, but PyTorch's OpenMP threads
spin at barriers by default and bill that as CPU time, so compare wall-clock ratios from one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mspan_jax.data.train_spec import host_cores
from mspan_jax.errors import first_line
from mspan_jax.train.cpu_devices import ONE_THREAD_FLAG, cpu_device_count, cpu_xla_flags

REPO_ROOT = Path(__file__).resolve().parents[1]
JAX_VARIANTS = [("jit", "float32"), ("jit", "bfloat16")]
TORCH_VARIANTS = [("eager", "float32"), ("eager_autocast", "bfloat16"),
                  ("channels_last", "float32"), ("compile", "float32")]
# --tiny's models: widths that compile in seconds on a CPU (for checking the output schema; the
# numbers mean nothing), MSPA at width 8 / 2 = 4. Every key must be one of the model's config keys
# (its spec's defaults, checked below), so a renamed model key fails here instead of being ignored.
TINY_MODELS = {"mspan": dict(num_features=8, num_blocks=2, num_units=2, attention_reduction=2),
               "imdn": dict(num_features=16, num_modules=2, cca_reduction=4)}
# --jax-variant's knob for `layers.SPLIT_CONCAT_1X1` in a JAX worker ("1": the IDDB's 1x1s over
# concatenations as sums of per-part matmuls).
SPLIT_ENV = "MSPAN_SPLIT_CONCAT_1X1"
OMP_ENV = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "MKL_NUM_THREADS")


def cpu_info() -> dict[str, Any]:
    """The CPU model and its vector-ISA flags (AVX*, AMX, FMA, F16C) from /proc/cpuinfo: the
    ratios here depend on the processor, so they travel with it."""
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            info["model"] = value.strip()
        elif key.strip() == "flags":
            info["flags"] = sorted(f for f in value.split()
                                   if f.startswith(("avx", "amx", "fma", "f16c", "vnni")))
            break
    return info


def parse_jax_variant(text: str) -> tuple[str, dict[str, str]]:
    """'NAME:KEY=VALUE[;KEY=VALUE...]' -> (NAME, environment for that JAX worker), e.g.
    'dp2:XLA_FLAGS=--xla_force_host_platform_device_count=2'."""
    name, sep, rest = text.partition(":")
    if not sep or not name or not rest:
        raise ValueError(f"--jax-variant {text!r}: expected NAME:KEY=VALUE[;KEY=VALUE]")
    env = {}
    for item in rest.split(";"):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--jax-variant {text!r}: {item!r} is not KEY=VALUE")
        env[key.strip()] = value
    return name, env


def model_config(name: str, tiny: bool, attention: str | None = None) -> dict[str, Any]:
    """config.model of MSPAN x4 or IMDN x4 as a plain dict (tiny widths when `tiny`; MSPAN's block
    `attention` when given)."""
    from mspan_jax.config_base import model_config as base

    cfg = dict(base(name, 4))
    overrides = dict(TINY_MODELS[name]) if tiny else {}
    if attention is not None and name == "mspan":
        overrides["attention"] = attention
    unknown = sorted(set(overrides) - set(cfg))
    if unknown:
        raise ValueError(f"speed.py: {name} has no config keys {unknown} (its ModelSpec's defaults)")
    cfg.update(overrides)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items()}


# ---------------------------------------------------------------------------------------------
# Workers: one process per framework, one JSON command per line on stdin, one reply on stdout.
# ---------------------------------------------------------------------------------------------


class JaxRunner:
    """Builds a jitted train step or inference call for one (case, dtype) and times it."""

    def __init__(self) -> None:
        from mspan_jax.host_allocator import keep_freed_memory

        self.keeps_freed_memory = keep_freed_memory()  # as the scripts do; opt out by its env var
        import jax

        self.jax = jax
        self.fns: dict[str, Any] = {}
        self.lowered: dict[str, Any] = {}  # key -> the jitted call's Lowered (its HLO, for profiles)

    def info(self) -> dict[str, Any]:
        dev = self.jax.devices()[0]
        return {"backend": dev.platform, "device": dev.device_kind, "jax": self.jax.__version__,
                "devices": len(self.jax.devices()), "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "split_concat_1x1": os.environ.get(SPLIT_ENV, ""),
                "keeps_freed_memory": self.keeps_freed_memory}

    def setup(self, key: str, case: dict[str, Any], variant: str, dtype: str) -> float:
        import jax.numpy as jnp
        import numpy as np

        from mspan_jax.config_base import sr_config
        from mspan_jax.models.registry import get_model
        from mspan_jax.train.sharding import create_mesh
        from mspan_jax.train.state import create_optimizer, create_train_state
        from mspan_jax.train.step import make_train_step

        del variant  # the worker's settings are its environment (--jax-variant)
        from mspan_jax.models import layers

        layers.SPLIT_CONCAT_1X1 = os.environ.get(SPLIT_ENV, layers.SPLIT_CONCAT_1X1) in (True, "1")
        cfg = dict(case["model_config"], dtype=dtype)
        model = get_model(cfg)
        rng = np.random.default_rng(0)
        if case["kind"] == "train":
            b, p, s = case["batch"], case["lr_patch"], cfg["scale"]
            batch = {"lr": jnp.asarray(rng.uniform(0, 1, (b, p, p, 3)), jnp.float32),
                     "hr": jnp.asarray(rng.uniform(0, 1, (b, p * s, p * s, 3)), jnp.float32)}
            params = model.init(self.jax.random.key(0), batch["lr"][:1])["params"]
            train_config = sr_config(cfg["name"], 4).train
            train_config.update(loss="l1", ema_decay=0.0)
            optimizer = create_optimizer(train_config)
            state = create_train_state(params, optimizer.tx, ema_decay=0.0)
            # Several (host) devices: the loop's data parallelism, batch split over a 'data' mesh.
            mesh = create_mesh() if len(self.jax.devices()) > 1 else None
            step = make_train_step(train_config, model.apply, optimizer, mesh)
            holder = {"state": state}

            def run() -> Any:
                holder["state"], metrics = step(holder["state"], batch)
                return metrics["loss"]

            lower = lambda: step.lower(holder["state"], batch)  # noqa: E731
        else:
            h, w = case["lr_hw"]
            x = jnp.asarray(rng.uniform(0, 1, (1, h, w, 3)), jnp.float32)
            variables = model.init(self.jax.random.key(0), x[:, :16, :16])
            apply = self.jax.jit(model.apply)

            def run() -> Any:
                return apply(variables, x)

            lower = lambda: apply.lower(variables, x)  # noqa: E731
        start = time.perf_counter()
        self.jax.block_until_ready(run())
        compile_s = time.perf_counter() - start
        self.fns[key], self.lowered[key] = run, lower
        return compile_s

    def time(self, key: str, calls: int) -> list[float]:
        run = self.fns[key]
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            out = run()
        self.jax.block_until_ready(out)
        return [(time.perf_counter() - start) / calls, (time.process_time() - cpu) / calls]

    def profile(self, key: str, calls: int) -> dict[str, Any]:
        """`profile_breakdown.jax_breakdown` of `calls` calls, traced by jax.profiler."""
        import tempfile

        from profile_breakdown import jax_breakdown

        if self.jax.default_backend() != "cpu":
            raise ValueError("the op breakdown reads XLA:CPU's trace; this backend is not a CPU")
        hlo = self.lowered[key]().compile().as_text()  # the program already compiled: cached
        module = hlo.split(None, 2)[1].rstrip(",")  # "HloModule jit_train_step, ..."
        with tempfile.TemporaryDirectory() as trace_dir:
            with self.jax.profiler.trace(trace_dir, create_perfetto_trace=True):
                self.time(key, calls)
            result = jax_breakdown(trace_dir, hlo, module, host_cores())
        if ONE_THREAD_FLAG not in os.environ.get("XLA_FLAGS", ""):
            result["note"] = ("XLA's multi-threaded Eigen runs convs as pool tasks outside their "
                              "op's event: their time shows as 'in no op'")
        return result

    def drop(self) -> None:
        self.fns.clear()
        self.lowered.clear()


class TorchRunner:
    """The PyTorch reference model of one (case, variant): eager, autocast, channels_last, compile."""

    def __init__(self, compile_timeout: float) -> None:
        import torch

        self.torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.compile_timeout = compile_timeout
        self.fns: dict[str, Any] = {}

    def info(self) -> dict[str, Any]:
        t = self.torch
        name = t.cuda.get_device_name() if self.device == "cuda" else platform.processor() or "cpu"
        return {"backend": self.device, "device": name, "torch": t.__version__,
                "threads": t.get_num_threads(), "interop_threads": t.get_num_interop_threads(),
                "omp_env": {k: os.environ[k] for k in OMP_ENV if k in os.environ}}

    def sync(self) -> None:
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def setup(self, key: str, case: dict[str, Any], variant: str, dtype: str) -> float:
        import contextlib

        from mspan_jax.convert.torch_reference import build_torch_model

        t = self.torch
        t.manual_seed(0)
        model = build_torch_model(case["model_config"]).to(self.device)
        fmt = t.channels_last if variant == "channels_last" else t.contiguous_format
        model = model.to(memory_format=fmt)
        if variant == "eager_autocast":
            autocast = lambda: t.autocast(self.device, dtype=t.bfloat16)  # noqa: E731
        else:
            autocast = contextlib.nullcontext
        net = t.compile(model) if variant == "compile" else model
        gen = t.Generator().manual_seed(0)

        def tensor(*shape: int) -> Any:
            return t.rand(*shape, generator=gen).to(self.device).contiguous(memory_format=fmt)

        if case["kind"] == "train":
            b, p, s = case["batch"], case["lr_patch"], case["model_config"]["scale"]
            lr, hr = tensor(b, 3, p, p), tensor(b, 3, p * s, p * s)
            model.train()
            opt = t.optim.Adam(model.parameters(), lr=2e-4)

            def run() -> None:
                opt.zero_grad(set_to_none=True)
                with autocast():
                    out = net(lr)
                loss = t.nn.functional.l1_loss(out.float(), hr)
                loss.backward()
                opt.step()
        else:
            h, w = case["lr_hw"]
            x = tensor(1, 3, h, w)
            model.eval()

            def run() -> None:
                with t.inference_mode(), autocast():
                    net(x)

        def alarm(*_: Any) -> None:
            raise TimeoutError(f"did not compile within {self.compile_timeout:.0f} s")

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.alarm(int(self.compile_timeout) if variant == "compile" else 0)
        try:
            start = time.perf_counter()
            run()
            self.sync()
            compile_s = time.perf_counter() - start
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
        self.fns[key] = run
        return compile_s

    def time(self, key: str, calls: int) -> list[float]:
        run = self.fns[key]
        self.sync()
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            run()
        self.sync()
        return [(time.perf_counter() - start) / calls, (time.process_time() - cpu) / calls]

    def profile(self, key: str, calls: int) -> dict[str, Any]:
        """`profile_breakdown.torch_breakdown` of `calls` calls, recorded by torch.profiler."""
        from profile_breakdown import torch_breakdown
        from torch.profiler import ProfilerActivity, profile

        if self.device != "cpu":
            raise ValueError("the op breakdown times aten ops on the CPU; this device is not one")

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            wall, _ = self.time(key, calls)
        return torch_breakdown(prof.key_averages(), calls, wall * calls)

    def drop(self) -> None:
        self.fns.clear()
        if self.device == "cuda":
            self.torch.cuda.empty_cache()


def worker(framework: str, compile_timeout: float) -> None:
    """Serves commands from the driver: info, setup, time, drop; replies {"ok": ...} or {"error"}."""
    out = sys.stdout
    sys.stdout = sys.stderr  # libraries' prints must not corrupt the protocol
    runner: JaxRunner | TorchRunner | None = None
    try:
        runner = JaxRunner() if framework == "jax" else TorchRunner(compile_timeout)
    except ImportError as e:
        failure = f"{framework} is not installed ({e})"
    for line in sys.stdin:
        msg = json.loads(line)
        if runner is None:
            reply = {"error": failure}
        else:
            try:
                cmd = msg.pop("cmd")
                reply = {"ok": getattr(runner, cmd)(**msg)}
            except Exception as e:  # noqa: BLE001 - reported to the driver, which skips the variant
                reply = {"error": first_line(e, typed=True)}
        out.write(json.dumps(reply) + "\n")
        out.flush()


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


class Worker:
    """A worker process and its pipe; `call` sends one command and returns its reply."""

    def __init__(self, framework: str, compile_timeout: float, variant: str = "jit",
                 env_changes: dict[str, str] | None = None) -> None:
        self.framework = framework
        self.variant = variant  # a JAX worker's name for its rows: "jit", or "jit:<--jax-variant>"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            TF_CPP_MIN_LOG_LEVEL="2", **(env_changes or {}))
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", framework, "--compile-timeout", str(compile_timeout)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)

    def call(self, cmd: str, **kwargs: Any) -> dict[str, Any]:
        assert self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            return {"error": f"the {self.framework} worker exited (code {self.proc.poll()})"}
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait()


def case_groups(quick: bool, tiny: bool, models: list[str],
                attention: str | None = None) -> list[list[dict[str, Any]]]:
    """The cases to measure, grouped by (kind, shape): one case per model in each group, so the
    models are timed in the same rounds and their ratio (MSPAN / IMDN) is interleaved too."""
    batches = [2] if tiny else [16] if quick else [16, 64]
    sizes = [(12, 16)] if tiny else [(90, 160), (128, 128)] if quick else [(180, 320), (256, 256)]
    configs = {name: model_config(name, tiny, attention) for name in models}
    groups = [[{"kind": "train", "model": name, "model_config": cfg, "batch": b,
                "lr_patch": 16 if tiny else 48} for name, cfg in configs.items()] for b in batches]
    groups += [[{"kind": "infer", "model": name, "model_config": cfg, "lr_hw": list(hw)}
                for name, cfg in configs.items()] for hw in sizes]
    return groups


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure_group(cases: list[dict[str, Any]], workers: list[tuple[Worker, list[tuple[str, str]]]],
                  rounds: int, calls: int, profile_calls: int = 0) -> list[dict[str, Any]]:
    """Sets up every (case, variant) of `cases` x `workers` (worker, its variants), then times them
    round-robin, one call batch each per round; rows carry the median seconds per call (wall and
    process-CPU) and the compile time. With `profile_calls`, each is then profiled over that many
    calls (after the timed rounds, so the profilers never slow a timed call): the row's
    `profile` (`profile_breakdown`), or `profile_error`."""
    live, rows = [], []
    for case in cases:
        for w, variants in workers:
            for variant, dtype in variants:
                variant = w.variant if w.framework == "jax" else variant
                key = f"{case['model']} {w.framework}/{variant}/{dtype}"
                reply = w.call("setup", key=key, case=case, variant=variant, dtype=dtype)
                if "error" in reply:
                    log(f"  {key}: skipped ({reply['error']})")
                    continue
                w.call("time", key=key, calls=1)  # one warm-up call after compilation
                live.append((case, w, key, variant, dtype, reply["ok"], []))
    for _ in range(rounds):
        for _case, w, key, *_rest, times in live:
            reply = w.call("time", key=key, calls=calls)
            if "ok" in reply:
                times.append(reply["ok"])
    for case, w, key, variant, dtype, compile_s, times in live:
        if not times:
            continue
        row = {"framework": "jax" if w.framework == "jax" else "pytorch", "variant": variant,
               "model": case["model"], "dtype": dtype}
        seconds = statistics.median(t[0] for t in times)
        cpu = statistics.median(t[1] for t in times)
        if case["kind"] == "train":
            row.update(batch=case["batch"], s_per_step=seconds, cpu_s_per_step=cpu)
        else:
            row.update(lr_hw=case["lr_hw"], s_per_image=seconds, cpu_s_per_image=cpu)
        row["compile_s"] = compile_s
        if profile_calls:
            reply = w.call("profile", key=key, calls=profile_calls)
            row.update({"profile": reply["ok"]} if "ok" in reply else {"profile_error": reply["error"]})
        rows.append(row)
        log(f"  {key:38s} {seconds * 1e3:10.2f} ms  cpu {cpu * 1e3:10.2f} ms  "
            f"(compile {compile_s:.1f} s)")
    for w, _ in workers:
        w.call("drop")
    return rows


def ratios(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """ours / PyTorch time per (model, size): float32 vs eager fp32 and vs the fastest PyTorch fp32
    variant, bfloat16 vs eager bf16 autocast."""
    size_key, time_key = ("batch", "s_per_step") if kind == "train" else ("lr_hw", "s_per_image")
    out = []
    sizes = sorted({(r["model"], json.dumps(r[size_key])) for r in rows}, reverse=True)
    for model, size in sizes:
        same = [r for r in rows if r["model"] == model and json.dumps(r[size_key]) == size]
        torch_rows = {r["variant"]: r for r in same if r["framework"] == "pytorch"}
        fp32 = [r for v, r in torch_rows.items() if v != "eager_autocast"]
        best = min(fp32, key=lambda r: r[time_key]) if fp32 else None
        pairs = [("float32", "eager", torch_rows.get("eager")),
                 ("float32", f"best_fp32:{best['variant']}" if best else "best_fp32", best),
                 ("bfloat16", "eager_autocast", torch_rows.get("eager_autocast"))]
        for jax_variant in dict.fromkeys(r["variant"] for r in same if r["framework"] == "jax"):
            ours = {r["dtype"]: r for r in same
                    if r["framework"] == "jax" and r["variant"] == jax_variant}
            for dtype, versus, theirs in pairs:
                if dtype in ours and theirs:
                    out.append({"model": model, size_key: json.loads(size), "dtype": dtype,
                                "ours": jax_variant, "versus": versus,
                                "ratio": ours[dtype][time_key] / theirs[time_key],
                                "cpu_ratio": ours[dtype][f"cpu_{time_key}"]
                                / theirs[f"cpu_{time_key}"]})
    return out


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers: MSPAN / IMDN JAX float32 train step, bf16 / f32 per row."""
    out: dict[str, Any] = {}
    jax_rows = [r for r in result["train"] if r["framework"] == "jax"]
    for variant in dict.fromkeys(r["variant"] for r in jax_rows):
        suffix = "" if variant == "jit" else f"_{variant.removeprefix('jit:')}"
        for prefix, key in (("", "s_per_step"), ("cpu_", "cpu_s_per_step")):
            train = {(r["model"], r["dtype"], r["batch"]): r[key] for r in jax_rows
                     if r["variant"] == variant}
            for (model, dtype, batch), s in sorted(train.items()):
                if model == "mspan" and ("imdn", dtype, batch) in train:
                    out[f"{prefix}mspan_over_imdn_train_{dtype}_b{batch}{suffix}"] = (
                        s / train["imdn", dtype, batch])
                if dtype == "bfloat16" and (model, "float32", batch) in train:
                    out[f"{prefix}{model}_bf16_over_f32_train_b{batch}{suffix}"] = (
                        s / train[model, "float32", batch])
    return out


def print_tables(result: dict[str, Any]) -> None:
    cpu = result["machine"].get("cpu_info", {})
    print(f"cpu: {cpu.get('model')}; flags {' '.join(cpu.get('flags', []))}")
    print(f"machine: {result['machine']}")
    print(f"settings: {result['settings']}")
    for kind, size_key, time_key in (("train", "batch", "s_per_step"),
                                     ("infer", "lr_hw", "s_per_image")):
        print(f"\n{kind}: {'model':6s} {size_key:>10s} {'framework/variant':26s} {'dtype':9s} "
              f"{'ms':>10s} {'cpu ms':>10s} {'compile s':>10s}")
        for r in result[kind]:
            size = r[size_key] if kind == "train" else "x".join(map(str, r[size_key]))
            print(f"       {r['model']:6s} {size!s:>10s} {r['framework'] + '/' + r['variant']:26s} "
                  f"{r['dtype']:9s} {r[time_key] * 1e3:10.2f} {r['cpu_' + time_key] * 1e3:10.2f} "
                  f"{r['compile_s']:10.1f}")
        print(f"\n{kind} ratios (ours / PyTorch time):")
        for q in result["ratios"][kind]:
            print(f"  {q['model']:6s} {q[size_key]!s:>10s} {q['ours'] + ' ' + q['dtype']:24s} vs "
                  f"{q['versus']:28s} {q['ratio']:.2f}  (cpu time {q['cpu_ratio']:.2f})")
    print("\nsummary:", json.dumps(result["summary"], indent=1))
    print_profiles(result)


def print_profiles(result: dict[str, Any]) -> None:
    """Per (kind, size, model): ms per call in each category, a column per row profiled
    (`--profile`)."""
    for kind, size_key in (("train", "batch"), ("infer", "lr_hw")):
        profiled = [r for r in result[kind] if "profile" in r]
        for model, size in dict.fromkeys((r["model"], json.dumps(r[size_key])) for r in profiled):
            cols = [r for r in profiled if r["model"] == model and json.dumps(r[size_key]) == size]
            names = [f"{r['framework']}/{r['variant']}/{r['dtype']}" for r in cols]
            print(f"\nprofile, {kind} {model} {size_key} {json.loads(size)}: ms per call (ours: "
                  "ops' time over all threads / cores; PyTorch: on its calling thread)")
            print(f"  {'':68s}" + "".join(f"{n[:22]:>24s}" for n in names))
            cats = dict.fromkeys(c for r in cols for c in r["profile"]["categories"])
            for c in cats:
                print(f"  {c:68s}" + "".join(f"{r['profile']['categories'].get(c, 0.0):24.1f}"
                                             for r in cols))
            print(f"  {'wall per call (profiled), threads that ran ops':68s}" + "".join(
                f"{r['profile']['per_call_ms']:18.1f}, {r['profile']['threads']:3d}" for r in cols))
            for name, r in zip(names, cols, strict=True):
                if "note" in r["profile"]:
                    print(f"  {name}: {r['profile']['note']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    ap.add_argument("--quick", action="store_true",
                    help="batch 16 only, smaller inference, 3 rounds, no torch.compile")
    ap.add_argument("--tiny", action="store_true", help="test-sized models and shapes (schema checks)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="timing rounds per case (default 5, quick 3)")
    ap.add_argument("--models", default="mspan,imdn", help="comma-separated, of mspan and imdn")
    ap.add_argument("--attention", choices=("mspa", "esa", "ca", "none"), default=None,
                    help="MSPAN's block attention (default: the config's, mspa)")
    ap.add_argument("--no-torch-compile", action="store_true")
    ap.add_argument("--jax-variant", action="append", default=[], metavar="NAME:KEY=VALUE[;...]",
                    help="another JAX worker timed in the same rounds, with these environment "
                         "variables (XLA_FLAGS, " + SPLIT_ENV + "=1, ...); repeatable")
    ap.add_argument("--jax-dtypes", default="float32,bfloat16",
                    help="comma-separated JAX compute dtypes (default float32,bfloat16)")
    ap.add_argument("--torch-variants", default=None,
                    help="comma-separated PyTorch variants (default: all that the mode runs)")
    ap.add_argument("--compile-timeout", type=float, default=240.0,
                    help="seconds torch.compile may take before that variant is skipped")
    ap.add_argument("--profile", type=int, default=0, metavar="CALLS",
                    help="after the timings, profile each row over CALLS calls (jax.profiler, "
                         "torch.profiler) and print where its time goes (profile_breakdown.py)")
    ap.add_argument("--worker", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        worker(args.worker, args.compile_timeout)
        return 0
    if args.rounds is not None and args.rounds < 1:
        print("speed.py: --rounds must be >= 1", file=sys.stderr)
        return 2
    if args.profile < 0:
        print("speed.py: --profile must be a number of calls >= 0", file=sys.stderr)
        return 2
    if not set(args.models.split(",")) <= set(TINY_MODELS):
        print(f"speed.py: --models {args.models!r}: choose from mspan,imdn", file=sys.stderr)
        return 2
    rounds = args.rounds or (1 if args.tiny else 3 if args.quick else 5)
    calls = 1 if args.quick or args.tiny else 2
    torch_variants = [v for v in TORCH_VARIANTS
                      if v[0] != "compile" or not (args.quick or args.tiny or args.no_torch_compile)]
    if args.torch_variants is not None:
        torch_variants = [v for v in torch_variants if v[0] in args.torch_variants.split(",")]
    jax_dtypes = args.jax_dtypes.split(",")
    jax_variants = [v for v in JAX_VARIANTS if v[1] in jax_dtypes]
    try:
        extra = [parse_jax_variant(text) for text in args.jax_variant]
    except ValueError as e:
        print(f"speed.py: {e}", file=sys.stderr)
        return 2

    load_start = os.getloadavg()
    groups = case_groups(args.quick, args.tiny, args.models.split(","), args.attention)
    # The JAX workers train as scripts/train.py does by default: a CPU's cores as single-threaded
    # devices (config.train.cpu_devices = 0); a --jax-variant's XLA_FLAGS replaces that
    # ("one:XLA_FLAGS=" is one device with XLA's per-op threads).
    batch = math.gcd(*(case["batch"] for group in groups for case in group if "batch" in case))
    default_env = {"XLA_FLAGS": cpu_xla_flags(os.environ.get("XLA_FLAGS", ""),
                                              cpu_device_count(0, batch, host_cores()))}
    jax_workers = [Worker("jax", args.compile_timeout, env_changes=default_env)]
    jax_workers += [Worker("jax", args.compile_timeout, f"jit:{name}", {**default_env, **env})
                    for name, env in extra]
    infos = [w.call("info") for w in jax_workers]
    for w, info in zip(jax_workers, infos, strict=True):
        if "error" in info:
            print(f"speed.py: the JAX worker {w.variant} failed: {info['error']}", file=sys.stderr)
            return 1
    machine = dict(infos[0]["ok"], cpu=platform.processor() or platform.machine(), cpus=os.cpu_count(),
                   cpu_info=cpu_info())
    if extra:
        machine["jax_variants"] = {w.variant: info["ok"] for w, info in zip(jax_workers, infos,
                                                                             strict=True)}
    interleave = machine["backend"] == "cpu"
    rows: list[dict[str, Any]] = []
    torch_worker = Worker("torch", args.compile_timeout) if interleave else None
    for group in groups:
        log(f"{group[0]['kind']} {group[0].get('batch', group[0].get('lr_hw'))}")
        workers = [(w, jax_variants) for w in jax_workers]
        if torch_worker:
            workers.append((torch_worker, torch_variants))
        rows += measure_group(group, workers, rounds, calls, args.profile)
    for w in jax_workers:
        w.close()
    if not interleave:  # GPU: PyTorch only after JAX has released the device
        torch_worker = Worker("torch", args.compile_timeout)
        for group in groups:
            log(f"{group[0]['kind']} {group[0].get('batch', group[0].get('lr_hw'))} (pytorch)")
            rows += measure_group(group, [(torch_worker, torch_variants)], rounds, calls, args.profile)
    assert torch_worker is not None
    torch_info = torch_worker.call("info")
    torch_worker.close()
    if "ok" in torch_info:
        machine["torch"] = torch_info["ok"]
    # 1-minute load average when the run started and ended: on a shared machine, say it beside
    # every number (the cores are given by `cpus`).
    machine["loadavg"] = {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)}
    result: dict[str, Any] = {
        "machine": machine,
        "settings": {"quick": args.quick, "tiny": args.tiny, "rounds": rounds, "calls_per_round": calls,
                     "interleaved": interleave, "profile_calls": args.profile,
                     "mspan_attention": (model_config("mspan", args.tiny, args.attention)["attention"]
                                         if "mspan" in args.models.split(",") else None)},
        "train": [r for r in rows if "batch" in r],
        "infer": [r for r in rows if "lr_hw" in r],
    }
    result["ratios"] = {k: ratios(result[k], k) for k in ("train", "infer")}
    result["summary"] = summary(result)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_tables(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
