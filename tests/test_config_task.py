"""The task of a config (`config.task`: "sr", "denoise", "derain"), values derived from the scale that
follow a --config.model.scale override, and evaluate.py's boolean overrides of config.eval."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from absl import flags
from conftest import REPO_ROOT, subprocess_env, tiny_model_config
from ml_collections import config_flags

from mspan_jax.checkpoints.params import save_params
from mspan_jax.checkpoints.resolve import checkpoint_config
from mspan_jax.cli import load_config
from mspan_jax.config_base import restoration_config, sr_config, task_of
from mspan_jax.data.degradations import degrade, seed_for_name
from mspan_jax.data.images import write_image
from mspan_jax.data.imresize import bicubic_downscale
from mspan_jax.errors import ConfigError
from mspan_jax.eval_suite import Scoring, load_folder_set


def train_py_config(*argv: str):
    """The config scripts/train.py gets for `--config ...` argv: config_flags with lock_config=True."""
    values, argv = flags.FlagValues(), ["train.py", *argv]
    config_flags.DEFINE_config_file("config", None, "config", flag_values=values, lock_config=True,
                                    sys_argv=argv)
    values(argv)
    return values.config


def test_a_scale_override_moves_the_values_derived_from_it():
    config = train_py_config("--config", "configs/x4.py", "--config.model.scale=2")
    assert (config.model.scale, config.eval.crop_border, task_of(config)) == (2, 2, "sr")
    assert train_py_config("--config", "configs/x4.py").eval.crop_border == 4
    # An explicit crop_border wins, and does not move the scale.
    config = train_py_config("--config", "configs/x4.py", "--config.model.scale=3",
                             "--config.eval.crop_border=0")
    assert (config.model.scale, config.eval.crop_border) == (3, 0)
    config = train_py_config("--config", "configs/sun_hays_release.py:4", "--config.model.scale=2")
    assert config.data.hr_patch_size == 64  # LR patches stay 32x32


@pytest.mark.parametrize("spec", ["configs/sun_hays_x4.py:imdn", "configs/sun_hays_release.py:4"])
def test_the_shared_data_configs_work_from_any_folder(spec, tmp_path, monkeypatch):
    """The Sun & Hays configs find the shared folder as the tests do (config_base.shared_dir):
    $MSPAN_SHARED_DIR, else ../shared beside the repository, not beside the working folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MSPAN_SHARED_DIR", raising=False)
    config = load_config(str(REPO_ROOT / spec))
    assert config.data.train_dir == str(REPO_ROOT.parent / "shared" / "data" / "Sun_Hays80")
    assert config.eval.datasets == (str(REPO_ROOT.parent / "shared" / "data" / "Set5"),)
    monkeypatch.setenv("MSPAN_SHARED_DIR", str(tmp_path / "elsewhere"))
    config = load_config(str(REPO_ROOT / spec))
    assert config.data.train_dir == str(tmp_path / "elsewhere" / "data" / "Sun_Hays80")


@pytest.mark.parametrize("spec, task", [
    ("configs/x2.py", "sr"), ("configs/imdn_x4.py", "sr"), ("configs/quickstart.py", "sr"),
    ("configs/denoise_color.py:25", "denoise"), ("configs/denoise_gray.py:blind", "denoise"),
    ("configs/denoise_real.py", "denoise"), ("configs/quickstart_denoise.py", "denoise"),
    ("configs/derain.py", "derain"), ("configs/derain.py:rain100h", "derain"),
])
def test_every_config_names_its_task(spec, task):
    config = load_config(spec)
    assert config.task == task_of(config) == task
    assert config.eval.crop_border == (config.model.scale if task == "sr" else 0)


def test_a_task_that_does_not_fit_fails_in_one_line():
    bad = sr_config("mspan", 4)
    bad.task = "deblur"
    with pytest.raises(ConfigError, match=r"config.task='deblur'.*\['sr', 'denoise', 'derain'\]"):
        task_of(bad)
    sr_at_1 = sr_config("mspan", 4)
    sr_at_1.model.scale = 1
    with pytest.raises(ConfigError, match=r"config.task='sr' needs config.model.scale >= 2"):
        task_of(sr_at_1)
    denoise_at_2 = restoration_config(3)
    denoise_at_2.model.scale = 2
    with pytest.raises(ConfigError, match=r"config.task='denoise' .*config.model.scale=1"):
        task_of(denoise_at_2)
    with pytest.raises(ConfigError) as e:
        task_of(bad)
    assert "\n" not in str(e.value)
    ir_at_4 = sr_config("mspan_ir", 4)
    with pytest.raises(ConfigError, match=r"config.model.name='mspan_ir' restores images"):
        task_of(ir_at_4)


def test_a_config_without_a_task_and_a_checkpoint_without_a_config_get_it_from_the_model(tmp_path):
    legacy = sr_config("mspan", 2)
    del legacy["task"]
    assert task_of(legacy) == "sr"
    legacy = restoration_config(1)
    del legacy["task"]
    assert task_of(legacy) == "denoise"
    ir = tiny_model_config("mspan_ir", 1, num_blocks=1, num_units=1)
    save_params(tmp_path / "ir", {"params": _params(ir)}, ir)
    config = checkpoint_config(tmp_path / "ir")
    assert task_of(config) == "denoise" and config.eval.crop_border == 0
    sr = tiny_model_config("mspan", 3, num_blocks=1, num_units=1)
    save_params(tmp_path / "sr", {"params": _params(sr)}, sr)
    config = checkpoint_config(tmp_path / "sr")
    assert task_of(config) == "sr" and config.eval.crop_border == 3


def _params(model_config):
    import jax
    import jax.numpy as jnp

    from mspan_jax.models.registry import get_model

    shapes = jax.eval_shape(get_model(model_config).init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))["params"]
    return jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)


# ----------------------------------------------------------------------------- evaluation
def test_a_bd_model_evaluates_a_folder_on_bd_lr_as_its_validation_does(tmp_path):
    """evaluate.py --hr-dir without --lr-dir and training's validation of the same folder both
    degrade the HR by the model's BD (blur + downsample), not MATLAB bicubic."""
    from mspan_jax.train.validation import Validator

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        write_image(tmp_path / "HR" / f"{name}.png", rng.integers(0, 256, (24, 30, 3), dtype=np.uint8))
    config = sr_config("mspan", 2)
    config.data.degradation = "BD"
    evaluated = load_folder_set(config, tmp_path / "HR").pairs
    config.eval.datasets = (str(tmp_path / "HR"),)
    validated = Validator(config, model=None).suite.sets[str(tmp_path / "HR")].pairs
    assert [p.name for p in evaluated] == [p.name for p in validated] == ["a", "b"]
    for ev, val in zip(evaluated, validated, strict=True):
        want = degrade(ev.hr, 2, "BD", seed=seed_for_name(ev.name))
        np.testing.assert_array_equal(ev.lr, want)
        np.testing.assert_array_equal(val.lr, want)
        assert not np.array_equal(ev.lr, bicubic_downscale(ev.hr, 2))


def test_scoring_overrides_turn_config_values_on_and_off():
    config = sr_config("mspan", 2)
    config.eval.round_y = config.eval.self_ensemble = True
    off = Scoring.from_config(config, round_y=False, self_ensemble=False)
    assert not off.round_y and not off.self_ensemble
    kept = Scoring.from_config(config)
    assert kept.round_y and kept.self_ensemble
    config.eval.round_y = config.eval.self_ensemble = False
    on = Scoring.from_config(config, round_y=True, self_ensemble=True)
    assert on.round_y and on.self_ensemble
    assert not Scoring.from_config(config, round_y=None, self_ensemble=None).round_y


def test_evaluate_boolean_flags_default_to_the_config_and_negate():
    """--round-y / --self-ensemble are None (the config's value) unless given; --noround-y and
    --self-ensemble=false turn a config's True off."""
    code = textwrap.dedent("""
        import runpy, sys
        from absl import flags
        sys.argv = ["evaluate.py"]
        module = runpy.run_path("scripts/evaluate.py", run_name="evaluate")
        for argv in ([], ["--round-y", "--self-ensemble"], ["--noround-y", "--self-ensemble=false"],
                     ["--round-y=false", "--noself-ensemble"]):
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["evaluate.py", "--checkpoint", "x", *argv])
            print(module["_ROUND_Y"].value, module["_SELF_ENSEMBLE"].value)
    """)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                            text=True, env=subprocess_env(JAX_PLATFORMS="cpu"), timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:4] == ["None None", "True True", "False False", "False False"]
