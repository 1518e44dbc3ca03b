r"""The mechanisms (book Sect. 4.4): Algorithm 3 (the distributed search) and the linear baseline.

In Algorithm 3 of Wu et al. (2021) the SP announces a reward, reads the vehicles' reported
budgets and updates the reward.  :func:`gradient_search` is the SP's side: it sees only a
:class:`~coinfer.game.PublicInfo` and the reports of :func:`vehicle_oracle`, and
estimates the slope with :func:`estimate_gradient` (Eq. (28) or the exact estimator);
:func:`distributed_search` runs both sides on a market.  :func:`linear_pricing` is the linear
approach of Sect. 6.2: a posted price per unit of privacy budget.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
from scipy.optimize import brentq

from ..config import check_positive_float, check_positive_int
from .market import (_EPS, _RTOL, Market, PublicInfo, _check_market, _check_reward,
                     public_info, sp_utility, vehicle_utilities)
from .nash import nash_equilibrium

__all__ = [
    "vehicle_oracle",
    "estimate_gradient",
    "gradient_search",
    "distributed_search",
    "SearchResult",
    "linear_pricing",
    "LinearPricingResult",
]


# --------------------------------------------------------------------------------------------
# The distributed approach (Algorithm 3): the SP sees only public information and the reports
# --------------------------------------------------------------------------------------------
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
