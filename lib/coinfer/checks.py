"""Checkers for the teaching assignments: test a student's function against the library.

Every task of an assignment ends with a *check cell* that calls one checker of this module, e.g.
``checks.check_psnr(psnr, task="2.1")``.  A checker calls the student's function on several
inputs (always including edge cases), compares each answer with the library's reference
implementation, and prints **one deterministic line** per task::

    Task 2.1 (PSNR): passed 6/6 checks

or, when something is wrong, the same line with the count of failed checks followed by one
line per failed check that says *what* is wrong (never the reference answer)::

    Task 2.1 (PSNR): failed 2 of 6 checks
      - identical images: psnr(x, x) should be infinite, got 480.0
      - peak value: the result does not scale with `peak` as 10·log10(peak²/MSE) does

A function that still raises ``NotImplementedError`` gives
``Task 2.1 (PSNR): not implemented yet (psnr raises NotImplementedError)``.  Anything the
student's code prints, and any warning it emits, is swallowed while the checks run, so that the
check cell's output depends only on the student's *answers*: this is what makes the check cells'
outputs comparable by nbval (:mod:`coinfer.assignments` grades a submission by comparing them
with the outputs of the solution notebook).

Every checker returns a :class:`TaskResult` (with ``ok``, ``passed``, ``total`` and
``problems``); in a notebook the result displays as nothing (the line is already printed).
Checkers take ``quiet=True`` to return the result without printing (tests use it).

Writing a checker
-----------------
A checker builds a list of ``(name, function)`` pairs; each function returns ``None`` when the
student's answer is right and a short, deterministic description of the problem otherwise, and
calls the student's code through :func:`call` (so that exceptions raised by the student are
reported, while exceptions raised by the reference implementation — bugs of the checker — are
not hidden).  :func:`run_checks` runs the list and prints the line.  Inputs come from fixed seeds.
"""

from __future__ import annotations

import contextlib
import io
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "TaskResult",
    "run_checks",
    "call",
    "StudentError",
    # chapter 1 — co-inference
    "check_split_model",
    "check_sent_bytes",
    "check_latency",
    "check_fastest_per_bandwidth",
    # chapter 2 — spears
    "check_psnr",
    "check_observe",
    "check_train_inverse",
    "check_reconstruct",
    # chapter 3 — shields
    "check_laplace_mechanism",
    "check_clip",
    "check_perturb",
    "check_whole_vector_epsilon",
    # chapter 4 — incentive
    "check_vehicle_utilities",
    "check_best_reply",
    "check_nash",
    "check_sp_curve",
]


# ============================================================================================
# The framework
# ============================================================================================
@dataclass(frozen=True)
class TaskResult:
    """The outcome of one checker.

    Attributes
    ----------
    task, title
        ``"2.1"`` and ``"PSNR"``.
    passed, total
        Checks passed and checks run.
    problems
        One description per failed check (empty when all passed).
    not_implemented
        The student's function still raises ``NotImplementedError``.
    """

    task: str
    title: str
    passed: int
    total: int
    problems: tuple[str, ...] = ()
    not_implemented: bool = False
    function: str = "the function"
    origin: str | None = None

    @property
    def ok(self) -> bool:
        """All checks passed."""
        return not self.not_implemented and self.passed == self.total

    @property
    def status(self) -> str:
        """``"passed"``, ``"failed"`` or ``"not implemented"``."""
        if self.not_implemented:
            return "not implemented"
        return "passed" if self.ok else "failed"

    def report(self) -> str:
        """The text the checker prints (no trailing newline)."""
        head = f"Task {self.task} ({self.title}): "
        if self.not_implemented:
            if self.origin and self.origin != self.function:
                return head + (f"not implemented yet ({self.function} calls {self.origin}, "
                               "which raises NotImplementedError)")
            return head + f"not implemented yet ({self.function} raises NotImplementedError)"
        if self.ok:
            return head + f"passed {self.passed}/{self.total} checks"
        lines = [head + f"failed {self.total - self.passed} of {self.total} checks"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    __str__ = report

    def _ipython_display_(self) -> None:
        """Show nothing as a cell's result: the checker has printed its report already."""


class StudentError(Exception):
    """The student's function raised an exception (wrapped by :func:`call`)."""

    def __init__(self, name: str, error: BaseException):
        self.name = name
        self.error = error
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        if len(message) > 120:
            message = message[:117] + "..."
        detail = f"{type(error).__name__}: {message}" if message else type(error).__name__
        super().__init__(f"{name} raised {detail}")


class _NotImplemented(Exception):
    """The student's function raised NotImplementedError: stop checking this task."""

    def __init__(self, name: str, error: BaseException):
        super().__init__(name)
        tb = error.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        #: the function whose body raised it (a stub the student's function calls, perhaps)
        self.origin = tb.tb_frame.f_code.co_name if tb is not None else None


@contextlib.contextmanager
def _silenced():
    """Swallow whatever the student's code prints or warns (the report must not depend on it)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _name(fn: Callable) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def call(fn: Callable, *args, **kwargs) -> Any:
    """Call the student's ``fn`` silenced; its exceptions become :class:`StudentError`."""
    try:
        with _silenced():
            return fn(*args, **kwargs)
    except NotImplementedError as err:
        raise _NotImplemented(_name(fn), err) from err
    except Exception as err:  # noqa: BLE001 - any mistake of the student's is reported
        raise StudentError(_name(fn), err) from err


def _raises(fn: Callable, exc: type[BaseException] | tuple, *args, **kwargs) -> str | None:
    """``None`` when the student's ``fn(*args)`` raises ``exc``, else a description."""
    try:
        with _silenced():
            fn(*args, **kwargs)
    except NotImplementedError as err:
        raise _NotImplemented(_name(fn), err) from err
    except exc:
        return None
    except Exception as err:  # noqa: BLE001
        return f"raised {type(err).__name__} instead of {_exc_names(exc)}"
    return f"returned a value instead of raising {_exc_names(exc)}"


def _exc_names(exc) -> str:
    if isinstance(exc, tuple):
        return " or ".join(e.__name__ for e in exc)
    return exc.__name__


Check = tuple[str, Callable[[], "str | None"]]


def run_checks(task: str, title: str, function: Callable, checks: Sequence[Check], *,
               quiet: bool = False) -> TaskResult:
    """Run ``checks`` (``(name, fn)`` pairs) for ``task`` and print the one-line report.

    Each ``fn()`` returns ``None`` (passed) or a problem description.  A :class:`StudentError`
    raised inside counts as a failed check; ``NotImplementedError`` raised by the student's
    code stops the checks and reports the task as not implemented.
    """
    if not isinstance(task, str) or not task:
        raise TypeError(f"task must be a non-empty string such as '2.1', got {task!r}")
    if not callable(function):
        result = TaskResult(task, title, 0, len(checks),
                            (f"expected a function, got {type(function).__name__}",),
                            function=str(function))
    else:
        problems: list[str] = []
        passed = 0
        not_implemented = False
        origin = None
        for name, fn in checks:
            try:
                problem = fn()
            except _NotImplemented as err:
                not_implemented, origin = True, err.origin
                break
            except StudentError as err:
                problem = str(err)
            if problem is None:
                passed += 1
            else:
                problems.append(f"{name}: {problem}")
        result = TaskResult(task, title, passed, len(checks), tuple(problems), not_implemented,
                            function=_name(function), origin=origin)
    if not quiet:
        print(result.report())
    return result


# -- comparison helpers ------------------------------------------------------------------------
def _as_float(value, what: str) -> float | str:
    """``float(value)`` for a real scalar, else a description of what is wrong."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return f"{what} should be a single number, got a tensor of shape {tuple(value.shape)}"
        value = value.item()
    if isinstance(value, np.ndarray):
        if value.size != 1:
            return f"{what} should be a single number, got an array of shape {value.shape}"
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return f"{what} should be a number, got {type(value).__name__}"
    return float(value)


def _as_array(value, shape: tuple[int, ...], what: str, *, allow_inf: bool = False
              ) -> np.ndarray | str:
    """A float array of ``shape`` from ``value`` (array, list or tensor), else a description."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return f"{what} should be an array of numbers, got {type(value).__name__}"
    if arr.shape != shape:
        return f"{what} should have shape {shape}, got {arr.shape}"
    if np.any(np.isnan(arr)) or (not allow_inf and np.any(np.isinf(arr))):
        return f"{what} contains nan or inf"
    return arr


def _close(a: float, b: float, *, rtol: float = 1e-6, atol: float = 1e-9) -> bool:
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= atol + rtol * abs(b)


def _fmt(x: float) -> str:
    """A student's value, printed with 4 significant digits (never the reference's)."""
    return f"{x:.4g}"


# ============================================================================================
# Chapter 1 — co-inference
# ============================================================================================
def _checker_model(seed: int = 11):
    from .models import road_sign_cnn

    return road_sign_cnn(seed=seed).eval()


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
    from .models import NUM_CONV, feature_shape

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
    from .costs import split_costs
    from .models import NUM_CONV

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
    from .costs import LinkModel

    return [
        LinkModel(device_flops_per_s=5e9, edge_flops_per_s=1e12, bandwidth_bps=20e6),
        LinkModel(device_flops_per_s=2e11, edge_flops_per_s=4e11, bandwidth_bps=1e9),
        LinkModel(device_flops_per_s=1e9, edge_flops_per_s=5e12, bandwidth_bps=1e5),
    ]


def check_latency(latency: Callable, *, task: str = "1.3", quiet: bool = False) -> TaskResult:
    """Check ``latency(cost, link) -> float`` (seconds) against :func:`coinfer.costs.latency`."""
    from .costs import LinkModel, latency as reference_latency, split_costs

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
    from .costs import LinkModel, SplitCost, best_split, split_costs

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


# ============================================================================================
# Chapter 2 — the spear (black-box reconstruction attack)
# ============================================================================================
def _image_pairs(seed: int = 21) -> tuple[torch.Tensor, torch.Tensor]:
    """Five images in [0, 1] and five noisy versions with very different noise levels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((5, 3, 32, 32), generator=g, dtype=torch.float64)
    levels = torch.tensor([0.01, 0.05, 0.1, 0.2, 0.4], dtype=torch.float64).view(5, 1, 1, 1)
    y = (x + levels * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return x.float(), y.float()


def check_psnr(psnr: Callable, *, task: str = "2.1", quiet: bool = False) -> TaskResult:
    """Check ``psnr(original, reconstructed) -> array (n,)`` against :func:`coinfer.metrics.psnr`
    (images in [0, 1], one value per image, ``inf`` for a perfect copy)."""
    from . import metrics

    x, y = _image_pairs()

    def values(a, b, what):
        return _as_array(call(psnr, a, b), (a.shape[0],), f"psnr({what})", allow_inf=True)

    def compare(a, b, what):
        got = values(a, b, what)
        if isinstance(got, str):
            return got
        ref = metrics.psnr(a, b)
        if np.allclose(got, ref, rtol=1e-5, atol=1e-4, equal_nan=False):
            return None
        with np.errstate(invalid="ignore"):
            offset = got - ref
        if np.all(np.isfinite(offset)) and np.allclose(offset, offset[0], atol=1e-3):
            if abs(offset[0] - 20 * math.log10(255)) < 1e-2:
                return (f"values are 48.1 dB too high for {what}: the peak of images in [0, 1] "
                        "is 1, not 255")
            return f"values are off by a constant {_fmt(float(offset[0]))} dB for {what}"
        return f"wrong PSNR for {what} (got {', '.join(_fmt(float(v)) for v in got[:3])}, …)"

    def per_image():
        got = values(x, y, "five images")
        if isinstance(got, str):
            return got
        if np.ptp(got) < 1e-6:
            return "every image gets the same value: compute the MSE per image"
        return compare(x, y, "five images with different noise levels")

    def identical():
        a = torch.cat([x[:2], x[2:3]])
        b = torch.cat([x[:2], y[2:3]])
        got = values(a, b, "identical images")
        if isinstance(got, str):
            return got
        if not (math.isinf(got[0]) and got[0] > 0 and math.isinf(got[1])):
            return f"psnr(x, x) should be +inf for a perfect copy, got {_fmt(float(got[0]))}"
        if not math.isfinite(got[2]):
            return "one perfect copy in the batch made the other values infinite"
        return compare(a, b, "a batch with perfect copies")

    def single():
        return compare(x[:1], y[:1], "a single image")

    def grey():
        a = torch.full((2, 3, 32, 32), 0.5)
        b = a.clone()
        b[0, :, :16] = 0.25
        b[1] = 0.75
        return compare(a, b, "flat grey images")

    def mismatch():
        problem = _raises(psnr, ValueError, x, y[:, :, :16])
        return f"images of different shapes: psnr {problem}" if problem else None

    checks = [
        ("noisy images", lambda: compare(x, y, "noisy images")),
        ("one value per image", per_image),
        ("perfect copy", identical),
        ("single image", single),
        ("flat images", grey),
        ("shape mismatch", mismatch),
    ]
    return run_checks(task, "PSNR", psnr, checks, quiet=quiet)


def _attack_problem(n: int, seed: int = 31):
    """A victim CNN (fixed seed) and ``n`` synthetic ``uint8`` road signs."""
    from .data import synthetic_signs

    return _checker_model(seed=seed), synthetic_signs(n, seed=seed).images


class _RecordingOracle:
    """Black-box access that records the batches it is sent (sizes, dtypes, ranges)."""

    def __init__(self, device_model):
        from .attack import QueryAccess

        self._oracle = QueryAccess(device_model)
        self.sizes: list[int] = []
        self.bad_inputs: list[str] = []

    def __call__(self, images):
        if not isinstance(images, torch.Tensor):
            self.bad_inputs.append(f"a {type(images).__name__}")
        elif not images.is_floating_point():
            self.bad_inputs.append(f"a {images.dtype} tensor")
        elif images.numel() and (float(images.min()) < 0 or float(images.max()) > 1):
            self.bad_inputs.append("floats outside [0, 1]")
        else:
            self.sizes.append(int(images.shape[0]))
        return self._oracle(images)


def check_observe(observe: Callable, *, task: str = "2.2", quiet: bool = False) -> TaskResult:
    """Check ``observe(oracle, images, *, batch_size) -> features`` (phase 1 of Algorithm 1)
    against :func:`coinfer.attack.observe`."""
    from . import attack
    from .models import split

    model, images = _attack_problem(n=40)
    device = split(model, at=1).device

    def run(batch_size, imgs=images):
        oracle = _RecordingOracle(device)
        out = call(observe, oracle, imgs, batch_size=batch_size)
        return oracle, out

    def compare(batch_size):
        oracle, got = run(batch_size)
        if oracle.bad_inputs:
            return (f"the oracle was sent {oracle.bad_inputs[0]}: convert the uint8 images "
                    "with to_float")
        if not isinstance(got, torch.Tensor):
            return f"should return a torch.Tensor, got {type(got).__name__}"
        ref = attack.observe(attack.QueryAccess(device), images)
        if tuple(got.shape) != tuple(ref.shape):
            return f"features have shape {tuple(got.shape)} for {images.shape[0]} images"
        if not torch.allclose(got.float(), ref, rtol=1e-5, atol=1e-6):
            return f"wrong features (batch_size={batch_size})"
        return None

    def batches():
        oracle, _ = run(16)
        if oracle.bad_inputs:
            return f"the oracle was sent {oracle.bad_inputs[0]}"
        if max(oracle.sizes, default=0) > 16:
            return f"sent {max(oracle.sizes)} images in one query with batch_size=16"
        if sum(oracle.sizes) != images.shape[0]:
            return (f"sent {sum(oracle.sizes)} images in all for {images.shape[0]} images: "
                    "query each image exactly once")
        return None

    def detached():
        _, got = run(32)
        if not isinstance(got, torch.Tensor):
            return f"should return a torch.Tensor, got {type(got).__name__}"
        if got.requires_grad:
            return "the features still track gradients (query under torch.no_grad())"
        if got.dtype != torch.float32 or got.device.type != "cpu":
            return f"features should be float32 on the CPU, got {got.dtype} on {got.device}"
        return None

    def invalid():
        problem = _raises(observe, ValueError, _RecordingOracle(device), images, batch_size=0)
        return f"batch_size=0 {problem}" if problem else None

    checks = [
        ("one batch", lambda: compare(128)),
        ("several batches", lambda: compare(32)),
        ("uneven last batch", lambda: compare(24)),
        ("batch sizes", batches),
        ("plain tensor", detached),
        ("invalid batch size", invalid),
    ]
    return run_checks(task, "observe", observe, checks, quiet=quiet)


def _inverse_problem():
    """96 synthetic signs, feature maps of the shape of split 5 and a small inverse network.

    The features are a cheap fixed encoder (4×4 average pooling, a seeded 1×1 convolution to 64
    channels, ReLU) rather than the victim's: checking a training loop needs a learnable inverse
    problem of the right shape, not the victim's cost.
    """
    from .attack import InverseConfig, inverse_network
    from .data import synthetic_signs

    images = synthetic_signs(96, seed=32).images
    g = torch.Generator().manual_seed(33)
    weight = torch.randn((64, 3, 1, 1), generator=g)
    bias = 0.1 * torch.randn(64, generator=g)
    with torch.no_grad():
        pooled = torch.nn.functional.avg_pool2d(_float_images(images), 4)
        features = torch.relu(torch.nn.functional.conv2d(pooled, weight, bias))
    make = lambda seed=3: inverse_network(5, InverseConfig(width=8, seed=seed))  # noqa: E731
    return features, images, make


def _float_images(images: torch.Tensor) -> torch.Tensor:
    from .data import to_float

    return to_float(images)


def _mse_of(model: nn.Module, features: torch.Tensor, images: torch.Tensor) -> float:
    with torch.no_grad():
        return float(torch.nn.functional.mse_loss(model.eval()(features),
                                                  _float_images(images)))


def check_train_inverse(train_inverse: Callable, *, task: str = "2.3", quiet: bool = False
                        ) -> TaskResult:
    """Check ``train_inverse(inverse, features, images, *, epochs, batch_size, lr, seed)`` — the
    learning phase of Algorithm 1 — against :func:`coinfer.attack.learn`.

    The student's loop must minimise the paper's loss (the per-pixel MSE) with Adam on seeded
    random mini-batches, return one mean training loss per epoch, be reproducible, and reach
    (on the training pairs) an error no worse than 1.3 times that of the library's
    :func:`~coinfer.attack.learn` run for as many epochs.
    """
    from .attack import InverseConfig, learn

    features, images, make = _inverse_problem()
    f_copy, i_copy = features.clone(), images.clone()
    kw = dict(epochs=6, batch_size=16, lr=1e-2)
    runs: dict[int, tuple[nn.Module, object]] = {}

    def trained(seed: int = 0):
        if seed not in runs:
            inverse = make()
            losses = call(train_inverse, inverse, features, images, seed=seed, **kw)
            runs[seed] = (inverse, losses)
        return runs[seed]

    def losses_ok():
        _, losses = trained()
        try:
            losses = [float(v) for v in losses]
        except (TypeError, ValueError):
            return f"should return a list of floats (one per epoch), got {type(losses).__name__}"
        if len(losses) != kw["epochs"]:
            return f"returned {len(losses)} losses for {kw['epochs']} epochs"
        if not all(math.isfinite(v) for v in losses):
            return "the losses contain nan or inf"
        if not losses[-1] < losses[0]:
            return "the training loss does not decrease"
        return None

    def learns():
        inverse, _ = trained()
        before = _mse_of(make(), features, images)
        after = _mse_of(inverse, features, images)
        if not after < 0.8 * before:
            return "the inverse network hardly improves: are its parameters being updated?"
        ref = learn(features, images, at=5, progress=False,
                    config=InverseConfig(width=8, seed=3, max_epochs=kw["epochs"],
                                         patience=kw["epochs"] + 1, batch_size=kw["batch_size"],
                                         lr=kw["lr"], lr_drops=0, mixed_precision="off"))
        reference = _mse_of(ref.model, features, images)
        if after > 1.3 * reference + 1e-4:
            return (f"after training the error is {_fmt(after)}, much worse than the library's "
                    "learn() reaches with the same budget")
        return None

    def paper_loss():
        inverse = make()
        expected = _mse_of(inverse, features, images)
        losses = call(train_inverse, inverse, features, images, epochs=1, batch_size=96,
                      lr=1e-12, seed=0)
        try:
            first = float(list(losses)[0])
        except (TypeError, ValueError, IndexError):
            return "should return a list of floats (one per epoch)"
        if not _close(first, expected, rtol=1e-3):
            return (f"for one full batch the reported loss is {_fmt(first)}: report the mean "
                    "per-pixel squared error of the paper's loss")
        return None

    def reproducible():
        inverse, _ = trained()
        again = make()
        call(train_inverse, again, features, images, seed=0, **kw)
        same = all(torch.equal(p, q) for p, q in zip(inverse.parameters(), again.parameters()))
        return None if same else "two runs with the same seed give different weights"

    def seeded():
        inverse, _ = trained(0)
        other, _ = trained(1)
        same = all(torch.equal(p, q) for p, q in zip(inverse.parameters(), other.parameters()))
        return ("seed 0 and seed 1 give the same weights: shuffle the mini-batches with a "
                "torch.Generator seeded with seed") if same else None

    def untouched():
        trained()
        if not (torch.equal(features, f_copy) and torch.equal(images, i_copy)):
            return "the function modified the features or the images"
        return None

    checks = [
        ("losses", losses_ok),
        ("learning", learns),
        ("the paper's loss", paper_loss),
        ("reproducible", reproducible),
        ("seeded shuffling", seeded),
        ("inputs unchanged", untouched),
    ]
    return run_checks(task, "training the inverse model", train_inverse, checks, quiet=quiet)


def check_reconstruct(reconstruct: Callable, *, task: str = "2.4", quiet: bool = False
                      ) -> TaskResult:
    """Check ``reconstruct(inverse, features, *, batch_size) -> images`` (phase 3 of
    Algorithm 1) against :func:`coinfer.attack.reconstruct`."""
    from . import attack

    features, images, make = _inverse_problem()
    inverse = make(seed=4)

    def compare(batch_size, n=features.shape[0]):
        got = call(reconstruct, inverse, features[:n], batch_size=batch_size)
        if not isinstance(got, torch.Tensor):
            return f"should return a torch.Tensor, got {type(got).__name__}"
        ref = attack.reconstruct(inverse, features[:n])
        if tuple(got.shape) != tuple(ref.shape):
            return f"returned shape {tuple(got.shape)} for {n} feature maps"
        if not torch.allclose(got.float(), ref, rtol=1e-5, atol=1e-6):
            return f"wrong images (batch_size={batch_size})"
        return None

    def batches():
        sizes: list[int] = []
        hook = inverse.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[0]))
        try:
            call(reconstruct, inverse, features, batch_size=20)
        finally:
            hook.remove()
        if not sizes or max(sizes) > 20:
            return f"ran {max(sizes, default=0)} feature maps at once with batch_size=20"
        return None

    def no_grad():
        got = call(reconstruct, inverse, features[:8], batch_size=8)
        if isinstance(got, torch.Tensor) and got.requires_grad:
            return "the images still track gradients (reconstruct under torch.no_grad())"
        return None

    def eval_mode():
        noisy = nn.Sequential(*inverse, nn.Dropout(0.5)).train()
        got = call(reconstruct, noisy, features[:8], batch_size=8)
        ref = attack.reconstruct(noisy, features[:8])
        if not isinstance(got, torch.Tensor) or not torch.allclose(got.float(), ref):
            return "a network with dropout gives random images: switch to eval mode"
        return None

    checks = [
        ("one batch", lambda: compare(128)),
        ("uneven batches", lambda: compare(25)),
        ("single feature map", lambda: compare(4, n=1)),
        ("batch sizes", batches),
        ("no gradients", no_grad),
        ("eval mode", eval_mode),
    ]
    return run_checks(task, "reconstruct", reconstruct, checks, quiet=quiet)


# ============================================================================================
# Chapter 3 — the shields (Laplace mechanism, clipping, parameter perturbation)
# ============================================================================================
def _ks_laplace(samples: np.ndarray, scale: float) -> float:
    """Kolmogorov–Smirnov distance between ``samples`` and Lap(0, scale)."""
    from scipy import stats

    return float(stats.kstest(samples / scale, stats.laplace.cdf).statistic)


def check_laplace_mechanism(laplace_mechanism: Callable, *, task: str = "3.1",
                            quiet: bool = False) -> TaskResult:
    """Check ``laplace_mechanism(value, *, epsilon, sensitivity, generator)`` against
    :func:`coinfer.privacy.laplace_mechanism`: the noise must be Lap(0, Δ/ε), i.i.d. per
    coordinate, drawn from ``generator`` (statistics on 200,000 draws, fixed seeds)."""
    from . import privacy

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
    from .train import clip_parameters

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
    from .train import clip_parameters, device_parameters

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
    from .defense import perturb_parameters

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
    from .privacy import privacy_guarantee

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


# ============================================================================================
# Chapter 4 — the incentive game
# ============================================================================================
def _markets():
    """Four fixed markets: 2, 5 and 12 vehicles drawn as in the paper, and 6 similar vehicles
    (whose equilibrium is inside the bounds for moderate rewards)."""
    from .game import MarketSpec, random_market

    spec = MarketSpec(accuracy_a=1.0, accuracy_b=0.5, eps_min=0.5, eps_max=8.0)
    similar = spec.replace(n_vehicles=6, speed_range=(9.0, 11.0), privacy_range=(6.0, 7.0))
    return [random_market(spec.replace(n_vehicles=n), seed=s)
            for n, s in ((2, 101), (5, 102), (12, 103))] + [random_market(similar, seed=104)]


def _profile(market, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(market.eps_min, market.eps_max, market.n_vehicles)


def check_vehicle_utilities(utilities: Callable, *, task: str = "4.1", quiet: bool = False
                            ) -> TaskResult:
    """Check ``utilities(market, eps, reward) -> array`` against
    :func:`coinfer.game.vehicle_utilities` (Eq. (7) of Wu et al. 2021)."""
    from . import game

    markets = _markets()

    def compare(market, eps, reward):
        got = _as_array(call(utilities, market, eps, reward), (market.n_vehicles,), "U")
        if isinstance(got, str):
            return got
        ref = game.vehicle_utilities(market, eps, reward)
        if not np.allclose(got, ref, rtol=1e-9, atol=1e-9 * max(1.0, reward)):
            return (f"wrong utilities for {market.n_vehicles} vehicles and R={reward:g} "
                    f"(got U_0={_fmt(float(got[0]))})")
        return None

    def general():
        for j, m in enumerate(markets):
            for reward in (100.0, 2500.0):
                problem = compare(m, _profile(m, 10 + j), reward)
                if problem:
                    return problem
        return None

    def no_reward():
        m = markets[1]
        return compare(m, _profile(m, 20), 0.0)

    def at_bounds():
        m = markets[2]
        eps = np.where(np.arange(m.n_vehicles) % 2 == 0, m.eps_min, m.eps_max)
        return compare(m, eps, 700.0)

    def shares():
        m = markets[2]
        eps = _profile(m, 30)
        got = _as_array(call(utilities, m, eps, 900.0), (m.n_vehicles,), "U")
        if isinstance(got, str):
            return got
        total = float(np.sum(got + eps * m.costs))
        return None if _close(total, 900.0, rtol=1e-9) else \
            f"the vehicles' reward shares add up to {_fmt(total)} instead of R = 900"

    def list_input():
        m = markets[0]
        eps = [m.eps_min, m.eps_max]
        before = list(eps)
        problem = compare(m, eps, 50.0)
        if problem:
            return problem + " (eps given as a list)"
        return None if eps == before else "the function modified eps"

    checks = [
        ("random profiles", general),
        ("zero reward", no_reward),
        ("budgets at the bounds", at_bounds),
        ("reward shares", shares),
        ("list input", list_input),
    ]
    return run_checks(task, "vehicle utilities", utilities, checks, quiet=quiet)


def check_best_reply(best_reply: Callable, *, task: str = "4.2", quiet: bool = False
                     ) -> TaskResult:
    """Check ``best_reply(market, eps, reward, i) -> float`` against
    :func:`coinfer.game.best_response` (Eq. (15) with the budget bounds)."""
    from . import game

    markets = _markets()

    def reply(m, eps, reward, i):
        return _as_float(call(best_reply, m, eps, reward, i), f"best_reply(..., i={i})")

    def compare(m, eps, reward, indices, what):
        for i in indices:
            got = reply(m, eps, reward, i)
            if isinstance(got, str):
                return got
            ref = game.best_response(m, eps, reward, i)
            if not _close(got, ref, rtol=1e-8, atol=1e-10):
                return f"wrong reply {what} (R={reward:g}, vehicle {i}: got {_fmt(got)})"
        return None

    def interior():
        # rewards at which every reply of the similar vehicles is strictly inside the box
        m = markets[3]
        eps = np.full(m.n_vehicles, 2.0)
        for reward in (100.0, 200.0):
            br = game.best_response(m, eps, reward)
            assert np.all((br > m.eps_min) & (br < m.eps_max)), "checker: not interior"
        return compare(m, eps, 100.0, range(m.n_vehicles), "inside the bounds") or \
            compare(m, eps, 200.0, range(m.n_vehicles), "inside the bounds")

    def lower():
        m = markets[2]
        eps = np.full(m.n_vehicles, m.eps_max)
        assert np.all(game.best_response(m, eps, 150.0) == m.eps_min)
        return compare(m, eps, 150.0, (0, 5, 11), "when eps_min binds")

    def upper():
        m = markets[1]
        eps = np.full(m.n_vehicles, m.eps_max)
        assert np.all(game.best_response(m, eps, 1e5) == m.eps_max)
        return compare(m, eps, 1e5, range(m.n_vehicles), "when eps_max binds")

    def zero():
        m = markets[0]
        return compare(m, np.array([1.0, 3.0]), 0.0, (0, 1), "for a zero reward")

    def own_budget():
        m = markets[2]
        eps = _profile(m, 40)
        first = reply(m, eps, 1200.0, 3)
        eps2 = eps.copy()
        eps2[3] = m.eps_min if eps[3] > 0.5 * (m.eps_min + m.eps_max) else m.eps_max
        second = reply(m, eps2, 1200.0, 3)
        if isinstance(first, str) or isinstance(second, str):
            return first if isinstance(first, str) else second
        return None if _close(first, second, rtol=1e-12) else \
            "the reply depends on the vehicle's own current budget eps[i]"

    def maximises():
        m = markets[2]
        eps = _profile(m, 50)
        for reward in (300.0, 1200.0, 6000.0):
            for i in (1, 7):
                got = reply(m, eps, reward, i)
                if isinstance(got, str):
                    return got
                if not m.eps_min <= got <= m.eps_max:
                    return f"the reply {_fmt(got)} lies outside [eps_min, eps_max]"
                grid = np.linspace(m.eps_min, m.eps_max, 2001)
                trial = np.repeat(eps[None, :], grid.size, axis=0)
                trial[:, i] = grid
                x = trial / m.speeds
                u_grid = reward * x[:, i] / x.sum(axis=1) - grid * m.costs[i]
                mine = eps.copy()
                mine[i] = got
                u_mine = game.vehicle_utilities(m, mine, reward)[i]
                if u_grid.max() > u_mine + 1e-9 * max(1.0, abs(u_mine)):
                    return f"vehicle {i} can do better than the reply at R={reward:g}"
        return None

    checks = [
        ("interior reply", interior),
        ("lower bound", lower),
        ("upper bound", upper),
        ("zero reward", zero),
        ("own budget", own_budget),
        ("maximises U_i", maximises),
    ]
    return run_checks(task, "best response", best_reply, checks, quiet=quiet)


def check_nash(nash: Callable, *, task: str = "4.3", quiet: bool = False) -> TaskResult:
    """Check ``nash(market, reward) -> array`` against :func:`coinfer.game.nash_equilibrium`."""
    from . import game

    markets = _markets()

    def compare(m, reward, what, rtol=1e-6):
        got = _as_array(call(nash, m, reward), (m.n_vehicles,), "the equilibrium")
        if isinstance(got, str):
            return got
        ref = game.nash_equilibrium(m, reward)
        if not np.allclose(got, ref, rtol=rtol, atol=1e-9 * m.eps_max):
            return f"wrong equilibrium {what} (R={reward:g})"
        return None

    def interior():
        m = markets[3]
        for reward in (100.0, 200.0):
            ne = game.nash_equilibrium(m, reward)
            assert np.all((ne > m.eps_min) & (ne < m.eps_max)), "checker: not interior"
            problem = compare(m, reward, "with every vehicle inside the bounds")
            if problem:
                return problem
        return None

    def mixed():
        m = markets[2]
        ne = game.nash_equilibrium(m, 500.0)
        assert np.any(ne == m.eps_min) and np.any(ne == m.eps_max), "checker: no bound binds"
        assert np.any((ne > m.eps_min) & (ne < m.eps_max)), "checker: nobody inside"
        return compare(m, 500.0, "with some vehicles at a bound")

    def zero():
        return compare(markets[0], 0.0, "for a zero reward")

    def huge():
        m = markets[1]
        assert np.all(game.nash_equilibrium(m, 1e7) == m.eps_max)
        return compare(m, 1e7, "for a huge reward")

    def two():
        m = markets[0]
        return compare(m, 300.0, "for two vehicles")

    def fixed_point():
        m = markets[2]
        for reward in (500.0, 800.0):
            got = _as_array(call(nash, m, reward), (m.n_vehicles,), "the equilibrium")
            if isinstance(got, str):
                return got
            if np.any(got < m.eps_min) or np.any(got > m.eps_max):
                return "the equilibrium leaves [eps_min, eps_max]"
            br = game.best_response(m, got, reward)
            if not np.allclose(br, got, rtol=1e-6, atol=1e-9 * m.eps_max):
                return f"some vehicle would change its budget (R={reward:g}): not an equilibrium"
        return None

    checks = [
        ("interior equilibrium", interior),
        ("bounds binding", mixed),
        ("zero reward", zero),
        ("huge reward", huge),
        ("two vehicles", two),
        ("no vehicle wants to deviate", fixed_point),
    ]
    return run_checks(task, "Nash equilibrium", nash, checks, quiet=quiet)


def check_sp_curve(sp_curve: Callable, *, task: str = "4.4", quiet: bool = False
                   ) -> TaskResult:
    """Check ``sp_curve(market, rewards) -> array`` (:math:`U_S` at the NE) against
    :func:`coinfer.game.sp_utility_curve`."""
    from . import game

    markets = _markets()

    def compare(m, rewards, what):
        rewards = np.asarray(rewards, dtype=float)
        got = _as_array(call(sp_curve, m, rewards), rewards.shape, "U_S")
        if isinstance(got, str):
            return got
        ref = game.sp_utility_curve(m, rewards)
        bad = ~np.isclose(got, ref, rtol=1e-6, atol=1e-6)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            return f"wrong U_S {what} at R={rewards[k]:g} (got {_fmt(float(got[k]))})"
        return None

    checks = [
        ("a grid of rewards", lambda: compare(markets[2], np.linspace(0, 5000, 11), "")),
        ("zero reward", lambda: compare(markets[1], [0.0], "with nobody paid")),
        ("huge reward", lambda: compare(markets[1], [1e6], "with everybody at eps_max")),
        ("two vehicles", lambda: compare(markets[0], [10.0, 200.0, 900.0], "for two vehicles")),
    ]
    return run_checks(task, "the leader's utility", sp_curve, checks, quiet=quiet)
