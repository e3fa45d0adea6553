"""glimix-core side of bench_glimix.py: run in the glimix-core 3.1.14 virtual environment.

    /work/venvs/glimix/bin/python bench_glimix_runner.py DATA.npz TASKS.json OUT.json OUT.npz

Reads the problems written by bench_glimix.py, runs each task with glimix-core and writes wall
times and results (scalars in OUT.json, per-candidate arrays in OUT.npz). Thread counts are set
by the caller through OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS.
This file imports nothing from jaxinfer (it runs where jaxinfer is not installed).
"""

import json
import sys
import time
import warnings

import numpy as np


def _best_of(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, times


def run_lmm(data, prefix, repeats, arrays):
    from glimix_core.lmm import LMM
    from numpy_sugar.linalg import economic_qs

    y, X, K, G = (data[f"{prefix}_{k}"] for k in ("y", "X", "K", "G"))
    QS, t_qs = _best_of(lambda: economic_qs(K), 1)

    def fit():
        lmm = LMM(y, X, QS, restricted=False)
        lmm.fit(verbose=False)
        return lmm

    lmm, t_fit = _best_of(fit, repeats)
    scanner = lmm.get_fast_scanner()

    def scan():
        return scanner.fast_scan(G, verbose=False)

    result, t_scan = _best_of(scan, max(1, repeats - 1))
    for key in ("lml", "effsizes1", "effsizes1_se", "scale"):
        arrays[f"{prefix}_scan_{key}"] = np.asarray(result[key])
    return {
        "time_qs": t_qs, "time_fit": t_fit, "time_scan": t_scan,
        "lml": float(lmm.lml()), "beta": np.asarray(lmm.beta).tolist(), "delta": float(lmm.delta),
        "scale": float(lmm.scale), "null_lml": float(scanner.null_lml()),
    }


def run_kron2sum(data, prefix, repeats, arrays):
    from glimix_core.lmm import Kron2Sum

    Y, A, X, G = (data[f"{prefix}_{k}"] for k in ("Y", "A", "X", "G"))
    rank = int(data[f"{prefix}_rank"])

    def fit():
        model = Kron2Sum(Y, A, X, G, rank=rank, restricted=False)
        model.fit(verbose=False)
        return model

    model, t_fit = _best_of(fit, repeats)
    return {
        "time_fit": t_fit, "lml": float(model.lml()), "B": np.asarray(model.B).tolist(),
        "C0": np.asarray(model.C0).tolist(), "C1": np.asarray(model.C1).tolist(),
    }


def run_glmm(data, prefix, repeats, arrays):
    from glimix_core.glmm import GLMMExpFam
    from numpy_sugar.linalg import economic_qs

    y, X, K = (data[f"{prefix}_{k}"] for k in ("y", "X", "K"))
    likelihood = str(data[f"{prefix}_likelihood"])
    lik = (likelihood, data[f"{prefix}_ntrials"]) if likelihood == "binomial" else (likelihood,)
    QS = economic_qs(K)

    cpu = []

    def fit():
        start = time.process_time()
        model = GLMMExpFam(y, lik, X, QS)
        model.fit(verbose=False)
        cpu.append(time.process_time() - start)
        return model

    model, t_fit = _best_of(fit, repeats)
    return {
        "time_fit": t_fit, "cpu_fit": cpu, "lml": float(model.lml()), "beta": np.asarray(model.beta).tolist(),
        "scale": float(model.scale), "delta": float(model.delta),
    }


RUNNERS = {"lmm": run_lmm, "kron2sum": run_kron2sum, "glmm": run_glmm}


def main(argv):
    data_path, tasks_path, out_json, out_npz = argv
    data = np.load(data_path, allow_pickle=False)
    tasks = json.load(open(tasks_path))
    import glimix_core

    results = {"glimix_core": glimix_core.__version__, "numpy": np.__version__, "tasks": {}}
    arrays = {}
    for task in tasks:
        name = task["name"]
        print(f"[glimix-core] {name}", file=sys.stderr, flush=True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = RUNNERS[task["kind"]](data, name, task.get("repeats", 1), arrays)
            out["ok"] = True
        except Exception as err:  # record the failure, keep going
            out = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        results["tasks"][name] = out
        with open(out_json, "w") as fh:
            json.dump(results, fh, indent=1)
        np.savez(out_npz, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
