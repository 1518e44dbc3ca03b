r"""The NE path :math:`R \mapsto \epsilon^*(R)` and the shape of :math:`U_S` (book Sect. 4.4).

Along the NE every :math:`x_i(R)` is continuous and non-decreasing, so each vehicle changes
status at most twice.  Between two such *breakpoints* the active set is fixed, :math:`S(R)` has
the closed form of :func:`_piece_aggregate` and :math:`U_S` is concave (:class:`_Piece` gives its
value, exact slope and maximiser there); :class:`_Sweeper` follows the path from one status
change to the next.  Public: :func:`sp_slope` (the exact right derivative of :math:`U_S`) and
:func:`reward_breakpoints` (every :class:`Breakpoint`).
"""

from __future__ import annotations

import math
from typing import Iterator, Literal, NamedTuple

import numpy as np
from scipy.optimize import brentq

from .market import _RTOL, Market, _check_market, _check_reward
from .nash import _status

__all__ = [
    "sp_slope",
    "reward_breakpoints",
    "Breakpoint",
]


# --------------------------------------------------------------------------------------------
# Pieces of the NE path: fixed active set
# --------------------------------------------------------------------------------------------
def _piece_aggregate(reward: float, n_in: int, w_in: float, c: float) -> float:
    r"""S(R) on a piece with :math:`n` interior vehicles of total weight :math:`W` and the
    others contributing :math:`C` (fixed at a bound): the positive root of
    :math:`W S^2/R - (n-1)S - C = 0`, i.e.
    :math:`S = R\big((n-1) + \sqrt{(n-1)^2 + 4WC/R}\big)/(2W)`; :math:`S = C` when
    :math:`n = 0`."""
    if n_in == 0:
        return c
    if reward == 0.0:
        return c
    m = n_in - 1
    return reward * (m + math.sqrt(m * m + 4.0 * w_in * c / reward)) / (2.0 * w_in)


class _Piece:
    """U_S and its slope on a piece of the NE path where the active set is fixed."""

    def __init__(self, market: Market, status: np.ndarray, n_in: int, w_in: float, c: float,
                 acc_fixed: float) -> None:
        self.market = market
        self.n_in, self.w_in, self.c, self.acc_fixed = n_in, w_in, c, acc_fixed
        if n_in:
            idx = np.flatnonzero(status == 1)
            self.w = market.weights[idx]
            self.v = market.speeds[idx]
            self.inv_v = market._inv_speed[idx]

    def value(self, reward: float) -> float:
        """U_S at ``reward`` assuming the piece's active set."""
        m = self.market
        if self.n_in == 0 or reward == 0.0:
            return m.profit * self.acc_fixed - reward
        s = _piece_aggregate(reward, self.n_in, self.w_in, self.c)
        eps = self.v * (s - self.w * (s * s / reward))
        np.clip(eps, m.eps_min, m.eps_max, out=eps)
        acc = self.acc_fixed + m.accuracy_a * float(np.dot(np.log1p(m.accuracy_b * eps),
                                                           self.inv_v))
        return m.profit * acc - reward

    def slope(self, reward: float) -> float:
        r"""dU_S/dR on the piece: :math:`\lambda a b\sum_{i\in I} x_i'/(b\epsilon_i + 1) - 1`
        with :math:`x_i = S - w_i\tau`, :math:`\tau = S^2/R`,
        :math:`S' = W\tau/R\,/\,(2WS/R - (n-1))` and :math:`\tau' = 2SS'/R - \tau/R`."""
        m = self.market
        if self.n_in == 0 or reward == 0.0:
            return -1.0
        s = _piece_aggregate(reward, self.n_in, self.w_in, self.c)
        tau = s * s / reward
        ds = self.w_in * tau / reward / (2.0 * self.w_in * s / reward - (self.n_in - 1))
        dtau = 2.0 * s * ds / reward - tau / reward
        eps = self.v * (s - self.w * tau)
        inv = 1.0 / (m.accuracy_b * eps + 1.0)
        grad = ds * inv.sum() - dtau * float(np.dot(self.w, inv))
        return m.profit * m.accuracy_a * m.accuracy_b * grad - 1.0

    def maximise(self, r_lo: float, r_hi: float) -> tuple[float, float]:
        """(argmax, max) of the concave U_S on ``[r_lo, r_hi]`` (``r_hi`` finite)."""
        if self.n_in == 0 or r_hi <= r_lo:
            return r_lo, self.value(r_lo)
        d_lo = self.slope(r_lo)
        if d_lo <= 0:
            return r_lo, self.value(r_lo)
        d_hi = self.slope(r_hi)
        if d_hi >= 0:
            return r_hi, self.value(r_hi)
        r = float(brentq(self.slope, r_lo, r_hi, xtol=1e-300, rtol=_RTOL))
        return r, self.value(r)


class _Sweeper:
    """Follows the NE path in R from a known active set, one status change at a time.

    On a piece with ``n`` interior vehicles the path satisfies
    τ = S²/R = ((n-1)S + C)/W, so vehicle j's crossing of bound b_j (ℓ_j when it is at ε_min,
    u_j when inside) happens at S_j = (b_j W + w_j C)/(W - w_j(n-1)) (if the denominator is
    positive) and R_j = S_j² / τ(S_j).  With nobody inside, S = C stays put and vehicle j at
    ε_min leaves at R_j = C² w_j / (C - ℓ_j).  Only the vehicles in ``candidates`` may change.
    """

    def __init__(self, market: Market, status: np.ndarray, reward: float,
                 candidates: np.ndarray) -> None:
        self.market = market
        self.status = status.copy()
        w, lo, hi, inv = market.weights, market.x_min, market.x_max, market._inv_speed
        inside = self.status == 1
        low = self.status == 0
        up = self.status == 2
        self.n_in = int(inside.sum())
        self.w_in = float(w[inside].sum())
        self.c = float(lo[low].sum() + hi[up].sum())
        self.inv_low = float(inv[low].sum())
        self.inv_up = float(inv[up].sum())
        self.reward = reward
        self.idx = np.asarray(candidates, dtype=np.intp)
        self.kw, self.klo, self.khi = w[self.idx], lo[self.idx], hi[self.idx]
        self.kstat = self.status[self.idx].copy()
        a, b = market.accuracy_a, market.accuracy_b
        self._log_lo, self._log_hi = math.log1p(b * market.eps_min), math.log1p(b * market.eps_max)
        self._a = a

    @property
    def acc_fixed(self) -> float:
        return self._a * (self.inv_low * self._log_lo + self.inv_up * self._log_hi)

    def piece(self) -> _Piece:
        return _Piece(self.market, self.status, self.n_in, self.w_in, self.c, self.acc_fixed)

    def next_event(self) -> tuple[float, int]:
        """(R of the next status change among the candidates, its position) or (inf, -1)."""
        active = self.kstat < 2
        if not active.any():
            return math.inf, -1
        if self.n_in == 0:
            low = self.kstat == 0
            if not low.any():
                return math.inf, -1
            with np.errstate(divide="ignore"):
                r = np.where(low, self.c * self.c * self.kw / (self.c - self.klo), np.inf)
        else:
            m = self.n_in - 1
            bound = np.where(self.kstat == 0, self.klo, self.khi)
            den = self.w_in - self.kw * m
            with np.errstate(divide="ignore", invalid="ignore"):
                s = (bound * self.w_in + self.kw * self.c) / den
                s = np.where(active & (den > 0), s, np.inf)
                s_now = _piece_aggregate(self.reward, self.n_in, self.w_in, self.c)
                s = np.maximum(s, s_now)
                r = np.where(np.isfinite(s), s * s * self.w_in / (m * s + self.c), np.inf)
        j = int(np.argmin(r))
        return max(float(r[j]), self.reward), j

    def advance(self, reward: float, j: int) -> int:
        """Apply the status change of candidate ``j`` at ``reward``; returns the vehicle."""
        i = int(self.idx[j])
        m = self.market
        if self.kstat[j] == 0:
            self.kstat[j] = 1
            self.status[i] = 1
            self.n_in += 1
            self.w_in += float(m.weights[i])
            self.c -= float(m.x_min[i])
            self.inv_low -= float(m._inv_speed[i])
        else:
            self.kstat[j] = 2
            self.status[i] = 2
            self.n_in -= 1
            self.w_in -= float(m.weights[i])
            self.c += float(m.x_max[i])
            self.inv_up += float(m._inv_speed[i])
            if self.n_in == 0:
                self.w_in = 0.0
        self.reward = reward
        return i


# --------------------------------------------------------------------------------------------
# Along the path: the slope of U_S and the breakpoints
# --------------------------------------------------------------------------------------------
def sp_slope(market: Market, reward: float) -> float:
    r"""The right derivative :math:`dU_S/dR` at ``reward`` along the NE (exact)."""
    market = _check_market(market)
    reward = _check_reward(reward)
    return _piece_at(market, reward).slope(reward)


def _piece_at(market: Market, reward: float) -> _Piece:
    status = _status(market, reward)
    # the piece to the right of ``reward``: vehicles exactly at a breakpoint move on
    sw = _Sweeper(market, status, reward, np.flatnonzero(status < 2))
    while True:
        r_next, j = sw.next_event()
        if j < 0 or r_next > reward:
            break
        sw.advance(r_next, j)
    return sw.piece()


class Breakpoint(NamedTuple):
    """A reward at which a vehicle changes status along the NE path."""

    reward: float
    vehicle: int
    kind: Literal["leaves eps_min", "reaches eps_max"]


def _full_sweep(market: Market) -> Iterator[tuple[float, float, _Piece, Breakpoint | None]]:
    """Yield (R_lo, R_hi, piece, breakpoint at R_hi) along the whole NE path from R = 0."""
    n = market.n_vehicles
    sw = _Sweeper(market, np.zeros(n, dtype=np.int8), 0.0, np.arange(n))
    lo_r = 0.0
    while True:
        r_next, j = sw.next_event()
        piece = sw.piece()
        if j < 0:
            yield lo_r, math.inf, piece, None
            return
        kind = "leaves eps_min" if sw.kstat[j] == 0 else "reaches eps_max"
        i = sw.advance(r_next, j)
        yield lo_r, r_next, piece, Breakpoint(r_next, i, kind)
        lo_r = r_next


def reward_breakpoints(market: Market) -> list[Breakpoint]:
    """Every reward at which some vehicle changes status along the NE path (exact; O(N²),
    intended for markets of up to a few thousand vehicles)."""
    market = _check_market(market)
    return [bp for _, _, _, bp in _full_sweep(market) if bp is not None]
