"""Checkers of assignment 3, the shields (chapter 3): the Laplace mechanism, clipping, parameter
perturbation and the whole-vector privacy guarantee.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from .base import (StudentError, TaskResult, _as_float, _checker_model, _close, _fmt, _name,
                   _raises, call, run_checks)

__all__ = [
    "check_laplace_mechanism",
    "check_clip",
    "check_perturb",
    "check_whole_vector_epsilon",
]


def _ks_laplace(samples: np.ndarray, scale: float) -> float:
    """Kolmogorov–Smirnov distance between ``samples`` and Lap(0, scale)."""
    from scipy import stats

    return float(stats.kstest(samples / scale, stats.laplace.cdf).statistic)


def check_laplace_mechanism(laplace_mechanism: Callable, *, task: str = "3.1",
                            quiet: bool = False) -> TaskResult:
    """Check ``laplace_mechanism(value, *, epsilon, sensitivity, generator)`` against
    :func:`coinfer.privacy.laplace_mechanism`: the noise must be Lap(0, Δ/ε), i.i.d. per
    coordinate, drawn from ``generator`` (statistics on 200,000 draws, fixed seeds)."""
    from ... import privacy

    n = 200_000

    def noise(epsilon, sensitivity, seed, value=None):
        value = torch.zeros(n) if value is None else value
        out = call(laplace_mechanism, value, epsilon=epsilon, sensitivity=sensitivity,
                   generator=torch.Generator().manual_seed(seed))
        if not isinstance(out, torch.Tensor):
            raise StudentError(_name(laplace_mechanism),
                               TypeError(f"should return a tensor, got {type(out).__name__}"))
        if tuple(out.shape) != tuple(value.shape):
            raise StudentError(_name(laplace_mechanism),
                               ValueError(f"returned shape {tuple(out.shape)} for a value of "
                                          f"shape {tuple(value.shape)}"))
        return (out.double() - value.double()).numpy()

    def scale(epsilon, sensitivity):
        y = noise(epsilon, sensitivity, seed=1)
        ref = (privacy.laplace_mechanism(torch.zeros(n), epsilon=epsilon,
                                         sensitivity=sensitivity,
                                         generator=torch.Generator().manual_seed(2))
               .double().numpy())
        got, want = float(np.mean(np.abs(y))), float(np.mean(np.abs(ref)))
        if not abs(got - want) <= 0.03 * want:
            return (f"the noise has mean |noise| = {_fmt(got)} for epsilon={epsilon:g}, "
                    f"sensitivity={sensitivity:g}: its scale should be sensitivity / epsilon")
        return None

    def shape():
        y = noise(2.0, 1.0, seed=3)
        distance = _ks_laplace(y, 0.5)
        return None if distance < 0.006 else \
            f"the noise is not Laplace-distributed (KS distance {distance:.3f})"

    def centred():
        y = noise(1.0, 1.0, seed=4)
        return None if abs(float(np.mean(y))) < 0.02 else "the noise is not centred on 0"

    def value_kept():
        value = torch.linspace(-3, 3, 1000, dtype=torch.float64).reshape(10, 100)
        before = value.clone()
        out = call(laplace_mechanism, value, epsilon=1e9, sensitivity=1.0,
                   generator=torch.Generator().manual_seed(5))
        if not torch.equal(value, before):
            return "the function modified its input: return value + noise as a new tensor"
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (10, 100):
            return "should return a tensor of the value's shape"
        if not torch.allclose(out.double(), value, atol=1e-6):
            return "with a huge epsilon the output should be (almost) the value itself"
        return None

    def generator():
        a = noise(1.0, 1.0, seed=6)[:1000]
        b = noise(1.0, 1.0, seed=6)[:1000]
        c = noise(1.0, 1.0, seed=7)[:1000]
        if not np.array_equal(a, b):
            return "two calls with generators seeded alike give different noise: use `generator`"
        if np.array_equal(a, c):
            return "different seeds give the same noise: draw the noise from `generator`"
        return None

    def invalid():
        for kwargs in ({"epsilon": 0.0, "sensitivity": 1.0}, {"epsilon": -1.0, "sensitivity": 1.0},
                       {"epsilon": 1.0, "sensitivity": 0.0}):
            problem = _raises(laplace_mechanism, ValueError, torch.zeros(3),
                              generator=torch.Generator().manual_seed(0), **kwargs)
            if problem:
                args = ", ".join(f"{k}={v:g}" for k, v in kwargs.items())
                return f"{args} {problem}"
        return None

    checks = [
        ("scale", lambda: scale(2.0, 1.0)),
        ("scale with a larger sensitivity", lambda: scale(0.5, 3.0)),
        ("Laplace shape", shape),
        ("centred", centred),
        ("value unchanged", value_kept),
        ("randomness from the generator", generator),
        ("invalid arguments", invalid),
    ]
    return run_checks(task, "the Laplace mechanism", laplace_mechanism, checks, quiet=quiet)


def _param_list(seed: int, scale: float) -> list[nn.Parameter]:
    """Parameters of a small conv net, scaled so that the largest magnitude is about ``scale``."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 3, 3, 3), (8,), (4, 8, 3, 3), (4,)]
    params = []
    for k, s in enumerate(shapes):
        t = torch.randn(s, generator=g) * (scale if k == 2 else 0.3 * scale)
        params.append(nn.Parameter(t))
    return params


def check_clip(clip: Callable, *, task: str = "3.2", quiet: bool = False) -> TaskResult:
    """Check ``clip(params, *, bound) -> float``, θ ← θ / max(1, ‖θ‖∞ / G) in place, against
    :func:`coinfer.train.clip_parameters` (the clipping of Algorithm 2)."""
    from ...train import clip_parameters

    def run(seed, scale, bound):
        params = _param_list(seed, scale)
        ref = [p.detach().clone() for p in params]
        factor_ref = clip_parameters(ref, bound=bound)
        ids = [id(p) for p in params]
        factor = call(clip, params, bound=bound)
        return params, ids, ref, factor, factor_ref

    def values():
        params, _, ref, _, _ = run(1, 2.0, 0.5)
        for p, r in zip(params, ref):
            if not torch.allclose(p.detach(), r, rtol=1e-6, atol=1e-7):
                return "wrong parameters after clipping a vector whose largest entry exceeds G"
        return None

    def direction():
        params, _, _, _, _ = run(2, 3.0, 1.0)
        original = _param_list(2, 3.0)
        ratios = torch.cat([(p.detach() / q.detach()).flatten()
                            for p, q in zip(params, original)])
        if float(ratios.max() - ratios.min()) > 1e-5:
            if any(float(p.detach().abs().max()) > 1.0 + 1e-6 for p in params):
                return "some entries still exceed the bound"
            return ("the entries are not all divided by the same factor: θ / max(1, ‖θ‖∞/G) "
                    "keeps the direction of the whole vector (no clamping, no per-tensor scaling)")
        return None

    def noop():
        params, _, _, factor, _ = run(3, 0.2, 1.0)
        original = _param_list(3, 0.2)
        if not all(torch.equal(p.detach(), q.detach()) for p, q in zip(params, original)):
            return "changed parameters that were already inside [-G, G]"
        value = _as_float(factor, "the returned factor")
        if isinstance(value, str) or value != 1.0:
            return "should return 1.0 when nothing needs clipping"
        return None

    def factor():
        _, _, _, got, want = run(4, 2.5, 0.5)
        value = _as_float(got, "the returned factor")
        if isinstance(value, str):
            return value
        return None if _close(value, want, rtol=1e-6) else \
            f"returned {_fmt(value)}: return the factor max(1, ‖θ‖∞ / G) that was divided out"

    def in_place():
        params, ids, _, _, _ = run(5, 2.0, 0.5)
        original = _param_list(5, 2.0)
        if [id(p) for p in params] != ids or all(
                torch.equal(p.detach(), q.detach()) for p, q in zip(params, original)):
            return "the parameters were not changed in place"
        if not all(isinstance(p, nn.Parameter) and p.requires_grad for p in params):
            return "the parameters lost their requires_grad flag"
        return None

    def invalid():
        problem = _raises(clip, ValueError, _param_list(6, 1.0), bound=0.0)
        if problem:
            return f"bound=0 {problem}"
        problem = _raises(clip, ValueError, [], bound=1.0)
        return f"an empty parameter list {problem}" if problem else None

    checks = [
        ("clipped values", values),
        ("direction kept", direction),
        ("nothing to clip", noop),
        ("returned factor", factor),
        ("in place", in_place),
        ("invalid arguments", invalid),
    ]
    return run_checks(task, "clipping", clip, checks, quiet=quiet)


def _clipped_model(seed: int = 41, bound: float = 0.5):
    from ...train import clip_parameters, device_parameters

    model = _checker_model(seed=seed)
    clip_parameters(device_parameters(model), bound=bound)
    return model


def _conv_params(model: nn.Module) -> list[list[torch.Tensor]]:
    return [[p.detach() for p in m.parameters()] for m in model.modules()
            if isinstance(m, nn.Conv2d)]


def check_perturb(perturb: Callable, *, task: str = "3.3", quiet: bool = False) -> TaskResult:
    """Check ``perturb(model, *, at, epsilon, clip_bound, generator) -> model`` (Algorithm 2)
    against :func:`coinfer.defense.perturb_parameters` with the paper's per-coordinate
    calibration Lap(0, 2G/ε) on the parameters of convolutions 1…at."""
    from ...defense import perturb_parameters

    G = 0.5
    model = _clipped_model(bound=G)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    results: dict[tuple, nn.Module] = {}

    def run(at, epsilon, seed=0):
        key = (at, epsilon, seed)
        if key not in results:
            out = call(perturb, model, at=at, epsilon=epsilon, clip_bound=G,
                       generator=torch.Generator().manual_seed(seed))
            if not isinstance(out, nn.Module):
                raise StudentError(_name(perturb), TypeError(
                    f"should return an nn.Module, got {type(out).__name__}"))
            if len(_conv_params(out)) != len(_conv_params(model)):
                raise StudentError(_name(perturb), ValueError(
                    "the returned model does not have the layers of the original"))
            results[key] = out
        return results[key]

    def deltas(out, at):
        before, after = _conv_params(model), _conv_params(out)
        inside = torch.cat([(a - b).flatten() for ca, cb in zip(after[:at], before[:at])
                            for a, b in zip(ca, cb)])
        outside = [(a - b) for ca, cb in zip(after[at:], before[at:]) for a, b in zip(ca, cb)]
        return inside, outside

    def where(at):
        out = run(at, 5.0)
        inside, outside = deltas(out, at)
        if any(float(d.abs().max()) > 0 for d in outside):
            return f"with at={at} the parameters after convolution {at} changed too"
        linear = [(p.detach(), q.detach()) for m, n in zip(out.modules(), model.modules())
                  if isinstance(m, nn.Linear) for p, q in zip(m.parameters(), n.parameters())]
        if any(not torch.equal(p, q) for p, q in linear):
            return f"with at={at} the classifier's linear layers changed too"
        if float((inside == 0).double().mean()) > 0.01:
            return f"with at={at} some parameters of convolutions 1…{at} got no noise"
        return None

    def scale(epsilon):
        out = run(4, epsilon)
        inside, _ = deltas(out, 4)
        ref = perturb_parameters(model, epsilon=epsilon, clip_bound=G, at=4, seed=1)
        ref_inside, _ = deltas(ref, 4)
        got, want = float(inside.abs().mean()), float(ref_inside.abs().mean())
        if not abs(got - want) <= 0.05 * want:
            return (f"mean |noise| is {_fmt(got)} for epsilon={epsilon:g}, G={G:g}: the paper's "
                    "scale is 2G / epsilon")
        distance = _ks_laplace(inside.double().numpy(), want)
        if distance > 0.02:
            return f"the noise is not Laplace-distributed (KS distance {distance:.3f})"
        return None

    def original_kept():
        run(4, 5.0)
        now = model.state_dict()
        if any(not torch.equal(now[k], v) for k, v in state.items()):
            return "perturb modified the original model: perturb a copy (copy.deepcopy)"
        out = run(4, 5.0)
        if out is model:
            return "returned the original model object"
        return None

    def seeded():
        a, b = run(2, 5.0, seed=8), run(2, 5.0, seed=9)
        again = call(perturb, model, at=2, epsilon=5.0, clip_bound=G,
                     generator=torch.Generator().manual_seed(8))
        pa, pb, pc = (_conv_params(m)[0][0] for m in (a, b, again))
        if not torch.equal(pa, pc):
            return "the same seed gives different noise: draw it from `generator`"
        if torch.equal(pa, pb):
            return "different seeds give the same noise"
        return None

    def refuses():
        unclipped = _checker_model(seed=42)
        problem = _raises(perturb, ValueError, unclipped, at=2, epsilon=5.0, clip_bound=G,
                          generator=torch.Generator().manual_seed(0))
        return (f"a model whose device parameters exceed G: perturb {problem} (the "
                "sensitivity 2G holds only for clipped parameters)") if problem else None

    checks = [
        ("device part only (at=2)", lambda: where(2)),
        ("device part only (at=4)", lambda: where(4)),
        ("noise scale, epsilon=5", lambda: scale(5.0)),
        ("noise scale, epsilon=50", lambda: scale(50.0)),
        ("original unchanged", original_kept),
        ("randomness from the generator", seeded),
        ("unclipped model", refuses),
    ]
    return run_checks(task, "perturb the device part", perturb, checks, quiet=quiet)


def check_whole_vector_epsilon(whole_vector_epsilon: Callable, *, task: str = "3.4",
                               quiet: bool = False) -> TaskResult:
    """Check ``whole_vector_epsilon(model, *, at, epsilon) -> float`` against
    :func:`coinfer.privacy.privacy_guarantee`: the ε that the paper's per-coordinate noise
    Lap(2G/ε) really gives for the release of the whole device part θ₁."""
    from ...privacy import privacy_guarantee

    model = _clipped_model(seed=43)

    def compare(at, epsilon):
        got = _as_float(call(whole_vector_epsilon, model, at=at, epsilon=epsilon),
                        f"whole_vector_epsilon(at={at})")
        if isinstance(got, str):
            return got
        ref = privacy_guarantee(model, epsilon=epsilon, clip_bound=0.5, at=at)
        if not _close(got, ref.whole_vector_epsilon, rtol=1e-9):
            return f"wrong value for at={at}, epsilon={epsilon:g} (got {_fmt(got)})"
        return None

    def all_splits():
        for at in range(1, 7):
            problem = compare(at, 5.0)
            if problem:
                return problem
        return None

    def invalid():
        for kwargs in ({"at": 0, "epsilon": 5.0}, {"at": 7, "epsilon": 5.0},
                       {"at": 3, "epsilon": 0.0}):
            problem = _raises(whole_vector_epsilon, ValueError, model, **kwargs)
            if problem:
                args = ", ".join(f"{k}={v:g}" for k, v in kwargs.items())
                return f"{args} {problem}"
        return None

    checks = [
        ("split 1", lambda: compare(1, 5.0)),
        ("every split point", all_splits),
        ("other epsilons", lambda: compare(4, 0.1) or compare(2, 500.0)),
        ("invalid arguments", invalid),
    ]
    return run_checks(task, "the whole-vector guarantee", whole_vector_epsilon, checks,
                      quiet=quiet)
