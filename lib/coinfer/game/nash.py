r"""The vehicles' subgame (book Sect. 4.3): best responses and the exact Nash equilibrium.

With :math:`x_i = \epsilon_i / v_i`, :math:`w_i = v_i k_i` and :math:`S = \sum_j x_j` the
subgame is aggregative: a profile is the NE iff every :math:`x_i` equals the consistent response
:math:`r_i(S) = \operatorname{clip}(S - w_i S^2/R, \ell_i, u_i)` and
:math:`S = \sum_i r_i(S)`.  :func:`equilibrium_aggregate` finds :math:`S^*` with one bracketed
scalar root-find, :func:`nash_equilibrium` the budgets :math:`\epsilon_i^* = v_i r_i(S^*)`;
:func:`consistent_responses` evaluates :math:`v_i r_i(S)` and :func:`best_response` is Eq. (15)
with the bounds.  The private helpers (``_aggregate``, ``_profile``, ``_status``) are shared with
the leader's solvers.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from ..config import check_positive_float
from .market import _RTOL, Market, _check_eps, _check_market, _check_reward

__all__ = [
    "best_response",
    "nash_equilibrium",
    "equilibrium_aggregate",
    "consistent_responses",
]


# --------------------------------------------------------------------------------------------
# Best responses (Eq. (15))
# --------------------------------------------------------------------------------------------
def best_response(market: Market, eps, reward: float,
                  i: int | None = None) -> float | np.ndarray:
    r"""Eq. (15) of Wu et al. (2021) with the bounds: the best reply to the others' budgets.

    With :math:`A_i = \sum_{j\ne i}\epsilon_j/v_j` (the paper's :math:`a_i`),

    .. math::

        \epsilon_i^* = \operatorname{clip}\Big(v_i\big(\sqrt{R A_i/(v_i k_i)} - A_i\big),
        \ \epsilon_{\min},\ \epsilon_{\max}\Big),

    the unique maximiser of the strictly concave :math:`U_i(\cdot,\epsilon_{-i})` on the box.

    Parameters
    ----------
    i
        One vehicle's index (returns a float) or ``None`` for every vehicle's reply to the
        current profile (returns an array: one simultaneous, Jacobi, step).
    """
    market = _check_market(market)
    eps = _check_eps(market, eps)
    reward = _check_reward(reward)
    x = eps / market.speeds
    if i is None:
        others = x.sum() - x
        return _reply(others, market.weights, market.speeds, reward, market)
    if isinstance(i, bool) or not isinstance(i, (int, np.integer)):
        raise TypeError(f"i must be an int or None, got {type(i).__name__} {i!r}")
    if not -market.n_vehicles <= i < market.n_vehicles:
        raise ValueError(f"i must be a vehicle index in [0, {market.n_vehicles}), got {i}")
    others = np.array([x.sum() - x[i]])
    return float(_reply(others, market.weights[[i]], market.speeds[[i]], reward, market)[0])


def _reply(others: np.ndarray, w: np.ndarray, v: np.ndarray, reward: float,
           market: Market) -> np.ndarray:
    """Best reply in ε given the others' aggregate (vectorised)."""
    if reward == 0.0:
        return np.full(others.shape, market.eps_min)
    x = np.sqrt(reward * others / w) - others
    return np.clip(v * x, market.eps_min, market.eps_max)


# --------------------------------------------------------------------------------------------
# The Nash equilibrium of the vehicles' subgame
# --------------------------------------------------------------------------------------------
def equilibrium_aggregate(market: Market, reward: float) -> float:
    r"""The equilibrium aggregate :math:`S^* = \sum_i \epsilon_i^*/v_i` for reward ``reward``.

    :math:`S^*` is the unique root of :math:`F(S) = \sum_i r_i(S) - S` with
    :math:`r_i(S) = \operatorname{clip}(S - w_i S^2/R, \ell_i, u_i)`.  :math:`F` has the sign of
    :math:`\sum_i r_i(S)/S - 1`, which is strictly decreasing, so :math:`F > 0` left of the root
    and :math:`F < 0` right of it.  The bracket is
    :math:`[\sum\ell_i,\ \min(\sum u_i, \max(\sum\ell_i, R/\min_i w_i))]` (for
    :math:`S \ge R/\min w` every :math:`r_i` is at :math:`\ell_i`), and Brent's method runs to
    four ulps.  Each evaluation is one vectorised pass, so :math:`N = 10^6` takes a few
    hundredths of a second.
    """
    market = _check_market(market)
    reward = _check_reward(reward)
    return _aggregate(market, reward)


def _aggregate(market: Market, reward: float) -> float:
    low, high, w_min, _ = market._sums
    if reward == 0.0:
        return low
    w, lo, hi = market.weights, market.x_min, market.x_max
    buf = np.empty_like(w)

    def excess(s: float) -> float:
        # a subnormal reward overflows s²/R to inf: the response is then ℓ_i, as it should be
        with np.errstate(over="ignore"):
            np.multiply(w, -s * s / reward, out=buf)
        np.add(buf, s, out=buf)
        np.maximum(buf, lo, out=buf)
        np.minimum(buf, hi, out=buf)
        return float(buf.sum()) - s

    upper = min(high, max(low, reward / w_min))
    f_low = excess(low)
    if f_low <= 0.0:  # everybody at eps_min is already consistent
        return low
    f_up = excess(upper)
    if f_up >= 0.0:
        return upper
    return float(brentq(excess, low, upper, xtol=1e-300, rtol=_RTOL))


def _profile(market: Market, s: float, reward: float) -> np.ndarray:
    """x_i = r_i(S) (before clipping to the box is applied by the caller)."""
    if reward == 0.0:
        return np.array(market.x_min)
    with np.errstate(over="ignore", invalid="ignore"):
        out = market.weights * (-s * s / reward) + s
    return out


def nash_equilibrium(market: Market, reward: float) -> np.ndarray:
    r"""The unique NE of the vehicles' subgame (Problem 1) for reward :math:`R \ge 0`.

    Exact and vectorised: one scalar root-find for the aggregate
    (:func:`equilibrium_aggregate`), then :math:`\epsilon_i = v_i r_i(S^*)`.  It replaces
    Theorems 3–4 of Wu et al. (2021), whose closed form ignores the bounds
    (see :func:`closed_form_equilibrium`).  For :math:`R = 0` every vehicle plays
    :math:`\epsilon_{\min}`.

    Returns
    -------
    numpy.ndarray
        :math:`\epsilon^*`, shape ``(n_vehicles,)``.
    """
    market = _check_market(market)
    reward = _check_reward(reward)
    s = _aggregate(market, reward)
    eps = _profile(market, s, reward)
    with np.errstate(over="ignore"):
        eps *= market.speeds
    return np.clip(eps, market.eps_min, market.eps_max, out=eps)


def _status(market: Market, reward: float, s: float | None = None) -> np.ndarray:
    """0 = at eps_min, 1 = inside, 2 = at eps_max, at the NE for ``reward``."""
    if reward == 0.0:
        return np.zeros(market.n_vehicles, dtype=np.int8)
    if s is None:
        s = _aggregate(market, reward)
    return _status_of(market, _profile(market, s, reward) * market.speeds)


def _status_of(market: Market, eps: np.ndarray) -> np.ndarray:
    """Status of unclipped budgets ``eps`` (bounds in ε-space, as the vehicles report them)."""
    status = np.ones(market.n_vehicles, dtype=np.int8)
    status[eps <= market.eps_min] = 0
    status[eps >= market.eps_max] = 2
    return status


def consistent_responses(market: Market, reward: float, aggregate) -> np.ndarray:
    r"""The consistent responses :math:`\epsilon_i = v_i r_i(S)` to aggregate(s) ``S``, with
    :math:`r_i(S) = \operatorname{clip}(S - w_i S^2/R, \ell_i, u_i)`; shape
    ``(len(S), n_vehicles)`` for an array of aggregates.  The NE is the aggregate :math:`S`
    with :math:`\sum_i r_i(S) = S`."""
    market = _check_market(market)
    reward = check_positive_float("reward", reward)
    s = np.atleast_1d(np.asarray(aggregate, dtype=float))[:, None]
    x = np.clip(s - market.weights * s * s / reward, market.x_min, market.x_max)
    out = x * market.speeds
    return out if np.ndim(aggregate) else out[0]
