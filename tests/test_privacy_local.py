"""Tests of coinfer.privacy.local: local DP on clipped device features."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from coinfer.data import synthetic_signs
from coinfer.models import road_sign_cnn, split
from coinfer.privacy import (
    FeatureLDP,
    LocalDPLayer,
    analytic_gaussian_sigma,
    audit_scores,
    clip_features,
    evaluate_local_dp,
    feature_norms,
    feature_sensitivity,
    ldp_noise_scale,
    local_dp_accuracy,
    local_dp_device,
)


def test_clipping_bounds_the_norm_and_keeps_small_maps():
    v = torch.tensor([[3.0, -4.0], [0.1, 0.2]]).reshape(2, 1, 1, 2)
    c1 = clip_features(v, clip_bound=1.0, norm="l1")
    torch.testing.assert_close(feature_norms(c1, norm="l1"), torch.tensor([1.0, 0.3]))
    torch.testing.assert_close(c1[0].flatten(), torch.tensor([3 / 7, -4 / 7]))
    c2 = clip_features(v, clip_bound=1.0, norm="l2")
    torch.testing.assert_close(c2[0].flatten(), torch.tensor([0.6, -0.8]))
    torch.testing.assert_close(c2[1], v[1])
    with pytest.raises(ValueError, match="norm"):
        clip_features(v, clip_bound=1.0, norm="linf")


def test_sensitivity_bounds_every_pair_of_clipped_encodings():
    model = road_sign_cnn(seed=0)
    device = split(model, at=2).device
    x = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        v = device(x)
    for norm in ("l1", "l2"):
        c = clip_features(v, clip_bound=0.5, norm=norm)
        diffs = torch.stack([feature_norms(c - c[i:i + 1], norm=norm) for i in range(40)])
        assert float(diffs.max()) <= feature_sensitivity(0.5, norm=norm) + 1e-6
    # the bound is attained by opposite maps
    a = torch.tensor([[0.5, 0.0]]).reshape(1, 1, 1, 2)
    assert float(feature_norms(a - (-a), norm="l1")) == pytest.approx(
        feature_sensitivity(0.5, norm="l1"))


def test_noise_scales():
    lap = FeatureLDP(epsilon=4.0, clip_bound=2.0)
    assert ldp_noise_scale(lap) == pytest.approx(2 * 2.0 / 4.0)
    gau = FeatureLDP(epsilon=4.0, clip_bound=2.0, norm="l2", delta=1e-5)
    assert ldp_noise_scale(gau) == pytest.approx(
        analytic_gaussian_sigma(epsilon=4.0, delta=1e-5, sensitivity=4.0))
    with pytest.raises(ValueError, match="delta"):
        FeatureLDP(epsilon=1.0, clip_bound=1.0, norm="l1", delta=1e-5)
    with pytest.raises(ValueError, match="delta"):
        FeatureLDP(epsilon=1.0, clip_bound=1.0, norm="l2")


def test_layer_is_seeded_fresh_and_unbiased_after_clipping():
    shield = FeatureLDP(epsilon=1.0, clip_bound=1.0)
    v = torch.full((2000, 1, 1, 2), 0.25)
    a = LocalDPLayer(shield, seed=3)(v)
    b = LocalDPLayer(shield, seed=3)(v)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a[0], a[1])               # fresh noise per image
    assert float(a.mean()) == pytest.approx(0.25, abs=0.1)
    assert float(a.std()) == pytest.approx(math.sqrt(2) * 2.0, rel=0.1)


def test_audit_of_the_local_mechanism_respects_epsilon():
    # two inputs whose clipped encodings are the worst pair ±C e_1: the audit must not exceed ε
    shield = FeatureLDP(epsilon=1.0, clip_bound=1.0)
    layer = LocalDPLayer(shield, seed=0)
    x = torch.zeros(100_000, 1, 1, 1) + 5.0          # clipped to +1
    xp = torch.zeros(100_000, 1, 1, 1) - 5.0         # clipped to −1
    s0, s1 = layer(x).flatten(), layer(xp).flatten()
    r = audit_scores(s0, s1)
    assert r.epsilon_lower <= 1.0
    assert r.epsilon_lower > 0.7                      # and the audit has power


def test_evaluate_local_dp_runs_on_synthetic_signs():
    data = synthetic_signs(60, seed=0)
    model = road_sign_cnn(seed=0)
    from coinfer.attack import inverse_network

    inv = inverse_network(4)
    weak = evaluate_local_dp(model, FeatureLDP(epsilon=1e9, clip_bound=1e9), eval_set=data,
                             clean_inverse=inv, at=4)
    with torch.no_grad():
        clean_acc = float((model(data.images.float() / 255).argmax(1) == data.labels)
                          .float().mean())
    assert weak.accuracy == pytest.approx(clean_acc, abs=0.02)
    assert weak.adaptive is None and len(weak.clean_api.psnr) == 60
    with pytest.raises(ValueError, match="adaptive"):
        evaluate_local_dp(model, FeatureLDP(epsilon=1.0, clip_bound=1.0), eval_set=data,
                          clean_inverse=inv, attacker_images=data.images)
    assert isinstance(local_dp_device(nn.Identity(), FeatureLDP(1.0, 1.0)), nn.Sequential)


def test_local_dp_accuracy_agrees_with_the_full_evaluation():
    data = synthetic_signs(40, seed=1)
    model = road_sign_cnn(seed=0)
    from coinfer.attack import inverse_network

    shield = FeatureLDP(epsilon=50.0, clip_bound=100.0)
    full = evaluate_local_dp(model, shield, eval_set=data, clean_inverse=inverse_network(4),
                             at=4, seed=5)
    assert local_dp_accuracy(model, shield, eval_set=data, at=4, seed=5) == full.accuracy
    with pytest.raises(TypeError, match="eval_set"):
        local_dp_accuracy(model, shield, eval_set=data.images)
