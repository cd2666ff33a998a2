"""The core install has neither TensorFlow nor PyTorch (nor tensorflow-datasets): the quickstart with
TensorBoard events, convert_torch_weights.py on the official IMDN_x4.pth, evaluate.py on Set5 and
upscale.py run in subprocesses where those imports fail as if uninstalled (an import hook, not an
uninstall), so the core cannot quietly grow either dependency again. Also: the [tfds] extra's one-line
error, and inference (Upscaler, upscale.py, export.py, the checkpoints package) importing nothing of
training (neither optax nor mspan_jax.train)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, read_tensorboard, subprocess_env, tiny_train_config_source

from mspan_jax import extras

HIDDEN = ("tensorflow", "tensorflow_datasets", "torch")
# sitecustomize runs at interpreter start-up: the path finder no longer finds the hidden packages, so
# `import torch` raises ModuleNotFoundError and importlib.util.find_spec("torch") is None, exactly
# as in a venv without them.
HOOK = f'''
import sys
from importlib.machinery import PathFinder

HIDDEN = {HIDDEN!r}


class _HideFrameworks(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name.partition(".")[0] in HIDDEN:
            return None
        return PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [_HideFrameworks if f is PathFinder else f for f in sys.meta_path]
'''
# Set5 x4 with the official IMDN weights: the paper's 32.21 dB (the proof, tests/test_imdn_official.py).
IMDN_SET5_X4_PSNR = 32.2096


@pytest.fixture(scope="module")
def lean_env(tmp_path_factory) -> dict[str, str]:
    hook_dir = tmp_path_factory.mktemp("hook")
    (hook_dir / "sitecustomize.py").write_text(HOOK)
    env = subprocess_env()
    env["PYTHONPATH"] = f"{hook_dir}:{REPO_ROOT}"
    return env


def run(env: dict[str, str], script: str, *args: object, code: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / script), *map(str, args)],
                            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == code, f"{script}: {result.stderr[-3000:]}"
    return result


def test_the_hook_hides_the_frameworks(lean_env):
    probe = ("import importlib.util\n"
             f"for name in {HIDDEN!r}:\n"
             "    assert importlib.util.find_spec(name) is None, name\n"
             "    try:\n"
             "        __import__(name)\n"
             "    except ModuleNotFoundError:\n"
             "        pass\n"
             "    else:\n"
             "        raise AssertionError(name)\n")
    result = subprocess.run([sys.executable, "-c", probe], env=lean_env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_train_convert_evaluate_upscale_without_tensorflow_or_torch(lean_env, tmp_path, set5_dir,
                                                                   imdn_x4_weights):
    (tmp_path / "tiny.py").write_text(tiny_train_config_source(train__num_steps=4))
    workdir = tmp_path / "run"
    run(lean_env, "train.py", "--config", tmp_path / "tiny.py", "--workdir", workdir)
    events = read_tensorboard(workdir / "tensorboard")
    assert [step for step, *_ in events["train/loss"]] == [2, 4]
    assert events["config"][0][1] == "text"
    assert any(tag.endswith("bicubic_sr_hr") and events[tag][0][1] == "images" for tag in events)

    converted = tmp_path / "imdn_x4"
    run(lean_env, "convert_torch_weights.py", "--model", "imdn", "--scale", 4, "--src", imdn_x4_weights,
        "--out", converted)
    run(lean_env, "evaluate.py", "--config", REPO_ROOT / "configs" / "imdn_x4.py", "--checkpoint",
        converted, "--hr-dir", set5_dir / "HR", "--json", tmp_path / "set5.json")
    scores = json.loads((tmp_path / "set5.json").read_text())
    assert scores["Set5"]["images"] == 5
    assert scores["Set5"]["psnr"] == pytest.approx(IMDN_SET5_X4_PSNR, abs=0.005)
    # A tfds benchmark by name needs the [tfds] extra: one line that names it, exit 2.
    refused = run(lean_env, "evaluate.py", "--config", REPO_ROOT / "configs" / "imdn_x4.py",
                  "--checkpoint", converted, "--datasets", "set5", code=2)
    assert [line for line in refused.stderr.splitlines() if line.startswith("error:")] == [
        "error: dataset 'set5' (a tfds builder; an image folder needs no extra): needs the [tfds] "
        "extra (tensorflow_datasets, tensorflow not installed); pip install -e '.[tfds]'"]
    lr = set5_dir / "LR_bicubic" / "X4" / "birdx4.bmp"
    run(lean_env, "upscale.py", "--config", REPO_ROOT / "configs" / "imdn_x4.py", "--checkpoint",
        converted, "--input", lr, "--output", tmp_path / "sr")
    [sr] = (tmp_path / "sr").iterdir()
    from mspan_jax.data.images import read_image

    assert read_image(sr).shape[:2] == tuple(4 * n for n in read_image(lr).shape[:2])


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    monkeypatch.setitem(extras.EXTRAS, "tfds", ("json", "no_such_module_here"))
    with pytest.raises(extras.MissingExtraError) as info:
        extras.require("tfds", "dataset 'set5'")
    assert str(info.value) == ("dataset 'set5': needs the [tfds] extra (no_such_module_here not "
                               "installed); pip install -e '.[tfds]'")


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_checkpoints_package_knows_nothing_of_training():
    """Imports flow one way: train/ builds on mspan_jax.checkpoints, never the reverse."""
    for path in sorted((REPO_ROOT / "mspan_jax" / "checkpoints").glob("*.py")):
        imported = _imported_modules(path)
        assert not [m for m in imported if m.startswith("mspan_jax.train") or m == "optax"], path
    assert "mspan_jax.checkpoints.workdir" in _imported_modules(
        REPO_ROOT / "mspan_jax" / "train" / "checkpoint.py")


# Imports the module (a script: its code without running main) and fails if training came with it.
_NO_TRAINING = """
import importlib.util, sys
target = sys.argv[1]
if target.endswith(".py"):
    spec = importlib.util.spec_from_file_location("script_under_test", target)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
else:
    importlib.import_module(target)
training = sorted(m for m in sys.modules if m == "optax" or m.startswith(("optax.", "mspan_jax.train")))
assert not training, training
"""


@pytest.mark.parametrize("target", ["mspan_jax.upscaler", "mspan_jax.checkpoints.resolve",
                                    "scripts/upscale.py", "scripts/export.py"])
def test_inference_imports_no_training_code(target):
    result = subprocess.run([sys.executable, "-c", _NO_TRAINING, str(REPO_ROOT / target)
                             if target.endswith(".py") else target], cwd=REPO_ROOT,
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
