"""The layout of the coinfer.game subpackage: its re-exports cover the submodules' public API and
every name that the library, the tests, the benchmarks and the book's notebooks use."""

from __future__ import annotations

import importlib
import json
import pathlib
import re

import pytest

from coinfer import game

ROOT = pathlib.Path(__file__).resolve().parents[1]
SUBMODULES = ("market", "nash", "dynamics", "path", "stackelberg", "curves", "paper",
              "mechanisms", "experiments")


def _sources() -> dict[str, str]:
    """Code of the repository that uses coinfer.game (notebook cells joined)."""
    out = {}
    for pattern in ("lib/**/*.py", "tests/*.py", "benchmarks/*.py"):
        for path in ROOT.glob(pattern):
            if "game" not in path.parts:  # not the package itself
                out[str(path)] = path.read_text(encoding="utf-8")
    for path in ROOT.glob("book/**/*.ipynb"):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        out[str(path)] = "\n".join("".join(c["source"]) for c in cells
                                   if c["cell_type"] == "code")
    return out


def _used_names() -> set[str]:
    names: set[str] = set()
    for text in _sources().values():
        names.update(re.findall(r"\bgame\.([A-Za-z_]\w*)", text))
        for group in re.findall(r"from (?:coinfer|\.)\.?game import (\([^)]*\)|[^\n]*)", text):
            group = group.split("#")[0].strip("() \n")
            names.update(n.split(" as ")[0].strip() for n in group.split(",") if n.strip())
    return names


def test_all_is_explicit_unique_and_resolves():
    assert len(game.__all__) == len(set(game.__all__))
    for name in game.__all__:
        assert hasattr(game, name), name


@pytest.mark.parametrize("name", SUBMODULES)
def test_submodule_api_is_reexported(name):
    module = importlib.import_module(f"coinfer.game.{name}")
    assert module.__doc__
    for public in module.__all__:
        assert public in game.__all__, (name, public)
        assert getattr(game, public) is getattr(module, public)


def test_reexports_are_exactly_the_submodules_api():
    union = [n for m in SUBMODULES for n in importlib.import_module(f"coinfer.game.{m}").__all__]
    assert sorted(union) == sorted(game.__all__)


def test_every_name_used_in_the_repository_resolves():
    used = _used_names()
    assert {"nash_equilibrium", "Market", "_status"} <= used  # the scan finds something
    missing = sorted(n for n in used if not hasattr(game, n) and n not in ("py", "md", "json"))
    assert not missing, missing
