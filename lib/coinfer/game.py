r"""The Stackelberg incentive of Wu et al. (2021), Sect. 4–5: exact equilibria with the bounds.

The service provider (SP, the leader) announces a total reward :math:`R \ge 0`; each vehicle
:math:`i` (a follower) chooses a privacy budget :math:`\epsilon_i \in [\epsilon_{\min},
\epsilon_{\max}]` and receives the share of :math:`R` that its weighted contribution earns
(Eq. (7) of the paper)

.. math::

    U_i = R\,\frac{\epsilon_i / v_i}{\sum_j \epsilon_j / v_j} - \epsilon_i k_i,
    \qquad k_i = c_i + \frac{e}{v_i},

while the SP earns (Eq. (9))

.. math::

    U_S = \lambda a \sum_i \frac{1}{v_i}\log(b\,\epsilon_i + 1) - R .

**The aggregative form.**  With :math:`x_i = \epsilon_i / v_i`, :math:`w_i = v_i k_i = c_i v_i + e`
and :math:`S = \sum_j x_j` the vehicle's utility is :math:`U_i = R x_i / S - w_i x_i`: the
crowdsourcing contest of Yang et al. (MobiCom 2012) with box constraints
:math:`x_i \in [\ell_i, u_i] = [\epsilon_{\min}/v_i, \epsilon_{\max}/v_i]`.  A profile is a Nash
equilibrium (NE) iff every :math:`x_i` equals the *consistent response* to the aggregate,

.. math::

    x_i = r_i(S) = \operatorname{clip}\!\Big(S - \frac{w_i S^2}{R},\ \ell_i,\ u_i\Big),

and :math:`S = \sum_i r_i(S)`.  Because :math:`\sum_i r_i(S)/S` is continuous and strictly
decreasing from :math:`+\infty` to :math:`0`, the NE exists and is unique for every
:math:`R > 0`; :func:`nash_equilibrium` finds it with one bracketed scalar root-find on
:math:`[\sum_i \ell_i, \sum_i u_i]`.  (At :math:`R = 0` every vehicle sits at
:math:`\epsilon_{\min}`.)

**The leader's problem.**  Along the NE every :math:`x_i(R)` is continuous and non-decreasing, so
each vehicle changes status at most twice (it leaves :math:`\epsilon_{\min}`, later it reaches
:math:`\epsilon_{\max}`).  Between two such *breakpoints* the active set is fixed,
:math:`S(R)` has the closed form of :func:`_piece_aggregate` and :math:`U_S` is concave; at a
breakpoint where a vehicle leaves :math:`\epsilon_{\min}` the slope of the aggregate jumps *up*
and :math:`U_S` typically gets a convex kink, so :math:`U_S` is in general not concave and may
have several local maxima (Theorem 5 of the paper does not hold once a bound binds; :math:`R = 0`
is always a local maximum).  :func:`stackelberg_equilibrium` finds the *global*
maximiser by a branch and bound over reward intervals that uses the monotonicity of the
accuracy term as bound and exact event sweeps for the breakpoints.

Public API
----------
* the game: :class:`Market`, :class:`MarketSpec`, :func:`random_market`,
  :func:`vehicle_utilities`, :func:`sp_utility`;
* the followers: :func:`best_response` (Eq. (15)), :func:`nash_equilibrium`,
  :func:`equilibrium_aggregate`, :func:`consistent_responses`, :func:`best_response_dynamics`;
* the paper's closed form: :func:`closed_form_equilibrium` (Theorem 3),
  :func:`closed_form_positive`, :func:`theorem4_condition`, :func:`closed_form_reward_interval`,
  :func:`paper_sp_utility` (Eq. (26)), :func:`closed_form_failure_rates`;
* the leader: :func:`stackelberg_equilibrium` (centralised, global), :func:`sp_utility_curve`,
  :func:`sp_slope`, :func:`reward_breakpoints`, :func:`sp_local_maxima`,
  :func:`multimodal_markets`, :func:`zero_reward_condition`, :func:`zero_reward_threshold`;
* the mechanisms: :func:`distributed_search` (Algorithm 3; the SP's side is
  :func:`gradient_search`, which sees only :class:`PublicInfo` and the reports),
  :func:`estimate_gradient`, :func:`linear_pricing`;
* experiments: :func:`compare_approaches`, :func:`sweep_approaches` (Figs. 6–9),
  :func:`time_scaling`, :func:`trend`.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterator, Literal, NamedTuple, Sequence

import numpy as np
from scipy.optimize import brentq

from .config import check_positive_float, check_positive_int

__all__ = [
    "Market",
    "MarketSpec",
    "random_market",
    "vehicle_utilities",
    "sp_utility",
    "best_response",
    "nash_equilibrium",
    "equilibrium_aggregate",
    "closed_form_equilibrium",
    "ClosedFormEquilibrium",
    "closed_form_positive",
    "theorem4_condition",
    "closed_form_reward_interval",
    "paper_sp_utility",
    "closed_form_failure_rates",
    "consistent_responses",
    "zero_reward_condition",
    "zero_reward_threshold",
    "trend",
    "best_response_dynamics",
    "DynamicsResult",
    "stackelberg_equilibrium",
    "StackelbergResult",
    "sp_utility_curve",
    "sp_slope",
    "reward_breakpoints",
    "Breakpoint",
    "sp_local_maxima",
    "LocalMaximum",
    "multimodal_markets",
    "PublicInfo",
    "public_info",
    "vehicle_oracle",
    "estimate_gradient",
    "gradient_search",
    "distributed_search",
    "SearchResult",
    "linear_pricing",
    "LinearPricingResult",
    "compare_approaches",
    "Comparison",
    "APPROACHES",
    "sweep_approaches",
    "Sweep",
    "time_scaling",
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
# Utilities and best responses
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


def sp_utility(market: Market, eps, reward: float) -> float:
    r"""The SP's utility, Eq. (9): :math:`\lambda a\sum_i v_i^{-1}\log(b\epsilon_i+1) - R`."""
    market = _check_market(market)
    eps = _check_eps(market, eps)
    reward = _check_reward(reward)
    return market.profit * _accuracy(market, eps) - reward


def _accuracy(market: Market, eps: np.ndarray) -> float:
    r""":math:`\bar A = a\sum_i v_i^{-1}\log(b\epsilon_i + 1)` (Eq. (8))."""
    return market.accuracy_a * float(np.dot(np.log1p(market.accuracy_b * eps),
                                            market._inv_speed))


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


def trend(values) -> str:
    """``"increases"``, ``"decreases"`` or ``"is not monotone"`` (for sentences in the book)."""
    d = np.diff(np.asarray(values, dtype=float))
    if np.all(d > 0):
        return "increases"
    if np.all(d < 0):
        return "decreases"
    return "is not monotone"


# --------------------------------------------------------------------------------------------
# Best-response dynamics
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DynamicsResult:
    """Outcome of :func:`best_response_dynamics`.

    Attributes
    ----------
    eps
        The last profile.
    iterations
        Rounds played (a round updates every vehicle once).
    converged
        Whether the residual fell to ``tol`` × the largest budget.
    changes
        ``changes[t]`` = max_i |B_i(ε^t) - ε_i^t| in round t (the undamped residual; for the
        sequential variant each reply sees the budgets already updated in that round).
    distances
        max_i |ε_i^t - ε_i^*| after round t, when the exact NE was supplied (else empty).
    history
        The profiles after every round when ``record=True`` (else ``None``).
    seconds
        Wall-clock time of the rounds.
    """

    eps: np.ndarray
    iterations: int
    converged: bool
    changes: np.ndarray
    distances: np.ndarray
    history: np.ndarray | None
    seconds: float

    def period(self, max_period: int = 50, rtol: float = 1e-6) -> int | None:
        """Smallest p <= ``max_period`` with the last profile equal to the one p rounds earlier
        (a cycle of the dynamics), or ``None``; needs ``record=True``."""
        if self.history is None:
            raise ValueError("period needs the history: run with record=True")
        max_period = check_positive_int("max_period", max_period)
        h = self.history
        for p in range(1, min(max_period, len(h) - 1) + 1):
            if np.allclose(h[-1], h[-1 - p], rtol=rtol, atol=0.0):
                return p
        return None


def best_response_dynamics(
    market: Market,
    reward: float,
    *,
    initial=None,
    damping: float = 1.0,
    sequential: bool = False,
    tol: float = 1e-9,
    max_iter: int = 10_000,
    target=None,
    record: bool = False,
) -> DynamicsResult:
    r"""The best-response dynamics the paper suggests for the subgame (Sect. 5.1, after [29]).

    Each round every vehicle replies with Eq. (15) (:func:`best_response`):

    * ``sequential=False`` — simultaneously (Jacobi; Yates' iteration for standard functions),
      :math:`\epsilon^{t+1} = (1-\beta)\epsilon^t + \beta B(\epsilon^t)` with ``damping``
      :math:`\beta \in (0, 1]`.  Undamped (:math:`\beta = 1`) it can cycle for ever once
      Theorem 4's condition fails;
    * ``sequential=True`` — one vehicle after the other (Gauss–Seidel) with the running
      aggregate (a Python loop: for small markets).

    Stops when no vehicle's best reply differs from its budget by more than
    ``tol`` × the largest budget (the residual :math:`\max_i|B_i(\epsilon) - \epsilon_i|`,
    measured before damping).

    Parameters
    ----------
    initial
        Starting profile (default: everybody at :math:`\epsilon_{\min}`).
    target
        The exact NE (e.g. from :func:`nash_equilibrium`) to record the distance to it.
    record
        Keep every round's profile (memory ``iterations × n``).
    """
    market = _check_market(market)
    reward = _check_reward(reward)
    damping = check_positive_float("damping", damping)
    if damping > 1:
        raise ValueError(f"damping must be in (0, 1], got {damping}")
    tol = check_positive_float("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    eps = (np.full(market.n_vehicles, market.eps_min) if initial is None
           else _check_eps(market, initial).copy())
    if target is not None:
        target = _check_eps(market, target)
    v, w = market.speeds, market.weights
    lo, hi = market.x_min, market.x_max
    x = eps / v
    changes, distances, history = [], [], []
    converged = False
    start = time.perf_counter()
    it = 0
    for it in range(1, max_iter + 1):
        if sequential:
            s = float(x.sum())
            change = 0.0
            for i in range(x.shape[0]):
                others = s - x[i]
                new = (math.sqrt(reward * others / w[i]) - others) if reward > 0 else lo[i]
                new = min(max(new, lo[i]), hi[i])
                change = max(change, abs(new - x[i]) * v[i])
                new = x[i] + damping * (new - x[i])
                s = others + new
                x[i] = new
        else:
            others = x.sum() - x
            reply = np.sqrt(reward * others / w) - others if reward > 0 else lo.copy()
            np.clip(reply, lo, hi, out=reply)
            step = reply - x
            change = float(np.max(np.abs(step) * v))
            if damping != 1.0:
                step *= damping
            x = x + step
        changes.append(change)
        if target is not None:
            distances.append(float(np.max(np.abs(x * v - target))))
        if record:
            history.append(np.clip(x * v, market.eps_min, market.eps_max))
        if change <= tol * float(np.max(x * v)):
            converged = True
            break
    seconds = time.perf_counter() - start
    eps = np.clip(x * v, market.eps_min, market.eps_max)
    return DynamicsResult(eps, it, converged, np.array(changes), np.array(distances),
                          np.array(history) if record else None, seconds)


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


def sp_utility_curve(market: Market, rewards) -> np.ndarray:
    """:math:`U_S(R)` at the vehicles' NE for every reward in ``rewards`` (for plots)."""
    market = _check_market(market)
    rewards = np.asarray(rewards, dtype=float)
    out = np.empty(rewards.shape)
    for k, r in np.ndenumerate(rewards):
        r = _check_reward(float(r))
        out[k] = market.profit * _accuracy(market, nash_equilibrium(market, r)) - r
    return out


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


# --------------------------------------------------------------------------------------------
# The distributed approach (Algorithm 3): the SP sees only public information and the reports
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


def vehicle_oracle(market: Market) -> Callable[[float], np.ndarray]:
    """The vehicles' side of Algorithm 3: given an announced reward they play their NE
    (each solves Eq. (15) against the others' budgets, posted at the access point) and report
    their budgets.  The returned callable exposes nothing but the reports."""
    market = _check_market(market)

    def respond(reward: float) -> np.ndarray:
        return nash_equilibrium(market, reward)

    return respond


def estimate_gradient(public: PublicInfo, reward: float, eps,
                      estimator: Literal["exact", "paper"] = "exact") -> float:
    r"""The SP's estimate of :math:`dU_S/dR` from the reported budgets only.

    ``"paper"`` — Eq. (28) of Wu et al. (2021) differentiates Eq. (26), i.e. assumes
    :math:`\epsilon_i = h_i R/b`:
    :math:`\lambda a b\sum_i v_i^{-1}(\epsilon_i/R)/(b\epsilon_i + 1) - 1`.  Right only when no
    bound binds (vehicles at a bound do not move with R).

    ``"exact"`` — a vehicle strictly inside its bounds satisfies its first-order condition
    :math:`R(S - x_i)/S^2 = w_i`, so its report *reveals* :math:`w_i`.  With the set :math:`I`
    of interior vehicles, :math:`n = |I|`, :math:`W = \sum_I w_i` and
    :math:`C = S - \sum_I x_i` the SP knows the piece of the NE path it is on and its exact
    (right) slope: :math:`S' = W\tau/R/(2WS/R - (n-1))`, :math:`\tau = S^2/R`,
    :math:`x_i' = S' - w_i\tau'`, :math:`dU_S/dR = \lambda a b\sum_I x_i'/(b\epsilon_i+1) - 1`.
    With nobody inside (or :math:`R = 0`) nobody reacts to a small change and the slope is -1.
    """
    eps = np.asarray(eps, dtype=float)
    reward = _check_reward(reward)
    lam, a, b = public.profit, public.accuracy_a, public.accuracy_b
    v = public.speeds
    if estimator == "paper":
        if reward == 0.0:
            return math.inf
        return lam * a * b * float(np.sum(eps / reward / (b * eps + 1.0) / v)) - 1.0
    if estimator != "exact":
        raise ValueError(f"estimator must be 'exact' or 'paper', got {estimator!r}")
    inside = (eps > public.eps_min * (1 + 1e-12)) & (eps < public.eps_max * (1 - 1e-12))
    if reward == 0.0 or not inside.any():
        return -1.0
    x = eps / v
    s = float(x.sum())
    x_in = x[inside]
    w = reward * (s - x_in) / (s * s)  # revealed by the first-order conditions
    n_in, w_in = int(inside.sum()), float(w.sum())
    tau = s * s / reward
    ds = w_in * tau / reward / (2.0 * w_in * s / reward - (n_in - 1))
    dtau = 2.0 * s * ds / reward - tau / reward
    inv = 1.0 / (b * eps[inside] + 1.0)
    return lam * a * b * (ds * float(inv.sum()) - dtau * float(np.dot(w, inv))) - 1.0


@dataclass(frozen=True)
class SearchResult:
    """Outcome of :func:`gradient_search` / :func:`distributed_search`.

    ``rewards``, ``utilities`` and ``gradients`` are the announced rewards, the SP utilities
    computed from the reports and the estimated slopes, one per round of communication.
    ``vehicle_utilities`` is filled in by :func:`distributed_search` (the SP never sees it).
    """

    reward: float
    eps: np.ndarray
    sp_utility: float
    iterations: int
    converged: bool
    rewards: np.ndarray
    utilities: np.ndarray
    gradients: np.ndarray
    vehicle_utilities: np.ndarray | None = None

    @property
    def mean_vehicle_utility(self) -> float:
        return float(np.mean(self.vehicle_utilities))


def gradient_search(
    public: PublicInfo,
    respond: Callable[[float], np.ndarray],
    *,
    initial_reward: float | None = None,
    learning_rate: float | None = None,
    estimator: Literal["exact", "paper"] = "exact",
    initial_step: float = 0.01,
    scan: int = 12,
    tol: float = 1e-10,
    max_iter: int = 500,
) -> SearchResult:
    r"""The SP's side of Algorithm 3 of Wu et al. (2021): announce R, read the reports, update R.

    The SP only holds ``public`` (:class:`PublicInfo`) and the callable ``respond`` (the
    vehicles' reports), so it cannot read any :math:`c_i`.  Rounds stop when the reward moves by
    less than ``tol`` × R (the paper's threshold on the reward update) or after ``max_iter``.

    * ``learning_rate=η`` — Eq. (28) as printed: :math:`R \leftarrow \max(0, R + \eta\,g)` with
      the estimated slope :math:`g` (:func:`estimate_gradient`).
    * ``learning_rate=None`` (default) — a step size the SP can use without tuning: gradient
      steps whose length doubles while the slope keeps its sign, then, once a sign change
      brackets a maximum, safeguarded secant steps on the slope (bisection whenever the secant
      leaves the bracket or stalls) — Brent's method.  It converges to a local maximum (or to
      the kink at which the estimated slope changes sign); which one depends on the start.

    The paper does not say where the search starts.  With ``initial_reward=None`` the SP spends
    ``scan`` rounds announcing geometrically spaced rewards in
    :math:`[10^{-4}\overline R, \overline R]` (:attr:`PublicInfo.reward_cap`) and starts from
    the one with the best utility it computes from the reports (or stops at :math:`R = 0` when
    none beats paying nothing).  The first step of the default rule moves the reward by
    ``initial_step`` × the starting reward.
    """
    if not isinstance(public, PublicInfo):
        raise TypeError(f"public must be a PublicInfo, got {type(public).__name__}")
    if not callable(respond):
        raise TypeError(f"respond must be callable, got {type(respond).__name__}")
    if estimator not in ("exact", "paper"):
        raise ValueError(f"estimator must be 'exact' or 'paper', got {estimator!r}")
    tol = check_positive_float("tol", tol)
    max_iter = check_positive_int("max_iter", max_iter)
    cap = public.reward_cap
    if initial_reward is not None:
        initial_reward = check_positive_float("initial_reward", initial_reward, allow_zero=True)
    if learning_rate is not None:
        learning_rate = check_positive_float("learning_rate", learning_rate)
    initial_step = check_positive_float("initial_step", initial_step)
    scan = check_positive_int("scan", scan)

    rewards, utilities, gradients = [], [], []

    def ask(r: float) -> tuple[np.ndarray, float, float]:
        eps = np.asarray(respond(r), dtype=float)
        u = public.sp_utility(eps, r)
        g = estimate_gradient(public, r, eps, estimator)
        rewards.append(r)
        utilities.append(u)
        gradients.append(g)
        return eps, u, g

    if initial_reward is None:
        # a public-information start: probe a geometric grid, keep the best (R = 0 included)
        zero_utility = public.sp_utility(np.full(public.speeds.shape, public.eps_min), 0.0)
        probes = [(r, *ask(r)) for r in np.geomspace(1e-4 * cap, cap, scan)]
        r_best, eps, u, g = max(probes, key=lambda p: p[2])
        if u <= zero_utility:
            eps = np.full(public.speeds.shape, public.eps_min)
            return SearchResult(0.0, eps, zero_utility, len(rewards), True, np.array(rewards),
                                np.array(utilities), np.array(gradients))
        reward = float(r_best)
    else:
        reward = initial_reward
        eps, u, g = ask(reward)
    converged = False
    if learning_rate is not None:
        while len(rewards) < max_iter:
            new = max(0.0, reward + learning_rate * g) if math.isfinite(g) else 2 * reward + tol
            if abs(new - reward) <= tol * max(reward, new, _EPS):
                converged = True
                break
            reward = new
            eps, u, g = ask(reward)
        return SearchResult(reward, eps, u, len(rewards), converged, np.array(rewards),
                            np.array(utilities), np.array(gradients))

    # default: expanding gradient steps until the slope changes sign, then Brent's method on
    # the estimated slope inside the bracket (every evaluation is one round of communication)
    seen = {reward: (eps, u, g)}
    lo = reward if g > 0 else None  # slope > 0 at lo
    hi = reward if g < 0 else None  # slope < 0 at hi
    step = initial_step * max(reward, cap * 1e-6)
    converged = g == 0
    while not converged and len(rewards) < max_iter and (lo is None or hi is None):
        if lo is not None:  # the slope is positive: climb to the right
            if lo >= cap:
                reward, converged = lo, True
                break
            r = min(lo + step, cap)
        else:  # the slope is negative: go left
            if hi <= 0.0:
                reward, converged = hi, True
                break
            r = max(0.0, hi - step)
        step *= 2
        seen[r] = ask(r)
        if seen[r][2] > 0:
            lo = r
        elif seen[r][2] < 0:
            hi = r
        else:
            reward, converged = r, True
    if not converged and lo is not None and hi is not None and len(rewards) < max_iter:

        def slope(r: float) -> float:
            if r not in seen:
                seen[r] = ask(r)
            return float(np.clip(seen[r][2], -1e300, 1e300))

        reward, info = brentq(slope, lo, hi, xtol=tol * hi, rtol=_RTOL,
                              maxiter=max_iter - len(rewards), full_output=True, disp=False)
        reward = float(reward)
        converged = bool(info.converged)
        if reward not in seen:
            seen[reward] = ask(reward)
    elif not converged:
        reward = lo if lo is not None else hi
    eps, u, _ = seen[reward]
    return SearchResult(reward, eps, u, len(rewards), converged, np.array(rewards),
                        np.array(utilities), np.array(gradients))


def distributed_search(
    market: Market,
    *,
    initial_reward: float | None = None,
    learning_rate: float | None = None,
    estimator: Literal["exact", "paper"] = "exact",
    initial_step: float = 0.01,
    scan: int = 12,
    tol: float = 1e-10,
    max_iter: int = 500,
) -> SearchResult:
    """Algorithm 3 of Wu et al. (2021) on ``market``: the SP (:func:`gradient_search`) gets only
    :func:`public_info` and :func:`vehicle_oracle`; the vehicles' utilities are added after."""
    market = _check_market(market)
    res = gradient_search(public_info(market), vehicle_oracle(market),
                          initial_reward=initial_reward, learning_rate=learning_rate,
                          estimator=estimator, initial_step=initial_step, scan=scan,
                          tol=tol, max_iter=max_iter)
    return dataclasses.replace(res, vehicle_utilities=vehicle_utilities(market, res.eps,
                                                                        res.reward))


# --------------------------------------------------------------------------------------------
# The linear approach
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LinearPricingResult:
    r"""Outcome of :func:`linear_pricing`: the posted ``price`` per unit of :math:`\epsilon`,
    the budgets, the total payment ``reward`` :math:`= p\sum_i\epsilon_i` and the utilities."""

    price: float
    reward: float
    eps: np.ndarray
    sp_utility: float
    vehicle_utilities: np.ndarray

    @property
    def mean_vehicle_utility(self) -> float:
        return float(np.mean(self.vehicle_utilities))


def linear_pricing(market: Market, *, price: float | None = None) -> LinearPricingResult:
    r"""The linear approach of Sect. 6.2: each vehicle is paid a posted price :math:`p` per unit
    of privacy budget, independently of the others.

    Vehicle :math:`i` earns :math:`(p - k_i)\epsilon_i`, linear in :math:`\epsilon_i`, so it
    plays :math:`\epsilon_{\max}` if :math:`p \ge k_i` and :math:`\epsilon_{\min}` otherwise.
    With ``price=None`` the SP posts the best price; :math:`U_S(p)` only jumps at the
    :math:`k_i` and falls in between, so the best price is 0 or one of the :math:`k_i`.  The SP
    needs no private information to find it: an ascending price clock reveals each
    :math:`k_i` as the price at which vehicle :math:`i` switches.
    """
    market = _check_market(market)
    k = market.costs
    lam, a, b = market.profit, market.accuracy_a, market.accuracy_b
    if price is None:
        order = np.argsort(k, kind="stable")
        k_sorted = k[order]
        gain = a * market._inv_speed[order] * (math.log1p(b * market.eps_max)
                                              - math.log1p(b * market.eps_min))
        acc = market.accuracy_bounds[0] + np.cumsum(gain)
        # at price k_(j) every vehicle with k_i <= k_(j) switches (ties switch together)
        j = np.searchsorted(k_sorted, k_sorted, side="right")
        pay = k_sorted * (j * market.eps_max + (market.n_vehicles - j) * market.eps_min)
        values = lam * acc[j - 1] - pay
        best = int(np.argmax(values))
        price = float(k_sorted[best]) if values[best] > lam * market.accuracy_bounds[0] else 0.0
    else:
        price = check_positive_float("price", price, allow_zero=True)
    eps = np.where(k <= price, market.eps_max, market.eps_min)
    reward = price * float(eps.sum())
    return LinearPricingResult(price, reward, eps, sp_utility(market, eps, reward),
                               (price - k) * eps)


# --------------------------------------------------------------------------------------------
# Experiments of Sect. 6.2 (Figs. 6-9) and timings
# --------------------------------------------------------------------------------------------
class Comparison(NamedTuple):
    """The three approaches of Fig. 6 on one market (two estimators for the distributed one)."""

    centralised: StackelbergResult
    distributed: SearchResult
    distributed_paper: SearchResult
    linear: LinearPricingResult


APPROACHES = ("centralised", "distributed", "distributed_paper", "linear")


def compare_approaches(market: Market, *, initial_reward: float | None = None,
                       tol: float = 1e-10) -> Comparison:
    """Run the centralised SE, Algorithm 3 with the exact and with the paper's slope
    estimator (same start) and the best linear price on one market."""
    market = _check_market(market)
    return Comparison(
        stackelberg_equilibrium(market),
        distributed_search(market, initial_reward=initial_reward, tol=tol),
        distributed_search(market, initial_reward=initial_reward, tol=tol, estimator="paper"),
        linear_pricing(market),
    )


@dataclass(frozen=True)
class Sweep:
    r"""Averages over random markets of :func:`sweep_approaches`.

    ``sp[name]`` and ``vehicle[name]`` are arrays of shape ``(len(values), n_markets)`` with the
    SP utility and the mean vehicle utility of approach ``name`` (see ``APPROACHES``);
    ``reward[name]`` the reward paid.  ``at_min`` and ``negative`` hold, per market, the share
    of vehicles at :math:`\epsilon_{\min}` and with negative utility at the centralised SE.
    ``mean`` / ``ci95`` give the average over markets and the half-width of its normal 95 %
    confidence interval.
    """

    parameter: str
    values: np.ndarray
    sp: dict
    vehicle: dict
    reward: dict
    n_markets: int
    at_min: np.ndarray
    negative: np.ndarray

    @staticmethod
    def mean(a: np.ndarray) -> np.ndarray:
        return np.asarray(a).mean(axis=1)

    @staticmethod
    def ci95(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        if a.shape[1] < 2:
            return np.zeros(a.shape[0])
        return 1.96 * a.std(axis=1, ddof=1) / math.sqrt(a.shape[1])

    def gap(self, name: str = "distributed") -> np.ndarray:
        """Relative SP-utility loss of ``name`` w.r.t. the centralised optimum, per market (%)."""
        c = self.sp["centralised"]
        return 100.0 * (c - self.sp[name]) / np.abs(c)


_PARAMETERS = ("profit", "privacy", "n_vehicles", "speed")


def _spec_for(spec: MarketSpec, parameter: str, value: float) -> MarketSpec:
    if parameter == "profit":
        return spec.replace(profit=float(value))
    if parameter == "privacy":
        return spec.replace(privacy_range=(float(value), float(value)))
    if parameter == "n_vehicles":
        return spec.replace(n_vehicles=int(value))
    if parameter == "speed":
        return spec.replace(speed_range=(float(value), float(value)))
    raise ValueError(f"parameter must be one of {_PARAMETERS}, got {parameter!r}")


def sweep_approaches(spec: MarketSpec, parameter: str, values, *, n_markets: int = 20,
                     seed: int = 0) -> Sweep:
    """Figs. 6–9: every approach on ``n_markets`` random markets per value of ``parameter``.

    ``parameter`` is ``"profit"`` (λ), ``"privacy"`` (every :math:`c_i` set to the value),
    ``"n_vehicles"`` or ``"speed"`` (every :math:`v_i` set to the value); the other quantities
    are drawn from ``spec``.  Market ``j`` is drawn with ``numpy.random.default_rng([seed, j])``
    for every value (common random numbers, so the curves are comparable).
    """
    if not isinstance(spec, MarketSpec):
        raise TypeError(f"spec must be a MarketSpec, got {type(spec).__name__}")
    if parameter not in _PARAMETERS:
        raise ValueError(f"parameter must be one of {_PARAMETERS}, got {parameter!r}")
    n_markets = check_positive_int("n_markets", n_markets)
    seed = check_positive_int("seed", seed, allow_zero=True)
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {values.shape}")
    shape = (values.size, n_markets)
    sp = {k: np.empty(shape) for k in APPROACHES}
    veh = {k: np.empty(shape) for k in APPROACHES}
    rew = {k: np.empty(shape) for k in APPROACHES}
    at_min, negative = np.empty(shape), np.empty(shape)
    for a, value in enumerate(values):
        sub = _spec_for(spec, parameter, value)
        for j in range(n_markets):
            market = sub.draw(np.random.default_rng([seed, j]))
            res = compare_approaches(market)
            for name in APPROACHES:
                r = getattr(res, name)
                sp[name][a, j] = r.sp_utility
                veh[name][a, j] = float(np.mean(r.vehicle_utilities))
                rew[name][a, j] = r.reward
            at_min[a, j] = float(np.mean(res.centralised.eps == market.eps_min))
            negative[a, j] = float(np.mean(res.centralised.vehicle_utilities < 0))
    return Sweep(parameter, values, sp, veh, rew, n_markets, at_min, negative)


def time_scaling(sizes: Sequence[int], *, solver: Literal["nash", "stackelberg", "dynamics"],
                 spec: MarketSpec, seed: int = 0, repeats: int = 3,
                 reward_fraction: float = 0.3, damping: float = 0.5,
                 tol: float = 1e-9) -> list[dict]:
    """Wall-clock seconds (best of ``repeats``) of a solver on a random market of each size.

    ``nash`` and ``dynamics`` (damped Jacobi best-response dynamics to ``tol``) are run at the
    reward ``reward_fraction`` × :attr:`PublicInfo.reward_cap`; ``stackelberg`` solves the whole
    game.  Returns one dict per size (``n``, ``seconds`` and, for ``dynamics``, ``iterations``,
    ``converged`` and ``distance`` to the exact NE).  Timings depend on the machine and load.
    """
    if solver not in ("nash", "stackelberg", "dynamics"):
        raise ValueError(f"solver must be 'nash', 'stackelberg' or 'dynamics', got {solver!r}")
    repeats = check_positive_int("repeats", repeats)
    reward_fraction = check_positive_float("reward_fraction", reward_fraction)
    out = []
    for n in sizes:
        n = check_positive_int("size", n)
        market = random_market(spec.replace(n_vehicles=n), seed=seed)
        reward = reward_fraction * public_info(market).reward_cap
        best = math.inf
        extra: dict = {}
        for _ in range(repeats):
            t0 = time.perf_counter()
            if solver == "nash":
                nash_equilibrium(market, reward)
            elif solver == "stackelberg":
                se = stackelberg_equilibrium(market)
                extra = {"reward": se.reward, "pieces": se.pieces}
            else:
                exact = nash_equilibrium(market, reward)
                t0 = time.perf_counter()
                dyn = best_response_dynamics(market, reward, damping=damping, tol=tol,
                                             max_iter=10_000)
                extra = {"iterations": dyn.iterations, "converged": dyn.converged,
                         "distance": float(np.max(np.abs(dyn.eps - exact)))}
            best = min(best, time.perf_counter() - t0)
        out.append({"n": n, "seconds": best, **extra})
    return out
