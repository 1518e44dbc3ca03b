r"""Fig. 5 (Sect. 3.6): accuracy against ε, and the fit :math:`A(\epsilon) = a\log(b\epsilon + 1)`.

:func:`accuracy_sweep` measures the defended victim over a log-spaced :math:`\epsilon` grid
(:class:`SweepConfig`), :func:`fit_accuracy_curve` fits the curve of Sect. 4.1 of Wu et al.
(2021), which grows without bound, so :func:`capped_accuracy_curve` caps it at the clean accuracy
and :func:`fit_logistic_curve` fits a saturating curve, logistic in :math:`\log\epsilon`
(:func:`logistic_accuracy_curve`), beside it; :func:`r_squared` scores both.
:func:`fitted_accuracy_curve` caches the fit that Chapter 3 computes
(``coinfer.config.cache_dir("fits")``, path :func:`fit_cache_path`) so that the game chapter
reads the very same :math:`(a, b)`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import OptimizeWarning
from torch import nn

from ..config import (cache_dir, check_positive_int, data_root, default_device, payload_digest,
                      progress_bar, tensors_digest)
from ..data import ImageSet
from ..models import check_split_point as _check_at
from ..privacy import check_calibration, check_epsilon, check_policy
from ..train import VICTIM, TrainConfig
from .clipping import ClipFineTune
from .curves import (accuracy_curve, capped_accuracy_curve, fit_accuracy_curve,
                     fit_logistic_curve, logistic_accuracy_curve, r_squared)
from .evaluate import accuracy, fixed_subset
from .mechanisms import ParameterNoise, apply_shield

__all__ = [
    "SWEEP_EPSILONS",
    "SweepConfig",
    "SweepResult",
    "accuracy_sweep",
    "AccuracyFit",
    "fitted_accuracy_curve",
    "fit_cache_path",
    "chapter_sweep_settings",
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
        The victim's training configuration (its ``clip_bound`` is :math:`G` unless
        ``finetune`` is given).
    finetune
        ``None`` (default: the victim of ``victim`` as trained), or a
        :class:`~coinfer.defense.ClipFineTune` whose ``base`` is ``victim``: the victim
        fine-tuned under coordinate clipping, with :math:`G` = ``finetune.clip_bound``.
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
    finetune: ClipFineTune | None = None

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
        if self.finetune is not None:
            if not isinstance(self.finetune, ClipFineTune):
                raise TypeError(f"finetune must be a ClipFineTune or None, got "
                                f"{type(self.finetune).__name__}")
            if self.finetune.base != self.victim or self.finetune.at != self.at:
                raise ValueError("finetune.base must be victim and finetune.at must be at, got "
                                 f"base={self.finetune.base}, at={self.finetune.at}")
        elif self.victim.clip_bound is None:
            raise ValueError("victim must be trained with a clip_bound (the G of the defence)")

    @property
    def clip_bound(self) -> float:
        """:math:`G`: ``finetune.clip_bound`` when fine-tuned, else the victim's clipping bound."""
        if self.finetune is not None:
            return float(self.finetune.clip_bound)
        return float(self.victim.clip_bound)


def chapter_sweep_settings(*, victim: TrainConfig = VICTIM, at: int = 4,
                           train_set: ImageSet | None = None,
                           progress: bool = False) -> SweepConfig:
    r"""The settings of Chapter 3's Fig. 5 sweep, whose fit Chapter 4 uses.

    The victim of ``victim`` (trained with the paper's rescaling, from the model cache) gives the
    clip bound :math:`G` = :func:`~coinfer.defense.choose_clip_bound` (the 99th percentile of
    :math:`|\theta_1|` at split ``at``, rounded up); the sweep then runs on that victim
    fine-tuned under coordinate clipping to :math:`[-G, G]`
    (``SweepConfig(finetune=ClipFineTune(G, at=at))``).  ``fitted_accuracy_curve(
    chapter_sweep_settings())`` is the curve of the chapters.  ``train_set`` is the victim's
    training set as :func:`coinfer.train.load_or_train` takes it (default: the one ``victim.data``
    names).
    """
    from ..train import load_or_train
    from .clipping import choose_clip_bound

    base = load_or_train(victim, train_set=train_set, progress=progress).model
    G = choose_clip_bound(base, at=at)
    return SweepConfig(at=at, victim=victim, finetune=ClipFineTune(G, at=at, base=victim))


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


@dataclass(frozen=True)
class AccuracyFit:
    r"""The fitted accuracy curve :math:`A(\epsilon) = a\log(b\epsilon + 1)` and the sweep behind it.

    Calling the fit, ``fit(ε)``, evaluates the paper's uncapped curve (as before);
    :meth:`paper_curve` is the capped one and :meth:`logistic_curve` the saturating one.  All three
    take a float or an array of :math:`\epsilon > 0`.

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
    logistic_min, logistic_k, logistic_eps0
        The saturating fit :func:`logistic_accuracy_curve` computed from the sweep by
        :func:`fit_logistic_curve`, whose top is the clean accuracy.
    r2_paper, r2_paper_uncapped, r2_logistic
        :math:`R^2` over all sweep points of :meth:`paper_curve` (the paper's curve capped at the
        clean accuracy), of the uncapped :math:`a\log(b\epsilon+1)`, and of
        :meth:`logistic_curve`.
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
    logistic_min: float = field(init=False, compare=False)
    logistic_k: float = field(init=False, compare=False)
    logistic_eps0: float = field(init=False, compare=False)
    r2_paper: float = field(init=False, compare=False)
    r2_paper_uncapped: float = field(init=False, compare=False)
    r2_logistic: float = field(init=False, compare=False)

    def __post_init__(self):
        # Derived deterministically from the stored sweep, so a fit loaded from the cache and a
        # freshly computed one carry the same values (and caches of the older format still load).
        # A degenerate sweep (clean accuracy 0, fewer than 3 budgets, constant accuracies) has no
        # logistic fit or R²: those fields are then NaN (and logistic_curve raises).
        acc = np.asarray(self.accuracy, dtype=float)
        eps = np.asarray(self.epsilons, dtype=float)
        nan = math.nan
        try:
            with warnings.catch_warnings():  # an inestimable covariance is not used here
                warnings.simplefilter("ignore", OptimizeWarning)
                a_min, k, eps0, _ = fit_logistic_curve(eps, acc,
                                                       clean_accuracy=self.clean_accuracy)
        except (ValueError, RuntimeError):
            a_min, k, eps0 = nan, nan, nan
        object.__setattr__(self, "logistic_min", a_min)
        object.__setattr__(self, "logistic_k", k)
        object.__setattr__(self, "logistic_eps0", eps0)
        grid = eps[:, None]

        def r2(curve):
            try:
                return r_squared(acc, curve(grid))
            except ValueError:
                return nan

        object.__setattr__(self, "r2_paper", r2(self.paper_curve))
        object.__setattr__(self, "r2_paper_uncapped", r2(self))
        object.__setattr__(self, "r2_logistic", r2(self.logistic_curve))

    def __call__(self, epsilon) -> np.ndarray:
        """:math:`a\\log(b\\epsilon + 1)` (the paper's curve, uncapped)."""
        return accuracy_curve(epsilon, self.a, self.b)

    def paper_curve(self, epsilon) -> np.ndarray:
        """The paper's :math:`a\\log(b\\epsilon+1)`, capped at ``clean_accuracy``."""
        return capped_accuracy_curve(epsilon, self.a, self.b, clean_accuracy=self.clean_accuracy)

    def logistic_curve(self, epsilon) -> np.ndarray:
        """The saturating logistic-in-:math:`\\log\\epsilon` fit (never above ``clean_accuracy``)."""
        if not math.isfinite(self.logistic_k):
            raise ValueError("this sweep has no logistic fit (degenerate accuracies)")
        return logistic_accuracy_curve(epsilon, a_min=self.logistic_min,
                                       a_clean=self.clean_accuracy, k=self.logistic_k,
                                       eps0=self.logistic_eps0)

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
    as_dict = dataclasses.asdict(settings)
    if settings.finetune is None:  # the key of the settings without fine-tuning is unchanged
        del as_dict["finetune"]
    payload = {
        "settings": as_dict,
        "device": device.type,
        "bf16": use_bf16(settings.victim.mixed_precision, device),
        "torch": torch.__version__.split("+")[0],
        "data": (str(data_root()) if settings.victim.data != "synthetic" else "synthetic"),
        "format": 1,
    }
    return payload


def fit_cache_path(settings: SweepConfig = SweepConfig()) -> Path:
    """Where :func:`fitted_accuracy_curve` caches the fit for ``settings``."""
    return cache_dir("fits") / f"accuracy-fit-{payload_digest(_fit_payload(settings))}.json"


def _fingerprint(model: nn.Sequential) -> str:
    return tensors_digest(model.state_dict().values())


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

    The fit is cached as JSON in ``coinfer.config.cache_dir("fits")``, keyed by the settings
    (including the victim's :class:`~coinfer.train.TrainConfig` and the clipped fine-tuning), the
    device type, bf16 use, the torch version and the data root, and it records a fingerprint of
    the victim's weights.  Chapter 3 computes it for :func:`chapter_sweep_settings` (and for the
    default ``SweepConfig()``, the shared victim with :math:`G = 1`); Chapter 4 calls
    ``fitted_accuracy_curve(chapter_sweep_settings())`` and gets the same numbers; when the cache
    is missing it runs the same sweep (:func:`accuracy_sweep` + :func:`fit_accuracy_curve`).

    Parameters
    ----------
    settings
        The sweep settings; the default is the shared victim with the paper's rescaling and
        :math:`G = 1`, the chapters' curve is ``chapter_sweep_settings()``.
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
        if settings.finetune is not None:
            from .clipping import load_or_finetune_clipped

            model = load_or_finetune_clipped(settings.finetune, progress=progress).model
        else:
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
