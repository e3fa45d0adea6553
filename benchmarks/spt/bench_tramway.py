"""jaxinfer.spt against TRamWAy 0.7: same trajectories, same tessellation, same priors.

    .venv/bin/python benchmarks/spt/bench_tramway.py [--quick] [--cap 300] [--configs grid,kmeans]

For each tessellation (a 20x20 grid on [-1, 1]², and a ~2,000-cell k-means partition) and each
mode (d, dd, df with smoothing priors, dv, stochastic.dv, d.conj_prior) it runs TRamWAy in its
own venv (/work/venvs/tramway, through benchmarks/spt/bench_tramway_runner.py, with a wall-time
cap per mode) and jaxinfer here, then compares:

* wall time (jaxinfer: first call incl. compilation, and a second warm call) and the ratio;
* whether each optimiser reported convergence (TRamWAy: no OptimizationWarning, not
  interrupted by the cap);
* the final objective of both solutions, evaluated with the SAME objective: the registry's
  posterior of the mode on the problem ``infer`` solves (``jaxinfer.spt.infer.smooth_setup``;
  it matches TRamWAy's own objective functions to 1e-10 relative in tests/spt);
* map differences (RMSE and max abs per feature) and RMSE against the known truth.

The k-means partition is TRamWAy's own (its cell centres are reused by jaxinfer as a Voronoi
tessellation, so both see identical cells). Writes benchmarks/results/spt_tramway.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from jaxinfer.spt import simulate as sim  # noqa: E402
from jaxinfer.spt.cells import distributed  # noqa: E402
from jaxinfer.spt.infer import infer, smooth_setup  # noqa: E402
from jaxinfer.spt.tessellation import tessellate  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TRAMWAY_PYTHON = os.environ.get("TRAMWAY_PYTHON", "/work/venvs/tramway/bin/python")
RESULTS = os.path.join(ROOT, "benchmarks", "results")

SIGMA = 0.02
PRIORS = {
    "d": dict(diffusivity_prior=100.0),
    "dd": dict(diffusivity_prior=100.0, drift_prior=1.0),
    "df": dict(diffusivity_prior=100.0, force_prior=1.0),
    "dv": dict(diffusivity_prior=100.0, potential_prior=10.0),
    "stochastic.dv": dict(diffusivity_prior=100.0, potential_prior=10.0),
    "d.conj_prior": dict(),
}
# TRamWAy: worker_count crashes d/dd/df with priors; dv / stochastic.dv run in-process with 0
TRAMWAY_EXTRA = {"dv": dict(worker_count=0), "stochastic.dv": dict(worker_count=0)}


def machine_info():
    return dict(cpu_count=os.cpu_count(), platform=platform.platform(),
                python=platform.python_version(), jax=jax.__version__,
                device=str(jax.devices()[0]), x64=True,
                affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)


def make_data(n_translocations: int, seed: int = 0) -> pd.DataFrame:
    """Demo fields, field of view [-1, 1]², about ``n_translocations`` translocations."""
    diffusivity, potential = sim.demo_fields()
    n_traj = int(n_translocations / 9 * 2.6)  # ~9 translocations per trajectory, ~38% kept
    df = sim.simulate_trajectories(jax.random.PRNGKey(seed), diffusivity, potential,
                                   n_trajectories=n_traj, mean_length=10, max_length=40,
                                   dt=0.05, sigma=SIGMA, substeps=5,
                                   lower_bound=(-1.6, -1.6), upper_bound=(1.6, 1.6))
    df = sim.crop_to_window(df, (-1, -1), (1, 1))
    # keep whole trajectories until the target is reached
    sizes = df.groupby("n", sort=False).size()
    cum = np.cumsum(sizes.to_numpy() - 1)
    keep_ids = sizes.index[cum <= n_translocations]
    return df[df["n"].isin(keep_ids)].reset_index(drop=True)


def objective(mode, part, maps: pd.DataFrame, priors):
    """The objective infer minimises (the registry's posterior, = TRamWAy's) at a map, cells
    aligned by label; DV without TRamWAy's f(x0) offset. NaN for closed forms."""
    try:
        setup = smooth_setup(part, mode, sigma=SIGMA, **priors)
    except ValueError:  # d.conj_prior: closed form, no objective
        return float("nan")
    table = maps.reindex(np.asarray(setup.cells.cell_ids))
    params = setup.mode.parameters_from(table, setup.cells.dim)
    if any(bool(jnp.any(~jnp.isfinite(v))) for v in params.values()):
        return float("nan")
    problem = dataclasses.replace(setup.problem, offset=jnp.zeros_like(setup.problem.offset))
    return float(setup.mode.posterior(params, problem))


def compare_maps(ours: pd.DataFrame, theirs: pd.DataFrame):
    common = ours.index.intersection(theirs.index)
    out = {"cells_compared": int(len(common)), "cells_ours": int(len(ours)),
           "cells_tramway": int(len(theirs))}
    for column in ours.columns:
        if column in theirs.columns:
            a = ours.loc[common, column].to_numpy(float)
            b = theirs.loc[common, column].to_numpy(float)
            if column == "potential":  # defined up to a constant
                a, b = a - np.nanmean(a), b - np.nanmean(b)
            ok = np.isfinite(a) & np.isfinite(b)
            if ok.any():
                out[column] = dict(rmse=float(np.sqrt(np.mean((a[ok] - b[ok]) ** 2))),
                                   max_abs=float(np.max(np.abs(a[ok] - b[ok]))))
    return out


def run_tramway(traj_path, tessellation, modes, cap, workdir):
    config = dict(trajectories=traj_path, tessellation=tessellation, cap_s=cap,
                  modes=[dict(mode=m, kwargs=dict(sigma=SIGMA, **PRIORS[m],
                                                  **TRAMWAY_EXTRA.get(m, {})))
                         for m in modes])
    cfg = os.path.join(workdir, f"config_{tessellation['method']}.json")
    out = os.path.join(workdir, f"tramway_{tessellation['method']}.json")
    with open(cfg, "w") as fd:
        json.dump(config, fd)
    total_cap = cap * len(modes) + 600
    try:
        subprocess.run([TRAMWAY_PYTHON, os.path.join(HERE, "bench_tramway_runner.py"), cfg, out],
                       check=False, timeout=total_cap)
    except subprocess.TimeoutExpired:
        print("TRamWAy runner exceeded its total cap; using partial results", file=sys.stderr)
    if not os.path.exists(out):
        return None
    with open(out) as fd:
        return json.load(fd)


def run_config(name, df, traj_path, tessellation, modes, cap, workdir, truth_fields):
    print(f"== {name}: {len(df)} points ==", flush=True)
    tram = run_tramway(traj_path, tessellation, modes, cap, workdir)
    if tessellation["method"] == "grid":
        part = tessellate(df, "grid", count_per_dim=tessellation["count_per_dim"],
                          lower_bound=np.asarray(tessellation["lower_bound"]),
                          upper_bound=np.asarray(tessellation["upper_bound"]))
    else:
        if tram is None:
            raise RuntimeError("TRamWAy's k-means partition is needed for the k-means config")
        part = tessellate(df, "voronoi", cell_centers=np.asarray(tram["centers"]))
    cells_all = distributed(part)
    n_tr = int(np.sum(part.cell_index >= 0))
    record = dict(name=name, tessellation=tessellation, translocations=n_tr,
                  cells=int(part.tessellation.number_of_cells),
                  cells_with_data=int(cells_all.ncells), modes={})
    if tram is not None:
        record["tramway_tessellation_s"] = tram.get("tessellation_s")
    for mode in modes:
        priors = PRIORS[mode]
        entry = dict(priors=priors)
        timings = []
        maps = None
        for _ in range(2):
            start = time.perf_counter()
            maps = infer(part, mode, sigma=SIGMA, **priors)
            timings.append(time.perf_counter() - start)
        entry["jaxinfer"] = dict(seconds_first=timings[0], seconds_warm=timings[1],
                                 converged=bool(maps.success))
        if maps.result is not None and np.ndim(maps.result.nit) == 0:
            entry["jaxinfer"].update(nit=int(maps.result.nit), nfev=int(maps.result.nfev),
                                     message=str(maps.result.message))
        ours = maps.maps
        entry["jaxinfer"]["objective"] = objective(mode, part, ours, priors)
        centers = part.tessellation.centers[ours.index.to_numpy()]
        entry["jaxinfer"]["rmse_vs_truth"] = sim.map_errors(ours, sim.truth_at(centers,
                                                                               *truth_fields))
        t = (tram or {}).get("modes", {}).get(mode)
        if t is not None:
            entry["tramway"] = {k: t.get(k) for k in ("seconds", "converged", "interrupted",
                                                      "warnings", "error", "cap_s")}
            if t.get("maps") is not None:
                theirs = pd.DataFrame(t["maps"], index=t["index"])
                entry["tramway"]["objective"] = objective(mode, part, theirs, priors)
                entry["map_difference"] = compare_maps(ours, theirs)
                tc = part.tessellation.centers[theirs.index.to_numpy()]
                entry["tramway"]["rmse_vs_truth"] = sim.map_errors(
                    theirs, sim.truth_at(tc, *truth_fields))
            entry["time_ratio_tramway_over_jaxinfer"] = t["seconds"] / timings[0]
            entry["time_ratio_warm"] = t["seconds"] / timings[1]
        record["modes"][mode] = entry
        j = entry["jaxinfer"]
        line = (f"{name:7s} {mode:14s} jaxinfer {j['seconds_first']:7.2f} s "
                f"(warm {j['seconds_warm']:6.2f}) conv={j['converged']} f={j['objective']:.6g}")
        if "tramway" in entry:
            tr = entry["tramway"]
            line += (f" | tramway {tr['seconds']:7.1f} s conv={tr['converged']}"
                     f" f={tr.get('objective', float('nan')):.6g}"
                     f" | ratio x{entry['time_ratio_tramway_over_jaxinfer']:.0f}")
        print(line, flush=True)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, short caps (a check)")
    parser.add_argument("--cap", type=float, default=300.0, help="TRamWAy seconds per mode")
    parser.add_argument("--kmeans-cap", type=float, default=None,
                        help="TRamWAy seconds per mode on the k-means partition (default: --cap)")
    parser.add_argument("--translocations", type=int, default=68000)
    parser.add_argument("--configs", default="grid,kmeans")
    parser.add_argument("--kmeans-cells", type=int, default=2000)
    parser.add_argument("--modes", default=",".join(PRIORS))
    parser.add_argument("--out", default=os.path.join(RESULTS, "spt_tramway.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.translocations, args.kmeans_cells = 3000, 100
    modes = args.modes.split(",")
    df = make_data(args.translocations)
    truth_fields = sim.demo_fields()
    results = dict(machine=machine_info(), sigma=SIGMA, priors=PRIORS, cap_s=args.cap,
                   data=dict(points=int(len(df)), trajectories=int(df["n"].nunique()),
                             translocations=int(len(df) - df["n"].nunique()),
                             fields="jaxinfer.spt.simulate.demo_fields()", seed=0),
                   configs={})
    os.makedirs(RESULTS, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        traj_path = os.path.join(workdir, "trajectories.txt")
        df.to_csv(traj_path, sep="\t", header=False, index=False, float_format="%.6f")
        configs = {
            "grid": dict(method="grid", count_per_dim=[20, 20] if not args.quick else [6, 6],
                         lower_bound=[-1.0, -1.0], upper_bound=[1.0, 1.0]),
            # rel_min_distance=0: TRamWAy's default (0.8 x mean jump) would cap the cell count
            # near 200 on this field of view
            "kmeans": dict(method="kmeans", rel_min_distance=0.0,
                           avg_location_count=max(1, int(round(len(df) / args.kmeans_cells)))),
        }
        for name in args.configs.split(","):
            cap = args.kmeans_cap if (name == "kmeans" and args.kmeans_cap) else args.cap
            results["configs"][name] = run_config(name, df, traj_path, configs[name], modes,
                                                  cap, workdir, truth_fields)
            with open(args.out, "w") as fd:
                json.dump(results, fd, indent=1, default=float)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
