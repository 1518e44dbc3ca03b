"""Tests of coinfer.game: exact equilibria, the paper's closed form, the leader's global optimum,
Algorithm 3, the linear baseline and input validation (hypothesis-generated markets)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from coinfer import game
from coinfer.game import Market, MarketSpec

SETTINGS = settings(max_examples=30, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])

# The paper's simulation ranges (Sect. 6.2) with a stand-in accuracy curve.
PAPER = MarketSpec(accuracy_a=0.5, accuracy_b=2.0, eps_min=0.5, eps_max=20.0)


# --------------------------------------------------------------------------------------------
# strategies and an independent reference solver
# --------------------------------------------------------------------------------------------
@st.composite
def markets(draw, min_n: int = 2, max_n: int = 7) -> Market:
    n = draw(st.integers(min_n, max_n))
    pos = lambda lo, hi: st.floats(lo, hi, allow_nan=False, allow_infinity=False)  # noqa: E731
    speeds = draw(st.lists(pos(1.0, 30.0), min_size=n, max_size=n))
    privacy = draw(st.lists(pos(0.5, 20.0), min_size=n, max_size=n))
    eps_min = draw(pos(0.05, 2.0))
    return Market(speeds, privacy, draw(pos(0.0, 20.0)), draw(pos(0.02, 2.0)),
                  draw(pos(0.1, 10.0)), draw(pos(10.0, 5000.0)), eps_min,
                  eps_min * draw(pos(1.5, 100.0)))


def reference_ne(market: Market, rewards: np.ndarray) -> np.ndarray:
    """NE budgets for many rewards at once by plain bisection on the aggregate S (independent
    of the library's solver): the NE aggregate is the unique S with sum_i r_i(S) = S."""
    rewards = np.asarray(rewards, dtype=float)[:, None]
    w, lo, hi = market.weights, market.x_min, market.x_max
    a = np.full(rewards.shape, lo.sum())
    b = np.full(rewards.shape, hi.sum())
    safe = np.where(rewards > 0, rewards, 1.0)

    def resp(s):
        x = np.clip(s - w * s * s / safe, lo, hi)
        return np.where(rewards > 0, x, lo)

    for _ in range(200):
        m = 0.5 * (a + b)
        above = resp(m).sum(axis=1, keepdims=True) > m
        a = np.where(above, m, a)
        b = np.where(above, b, m)
    return resp(0.5 * (a + b)) * market.speeds


def reference_sp_utility(market: Market, rewards: np.ndarray) -> np.ndarray:
    eps = reference_ne(market, rewards)
    acc = market.accuracy_a * (np.log1p(market.accuracy_b * eps) / market.speeds).sum(axis=1)
    return market.profit * acc - np.asarray(rewards)


def deviation_gain(market: Market, eps: np.ndarray, reward: float) -> float:
    """Largest gain of a unilateral deviation (bounded scalar optimiser + both end points)."""
    x = eps / market.speeds
    base = game.vehicle_utilities(market, eps, reward)
    worst = -math.inf
    for i in range(market.n_vehicles):
        others = x.sum() - x[i]

        def u(e, i=i, others=others):
            xi = e / market.speeds[i]
            return reward * xi / (others + xi) - e * market.costs[i]

        res = minimize_scalar(lambda e: -u(e), bounds=(market.eps_min, market.eps_max),
                              method="bounded", options={"xatol": 1e-13 * market.eps_max})
        best = max(-res.fun, u(market.eps_min), u(market.eps_max))
        worst = max(worst, best - base[i])
    return worst


# --------------------------------------------------------------------------------------------
# the Nash equilibrium
# --------------------------------------------------------------------------------------------
@SETTINGS
@given(markets(), st.floats(0.0, 1.0))
def test_nash_equilibrium_no_profitable_deviation(market, frac):
    reward = frac * 1.5 * game.public_info(market).reward_cap
    eps = game.nash_equilibrium(market, reward)
    assert eps.shape == (market.n_vehicles,)
    assert np.all((eps >= market.eps_min) & (eps <= market.eps_max))
    assert deviation_gain(market, eps, reward) <= 1e-9 * reward + 1e-12


@SETTINGS
@given(markets(), st.floats(1e-3, 1.5))
def test_nash_equilibrium_matches_reference_and_is_a_fixed_point(market, frac):
    reward = frac * game.public_info(market).reward_cap
    eps = game.nash_equilibrium(market, reward)
    np.testing.assert_allclose(eps, reference_ne(market, [reward])[0], rtol=1e-9,
                               atol=1e-12 * market.eps_max)
    np.testing.assert_allclose(game.best_response(market, eps, reward), eps, rtol=1e-9,
                               atol=1e-12 * market.eps_max)
    s = game.equilibrium_aggregate(market, reward)
    assert math.isclose(s, float((eps / market.speeds).sum()), rel_tol=1e-12)


@SETTINGS
@given(markets(), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_nash_budgets_are_monotone_in_the_reward(market, f1, f2):
    cap = game.public_info(market).reward_cap
    r1, r2 = sorted((f1 * cap, f2 * cap))
    e1, e2 = game.nash_equilibrium(market, r1), game.nash_equilibrium(market, r2)
    assert np.all(e1 <= e2 * (1 + 1e-9))


def test_nash_equilibrium_at_zero_reward_is_eps_min():
    market = game.random_market(PAPER, seed=3)
    np.testing.assert_array_equal(game.nash_equilibrium(market, 0.0),
                                  np.full(market.n_vehicles, market.eps_min))
    # a huge reward puts everyone at eps_max
    np.testing.assert_allclose(game.nash_equilibrium(market, 1e12), market.eps_max)


def test_nash_equilibrium_large_market_is_exact():
    market = game.random_market(PAPER.replace(n_vehicles=200_000), seed=0)
    reward = 0.3 * game.public_info(market).reward_cap
    eps = game.nash_equilibrium(market, reward)
    x = eps / market.speeds
    s = x.sum()
    # the KKT conditions of every vehicle: interior ones have zero marginal utility
    grad = reward * (s - x) / s**2 - market.weights
    inside = (eps > market.eps_min) & (eps < market.eps_max)
    assert inside.any() and (eps == market.eps_min).any() and (eps == market.eps_max).any()
    assert np.max(np.abs(grad[inside]) / market.weights[inside]) < 1e-9
    assert np.all(grad[eps == market.eps_min] <= 1e-9 * market.weights[eps == market.eps_min])
    assert np.all(grad[eps == market.eps_max] >= -1e-9 * market.weights[eps == market.eps_max])


def test_best_response_single_vehicle_matches_vector():
    market = game.random_market(PAPER, seed=1)
    eps = np.linspace(market.eps_min, market.eps_max, market.n_vehicles)
    all_ = game.best_response(market, eps, 300.0)
    for i in range(market.n_vehicles):
        assert game.best_response(market, eps, 300.0, i=i) == pytest.approx(all_[i], rel=1e-14)
    # Eq. (15) in the paper's notation, unconstrained branch
    a_i = (eps / market.speeds).sum() - eps[0] / market.speeds[0]
    k, v = market.costs[0], market.speeds[0]
    paper = math.sqrt(300.0 * a_i * v / k) - a_i * v
    assert all_[0] == pytest.approx(min(max(paper, market.eps_min), market.eps_max))


# --------------------------------------------------------------------------------------------
# Theorem 3 (closed form) and Theorem 4
# --------------------------------------------------------------------------------------------
@SETTINGS
@given(markets(), st.floats(1e-3, 1.5))
def test_closed_form_is_the_ne_exactly_when_valid(market, frac):
    reward = frac * game.public_info(market).reward_cap
    cf = game.closed_form_equilibrium(market, reward)
    ne = game.nash_equilibrium(market, reward)
    assert cf.valid == bool(cf.in_bounds.all())
    if cf.valid:
        np.testing.assert_allclose(cf.eps, ne, rtol=1e-9)
    else:
        assert not np.allclose(cf.eps, ne, rtol=1e-6)
    # positivity of every entry is Theorem 3's condition w_i (N-1) < sum_j w_j
    positive = bool(np.all(cf.eps > 0))
    assert positive == game.closed_form_positive(market)
    if game.theorem4_condition(market):
        assert positive
    interval = game.closed_form_reward_interval(market)
    if interval is not None:
        lo, hi = interval
        assert game.closed_form_equilibrium(market, math.sqrt(lo * hi)).valid
        assert not game.closed_form_equilibrium(market, 0.5 * lo).valid
        np.testing.assert_allclose(game.paper_sp_utility(market, [math.sqrt(lo * hi)]),
                                   game.sp_utility_curve(market, [math.sqrt(lo * hi)]),
                                   rtol=1e-9)


def test_closed_form_negative_entries_at_paper_ranges():
    """The issue's counts: about half of the markets at N = 4, most at N = 5, all at N >= 10."""
    def share(n):
        spec = PAPER.replace(n_vehicles=n)
        return np.mean([not game.closed_form_positive(game.random_market(spec, seed=s))
                        for s in range(400)])

    assert 0.3 < share(4) < 0.7
    assert share(5) > 0.7
    assert share(10) == 1.0 and share(30) == 1.0
    # Theorem 4's condition is stricter: it fails at least as often
    assert all(not game.theorem4_condition(game.random_market(PAPER.replace(n_vehicles=4),
                                                             seed=s))
               or game.closed_form_positive(game.random_market(PAPER.replace(n_vehicles=4),
                                                              seed=s))
               for s in range(100))


@SETTINGS
@given(markets())
def test_theorem4_condition_never_holds(market):
    """sum_j w_j <= N max_i w_i < 2 (N - 1) max_i w_i for N >= 2: the condition is vacuous."""
    assert not game.theorem4_condition(market)


def test_failure_rates_helper():
    rates = game.closed_form_failure_rates(PAPER, [2, 4, 10], n_markets=300, seed=1)
    assert rates["negative"][0] == 0.0  # N = 2: w_i < w_1 + w_2 always
    assert 0.3 < rates["negative"][1] < 0.7 and rates["negative"][2] > 0.99
    np.testing.assert_array_equal(rates["theorem4_fails"], 1.0)


@SETTINGS
@given(markets(), st.floats(0.01, 2.0))
def test_consistent_responses_cross_the_diagonal_at_the_ne(market, frac):
    reward = frac * game.public_info(market).reward_cap
    s_star = game.equilibrium_aggregate(market, reward)
    eps = game.consistent_responses(market, reward, s_star)
    np.testing.assert_allclose(eps, game.nash_equilibrium(market, reward), rtol=1e-12)
    grid = np.linspace(market.x_min.sum(), market.x_max.sum(), 50)
    ratio = (game.consistent_responses(market, reward, grid) / market.speeds).sum(axis=1) / grid
    assert np.all(np.diff(ratio) < 0)  # strictly decreasing, as the chapter proves


@SETTINGS
@given(markets())
def test_zero_reward_condition_is_sufficient(market):
    low = market.replace(profit=market.profit * 1e-3)
    for m in (market, low):
        if game.zero_reward_condition(m):
            assert game.stackelberg_equilibrium(m).reward == 0.0


def test_zero_reward_threshold_gives_two_stackelberg_equilibria():
    market = game.random_market(PAPER, seed=1)
    lam = game.zero_reward_threshold(market, profit_range=(10.0, 2000.0))
    assert lam is not None
    at = market.replace(profit=lam)
    positive = max((m for m in game.sp_local_maxima(at) if m.reward > 0),
                   key=lambda m: m.sp_utility)
    assert positive.sp_utility == pytest.approx(lam * at.accuracy_bounds[0], rel=1e-9)
    assert game.stackelberg_equilibrium(market.replace(profit=lam * 0.999)).reward == 0.0
    assert game.stackelberg_equilibrium(market.replace(profit=lam * 1.001)).reward > 0.0
    assert game.zero_reward_threshold(market, profit_range=(10.0, 20.0)) is None


def test_trend_words():
    assert game.trend([1, 2, 3]) == "increases" and game.trend([3, 1]) == "decreases"
    assert game.trend([1, 3, 2]) == "is not monotone"


# --------------------------------------------------------------------------------------------
# the Stackelberg equilibrium
# --------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets())
def test_stackelberg_is_never_beaten_on_a_dense_grid(market):
    se = game.stackelberg_equilibrium(market)
    cap = game.public_info(market).reward_cap
    grid = np.concatenate([np.linspace(0.0, 1.2 * cap, 4001),
                           se.reward * np.linspace(0.9, 1.1, 201)])
    best_grid = reference_sp_utility(market, grid).max()
    assert best_grid <= se.sp_utility + 1e-9 * abs(se.sp_utility) + 1e-9
    assert se.sp_utility == pytest.approx(reference_sp_utility(market, [se.reward])[0],
                                          rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(se.eps, game.nash_equilibrium(market, se.reward))
    np.testing.assert_allclose(se.vehicle_utilities,
                               game.vehicle_utilities(market, se.eps, se.reward))
    # the global optimum is the best local maximum
    maxima = game.sp_local_maxima(market)
    assert max(m.sp_utility for m in maxima) == pytest.approx(se.sp_utility, rel=1e-9,
                                                              abs=1e-9)


@pytest.mark.parametrize("n", [600, 3000])
def test_stackelberg_branch_and_bound_agrees_with_full_sweep(n):
    """Large markets use grid + bisection + partial sweeps; compare with sweeping everything."""
    market = game.random_market(PAPER.replace(n_vehicles=n), seed=n)
    fast = game.stackelberg_equilibrium(market, grid=16, sweep_size=64)
    full = game.stackelberg_equilibrium(market, sweep_size=10 * n)
    assert fast.sp_utility == pytest.approx(full.sp_utility, rel=1e-12)
    assert fast.reward == pytest.approx(full.reward, rel=1e-8)
    assert fast.pieces < full.pieces


def test_stackelberg_optimum_can_be_zero_reward():
    market = game.random_market(PAPER.replace(profit=50.0), seed=0)
    se = game.stackelberg_equilibrium(market)
    assert se.reward == 0.0
    np.testing.assert_array_equal(se.eps, market.eps_min)


@SETTINGS
@given(markets())
def test_breakpoints_and_local_maxima(market):
    bps = game.reward_breakpoints(market)
    rewards = [b.reward for b in bps]
    assert rewards == sorted(rewards) and len(bps) == 2 * market.n_vehicles
    for bp in bps[:6]:
        r = bp.reward
        before = game._status(market, r * (1 - 1e-7))[bp.vehicle]
        after = game._status(market, r * (1 + 1e-7))[bp.vehicle]
        assert (before, after) == ((0, 1) if bp.kind == "leaves eps_min" else (1, 2)) or \
            before < after
    maxima = game.sp_local_maxima(market)
    assert maxima[0].reward == 0.0
    for m in maxima:
        if m.reward > 0:
            near = reference_sp_utility(market, m.reward * np.array([1 - 1e-6, 1 + 1e-6]))
            assert np.all(near <= m.sp_utility + 1e-9 * abs(m.sp_utility) + 1e-9)


def test_sp_utility_is_not_concave_with_bounds():
    """The counter-example to Theorem 5: several local maxima at the paper's ranges."""
    market = game.random_market(PAPER, seed=1)
    maxima = game.sp_local_maxima(market)
    assert len(maxima) >= 3
    se = game.stackelberg_equilibrium(market)
    assert se.reward == pytest.approx(maxima[1].reward)


def test_multimodal_markets_have_two_positive_peaks():
    spec = PAPER.replace(accuracy_a=10.0, accuracy_b=0.6, eps_min=1.0, eps_max=1e4)
    found = game.multimodal_markets(spec, n_candidates=120, seed=4)
    assert found == [53]  # deterministic
    market = spec.draw(np.random.default_rng([4, 53]))
    cap = game.public_info(market).reward_cap
    peaks = [m for m in game.sp_local_maxima(market) if 0 < m.reward <= cap]
    assert len(peaks) >= 2
    # between the two hills U_S dips: the function is not concave
    r1, r2 = peaks[0].reward, peaks[1].reward
    valley = reference_sp_utility(market, np.linspace(r1, r2, 200)).min()
    assert valley < min(peaks[0].sp_utility, peaks[1].sp_utility) - 1.0
    # the default (scan) start of Algorithm 3 finds the higher hill; a start on the lower hill
    # stays there, even with the exact slope
    se = game.stackelberg_equilibrium(market)
    lower = min(peaks, key=lambda m: m.sp_utility)
    assert game.distributed_search(market).sp_utility == pytest.approx(se.sp_utility, rel=1e-9)
    stuck = game.distributed_search(market, initial_reward=1.02 * lower.reward)
    assert stuck.reward == pytest.approx(lower.reward, rel=1e-6)
    assert stuck.sp_utility < se.sp_utility - 1.0


@SETTINGS
@given(markets(), st.floats(0.01, 1.0))
def test_slope_and_exact_estimator(market, frac):
    reward = frac * game.public_info(market).reward_cap
    slope = game.sp_slope(market, reward)
    eps = game.nash_equilibrium(market, reward)
    est = game.estimate_gradient(game.public_info(market), reward, eps, "exact")
    h = 1e-6 * reward
    fd = (game.sp_utility_curve(market, [reward + h])[0]
          - game.sp_utility_curve(market, [reward])[0]) / h
    inside = (eps > market.eps_min) & (eps < market.eps_max)
    on_piece = game._status(market, reward + h).tolist() == game._status(market, reward).tolist()
    assume(on_piece)
    assert slope == pytest.approx(fd, rel=1e-3, abs=1e-3)
    if inside.any():
        assert est == pytest.approx(slope, rel=1e-7, abs=1e-9)
    if game.closed_form_equilibrium(market, reward).valid:
        paper = game.estimate_gradient(game.public_info(market), reward, eps, "paper")
        assert paper == pytest.approx(slope, rel=1e-7, abs=1e-9)


# --------------------------------------------------------------------------------------------
# Algorithm 3 (distributed) and the linear approach
# --------------------------------------------------------------------------------------------
@SETTINGS
@given(markets())
def test_distributed_search_agrees_in_the_right_basin(market):
    se = game.stackelberg_equilibrium(market)
    bps = np.array([b.reward for b in game.reward_breakpoints(market)])
    r = se.reward
    if r == 0.0:
        start, step = 0.5 * bps[0], 0.25
    else:
        left = bps[bps < r * (1 - 1e-9)]
        right = bps[bps > r * (1 + 1e-9)]
        left = left[-1] if left.size else 0.0
        right = right[0] if right.size else 2 * r
        assume(right - r > 1e-6 * r and r - left > 1e-6 * r)
        start = r + 0.5 * (right - r)
        step = (start - (r - 0.5 * (r - left))) / start
    res = game.distributed_search(market, initial_reward=start, initial_step=step)
    assert res.converged
    assert res.sp_utility == pytest.approx(se.sp_utility, rel=1e-9, abs=1e-9)
    assert res.reward == pytest.approx(se.reward, rel=1e-6, abs=1e-9)
    assert res.iterations == len(res.rewards) == len(res.gradients)


def test_distributed_search_paper_estimator_overshoots_when_bounds_bind():
    market = game.random_market(PAPER, seed=0)
    se = game.stackelberg_equilibrium(market)
    start = se.reward * 1.2
    exact = game.distributed_search(market, initial_reward=start)
    paper = game.distributed_search(market, initial_reward=start, estimator="paper")
    assert exact.sp_utility == pytest.approx(se.sp_utility, rel=1e-9)
    assert paper.reward > 1.1 * se.reward and paper.sp_utility < 0.99 * se.sp_utility


def test_sp_side_sees_only_public_information():
    market = game.random_market(PAPER, seed=2)
    public = game.public_info(market)
    assert set(public._fields) == {"speeds", "accuracy_a", "accuracy_b", "profit", "eps_min",
                                   "eps_max"}
    calls = []

    def respond(r):
        calls.append(r)
        return game.nash_equilibrium(market, r)

    res = game.gradient_search(public, respond)
    assert calls == list(res.rewards)
    with pytest.raises(TypeError, match="PublicInfo"):
        game.gradient_search(market, respond)


def test_fixed_learning_rate_as_printed():
    market = game.random_market(PAPER, seed=0)
    se = game.stackelberg_equilibrium(market)
    res = game.distributed_search(market, initial_reward=0.9 * se.reward, learning_rate=20.0,
                                  tol=1e-9, max_iter=2000)
    assert res.converged
    assert res.sp_utility == pytest.approx(se.sp_utility, rel=1e-7)


@SETTINGS
@given(markets())
def test_linear_pricing_best_price(market):
    best = game.linear_pricing(market)
    k = market.costs
    np.testing.assert_array_equal(best.eps, np.where(k <= best.price, market.eps_max,
                                                     market.eps_min))
    np.testing.assert_allclose(best.vehicle_utilities, (best.price - k) * best.eps)
    assert best.reward == pytest.approx(best.price * best.eps.sum())
    for p in np.concatenate([np.linspace(0, 1.5 * k.max(), 300), k, k * (1 + 1e-9)]):
        other = game.linear_pricing(market, price=float(p))
        assert other.sp_utility <= best.sp_utility + 1e-9 * abs(best.sp_utility)


# --------------------------------------------------------------------------------------------
# best-response dynamics
# --------------------------------------------------------------------------------------------
def test_undamped_jacobi_dynamics_cycle_damped_converge():
    market = game.random_market(PAPER, seed=0)
    reward = 300.0
    exact = game.nash_equilibrium(market, reward)
    assert not game.theorem4_condition(market)
    plain = game.best_response_dynamics(market, reward, max_iter=500)
    assert not plain.converged
    # a 2-cycle: every other profile repeats
    rec = game.best_response_dynamics(market, reward, max_iter=500, record=True)
    np.testing.assert_allclose(rec.history[-1], rec.history[-3], rtol=1e-9)
    assert rec.period() == 2
    with pytest.raises(ValueError, match="record=True"):
        plain.period()
    damped = game.best_response_dynamics(market, reward, damping=0.5, target=exact)
    assert damped.converged and damped.distances[-1] < 1e-7 * market.eps_max
    seq = game.best_response_dynamics(market, reward, sequential=True, target=exact)
    assert seq.converged and seq.distances[-1] < 1e-7 * market.eps_max
    assert len(damped.changes) == damped.iterations


@SETTINGS
@given(markets(), st.floats(0.01, 1.0))
def test_damped_dynamics_reach_the_exact_ne(market, frac):
    reward = frac * game.public_info(market).reward_cap
    exact = game.nash_equilibrium(market, reward)
    dyn = game.best_response_dynamics(market, reward, sequential=True, tol=1e-12,
                                      max_iter=20_000)
    assume(dyn.converged)
    np.testing.assert_allclose(dyn.eps, exact, rtol=1e-6, atol=1e-9 * market.eps_max)


# --------------------------------------------------------------------------------------------
# experiments and timings
# --------------------------------------------------------------------------------------------
def test_sweep_is_deterministic_and_shaped():
    spec = PAPER.replace(n_vehicles=5)
    a = game.sweep_approaches(spec, "profit", [1000, 1250], n_markets=3, seed=7)
    b = game.sweep_approaches(spec, "profit", [1000, 1250], n_markets=3, seed=7)
    for name in game.APPROACHES:
        assert a.sp[name].shape == (2, 3)
        np.testing.assert_array_equal(a.sp[name], b.sp[name])
        np.testing.assert_array_equal(a.vehicle[name], b.vehicle[name])
    # the centralised SP is never beaten by a mechanism
    for name in ("distributed", "distributed_paper", "linear"):
        assert np.all(a.sp[name] <= a.sp["centralised"] * (1 + 1e-12) + 1e-9)
    assert a.mean(a.sp["centralised"]).shape == (2,) and np.all(a.ci95(a.sp["linear"]) >= 0)
    assert a.at_min.shape == a.negative.shape == (2, 3)
    assert np.all((a.at_min >= 0) & (a.at_min <= 1) & (a.negative >= 0) & (a.negative <= 1))
    assert np.all(a.gap() >= -1e-9)
    n = game.sweep_approaches(spec, "n_vehicles", [3, 4], n_markets=2)
    assert n.values.tolist() == [3, 4]
    with pytest.raises(ValueError, match="parameter"):
        game.sweep_approaches(spec, "colour", [1], n_markets=1)


def test_time_scaling_reports():
    spec = PAPER
    out = game.time_scaling([10, 100], solver="nash", spec=spec, repeats=1)
    assert [o["n"] for o in out] == [10, 100] and all(o["seconds"] > 0 for o in out)
    dyn = game.time_scaling([50], solver="dynamics", spec=spec, repeats=1)[0]
    assert dyn["converged"] and dyn["distance"] < 1e-6
    se = game.time_scaling([20], solver="stackelberg", spec=spec, repeats=1)[0]
    assert se["reward"] >= 0
    with pytest.raises(ValueError, match="solver"):
        game.time_scaling([10], solver="fast", spec=spec)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
GOOD = dict(speeds=[5.0, 10.0], privacy_values=[5.0, 6.0], unit_expense=10.0, accuracy_a=0.5,
            accuracy_b=2.0, profit=1000.0, eps_min=0.5, eps_max=20.0)


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(speeds=[5.0]), ValueError, "at least two"),
        (dict(speeds=[5.0, -1.0]), ValueError, "speeds.*entry 1"),
        (dict(speeds=[5.0, np.nan]), ValueError, "speeds"),
        (dict(speeds=[[5.0, 6.0]]), ValueError, "1-D"),
        (dict(speeds=["a", "b"]), TypeError, "speeds"),
        (dict(speeds=[True, True]), TypeError, "speeds"),
        (dict(privacy_values=[5.0]), ValueError, "one entry per vehicle"),
        (dict(privacy_values=[5.0, 0.0]), ValueError, "privacy_values"),
        (dict(privacy_values=[5.0, np.inf]), ValueError, "privacy_values"),
        (dict(unit_expense=-1.0), ValueError, "unit_expense"),
        (dict(unit_expense="10"), TypeError, "unit_expense"),
        (dict(accuracy_a=0.0), ValueError, "accuracy_a"),
        (dict(accuracy_b=np.inf), ValueError, "accuracy_b"),
        (dict(profit=-5.0), ValueError, "profit"),
        (dict(eps_min=0.0), ValueError, "eps_min"),
        (dict(eps_min=5.0, eps_max=5.0), ValueError, "eps_min must be < eps_max"),
        (dict(eps_max=True), TypeError, "eps_max"),
    ],
)
def test_market_validation(change, error, match):
    with pytest.raises(error, match=match):
        Market(**{**GOOD, **change})


def test_market_is_immutable():
    m = Market(**GOOD)
    with pytest.raises(Exception):
        m.profit = 3.0
    with pytest.raises(ValueError):
        m.speeds[0] = 1.0
    assert m.replace(profit=1200.0).profit == 1200.0 and m.profit == 1000.0
    assert m.n_vehicles == 2 and "n_vehicles=2" in repr(m)
    np.testing.assert_allclose(m.weights, m.speeds * m.costs)


def test_function_validation():
    m = Market(**GOOD)
    eps = np.array([1.0, 2.0])
    with pytest.raises(ValueError, match="reward"):
        game.nash_equilibrium(m, -1.0)
    with pytest.raises(TypeError, match="market"):
        game.nash_equilibrium("market", 1.0)
    with pytest.raises(ValueError, match=r"eps must lie in \[eps_min, eps_max\]"):
        game.vehicle_utilities(m, [0.1, 2.0], 1.0)
    with pytest.raises(ValueError, match="shape"):
        game.sp_utility(m, [1.0, 2.0, 3.0], 1.0)
    with pytest.raises(ValueError, match="vehicle index"):
        game.best_response(m, eps, 1.0, i=2)
    with pytest.raises(TypeError, match="i must be an int"):
        game.best_response(m, eps, 1.0, i=0.5)
    with pytest.raises(ValueError, match="damping"):
        game.best_response_dynamics(m, 1.0, damping=1.5)
    with pytest.raises(ValueError, match="tol"):
        game.best_response_dynamics(m, 1.0, tol=0.0)
    with pytest.raises(ValueError, match="estimator"):
        game.distributed_search(m, estimator="guess")
    with pytest.raises(ValueError, match="estimator"):
        game.estimate_gradient(game.public_info(m), 1.0, eps, "guess")
    with pytest.raises(ValueError, match="learning_rate"):
        game.distributed_search(m, learning_rate=-1.0)
    with pytest.raises(ValueError, match="price"):
        game.linear_pricing(m, price=-1.0)
    with pytest.raises(ValueError, match="grid"):
        game.stackelberg_equilibrium(m, grid=0)
    with pytest.raises(TypeError, match="rng"):
        PAPER.draw(3)
    with pytest.raises(ValueError, match="n_vehicles"):
        PAPER.replace(n_vehicles=1)
    with pytest.raises(ValueError, match="speed_range"):
        PAPER.replace(speed_range=(10.0, 5.0))
    with pytest.raises(ValueError, match="seed"):
        game.random_market(PAPER, seed=-1)
