"""A pytest plugin that records what nbval saw in every notebook cell (used by ``grade``).

``grade`` runs ``pytest --nbval -p coinfer.assignments.nbval_capture`` in a subprocess with the
environment variable ``COINFER_NBVAL_RECORD`` set to a file name; this plugin writes one JSON
record per code cell there: the outcome, the cell's new stdout, the errors it raised and the
tail of nbval's failure report.  Reading nbval's own outputs avoids parsing its diff text.
"""

from __future__ import annotations

import json
import os

import pytest

RECORD_ENV = "COINFER_NBVAL_RECORD"
_records: dict[int, dict] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    cell_num = getattr(item, "cell_num", None)
    if cell_num is None:
        return
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outputs = getattr(item, "test_outputs", None) or []
        stdout = "".join(o.get("text", "") for o in outputs
                         if o.get("output_type") == "stream" and o.get("name") == "stdout")
        errors = [f"{o.get('ename')}: {o.get('evalue')}".rstrip(": ") for o in outputs
                  if o.get("output_type") == "error"]
        if hasattr(report, "wasxfail"):
            status = "not run"
        elif report.skipped:
            status = "skipped"
        else:
            status = "passed" if report.passed else "failed"
        text = report.longreprtext if report.failed else ""
        _records[int(cell_num)] = {
            "cell": int(cell_num), "outcome": status, "stdout": stdout, "errors": errors,
            "report": text[-4000:],
        }


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get(RECORD_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump([_records[k] for k in sorted(_records)], f, indent=1)
