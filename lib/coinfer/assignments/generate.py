"""Release: the student notebook of a solution notebook.

:func:`validate_solution` lists what keeps a solution notebook from being released,
:func:`make_student` builds the student notebook (solutions stripped, check cells kept with their
expected outputs, the Colab badge added), and :func:`release` writes (or, with ``check``,
compares) the student notebooks of a book; :func:`execute_notebook` runs a solution notebook in
place first.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from .catalogue import (ANSWER_BEGIN, ANSWER_END, ANSWER_STUB, CODE_STUB, COLAB_MARKER, ROLES,
                        SOLUTION_BEGIN, SOLUTION_END, STUDENT, _is_setup, _nbformat, _read, _role,
                        _task_of, _tasks, discover, find_book_dir)

__all__ = [
    "ReleaseError",
    "strip_solution",
    "validate_solution",
    "make_student",
    "colab_url",
    "release",
    "execute_notebook",
]


_CHECK_LINE = re.compile(r"^Task (?P<task>\S+) \((?P<title>.*)\): (?P<verdict>.*)$")


class ReleaseError(ValueError):
    """A solution notebook breaks the conventions (the message lists every problem)."""


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
    # A text link, not Colab's hot-linked badge image: reading the book sends nothing to third
    # parties (the page's launch button opens Colab too).
    return f"**[Open this assignment in Google Colab]({url})**"


_KEEP_CELL_META = ("tags", "coinfer", "editable", "deletable", "slideshow")


def make_student(solution_nb, *, name: str, colab: str | None = None):
    """The student notebook of ``solution_nb`` (a new notebook; the input is not modified).

    * the Colab set-up cell is copied verbatim;
    * solution regions become ``# YOUR CODE HERE`` / ``raise NotImplementedError()``;
    * answer regions become ``*YOUR ANSWER HERE*``;
    * check cells keep their source, outputs and execution count (the expected outputs);
    * every other code cell loses its outputs and execution count;
    * ``<!-- colab-link -->`` becomes the "Open in Colab" link for ``colab`` (if given).

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
