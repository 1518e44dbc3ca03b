"""Helpers for the book itself: the Colab set-up cell that opens every chapter.

The repository URL and branch are set in one place, ``_config.yml`` (``repository.url`` and
``repository.branch``).  ``python -m coinfer.book sync`` writes the set-up cell derived from them
into every notebook under ``book/``; ``python -m coinfer.book check`` (and a test) fails when a
notebook's cell is out of date.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["SETUP_TAGS", "read_repository", "colab_setup_source", "sync_setup_cells", "main"]

#: ``remove-cell`` hides the cell in the HTML book; ``nbval-skip`` keeps nbval from running it.
SETUP_TAGS = ["remove-cell", "nbval-skip", "colab-setup"]


def read_repository(config_path: str | Path = "_config.yml") -> tuple[str, str]:
    """``(url, branch)`` of the repository from the book's ``_config.yml``."""
    import yaml

    with open(config_path) as f:
        config = yaml.safe_load(f)
    repo = config.get("repository") or {}
    url, branch = repo.get("url"), repo.get("branch", "main")
    if not url:
        raise ValueError(f"{config_path} has no repository.url")
    return str(url).rstrip("/"), str(branch)


def colab_setup_source(url: str, branch: str) -> str:
    """Source of the first code cell of every chapter: installs ``coinfer`` in Colab only."""
    return (
        "# Google Colab set-up: install the course library from the repository (Colab's own\n"
        "# torch is kept). Elsewhere this cell does nothing: the library is already installed.\n"
        "import sys\n"
        "\n"
        "if \"google.colab\" in sys.modules:\n"
        f"    %pip install -q \"coinfer @ git+{url}@{branch}\"\n"
    )


def _notebooks(book_dir: Path) -> list[Path]:
    return sorted(p for p in book_dir.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def sync_setup_cells(
    book_dir: str | Path = "book", config_path: str | Path = "_config.yml", *, check: bool = False
) -> list[Path]:
    """Make the first code cell of each notebook the current set-up cell.

    Parameters
    ----------
    book_dir
        Folder searched recursively for ``*.ipynb``.
    config_path
        The book's ``_config.yml`` (source of the repository URL and branch).
    check
        Only report the notebooks that are out of date; write nothing.

    Returns
    -------
    list of Path
        The notebooks that were (or, with ``check``, would be) changed.
    """
    import nbformat

    source = colab_setup_source(*read_repository(config_path))
    changed = []
    for path in _notebooks(Path(book_dir)):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        first = code[0] if code else None
        is_setup = first is not None and "colab-setup" in first.metadata.get("tags", [])
        if is_setup and first.source == source and first.metadata.get("tags") == SETUP_TAGS:
            continue
        changed.append(path)
        if check:
            continue
        if is_setup:
            first.source = source
            first.metadata["tags"] = list(SETUP_TAGS)
        else:
            cell = nbformat.v4.new_code_cell(source, metadata={"tags": list(SETUP_TAGS)})
            nb.cells.insert(0, cell)
        nbformat.write(nb, path)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coinfer.book", description=__doc__)
    parser.add_argument("command", choices=["sync", "check"])
    parser.add_argument("--book", default="book")
    parser.add_argument("--config", default="_config.yml")
    args = parser.parse_args(argv)
    changed = sync_setup_cells(args.book, args.config, check=args.command == "check")
    for path in changed:
        print(("out of date: " if args.command == "check" else "updated: ") + str(path))
    return 1 if changed and args.command == "check" else 0


if __name__ == "__main__":
    sys.exit(main())
