r"""Empirical audits of differential privacy (Jagielski, Ullman & Oprea 2020).

Run a mechanism many times on two neighbouring inputs, threshold a distinguisher's score, and
turn the two observed frequencies into a lower bound on :math:`\epsilon` with Clopper–Pearson
(1934) confidence bounds: :func:`clopper_pearson`, :func:`epsilon_lower_bound`,
:func:`audit_scores`, :func:`audit_mechanism`.  If a mechanism is :math:`\epsilon`-DP the bound
exceeds :math:`\epsilon` with probability at most ``alpha``.  :func:`distinguishing_bound` is the
best balanced accuracy an :math:`\epsilon`-DP mechanism allows; :func:`scalar_laplace`,
:func:`randomized_response` and :func:`vector_laplace_release` are reference mechanisms of known
:math:`\epsilon` for checking the audit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import stats

from ..config import check_positive_float, check_positive_int
from .mechanisms import check_epsilon, laplace_noise

__all__ = [
    "clopper_pearson",
    "epsilon_lower_bound",
    "distinguishing_bound",
    "AuditResult",
    "audit_scores",
    "Mechanism",
    "audit_mechanism",
    "scalar_laplace",
    "randomized_response",
    "vector_laplace_release",
    "sum_score",
]


# ----------------------------------------------------------------------------------------------
# audits
# ----------------------------------------------------------------------------------------------

def _check_alpha(alpha) -> float:
    alpha = check_positive_float("alpha", alpha)
    if not alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    return alpha


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
