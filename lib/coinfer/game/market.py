r"""The game of Sect. 4 of Wu et al. (2021) (book Sects. 4.1–4.2): markets and utilities.

A :class:`Market` is one instance of the incentive game (speeds :math:`v_i`, privacy values
:math:`c_i`, unit expense :math:`e`, accuracy curve :math:`a, b`, profit factor :math:`\lambda`
and the budget box :math:`[\epsilon_{\min}, \epsilon_{\max}]`); a :class:`MarketSpec` is the
distribution of random markets of the paper's simulations (:func:`random_market` draws one).
:func:`vehicle_utilities` and :func:`sp_utility` evaluate Eqs. (7) and (9) for a profile.
:class:`PublicInfo` (:func:`public_info`) is the part of a market the SP knows in the
distributed approach.

The module also holds the input checks and the numerical tolerances that the other modules of
:mod:`coinfer.game` share.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple, Sequence

import numpy as np

from ..config import check_positive_float, check_positive_int

__all__ = [
    "Market",
    "MarketSpec",
    "random_market",
    "vehicle_utilities",
    "sp_utility",
    "PublicInfo",
    "public_info",
]

_EPS = float(np.finfo(float).eps)
_RTOL = 4 * _EPS  # the smallest relative tolerance scipy's brentq accepts


# --------------------------------------------------------------------------------------------
# The market
# --------------------------------------------------------------------------------------------
def _vector(name: str, values, n: int | None = None) -> np.ndarray:
    """A read-only 1-D float array of finite positive numbers (copied)."""
    try:
        arr = np.array(values, dtype=float, copy=True)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a 1-D sequence of real numbers, got {values!r}") from err
    if np.asarray(values).dtype.kind not in "iuf":
        raise TypeError(
            f"{name} must hold real numbers, got dtype {np.asarray(values).dtype} ({values!r})"
        )
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} must have one entry per vehicle ({n}), got {arr.shape[0]}")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name} must be finite and > 0; entry {i} is {arr[i]}")
    arr.flags.writeable = False
    return arr


@dataclass(frozen=True, eq=False)
class Market:
    r"""One instance of the incentive game (immutable).

    Parameters
    ----------
    speeds
        :math:`v_i > 0`, the vehicles' speeds (m/s); at least two vehicles.
    privacy_values
        :math:`c_i > 0`, the value each vehicle puts on its collected data (private to it).
    unit_expense
        :math:`e \ge 0`, so that a vehicle's cost per unit of :math:`\epsilon` is
        :math:`k_i = c_i + e/v_i`.
    accuracy_a, accuracy_b
        :math:`a, b > 0` of the accuracy curve :math:`A = a\log(b\epsilon + 1)` (Eq. (6),
        fitted to Fig. 5 by the defence chapter).
    profit
        :math:`\lambda > 0`, the SP's conversion factor from accuracy to profit.
    eps_min, eps_max
        The budget box :math:`0 < \epsilon_{\min} < \epsilon_{\max}` (constraint C1).

    Notes
    -----
    All arrays are copied and made read-only.  Derived quantities (``costs`` :math:`k_i`,
    ``weights`` :math:`w_i = v_i k_i`, the bounds of :math:`x_i = \epsilon_i/v_i`) are cached.
    """

    speeds: np.ndarray
    privacy_values: np.ndarray
    unit_expense: float
    accuracy_a: float
    accuracy_b: float
    profit: float
    eps_min: float
    eps_max: float

    def __post_init__(self) -> None:
        speeds = _vector("speeds", self.speeds)
        if speeds.shape[0] < 2:
            raise ValueError(f"speeds must describe at least two vehicles, got {speeds.shape[0]}")
        privacy = _vector("privacy_values", self.privacy_values, speeds.shape[0])
        set_ = object.__setattr__
        set_(self, "speeds", speeds)
        set_(self, "privacy_values", privacy)
        set_(self, "unit_expense", check_positive_float("unit_expense", self.unit_expense,
                                                        allow_zero=True))
        for name in ("accuracy_a", "accuracy_b", "profit", "eps_min", "eps_max"):
            set_(self, name, check_positive_float(name, getattr(self, name)))
        if not self.eps_min < self.eps_max:
            raise ValueError(
                f"eps_min must be < eps_max, got eps_min={self.eps_min}, eps_max={self.eps_max}"
            )

    # -- derived quantities -------------------------------------------------------------------
    @property
    def n_vehicles(self) -> int:
        """:math:`|N|`."""
        return int(self.speeds.shape[0])

    @cached_property
    def costs(self) -> np.ndarray:
        r""":math:`k_i = c_i + e / v_i`, the cost of one unit of privacy budget."""
        return _frozen(self.privacy_values + self.unit_expense / self.speeds)

    @cached_property
    def weights(self) -> np.ndarray:
        r""":math:`w_i = v_i k_i = c_i v_i + e`, the cost of one unit of :math:`x_i`."""
        return _frozen(self.privacy_values * self.speeds + self.unit_expense)

    @cached_property
    def x_min(self) -> np.ndarray:
        r""":math:`\ell_i = \epsilon_{\min} / v_i`."""
        return _frozen(self.eps_min / self.speeds)

    @cached_property
    def x_max(self) -> np.ndarray:
        r""":math:`u_i = \epsilon_{\max} / v_i`."""
        return _frozen(self.eps_max / self.speeds)

    @cached_property
    def _inv_speed(self) -> np.ndarray:
        return _frozen(1.0 / self.speeds)

    @cached_property
    def _sums(self) -> tuple[float, float, float, float]:
        """(Σℓ, Σu, min w, Σ 1/v)."""
        return (float(self.x_min.sum()), float(self.x_max.sum()), float(self.weights.min()),
                float(self._inv_speed.sum()))

    @property
    def accuracy_bounds(self) -> tuple[float, float]:
        r"""The aggregate accuracy :math:`\bar A` with everyone at :math:`\epsilon_{\min}` and at
        :math:`\epsilon_{\max}`."""
        inv = self._sums[3]
        a, b = self.accuracy_a, self.accuracy_b
        return a * inv * math.log1p(b * self.eps_min), a * inv * math.log1p(b * self.eps_max)

    def replace(self, **changes) -> "Market":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:  # arrays can be long
        return (f"Market(n_vehicles={self.n_vehicles}, unit_expense={self.unit_expense}, "
                f"accuracy_a={self.accuracy_a}, accuracy_b={self.accuracy_b}, "
                f"profit={self.profit}, eps_min={self.eps_min}, eps_max={self.eps_max})")


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


def _check_range(name: str, rng_: Sequence[float]) -> tuple[float, float]:
    try:
        low, high = rng_
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a pair (low, high), got {rng_!r}") from err
    low = check_positive_float(f"{name}[0]", low)
    high = check_positive_float(f"{name}[1]", high)
    if high < low:
        raise ValueError(f"{name} must satisfy low <= high, got {rng_!r}")
    return low, high


@dataclass(frozen=True)
class MarketSpec:
    """The distribution of random markets of the paper's simulations (Sect. 6.2).

    Speeds and privacy values are drawn uniformly from their ranges (a range ``(x, x)`` fixes
    them); everything else is fixed.  Defaults: 10 vehicles, v ∈ [5, 15] m/s, c ∈ [5, 10],
    e = 10 and λ = 1000 as in the paper; the accuracy curve and the budget box have no defaults
    because the paper's values are not in its text.
    """

    accuracy_a: float
    accuracy_b: float
    eps_min: float
    eps_max: float
    n_vehicles: int = 10
    speed_range: tuple[float, float] = (5.0, 15.0)
    privacy_range: tuple[float, float] = (5.0, 10.0)
    unit_expense: float = 10.0
    profit: float = 1000.0

    def __post_init__(self) -> None:
        check_positive_int("n_vehicles", self.n_vehicles)
        if self.n_vehicles < 2:
            raise ValueError(f"n_vehicles must be >= 2, got {self.n_vehicles}")
        object.__setattr__(self, "speed_range", _check_range("speed_range", self.speed_range))
        object.__setattr__(self, "privacy_range",
                           _check_range("privacy_range", self.privacy_range))

    def replace(self, **changes) -> "MarketSpec":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def draw(self, rng: np.random.Generator) -> Market:
        """One market; all randomness comes from ``rng``."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        speeds = rng.uniform(*self.speed_range, size=self.n_vehicles)
        privacy = rng.uniform(*self.privacy_range, size=self.n_vehicles)
        return Market(speeds, privacy, self.unit_expense, self.accuracy_a, self.accuracy_b,
                      self.profit, self.eps_min, self.eps_max)


def random_market(spec: MarketSpec, *, seed: int | np.random.Generator) -> Market:
    """Draw one market from ``spec`` with ``numpy.random.default_rng(seed)``."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(
        check_positive_int("seed", seed, allow_zero=True))
    return spec.draw(rng)


# --------------------------------------------------------------------------------------------
# Utilities (Eqs. (7)-(9))
# --------------------------------------------------------------------------------------------
def _check_market(market) -> Market:
    if not isinstance(market, Market):
        raise TypeError(f"market must be a Market, got {type(market).__name__}")
    return market


def _check_eps(market: Market, eps) -> np.ndarray:
    try:
        arr = np.asarray(eps, dtype=float)
    except (TypeError, ValueError) as err:
        raise TypeError(f"eps must be an array of real numbers, got {eps!r}") from err
    if arr.shape != (market.n_vehicles,):
        raise ValueError(f"eps must have shape ({market.n_vehicles},), got {arr.shape}")
    bad = ~np.isfinite(arr) | (arr < market.eps_min) | (arr > market.eps_max)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"eps must lie in [eps_min, eps_max] = [{market.eps_min}, {market.eps_max}]; "
            f"entry {i} is {arr[i]}"
        )
    return arr


def _check_reward(reward) -> float:
    return check_positive_float("reward", reward, allow_zero=True)


def vehicle_utilities(market: Market, eps, reward: float) -> np.ndarray:
    r"""Every vehicle's utility, Eq. (7) of Wu et al. (2021):
    :math:`U_i = R\,x_i/\sum_j x_j - \epsilon_i k_i` with :math:`x_i = \epsilon_i / v_i`."""
    market = _check_market(market)
    eps = _check_eps(market, eps)
    reward = _check_reward(reward)
    x = eps / market.speeds
    return reward * x / x.sum() - eps * market.costs


def sp_utility(market: Market, eps, reward: float, *, accuracy=None) -> float:
    r"""The SP's utility, Eq. (9): :math:`\lambda a\sum_i v_i^{-1}\log(b\epsilon_i+1) - R`.

    With ``accuracy`` (a vectorised, non-decreasing callable :math:`A(\epsilon)`, see
    :func:`~coinfer.game.stackelberg_equilibrium_for_curve`) the paper's curve
    :math:`a\log(b\epsilon+1)` is replaced by it:
    :math:`U_S = \lambda\sum_i v_i^{-1}A(\epsilon_i) - R`; the market's ``accuracy_a`` and
    ``accuracy_b`` are then not used.
    """
    market = _check_market(market)
    eps = _check_eps(market, eps)
    reward = _check_reward(reward)
    if accuracy is None:
        return market.profit * _accuracy(market, eps) - reward
    accuracy = _check_accuracy(market, accuracy)
    return market.profit * float(_curve_values(accuracy, eps) @ market._inv_speed) - reward


def _curve_values(accuracy, eps: np.ndarray) -> np.ndarray:
    """``accuracy(eps)`` as a float array of the same shape, checked to be finite."""
    values = np.asarray(accuracy(eps), dtype=float)
    if values.shape != np.shape(eps):
        raise ValueError(f"accuracy must be vectorised: for budgets of shape {np.shape(eps)} it "
                         f"returned shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("accuracy must return finite values on [eps_min, eps_max], got "
                         f"{values[~np.isfinite(values)][:3]}")
    return values


def _check_accuracy(market: Market, accuracy, points: int = 257):
    r"""Check a general accuracy curve on the market's box and return it.

    ``accuracy`` must be callable, vectorised (same shape out as in) and finite and
    non-decreasing on :math:`[\epsilon_{\min}, \epsilon_{\max}]`; the last two are checked on
    ``points`` geometrically spaced budgets (a check, not a proof).
    """
    if not callable(accuracy):
        raise TypeError(f"accuracy must be a callable A(eps), got {type(accuracy).__name__}")
    grid = np.geomspace(market.eps_min, market.eps_max, points)
    values = _curve_values(accuracy, grid)
    drop = np.diff(values) < -1e-12 * np.maximum(1.0, np.abs(values[:-1]))
    if drop.any():
        k = int(np.flatnonzero(drop)[0])
        raise ValueError(
            "accuracy must be non-decreasing on [eps_min, eps_max]; it falls from "
            f"A({grid[k]:.6g}) = {values[k]:.6g} to A({grid[k + 1]:.6g}) = {values[k + 1]:.6g}")
    return accuracy


def _accuracy(market: Market, eps: np.ndarray) -> float:
    r""":math:`\bar A = a\sum_i v_i^{-1}\log(b\epsilon_i + 1)` (Eq. (8))."""
    return market.accuracy_a * float(np.dot(np.log1p(market.accuracy_b * eps),
                                            market._inv_speed))


# --------------------------------------------------------------------------------------------
# What the SP knows in the distributed approach
# --------------------------------------------------------------------------------------------
class PublicInfo(NamedTuple):
    """What the SP knows in the distributed approach: no privacy value, no unit expense.

    The speeds are public (they weight the SP's own utility, Eq. (9)).
    """

    speeds: np.ndarray
    accuracy_a: float
    accuracy_b: float
    profit: float
    eps_min: float
    eps_max: float

    def sp_utility(self, eps: np.ndarray, reward: float) -> float:
        """U_S from the reported budgets (Eq. (9))."""
        acc = self.accuracy_a * float(np.dot(np.log1p(self.accuracy_b * eps), 1.0 / self.speeds))
        return self.profit * acc - reward

    @property
    def reward_cap(self) -> float:
        r""":math:`\lambda(\bar A_{\max} - \bar A_{\min})`: no larger reward beats R = 0."""
        inv = float(np.sum(1.0 / self.speeds))
        b = self.accuracy_b
        return self.profit * self.accuracy_a * inv * (math.log1p(b * self.eps_max)
                                                      - math.log1p(b * self.eps_min))


def public_info(market: Market) -> PublicInfo:
    """The public part of ``market`` (everything but :math:`c_i` and :math:`e`)."""
    market = _check_market(market)
    return PublicInfo(market.speeds, market.accuracy_a, market.accuracy_b, market.profit,
                      market.eps_min, market.eps_max)
