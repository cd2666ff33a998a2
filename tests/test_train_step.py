"""Pure pieces of training: schedule, optimizer, train step (EMA, clipping, NaN guard), TensorBoard."""

from __future__ import annotations

from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import SMALLEST, read_tensorboard, tiny_model_config

from mspan_jax.config_base import sr_config
from mspan_jax.models.registry import get_model
from mspan_jax.train.state import (
    create_optimizer,
    create_train_state,
    learning_rate_schedule,
    total_steps,
)
from mspan_jax.train.step import make_train_step
from mspan_jax.train.summary import SummaryWriter


def tiny_config(**train):
    config = sr_config("mspan", 2)
    config.model = tiny_model_config("mspan", 2, **SMALLEST)
    for key, value in train.items():
        config.train[key] = value
    return config


def test_imdn_recipe_schedule_halves_every_200_epochs():
    config = sr_config("mspan", 4)
    schedule = learning_rate_schedule(config.train)
    assert total_steps(config.train) == 1_000_000  # 1000 epochs x 1000 iterations
    np.testing.assert_allclose(schedule(0), 2e-4)
    np.testing.assert_allclose(schedule(199_999), 2e-4)
    np.testing.assert_allclose(schedule(200_000), 1e-4)
    np.testing.assert_allclose(schedule(999_999), 2e-4 / 16)
    config.train.num_steps = 123
    assert total_steps(config.train) == 123
    assert learning_rate_schedule(config.train)(200_000) == schedule(200_000)  # cap keeps the schedule


def _setup(config, patch=6):
    model = get_model(config.model)
    s = config.model.scale
    key, x = jax.random.key(0, impl="rbg"), jnp.zeros((1, patch, patch, 3))
    params = jax.jit(model.init)(key, x)["params"]
    optimizer = create_optimizer(config.train)
    state = create_train_state(params, optimizer.tx, config.train.ema_decay)
    step = make_train_step(config.train, model.apply, optimizer, donate=False)  # old states are read
    rng = np.random.default_rng(0)
    hr = rng.random((2, patch * s, patch * s, 3), dtype=np.float32)
    lr = hr.reshape(2, patch, s, patch, s, 3).mean((2, 4))
    return state, step, {"lr": jnp.asarray(lr), "hr": jnp.asarray(hr)}


def _max_leaf_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


@pytest.mark.slow
def test_train_step_learns_keeps_an_ema_and_guards_against_nan():
    # decay 0.9, warmed up: min(0.9, (1 + t) / (10 + t)) is 0.1 at step 0 and 2/11 at step 1 (unequal
    # weights, so swapped EMA terms would fail).
    config = tiny_config(ema_decay=0.9, learning_rate=1e-3)
    state0, step, batch = _setup(config)
    state1, m1 = step(state0, batch)
    state2, m2 = step(state1, batch)
    # EMA by hand after two steps: d1 (d0 p0 + (1 - d0) p1) + (1 - d1) p2.
    d0, d1 = 0.1, 2 / 11
    expect = jax.tree.map(lambda p0, p1, p2: d1 * (d0 * p0 + (1 - d0) * p1) + (1 - d1) * p2,
                          state0.params, state1.params, state2.params)
    chex.assert_trees_all_close(state2.ema_params, expect, rtol=1e-5, atol=1e-7)
    assert _max_leaf_diff(state2.ema_params, state2.params) > 0  # the EMA lags the params
    assert state1.eval_params() is state1.ema_params
    for _ in range(3):
        state2, m2 = step(state2, batch)
    assert int(state2.step) == 5 and int(m2["nonfinite"]) == 0
    assert float(m2["loss"]) < float(m1["loss"])
    np.testing.assert_allclose(float(m1["learning_rate"]), 1e-3)

    bad = dict(batch, hr=batch["hr"].at[0, 0, 0, 0].set(jnp.nan))
    state3, m3 = step(state2, bad)
    assert int(m3["nonfinite"]) == 1
    assert int(state3.step) == int(state2.step)  # nothing applied, not even the step
    chex.assert_trees_all_equal(state3, state2)


def test_gradient_clipping_scales_gradients_to_the_configured_norm():
    # SGD-free check on the optimizer itself: with Adam's first update being lr * g / |g| per
    # element, clipping shows in the second update, where the moments mix clipped magnitudes.
    grads = [{"w": jnp.full((4,), 3.0)}, {"w": jnp.full((4,), 0.1)}]
    params = {"w": jnp.zeros((4,))}
    updates = {}
    for clip in (0.0, 1.0):
        tx, _ = create_optimizer(tiny_config(grad_clip_norm=clip).train)
        opt_state = tx.init(params)
        for g in grads:
            u, opt_state = tx.update(g, opt_state, params)
        updates[clip] = np.asarray(u["w"])
    clipped_first = 3.0 * 1.0 / np.linalg.norm(np.full(4, 3.0))  # 0.5 per element after clipping
    b1, b2 = 0.9, 0.999
    m = ((1 - b1) * b1 * clipped_first + (1 - b1) * 0.1) / (1 - b1**2)
    v = ((1 - b2) * b2 * clipped_first**2 + (1 - b2) * 0.1**2) / (1 - b2**2)
    np.testing.assert_allclose(updates[1.0], -2e-4 * m / (np.sqrt(v) + 1e-8), rtol=1e-4)
    assert not np.allclose(updates[0.0], updates[1.0])


def test_unknown_loss_is_rejected_by_the_loop_config_check():
    from mspan_jax.train.loop import check_config

    config = tiny_config(loss="l3")
    with pytest.raises(ValueError, match="config.train.loss"):
        check_config(config)
    config = tiny_config(ema_decay=1.0)
    with pytest.raises(ValueError, match="ema_decay"):
        check_config(config)


@pytest.mark.slow
def test_summary_writer_events_are_readable(tmp_path):
    import io

    from PIL import Image

    crops = np.arange(2 * 4 * 12 * 3, dtype=np.uint8).reshape(2, 4, 12, 3)
    writer = SummaryWriter(str(tmp_path / "tb"))
    writer.scalar("train/loss", 0.25, 3)
    writer.scalar("train/loss", 0.125, 5)
    writer.image("eval/crops", crops, 3)
    writer.text("config", "hello \u00e9", 0)
    writer.close()
    seen = read_tensorboard(tmp_path / "tb")
    assert [(step, plugin) for step, plugin, _ in seen["train/loss"]] == [(3, "scalars"), (5, "scalars")]
    assert seen["train/loss"][1][2].dtype == np.float32
    np.testing.assert_allclose([value for *_, value in seen["train/loss"]], [0.25, 0.125])
    [(step, plugin, tensor)] = seen["eval/crops"]
    assert (step, plugin) == (3, "images") and list(tensor[:2]) == [b"12", b"4"] and len(tensor) == 4
    for png, crop in zip(tensor[2:], crops, strict=True):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), crop)
    [(step, plugin, text)] = seen["config"]
    assert (step, plugin, text.item().decode("utf-8")) == (0, "text", "hello \u00e9")


def test_summary_writer_copies_events_to_a_remote_log_dir_at_each_flush(tmp_path, monkeypatch):
    """gs:// objects cannot be appended: events are written to a local staging file whose whole
    content is copied over the remote one at each flush (and at close)."""
    from mspan_jax.train import summary

    bucket = tmp_path / "bucket"

    class FakeGcsPath:  # the bits of epath.Path the writer uses; bytes land under `bucket`
        def __init__(self, path: str):
            self.uri = str(path)

        def __fspath__(self) -> str:
            return self.uri

        def __truediv__(self, name: str) -> FakeGcsPath:
            return FakeGcsPath(f"{self.uri}/{name}")

        def mkdir(self, **_) -> None:
            pass

        def write_bytes(self, data: bytes) -> None:
            local = bucket / self.uri.removeprefix("gs://b/")
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(data)

    monkeypatch.setattr(summary.epath, "Path", FakeGcsPath)
    writer = SummaryWriter("gs://b/run/tb")
    writer.scalar("train/loss", 0.5, 1)
    writer.flush()
    assert [v for *_, v in read_tensorboard(bucket / "run" / "tb")["train/loss"]] == [0.5]
    writer.scalar("train/loss", 0.25, 2)
    writer.close()
    assert [v for *_, v in read_tensorboard(bucket / "run" / "tb")["train/loss"]] == [0.5, 0.25]
    assert not Path(writer._file.name).exists()  # the staging copy is gone


@pytest.mark.slow
def test_warm_start_loads_a_converted_checkpoint(tmp_path):
    from mspan_jax.checkpoints.params import save_params
    from mspan_jax.train.warm_start import initial_params

    config = tiny_config()
    model = get_model(config.model)
    saved = jax.jit(model.init)(jax.random.key(7, impl="rbg"), jnp.zeros((1, 6, 6, 3)))
    save_params(tmp_path / "converted", saved, config.model)
    config.train.warm_start = str(tmp_path / "converted")
    loaded = initial_params(config, model)
    chex.assert_trees_all_equal(loaded, saved["params"])


@pytest.mark.slow
def test_warm_start_reinit_takes_another_scales_body_and_a_fresh_upsampler(tmp_path):
    """x2 from a trained x4 (configs/sun_hays_release.py): the body comes from the checkpoint, the
    named upsampler keeps the seeded init; without the key the other scale is refused."""
    from mspan_jax.checkpoints.params import CheckpointError, save_params
    from mspan_jax.train.loop import check_config
    from mspan_jax.train.warm_start import initial_params, seeded_params

    x4 = tiny_config()
    x4.model.scale = 4
    x4.data.hr_patch_size = 16
    model4 = get_model(x4.model)
    saved = jax.jit(model4.init)(jax.random.key(7, impl="rbg"), jnp.zeros((1, 4, 4, 3)))
    save_params(tmp_path / "x4", saved, x4.model)

    x2 = tiny_config()
    x2.model.scale = 2
    x2.train.warm_start = str(tmp_path / "x4")
    model2 = get_model(x2.model)
    with pytest.raises(CheckpointError, match=r"is x4, config.model is x2; .*warm_start_reinit"):
        initial_params(x2, model2)
    x2.train.warm_start_reinit = ("upsampler",)
    params = initial_params(x2, model2)
    fresh = seeded_params(x2, model2)
    chex.assert_trees_all_equal(params["body"], saved["params"]["body"])
    chex.assert_trees_all_equal(params["upsampler"], fresh["upsampler"])

    x2.train.warm_start_reinit = ("head",)
    with pytest.raises(ValueError, match=r"warm_start_reinit: no top-level params \['head'\]"):
        initial_params(x2, model2)
    x2.train.warm_start = ""
    with pytest.raises(ValueError, match="warm_start_reinit is set but"):
        check_config(x2)


def test_subpixel_upsampler_starts_x2_as_the_x4_output_averaged_over_2x2_blocks():
    """config.train.warm_start_upsampler='subpixel' (x2 / x3 from a trained x4): the resampled
    sub-pixel filters make the x2 upsampler's output the 2x2 block mean of the x4 one's."""
    from mspan_jax.models.layers import pixel_shuffle, torch_conv
    from mspan_jax.train.warm_start import phase_weights, subpixel_upsampler

    conv4, conv2 = torch_conv(3 * 16, 3), torch_conv(3 * 4, 3)
    h = jax.random.normal(jax.random.key(0), (1, 6, 7, 5))
    up4 = conv4.init(jax.random.key(1), h)["params"]
    up2 = subpixel_upsampler(up4, 4, 2)
    x4 = pixel_shuffle(conv4.apply({"params": up4}, h), 4)
    x2 = pixel_shuffle(conv2.apply({"params": up2}, h), 2)
    want = x4.reshape(1, 12, 2, 14, 2, 3).mean(axis=(2, 4))
    np.testing.assert_allclose(x2, want, atol=1e-5)
    np.testing.assert_allclose(phase_weights(4, 3).sum(axis=1), 1.0)  # x3: a convex mix per phase
    assert jax.tree.map(jnp.shape, subpixel_upsampler(up4, 4, 3)) == {"bias": (27,),
                                                                       "kernel": (3, 3, 5, 27)}


def test_ema_decay_warms_up_from_the_initialisation():
    """min(d, (1 + t) / (10 + t)): the first steps forget the random init (at a flat 0.999, ~37% of
    it was still in step 1,000's EMA); from t = 9,989 on, 0.999 itself."""
    from mspan_jax.train.step import ema_warmup_decay

    got = [float(ema_warmup_decay(0.999, t)) for t in (0, 1, 990, 9_989, 100_000)]
    np.testing.assert_allclose(got, [0.1, 2 / 11, 991 / 1000, 0.999, 0.999], rtol=1e-6)
    init_left = np.prod([float(ema_warmup_decay(0.999, t)) for t in range(1000)])
    assert init_left < 1e-2  # against 0.999 ** 1000 = 0.37
