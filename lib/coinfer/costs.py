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

:func:`split_costs` considers the paper's candidates (after each convolution's ReLU);
:func:`boundary_costs` considers every layer boundary, as Neurosurgeon does (after each pool and
after the hidden fully connected layer too), for any input size and any flat network
(:func:`with_input_side` for larger images, :func:`flat_resnet18` for a network whose stem
downsamples at once).  :func:`quantize_features` compresses the sent features to fewer bits, and
:func:`compressed_accuracy` measures what that costs the classifier (:mod:`coinfer.compression`
measures whole accuracy-versus-bytes curves and a learned bottleneck).

Subtracting edge-only from split k gives the identity behind Chapter 1's lemma,

.. math::

    t(k) - t(\\text{edge-only}) = F_\\text{device}(k)\\Big(\\frac{1}{s_\\text{device}}
      - \\frac{1}{s_\\text{edge}}\\Big) + \\frac{8\\,(b(k) - b_\\text{raw})}{B},

so with a device slower than the edge a split can only beat edge-only when it sends fewer bytes
than the raw image.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import copy

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .config import check_positive_float, check_positive_int
from .data import ImageSet
from .models import IMAGE_SHAPE, NUM_CONV, split

__all__ = ["SplitCost", "LinkModel", "split_costs", "boundary_costs", "latency", "best_split",
           "count_flops", "with_input_side", "quantize_features", "FeatureQuantizer",
           "compressed_accuracy",
           "bandwidth_window", "flat_resnet18"]

RAW_IMAGE_BYTES = int(np.prod(IMAGE_SHAPE))  # 32×32×3 uint8 pixels


class SplitCost(NamedTuple):
    """Costs of one co-inference configuration for a single image.

    Attributes
    ----------
    at
        ``0`` for edge-only, ``1 … 6`` for a split after conv k, ``7`` for device-only
        (:func:`split_costs`); in :func:`boundary_costs`, the number of layers run on the device.
    label
        Human-readable name ("edge-only", "split 2", "after pool3", "device-only").
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


_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _boundary_label(model: nn.Sequential, i: int) -> str | None:
    """Name of the boundary after layer ``i`` of ``model``, or ``None`` for one that is no candidate.

    Candidates are the outputs of each ReLU, each pool and each composite block (a child with
    children of its own, e.g. a ResNet stage).  A convolution's or a linear layer's raw output
    has the size of the ReLU after it, and ``Flatten`` only reshapes, so they add no candidate.
    """
    names, layers = zip(*model.named_children())
    layer = layers[i]
    if isinstance(layer, _POOLS):
        return f"after pool{sum(isinstance(m, _POOLS) for m in layers[:i + 1])}"
    if next(layer.children(), None) is not None:
        return f"after {names[i]}"
    if isinstance(layer, nn.ReLU) and i + 1 < len(layers):
        previous = layers[i - 1]
        if isinstance(previous, nn.Conv2d):
            return f"split {sum(isinstance(m, nn.Conv2d) for m in layers[:i])}"
        if isinstance(previous, nn.Linear):
            return f"after fc{sum(isinstance(m, nn.Linear) for m in layers[:i])}"
    return None


def boundary_costs(
    model: nn.Sequential, *, bits_per_value: int = 32, input_shape: Sequence[int] = IMAGE_SHAPE
) -> list[SplitCost]:
    """Per-image costs of every layer-boundary split of a flat network (Neurosurgeon's candidates).

    Kang et al. (2017) partition a network after *any* layer; this counts, for each candidate
    boundary (after each ReLU and each pool, see Chapter 1, Sect. 1.6), the FLOPs on each side
    and the bytes sent, plus edge-only (raw uint8 input) and device-only (a 1-byte label).

    Parameters
    ----------
    model
        A flat ``nn.Sequential`` (e.g. :class:`coinfer.models.RoadSignCNN`, or
        :func:`with_input_side` of it).  Its layers are run one by one, so the input-shape check
        of ``RoadSignCNN.forward`` does not apply.
    bits_per_value
        Bits per transmitted feature value (32 for float32, 8 for int8, 4 for 4-bit codes);
        the bytes sent are :math:`\\lceil n\\,\\text{bits}/8\\rceil` for n values.
    input_shape
        ``(C, H, W)`` of one input image.

    Returns
    -------
    list of SplitCost
        Edge-only first, then the boundaries in network order, then device-only.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be a flat nn.Sequential, got {type(model).__name__}")
    check_positive_int("bits_per_value", bits_per_value)
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
    layers = list(model)
    x = torch.zeros((1, *shape), device=next(model.parameters()).device)
    flops, sizes = [], []
    with torch.no_grad():
        for layer in layers:
            flops.append(count_flops(layer, x))
            x = layer(x)
            sizes.append(int(x.numel()))
    total = sum(flops)
    raw = int(np.prod(shape))
    rows = [SplitCost(0, "edge-only", 0, total, raw)]
    for i in range(len(layers)):
        label = _boundary_label(model, i)
        if label is not None:
            device = sum(flops[:i + 1])
            sent = -(-sizes[i] * bits_per_value // 8)
            rows.append(SplitCost(i + 1, label, device, total - device, sent))
    rows.append(SplitCost(len(layers), "device-only", total, 0, 1))
    return rows


def with_input_side(model: nn.Sequential, side: int) -> nn.Sequential:
    """A copy of the paper's CNN for ``side × side`` inputs (Chapter 1's larger-image case).

    Convolutions and pools do not depend on the input size; only the first linear layer's input
    width does, so it is replaced by an (untrained) layer of the right width.  Meant for counting
    costs with :func:`boundary_costs`, not for classifying.
    """
    check_positive_int("side", side)
    pools = sum(isinstance(m, nn.MaxPool2d) for m in model)
    if side % 2 ** pools:
        raise ValueError(f"side must be a multiple of {2 ** pools} (the network pools {pools} "
                         f"times), got {side}")
    layers = [copy.deepcopy(m) for m in model]
    first = next(i for i, m in enumerate(layers) if isinstance(m, nn.Linear))
    channels = [m for m in layers if isinstance(m, nn.Conv2d)][-1].out_channels
    width = channels * (side // 2 ** pools) ** 2
    layers[first] = nn.Linear(width, layers[first].out_features)
    return nn.Sequential(*layers)


def flat_resnet18() -> nn.Sequential:
    """torchvision's ResNet-18 (He et al. 2016; random weights) as a flat sequence of its stages.

    The children ``conv1, bn1, relu, maxpool, layer1 … layer4, avgpool`` in order, and the
    classifier as ``fc = Sequential(Flatten, Linear)``, in evaluation mode — a flat
    ``nn.Sequential`` whose stage boundaries :func:`boundary_costs` can count (Chapter 1's
    larger-network case).  Only its costs are meaningful: it is untrained (weights seeded with 0).
    """
    from collections import OrderedDict

    import torchvision

    with torch.random.fork_rng(devices=[]):  # seeded, and the caller's random stream untouched
        torch.manual_seed(0)
        layers = OrderedDict(torchvision.models.resnet18(weights=None).named_children())
    layers["fc"] = nn.Sequential(nn.Flatten(), layers.pop("fc"))
    return nn.Sequential(layers).eval()


def quantize_features(features: torch.Tensor, *, bits: int) -> torch.Tensor:
    """Uniform ``bits``-bit quantisation of each sample's features, returned de-quantised.

    Each sample is scaled by its own minimum and maximum (sent with it as two float32 values,
    8 bytes), rounded to one of :math:`2^{bits}` levels and mapped back:
    :math:`\\hat v = m + \\mathrm{round}\\big((v - m)/\\Delta\\big)\\,\\Delta` with
    :math:`\\Delta = (M - m)/(2^{bits} - 1)`.  ``bits=32`` returns the features unchanged.
    """
    if not isinstance(features, torch.Tensor) or features.dim() < 2:
        raise TypeError("features must be a torch.Tensor of shape (batch, ...)")
    if isinstance(bits, bool) or not isinstance(bits, int) or not (1 <= bits <= 16 or bits == 32):
        raise ValueError(f"bits must be an int in 1..16 or 32, got {bits!r}")
    if bits == 32:
        return features
    flat = features.flatten(1)
    low = flat.min(1, keepdim=True).values
    step = (flat.max(1, keepdim=True).values - low) / (2 ** bits - 1)
    step = torch.where(step > 0, step, torch.ones_like(step))  # a constant sample is exact
    return (low + torch.round((flat - low) / step) * step).view_as(features)


class FeatureQuantizer(nn.Module):
    """:func:`quantize_features` as a layer, to insert at a split point of a flat network."""

    def __init__(self, bits: int):
        super().__init__()
        quantize_features(torch.zeros(1, 1), bits=bits)  # validates ``bits`` now, not at the first batch
        self.bits = bits

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D401 - nn.Module API
        return quantize_features(features, bits=self.bits)


def compressed_accuracy(model: nn.Sequential, data: ImageSet, *, boundary: int, bits: int) -> float:
    """Test accuracy when the features after layer ``boundary`` are sent with ``bits`` bits.

    The network is run as ``layers[:boundary]``, :class:`FeatureQuantizer` ``(bits)``,
    ``layers[boundary:]`` and scored with :func:`coinfer.train.evaluate`.

    Parameters
    ----------
    model
        The trained flat CNN.
    data
        Labelled images, e.g. the GTSRB test split.
    boundary
        Number of layers run on the device (``SplitCost.at`` of :func:`boundary_costs`).
    bits
        Bits per feature value (see :func:`quantize_features`).
    """
    from .train import evaluate

    layers = list(model)
    if isinstance(boundary, bool) or not isinstance(boundary, int) or not 1 <= boundary < len(layers):
        raise ValueError(f"boundary must be an int in 1..{len(layers) - 1}, got {boundary!r}")
    pipeline = nn.Sequential(*layers[:boundary], FeatureQuantizer(bits), *layers[boundary:])
    return evaluate(pipeline, data)


def bandwidth_window(
    costs: Sequence[SplitCost], *, device_flops_per_s: float, edge_flops_per_s: float
) -> dict[str, tuple[float, float] | None]:
    """For each split, the open bandwidth interval in which it beats both edge- and device-only.

    From the latency model (Chapter 1, lemma ``lem-split-vs-edge``), with
    :math:`c = 1/s_\\text{device} - 1/s_\\text{edge} > 0`, raw-image bytes :math:`b_0` and a one-byte
    label, split k is faster than edge-only iff :math:`B < 8\\,(b_0 - b(k)) / (c\\,F_\\text{device}(k))`
    and faster than device-only iff :math:`B > 8\\,(b(k) - 1) / (c\\,F_\\text{edge}(k))`.  The window
    is empty unless :math:`F_\\text{edge}(k) / F_\\text{device}(k) > (b(k) - 1)/(b_0 - b(k))`, a
    condition that does not depend on the two speeds.

    Rows whose two FLOP counts do not add up to the network's :math:`F` (a split with extra
    layers, e.g. :func:`coinfer.compression.bottleneck_costs`) are handled exactly: the products
    :math:`c\\,F_\\text{device}(k)` and :math:`c\\,F_\\text{edge}(k)` above are then the compute-time
    differences :math:`F_\\text{device}(k)/s_\\text{device} + F_\\text{edge}(k)/s_\\text{edge} - F/s_\\text{edge}`
    and :math:`F/s_\\text{device} - F_\\text{device}(k)/s_\\text{device} - F_\\text{edge}(k)/s_\\text{edge}`.

    Parameters
    ----------
    costs
        Rows from :func:`split_costs` or :func:`boundary_costs` (first edge-only, last device-only).
    device_flops_per_s, edge_flops_per_s
        Throughputs; the device must be the slower.

    Returns
    -------
    dict
        ``label -> (B_low, B_high)`` in bit/s, or ``None`` where no bandwidth makes the split win.
    """
    check_positive_float("device_flops_per_s", device_flops_per_s)
    check_positive_float("edge_flops_per_s", edge_flops_per_s)
    if device_flops_per_s >= edge_flops_per_s:
        raise ValueError(f"device_flops_per_s ({device_flops_per_s}) must be below "
                         f"edge_flops_per_s ({edge_flops_per_s}) for the window to be an interval")
    if len(costs) < 3 or costs[0].label != "edge-only" or costs[-1].label != "device-only":
        raise ValueError("costs must start with edge-only and end with device-only "
                         "(as split_costs and boundary_costs return them)")
    c = 1 / device_flops_per_s - 1 / edge_flops_per_s
    raw, total = costs[0].sent_bytes, costs[0].edge_flops
    windows: dict[str, tuple[float, float] | None] = {}
    for row in costs[1:-1]:
        if row.device_flops + row.edge_flops == total:
            extra, saved = c * row.device_flops, c * row.edge_flops  # the lemma's two products
        else:  # the exact compute-time differences against edge-only and device-only
            compute = row.device_flops / device_flops_per_s + row.edge_flops / edge_flops_per_s
            extra, saved = compute - total / edge_flops_per_s, total / device_flops_per_s - compute
        if row.sent_bytes >= raw or saved <= 0:
            windows[row.label] = None
            continue
        low = 8 * (row.sent_bytes - 1) / saved
        high = 8 * (raw - row.sent_bytes) / extra if extra > 0 else np.inf
        windows[row.label] = (low, high) if low < high else None
    return windows
