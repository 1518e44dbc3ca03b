"""Teaching assignments: release student notebooks from solution notebooks, grade with nbval.

Every assignment has **one source of truth**, a solution notebook
``book/assignments/solutions/<name>.ipynb``, committed *executed* (with outputs).  Its cells carry
a little metadata, ``cell.metadata["coinfer"] = {"task": "2.1", "role": ...}``:

``role: "solution"``
    A code cell with the student's part between the marker lines ``### BEGIN SOLUTION`` and
    ``### END SOLUTION``.  Released as ``# YOUR CODE HERE`` + ``raise NotImplementedError()``
    (at the indentation of the marker), with its outputs cleared.
``role: "check"``
    The check cell of a task: it calls a checker of :mod:`coinfer.checks`, which prints one line
    such as ``Task 2.1 (PSNR): passed 6/6 checks``.  Released with its source **and its outputs**:
    they are the expected outputs nbval compares a submission with.
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
A markdown line ``<!-- colab-link -->`` becomes an "Open in Colab" badge of the student notebook
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
"""

from __future__ import annotations

import argparse
import copy
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

__all__ = [
    "SOLUTION_BEGIN",
    "SOLUTION_END",
    "ANSWER_BEGIN",
    "ANSWER_END",
    "CODE_STUB",
    "ANSWER_STUB",
    "Task",
    "Assignment",
    "ReleaseError",
    "find_book_dir",
    "discover",
    "strip_solution",
    "validate_solution",
    "make_student",
    "colab_url",
    "release",
    "execute_notebook",
    "graft",
    "CellResult",
    "TaskVerdict",
    "GradeReport",
    "run_nbval",
    "grade_notebook",
    "grade",
    "main",
]

SOLUTION_BEGIN = "### BEGIN SOLUTION"
SOLUTION_END = "### END SOLUTION"
ANSWER_BEGIN = "<!-- BEGIN SOLUTION -->"
ANSWER_END = "<!-- END SOLUTION -->"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
ANSWER_STUB = "*YOUR ANSWER HERE*"
COLAB_MARKER = "<!-- colab-link -->"
SOLUTIONS = Path("assignments") / "solutions"
STUDENT = Path("assignments") / "student"
ROLES = ("solution", "check", "answer")

#: Sanitisation used when grading (the same patterns as the repository's tests/nbval_sanitize.cfg).
SANITIZE = (
    "[memory addresses]\nregex: 0x[0-9a-fA-F]+\nreplace: 0xADDRESS\n\n"
    "[matplotlib figure reprs]\nregex: <Figure size \\d+x\\d+ with \\d+ Axes>\nreplace: <Figure>\n"
)
_CHECK_LINE = re.compile(r"^Task (?P<task>\S+) \((?P<title>.*)\): (?P<verdict>.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ReleaseError(ValueError):
    """A solution notebook breaks the conventions (the message lists every problem)."""


class Task(NamedTuple):
    """One task of an assignment (from the notebook's metadata)."""

    id: str
    title: str
    depends: tuple[str, ...] = ()


class Assignment(NamedTuple):
    """An assignment: its name, notebooks and tasks."""

    name: str
    title: str
    solution: Path
    student: Path
    tasks: tuple[Task, ...]


# ============================================================================================
# Notebook helpers
# ============================================================================================
def _nbformat():
    import nbformat

    return nbformat


def _read(path: str | os.PathLike):
    return _nbformat().read(str(path), as_version=4)


def _meta(cell) -> dict:
    meta = cell.get("metadata", {}).get("coinfer", {})
    return meta if isinstance(meta, dict) else {}


def _role(cell) -> str | None:
    return _meta(cell).get("role")


def _task_of(cell) -> str | None:
    task = _meta(cell).get("task")
    return str(task) if task is not None else None


def _tasks(nb) -> tuple[Task, ...]:
    raw = nb.metadata.get("coinfer", {}).get("tasks", [])
    return tuple(Task(str(t["id"]), str(t["title"]), tuple(str(d) for d in t.get("depends", ())))
                 for t in raw)


def _is_setup(cell) -> bool:
    return cell.cell_type == "code" and "colab-setup" in cell.metadata.get("tags", [])


def find_book_dir(start: str | os.PathLike | None = None) -> Path:
    """The ``book/`` folder that holds ``assignments/``: ``start`` or the first parent of it
    (default: the current directory) that contains ``book/assignments``."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / SOLUTIONS).is_dir() or (folder / STUDENT).is_dir():
            return folder
        if (folder / "book" / "assignments").is_dir():
            return folder / "book"
    raise FileNotFoundError(
        f"no book/assignments folder found in {here} or its parents; pass --book PATH"
    )


def discover(book_dir: str | os.PathLike | None = None) -> list[Assignment]:
    """Every assignment that has a solution notebook, sorted by name."""
    book = find_book_dir(book_dir) if book_dir is None else Path(book_dir)
    out = []
    for path in sorted((book / SOLUTIONS).glob("*.ipynb")):
        nb = _read(path)
        meta = nb.metadata.get("coinfer", {})
        out.append(Assignment(path.stem, str(meta.get("title", path.stem)), path,
                              book / STUDENT / path.name, _tasks(nb)))
    return out


def _assignment(name: str, book_dir: Path) -> Assignment:
    found = {a.name: a for a in discover(book_dir)}
    if name not in found:
        raise KeyError(f"unknown assignment {name!r}; known: {', '.join(sorted(found)) or 'none'}")
    return found[name]


# ============================================================================================
# Release: solution notebook -> student notebook
# ============================================================================================
def strip_solution(source: str, *, begin: str = SOLUTION_BEGIN, end: str = SOLUTION_END,
                   stub: Sequence[str] = CODE_STUB) -> str:
    """Replace every ``begin … end`` region of ``source`` by ``stub`` (at the marker's indent).

    Raises
    ------
    ReleaseError
        For an unmatched or nested marker.
    """
    out: list[str] = []
    inside = False
    for n, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise ReleaseError(f"line {n}: nested {begin!r}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + s for s in stub)
        elif stripped == end:
            if not inside:
                raise ReleaseError(f"line {n}: {end!r} without {begin!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ReleaseError(f"{begin!r} without {end!r}")
    return "\n".join(out)


def _has_markers(source: str, begin: str) -> bool:
    return any(line.strip() == begin for line in source.split("\n"))


def _check_lines(cell) -> list[str]:
    text = "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")
    return text.splitlines()


def validate_solution(nb) -> list[str]:
    """Problems that keep a solution notebook from being released (empty when it is fine).

    Checks the task list, that every task has a solution cell and an executed check cell whose
    output says ``Task <id> (...): passed n/n checks``, that markers sit only in solution/answer
    cells and are balanced, and that the first code cell is the Colab set-up cell.
    """
    problems = []
    tasks = _tasks(nb)
    ids = [t.id for t in tasks]
    if not tasks:
        problems.append("the notebook metadata lists no tasks (metadata.coinfer.tasks)")
    if len(set(ids)) != len(ids):
        problems.append(f"duplicate task ids in {ids}")
    for t in tasks:
        for d in t.depends:
            if d not in ids or ids.index(d) >= ids.index(t.id):
                problems.append(f"task {t.id} depends on {d}, which is not an earlier task")
    code = [c for c in nb.cells if c.cell_type == "code"]
    if not code or not _is_setup(code[0]):
        problems.append("the first code cell is not the Colab set-up cell (tag 'colab-setup')")
    seen: dict[tuple[str, str], int] = {}
    for i, cell in enumerate(nb.cells):
        role, task = _role(cell), _task_of(cell)
        where = f"cell {i} ({cell.cell_type}, role {role})"
        if role is not None and role not in ROLES:
            problems.append(f"{where}: unknown role {role!r}")
        if task is not None and task not in ids:
            problems.append(f"{where}: task {task!r} is not in the task list")
        if role in ROLES and task is None:
            problems.append(f"{where}: a {role} cell needs a task")
        if role is not None and task is not None:
            seen[(task, role)] = seen.get((task, role), 0) + 1
        source = cell.source
        code_markers = _has_markers(source, SOLUTION_BEGIN) or _has_markers(source, SOLUTION_END)
        answer_markers = _has_markers(source, ANSWER_BEGIN) or _has_markers(source, ANSWER_END)
        if role == "solution":
            if cell.cell_type != "code":
                problems.append(f"{where}: solution cells must be code cells")
            elif not _has_markers(source, SOLUTION_BEGIN):
                problems.append(f"{where}: no {SOLUTION_BEGIN!r} marker")
            try:
                strip_solution(source)
            except ReleaseError as err:
                problems.append(f"{where}: {err}")
        elif role == "answer":
            if cell.cell_type != "markdown":
                problems.append(f"{where}: answer cells must be markdown cells")
            elif not _has_markers(source, ANSWER_BEGIN):
                problems.append(f"{where}: no {ANSWER_BEGIN!r} marker")
            try:
                strip_solution(source, begin=ANSWER_BEGIN, end=ANSWER_END, stub=[ANSWER_STUB])
            except ReleaseError as err:
                problems.append(f"{where}: {err}")
        elif code_markers or answer_markers:
            problems.append(f"{where}: solution markers outside a solution/answer cell")
        if role == "check":
            if cell.cell_type != "code":
                problems.append(f"{where}: check cells must be code cells")
                continue
            if cell.execution_count is None:
                problems.append(f"{where}: the check cell has not been executed")
            lines = _check_lines(cell)
            match = _CHECK_LINE.match(lines[0]) if lines else None
            if match is None or match["task"] != task:
                problems.append(f"{where}: expected the output line 'Task {task} (...): ...', "
                                f"got {lines[:2]!r}")
            elif len(lines) > 1 or not re.fullmatch(r"passed (\d+)/\1 checks", match["verdict"]):
                problems.append(f"{where}: the solution fails its own check: {lines[0]!r}")
    for t in tasks:
        if not seen.get((t.id, "solution")):
            problems.append(f"task {t.id} has no solution cell")
        if not seen.get((t.id, "check")):
            problems.append(f"task {t.id} has no check cell")
    return problems


def colab_url(notebook: str | os.PathLike, *, config_path: str | os.PathLike) -> str:
    """The Colab URL that opens ``notebook`` (a path inside the repository) from GitHub."""
    from ..book import read_repository

    url, branch = read_repository(config_path)
    github = re.match(r"https?://github\.com/(.+)$", url)
    if not github:
        raise ValueError(f"repository.url must be a github.com URL, got {url!r}")
    return (f"https://colab.research.google.com/github/{github.group(1)}/blob/{branch}/"
            f"{Path(notebook).as_posix()}")


def _badge(url: str) -> str:
    return ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"({url})")


_KEEP_CELL_META = ("tags", "coinfer", "editable", "deletable", "slideshow")


def make_student(solution_nb, *, name: str, colab: str | None = None):
    """The student notebook of ``solution_nb`` (a new notebook; the input is not modified).

    * the Colab set-up cell is copied verbatim;
    * solution regions become ``# YOUR CODE HERE`` / ``raise NotImplementedError()``;
    * answer regions become ``*YOUR ANSWER HERE*``;
    * check cells keep their source, outputs and execution count (the expected outputs);
    * every other code cell loses its outputs and execution count;
    * ``<!-- colab-link -->`` becomes the "Open in Colab" badge for ``colab`` (if given).

    Raises
    ------
    ReleaseError
        When :func:`validate_solution` finds problems.
    """
    problems = validate_solution(solution_nb)
    if problems:
        raise ReleaseError(f"{name}: " + "; ".join(problems))
    nb = copy.deepcopy(solution_nb)
    meta = dict(nb.metadata.get("coinfer", {}))
    meta.update({"assignment": name, "version": "student"})
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in ("kernelspec", "language_info")}
    nb.metadata["coinfer"] = meta
    for cell in nb.cells:
        role = _role(cell)
        if _is_setup(cell):  # verbatim (source, tags); only nbclient's timings are dropped
            cell.metadata.pop("execution", None)
            cell.execution_count = None
            continue
        cell.metadata = {k: v for k, v in cell.metadata.items() if k in _KEEP_CELL_META}
        if cell.cell_type == "markdown":
            if role == "answer":
                cell.source = strip_solution(cell.source, begin=ANSWER_BEGIN, end=ANSWER_END,
                                             stub=[ANSWER_STUB])
            if colab and COLAB_MARKER in cell.source:
                cell.source = cell.source.replace(COLAB_MARKER, _badge(colab))
            continue
        if cell.cell_type != "code":
            continue
        if role == "solution":
            cell.source = strip_solution(cell.source)
        if role != "check":
            cell.outputs = []
            cell.execution_count = None
    return nb


def _canonical(nb) -> str:
    nbformat = _nbformat()
    return nbformat.writes(nb)


def execute_notebook(path: str | os.PathLike, *, timeout: int = 600) -> None:
    """Execute a notebook in place (``nbclient``, cwd = its folder), as ``nbconvert --execute
    --inplace`` does; raises on the first error."""
    import nbclient

    path = Path(path)
    nb = _read(path)
    defaults = {"TQDM_DISABLE": "1", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
    added = [key for key in defaults if key not in os.environ]
    os.environ.update({key: defaults[key] for key in added})  # the kernel inherits them
    try:
        client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                         resources={"metadata": {"path": str(path.parent)}},
                                         record_timing=False)
        client.execute()
    finally:
        for key in added:
            os.environ.pop(key, None)
    _nbformat().write(nb, str(path))


def release(names: Iterable[str] | None = None, *, book_dir: str | os.PathLike | None = None,
            config_path: str | os.PathLike | None = None, check: bool = False,
            execute: bool = False, log=print) -> list[Path]:
    """Write (or, with ``check``, compare) the student notebook of every assignment.

    Parameters
    ----------
    names
        Assignment names (solution file stems); default: all.
    book_dir
        The book folder (default: found from the current directory).
    config_path
        ``_config.yml`` for the Colab badge (default: next to the book folder).
    check
        Write nothing; return the student notebooks that are missing or out of date, and the
        student notebooks that have no solution any more.
    execute
        Execute each solution notebook in place first (the source of the expected outputs).

    Returns
    -------
    list of Path
        The student notebooks written (or out of date, with ``check``).
    """
    book = find_book_dir(book_dir) if book_dir is None else Path(book_dir)
    config = Path(config_path) if config_path else book.parent / "_config.yml"
    assignments = discover(book)
    if names:
        wanted = list(names)
        known = {a.name for a in assignments}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise KeyError(f"unknown assignment(s) {unknown}; known: {sorted(known)}")
        assignments = [a for a in assignments if a.name in wanted]
    changed = []
    for a in assignments:
        if execute and not check:
            log(f"executing {a.solution}")
            execute_notebook(a.solution)
        nb = _read(a.solution)
        rel = a.student.relative_to(book.parent) if config.exists() else None
        url = colab_url(rel, config_path=config) if rel is not None else None
        student = make_student(nb, name=a.name, colab=url)
        text = _canonical(student)
        current = _canonical(_read(a.student)) if a.student.exists() else None
        if current == text:
            continue
        changed.append(a.student)
        if check:
            log(f"out of date: {a.student} (run: python -m coinfer.assignments release {a.name})")
        else:
            a.student.parent.mkdir(parents=True, exist_ok=True)
            a.student.write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
            log(f"released: {a.student}")
    if check and not names:
        solutions = {a.name for a in discover(book)}
        for orphan in sorted((book / STUDENT).glob("*.ipynb")):
            if orphan.stem not in solutions:
                changed.append(orphan)
                log(f"no solution notebook for {orphan}")
    return changed


# ============================================================================================
# Grading: graft the submission into the released notebook, run nbval, report per task
# ============================================================================================
def _keys(nb) -> dict[tuple[str, str, int], int]:
    """(task, role, k) -> cell index, for the solution and answer cells of ``nb``."""
    counts: dict[tuple[str, str], int] = {}
    out = {}
    for i, cell in enumerate(nb.cells):
        role, task = _role(cell), _task_of(cell)
        if role in ("solution", "answer") and task is not None:
            k = counts.get((task, role), 0)
            counts[(task, role)] = k + 1
            out[(task, role, k)] = i
    return out


@dataclass
class GraftInfo:
    """What :func:`graft` took from the submission, per (task, role, k) key."""

    submitted: dict = field(default_factory=dict)  # key -> "submitted" | "unchanged" | "missing"
    answers: dict = field(default_factory=dict)  # task -> answer text ("" when not answered)


def graft(released, submission):
    """The released notebook with the submission's solution and answer cells grafted in.

    A released solution/answer cell is matched with the submission's cell of the same task, role
    and rank (``metadata.coinfer``), else with the cell of the same cell id; cells the student
    added are ignored.  Returns ``(notebook, GraftInfo)``.
    """
    nb = copy.deepcopy(released)
    mine = _keys(submission)
    by_id = {c.get("id"): c for c in submission.cells if c.get("id")}
    info = GraftInfo()
    for key, index in _keys(released).items():
        cell = nb.cells[index]
        source = None
        if key in mine and submission.cells[mine[key]].cell_type == cell.cell_type:
            source = submission.cells[mine[key]].source
        elif cell.get("id") in by_id and by_id[cell.id].cell_type == cell.cell_type:
            source = by_id[cell.id].source
        if source is None:
            info.submitted[key] = "missing"
        else:
            info.submitted[key] = "unchanged" if source == cell.source else "submitted"
            cell.source = source
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        if key[1] == "answer":
            text = "" if source is None else _answer_text(released.cells[index].source, source)
            prefix = info.answers.get(key[0], "")
            info.answers[key[0]] = (prefix + "\n" + text).strip()
    return nb, info


def _answer_text(released: str, submitted: str) -> str:
    """What the student wrote in an answer cell: the text in place of ``*YOUR ANSWER HERE*``
    (or, when the cell was rearranged, every line that is not in the released cell)."""
    if ANSWER_STUB in released:
        before, after = released.split(ANSWER_STUB, 1)
        if (submitted.startswith(before) and submitted.endswith(after)
                and len(submitted) >= len(before) + len(after)):
            middle = submitted[len(before):len(submitted) - len(after)]
            return middle.replace(ANSWER_STUB, "").strip()
    given = set(released.splitlines())
    return "\n".join(ln for ln in submitted.splitlines()
                     if ln not in given and ln.strip() != ANSWER_STUB).strip()


class CellResult(NamedTuple):
    """What nbval saw in one code cell.

    Attributes
    ----------
    index
        The code cell's rank (nbval's ``Cell N``).
    outcome
        ``passed``, ``failed``, ``skipped`` (``nbval-skip``) or ``not run`` (after a timeout).
    stdout
        What the cell printed when it ran.
    errors
        ``"Name: message"`` of each exception the cell raised.
    report
        The tail of nbval's failure report (empty unless failed).
    """

    index: int
    outcome: str
    stdout: str = ""
    errors: tuple[str, ...] = ()
    report: str = ""

    def summary(self) -> str:
        """One line saying why the cell failed."""
        if self.errors:
            return self.errors[-1]
        text = _ANSI.sub("", self.report)
        for line in text.splitlines():
            if "Timeout" in line:
                return line.strip()
        if self.outcome == "not run":
            return "not run (an earlier cell timed out)"
        lines = [ln.strip() for ln in self.stdout.strip().splitlines() if ln.strip()]
        if lines:
            return " | ".join(lines)
        return "the cell's output differs from the expected output"


def run_nbval(notebook: str | os.PathLike, *, timeout: float = 300,
              sanitize: str | os.PathLike | None = None,
              python: str | None = None) -> dict[int, CellResult]:
    """Run ``pytest --nbval`` on ``notebook`` in a subprocess; one :class:`CellResult` per code
    cell, keyed by the code cell's rank (nbval's ``Cell N``).

    The kernel runs in the current environment (``--nbval-current-env``) with
    ``TQDM_DISABLE=1`` and ``MPLBACKEND=Agg``, in the notebook's folder; ``timeout`` bounds each
    cell.  The plugin :mod:`coinfer.assignments.nbval_capture` records nbval's view of each cell.
    """
    import json

    from .nbval_capture import RECORD_ENV

    notebook = Path(notebook).resolve()
    with tempfile.TemporaryDirectory(prefix="coinfer-nbval-") as tmp:
        tmp = Path(tmp)
        (tmp / "pytest.ini").write_text("[pytest]\n")
        if sanitize is None:
            sanitize = tmp / "sanitize.cfg"
            Path(sanitize).write_text(SANITIZE)
        record = tmp / "cells.json"
        cmd = [python or sys.executable, "-m", "pytest", str(notebook), "--nbval",
               "--nbval-current-env", f"--nbval-cell-timeout={timeout}",
               f"--nbval-sanitize-with={sanitize}", "-c", str(tmp / "pytest.ini"),
               "--rootdir", str(notebook.parent), "-p", "no:cacheprovider",
               "-p", "coinfer.assignments.nbval_capture", "--color=no", "-q"]
        env = dict(os.environ, TQDM_DISABLE="1", MPLBACKEND="Agg", PYTHONHASHSEED="0")
        env[RECORD_ENV] = str(record)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              cwd=str(notebook.parent))
        if not record.exists():
            raise RuntimeError(f"nbval did not run on {notebook}:\n{proc.stdout[-2000:]}"
                               f"\n{proc.stderr[-2000:]}")
        rows = json.loads(record.read_text())
    return {r["cell"]: CellResult(r["cell"], r["outcome"], r["stdout"], tuple(r["errors"]),
                                  r["report"]) for r in rows}


class TaskVerdict(NamedTuple):
    """The verdict on one task: ``passed``, ``failed`` or ``not attempted``."""

    task: Task
    status: str
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class GradeReport:
    """The grading of one submission."""

    submission: Path
    assignment: str | None
    verdicts: list[TaskVerdict] = field(default_factory=list)
    answers: dict = field(default_factory=dict)
    other: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def score(self) -> tuple[int, int]:
        return sum(v.passed for v in self.verdicts), len(self.verdicts)

    @property
    def ok(self) -> bool:
        return self.error is None and all(v.passed for v in self.verdicts) and not self.other

    def format(self) -> str:
        """A plain-text report."""
        head = f"{self.submission} — assignment {self.assignment or '?'}"
        if self.error:
            return f"{head}\n  could not be graded: {self.error}"
        lines = [head]
        width = max((len(v.task.title) for v in self.verdicts), default=10)
        for v in self.verdicts:
            label = f"  Task {v.task.id:<5} {v.task.title:<{width}}  {v.status.upper()}"
            lines.append(label + (f"  {v.detail}" if v.detail else ""))
        for task, text in self.answers.items():
            words = len(text.split())
            state = f"{words} words (graded by the instructor)" if words else "not answered"
            lines.append(f"  Answer {task}: {state}")
        lines += [f"  other problem: {o}" for o in self.other]
        passed, total = self.score
        lines.append(f"  score: {passed}/{total} tasks passed")
        return "\n".join(lines)


def _identify(submission_nb, path: Path, assignments: dict[str, Assignment],
              name: str | None) -> Assignment:
    if name:
        if name not in assignments:
            raise KeyError(f"unknown assignment {name!r}; known: {sorted(assignments)}")
        return assignments[name]
    meta_name = submission_nb.metadata.get("coinfer", {}).get("assignment")
    if meta_name in assignments:
        return assignments[meta_name]
    hits = [a for n, a in assignments.items() if n in path.stem]
    if len(hits) == 1:
        return hits[0]
    raise KeyError(f"cannot tell which assignment {path.name} is (no metadata.coinfer.assignment"
                   " and no assignment name in the file name); pass --assignment NAME")


def grade_notebook(path: str | os.PathLike, *, assignment: str | None = None,
                   book_dir: str | os.PathLike | None = None, timeout: float = 300,
                   keep: str | os.PathLike | None = None) -> GradeReport:
    """Grade one submitted notebook: graft, run nbval, and give a verdict per task.

    A task passes when all its cells ran and its check cell printed the expected output.  A
    failed task whose solution cells were left as released is reported as ``not attempted``;
    the detail of a failed task is the student's check output (or the exception raised), and
    names the earlier tasks it depends on that failed too.
    """
    path = Path(path)
    book = find_book_dir(book_dir) if book_dir is None else Path(book_dir)
    report = GradeReport(path, assignment)
    try:
        submission = _read(path)
        found = {a.name: a for a in discover(book)}
        a = _identify(submission, path, found, assignment)
        report.assignment = a.name
        if not a.student.exists():
            raise FileNotFoundError(f"{a.student} is missing: run `release` first")
        released = _read(a.student)
    except Exception as err:  # noqa: BLE001 - reported per submission
        report.error = f"{type(err).__name__}: {err}"
        return report
    nb, info = graft(released, submission)
    report.answers = {t: info.answers[t] for t in sorted(info.answers)}
    with tempfile.TemporaryDirectory(prefix="coinfer-grade-") as tmp:
        target = Path(tmp) / f"{a.name}.ipynb"
        _nbformat().write(nb, str(target))
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(target, Path(keep) / f"{path.stem}.graded.ipynb")
        try:
            results = run_nbval(target, timeout=timeout)
        except Exception as err:  # noqa: BLE001
            report.error = f"{type(err).__name__}: {err}"
            return report
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    failed_cells: dict[str | None, list[str]] = {}
    for rank, cell in enumerate(code_cells):
        res = results.get(rank, CellResult(rank, "not run"))
        skippable = "nbval-skip" in cell.metadata.get("tags", [])
        if res.outcome == "passed" or (res.outcome == "skipped" and skippable):
            continue
        task = _task_of(cell)
        if _role(cell) == "check" and res.outcome == "failed" and not res.errors:
            message = res.summary()
        else:
            message = f"{_role(cell) or 'code'} cell {rank}: {res.summary()}"
        failed_cells.setdefault(task, []).append(message)
    status: dict[str, str] = {}
    for t in a.tasks:
        problems = failed_cells.get(t.id, [])
        keys = [k for k in info.submitted if k[0] == t.id and k[1] == "solution"]
        untouched = keys and all(info.submitted[k] in ("unchanged", "missing") for k in keys)
        if not problems:
            status[t.id] = "passed"
            report.verdicts.append(TaskVerdict(t, "passed"))
            continue
        status[t.id] = "not attempted" if untouched else "failed"
        detail = problems[0]
        if any(info.submitted[k] == "missing" for k in keys):
            detail = "the solution cell is missing from the submission; " + detail
        broken = [d for d in t.depends if status.get(d) != "passed"]
        if broken and status[t.id] == "failed":
            detail += f" (builds on Task {', '.join(broken)}, which did not pass)"
        report.verdicts.append(TaskVerdict(t, status[t.id], detail))
    report.other = [f"shared cell: {m}" for m in failed_cells.get(None, [])]
    return report


def _submissions(paths: Sequence[str | os.PathLike]) -> list[Path]:
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in q.parts)
        else:
            out.append(p)
    return out


def grade(paths: Sequence[str | os.PathLike], *, assignment: str | None = None,
          book_dir: str | os.PathLike | None = None, timeout: float = 300,
          keep: str | os.PathLike | None = None, csv_path: str | os.PathLike | None = None,
          log=print) -> list[GradeReport]:
    """Grade every notebook in ``paths`` (files, or folders searched recursively)."""
    reports = []
    submissions = _submissions(paths)
    if not submissions:
        raise FileNotFoundError(f"no notebooks found in {list(map(str, paths))}")
    for path in submissions:
        report = grade_notebook(path, assignment=assignment, book_dir=book_dir,
                                timeout=timeout, keep=keep)
        log(report.format())
        reports.append(report)
    if len(reports) > 1:
        log("")
        log(f"{'submission':<40} {'assignment':<18} score")
        for r in reports:
            score = "error" if r.error else "{}/{}".format(*r.score)
            log(f"{str(r.submission):<40} {r.assignment or '?':<18} {score}")
    if csv_path:
        _write_csv(reports, Path(csv_path))
    return reports


def _write_csv(reports: Sequence[GradeReport], path: Path) -> None:
    tasks: list[str] = []
    for r in reports:
        for v in r.verdicts:
            if f"Task {v.task.id}" not in tasks:
                tasks.append(f"Task {v.task.id}")
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["submission", "assignment", "passed", "total", *tasks, "error"])
        for r in reports:
            by = {f"Task {v.task.id}": v.status for v in r.verdicts}
            passed, total = r.score
            writer.writerow([str(r.submission), r.assignment or "", passed, total,
                             *[by.get(t, "") for t in tasks], r.error or ""])


# ============================================================================================
# Command line
# ============================================================================================
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m coinfer.assignments",
        description="Release the course's assignments and grade submissions with nbval.")
    parser.add_argument("--book", default=None,
                        help="the book folder (default: found from the current directory)")
    sub = parser.add_subparsers(dest="command", required=True)
    p_rel = sub.add_parser("release", help="solution notebooks -> student notebooks")
    p_rel.add_argument("names", nargs="*", help="assignments (default: all)")
    p_rel.add_argument("--check", action="store_true",
                       help="write nothing; exit 1 if a student notebook is out of date")
    p_rel.add_argument("--execute", action="store_true",
                       help="execute the solution notebooks in place first")
    p_grade = sub.add_parser("grade", help="grade submitted notebooks with nbval")
    p_grade.add_argument("paths", nargs="+", help="submitted notebooks or folders of them")
    p_grade.add_argument("--assignment", default=None,
                         help="the assignment (default: from the notebook's metadata)")
    p_grade.add_argument("--timeout", type=float, default=300, help="seconds per cell")
    p_grade.add_argument("--csv", default=None, help="write a grade book (one row each)")
    p_grade.add_argument("--keep", default=None,
                         help="folder to keep the grafted notebooks in (for inspection)")
    sub.add_parser("list", help="list the assignments and their tasks")
    args = parser.parse_args(argv)
    try:
        book = find_book_dir(args.book) if args.book is None else Path(args.book)
        if args.command == "list":
            for a in discover(book):
                print(f"{a.name}: {a.title}")
                for t in a.tasks:
                    dep = f" (uses {', '.join(t.depends)})" if t.depends else ""
                    print(f"  Task {t.id}  {t.title}{dep}")
            return 0
        if args.command == "release":
            changed = release(args.names or None, book_dir=book, check=args.check,
                              execute=args.execute)
            if args.check:
                if not changed:
                    print("student notebooks are up to date")
                return 1 if changed else 0
            if not changed:
                print("nothing to release: student notebooks are up to date")
            return 0
        reports = grade(args.paths, assignment=args.assignment, book_dir=book,
                        timeout=args.timeout, keep=args.keep, csv_path=args.csv)
    except (ReleaseError, KeyError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if any(r.error for r in reports):
        return 2
    return 0 if all(r.ok for r in reports) else 1

