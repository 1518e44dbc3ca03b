"""Release and grading of the teaching assignments (``coinfer.assignments``).

nbval over the *solution* notebooks runs in ``make test`` (``NOTEBOOKS`` in the Makefile); here the
machinery is tested: the committed student notebooks are what ``release`` makes of their sources,
and grading with nbval passes exactly the solved tasks — a fresh release fails every task, a
partial solution fails exactly the unsolved tasks, and a deliberately wrong answer fails the task
it belongs to.  Submissions are graded once per module (one ``grade`` call on a folder).

Assignments 2 and 3 attack the shared victim and read GTSRB: their grading tests use the user's
cache (where Chapter 1 keeps the victim; with a cold cache the first run trains it, as the
chapters do) and are skipped when GTSRB is not available.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import re
import shutil
from pathlib import Path
from unittest import mock

import nbformat
import pytest

from coinfer import assignments as A
from coinfer.book import SETUP_TAGS, colab_setup_source, read_repository

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NAMES = ["a1_coinference", "a2_spears", "a3_shields", "a4_incentive"]
#: The cache the chapters use, captured before the autouse fixture isolates unit tests from it.
USER_CACHE = os.environ.get("COINFER_CACHE")


def _read(path):
    return nbformat.read(str(path), as_version=4)


def _solution(name):
    return _read(BOOK / "assignments" / "solutions" / f"{name}.ipynb")


def _student(name):
    return _read(BOOK / "assignments" / "student" / f"{name}.ipynb")


def _cells(nb, role, task=None):
    return [c for c in nb.cells if A._role(c) == role and (task is None or A._task_of(c) == task)]


def make_submission(name, path, *, solved=(), edit=None):
    """A submission of assignment ``name``: the released notebook with the solution of the tasks
    in ``solved`` filled in (``edit[task](source)`` may alter a task's solution source)."""
    edit = edit or {}
    student, solution = _student(name), _solution(name)
    sources = {key: solution.cells[i].source for key, i in A._keys(solution).items()}
    for key, i in A._keys(student).items():
        task, role, _ = key
        if task in solved:
            source = sources[key]
            if role == "solution" and task in edit:
                changed = edit[task](source)
                assert changed != source, "the edit must change the solution"
                source = changed
            student.cells[i].source = source
    nbformat.write(student, str(path))
    return path


def _verdicts(report):
    return {v.task.id: v.status for v in report.verdicts}


# --------------------------------------------------------------------------------------------
# Release
# --------------------------------------------------------------------------------------------
def test_four_assignments_with_three_to_five_tasks():
    found = A.discover(BOOK)
    assert [a.name for a in found] == NAMES
    for a in found:
        assert 3 <= len(a.tasks) <= 5
        assert a.student.exists()
        assert A.validate_solution(_read(a.solution)) == []


def test_committed_student_notebooks_are_up_to_date():
    assert A.release(book_dir=BOOK, check=True, log=lambda *_: None) == []


@pytest.mark.parametrize("name", NAMES)
def test_student_notebook_hides_the_solutions(name):
    solution, student = _solution(name), _student(name)
    text = "\n".join(c.source for c in student.cells)
    assert A.SOLUTION_BEGIN not in text and A.ANSWER_BEGIN not in text
    shared = "\n".join(c.source for c in solution.cells if A._role(c) != "solution")
    for cell in _cells(solution, "solution"):
        body = cell.source.split(A.SOLUTION_BEGIN)[1].split(A.SOLUTION_END)[0]
        hidden = [ln.strip() for ln in body.splitlines()
                  if len(ln.strip()) > 25 and ln.strip() not in shared]
        assert hidden and not any(ln in text for ln in hidden)
    stubs = _cells(student, "solution")
    assert len(stubs) == len(_cells(solution, "solution"))
    for cell in stubs:
        assert "# YOUR CODE HERE" in cell.source and "raise NotImplementedError()" in cell.source
        assert cell.outputs == [] and cell.execution_count is None
        compile(cell.source, name, "exec")  # the stub is valid Python
    for cell in _cells(student, "answer"):
        assert A.ANSWER_STUB in cell.source and "Model answer" not in cell.source


@pytest.mark.parametrize("name", NAMES)
def test_check_cells_keep_the_expected_outputs(name):
    solution, student = _solution(name), _student(name)
    expected = {A._task_of(c): (c.source, c.outputs) for c in _cells(solution, "check")}
    released = {A._task_of(c): (c.source, c.outputs) for c in _cells(student, "check")}
    assert released == expected
    for task, (_, outputs) in released.items():
        (line,) = "".join(o.text for o in outputs).splitlines()
        assert re.fullmatch(rf"Task {re.escape(task)} \(.+\): passed (\d+)/\1 checks", line)
    for cell in student.cells:  # every other code cell is the student's to run
        if cell.cell_type == "code" and A._role(cell) != "check":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("name", NAMES)
def test_setup_cell_and_colab_badge(name):
    solution, student = _solution(name), _student(name)
    first = [c for c in student.cells if c.cell_type == "code"][0]
    original = [c for c in solution.cells if c.cell_type == "code"][0]
    assert first.source == original.source == colab_setup_source(
        *read_repository(ROOT / "_config.yml"))
    assert first.metadata["tags"] == original.metadata["tags"] == SETUP_TAGS
    url = A.colab_url(f"book/assignments/student/{name}.ipynb", config_path=ROOT / "_config.yml")
    assert url.startswith("https://colab.research.google.com/github/")
    assert f"]({url})" in student.cells[1].source
    assert "![" not in student.cells[1].source  # a text link: no image hot-linked from a third party
    assert "<!-- colab-link -->" in solution.cells[1].source


def test_strip_solution():
    source = ("def f(x):\n    \"\"\"Doc.\"\"\"\n    ### BEGIN SOLUTION\n    y = x + 1\n"
              "    return y\n    ### END SOLUTION\n\n### BEGIN SOLUTION\nz = 3\n### END SOLUTION")
    assert A.strip_solution(source) == (
        "def f(x):\n    \"\"\"Doc.\"\"\"\n    # YOUR CODE HERE\n    raise NotImplementedError()\n"
        "\n# YOUR CODE HERE\nraise NotImplementedError()")
    for bad in ("### BEGIN SOLUTION\nx = 1", "x = 1\n### END SOLUTION",
                "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"):
        with pytest.raises(A.ReleaseError):
            A.strip_solution(bad)


def test_release_refuses_broken_solutions():
    nb = _solution("a4_incentive")
    check = _cells(nb, "check", "4.2")[0]
    failing = copy.deepcopy(nb)
    _cells(failing, "check", "4.2")[0].outputs[0].text = (
        "Task 4.2 (best response): failed 1 of 6 checks\n  - lower bound: wrong\n")
    no_check = copy.deepcopy(nb)
    no_check.cells = [c for c in no_check.cells if c.get("id") != check.get("id")]
    stray = copy.deepcopy(nb)
    stray.cells[2].source += "\n### BEGIN SOLUTION\nx = 1\n### END SOLUTION"
    unexecuted = copy.deepcopy(nb)
    _cells(unexecuted, "check", "4.1")[0].execution_count = None
    for broken, message in [(failing, "fails its own check"), (no_check, "has no check cell"),
                            (stray, "markers outside"), (unexecuted, "not been executed")]:
        with pytest.raises(A.ReleaseError, match=message):
            A.make_student(broken, name="a4_incentive")


def test_release_writes_and_detects_stale_notebooks(tmp_path):
    book = tmp_path / "book"
    shutil.copytree(BOOK / "assignments", book / "assignments")
    shutil.copy(ROOT / "_config.yml", tmp_path / "_config.yml")
    quiet = dict(book_dir=book, log=lambda *_: None)
    assert A.release(check=True, **quiet) == []
    solution_path = book / "assignments" / "solutions" / "a4_incentive.ipynb"
    nb = _read(solution_path)
    nb.cells[3].source += "\n\nA new hint."
    nbformat.write(nb, str(solution_path))
    student_path = book / "assignments" / "student" / "a4_incentive.ipynb"
    assert A.release(check=True, **quiet) == [student_path]
    orphan = book / "assignments" / "student" / "a9_old.ipynb"
    shutil.copy(student_path, orphan)
    assert A.release(check=True, **quiet) == [student_path, orphan]
    assert A.release(["a4_incentive"], **quiet) == [student_path]
    assert "A new hint." in _read(student_path).cells[3].source
    assert A.release(["a4_incentive"], check=True, **quiet) == []
    with mock.patch("sys.stdout"):
        assert A.main(["--book", str(book), "release", "--check"]) == 1  # the orphan
    orphan.unlink()
    with mock.patch("sys.stdout"):
        assert A.main(["--book", str(book), "release", "--check"]) == 0


def test_graft_takes_only_the_students_cells():
    released = _student("a1_coinference")
    submission = copy.deepcopy(released)
    target = _cells(submission, "solution", "1.3")[0]
    target.source = "def latency(cost, link):\n    return 0.0"
    _cells(submission, "check", "1.3")[0].source = "print('Task 1.3 (end-to-end latency): passed')"
    submission.cells.insert(3, nbformat.v4.new_code_cell("scratch = 1"))
    answer = _cells(submission, "answer", "1.4")[0]
    answer.source = answer.source.replace(A.ANSWER_STUB, "Only the extremes win.")
    # an editor that dropped the metadata: the cell id still matches
    moved = _cells(submission, "solution", "1.1")[0]
    moved.metadata = {}
    moved.source = "def split_model(model, k):\n    return None"
    grafted, info = A.graft(released, submission)
    assert len(grafted.cells) == len(released.cells)
    assert _cells(grafted, "solution", "1.3")[0].source == target.source
    assert _cells(grafted, "solution", "1.1")[0].source == moved.source
    assert _cells(grafted, "check", "1.3")[0].source == _cells(released, "check", "1.3")[0].source
    assert "scratch = 1" not in json.dumps(grafted.cells)
    assert info.submitted[("1.3", "solution", 0)] == "submitted"
    assert info.submitted[("1.2", "solution", 0)] == "unchanged"
    assert info.answers == {"1.4": "Only the extremes win."}
    submission.cells = [c for c in submission.cells if c is not moved]
    _, info = A.graft(released, submission)
    assert info.submitted[("1.1", "solution", 0)] == "missing"


def test_grade_reports_unreadable_submissions(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text("not a notebook")
    anonymous = tmp_path / "anonymous.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), str(anonymous))
    for path, message in [(bad, "bad.ipynb"), (anonymous, "pass --assignment")]:
        report = A.grade_notebook(path, book_dir=BOOK)
        assert report.error and not report.ok
        if message != "bad.ipynb":
            assert message in report.error
    with mock.patch("sys.stdout"):
        assert A.main(["--book", str(BOOK), "grade", str(bad)]) == 2


# --------------------------------------------------------------------------------------------
# Grading with nbval (graded once per module)
# --------------------------------------------------------------------------------------------
def _no_edge_only_image(source):  # Task 1.2: the raw image scaled by bytes_per_value
    return source.replace("return int(np.prod(RAW_IMAGE_SHAPE))",
                          "return int(np.prod(RAW_IMAGE_SHAPE)) * bytes_per_value")


def _ignore_bounds(source):  # Task 4.2: Eq. (15) without the box
    return source.replace("np.clip(unconstrained, market.eps_min, market.eps_max)",
                          "unconstrained")


def _peak_255(source):  # Task 2.1: the peak of uint8 images for images in [0, 1]
    return source.replace("np.log10(1.0 / mse)", "np.log10(255.0 ** 2 / mse)")


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submissions")
    fresh = folder / "fresh_a4_incentive.ipynb"
    shutil.copy(BOOK / "assignments" / "student" / "a4_incentive.ipynb", fresh)
    make_submission("a1_coinference", folder / "partial.ipynb", solved=("1.1", "1.3"))
    make_submission("a1_coinference", folder / "wrong_bytes.ipynb",
                    solved=("1.1", "1.2", "1.3", "1.4"), edit={"1.2": _no_edge_only_image})
    make_submission("a4_incentive", folder / "unbounded.ipynb",
                    solved=("4.1", "4.2", "4.3", "4.4"), edit={"4.2": _ignore_bounds})
    gradebook = folder.parent / "grades.csv"
    lines = []
    reports = A.grade([folder], book_dir=BOOK, csv_path=gradebook, log=lines.append)
    return {r.submission.name: r for r in reports}, gradebook, "\n".join(lines)


def test_fresh_release_fails_every_task(graded):
    report = graded[0]["fresh_a4_incentive.ipynb"]
    assert report.assignment == "a4_incentive" and report.error is None
    assert set(_verdicts(report).values()) == {"not attempted"}
    for v in report.verdicts:
        assert "not implemented yet" in v.detail
    assert report.answers == {"4.4": ""} and report.score == (0, 4)


def test_partial_solution_fails_exactly_the_unsolved_tasks(graded):
    report = graded[0]["partial.ipynb"]
    assert _verdicts(report) == {"1.1": "passed", "1.2": "not attempted", "1.3": "passed",
                                 "1.4": "not attempted"}
    assert not report.ok and report.other == []


def test_wrong_answer_fails_its_task(graded):
    report = graded[0]["wrong_bytes.ipynb"]
    assert _verdicts(report) == {"1.1": "passed", "1.2": "failed", "1.3": "passed",
                                 "1.4": "passed"}
    (detail,) = [v.detail for v in report.verdicts if v.task.id == "1.2"]
    assert detail.startswith("Task 1.2 (bytes on the air): failed 1 of 6 checks")
    assert "edge-only (k=0)" in detail
    assert "**Model answer.**" in report.answers["1.4"]


def test_best_response_ignoring_the_bounds_fails_task_4_2(graded):
    report = graded[0]["unbounded.ipynb"]
    assert _verdicts(report) == {"4.1": "passed", "4.2": "failed", "4.3": "passed",
                                 "4.4": "passed"}
    (detail,) = [v.detail for v in report.verdicts if v.task.id == "4.2"]
    assert "lower bound" in detail and "upper bound" in detail


def test_gradebook_and_summary(graded):
    reports, gradebook, log = graded
    with open(gradebook, newline="") as f:
        rows = {Path(r["submission"]).name: r for r in csv.DictReader(f)}
    assert set(rows) == set(reports)
    assert rows["partial.ipynb"]["Task 1.3"] == "passed"
    assert rows["unbounded.ipynb"]["Task 4.2"] == "failed"
    assert rows["unbounded.ipynb"]["passed"] == "3" and rows["unbounded.ipynb"]["total"] == "4"
    assert "score: 3/4 tasks passed" in log
    assert any(line.startswith("submission") and line.endswith("score")
               for line in log.splitlines())


@pytest.fixture(scope="module")
def gtsrb_graded(tmp_path_factory):
    """Grade submissions of assignments 2 and 3 with the user's cache (victim and GTSRB)."""
    from conftest import gtsrb_root

    root = gtsrb_root()
    if root is None:
        pytest.skip("the real GTSRB is not available (set COINFER_DATA)")
    folder = tmp_path_factory.mktemp("gtsrb-submissions")
    make_submission("a2_spears", folder / "peak.ipynb", solved=("2.1",),
                    edit={"2.1": _peak_255})
    make_submission("a3_shields", folder / "half.ipynb", solved=("3.1", "3.2"))
    env = {"COINFER_DATA": str(root)}
    if USER_CACHE:
        env["COINFER_CACHE"] = USER_CACHE
    with mock.patch.dict(os.environ, env):
        if not USER_CACHE:
            os.environ.pop("COINFER_CACHE", None)
        from coinfer.train import VICTIM, load_or_train

        load_or_train(VICTIM, progress=False)  # trains once on a cold cache, as Chapter 1 does
        reports = A.grade([folder], book_dir=BOOK, log=lambda *_: None)
    return {r.submission.name: r for r in reports}


def test_psnr_with_the_wrong_peak_fails_task_2_1(gtsrb_graded):
    report = gtsrb_graded["peak.ipynb"]
    assert _verdicts(report) == {"2.1": "failed", "2.2": "not attempted",
                                 "2.3": "not attempted", "2.4": "not attempted"}
    (detail,) = [v.detail for v in report.verdicts if v.task.id == "2.1"]
    assert "the peak of images in [0, 1] is 1, not 255" in detail


def test_shields_fail_exactly_the_unsolved_tasks(gtsrb_graded):
    report = gtsrb_graded["half.ipynb"]
    assert _verdicts(report) == {"3.1": "passed", "3.2": "passed", "3.3": "not attempted",
                                 "3.4": "not attempted"}
    assert report.other == []
