"""The spears: query-only access, the three phases of Algorithm 1, the cache, the white-box rMLE.

Everything runs on synthetic signs and a randomly initialised (clipped) road-sign CNN, so the
file needs neither GTSRB nor the trained victim.
"""

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from coinfer.attack import (
    AttackProtocol,
    AttackResult,
    BlackBoxAccessError,
    InverseConfig,
    InverseNetwork,
    QueryAccess,
    black_box_attack,
    chapter_attacker,
    class_leak,
    inverse_network,
    intercept,
    inverse_strides,
    learn,
    load_or_train_attacker,
    mean_image_baseline,
    noise_queries,
    observe,
    query_subset,
    reconstruct,
    split_oracle,
    total_variation,
    tune_tv_weight,
    white_box_attack,
)
from coinfer.config import cache_dir
from coinfer.data import ImageSet, synthetic_signs, to_float
from coinfer.metrics import reconstruction_metrics
from coinfer.models import feature_shape, road_sign_cnn, split
from coinfer.train import clip_parameters, device_parameters

FAST = InverseConfig(max_epochs=3, batch_size=32)


@pytest.fixture(scope="module")
def victim():
    model = road_sign_cnn(seed=0).eval()
    clip_parameters(device_parameters(model), bound=0.5)  # like the course's victim
    return model


@pytest.fixture(scope="module")
def signs():
    return synthetic_signs(160, seed=0)


@pytest.fixture(scope="module")
def victims_signs():
    return synthetic_signs(40, seed=1)


class Tripwire:
    """A callable that fails the test if anything but calling it is attempted."""

    def __init__(self, fn):
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_calls", [0])

    def __call__(self, x):
        object.__getattribute__(self, "_calls")[0] += 1
        return object.__getattribute__(self, "_fn")(x)

    def __getattribute__(self, name):
        if name == "__class__":
            return object.__getattribute__(self, name)
        raise AssertionError(f"the black-box attack read {name!r} of its oracle")


# ---------------------------------------------------------------------------------- threat model

def test_query_access_answers_queries_like_the_device_model(victim, signs):
    device = split(victim, at=4).device
    oracle = QueryAccess(device, batch_size=7)
    x = to_float(signs.images[:20])
    with torch.no_grad():
        expected = device(x)
    out = oracle(x)
    assert out.dtype == torch.float32 and out.device.type == "cpu" and not out.requires_grad
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(oracle(signs.images[:20]), expected)  # uint8 accepted
    assert oracle.queries == 40


@pytest.mark.parametrize("name", ["parameters", "state_dict", "named_modules", "children",
                                  "device_model", "model", "_QueryAccess__query", "__dict__",
                                  "__getstate__", "__setstate__", "forward", "weight"])
def test_query_access_hides_everything_but_calls(victim, name):
    oracle = split_oracle(victim, at=2)
    with pytest.raises(BlackBoxAccessError, match="only calling"):
        getattr(oracle, name)


def test_query_access_cannot_be_modified_copied_or_pickled(victim):
    import copy

    oracle = split_oracle(victim, at=2)
    with pytest.raises(BlackBoxAccessError):
        oracle.model = victim
    with pytest.raises(BlackBoxAccessError):
        del oracle.queries
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(oracle)
    with pytest.raises(TypeError, match="pickled"):
        copy.deepcopy(oracle)
    assert "black-box" in repr(oracle)


def test_query_access_validates_queries(victim):
    oracle = split_oracle(victim, at=2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        oracle(torch.full((1, 3, 32, 32), 2.0))
    with pytest.raises(ValueError, match="shape"):
        oracle(torch.rand(1, 3, 16, 16))
    with pytest.raises(TypeError, match="callable"):
        QueryAccess(42)


def test_black_box_attack_uses_nothing_but_calls(victim, signs, victims_signs):
    device = split(victim, at=6).device
    tripwire = Tripwire(lambda x: device(x))
    with torch.no_grad():
        v0 = device(to_float(victims_signs.images))
    result = black_box_attack(tripwire, signs, v0, at=6, config=FAST, progress=False)
    assert isinstance(result, AttackResult)
    assert result.reconstructions.shape == (40, 3, 32, 32)
    assert object.__getattribute__(tripwire, "_calls")[0] >= 1
    # the same through the QueryAccess wrapper of the real thing
    oracle = QueryAccess(Tripwire(lambda x: device(x)))
    black_box_attack(oracle, signs, v0, at=6, config=FAST, progress=False)
    assert oracle.queries == 160


def test_black_box_attack_refuses_the_module_itself(victim, signs):
    device = split(victim, at=2).device
    v0 = torch.rand(2, *feature_shape(2))
    with pytest.raises(TypeError, match="QueryAccess"):
        black_box_attack(device, signs, v0, at=2, progress=False)
    with pytest.raises(TypeError, match="QueryAccess"):
        observe(device, signs)


# ---------------------------------------------------------------------------------- observe

def test_observe_is_batched_and_accepts_uint8_and_float(victim, signs):
    oracle = split_oracle(victim, at=4)
    a = observe(oracle, signs.images[:30], batch_size=7)
    b = observe(oracle, to_float(signs.images[:30]), batch_size=512)
    assert a.shape == (30, *feature_shape(4)) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    c = observe(oracle, signs.subset(slice(0, 30)), dtype=torch.bfloat16)
    assert c.dtype == torch.bfloat16
    torch.testing.assert_close(c.float(), a, rtol=1e-2, atol=1e-2)
    plain = observe(lambda x: split(victim, at=4).device(x).detach(), signs.images[:30])
    torch.testing.assert_close(plain, a)


@pytest.mark.parametrize("images, err, match", [
    (torch.zeros(0, 3, 32, 32, dtype=torch.uint8), ValueError, "empty"),
    (torch.full((2, 3, 32, 32), -0.1), ValueError, r"\[0, 1\]"),
    (torch.full((2, 3, 32, 32), float("nan")), ValueError, "NaN"),
    (torch.zeros(2, 32, 32, 3), ValueError, "shape"),
    (torch.zeros(2, 3, 32, 32, dtype=torch.int64), TypeError, "dtype"),
])
def test_observe_rejects_bad_query_sets(victim, images, err, match):
    with pytest.raises(err, match=match):
        observe(split_oracle(victim, at=2), images)


def test_intercept_gives_every_split_in_one_pass(victim, signs):
    v = intercept(victim, signs.images[:10], splits=(6, 2, 4), batch_size=4)
    assert sorted(v) == [2, 4, 6]
    for k in (2, 4, 6):
        with torch.no_grad():
            torch.testing.assert_close(v[k], split(victim, at=k).device(to_float(signs.images[:10])))
    with pytest.raises(ValueError, match="split"):
        intercept(victim, signs.images[:2], splits=(7,))


def test_observe_rejects_a_broken_oracle(signs):
    with pytest.raises(ValueError, match="one row per query"):
        observe(lambda x: torch.zeros(3), signs.images[:5])


# ---------------------------------------------------------------------------------- g_ω

@pytest.mark.parametrize("at, strides", [(1, (1, 1)), (2, (1, 1)), (3, (2, 1)), (4, (2, 1)),
                                         (5, (2, 2)), (6, (2, 2))])
def test_paper_inverse_architecture_for_every_split(at, strides):
    assert inverse_strides(at) == strides
    net = InverseNetwork(at)
    deconvs = [m for m in net if isinstance(m, nn.ConvTranspose2d)]
    assert len(deconvs) == 2 and sum(isinstance(m, nn.ReLU) for m in net) == 1
    assert isinstance(net[1], nn.ReLU)  # the ReLU sits between the two deconvolutions
    assert deconvs[0].in_channels == 64 and deconvs[0].out_channels == 64
    assert deconvs[1].out_channels == 3
    assert all(d.kernel_size == (3, 3) for d in deconvs)
    assert tuple(d.stride[0] for d in deconvs) == strides
    with torch.no_grad():
        out = net(torch.rand(2, *feature_shape(at)))
    assert out.shape == (2, 3, 32, 32) and 0 <= float(out.min()) and float(out.max()) <= 1


@pytest.mark.parametrize("at", [2, 4, 6])
@pytest.mark.parametrize("output", ["sigmoid", "clamp"])
def test_deep_inverse_and_output_range(at, output):
    net = InverseNetwork(at, architecture="deep", output=output)
    assert sum(isinstance(m, nn.ConvTranspose2d) for m in net) == 5
    with torch.no_grad():
        out = net(torch.randn(2, *feature_shape(at)) * 10)
    assert out.shape == (2, 3, 32, 32) and float(out.min()) >= 0 and float(out.max()) <= 1


def test_inverse_network_rejects_features_of_another_split():
    with pytest.raises(ValueError, match="at=4"):
        InverseNetwork(4)(torch.rand(2, *feature_shape(2)))
    with pytest.raises(ValueError, match="split point"):
        InverseNetwork(7)


def test_inverse_initialisation_is_seeded():
    a, b = inverse_network(2, InverseConfig(seed=1)), inverse_network(2, InverseConfig(seed=1))
    c = inverse_network(2, InverseConfig(seed=2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize("kwargs, err", [
    ({"architecture": "unet"}, ValueError), ({"output": "tanh"}, ValueError),
    ({"max_epochs": 0}, ValueError), ({"lr": -1.0}, ValueError), ({"val_fraction": 1.0}, ValueError),
    ({"batch_size": 2.5}, TypeError), ({"min_delta": 1.0}, ValueError),
    ({"lr_decay": 1.5}, ValueError), ({"mixed_precision": "fp8"}, ValueError),
])
def test_inverse_config_validation(kwargs, err):
    with pytest.raises(err):
        InverseConfig(**kwargs)


# ---------------------------------------------------------------------------------- learn

@pytest.fixture(scope="module")
def split6_pairs(victim, signs):
    return observe(split_oracle(victim, at=6), signs), signs.images


def test_learn_reduces_the_loss_and_is_deterministic(split6_pairs):
    v, x = split6_pairs
    config = InverseConfig(max_epochs=4, batch_size=16, mixed_precision="off")
    a = learn(v, x, at=6, config=config, progress=False)
    b = learn(v, x, at=6, config=config, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert a.history == b.history
    assert a.history[-1]["train_loss"] < a.history[0]["train_loss"]
    assert a.n_train + a.n_val == 160 and a.n_val == 16
    assert a.val_loss == min(h["val_loss"] for h in a.history)
    assert a.history[a.best_epoch - 1]["val_loss"] == a.val_loss
    # the returned weights are the best held-out ones, not the last
    assert not a.model.training


def test_plateau_rule_drops_the_learning_rate_then_stops(split6_pairs):
    v, x = split6_pairs
    # a vanishing learning rate cannot improve the held-out loss: epoch 1 sets the best, then
    # `patience` epochs without improvement -> lr drop, `patience` more -> stop
    config = InverseConfig(lr=1e-12, patience=2, lr_drops=1, lr_decay=0.5, max_epochs=50,
                           batch_size=64)
    r = learn(v, x, at=6, config=config, progress=False)
    assert r.stop_reason == "plateau" and r.epochs == 5
    assert [h["lr"] for h in r.history] == [1e-12] * 3 + [5e-13] * 2
    capped = learn(v, x, at=6, config=InverseConfig(max_epochs=2, batch_size=64), progress=False)
    assert capped.stop_reason == "max_epochs" and capped.epochs == 2


def test_learn_validates_its_inputs(split6_pairs):
    v, x = split6_pairs
    with pytest.raises(ValueError, match="at=4"):
        learn(v, x, at=4, progress=False)
    with pytest.raises(ValueError, match="pair up"):
        learn(v, x[:-1], at=6, progress=False)
    with pytest.raises(ValueError, match="too small"):
        learn(v[:1], x[:1], at=6, progress=False)
    with pytest.raises(ValueError, match="empty"):
        learn(v[:0], x[:0], at=6, progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        learn(v, to_float(x) * 1.5, at=6, progress=False)
    with pytest.raises(TypeError, match="InverseConfig"):
        learn(v, x, at=6, config={"lr": 1e-3}, progress=False)


def test_reconstruct_checks_the_split(split6_pairs):
    v, x = split6_pairs
    net = inverse_network(6)
    out = reconstruct(net, v[:5], batch_size=2)
    assert out.shape == (5, 3, 32, 32) and out.dtype == torch.float32
    with pytest.raises(ValueError, match="at=6"):
        reconstruct(net, torch.rand(2, *feature_shape(2)))


# ---------------------------------------------------------------------------------- cache

def test_attacker_cache_round_trip_and_corruption(victim, signs):
    oracle = split_oracle(victim, at=6)
    first = load_or_train_attacker(oracle, signs, at=6, config=FAST, cache_key="t-victim",
                                   progress=False)
    again = load_or_train_attacker(split(victim, at=6).device, signs, at=6, config=FAST,
                                   cache_key="t-victim", progress=False)
    assert not first.cache_hit and again.cache_hit
    assert all(torch.equal(p, q) for p, q in zip(first.model.parameters(), again.model.parameters()))
    assert again.history == first.history and again.stop_reason == first.stop_reason
    files = sorted(cache_dir("attackers").glob("t-victim-at6-*.pt"))
    assert len(files) == 1
    files[0].write_bytes(b"not a checkpoint")
    healed = load_or_train_attacker(oracle, signs, at=6, config=FAST, cache_key="t-victim",
                                    progress=False)
    assert not healed.cache_hit
    assert all(torch.equal(p, q) for p, q in zip(first.model.parameters(), healed.model.parameters()))
    # another victim behind the same name is recognised by its answers: no stale attacker
    other = road_sign_cnn(seed=5).eval()
    fresh = load_or_train_attacker(split_oracle(other, at=6), signs, at=6, config=FAST,
                                   cache_key="t-victim", progress=False)
    assert not fresh.cache_hit
    assert len(list(cache_dir("attackers").glob("t-victim-at6-*.pt"))) == 2
    with pytest.raises(ValueError, match="cache_key"):
        load_or_train_attacker(oracle, signs, at=6, cache_key="../escape", progress=False)


# ---------------------------------------------------------------------------------- white box

def test_total_variation():
    flat = torch.full((2, 3, 8, 8), 0.3)
    assert torch.allclose(total_variation(flat, eps=0.0), torch.zeros(2))
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., ::2] = 1.0  # vertical stripes: |dw| = 1 everywhere, dh = 0
    assert total_variation(stripes, eps=0.0).item() == pytest.approx(1.0)
    assert total_variation(stripes, beta=2.0, eps=0.0).item() == pytest.approx(1.0)
    noisy = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert total_variation(noisy) > total_variation(flat[:1])


def test_white_box_rmle_recovers_shallow_features(victim, victims_signs):
    device = split(victim, at=2).device
    x0 = to_float(victims_signs.images[:4])
    with torch.no_grad():
        v0 = device(x0)
    before = [p.detach().clone() for p in device.parameters()]
    result = white_box_attack(device, v0, at=2, tv_weight=0.01, steps=60, lr=0.1, seed=0,
                              progress=False)
    assert result.reconstructions.shape == x0.shape
    assert 0 <= float(result.reconstructions.min()) and float(result.reconstructions.max()) <= 1
    quality = reconstruction_metrics(x0, result.reconstructions)
    assert quality.mean("psnr") > 20
    assert result.history[-1]["objective"] < result.history[0]["objective"]
    assert all(torch.equal(a, b) for a, b in zip(before, device.parameters()))
    assert all(p.requires_grad and p.grad is None for p in device.parameters())
    again = white_box_attack(device, v0, at=2, tv_weight=0.01, steps=60, lr=0.1, seed=0,
                             progress=False)
    assert torch.equal(again.reconstructions, result.reconstructions)


def test_white_box_needs_the_model(victim):
    with pytest.raises(TypeError, match="white-box"):
        white_box_attack(split_oracle(victim, at=2), torch.rand(1, *feature_shape(2)), at=2)
    with pytest.raises(ValueError, match="at=4"):
        white_box_attack(split(victim, at=4).device, torch.rand(1, *feature_shape(2)), at=4)


def test_tv_weight_is_tuned_on_the_attackers_own_images(victim, signs):
    best, scores = tune_tv_weight(split(victim, at=2).device, signs.images[:2], at=2,
                                  grid=(1e-3, 30.0), steps=40)
    assert set(scores) == {1e-3, 30.0} and best == max(scores, key=scores.get)
    assert best == 1e-3  # a huge smoothness prior only hurts when the features pin the image down
    with pytest.raises(ValueError, match="grid"):
        tune_tv_weight(split(victim, at=2).device, signs.images[:2], at=2, grid=())


# ---------------------------------------------------------------------------------- helpers

def test_helpers(victim, signs):
    base = mean_image_baseline(signs, 3)
    assert base.shape == (3, 3, 32, 32)
    torch.testing.assert_close(base[0], to_float(signs.images).mean(0))
    noise = noise_queries(10, seed=1)
    assert noise.dtype == torch.uint8 and torch.equal(noise, noise_queries(10, seed=1))
    sub = query_subset(signs, 8, seed=0, classes=(0, 1, 2))
    assert len(sub) == 8 and set(sub.labels.tolist()) <= {0, 1, 2}
    assert torch.equal(sub.images, query_subset(signs, 8, seed=0, classes=(0, 1, 2)).images)
    with pytest.raises(ValueError, match="exceeds"):
        query_subset(signs, 10_000)
    leak = class_leak(victim, signs.images[:16], to_float(signs.images[:16]), signs.labels[:16])
    assert leak.agreement == 1.0 and leak.n == 16
    assert leak.original_accuracy == leak.reconstruction_accuracy


def test_protocol_draws_disjoint_deterministic_sets_and_caches_its_attacker(victim, signs):
    protocol = AttackProtocol(n_queries=60, n_victims=10, splits=(6,), cache_key="t-proto",
                              config=InverseConfig(max_epochs=2, batch_size=32))
    queries = protocol.attacker_images(signs)
    assert len(queries) == 60 and torch.equal(queries.images, protocol.attacker_images(signs).images)
    assert len(protocol.victim_images(signs)) == 10
    first = chapter_attacker(victim, signs, at=6, protocol=protocol, progress=False)
    again = chapter_attacker(victim, signs, at=6, protocol=protocol, progress=False)
    assert not first.cache_hit and again.cache_hit and first.n_train + first.n_val == 60
    with pytest.raises(ValueError, match="split"):
        AttackProtocol(splits=(2, 9))
    with pytest.raises(TypeError, match="config"):
        AttackProtocol(config={"lr": 1.0})


# ---------------------------------------------------------------------------------- end to end

def test_attack_beats_the_mean_image_clearly_at_split_2(victim):
    """Algorithm 1 end to end on a small slice: far better than guessing the mean image."""
    queries = synthetic_signs(240, seed=10)
    targets = synthetic_signs(40, seed=11)
    oracle = split_oracle(victim, at=2)
    v0 = observe(oracle, targets)
    config = InverseConfig(max_epochs=6, batch_size=16)
    result = black_box_attack(oracle, queries, v0, at=2, config=config, progress=False)
    truth = to_float(targets.images)
    attack = reconstruction_metrics(truth, result.reconstructions)
    baseline = reconstruction_metrics(truth, mean_image_baseline(queries, len(targets)))
    assert attack.mean("psnr") > baseline.mean("psnr") + 6.0
    assert attack.mean("ssim") > baseline.mean("ssim") + 0.3
    assert attack.ci95("mse")[1] < baseline.ci95("mse")[0]
    assert isinstance(targets, ImageSet) and np.isfinite(attack.psnr).all()
