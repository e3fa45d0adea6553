"""jaxinfer's L-BFGS-B against scipy's, same objective, same exact gradient, same start, same
options, in one run:

    .venv/bin/python benchmarks/optimize/bench_lbfgsb.py [--quick] [--translocations 68000]

(a) spt ``df`` on the setting of benchmarks/spt (20x20 grid on [-1, 1]², ~65k simulated
    translocations, sigma = 0.02, diffusivity_prior = 100, force_prior = 1, and also without
    the force prior), at scipy's default options and at ``infer``'s (ftol 1e-6, maxiter 1000):
    final objective, iterations, evaluations, norm of the force map, wall time (ours warm).
(b) spt ``dv`` on the same 400 cells (potential_prior = 10, ftol 1e-8 as ``infer``): warm wall
    time of our jitted solve against scipy driving the same jitted objective + gradient, and
    the time of one objective + gradient evaluation.
(c) compile time of one 100-D L-BFGS-B (Rosenbrock) through ``minimize``.
(d) the solver's own cost per iteration: 300 iterations of an 800-D Rosenbrock (an objective
    far cheaper than spt's), against one objective + gradient call.

``--parts df,dv,compile,overhead`` runs some of them and merges into the existing JSON.

scipy gets ``jax.jit(jax.value_and_grad(f))`` converted to float64 NumPy per call; ours runs
``jax.jit(minimize)`` on the same ``f``. The problems are built here, from jaxinfer.spt's
simulator, tessellation, stencils and posteriors, exactly as ``infer`` builds them (TRamWAy's
start and lower bound on D). Writes benchmarks/results/optimize_lbfgsb.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import scipy.optimize as so  # noqa: E402

from jaxinfer.optimize import minimize  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "optimize_lbfgsb.json")
SIGMA = 0.02


def machine_info():
    return dict(cpu_count=os.cpu_count(), platform=platform.platform(),
                python=platform.python_version(), jax=jax.__version__, scipy=scipy.__version__,
                device=str(jax.devices()[0]), x64=True,
                load_average=os.getloadavg() if hasattr(os, "getloadavg") else None)


def simulated_trajectories(n_translocations: int, seed: int = 0):
    """benchmarks/spt's data: demo fields, field of view [-1, 1]², whole trajectories kept
    until about ``n_translocations`` translocations."""
    from jaxinfer.spt import simulate as sim

    diffusivity, potential = sim.demo_fields()
    n_traj = int(n_translocations / 9 * 2.6)
    df = sim.simulate_trajectories(jax.random.PRNGKey(seed), diffusivity, potential,
                                   n_trajectories=n_traj, mean_length=10, max_length=40,
                                   dt=0.05, sigma=SIGMA, substeps=5,
                                   lower_bound=(-1.6, -1.6), upper_bound=(1.6, 1.6))
    df = sim.crop_to_window(df, (-1, -1), (1, 1))
    sizes = df.groupby("n", sort=False).size()
    keep = sizes.index[np.cumsum(sizes.to_numpy() - 1) <= n_translocations]
    return df[df["n"].isin(keep)].reset_index(drop=True)


def spt_problem(df, mode: str, cells_per_dim: int, prior_d: float, prior_x: float):
    """``(f(x, cells), cells, x0, lb, ub)`` for ``mode`` in 'df' / 'dv', as ``infer`` builds it."""
    from jaxinfer.spt import posteriors as post
    from jaxinfer.spt.cells import distributed
    from jaxinfer.spt.gradient import grad1_stencil
    from jaxinfer.spt.tessellation import tessellate

    part = tessellate(df, "grid", count_per_dim=[cells_per_dim] * 2,
                      lower_bound=np.array([-1.0, -1.0]), upper_bound=np.array([1.0, 1.0]))
    cells = distributed(part).with_neighbours_only()
    m, dim = cells.ncells, cells.dim
    grad = grad1_stencil(np.asarray(cells.centers, float), cells.neighbour_lists(),
                         selection_angle=0.9)
    s2 = SIGMA ** 2
    d0 = np.asarray(cells.initial_diffusivity(), float)
    lb_d = (1e-16 - s2) / np.asarray(cells.dt_max, float)
    if mode == "df":
        def f(x, c):
            return post.df_neg_posterior(x[:m], x[m:].reshape(m, dim), c, grad, s2, prior_d,
                                         prior_x)
        x0 = np.r_[d0, np.zeros(m * dim)]
        lb = np.r_[lb_d, np.full(m * dim, -np.inf)]
    else:
        density = np.asarray(cells.counts, float) / np.asarray(cells.volumes, float)
        v0 = np.log(density.max()) - np.log(density)
        y0 = float(post.dv_neg_posterior(jnp.asarray(d0), jnp.asarray(v0), cells, grad, s2,
                                         prior_d, prior_x))

        def f(x, c):
            return post.dv_neg_posterior(x[:m], x[m:], c, grad, s2, prior_d, prior_x, y0=y0)
        x0 = np.r_[d0, v0]
        lb = np.r_[lb_d, np.full(m, -np.inf)]
    return f, cells, x0, lb, np.full_like(lb, np.inf)


def run_scipy(f, cells, x0, lb, ub, options):
    vg = jax.jit(jax.value_and_grad(f))

    def fun(x):
        v, g = vg(jnp.asarray(x), cells)
        return float(v), np.asarray(g, dtype=float)

    fun(x0)  # compile outside the timing
    bounds = [(None if not np.isfinite(a) else float(a), None if not np.isfinite(b) else float(b))
              for a, b in zip(lb, ub)]
    start = time.perf_counter()
    res = so.minimize(fun, x0, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
    seconds = time.perf_counter() - start
    return res, seconds


def run_ours(f, cells, x0, lb, ub, options):
    solve = jax.jit(lambda x0, lb, ub, c: minimize(f, x0, args=(c,), method="L-BFGS-B",
                                                   bounds=(lb, ub), options=options))
    args = (jnp.asarray(x0), jnp.asarray(lb), jnp.asarray(ub), cells)
    start = time.perf_counter()
    res = jax.block_until_ready(solve(*args))
    first = time.perf_counter() - start
    start = time.perf_counter()
    res = jax.block_until_ready(solve(*args))
    warm = time.perf_counter() - start
    return res, first, warm


def compare(f, cells, x0, lb, ub, options, force_slice=None):
    ref, t_scipy = run_scipy(f, cells, x0, lb, ub, options)
    res, first, warm = run_ours(f, cells, x0, lb, ub, options)
    out = dict(
        options=options, n=int(len(x0)),
        scipy=dict(fun=float(ref.fun), nit=int(ref.nit), nfev=int(ref.nfev),
                   success=bool(ref.success), message=str(ref.message), seconds=t_scipy),
        jaxinfer=dict(fun=float(res.fun), nit=int(res.nit), nfev=int(res.nfev),
                      success=bool(res.success), message=str(res.message),
                      seconds_first=first, seconds_warm=warm),
    )
    out["fun_ours_minus_scipy"] = float(res.fun) - float(ref.fun)
    out["speedup_warm"] = t_scipy / warm
    if force_slice is not None:
        out["scipy"]["force_norm"] = float(np.linalg.norm(ref.x[force_slice]))
        out["jaxinfer"]["force_norm"] = float(np.linalg.norm(np.asarray(res.x)[force_slice]))
    return out


def one_evaluation_seconds(f, cells, x0, repeats=20):
    vg = jax.jit(jax.value_and_grad(f))
    x = jnp.asarray(x0)
    jax.block_until_ready(vg(x, cells))
    start = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(vg(x, cells))
    return (time.perf_counter() - start) / repeats


def compile_seconds_rosenbrock(n=100):
    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    x0 = jnp.tile(jnp.array([-1.2, 1.0]), n // 2)
    solve = jax.jit(lambda x0: minimize(rosen, x0, method="L-BFGS-B"))
    start, cpu = time.perf_counter(), time.process_time()
    lowered = solve.lower(x0)
    traced, traced_cpu = time.perf_counter() - start, time.process_time() - cpu
    compiled = lowered.compile()
    total, total_cpu = time.perf_counter() - start, time.process_time() - cpu
    res = compiled(x0)
    # CPU seconds are the figure to compare across runs (wall time follows the machine's load)
    return dict(n=n, trace_seconds=traced, compile_seconds=total - traced,
                total_seconds=total, trace_cpu_seconds=traced_cpu,
                compile_cpu_seconds=total_cpu - traced_cpu, total_cpu_seconds=total_cpu,
                nit=int(res.nit), fun=float(res.fun))


def solver_overhead(n=800, iterations=300):
    def rosen(x):
        return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)

    x0 = jnp.tile(jnp.array([-1.2, 1.0]), n // 2)
    solve = jax.jit(lambda x0: minimize(rosen, x0, method="L-BFGS-B",
                                        options=dict(maxiter=iterations, ftol=0.0, gtol=0.0)))
    res = jax.block_until_ready(solve(x0))
    times, cpus = [], []
    for _ in range(7):
        start, cpu = time.perf_counter(), time.process_time()
        res = jax.block_until_ready(solve(x0))
        times.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    vg = jax.jit(jax.value_and_grad(rosen))
    jax.block_until_ready(vg(x0))
    start = time.perf_counter()
    for _ in range(100):
        jax.block_until_ready(vg(x0))
    one = (time.perf_counter() - start) / 100
    return dict(n=n, nit=int(res.nit), nfev=int(res.nfev), seconds=min(times),
                ms_per_iteration=1e3 * min(times) / int(res.nit),
                cpu_ms_per_iteration=1e3 * min(cpus) / int(res.nit),
                ms_one_eager_value_and_grad=1e3 * one, load_average=os.getloadavg())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data (a check)")
    parser.add_argument("--translocations", type=int, default=68000)
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--parts", default="df,dv,compile,overhead")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    n_tr = 5000 if args.quick else args.translocations
    grid = 8 if args.quick else 20
    df = simulated_trajectories(n_tr)
    results = {}
    if os.path.exists(args.out) and parts != {"df", "dv", "compile", "overhead"}:
        with open(args.out) as fd:
            results = json.load(fd)
    results.setdefault("runs", []).append(dict(parts=sorted(parts), machine=machine_info()))
    results.update(machine=results.get("machine", machine_info()), sigma=SIGMA, cells_per_dim=grid,
                   data=dict(points=int(len(df)), translocations=int(len(df) - df["n"].nunique()),
                             fields="jaxinfer.spt.simulate.demo_fields()", seed=0))
    infer_df = dict(ftol=1e-6, maxiter=1000)
    for label, prior_f in (("df", 1.0), ("df_no_force_prior", 0.0)) if "df" in parts else ():
        f, cells, x0, lb, ub = spt_problem(df, "df", grid, 100.0, prior_f)
        m = cells.ncells
        for opt_label, options in (("scipy_defaults", {}), ("infer_defaults", infer_df)):
            key = f"{label}/{opt_label}"
            results[key] = compare(f, cells, x0, lb, ub, options, force_slice=slice(m, None))
            r = results[key]
            print(f"{key:32s} scipy f={r['scipy']['fun']:.6f} nit={r['scipy']['nit']:4d} "
                  f"| ours f={r['jaxinfer']['fun']:.6f} nit={r['jaxinfer']['nit']:4d} "
                  f"({r['jaxinfer']['message']}) diff={r['fun_ours_minus_scipy']:+.3g}",
                  flush=True)
    if "dv" in parts:
        dv_speed(df, grid, results)
    if "compile" in parts:
        results["compile_rosenbrock_100"] = compile_seconds_rosenbrock(100)
        c = results["compile_rosenbrock_100"]
        print(f"compile 100-D L-BFGS-B: trace {c['trace_seconds']:.2f} s + compile "
              f"{c['compile_seconds']:.2f} s ({c['total_cpu_seconds']:.2f} CPU-s)", flush=True)
    if "overhead" in parts:
        results["solver_overhead"] = o = solver_overhead()
        print(f"solver: {o['ms_per_iteration']:.3f} ms ({o['cpu_ms_per_iteration']:.3f} CPU-ms) "
              f"per iteration at n = {o['n']} "
              f"(one eager objective + gradient call {o['ms_one_eager_value_and_grad']:.3f} ms)",
              flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fd:
        json.dump(results, fd, indent=1)
    print(f"wrote {args.out}")


def dv_speed(df, grid, results):
    f, cells, x0, lb, ub = spt_problem(df, "dv", grid, 100.0, 10.0)
    dv = compare(f, cells, x0, lb, ub, dict(ftol=1e-8, maxiter=1000, maxcor=10))
    dv["one_value_and_grad_seconds"] = one_evaluation_seconds(f, cells, x0)
    dv["solver_overhead_seconds_per_evaluation"] = (
        dv["jaxinfer"]["seconds_warm"] / dv["jaxinfer"]["nfev"] - dv["one_value_and_grad_seconds"])
    results["dv_speed"] = dv
    print(f"dv: scipy {dv['scipy']['seconds']:.2f} s ({dv['scipy']['nfev']} evals) | ours warm "
          f"{dv['jaxinfer']['seconds_warm']:.2f} s ({dv['jaxinfer']['nfev']} evals), one eval "
          f"{1e3 * dv['one_value_and_grad_seconds']:.2f} ms, x{dv['speedup_warm']:.2f}",
          flush=True)


if __name__ == "__main__":
    main()
