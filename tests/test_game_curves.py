"""Tests of coinfer.game.curves: the Stackelberg equilibrium with a general accuracy curve.

The solver must (i) agree with the exact solver when the curve is the paper's log curve,
(ii) match hand-solved symmetric markets, including a curve with a kink, (iii) never be beaten
by a dense grid of rewards whose NE comes from an independent bisection, and (iv) reject bad
curves."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coinfer import game
from coinfer.game import Market, MarketSpec
from coinfer.game.curves import _piece_budgets, _pieces

from test_game import markets, reference_ne

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def log_curve(market: Market):
    return lambda e: market.accuracy_a * np.log1p(market.accuracy_b * np.asarray(e))


def logistic(low: float, high: float, mid: float, slope: float):
    """A logistic in log(eps): low + (high - low) / (1 + (mid/eps)^slope)."""
    return lambda e: low + (high - low) / (1.0 + (mid / np.asarray(e, dtype=float)) ** slope)


@SETTINGS
@given(markets())
def test_agrees_with_the_exact_solver_for_the_paper_curve(market):
    exact = game.stackelberg_equilibrium(market)
    general = game.stackelberg_equilibrium_for_curve(market, accuracy=log_curve(market))
    scale = market.profit * market.accuracy_bounds[1] + exact.reward + 1.0
    # the general solver can only lose by its tolerance, and cannot win by more than rounding
    assert abs(general.sp_utility - exact.sp_utility) <= 1e-9 * scale
    # the reward agrees where the maximum is not flat (a tie between hills may pick either)
    if abs(general.reward - exact.reward) > 1e-5 * (exact.reward + 1.0):
        u = game.sp_utility_curve(market, [general.reward, exact.reward])
        assert abs(u[0] - u[1]) <= 1e-9 * scale
    np.testing.assert_allclose(
        general.sp_utility, game.sp_utility(market, general.eps, general.reward), rtol=1e-12,
        atol=1e-9 * scale)
    # U_S is concave on every piece for this curve, so even the coarsest grid (the two ends and
    # the middle of each piece) must find the maximum: the refinement covers the end cells
    coarse = game.stackelberg_equilibrium_for_curve(market, accuracy=log_curve(market), grid=3,
                                                    refine=1)
    assert abs(coarse.sp_utility - exact.sp_utility) <= 1e-9 * scale


def test_symmetric_market_with_the_log_curve_is_solved_by_hand():
    # N identical vehicles, box never reached: eps(R) = c R with c = v(N-1)/(N^2 w) on the
    # interior piece, U_S = lam N a/v log(b c R + 1) - R, so R* = lam N a/v - 1/(b c).
    n, v, cost, e, a, b, lam = 4, 10.0, 5.0, 10.0, 2.0, 0.5, 100.0
    m = Market([v] * n, [cost] * n, e, a, b, lam, 0.01, 1e6)
    w = cost * v + e
    c = v * (n - 1) / (n * n * w)
    r_star = lam * n * a / v - 1.0 / (b * c)
    assert c * r_star > m.eps_min  # interior, as assumed
    res = game.stackelberg_equilibrium_for_curve(m, accuracy=log_curve(m))
    assert res.reward == pytest.approx(r_star, rel=1e-7)
    np.testing.assert_allclose(res.eps, c * r_star, rtol=1e-7)
    assert res.sp_utility == pytest.approx(lam * n * a / v * np.log1p(b * c * r_star) - r_star,
                                           rel=1e-12)


def test_symmetric_market_with_a_kinked_curve_is_solved_by_hand():
    # A(eps) = min(kappa eps, top): U_S = lam N/v min(kappa c R, top) - R rises with slope
    # lam N kappa c / v - 1 > 0 until kappa c R = top, then falls: R* = top / (kappa c).
    n, v, cost, e, lam = 5, 8.0, 6.0, 10.0, 1000.0
    kappa, top = 0.2, 0.9
    m = Market([v] * n, [cost] * n, e, 1.0, 1.0, lam, 0.1, 1e4)
    c = v * (n - 1) / (n * n * (cost * v + e))
    assert lam * n * kappa * c / v > 1
    r_star = top / (kappa * c)
    res = game.stackelberg_equilibrium_for_curve(
        m, accuracy=lambda x: np.minimum(kappa * np.asarray(x), top))
    assert res.reward == pytest.approx(r_star, rel=1e-8)
    # at a kink the utility error is first order in the reward's (~1.5e-8 relative)
    assert res.sp_utility == pytest.approx(lam * n / v * top - r_star, rel=1e-7)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets(), st.floats(0.0, 0.3), st.floats(0.5, 1.0), st.floats(0.0, 1.0),
       st.floats(1.0, 8.0))
def test_never_beaten_on_a_dense_grid_with_a_logistic_curve(market, low, high, where, slope):
    mid = market.eps_min * (market.eps_max / market.eps_min) ** where
    curve = logistic(low, high, mid, slope)
    res = game.stackelberg_equilibrium_for_curve(market, accuracy=curve)
    cap = game.curve_reward_cap(market, accuracy=curve)
    rewards = np.linspace(0.0, 1.2 * cap, 4001)
    eps = reference_ne(market, rewards)  # independent bisection
    grid_u = market.profit * (curve(eps) / market.speeds).sum(axis=1) - rewards
    scale = market.profit * high * (1.0 / market.speeds).sum() + cap
    assert res.sp_utility >= grid_u.max() - 1e-9 * scale
    # the reported value is the true U_S at the reported reward
    u = game.sp_utility(market, res.eps, res.reward, accuracy=curve)
    assert res.sp_utility == pytest.approx(u, rel=1e-12, abs=1e-9 * scale)
    np.testing.assert_allclose(res.eps, game.nash_equilibrium(market, res.reward))
    assert 0.0 <= res.reward <= cap


@SETTINGS
@given(markets(), st.lists(st.floats(0.0, 1.0), min_size=1, max_size=5))
def test_piece_budgets_are_the_nash_equilibrium(market, fracs):
    for lo_r, hi_r, status, n_in, w_in, c in _pieces(market):
        if not np.isfinite(hi_r):
            hi_r = 2.0 * lo_r + 1.0
        if hi_r <= lo_r or lo_r == 0.0:
            continue
        rewards = lo_r + np.array(fracs) * (hi_r - lo_r)
        got = _piece_budgets(market, status, n_in, w_in, c, rewards)
        want = np.array([game.nash_equilibrium(market, r) for r in rewards])
        np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12 * market.eps_max)


def test_curve_options_reproduce_the_paper_functions():
    m = game.random_market(MarketSpec(accuracy_a=0.5, accuracy_b=2.0, eps_min=0.5,
                                      eps_max=20.0), seed=3)
    curve = log_curve(m)
    assert game.curve_reward_cap(m, accuracy=curve) == pytest.approx(
        game.public_info(m).reward_cap, rel=1e-12)
    eps = game.nash_equilibrium(m, 50.0)
    assert game.sp_utility(m, eps, 50.0, accuracy=curve) == pytest.approx(
        game.sp_utility(m, eps, 50.0), rel=1e-12)
    rewards = [0.0, 20.0, 80.0]
    np.testing.assert_allclose(game.sp_utility_curve(m, rewards, accuracy=curve),
                               game.sp_utility_curve(m, rewards), rtol=1e-12)
    # a different curve gives a different utility: the keyword is really used
    doubled = lambda e: 2.0 * curve(e)  # noqa: E731
    assert game.sp_utility(m, eps, 50.0, accuracy=doubled) > game.sp_utility(m, eps, 50.0)


def test_a_flat_curve_pays_nothing():
    m = game.random_market(MarketSpec(accuracy_a=0.5, accuracy_b=2.0, eps_min=0.5,
                                      eps_max=20.0), seed=0)
    res = game.stackelberg_equilibrium_for_curve(m, accuracy=lambda e: np.full(np.shape(e), 0.7))
    assert res.reward == 0.0
    assert np.all(res.eps == m.eps_min)


def test_compare_accuracy_curves_is_paired_and_shaped():
    spec = MarketSpec(accuracy_a=50.0, accuracy_b=2.0, eps_min=0.5, eps_max=20.0, n_vehicles=4)
    curves = {"log": lambda e: 50.0 * np.log1p(2.0 * np.asarray(e)),
              "logistic": logistic(5.0, 97.0, 3.0, 4.0)}
    cmp = game.compare_accuracy_curves(spec, curves, n_markets=3, seed=1)
    assert cmp.curves == ("log", "logistic")
    assert cmp.eps["log"].shape == (3, 4) and cmp.reward["logistic"].shape == (3,)
    for j in range(3):
        market = spec.draw(np.random.default_rng([1, j]))
        assert cmp.sp["log"][j] == pytest.approx(game.stackelberg_equilibrium(market).sp_utility,
                                                 rel=1e-9)
    again = game.compare_accuracy_curves(spec, curves, n_markets=3, seed=1)
    np.testing.assert_array_equal(again.reward["logistic"], cmp.reward["logistic"])
    assert cmp.ci95(cmp.sp["log"]) > 0
    # each SE is optimal for its own curve: planning with the log curve loses under the logistic
    assert cmp.valued_with == "logistic"
    np.testing.assert_allclose(cmp.valued["logistic"], cmp.sp["logistic"])
    assert np.all(cmp.valued["logistic"] >= cmp.valued["log"] - 1e-9 * np.abs(cmp.sp["logistic"]))
    with pytest.raises(ValueError, match="valued_with"):
        game.compare_accuracy_curves(spec, curves, n_markets=1, valued_with="nope")


@pytest.mark.parametrize("curve, error, match", [
    ("not callable", TypeError, "callable"),
    (lambda e: 1.0, ValueError, "vectorised"),
    (lambda e: np.full(np.shape(e), np.nan), ValueError, "finite"),
    (lambda e: -np.asarray(e), ValueError, "non-decreasing"),
])
def test_bad_curves_are_rejected(curve, error, match):
    m = game.random_market(MarketSpec(accuracy_a=0.5, accuracy_b=2.0, eps_min=0.5,
                                      eps_max=20.0), seed=0)
    with pytest.raises(error, match=match):
        game.stackelberg_equilibrium_for_curve(m, accuracy=curve)
    with pytest.raises(error, match=match):
        game.sp_utility_curve(m, [1.0], accuracy=curve)


def test_bad_solver_options_are_rejected():
    m = game.random_market(MarketSpec(accuracy_a=0.5, accuracy_b=2.0, eps_min=0.5,
                                      eps_max=20.0), seed=0)
    curve = log_curve(m)
    with pytest.raises(ValueError, match="grid"):
        game.stackelberg_equilibrium_for_curve(m, accuracy=curve, grid=2)
    with pytest.raises(ValueError, match="xtol"):
        game.stackelberg_equilibrium_for_curve(m, accuracy=curve, xtol=1.5)
    with pytest.raises(TypeError, match="spec"):
        game.compare_accuracy_curves("spec", {"log": curve})
