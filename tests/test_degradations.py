"""BI / BD / DN and Gaussian noise match their definitions (RDN's MATLAB scripts)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from mspan_jax.data import degradations as deg
from mspan_jax.data.imresize import bicubic_downscale, modcrop


def _image(h: int = 29, w: int = 40, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.uniform(0, 255, (h, w, 3)), (2, 2, 0))
    return np.clip(smooth + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def _fspecial_gaussian(size: int, sigma: float) -> np.ndarray:
    """MATLAB fspecial('gaussian', size, sigma), written out in 2-D."""
    r = (size - 1) / 2
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    k = np.exp(-(x**2 + y**2) / (2 * sigma**2))
    return k / k.sum()


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bd_is_replicate_blur_then_every_sth_pixel(scale):
    hr = _image()
    kernel = _fspecial_gaussian(7, 1.6)
    crop = modcrop(hr, scale).astype(np.float64)
    blurred = np.stack([ndimage.correlate(crop[..., c], kernel, mode="nearest") for c in range(3)], -1)
    blurred = np.clip(np.floor(blurred + 0.5), 0, 255).astype(np.uint8)  # imfilter on uint8 rounds
    want = blurred[scale // 2::scale, scale // 2::scale]
    got = deg.blur_downsample(hr, scale)
    assert got.shape == (hr.shape[0] // scale, hr.shape[1] // scale, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want)


def test_bd_border_is_replicated_not_zero_padded():
    flat = np.full((24, 24, 3), 200, np.uint8)
    np.testing.assert_array_equal(deg.blur_downsample(flat, 3), np.full((8, 8, 3), 200, np.uint8))


def test_bi_is_the_project_bicubic():
    hr = _image()
    np.testing.assert_array_equal(deg.bicubic(hr, 3), bicubic_downscale(modcrop(hr, 3), 3))
    np.testing.assert_array_equal(deg.degrade(hr, 3, "bi"), deg.bicubic(hr, 3))


def test_dn_is_bicubic_plus_seeded_noise():
    hr = _image(48, 64)
    noise = 30 * np.random.default_rng(7).standard_normal((12, 16, 3))
    want = np.clip(np.floor(bicubic_downscale(hr, 4) + noise + 0.5), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(deg.bicubic_noise(hr, 4, seed=7), want)
    np.testing.assert_array_equal(deg.degrade(hr, 4, "DN", seed=7), want)
    assert not np.array_equal(deg.bicubic_noise(hr, 4, seed=8), want)


def test_dn_noise_has_sigma_30():
    gray = np.full((400, 400, 3), 128, np.uint8)  # mid-gray: clipping never bites
    residual = deg.bicubic_noise(gray, 2).astype(np.float64) - deg.bicubic(gray, 2)
    assert abs(residual.mean()) < 0.5 and abs(residual.std() - 30) < 0.5


def test_add_gaussian_noise_uint8_float_gray_and_range():
    img = np.full((64, 64, 3), 128, np.uint8)
    noisy = deg.add_gaussian_noise(img, 10, np.random.default_rng(0))
    assert noisy.dtype == np.uint8 and abs(noisy.astype(float).std() - 10) < 0.6
    f = img.astype(np.float32) / 255
    nf = deg.add_gaussian_noise(f, 25, np.random.default_rng(0))
    assert nf.dtype == np.float32 and abs((nf - f).std() - 25 / 255) < 0.005
    g = deg.add_gaussian_noise(f, 25, np.random.default_rng(0), gray=True)
    np.testing.assert_array_equal(g[..., 0], g[..., 2])
    stds = [(deg.add_gaussian_noise(f, (5, 15), np.random.default_rng(i)) - f).std() * 255
            for i in range(6)]
    assert all(4 < s < 16 for s in stds) and np.ptp(stds) > 1
    with pytest.raises(ValueError, match="lo <= hi"):
        deg.add_gaussian_noise(f, (20, 10), np.random.default_rng(0))


def test_degrade_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown degradation 'XX'"):
        deg.degrade(_image(), 2, "XX")
    with pytest.raises(ValueError, match="uint8"):
        deg.blur_downsample(_image().astype(np.float32), 2)


def test_seed_for_name_is_stable_and_distinct():
    assert deg.seed_for_name("baby") == deg.seed_for_name("baby")
    assert deg.seed_for_name("baby") != deg.seed_for_name("bird")
