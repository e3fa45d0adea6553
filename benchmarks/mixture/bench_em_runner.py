"""lymixture 0.0.2's EM on a cohort given as CSV; run in the lymph venv by bench_em.py.

    PYTHONPATH=/path/to/lymixture /tmp/lymph-venv/bin/python bench_em_runner.py in.json out.json

``in.json``: {"csv", "graph", "modalities", "early_pmf", "start_params", "time_cap"}. The loop
is the quickstart's (expectation, maximization, incomplete log-likelihood); it records when
the quickstart stop (np.isclose(l_old, l_new, rtol=1e-4)) first holds and goes on to
|l_new - l_old| < 1e-3 or the time cap.
"""

import json
import sys
import time
import warnings

import numpy as np
import pandas as pd
from lymixture import LymphMixture, em, utils

warnings.simplefilter("ignore")


def main(inp, out):
    cfg = json.loads(open(inp).read())
    graph = {tuple(k): v for k, v in cfg["graph"]}
    table = pd.read_csv(pd.io.common.StringIO(cfg["csv"]), header=[0, 1, 2])
    model = LymphMixture(model_kwargs={"graph_dict": graph}, num_components=2)
    model.set_distribution("early", cfg["early_pmf"])
    model.set_distribution("late", utils.late_binomial)
    model.load_patient_data(table, split_by=("tumor", "1", "subsite"), mapping=lambda x: x)
    for name, (spec, sens) in cfg["modalities"].items():
        model.set_modality(name, spec, sens)
    model.set_params(**cfg["start_params"])
    params = cfg["start_params"]
    ll_old, nit, start = -np.inf, 0, time.perf_counter()
    result = {"quickstart": None, "abs_1e-3": None, "history": []}
    while True:
        resps = em.expectation(model, params)
        params = em.maximization(model, resps)
        ll = float(model.incomplete_data_likelihood())
        nit += 1
        elapsed = time.perf_counter() - start
        result["history"].append([elapsed, ll])
        record = {"seconds": elapsed, "nit": nit, "loglik": ll, "params": params}
        if result["quickstart"] is None and np.isclose(ll_old, ll, rtol=1e-4):
            result["quickstart"] = record
        if abs(ll - ll_old) < 1e-3:
            result["abs_1e-3"] = record
            break
        if elapsed > cfg["time_cap"]:
            result["capped"] = record
            break
        ll_old = ll
    open(out, "w").write(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
