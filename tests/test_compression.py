"""Feature compression at a split: quantisation curves, the PCA/learned bottleneck, and its costs."""

import numpy as np
import pytest
import torch
from torch import nn

from coinfer.compression import (Bottleneck, BottleneckConfig, bottleneck_accuracy, bottleneck_costs,
                                 code_bytes, load_or_train_bottleneck, pca_bottleneck,
                                 quantized_accuracies, run_layers, train_bottleneck)
from coinfer.costs import LinkModel, bandwidth_window, compressed_accuracy, latency
from coinfer.data import ImageSet
from coinfer.models import road_sign_cnn

POOL2 = 10  # layers 0…9 of RoadSignCNN end with the second max-pool (64 × 8 × 8 features)


@pytest.fixture(scope="module")
def model():
    return road_sign_cnn(seed=3).eval()


@pytest.fixture(scope="module")
def data(model):
    x = torch.rand(96, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        labels = model(x).argmax(1)
    return ImageSet(x, labels, "random")


def test_run_layers_composes_to_the_model(model, data):
    v = run_layers(model, data.images, stop=POOL2, batch_size=40)
    assert v.shape == (96, 64, 8, 8)
    logits = run_layers(model, v, start=POOL2, stop=len(model))
    with torch.no_grad():
        assert torch.allclose(logits, model(data.images), atol=1e-5)
    u8 = (data.images * 255).round().to(torch.uint8)
    assert torch.allclose(run_layers(model, u8, stop=2), run_layers(model, u8.float() / 255, stop=2))
    with pytest.raises(ValueError, match="stop"):
        run_layers(model, data.images, start=3, stop=3)


def test_quantized_accuracies_agree_with_compressed_accuracy(model, data):
    v = run_layers(model, data.images, stop=POOL2)
    curve = quantized_accuracies(model, v, data.labels, boundary=POOL2, bits=[32, 4, 1])
    assert list(curve) == [32, 4, 1] and curve[32] == 1.0  # labels are the model's own predictions
    for bits, acc in curve.items():
        assert acc == pytest.approx(compressed_accuracy(model, data, boundary=POOL2, bits=bits))
    with pytest.raises(ValueError, match="boundary"):
        quantized_accuracies(model, v, data.labels, boundary=0, bits=[8])


def test_pca_bottleneck_is_the_best_linear_reconstruction():
    # features of rank 3 in 16 channels: a 3-channel PCA bottleneck reconstructs them exactly,
    # a 2-channel one cannot
    g = torch.Generator().manual_seed(0)
    basis = torch.rand(3, 16, generator=g)
    codes = torch.rand(50, 6, 6, 3, generator=g)
    features = (codes @ basis).permute(0, 3, 1, 2).contiguous()  # non-negative, so ReLU is inactive
    exact = pca_bottleneck(features, channels=3)
    with torch.no_grad():
        assert torch.allclose(exact(features), features, atol=1e-4)
        assert not torch.allclose(pca_bottleneck(features, channels=2)(features), features, atol=1e-2)
        # 8-bit codes: close but not exact
        err = (exact(features, bits=8) - features).abs().max()
    assert 0 < err < 0.05
    with pytest.raises(ValueError, match="channels"):
        Bottleneck(16, 17)


def test_training_lowers_the_loss_and_leaves_the_victim_alone(model, data):
    v = run_layers(model, data.images, stop=POOL2)
    before = [p.detach().clone() for p in model.parameters()]
    head = nn.Sequential(*list(model)[POOL2:])

    def loss(b):
        with torch.no_grad():
            return float(nn.functional.cross_entropy(head(b(v)), data.labels))

    config = BottleneckConfig(channels=2, steps=20, batch_size=32, lr=1e-2)
    trained = train_bottleneck(model, v, data.labels, boundary=POOL2, config=config)
    assert loss(trained) < loss(pca_bottleneck(v, channels=2))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.requires_grad for p in model.parameters())
    again = train_bottleneck(model, v, data.labels, boundary=POOL2, config=config)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(),
                                                  again.state_dict().values()))
    acc = bottleneck_accuracy(model, trained, v, data.labels, boundary=POOL2, bits=[32, 8])
    assert set(acc) == {32, 8} and all(0 <= a <= 1 for a in acc.values())
    with pytest.raises(TypeError, match="config"):
        train_bottleneck(model, v, data.labels, boundary=POOL2, config={"channels": 2})


def test_load_or_train_bottleneck_caches(model, data, tmp_path, monkeypatch):
    monkeypatch.setenv("COINFER_CACHE", str(tmp_path))
    images = (data.images * 255).round().to(torch.uint8)
    train_set = ImageSet(images, data.labels, "random")
    config = BottleneckConfig(channels=2, steps=5, batch_size=16, train_images=40)
    first = load_or_train_bottleneck(model, train_set, boundary=POOL2, config=config)
    files = list(tmp_path.rglob("bottleneck-*.pt"))
    assert len(files) == 1
    second = load_or_train_bottleneck(model, train_set, boundary=POOL2, config=config)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                  second.state_dict().values()))
    with pytest.raises(ValueError, match="train_images"):
        load_or_train_bottleneck(model, train_set, boundary=POOL2,
                                 config=BottleneckConfig(channels=2, train_images=1000))


def test_code_bytes():
    assert code_bytes(64 * 8 * 8, bits=32) == 16384
    assert code_bytes(2 * 8 * 8, bits=8) == 128 + 8
    assert code_bytes(3, bits=4) == 2 + 8
    with pytest.raises(ValueError, match="bits"):
        code_bytes(3, bits=0)
    with pytest.raises(ValueError, match="values"):
        code_bytes(0, bits=8)


def test_bottleneck_costs_and_their_window(model):
    b = Bottleneck(64, 2)
    rows = bottleneck_costs(model, b, boundary=POOL2, bits=8)
    edge_only, split, device_only = rows
    assert split.sent_bytes == 2 * 8 * 8 + 8
    encoder, decoder = 2 * (8 * 8 * 64 * 2), 2 * (8 * 8 * 2 * 64)
    assert split.device_flops + split.edge_flops == edge_only.edge_flops + encoder + decoder
    assert device_only.device_flops == edge_only.edge_flops
    # the window from bandwidth_window is exactly where the latency model says the split wins
    speeds = dict(device_flops_per_s=2e10, edge_flops_per_s=2e12)
    low, high = bandwidth_window(rows, **speeds)[split.label]
    for bandwidth, inside in [(low * 0.99, False), (low * 1.01, True), (high * 0.99, True),
                              (high * 1.01, False)]:
        t = latency(rows, LinkModel(speeds["device_flops_per_s"], speeds["edge_flops_per_s"],
                                    bandwidth))
        assert (t[1] < min(t[0], t[2])) == inside
    assert np.isfinite(high)
