"""PSNR/SSIM in the papers' MATLAB convention, checked against values computed by hand; the
papers' bicubic row reproduced on Set5."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mspan_jax import metrics
from mspan_jax.data.images import read_image, to_uint8
from mspan_jax.data.imresize import bicubic_downscale, imresize, modcrop, round_uint8
from mspan_jax.data.pairs import EvalPair
from mspan_jax.evaluation import bicubic_scores
from mspan_jax.metrics import gaussian_window_1d, psnr, rgb_to_y, ssim

RNG = np.random.default_rng(0)


def test_rgb_to_y_matches_matlab_formula():
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 200, 30]]], dtype=np.uint8)
    y = rgb_to_y(img)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y[0], [16.0, 235.0, 16 + 65.481, 16 + (65.481 * 10 + 128.553 * 200
                                                                          + 24.966 * 30) / 255])
    np.testing.assert_array_equal(rgb_to_y(img, round_y=True)[0], [16, 235, 81, 122])  # 122.33 -> 122


def test_to_uint8():
    np.testing.assert_array_equal(to_uint8(np.array([-1.0, 0.0, 0.5, 0.2 / 255, 1.0, 3.0])),
                                  [0, 0, 128, 0, 255, 255])


def test_psnr_of_a_known_mse():
    # Equal R, G, B shift of 2 moves Y by 2 * (65.481 + 128.553 + 24.966) / 255 = 2 * 219 / 255.
    hr = RNG.integers(10, 240, (20, 24, 3), dtype=np.uint8)
    sr = hr + np.uint8(2)
    dy = 2 * 219 / 255
    assert psnr(sr, hr, crop_border=0) == pytest.approx(10 * math.log10(255**2 / dy**2))
    assert psnr(sr, hr, crop_border=0, y_channel=False) == pytest.approx(10 * math.log10(255**2 / 4))
    assert psnr(hr, hr, crop_border=2) == math.inf


def test_crop_border_ignores_the_border():
    hr = RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[:3] = 0
    sr[:, -3:] = 255
    assert psnr(sr, hr, crop_border=3) == math.inf
    assert ssim(sr, hr, crop_border=3) == pytest.approx(1.0)
    assert psnr(sr, hr, crop_border=2) < 40


def _ssim_by_loop(a: np.ndarray, b: np.ndarray) -> float:
    """ssim_index.m written out: for each valid 11x11 window, weighted means/variances."""
    x = np.arange(11) - 5
    w = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()  # fspecial('gaussian', 11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for i in range(a.shape[0] - 10):
        for j in range(a.shape[1] - 10):
            pa, pb = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
            ma, mb = (w * pa).sum(), (w * pb).sum()
            va, vb = (w * pa * pa).sum() - ma**2, (w * pb * pb).sum() - mb**2
            cov = (w * pa * pb).sum() - ma * mb
            values.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_ssim_matches_a_direct_loop():
    hr = RNG.integers(0, 256, (19, 17, 3), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + RNG.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    expected = _ssim_by_loop(rgb_to_y(sr)[1:-1, 1:-1], rgb_to_y(hr)[1:-1, 1:-1])
    assert ssim(sr, hr, crop_border=1) == pytest.approx(expected, rel=1e-12)
    rgb = np.mean([_ssim_by_loop(sr[..., c].astype(float), hr[..., c].astype(float)) for c in range(3)])
    assert ssim(sr, hr, crop_border=0, y_channel=False) == pytest.approx(rgb, rel=1e-12)
    rounded = _ssim_by_loop(rgb_to_y(sr, True), rgb_to_y(hr, True))
    assert ssim(sr, hr, crop_border=0, round_y=True) == pytest.approx(rounded, rel=1e-12)


def test_ssim_of_constant_images_by_hand():
    # Constants a, b: mu = a, b; variances 0 -> SSIM = (2ab + C1) / (a^2 + b^2 + C1) on Y.
    a = np.full((16, 16, 3), 100, np.uint8)
    b = np.full((16, 16, 3), 120, np.uint8)
    ya, yb = rgb_to_y(a)[0, 0], rgb_to_y(b)[0, 0]
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b, crop_border=0) == pytest.approx((2 * ya * yb + c1) / (ya**2 + yb**2 + c1))
    assert ssim(a, a, crop_border=0) == pytest.approx(1.0)


def test_gaussian_window_is_fspecial():
    g = gaussian_window_1d()
    assert g.shape == (11,) and g.sum() == pytest.approx(1.0)
    assert g[5] / g[4] == pytest.approx(math.exp(1 / (2 * 1.5**2)))


def test_bad_inputs_are_refused():
    a = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="differs"):
        psnr(a, a[:-1], crop_border=0)
    with pytest.raises(ValueError, match="uint8"):
        psnr(a.astype(np.float32), a, crop_border=0)
    with pytest.raises(ValueError, match="crop_border"):
        psnr(a, a, crop_border=8)
    with pytest.raises(ValueError, match="11x11"):
        ssim(a, a, crop_border=3)


def _srcnn_bicubic(hr: np.ndarray, scale: int) -> tuple[float, float]:
    """SRCNN's bicubic protocol: Y of rgb2ycbcr on uint8 (rounded), modcrop, Y-only bicubic down and
    up in [0, 1] floats, uint8(sr * 255), `scale` pixels shaved; PSNR and SSIM of the Y planes."""
    y = modcrop(np.round(metrics.rgb_to_y(hr))[..., None], scale)
    sr = imresize(imresize(y / 255.0, 1 / scale), scale) * 255.0
    sr_rgb, y_rgb = (np.repeat(round_uint8(p), 3, axis=2) for p in (sr, y))  # gray: R = G = B = Y'
    opts = dict(crop_border=scale, y_channel=False)
    return metrics.psnr(sr_rgb, y_rgb, **opts), metrics.ssim(sr_rgb, y_rgb, **opts)


@pytest.mark.parametrize("scale, ours, paper", [
    (2, (33.67, 0.9303), (33.66, 0.9299)),
    (4, (28.43, 0.8111), (28.42, 0.8104)),
])
def test_the_papers_bicubic_row_is_srcnns_protocol(set5_dir, scale, ours, paper):
    """docs/evaluation.md: our bicubic baseline (RGB LR, the model's metric) and the row the IMDN
    paper copied from SRCNN/VDSR (a Y-only degradation), both computed with our code."""
    hrs = {p.stem: read_image(p) for p in sorted((set5_dir / "HR").iterdir())}
    assert len(hrs) == 5
    pairs = [EvalPair(name, bicubic_downscale(modcrop(hr, scale), scale), modcrop(hr, scale))
             for name, hr in hrs.items()]
    baseline = bicubic_scores(pairs, scale=scale, crop_border=scale)
    assert (round(baseline.psnr, 2), round(baseline.ssim, 4)) == ours
    srcnn = np.mean([_srcnn_bicubic(hr, scale) for hr in hrs.values()], axis=0)
    assert (round(srcnn[0], 2), round(srcnn[1], 4)) == paper
