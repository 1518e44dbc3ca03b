"""A chapter as a learner runs it in Google Colab: install cell first, Colab's torch kept.

The test imitates a fresh Colab runtime: a new virtual environment in which only torch,
torchvision, numpy, scipy, matplotlib, ipywidgets and ipykernel (with what they need) are
"preinstalled" -- they are the build environment's own copies, linked into a folder that a ``.pth``
file puts on the new environment's path, so nothing large is downloaded.  Then the chapter runs in a
kernel of that environment:

1. a first cell puts a stub ``google.colab`` module into ``sys.modules``, as Colab has one;
2. the chapter's set-up cell runs unchanged except for its install source: the repository URL
   (``coinfer @ git+<url>@<branch>``) becomes a snapshot of this checkout, and pip's ``-q`` is
   dropped so that pip's report is visible;
3. every other cell runs as written.

It fails when a cell fails, when the set-up cell installs nothing (it must install coinfer), or when
torch (or any other preinstalled package) is reinstalled or changed: pip's "Successfully installed"
list, and each preinstalled distribution's version and location before and after.

``COLAB_NOTEBOOK`` chooses the notebook (default: Chapter 4, which needs no GTSRB; it reads the
accuracy fit Chapter 3 caches, and computes it when the cache has none).  The chapter's caches and
data root are the user's (``COINFER_CACHE`` / ``COINFER_DATA`` as for the book), like a Colab user's
runtime that ran Chapter 3 before.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.user_cache]

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = os.environ.get("COLAB_NOTEBOOK", "book/04_incentive.ipynb")
#: What Colab's runtime has preinstalled, as far as the chapters are concerned.
PREINSTALLED = ["torch", "torchvision", "numpy", "scipy", "matplotlib", "ipywidgets", "ipykernel"]
#: Copied into the snapshot the set-up cell installs (what `pip install git+...` would see).
SNAPSHOT = ["pyproject.toml", "README.md", "LICENSE", "lib"]

STUB_CELL = textwrap.dedent("""\
    # Imitated Colab runtime: Colab's runtime has a google.colab module.
    import sys, types
    google = sys.modules.setdefault("google", types.ModuleType("google"))
    google.colab = sys.modules["google.colab"] = types.ModuleType("google.colab")
    """)


def _closure(names: list[str]) -> dict[str, metadata.Distribution]:
    """The distributions ``names`` need, transitively (extras excluded), from this environment."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional or platform-specific requirement that is not installed
        found[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def _preinstall(dists: dict[str, metadata.Distribution], folder: Path) -> None:
    """Link each distribution's top-level files (packages, modules, .dist-info) into ``folder``."""
    folder.mkdir()
    for dist in dists.values():
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        info = getattr(dist, "_path", None)  # the .dist-info folder itself
        if info is not None:
            tops.add(Path(info).name)
        for top in tops:
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            source, target = base / top, folder / top
            if source.exists() and not target.exists():
                target.symlink_to(source)


def _state(python: Path) -> dict:
    """Version and location of each preinstalled distribution, as the runtime's Python sees them."""
    code = textwrap.dedent(f"""\
        import importlib.metadata as md, json
        out = {{}}
        for name in {sorted(PREINSTALLED)!r}:
            d = md.distribution(name)
            out[name] = [d.version, str(d.locate_file(""))]
        import torch
        out["torch.__file__"] = torch.__file__
        print(json.dumps(out))
        """)
    result = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True,
                            timeout=300)
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def colab_runtime(tmp_path_factory) -> Path:
    """A new virtual environment with only Colab's preinstalled packages; returns its Python."""
    tmp = tmp_path_factory.mktemp("colab")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    _preinstall(_closure(PREINSTALLED), tmp / "preinstalled")
    (site / "colab_preinstalled.pth").write_text(str(tmp / "preinstalled") + "\n")
    return python


def _setup_cell(nb) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert "colab-setup" in cell.metadata.get("tags", []), "first code cell is no set-up"
            return i
    raise AssertionError("no code cell")


def test_chapter_runs_in_an_imitated_colab_runtime(colab_runtime, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    python = colab_runtime
    before = _state(python)
    # The runtime really is the reduced one: coinfer and the book tool chain are missing.
    missing = subprocess.run([str(python), "-c", "import coinfer"], capture_output=True)
    assert missing.returncode != 0
    assert subprocess.run([str(python), "-c", "import myst_nb"], capture_output=True).returncode

    snapshot = tmp_path / "checkout"
    snapshot.mkdir()
    for name in SNAPSHOT:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy2)(ROOT / name,
                                                                       snapshot / name)
    path = ROOT / NOTEBOOK
    nb = nbformat.read(path, as_version=4)
    index = _setup_cell(nb)
    setup = nb.cells[index].source
    install = re.compile(r'%pip install -q "coinfer @ git\+[^"@]+@[^"]+"')
    assert install.search(setup), f"unexpected set-up cell:\n{setup}"
    nb.cells[index].source = install.sub(f'%pip install "coinfer @ {snapshot.as_uri()}"', setup)
    nb.cells.insert(index, nbformat.v4.new_code_cell(STUB_CELL))

    kernels = tmp_path / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "imitated Colab", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    # The kernel talks over Unix sockets, not TCP ports: a kernel started while an nbval worker
    # starts its own can otherwise end up with a port the other just took, and the client waits
    # for a reply that never comes (seen twice in CI: the kernel idle, the test stuck).
    from jupyter_client.manager import KernelManager

    sockets = Path(tempfile.mkdtemp(prefix="colab-ipc-"))
    km = KernelManager(kernel_name="colab", transport="ipc", ip=str(sockets / "kernel"))
    client = NotebookClient(nb, km=km, timeout=1800, allow_errors=False,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()

    pip_output = "".join(out.get("text", "") for out in nb.cells[index + 1].outputs
                         if out.output_type == "stream")
    installed = re.search(r"Successfully installed (.*)", pip_output)
    assert installed, f"the set-up cell installed nothing:\n{pip_output}"
    names = {re.sub(r"-[^-]+$", "", item).lower().replace("_", "-")
             for item in installed.group(1).split()}
    assert "coinfer" in names
    assert not names & set(PREINSTALLED), f"pip replaced preinstalled packages:\n{pip_output}"
    after = _state(python)
    assert after == before, "a preinstalled package changed (version or location)"
    assert after["torch.__file__"].startswith(str(Path(before["torch"][1])))
