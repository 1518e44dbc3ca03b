"""The framework of the checkers: :class:`TaskResult`, :func:`call`, :func:`run_checks` and the
helpers the chapters' checkers share.

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

__all__ = ["TaskResult", "run_checks", "call", "StudentError"]


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


# -- fixtures shared by the chapters' checkers ------------------------------------------------
def _checker_model(seed: int = 11):
    """The road-sign CNN (seeded, eval mode) that the checkers of chapters 1–3 test with."""
    from ...models import road_sign_cnn

    return road_sign_cnn(seed=seed).eval()
