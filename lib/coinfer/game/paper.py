r"""The paper's claims checked: Theorems 3–5 and Eq. (26) of Wu et al. (2021), book Sects. 4.3–4.4.

Theorem 3's closed form (:func:`closed_form_equilibrium`) solves the interior first-order
conditions and ignores the budget box, so it is the NE only when every entry is inside it
(:func:`closed_form_positive`, :func:`closed_form_reward_interval`,
:func:`closed_form_failure_rates`); Theorem 4's uniqueness condition
(:func:`theorem4_condition`) fails in every market; :func:`paper_sp_utility` is the SP utility
of Eq. (26) that the paper maximises, and :func:`multimodal_markets` finds counter-examples to
Theorem 5's concavity.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from ..config import check_positive_int
from .market import Market, MarketSpec, _check_market, _check_reward
from .stackelberg import _reward_cap, sp_local_maxima

__all__ = [
    "closed_form_equilibrium",
    "ClosedFormEquilibrium",
    "closed_form_positive",
    "theorem4_condition",
    "closed_form_reward_interval",
    "paper_sp_utility",
    "closed_form_failure_rates",
    "multimodal_markets",
]


# --------------------------------------------------------------------------------------------
# The paper's closed form (Theorems 3 and 4) and its validity
# --------------------------------------------------------------------------------------------
class ClosedFormEquilibrium(NamedTuple):
    """Theorem 3 of Wu et al. (2021) evaluated as printed.

    Attributes
    ----------
    eps
        The printed formula's ε (entries may be negative or outside the box).
    in_bounds
        Per vehicle: is the entry inside ``[eps_min, eps_max]``?
    valid
        ``in_bounds.all()``: then (and only then) ``eps`` is the NE.
    """

    eps: np.ndarray
    in_bounds: np.ndarray
    valid: bool


def _closed_form_slopes(market: Market) -> np.ndarray:
    r""":math:`\epsilon_i / R` of Theorem 3: :math:`v_i(|N|-1)/W\,(1 - w_i(|N|-1)/W)`."""
    n1 = market.n_vehicles - 1
    total = float(market.weights.sum())
    return market.speeds * n1 / total * (1.0 - market.weights * n1 / total)


def closed_form_equilibrium(market: Market, reward: float) -> ClosedFormEquilibrium:
    r"""Theorem 3 of Wu et al. (2021), as printed (with the typo :math:`|N-1|` read as
    :math:`|N|-1`):

    .. math::

        \epsilon_i^* = \frac{R v_i(|N|-1)}{\sum_j v_j k_j}
        \Big(1 - \frac{v_i k_i(|N|-1)}{\sum_j v_j k_j}\Big).

    It solves the interior first-order conditions and ignores constraint C1, so it is the NE
    exactly when every entry lies in :math:`[\epsilon_{\min}, \epsilon_{\max}]`
    (``result.valid``); entry :math:`i` is negative whenever
    :math:`v_i k_i(|N|-1) > \sum_j v_j k_j`.
    """
    market = _check_market(market)
    reward = _check_reward(reward)
    eps = reward * _closed_form_slopes(market)
    inside = (eps >= market.eps_min) & (eps <= market.eps_max)
    return ClosedFormEquilibrium(eps, inside, bool(inside.all()))


def closed_form_positive(market: Market) -> bool:
    r"""Are all entries of Theorem 3 positive, i.e. :math:`w_i(|N|-1) < \sum_j w_j` for all i?"""
    market = _check_market(market)
    return bool(np.all(market.weights * (market.n_vehicles - 1) < market.weights.sum()))


def theorem4_condition(market: Market) -> bool:
    r"""Theorem 4's uniqueness condition :math:`\sum_j v_j k_j > 2 v_i k_i(|N|-1)` for all i."""
    market = _check_market(market)
    return bool(np.all(market.weights.sum() > 2 * market.weights * (market.n_vehicles - 1)))


def closed_form_reward_interval(market: Market) -> tuple[float, float] | None:
    r"""The rewards for which Theorem 3's formula is inside the box (hence the NE).

    The printed :math:`\epsilon_i` is linear in :math:`R`, so the set is the interval
    :math:`[\epsilon_{\min}/\min_i h_i,\ \epsilon_{\max}/\max_i h_i]` with
    :math:`h_i = \epsilon_i/R`, or ``None`` when it is empty (in particular when some
    :math:`h_i \le 0`).
    """
    market = _check_market(market)
    h = _closed_form_slopes(market)
    if h.min() <= 0:
        return None
    low, high = market.eps_min / h.min(), market.eps_max / h.max()
    return (float(low), float(high)) if low <= high else None


def paper_sp_utility(market: Market, reward) -> np.ndarray:
    r"""Eq. (26): the SP utility the paper maximises, :math:`\lambda a\sum_i v_i^{-1}
    \log(h_i R + 1) - R` with Theorem 3's :math:`h_i` (``nan`` where the log is undefined).

    It equals the true :math:`U_S` only where :func:`closed_form_equilibrium` is valid.
    """
    market = _check_market(market)
    rewards = np.atleast_1d(np.asarray(reward, dtype=float))
    h = market.accuracy_b * _closed_form_slopes(market)
    arg = np.outer(rewards, h) + 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.where(arg > 0, np.log(np.where(arg > 0, arg, 1.0)), np.nan)
    out = market.profit * market.accuracy_a * logs @ market._inv_speed - rewards
    return out if np.ndim(reward) else out[0]


def closed_form_failure_rates(spec: MarketSpec, sizes: Sequence[int], *, n_markets: int = 1000,
                              seed: int = 0) -> dict[str, np.ndarray]:
    """Share of random markets (``spec`` with ``n_vehicles`` = each size) in which Theorem 3's
    formula has a negative entry (``"negative"``) and in which Theorem 4's condition fails
    (``"theorem4_fails"``).  Market ``j`` is drawn with ``default_rng([seed, n, j])``."""
    n_markets = check_positive_int("n_markets", n_markets)
    negative, t4 = [], []
    for n in sizes:
        sub = spec.replace(n_vehicles=check_positive_int("size", n))
        draws = [sub.draw(np.random.default_rng([seed, n, j])) for j in range(n_markets)]
        negative.append(np.mean([not closed_form_positive(m) for m in draws]))
        t4.append(np.mean([not theorem4_condition(m) for m in draws]))
    return {"sizes": np.asarray(sizes), "negative": np.array(negative),
            "theorem4_fails": np.array(t4)}


# --------------------------------------------------------------------------------------------
# Theorem 5 (concavity of U_S) fails once a bound binds
# --------------------------------------------------------------------------------------------
def multimodal_markets(spec: MarketSpec, *, n_candidates: int = 1000, seed: int = 0,
                       min_maxima: int = 2) -> list[int]:
    r"""Counter-examples to Theorem 5's concavity: the indices :math:`j` of the random markets
    ``spec.draw(default_rng([seed, j]))``, :math:`j < n_candidates`, whose :math:`U_S` has at
    least ``min_maxima`` local maxima at rewards in :math:`(0, \overline R]` (besides the one
    at :math:`R = 0` that every market has)."""
    if not isinstance(spec, MarketSpec):
        raise TypeError(f"spec must be a MarketSpec, got {type(spec).__name__}")
    n_candidates = check_positive_int("n_candidates", n_candidates)
    seed = check_positive_int("seed", seed, allow_zero=True)
    min_maxima = check_positive_int("min_maxima", min_maxima)
    found = []
    for j in range(n_candidates):
        market = spec.draw(np.random.default_rng([seed, j]))
        cap = _reward_cap(market)
        peaks = [m for m in sp_local_maxima(market) if 0 < m.reward <= cap]
        if len(peaks) >= min_maxima:
            found.append(j)
    return found
