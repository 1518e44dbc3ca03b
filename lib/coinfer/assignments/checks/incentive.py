"""Checkers of assignment 4, the incentive game (chapter 4): vehicle utilities, best reply,
Nash equilibrium and the service provider's utility curve.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .base import TaskResult, _as_array, _as_float, _close, _fmt, call, run_checks

__all__ = [
    "check_vehicle_utilities",
    "check_best_reply",
    "check_nash",
    "check_sp_curve",
]


def _markets():
    """Four fixed markets: 2, 5 and 12 vehicles drawn as in the paper, and 6 similar vehicles
    (whose equilibrium is inside the bounds for moderate rewards)."""
    from ...game import MarketSpec, random_market

    spec = MarketSpec(accuracy_a=1.0, accuracy_b=0.5, eps_min=0.5, eps_max=8.0)
    similar = spec.replace(n_vehicles=6, speed_range=(9.0, 11.0), privacy_range=(6.0, 7.0))
    return [random_market(spec.replace(n_vehicles=n), seed=s)
            for n, s in ((2, 101), (5, 102), (12, 103))] + [random_market(similar, seed=104)]


def _profile(market, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(market.eps_min, market.eps_max, market.n_vehicles)


def check_vehicle_utilities(utilities: Callable, *, task: str = "4.1", quiet: bool = False
                            ) -> TaskResult:
    """Check ``utilities(market, eps, reward) -> array`` against
    :func:`coinfer.game.vehicle_utilities` (Eq. (7) of Wu et al. 2021)."""
    from ... import game

    markets = _markets()

    def compare(market, eps, reward):
        got = _as_array(call(utilities, market, eps, reward), (market.n_vehicles,), "U")
        if isinstance(got, str):
            return got
        ref = game.vehicle_utilities(market, eps, reward)
        if not np.allclose(got, ref, rtol=1e-9, atol=1e-9 * max(1.0, reward)):
            return (f"wrong utilities for {market.n_vehicles} vehicles and R={reward:g} "
                    f"(got U_0={_fmt(float(got[0]))})")
        return None

    def general():
        for j, m in enumerate(markets):
            for reward in (100.0, 2500.0):
                problem = compare(m, _profile(m, 10 + j), reward)
                if problem:
                    return problem
        return None

    def no_reward():
        m = markets[1]
        return compare(m, _profile(m, 20), 0.0)

    def at_bounds():
        m = markets[2]
        eps = np.where(np.arange(m.n_vehicles) % 2 == 0, m.eps_min, m.eps_max)
        return compare(m, eps, 700.0)

    def shares():
        m = markets[2]
        eps = _profile(m, 30)
        got = _as_array(call(utilities, m, eps, 900.0), (m.n_vehicles,), "U")
        if isinstance(got, str):
            return got
        total = float(np.sum(got + eps * m.costs))
        return None if _close(total, 900.0, rtol=1e-9) else \
            f"the vehicles' reward shares add up to {_fmt(total)} instead of R = 900"

    def list_input():
        m = markets[0]
        eps = [m.eps_min, m.eps_max]
        before = list(eps)
        problem = compare(m, eps, 50.0)
        if problem:
            return problem + " (eps given as a list)"
        return None if eps == before else "the function modified eps"

    checks = [
        ("random profiles", general),
        ("zero reward", no_reward),
        ("budgets at the bounds", at_bounds),
        ("reward shares", shares),
        ("list input", list_input),
    ]
    return run_checks(task, "vehicle utilities", utilities, checks, quiet=quiet)


def check_best_reply(best_reply: Callable, *, task: str = "4.2", quiet: bool = False
                     ) -> TaskResult:
    """Check ``best_reply(market, eps, reward, i) -> float`` against
    :func:`coinfer.game.best_response` (Eq. (15) with the budget bounds)."""
    from ... import game

    markets = _markets()

    def reply(m, eps, reward, i):
        return _as_float(call(best_reply, m, eps, reward, i), f"best_reply(..., i={i})")

    def compare(m, eps, reward, indices, what):
        for i in indices:
            got = reply(m, eps, reward, i)
            if isinstance(got, str):
                return got
            ref = game.best_response(m, eps, reward, i)
            if not _close(got, ref, rtol=1e-8, atol=1e-10):
                return f"wrong reply {what} (R={reward:g}, vehicle {i}: got {_fmt(got)})"
        return None

    def interior():
        # rewards at which every reply of the similar vehicles is strictly inside the box
        m = markets[3]
        eps = np.full(m.n_vehicles, 2.0)
        for reward in (100.0, 200.0):
            br = game.best_response(m, eps, reward)
            assert np.all((br > m.eps_min) & (br < m.eps_max)), "checker: not interior"
        return compare(m, eps, 100.0, range(m.n_vehicles), "inside the bounds") or \
            compare(m, eps, 200.0, range(m.n_vehicles), "inside the bounds")

    def lower():
        m = markets[2]
        eps = np.full(m.n_vehicles, m.eps_max)
        assert np.all(game.best_response(m, eps, 150.0) == m.eps_min)
        return compare(m, eps, 150.0, (0, 5, 11), "when eps_min binds")

    def upper():
        m = markets[1]
        eps = np.full(m.n_vehicles, m.eps_max)
        assert np.all(game.best_response(m, eps, 1e5) == m.eps_max)
        return compare(m, eps, 1e5, range(m.n_vehicles), "when eps_max binds")

    def zero():
        m = markets[0]
        return compare(m, np.array([1.0, 3.0]), 0.0, (0, 1), "for a zero reward")

    def own_budget():
        m = markets[2]
        eps = _profile(m, 40)
        first = reply(m, eps, 1200.0, 3)
        eps2 = eps.copy()
        eps2[3] = m.eps_min if eps[3] > 0.5 * (m.eps_min + m.eps_max) else m.eps_max
        second = reply(m, eps2, 1200.0, 3)
        if isinstance(first, str) or isinstance(second, str):
            return first if isinstance(first, str) else second
        return None if _close(first, second, rtol=1e-12) else \
            "the reply depends on the vehicle's own current budget eps[i]"

    def maximises():
        m = markets[2]
        eps = _profile(m, 50)
        for reward in (300.0, 1200.0, 6000.0):
            for i in (1, 7):
                got = reply(m, eps, reward, i)
                if isinstance(got, str):
                    return got
                if not m.eps_min <= got <= m.eps_max:
                    return f"the reply {_fmt(got)} lies outside [eps_min, eps_max]"
                grid = np.linspace(m.eps_min, m.eps_max, 2001)
                trial = np.repeat(eps[None, :], grid.size, axis=0)
                trial[:, i] = grid
                x = trial / m.speeds
                u_grid = reward * x[:, i] / x.sum(axis=1) - grid * m.costs[i]
                mine = eps.copy()
                mine[i] = got
                u_mine = game.vehicle_utilities(m, mine, reward)[i]
                if u_grid.max() > u_mine + 1e-9 * max(1.0, abs(u_mine)):
                    return f"vehicle {i} can do better than the reply at R={reward:g}"
        return None

    checks = [
        ("interior reply", interior),
        ("lower bound", lower),
        ("upper bound", upper),
        ("zero reward", zero),
        ("own budget", own_budget),
        ("maximises U_i", maximises),
    ]
    return run_checks(task, "best response", best_reply, checks, quiet=quiet)


def check_nash(nash: Callable, *, task: str = "4.3", quiet: bool = False) -> TaskResult:
    """Check ``nash(market, reward) -> array`` against :func:`coinfer.game.nash_equilibrium`."""
    from ... import game

    markets = _markets()

    def compare(m, reward, what, rtol=1e-6):
        got = _as_array(call(nash, m, reward), (m.n_vehicles,), "the equilibrium")
        if isinstance(got, str):
            return got
        ref = game.nash_equilibrium(m, reward)
        if not np.allclose(got, ref, rtol=rtol, atol=1e-9 * m.eps_max):
            return f"wrong equilibrium {what} (R={reward:g})"
        return None

    def interior():
        m = markets[3]
        for reward in (100.0, 200.0):
            ne = game.nash_equilibrium(m, reward)
            assert np.all((ne > m.eps_min) & (ne < m.eps_max)), "checker: not interior"
            problem = compare(m, reward, "with every vehicle inside the bounds")
            if problem:
                return problem
        return None

    def mixed():
        m = markets[2]
        ne = game.nash_equilibrium(m, 500.0)
        assert np.any(ne == m.eps_min) and np.any(ne == m.eps_max), "checker: no bound binds"
        assert np.any((ne > m.eps_min) & (ne < m.eps_max)), "checker: nobody inside"
        return compare(m, 500.0, "with some vehicles at a bound")

    def zero():
        return compare(markets[0], 0.0, "for a zero reward")

    def huge():
        m = markets[1]
        assert np.all(game.nash_equilibrium(m, 1e7) == m.eps_max)
        return compare(m, 1e7, "for a huge reward")

    def two():
        m = markets[0]
        return compare(m, 300.0, "for two vehicles")

    def fixed_point():
        m = markets[2]
        for reward in (500.0, 800.0):
            got = _as_array(call(nash, m, reward), (m.n_vehicles,), "the equilibrium")
            if isinstance(got, str):
                return got
            if np.any(got < m.eps_min) or np.any(got > m.eps_max):
                return "the equilibrium leaves [eps_min, eps_max]"
            br = game.best_response(m, got, reward)
            if not np.allclose(br, got, rtol=1e-6, atol=1e-9 * m.eps_max):
                return f"some vehicle would change its budget (R={reward:g}): not an equilibrium"
        return None

    checks = [
        ("interior equilibrium", interior),
        ("bounds binding", mixed),
        ("zero reward", zero),
        ("huge reward", huge),
        ("two vehicles", two),
        ("no vehicle wants to deviate", fixed_point),
    ]
    return run_checks(task, "Nash equilibrium", nash, checks, quiet=quiet)


def check_sp_curve(sp_curve: Callable, *, task: str = "4.4", quiet: bool = False
                   ) -> TaskResult:
    """Check ``sp_curve(market, rewards) -> array`` (:math:`U_S` at the NE) against
    :func:`coinfer.game.sp_utility_curve`."""
    from ... import game

    markets = _markets()

    def compare(m, rewards, what):
        rewards = np.asarray(rewards, dtype=float)
        got = _as_array(call(sp_curve, m, rewards), rewards.shape, "U_S")
        if isinstance(got, str):
            return got
        ref = game.sp_utility_curve(m, rewards)
        bad = ~np.isclose(got, ref, rtol=1e-6, atol=1e-6)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            return f"wrong U_S {what} at R={rewards[k]:g} (got {_fmt(float(got[k]))})"
        return None

    checks = [
        ("a grid of rewards", lambda: compare(markets[2], np.linspace(0, 5000, 11), "")),
        ("zero reward", lambda: compare(markets[1], [0.0], "with nobody paid")),
        ("huge reward", lambda: compare(markets[1], [1e6], "with everybody at eps_max")),
        ("two vehicles", lambda: compare(markets[0], [10.0, 200.0, 900.0], "for two vehicles")),
    ]
    return run_checks(task, "the leader's utility", sp_curve, checks, quiet=quiet)
