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
