r"""Composition and group privacy (Sect. 3b.3 of the book).

* :func:`basic_composition` — running mechanisms that are :math:`(\epsilon_i, \delta_i)`-DP on
  the same data is :math:`(\sum\epsilon_i, \sum\delta_i)`-DP (Dwork & Roth 2014, Thm 3.16);
* :func:`advanced_composition` — :math:`k` adaptive uses of an :math:`(\epsilon, \delta)`-DP
  mechanism are :math:`(\epsilon\sqrt{2k\ln(1/\delta')} + k\epsilon(e^\epsilon - 1),
  k\delta + \delta')`-DP (Dwork, Rothblum & Vadhan 2010, Thm III.3; Dwork & Roth 2014, Thm 3.20);
* :func:`optimal_composition_delta` / :func:`optimal_composition_epsilon` — the exact privacy
  profile of :math:`k` uses of :math:`\epsilon`-randomised response, which Kairouz, Oh &
  Viswanath (2015, Thm 3.3) prove is the worst case over all :math:`\epsilon`-DP mechanisms: the
  yardstick against which the book checks the advanced-composition bound;
* :func:`group_privacy` — an :math:`(\epsilon, \delta)`-DP mechanism protects groups of
  :math:`k` records with :math:`(k\epsilon, \delta\sum_{i<k} e^{i\epsilon})`.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import optimize, special, stats

from ..config import check_positive_float, check_positive_int
from .gaussian import check_delta
from .mechanisms import check_epsilon

__all__ = [
    "basic_composition",
    "advanced_composition",
    "optimal_composition_delta",
    "optimal_composition_epsilon",
    "group_privacy",
]


def _check_delta0(delta, name="delta") -> float:
    delta = check_positive_float(name, delta, allow_zero=True)
    if not delta < 1:
        raise ValueError(f"{name} must be in [0, 1), got {delta}")
    return delta


def basic_composition(epsilons: Sequence[float], deltas: Sequence[float] | None = None
                      ) -> tuple[float, float]:
    r"""Basic composition: :math:`(\sum_i \epsilon_i, \sum_i \delta_i)` (Dwork & Roth 2014, Thm 3.16).

    ``deltas=None`` means all :math:`\delta_i = 0` (pure DP).  The returned :math:`\delta` is not
    capped at 1 (a value :math:`\ge 1` is a vacuous guarantee, reported as such).
    """
    eps = [check_epsilon(e, name=f"epsilons[{i}]") for i, e in enumerate(epsilons)]
    if not eps:
        raise ValueError("epsilons must hold at least one budget")
    if deltas is None:
        dels = [0.0] * len(eps)
    else:
        dels = [_check_delta0(d, f"deltas[{i}]") for i, d in enumerate(deltas)]
        if len(dels) != len(eps):
            raise ValueError(f"deltas must have one entry per epsilon ({len(eps)}), got "
                             f"{len(dels)}")
    return float(math.fsum(eps)), float(math.fsum(dels))


def advanced_composition(epsilon: float, *, k: int, delta_prime: float, delta: float = 0.0
                         ) -> tuple[float, float]:
    r"""Advanced composition (Dwork, Rothblum & Vadhan 2010, Theorem III.3).

    For every :math:`\delta' > 0`, the :math:`k`-fold adaptive composition of
    :math:`(\epsilon, \delta)`-DP mechanisms is :math:`(\epsilon', k\delta + \delta')`-DP with

    .. math:: \epsilon' = \epsilon\sqrt{2k\ln(1/\delta')} + k\epsilon(e^\epsilon - 1).

    (Dwork & Roth 2014, Theorem 3.20.)  Returns :math:`(\epsilon', k\delta + \delta')`.
    """
    epsilon = check_epsilon(epsilon)
    k = check_positive_int("k", k)
    delta_prime = check_delta(delta_prime, name="delta_prime")
    delta = _check_delta0(delta)
    eps_total = epsilon * math.sqrt(2 * k * math.log(1 / delta_prime)) + k * epsilon * math.expm1(
        epsilon)
    return float(eps_total), float(k * delta + delta_prime)


def optimal_composition_delta(epsilon: float, *, k: int, epsilon_total: float) -> float:
    r"""Exact :math:`\delta(\epsilon')` of :math:`k` independent uses of :math:`\epsilon`-randomised response.

    Each use has privacy loss :math:`+\epsilon` with probability :math:`p = e^\epsilon/(1+e^\epsilon)`
    and :math:`-\epsilon` otherwise, so the total loss is :math:`L = \epsilon(k - 2I)` with
    :math:`I \sim \mathrm{Bin}(k, 1-p)`, and the profile is

    .. math:: \delta(\epsilon') = \mathbb E\big[(1 - e^{\epsilon' - L})_+\big]
              = \sum_{i:\ \epsilon(k-2i) > \epsilon'} \binom{k}{i} p^{k-i}(1-p)^i
                \big(1 - e^{\epsilon' - \epsilon(k-2i)}\big).

    Kairouz, Oh & Viswanath (2015, Theorem 3.3): no :math:`k`-fold composition of
    :math:`\epsilon`-DP mechanisms has a larger :math:`\delta(\epsilon')` — this is the exact
    composition theorem for pure DP.
    """
    epsilon = check_epsilon(epsilon)
    k = check_positive_int("k", k)
    epsilon_total = check_positive_float("epsilon_total", epsilon_total, allow_zero=True)
    i = np.arange(k + 1)
    loss = epsilon * (k - 2 * i)
    keep = loss > epsilon_total
    if not keep.any():
        return 0.0
    log_p_bad = -np.logaddexp(0.0, epsilon)                    # log(1 - p)
    log_pmf = stats.binom.logpmf(i[keep], k, math.exp(log_p_bad))
    log_terms = log_pmf + np.log(-np.expm1(epsilon_total - loss[keep]))
    return float(math.exp(special.logsumexp(log_terms)))


def optimal_composition_epsilon(epsilon: float, *, k: int, delta_prime: float) -> float:
    r"""The smallest :math:`\epsilon'` with :func:`optimal_composition_delta` :math:`\le \delta'` (``brentq``)."""
    epsilon = check_epsilon(epsilon)
    k = check_positive_int("k", k)
    delta_prime = check_delta(delta_prime, name="delta_prime")
    f = lambda e: optimal_composition_delta(epsilon, k=k, epsilon_total=e) - delta_prime  # noqa
    if f(0.0) <= 0:
        return 0.0
    return float(optimize.brentq(f, 0.0, k * epsilon, xtol=1e-12, rtol=1e-12))


def group_privacy(epsilon: float, *, group_size: int, delta: float = 0.0) -> tuple[float, float]:
    r"""Group privacy: an :math:`(\epsilon,\delta)`-DP mechanism on data sets differing in :math:`k` records.

    Returns :math:`(k\epsilon,\ \delta\sum_{i=0}^{k-1} e^{i\epsilon})`; for :math:`\delta = 0` this
    is Dwork & Roth (2014), Theorem 2.2, and :math:`\delta\sum_{i<k} e^{i\epsilon} \le
    k e^{(k-1)\epsilon}\delta` is the usual approximate-DP form.  (Proof: chain the guarantee
    along :math:`D_0 \sim D_1 \sim \dots \sim D_k`.)
    """
    epsilon = check_epsilon(epsilon)
    k = check_positive_int("group_size", group_size)
    delta = _check_delta0(delta)
    factor = k if epsilon == 0 else math.expm1(k * epsilon) / math.expm1(epsilon)
    return float(k * epsilon), float(delta * factor)
