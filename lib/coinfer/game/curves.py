r"""The leader's problem with a general accuracy curve (book Sect. 4.6).

The paper fixes the accuracy curve :math:`A(\epsilon) = a\log(b\epsilon + 1)` (its Eq. (6)),
but the game needs much less.  The vehicles' utilities (Eq. (7)) do not contain :math:`A`, so
their NE :math:`\epsilon^*(R)` — and the breakpoints of the NE path
(:func:`~coinfer.game.reward_breakpoints`) — are the same for every curve.  Only the SP's
utility changes,

.. math::

    U_S(R) = \lambda\sum_{i\in N}\frac{1}{v_i}A\big(\epsilon_i^*(R)\big) - R ,

for any non-decreasing :math:`A` (e.g. the fit capped at the clean accuracy, or a logistic in
:math:`\log\epsilon`).  :func:`stackelberg_equilibrium_for_curve` maximises it over
:math:`R \ge 0`: on each piece of the NE path the budgets have the closed form of
:func:`~coinfer.game.path._piece_aggregate`, and the piece objective is maximised by a grid and
bounded Brent refinements (several starts, because with a general :math:`A` the objective need
not be concave on a piece).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
from scipy.optimize import minimize_scalar

from ..config import check_positive_float, check_positive_int
from .market import Market, _check_accuracy, _check_market, _curve_values, vehicle_utilities
from .nash import nash_equilibrium
from .path import _Sweeper
from .stackelberg import StackelbergResult

__all__ = [
    "stackelberg_equilibrium_for_curve",
    "curve_reward_cap",
]

AccuracyCurve = Callable[[np.ndarray], np.ndarray]


def curve_reward_cap(market: Market, *, accuracy: AccuracyCurve) -> float:
    r""":math:`\overline R_A = \lambda\sum_i v_i^{-1}\big(A(\epsilon_{\max}) -
    A(\epsilon_{\min})\big)`: no reward above it beats :math:`R = 0` for the curve :math:`A`.

    For :math:`R > \overline R_A`, :math:`U_S(R) \le \lambda\sum_i v_i^{-1}A(\epsilon_{\max}) - R
    < \lambda\sum_i v_i^{-1}A(\epsilon_{\min}) = U_S(0)` because :math:`A` is non-decreasing
    (the argument of the corrected Theorem 5, book Sect. 4.4, with a general curve).
    """
    market = _check_market(market)
    accuracy = _check_accuracy(market, accuracy)
    ends = _curve_values(accuracy, np.array([market.eps_min, market.eps_max]))
    return market.profit * market._sums[3] * float(ends[1] - ends[0])


def _pieces(market: Market) -> Iterator[tuple[float, float, np.ndarray, int, float, float]]:
    """(R_lo, R_hi, status, n_in, W, C) for every piece of the NE path, in order from R = 0
    (status: 0 at eps_min, 1 inside, 2 at eps_max; ``R_hi = inf`` for the last piece)."""
    n = market.n_vehicles
    sw = _Sweeper(market, np.zeros(n, dtype=np.int8), 0.0, np.arange(n))
    lo_r = 0.0
    while True:
        r_next, j = sw.next_event()
        state = (sw.status.copy(), sw.n_in, sw.w_in, sw.c)
        if j < 0:
            yield (lo_r, math.inf, *state)
            return
        sw.advance(r_next, j)
        yield (lo_r, r_next, *state)
        lo_r = r_next


def _piece_budgets(market: Market, status: np.ndarray, n_in: int, w_in: float, c: float,
                   rewards: np.ndarray) -> np.ndarray:
    r"""The NE budgets at ``rewards`` (1-D, > 0) on a piece with the given active set, shape
    ``(len(rewards), n)``: the vehicles at a bound keep it, the interior ones play
    :math:`v_i(S - w_i S^2/R)` with :math:`S(R)` the positive root of
    :math:`W S^2/R - (n-1)S - C = 0` (book Proposition "The NE path", part (c))."""
    eps = np.where(status == 2, market.eps_max, market.eps_min)
    out = np.broadcast_to(eps, (rewards.size, market.n_vehicles)).copy()
    if n_in == 0:
        return out
    m = n_in - 1
    s = rewards * (m + np.sqrt(m * m + 4.0 * w_in * c / rewards)) / (2.0 * w_in)
    inside = status == 1
    x = s[:, None] - market.weights[inside] * (s * s / rewards)[:, None]
    # interior budgets lie in the box up to rounding at the piece's ends
    out[:, inside] = np.clip(x * market.speeds[inside], market.eps_min, market.eps_max)
    return out


def stackelberg_equilibrium_for_curve(market: Market, *, accuracy: AccuracyCurve,
                                      grid: int = 64, refine: int = 4,
                                      xtol: float = 1e-10) -> StackelbergResult:
    r"""The SE of Definition 2 for a general, non-decreasing accuracy curve :math:`A`.

    Maximises :math:`U_S(R) = \lambda\sum_i v_i^{-1}A(\epsilon_i^*(R)) - R` over
    :math:`R \ge 0` (the paper's Eq. (9) with Eq. (6) replaced by ``accuracy``).  The vehicles'
    NE does not depend on :math:`A`, so the NE path and its pieces (book Proposition "The NE
    path") are those of the paper's game; only the objective on each piece changes.

    Algorithm:

    1. :math:`R = 0` is the incumbent; only rewards in :math:`[0, \overline R_A]`
       (:func:`curve_reward_cap`) can beat it.
    2. Follow the NE path from :math:`R = 0` through its breakpoints (the exact event sweep of
       :func:`~coinfer.game.reward_breakpoints`); on each piece :math:`[R_1, R_2]` below
       :math:`\overline R_A` the budgets have a closed form.
    3. On each piece evaluate :math:`U_S` at ``grid`` equally spaced rewards (end points
       included); around each of the ``refine`` best grid points that are local maxima of the
       grid (end points included), run a bounded Brent search
       (``scipy.optimize.minimize_scalar``, method ``"bounded"``) on the neighbouring grid
       cells, to ``xtol`` :math:`\times` the cells' right end.  Keep the best value found
       (grid points included, so the refinement can only improve on the grid).

    **Accuracy of the result.**  The returned :math:`R^*` is a local maximiser located to a
    relative tolerance of about ``xtol`` :math:`+ 1.5\cdot 10^{-8}` (scipy's bounded method adds
    :math:`\sqrt{\text{machine }\epsilon}\,|R|` to ``xtol``); at a smooth maximum the error
    in :math:`U_S` is second order in that, at a kink of :math:`A` (a capped curve) first
    order.  The reported :math:`U_S(R^*)` is evaluated exactly at that :math:`R^*` and is at
    least the best of the ``grid`` :math:`\times` (pieces) exact grid evaluations.  It is the
    global maximum whenever, on every piece, the maximiser lies in the cells next to one of the
    ``refine`` refined grid maxima and :math:`U_S` is unimodal there — always for a concave
    :math:`A` (then :math:`U_S` is concave on every piece, the grid maximum's neighbouring cells
    contain the maximiser and one start suffices, whatever ``grid``), and for any smooth
    :math:`A` once ``grid`` is fine enough.  A non-concave :math:`A` (a logistic) can make a
    piece objective multimodal, which is why several starts are refined; there the result is
    not certified, and the tests check it against a dense grid.  With
    :math:`A = a\log(b\epsilon+1)` it agrees with the exact
    :func:`~coinfer.game.stackelberg_equilibrium` (tested).

    Parameters
    ----------
    market
        The game; its ``accuracy_a`` and ``accuracy_b`` are not used.
    accuracy
        :math:`A`: a vectorised callable mapping an array of budgets in
        :math:`[\epsilon_{\min}, \epsilon_{\max}]` (any shape) to accuracies of the same shape;
        finite and non-decreasing on the box (checked on a grid, else ``ValueError``).  Its unit
        (fraction or percent) is the one :math:`\lambda` multiplies.
    grid
        Rewards evaluated per piece (at least 3).
    refine
        Grid maxima refined per piece.
    xtol
        Relative tolerance of the reward in the Brent refinements (see above).

    Returns
    -------
    StackelbergResult
        :math:`R^*`, the NE budgets there, :math:`U_S(R^*)` computed with ``accuracy``, the
        vehicles' utilities (Eq. (7), independent of :math:`A`) and the number of pieces
        examined.
    """
    market = _check_market(market)
    accuracy = _check_accuracy(market, accuracy)
    grid = check_positive_int("grid", grid)
    if grid < 3:
        raise ValueError(f"grid must be >= 3, got {grid}")
    refine = check_positive_int("refine", refine)
    xtol = check_positive_float("xtol", xtol)
    if xtol >= 1:
        raise ValueError(f"xtol must be < 1, got {xtol}")
    lam, inv_v = market.profit, market._inv_speed
    cap = curve_reward_cap(market, accuracy=accuracy)
    base = float(_curve_values(accuracy, np.full(market.n_vehicles, market.eps_min)) @ inv_v)
    best_r, best_u = 0.0, lam * base
    pieces = 0

    for lo_r, hi_r, status, n_in, w_in, c in _pieces(market):
        if lo_r >= cap:
            break
        pieces += 1
        if n_in == 0:  # nobody moves: U_S falls with slope -1, its best is the left end
            continue
        hi_r = min(hi_r, cap)

        def value(rewards, status=status, n_in=n_in, w_in=w_in, c=c):
            r = np.atleast_1d(np.asarray(rewards, dtype=float))
            eps = _piece_budgets(market, status, n_in, w_in, c, r)
            return lam * (_curve_values(accuracy, eps) @ inv_v) - r

        rewards = np.linspace(lo_r, hi_r, grid)
        values = value(rewards)
        k = int(np.argmax(values))
        if values[k] > best_u:
            best_r, best_u = float(rewards[k]), float(values[k])
        # local maxima of the grid, end points included (a maximum can lie in the first or
        # the last cell of the piece)
        peaks = [j for j in range(grid)
                 if (j == 0 or values[j] >= values[j - 1])
                 and (j == grid - 1 or values[j] >= values[j + 1])]
        for j in sorted(peaks, key=lambda j: -values[j])[:refine]:
            lo_k, hi_k = max(j - 1, 0), min(j + 1, grid - 1)
            res = minimize_scalar(lambda r: -float(value(r)[0]),
                                  bounds=(float(rewards[lo_k]), float(rewards[hi_k])),
                                  method="bounded",
                                  options={"xatol": xtol * float(rewards[hi_k])})
            if -res.fun > best_u:
                best_r, best_u = float(res.x), float(-res.fun)

    eps = nash_equilibrium(market, best_r)
    u_s = lam * float(_curve_values(accuracy, eps) @ inv_v) - best_r
    return StackelbergResult(best_r, eps, u_s, vehicle_utilities(market, eps, best_r), pieces)
