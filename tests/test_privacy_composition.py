"""Tests of coinfer.privacy.composition: basic, advanced and optimal composition; group privacy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from coinfer.privacy import (
    advanced_composition,
    basic_composition,
    group_privacy,
    optimal_composition_delta,
    optimal_composition_epsilon,
)


def _rr_profile_bruteforce(eps, k, eps_total):
    """δ(ε') of k randomised responses by enumerating all 2^k outputs for inputs 0…0 vs 1…1."""
    p = math.exp(eps) / (1 + math.exp(eps))
    delta = 0.0
    for out in itertools.product((0, 1), repeat=k):
        ones = sum(out)
        pr0 = p ** (k - ones) * (1 - p) ** ones      # all inputs 0
        pr1 = p ** ones * (1 - p) ** (k - ones)      # all inputs 1
        delta += max(0.0, pr0 - math.exp(eps_total) * pr1)
    return delta


@pytest.mark.parametrize("eps,k,eps_total", [(0.5, 6, 1.0), (1.0, 5, 2.0), (0.3, 8, 0.0)])
def test_optimal_composition_matches_enumeration(eps, k, eps_total):
    assert optimal_composition_delta(eps, k=k, epsilon_total=eps_total) == pytest.approx(
        _rr_profile_bruteforce(eps, k, eps_total), rel=1e-10, abs=1e-15)


def test_k_fold_pure_dp_has_zero_delta_at_k_eps():
    assert optimal_composition_delta(0.4, k=10, epsilon_total=4.0) == 0.0
    assert optimal_composition_delta(0.4, k=10, epsilon_total=3.9) > 0


@pytest.mark.parametrize("eps,k,dp", [(0.1, 100, 1e-5), (0.05, 1000, 1e-6), (0.5, 20, 1e-3)])
def test_advanced_composition_is_valid_and_optimal_is_tighter(eps, k, dp):
    adv, d = advanced_composition(eps, k=k, delta_prime=dp)
    assert d == dp
    # the advanced bound must hold for the worst ε-DP composition (randomised response) …
    assert optimal_composition_delta(eps, k=k, epsilon_total=adv) <= dp
    # … and the exact ε' is no larger than either bound
    opt = optimal_composition_epsilon(eps, k=k, delta_prime=dp)
    assert opt <= adv + 1e-9 and opt <= k * eps + 1e-9
    assert optimal_composition_delta(eps, k=k, epsilon_total=opt) == pytest.approx(dp, rel=1e-6)


def test_advanced_beats_basic_for_many_small_steps():
    adv, _ = advanced_composition(0.01, k=10_000, delta_prime=1e-5)
    assert adv < basic_composition([0.01] * 10_000)[0] / 10


def test_basic_composition_and_validation():
    assert basic_composition([0.5, 1.0, 0.25], [1e-6, 0.0, 2e-6]) == (1.75, 3e-6)
    assert basic_composition([1.0, 2.0]) == (3.0, 0.0)
    with pytest.raises(ValueError, match="deltas"):
        basic_composition([1.0], [0.1, 0.2])
    with pytest.raises(ValueError, match="epsilons"):
        basic_composition([])
    with pytest.raises(ValueError, match="delta_prime"):
        advanced_composition(1.0, k=3, delta_prime=0.0)


def test_group_privacy_chains_the_guarantee():
    eps, delta, k = 0.3, 1e-6, 4
    g_eps, g_delta = group_privacy(eps, group_size=k, delta=delta)
    assert g_eps == pytest.approx(k * eps)
    assert g_delta == pytest.approx(delta * sum(math.exp(i * eps) for i in range(k)))
    assert g_delta <= k * math.exp((k - 1) * eps) * delta
    assert group_privacy(1.0, group_size=1, delta=1e-5) == (1.0, pytest.approx(1e-5))
    # randomised response on k records at once: the ratio is exactly e^{kε} (tight)
    p = math.exp(eps) / (1 + math.exp(eps))
    assert math.log((p / (1 - p)) ** k) == pytest.approx(group_privacy(eps, group_size=k)[0])
    with pytest.raises(TypeError, match="group_size"):
        group_privacy(1.0, group_size=2.0)
    assert np.isfinite(g_delta)
