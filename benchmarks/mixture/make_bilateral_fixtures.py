"""Make tests/mixture/fixtures/lymph_bilateral.json with lymph-model 1.3.3's Bilateral.

Run in a separate environment with the original installed:

    python3 -m venv /tmp/lymph-venv && /tmp/lymph-venv/bin/pip install lymph-model==1.3.3
    /tmp/lymph-venv/bin/python benchmarks/mixture/make_bilateral_fixtures.py

A 3-LNL graph, CT and MRI, 120 patients drawn by lymph's Bilateral (ipsi- and
contralateral findings), ~25% of the findings removed (missing); early = Binom(10, 0.3)
frozen, late = parametric binomial. For each symmetry setting (lymph's default: tumour
spread asymmetric, LNL spread symmetric; all asymmetric; all symmetric) it stores the
parameter names and values in lymph's get_params order, the joint state distribution per
T-stage, per-patient likelihoods per T-stage, the total log-likelihood, and posterior state
distributions and risks for three diagnoses (RISK_CASES); plus the column layout of
lymph's Bilateral.draw_patients.
"""

import json
import math
import pathlib

import numpy as np
import pandas as pd
from lymph.models import Bilateral

OUT = pathlib.Path(__file__).resolve().parents[2] / "tests" / "mixture" / "fixtures"
GRAPH = {("tumor", "T"): ["I", "II", "III"], ("lnl", "I"): ["II"], ("lnl", "II"): ["III"],
         ("lnl", "III"): []}
MODALITIES = {"CT": [0.76, 0.81], "MRI": [0.63, 0.81]}
SYMMETRIES = {"default": {"tumor_spread": False, "lnl_spread": True},
              "asymmetric": {"tumor_spread": False, "lnl_spread": False},
              "symmetric": {"tumor_spread": True, "lnl_spread": True}}


def binom(support, n, p):
    return np.array([math.comb(n, int(k)) * p**k * (1 - p) ** (n - k) for k in support])


def late_binomial(support, p=0.5):
    return binom(support, int(support[-1]), p)


EARLY = binom(np.arange(11), 10, 0.3)


def build(symmetry):
    model = Bilateral(GRAPH, is_symmetric=dict(symmetry), uni_kwargs={"max_time": 10})
    for name, (spec, sens) in MODALITIES.items():
        model.set_modality(name, spec, sens)
    model.set_distribution("early", EARLY)
    model.set_distribution("late", late_binomial)
    return model


# (diagnosis per side, involvement per side, T-stage) for Bilateral.risk /
# posterior_state_dist; a side left out of the diagnosis contributes 1 (lymph warns)
RISK_CASES = [
    ({"ipsi": {"CT": {"I": True, "II": False, "III": None}, "MRI": {"II": True}},
      "contra": {"CT": {"I": False, "II": False, "III": False}}},
     {"ipsi": {"II": True}, "contra": {"II": True}}, "early"),
    ({"ipsi": {"MRI": {"I": True, "III": True}}, "contra": {"MRI": {"II": True}}},
     {"ipsi": {"I": False, "III": True}}, "late"),
    ({"ipsi": {"CT": {"II": True}}},
     {"contra": {"I": None, "II": True, "III": False}}, "early"),
]


def risk_case(model, diagnosis, involvement, t_stage):
    return {"diagnosis": diagnosis, "involvement": involvement, "t_stage": t_stage,
            "posterior": model.posterior_state_dist(given_diagnosis=diagnosis,
                                                    t_stage=t_stage).tolist(),
            "risk": float(model.risk(involvement, given_diagnosis=diagnosis, t_stage=t_stage))}


def main():
    rng = np.random.default_rng(11)
    drawer = build(SYMMETRIES["asymmetric"])
    names = list(drawer.get_params())
    drawer.set_params(**{n: float(v) for n, v in zip(names, rng.uniform(0.05, 0.5, len(names)))})
    table = drawer.draw_patients(120, [0.6, 0.4], seed=3)
    findings = [c for c in table.columns if c[0] in MODALITIES]
    values = table[findings].to_numpy(dtype=object).copy()
    values[rng.uniform(size=values.shape) < 0.25] = None
    table[findings] = values
    csv = table.to_csv(index=False)
    table = pd.read_csv(pd.io.common.StringIO(csv), header=[0, 1, 2])
    cases = {}
    for label, symmetry in SYMMETRIES.items():
        model = build(symmetry)
        model.load_patient_data(table, mapping=lambda x: x)
        names = list(model.get_params())
        params = {n: float(v) for n, v in zip(names, rng.uniform(0.05, 0.6, len(names)))}
        model.set_params(**params)
        cases[label] = {
            "is_symmetric": symmetry, "param_names": names, "params": params,
            "positional": list(model.get_params(as_dict=False)),
            "state_dist": {t: model.state_dist(t).tolist() for t in ("early", "late")},
            "patient_likelihoods": {t: model.patient_likelihoods(t).tolist()
                                    for t in ("early", "late")},
            "loglik": float(model.likelihood(log=True)),
            "loglik_late": float(model.likelihood(log=True, t_stage="late")),
            "risks": [risk_case(model, *case) for case in RISK_CASES],
        }
    drawn = build(SYMMETRIES["default"]).draw_patients(5, [0.6, 0.4], seed=1)
    out = {"graph": [[list(k), v] for k, v in GRAPH.items()], "modalities": MODALITIES,
           "draw_columns": [list(c) for c in drawn.columns],
           "early_pmf": EARLY.tolist(), "csv": csv, "cases": cases,
           "made_by": "lymph-model 1.3.3, benchmarks/mixture/make_bilateral_fixtures.py"}
    (OUT / "lymph_bilateral.json").write_text(json.dumps(out))
    print({k: (v["param_names"], v["loglik"]) for k, v in cases.items()})


if __name__ == "__main__":
    main()
