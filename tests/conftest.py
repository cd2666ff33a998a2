"""Shared test fixtures: the read-only ../shared folder (Set5, official IMDN weights) and extras.

Tests that need them skip on an outside machine, but FAIL when MSPAN_REQUIRE_SHARED=1
(set by .ci/run), so a missing folder or package can never turn the proof tests green by skipping.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
import pytest
from flax import linen as nn
from gcs_emulator import free_port  # noqa: F401 - one free-port helper for every test

from mspan_jax.config_base import model_config, shared_dir, sr_config
from mspan_jax.errors import ConfigError
from mspan_jax.host_allocator import keep_freed_memory
from mspan_jax.models.complexity import abstract_variables
from mspan_jax.models.registry import get_model, min_input_size

keep_freed_memory()  # as every script does, before JAX starts its threads (imports start none)

REPO_ROOT = Path(__file__).resolve().parents[1]


def _share_compilations() -> None:
    """One XLA compilation cache for the test session: this process and every script and training
    process it starts (they inherit the environment) reuse what another one compiled, since the tests
    compile the same tiny models again and again. A cache only skips XLA's compile of a program
    already seen (same program, options, devices, jaxlib): tracing, lowering and the programs' counts
    are untouched. It is a fresh temporary folder, removed at exit, unless JAX_COMPILATION_CACHE_DIR is
    set already (pytest-xdist workers inherit their controller's)."""
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        folder = tempfile.mkdtemp(prefix="mspan-jax-tests-xla-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ["JAX_COMPILATION_CACHE_DIR"] = folder
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")))


_share_compilations()
# The tests' PRNG keys: XLA's RngBitGenerator, as training's init uses (`warm_start.seeded_params`).
# Threefry's draws are a program of dozens of ops that XLA:CPU compiles per shape, eagerly too:
# ~1 s of every test that calls `init`. Tests compare draws with each other, never with constants.
jax.config.update("jax_default_prng_impl", "rbg")
# The backend starts now, with its one CPU device: a script run in this process (`run_script`) finds
# JAX running and leaves the device count alone (`train.cpu_devices`), whatever test comes first.
jax.devices()

# The suite's one tiny size of each model (compiles in seconds on a CPU), and the smallest MSPAN the
# CLI and training tests run (one block of one unit).
TINY_MODEL_OVERRIDES = {
    "mspan": dict(num_features=8, num_blocks=2, num_units=2),
    "mspan_ir": dict(num_features=8, num_blocks=2, num_units=2),
    "imdn": dict(num_features=16, num_modules=2, cca_reduction=4),
}
SMALLEST = {"num_blocks": 1, "num_units": 1}
# Models whose tiny size is their full width (RFDN) at a small width, for parity tests whose random
# weights would otherwise amplify float32 summation-order noise past the tolerance.
SMALL_WIDTH = {"rfdn": dict(num_features=8, num_modules=2)}


def tiny_model_config(name: str = "mspan", scale: int = 2, **overrides: Any):
    """`model_config(name, scale)` at the tiny size (TINY_MODEL_OVERRIDES; a model without an entry
    keeps its defaults), then `overrides`; a key the model does not have is a ConfigError, so a
    renamed key is never silently ignored."""
    cfg = model_config(name, scale)
    changes = {**TINY_MODEL_OVERRIDES.get(name, {}), **overrides}
    unknown = sorted(set(changes) - set(cfg))
    if unknown:
        raise ConfigError(f"{name} has no config.model keys {unknown} (its ModelSpec's defaults)")
    cfg.update(changes)
    return cfg


def require_shared(relative: str) -> Path:
    """Path of ../shared/<relative>; skips when absent, fails when MSPAN_REQUIRE_SHARED=1."""
    path = shared_dir() / relative
    if not path.exists():
        message = f"{path} is missing (set MSPAN_SHARED_DIR to the shared folder)"
        if os.environ.get("MSPAN_REQUIRE_SHARED") == "1":
            pytest.fail(message + " and MSPAN_REQUIRE_SHARED=1 requires it")
        pytest.skip(message)
    return path


def require_extra(module: str, extra: str):
    """`import module` of an optional extra; skips (also at module level) when it is not installed,
    FAILS when MSPAN_REQUIRE_SHARED=1 (CI installs `.[test]`, which holds every extra, so a proof
    test can never skip there)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        message = f"{module} is not installed (pip install -e '.[{extra}]')"
        if os.environ.get("MSPAN_REQUIRE_SHARED") == "1":
            pytest.fail(message + " and MSPAN_REQUIRE_SHARED=1 requires it", pytrace=False)
        pytest.skip(message, allow_module_level=True)


def require_torch():
    """The torch module, for tests that compare with PyTorch (see `require_extra`)."""
    return require_extra("torch", "torch")


def require_tfds():
    """tensorflow_datasets, with the TensorFlow its builders need (see `require_extra`)."""
    require_extra("tensorflow", "tfds")
    return require_extra("tensorflow_datasets", "tfds")


@pytest.fixture
def set5_dir() -> Path:
    """../shared/data/Set5 (HR/ and LR_bicubic/X{2,3,4}/)."""
    return require_shared("data/Set5")


@pytest.fixture
def imdn_x4_weights() -> Path:
    """../shared/weights/IMDN_x4.pth, the official IMDN x4 checkpoint."""
    return require_shared("weights/IMDN_x4.pth")


def _abandoned_orbax_read(unraisable: Any) -> bool:
    """Whether an unraisable exception is an orbax array read's that its failed restore left."""
    code = getattr(unraisable.object, "cr_code", None)
    return isinstance(unraisable.object, types.CoroutineType) and "orbax" in code.co_filename


def _orbax_reads(item_dir: Path) -> bool:
    """Whether orbax restores the arrays under `item_dir` (an OCDBT root) without an error.

    When one array read fails, orbax abandons the others: their coroutines hold the errors the
    damage caused, and Python reports them as unraisable whenever the garbage collector frees
    them, under whichever test runs then (48 tracebacks in a fast-tier run). They are collected
    here, and only they are dropped."""
    import orbax.checkpoint as ocp

    previous = sys.unraisablehook
    sys.unraisablehook = lambda u: None if _abandoned_orbax_read(u) else previous(u)
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.restore(item_dir.absolute())
    except Exception:  # noqa: BLE001 - orbax raises many types for damage it notices itself
        return False
    finally:
        gc.collect()
        sys.unraisablehook = previous
    return True


def flip_bytes(checkpoint_dir: Path, count: int = 64, at: float = 0.25) -> Path:
    """Flips `count` bytes of the largest data file orbax wrote under `checkpoint_dir` (its OCDBT
    `d/` files): what a bad disk or a broken copy does, and orbax itself reads without complaint.
    Arrays of a few KB or more lie there unprotected; small ones sit inside OCDBT's own
    (CRC-checked) tree nodes, and a flip that lands on a compressed frame's header makes orbax
    fail by itself, so the first offset from `at` on that orbax still reads silently is used (the
    file's layout varies from run to run). Returns the damaged file."""
    files = [p for p in Path(checkpoint_dir).rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, f"no orbax data files under {checkpoint_dir}"
    target = max(files, key=lambda p: (p.stat().st_size, p.name))
    item_dir = target.parent  # the OCDBT root: above d/ and any ocdbt.process_N/
    while item_dir.name == "d" or item_dir.name.startswith("ocdbt.process_"):
        item_dir = item_dir.parent
    original = target.read_bytes()
    for fraction in (at, 0.5, 0.75, 0.1, 0.9, 0.35, 0.6, 0.2, 0.8):
        data = bytearray(original)
        start = int(len(data) * fraction)
        for i in range(start, min(start + count, len(data))):
            data[i] ^= 0xFF
        target.write_bytes(bytes(data))
        if _orbax_reads(item_dir):
            return target
    target.write_bytes(original)
    raise AssertionError(f"{target}: every flip was caught by orbax itself; no silent damage to test")


# A training run small enough for a subprocess test: the smallest MSPAN x4 on the bundled photos.
TINY_TRAIN_SETTINGS = {
    **{f"model.{key}": value for key, value in {**TINY_MODEL_OVERRIDES["mspan"], **SMALLEST}.items()},
    "data.source": "skimage", "data.hr_patch_size": 32, "data.prefetch": 1,
    "data.num_workers": 0,  # in-process batches: no worker start-up in every small run
    "train.batch_size": 2, "train.num_steps": 6, "train.log_every_steps": 2,
    "train.checkpoint_every_steps": 2, "train.eval_every_steps": 100,
    "eval.datasets": ("skimage_holdout",),
}


def _dotted(overrides: Mapping[str, object]) -> dict[str, object]:
    return {key.replace("__", "."): value for key, value in overrides.items()}


def tiny_train_config_source(**overrides: object) -> str:
    """Source of a configs/*.py-style file for a tiny run; overrides use `section__key=value`."""
    settings = {**TINY_TRAIN_SETTINGS, **_dotted(overrides)}
    body = "".join(f"    config.{key} = {value!r}\n" for key, value in settings.items())
    return ("from mspan_jax.config_base import sr_config\n\n\ndef get_config():\n"
            '    config = sr_config("mspan", 4)\n' + body + "    return config\n")


def tiny_train_config(scale: int = 4, **overrides: object) -> ml_collections.ConfigDict:
    """The tiny run of TINY_TRAIN_SETTINGS as a config (LR patches 8x8 at any scale); overrides use
    `section__key=value`."""
    config = sr_config("mspan", scale)
    settings = {**TINY_TRAIN_SETTINGS, "data.hr_patch_size": 8 * scale, **_dotted(overrides)}
    for key, value in settings.items():
        section, name = key.split(".")
        config[section][name] = value
    return config


def resumable_train_config(scale: int = 4) -> ml_collections.ConfigDict:
    """The tiny run that the resume, preemption and disk-full tests stop and resume: EMA and gradient
    clipping on (their state must survive a restart), a checkpoint halfway, one summary image."""
    return tiny_train_config(scale, train__learning_rate=1e-3, train__ema_decay=0.9,
                             train__grad_clip_norm=1.0, eval__num_summary_images=1,
                             train__checkpoint_every_steps=TINY_TRAIN_SETTINGS["train.num_steps"] // 2)


@pytest.fixture
def tiny_config_file(tmp_path: Path) -> Path:
    """A configs/*.py-style file of the tiny run (`tiny_train_config_source()`), under tmp_path."""
    path = tmp_path / "tiny.py"
    path.write_text(tiny_train_config_source())
    return path


def max_tree_diff(a: Any, b: Any) -> float:
    """The largest absolute difference between two trees of arrays of the same structure (not empty)."""
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b) > 0
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(leaves_a, leaves_b, strict=True))


def _initial_value(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A draw of what the models' layers initialize a parameter to (models/layers.py): lecun-normal
    conv kernels (truncated at 2 sigma), zero biases, unit LayerNorm scales."""
    if name == "kernel":
        draws = rng.standard_normal(shape)
        while (outside := np.abs(draws) > 2).any():
            draws[outside] = rng.standard_normal(int(outside.sum()))
        return draws * np.sqrt(1.0 / np.prod(shape[:-1])) / 0.87962566103423978
    return np.ones(shape) if name == "scale" else np.zeros(shape)


def random_variables(model: nn.Module | Mapping[str, Any], seed: int = 0, std: float = 0.1,
                     attention_std: float | None = None, around_init: bool = False) -> Any:
    """Variables of a model (or of `get_model` of a config.model) drawn from N(0, std^2), without an
    eager `model.init` (~10 s on CPU; a jitted one compiles for 10-35 s). `attention_std`: MSPA's and
    ESA's own spread (at 0.2 their attention is nearly flat, and padding or a tile border would hardly
    show in the output). `around_init`: N(0, std^2) added to a draw of the initial values instead
    (full-width models keep their initial output range, and no bias stays at zero)."""
    if not isinstance(model, nn.Module):
        model = get_model(model)
    size = min_input_size(model)
    shapes = abstract_variables(model, (1, size, size, getattr(model, "in_channels", 3)))
    rng = np.random.default_rng(seed)

    def draw(path: tuple, s: jax.ShapeDtypeStruct) -> np.ndarray:
        in_attention = {"mspa", "esa"} & {getattr(k, "key", None) for k in path}
        spread = attention_std if attention_std is not None and in_attention else std
        base = _initial_value(path[-1].key, s.shape, rng) if around_init else 0.0
        return (base + rng.standard_normal(s.shape) * spread).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def one_line_error(result: subprocess.CompletedProcess, *needles: str, code: int | None = 2) -> str:
    """The one `error:` line of a failed script run, checked: exit `code` (None: any but 0), no
    traceback, each of `needles` in the line."""
    assert result.returncode != 0 if code is None else result.returncode == code, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def random_rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A uint8 (h, w, 3) image of uniform noise, the same for the same seed."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def save_png(path: Path, array: np.ndarray) -> None:
    """`array` as PIL writes it (any mode: gray, RGBA, 16-bit too), its folders created."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a script run in a subprocess: this checkout importable, one CPU device."""
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)
    env.update(PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


def run_script_subprocess(name: str, *args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python scripts/<name> args...` in a fresh interpreter from the repository root on the CPU,
    output captured: for the few smoke tests of a real command line (imports, exit codes, the
    `if __name__ == "__main__"` line); everything else uses the faster in-process `run_script`."""
    return subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / name), *map(str, args)],
                          cwd=REPO_ROOT, env=subprocess_env(JAX_PLATFORMS="cpu"), capture_output=True,
                          text=True, timeout=timeout)


@contextlib.contextmanager
def script_module(name: str) -> Iterator[dict[str, object]]:
    """The globals of scripts/<name>, executed (flags defined, main not run) in this process; the
    absl flags it defined are removed again on exit.

    Scripts define their flags on absl's process-global FLAGS at import, and several define the same
    names (--config, --checkpoint, --out), so a script can only be loaded while no other one is: each
    load executes the file afresh (runpy, under a name of its own; the mspan_jax modules it imports
    stay cached, which is what makes this fast), and on exit the flags it defined are deleted and
    every remaining flag is reset to its default (`unparse_flags`), so no value leaks into the next
    call.
    """
    from absl import flags

    run_name = f"script_{name[:-3]}"
    try:
        yield runpy.run_path(str(REPO_ROOT / "scripts" / name), run_name=run_name)
    finally:
        # Only the script's own flags go, with the --config.* override flags config_flags added
        # under them: a library first imported during the call (absl.app, grain) defined flags it
        # reads later, and keeps them.
        own = [flag.name for flag in flags.FLAGS.flags_by_module_dict().get(run_name, [])]
        for flag_name in list(flags.FLAGS):  # a flag's short name goes with its long one
            if flag_name in flags.FLAGS and (flag_name in own
                                             or flag_name.startswith(tuple(f"{o}." for o in own))):
                delattr(flags.FLAGS, flag_name)
        flags.FLAGS.unparse_flags()


def _exit_code(code: object) -> int:
    """The process exit status `sys.exit(code)` gives (a message is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _warning_to_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def run_script(name: str, *args: object) -> subprocess.CompletedProcess:
    """`python scripts/<name> args...`, run in this process through the script's own `main` and
    `mspan_jax.cli.run` (flag parsing, one-line user errors, exit codes), from the repository root;
    returns what `subprocess.run(..., capture_output=True, text=True)` would.

    Why in-process: a subprocess pays ~5-10 s of imports (JAX, Flax, orbax, TensorFlow) per call,
    which was most of the suite's time. What it keeps of a real run: sys.argv (config_flags reads
    its --config.* overrides there), the working directory, stdout / stderr (print, absl logging
    and warnings, shown as Python shows them by default) and the exit status, with an unexpected
    exception's traceback on stderr and status 1. Flags are isolated by `script_module`. What it
    does not cover (fresh imports, the `__main__` line, TF/XLA C++ logs on the real file
    descriptors) is left to a few `run_script_subprocess` smoke tests.
    """
    from absl import logging as absl_logging

    from mspan_jax import cli

    argv = [str(REPO_ROOT / "scripts" / name), *map(str, args)]
    out, err = io.StringIO(), io.StringIO()
    handler = absl_logging.get_absl_handler().python_handler
    saved = sys.argv, os.getcwd(), handler.stream
    code = 0
    try:
        sys.argv = argv
        os.chdir(REPO_ROOT)
        handler.stream = err
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            warnings.simplefilter("default")  # Python's default filters, not pytest's
            for hidden in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                           ResourceWarning):
                warnings.simplefilter("ignore", hidden)
            warnings.showwarning = _warning_to_stderr
            try:
                with script_module(name) as module:
                    cli.run(module["main"])
            except SystemExit as e:
                code = _exit_code(e.code)
            except Exception:  # noqa: BLE001 - a script's crash is its traceback and status 1, as in a shell
                traceback.print_exc()
                code = 1
    finally:
        sys.argv = saved[0]
        os.chdir(saved[1])
        handler.stream = saved[2]
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def tiny_model_flags(name: str = "mspan", **overrides: object) -> list[str]:
    """`--config.model.KEY=VALUE` flags that set a config file's model to the tiny size (+ overrides)."""
    changes = {**TINY_MODEL_OVERRIDES.get(name, {}), **overrides}
    return [f"--config.model.{key}={value}" for key, value in changes.items()]


def read_tensorboard(log_dir: str | os.PathLike) -> dict[str, list[tuple[int, str, object]]]:
    """`{tag: [(step, plugin name, numpy value), ...]}` of a log directory, read by TensorBoard's own
    loader (EventAccumulator), so a test sees what the dashboards see."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    return {tag: [(event.step, accumulator.SummaryMetadata(tag).plugin_data.plugin_name,
                   tensor_util.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)]
            for tag in accumulator.Tags()["tensors"]}


def find_exact(picture, crop) -> list[tuple[int, int]]:
    """Every (row, column) where the (h, w, C) array `crop` appears exactly in `picture`."""
    h, w = crop.shape[:2]
    first = (picture[:picture.shape[0] - h + 1, :picture.shape[1] - w + 1] == crop[0, 0]).all(axis=-1)
    return [(int(y), int(x)) for y, x in zip(*np.nonzero(first), strict=True)
            if np.array_equal(picture[y:y + h, x:x + w], crop)]


TRAIN_PROCESS_TIMEOUT = 300  # seconds a training subprocess may take to print or finish
FIRST_STEP_LINE = "compiled and ran the first step"


def _ctrl_c_reaches_children() -> None:
    """Ctrl-C handled in training subprocesses as in a terminal's foreground job. A runner that
    started pytest in the background (as `cmd &` does) ignores SIGINT, children inherit that, and
    Python then never raises KeyboardInterrupt. A handler, unlike SIG_IGN, is reset to the default
    by exec, so no `preexec_fn` (Python code between fork and exec, which can deadlock in a process
    with JAX's threads) is needed."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_ctrl_c_reaches_children()


class TrainProcess:
    """A scripts/train.py process in its own process group, its output collected as it comes."""

    def __init__(self, config: Path, workdir: Path, *extra: str, env: dict[str, str] | None = None):
        self.proc = subprocess.Popen(
            [sys.executable, "scripts/train.py", f"--config={config}", f"--workdir={workdir}", *extra],
            cwd=REPO_ROOT, env={**(env or subprocess_env()), "PYTHONFAULTHANDLER": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=lambda s=s, d=d: d.extend(iter(s.readline, "")),
                                          daemon=True)
                         for s, d in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self._threads:
            t.start()

    def wait_for_output(self, text: str) -> None:
        deadline = time.monotonic() + TRAIN_PROCESS_TIMEOUT
        while not any(text in line for line in self.out):
            assert self.proc.poll() is None, f"exited early: {''.join(self.err)[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {text!r}"
            time.sleep(0.05)

    def signal_group(self, signum: int) -> None:
        os.killpg(self.proc.pid, signum)

    def finish(self) -> tuple[int, str, str]:
        """Exit code, stdout and stderr once the process ends. One that hangs is aborted, and the
        failure shows where each of its threads stood (faulthandler's dump on SIGABRT)."""
        try:
            code = self.proc.wait(timeout=TRAIN_PROCESS_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
            for t in self._threads:
                t.join(timeout=10)
            pytest.fail(f"train.py still ran {TRAIN_PROCESS_TIMEOUT} s later; aborted, its stacks:\n"
                        + "".join(self.err)[-6000:])
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        for t in self._threads:
            t.join(timeout=10)
        return code, "".join(self.out), "".join(self.err)


def assert_quiet(stderr: str) -> None:
    """A stopped run's stderr holds no traceback and no leak warning."""
    assert "Traceback" not in stderr and "leaked" not in stderr, stderr[-3000:]


def div2k_zips(folder: Path, scale: int = 4, train: int = 3, valid: int = 1, size: int = 48) -> Path:
    """The four zips of the DIV2K site for `scale`, as it lays them out (DIV2K_train_HR/0001.png,
    DIV2K_train_LR_bicubic/X4/0001x4.png, ...), holding tiny random images; returns `folder`."""
    import zipfile

    from PIL import Image

    from mspan_jax.data.imresize import bicubic_downscale

    folder.mkdir(parents=True, exist_ok=True)
    numbers = {"train": range(1, train + 1), "valid": range(801, 801 + valid)}
    for split, ids in numbers.items():
        with zipfile.ZipFile(folder / f"DIV2K_{split}_HR.zip", "w") as hr_zip, \
                zipfile.ZipFile(folder / f"DIV2K_{split}_LR_bicubic_X{scale}.zip", "w") as lr_zip:
            for k in ids:
                hr = random_rgb(size, size, k)
                for z, name, img in ((hr_zip, f"DIV2K_{split}_HR/{k:04d}.png", hr),
                                     (lr_zip, f"DIV2K_{split}_LR_bicubic/X{scale}/{k:04d}x{scale}.png",
                                      bicubic_downscale(hr, scale))):
                    buffer = io.BytesIO()
                    Image.fromarray(img).save(buffer, format="PNG")
                    z.writestr(name, buffer.getvalue())
    return folder
