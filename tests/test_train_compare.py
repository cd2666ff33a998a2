"""The equal-budget comparison's parts: configs/sun_hays_x4.py's models and ablations, the cosine
schedule, validation on a benchmark folder, and benchmarks/train_compare_gpu.sh's path at a tiny size."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess

import jax
import jax.numpy as jnp
import ml_collections
import pytest
from conftest import REPO_ROOT, require_shared, subprocess_env

from mspan_jax.data.images import read_image
from mspan_jax.data.pairs import is_folder_set, load_set_folder
from mspan_jax.models import get_model
from mspan_jax.models.complexity import count_params
from mspan_jax.train.state import learning_rate_schedule


def _sun_hays(arg: str) -> ml_collections.ConfigDict:
    path = REPO_ROOT / "configs" / "sun_hays_x4.py"
    spec = importlib.util.spec_from_file_location("sun_hays_x4", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def _param_names(config: ml_collections.ConfigDict) -> dict[str, int]:
    variables = jax.eval_shape(get_model(config.model).init, jax.random.key(0),
                               jax.ShapeDtypeStruct((1, 16, 16, 3), jnp.float32))
    block = variables["params"].get("body", {}).get("IDDB1", {})  # MSPAN's first IDDB; none in IMDN
    return {"total": count_params(variables), **{k: count_params(v) for k, v in block.items()}}


def test_every_model_of_the_comparison_builds_with_the_same_budget():
    base = _sun_hays("mspan")
    assert _param_names(base)["total"] == 611_952  # the paper's MSPAN x4 (612K)
    sizes = {}
    for name in ("imdn", "no_attention", "ca", "esa"):
        config = _sun_hays(name)
        for section in ("data", "train", "eval"):  # only the model differs
            assert config[section] == base[section], (name, section)
        sizes[name] = _param_names(config)
    assert sizes["imdn"]["total"] == 715_176
    # The paper's x2 ablation adds 2K (CA), 39K (ESA) and 53K (MSPA) over no attention; at x4 too.
    assert "mspa" not in sizes["no_attention"] and sizes["no_attention"]["total"] == 611_952 - 6 * 8_952
    assert sizes["ca"]["ca"] == 339 and sizes["esa"]["esa"] == 6_600
    assert _param_names(base)["mspa"] == 8_952
    with pytest.raises(ValueError, match="unknown model"):
        _sun_hays("mspan_big")
    bad = _sun_hays("mspan")
    bad.model.attention = "diagonal"
    with pytest.raises(ValueError, match="attention='diagonal'"):
        _param_names(bad)


def test_cosine_schedule_spans_the_run_and_step_schedule_is_unchanged():
    train = _sun_hays("mspan").train
    cosine = learning_rate_schedule(train)
    n = train.num_steps
    assert float(cosine(0)) == pytest.approx(train.learning_rate)
    assert float(cosine(n // 2)) == pytest.approx(train.learning_rate / 2, rel=1e-3)
    assert float(cosine(n)) == pytest.approx(0.0, abs=1e-9)
    train.lr_schedule = "step"
    step = learning_rate_schedule(train)
    assert float(step(n)) == pytest.approx(train.learning_rate)  # 200 epochs before the first halving
    train.lr_schedule = "linear"
    with pytest.raises(ValueError, match="lr_schedule='linear'"):
        learning_rate_schedule(train)


def test_a_benchmark_folder_validates_with_its_published_lr(set5_dir):
    assert is_folder_set("../shared/data/Set5") and not is_folder_set("set5")
    pairs = load_set_folder(set5_dir, 4)
    assert [p.name for p in pairs] == ["baby", "bird", "butterfly", "head", "woman"]
    bird = next(p for p in pairs if p.name == "bird")
    assert (bird.lr == read_image(set5_dir / "LR_bicubic" / "X4" / "birdx4.bmp")).all()
    with pytest.raises(FileNotFoundError, match="config.eval.datasets"):
        load_set_folder(set5_dir / "missing", 4)


@pytest.mark.slow
def test_gpu_script_runs_the_protocol_at_a_tiny_size(tmp_path):
    data = require_shared("data")
    require_shared("data/Sun_Hays80")
    env = subprocess_env(OUT=str(tmp_path / "out"), STEPS="2", PATCH="8", BATCH="2", MODELS="mspan",
                         SEEDS="0", DATA=os.path.relpath(data, REPO_ROOT), JAX_PLATFORMS="cpu")
    done = subprocess.run(["bash", "benchmarks/train_compare_gpu.sh", "--config.model.num_features=8",
                           "--config.model.num_blocks=1", "--config.model.num_units=1"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    run = tmp_path / "out" / "mspan_s0"
    results = json.loads((run / "eval_results.json").read_text())
    set5 = os.path.relpath(data, REPO_ROOT) + "/Set5"
    assert results["step"] == 2 and results["bicubic"][set5]["psnr"] == pytest.approx(28.43, abs=0.01)
    assert (run / "best").is_dir() and int((run / "wall_s").read_text()) > 0
    assert "| mspan | 0 | 2 |" in (tmp_path / "out" / "table.md").read_text()


@pytest.mark.slow
def test_gpu_script_release_part_trains_the_x4_recipe_and_saves_its_params(tmp_path):
    """PART=release: the x4 release recipe, capped and resumable, then its params in $OUT/mspan_x4."""
    data = require_shared("data")
    require_shared("data/Sun_Hays80")
    env = subprocess_env(OUT=str(tmp_path / "out"), PATCH="8", BATCH="2", PART="release",
                         RELEASE_STEPS="2", DATA=os.path.relpath(data, REPO_ROOT), JAX_PLATFORMS="cpu")
    done = subprocess.run(["bash", "benchmarks/train_compare_gpu.sh", "--config.model.num_features=8",
                           "--config.model.num_blocks=1", "--config.model.num_units=1"],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "release_x4: exit 0" in done.stdout
    params = tmp_path / "out" / "mspan_x4"
    assert json.loads((params / "model.json").read_text())["model"]["scale"] == 4
