"""jaxinfer.spt alone at scale: up to 10,000 cells and 10^6 translocations.

    .venv/bin/python benchmarks/spt/bench_scaling.py [--quick] [--total-cap 1200]

Simulated trajectories in the demo fields (field of view [-1, 1]²), regular grids of
20x20 ... 100x100 cells, modes d (smoothing prior) and dv. Records wall time of the first call
(incl. compilation) and a warm second call, iterations, convergence and RMSE against the known
truth. TRamWAy is not run here (on the 400-cell grid its D mode alone takes ~10 min: see
bench_tramway.py). Writes benchmarks/results/spt_scaling.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_tramway import RESULTS, SIGMA, machine_info, make_data  # noqa: E402

from jaxinfer.spt import simulate as sim  # noqa: E402
from jaxinfer.spt.infer import infer  # noqa: E402
from jaxinfer.spt.tessellation import tessellate  # noqa: E402

PRIORS = {"d": dict(diffusivity_prior=100.0), "dv": dict(diffusivity_prior=100.0,
                                                         potential_prior=10.0)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--total-cap", type=float, default=1500.0,
                        help="stop starting new cases after this many seconds")
    parser.add_argument("--out", default=os.path.join(RESULTS, "spt_scaling.json"))
    parser.add_argument("--cases", default=None,
                        help="comma-separated cells:translocations pairs, e.g. 10000:1000000")
    parser.add_argument("--append", action="store_true",
                        help="add the cases to an existing --out file")
    args = parser.parse_args(argv)
    if args.cases:
        cases = [tuple(int(v) for v in c.split(":")) for c in args.cases.split(",")]
    elif args.quick:
        cases = [(100, 5_000), (400, 20_000)]
    else:
        cases = [(400, 100_000), (2_500, 100_000), (10_000, 100_000), (400, 1_000_000),
                 (2_500, 1_000_000), (10_000, 1_000_000)]
    start_all = time.perf_counter()
    results = dict(machine=machine_info(), sigma=SIGMA, priors=PRIORS, cases=[])
    if args.append and os.path.exists(args.out):
        with open(args.out) as fd:
            results = json.load(fd)
        # a rerun case replaces its old entries
        # a rerun case replaces its old entries (the cropped count is within 5% of the
        # requested one)
        def rerun(c):
            return any(c["cells"] == cells and abs(c["translocations"] - n) <= 0.05 * n
                       for cells, n in cases)
        results["cases"] = [c for c in results["cases"] if "skipped" not in c and not rerun(c)]
    data = {}
    truth_fields = sim.demo_fields()
    for cells, n_tr in cases:
        if time.perf_counter() - start_all > args.total_cap:
            results["cases"].append(dict(cells=cells, translocations=n_tr,
                                         skipped="total time cap reached"))
            continue
        if n_tr not in data:
            t0 = time.perf_counter()
            data[n_tr] = make_data(n_tr, seed=1)
            print(f"simulated {len(data[n_tr])} points in {time.perf_counter() - t0:.1f} s",
                  flush=True)
        df = data[n_tr]
        per_dim = int(round(np.sqrt(cells)))
        t0 = time.perf_counter()
        part = tessellate(df, "grid", count_per_dim=[per_dim, per_dim],
                          lower_bound=np.array([-1.0, -1.0]), upper_bound=np.array([1.0, 1.0]))
        tess_s = time.perf_counter() - t0
        for mode, priors in PRIORS.items():
            timings, cpu = [], []
            maps = None
            for _ in range(2):
                t0, c0 = time.perf_counter(), time.process_time()
                maps = infer(part, mode, sigma=SIGMA, **priors)
                timings.append(time.perf_counter() - t0)
                cpu.append(time.process_time() - c0)
            centers = part.tessellation.centers[maps.maps.index.to_numpy()]
            errors = sim.map_errors(maps.maps, sim.truth_at(centers, *truth_fields))
            entry = dict(cells=per_dim * per_dim, cells_with_data=int(len(maps.maps)),
                         translocations=int(np.sum(part.cell_index >= 0)),
                         requested_translocations=n_tr, mode=mode,
                         tessellation_s=tess_s, seconds_first=timings[0],
                         seconds_warm=timings[1], cpu_seconds_first=cpu[0],
                         cpu_seconds_warm=cpu[1], converged=bool(maps.success),
                         nit=int(maps.result.nit), nfev=int(maps.result.nfev),
                         message=str(maps.result.message), rmse_vs_truth=errors)
            results["cases"].append(entry)
            print(f"{entry['cells']:6d} cells {entry['translocations']:8d} translocations "
                  f"{mode:3s}: {timings[0]:7.2f} s first, {timings[1]:7.2f} s warm, "
                  f"{entry['nit']} it, converged={entry['converged']}, RMSE {errors}", flush=True)
            os.makedirs(RESULTS, exist_ok=True)
            with open(args.out, "w") as fd:
                json.dump(results, fd, indent=1, default=float)
    results["total_s"] = results.get("total_s", 0.0) + time.perf_counter() - start_all
    with open(args.out, "w") as fd:
        json.dump(results, fd, indent=1, default=float)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
