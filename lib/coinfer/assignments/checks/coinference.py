"""Checkers of assignment 1, co-inference (chapter 1): split the model, bytes on the air,
end-to-end latency and the fastest configuration per bandwidth.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from .base import (StudentError, TaskResult, _as_float, _checker_model, _close, _fmt, _name,
                   _raises, call, run_checks)

__all__ = [
    "check_split_model",
    "check_sent_bytes",
    "check_latency",
    "check_fastest_per_bandwidth",
]


def _checker_images(n: int = 3, seed: int = 5) -> torch.Tensor:
    return torch.rand((n, 3, 32, 32), generator=torch.Generator().manual_seed(seed))


def _halves(result) -> tuple[nn.Module, nn.Module] | str:
    """``(device, edge)`` from what the student's split function returned."""
    if hasattr(result, "device") and hasattr(result, "edge"):
        result = (result.device, result.edge)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return f"should return a pair (device, edge), got {type(result).__name__}"
    device, edge = result
    if not isinstance(device, nn.Module) or not isinstance(edge, nn.Module):
        return (f"should return two torch.nn.Module objects, got "
                f"{type(device).__name__} and {type(edge).__name__}")
    return device, edge


def check_split_model(split_model: Callable, *, task: str = "1.1", quiet: bool = False
                      ) -> TaskResult:
    """Check ``split_model(model, k) -> (device, edge)`` against :func:`coinfer.models.split`.

    Checks: a pair of modules; the identity ``edge(device(x)) == model(x)`` for every split
    point k = 1…6; the shape of the sent features (the cut is after conv k's ReLU, before the
    pooling layer); the features are ReLU outputs and the device part holds exactly k
    convolutions; the halves share the model's parameters; k = 0 and k = 7 raise
    ``ValueError``; the model itself is left unchanged.
    """
    from ...models import NUM_CONV, feature_shape

    model = _checker_model()
    x = _checker_images()
    with torch.no_grad():
        reference = model(x)
    n_layers = len(model)
    splits: dict[int, tuple[nn.Module, nn.Module]] = {}

    def halves(k: int):
        if k not in splits:
            out = _halves(call(split_model, model, k))
            if isinstance(out, str):
                raise StudentError(_name(split_model), TypeError(out))
            splits[k] = out
        return splits[k]

    def pair():
        out = _halves(call(split_model, model, 2))
        return out if isinstance(out, str) else None

    def identity():
        for k in range(1, NUM_CONV + 1):
            device, edge = halves(k)
            with torch.no_grad():
                y = call(edge, call(device, x))
            if not isinstance(y, torch.Tensor) or y.shape != reference.shape:
                return f"edge(device(x)) has the wrong shape for k={k}"
            if not torch.allclose(y, reference, rtol=1e-5, atol=1e-5):
                return f"edge(device(x)) differs from model(x) for k={k}"
        return None

    def shapes():
        for k in range(1, NUM_CONV + 1):
            device, _ = halves(k)
            with torch.no_grad():
                v = call(device, x)
            if tuple(v.shape) != (x.shape[0], *feature_shape(k)):
                return (f"device(x) has shape {tuple(v.shape[1:])} per image for k={k}: the "
                        f"device must stop right after conv {k}'s ReLU, before any pooling")
        return None

    def after_relu():
        from torch.nn import Conv2d

        for k in range(1, NUM_CONV + 1):
            device, _ = halves(k)
            convs = sum(isinstance(m, Conv2d) for m in device.modules())
            if convs != k:
                return f"the device part for k={k} holds {convs} convolutions"
            with torch.no_grad():
                v = call(device, x)
            if float(v.min()) < 0:
                return f"the features for k={k} have negative values: cut after the ReLU"
        return None

    def shared():
        own = {id(p) for p in model.parameters()}
        for k in range(1, NUM_CONV + 1):
            device, edge = halves(k)
            mine = [id(p) for p in device.parameters()] + [id(p) for p in edge.parameters()]
            if not set(mine) <= own:
                return (f"the halves for k={k} hold copies of the parameters: use the model's "
                        "own layers")
            if len(set(mine)) != len(own):
                return f"the halves for k={k} do not hold all of the model's parameters"
        return None

    def invalid():
        for k in (0, NUM_CONV + 1):
            problem = _raises(split_model, ValueError, model, k)
            if problem:
                return f"split_model(model, {k}) {problem}"
        return None

    def unchanged():
        for k in range(1, NUM_CONV + 1):
            halves(k)
        with torch.no_grad():
            y = model(x)
        if len(model) != n_layers or not torch.equal(y, reference):
            return "splitting changed the model itself"
        return None

    checks = [
        ("return value", pair),
        ("identity", identity),
        ("feature shape", shapes),
        ("cut point", after_relu),
        ("shared parameters", shared),
        ("invalid split point", invalid),
        ("model unchanged", unchanged),
    ]
    return run_checks(task, "split the model", split_model, checks, quiet=quiet)


def check_sent_bytes(sent_bytes: Callable, *, task: str = "1.2", quiet: bool = False
                     ) -> TaskResult:
    """Check ``sent_bytes(model, k, *, bytes_per_value=4) -> int`` against
    :func:`coinfer.costs.split_costs` (k = 0 edge-only, 1…6 splits, 7 device-only)."""
    from ...costs import split_costs
    from ...models import NUM_CONV

    model = _checker_model(seed=12)
    reference = {b: [c.sent_bytes for c in split_costs(model, bytes_per_value=b)]
                 for b in (4, 2)}

    def compare(ks, b):
        for k in ks:
            got = call(sent_bytes, model, k, bytes_per_value=b)
            value = _as_float(got, f"sent_bytes(model, {k})")
            if isinstance(value, str):
                return value
            if value != reference[b][k]:
                return f"wrong byte count for k={k}, bytes_per_value={b} (got {_fmt(value)})"
        return None

    def returns_int():
        got = call(sent_bytes, model, 4, bytes_per_value=4)
        if isinstance(got, bool) or not isinstance(got, int):
            return f"should return a Python int, got {type(got).__name__}"
        return None

    def invalid():
        for args, kwargs in (((model, 3), {"bytes_per_value": 0}),
                             ((model, NUM_CONV + 2), {}), ((model, -1), {})):
            problem = _raises(sent_bytes, ValueError, *args, **kwargs)
            if problem:
                what = ", ".join([str(a) for a in args[1:]] +
                                 [f"{k}={v}" for k, v in kwargs.items()])
                return f"sent_bytes(model, {what}) {problem}"
        return None

    checks = [
        ("float32 features", lambda: compare(range(1, NUM_CONV + 1), 4)),
        ("float16 features", lambda: compare(range(1, NUM_CONV + 1), 2)),
        ("edge-only (k=0)", lambda: compare([0], 4) or compare([0], 2)),
        ("device-only (k=7)", lambda: compare([NUM_CONV + 1], 4) or compare([NUM_CONV + 1], 2)),
        ("return type", returns_int),
        ("invalid arguments", invalid),
    ]
    return run_checks(task, "bytes on the air", sent_bytes, checks, quiet=quiet)


def _links():
    from ...costs import LinkModel

    return [
        LinkModel(device_flops_per_s=5e9, edge_flops_per_s=1e12, bandwidth_bps=20e6),
        LinkModel(device_flops_per_s=2e11, edge_flops_per_s=4e11, bandwidth_bps=1e9),
        LinkModel(device_flops_per_s=1e9, edge_flops_per_s=5e12, bandwidth_bps=1e5),
    ]


def check_latency(latency: Callable, *, task: str = "1.3", quiet: bool = False) -> TaskResult:
    """Check ``latency(cost, link) -> float`` (seconds) against :func:`coinfer.costs.latency`."""
    from ...costs import LinkModel, latency as reference_latency, split_costs

    rows = split_costs(_checker_model(seed=13))
    links = _links()

    def compare(select, links_=links):
        for link in links_:
            for row in select:
                got = _as_float(call(latency, row, link), f"latency({row.label})")
                if isinstance(got, str):
                    return got
                ref = float(reference_latency([row], link)[0])
                if not _close(got, ref, rtol=1e-9):
                    return f"wrong latency for {row.label} (got {_fmt(got)} s)"
        return None

    def units():
        link = links[2]  # slow uplink: the transmission term dominates
        row = rows[0]
        got = _as_float(call(latency, row, link), "latency")
        if isinstance(got, str):
            return got
        ref = float(reference_latency([row], link)[0])
        if _close(got, ref, rtol=1e-9):
            return None
        air = 8 * row.sent_bytes / link.bandwidth_bps
        rest = ref - air
        if _close(got, rest + air / 8, rtol=1e-6):
            return "the transmission time is 8 times too small: bandwidth is in bit/s"
        return f"wrong latency when the uplink is slow (got {_fmt(got)} s)"

    def invalid():
        bad = LinkModel(device_flops_per_s=1e9, edge_flops_per_s=1e12, bandwidth_bps=0.0)
        problem = _raises(latency, ValueError, rows[3], bad)
        return f"a bandwidth of 0 {problem}" if problem else None

    checks = [
        ("edge-only", lambda: compare(rows[:1])),
        ("device-only", lambda: compare(rows[-1:])),
        ("split points", lambda: compare(rows[1:-1])),
        ("units", units),
        ("invalid link", invalid),
    ]
    return run_checks(task, "end-to-end latency", latency, checks, quiet=quiet)


def check_fastest_per_bandwidth(fastest_per_bandwidth: Callable, *, task: str = "1.4",
                                quiet: bool = False) -> TaskResult:
    """Check ``fastest_per_bandwidth(costs, bandwidths, *, device_flops_per_s,
    edge_flops_per_s) -> list[SplitCost]`` against :func:`coinfer.costs.best_split`."""
    from ...costs import LinkModel, SplitCost, best_split, split_costs

    rows = split_costs(_checker_model(seed=14))

    def compare(costs, bandwidths, dev, edge):
        got = call(fastest_per_bandwidth, costs, bandwidths, device_flops_per_s=dev,
                   edge_flops_per_s=edge)
        try:
            got = list(got)
        except TypeError:
            return f"should return a list, got {type(got).__name__}"
        if len(got) != len(bandwidths):
            return f"returned {len(got)} configurations for {len(bandwidths)} bandwidths"
        for b, g in zip(bandwidths, got):
            ref = best_split(costs, LinkModel(dev, edge, float(b)))
            if not isinstance(g, SplitCost):
                return f"should return SplitCost rows, got {type(g).__name__}"
            if g != ref:
                return f"wrong configuration for {b:.3g} bit/s (got {g.label})"
        return None

    grid = list(np.geomspace(1e4, 1e10, 13))

    def ties():
        # two configurations with the same latency: the earlier one must be chosen
        a = SplitCost(3, "split 3", 10**6, 10**6, 4000)
        b = SplitCost(4, "split 4", 10**6, 10**6, 4000)
        c = SplitCost(5, "split 5", 10**6, 10**6, 4000)
        return compare([a, b, c], [1e6, 1e7], 1e9, 1e9)

    def empty():
        problem = _raises(fastest_per_bandwidth, ValueError, [], [1e6],
                          device_flops_per_s=1e9, edge_flops_per_s=1e12)
        return f"an empty list of configurations {problem}" if problem else None

    checks = [
        ("slow vehicle, fast edge", lambda: compare(rows, grid, 5e9, 1e12)),
        ("fast vehicle", lambda: compare(rows, grid, 5e11, 1e12)),
        ("single bandwidth", lambda: compare(rows, [3e6], 2e10, 2e12)),
        ("ties", ties),
        ("no configurations", empty),
    ]
    return run_checks(task, "fastest configuration", fastest_per_bandwidth, checks, quiet=quiet)
