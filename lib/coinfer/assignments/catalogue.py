"""The assignments' conventions and catalogue: the markers and cell roles of a solution notebook,
where the notebooks live, the :class:`Task` and :class:`Assignment` records, and
:func:`discover`, which lists the assignments of a book (see :mod:`coinfer.assignments`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

__all__ = [
    "SOLUTION_BEGIN",
    "SOLUTION_END",
    "ANSWER_BEGIN",
    "ANSWER_END",
    "CODE_STUB",
    "ANSWER_STUB",
    "Task",
    "Assignment",
    "find_book_dir",
    "discover",
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
