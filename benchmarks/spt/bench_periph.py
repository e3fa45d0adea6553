"""Conjugate-prior D and Bayes factors: jaxinfer vs TRamWAy 0.7 on the same per-cell inputs.

    .venv/bin/python benchmarks/spt/bench_periph.py [--cells 400] [--tramway /work/venvs/tramway/bin/python]

Random per-cell statistics (n, V, V_pi, zeta_t, zeta_sp, sigma²) for M cells. TRamWAy's
per-cell functions (``get_D_confidence_interval``, ``_calculate_one_bayes_factor`` with the
minimal n) run in its own venv through a subprocess on the same inputs; ours run jitted and
vectorised (first call incl. compilation, then a warm call). Prints the speed ratio and the
agreement; writes benchmarks/results/spt_periph.json.
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

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from jaxinfer.spt.bayes_factors import calculate_bayes_factors  # noqa: E402
from jaxinfer.spt.conjugate import d_conj_prior_from_statistics  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "..", "results")

TRAMWAY_SIDE = r"""
import json, sys, time, warnings
import numpy as np
warnings.simplefilter("ignore")
from tramway.inference.bayes_factors.get_D_posterior import get_D_confidence_interval
from tramway.inference.bayes_factors.calculate_bayes_factors import _calculate_one_bayes_factor
d = np.load(sys.argv[1])
M = len(d["n"])
t0 = time.perf_counter()
maps, cis = [], []
for i in range(M):
    m, ci = get_D_confidence_interval(0.95, d["n"][i], d["zeta_t"][i], d["V"][i], d["V_pi"][i],
                                      d["dt"], d["sigma2"][i], 2)
    maps.append(m); cis.append(list(ci))
t_conj = time.perf_counter() - t0
t0 = time.perf_counter()
lg, force, min_n = [], [], []
for i in range(M):
    b, f, m = _calculate_one_bayes_factor(d["zeta_t"][i], d["zeta_sp"][i], d["n"][i], d["V"][i],
                                          d["V_pi"][i], d["sigma2"][i], 2, B_threshold=10,
                                          bl_need_min_n=True)
    lg.append(float(b)); force.append(float(f)); min_n.append(float(m))
t_bf = time.perf_counter() - t0
json.dump(dict(conj_s=t_conj, bf_s=t_bf, map=[float(x) for x in maps], ci=cis, lg_B=lg,
               force=force, min_n=min_n), open(sys.argv[2], "w"))
"""


def make_inputs(M, seed=0):
    rng = np.random.default_rng(seed)
    n = rng.integers(5, 300, M).astype(float)
    V = rng.uniform(0.01, 0.05, M)
    return dict(n=n, V=V, V_pi=V * rng.uniform(0.7, 1.4, M),
                zeta_t=rng.normal(scale=0.3, size=(M, 2)), zeta_sp=rng.normal(scale=0.3, size=(M, 2)),
                sigma2=rng.choice([0.0, 0.0004, 0.0009], M), dt=np.float64(0.05))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=400)
    parser.add_argument("--tramway", default="/work/venvs/tramway/bin/python")
    parser.add_argument("--out", default=os.path.join(RESULTS, "spt_periph.json"))
    args = parser.parse_args(argv)
    d = make_inputs(args.cells)

    conj = jax.jit(jax.vmap(lambda n, z, V, Vp, s2: d_conj_prior_from_statistics(n, z, V, Vp, 0.05, s2)))
    timings = {}
    t0 = time.perf_counter()
    out = jax.block_until_ready(conj(d["n"], d["zeta_t"], d["V"], d["V_pi"], d["sigma2"]))
    timings["conj_first_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = jax.block_until_ready(conj(d["n"], d["zeta_t"], d["V"], d["V_pi"], d["sigma2"]))
    timings["conj_warm_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bf = jax.block_until_ready(calculate_bayes_factors(d["zeta_t"], d["zeta_sp"], d["n"], d["V"],
                                                       d["V_pi"], d["sigma2"]))
    timings["bf_first_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bf = jax.block_until_ready(calculate_bayes_factors(d["zeta_t"], d["zeta_sp"], d["n"], d["V"],
                                                       d["V_pi"], d["sigma2"]))
    timings["bf_warm_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(calculate_bayes_factors(d["zeta_t"], d["zeta_sp"], d["n"], d["V"],
                                                  d["V_pi"], d["sigma2"], minimal_n=False))
    timings["bf_without_min_n_s"] = time.perf_counter() - t0

    result = dict(machine=dict(cpu_count=os.cpu_count(), platform=platform.platform(),
                               jax=jax.__version__, device=str(jax.devices()[0])),
                  cells=args.cells, jaxinfer=timings)
    if os.path.exists(args.tramway):
        with tempfile.TemporaryDirectory() as tmp:
            np.savez(os.path.join(tmp, "in.npz"), **d)
            subprocess.run([args.tramway, "-c", TRAMWAY_SIDE, os.path.join(tmp, "in.npz"),
                            os.path.join(tmp, "out.json")], check=True)
            with open(os.path.join(tmp, "out.json")) as fd:
                tw = json.load(fd)
        result["tramway"] = dict(conj_s=tw["conj_s"], bf_s=tw["bf_s"])
        ci = np.stack([out["ci_low"], out["ci_high"]], axis=-1)
        result["agreement"] = dict(
            map_max_rel=float(np.max(np.abs(out["diffusivity"] / np.array(tw["map"]) - 1))),
            ci_max_rel=float(np.max(np.abs(ci / np.array(tw["ci"]) - 1))),
            lg_B_max_abs=float(np.max(np.abs(np.asarray(bf[0]) - np.array(tw["lg_B"])))),
            force_mismatches=int(np.sum(np.asarray(bf[1]) != np.array(tw["force"]))),
            min_n_max_abs=float(np.nanmax(np.abs(np.asarray(bf[2]) - np.array(tw["min_n"])))),
            min_n_nan_mismatches=int(np.sum(np.isnan(np.asarray(bf[2]))
                                            != np.isnan(np.array(tw["min_n"])))),
        )
        result["speedup_warm"] = dict(conj=tw["conj_s"] / timings["conj_warm_s"],
                                      bf=tw["bf_s"] / timings["bf_warm_s"])
        result["speedup_first_call"] = dict(conj=tw["conj_s"] / timings["conj_first_s"],
                                            bf=tw["bf_s"] / timings["bf_first_s"])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fd:
        json.dump(result, fd, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
