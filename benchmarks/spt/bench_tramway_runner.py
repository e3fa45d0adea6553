"""TRamWAy 0.7 side of benchmarks/spt/bench_tramway.py (run in TRamWAy's own venv).

    /work/venvs/tramway/bin/python benchmarks/spt/bench_tramway_runner.py CONFIG.json OUT.json

CONFIG: {"trajectories": path (tab-separated n x y t), "tessellation": {"method": "grid",
"count_per_dim": [20, 20], "lower_bound": [...], "upper_bound": [...]} or {"method": "kmeans",
"avg_location_count": k}, "modes": [{"mode": "dv", "kwargs": {...}}, ...], "cap_s": seconds}.

Each mode runs under a wall-time cap: SIGALRM raises KeyboardInterrupt, which TRamWAy's
``interruptible_minimize`` (standard D/DD/DF, DV) and ``minimize_sparse_bfgs`` (stochastic DV)
catch and turn into "interrupted" with the last iterate. Writes OUT with the partition (cell
centres, per-cell translocation counts) and, per mode, the maps, wall time and whether the
optimiser reported convergence.
"""

import json
import signal
import sys
import time
import warnings

import numpy as np
import pandas as pd


class _Timeout(KeyboardInterrupt):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def _patch_interrupted_result():
    """TRamWAy 0.7 bug: an interrupted ``interruptible_minimize`` returns
    ``Result(result, success, message, ncalls)`` but DV / DD / DF then read ``result.x``
    (AttributeError, the last iterate is lost). Rename the first field ``x``."""
    from collections import namedtuple

    import tramway.inference.standard_d as standard_d

    standard_d.Result = namedtuple("Result", "x success message ncalls")


def main(config_path, out_path):
    from tramway.helper import infer, tessellate

    _patch_interrupted_result()

    with open(config_path) as fd:
        config = json.load(fd)
    df = pd.read_csv(config["trajectories"], sep="\t", header=None, names=["n", "x", "y", "t"])
    tess = dict(config["tessellation"])
    method = tess.pop("method")
    for key in ("lower_bound", "upper_bound"):
        if key in tess:
            tess[key] = np.asarray(tess[key], dtype=float)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        part = tessellate(df, method, **tess)
    tessellation_s = time.perf_counter() - start
    centers = np.asarray(part.tessellation.cell_centers, dtype=float)
    out = dict(tessellation_s=tessellation_s, centers=centers.tolist(), modes={},
               tramway_version=__import__("tramway").__version__
               if hasattr(__import__("tramway"), "__version__") else "0.7")
    cap = float(config.get("cap_s", 300))
    signal.signal(signal.SIGALRM, _alarm)
    for entry in config["modes"]:
        mode, kwargs = entry["mode"], dict(entry.get("kwargs", {}))
        record = dict(mode=mode, kwargs=kwargs, cap_s=cap)
        print(f"tramway {method} {mode} ...", file=sys.stderr, flush=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, cap)
            try:
                maps = infer(part, mode, **kwargs)
                signal.setitimer(signal.ITIMER_REAL, 0)
                record["seconds"] = time.perf_counter() - start
                table = maps.maps if hasattr(maps, "maps") else maps
                record["maps"] = {c: table[c].astype(float).tolist() for c in table.columns}
                record["index"] = [int(i) for i in table.index]
            except KeyboardInterrupt:
                signal.setitimer(signal.ITIMER_REAL, 0)
                record["seconds"] = time.perf_counter() - start
                record["maps"] = None
                record["error"] = "time cap reached before the first iteration completed"
            except Exception as err:  # record and go on with the other modes
                signal.setitimer(signal.ITIMER_REAL, 0)
                record["seconds"] = time.perf_counter() - start
                record["maps"] = None
                record["error"] = f"{type(err).__name__}: {err}"
        messages = [str(w.message) for w in caught
                    if "Optimization" in type(w.message).__name__ or "interrupted" in str(w.message)
                    or "ABNORMAL" in str(w.message) or "STOP" in str(w.message)]
        record["warnings"] = messages[:5]
        interrupted = record["seconds"] >= cap * 0.999 or any("interrupt" in m.lower() for m in messages)
        record["interrupted"] = bool(interrupted or record.get("maps") is None)
        record["converged"] = bool(record.get("maps") is not None and not interrupted
                                   and not messages)
        print(f"  {mode}: {record['seconds']:.1f} s, converged={record['converged']}"
              + (f", {record.get('error')}" if record.get("error") else ""),
              file=sys.stderr, flush=True)
        out["modes"][mode] = record
        with open(out_path, "w") as fd:  # keep partial results if killed later
            json.dump(out, fd)
    with open(out_path, "w") as fd:
        json.dump(out, fd)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
