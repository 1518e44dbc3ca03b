"""Benchmarks of the course against its speed budgets (2-core CPU, no GPU).

Run with ``make bench`` (or ``python benchmarks/run.py [--only NAME ...]``).  Each measurement is
written to ``benchmarks/results/<name>.json`` and summarised in ``benchmarks/results/REPORT.md``.

Foundation measurements (issue budgets in brackets):

* ``gtsrb_load``   — GTSRB decode cold (empty cache) and warm (cached tensors) [warm ≪ 5 s]
* ``victim``       — training the shared victim from scratch: seconds and images/s [≤ 6 min]
* ``build``        — from a fresh clone with empty caches: ``make install``, ``make book`` cold and
  warm, ``make test``, each with wall and CPU seconds [cold book incl. install ≤ 10 min, warm
  ≤ 1 min, test ≤ 5 min, cold build ≥ 1.7 cores busy]

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


def _run_measured(cmd: list[str], *, cwd: Path, env: dict) -> dict:
    """Run ``cmd`` to completion; wall seconds and the CPU seconds of it and all its children."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout[-4000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "cores_busy": round(cpu / wall, 2)}


#: Set by ``--seed-victim``: copy the trained shared victim into the benchmark's empty cache.
SEED_VICTIM = False


def _seed_victim(cache: Path) -> list[str]:
    """Copy the shared victim's checkpoints (``models/victim-*.pt``) from this user's cache into
    ``cache`` and return their names; everything else in ``cache`` stays empty."""
    from coinfer.config import cache_dir

    target = cache / "models"
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in sorted(cache_dir("models").glob("victim-*.pt")):
        shutil.copy2(path, target / path.name)
        copied.append(path.name)
    if not copied:
        raise RuntimeError("--seed-victim: no trained victim in the cache; run `make book` first")
    return copied


def bench_build() -> dict:
    """The two quick-start commands from a fresh clone, as a new user meets them (issue 11).

    A fresh ``git clone`` of the committed HEAD, a new virtual environment and an empty model and
    data cache (``COINFER_CACHE``): nothing is trained or decoded yet.  With ``--seed-victim`` the
    one exception is the shared victim, copied in from this user's cache: on a CPU without bf16
    units (AVX2 only) training it in fp32 alone takes most of an hour, and the option measures
    everything else cold.  Measured one after the other:

    1. ``make install`` — the virtual environment (pip may take wheels from its own download cache);
    2. ``make book`` cold — trains the victim and the attackers, executes every notebook, renders;
    3. ``make book`` again with nothing changed (warm);
    4. ``make test`` with the models cached (unit tests + nbval; the browser test is separate).

    ``cores_busy`` is CPU seconds over wall seconds: 2.0 means both cores busy throughout.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "COINFER_CACHE")}
    shared = ROOT.parent / "shared" / "data"
    if "COINFER_DATA" not in env and (shared / "gtsrb").exists():
        env["COINFER_DATA"] = str(shared)
    with tempfile.TemporaryDirectory(prefix="coinfer-bench-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        env["COINFER_CACHE"] = str(Path(tmp) / "cache")
        seeded = _seed_victim(Path(tmp) / "cache") if SEED_VICTIM else []
        steps = {}

        def step(name, target):  # written after every step, so a stopped run keeps its figures
            steps[name] = _run_measured(["make", target], cwd=clone, env=env)
            _write("build-partial", {"seeded_models": seeded, **steps})
            return steps[name]

        install = step("install", "install")
        cold = step("book_cold", "book")
        warm = step("book_warm", "book")
        tests = step("test", "test")
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=clone, check=True,
                                capture_output=True, text=True).stdout.strip()
    cold_with_install = install["wall_s"] + cold["wall_s"]
    targets = {
        "make book cold incl. install ≤ 600 s": cold_with_install <= 600,
        "make test (models cached) ≤ 300 s": tests["wall_s"] <= 300,
        "make book warm ≤ 60 s": warm["wall_s"] <= 60,
        "cold build ≥ 1.7 cores busy": cold["cores_busy"] >= 1.7,
    }
    return _write("build", {
        "commit": commit, "install": install, "book_cold": cold, "book_warm": warm,
        "test": tests, "book_cold_with_install_s": round(cold_with_install, 1), "targets_met": targets,
        "seeded_models": seeded,
        "note": ("fresh clone, new venv, empty COINFER_CACHE" if not seeded else
                 "fresh clone, new venv, COINFER_CACHE empty but for the trained shared victim "
                 "(--seed-victim)") + "; GTSRB from COINFER_DATA",
    })


FOUNDATION = {"gtsrb_load": bench_gtsrb_load, "victim": bench_victim, "build": bench_build}


def chapter_benchmarks() -> dict[str, Path]:
    return {p.stem.removeprefix("bench_"): p for p in sorted(Path(__file__).parent.glob("bench_*.py"))}


def report() -> None:
    lines = ["# Benchmark report", "", "| benchmark | result |", "| --- | --- |"]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        flat = {}
        for k, v in data.items():
            if k in ("name", "machine", "config") or isinstance(v, list):
                continue
            items = v.items() if isinstance(v, dict) else [(None, v)]
            for sub, value in items:
                flat[f"{k}.{sub}" if sub is not None else k] = value
        shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in flat.items()}
        lines.append(f"| {data.get('name', path.stem)} | {shown} |")
    (RESULTS / "REPORT.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    names = [*FOUNDATION, *chapter_benchmarks()]
    parser.add_argument("--only", nargs="*", choices=names, help="run only these benchmarks")
    parser.add_argument("--seed-victim", action="store_true",
                        help="build: start the empty cache with this user's trained victim")
    args = parser.parse_args(argv)
    global SEED_VICTIM
    SEED_VICTIM = args.seed_victim
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
