"""NIST StRD nonlinear regression: jaxinfer curve_fit vs scipy curve_fit (method 'lm').

All 27 data sets from Start 1 and Start 2. For each fit: significant digits agreeing with the
certified parameters and standard deviations (min LRE), and function evaluations. scipy is
run with its default settings and, as a second column, with tight tolerances
(xtol = ftol = 1e-15, maxfev 10,000). A second table starts both from two points per data
set drawn at random between Start 1 and Start 2 (``nist.random_starts``, seed 0; fitted in
the same vmapped calls as the official starts). Writes benchmarks/results/optimize_nist.json
and prints the markdown tables.

    python benchmarks/optimize/bench_nist.py
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import scipy  # noqa: E402

from jaxinfer.optimize import nist  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "optimize_nist.json"
RANDOM_STARTS, SEED = 2, 0


def main():
    problems = nist.load_all()
    t0 = time.perf_counter()
    ours = nist.fit_all(list(problems.values()), random=RANDOM_STARTS, seed=SEED)
    ours_s = time.perf_counter() - t0
    rows = []
    t0 = time.perf_counter()
    for name, prob in problems.items():
        for k in (0, 1):
            sc = nist.fit_scipy(prob, k)
            tight = nist.fit_scipy(prob, k, xtol=1e-15, ftol=1e-15, maxfev=10_000)
            rec = ours[(name, k)]
            rows.append({"data_set": name, "difficulty": prob.difficulty, "start": k + 1,
                         "digits_ours": round(rec["digits"], 2),
                         "param_digits_ours": round(rec["param_digits"], 2),
                         "success_ours": rec["success"], "nfev_ours": rec["nfev"],
                         "njev_ours": rec["njev"],
                         "digits_scipy": round(sc["digits"], 2), "nfev_scipy": sc["nfev"],
                         "success_scipy": sc["success"],
                         "digits_scipy_tight": round(tight["digits"], 2),
                         "nfev_scipy_tight": tight["nfev"]})
    scipy_s = time.perf_counter() - t0
    random_rows = []
    for name, prob in problems.items():
        for j, start in enumerate(nist.random_starts(prob, RANDOM_STARTS, SEED)):
            rec = ours[(name, 2 + j)]
            sc = nist.fit_scipy(prob, start)
            random_rows.append({"data_set": name, "difficulty": prob.difficulty,
                                "start": [float(v) for v in start],
                                "digits_ours": round(rec["digits"], 2),
                                "param_digits_ours": round(rec["param_digits"], 2),
                                "success_ours": rec["success"], "nfev_ours": rec["nfev"],
                                "digits_scipy": round(sc["digits"], 2), "nfev_scipy": sc["nfev"],
                                "success_scipy": sc["success"]})
    summary = {
        "fits": len(rows),
        "ours_ge6": sum(r["digits_ours"] >= 6 for r in rows),
        "scipy_ge6": sum(r["digits_scipy"] >= 6 for r in rows),
        "scipy_tight_ge6": sum(r["digits_scipy_tight"] >= 6 for r in rows),
        "ours_mean_digits": sum(r["digits_ours"] for r in rows) / len(rows),
        "scipy_mean_digits": sum(r["digits_scipy"] for r in rows) / len(rows),
        "scipy_tight_mean_digits": sum(r["digits_scipy_tight"] for r in rows) / len(rows),
        "random_fits": len(random_rows),
        "random_seed": SEED,
        "ours_random_ge6": sum(r["digits_ours"] >= 6 for r in random_rows),
        "scipy_random_ge6": sum(r["digits_scipy"] >= 6 for r in random_rows),
        "ours_random_false_success": sum(r["success_ours"] and r["param_digits_ours"] < 6
                                         for r in random_rows),
        "ours_wall_s_including_compile": ours_s,
        "scipy_wall_s_both_settings": scipy_s,
    }
    record = {"summary": summary, "rows": rows, "random_rows": random_rows,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "jax": jax.__version__, "scipy": scipy.__version__,
                          "device": str(jax.devices()[0]), "dtype": "float64"}}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(markdown_table(rows))
    return record


def markdown_table(rows):
    lines = ["| data set | difficulty | start | digits ours | digits scipy | digits scipy (tight) "
             "| nfev ours | nfev scipy | ours success |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['data_set']} | {r['difficulty']} | {r['start']} | {r['digits_ours']:.1f} "
                     f"| {r['digits_scipy']:.1f} | {r['digits_scipy_tight']:.1f} | {r['nfev_ours']} "
                     f"| {r['nfev_scipy']} | {r['success_ours']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
