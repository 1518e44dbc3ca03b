"""MSE / PSNR / SSIM: agreement with scikit-image, summary statistics, and clear errors."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from coinfer.metrics import METRICS, MetricSummary, mse, psnr, reconstruction_metrics, ssim


def _pair(seed, n=5, c=3, side=32, noise=0.1):
    rng = np.random.default_rng(seed)
    a = rng.random((n, c, side, side))
    b = np.clip(a + rng.normal(0, noise, a.shape), 0, 1)
    return a, b


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), noise=st.floats(0.01, 0.5), c=st.sampled_from([1, 3]),
       side=st.integers(7, 20))
def test_agrees_with_scikit_image_on_random_images(seed, noise, c, side):
    a, b = _pair(seed, n=3, c=c, side=side, noise=noise)
    summary = reconstruction_metrics(a, b)
    for i in range(3):
        ref_mse = np.mean((a[i] - b[i]) ** 2)
        assert summary.mse[i] == pytest.approx(ref_mse, rel=1e-12)
        assert summary.psnr[i] == pytest.approx(
            peak_signal_noise_ratio(a[i], b[i], data_range=1.0), rel=1e-12)
        assert summary.ssim[i] == pytest.approx(
            structural_similarity(a[i], b[i], data_range=1.0, channel_axis=0), rel=1e-12)


def test_channel_last_reference_gives_the_same_ssim():
    """Our (C, H, W) call equals scikit-image on the usual (H, W, C) layout."""
    a, b = _pair(1)
    ref = [structural_similarity(a[i].transpose(1, 2, 0), b[i].transpose(1, 2, 0),
                                 data_range=1.0, channel_axis=-1) for i in range(len(a))]
    np.testing.assert_allclose(ssim(a, b), ref, rtol=1e-12)


def test_batched_functions_match_the_summary_and_torch_inputs():
    a, b = _pair(2)
    summary = reconstruction_metrics(torch.from_numpy(a).float(), torch.from_numpy(b).float())
    np.testing.assert_allclose(mse(a, b), summary.mse, rtol=1e-6)
    np.testing.assert_allclose(psnr(a, b), summary.psnr, rtol=1e-6)
    np.testing.assert_allclose(ssim(a, b), summary.ssim, rtol=1e-5)
    assert mse(a, b).shape == (5,)


def test_known_values():
    a = np.full((2, 3, 16, 16), 0.5)
    b = a + 0.1  # MSE 0.01 -> PSNR 20 dB
    assert mse(a, b) == pytest.approx([0.01, 0.01])
    assert psnr(a, b) == pytest.approx([20.0, 20.0])
    same = reconstruction_metrics(a, a)
    assert (same.mse == 0).all() and np.isinf(same.psnr).all() and same.ssim == pytest.approx(1.0)


def test_uint8_inputs_are_scaled_to_unit_range():
    rng = np.random.default_rng(3)
    a8 = rng.integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    b8 = rng.integers(0, 256, (4, 3, 8, 8), dtype=np.uint8)
    np.testing.assert_allclose(mse(a8, b8), mse(a8 / 255.0, b8 / 255.0))
    np.testing.assert_allclose(mse(torch.from_numpy(a8), torch.from_numpy(b8)), mse(a8, b8))


def test_metrics_order_with_noise_level():
    rng = np.random.default_rng(4)
    a = rng.random((8, 3, 32, 32))
    low = reconstruction_metrics(a, np.clip(a + rng.normal(0, 0.02, a.shape), 0, 1))
    high = reconstruction_metrics(a, np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1))
    assert low.mean("mse") < high.mean("mse")
    assert low.mean("psnr") > high.mean("psnr")
    assert low.mean("ssim") > high.mean("ssim")


def test_summary_statistics():
    a, b = _pair(5, n=20)
    s = reconstruction_metrics(a, b)
    assert s.n == 20
    for m in METRICS:
        values = getattr(s, m)
        assert s.mean(m) == pytest.approx(values.mean())
        assert s.std(m) == pytest.approx(values.std(ddof=1))
        low, high = s.ci95(m)
        ref = stats.t.interval(0.95, df=19, loc=values.mean(), scale=stats.sem(values))
        assert (low, high) == pytest.approx(ref)
        assert low < s.mean(m) < high
    assert set(s.mean()) == set(METRICS) and set(s.ci95()) == set(METRICS)
    d = s.as_dict()
    assert d["n"] == 20 and d["psnr_mean"] == pytest.approx(s.mean("psnr"))
    assert s.format("ssim").count("±") == 1
    with pytest.raises(ValueError, match="metric"):
        s.mean("accuracy")


def test_single_image_has_undefined_spread():
    a, b = _pair(6, n=1)
    s = reconstruction_metrics(a, b)
    assert math.isnan(s.std("mse")) and all(math.isnan(v) for v in s.ci95("psnr"))
    assert isinstance(s, MetricSummary)


@pytest.mark.parametrize("fn", [mse, psnr, ssim, reconstruction_metrics])
def test_shape_mismatch_is_rejected(fn):
    a = np.random.default_rng(0).random((2, 3, 16, 16))
    with pytest.raises(ValueError, match="same shape"):
        fn(a, a[:1])
    with pytest.raises(ValueError, match="same shape"):
        fn(a, a[:, :, :8])


@pytest.mark.parametrize("bad, match", [
    (lambda a: a * 2.0, r"\[0, 1\]"),
    (lambda a: a - 0.5, r"\[0, 1\]"),
    (lambda a: np.where(a > 0.5, np.nan, a), "NaN"),
    (lambda a: a[0], "batch"),
    (lambda a: a[:0], "at least one"),
    (lambda a: a[:, :2], "channels"),
])
def test_bad_values_and_shapes_are_rejected(bad, match):
    a = np.random.default_rng(0).random((2, 3, 16, 16))
    with pytest.raises(ValueError, match=match):
        reconstruction_metrics(a, bad(a))
    with pytest.raises(ValueError, match=match):
        reconstruction_metrics(bad(a), a)


def test_bad_types_are_rejected():
    a = np.random.default_rng(0).random((2, 3, 16, 16))
    with pytest.raises(TypeError, match="reconstructed"):
        mse(a, a.tolist())
    with pytest.raises(TypeError, match="dtype"):
        mse(a, (a * 10).astype(np.int64))
    with pytest.raises(TypeError, match="dtype"):
        mse(torch.zeros(1, 3, 8, 8, dtype=torch.int32), torch.zeros(1, 3, 8, 8))


def test_ssim_needs_its_window():
    a = np.random.default_rng(0).random((1, 3, 5, 5))
    with pytest.raises(ValueError, match="7×7"):
        ssim(a, a)
    assert mse(a, a)[0] == 0.0  # MSE has no such limit
