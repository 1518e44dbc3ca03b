"""Grading: graft a submission into the released notebook, run nbval, report per task.

:func:`graft` takes the student's solution and answer cells into the released notebook,
:func:`run_nbval` runs ``pytest --nbval`` on it in a subprocess, :func:`grade_notebook` turns
nbval's per-cell results into a :class:`TaskVerdict` per task, and :func:`grade` grades many
submissions (and writes a grade book as CSV).
"""

from __future__ import annotations

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
from typing import NamedTuple, Sequence

from .catalogue import (ANSWER_STUB, Assignment, Task, _nbformat, _read, _role, _task_of,
                        discover, find_book_dir)

__all__ = [
    "graft",
    "CellResult",
    "TaskVerdict",
    "GradeReport",
    "run_nbval",
    "grade_notebook",
    "grade",
]


#: Sanitisation used when grading (the same patterns as the repository's tests/nbval_sanitize.cfg).
SANITIZE = (
    "[memory addresses]\nregex: 0x[0-9a-fA-F]+\nreplace: 0xADDRESS\n\n"
    "[matplotlib figure reprs]\nregex: <Figure size \\d+x\\d+ with \\d+ Axes>\nreplace: <Figure>\n"
)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


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
