"""Speed targets of chapter 4 (issue 5), measured on one CPU core.

* ``nash_equilibrium`` for N = 10⁶ vehicles: target ≤ 0.2 s;
* ``stackelberg_equilibrium`` for N = 10⁵ vehicles: target ≤ 10 s;
* best-response dynamics on the same markets (iterations and time to a 1e-9 change);
* the scaling of both exact solvers with N (also plotted in the book).

Markets follow the paper's simulation ranges (v ∈ [5, 15] m/s, c ∈ [5, 10], e = 10, λ = 1000)
with the accuracy curve and budget box of :data:`SPEC` (``--fitted`` uses the defence chapter's
fit instead).  Run ``python benchmarks/bench_game.py``; results go to
``benchmarks/results/game.json`` and ``game.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, set before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from coinfer import game  # noqa: E402

try:  # pin BLAS/OpenMP pools too when threadpoolctl is installed
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

RESULTS = Path(__file__).resolve().parent / "results"

#: The benchmark's market distribution: the paper's ranges, and a stand-in for the chapter's
#: accuracy curve (accuracy in percent, a = 100 × 0.1, b = 0.6) and budget box [1, 10⁴] (the
#: range of Chapter 3's sweep).  ``--fitted`` takes both from the defence chapter's fit.
SPEC = game.MarketSpec(accuracy_a=10.0, accuracy_b=0.6, eps_min=1.0, eps_max=1e4)

#: A harder family for the leader's problem: with the chapter's box the SE of 10⁵ vehicles is
#: R* = 0 (the first vehicle leaves ε_min only at R ≈ min_i w_i · Σℓ, which never pays),
#: found without examining any piece.  With a narrow box [0.5, 20] and a steeper curve, R* > 0 and
#: about 10⁴ pieces of the NE path must be examined.
SPEC_HARD = game.MarketSpec(accuracy_a=0.5, accuracy_b=2.0, eps_min=0.5, eps_max=20.0)

TARGETS = {"nash_1e6_s": 0.2, "stackelberg_1e5_s": 10.0}


def _timed(fn, repeats: int) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def bench_nash(spec: game.MarketSpec, n: int, repeats: int) -> dict:
    market = game.random_market(spec.replace(n_vehicles=n), seed=0)
    reward = 0.3 * game.public_info(market).reward_cap
    times, eps = _timed(lambda: game.nash_equilibrium(market, reward), repeats)
    at_min = int(np.sum(eps == market.eps_min))
    at_max = int(np.sum(eps == market.eps_max))
    # exactness: largest relative first-order-condition residual of the interior vehicles
    x = eps / market.speeds
    s = x.sum()
    inside = (eps > market.eps_min) & (eps < market.eps_max)
    foc = np.abs(reward * (s - x[inside]) / s**2 - market.weights[inside]) / market.weights[inside]
    return {"n": n, "reward": reward, "best_s": min(times), "median_s": statistics.median(times),
            "repeats": repeats, "at_eps_min": at_min, "at_eps_max": at_max,
            "interior": int(inside.sum()),
            "max_relative_foc_residual": float(foc.max()) if foc.size else 0.0}


def bench_stackelberg(spec: game.MarketSpec, n: int, repeats: int, family: str) -> dict:
    market = game.random_market(spec.replace(n_vehicles=n), seed=0)
    times, se = _timed(lambda: game.stackelberg_equilibrium(market), repeats)
    # sanity: no reward on a coarse grid (and near R*) does better
    cap = game.public_info(market).reward_cap
    grid = np.concatenate([np.linspace(0, cap, 41), se.reward * np.linspace(0.98, 1.02, 9)])
    grid_best = float(game.sp_utility_curve(market, grid).max())
    return {"n": n, "family": family, "best_s": min(times),
            "median_s": statistics.median(times), "repeats": repeats, "reward": se.reward,
            "sp_utility": se.sp_utility,
            "pieces_examined": se.pieces, "grid_best_minus_se": grid_best - se.sp_utility}


def bench_dynamics(spec: game.MarketSpec, n: int, reward_rule: str, max_iter: int,
                   family: str) -> dict:
    market = game.random_market(spec.replace(n_vehicles=n), seed=0)
    if reward_rule == "se":
        reward = game.stackelberg_equilibrium(market).reward
    else:
        reward = 0.3 * game.public_info(market).reward_cap
    t0 = time.perf_counter()
    exact = game.nash_equilibrium(market, reward)
    exact_s = time.perf_counter() - t0
    out = {"n": n, "family": family, "reward": reward, "reward_rule": reward_rule,
           "exact_s": exact_s, "tol": 1e-9}
    for label, kwargs, limit in VARIANTS:
        if label == "sequential" and n > 10**5:
            continue  # a Python loop over the vehicles: ~0.3 s per round at N = 10^5
        dyn = game.best_response_dynamics(market, reward, tol=1e-9,
                                          max_iter=min(limit, max_iter), **kwargs)
        out[label] = {"iterations": dyn.iterations, "converged": dyn.converged,
                      "seconds": dyn.seconds,
                      "max_abs_error_vs_exact": float(np.max(np.abs(dyn.eps - exact)))}
    return out


#: (label, keyword arguments, round limit) of the best-response dynamics compared.
VARIANTS = (
    ("jacobi", {"damping": 1.0}, 200),
    ("jacobi_damped_0.5", {"damping": 0.5}, 200),
    ("jacobi_damped_0.1", {"damping": 0.1}, 5000),
    ("sequential", {"sequential": True}, 200),
)


def to_markdown(res: dict) -> str:
    n1 = res["nash"]
    lines = [
        "# Chapter 4 solver benchmark",
        "",
        f"Machine: {res['machine']}; one thread; load average at start {res['load']}.",
        f"Markets (`chapter`): {res['spec']}.",
        f"Markets (`hard`): {res['spec_hard']}.",
        "",
        "| measurement | markets | N | best [s] | median [s] | target [s] | met |",
        "|---|---|---:|---:|---:|---:|:---:|",
        f"| `nash_equilibrium` | chapter | {n1['n']:,} | {n1['best_s']:.3f} | "
        f"{n1['median_s']:.3f} | {TARGETS['nash_1e6_s']} | "
        f"{'yes' if n1['best_s'] <= TARGETS['nash_1e6_s'] else 'no'} |",
    ]
    for s1 in res["stackelberg"]:
        lines.append(
            f"| `stackelberg_equilibrium` | {s1['family']} | {s1['n']:,} | {s1['best_s']:.2f} | "
            f"{s1['median_s']:.2f} | {TARGETS['stackelberg_1e5_s']} | "
            f"{'yes' if s1['best_s'] <= TARGETS['stackelberg_1e5_s'] else 'no'} |")
    lines += [
        "",
        f"NE at N = {n1['n']:,}: {n1['at_eps_min']:,} vehicles at ε_min, "
        f"{n1['interior']:,} inside, {n1['at_eps_max']:,} at ε_max; largest relative "
        f"first-order residual {n1['max_relative_foc_residual']:.1e}.",
    ]
    for s1 in res["stackelberg"]:
        lines.append(
            f"SE ({s1['family']}) at N = {s1['n']:,}: R* = {s1['reward']:.6g}, "
            f"U_S = {s1['sp_utility']:.6g}, {s1['pieces_examined']:,} pieces examined; best grid "
            f"value minus U_S(R*) = {s1['grid_best_minus_se']:.2e} (≤ 0 expected).")
    lines += [
        "",
        "## Best-response dynamics on the same markets (tolerance 1e-9)",
        "",
        "Stopping rule: no vehicle's best reply differs from its budget by more than",
        "1e-9 × the largest budget. `jacobi` = simultaneous replies",
        "(damping β: ε ← (1-β)ε + βB(ε)),",
        "`sequential` = one vehicle after the other (a Python loop, run up to N = 10⁵ only).",
        "",
        "| markets | N | reward | exact solver [s] | dynamics | iterations | converged "
        "| time [s] | max error vs exact |",
        "|---|---:|---|---:|---|---:|:---:|---:|---:|",
    ]
    for d in res["dynamics"]:
        for label, _, _ in VARIANTS:
            if label not in d:
                continue
            r = d[label]
            lines.append(
                f"| {d['family']} | {d['n']:,} | {d['reward_rule']} | {d['exact_s']:.3f} | "
                f"{label} | "
                f"{r['iterations']} | {'yes' if r['converged'] else 'no'} | {r['seconds']:.2f} | "
                f"{r['max_abs_error_vs_exact']:.1e} |")
    lines += ["", "## Scaling (best of repeats)", "",
              "| N | nash, chapter [s] | stackelberg, chapter [s] | stackelberg, hard [s] |",
              "|---:|---:|---:|---:|"]
    se_c = {r["n"]: r["seconds"] for r in res["scaling"]["stackelberg"]}
    se_h = {r["n"]: r["seconds"] for r in res["scaling"]["stackelberg_hard"]}

    def fmt(x):
        return "" if x is None else f"{x:.3f}"

    for r in res["scaling"]["nash"]:
        lines.append(f"| {r['n']:,} | {r['seconds']:.4f} | {fmt(se_c.get(r['n']))} | "
                     f"{fmt(se_h.get(r['n']))} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fitted", action="store_true",
                        help="use coinfer.defense.fitted_accuracy_curve() for (a, b)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    spec = SPEC
    if args.fitted:
        from coinfer.defense import fitted_accuracy_curve

        fit = fitted_accuracy_curve()
        spec = spec.replace(accuracy_a=100.0 * float(fit.a), accuracy_b=float(fit.b),
                            eps_min=float(min(fit.epsilons)), eps_max=float(max(fit.epsilons)))
    big_ne, big_se = (10**5, 10**4) if args.quick else (10**6, 10**5)
    limiter = threadpool_limits(1) if threadpool_limits else None
    try:
        res = {
            "machine": f"{platform.processor() or platform.machine()}, "
                       f"{os.cpu_count()} logical CPUs, Python {platform.python_version()}, "
                       f"NumPy {np.__version__}",
            "load": [round(x, 2) for x in os.getloadavg()],
            "spec": repr(spec),
            "spec_hard": repr(SPEC_HARD),
            "targets": TARGETS,
            "nash": bench_nash(spec, big_ne, repeats=7),
            "stackelberg": [bench_stackelberg(spec, big_se, repeats=3, family="chapter"),
                            bench_stackelberg(SPEC_HARD, big_se, repeats=3, family="hard")],
            "dynamics": [bench_dynamics(spec, big_ne, "0.3 cap", max_iter=5000,
                                        family="chapter"),
                         bench_dynamics(SPEC_HARD, big_se, "se", max_iter=5000,
                                        family="hard")],
            "scaling": {
                "nash": game.time_scaling([10**k for k in range(2, 7 if not args.quick else 6)],
                                          solver="nash", spec=spec, repeats=5),
                "stackelberg": game.time_scaling(
                    [10**k for k in range(2, 6 if not args.quick else 5)],
                    solver="stackelberg", spec=spec, repeats=2),
                "stackelberg_hard": game.time_scaling(
                    [10**k for k in range(2, 6 if not args.quick else 5)],
                    solver="stackelberg", spec=SPEC_HARD, repeats=2),
            },
        }
    finally:
        if limiter is not None:
            limiter.unregister()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "game.json").write_text(json.dumps(res, indent=2) + "\n")
    (args.out / "game.md").write_text(to_markdown(res))
    print(to_markdown(res))
    return res


if __name__ == "__main__":
    main()
