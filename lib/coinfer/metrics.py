"""Image-reconstruction metrics: MSE, PSNR and SSIM, batched, on images in ``[0, 1]``.

Wu et al. (2021), Sect. 6.1 ("Measurement metrics") score an attack by three numbers per image,
averaged over the evaluation images:

* **MSE** — the mean squared pixel error :math:`\\frac{1}{CHW}\\lVert x - x' \\rVert_2^2`
  (pixels in ``[0, 1]``; *lower* is a better reconstruction);
* **PSNR** — the peak signal-to-noise ratio :math:`10 \\log_{10}(1 / \\mathrm{MSE})` dB for the
  data range 1 (*higher* is better; :math:`+\\infty` for a perfect copy);
* **SSIM** — the structural similarity index of Wang et al. (2004), which compares local
  luminance, contrast and structure (1 means identical; *higher* is better).

SSIM is computed by scikit-image (:func:`skimage.metrics.structural_similarity` with
``data_range=1.0`` and ``channel_axis`` set to the colour axis, scikit-image's default 7×7 uniform
window), one image at a time; PSNR uses the definition of
:func:`skimage.metrics.peak_signal_noise_ratio` vectorised over the batch.  The tests check both
against scikit-image on random images.  :func:`reconstruction_metrics`
returns all three per image together with their means, standard deviations and 95 % confidence
intervals of the means.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "MetricSummary",
    "mse",
    "psnr",
    "ssim",
    "reconstruction_metrics",
    "METRICS",
    "MeanCI",
    "mean_ci",
    "paired_difference",
]

#: The metric names, in the order of the paper's Table 1.
METRICS = ("mse", "psnr", "ssim")


def _as_array(images, name: str) -> np.ndarray:
    """Validate a batch of images and return it as ``float64`` ``(n, C, H, W)`` in ``[0, 1]``."""
    if isinstance(images, torch.Tensor):
        if images.dtype == torch.uint8:
            array = images.detach().cpu().numpy().astype(np.float64) / 255.0
        elif images.is_floating_point():
            array = images.detach().cpu().to(torch.float64).numpy()
        else:
            raise TypeError(
                f"{name} must be a float tensor in [0, 1] or a uint8 tensor, got dtype {images.dtype}"
            )
    elif isinstance(images, np.ndarray):
        if images.dtype == np.uint8:
            array = images.astype(np.float64) / 255.0
        elif np.issubdtype(images.dtype, np.floating):
            array = images.astype(np.float64)
        else:
            raise TypeError(
                f"{name} must be a float array in [0, 1] or a uint8 array, got dtype {images.dtype}"
            )
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray, got {type(images).__name__}")
    if array.ndim != 4:
        hint = " (add a batch axis, e.g. x[None])" if array.ndim == 3 else ""
        raise ValueError(
            f"{name} must be a batch of images of shape (n, channels, height, width), "
            f"got shape {tuple(array.shape)}{hint}"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name} must contain at least one image, got shape {tuple(array.shape)}")
    if array.shape[1] not in (1, 3):
        raise ValueError(
            f"{name} must have 1 or 3 channels on axis 1 (channel-first layout), "
            f"got shape {tuple(array.shape)}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"{name} must have values in [0, 1] (the metrics use data_range=1.0), got values in "
            f"[{low:.4g}, {high:.4g}]; convert uint8 images with coinfer.data.to_float"
        )
    return array


def _pair(original, reconstructed) -> tuple[np.ndarray, np.ndarray]:
    a = _as_array(original, "original")
    b = _as_array(reconstructed, "reconstructed")
    if a.shape != b.shape:
        raise ValueError(
            f"original and reconstructed must have the same shape, got {tuple(a.shape)} "
            f"and {tuple(b.shape)}"
        )
    return a, b


def mse(original, reconstructed) -> np.ndarray:
    """Per-image mean squared error :math:`\\frac{1}{CHW}\\lVert x_i - x'_i\\rVert_2^2`.

    Parameters
    ----------
    original, reconstructed
        Batches of shape ``(n, C, H, W)`` (``C`` = 1 or 3), floats in ``[0, 1]`` or ``uint8``
        (divided by 255), as ``torch.Tensor`` or ``numpy.ndarray``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n,)``.
    """
    a, b = _pair(original, reconstructed)
    return ((a - b) ** 2).mean(axis=(1, 2, 3))


def _psnr_from(errors: np.ndarray) -> np.ndarray:
    # scikit-image's peak_signal_noise_ratio is 10·log10(data_range² / MSE); computed here for the
    # whole batch at once (the tests check equality with scikit-image).  A perfect copy has PSNR
    # +inf, stated rather than warned about.
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(1.0 / errors)


def psnr(original, reconstructed) -> np.ndarray:
    """Per-image peak signal-to-noise ratio :math:`10\\log_{10}(1/\\mathrm{MSE})` in dB (data range 1).

    The definition of :func:`skimage.metrics.peak_signal_noise_ratio` with ``data_range=1.0``,
    evaluated for the whole batch at once (equal to scikit-image's value for every image); a
    perfect reconstruction (MSE 0) has PSNR ``inf``.  Inputs as for :func:`mse`.
    """
    a, b = _pair(original, reconstructed)
    return _psnr_from(((a - b) ** 2).mean(axis=(1, 2, 3)))


def _ssim_from(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from skimage.metrics import structural_similarity

    if min(a.shape[2:]) < 7:
        raise ValueError(
            f"SSIM needs images of at least 7×7 pixels (its window), got {a.shape[2]}×{a.shape[3]}"
        )
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        out[i] = structural_similarity(a[i], b[i], data_range=1.0, channel_axis=0)
    return out


def ssim(original, reconstructed) -> np.ndarray:
    """Per-image structural similarity (Wang et al. 2004) with scikit-image's defaults.

    :func:`skimage.metrics.structural_similarity` with ``data_range=1.0`` and the channel axis
    of the ``(C, H, W)`` image (7×7 uniform window, the mean SSIM over pixels and channels).
    Inputs as for :func:`mse`; images must be at least 7×7.
    """
    a, b = _pair(original, reconstructed)
    return _ssim_from(a, b)


def _t_quantile(n: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, df=n - 1))


class MetricSummary(NamedTuple):
    """Per-image MSE, PSNR and SSIM of a set of reconstructions, with their summary statistics.

    Attributes
    ----------
    mse, psnr, ssim
        ``numpy`` arrays of shape ``(n,)``: one value per evaluated image.
    """

    mse: np.ndarray
    psnr: np.ndarray
    ssim: np.ndarray

    @property
    def n(self) -> int:
        """Number of evaluated images."""
        return int(self.mse.shape[0])

    def _values(self, metric: str) -> np.ndarray:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        return getattr(self, metric)

    def mean(self, metric: str | None = None):
        """Mean over the images: a ``float`` for one metric, else a dict for all three."""
        if metric is None:
            return {m: self.mean(m) for m in METRICS}
        return float(np.mean(self._values(metric)))

    def std(self, metric: str | None = None):
        """Sample standard deviation over the images (``ddof=1``; ``nan`` for a single image)."""
        if metric is None:
            return {m: self.std(m) for m in METRICS}
        values = self._values(metric)
        return float(np.std(values, ddof=1)) if values.size > 1 else math.nan

    def ci95(self, metric: str | None = None):
        """95 % confidence interval of the mean, ``mean ± t₀.₉₇₅,ₙ₋₁ · std / √n`` (Student's t).

        Returns ``(low, high)`` for one metric, else a dict for all three.  With a single image,
        or with an infinite PSNR among the values, the interval is ``(nan, nan)`` / infinite.
        """
        if metric is None:
            return {m: self.ci95(m) for m in METRICS}
        values = self._values(metric)
        if values.size < 2:
            return (math.nan, math.nan)
        mean = float(np.mean(values))
        half = _t_quantile(values.size) * float(np.std(values, ddof=1)) / math.sqrt(values.size)
        return (mean - half, mean + half)

    def as_dict(self) -> dict[str, float]:
        """``{"mse_mean": …, "mse_std": …, "psnr_mean": …, …, "n": …}`` for tables and JSON."""
        out: dict[str, float] = {}
        for m in METRICS:
            out[f"{m}_mean"] = self.mean(m)
            out[f"{m}_std"] = self.std(m)
        out["n"] = self.n
        return out

    def format(self, metric: str, *, digits: int | None = None) -> str:
        """``"mean ± std"`` of one metric, rounded (MSE 4 decimals, PSNR 1, SSIM 3 by default)."""
        digits = {"mse": 4, "psnr": 1, "ssim": 3}[metric] if digits is None else digits
        return f"{self.mean(metric):.{digits}f} ± {self.std(metric):.{digits}f}"


def reconstruction_metrics(original, reconstructed) -> MetricSummary:
    """MSE, PSNR and SSIM of every reconstructed image (the measures of Wu et al. 2021, Sect. 6.1).

    Parameters
    ----------
    original
        The true images :math:`x_0`, shape ``(n, C, H, W)``, floats in ``[0, 1]`` or ``uint8``.
    reconstructed
        The attacker's reconstructions :math:`x_0'`, same shape and range.

    Returns
    -------
    MetricSummary
        Per-image arrays and their mean, standard deviation and 95 % confidence interval; kept
        in the result cache (:func:`coinfer.config.cached_result`), keyed by the two image sets.

    Raises
    ------
    ValueError
        On a shape mismatch, an empty batch, values outside ``[0, 1]`` or non-finite values.
    TypeError
        On an unsupported type or dtype.
    """
    from .config import cached_result, tensors_digest

    a, b = _pair(original, reconstructed)
    # SSIM image by image is the slow part: the summary is replayed from the result cache
    payload = {"pair": tensors_digest([torch.from_numpy(np.ascontiguousarray(a)),
                                       torch.from_numpy(np.ascontiguousarray(b))]),
               "shape": list(a.shape), "dtype": str(a.dtype)}
    return cached_result("reconstruction-metrics", payload, lambda: _metrics_of(a, b))


def _metrics_of(a: np.ndarray, b: np.ndarray) -> MetricSummary:
    errors = ((a - b) ** 2).mean(axis=(1, 2, 3))
    return MetricSummary(errors, _psnr_from(errors), _ssim_from(a, b))


class MeanCI(NamedTuple):
    """A mean with its Student-t 95 % confidence interval.

    Attributes
    ----------
    mean
        The sample mean :math:`\\bar d`.
    low, high
        :math:`\\bar d \\mp t_{0.975,\\,n-1}\\, s / \\sqrt n` (``nan`` when ``n = 1``).
    std
        The sample standard deviation :math:`s` (``ddof=1``; ``nan`` when ``n = 1``).
    n
        Number of values.
    """

    mean: float
    low: float
    high: float
    std: float
    n: int

    def excludes_zero(self) -> bool:
        """True when the whole interval lies on one side of 0 (a difference is resolved)."""
        return bool(self.low > 0 or self.high < 0)


def mean_ci(values) -> MeanCI:
    """Mean and 95 % Student-t confidence interval of a one-dimensional sample.

    Used for means over test images and for means over replicated attackers (one value per
    replicate).  The interval assumes independent values; it is exact for normal data and
    approximate (central limit theorem) otherwise.

    Raises
    ------
    ValueError
        When ``values`` is not one-dimensional, is empty or holds NaN or infinite values.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sample, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("values contains NaN or infinite values")
    mean = float(values.mean())
    if values.size < 2:
        return MeanCI(mean, math.nan, math.nan, math.nan, 1)
    std = float(values.std(ddof=1))
    half = _t_quantile(values.size) * std / math.sqrt(values.size)
    return MeanCI(mean, mean - half, mean + half, std, int(values.size))


def paired_difference(a, b) -> MeanCI:
    """Mean of the per-item differences ``a - b`` with its 95 % confidence interval (paired t).

    When two attacks are scored on the *same* images, the image-to-image spread (some signs are
    easy, some hard) is common to both and cancels in :math:`d_i = a_i - b_i`; the interval of
    :math:`\\bar d` is then much narrower than comparing two separate intervals of the means.

    Parameters
    ----------
    a, b
        Per-image values of one metric for two attacks on the same images, in the same order
        (e.g. ``summary_a.psnr`` and ``summary_b.psnr``).

    Raises
    ------
    ValueError
        When the two samples differ in shape, are not one-dimensional or are empty.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"a and b must pair up (same images, same order), got shapes {a.shape} "
                         f"and {b.shape}")
    return mean_ci(a - b)
