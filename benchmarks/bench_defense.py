"""Speed budget of Chapter 3 (issue 4), on this 2-core CPU with the victim cached.

* ``chapter_s`` — executing ``book/03_shields.ipynb`` end to end (``jupyter nbconvert --execute``
  into a temporary file; the committed notebook is not touched).  Only the victim and Chapter 2's
  attacker come from the cache: the chapter recomputes the Fig. 5 sweep (``recompute=True``) and
  trains every adaptive attacker, so every execution is cold for Chapter 3's own work.
  Budget: ≤ 300 s.
* ``sweep_s`` — :func:`coinfer.defense.fitted_accuracy_curve` with the chapter's default
  settings and ``recompute=True`` (the Fig. 5 sweep and the fit; it also refreshes the cache that
  Chapter 4 reads).
* ``audit_*_s`` — the chapter's audits: the scalar Laplace mechanism (200,000 runs per input)
  and the inference-input audits of the defence (200 runs per input, both policies).

Run ``python benchmarks/bench_defense.py`` (``--skip-chapter`` for the library timings only);
results go to ``benchmarks/results/defense.json`` and ``defense.md``.
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

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
NOTEBOOK = ROOT / "book" / "03_shields.ipynb"
BUDGET_S = 300.0


def _machine() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(),
            "processor": platform.processor() or platform.machine()}


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def bench_library() -> dict:
    import torch

    from coinfer import defense, privacy
    from coinfer.data import load_signs, to_float
    from coinfer.train import VICTIM, load_or_train

    torch.set_num_threads(2)
    victim = load_or_train(VICTIM, progress=False).model
    test = load_signs("test", source=VICTIM.data, progress=False)
    out: dict = {}

    start = time.perf_counter()
    fit = defense.fitted_accuracy_curve(model=victim, test_set=test, recompute=True)
    out["sweep_s"] = time.perf_counter() - start
    out["sweep"] = {"epsilons": len(fit.epsilons), "draws": fit.settings.draws,
                    "images": fit.settings.num_images, "a": fit.a, "b": fit.b,
                    "rmse": fit.rmse}

    start = time.perf_counter()
    scalar = privacy.audit_mechanism(privacy.scalar_laplace(1.0), 0.0, 1.0, trials=200_000,
                                     seed=0)
    out["audit_scalar_s"] = time.perf_counter() - start
    out["audit_scalar_epsilon_lower"] = scalar.epsilon_lower

    G = VICTIM.clip_bound
    eval_set = defense.fixed_subset(test, num_images=1000, seed=0)
    x = to_float(eval_set.images[:1])[0]
    x_prime = x.clone()
    x_prime[:, 16, 16] = 1.0 - x_prime[:, 16, 16]
    gray = torch.full((3, 32, 32), 0.5)
    gray_prime = gray.clone()
    gray_prime[:, 16, 16] = 1.0
    for policy, pair, distinguisher in (("once", (x, x_prime), "requery"),
                                        ("fresh", (gray, gray_prime), "constant-image")):
        start = time.perf_counter()
        result = defense.audit_inference_input(victim, *pair, epsilon=1.0, clip_bound=G, at=4,
                                               policy=policy, distinguisher=distinguisher,
                                               trials=200, seed=0)
        out[f"audit_{policy}_s"] = time.perf_counter() - start
        out[f"audit_{policy}_epsilon_lower"] = result.epsilon_lower
    return out


def bench_chapter() -> dict:
    env = os.environ | {"TQDM_DISABLE": "1", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
    shared = ROOT.parent / "shared" / "data"
    if "COINFER_DATA" not in env and (shared / "gtsrb").is_dir():
        env["COINFER_DATA"] = str(shared)
    jupyter = Path(sys.executable).with_name("jupyter")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        subprocess.run([str(jupyter), "nbconvert", "--to", "notebook", "--execute",
                        "--ExecutePreprocessor.timeout=1800", "--output-dir", tmp,
                        "--output", "executed.ipynb", str(NOTEBOOK)],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        seconds = time.perf_counter() - start
    return {"chapter_s": seconds, "chapter_budget_s": BUDGET_S,
            "chapter_within_budget": seconds <= BUDGET_S}


def write(payload: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"name": "defense", "machine": _machine(), "load_average": _load_average(),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), **payload}
    (RESULTS / "defense.json").write_text(json.dumps(payload, indent=2) + "\n")
    lines = ["# Chapter 3 (shields) benchmark", "",
             f"Machine: {payload['machine']['cpu_count']} CPUs, torch "
             f"{payload['machine']['torch']}; load average at the end "
             f"{payload['load_average']} (other jobs on the machine slow every number down).", "",
             "| measurement | seconds | notes |", "| --- | ---: | --- |"]
    if "chapter_s" in payload:
        verdict = "within" if payload["chapter_within_budget"] else "OVER"
        lines.append(f"| execute `book/03_shields.ipynb` (victim + Chapter 2 attacker cached) | "
                     f"{payload['chapter_s']:.0f} | budget {BUDGET_S:.0f} s: {verdict} |")
    sweep = payload["sweep"]
    lines += [
        f"| Fig. 5 sweep + fit (`fitted_accuracy_curve(recompute=True)`) | "
        f"{payload['sweep_s']:.1f} | {sweep['epsilons']} ε × {sweep['draws']} draws × "
        f"{sweep['images']} images; a = {sweep['a']:.4f}, b = {sweep['b']:.4f} |",
        f"| audit, scalar Laplace ε = 1 (200,000 runs per input) | "
        f"{payload['audit_scalar_s']:.1f} | ε ≥ {payload['audit_scalar_epsilon_lower']:.3f} |",
        f"| audit, inference input, once policy (200 runs per input) | "
        f"{payload['audit_once_s']:.1f} | ε ≥ {payload['audit_once_epsilon_lower']:.2f} "
        "for a claimed 1 |",
        f"| audit, inference input, fresh policy (200 runs per input) | "
        f"{payload['audit_fresh_s']:.1f} | ε ≥ {payload['audit_fresh_epsilon_lower']:.2f} "
        "for a claimed 1 |",
    ]
    (RESULTS / "defense.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-chapter", action="store_true",
                        help="time the library steps only, not the whole chapter")
    args = parser.parse_args(argv)
    payload = bench_library()
    if not args.skip_chapter:
        payload |= bench_chapter()
    write(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
