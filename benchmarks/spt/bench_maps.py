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
* dv is also timed with scipy at infer's own settings (ftol 1e-8, maxcor 10): the speed ratio.

Writes benchmarks/results/spt_maps.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tramway import RESULTS, SIGMA, machine_info, make_data  # noqa: E402

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
    res = scipy.optimize.minimize(fun, np.asarray(x0_flat), jac=True, method="L-BFGS-B",
                                  bounds=bounds, options=options)
    seconds = time.perf_counter() - t0
    return res, unravel(jnp.asarray(res.x)), seconds


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--translocations", type=int, default=65_000)
    parser.add_argument("--repeats", type=int, default=3, help="warm timings (best of)")
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
        t0 = time.perf_counter()
        maps = infer(part, mode, **kw)
        cold = time.perf_counter() - t0
        warm = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            maps = infer(part, mode, **kw)
            warm.append(time.perf_counter() - t0)
        setup = smooth_setup(part, mode, **kw)
        ours_fun = float(setup.mode.posterior(maps.result.x, setup.problem))
        ref, ref_x, ref_s = scipy_lbfgsb(setup, REFERENCE)
        ref_fun = float(setup.mode.posterior(ref_x, setup.problem))
        D, D_ref = np.asarray(maps.result.x["diffusivity"]), np.asarray(ref_x["diffusivity"])
        rel = np.abs(D - D_ref) / np.abs(D_ref)
        scale = max(abs(ref_fun + float(setup.problem.offset)), 1.0)  # |f|, not |f - f(x0)|
        entry = dict(mode=mode, cells=setup.cells.ncells, converged=maps.success,
                     message=str(maps.result.message), nit=int(maps.result.nit),
                     nfev=int(maps.result.nfev), seconds_cold=cold, seconds_warm=min(warm),
                     objective=ours_fun, objective_reference=ref_fun,
                     objective_rel_diff=abs(ours_fun - ref_fun) / scale,
                     reference_nit=int(ref.nit), reference_message=str(ref.message),
                     reference_seconds=ref_s,
                     D_median_rel_diff=float(np.median(rel)), D_max_rel_diff=float(rel.max()))
        if setup.mode.name == "dv":  # speed at the same settings as infer
            same, _, same_s = scipy_lbfgsb(setup, dict(setup.options))
            entry.update(scipy_same_settings_seconds=same_s, scipy_same_settings_nit=int(same.nit),
                         speedup_vs_scipy=same_s / min(warm))
        results["modes"].append(entry)
        print(json.dumps(entry), flush=True)
        os.makedirs(RESULTS, exist_ok=True)
        with open(args.out, "w") as fd:
            json.dump(results, fd, indent=1, default=float)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
