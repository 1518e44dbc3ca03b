"""Tests of coinfer.privacy.dp_sgd: the RDP accountant, per-example clipping and DP-SGD."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from coinfer.privacy import (
    DPSGDConfig,
    clip_per_example,
    dp_sgd_epsilon,
    dp_sgd_step,
    gaussian_epsilon,
    per_example_gradients,
    random_conv_features,
    rdp_sampled_gaussian,
    rdp_to_dp,
    train_dp_sgd,
)


def _rdp_by_quadrature(q, sigma, alpha):
    """E_{z~N(0,σ²)}[((1-q) + q e^{(2z-1)/(2σ²)})^α], the definition (Mironov et al. 2019)."""
    def f(z):
        log_ratio = np.logaddexp(math.log1p(-q), math.log(q) + (2 * z - 1) / (2 * sigma ** 2))
        return math.exp(stats.norm.logpdf(z, 0, sigma) + alpha * log_ratio)

    a = integrate.quad(f, -30 * sigma, alpha + 30 * sigma, limit=500, points=[0.0, alpha])[0]
    return math.log(a) / (alpha - 1)


@pytest.mark.parametrize("q,sigma", [(0.01, 1.0), (0.1, 2.0), (0.05, 0.8)])
def test_rdp_closed_form_matches_the_integral(q, sigma):
    orders = [2, 3, 8, 16]
    closed = rdp_sampled_gaussian(q, noise_multiplier=sigma, orders=orders)
    for value, alpha in zip(closed, orders):
        assert value == pytest.approx(_rdp_by_quadrature(q, sigma, alpha), rel=1e-6)


def test_rdp_of_the_full_batch_is_the_gaussian_one():
    orders = np.arange(2, 40)
    rdp = rdp_sampled_gaussian(1.0, noise_multiplier=1.5, orders=orders)
    np.testing.assert_allclose(rdp, orders / (2 * 1.5 ** 2))
    # q → 1 continuously: the binomial sum agrees with the q = 1 special case
    near = rdp_sampled_gaussian(1 - 1e-12, noise_multiplier=1.5, orders=orders)
    np.testing.assert_allclose(near, rdp, rtol=1e-6)


def test_accountant_properties():
    base = dict(sampling_rate=0.01, noise_multiplier=1.1, steps=1000, delta=1e-5)
    eps = dp_sgd_epsilon(**base)
    assert 0 < eps < 10
    assert dp_sgd_epsilon(**base | {"steps": 2000}) > eps           # more steps, more ε
    assert dp_sgd_epsilon(**base | {"noise_multiplier": 2.0}) < eps  # more noise, less ε
    assert dp_sgd_epsilon(**base | {"sampling_rate": 0.02}) > eps   # bigger batches, more ε
    assert dp_sgd_epsilon(**base | {"noise_multiplier": 0}) == math.inf
    # subsampling amplifies: far below the un-subsampled Gaussian composed over the same steps
    assert eps < dp_sgd_epsilon(**base | {"sampling_rate": 1.0})
    # RDP → DP is valid, so never better than the exact single Gaussian (q = 1, one step)
    one = dp_sgd_epsilon(sampling_rate=1.0, noise_multiplier=2.0, steps=1, delta=1e-5)
    assert one >= gaussian_epsilon(2.0, delta=1e-5)
    with pytest.raises(ValueError, match="sampling_rate"):
        dp_sgd_epsilon(**base | {"sampling_rate": 1.5})
    with pytest.raises(ValueError, match="orders"):
        rdp_to_dp([0.1], orders=[1], delta=1e-5)


def test_per_example_gradients_match_a_loop_and_the_linear_closed_form():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    lin = nn.Linear(5, 3)
    x, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    for model in (net, lin):
        grads = per_example_gradients(model, x, y)
        for i in range(6):
            model.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
            for name, p in model.named_parameters():
                torch.testing.assert_close(grads[name][i], p.grad, rtol=1e-5, atol=1e-6)
    # the closed form equals the vmap path on the same linear layer
    seq = nn.Sequential(lin)
    vm = per_example_gradients(seq, x, y)
    cf = per_example_gradients(lin, x, y)
    torch.testing.assert_close(vm["0.weight"], cf["weight"])
    torch.testing.assert_close(vm["0.bias"], cf["bias"])


def test_clipping_bounds_every_example_and_keeps_small_ones():
    grads = {"a": torch.tensor([[3.0, 4.0], [0.3, 0.4]]), "b": torch.tensor([[0.0], [0.0]])}
    clipped, norms = clip_per_example(grads, max_norm=1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    torch.testing.assert_close(clipped["a"], torch.tensor([[0.6, 0.8], [0.3, 0.4]]))
    with pytest.raises(ValueError, match="max_norm"):
        clip_per_example(grads, max_norm=0.0)


def test_ghost_clipping_step_equals_the_generic_step():
    torch.manual_seed(1)
    x, y = torch.randn(20, 6) * 3, torch.randint(0, 4, (20,))
    lin = nn.Linear(6, 4)
    seq = nn.Sequential(nn.Linear(6, 4))
    seq[0].load_state_dict(lin.state_dict())
    for model in (lin, seq):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        dp_sgd_step(model, opt, x, y, max_norm=0.5, noise_multiplier=1.0,
                    expected_batch_size=20, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(lin.weight, seq[0].weight)
    torch.testing.assert_close(lin.bias, seq[0].bias)


def test_sensitivity_of_the_noisy_sum_is_bounded_by_C():
    # removing one example changes the clipped sum by at most C (here the gradients are huge)
    torch.manual_seed(2)
    lin = nn.Linear(4, 3)
    x, y = torch.randn(10, 4) * 100, torch.randint(0, 3, (10,))
    full, _ = clip_per_example(per_example_gradients(lin, x, y), max_norm=0.7)
    part, _ = clip_per_example(per_example_gradients(lin, x[1:], y[1:]), max_norm=0.7)
    diff = torch.cat([(full[k].sum(0) - part[k].sum(0)).flatten() for k in full])
    assert float(diff.norm()) <= 0.7 + 1e-5


def test_train_dp_sgd_learns_is_seeded_and_cached():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 3
    y = torch.randint(0, 3, (600,), generator=g)
    x = centres[y] + torch.randn(600, 8, generator=g)
    x = x / x.norm(dim=1, keepdim=True)
    cfg = DPSGDConfig(noise_multiplier=0.0, steps=150, expected_batch_size=60, lr=0.05)
    r = train_dp_sgd(x, y, cfg, num_classes=3)
    assert r.accuracy(x, y) > 0.9 and r.epsilon == math.inf and not r.cached
    again = train_dp_sgd(x, y, cfg, num_classes=3)
    assert again.cached
    torch.testing.assert_close(again.model.weight, r.model.weight)
    noisy = train_dp_sgd(x, y, DPSGDConfig(noise_multiplier=50.0, steps=150,
                                           expected_batch_size=60, lr=0.05), num_classes=3)
    assert np.isfinite(noisy.epsilon) and noisy.accuracy(x, y) < r.accuracy(x, y)
    with pytest.raises(ValueError, match="expected_batch_size"):
        train_dp_sgd(x, y, DPSGDConfig(expected_batch_size=1000), num_classes=3)


def test_random_conv_features_are_data_independent_unit_vectors():
    imgs = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    f = random_conv_features(imgs, channels=8, seed=1)
    assert f.shape == (5, 128)
    torch.testing.assert_close(f.norm(dim=1), torch.ones(5))
    # one image's features do not depend on the other images in the batch
    torch.testing.assert_close(random_conv_features(imgs[2:3], channels=8, seed=1), f[2:3])
    assert not torch.equal(random_conv_features(imgs, channels=8, seed=2), f)
    with pytest.raises(ValueError, match="images"):
        random_conv_features(torch.zeros(2, 3, 16, 16))
