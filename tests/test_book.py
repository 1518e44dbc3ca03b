"""The book's structure: set-up cells, TOC, chapter anatomy, and the environment files agreeing."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from coinfer.book import SETUP_TAGS, colab_setup_source, read_repository, sync_setup_cells

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("0*.ipynb"))


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _text(path):
    return "\n".join("".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown")


def test_there_are_four_chapters():
    # chapters are NN_name; a section page of chapter NN is NNx_name (e.g. 03b_dp_toolbox)
    assert sorted({p.stem[:2] for p in CHAPTERS}) == ["01", "02", "03", "04"]
    main = [p.stem for p in CHAPTERS if re.fullmatch(r"\d\d_\w+", p.stem)]
    assert [s[:2] for s in main] == ["01", "02", "03", "04"]
    sections = [p.stem for p in CHAPTERS if p.stem not in main]
    assert all(re.fullmatch(r"\d\d[a-z]_\w+", s) for s in sections), sections


def test_setup_cells_are_in_sync_with_config():
    assert sync_setup_cells(ROOT / "book", ROOT / "_config.yml", check=True) == []


def test_setup_cell_installs_only_in_colab():
    url, branch = read_repository(ROOT / "_config.yml")
    source = colab_setup_source(url, branch)
    assert '"google.colab" in sys.modules' in source and f"git+{url}@{branch}" in source
    assert "torch" not in source.split("%pip")[1]  # never reinstall Colab's torch


def test_sync_inserts_and_updates(tmp_path):
    import nbformat

    (tmp_path / "_config.yml").write_text("repository:\n  url: https://example.org/x/y\n  branch: dev\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    nbformat.write(nb, tmp_path / "a.ipynb")
    assert sync_setup_cells(tmp_path, tmp_path / "_config.yml") == [tmp_path / "a.ipynb"]
    first = nbformat.read(tmp_path / "a.ipynb", as_version=4).cells[0]
    assert "git+https://example.org/x/y@dev" in first.source and first.metadata.tags == SETUP_TAGS
    assert sync_setup_cells(tmp_path, tmp_path / "_config.yml", check=True) == []


def test_config_has_colab_and_repository():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["launch_buttons"]["colab_url"].startswith("https://colab.research.google.com")
    assert config["repository"]["branch"] == "main"
    assert config["only_build_toc_files"] is True
    for ext in ("sphinx_proof", "sphinx_exercise"):
        assert ext in config["sphinx"]["extra_extensions"]
    assert (ROOT / config["bibtex_bibfiles"][0]).exists()


def _toc_files(node):
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        for value in node.values():
            yield from _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            yield from _toc_files(item)


def test_toc_files_exist():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"], *_toc_files(toc)]
    for f in files:
        assert any((ROOT / f).with_suffix(s).exists() for s in (".md", ".ipynb")), f
    for chapter in CHAPTERS:
        assert f"book/{chapter.stem}" in files


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_anatomy(chapter):
    text = _text(chapter)
    assert re.search(r"learning objectives", text, re.I), "chapters open with learning objectives"
    assert re.search(r"^#+ Summary", text, re.M | re.I), "chapters end with a summary"
    assert re.search(r"^#+ Exercises", text, re.M | re.I) and "```{exercise}" in text
    assert "```{solution}" in text


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_executed_without_errors(chapter):
    code = [c for c in _cells(chapter) if c["cell_type"] == "code"]
    assert code and "colab-setup" in code[0]["metadata"].get("tags", [])
    executed = [c for c in code[1:] if c.get("execution_count")]
    assert len(executed) == len(code) - 1, "commit chapters with their outputs (nbval compares them)"
    for cell in code:
        assert not any(o.get("output_type") == "error" for o in cell.get("outputs", []))


def test_theorems_are_labelled():
    for chapter in CHAPTERS:
        for block in re.findall(r"```\{prf:theorem\}[^\n]*\n(.*?)```", _text(chapter), re.S):
            assert ":label:" in block, f"unlabelled theorem in {chapter.name}"


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_runtime_dependencies_have_lower_bounds_only():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert deps and all("==" not in d and "<" not in d for d in deps)


def test_environment_yml_lists_every_runtime_dependency():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    names = set()
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            names.add(_requirement_name(item.replace("=", "==", 1) if "==" not in item else item))
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    missing = {_requirement_name(d) for d in deps} - names
    assert not missing, f"environment.yml lacks {missing}"


def test_execute_into_cache_fills_the_cache_myst_nb_reads(tmp_path):
    import nbformat
    from jupyter_cache import get_cache

    from coinfer.book import execute_into_cache

    paths = []
    for name, code in [("a", "print(6 * 7)"), ("b", "import os; print(os.path.basename(os.getcwd()))")]:
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = tmp_path / "nbs" / f"{name}.ipynb"
        path.parent.mkdir(exist_ok=True)
        nbformat.write(nb, path)
        paths.append(path)
    cache_path = tmp_path / "cache"
    seconds = execute_into_cache(paths, cache_path=cache_path, jobs=2, timeout=120)
    assert all(s is not None for s in seconds.values())
    cache = get_cache(str(cache_path))
    for path, expected in zip(paths, ["42", "nbs"]):  # executed in the notebook's own folder
        record = cache.match_cache_notebook(nbformat.read(path, as_version=4))
        outputs = cache.get_cache_bundle(record.pk).nb.cells[0].outputs
        assert outputs[0]["text"].strip() == expected
    # a second run finds both cached and executes nothing
    assert execute_into_cache(paths, cache_path=cache_path, jobs=2) == {str(p): None for p in paths}


def test_execute_into_cache_reports_failures_and_bad_jobs(tmp_path):
    import nbformat

    from coinfer.book import execute_into_cache

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('boom')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(RuntimeError, match="bad.ipynb"):
        execute_into_cache([path], cache_path=tmp_path / "cache", jobs=1, timeout=120)
    with pytest.raises(ValueError, match="jobs"):
        execute_into_cache([path], cache_path=tmp_path / "cache", jobs=0)
