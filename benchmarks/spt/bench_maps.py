"""D maps of d, dd, df, dv against the same objective minimised to convergence by scipy, and
warm dv against scipy's L-BFGS-B driving our jitted objective and gradient.

    .venv/bin/python benchmarks/spt/bench_maps.py [--translocations 65000] [--repeats 3]

Data: the demo fields (bench_tramway.make_data), field of view [-1, 1]², a 20x20 grid,
sigma = 0.02 µm, priors as docs/spt.md (lambda_D = 100, lambda_a = lambda_F = 1, lambda_V = 10),
TRamWAy's defaults otherwise. For every mode the problem is built once
(``jaxinfer.spt.infer.smooth_setup``: objective, start, bounds, options as ``infer`` uses
them); then

* ``infer`` (jaxinfer's L-BFGS-B) is timed cold (compilation included) and warm;
* the reference is scipy's L-BFGS-B on the same jitted value-and-gradient, from the same
  start and bounds, with ftol = 1e-15, gtol = 1e-10, maxcor = 30 (minimised to convergence);
* dv speed: scipy's L-BFGS-B at infer's own settings (ftol 1e-8, maxcor 10) on the same jitted
  value-and-gradient, against jaxinfer's solver on the same problem (``solve_map``, the
  solver-to-solver ratio) and against the whole warm ``infer`` call (which also builds the
  cells, stencils and start: the end-to-end ratio); the three are alternated
  ``--speed-repeats`` times in one run and the ratios of the medians of process CPU time (and
  of wall time) are reported, CPU time being what a loaded shared machine distorts least.

Writes benchmarks/results/spt_maps.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# scipy's L-BFGS-B on 800-vectors gains nothing from BLAS threads, and on a loaded 2-core
# machine OpenBLAS's spinning threads cost it ~10x the CPU time (measured 7.7 s vs 0.58 s for
# the dv run): scipy is timed at its best, one thread. XLA (jaxinfer) does not use OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tramway import RESULTS, SIGMA, machine_info, make_data  # noqa: E402

from jaxinfer.spt.fitting import solve_map  # noqa: E402
from jaxinfer.spt.infer import infer, smooth_setup  # noqa: E402
from jaxinfer.spt.tessellation import tessellate  # noqa: E402

PRIORS = {"d": dict(diffusivity_prior=100.0),
          "dd": dict(diffusivity_prior=100.0, drift_prior=1.0),
          "df": dict(diffusivity_prior=100.0, force_prior=1.0),
          "dv": dict(diffusivity_prior=100.0, potential_prior=10.0)}
REFERENCE = dict(ftol=1e-15, gtol=1e-10, maxcor=30, maxiter=50_000, maxfun=100_000)


def scipy_lbfgsb(setup, options):
    """scipy L-BFGS-B on the setup's jitted objective and exact gradient (flat vector)."""
    x0_flat, unravel = ravel_pytree(setup.x0)
    lower = np.asarray(ravel_pytree(setup.lower)[0])
    upper = np.asarray(ravel_pytree(setup.upper)[0])
    posterior, problem = setup.mode.posterior, setup.problem
    value_and_grad = jax.jit(jax.value_and_grad(lambda x: posterior(unravel(x), problem)))
    value_and_grad(x0_flat)  # compile outside the timing

    def fun(x):
        v, g = value_and_grad(jnp.asarray(x))
        return float(v), np.asarray(g, dtype=float)

    bounds = [(None if not np.isfinite(lo) else lo, None if not np.isfinite(hi) else hi)
              for lo, hi in zip(lower, upper)]
    t0 = time.perf_counter()
    c0 = time.process_time()
    res = scipy.optimize.minimize(fun, np.asarray(x0_flat), jac=True, method="L-BFGS-B",
                                  bounds=bounds, options=options)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return res, unravel(jnp.asarray(res.x)), seconds, cpu


def timed(call):
    """``(result, wall seconds, process CPU seconds)`` of ``call()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = call()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--translocations", type=int, default=65_000)
    parser.add_argument("--repeats", type=int, default=3, help="warm timings (best of)")
    parser.add_argument("--speed-repeats", type=int, default=7,
                        help="dv: alternated runs of jaxinfer and scipy (medians)")
    parser.add_argument("--modes", default="d,dd,df,dv")
    parser.add_argument("--out", default=os.path.join(RESULTS, "spt_maps.json"))
    args = parser.parse_args(argv)
    df = make_data(args.translocations, seed=0)
    part = tessellate(df, "grid", count_per_dim=[20, 20], lower_bound=np.array([-1.0, -1.0]),
                      upper_bound=np.array([1.0, 1.0]))
    n_tr = int(np.sum(part.cell_index >= 0))
    print(f"{n_tr} translocations, 20x20 grid", flush=True)
    results = dict(machine=machine_info(), sigma=SIGMA, priors=PRIORS, translocations=n_tr,
                   reference_options=REFERENCE, modes=[])
    for mode in args.modes.split(","):
        kw = dict(sigma=SIGMA, **PRIORS[mode])
        maps, cold, cold_cpu = timed(lambda: infer(part, mode, **kw))
        warm = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            maps = infer(part, mode, **kw)
            warm.append(time.perf_counter() - t0)
        setup = smooth_setup(part, mode, **kw)
        ours_fun = float(setup.mode.posterior(maps.result.x, setup.problem))
        ref, ref_x, ref_s, _ = scipy_lbfgsb(setup, REFERENCE)
        ref_fun = float(setup.mode.posterior(ref_x, setup.problem))
        D, D_ref = np.asarray(maps.result.x["diffusivity"]), np.asarray(ref_x["diffusivity"])
        rel = np.abs(D - D_ref) / np.abs(D_ref)
        scale = max(abs(ref_fun + float(setup.problem.offset)), 1.0)  # |f|, not |f - f(x0)|
        entry = dict(mode=mode, cells=setup.cells.ncells, converged=maps.success,
                     message=str(maps.result.message), nit=int(maps.result.nit),
                     nfev=int(maps.result.nfev), seconds_cold=cold, cpu_seconds_cold=cold_cpu,
                     seconds_warm=min(warm),
                     objective=ours_fun, objective_reference=ref_fun,
                     objective_rel_diff=abs(ours_fun - ref_fun) / scale,
                     reference_nit=int(ref.nit), reference_message=str(ref.message),
                     reference_seconds=ref_s,
                     D_median_rel_diff=float(np.median(rel)), D_max_rel_diff=float(rel.max()))
        if setup.mode.name == "dv":  # speed at the same settings as infer, alternated
            runs = {"infer": [], "solver": [], "scipy": []}
            for _ in range(args.speed_repeats):
                _, w, c = timed(lambda: infer(part, mode, **kw))
                runs["infer"].append((w, c))
                _, w, c = timed(lambda: solve_map(setup.mode, setup.problem, setup.x0,
                                                  setup.lower, setup.upper, setup.options))
                runs["solver"].append((w, c))
                same, _, w, c = scipy_lbfgsb(setup, dict(setup.options))
                runs["scipy"].append((w, c))
            med = {k: np.median(v, axis=0) for k, v in runs.items()}  # (wall, cpu)
            entry.update(speed_repeats=args.speed_repeats,
                         infer_wall_median=med["infer"][0], infer_cpu_median=med["infer"][1],
                         solver_wall_median=med["solver"][0], solver_cpu_median=med["solver"][1],
                         scipy_wall_median=med["scipy"][0], scipy_cpu_median=med["scipy"][1],
                         scipy_nit=int(same.nit), scipy_nfev=int(same.nfev),
                         speedup_solver_cpu=med["scipy"][1] / med["solver"][1],
                         speedup_solver_wall=med["scipy"][0] / med["solver"][0],
                         speedup_infer_cpu=med["scipy"][1] / med["infer"][1],
                         speedup_infer_wall=med["scipy"][0] / med["infer"][0],
                         runs_wall_cpu=runs)
        results["modes"].append(entry)
        print(json.dumps(entry), flush=True)
        os.makedirs(RESULTS, exist_ok=True)
        with open(args.out, "w") as fd:
            json.dump(results, fd, indent=1, default=float)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
