"""Speed targets of Chapter 2 (issue 3), on this machine's CPU.

* **chapter cold**: ``book/02_spears.ipynb`` executed from scratch with the victim cached but no
  trained attacker (three Table-1 attackers and three data-mismatch attackers are trained, the
  white-box attack runs) — target ≤ 240 s on the 2-core course machine;
* **chapter warm**: the same with the attackers cached (what ``make test`` / nbval pays);
* **attackers**: for each split of :data:`coinfer.attack.PROTOCOL`, the time to observe the
  query set and to train :math:`g_\\omega` to its plateau, epochs, training images per second,
  and the throughput of observing and reconstructing the test images.

Run ``python benchmarks/bench_attack.py`` (``--skip-chapter`` for the attacker timings only);
results go to ``benchmarks/results/attack.json`` and ``attack.md``.  The victim must be in the
model cache (``load_or_train(VICTIM)``; it is trained there otherwise, which is *not* counted).
The chapter runs in a temporary cache folder that links the real cache's ``models`` and ``gtsrb``
folders, so "cold" really means no cached attacker, and the user's cache is left alone.  The
machine is shared: the load average before and after each measurement is recorded with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NOTEBOOK = ROOT / "book" / "02_spears.ipynb"
TARGET_CHAPTER_S = 240.0


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "cuda": torch.cuda.is_available(),
            "processor": platform.processor() or platform.machine()}


def _scratch_cache(tmp: Path) -> Path:
    """A cache folder with the real victim and GTSRB tensors but no attackers."""
    from coinfer.config import cache_dir

    scratch = tmp / "cache"
    scratch.mkdir()
    for sub in ("models", "gtsrb"):
        (scratch / sub).symlink_to(cache_dir(sub), target_is_directory=True)
    return scratch


def _execute_chapter(cache: Path, out_dir: Path) -> float:
    env = os.environ | {"COINFER_CACHE": str(cache), "TQDM_DISABLE": "1", "MPLBACKEND": "Agg"}
    jupyter = Path(sys.executable).with_name("jupyter")
    cmd = [str(jupyter), "nbconvert", "--to", "notebook", "--execute",
           "--ExecutePreprocessor.timeout=1800", "--output-dir", str(out_dir),
           "--output", "executed.ipynb", str(NOTEBOOK)]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_chapter() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cache = _scratch_cache(Path(tmp))
        load_before = _load()
        cold = _execute_chapter(cache, Path(tmp))
        load_mid = _load()
        warm = _execute_chapter(cache, Path(tmp))
        load_after = _load()
    return {"cold_s": round(cold, 1), "warm_s": round(warm, 1),
            "target_cold_s": TARGET_CHAPTER_S, "meets_target": cold <= TARGET_CHAPTER_S,
            "load_average_1_5_15": {"before": load_before, "after_cold": load_mid,
                                     "after_warm": load_after}}


def bench_attackers() -> dict:
    from coinfer.attack import PROTOCOL, intercept, learn, observe, reconstruct, split_oracle
    from coinfer.data import load_gtsrb
    from coinfer.train import VICTIM, load_or_train

    torch.set_num_threads(1)  # as in the chapter
    victim = load_or_train(VICTIM, progress=False).model
    train, test = load_gtsrb("train", progress=False), load_gtsrb("test", progress=False)
    queries = PROTOCOL.attacker_images(train)
    victims = PROTOCOL.victim_images(test)
    start = time.perf_counter()
    v0 = intercept(victim, victims, splits=PROTOCOL.splits)
    intercept_s = time.perf_counter() - start
    out = {"n_queries": len(queries), "n_victims": len(victims),
           "config": PROTOCOL.config.__dict__, "threads": 1,
           "intercept_all_splits_s": round(intercept_s, 2), "splits": {}}
    for at in PROTOCOL.splits:
        load_before = _load()
        t0 = time.perf_counter()
        features = observe(split_oracle(victim, at=at), queries)
        t1 = time.perf_counter()
        result = learn(features, queries, at=at, config=PROTOCOL.config, progress=False)
        t2 = time.perf_counter()
        reconstruct(result.model, v0[at])
        t3 = time.perf_counter()
        out["splits"][str(at)] = {
            "observe_s": round(t1 - t0, 2),
            "observe_images_per_s": round(len(queries) / (t1 - t0)),
            "train_s": round(t2 - t1, 2),
            "epochs": result.epochs,
            "stop_reason": result.stop_reason,
            "train_images_per_s": round(result.n_train * result.epochs / (t2 - t1)),
            "reconstruct_images_per_s": round(len(victims) / (t3 - t2)),
            "held_out_mse": round(result.val_loss, 6),
            "load_average_before": load_before,
        }
        del features
    return out


def _markdown(payload: dict) -> str:
    lines = ["# Chapter 2 (spears) benchmark", "",
             f"Machine: {payload['machine']['cpu_count']} CPUs, torch {payload['machine']['torch']}; "
             f"measured {payload['date']}.", ""]
    ch = payload.get("chapter")
    if ch:
        lines += ["## Chapter execution (`book/02_spears.ipynb`, victim cached)", "",
                  "| run | seconds | target |", "|---|---|---|",
                  f"| cold (attackers trained) | {ch['cold_s']} | ≤ {ch['target_cold_s']:.0f} s "
                  f"({'met' if ch['meets_target'] else 'NOT met'}) |",
                  f"| warm (attackers cached) | {ch['warm_s']} | — |", "",
                  f"Load average (1, 5, 15 min) before / after cold / after warm: "
                  f"{ch['load_average_1_5_15']['before']} / {ch['load_average_1_5_15']['after_cold']}"
                  f" / {ch['load_average_1_5_15']['after_warm']} (the machine is shared).", ""]
    at = payload["attackers"]
    lines += ["## Attackers (one thread, as in the chapter)", "",
              f"{at['n_queries']} query images, {at['n_victims']} test images; intercepting the "
              f"test features at all splits took {at['intercept_all_splits_s']} s.", "",
              "| split | observe (s) | observe img/s | train (s) | epochs | stop | train img/s "
              "| reconstruct img/s | held-out MSE |", "|---|---|---|---|---|---|---|---|---|"]
    for k, s in at["splits"].items():
        lines.append(f"| {k} | {s['observe_s']} | {s['observe_images_per_s']} | {s['train_s']} | "
                     f"{s['epochs']} | {s['stop_reason']} | {s['train_images_per_s']} | "
                     f"{s['reconstruct_images_per_s']} | {s['held_out_mse']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-chapter", action="store_true",
                        help="only time the attackers, not the chapter's execution")
    args = parser.parse_args(argv)
    from coinfer.train import VICTIM, load_or_train

    load_or_train(VICTIM, progress=False)  # make sure the victim is cached (not timed)
    payload = {"name": "attack", "machine": _machine(),
               "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if not args.skip_chapter:
        payload["chapter"] = bench_chapter()
        print(json.dumps(payload["chapter"], indent=2), flush=True)
    payload["attackers"] = bench_attackers()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "attack.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / "attack.md").write_text(_markdown(payload))
    print(_markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
