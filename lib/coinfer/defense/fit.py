r"""Fig. 5 (Sect. 3.6): accuracy against ε, and the fit :math:`A(\epsilon) = a\log(b\epsilon + 1)`.

:func:`accuracy_sweep` measures the defended victim over a log-spaced :math:`\epsilon` grid
(:class:`SweepConfig`), :func:`fit_accuracy_curve` fits the curve of Sect. 4.1 of Wu et al.
(2021), and :func:`fitted_accuracy_curve` caches the fit that Chapter 3 computes
(``coinfer.config.cache_dir("fits")``, path :func:`fit_cache_path`) so that the game chapter
reads the very same :math:`(a, b)`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import curve_fit
from torch import nn

from ..config import cache_dir, check_positive_int, data_root, default_device, progress_bar
from ..data import ImageSet
from ..models import check_split_point as _check_at
from ..privacy import check_calibration, check_epsilon, check_policy
from ..train import VICTIM, TrainConfig
from .evaluate import accuracy, fixed_subset
from .mechanisms import ParameterNoise, apply_shield

__all__ = [
    "SWEEP_EPSILONS",
    "SweepConfig",
    "SweepResult",
    "accuracy_sweep",
    "accuracy_curve",
    "fit_accuracy_curve",
    "AccuracyFit",
    "fitted_accuracy_curve",
    "fit_cache_path",
]


# ----------------------------------------------------------------------------------------------
# Fig. 5: accuracy against ε, and the fit A(ε) = a·log(bε + 1)
# ----------------------------------------------------------------------------------------------

#: The ε grid of the Chapter 3 sweep (log-spaced, 11 values from 1 to 10⁴: ratio 10^0.4).
SWEEP_EPSILONS: tuple[float, ...] = tuple(float(f"{e:.4g}") for e in np.geomspace(1, 1e4, 11))


@dataclass(frozen=True)
class SweepConfig:
    r"""The settings of the accuracy-vs-ε sweep (Fig. 5) — and hence of the cached fit.

    Attributes
    ----------
    epsilons
        The log-spaced grid of privacy budgets.
    draws
        Independent noise draws (deployments) per :math:`\epsilon`.  Draw :math:`j` uses the
        same standard Laplace vector for every :math:`\epsilon`, scaled by :math:`2G/\epsilon`
        (common random numbers: the curve of one draw is a function of :math:`\epsilon` only).
    num_images
        Size of the fixed random subset of the GTSRB test split the accuracy is measured on.
    subset_seed, seed
        Seeds of the subset and of the noise.
    at, policy, calibration
        The defence: split point, noise policy and calibration (the paper's: 4, once,
        per-coordinate).
    victim
        The victim's training configuration (its ``clip_bound`` is :math:`G`).
    """

    epsilons: tuple[float, ...] = SWEEP_EPSILONS
    draws: int = 3
    num_images: int = 500
    subset_seed: int = 0
    seed: int = 0
    at: int = 4
    policy: str = "once"
    calibration: str = "per-coordinate"
    victim: TrainConfig = VICTIM

    def __post_init__(self):
        eps = tuple(float(check_epsilon(e, name="epsilons[i]")) for e in self.epsilons)
        if len(eps) < 2 or list(eps) != sorted(set(eps)):
            raise ValueError(f"epsilons must hold >= 2 increasing values, got {self.epsilons}")
        object.__setattr__(self, "epsilons", eps)
        check_positive_int("draws", self.draws)
        check_positive_int("num_images", self.num_images)
        check_positive_int("subset_seed", self.subset_seed, allow_zero=True)
        check_positive_int("seed", self.seed, allow_zero=True)
        _check_at(self.at)
        check_policy(self.policy)
        check_calibration(self.calibration)
        if not isinstance(self.victim, TrainConfig):
            raise TypeError(f"victim must be a TrainConfig, got {type(self.victim).__name__}")
        if self.victim.clip_bound is None:
            raise ValueError("victim must be trained with a clip_bound (the G of the defence)")

    @property
    def clip_bound(self) -> float:
        """:math:`G`, the victim's clipping bound."""
        return float(self.victim.clip_bound)


class SweepResult(NamedTuple):
    """Accuracies of the sweep: ``accuracy[i, j]`` at ``epsilons[i]``, noise draw ``j``."""

    epsilons: np.ndarray
    accuracy: np.ndarray
    clean_accuracy: float
    config: SweepConfig
    seconds: float

    @property
    def mean(self) -> np.ndarray:
        return self.accuracy.mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        return self.accuracy.std(axis=1, ddof=1) if self.accuracy.shape[1] > 1 else \
            np.zeros(len(self.epsilons))


def _draw_seed(seed: int, draw: int) -> int:
    return int(np.random.SeedSequence([seed, draw]).generate_state(1, dtype=np.uint64)[0] >> 2)


def accuracy_sweep(
    model: nn.Sequential,
    test_set: ImageSet,
    *,
    config: SweepConfig = SweepConfig(),
    progress: bool = True,
) -> SweepResult:
    r"""Accuracy of the defended victim over ``config.epsilons`` × ``config.draws`` (Fig. 5).

    For every :math:`\epsilon` and draw, :func:`apply_shield` with
    ``ParameterNoise(ε, G, policy, calibration)`` is evaluated on the fixed subset
    :func:`fixed_subset` ``(test_set, num_images, subset_seed)``.
    """
    if not isinstance(config, SweepConfig):
        raise TypeError(f"config must be a SweepConfig, got {type(config).__name__}")
    subset = fixed_subset(test_set, num_images=config.num_images, seed=config.subset_seed)
    start = time.perf_counter()
    clean = accuracy(model, subset)
    acc = np.zeros((len(config.epsilons), config.draws))
    bar = progress_bar(total=acc.size, desc="accuracy sweep", progress=progress)
    for j in range(config.draws):
        for i, eps in enumerate(config.epsilons):
            shield = ParameterNoise(eps, config.clip_bound, config.policy, config.calibration)
            pipeline = apply_shield(model, shield, at=config.at,
                                    seed=_draw_seed(config.seed, j))
            acc[i, j] = accuracy(pipeline, subset)
            bar.update(1)
    bar.close()
    return SweepResult(np.array(config.epsilons), acc, clean, config,
                       time.perf_counter() - start)


def accuracy_curve(epsilon, a: float, b: float) -> np.ndarray:
    r""":math:`A(\epsilon) = a\log(b\epsilon + 1)` (natural log), the paper's Eq. for Fig. 5."""
    return a * np.log1p(b * np.asarray(epsilon, dtype=float))


def fit_accuracy_curve(epsilons, accuracies) -> tuple[float, float, np.ndarray]:
    r"""Least-squares fit of :math:`A(\epsilon) = a\log(b\epsilon+1)` with ``scipy.optimize.curve_fit``.

    ``accuracies`` may be one value per :math:`\epsilon` or a matrix with one row per
    :math:`\epsilon` (one column per noise draw; every draw is a data point).  The start value
    comes from a grid over :math:`b` with the optimal :math:`a` in closed form
    (:math:`a = \sum y\,g / \sum g^2`, :math:`g = \log(b\epsilon+1)`), then ``curve_fit`` refines
    :math:`(a, b)` within :math:`a, b > 0`.

    Returns
    -------
    a, b, covariance
        The fitted parameters and their estimated covariance matrix.
    """
    eps = np.asarray(epsilons, dtype=float)
    acc = np.asarray(accuracies, dtype=float)
    if acc.ndim == 1:
        acc = acc[:, None]
    if eps.ndim != 1 or acc.shape[0] != eps.size or eps.size < 2:
        raise ValueError(f"epsilons (shape {eps.shape}) and accuracies (shape {acc.shape}) must "
                         "have one row per epsilon, at least 2")
    if not (np.isfinite(eps).all() and (eps > 0).all() and np.isfinite(acc).all()):
        raise ValueError("epsilons must be finite and > 0 and accuracies finite")
    x = np.repeat(eps, acc.shape[1])
    y = acc.reshape(-1)
    best = (math.inf, 1.0, 1.0)
    for b in np.geomspace(1e-6, 1e3, 400) / eps.max() * 10:
        g = np.log1p(b * x)
        a = float(y @ g / (g @ g))
        sse = float(((a * g - y) ** 2).sum())
        if a > 0 and sse < best[0]:
            best = (sse, a, float(b))
    _, a0, b0 = best
    with np.errstate(divide="ignore", invalid="ignore"):
        (a, b), cov = curve_fit(lambda e, a, b: a * np.log1p(b * e), x, y, p0=(a0, b0),
                                bounds=([1e-12, 1e-12], [np.inf, np.inf]), max_nfev=10_000)
    return float(a), float(b), np.asarray(cov)


@dataclass(frozen=True)
class AccuracyFit:
    r"""The fitted accuracy curve :math:`A(\epsilon) = a\log(b\epsilon + 1)` and the sweep behind it.

    Attributes
    ----------
    a, b
        The fitted parameters (accuracy as a fraction in [0, 1], natural logarithm).
    a_stderr, b_stderr
        Standard errors from ``curve_fit``'s covariance.
    epsilons, accuracy
        The sweep: ``accuracy[i][j]`` at ``epsilons[i]``, noise draw ``j``.
    clean_accuracy
        Accuracy of the undefended victim on the same test subset.
    rmse
        Root-mean-square residual of the fit over all points.
    settings
        The :class:`SweepConfig` that produced it.
    sweep_seconds
        Wall time of the sweep when it was computed (not of loading it).
    """

    a: float
    b: float
    a_stderr: float
    b_stderr: float
    epsilons: tuple[float, ...]
    accuracy: tuple[tuple[float, ...], ...]
    clean_accuracy: float
    rmse: float
    settings: SweepConfig
    sweep_seconds: float = field(default=0.0, compare=False)

    def __call__(self, epsilon) -> np.ndarray:
        """:math:`a\\log(b\\epsilon + 1)`."""
        return accuracy_curve(epsilon, self.a, self.b)

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.accuracy).mean(axis=1)

    @property
    def std(self) -> np.ndarray:
        acc = np.asarray(self.accuracy)
        return acc.std(axis=1, ddof=1) if acc.shape[1] > 1 else np.zeros(acc.shape[0])

    @classmethod
    def from_sweep(cls, sweep: SweepResult) -> "AccuracyFit":
        a, b, cov = fit_accuracy_curve(sweep.epsilons, sweep.accuracy)
        resid = accuracy_curve(sweep.epsilons[:, None], a, b) - sweep.accuracy
        err = np.sqrt(np.clip(np.diag(cov), 0, np.inf))
        return cls(a=a, b=b, a_stderr=float(err[0]), b_stderr=float(err[1]),
                   epsilons=tuple(float(e) for e in sweep.epsilons),
                   accuracy=tuple(tuple(float(v) for v in row) for row in sweep.accuracy),
                   clean_accuracy=float(sweep.clean_accuracy),
                   rmse=float(np.sqrt(np.mean(resid ** 2))), settings=sweep.config,
                   sweep_seconds=float(sweep.seconds))


def _fit_payload(settings: SweepConfig) -> dict:
    from ..train import use_bf16  # the victim's weights depend on it (see train._cache_key)

    device = default_device()
    payload = {
        "settings": dataclasses.asdict(settings),
        "device": device.type,
        "bf16": use_bf16(settings.victim.mixed_precision, device),
        "torch": torch.__version__.split("+")[0],
        "data": (str(data_root()) if settings.victim.data != "synthetic" else "synthetic"),
        "format": 1,
    }
    return payload


def fit_cache_path(settings: SweepConfig = SweepConfig()) -> Path:
    """Where :func:`fitted_accuracy_curve` caches the fit for ``settings``."""
    key = hashlib.sha256(json.dumps(_fit_payload(settings), sort_keys=True).encode()).hexdigest()
    return cache_dir("fits") / f"accuracy-fit-{key[:16]}.json"


def _fingerprint(model: nn.Sequential) -> str:
    h = hashlib.sha256()
    for p in model.state_dict().values():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _load_fit(path, settings: SweepConfig, fingerprint: str | None) -> AccuracyFit | None:
    try:
        blob = json.loads(path.read_text())
        if blob["payload"] != json.loads(json.dumps(_fit_payload(settings))):
            return None
        if fingerprint is not None and blob.get("victim_fingerprint") != fingerprint:
            return None
        fit = blob["fit"]
        return AccuracyFit(a=fit["a"], b=fit["b"], a_stderr=fit["a_stderr"],
                           b_stderr=fit["b_stderr"], epsilons=tuple(fit["epsilons"]),
                           accuracy=tuple(tuple(r) for r in fit["accuracy"]),
                           clean_accuracy=fit["clean_accuracy"], rmse=fit["rmse"],
                           settings=settings, sweep_seconds=fit["sweep_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def fitted_accuracy_curve(
    settings: SweepConfig = SweepConfig(),
    *,
    model: nn.Sequential | None = None,
    test_set: ImageSet | None = None,
    recompute: bool = False,
    progress: bool = False,
) -> AccuracyFit:
    r"""The fit :math:`A(\epsilon) = a\log(b\epsilon+1)` of Fig. 5 — from the cache, or computed.

    Chapter 3 computes it (``recompute=True``) with the default ``settings`` and caches it as
    JSON in ``coinfer.config.cache_dir("fits")``, keyed by the settings (including the victim's
    :class:`~coinfer.train.TrainConfig`), the device type, bf16 use, the torch version and the
    data root.  Chapter 4 calls ``fitted_accuracy_curve()`` and gets the same numbers; when the
    cache is missing it runs the same sweep (:func:`accuracy_sweep` + :func:`fit_accuracy_curve`).

    Parameters
    ----------
    settings
        The sweep settings; the default is exactly the one Chapter 3 uses.
    model, test_set
        The victim and the GTSRB test split, when the caller has them loaded already; by default
        ``coinfer.train.load_or_train(settings.victim)`` and
        ``coinfer.data.load_signs("test", source=settings.victim.data)``.  A given ``model`` is
        fingerprinted and a cached fit of another model is not used.
    recompute
        Run the sweep even when a cached fit exists (and overwrite the cache).
    """
    if not isinstance(settings, SweepConfig):
        raise TypeError(f"settings must be a SweepConfig, got {type(settings).__name__}")
    path = fit_cache_path(settings)
    fingerprint = _fingerprint(model) if model is not None else None
    if path.exists() and not recompute:
        fit = _load_fit(path, settings, fingerprint)
        if fit is not None:
            return fit
    if model is None:
        from ..train import load_or_train

        model = load_or_train(settings.victim, progress=progress).model
        fingerprint = _fingerprint(model)
    if test_set is None:
        from ..data import load_signs

        test_set = load_signs("test", source=settings.victim.data, progress=progress)
    sweep = accuracy_sweep(model, test_set, config=settings, progress=progress)
    fit = AccuracyFit.from_sweep(sweep)
    blob = {
        "payload": _fit_payload(settings),
        "victim_fingerprint": fingerprint,
        "fit": {k: getattr(fit, k) for k in ("a", "b", "a_stderr", "b_stderr", "epsilons",
                                               "accuracy", "clean_accuracy", "rmse",
                                               "sweep_seconds")},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(blob, indent=1))
    tmp.replace(path)
    return fit
