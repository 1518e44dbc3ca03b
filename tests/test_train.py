import pytest
import torch

from coinfer.data import load_gtsrb, synthetic_signs
from coinfer.train import (VICTIM, TrainConfig, clip_parameters, confusion_matrix, device_parameters,
                           evaluate, load_or_train, predict, train_classifier)

SMALL = TrainConfig(epochs=2, batch_size=32, data="synthetic", num_threads=1, clip_bound=0.3)


@pytest.fixture(scope="module")
def signs():
    return synthetic_signs(320, seed=0, num_classes=4)


@pytest.fixture(scope="module")
def trained(signs):
    return train_classifier(SMALL, train_set=signs, progress=False)


def test_clip_parameters_math():
    a = torch.tensor([0.5, -2.0])
    b = torch.tensor([[1.0]])
    factor = clip_parameters([a, b], bound=1.0)
    assert factor == 2.0
    assert torch.allclose(a, torch.tensor([0.25, -1.0])) and torch.allclose(b, torch.tensor([[0.5]]))
    assert clip_parameters([a, b], bound=5.0) == 1.0  # already inside: unchanged
    assert torch.allclose(a, torch.tensor([0.25, -1.0]))


@pytest.mark.parametrize("bound", [0.0, -1.0, float("nan")])
def test_clip_parameters_rejects_bad_bound(bound):
    with pytest.raises(ValueError, match="bound"):
        clip_parameters([torch.ones(2)], bound=bound)


def test_clip_parameters_needs_params():
    with pytest.raises(ValueError, match="params"):
        clip_parameters([], bound=1.0)


def test_training_respects_clip_bound_and_learns(trained, signs):
    assert max(float(p.detach().abs().max()) for p in device_parameters(trained.model)) <= SMALL.clip_bound + 1e-6
    assert len(trained.history) == 2
    # the optimiser really steps: the loss falls from ≈ ln 43 towards the 4-class level ln 4
    assert trained.history[-1]["train_loss"] < 0.75 * trained.history[0]["train_loss"]


def test_training_is_deterministic(trained, signs):
    again = train_classifier(SMALL, train_set=signs, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(trained.model.state_dict().values(),
                                                 again.model.state_dict().values()))


def test_seed_changes_the_result(trained, signs):
    other = train_classifier(TrainConfig(**{**SMALL.__dict__, "seed": 1}), train_set=signs,
                             progress=False)
    assert not torch.equal(other.model[0].weight, trained.model[0].weight)


def test_cache_hit_equals_retraining(signs):
    first = load_or_train(SMALL, train_set=signs, progress=False)
    assert not first.cache_hit
    hit = load_or_train(SMALL, train_set=signs, progress=False)
    assert hit.cache_hit
    retrained = load_or_train(SMALL, train_set=signs, progress=False, retrain=True)
    for a, b, c in zip(first.model.state_dict().values(), hit.model.state_dict().values(),
                       retrained.model.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_corrupt_cache_is_retrained(signs, tmp_path, monkeypatch):
    monkeypatch.setenv("COINFER_CACHE", str(tmp_path))
    config = TrainConfig(**{**SMALL.__dict__, "epochs": 1})
    load_or_train(config, train_set=signs, progress=False)
    [ckpt] = (tmp_path / "models").glob("victim-*.pt")
    ckpt.write_bytes(b"garbage")
    result = load_or_train(config, train_set=signs, progress=False)
    assert not result.cache_hit and torch.load(ckpt, weights_only=True)["state_dict"]


def test_predict_and_confusion(trained, signs):
    logits = predict(trained.model, signs.images[:10])
    assert logits.shape == (10, 43)
    floats = predict(trained.model, signs.images[:10].float() / 255)
    assert torch.allclose(logits, floats, atol=1e-5)
    cm = confusion_matrix(trained.model, signs)
    assert cm.sum() == len(signs) and cm.trace() / len(signs) == pytest.approx(evaluate(trained.model, signs))


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"lr": -1.0}, {"clip_bound": 0.0}, {"data": "mnist"},
                                    {"mixed_precision": "fp8"}, {"val_fraction": 0.0},
                                    {"schedule": "step"}, {"batch_size": 1.5}])
def test_bad_config(kwargs):
    name = next(iter(kwargs))
    with pytest.raises((ValueError, TypeError), match=name):
        TrainConfig(**kwargs)


def test_train_rejects_non_config():
    with pytest.raises(TypeError, match="config"):
        train_classifier({"epochs": 1})


@pytest.mark.gtsrb
@pytest.mark.slow
@pytest.mark.user_cache  # the shared victim of the book (trained once, ~5 min, then cached)
def test_victim_reaches_the_accuracy_target(real_gtsrb_root):
    victim = load_or_train(VICTIM, train_set=load_gtsrb("train", root=real_gtsrb_root, progress=False),
                           progress=False)
    test = load_gtsrb("test", root=real_gtsrb_root, progress=False)
    assert evaluate(victim.model, test) >= 0.95
    assert max(float(p.detach().abs().max()) for p in device_parameters(victim.model)) <= VICTIM.clip_bound + 1e-6


def test_most_confused():
    from coinfer.train import most_confused
    import numpy as np

    cm = np.array([[5, 2, 0], [7, 1, 1], [0, 3, 9]])
    assert most_confused(cm, top=2) == [(1, 0, 7), (2, 1, 3)]
    assert most_confused(np.eye(3, dtype=int)) == []
    with pytest.raises(ValueError, match="cm"):
        most_confused(np.ones((2, 3)))
