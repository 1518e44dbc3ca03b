"""What co-inference costs: compute on each side, bytes on the air, and end-to-end latency.

For every split point k of the paper's CNN this module counts the floating-point operations run
on the vehicle (device part f_θ1) and on the edge server (f_θ2) with
:class:`torch.utils.flop_counter.FlopCounterMode`, the bytes the vehicle sends, and a latency
model in the spirit of Neurosurgeon (Kang et al. 2017):

.. math::

    t(k) = \\frac{F_\\text{device}(k)}{s_\\text{device}} + \\frac{8\\,b(k)}{B}
           + \\frac{F_\\text{edge}(k)}{s_\\text{edge}} ,

with device and edge throughputs s (FLOP/s), the sent bytes b(k) and the uplink bandwidth B (bit/s).
Two extra "split points" describe the other paradigms of the book: ``0`` is *edge-only* inference
(the raw uint8 image is sent) and ``"device"`` is *device-only* inference (only the predicted
label, one byte, is sent).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import check_positive_float, check_positive_int
from .models import IMAGE_SHAPE, NUM_CONV, split

__all__ = ["SplitCost", "LinkModel", "split_costs", "latency", "best_split", "count_flops"]

RAW_IMAGE_BYTES = int(np.prod(IMAGE_SHAPE))  # 32×32×3 uint8 pixels


class SplitCost(NamedTuple):
    """Costs of one co-inference configuration for a single image.

    Attributes
    ----------
    at
        ``0`` for edge-only, ``1 … 6`` for a split after conv k, ``7`` for device-only.
    label
        Human-readable name ("edge-only", "split 2", "device-only").
    device_flops, edge_flops
        Floating-point operations on each side (a multiply-add counts as 2).
    sent_bytes
        Bytes the vehicle transmits (float32 features, the uint8 image, or a 1-byte label).
    """

    at: int
    label: str
    device_flops: int
    edge_flops: int
    sent_bytes: int


class LinkModel(NamedTuple):
    """Throughputs and bandwidth of the latency model t(k).

    Attributes
    ----------
    device_flops_per_s
        Sustained throughput of the vehicle's processor (FLOP/s).
    edge_flops_per_s
        Sustained throughput of the edge server (FLOP/s).
    bandwidth_bps
        Uplink bandwidth B in bit/s.
    """

    device_flops_per_s: float
    edge_flops_per_s: float
    bandwidth_bps: float


def count_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward pass of ``module`` on ``x`` (via ``FlopCounterMode``)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(x)
    return int(counter.get_total_flops())


def split_costs(model: nn.Sequential, *, bytes_per_value: int = 4) -> list[SplitCost]:
    """Per-image costs of edge-only inference, of each split k = 1…6, and of device-only inference.

    Parameters
    ----------
    model
        The CNN (:class:`coinfer.models.RoadSignCNN`).
    bytes_per_value
        Bytes per transmitted feature value (4 for float32, 2 for float16, 1 for int8).
    """
    check_positive_int("bytes_per_value", bytes_per_value)
    x = torch.zeros((1, *IMAGE_SHAPE))
    param = next(model.parameters())
    x = x.to(param.device)
    total = count_flops(model, x)
    rows = [SplitCost(0, "edge-only", 0, total, RAW_IMAGE_BYTES)]
    for k in range(1, NUM_CONV + 1):
        parts = split(model, at=k)
        device_flops = count_flops(parts.device, x)
        with torch.no_grad():
            features = parts.device(x)
        rows.append(SplitCost(k, f"split {k}", device_flops, total - device_flops,
                              int(features.numel()) * bytes_per_value))
    rows.append(SplitCost(NUM_CONV + 1, "device-only", total, 0, 1))
    return rows


def latency(costs: Sequence[SplitCost], link: LinkModel) -> np.ndarray:
    """t(k) in seconds for each row of ``costs`` under ``link`` (the Neurosurgeon-style model)."""
    check_positive_float("device_flops_per_s", link.device_flops_per_s)
    check_positive_float("edge_flops_per_s", link.edge_flops_per_s)
    check_positive_float("bandwidth_bps", link.bandwidth_bps)
    return np.array([
        c.device_flops / link.device_flops_per_s
        + 8 * c.sent_bytes / link.bandwidth_bps
        + c.edge_flops / link.edge_flops_per_s
        for c in costs
    ])


def best_split(costs: Sequence[SplitCost], link: LinkModel) -> SplitCost:
    """The configuration with the smallest latency t(k) (ties go to the earliest)."""
    if not costs:
        raise ValueError("costs must not be empty")
    return costs[int(np.argmin(latency(costs, link)))]
