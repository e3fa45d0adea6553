"""jaxinfer.optimize.minimize / minimize_scalar vs scipy.optimize on the same problems.

Run:  .venv/bin/python benchmarks/optimize/bench_minimize.py [--quick]
Writes benchmarks/results/optimize_minimize.json and prints a table with the ratio
scipy time / jaxinfer time (> 1: jaxinfer faster). jaxinfer times are for the compiled
solver (compile time reported separately); scipy gets exact analytic gradients written
in NumPy (what a scipy user would write), so both do the same mathematics and scipy pays
no JAX dispatch cost.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.optimize as so  # noqa: E402

from jaxinfer.optimize import minimize, minimize_scalar  # noqa: E402


def best_of(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        jax.block_until_ready(out) if not isinstance(out, so.OptimizeResult) else None
        times.append(time.perf_counter() - t)
    return min(times), out


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def main(quick=False):
    rows = []
    repeats = 3 if quick else 5

    # 1. Rosenbrock 100-D, L-BFGS-B and BFGS, single problem
    n = 100
    x0 = jnp.linspace(-1.2, 1.0, n)
    for method in ("L-BFGS-B", "BFGS"):
        solve = jax.jit(lambda x: minimize(rosen, x, method=method))
        t0 = time.perf_counter()
        jax.block_until_ready(solve(x0))
        compile_s = time.perf_counter() - t0
        ours_s, res = best_of(lambda: solve(x0), repeats)
        ref_s, ref = best_of(lambda: so.minimize(so.rosen, np.asarray(x0), jac=so.rosen_der,
                                                 method=method), repeats)
        rows.append(dict(problem=f"rosenbrock-{n}", method=method, batch=1,
                         jaxinfer_s=ours_s, jaxinfer_compile_s=compile_s, scipy_s=ref_s,
                         ratio=ref_s / ours_s, jaxinfer_nit=int(res.nit), scipy_nit=int(ref.nit),
                         max_abs_x_diff=float(np.max(np.abs(np.asarray(res.x) - ref.x)))))

    # 2. A batch of bounded 5-D fits (vmap) vs a scipy loop
    batch = 200 if quick else 1000
    key = jax.random.PRNGKey(0)
    targets = jax.random.normal(key, (batch, 5)) * 2.0

    def objective(x, t):
        return jnp.sum((x - t) ** 2 * jnp.arange(1.0, 6.0)) + 0.1 * jnp.sum(x ** 4)

    bounds = [(-1.0, 1.0)] * 5
    solve_b = jax.jit(jax.vmap(lambda t: minimize(objective, jnp.zeros(5), args=(t,),
                                                  method="L-BFGS-B", bounds=bounds).x))
    t0 = time.perf_counter()
    jax.block_until_ready(solve_b(targets))
    compile_s = time.perf_counter() - t0
    ours_s, xs = best_of(lambda: solve_b(targets), repeats)
    tn = np.asarray(targets)
    weights = np.arange(1.0, 6.0)

    def objective_np(x, t):
        return (float(np.sum((x - t) ** 2 * weights) + 0.1 * np.sum(x ** 4)),
                2.0 * (x - t) * weights + 0.4 * x ** 3)

    def scipy_loop():
        return np.stack([so.minimize(objective_np, np.zeros(5), args=(t,), jac=True,
                                     method="L-BFGS-B", bounds=bounds).x for t in tn])
    t0 = time.perf_counter()
    ref_x = scipy_loop()
    ref_s = time.perf_counter() - t0
    rows.append(dict(problem="bounded-quartic-5", method="L-BFGS-B (vmap)", batch=batch,
                     jaxinfer_s=ours_s, jaxinfer_compile_s=compile_s, scipy_s=ref_s,
                     ratio=ref_s / ours_s,
                     max_abs_x_diff=float(np.max(np.abs(np.asarray(xs) - ref_x)))))

    # 3. HS71 constrained
    def hs71(x):
        return x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2]

    cons = [dict(type="ineq", fun=lambda x: jnp.prod(x) - 25.0),
            dict(type="eq", fun=lambda x: jnp.sum(x ** 2) - 40.0)]
    x0 = jnp.array([1.0, 5.0, 5.0, 1.0])
    solve_c = jax.jit(lambda x: minimize(hs71, x, method="SLSQP", constraints=cons,
                                         bounds=[(1, 5)] * 4))
    t0 = time.perf_counter()
    jax.block_until_ready(solve_c(x0))
    compile_s = time.perf_counter() - t0
    ours_s, res = best_of(lambda: solve_c(x0), repeats)
    cons_np = [dict(type="ineq", fun=lambda x: np.prod(x) - 25.0),
               dict(type="eq", fun=lambda x: np.sum(x ** 2) - 40.0)]
    def hs71_np(x):
        s = x[0] + x[1] + x[2]
        grad = np.array([x[3] * s + x[0] * x[3], x[0] * x[3], x[0] * x[3] + 1.0, x[0] * s])
        return float(x[0] * x[3] * s + x[2]), grad

    ref_s, ref = best_of(lambda: so.minimize(hs71_np, np.asarray(x0), jac=True, method="SLSQP",
                                             constraints=cons_np, bounds=[(1, 5)] * 4,
                                             options={"ftol": 1e-10}), repeats)
    rows.append(dict(problem="hs71", method="SLSQP (ours: augmented Lagrangian)", batch=1,
                     jaxinfer_s=ours_s, jaxinfer_compile_s=compile_s, scipy_s=ref_s,
                     ratio=ref_s / ours_s, jaxinfer_fun=float(res.fun), scipy_fun=float(ref.fun),
                     max_abs_x_diff=float(np.max(np.abs(np.asarray(res.x) - ref.x)))))

    # 4. minimize_scalar bounded, batch of shifts
    shifts = jnp.linspace(0.1, 2.9, batch)

    def g(x, s):
        return jnp.exp(0.3 * x) * (x - s) ** 2 + jnp.sin(3 * x) * 0.1

    solve_s = jax.jit(jax.vmap(lambda s: minimize_scalar(g, bounds=(0.0, 3.0), args=(s,)).x))
    t0 = time.perf_counter()
    jax.block_until_ready(solve_s(shifts))
    compile_s = time.perf_counter() - t0
    ours_s, xs = best_of(lambda: solve_s(shifts), repeats)

    def g_np(x, s):
        return np.exp(0.3 * x) * (x - s) ** 2 + np.sin(3 * x) * 0.1
    t0 = time.perf_counter()
    ref_x = np.array([so.minimize_scalar(g_np, bounds=(0.0, 3.0), args=(s,)).x
                      for s in np.asarray(shifts)])
    ref_s = time.perf_counter() - t0
    rows.append(dict(problem="scalar-bounded", method="bounded (vmap)", batch=batch,
                     jaxinfer_s=ours_s, jaxinfer_compile_s=compile_s, scipy_s=ref_s,
                     ratio=ref_s / ours_s,
                     max_abs_x_diff=float(np.max(np.abs(np.asarray(xs) - ref_x)))))

    info = dict(cpu_count=os.cpu_count(), jax=jax.__version__, scipy=scipy.__version__,
                device=str(jax.devices()[0]), platform=platform.platform(),
                python=platform.python_version(), quick=quick)
    out = dict(machine=info, rows=rows)
    os.makedirs("benchmarks/results", exist_ok=True)
    with open("benchmarks/results/optimize_minimize.json", "w") as fh:
        json.dump(out, fh, indent=2)
    print(f"{'problem':<20} {'method':<36} {'batch':>5} {'jaxinfer s':>11} {'compile s':>10} "
          f"{'scipy s':>9} {'ratio':>7} {'max|dx|':>9}")
    for r in rows:
        print(f"{r['problem']:<20} {r['method']:<36} {r['batch']:>5} {r['jaxinfer_s']:>11.4f} "
              f"{r['jaxinfer_compile_s']:>10.2f} {r['scipy_s']:>9.4f} {r['ratio']:>7.1f} "
              f"{r['max_abs_x_diff']:>9.1e}")


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
