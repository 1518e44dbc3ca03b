"""Helpers for the book itself: the Colab set-up cell that opens every chapter, and parallel execution.

The repository URL and branch are set in one place, ``_config.yml`` (``repository.url`` and
``repository.branch``).  ``python -m coinfer.book sync`` writes the set-up cell derived from them
into every notebook under ``book/``; ``python -m coinfer.book check`` (and a test) fails when a
notebook's cell is out of date.

``python -m coinfer.book execute NOTEBOOK ... --jobs 2`` executes the notebooks that are not yet in
the book's execution cache (jupyter-cache, the one ``execute_notebooks: cache`` reads), several at a
time, so that ``jupyter-book build`` afterwards only renders.  Jupyter Book itself executes one
notebook after another, which leaves a second core idle.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from .config import check_positive_int

__all__ = ["SETUP_TAGS", "FIGURE_DPI", "read_repository", "colab_setup_source", "sync_setup_cells",
           "use_book_style", "glue", "glue_figure", "execute_into_cache", "drop_duplicate_scripts",
           "setup", "main"]

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


#: Resolution of every figure in the book (dots per inch): readable at print size.
FIGURE_DPI = 130


def use_book_style() -> None:
    """Set matplotlib's defaults for the book's figures; chapters call it once after their imports.

    - ``FIGURE_DPI`` dots per inch, so that the PNGs the book embeds are readable when printed;
    - ``viridis`` as the image colour map: its lightness rises monotonically, so it still reads in
      grey scale;
    - a colour cycle paired with line styles and markers, so that overlapping lines stay
      distinguishable without colour;
    - ``constrained_layout``, so that long tick labels (class names) are not cut off.
    """
    import matplotlib as mpl
    from cycler import cycler

    colours = mpl.colormaps["tab10"].colors
    mpl.rcParams.update({
        "figure.dpi": FIGURE_DPI,
        "savefig.dpi": FIGURE_DPI,
        "figure.constrained_layout.use": True,
        "image.cmap": "viridis",
        "font.size": 10,
        "axes.titlesize": 10,
        "axes.labelsize": 10,
        "legend.fontsize": 9,
        "axes.prop_cycle": cycler(color=colours[:6])
        + cycler(linestyle=["-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1))])
        + cycler(marker=["o", "s", "^", "D", "v", "P"]),
    })


def glue(name: str, value, display: bool = True) -> None:
    """Store ``value`` under ``name`` for the book's ``{glue}`` roles and directives.

    In the book build this is :func:`myst_nb.glue`.  Where myst-nb is not installed (a learner's
    Colab runtime installs the library without the book tool chain) there is no page to paste
    into, so the value is simply shown when ``display`` is true.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    try:
        from myst_nb import glue as myst_glue
    except ImportError:
        if display:
            from IPython.display import display as show

            show(value)
        return
    myst_glue(name, value, display=display)


def glue_figure(name: str, fig) -> None:
    """Glue a matplotlib figure under ``name`` for a ``{glue:figure}`` directive, and close it.

    The chapter places the figure with a numbered, captioned MyST figure in the next markdown
    cell::

        ```{glue:figure} fig-name
        :name: fig-name
        :alt: what the figure shows, for readers who cannot see it

        Caption.
        ```

    Closing the figure keeps the inline backend from showing it a second time, unnumbered.
    Without myst-nb (in Colab) the figure is shown in place instead.
    """
    import matplotlib.pyplot as plt

    if not hasattr(fig, "savefig"):
        raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
    try:
        import myst_nb  # noqa: F401
    except ImportError:
        glue(name, fig, display=True)
    else:
        glue(name, fig, display=False)
    plt.close(fig)


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


def _execute_one(path: str, timeout: int) -> tuple[str, str | None, float, str | None]:
    """Run one notebook in its own folder (as myst-nb's ``cache`` mode does); return it as JSON."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=str(Path(path).parent.resolve()), timeout=timeout,
                                 allow_errors=False, meta_override=True)
    if result.err is not None:
        return path, None, result.time, result.exc_string
    return path, nbformat.writes(nb), result.time, None


def execute_into_cache(
    notebooks: list[str | Path], *, cache_path: str | Path = "_build/.jupyter_cache", jobs: int = 2,
    timeout: int = 1800,
) -> dict[str, float | None]:
    """Execute the notebooks missing from the jupyter-cache at ``cache_path``, ``jobs`` at a time.

    The executed notebooks are stored exactly as myst-nb's ``execute_notebooks: cache`` stores
    them (same cache, same hash of code cells and kernel spec), so the book build that follows
    finds every notebook cached.  Results do not depend on ``jobs``: each chapter fixes its own
    torch thread counts, and the model caches are guarded by an inter-process lock
    (:func:`coinfer.config.file_lock`), so a notebook that needs a model another one is training
    waits for it instead of training it twice.

    Parameters
    ----------
    notebooks
        Notebook paths, started in the order given (put the longest first).
    cache_path
        The book's execution cache (``nb_execution_cache_path``; Jupyter Book's default).
    jobs
        Notebooks executed at the same time.
    timeout
        Seconds allowed per cell.

    Returns
    -------
    dict
        Seconds per executed notebook (``None`` for one that was already cached).

    Raises
    ------
    RuntimeError
        When a notebook fails; the others still run and are cached.
    """
    import nbformat
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    check_positive_int("jobs", jobs)
    cache = get_cache(str(cache_path))
    seconds: dict[str, float | None] = {}
    todo = []
    for path in map(str, notebooks):
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
            seconds[path] = None
        except KeyError:
            todo.append(path)
    failures = []
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(_execute_one, path, timeout) for path in todo]
        for future in as_completed(futures):
            path, text, took, error = future.result()
            seconds[path] = took
            if error is not None:
                failures.append(f"{path}:\n{error}")
                print(f"FAILED  {path} after {took:.0f} s", flush=True)
                continue
            # The parent alone writes the cache database (SQLite), so workers never contend for it.
            stage = cache.add_nb_to_project(path)
            cache.cache_notebook_bundle(
                CacheBundleIn(nbformat.reads(text, as_version=4), stage.uri,
                              data={"execution_seconds": took}),
                check_validity=False, overwrite=True)
            print(f"executed {path} in {took:.0f} s", flush=True)
    if failures:
        raise RuntimeError("notebook execution failed:\n" + "\n".join(failures))
    return seconds


def _script_key(script) -> tuple:
    """What makes two of Sphinx's ``_JavaScript`` entries the same tag (priority aside)."""
    if isinstance(script, str):
        return script, ()
    attributes = getattr(script, "attributes", None) or {}
    # An inline script's filename is None or "" depending on who added it.
    return script.filename or "", tuple(sorted((str(k), str(v)) for k, v in attributes.items()))


def drop_duplicate_scripts(app, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Sphinx ``html-page-context`` handler: keep the first of identical ``<script>`` entries.

    Jupyter Book 1.x sets ``sphinx-thebe`` up twice, so each page carried its inline configuration
    twice; the second copy re-declares ``const THEBE_JS_URL`` and the reader's browser logs an
    error on every page (``tests/test_browser.py`` requires none).  Two entries are identical when
    their source and all their attributes (an inline script's body included) are equal; the two
    copies differ only in their file name, ``None`` in one and ``""`` in the other.
    """
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple] = set()
    kept = []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            kept.append(script)
    scripts[:] = kept


def setup(app) -> dict:
    """Sphinx extension entry point (``_config.yml`` lists ``coinfer.book`` as an extension).

    Connects :func:`drop_duplicate_scripts` late (priority 900), after every other extension
    has added its scripts to the page.
    """
    app.connect("html-page-context", drop_duplicate_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m coinfer.book", description=__doc__)
    parser.add_argument("command", choices=["sync", "check", "execute"])
    parser.add_argument("notebooks", nargs="*", help="for execute: the notebooks, longest first")
    parser.add_argument("--book", default="book")
    parser.add_argument("--config", default="_config.yml")
    parser.add_argument("--cache", default="_build/.jupyter_cache")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=1800)
    # Intermixed: `execute --jobs 2 a.ipynb b.ipynb` (as the Makefile writes it) must work too.
    args = parser.parse_intermixed_args(argv)
    if args.command == "execute":
        start = time.perf_counter()
        execute_into_cache(args.notebooks, cache_path=args.cache, jobs=args.jobs,
                           timeout=args.timeout)
        print(f"notebooks ready in {time.perf_counter() - start:.0f} s "
              f"({args.jobs} at a time, {os.cpu_count()} cores)")
        return 0
    changed = sync_setup_cells(args.book, args.config, check=args.command == "check")
    for path in changed:
        print(("out of date: " if args.command == "check" else "updated: ") + str(path))
    return 1 if changed and args.command == "check" else 0


if __name__ == "__main__":
    sys.exit(main())
