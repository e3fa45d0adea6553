"""Levenberg–Marquardt in bounded memory: 2x10^6 residuals, 300 parameters, JᵀJ by chunks.

The model is ``y(t) = exp(s(t))`` with ``s`` a uniform cubic B-spline of 300 coefficients on
[0, 1]; 2,000,000 noisy samples. The dense Jacobian alone would be 4.8 GB (float64); the
chunked normal equations (``linear_solver='cholesky', max_mem=...``, with a
``residual_chunk``) never form it. Each configuration runs in its own subprocess and reports
its peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``). A reduced version
(20,000 residuals, same 300 parameters) checks that both chunked forms (row chunks and
column blocks) agree with the dense SVD path.

    python benchmarks/optimize/bench_lm_memory.py        # writes benchmarks/results/optimize_lm_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "results" / "optimize_lm_memory.json"
N_COEF = 300


def spline(coef, t):
    """Uniform cubic B-spline with len(coef) coefficients on [0, 1], at t (m,)."""
    import jax.numpy as jnp

    k = coef.shape[0]
    u = jnp.clip(t, 0.0, 1.0) * (k - 3)
    idx = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, k - 4)
    f = u - idx
    w = jnp.stack([(1 - f) ** 3 / 6, (3 * f ** 3 - 6 * f ** 2 + 4) / 6,
                   (-3 * f ** 3 + 3 * f ** 2 + 3 * f + 1) / 6, f ** 3 / 6], axis=1)
    return jnp.sum(w * coef[idx[:, None] + jnp.arange(4)], axis=1)


def make_problem(m, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, m)
    knots = np.linspace(0.0, 1.0, N_COEF)
    truth = 0.5 * np.sin(6 * np.pi * knots) + 0.3 * np.cos(17 * knots) + 0.1 * rng.normal(size=N_COEF)
    start = truth + 0.05 * rng.normal(size=N_COEF)
    return t, truth, start, rng


def child(which, m, max_mem):
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    from jaxinfer.optimize import levenberg_marquardt

    t, truth, start, rng = make_problem(m)
    y = np.exp(np.asarray(spline(jnp.asarray(truth), jnp.asarray(t)))) + 0.01 * rng.normal(size=m)

    def residuals(c, t, y):
        return jnp.exp(spline(c, t)) - y

    def residual_chunk(c, t, y, *, start, size):
        t_c = jax.lax.dynamic_slice_in_dim(t, start, size)
        y_c = jax.lax.dynamic_slice_in_dim(y, start, size)
        return jnp.exp(spline(c, t_c)) - y_c

    options = {"dense": {},
               "rows": dict(linear_solver="cholesky", max_mem=max_mem, residual_chunk=residual_chunk),
               "columns": dict(linear_solver="cholesky", max_mem=max_mem)}[which]
    t_j, y_j = jnp.asarray(t), jnp.asarray(y)
    t0 = time.perf_counter()
    res = levenberg_marquardt(residuals, jnp.asarray(start), args=(t_j, y_j), **options)
    x = np.asarray(jax.block_until_ready(res.x))
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: KiB
    return {"config": which, "m": m, "n": N_COEF, "max_mem": max_mem if which != "dense" else None,
            "status": int(res.status), "success": bool(res.success), "message": str(res.message),
            "nit": int(res.nit), "nfev": int(res.nfev), "njev": int(res.njev),
            "cost": float(res.fun), "wall_s_including_compile": wall,
            "peak_rss_gb": peak_kib * 1024 / 1e9,
            "max_abs_error_vs_truth": float(np.max(np.abs(x - truth))), "x": x.tolist()}


def run_child(which, m, max_mem):
    out = subprocess.run([sys.executable, __file__, "--child", which, "--m", str(m),
                          "--max-mem", str(max_mem)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["dense", "rows", "columns"])
    parser.add_argument("--m", type=int, default=2_000_000)
    parser.add_argument("--reduced-m", type=int, default=20_000)
    parser.add_argument("--max-mem", type=float, default=2.5e8)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.m, args.max_mem)))
        return None

    import numpy as np

    reduced = {w: run_child(w, args.reduced_m, args.max_mem / 100) for w in ("dense", "rows", "columns")}
    dense_x = np.asarray(reduced["dense"]["x"])
    agreement = {w: float(np.max(np.abs(np.asarray(reduced[w]["x"]) - dense_x) / np.abs(dense_x)))
                 for w in ("rows", "columns")}
    big = run_child("rows", args.m, args.max_mem)
    for rec in list(reduced.values()) + [big]:
        rec.pop("x")
    import jax

    record = {"benchmark": f"LM, {args.m} residuals x {N_COEF} parameters (exp of a cubic B-spline), "
                           "chunked normal equations",
              "large": big, "reduced": reduced,
              "reduced_max_rel_diff_vs_dense": agreement,
              "dense_jacobian_would_need_gb": args.m * N_COEF * 8 / 1e9,
              "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                          "jax": jax.__version__, "dtype": "float64"}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("large", "reduced_max_rel_diff_vs_dense")}, indent=2))
    return record


if __name__ == "__main__":
    main()
