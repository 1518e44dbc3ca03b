"""The honest-but-curious server's rMLE, replicated attackers, sign families, class-leak probes.

Synthetic signs and a randomly initialised (clipped) road-sign CNN: no GTSRB, no trained victim.
"""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from coinfer.attack import (
    SIGN_FAMILIES,
    AttackProtocol,
    FeatureProbe,
    InverseConfig,
    JudgeCNN,
    JudgeConfig,
    chapter_attacker,
    class_leak,
    curious_server_attack,
    family_classes,
    independent_judge,
    load_or_train_attacker,
    probe_accuracy,
    probe_features,
    replicate_attackers,
    search_tv_weight,
    split_oracle,
    train_feature_probe,
    white_box_attack,
)
from coinfer.data import synthetic_signs, to_float
from coinfer.metrics import mean_ci, paired_difference, reconstruction_metrics
from coinfer.models import road_sign_cnn, split
from coinfer.train import clip_parameters, device_parameters

FAST = InverseConfig(max_epochs=2, batch_size=32)


@pytest.fixture(scope="module")
def victim():
    model = road_sign_cnn(seed=0).eval()
    clip_parameters(device_parameters(model), bound=0.5)
    return model


@pytest.fixture(scope="module")
def signs():
    return synthetic_signs(160, seed=0)


# ------------------------------------------------------------------------ white-box from a start

def test_start_at_the_truth_stays_there(victim, signs):
    """From init = x0 with λ = 0 the objective starts at ~0 and the image barely moves."""
    device = split(victim, at=4).device
    x0 = to_float(signs.images[:3]).clamp(0.05, 0.95)  # away from the sigmoid's ends
    with torch.no_grad():
        v0 = device(x0)
    r = white_box_attack(device, v0, at=4, tv_weight=0.0, steps=10, lr=0.01, init=x0,
                         log_every=5, progress=False)
    assert [h["step"] for h in r.history] == [0, 5, 10]
    assert r.history[0]["objective"] < 1e-8
    assert reconstruction_metrics(x0, r.reconstructions).mean("psnr") > 35
    # a random start is far worse after the same 10 steps
    far = white_box_attack(device, v0, at=4, tv_weight=0.0, steps=10, lr=0.01, progress=False)
    assert reconstruction_metrics(x0, far.reconstructions).mean("psnr") < 25


def test_history_starts_at_the_starting_objective(victim, signs):
    device = split(victim, at=2).device
    x0 = to_float(signs.images[:2])
    with torch.no_grad():
        v0 = device(x0)
    start = to_float(signs.images[2:4]).clamp(0.1, 0.9)
    r = white_box_attack(device, v0, at=2, tv_weight=0.0, steps=6, lr=0.05, init=start,
                         log_every=3, progress=False)
    with torch.no_grad():
        expected = ((device(start) - v0).pow(2).flatten(1).sum(1) / v0[0].numel()).mean()
    assert r.history[0]["objective"] == pytest.approx(float(expected), rel=1e-4)
    assert r.history[-1]["step"] == 6
    assert r.history[-1]["feature_error"] == pytest.approx(float(r.feature_error.mean()), rel=1e-4)
    assert r.history[-1]["objective"] < r.history[0]["objective"]


def test_per_image_tv_weights_equal_separate_runs(victim, signs):
    device = split(victim, at=6).device
    x = to_float(signs.images[:2])
    with torch.no_grad():
        v = device(x)
    both = white_box_attack(device, torch.cat([v, v]), at=6,
                            tv_weight=torch.tensor([0.0, 0.0, 1.0, 1.0]), steps=15,
                            init=torch.cat([x, x]).clamp(0.2, 0.8) * 0 + 0.5, progress=False)
    for i, w in enumerate((0.0, 1.0)):
        alone = white_box_attack(device, v, at=6, tv_weight=w, steps=15,
                                 init=torch.full_like(x, 0.5), progress=False)
        torch.testing.assert_close(both.reconstructions[2 * i:2 * i + 2], alone.reconstructions,
                                   atol=1e-5, rtol=1e-4)
    # the prior does something: the λ = 1 images are smoother than the λ = 0 ones
    from coinfer.attack import total_variation
    assert total_variation(both.reconstructions[2:]).mean() < \
        total_variation(both.reconstructions[:2]).mean()


def test_white_box_rejects_bad_starts_and_weights(victim):
    device = split(victim, at=6).device
    v = torch.rand(2, 64, 8, 8)
    with pytest.raises(ValueError, match="init must hold one starting image"):
        white_box_attack(device, v, at=6, init=torch.rand(3, 3, 32, 32), progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        white_box_attack(device, v, at=6, init=torch.rand(2, 3, 32, 32) + 1, progress=False)
    with pytest.raises(ValueError, match="tv_weight"):
        white_box_attack(device, v, at=6, tv_weight=torch.tensor([0.1, -1.0]), progress=False)
    with pytest.raises(ValueError, match="tv_weight"):
        white_box_attack(device, v, at=6, tv_weight=torch.tensor([0.1]), progress=False)
    with pytest.raises(ValueError, match="log_every"):
        white_box_attack(device, v, at=6, log_every=0, progress=False)


# ------------------------------------------------------------------- the curious server's attack

@pytest.fixture()  # function scope: trained after the autouse fixture isolates the cache
def inverse4(victim, signs):
    return load_or_train_attacker(split_oracle(victim, at=4), signs.images[:96], at=4,
                                  config=FAST, cache_key="t-server", progress=False)


def test_search_picks_the_best_weight_on_own_images(victim, signs, inverse4):
    search = search_tv_weight(split(victim, at=4).device, signs.images[96:99], at=4,
                              inverse=inverse4, grid=(0.0, 100.0), steps=15)
    assert set(search.scores) == {0.0, 100.0} and search.n_images == 3
    assert search.tv_weight == max(search.scores, key=search.scores.get)
    assert search.tv_weight == 0.0  # a huge prior flattens the image
    assert math.isfinite(search.start_psnr)
    with pytest.raises(ValueError, match="grid"):
        search_tv_weight(split(victim, at=4).device, signs.images[96:99], at=4,
                         inverse=inverse4, grid=())


def test_server_attack_improves_on_its_start_and_is_cached(victim, signs, inverse4):
    device = split(victim, at=4).device
    x0 = to_float(signs.images[100:104])
    with torch.no_grad():
        v0 = device(x0)
    args = dict(at=4, inverse=inverse4, own_images=signs.images[96:99], grid=(0.0, 0.01),
                steps=40, lr=0.05, log_every=10)
    first = curious_server_attack(device, v0, cache_key="t-srv", **args)
    assert not first.cache_hit
    torch.testing.assert_close(first.start, inverse4.model(v0).detach())
    start_err = first.attack.history[0]["feature_error"]
    assert first.attack.history[-1]["feature_error"] < start_err  # it optimised the data term
    assert [h["step"] for h in first.attack.history] == [0, 10, 20, 30, 40]
    again = curious_server_attack(device, v0, cache_key="t-srv", **args)
    assert again.cache_hit and again.search == first.search
    assert torch.equal(again.attack.reconstructions, first.attack.reconstructions)
    assert [h["step"] for h in again.attack.history] == [h["step"] for h in first.attack.history]
    assert [h["objective"] for h in again.attack.history] == \
        pytest.approx([h["objective"] for h in first.attack.history])
    other = curious_server_attack(device, v0, cache_key="t-srv", **(args | {"steps": 20}))
    assert not other.cache_hit
    with pytest.raises(TypeError, match="white-box"):
        curious_server_attack(split_oracle(victim, at=4), v0, **args)
    with pytest.raises(ValueError, match="cache_key"):
        curious_server_attack(device, v0, cache_key="a b", **args)


# ---------------------------------------------------------------------- replicas and families

def test_replicates_reuse_the_chapter_attacker_and_differ_from_each_other(victim, signs):
    protocol = AttackProtocol(n_queries=40, n_victims=5, splits=(6,), cache_key="t-rep",
                              config=FAST)
    reps = replicate_attackers(victim, signs, at=6, seeds=(0, 1), protocol=protocol)
    main = chapter_attacker(victim, signs, at=6, protocol=protocol, progress=False)
    assert main.cache_hit  # replicate 0 *is* the chapter's attacker
    for a, b in zip(reps[0].model.parameters(), main.model.parameters()):
        assert torch.equal(a, b)
    assert reps[1].config.seed == 1
    assert not all(torch.equal(a, b) for a, b in zip(reps[0].model.parameters(),
                                                    reps[1].model.parameters()))
    with pytest.raises(ValueError, match="distinct"):
        replicate_attackers(victim, signs, at=6, seeds=(1, 1), protocol=protocol)


def test_sign_families_partition_the_43_classes():
    ids = [c for f in SIGN_FAMILIES.values() for c in f]
    assert sorted(ids) == list(range(43))
    assert family_classes("blue disc") == tuple(range(33, 41))
    assert set(family_classes("red circle")).isdisjoint(family_classes("blue disc"))
    assert 6 not in family_classes("red circle")  # "end of speed limit 80" is not a red circle
    with pytest.raises(ValueError, match="family"):
        family_classes("green")


# --------------------------------------------------------------------------------- statistics

def test_mean_ci_matches_scipy():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=25)
    ci = mean_ci(x)
    low, high = stats.t.interval(0.95, df=24, loc=x.mean(), scale=stats.sem(x))
    assert ci.low == pytest.approx(low) and ci.high == pytest.approx(high)
    assert ci.n == 25 and ci.std == pytest.approx(x.std(ddof=1))
    single = mean_ci([1.0])
    assert single.mean == 1.0 and math.isnan(single.low)
    with pytest.raises(ValueError, match="values"):
        mean_ci([])
    with pytest.raises(ValueError, match="NaN"):
        mean_ci([1.0, float("inf")])


def test_paired_difference_cancels_the_shared_spread():
    rng = np.random.default_rng(1)
    difficulty = rng.normal(20, 5, size=50)  # shared per-image spread
    a = difficulty + 0.5 + rng.normal(0, 0.1, size=50)
    b = difficulty
    d = paired_difference(a, b)
    assert d.mean == pytest.approx(0.5, abs=0.05) and d.excludes_zero()
    # separate intervals of the two means overlap, the paired one resolves the difference
    ca, cb = mean_ci(a), mean_ci(b)
    assert ca.low < cb.high
    assert d.high - d.low < (ca.high - ca.low) / 10
    res = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert (d.low, d.high) == pytest.approx((res.low, res.high))
    with pytest.raises(ValueError, match="pair up"):
        paired_difference(a, b[:-1])


# --------------------------------------------------------------------------------- class leak

def test_feature_probe_pools_and_learns(victim, signs):
    oracle = split_oracle(victim, at=4)
    pooled = probe_features(oracle, signs.images[:10], at=4, pool=8)
    with torch.no_grad():
        full = split(victim, at=4).device(to_float(signs.images[:10]))
    torch.testing.assert_close(pooled, torch.nn.functional.avg_pool2d(full, 2))
    torch.testing.assert_close(probe_features(full, at=4, pool=8), pooled)
    probe = train_feature_probe(oracle, signs, at=4, epochs=15, seed=0)
    assert probe.history[-1] < probe.history[0]
    chance = np.bincount(signs.labels.numpy()).max() / len(signs)
    assert probe_accuracy(probe, full, signs.labels[:10]) >= 0.0
    train_acc = probe_accuracy(probe, split(victim, at=4).device(to_float(signs.images)).detach(),
                               signs.labels)
    assert train_acc > 3 * chance
    with pytest.raises(ValueError, match="pool"):
        FeatureProbe(6, pool=16)
    with pytest.raises(TypeError, match="query access"):
        train_feature_probe(split(victim, at=4).device, signs, at=4)


def test_independent_judge_is_trained_once_and_learns(signs):
    config = JudgeConfig(epochs=6, seed=3)
    judge = independent_judge(signs, config=config)
    again = independent_judge(signs, config=config)
    assert again.cache_hit and not judge.cache_hit
    for a, b in zip(judge.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    assert isinstance(judge.model, JudgeCNN) and len(judge.history) == 6
    assert judge.history[-1] < judge.history[0]
    chance = np.bincount(signs.labels.numpy()).max() / len(signs)
    leak = class_leak(judge.model, signs.images, to_float(signs.images), signs.labels)
    assert leak.original_accuracy > 3 * chance  # it learned something on its own images
    other = independent_judge(signs, config=JudgeConfig(epochs=6, seed=4))
    assert not other.cache_hit
    with pytest.raises(TypeError, match="ImageSet"):
        independent_judge(signs.images, config=config)
    with pytest.raises(ValueError, match="epochs"):
        JudgeConfig(epochs=0)
