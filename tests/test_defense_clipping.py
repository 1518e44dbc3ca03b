"""Tests of the clip-bound rule, the clipped fine-tuning, and the saturating accuracy fit."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from coinfer.data import synthetic_signs
from coinfer.defense import (
    AccuracyFit,
    ClipFineTune,
    SweepConfig,
    check_clipped,
    choose_clip_bound,
    clamp_parameters,
    device_part_parameters,
    fit_accuracy_curve,
    fit_logistic_curve,
    load_or_finetune_clipped,
    logistic_accuracy_curve,
    r_squared,
)
from coinfer.defense.fit import _fit_payload
from coinfer.models import road_sign_cnn
from coinfer.train import TrainConfig, load_or_train

EPS = np.geomspace(1, 1e4, 11)
# a step in log ε like the measured Fig. 5: chance, a sharp rise near ε ≈ 40, then flat
STEP = np.array([0.035, 0.035, 0.042, 0.063, 0.576, 0.943, 0.967, 0.969, 0.967, 0.967, 0.967])


def _fit(acc, clean=0.966):
    a, b, _ = fit_accuracy_curve(EPS, acc)
    return AccuracyFit(a=a, b=b, a_stderr=0.0, b_stderr=0.0, epsilons=tuple(EPS),
                       accuracy=tuple(tuple(r) for r in np.atleast_2d(acc.T).T),
                       clean_accuracy=clean, rmse=0.0, settings=SweepConfig())


# --------------------------------------------------------------------------------------------
# the fit: paper's curve capped, the logistic beside it, R²
# --------------------------------------------------------------------------------------------

def test_r_squared():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert r_squared(y, y) == 1.0
    assert r_squared(y, np.full(4, y.mean())) == pytest.approx(0.0)
    assert r_squared(y, y[::-1]) < 0  # worse than the mean
    assert r_squared(y[:, None], (y + 0.1)[:, None]) == pytest.approx(1 - 0.04 / 5)
    with pytest.raises(ValueError, match="constant"):
        r_squared(np.ones(3), np.ones(3))


def test_logistic_fit_recovers_its_parameters():
    truth = dict(a_min=0.05, a_clean=0.95, k=3.0, eps0=40.0)
    acc = logistic_accuracy_curve(EPS, **truth)
    a_min, k, eps0, cov = fit_logistic_curve(EPS, acc, clean_accuracy=0.95)
    assert a_min == pytest.approx(0.05, abs=1e-4)
    assert k == pytest.approx(3.0, rel=1e-3)
    assert eps0 == pytest.approx(40.0, rel=1e-3)
    assert cov.shape == (3, 3)
    with pytest.raises(ValueError, match="clean_accuracy"):
        fit_logistic_curve(EPS, acc, clean_accuracy=1.5)
    with pytest.raises(ValueError, match="epsilon"):
        logistic_accuracy_curve(np.array([0.0, 1.0]), **truth)


def test_accuracy_fit_contract_for_chapter_4():
    rng = np.random.default_rng(0)
    acc = STEP[:, None] + rng.normal(0, 0.01, (11, 3))
    fit = _fit(acc)
    # the paper's curve exceeds the clean accuracy inside the range; paper_curve is capped
    assert float(fit(EPS[-1])) > fit.clean_accuracy
    capped = fit.paper_curve(EPS)
    assert np.all(capped <= fit.clean_accuracy)
    low = fit(EPS) < fit.clean_accuracy
    assert np.allclose(capped[low], fit(EPS)[low])
    # scalar in, scalar-like out; arrays keep their shape
    assert np.ndim(fit.paper_curve(5.0)) == 0 and np.ndim(fit.logistic_curve(5.0)) == 0
    assert fit.logistic_curve(np.ones((2, 3))).shape == (2, 3)
    # the logistic saturates at the clean accuracy and is increasing
    grid = np.geomspace(1e-2, 1e8, 200)
    curve = fit.logistic_curve(grid)
    assert np.all(np.diff(curve) >= 0) and np.all(curve <= fit.clean_accuracy)
    assert curve[-1] == pytest.approx(fit.clean_accuracy, abs=1e-6)
    assert 10 < fit.logistic_eps0 < 100
    # R² as documented, and the saturating form fits the step far better
    y = np.asarray(fit.accuracy)
    assert fit.r2_paper == pytest.approx(r_squared(y, fit.paper_curve(EPS[:, None])))
    assert fit.r2_logistic == pytest.approx(r_squared(y, fit.logistic_curve(EPS[:, None])))
    assert fit.r2_paper_uncapped == pytest.approx(r_squared(y, fit(EPS[:, None])))
    assert fit.r2_logistic > 0.99 > fit.r2_paper
    assert isinstance(fit.clean_accuracy, float) and isinstance(fit.r2_paper, float)
    # derived fields are recomputed identically, so a reloaded fit equals the original
    assert _fit(acc) == fit


# --------------------------------------------------------------------------------------------
# the clip bound and coordinate clipping
# --------------------------------------------------------------------------------------------

def test_choose_clip_bound_is_a_rounded_up_percentile():
    model = road_sign_cnn(seed=0)
    values = torch.cat([p.detach().abs().flatten() for p in device_part_parameters(model, at=4)])
    q99 = float(np.percentile(values.double().numpy(), 99))
    G = choose_clip_bound(model, at=4)
    assert q99 <= G <= q99 * 1.1
    assert float(f"{G:.2g}") == G  # two significant digits
    share = float((values > G).float().mean())
    assert 0 < share <= 0.01
    assert choose_clip_bound(model, at=4, percentile=100) >= float(values.max())
    with pytest.raises(ValueError, match="percentile"):
        choose_clip_bound(model, percentile=150)


def test_clamp_parameters_clips_coordinates_only_above_the_bound():
    p = torch.tensor([-3.0, -0.5, 0.2, 0.9, 2.0])
    q = torch.tensor([[0.1, -1.5]])
    changed = clamp_parameters([p, q], bound=1.0)
    assert changed == 3
    assert torch.equal(p, torch.tensor([-1.0, -0.5, 0.2, 0.9, 1.0]))
    assert torch.equal(q, torch.tensor([[0.1, -1.0]]))
    with pytest.raises(ValueError, match="bound"):
        clamp_parameters([p], bound=-1.0)
    with pytest.raises(ValueError, match="params"):
        clamp_parameters([], bound=1.0)


TINY = TrainConfig(data="synthetic", epochs=1, clip_bound=1.0, batch_size=64,
                   mixed_precision="off", augment=False)


def test_finetune_clipped_is_clipped_cached_and_deterministic():
    train = synthetic_signs(160, seed=0)
    base = load_or_train(TINY, train_set=train, progress=False).model
    before = {k: v.clone() for k, v in base.state_dict().items()}
    G = choose_clip_bound(base, at=2, percentile=90)
    config = ClipFineTune(G, at=2, steps=5, batch_size=32, base=TINY)
    first = load_or_finetune_clipped(config, base_model=base, train_set=train, progress=False)
    assert not first.cache_hit and first.clamped_at_start > 0
    assert check_clipped(first.model, at=2, clip_bound=G) <= G
    # the clipping bites (some coordinates sit at the bound) and the base is untouched
    theta = torch.cat([p.detach().flatten() for p in device_part_parameters(first.model, at=2)])
    assert int((theta.abs() == G).sum()) > 0
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    again = load_or_finetune_clipped(config, base_model=base, train_set=train, progress=False)
    assert again.cache_hit
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                 again.model.state_dict().values()))
    other = load_or_finetune_clipped(ClipFineTune(G, at=2, steps=5, batch_size=32, seed=1,
                                                  base=TINY),
                                     base_model=base, train_set=train, progress=False)
    assert not other.cache_hit
    with pytest.raises(ValueError, match="clip_bound"):
        ClipFineTune(0.0)
    with pytest.raises(TypeError, match="base"):
        ClipFineTune(0.5, base="VICTIM")


def test_sweep_config_with_finetune():
    ft = ClipFineTune(0.4)
    settings = SweepConfig(finetune=ft)
    assert settings.clip_bound == 0.4 and SweepConfig().clip_bound == 1.0
    assert "finetune" not in _fit_payload(SweepConfig())["settings"]
    assert _fit_payload(settings)["settings"]["finetune"]["clip_bound"] == 0.4
    with pytest.raises(ValueError, match="finetune"):
        SweepConfig(finetune=ClipFineTune(0.4, at=2))
    with pytest.raises(TypeError, match="finetune"):
        SweepConfig(finetune=0.4)
    assert math.isclose(SweepConfig(victim=TrainConfig(), finetune=ClipFineTune(
        0.3, base=TrainConfig())).clip_bound, 0.3)


def test_degenerate_sweep_has_nan_logistic_but_still_compares():
    acc = np.zeros((11, 2))
    fit = _fit(acc + 1e-9 * np.arange(11)[:, None], clean=0.0)
    assert math.isnan(fit.r2_logistic) and math.isnan(fit.logistic_k)
    assert fit == _fit(acc + 1e-9 * np.arange(11)[:, None], clean=0.0)
    with pytest.raises(ValueError, match="logistic"):
        fit.logistic_curve(1.0)
    assert np.all(fit.paper_curve(EPS) <= 0.0)


# --------------------------------------------------------------------------------------------
# Table 2 over several noise draws
# --------------------------------------------------------------------------------------------

def test_replicated_defence_table_draws_and_intervals():
    from coinfer.attack import InverseConfig, inverse_network
    from coinfer.defense import ParameterNoise, evaluate_shield, replicated_defence_table
    from coinfer.train import clip_parameters, device_parameters

    G = 0.05
    model = road_sign_cnn(seed=0).eval()
    clip_parameters(device_parameters(model), bound=G)
    eval_set = synthetic_signs(12, seed=5)
    queries = synthetic_signs(16, seed=6).images
    inverse = inverse_network(4, InverseConfig(seed=0))
    rows = replicated_defence_table(model, clip_bound=G, eval_set=eval_set, clean_inverse=inverse,
                                    epsilons=(2.0,), policies=("once",), seeds=(0, 1, 2),
                                    attacker_images=queries,
                                    adaptive_config=InverseConfig(max_epochs=1, batch_size=8),
                                    adaptive_seeds=(1,))
    none, noisy = rows
    assert none.shield is None and none.seeds == (0,) and none.accuracy.shape == (1,)
    assert none.adaptive_seeds == (0,) and none.adaptive["psnr"].shape == (1,)
    assert noisy.seeds == (0, 1, 2) and noisy.adaptive_seeds == (1,)
    assert noisy.clean_api["psnr"].shape == (3,) and noisy.adaptive["psnr"].shape == (1,)
    # each draw is evaluate_shield with that seed; the draws differ
    for i, s in enumerate(noisy.seeds):
        one = evaluate_shield(model, ParameterNoise(2.0, G), eval_set=eval_set,
                              clean_inverse=inverse, seed=s)
        assert noisy.clean_api["psnr"][i] == pytest.approx(one.clean_api.mean("psnr"))
        assert noisy.accuracy[i] == pytest.approx(one.accuracy)
    assert len(set(np.round(noisy.clean_api["mse"], 12))) == 3
    ci = noisy.summary("clean_api", "psnr")
    assert ci.n == 3 and ci.low < ci.mean < ci.high
    assert math.isnan(none.summary("accuracy").low)  # one evaluation: no interval
    with pytest.raises(ValueError, match="metric"):
        noisy.summary("adaptive", "lpips")
    with pytest.raises(ValueError, match="subset"):
        replicated_defence_table(model, clip_bound=G, eval_set=eval_set, clean_inverse=inverse,
                                 seeds=(0,), adaptive_seeds=(3,))


# --------------------------------------------------------------------------------------------
# the chapters' sweep settings, the frontier grid for another G, the cached adaptive attacker
# --------------------------------------------------------------------------------------------

def test_chapter_sweep_settings_fine_tune_at_the_chosen_bound():
    from coinfer.defense import chapter_sweep_settings

    signs = synthetic_signs(160, seed=0)
    base = load_or_train(TINY, train_set=signs, progress=False).model
    settings = chapter_sweep_settings(victim=TINY, train_set=signs)
    G = choose_clip_bound(base, at=4)
    assert settings.finetune == ClipFineTune(G, at=4, base=TINY)
    assert settings.victim == TINY and settings.clip_bound == G < TINY.clip_bound
    assert settings == chapter_sweep_settings(victim=TINY, train_set=signs)  # same cached fit


def test_frontier_epsilons_keep_the_noise_scales():
    from coinfer.defense import FRONTIER_EPSILONS, frontier_epsilons

    for G in (1.0, 0.21, 3.0):
        grid = frontier_epsilons(G)
        assert len(grid) == len(FRONTIER_EPSILONS)
        np.testing.assert_allclose([2 * G / e for e in grid],
                                   [2 / e for e in FRONTIER_EPSILONS], rtol=1e-5)
    assert frontier_epsilons(1.0) == FRONTIER_EPSILONS
    with pytest.raises(ValueError, match="clip_bound"):
        frontier_epsilons(0.0)


def test_adaptive_attack_is_cached_per_deployment():
    from coinfer.attack import InverseConfig, adaptive_attack, reconstruct
    from coinfer.defense import ParameterNoise, apply_shield, device_features

    model = road_sign_cnn(seed=0).eval()
    clamp_parameters(device_part_parameters(model, at=4), bound=0.05)
    queries = synthetic_signs(24, seed=6).images
    images = synthetic_signs(6, seed=5).images
    config = InverseConfig(max_epochs=1, batch_size=8)

    def attack(seed):
        device = apply_shield(model, ParameterNoise(20.0, 0.05), at=4, seed=seed).device
        v = device_features(device, images)
        return v, adaptive_attack(device, queries, v, at=4, config=config)

    v, first = attack(0)
    assert not first.inverse.cache_hit and first.reconstructions.shape == (6, 3, 32, 32)
    # the inverse sees the features divided by their standard deviation
    expected = reconstruct(first.inverse.model, v / float(v.std()))
    assert torch.equal(first.reconstructions, expected)
    _, again = attack(0)  # the same deployment: its attacker is loaded, not trained again
    assert again.inverse.cache_hit and torch.equal(again.reconstructions, first.reconstructions)
    _, other = attack(1)  # another noise draw is another deployment
    assert not other.inverse.cache_hit
    with pytest.raises(TypeError, match="config"):
        adaptive_attack(model, queries, v, at=4, config=None)
    with pytest.raises(TypeError, match="device_model"):
        adaptive_attack(lambda x: x, queries, v, at=4, config=config)
