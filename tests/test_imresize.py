"""MATLAB bicubic imresize: Set5's published LR images bit for bit, and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from mspan_jax.data.images import read_image
from mspan_jax.data.imresize import (
    bicubic_downscale,
    bicubic_upscale,
    contributions,
    cubic,
    imresize,
    modcrop,
)


def test_set5_lr_bicubic_is_bit_identical(set5_dir):
    results = []
    for scale in (2, 3, 4):
        for hr_path in sorted((set5_dir / "HR").glob("*.bmp")):
            hr = read_image(hr_path)
            expected = read_image(set5_dir / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.bmp")
            mine = bicubic_downscale(hr, scale)
            assert mine.shape == expected.shape, (hr_path.stem, scale)
            results.append(int(np.abs(mine.astype(int) - expected.astype(int)).max()))
    identical = sum(d == 0 for d in results)
    print(f"Set5 bicubic LR: {identical}/{len(results)} bit-identical, max abs diff {max(results)}")
    assert identical == len(results) == 15


def test_cubic_kernel_values():
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, -0.5])
    # a = -0.5: 1.5|x|^3 - 2.5|x|^2 + 1 on [0, 1]; -0.5|x|^3 + 2.5|x|^2 - 4|x| + 2 on (1, 2].
    np.testing.assert_allclose(cubic(x), [1.0, 0.5625, 0.0, -0.0625, 0.0, 0.0, 0.5625])


def test_contributions_downscale_by_two_by_hand():
    weights, indices = contributions(8, 4, 0.5)
    # Output pixel 1 is centred at input coordinate u = 1.5; kernel stretched to width 8.
    u = 1.5
    idx = np.floor(u - 4) + np.arange(10)
    w = 0.5 * cubic(0.5 * (u - idx))
    w /= w.sum()
    keep = w != 0
    np.testing.assert_allclose(weights[0], w[keep])
    # 1-based indices -2..7 with symmetric padding: 0 -> 1, -1 -> 2, ...; here 0-based.
    mirror = {-2: 3, -1: 2, 0: 1}
    expected = [mirror.get(int(i), int(i)) - 1 for i in idx[keep]]
    np.testing.assert_array_equal(indices[0], expected)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)


def test_upscale_by_two_of_a_ramp_by_hand():
    # Upscaling x2 has no antialiasing. Output 1 sits at u = 0.75; taps at 1-based -2..3 reflect
    # symmetrically to input pixels 3, 2, 1, 1, 2, 3 at distances 2.75, 1.75, 0.75, -0.25, -1.25,
    # -2.25, whose cubic weights are 0, -0.0234375, 0.2265625, 0.8671875, -0.0703125, 0 (sum 1).
    row = np.array([[0.0, 10.0, 20.0, 30.0]])
    out = imresize(row, output_shape=(1, 8))
    assert out.shape == (1, 8)
    expected_first = -0.0234375 * 10 + 0.2265625 * 0 + 0.8671875 * 0 - 0.0703125 * 10
    assert out[0, 0] == pytest.approx(expected_first)  # -0.9375
    # Where no tap reflects, a linear ramp is reproduced exactly by the cubic kernel.
    np.testing.assert_allclose(out[0, 3:5], [12.5, 17.5])  # centres u = 2.25, 2.75


def test_uint8_rounds_half_away_from_zero_and_float_is_unrounded():
    img = np.array([[100, 101]], dtype=np.uint8)
    out = imresize(img, output_shape=(1, 1))
    assert out.dtype == np.uint8 and out[0, 0] == 101  # mean 100.5 rounds up (not to even)
    out = imresize(img.astype(np.float32), output_shape=(1, 1))
    assert out.dtype == np.float64 and out[0, 0] == pytest.approx(100.5)


def test_constant_image_stays_constant_and_shapes():
    img = np.full((13, 10, 3), 77, np.uint8)
    assert np.all(imresize(img, 0.5) == 77)
    assert imresize(img, 0.5).shape == (7, 5, 3)  # ceil(13 / 2)
    assert imresize(img[..., 0], 3).shape == (39, 30)
    assert bicubic_upscale(img, 3).shape == (39, 30, 3)


def test_modcrop_keeps_top_left():
    img = np.arange(7 * 10).reshape(7, 10)
    np.testing.assert_array_equal(modcrop(img, 3), img[:6, :9])
    assert bicubic_downscale(np.zeros((7, 10, 3), np.uint8), 3).shape == (2, 3, 3)


def test_bad_scale_is_refused():
    with pytest.raises(ValueError, match="positive integer"):
        bicubic_downscale(np.zeros((8, 8, 3), np.uint8), 0)
    with pytest.raises(ValueError, match="scale or an output_shape"):
        imresize(np.zeros((8, 8)))
