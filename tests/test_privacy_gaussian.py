"""Tests of coinfer.privacy.gaussian: (ε, δ)-DP, the Gaussian mechanism and its calibrations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from coinfer.privacy import (
    analytic_gaussian_sigma,
    audit_mechanism,
    classical_gaussian_sigma,
    gaussian_delta,
    gaussian_epsilon,
    gaussian_mechanism,
    gaussian_noise,
    l1_sensitivity,
    l2_sensitivity,
    laplace_delta,
    scalar_gaussian,
    scalar_laplace,
)


def _hockey_stick(logpdf_p, logpdf_q, epsilon, lo, hi, points):
    """∫ (p − e^ε q)_+ by quadrature: the definition of the privacy profile."""
    f = lambda z: max(0.0, math.exp(logpdf_p(z)) - math.exp(epsilon + logpdf_q(z)))  # noqa
    return integrate.quad(f, lo, hi, limit=500, points=points, epsabs=1e-13)[0]


@pytest.mark.parametrize("sigma,eps,sens", [(1.0, 0.5, 1.0), (2.0, 1.0, 1.0), (0.7, 3.0, 2.0)])
def test_gaussian_delta_matches_the_hockey_stick_integral(sigma, eps, sens):
    p = stats.norm(0.0, sigma).logpdf
    q = stats.norm(sens, sigma).logpdf
    expected = _hockey_stick(p, q, eps, -40 * sigma, 40 * sigma, [0.0, sens / 2])
    assert gaussian_delta(sigma, epsilon=eps, sensitivity=sens) == pytest.approx(expected,
                                                                                  rel=1e-6)


def test_gaussian_is_never_pure_dp_but_laplace_is():
    # δ(ε) > 0 for every ε for the Gaussian; 0 beyond Δ/b for the Laplace mechanism
    for eps in (1.0, 5.0, 20.0):
        assert gaussian_delta(1.0, epsilon=eps) > 0
    assert laplace_delta(1.0, epsilon=1.0) == 0.0 and laplace_delta(1.0, epsilon=5.0) == 0.0
    assert laplace_delta(1.0, epsilon=0.5) > 0


@pytest.mark.parametrize("b,eps", [(1.0, 0.3), (2.0, 0.1), (0.5, 1.5)])
def test_laplace_delta_matches_the_hockey_stick_integral(b, eps):
    p = stats.laplace(0.0, b).logpdf
    q = stats.laplace(1.0, b).logpdf
    expected = _hockey_stick(p, q, eps, -60 * b, 60 * b, [0.0, 1.0])
    assert laplace_delta(b, epsilon=eps) == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_analytic_sigma_solves_the_profile_and_beats_the_classical_one():
    for eps, delta in ((0.5, 1e-5), (0.9, 1e-3), (0.2, 1e-6)):
        s = analytic_gaussian_sigma(epsilon=eps, delta=delta, sensitivity=3.0)
        assert gaussian_delta(s, epsilon=eps, sensitivity=3.0) == pytest.approx(delta, rel=1e-6)
        classical = classical_gaussian_sigma(epsilon=eps, delta=delta, sensitivity=3.0)
        assert s < classical
        # the classical calibration is valid: its δ is below the target
        assert gaussian_delta(classical, epsilon=eps, sensitivity=3.0) <= delta
    # the analytic one also works beyond ε = 1, the classical one refuses
    s = analytic_gaussian_sigma(epsilon=4.0, delta=1e-5, sensitivity=1.0)
    assert gaussian_delta(s, epsilon=4.0) == pytest.approx(1e-5, rel=1e-6)
    with pytest.raises(ValueError, match="epsilon"):
        classical_gaussian_sigma(epsilon=2.0, delta=1e-5, sensitivity=1.0)


def test_analytic_sigma_scales_with_sensitivity_and_epsilon_inverts_it():
    s1 = analytic_gaussian_sigma(epsilon=1.0, delta=1e-5, sensitivity=1.0)
    s7 = analytic_gaussian_sigma(epsilon=1.0, delta=1e-5, sensitivity=7.0)
    assert s7 == pytest.approx(7 * s1, rel=1e-8)
    assert gaussian_epsilon(s1, delta=1e-5) == pytest.approx(1.0, rel=1e-6)
    # known value (Balle & Wang 2018): σ ≈ 3.73 for ε = 1, δ = 1e-5, Δ = 1
    assert s1 == pytest.approx(3.73, abs=0.01)


def test_sensitivities():
    assert l2_sensitivity(100, 0.5) == pytest.approx(2 * 0.5 * 10)
    assert l1_sensitivity(100, 0.5) == pytest.approx(100)
    v, w = np.full(100, 0.5), np.full(100, -0.5)
    assert np.linalg.norm(v - w) == pytest.approx(l2_sensitivity(100, 0.5))
    with pytest.raises(TypeError, match="num_parameters"):
        l2_sensitivity(1.5, 1.0)


def test_gaussian_noise_and_mechanism():
    g = torch.Generator().manual_seed(0)
    x = gaussian_noise((50_000,), std=2.0, generator=g).double().numpy()
    assert stats.kstest(x, "norm", args=(0.0, 2.0)).pvalue > 0.01
    assert stats.kstest(x, "norm", args=(0.0, 2.3)).pvalue < 1e-4
    a = gaussian_mechanism(torch.ones(3), sigma=1.0, generator=torch.Generator().manual_seed(1))
    b = gaussian_mechanism(torch.ones(3), sigma=1.0, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, torch.ones(3))
    with pytest.raises(ValueError, match="std"):
        gaussian_noise((2,), std=-1.0, generator=g)
    with pytest.raises(ValueError, match="delta"):
        analytic_gaussian_sigma(epsilon=1.0, delta=1.5, sensitivity=1.0)


def test_audit_refutes_pure_dp_of_the_gaussian_but_not_of_the_laplace():
    # matched standard deviation: Laplace scale 1 (1-DP), Gaussian σ = √2
    lap = audit_mechanism(scalar_laplace(1.0), 0.0, 1.0, trials=200_000, seed=3)
    gau = audit_mechanism(scalar_gaussian(math.sqrt(2.0)), 0.0, 1.0, trials=200_000, seed=3)
    assert lap.epsilon_lower <= 1.0
    assert gau.epsilon_lower > 1.0
