r"""Differential privacy for the shields: the Laplace mechanism, honest accounting, empirical audits.

Three things live here.

* **The Laplace mechanism** (Dwork, McSherry, Nissim & Smith 2006; Dwork & Roth 2014, Thm 3.6):
  :func:`laplace_noise` draws :math:`\mathrm{Lap}(0, b)` through a ``torch.Generator`` and
  :func:`laplace_mechanism` releases :math:`f(D) + \mathrm{Lap}(0, \Delta_1 f/\epsilon)^k`.
* **Calibration with honest names.**  The paper (Wu et al. 2021, Sect. 3.2 and Theorem 1) adds
  :math:`\mathrm{Lap}(0, 2G/\epsilon)` to every coordinate of the clipped device parameters
  :math:`\theta_1 \in [-G, G]^d`.  That is the Laplace scale for the sensitivity of *one
  coordinate* (``"per-coordinate"``); the :math:`\ell_1` sensitivity of the whole vector is
  :math:`2Gd` and the scale that makes the release :math:`\epsilon`-DP is :math:`2Gd/\epsilon`
  (``"whole-vector"``).  :func:`privacy_guarantee` reports what a given setting really
  guarantees, and for which neighbouring relation.
* **Empirical audits** in the style of Jagielski, Ullman & Oprea (2020): run a mechanism many
  times on two neighbouring inputs, threshold a distinguisher's score, and turn the two observed
  frequencies into a lower bound on :math:`\epsilon` with Clopper–Pearson (1934) confidence
  bounds (:func:`audit_scores`, :func:`audit_mechanism`).  If a mechanism is
  :math:`\epsilon`-DP the bound exceeds :math:`\epsilon` with probability at most ``alpha``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import stats

from .config import check_positive_float, check_positive_int

__all__ = [
    "CALIBRATIONS",
    "POLICIES",
    "check_epsilon",
    "check_calibration",
    "check_policy",
    "laplace_noise",
    "laplace_mechanism",
    "per_coordinate_sensitivity",
    "l1_sensitivity",
    "noise_scale",
    "PrivacyGuarantee",
    "privacy_guarantee",
    "format_epsilon",
    "clopper_pearson",
    "epsilon_lower_bound",
    "distinguishing_bound",
    "AuditResult",
    "audit_scores",
    "audit_mechanism",
    "scalar_laplace",
    "randomized_response",
    "vector_laplace_release",
    "sum_score",
]

#: ``"per-coordinate"``: the paper's scale 2G/ε (ε-DP for one coordinate only);
#: ``"whole-vector"``: the scale 2G·d/ε that makes the d-dimensional release ε-DP.
CALIBRATIONS = ("per-coordinate", "whole-vector")
#: ``"once"``: noise drawn once at deployment; ``"fresh"``: new noise at every inference.
POLICIES = ("once", "fresh")


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------

def check_epsilon(epsilon, *, name: str = "epsilon") -> float:
    """A privacy budget: a finite real number > 0 (raises ``TypeError``/``ValueError`` naming it)."""
    return check_positive_float(name, epsilon)


def check_calibration(calibration) -> str:
    """One of :data:`CALIBRATIONS`."""
    if not isinstance(calibration, str) or calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    return calibration


def check_policy(policy) -> str:
    """One of :data:`POLICIES`."""
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    return policy


def _check_generator(generator) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def _check_alpha(alpha) -> float:
    alpha = check_positive_float("alpha", alpha)
    if not alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return alpha


# ----------------------------------------------------------------------------------------------
# the Laplace mechanism
# ----------------------------------------------------------------------------------------------

# |u - 1/2| is clamped below 1/2 by one float32 ulp so that log1p never sees -1: the tails are cut
# at b·ln(2^24) ≈ 16.6 b, a mass of 6·10⁻⁸ (floating-point Laplace samplers are only
# approximately DP in any case, Mironov 2012).
_HALF_OPEN = 0.5 - 2.0 ** -25


def laplace_noise(
    shape: Sequence[int] | torch.Size,
    *,
    scale: float,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    r"""I.i.d. :math:`\mathrm{Lap}(0, b)` noise of the given shape, density :math:`e^{-|y|/b}/(2b)`.

    Inverse-CDF sampling from one uniform per coordinate: with :math:`u \sim U(-\tfrac12,\tfrac12)`,
    :math:`y = -b\,\mathrm{sgn}(u)\log(1 - 2|u|)`.  The uniforms come from ``generator`` (on the
    CPU), so a seeded generator gives the same noise on every device.

    Parameters
    ----------
    shape
        Shape of the noise tensor.
    scale
        :math:`b > 0` (finite).  The standard deviation is :math:`\sqrt2\,b`.
    generator
        A CPU ``torch.Generator``; it is advanced by ``prod(shape)`` draws.
    """
    scale = check_positive_float("scale", scale)
    _check_generator(generator)
    u = torch.rand(tuple(shape), generator=generator, dtype=torch.float32).sub_(0.5)
    magnitude = u.abs().clamp_(max=_HALF_OPEN).mul_(-2.0).log1p_().mul_(-scale)
    noise = magnitude.mul_(torch.sign(u))
    return noise.to(device=device, dtype=dtype) if (device is not None or dtype != torch.float32) \
        else noise


def laplace_mechanism(
    value: torch.Tensor | np.ndarray | float,
    *,
    epsilon: float,
    sensitivity: float,
    generator: torch.Generator,
) -> torch.Tensor:
    r"""The Laplace mechanism :math:`M(D) = f(D) + (Y_1, \dots, Y_k)`, :math:`Y_i \sim \mathrm{Lap}(\Delta_1 f/\epsilon)`.

    Theorem 3.6 of Dwork & Roth (2014) (the theorem "Laplace mechanism" of Chapter 3 of the book):
    when ``sensitivity`` is the :math:`\ell_1` sensitivity
    :math:`\Delta_1 f = \max_{D \sim D'} \|f(D) - f(D')\|_1` of the *whole* output
    ``value = f(D)``, the release is :math:`\epsilon`-DP.

    Returns a new float tensor (``value`` is not modified).
    """
    epsilon = check_epsilon(epsilon)
    sensitivity = check_positive_float("sensitivity", sensitivity)
    value = torch.as_tensor(value)
    if not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    if not bool(torch.isfinite(value).all()):
        raise ValueError("value must be finite (got NaN or inf entries)")
    noise = laplace_noise(value.shape, scale=sensitivity / epsilon, generator=generator,
                          dtype=value.dtype, device=value.device)
    return value + noise


# ----------------------------------------------------------------------------------------------
# sensitivity and calibration of the parameter perturbation
# ----------------------------------------------------------------------------------------------

def per_coordinate_sensitivity(clip_bound: float) -> float:
    r""":math:`\max |\theta_i - \theta'_i| = 2G` for coordinates clipped to :math:`[-G, G]`.

    This is the quantity the paper's sensitivity display (Sect. 3.2 of Wu et al. 2021) bounds;
    it is the :math:`\ell_\infty` (one-coordinate) sensitivity, not the :math:`\ell_1` one.
    """
    return 2.0 * check_positive_float("clip_bound", clip_bound)


def l1_sensitivity(num_parameters: int, clip_bound: float) -> float:
    r"""The :math:`\ell_1` sensitivity :math:`2Gd` of a vector :math:`\theta \in [-G, G]^d`.

    :math:`\sup_{\theta, \theta' \in [-G,G]^d} \|\theta - \theta'\|_1 = 2Gd`, attained at
    :math:`\theta = G\mathbf 1`, :math:`\theta' = -G\mathbf 1`.  Without further knowledge of the
    training algorithm this is the sensitivity of its clipped output to *any* change of the
    training set (Chaudhuri, Monteleoni & Sarwate 2011 call this output perturbation).
    """
    d = check_positive_int("num_parameters", num_parameters)
    return 2.0 * check_positive_float("clip_bound", clip_bound) * d


def noise_scale(
    *, epsilon: float, clip_bound: float, num_parameters: int, calibration: str = "per-coordinate"
) -> float:
    r"""Laplace scale :math:`b` added to each of the :math:`d` clipped parameters.

    ``"per-coordinate"`` — :math:`b = 2G/\epsilon`, the paper's Algorithm 2 / Theorem 1.
    ``"whole-vector"`` — :math:`b = 2Gd/\epsilon`, the Laplace mechanism for the
    :math:`\ell_1` sensitivity :math:`2Gd` of the whole vector (Dwork & Roth 2014, Thm 3.6).
    """
    epsilon = check_epsilon(epsilon)
    check_calibration(calibration)
    if calibration == "per-coordinate":
        return per_coordinate_sensitivity(clip_bound) / epsilon
    return l1_sensitivity(num_parameters, clip_bound) / epsilon


def format_epsilon(value: float, digits: int = 2) -> str:
    """``5`` → ``"5"``, ``562880`` → ``"5.6×10⁵"``, ``inf`` → ``"∞"`` (for text and tables)."""
    if math.isinf(value):
        return "∞"
    if value == 0:
        return "0"
    exponent = int(math.floor(math.log10(abs(value))))
    if -2 <= exponent <= 3:
        text = f"{value:.{max(0, digits - 1 - exponent)}f}" if exponent < digits else f"{value:.0f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    mantissa = value / 10 ** exponent
    sup = str(exponent).translate(str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹"))
    return f"{mantissa:.{digits - 1}f}×10{sup}"


@dataclass(frozen=True)
class PrivacyGuarantee:
    r"""What a parameter-perturbation setting actually guarantees.

    Attributes
    ----------
    nominal_epsilon
        The :math:`\epsilon` the setting was configured with.
    calibration, policy
        See :data:`CALIBRATIONS` and :data:`POLICIES`.
    num_parameters
        :math:`d`, the number of perturbed (clipped) parameters.
    clip_bound
        :math:`G`.
    scale
        The Laplace scale :math:`b` added to every parameter.
    per_coordinate_epsilon
        :math:`2G/b`: the guarantee for the release of *one* parameter.
    whole_vector_epsilon
        :math:`2Gd/b`: the guarantee for the release of the whole :math:`\theta_1` (with respect
        to any change of the training set), i.e. for one deployment.  Tight: no smaller
        :math:`\epsilon` holds for every training algorithm with outputs in :math:`[-G,G]^d`.
    num_inferences
        :math:`T`, the number of inferences an eavesdropper observes.
    training_data_epsilon
        The guarantee for the training set after :math:`T` observed inferences:
        ``whole_vector_epsilon`` under ``"once"`` (post-processing of one release),
        :math:`T\times` ``whole_vector_epsilon`` under ``"fresh"`` (basic composition of
        :math:`T` releases).
    inference_input_epsilon
        The guarantee for the vehicle's inference input :math:`x`: ``inf`` — parameter noise is
        not a mechanism on :math:`x` (see Chapter 3 and the audits).
    split_at
        The split point, when known (for the text).
    """

    nominal_epsilon: float
    calibration: str
    policy: str
    num_parameters: int
    clip_bound: float
    scale: float
    per_coordinate_epsilon: float
    whole_vector_epsilon: float
    num_inferences: int
    training_data_epsilon: float
    inference_input_epsilon: float = math.inf
    split_at: int | None = None

    def summary(self) -> str:
        """One line, e.g. ``per-coordinate ε = 5; whole vector ε = 5·d = 5.6×10⁵ at split 4``."""
        where = f" at split {self.split_at}" if self.split_at is not None else ""
        d = self.num_parameters
        if self.calibration == "per-coordinate":
            vec = f"{format_epsilon(self.per_coordinate_epsilon)}·d = " \
                  f"{format_epsilon(self.whole_vector_epsilon)}"
        else:
            vec = format_epsilon(self.whole_vector_epsilon)
        text = (f"per-coordinate ε = {format_epsilon(self.per_coordinate_epsilon)}; "
                f"whole vector ε = {vec}{where} (d = {d:,})")
        if self.policy == "fresh" and self.num_inferences > 1:
            text += (f"; training data after T = {self.num_inferences:,} fresh inferences: "
                     f"ε = {format_epsilon(self.training_data_epsilon)}")
        return text + "; inference input x: no guarantee (ε = ∞)"

    def __str__(self) -> str:  # pragma: no cover - thin wrapper
        return self.summary()


def privacy_guarantee(
    num_parameters: int | torch.nn.Module,
    *,
    epsilon: float,
    clip_bound: float,
    calibration: str = "per-coordinate",
    policy: str = "once",
    num_inferences: int = 1,
    at: int | None = None,
) -> PrivacyGuarantee:
    r"""The guarantee that actually holds for Laplace noise on :math:`d` clipped parameters.

    Parameters
    ----------
    num_parameters
        :math:`d`, or a model: then ``at`` must be given and :math:`d` is the number of
        parameters of its first ``at`` convolutions (the device part :math:`\theta_1`).
    epsilon, clip_bound, calibration
        The setting (see :func:`noise_scale`).
    policy
        ``"once"`` or ``"fresh"`` (see :data:`POLICIES`); matters for ``num_inferences > 1``.
    num_inferences
        How many inferences of the vehicle an eavesdropper observes.
    at
        Split point (required with a model, optional otherwise; only used for the text).

    Notes
    -----
    The proof is the corrected theorem of Chapter 3: releasing :math:`\theta_1 + \eta` with
    :math:`\eta_i \sim \mathrm{Lap}(b)` i.i.d. and :math:`\theta_1 \in [-G, G]^d` is
    :math:`(2Gd/b)`-DP with respect to the training set, every inference computed from one
    release inherits it (post-processing), and :math:`T` fresh releases compose to
    :math:`T\cdot 2Gd/b`.
    """
    if isinstance(num_parameters, torch.nn.Module):
        if at is None:
            raise ValueError("at must be given when num_parameters is a model")
        from .defense import device_part_parameters

        d = sum(p.numel() for p in device_part_parameters(num_parameters, at=at))
    else:
        d = check_positive_int("num_parameters", num_parameters)
    check_policy(policy)
    T = check_positive_int("num_inferences", num_inferences)
    b = noise_scale(epsilon=epsilon, clip_bound=clip_bound, num_parameters=d,
                    calibration=calibration)
    G = float(clip_bound)
    whole = 2 * G * d / b
    return PrivacyGuarantee(
        nominal_epsilon=float(epsilon), calibration=calibration, policy=policy, num_parameters=d,
        clip_bound=G, scale=b, per_coordinate_epsilon=2 * G / b, whole_vector_epsilon=whole,
        num_inferences=T, training_data_epsilon=whole * (T if policy == "fresh" else 1),
        split_at=at,
    )


# ----------------------------------------------------------------------------------------------
# audits
# ----------------------------------------------------------------------------------------------

def _check_counts(k, n, name):
    n = check_positive_int(f"n_{name}", n)
    k = check_positive_int(f"k_{name}", k, allow_zero=True)
    if k > n:
        raise ValueError(f"k_{name} must be <= n_{name} = {n}, got {k}")
    return k, n


def clopper_pearson(k: int, n: int, *, alpha: float = 0.05, side: str = "two-sided"
                    ) -> tuple[float, float]:
    r"""Exact (Clopper & Pearson 1934) confidence bounds for a binomial proportion.

    ``side="two-sided"``: :math:`[B(\alpha/2; k, n-k+1),\ B(1-\alpha/2; k+1, n-k)]` (the interval
    of ``scipy.stats.binomtest(k, n).proportion_ci(1 - alpha, "exact")``).  ``"lower"`` /
    ``"upper"``: the one-sided bound at level :math:`1-\alpha` (the other end is 0 or 1).
    """
    k, n = _check_counts(k, n, "trials")
    alpha = _check_alpha(alpha)
    if side not in ("two-sided", "lower", "upper"):
        raise ValueError(f"side must be 'two-sided', 'lower' or 'upper', got {side!r}")
    a = alpha / 2 if side == "two-sided" else alpha
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    if side == "lower":
        hi = 1.0
    elif side == "upper":
        lo = 0.0
    return lo, hi


def epsilon_lower_bound(k0: int, n0: int, k1: int, n1: int, *, alpha: float = 0.05) -> float:
    r"""A :math:`(1-\alpha)`-confidence lower bound on :math:`\epsilon` from one event :math:`S`.

    :math:`k_0` of :math:`n_0` runs on :math:`x` and :math:`k_1` of :math:`n_1` runs on
    :math:`x'` landed in :math:`S`.  If the mechanism is :math:`\epsilon`-DP then
    :math:`p_0 \le e^\epsilon p_1`.  With one-sided Clopper–Pearson bounds at level
    :math:`\alpha/2` each, :math:`\hat\epsilon = \log(\underline p_0/\overline p_1)` exceeds the
    true :math:`\epsilon` with probability at most :math:`\alpha` (union bound), provided
    :math:`S` was fixed before the runs were drawn.  Returns ``max(0, ε̂)``.
    """
    k0, n0 = _check_counts(k0, n0, "0")
    k1, n1 = _check_counts(k1, n1, "1")
    alpha = _check_alpha(alpha)
    p0_lo = clopper_pearson(k0, n0, alpha=alpha / 2, side="lower")[0]
    p1_hi = clopper_pearson(k1, n1, alpha=alpha / 2, side="upper")[1]
    if p0_lo <= 0:
        return 0.0
    return max(0.0, math.log(p0_lo / p1_hi))


def distinguishing_bound(epsilon: float) -> float:
    r""":math:`e^\epsilon/(1+e^\epsilon)`: the best balanced guessing accuracy against an :math:`\epsilon`-DP mechanism."""
    epsilon = check_positive_float("epsilon", epsilon, allow_zero=True)
    return 1.0 / (1.0 + math.exp(-epsilon))


@dataclass(frozen=True)
class AuditResult:
    r"""Outcome of an audit between two neighbouring inputs :math:`x, x'`.

    Attributes
    ----------
    epsilon_lower
        :math:`(1-\alpha)`-confidence lower bound on the :math:`\epsilon` of the mechanism.
    epsilon_estimate
        Plug-in value :math:`\log(\hat p_0/\hat p_1)` on the evaluation runs (``inf`` when
        :math:`\hat p_1 = 0`): no confidence attached.
    threshold, direction
        The event :math:`S = \{\text{score} > t\}` (``direction=+1``) or :math:`\{\text{score} \le t\}`
        (``-1``), or the same with :math:`x, x'` swapped (``swapped``), chosen on the
        calibration runs.
    counts
        ``(k0, n0, k1, n1)`` on the evaluation runs.
    accuracy
        Balanced accuracy of the guess "x if in S else x'" on the evaluation runs.
    accuracy_lower
        One-sided :math:`(1-\alpha)` Clopper–Pearson lower bound on that accuracy.
    trials
        Runs per input (calibration + evaluation).
    alpha
        Confidence parameter.
    """

    epsilon_lower: float
    epsilon_estimate: float
    threshold: float
    direction: int
    swapped: bool
    counts: tuple[int, int, int, int]
    accuracy: float
    accuracy_lower: float
    trials: int
    alpha: float
    notes: dict = field(default_factory=dict, compare=False)

    def bound_for(self, epsilon: float) -> float:
        """The accuracy an ``epsilon``-DP mechanism allows (:func:`distinguishing_bound`)."""
        return distinguishing_bound(epsilon)


def _event_counts(s0: np.ndarray, s1: np.ndarray, t: float, direction: int):
    if direction > 0:
        return int((s0 > t).sum()), int((s1 > t).sum())
    return int((s0 <= t).sum()), int((s1 <= t).sum())


def _candidate_thresholds(s0: np.ndarray, s1: np.ndarray, max_candidates: int) -> np.ndarray:
    """Midpoints between consecutive distinct pooled scores (thinned to quantiles), plus ends.

    Midpoints rather than the scores themselves: when the two samples separate, the chosen
    threshold then lies halfway between them instead of on the last calibration score.
    """
    pooled = np.unique(np.concatenate([s0, s1]))
    if pooled.size > max_candidates:
        q = np.linspace(0.0, 1.0, max_candidates)
        pooled = np.unique(np.quantile(pooled, q, method="inverted_cdf"))
    if pooled.size == 1:
        return pooled
    mids = pooled[:-1] + (pooled[1:] - pooled[:-1]) / 2
    return np.concatenate([[pooled[0] - 1.0], mids, [pooled[-1]]])


def _lower_bounds_vec(k0: np.ndarray, n0: int, k1: np.ndarray, n1: int, alpha: float) -> np.ndarray:
    """Vectorised :func:`epsilon_lower_bound` (same formula) for arrays of counts."""
    a = alpha / 2
    with np.errstate(divide="ignore"):
        p0_lo = np.where(k0 > 0, stats.beta.ppf(a, np.maximum(k0, 1), n0 - k0 + 1), 0.0)
        p1_hi = np.where(k1 < n1, stats.beta.ppf(1 - a, k1 + 1, np.maximum(n1 - k1, 1)), 1.0)
        value = np.where(p0_lo > 0, np.log(np.maximum(p0_lo, 1e-300) / p1_hi), 0.0)
    return np.maximum(value, 0.0)


def _choose_event(cal0: np.ndarray, cal1: np.ndarray, *, alpha: float, max_thresholds: int):
    """The threshold event maximising the confidence bound on the calibration runs.

    Candidates: thresholds ``t`` (quantiles of the pooled scores), both directions
    ``score > t`` / ``score <= t``, and both roles of the inputs.  Ties are broken by the
    larger plug-in gap ``|p0 - p1|`` (the more central threshold), then by order.
    """
    ts = _candidate_thresholds(cal0, cal1, max_thresholds)
    s0, s1 = np.sort(cal0), np.sort(cal1)
    n0, n1 = s0.size, s1.size
    above0 = n0 - np.searchsorted(s0, ts, side="right")   # #{score > t}
    above1 = n1 - np.searchsorted(s1, ts, side="right")
    options = []
    for direction, (k0, k1) in ((1, (above0, above1)), (-1, (n0 - above0, n1 - above1))):
        gap = np.abs(k0 / n0 - k1 / n1)
        options.append((_lower_bounds_vec(k0, n0, k1, n1, alpha), gap, direction, False))
        options.append((_lower_bounds_vec(k1, n1, k0, n0, alpha), gap, direction, True))
    best_key, best = (-1.0, -1.0), (float(ts[0]), 1, False)
    for value, gap, direction, swapped in options:
        order = np.lexsort((-gap, -value))  # max value, then max gap
        i = int(order[0])
        key = (float(value[i]), float(gap[i]))
        if key > best_key:
            best_key, best = key, (float(ts[i]), direction, swapped)
    return best


def audit_scores(
    scores_x: np.ndarray | Sequence[float] | torch.Tensor,
    scores_x_prime: np.ndarray | Sequence[float] | torch.Tensor,
    *,
    alpha: float = 0.05,
    calibration_fraction: float = 0.5,
    max_thresholds: int = 256,
) -> AuditResult:
    r"""Lower-bound :math:`\epsilon` from a distinguisher's scores on runs with :math:`x` and :math:`x'`.

    The Jagielski–Ullman–Oprea (2020) recipe, with the threshold chosen on held-out runs so that
    the Clopper–Pearson guarantee is valid:

    1. split each score sample into a calibration part (the first ``calibration_fraction``)
       and an evaluation part (the rest) — the runs are i.i.d., so this is a random split;
    2. on the calibration part, choose the event :math:`S` (a threshold :math:`t`, a direction,
       and which input plays :math:`x`) maximising :func:`epsilon_lower_bound`;
    3. on the evaluation part, count the runs in :math:`S` and return
       :func:`epsilon_lower_bound` of those counts.

    DP is symmetric in :math:`(x, x')`, so a bound obtained with the inputs swapped is as valid.

    Parameters
    ----------
    scores_x, scores_x_prime
        One finite score per run of the mechanism on :math:`x` (resp. :math:`x'`).
    alpha
        The bound is valid with probability :math:`\ge 1-\alpha`.
    calibration_fraction
        Share of the runs used to choose :math:`S`, in (0, 1).
    max_thresholds
        Threshold candidates tried (quantiles of the pooled calibration scores).
    """
    s0 = np.asarray(torch.as_tensor(scores_x).detach().cpu().double().numpy()
                    if isinstance(scores_x, torch.Tensor) else scores_x, dtype=float).ravel()
    s1 = np.asarray(torch.as_tensor(scores_x_prime).detach().cpu().double().numpy()
                    if isinstance(scores_x_prime, torch.Tensor) else scores_x_prime,
                    dtype=float).ravel()
    alpha = _check_alpha(alpha)
    if not 0 < calibration_fraction < 1:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    check_positive_int("max_thresholds", max_thresholds)
    for name, s in (("scores_x", s0), ("scores_x_prime", s1)):
        if s.size < 4:
            raise ValueError(f"{name} must hold at least 4 scores, got {s.size}")
        if not np.isfinite(s).all():
            raise ValueError(f"{name} must be finite (got NaN or inf)")
    c0, c1 = int(round(s0.size * calibration_fraction)), int(round(s1.size * calibration_fraction))
    c0, c1 = min(max(c0, 1), s0.size - 1), min(max(c1, 1), s1.size - 1)
    cal0, ev0, cal1, ev1 = s0[:c0], s0[c0:], s1[:c1], s1[c1:]

    t, direction, swapped = _choose_event(cal0, cal1, alpha=alpha, max_thresholds=max_thresholds)

    k0, k1 = _event_counts(ev0, ev1, t, direction)
    n0, n1 = ev0.size, ev1.size
    if swapped:
        k0, n0, k1, n1 = k1, n1, k0, n0
    eps_lo = epsilon_lower_bound(k0, n0, k1, n1, alpha=alpha)
    p0, p1 = k0 / n0, k1 / n1
    if p0 == 0:
        eps_hat = 0.0
    elif p1 == 0:
        eps_hat = math.inf
    else:
        eps_hat = max(0.0, math.log(p0 / p1))
    # balanced accuracy of "guess x when in S": (p0 + 1 - p1)/2, with a CP bound on the pooled
    # count of correct guesses (exact when n0 == n1; conservative enough otherwise).
    correct, total = k0 + (n1 - k1), n0 + n1
    acc = 0.5 * (p0 + 1 - p1)
    acc_lo = clopper_pearson(correct, total, alpha=alpha, side="lower")[0]
    return AuditResult(
        epsilon_lower=eps_lo, epsilon_estimate=eps_hat, threshold=t, direction=direction,
        swapped=swapped, counts=(k0, n0, k1, n1), accuracy=acc, accuracy_lower=acc_lo,
        trials=int(s0.size), alpha=alpha,
    )


Mechanism = Callable[[object, int, torch.Generator], torch.Tensor]


def audit_mechanism(
    mechanism: Mechanism,
    x,
    x_prime,
    *,
    trials: int,
    score: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seed: int = 0,
    alpha: float = 0.05,
    batch_size: int = 100_000,
    calibration_fraction: float = 0.5,
) -> AuditResult:
    r"""Run ``mechanism`` ``trials`` times on each of :math:`x, x'` and audit the scores.

    Parameters
    ----------
    mechanism
        ``mechanism(input, n, generator) -> outputs`` draws ``n`` independent runs (first
        dimension ``n``) using only ``generator`` for its randomness.
    x, x_prime
        The two neighbouring inputs.
    trials
        Runs per input (half calibrate the distinguisher's threshold, half evaluate it).
    score
        Maps a batch of outputs to one score per run; default: the output itself, flattened
        (for scalar mechanisms).
    seed
        Seeds two independent ``torch.Generator`` s, one per input.
    """
    if not callable(mechanism):
        raise TypeError(f"mechanism must be callable, got {type(mechanism).__name__}")
    trials = check_positive_int("trials", trials)
    check_positive_int("seed", seed, allow_zero=True)
    batch_size = check_positive_int("batch_size", batch_size)
    score = score or (lambda out: out.reshape(out.shape[0], -1)[:, 0])
    gens = [torch.Generator().manual_seed(seed * 2 + 1), torch.Generator().manual_seed(seed * 2 + 2)]
    samples = []
    for inp, gen in zip((x, x_prime), gens):
        chunks, done = [], 0
        while done < trials:
            n = min(batch_size, trials - done)
            out = mechanism(inp, n, gen)
            s = torch.as_tensor(score(out)).reshape(-1)
            if s.numel() != n:
                raise ValueError(f"score must return one value per run: got {s.numel()} for {n}")
            chunks.append(s.detach().cpu().double().numpy())
            done += n
        samples.append(np.concatenate(chunks))
    return audit_scores(samples[0], samples[1], alpha=alpha,
                        calibration_fraction=calibration_fraction)


# ----------------------------------------------------------------------------------------------
# reference mechanisms for checking the audit
# ----------------------------------------------------------------------------------------------

def scalar_laplace(epsilon: float, *, sensitivity: float = 1.0) -> Mechanism:
    r"""The scalar Laplace mechanism :math:`x \mapsto x + \mathrm{Lap}(\Delta/\epsilon)` (:math:`\epsilon`-DP for :math:`|x - x'| \le \Delta`)."""
    scale = check_positive_float("sensitivity", sensitivity) / check_epsilon(epsilon)

    def mechanism(value, n, generator):
        return float(value) + laplace_noise((n,), scale=scale, generator=generator,
                                            dtype=torch.float64)

    return mechanism


def randomized_response(epsilon: float) -> Mechanism:
    r"""Randomised response on a bit: keep it w.p. :math:`e^\epsilon/(1+e^\epsilon)` (exactly :math:`\epsilon`-DP)."""
    keep = distinguishing_bound(check_epsilon(epsilon))

    def mechanism(bit, n, generator):
        if bit not in (0, 1):
            raise ValueError(f"randomized_response takes a bit 0 or 1, got {bit!r}")
        flip = torch.rand(n, generator=generator, dtype=torch.float64) >= keep
        return (torch.full((n,), int(bit)) ^ flip.long()).double()

    return mechanism


def vector_laplace_release(scale: float) -> Mechanism:
    r"""Release a vector :math:`\theta \in \mathbb R^d` as :math:`\theta + \mathrm{Lap}(b)^d` (the parameter release of Algorithm 2).

    With :math:`\theta, \theta' \in [-G, G]^d` it is :math:`(2Gd/b)`-DP, and not better for the
    pair :math:`\pm G\mathbf 1`.
    """
    scale = check_positive_float("scale", scale)

    def mechanism(theta, n, generator):
        theta = torch.as_tensor(theta, dtype=torch.float64).reshape(1, -1)
        return theta + laplace_noise((n, theta.shape[1]), scale=scale, generator=generator,
                                     dtype=torch.float64)

    return mechanism


def sum_score(outputs: torch.Tensor) -> torch.Tensor:
    """Score a batch of vectors by the sum of their coordinates (optimal-ish for ``±G·1``)."""
    return outputs.reshape(outputs.shape[0], -1).sum(dim=1)
