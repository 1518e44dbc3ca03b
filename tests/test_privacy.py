"""Tests of coinfer.privacy: Laplace noise, calibration, the guarantee reporter and the audits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from coinfer.models import road_sign_cnn
from coinfer.privacy import (
    audit_mechanism,
    audit_scores,
    clopper_pearson,
    distinguishing_bound,
    epsilon_lower_bound,
    format_epsilon,
    l1_sensitivity,
    laplace_mechanism,
    laplace_noise,
    noise_scale,
    per_coordinate_sensitivity,
    privacy_guarantee,
    randomized_response,
    scalar_laplace,
    sum_score,
    vector_laplace_release,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# Laplace noise and the mechanism
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [0.05, 0.7, 3.0])
def test_laplace_noise_has_the_right_scale(scale):
    x = laplace_noise((20_000,), scale=scale, generator=gen(1)).double().numpy()
    assert stats.kstest(x, "laplace", args=(0.0, scale)).pvalue > 0.01
    # the KS test has power: a 15 % wrong scale is rejected
    assert stats.kstest(x, "laplace", args=(0.0, 1.15 * scale)).pvalue < 1e-4
    assert np.isfinite(x).all()


def test_laplace_noise_is_seeded():
    a = laplace_noise((3, 5), scale=1.0, generator=gen(7))
    b = laplace_noise((3, 5), scale=1.0, generator=gen(7))
    c = laplace_noise((3, 5), scale=1.0, generator=gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.dtype == torch.float32 and a.shape == (3, 5)
    assert laplace_noise((4,), scale=1.0, generator=gen(0), dtype=torch.float64).dtype \
        == torch.float64


def test_laplace_noise_scales_linearly():
    # one uniform per coordinate: the same generator state gives b * (standard draw)
    a = laplace_noise((1000,), scale=1.0, generator=gen(3))
    b = laplace_noise((1000,), scale=2.5, generator=gen(3))
    assert torch.allclose(b, 2.5 * a)


def test_laplace_mechanism_adds_calibrated_noise_and_keeps_input():
    value = torch.zeros(50_000)
    out = laplace_mechanism(value, epsilon=2.0, sensitivity=3.0, generator=gen(2))
    assert torch.equal(value, torch.zeros(50_000))
    assert stats.kstest(out.double().numpy(), "laplace", args=(0.0, 1.5)).pvalue > 0.01
    shifted = laplace_mechanism(np.full(4, 10.0), epsilon=1.0, sensitivity=1.0, generator=gen(0))
    assert shifted.shape == (4,) and torch.isfinite(shifted).all()


@pytest.mark.parametrize("bad, exc", [(0.0, ValueError), (-1.0, ValueError),
                                      (math.nan, ValueError), (math.inf, ValueError),
                                      ("1", TypeError), (True, TypeError)])
def test_bad_epsilon_raises_naming_it(bad, exc):
    with pytest.raises(exc, match="epsilon"):
        laplace_mechanism(torch.zeros(2), epsilon=bad, sensitivity=1.0, generator=gen())
    with pytest.raises(exc, match="epsilon"):
        noise_scale(epsilon=bad, clip_bound=1.0, num_parameters=3)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="sensitivity"):
        laplace_mechanism(torch.zeros(2), epsilon=1.0, sensitivity=0.0, generator=gen())
    with pytest.raises(ValueError, match="value"):
        laplace_mechanism(torch.tensor([1.0, math.nan]), epsilon=1.0, sensitivity=1.0,
                          generator=gen())
    with pytest.raises(TypeError, match="generator"):
        laplace_noise((2,), scale=1.0, generator=0)
    with pytest.raises(ValueError, match="scale"):
        laplace_noise((2,), scale=-1.0, generator=gen())
    with pytest.raises(ValueError, match="clip_bound"):
        noise_scale(epsilon=1.0, clip_bound=0.0, num_parameters=3)
    with pytest.raises(ValueError, match="clip_bound"):
        per_coordinate_sensitivity(-0.5)
    with pytest.raises(ValueError, match="calibration"):
        noise_scale(epsilon=1.0, clip_bound=1.0, num_parameters=3, calibration="paper")
    with pytest.raises(ValueError, match="policy"):
        privacy_guarantee(10, epsilon=1.0, clip_bound=1.0, policy="sometimes")
    with pytest.raises(ValueError, match="num_parameters"):
        l1_sensitivity(0, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        clopper_pearson(1, 10, alpha=1.5)
    with pytest.raises(ValueError, match="k_trials"):
        clopper_pearson(11, 10)
    with pytest.raises(ValueError, match="scores_x"):
        audit_scores([0.0, 1.0, math.nan, 2.0], [0.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 4"):
        audit_scores([0.0, 1.0], [0.0, 1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="bit"):
        randomized_response(1.0)(2, 3, gen())


# --------------------------------------------------------------------------------------------
# sensitivity, calibration and the reported guarantee
# --------------------------------------------------------------------------------------------

def test_l1_sensitivity_is_attained_by_opposite_corners():
    d, G = 17, 0.3
    theta, theta_prime = torch.full((d,), G), torch.full((d,), -G)
    assert float((theta - theta_prime).abs().sum()) == pytest.approx(l1_sensitivity(d, G))
    assert float((theta - theta_prime).abs().max()) == pytest.approx(per_coordinate_sensitivity(G))
    assert l1_sensitivity(d, G) == pytest.approx(2 * G * d)


def test_noise_scales():
    assert noise_scale(epsilon=5.0, clip_bound=0.5, num_parameters=100) == pytest.approx(0.2)
    assert noise_scale(epsilon=5.0, clip_bound=0.5, num_parameters=100,
                       calibration="whole-vector") == pytest.approx(20.0)


def test_privacy_guarantee_reports_what_holds_at_split_4():
    model = road_sign_cnn(seed=0)
    g = privacy_guarantee(model, epsilon=5.0, clip_bound=0.5, at=4)
    d = 3 * 64 * 9 + 64 + 3 * (64 * 64 * 9 + 64)
    assert g.num_parameters == d == 112_576
    assert g.per_coordinate_epsilon == pytest.approx(5.0)
    assert g.whole_vector_epsilon == pytest.approx(5.0 * d)
    assert g.training_data_epsilon == pytest.approx(5.0 * d)
    assert math.isinf(g.inference_input_epsilon)
    assert g.summary().startswith(
        "per-coordinate ε = 5; whole vector ε = 5·d = 5.6×10⁵ at split 4")
    honest = privacy_guarantee(d, epsilon=5.0, clip_bound=0.5, calibration="whole-vector",
                               policy="fresh", num_inferences=10)
    assert honest.whole_vector_epsilon == pytest.approx(5.0)
    assert honest.per_coordinate_epsilon == pytest.approx(5.0 / d)
    assert honest.training_data_epsilon == pytest.approx(50.0)  # basic composition
    once = privacy_guarantee(d, epsilon=5.0, clip_bound=0.5, calibration="whole-vector",
                             num_inferences=10)
    assert once.training_data_epsilon == pytest.approx(5.0)  # post-processing
    with pytest.raises(ValueError, match="at must be given"):
        privacy_guarantee(model, epsilon=1.0, clip_bound=0.5)


def test_format_epsilon():
    assert format_epsilon(5.0) == "5"
    assert format_epsilon(562_880.0) == "5.6×10⁵"
    assert format_epsilon(math.inf) == "∞"
    assert format_epsilon(4.44e-5) == "4.4×10⁻⁵"
    assert format_epsilon(0.5) == "0.5"


# --------------------------------------------------------------------------------------------
# Clopper–Pearson and the ε lower bound
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, n", [(0, 20), (3, 20), (20, 20), (517, 1000)])
def test_clopper_pearson_matches_scipy_binomtest(k, n):
    lo, hi = clopper_pearson(k, n, alpha=0.05)
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert lo == pytest.approx(ref.low, abs=1e-12) and hi == pytest.approx(ref.high, abs=1e-12)
    one_lo, one_hi = clopper_pearson(k, n, alpha=0.05, side="lower")
    assert one_hi == 1.0 and one_lo >= lo


def test_epsilon_lower_bound_has_its_coverage():
    # p0 = e^1 p1 exactly; the 95 % lower bound may exceed 1 in at most ~5 % of repetitions
    rng = np.random.default_rng(0)
    p1 = 0.1
    p0 = math.e * p1
    n = 400
    k0, k1 = rng.binomial(n, p0, size=1500), rng.binomial(n, p1, size=1500)
    bounds = np.array([epsilon_lower_bound(a, n, b, n, alpha=0.05) for a, b in zip(k0, k1)])
    assert (bounds > 1.0).mean() <= 0.05
    assert np.median(bounds) > 0.2  # and it is not vacuous


def test_distinguishing_bound():
    assert distinguishing_bound(0.0) == 0.5
    assert distinguishing_bound(1.0) == pytest.approx(math.e / (1 + math.e))


# --------------------------------------------------------------------------------------------
# audits
# --------------------------------------------------------------------------------------------

def test_audit_of_scalar_laplace_is_tight_within_20_percent_at_eps_1():
    result = audit_mechanism(scalar_laplace(1.0), 0.0, 1.0, trials=200_000, seed=0)
    assert 0.8 <= result.epsilon_lower <= 1.0
    assert result.accuracy <= distinguishing_bound(1.0) + 0.01


@pytest.mark.parametrize("eps", [0.25, 0.5, 2.0, 4.0])
@pytest.mark.parametrize("seed", [1, 2])
def test_audit_lower_bound_never_exceeds_epsilon_on_dp_mechanisms(eps, seed):
    assert audit_mechanism(scalar_laplace(eps), 0.0, 1.0, trials=20_000,
                           seed=seed).epsilon_lower <= eps
    assert audit_mechanism(randomized_response(eps), 0, 1, trials=20_000,
                           seed=seed).epsilon_lower <= eps
    d, G = 6, 0.5
    honest = noise_scale(epsilon=eps, clip_bound=G, num_parameters=d, calibration="whole-vector")
    result = audit_mechanism(vector_laplace_release(honest), torch.full((d,), G),
                             torch.full((d,), -G), trials=20_000, score=sum_score, seed=seed)
    assert result.epsilon_lower <= eps


def test_audit_refutes_the_per_coordinate_calibration_for_a_vector():
    # the paper's scale 2G/ε on d = 8 coordinates is 8ε-DP, not ε-DP: the audit proves ε > 1
    d, G, eps = 8, 0.5, 1.0
    paper = noise_scale(epsilon=eps, clip_bound=G, num_parameters=d)
    result = audit_mechanism(vector_laplace_release(paper), torch.full((d,), G),
                             torch.full((d,), -G), trials=50_000, score=sum_score, seed=0)
    assert eps < result.epsilon_lower <= d * eps


def test_audit_scores_is_symmetric_and_detects_perfect_separation():
    a, b = np.zeros(200), np.ones(200)
    r1, r2 = audit_scores(a, b), audit_scores(b, a)
    assert r1.epsilon_lower == pytest.approx(r2.epsilon_lower)
    assert r1.accuracy == 1.0 and math.isinf(r1.epsilon_estimate)
    # 100 evaluation runs each, all separated: log(0.975^(1/100)... ) bound is finite
    p = 0.025 ** (1 / 100)
    assert r1.epsilon_lower == pytest.approx(math.log(p / (1 - p)), rel=1e-6)
    same = audit_scores(np.arange(400.0) % 7, np.arange(400.0) % 7)
    assert same.epsilon_lower == 0.0
