"""The command line, ``python -m coinfer.assignments`` or ``coinfer-assignments``: ``list``,
``release`` and ``grade`` (see :mod:`coinfer.assignments`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .catalogue import discover, find_book_dir
from .generate import ReleaseError, release
from .grading import grade

__all__ = ["main"]


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
