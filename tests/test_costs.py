import numpy as np
import pytest

from coinfer.costs import LinkModel, best_split, latency, split_costs
from coinfer.models import road_sign_cnn


@pytest.fixture(scope="module")
def costs():
    return split_costs(road_sign_cnn())


def test_flops_add_up_and_grow_with_depth(costs):
    total = costs[0].edge_flops
    assert all(c.device_flops + c.edge_flops == total for c in costs)
    device = [c.device_flops for c in costs]
    assert device == sorted(device) and device[0] == 0 and device[-1] == total


def test_conv1_flops_by_hand(costs):
    # conv1: 32·32 outputs × 64 channels × (3·3·3) multiply-adds × 2 FLOPs
    assert costs[1].device_flops == 32 * 32 * 64 * 27 * 2


def test_bytes_sent(costs):
    sent = {c.label: c.sent_bytes for c in costs}
    assert sent["edge-only"] == 3072 and sent["device-only"] == 1
    assert sent["split 2"] == 64 * 32 * 32 * 4 and sent["split 4"] == 64 * 16 * 16 * 4
    assert sent["split 6"] == 64 * 8 * 8 * 4
    # early splits send more than the raw image — the point the chapter makes honestly
    assert sent["split 2"] > sent["edge-only"]
    assert split_costs(road_sign_cnn(), bytes_per_value=1)[6].sent_bytes == 4096


def test_latency_model(costs):
    link = LinkModel(1e9, 1e11, 1e6)
    t = latency(costs, link)
    c = costs[4]
    assert np.isclose(t[4], c.device_flops / 1e9 + 8 * c.sent_bytes / 1e6 + c.edge_flops / 1e11)
    # slow uplink → device-only; infinitely fast uplink and slow device → edge-only
    assert best_split(costs, LinkModel(1e9, 1e12, 1e3)).label == "device-only"
    assert best_split(costs, LinkModel(1e6, 1e12, 1e12)).label == "edge-only"


@pytest.mark.parametrize("field", ["device_flops_per_s", "edge_flops_per_s", "bandwidth_bps"])
def test_latency_rejects_bad_link(costs, field):
    values = dict(device_flops_per_s=1e9, edge_flops_per_s=1e9, bandwidth_bps=1e6)
    values[field] = -1.0
    with pytest.raises(ValueError, match=field):
        latency(costs, LinkModel(**values))


def test_best_split_needs_costs():
    with pytest.raises(ValueError, match="costs"):
        best_split([], LinkModel(1, 1, 1))


# --- every layer boundary, compression, and the bandwidth window (Chapter 1, Sects. 1.5–1.7) ---

from coinfer.costs import (SplitCost, bandwidth_window, boundary_costs, compressed_accuracy,  # noqa: E402
                           quantize_features, with_input_side)


def test_boundary_costs_agree_with_split_costs_on_the_conv_splits(costs):
    rows = {c.label: c for c in boundary_costs(road_sign_cnn())}
    for c in costs[1:-1]:
        assert (rows[c.label].device_flops, rows[c.label].sent_bytes) == (c.device_flops, c.sent_bytes)
    assert rows["after pool3"].sent_bytes == 64 * 4 * 4 * 4
    assert rows["after fc1"].sent_bytes == 256 * 4
    # a pool costs (almost) nothing, so the pool boundary sends a quarter for the same compute
    assert rows["after pool1"].sent_bytes * 4 == rows["split 2"].sent_bytes
    labels = [c.label for c in boundary_costs(road_sign_cnn())]
    assert labels[0] == "edge-only" and labels[-1] == "device-only" and len(labels) == len(set(labels))


def test_boundary_costs_bits_and_larger_inputs():
    model = road_sign_cnn()
    r32 = boundary_costs(model, bits_per_value=32)
    r4 = boundary_costs(model, bits_per_value=4)
    assert all(a.sent_bytes == 8 * b.sent_bytes for a, b in zip(r32[1:-1], r4[1:-1]))
    big = with_input_side(model, 96)
    rows = boundary_costs(big, input_shape=(3, 96, 96))
    assert rows[0].sent_bytes == 3 * 96 * 96
    assert rows[0].edge_flops > 8 * r32[0].edge_flops  # 9× the pixels for every convolution
    assert all(c.device_flops + c.edge_flops == rows[0].edge_flops for c in rows)
    with pytest.raises(ValueError, match="side must be a multiple of 8"):
        with_input_side(model, 100)
    with pytest.raises(ValueError, match="bits_per_value"):
        boundary_costs(model, bits_per_value=0)


def test_bandwidth_window_is_exactly_where_the_split_beats_both_extremes():
    rows = [SplitCost(0, "edge-only", 0, 10**9, 10_000), SplitCost(1, "cut", 10**7, 99 * 10**7, 500),
            SplitCost(2, "late", 10**9 - 10, 10, 5_000), SplitCost(3, "device-only", 10**9, 0, 1)]
    speeds = dict(device_flops_per_s=1e9, edge_flops_per_s=1e11)
    windows = bandwidth_window(rows, **speeds)
    assert windows["late"] is None
    low, high = windows["cut"]
    for bandwidth, inside in [(low * 0.9, False), (low * 1.1, True), (high * 0.9, True), (high * 1.1, False)]:
        t = latency(rows, LinkModel(speeds["device_flops_per_s"], speeds["edge_flops_per_s"], bandwidth))
        assert (t[1] < min(t[0], t[3])) == inside
    with pytest.raises(ValueError, match="device_flops_per_s"):
        bandwidth_window(rows, device_flops_per_s=1e12, edge_flops_per_s=1e11)


def test_quantize_features_error_and_validation():
    import torch

    v = torch.rand(5, 64, 4, 4, generator=torch.Generator().manual_seed(0)) * 3
    q = quantize_features(v, bits=8)
    step = (v.flatten(1).amax(1) - v.flatten(1).amin(1)) / 255
    assert torch.all((q - v).flatten(1).abs().amax(1) <= step / 2 + 1e-6)
    assert len(torch.unique(quantize_features(v, bits=2)[0])) <= 4
    assert quantize_features(v, bits=32) is v
    constant = torch.ones(2, 3)
    assert torch.equal(quantize_features(constant, bits=4), constant)
    with pytest.raises(ValueError, match="bits"):
        quantize_features(v, bits=0)


def test_compressed_accuracy_matches_the_model_at_full_precision():
    import torch

    from coinfer.data import ImageSet

    model = road_sign_cnn(seed=1).eval()
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = model(x).argmax(1)
    data = ImageSet(x, labels, "random")
    assert compressed_accuracy(model, data, boundary=15, bits=32) == 1.0
    assert compressed_accuracy(model, data, boundary=15, bits=1) < 1.0
    with pytest.raises(ValueError, match="boundary"):
        compressed_accuracy(model, data, boundary=0, bits=8)
    with pytest.raises(ValueError, match="bits"):
        compressed_accuracy(model, data, boundary=15, bits=0)


def test_flat_resnet18_boundaries():
    from coinfer.costs import flat_resnet18

    net = flat_resnet18()
    rows = {c.label: c for c in boundary_costs(net, bits_per_value=4, input_shape=(3, 224, 224))}
    assert rows["edge-only"].sent_bytes == 3 * 224 * 224
    assert rows["after pool1"].sent_bytes == 64 * 56 * 56 // 2  # 4 bits per value
    assert rows["after layer4"].sent_bytes == 512 * 7 * 7 // 2
    assert {"after layer1", "after layer2", "after layer3"} <= set(rows)
    # ResNet-18 at 224×224: about 1.8 GMAC, i.e. 3.6 GFLOP (torchvision's documented 1.81 GFLOPS are MACs)
    assert 3.4e9 < rows["edge-only"].edge_flops < 3.8e9
    # the stem does little of the work: most FLOPs come after the first pool
    assert rows["after pool1"].edge_flops > 0.8 * rows["edge-only"].edge_flops
