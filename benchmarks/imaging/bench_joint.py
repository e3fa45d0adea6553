"""jaxinfer's burn + finish on bench_peri.py's 32x64x64 case, the joint LM against peri's
alternation in one run (CPU seconds, first call and warm; ours only: peri's side is in
imaging_peri*.json).

    .venv/bin/python benchmarks/imaging/bench_joint.py [--case small]

Results: benchmarks/results/imaging_joint_vs_alternation.json.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).parent))

import bench_peri as B  # noqa: E402
from jaxinfer.imaging.opt import optimize  # noqa: E402


def run(image, start, joint):
    out = {}
    for which in ("first", "warm"):
        st = B.make_state(image, start)
        c0 = time.process_time()
        b = optimize.burn(st, n_loop=B.SETTINGS["n_burn"], desc=None, joint=joint)
        c1 = time.process_time()
        f = optimize.finish(st, n_loop=B.SETTINGS["n_finish"], desc=None, joint=joint)
        c2 = time.process_time()
        out[which] = dict(burn_cpu_s=c1 - c0, finish_cpu_s=c2 - c1, load_average=os.getloadavg())
    out.update(error=st.error, pos=st.obj_get_positions(), rad=st.obj_get_radii(),
               burn_converged=b["converged"], finish_converged=f["converged"])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", default="small")
    ap.add_argument("--out", default=str(Path(__file__).parents[1] / "results"
                                         / "imaging_joint_vs_alternation.json"))
    args = ap.parse_args()
    image, truth, start = B.make_case(args.case)
    st_true = B.make_state(image, truth)
    n = len(truth["rad"])
    # the positions' bound with the radii unknown too (as bench_peri.py)
    bound = st_true.crb(st_true.param_positions() + st_true.param_radii())
    crb = float(np.sqrt(np.mean(bound[:3 * n] ** 2)))
    res = {"case": args.case, "shape": B.CASES[args.case]["shape"], "true_error": st_true.error,
           "crb_position_rms": crb, "cpu_count": os.cpu_count(),
           "jax_threads": f"XLA CPU default (all {os.cpu_count()} cores)"}
    for name, joint in (("joint", True), ("alternation", False)):
        o = run(image, start, joint)
        s = B.summarise(o.pop("pos")[:n], o.pop("rad")[:n], truth, o["error"])
        o.update(s, error_over_true=o["error"] / st_true.error - 1,
                 position_rmse_over_crb=s["position_rmse"] / crb)
        res[name] = o
        print(name, json.dumps(o, default=float), flush=True)
    w = {k: res[k]["warm"]["burn_cpu_s"] + res[k]["warm"]["finish_cpu_s"]
         for k in ("joint", "alternation")}
    res["warm_cpu_ratio_alternation_over_joint"] = w["alternation"] / w["joint"]
    Path(args.out).write_text(json.dumps(res, indent=2, default=float))


if __name__ == "__main__":
    main()
