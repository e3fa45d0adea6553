"""peri 0.1.3 and jaxinfer.imaging on the same synthetic images, in one run.

    .venv/bin/python benchmarks/imaging/bench_peri.py [--cases small,large] [--peri /tmp/peri-venv/bin/python]

The task (issue 8): a noisy image (noise 0.05) of particles of radius ~5 px; start from
positions and radii moved by up to 0.5 px, a flat illumination at the 90th percentile of the
data, bkg = offset = 0 and a PSF 20% too wide; burn then finish. peri runs through
peri_runner.py in its own venv with one thread; jaxinfer runs in this process (XLA's CPU
threads: all cores) twice: the first call includes compilation, the second is warm.
Reported: wall times, final error vs the error at the truth, position / radius RMSE against
the truth and the Cramér–Rao bound (autodiff Fisher matrix at the truth).
Results: benchmarks/results/imaging_peri.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxinfer.imaging import simulate, states, util  # noqa: E402
from jaxinfer.imaging.comp import comp, ilms, objs, psfs  # noqa: E402
from jaxinfer.imaging.opt import optimize  # noqa: E402

HERE = Path(__file__).parent
CASES = {
    "small": dict(shape=(32, 64, 64), n_particles=30),
    "large": dict(shape=(48, 96, 96), n_particles=100),
}
SETTINGS = dict(pad=24, sigma=0.05, ilm_order=(3, 3, 3), n_burn=6, n_finish=4, radius=5.0,
                psf=(2.4, 1.6, 1.6))


def make_state(image, p):
    st = states.ImageState(util.Image(image), [
        objs.PlatonicSpheresCollection(np.asarray(p["pos"], float), np.asarray(p["rad"], float),
                                       zscale=float(p["zscale"])),
        ilms.LegendrePoly2P1D(order=SETTINGS["ilm_order"]), comp.GlobalScalar("bkg", 0.0),
        comp.GlobalScalar("offset", 0.0),
        psfs.AnisotropicGaussianXYZ(sigmas=tuple(np.asarray(p["psf"], float)))],
        pad=SETTINGS["pad"], sigma=SETTINGS["sigma"])
    st.update(st.get("ilm").params, np.asarray(p["ilm"], float))
    st.update(["bkg", "offset"], [float(np.ravel(p["bkg"])[0]), float(p["offset"])])
    return st


def ours(image, start):
    out = {}
    for run in ("first", "warm"):
        st = make_state(image, start)
        t0 = time.perf_counter()
        b = optimize.burn(st, n_loop=SETTINGS["n_burn"], desc=None)
        t1 = time.perf_counter()
        f = optimize.finish(st, n_loop=SETTINGS["n_finish"], desc=None)
        t2 = time.perf_counter()
        out[run] = dict(burn_s=t1 - t0, finish_s=t2 - t1)
    out.update(pos=st.obj_get_positions(), rad=st.obj_get_radii(), error=st.error,
               burn_converged=b["converged"], finish_converged=f["converged"],
               psf=st.get_values(st.get("psf").params))
    return out


def run_peri(python, image, start, truth, workdir):
    case = Path(workdir) / "case.npz"
    res = Path(workdir) / "peri_out.npz"
    np.savez(case, image=image, pos=start["pos"], rad=start["rad"], zscale=start["zscale"],
             ilm=start["ilm"], bkg=np.ravel(start["bkg"]), offset=start["offset"],
             psf=start["psf"], settings=json.dumps({k: v for k, v in SETTINGS.items()}))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    subprocess.run([python, str(HERE / "peri_runner.py"), str(case), str(res)], check=True,
                   env=env)
    r = np.load(res)
    return {k: r[k].tolist() if r[k].ndim else r[k].item() for k in r.files}


def summarise(pos, rad, truth, error):
    dp = np.asarray(pos) - np.asarray(truth["pos"])
    da = np.asarray(rad) - np.asarray(truth["rad"])
    return dict(position_rmse=float(np.sqrt(np.mean(dp ** 2))),
                radius_rmse=float(np.sqrt(np.mean(da ** 2))), final_error=float(error))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="small")
    ap.add_argument("--peri", default="/tmp/peri-venv/bin/python")
    ap.add_argument("--no-peri", action="store_true")
    ap.add_argument("--out", default=str(HERE.parent / "results" / "imaging_peri.json"))
    args = ap.parse_args()
    results = {"settings": dict(SETTINGS, cpu_count=os.cpu_count(),
                                jax_threads="XLA CPU default (all cores)",
                                peri_threads=1, load_average=os.getloadavg()),
               "cases": {}}
    for name in args.cases.split(","):
        spec = CASES[name]
        image, truth, _ = simulate.synthetic_image(
            jax.random.PRNGKey(10), shape=spec["shape"], n_particles=spec["n_particles"],
            radius=SETTINGS["radius"], noise=SETTINGS["sigma"], pad=SETTINGS["pad"],
            ilm_order=SETTINGS["ilm_order"], psf_values=SETTINGS["psf"])
        start = simulate.perturbed_start(jax.random.PRNGKey(11), truth, image)
        truth_np = {k: np.asarray(v) for k, v in truth.items()}
        st_true = make_state(image, truth_np)
        bound = st_true.crb(st_true.param_positions() + st_true.param_radii())
        n = spec["n_particles"]
        entry = {"shape": spec["shape"], "n_particles": n, "true_error": st_true.error,
                 "start_error": make_state(image, start).error,
                 "crb_position_rms": float(np.sqrt(np.mean(bound[:3 * n] ** 2))),
                 "crb_radius_rms": float(np.sqrt(np.mean(bound[3 * n:] ** 2)))}
        o = ours(image, start)
        entry["jaxinfer"] = dict(summarise(o["pos"], o["rad"], truth_np, o["error"]),
                                 first=o["first"], warm=o["warm"],
                                 burn_converged=o["burn_converged"],
                                 finish_converged=o["finish_converged"], psf=o["psf"])
        print(name, "jaxinfer", json.dumps(entry["jaxinfer"]), flush=True)
        if not args.no_peri:
            with tempfile.TemporaryDirectory() as tmp:
                p = run_peri(args.peri, image, start, truth_np, tmp)
            entry["peri"] = dict(summarise(p["pos"], p["rad"], truth_np, p["error"]),
                                 burn_s=p["burn_s"], finish_s=p["finish_s"],
                                 burn_converged=p["burn_converged"],
                                 finish_converged=p["finish_converged"], psf=p["psf"])
            warm = o["warm"]["burn_s"] + o["warm"]["finish_s"]
            entry["speedup_warm"] = (p["burn_s"] + p["finish_s"]) / warm
            print(name, "peri", json.dumps(entry["peri"]), flush=True)
        results["cases"][name] = entry
        Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    sys.exit(main())
