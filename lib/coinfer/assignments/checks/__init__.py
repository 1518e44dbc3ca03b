"""Checkers for the teaching assignments: test a student's function against the library.

Every task of an assignment ends with a *check cell* that calls one checker of this package, e.g.
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

Layout
------
One module per assignment (chapter of the book); everything is re-exported here, so a check cell
reads ``from coinfer.assignments import checks`` then ``checks.check_psnr(...)``.

:mod:`~coinfer.assignments.checks.base`
    The framework: :class:`TaskResult`, :func:`call`, :func:`run_checks`, the comparison helpers
    and how to write a checker.
:mod:`~coinfer.assignments.checks.coinference`
    Assignment 1 (chapter 1): split the model, bytes on the air, latency, fastest configuration.
:mod:`~coinfer.assignments.checks.spears`
    Assignment 2 (chapter 2): PSNR, observe, train the inverse model, reconstruct.
:mod:`~coinfer.assignments.checks.shields`
    Assignment 3 (chapter 3): Laplace mechanism, clipping, perturbation, whole-vector epsilon.
:mod:`~coinfer.assignments.checks.incentive`
    Assignment 4 (chapter 4): vehicle utilities, best reply, Nash equilibrium, the leader's
    utility curve.

The old location :mod:`coinfer.checks` still re-exports this package for older notebooks.
"""

from __future__ import annotations

from . import base, coinference, incentive, shields, spears
from .base import *  # noqa: F401,F403 - re-exported; the names are in base.__all__
from .coinference import *  # noqa: F401,F403 - re-exported; the names are in coinference.__all__
from .incentive import *  # noqa: F401,F403 - re-exported; the names are in incentive.__all__
from .shields import *  # noqa: F401,F403 - re-exported; the names are in shields.__all__
from .spears import *  # noqa: F401,F403 - re-exported; the names are in spears.__all__
from .base import Check  # noqa: F401 - the checkers' building block, kept importable here
from .spears import _image_pairs  # noqa: F401 - not public; the tests use it

__all__ = [
    *base.__all__,
    *coinference.__all__,
    *spears.__all__,
    *shields.__all__,
    *incentive.__all__,
]
