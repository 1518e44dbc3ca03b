"""Teaching assignments: release student notebooks from solution notebooks, grade with nbval.

Every assignment has **one source of truth**, a solution notebook
``book/assignments/solutions/<name>.ipynb``, committed *executed* (with outputs).  Its cells carry
a little metadata, ``cell.metadata["coinfer"] = {"task": "2.1", "role": ...}``:

``role: "solution"``
    A code cell with the student's part between the marker lines ``### BEGIN SOLUTION`` and
    ``### END SOLUTION``.  Released as ``# YOUR CODE HERE`` + ``raise NotImplementedError()``
    (at the indentation of the marker), with its outputs cleared.
``role: "check"``
    The check cell of a task: it calls a checker of :mod:`coinfer.assignments.checks`, which
    prints one line such as ``Task 2.1 (PSNR): passed 6/6 checks``.  Released with its source
    **and its outputs**: they are the expected outputs nbval compares a submission with.
``role: "answer"``
    A markdown cell whose model answer lies between ``<!-- BEGIN SOLUTION -->`` and
    ``<!-- END SOLUTION -->``; released as ``*YOUR ANSWER HERE*`` (graded by the instructor).
no role
    Shared cells (imports, data, plots); released with outputs cleared.  A ``task`` key without a
    role attributes a shared cell's failure to that task.

The notebook's own metadata lists the tasks::

    nb.metadata["coinfer"] = {"assignment": "a2_spears", "title": "...",
                              "tasks": [{"id": "2.1", "title": "PSNR", "depends": []}, ...]}

The first code cell is the Colab set-up cell (see :mod:`coinfer.book`); it is copied verbatim.
A markdown line ``<!-- colab-link -->`` becomes an "Open in Colab" link of the student notebook
(URL from ``_config.yml``).

Commands (``python -m coinfer.assignments`` or ``coinfer-assignments``)::

    release [NAME ...] [--execute] [--check]   solution notebooks -> book/assignments/student/
    grade SUBMISSION.ipynb|FOLDER [--assignment NAME] [--csv FILE] [--timeout S] [--keep DIR]
    list                                        the assignments and their tasks

``grade`` grafts the student's solution and answer cells into the released notebook (everything
else, the check cells and their expected outputs included, comes from the release), runs
``pytest --nbval`` on it, and turns nbval's per-cell results into per-task verdicts.  The exit
status is 0 when every task of every submission passed, 1 when some task failed and 2 when a
submission could not be graded at all.

Layout
------
:mod:`~coinfer.assignments.catalogue`
    The conventions (markers, roles, folders), :class:`Task`, :class:`Assignment`,
    :func:`discover`.
:mod:`~coinfer.assignments.generate`
    Release: :func:`validate_solution`, :func:`make_student`, :func:`release`.
:mod:`~coinfer.assignments.grading`
    Grading: :func:`graft`, :func:`run_nbval`, :func:`grade_notebook`, :func:`grade`.
:mod:`~coinfer.assignments.cli`
    The command line, :func:`main`.
:mod:`~coinfer.assignments.checks`
    The checkers the check cells call (one module per assignment).
:mod:`~coinfer.assignments.nbval_capture`
    The pytest plugin through which :func:`run_nbval` reads nbval's view of each cell.

Everything above except the checkers is re-exported here.
"""

from __future__ import annotations

from . import catalogue, cli, generate, grading
from .catalogue import *  # noqa: F401,F403 - re-exported; the names are in catalogue.__all__
from .cli import *  # noqa: F401,F403 - re-exported; the names are in cli.__all__
from .generate import *  # noqa: F401,F403 - re-exported; the names are in generate.__all__
from .grading import *  # noqa: F401,F403 - re-exported; the names are in grading.__all__
from .catalogue import _role, _task_of  # noqa: F401 - not public; the tests use them
from .grading import _keys  # noqa: F401 - not public; the tests use it
# Constants that were importable from this package before it was split (not in __all__).
from .catalogue import COLAB_MARKER, ROLES, SOLUTIONS, STUDENT  # noqa: F401
from .grading import SANITIZE, GraftInfo  # noqa: F401

__all__ = [
    *catalogue.__all__,
    *generate.__all__,
    *grading.__all__,
    *cli.__all__,
]
