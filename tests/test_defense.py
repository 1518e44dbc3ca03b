"""Tests of coinfer.defense: the model-perturbation shield, the baselines, the fit and the audit."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from coinfer.data import synthetic_signs, to_float
from coinfer.defense import (
    AccuracyFit,
    FreshNoiseConv2d,
    OutputDropout,
    OutputNoise,
    ParameterNoise,
    SweepConfig,
    accuracy,
    accuracy_curve,
    apply_shield,
    audit_inference_input,
    check_clipped,
    device_part_parameters,
    fit_accuracy_curve,
    fit_cache_path,
    fitted_accuracy_curve,
    interior_margin,
    perturb_parameters,
)
from coinfer.defense import _deployments_forward
from coinfer.defense import evaluate_shield as defense_evaluate
from coinfer.models import road_sign_cnn, split
from coinfer.privacy import laplace_noise, noise_scale
from coinfer.train import (TrainConfig, clip_parameters, device_parameters, evaluate,
                           train_classifier)

G = 0.05


@pytest.fixture(scope="module")
def clipped():
    """A randomly initialised CNN with its conv parameters clipped to G (no training needed)."""
    model = road_sign_cnn(seed=0).eval()
    clip_parameters(device_parameters(model), bound=G)
    return model


@pytest.fixture(scope="module")
def images():
    return to_float(synthetic_signs(6, seed=3).images)


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------------------------
# clipping during training
# --------------------------------------------------------------------------------------------

TINY_VICTIM = TrainConfig(data="synthetic", epochs=1, clip_bound=0.03, batch_size=64,
                          mixed_precision="off", augment=False)


@pytest.fixture(scope="module")
def trained():
    """A tiny victim trained for one epoch on synthetic signs with clipping G = 0.03."""
    return train_classifier(TINY_VICTIM, train_set=synthetic_signs(160, seed=0),
                            progress=False).model


def test_clipping_bound_holds_after_training(trained):
    model = trained
    norm = max(float(p.detach().abs().max()) for p in device_parameters(model))
    assert norm <= 0.03 * (1 + 1e-6)
    assert norm > 0.03 * 0.9  # the bound binds: clipping was actually applied
    check_clipped(model, at=6, clip_bound=0.03)
    perturb_parameters(model, epsilon=1.0, clip_bound=0.03, seed=0)
    # a model trained without clipping is refused, never clipped silently
    unclipped = road_sign_cnn(seed=0)
    with pytest.raises(ValueError, match="clip_bound"):
        perturb_parameters(unclipped, epsilon=1.0, clip_bound=0.03, seed=0)


# --------------------------------------------------------------------------------------------
# perturb_parameters
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["once", "fresh"])
def test_perturbation_leaves_the_input_model_unchanged(clipped, images, policy):
    before = state(clipped)
    with torch.no_grad():
        out_before = clipped(images)
    noisy = perturb_parameters(clipped, epsilon=1.0, clip_bound=G, policy=policy, seed=0)
    with torch.no_grad():
        noisy(images)
    assert noisy is not clipped
    assert same_state(before, state(clipped))
    with torch.no_grad():
        assert torch.equal(out_before, clipped(images))


def test_once_policy_is_deterministic_given_a_seed(clipped, images):
    a = perturb_parameters(clipped, epsilon=2.0, clip_bound=G, seed=11)
    b = perturb_parameters(clipped, epsilon=2.0, clip_bound=G, seed=11)
    c = perturb_parameters(clipped, epsilon=2.0, clip_bound=G, seed=12)
    d = perturb_parameters(clipped, epsilon=2.0, clip_bound=G,
                           generator=torch.Generator().manual_seed(11))
    assert same_state(state(a), state(b)) and same_state(state(a), state(d))
    assert not same_state(state(a), state(c))
    with torch.no_grad():  # a fixed model: the same input gives the same output, call after call
        assert torch.equal(a(images), a(images))


@pytest.mark.parametrize("at", [2, 4])
def test_once_noise_has_the_papers_scale_on_the_device_part_only(clipped, at):
    eps = 4.0
    noisy = perturb_parameters(clipped, epsilon=eps, clip_bound=G, at=at, seed=5)
    before, after = clipped.state_dict(), noisy.state_dict()
    device_names = {n for n, _ in clipped.named_parameters()
                    if int(n.split(".")[0]) < split(clipped, at=at).device.__len__()}
    diffs = []
    for name in before:
        delta = (after[name] - before[name]).reshape(-1)
        if name in device_names:
            diffs.append(delta)
        else:
            assert torch.equal(delta, torch.zeros_like(delta)), name
    noise = torch.cat(diffs).double().numpy()
    assert noise.size == sum(p.numel() for p in device_part_parameters(clipped, at=at))
    assert stats.kstest(noise, "laplace", args=(0.0, 2 * G / eps)).pvalue > 0.01


def test_whole_vector_calibration_multiplies_the_scale_by_d(clipped):
    paper = perturb_parameters(clipped, epsilon=1.0, clip_bound=G, seed=3)
    honest = perturb_parameters(clipped, epsilon=1.0, clip_bound=G, seed=3,
                                calibration="whole-vector")
    d = sum(p.numel() for p in device_part_parameters(clipped, at=4))
    for (n, p0), p1, p2 in zip(clipped.named_parameters(), paper.parameters(),
                               honest.parameters()):
        if p1 is not None and not torch.equal(p0, p1):
            # same uniforms, scale × d: the noise vectors are proportional
            assert torch.allclose((p2 - p0).double(), d * (p1 - p0).double(), rtol=1e-3,
                                  atol=1e-3 * d * 2 * G), n


def test_fresh_policy_does_not_repeat(clipped, images):
    noisy = perturb_parameters(clipped, epsilon=1.0, clip_bound=G, policy="fresh", seed=0)
    with torch.no_grad():
        a, b = noisy(images), noisy(images)
        twins = noisy(images[:1].expand(4, -1, -1, -1).contiguous())
    assert not torch.allclose(a, b)
    # every image of a batch gets its own draw, even identical images
    assert all(not torch.allclose(twins[0], twins[i]) for i in range(1, 4))
    # the noise comes from the model's own generator: restarting it reproduces the stream
    noisy.noise_source.reset()
    with torch.no_grad():
        assert torch.equal(noisy(images), a)
    # split still finds the device part, made of noisy convolutions
    parts = split(noisy, at=4)
    assert sum(isinstance(m, FreshNoiseConv2d) for m in parts.device) == 4
    assert not any(isinstance(m, FreshNoiseConv2d) for m in parts.edge)


def test_fresh_conv_applies_one_noisy_copy_per_image(clipped, images):
    noisy = perturb_parameters(clipped, epsilon=1.0, clip_bound=G, policy="fresh", seed=4)
    conv = split(noisy, at=1).device[0]
    state_before = conv.source.generator.get_state()
    with torch.no_grad():
        out = conv(images[:3])
    gen = torch.Generator()
    gen.set_state(state_before)
    w_noise = laplace_noise((3, *conv.weight.shape), scale=conv.scale, generator=gen)
    b_noise = laplace_noise((3, *conv.bias.shape), scale=conv.scale, generator=gen)
    for i in range(3):
        ref = torch.nn.functional.conv2d(images[i:i + 1], conv.weight + w_noise[i],
                                         conv.bias + b_noise[i], padding=1)
        assert torch.allclose(out[i:i + 1], ref, atol=1e-5)
    assert conv.scale == pytest.approx(noise_scale(epsilon=1.0, clip_bound=G,
                                                   num_parameters=10))


def test_fresh_copy_is_independent(clipped, images):
    noisy = perturb_parameters(clipped, epsilon=1.0, clip_bound=G, policy="fresh", seed=0)
    twin = copy.deepcopy(noisy)
    with torch.no_grad():
        assert torch.equal(noisy(images), twin(images))  # same state at the copy
        noisy(images)  # advancing the original does not advance the copy
        assert twin.noise_source.generator.get_state().ne(
            noisy.noise_source.generator.get_state()).any()


@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(epsilon=0.0), ValueError, "epsilon"),
    (dict(epsilon=-2.0), ValueError, "epsilon"),
    (dict(epsilon=math.nan), ValueError, "epsilon"),
    (dict(epsilon=math.inf), ValueError, "epsilon"),
    (dict(clip_bound=0.0), ValueError, "clip_bound"),
    (dict(clip_bound=-1.0), ValueError, "clip_bound"),
    (dict(clip_bound=math.nan), ValueError, "clip_bound"),
    (dict(policy="sometimes"), ValueError, "policy"),
    (dict(calibration="paper"), ValueError, "calibration"),
    (dict(at=7), ValueError, "at"),
    (dict(at=2.0), TypeError, "at"),
    (dict(seed=None), TypeError, "seed"),
    (dict(generator=torch.Generator()), TypeError, "either"),
    (dict(seed=-1), ValueError, "seed"),
])
def test_bad_inputs_raise(clipped, kwargs, exc, name):
    args = dict(epsilon=1.0, clip_bound=G, seed=0) | kwargs
    with pytest.raises(exc, match=name):
        perturb_parameters(clipped, **args)


def test_bad_model_raises():
    with pytest.raises(TypeError, match="model"):
        perturb_parameters(nn.Linear(2, 2), epsilon=1.0, clip_bound=1.0, seed=0)


# --------------------------------------------------------------------------------------------
# baseline shields and accuracy
# --------------------------------------------------------------------------------------------

def test_output_noise_and_dropout_shields(clipped, images):
    clean = split(clipped, at=4)
    with torch.no_grad():
        v = clean.device(images)
        noisy = apply_shield(clipped, OutputNoise(0.3), at=4, seed=1)
        delta = (noisy.device(images) - v).reshape(-1).double().numpy()
        assert stats.kstest(delta, "laplace", args=(0.0, 0.3)).pvalue > 0.01
        dropped = apply_shield(clipped, OutputDropout(0.4), at=4, seed=1).device(images)
    zeroed = (dropped == 0) & (v != 0)
    alive = v != 0
    assert abs(float(zeroed.sum()) / float(alive.sum()) - 0.4) < 0.02
    kept = (dropped != 0)
    assert torch.allclose(dropped[kept], v[kept] / 0.6)
    assert apply_shield(clipped, None, at=4).device[0] is clean.device[0]
    with pytest.raises(ValueError, match="rate"):
        OutputDropout(1.0)
    with pytest.raises(ValueError, match="scale"):
        OutputNoise(-1.0)
    with pytest.raises(ValueError, match="policy"):
        ParameterNoise(1.0, G, policy="never")


def test_accuracy_agrees_with_train_evaluate(clipped):
    data = synthetic_signs(40, seed=2)
    assert accuracy(clipped, data) == pytest.approx(evaluate(clipped, data))
    assert accuracy(split(clipped, at=3), data) == pytest.approx(evaluate(clipped, data))


# --------------------------------------------------------------------------------------------
# the accuracy curve and its cache
# --------------------------------------------------------------------------------------------

def test_fit_recovers_known_parameters():
    eps = np.geomspace(0.5, 500, 10)
    rng = np.random.default_rng(0)
    acc = accuracy_curve(eps, 0.12, 0.8)[:, None] + rng.normal(0, 0.002, (10, 3))
    a, b, cov = fit_accuracy_curve(eps, acc)
    assert a == pytest.approx(0.12, rel=0.05) and b == pytest.approx(0.8, rel=0.15)
    assert cov.shape == (2, 2)
    with pytest.raises(ValueError, match="epsilons"):
        fit_accuracy_curve(eps[:3], acc)
    with pytest.raises(ValueError, match="epsilons"):
        fit_accuracy_curve(-eps, acc)


def test_fitted_accuracy_curve_is_cached_and_reproducible(trained):
    victim, model = TINY_VICTIM, trained
    test = synthetic_signs(60, seed=1)
    settings = SweepConfig(epsilons=(1.0, 30.0, 1000.0), draws=2, num_images=40, victim=victim)
    path = fit_cache_path(settings)
    assert not path.exists()
    fit = fitted_accuracy_curve(settings, model=model, test_set=test)
    assert isinstance(fit, AccuracyFit) and path.exists()
    assert fit.a > 0 and fit.b > 0 and isinstance(fit.a, float)
    assert np.asarray(fit.accuracy).shape == (3, 2)
    blob = json.loads(path.read_text())
    assert blob["fit"]["a"] == fit.a
    cached = fitted_accuracy_curve(settings)  # no model needed: read from the cache
    assert cached == fit
    again = fitted_accuracy_curve(settings, model=model, test_set=test, recompute=True)
    assert again == fit  # the sweep is deterministic
    assert fit(np.array([1.0])) == pytest.approx(fit.a * np.log(fit.b + 1))
    with pytest.raises(ValueError, match="epsilons"):
        SweepConfig(epsilons=(10.0, 1.0))
    with pytest.raises(ValueError, match="clip_bound"):
        SweepConfig(victim=TrainConfig())


def test_default_sweep_settings_are_the_chapters():
    settings = SweepConfig()
    assert settings.at == 4 and settings.policy == "once"
    assert settings.calibration == "per-coordinate"
    assert len(settings.epsilons) >= 8
    ratios = np.diff(np.log(settings.epsilons))
    assert np.allclose(ratios, ratios[0], rtol=0.01)  # log-spaced


# --------------------------------------------------------------------------------------------
# the audit with respect to the inference input
# --------------------------------------------------------------------------------------------

def test_interior_margin_and_translation_equivariance(clipped):
    assert [interior_margin(k) for k in range(1, 7)] == [1, 2, 2, 3, 3, 4]
    noisy = perturb_parameters(clipped, epsilon=1.0, clip_bound=G, policy="fresh", seed=2)
    flat = torch.full((3, 3, 32, 32), 0.4)
    with torch.no_grad():
        v = split(noisy, at=4).device(flat)
    m = interior_margin(4)
    inner = v[:, :, m:-m, m:-m]
    assert torch.equal(inner, inner[:, :, :1, :1].expand_as(inner))
    # and the margin is tight: one step closer to the border the value differs
    assert not torch.equal(v[:, :, m - 1:-m + 1, m - 1:-m + 1],
                           v[:, :, m:m + 1, m:m + 1].expand(-1, -1, 12, 12))


def test_batched_deployments_equal_perturb_parameters(clipped, images):
    scale = noise_scale(epsilon=1.0, clip_bound=G, num_parameters=1)
    with torch.no_grad():
        out = _deployments_forward(split(clipped, at=4).device, 4, scale, 3,
                                   torch.Generator().manual_seed(9), images[:2])
        ref = split(perturb_parameters(clipped, epsilon=1.0, clip_bound=G, seed=9),
                    at=4).device(images[:2])
    assert out.shape == (3, 2, 64, 16, 16)
    assert torch.allclose(out[0], ref, rtol=1e-4, atol=1e-5 * float(ref.abs().max()))


def test_audit_shows_no_dp_for_the_inference_input(clipped, images):
    x = images[0]
    x_prime = x.clone()
    x_prime[:, 16, 16] = 0.0  # one pixel changed
    once = audit_inference_input(clipped, x, x_prime, epsilon=0.5, clip_bound=G, trials=120)
    assert once.accuracy == 1.0 and once.epsilon_lower > 2.0 > 0.5
    flat = torch.full((3, 32, 32), 0.5)
    flat_prime = flat.clone()
    flat_prime[:, 16, 16] = 0.0
    fresh = audit_inference_input(clipped, flat, flat_prime, epsilon=0.5, clip_bound=G,
                                  policy="fresh", calibration="whole-vector",
                                  distinguisher="constant-image", trials=120)
    assert fresh.epsilon_lower > 2.0
    with pytest.raises(ValueError, match="constant"):
        audit_inference_input(clipped, x, x_prime, epsilon=0.5, clip_bound=G, policy="fresh",
                              distinguisher="constant-image", trials=20)
    with pytest.raises(ValueError, match="requery"):
        audit_inference_input(clipped, x, x_prime, epsilon=0.5, clip_bound=G, policy="fresh",
                              distinguisher="requery", trials=20)
    with pytest.raises(ValueError, match="x_prime"):
        audit_inference_input(clipped, x, images[:2], epsilon=0.5, clip_bound=G, trials=20)
    with pytest.raises(ValueError, match="epsilon"):
        audit_inference_input(clipped, x, x_prime, epsilon=-1.0, clip_bound=G, trials=20)


# --------------------------------------------------------------------------------------------
# shields against attackers (Table 2 / frontier helpers)
# --------------------------------------------------------------------------------------------

def test_evaluate_shield_runs_both_attackers(clipped):
    from coinfer.attack import InverseConfig, inverse_network

    eval_set = synthetic_signs(12, seed=5)
    queries = synthetic_signs(24, seed=6).images
    inverse = inverse_network(4, InverseConfig(seed=0))
    shield = ParameterNoise(20.0, G)
    row = defense_evaluate(clipped, shield, eval_set=eval_set, clean_inverse=inverse,
                           attacker_images=queries,
                           adaptive_config=InverseConfig(max_epochs=1, batch_size=8))
    # the once-policy pipeline is deterministic: the accuracy equals a fresh evaluation of it
    assert row.accuracy == pytest.approx(accuracy(apply_shield(clipped, shield, seed=0), eval_set))
    assert row.clean_api.n == 12 and row.adaptive.n == 12
    assert row.examples.shape == (8, 3, 32, 32) and row.examples_adaptive.shape == (8, 3, 32, 32)
    assert row.adaptive_inverse.epochs == 1 and row.label == "θ-noise once ε=20"
    plain = defense_evaluate(clipped, None, eval_set=eval_set, clean_inverse=inverse,
                             metric_images=5)
    assert plain.adaptive is None and plain.clean_api.n == 5
    with pytest.raises(ValueError, match="attacker_images"):
        defense_evaluate(clipped, None, eval_set=eval_set, clean_inverse=inverse,
                         attacker_images=queries)


def test_evaluate_shield_is_replayed_only_for_the_same_deployment(clipped, monkeypatch):
    import coinfer.defense.evaluate as evaluate_module
    from coinfer.attack import InverseConfig, inverse_network

    eval_set = synthetic_signs(10, seed=5)
    inverse = inverse_network(4, InverseConfig(seed=0))
    computed = []
    real = evaluate_module._evaluate_shield
    monkeypatch.setattr(evaluate_module, "_evaluate_shield",
                        lambda *a, **k: computed.append(k["seed"]) or real(*a, **k))
    shield = ParameterNoise(20.0, G)
    first = defense_evaluate(clipped, shield, eval_set=eval_set, clean_inverse=inverse, seed=0)
    again = defense_evaluate(clipped, shield, eval_set=eval_set, clean_inverse=inverse, seed=0)
    assert computed == [0]  # the second call is the cached result
    assert again.accuracy == first.accuracy and torch.equal(again.examples, first.examples)
    np.testing.assert_array_equal(again.clean_api.psnr, first.clean_api.psnr)
    defense_evaluate(clipped, shield, eval_set=eval_set, clean_inverse=inverse, seed=1)
    other_inverse = inverse_network(4, InverseConfig(seed=1))
    defense_evaluate(clipped, shield, eval_set=eval_set, clean_inverse=other_inverse, seed=0)
    defense_evaluate(clipped, shield, eval_set=synthetic_signs(10, seed=6),
                     clean_inverse=inverse, seed=0)
    assert computed == [0, 1, 0, 0]  # another seed, attacker or image set is computed
    monkeypatch.setenv("COINFER_RESULT_CACHE", "off")
    off = defense_evaluate(clipped, shield, eval_set=eval_set, clean_inverse=inverse, seed=0)
    assert computed == [0, 1, 0, 0, 0] and off.accuracy == first.accuracy


def test_strength_helpers():
    from coinfer.defense import (interpolate_at_accuracy, shield_strength,
                                 strength_for_accuracy, with_strength)

    assert shield_strength(ParameterNoise(5.0, G)) == 5.0
    assert with_strength(OutputNoise(0.1), 0.3) == OutputNoise(0.3)
    assert with_strength(OutputDropout(0.1), 0.5).rate == 0.5
    with pytest.raises(TypeError, match="shield"):
        shield_strength(None)
    # accuracy falls with the noise scale; the strength for 0.5 lies between 1 and 2 (log-linear)
    scales, acc = [0.5, 1.0, 2.0, 4.0], [0.9, 0.7, 0.3, 0.1]
    assert strength_for_accuracy(scales, acc, 0.5) == pytest.approx(np.sqrt(2.0))
    with pytest.raises(ValueError, match="bracketed"):
        strength_for_accuracy(scales, acc, 0.95)
    values = interpolate_at_accuracy(acc, [10.0, 20.0, 30.0, 40.0], [0.5, 0.99])
    assert values[0] == pytest.approx(25.0) and np.isnan(values[1])
