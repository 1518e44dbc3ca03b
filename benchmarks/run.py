"""Benchmarks of the course against its speed budgets (2-core CPU, no GPU).

Run with ``make bench`` (or ``python benchmarks/run.py [--only NAME ...]``).  Each measurement is
written to ``benchmarks/results/<name>.json`` and summarised in ``benchmarks/results/REPORT.md``.

Foundation measurements (issue budgets in brackets):

* ``gtsrb_load``   — GTSRB decode cold (empty cache) and warm (cached tensors) [warm ≪ 5 s]
* ``victim``       — training the shared victim from scratch: seconds and images/s [≤ 6 min]
* ``book``         — ``make book`` cold (execution cache cleared) and warm [cold ≤ 12 min]
* ``tests``        — ``make test`` [≤ 30 min]

Chapter benchmarks live beside this file as ``bench_<chapter>.py`` and are run too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PY = sys.executable


def _machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "processor": platform.processor() or platform.machine(),
    }


def _write(name: str, payload: dict) -> dict:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"name": name, "machine": _machine(), **payload}
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    return payload


def bench_gtsrb_load() -> dict:
    code = (
        "import time; from coinfer.data import load_gtsrb; t=time.perf_counter(); "
        "a=load_gtsrb('train', progress=False); b=load_gtsrb('test', progress=False); "
        "print(time.perf_counter()-t, len(a)+len(b))"
    )
    with tempfile.TemporaryDirectory() as tmp:
        env = os.environ | {"COINFER_CACHE": tmp}
        cold = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, check=True)
        warm = subprocess.run([PY, "-c", code], env=env, capture_output=True, text=True, check=True)
    cold_s, n = cold.stdout.split()
    warm_s, _ = warm.stdout.split()
    return _write("gtsrb_load", {"images": int(n), "cold_s": float(cold_s), "warm_s": float(warm_s),
                                 "budget": "warm well under 5 s"})


def bench_victim() -> dict:
    from coinfer.data import load_gtsrb
    from coinfer.train import VICTIM, evaluate, train_classifier

    train = load_gtsrb("train", progress=False)
    start = time.perf_counter()
    result = train_classifier(VICTIM, train_set=train, progress=False)
    seconds = time.perf_counter() - start
    n_train = round(len(train) * (1 - VICTIM.val_fraction))
    accuracy = evaluate(result.model, load_gtsrb("test", progress=False))
    return _write("victim", {
        "config": VICTIM.__dict__, "seconds": seconds,
        "images_per_s": VICTIM.epochs * n_train / seconds, "test_accuracy": accuracy,
        "budget": "≤ 360 s, test accuracy ≥ 0.95",
    })


def _timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_book() -> dict:
    shutil.rmtree(ROOT / "_build", ignore_errors=True)
    cold = _timed(["make", "book"])
    warm = _timed(["make", "book"])
    return _write("book", {"cold_s": cold, "warm_s": warm,
                           "note": "cold = empty execution cache, victim model already cached",
                           "budget": "cold ≤ 720 s"})


def bench_tests() -> dict:
    return _write("tests", {"seconds": _timed(["make", "test"]), "budget": "≤ 1800 s"})


FOUNDATION = {"gtsrb_load": bench_gtsrb_load, "victim": bench_victim, "book": bench_book,
              "tests": bench_tests}


def chapter_benchmarks() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(Path(__file__).parent.glob("bench_*.py"))}


def report() -> None:
    lines = ["# Benchmark report", "", "| benchmark | result |", "| --- | --- |"]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in data.items()
                 if k not in ("name", "machine", "config") and not isinstance(v, (dict, list))}
        lines.append(f"| {data.get('name', path.stem)} | {shown} |")
    (RESULTS / "REPORT.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    names = [*FOUNDATION, *chapter_benchmarks()]
    parser.add_argument("--only", nargs="*", choices=names, help="run only these benchmarks")
    args = parser.parse_args(argv)
    selected = args.only or names
    for name in selected:
        print(f"== {name}", flush=True)
        if name in FOUNDATION:
            print(json.dumps(FOUNDATION[name](), indent=2, default=str))
        else:
            subprocess.run([PY, str(chapter_benchmarks()[name])], cwd=ROOT, check=True)
    report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
