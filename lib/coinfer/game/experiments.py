r"""Experiments (book Sects. 4.5, 4.6 and 4.8): the paper's Figs. 6–9, curves, timings.

:func:`compare_approaches` runs the centralised SE, Algorithm 3 (exact and paper's slope
estimator) and the best linear price on one market; :func:`sweep_approaches` averages them over
random markets while one parameter varies (a :class:`Sweep`);
:func:`compare_accuracy_curves` solves the same markets under several accuracy curves (a
:class:`CurveComparison`); :func:`time_scaling` times the
solvers on growing markets; :func:`trend` turns a curve into a word for the book's sentences.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, NamedTuple, Sequence

import numpy as np

from ..config import check_positive_float, check_positive_int
from .curves import stackelberg_equilibrium_for_curve
from .dynamics import best_response_dynamics
from .market import Market, MarketSpec, _check_market, public_info, random_market, sp_utility
from .mechanisms import LinearPricingResult, SearchResult, distributed_search, linear_pricing
from .nash import nash_equilibrium
from .stackelberg import StackelbergResult, stackelberg_equilibrium

__all__ = [
    "compare_approaches",
    "Comparison",
    "APPROACHES",
    "sweep_approaches",
    "Sweep",
    "time_scaling",
    "trend",
    "compare_accuracy_curves",
    "CurveComparison",
]


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


@dataclass(frozen=True)
class CurveComparison:
    r"""The SE of the same random markets under several accuracy curves
    (:func:`compare_accuracy_curves`).

    For every curve ``name`` (in ``curves``): ``reward[name]``, ``sp[name]`` (:math:`U_S` with
    that curve), ``vehicle[name]`` (mean vehicle utility), ``negative[name]`` (share of
    vehicles with :math:`U_i < 0`) and ``at_min[name]`` (share at :math:`\epsilon_{\min}`) have
    shape ``(n_markets,)``; ``eps[name]`` has shape ``(n_markets, n_vehicles)``.
    ``valued[name]`` is :math:`U_S` at curve ``name``'s SE valued with the curve
    ``valued_with`` (the one taken as the truth), so ``valued[valued_with] - valued[name]
    >= 0`` is what the SP loses by planning with curve ``name``.  ``mean`` / ``ci95`` give the
    average over markets and the half-width of its normal 95 % confidence interval.
    """

    curves: tuple[str, ...]
    reward: dict
    sp: dict
    vehicle: dict
    eps: dict
    negative: dict
    at_min: dict
    valued: dict
    valued_with: str
    n_markets: int

    @staticmethod
    def mean(a) -> float:
        return float(np.mean(a))

    @staticmethod
    def ci95(a) -> float:
        a = np.asarray(a, dtype=float)
        return 0.0 if a.size < 2 else float(1.96 * a.std(ddof=1) / math.sqrt(a.size))


def compare_accuracy_curves(spec: MarketSpec, curves: Mapping[str, Callable], *,
                            n_markets: int = 20, seed: int = 0,
                            valued_with: str | None = None) -> CurveComparison:
    r"""The SE (:func:`stackelberg_equilibrium_for_curve`) of ``n_markets`` random markets under
    each accuracy curve of ``curves`` (name → vectorised, non-decreasing :math:`A(\epsilon)`).

    Market ``j`` is ``spec.draw(numpy.random.default_rng([seed, j]))`` — the same draws as
    :func:`sweep_approaches` — and every curve plays on the same markets, so the differences are
    paired.  The vehicles' NE for a given reward does not depend on the curve; the curves change
    the reward the SP chooses.  ``valued_with`` (default: the last curve) names the curve with
    which every SE is also valued (``CurveComparison.valued``).
    """
    if not isinstance(spec, MarketSpec):
        raise TypeError(f"spec must be a MarketSpec, got {type(spec).__name__}")
    if not isinstance(curves, Mapping) or not curves:
        raise TypeError(f"curves must be a non-empty mapping name -> callable, got {curves!r}")
    n_markets = check_positive_int("n_markets", n_markets)
    seed = check_positive_int("seed", seed, allow_zero=True)
    names = tuple(curves)
    if valued_with is None:
        valued_with = names[-1]
    if valued_with not in curves:
        raise ValueError(f"valued_with must be one of {names}, got {valued_with!r}")
    out = {key: {k: [] for k in names}
           for key in ("reward", "sp", "vehicle", "eps", "negative", "at_min", "valued")}
    for j in range(n_markets):
        market = spec.draw(np.random.default_rng([seed, j]))
        for name in names:
            se = stackelberg_equilibrium_for_curve(market, accuracy=curves[name])
            out["reward"][name].append(se.reward)
            out["sp"][name].append(se.sp_utility)
            out["vehicle"][name].append(se.mean_vehicle_utility)
            out["eps"][name].append(se.eps)
            out["negative"][name].append(float(np.mean(se.vehicle_utilities < 0)))
            out["at_min"][name].append(float(np.mean(se.eps == market.eps_min)))
            out["valued"][name].append(sp_utility(market, se.eps, se.reward,
                                                  accuracy=curves[valued_with]))
    arrays = {key: {k: np.array(v) for k, v in d.items()} for key, d in out.items()}
    return CurveComparison(names, valued_with=valued_with, n_markets=n_markets, **arrays)


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


# --------------------------------------------------------------------------------------------
# Words for the book
# --------------------------------------------------------------------------------------------
def trend(values) -> str:
    """``"increases"``, ``"decreases"`` or ``"is not monotone"`` (for sentences in the book)."""
    d = np.diff(np.asarray(values, dtype=float))
    if np.all(d > 0):
        return "increases"
    if np.all(d < 0):
        return "decreases"
    return "is not monotone"
