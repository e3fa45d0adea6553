"""Make tests/mixture/fixtures/lymixture_small.json with lymixture 0.0.2 (the original).

lymixture is not on PyPI; take it from its GitHub tag 0.0.2 and run in the lymph venv:

    /tmp/lymph-venv/bin/pip install lymph-model==1.3.3 emcee scipy
    git clone --branch 0.0.2 https://github.com/rmnldwg/lymixture /tmp/lymixture
    PYTHONPATH=/tmp/lymixture /tmp/lymph-venv/bin/python benchmarks/mixture/make_lymixture_fixtures.py

A small cohort (2 components, 3 subgroups, 4 LNLs, two modalities, missing findings) is drawn
with lymph from known parameters; from a fixed start the script stores lymixture's
per-patient component log-likelihoods, E-step responsibilities, incomplete and complete
log-likelihoods, the closed-form coefficients, one M-step (Powell) and a full EM run to the
quickstart's stop (np.isclose(l_old, l_new, rtol=1e-4)).
"""

import json
import math
import pathlib
import time
import warnings

import numpy as np
import pandas as pd
from lymph.models import Unilateral
from lymixture import LymphMixture, em, utils

warnings.simplefilter("ignore")
ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "mixture" / "fixtures"
GRAPH = {
    ("tumor", "T"): ["I", "II", "III", "IV"],
    ("lnl", "I"): ["II"],
    ("lnl", "II"): ["III"],
    ("lnl", "III"): ["IV"],
    ("lnl", "IV"): [],
}
MODALITIES = {"CT": (0.76, 0.81), "MRI": (0.63, 0.86)}
EARLY = [math.comb(10, k) * 0.3**k * 0.7 ** (10 - k) for k in range(11)]
TRUTH = [
    {"TtoI_spread": 0.02, "TtoII_spread": 0.5, "TtoIII_spread": 0.05, "TtoIV_spread": 0.01,
     "ItoII_spread": 0.2, "IItoIII_spread": 0.3, "IIItoIV_spread": 0.1, "late_p": 0.6},
    {"TtoI_spread": 0.4, "TtoII_spread": 0.2, "TtoIII_spread": 0.02, "TtoIV_spread": 0.01,
     "ItoII_spread": 0.5, "IItoIII_spread": 0.1, "IIItoIV_spread": 0.3, "late_p": 0.4},
]
COEFS = np.array([[0.85, 0.5, 0.15], [0.15, 0.5, 0.85]])
SIZES = {"a": 50, "b": 50, "c": 50}


def cohort(rng):
    tables = []
    for g, (label, size) in enumerate(SIZES.items()):
        assign = rng.choice(2, size=size, p=COEFS[:, g])
        for c in range(2):
            model = Unilateral.binary(graph_dict=GRAPH, max_time=10)
            for name, (spec, sens) in MODALITIES.items():
                model.set_modality(name, spec, sens)
            model.set_distribution("early", EARLY)
            model.set_distribution("late", utils.late_binomial)
            model.set_params(**TRUTH[c])
            n = int((assign == c).sum())
            table = model.draw_patients(n, stage_dist=[0.6, 0.4], rng=rng)
            table[("tumor", "1", "subsite")] = label
            tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    obs = [c for c in table.columns if c[0] in MODALITIES]
    mask = rng.random((len(table), len(obs))) < 0.2
    values = table[obs].astype(object).to_numpy().copy()
    values[mask] = None
    table[obs] = values
    return table


def build(table):
    model = LymphMixture(model_kwargs={"graph_dict": GRAPH}, num_components=2)
    model.set_distribution("early", EARLY)
    model.set_distribution("late", utils.late_binomial)
    model.load_patient_data(table, split_by=("tumor", "1", "subsite"), mapping=lambda x: x)
    for name, (spec, sens) in MODALITIES.items():
        model.set_modality(name, spec, sens)
    return model


def main():
    rng = np.random.default_rng(11)
    table = cohort(rng)
    csv = table.to_csv(index=False)
    table = pd.read_csv(pd.io.common.StringIO(csv), header=[0, 1, 2])
    model = build(table)
    start = rng.uniform(0.05, 0.95, size=len(model.get_params()))
    model.set_params(*start)
    start_params = model.get_params(as_dict=True)
    out = {"graph": [[list(k), v] for k, v in GRAPH.items()], "modalities": MODALITIES,
           "early_pmf": EARLY, "csv": csv, "start_params": start_params}
    out["component_loglik"] = model.patient_component_likelihoods(log=True).tolist()
    out["incomplete_loglik"] = float(model.incomplete_data_likelihood())
    resps = em.expectation(model, start_params)
    out["resps"] = resps.tolist()
    model.set_resps(resps)
    out["complete_loglik"] = float(model.complete_data_likelihood())
    out["infer_coefs"] = model.infer_mixture_coefs(new_resps=resps).to_numpy().tolist()
    t0 = time.perf_counter()
    params = em.maximization(model, resps)
    out["mstep_seconds"] = time.perf_counter() - t0
    out["mstep_params"] = params
    out["mstep_complete_loglik"] = float(model.complete_data_likelihood())
    # the quickstart's loop, from the same start
    model.set_params(**start_params)
    ll_old, nit, t0 = -np.inf, 0, time.perf_counter()
    history = []
    params = start_params
    while True:
        resps = em.expectation(model, params)
        params = em.maximization(model, resps)
        ll_new = float(model.incomplete_data_likelihood())
        history.append(ll_new)
        nit += 1
        if np.isclose(ll_old, ll_new, rtol=1e-4) or nit >= 100:
            break
        ll_old = ll_new
    out["em"] = {"loglik": ll_new, "nit": nit, "seconds": time.perf_counter() - t0,
                 "params": params, "history": history}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lymixture_small.json").write_text(json.dumps(out))
    print("incomplete", out["incomplete_loglik"], "EM", out["em"]["loglik"], nit, "iterations",
          round(out["em"]["seconds"], 1), "s")


if __name__ == "__main__":
    main()
