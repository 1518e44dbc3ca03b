"""``coinfer.book``: its command line (as the Makefile calls it) and the figure/glue helpers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from coinfer import book  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def recorded(monkeypatch):
    """Replace the executor by a recorder: the CLI's parsing is what is under test."""
    calls = []

    def fake(notebooks, *, cache_path, jobs, timeout):
        calls.append({"notebooks": list(notebooks), "cache_path": cache_path, "jobs": jobs,
                      "timeout": timeout})
        return {}

    monkeypatch.setattr(book, "execute_into_cache", fake)
    return calls


@pytest.mark.parametrize("argv", [
    # The Makefile's form: option first, then several notebooks (failed with parse_args).
    ["execute", "--jobs", "2", "a.ipynb", "b.ipynb", "c.ipynb"],
    ["execute", "a.ipynb", "b.ipynb", "c.ipynb", "--jobs", "2"],
    ["execute", "a.ipynb", "--jobs", "2", "b.ipynb", "c.ipynb"],
    ["execute", "--jobs=2", "a.ipynb", "b.ipynb", "c.ipynb"],
])
def test_execute_accepts_options_anywhere(recorded, argv):
    assert book.main(argv) == 0
    assert recorded == [{"notebooks": ["a.ipynb", "b.ipynb", "c.ipynb"],
                         "cache_path": "_build/.jupyter_cache", "jobs": 2, "timeout": 1800}]


def test_execute_passes_cache_and_timeout(recorded):
    book.main(["execute", "--cache", "x/cache", "n.ipynb", "--timeout", "60", "--jobs", "1"])
    assert recorded == [{"notebooks": ["n.ipynb"], "cache_path": "x/cache", "jobs": 1,
                         "timeout": 60}]


def test_makefile_command_line_parses(recorded):
    """The exact arguments ``make book`` passes (read from the Makefile) reach the executor."""
    text = (ROOT / "Makefile").read_text()
    recipe = next(line for line in text.splitlines() if "-m coinfer.book execute" in line)
    assert "--jobs $(JOBS) --timeout $(CELL_TIMEOUT) $(BOOK_NOTEBOOKS)" in recipe
    timeout = int(text.split("CELL_TIMEOUT :=", 1)[1].split()[0])
    variable = text.split("BOOK_NOTEBOOKS :=", 1)[1].split("\n\n", 1)[0]
    notebooks = variable.replace("\\\n", " ").split()
    assert notebooks and all(n.endswith(".ipynb") for n in notebooks)
    book.main(["execute", "--jobs", "2", "--timeout", str(timeout), *notebooks])
    assert recorded[0]["notebooks"] == notebooks and recorded[0]["jobs"] == 2
    assert recorded[0]["timeout"] == timeout


def test_unknown_command_and_bad_jobs_fail(recorded, capsys):
    with pytest.raises(SystemExit) as info:
        book.main(["compile", "a.ipynb"])
    assert info.value.code == 2
    assert "invalid choice: 'compile'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        book.main(["execute", "--jobs", "two", "a.ipynb"])
    assert recorded == []


def test_bad_jobs_value_is_named():
    with pytest.raises(ValueError, match="jobs"):
        book.execute_into_cache([], cache_path="unused", jobs=0)


def test_cli_executes_into_the_cache(tmp_path):
    """End to end in a subprocess: two notebooks, two at a time, then both found in the cache."""
    import nbformat

    paths = []
    for name, value in [("one", 1), ("two", 2)]:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(f"print({value} + 40)")]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        path = tmp_path / f"{name}.ipynb"
        nbformat.write(nb, path)
        paths.append(str(path))
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "coinfer.book", "execute", "--jobs", "2", "--cache",
               str(cache), *paths]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("executed ") == 2
    from jupyter_cache import get_cache

    for path, expected in zip(paths, ["41", "42"]):
        record = get_cache(str(cache)).match_cache_notebook(nbformat.read(path, as_version=4))
        executed = get_cache(str(cache)).get_cache_bundle(record.pk).nb
        assert executed.cells[0].outputs[0]["text"].strip() == expected
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "executed " not in again.stdout


# ---------------------------------------------------------------------------------------------
# use_book_style, glue, glue_figure
# ---------------------------------------------------------------------------------------------
def test_use_book_style_sets_readable_defaults():
    with matplotlib.rc_context():
        book.use_book_style()
        rc = matplotlib.rcParams
        assert rc["figure.dpi"] == rc["savefig.dpi"] == book.FIGURE_DPI >= 120
        assert rc["image.cmap"] == "viridis"
        assert rc["figure.constrained_layout.use"] is True
        cycle = rc["axes.prop_cycle"].by_key()
        # Lines stay distinguishable without colour: each entry differs in style and marker.
        assert len(set(map(str, cycle["linestyle"]))) == len(cycle["linestyle"]) >= 4
        assert len(set(cycle["marker"])) == len(cycle["marker"]) == len(cycle["color"])


def _without_myst_nb(monkeypatch):
    """Make ``import myst_nb`` fail, as in a Colab runtime that installed only the library."""
    monkeypatch.setitem(sys.modules, "myst_nb", None)


def _record_display(monkeypatch):
    shown = []
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda value: shown.append(value))
    return shown


def test_glue_without_myst_nb_displays(monkeypatch):
    _without_myst_nb(monkeypatch)
    shown = _record_display(monkeypatch)
    book.glue("answer", 42)
    book.glue("hidden", 7, display=False)
    assert shown == [42]


def test_glue_with_myst_nb_delegates(monkeypatch):
    import myst_nb

    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True:
                        calls.append((name, value, display)))
    book.glue("eps", 0.5, display=False)
    book.glue("n", 3)
    assert calls == [("eps", 0.5, False), ("n", 3, True)]


@pytest.mark.parametrize("name", ["", None, 3])
def test_glue_rejects_bad_names(name):
    with pytest.raises(ValueError, match="name"):
        book.glue(name, 1.0)


def test_glue_figure_closes_and_hides_the_figure(monkeypatch):
    import myst_nb

    calls = []
    monkeypatch.setattr(myst_nb, "glue", lambda name, value, display=True:
                        calls.append((name, value, display)))
    fig, _ = plt.subplots()
    book.glue_figure("fig-test", fig)
    assert calls == [("fig-test", fig, False)]
    assert not plt.fignum_exists(fig.number)


def test_glue_figure_without_myst_nb_shows_and_closes(monkeypatch):
    _without_myst_nb(monkeypatch)
    shown = _record_display(monkeypatch)
    fig, _ = plt.subplots()
    book.glue_figure("fig-test", fig)
    assert shown == [fig]
    assert not plt.fignum_exists(fig.number)


def test_glue_figure_rejects_non_figures():
    with pytest.raises(TypeError, match="fig must be a matplotlib Figure, got ndarray"):
        import numpy as np

        book.glue_figure("fig-x", np.zeros((2, 2)))
    fig, _ = plt.subplots()
    with pytest.raises(ValueError, match="name"):
        book.glue_figure("", fig)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# The Sphinx extension (coinfer.book.setup)
# ---------------------------------------------------------------------------------------------
def test_drop_duplicate_scripts_keeps_first_of_identical_tags():
    from sphinx.builders.html._assets import _JavaScript

    thebe = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript("_static/a.js"), _JavaScript(None, body=thebe),
               _JavaScript("_static/b.js", priority=200), _JavaScript("", body=thebe),
               _JavaScript("_static/a.js"), _JavaScript(None, body="other"),
               _JavaScript("_static/a.js", **{"async": "async"})]
    context = {"script_files": scripts}
    book.drop_duplicate_scripts(None, "page", "page.html", context, None)
    assert context["script_files"] is scripts  # edited in place: Sphinx renders this list
    assert [(s.filename, s.attributes) for s in scripts] == [
        ("_static/a.js", {}), (None, {"body": thebe}), ("_static/b.js", {}),
        (None, {"body": "other"}), ("_static/a.js", {"async": "async"})]
    book.drop_duplicate_scripts(None, "page", "page.html", {}, None)  # pages without scripts


def test_setup_connects_the_handler_late():
    connected = []

    class App:
        def connect(self, event, handler, priority=500):
            connected.append((event, handler, priority))

    meta = book.setup(App())
    assert connected == [("html-page-context", book.drop_duplicate_scripts, 900)]
    assert meta["parallel_read_safe"] and meta["parallel_write_safe"]
