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
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

from jaxinfer.imaging import simulate, states, util  # noqa: E402
from jaxinfer.imaging.comp import comp, ilms, objs, psfs  # noqa: E402
from jaxinfer.imaging.opt import optimize  # noqa: E402

HERE = Path(__file__).parent
# burn / finish's joint= setting: BENCH_JOINT=auto|True|False (default True, the library's)
JOINT = {"true": True, "false": False, "auto": "auto"}[os.environ.get("BENCH_JOINT", "True").lower()]
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
    """burn + finish twice (first call, warm); per run the wall / CPU seconds of each and the
    CPU seconds per stage (globals steps, particle sweeps) summed over the loops."""
    out = {}
    for run in ("first", "warm"):
        st = make_state(image, start)
        stages, mark = {}, [time.process_time()]

        def stage(which):
            def record(d):
                now = time.process_time()
                key = f"{which}_{d['stage']}_cpu_s"
                stages[key] = stages.get(key, 0.0) + now - mark[0]
                mark[0] = now
            return record

        t0, c0 = time.perf_counter(), time.process_time()
        mark[0] = c0
        b = optimize.burn(st, n_loop=SETTINGS["n_burn"], desc=None, progress=stage("burn"),
                          joint=JOINT)
        t1, c1 = time.perf_counter(), time.process_time()
        mark[0] = c1
        f = optimize.finish(st, n_loop=SETTINGS["n_finish"], desc=None,
                            progress=stage("finish"), joint=JOINT)
        t2, c2 = time.perf_counter(), time.process_time()
        out[run] = dict(burn_s=t1 - t0, finish_s=t2 - t1, burn_cpu_s=c1 - c0,
                        finish_cpu_s=c2 - c1, stages=stages)
        print(run, json.dumps(out[run]), flush=True)
    out.update(pos=st.obj_get_positions(), rad=st.obj_get_radii(), error=st.error,
               burn_converged=b["converged"], finish_converged=f["converged"],
               psf=st.get_values(st.get("psf").params))
    return out


def case_key(image, start):
    """sha256 of the image, the start and the settings: what peri's result depends on."""
    h = hashlib.sha256(np.ascontiguousarray(image, np.float64).tobytes())
    for k in sorted(start):
        h.update(k.encode())
        h.update(np.ascontiguousarray(start[k], np.float64).tobytes())
    h.update(json.dumps(SETTINGS, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _alive(pid):
    try:
        os.kill(pid, 0)
        return pid > 0
    except OSError:
        return False


def run_peri(python, image, start, workdir):
    """peri's burn + finish on one case in its own venv, 1 thread. Returns its result dict."""
    case = Path(workdir) / f"case_{case_key(image, start)}.npz"
    res = case.with_name(case.name.replace("case_", "peri_"))
    lock = res.with_suffix(".pid")
    while lock.exists() and not res.exists() and _alive(int(lock.read_text() or 0)):
        time.sleep(10)   # another run of this script is computing the same case
    if not res.exists():
        lock.write_text(str(os.getpid()))
        np.savez(case, image=image, pos=start["pos"], rad=start["rad"], zscale=start["zscale"],
                 ilm=start["ilm"], bkg=np.ravel(start["bkg"]), offset=start["offset"],
                 psf=start["psf"], settings=json.dumps(SETTINGS))
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   MKL_NUM_THREADS="1")
        tmp = res.with_suffix(".part.npz")
        subprocess.run([python, str(HERE / "peri_runner.py"), str(case), str(tmp)], check=True,
                       env=env)
        tmp.rename(res)
        lock.unlink(missing_ok=True)
    r = np.load(res)
    out = {k: r[k].tolist() if r[k].ndim else r[k].item() for k in r.files}
    out["ran_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(res.stat().st_mtime))
    out["case_sha256_16"] = case_key(image, start)
    return out


def summarise(pos, rad, truth, error):
    dp = np.asarray(pos) - np.asarray(truth["pos"])
    da = np.asarray(rad) - np.asarray(truth["rad"])
    return dict(position_rmse=float(np.sqrt(np.mean(dp ** 2))),
                radius_rmse=float(np.sqrt(np.mean(da ** 2))), final_error=float(error))


def make_case(name):
    spec = CASES[name]
    image, truth, _ = simulate.synthetic_image(
        jax.random.PRNGKey(10), shape=spec["shape"], n_particles=spec["n_particles"],
        radius=SETTINGS["radius"], noise=SETTINGS["sigma"], pad=SETTINGS["pad"],
        ilm_order=SETTINGS["ilm_order"], psf_values=SETTINGS["psf"])
    start = simulate.perturbed_start(jax.random.PRNGKey(11), truth, image)
    return image, {k: np.asarray(v) for k, v in truth.items()}, start


def attach_peri(results, peri_out):
    """Put peri's results (``peri_out``: case name -> run_peri's dict) beside ours, with the
    speed ratios."""
    for name, entry in results["cases"].items():
        if name not in peri_out:
            continue
        p = peri_out[name]
        truth_np = {k: np.asarray(v) for k, v in make_case(name)[1].items()}
        entry["peri"] = dict(summarise(p["pos"], p["rad"], truth_np, p["error"]),
                             burn_s=p["burn_s"], finish_s=p["finish_s"],
                             burn_cpu_s=p.get("burn_cpu_s"), finish_cpu_s=p.get("finish_cpu_s"),
                             burn_converged=p["burn_converged"],
                             finish_converged=p["finish_converged"], psf=p["psf"],
                             ran_at=p["ran_at"], case_sha256_16=p["case_sha256_16"])
        warm = entry["jaxinfer"]["warm"]
        first = entry["jaxinfer"]["first"]
        entry["speedup_warm_wall"] = (p["burn_s"] + p["finish_s"]) / (warm["burn_s"] + warm["finish_s"])
        entry["speedup_first_wall"] = (p["burn_s"] + p["finish_s"]) / (first["burn_s"] + first["finish_s"])
        if p.get("burn_cpu_s") is not None:
            entry["speedup_warm_cpu"] = ((p["burn_cpu_s"] + p["finish_cpu_s"])
                                         / (warm["burn_cpu_s"] + warm["finish_cpu_s"]))
        if p.get("burn_cpu_s") is not None:
            entry["speedup_first_cpu"] = ((p["burn_cpu_s"] + p["finish_cpu_s"])
                                          / (first["burn_cpu_s"] + first["finish_cpu_s"]))
        for side in ("jaxinfer", "peri"):
            e = entry[side]
            e["position_rmse_over_crb"] = e["position_rmse"] / entry["crb_position_rms"]
            e["radius_rmse_over_crb"] = e["radius_rmse"] / entry["crb_radius_rms"]
            e["error_over_true"] = e["final_error"] / entry["true_error"] - 1
        print(name, "peri", json.dumps(entry["peri"], default=float), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="small,large")
    ap.add_argument("--peri", default="/tmp/peri-venv/bin/python")
    ap.add_argument("--no-peri", action="store_true")
    ap.add_argument("--peri-only", action="store_true", help="run only peri's side")
    ap.add_argument("--workdir", default=None,
                    help="keep peri's cases and results here (a result for the same image, "
                         "start and settings is reused); default: a temporary folder")
    ap.add_argument("--out", default=str(HERE.parent / "results" / "imaging_peri.json"))
    ap.add_argument("--merge-peri", default=None, metavar="DIR",
                    help="only replace peri's side of --out by the results kept in DIR (from a "
                         "--peri-only run of this session)")
    args = ap.parse_args()
    if args.merge_peri:
        results = json.loads(Path(args.out).read_text())
        peri_out = {}
        for name in results["cases"]:
            image, _, start = make_case(name)
            peri_out[name] = run_peri(args.peri, image, start, args.merge_peri)
        attach_peri(results, peri_out)
        results["settings"]["peri_results_from"] = "a --peri-only run of the same session"
        Path(args.out).write_text(json.dumps(results, indent=2, default=float))
        print(json.dumps(results, indent=2, default=float))
        return
    names = args.cases.split(",")
    cases = {name: make_case(name) for name in names}
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_peri_")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    peri_out, peri_err = {}, []

    def peri_side():   # peri runs meanwhile, one case after the other, in its own process
        try:
            for name in names:
                image, _, start = cases[name]
                peri_out[name] = run_peri(args.peri, image, start, workdir)
        except Exception as e:   # reported in the JSON, ours still runs
            peri_err.append(repr(e))

    peri_thread = None
    if not args.no_peri:
        peri_thread = threading.Thread(target=peri_side)
        peri_thread.start()
    if args.peri_only:
        peri_thread.join()
        print(json.dumps(peri_out, indent=2, default=float), peri_err)
        return
    results = {"settings": dict(SETTINGS, cpu_count=os.cpu_count(),
                                jax_threads=f"XLA CPU default (all {os.cpu_count()} cores)",
                                xla_flags=os.environ.get("XLA_FLAGS", ""),
                                jax_backend=jax.default_backend(),
                                peri_threads=1, load_average_start=os.getloadavg(),
                                joint=os.environ.get("BENCH_JOINT", "True")),
               "cases": {}}
    for name in names:
        image, truth_np, start = cases[name]
        st_true = make_state(image, truth_np)
        bound = st_true.crb(st_true.param_positions() + st_true.param_radii())
        n = CASES[name]["n_particles"]
        entry = {"shape": CASES[name]["shape"], "n_particles": n, "true_error": st_true.error,
                 "start_error": make_state(image, start).error,
                 "crb_position_rms": float(np.sqrt(np.mean(bound[:3 * n] ** 2))),
                 "crb_radius_rms": float(np.sqrt(np.mean(bound[3 * n:] ** 2)))}
        o = ours(image, start)
        entry["jaxinfer"] = dict(summarise(o["pos"], o["rad"], truth_np, o["error"]),
                                 first=o["first"], warm=o["warm"],
                                 burn_converged=o["burn_converged"],
                                 finish_converged=o["finish_converged"], psf=o["psf"])
        print(name, "jaxinfer", json.dumps(entry, default=float), flush=True)
        results["cases"][name] = entry
        partial = Path(args.out).with_suffix(".partial.json")   # ours so far, in case of a kill
        partial.write_text(json.dumps(results, indent=2, default=float))
    results["settings"]["load_average_ours_done"] = os.getloadavg()
    if peri_thread is not None:
        peri_thread.join()
        results["peri_errors"] = peri_err
    attach_peri(results, peri_out)
    results["settings"]["load_average_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    sys.exit(main())
