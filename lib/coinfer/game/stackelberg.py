r"""The leader's problem (book Sect. 4.4): the SP's reward and the Stackelberg equilibrium.

:math:`U_S(R) = \lambda\bar A(\epsilon^*(R)) - R` is in general not concave once a bound binds
(a vehicle leaving :math:`\epsilon_{\min}` gives it a convex kink) and may have several local
maxima; :math:`R = 0` is always one.  :func:`stackelberg_equilibrium` finds the *global*
maximiser (centralised approach) by a branch and bound over reward intervals that uses the
monotonicity of the accuracy term as bound and the exact event sweeps of :mod:`.path` for the
breakpoints.  :func:`sp_utility_curve` evaluates :math:`U_S` for plots, :func:`sp_local_maxima`
lists every local maximum, and :func:`zero_reward_condition` / :func:`zero_reward_threshold`
say when the SP pays nothing.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy.optimize import brentq

from ..config import check_positive_int
from .market import (_RTOL, Market, _accuracy, _check_accuracy, _check_market, _check_range,
                     _check_reward, _curve_values, sp_utility, vehicle_utilities)
from .nash import _aggregate, _profile, _status_of, nash_equilibrium
from .path import _full_sweep, _Sweeper

__all__ = [
    "stackelberg_equilibrium",
    "StackelbergResult",
    "sp_utility_curve",
    "sp_local_maxima",
    "LocalMaximum",
    "zero_reward_condition",
    "zero_reward_threshold",
]


# --------------------------------------------------------------------------------------------
# The Stackelberg equilibrium (centralised)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StackelbergResult:
    """The SE found by :func:`stackelberg_equilibrium` (or a mechanism's outcome).

    Attributes
    ----------
    reward
        :math:`R^*`.
    eps
        The vehicles' NE at :math:`R^*`.
    sp_utility
        :math:`U_S(R^*)`.
    vehicle_utilities
        :math:`U_i` at the SE.
    pieces
        How many pieces of the NE path were examined (a measure of the work).
    """

    reward: float
    eps: np.ndarray
    sp_utility: float
    vehicle_utilities: np.ndarray
    pieces: int = 0

    @property
    def mean_vehicle_utility(self) -> float:
        return float(np.mean(self.vehicle_utilities))


def sp_utility_curve(market: Market, rewards, *, accuracy=None) -> np.ndarray:
    """:math:`U_S(R)` at the vehicles' NE for every reward in ``rewards`` (for plots).

    ``accuracy`` replaces the paper's curve by a general one, as in
    :func:`~coinfer.game.sp_utility` (the NE itself does not depend on the curve)."""
    market = _check_market(market)
    rewards = np.asarray(rewards, dtype=float)
    if accuracy is not None:
        accuracy = _check_accuracy(market, accuracy)
    out = np.empty(rewards.shape)
    for k, r in np.ndenumerate(rewards):
        r = _check_reward(float(r))
        eps = nash_equilibrium(market, r)
        acc = (_accuracy(market, eps) if accuracy is None
               else float(_curve_values(accuracy, eps) @ market._inv_speed))
        out[k] = market.profit * acc - r
    return out


def _reward_cap(market: Market) -> float:
    r"""No reward above :math:`\lambda(\bar A_{\max} - \bar A_{\min})` beats :math:`R = 0`."""
    a_lo, a_hi = market.accuracy_bounds
    return market.profit * (a_hi - a_lo)


def stackelberg_equilibrium(market: Market, *, grid: int = 48,
                            sweep_size: int = 256) -> StackelbergResult:
    r"""The SE of Definition 2 with the leader's **global** optimum (centralised approach).

    Maximises :math:`U_S(R) = \lambda\bar A(\epsilon^*(R)) - R` over :math:`R \ge 0`, where
    :math:`\epsilon^*(R)` is the exact NE.  Along the NE every :math:`\epsilon_i(R)` is
    non-decreasing, so (i) :math:`\bar A(R)` is non-decreasing, which bounds :math:`U_S` on a
    reward interval :math:`[R_1, R_2]` by :math:`\lambda\bar A(R_2) - R_1`; (ii) the active sets
    at :math:`R_1` and :math:`R_2` tell which vehicles change status in between, and an exact event
    sweep (:class:`_Sweeper`) splits the interval into pieces with a fixed active set, on which
    :math:`U_S` is concave and is maximised through its exact slope.  Branch and bound over
    intervals (best upper bound first; intervals with more than ``sweep_size`` status changes
    are bisected) returns the global maximiser, :math:`R = 0` included; no reward above
    :math:`\lambda(\bar A_{\max} - \bar A_{\min})` can beat :math:`R = 0`.

    Parameters
    ----------
    grid
        Number of initial (geometrically spaced) rewards for large markets.
    sweep_size
        Largest number of status changes swept directly in one interval.
    """
    market = _check_market(market)
    grid = check_positive_int("grid", grid)
    sweep_size = check_positive_int("sweep_size", sweep_size)
    lam = market.profit
    cap = _reward_cap(market)
    a_min = market.accuracy_bounds[0]
    best_r, best_u = 0.0, lam * a_min
    pieces = 0
    n = market.n_vehicles

    # R in [0, r_first]: nobody leaves eps_min, U_S = U_S(0) - R.
    low_sum = market._sums[0]
    r_first = float(np.min(low_sum * low_sum * market.weights / (low_sum - market.x_min)))

    # evaluated points: reward -> (status, accuracy)
    def evaluate(r: float) -> tuple[np.ndarray, float]:
        s = _aggregate(market, r)
        t = _profile(market, s, r)
        t *= market.speeds
        status = _status_of(market, t)
        np.clip(t, market.eps_min, market.eps_max, out=t)
        return status, _accuracy(market, t)

    if r_first >= cap:
        points = [(r_first, np.zeros(n, dtype=np.int8), a_min)]
    elif n <= sweep_size:
        st, acc = evaluate(cap)
        points = [(r_first, np.zeros(n, dtype=np.int8), a_min), (cap, st, acc)]
    else:
        rewards = np.geomspace(r_first, cap, max(grid, 2))
        points = [(r_first, np.zeros(n, dtype=np.int8), a_min)]
        for r in rewards[1:]:
            st, acc = evaluate(float(r))
            points.append((float(r), st, acc))
    for r, _, acc in points:
        if lam * acc - r > best_u:
            best_r, best_u = r, lam * acc - r

    heap: list[tuple[float, int, tuple]] = []
    counter = 0
    for (r1, st1, acc1), (r2, st2, acc2) in zip(points[:-1], points[1:]):
        heapq.heappush(heap, (-(lam * acc2 - r1), counter, (r1, st1, r2, st2, acc2)))
        counter += 1

    while heap:
        neg_ub, _, (r1, st1, r2, st2, acc2) = heapq.heappop(heap)
        if -neg_ub <= best_u:
            break
        changed = np.flatnonzero(st1 != st2)
        if changed.size > sweep_size and r2 - r1 > _RTOL * r2:
            mid = 0.5 * (r1 + r2)
            st_m, acc_m = evaluate(mid)
            if lam * acc_m - mid > best_u:
                best_r, best_u = mid, lam * acc_m - mid
            for item in ((r1, st1, mid, st_m, acc_m), (mid, st_m, r2, st2, acc2)):
                heapq.heappush(heap, (-(lam * item[4] - item[0]), counter, item))
                counter += 1
            continue
        # sweep the pieces of [r1, r2] exactly
        ub_acc = lam * acc2
        sweeper = _Sweeper(market, st1, r1, changed)
        lo_r = r1
        while lo_r < r2 and ub_acc - lo_r > best_u:
            r_next, j = sweeper.next_event()
            hi_r = min(r_next, r2)
            if hi_r > lo_r or j < 0:
                piece = sweeper.piece()
                pieces += 1
                r_opt, u_opt = piece.maximise(lo_r, hi_r)
                if u_opt > best_u:
                    best_r, best_u = r_opt, u_opt
            if j < 0 or r_next >= r2:
                break
            sweeper.advance(r_next, j)
            lo_r = r_next

    eps = nash_equilibrium(market, best_r)
    return StackelbergResult(best_r, eps, sp_utility(market, eps, best_r),
                             vehicle_utilities(market, eps, best_r), pieces)


# --------------------------------------------------------------------------------------------
# The local maxima of U_S
# --------------------------------------------------------------------------------------------
class LocalMaximum(NamedTuple):
    """A local maximiser of :math:`U_S(R)` on :math:`R \\ge 0`."""

    reward: float
    sp_utility: float


def sp_local_maxima(market: Market) -> list[LocalMaximum]:
    r"""All local maxima of :math:`U_S(R)` over :math:`R \ge 0` (exact, via the pieces).

    :math:`U_S` is concave on every piece of the NE path, so a local maximum is either inside a
    piece (slope :math:`> 0` at its left end, :math:`< 0` at its right end; the root of the
    slope is found by Brent's method) or at a breakpoint where the slope goes from
    :math:`\ge 0` to :math:`\le 0`.  :math:`R = 0` is always one: nobody reacts to a small
    reward, so :math:`U_S(R) = U_S(0) - R` near 0.  O(N²); for small markets.
    """
    market = _check_market(market)
    out: list[LocalMaximum] = []
    prev_slope = -1.0  # slope just left of the current piece (R = 0 is a boundary)
    for lo_r, hi_r, piece, _ in _full_sweep(market):
        if hi_r <= lo_r:  # a tie: two vehicles change status at the same reward
            continue
        d_lo = piece.slope(lo_r)
        d_hi = -1.0 if math.isinf(hi_r) else piece.slope(hi_r)
        if (lo_r == 0.0 or prev_slope >= 0) and d_lo <= 0:
            out.append(LocalMaximum(lo_r, piece.value(lo_r)))
        elif d_lo > 0 and d_hi < 0:
            top = hi_r
            if math.isinf(top):  # not reached: the last piece has nobody inside
                top = 2.0 * max(lo_r, 1.0)
                while piece.slope(top) >= 0:
                    top *= 2.0
            r = float(brentq(piece.slope, lo_r, top, xtol=1e-300, rtol=_RTOL))
            out.append(LocalMaximum(r, piece.value(r)))
        prev_slope = d_hi
    return out


# --------------------------------------------------------------------------------------------
# When the SP pays nothing
# --------------------------------------------------------------------------------------------
def zero_reward_condition(market: Market) -> bool:
    r"""A sufficient condition for :math:`R^* = 0`:
    :math:`\lambda a b \le (b\epsilon_{\min} + 1)\min_i w_i`.

    Every vehicle can secure :math:`U_i \ge -w_i\ell_i` by playing :math:`\epsilon_{\min}`,
    so at any NE :math:`R \ge \sum_i w_i(x_i - \ell_i)` and
    :math:`U_S(R) - U_S(0) \le \sum_i [\lambda a v_i^{-1}(\log(b v_i x_i + 1) -
    \log(b\epsilon_{\min} + 1)) - w_i(x_i - \ell_i)]`; each term is concave in :math:`x_i`,
    zero at :math:`\ell_i` with slope :math:`\lambda a b/(b\epsilon_{\min}+1) - w_i \le 0`
    there, hence :math:`\le 0`.
    """
    market = _check_market(market)
    a, b = market.accuracy_a, market.accuracy_b
    return bool(market.profit * a * b <= (b * market.eps_min + 1.0) * market._sums[2])


def zero_reward_threshold(market: Market, *, profit_range: tuple[float, float]) -> float | None:
    r"""The profit factor :math:`\lambda_c` at which the SP is indifferent between paying
    nothing and its best positive reward (so Definition 2 has two SE and :math:`R^*` jumps from
    0 to a positive value), searched in ``profit_range``; ``None`` if there is no sign change.

    Uses :func:`sp_local_maxima` (small markets): :math:`\lambda_c` is the root of
    :math:`\max_{R>0\ \text{local max}} U_S(R) - U_S(0)`, found by Brent's method.
    """
    market = _check_market(market)
    lo, hi = _check_range("profit_range", profit_range)

    def margin(lam: float) -> float:
        m = market.replace(profit=lam)
        positive = [x.sp_utility for x in sp_local_maxima(m) if x.reward > 0]
        base = lam * m.accuracy_bounds[0]
        return (max(positive) if positive else -math.inf) - base

    f_lo, f_hi = margin(lo), margin(hi)
    if not (f_lo < 0 < f_hi):
        return None
    return float(brentq(margin, lo, hi, xtol=1e-12 * hi, rtol=_RTOL))
