"""Make tests/mixture/fixtures/lymph_*.json with lymph-model 1.3.3 (the original).

Run in a separate environment with the original installed:

    python3 -m venv /tmp/lymph-venv && /tmp/lymph-venv/bin/pip install lymph-model==1.3.3
    /tmp/lymph-venv/bin/python benchmarks/mixture/make_lymph_fixtures.py

It writes, per case, the cohort (as CSV text, so the test loads exactly what lymph loaded),
the model settings and parameters, and lymph's outputs: transition matrix, state
distribution per T-stage, per-patient log-likelihoods, the total log-likelihood, a posterior
state distribution and a risk.

Cases:
* ``synthetic``: 4 LNLs, two modalities (CT, MRI), 80 patients drawn by lymph, ~25% of the
  findings removed (missing), early = Binom(10, 0.3) frozen, late = parametric binomial.
* ``usz``: the real lyDATA 2021-usz-oropharynx cohort (287 patients), levels I-IV, modalities
  CT, MRI, PET, FNA, default T-stage mapping.
* ``isb_combined``: lyDATA 2023-isb-multisite, levels I-IV, CT/MRI/PET/pathology. lymph is fed
  the table with level I and II filled from their sublevels (done here with pandas, the
  lydata rule); jaxinfer must reproduce that from the raw table. lymph's log-likelihood on
  the raw table (levels I / II unknown for CT, MRI, PET) is stored too, to document the gap.
"""

import json
import math
import pathlib
import warnings

import numpy as np
import pandas as pd
from lymph.models import Unilateral

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "mixture" / "fixtures"
DATA = ROOT / "jaxinfer" / "data" / "lydata"
MAX_TIME = 10
GRAPH = {
    ("tumor", "T"): ["I", "II", "III", "IV"],
    ("lnl", "I"): ["II"],
    ("lnl", "II"): ["III"],
    ("lnl", "III"): ["IV"],
    ("lnl", "IV"): [],
}


def binom(support, n, p):
    return np.array([math.comb(n, int(k)) * p**k * (1 - p) ** (n - k) for k in support])


def late_binomial(support, p=0.5):
    return binom(support, int(support[-1]), p)


EARLY = binom(np.arange(MAX_TIME + 1), MAX_TIME, 0.3)


def graph_json():
    return [[list(k), v] for k, v in GRAPH.items()]


def outputs(model, diagnosis):
    evo = model.state_dist_evo()
    per_patient = {}
    for t in model.get_t_stages("valid"):
        per_patient[t] = np.log(
            model.get_distribution(t).pmf @ evo @ model.diagnosis_matrix(t).T).tolist()
    # patient order: lymph's diagnosis_matrix(t) rows are the patients of T-stage t in order
    t_col = model.patient_data[("_model", "#", "t_stage")].to_numpy()
    loglik = np.full(len(t_col), np.nan)
    for t, vals in per_patient.items():
        loglik[t_col == t] = vals
    return {
        "transition_matrix": model.transition_matrix().tolist(),
        "state_dist": {t: model.state_dist(t).tolist() for t in model.get_distributions()}
        if hasattr(model, "get_distributions") else
        {t: model.state_dist(t).tolist() for t in model.get_all_distributions()},
        "patient_loglik": [None if np.isnan(v) else float(v) for v in loglik],
        "loglik": float(model.likelihood(log=True)),
        "posterior_late": model.posterior_state_dist(given_diagnosis=diagnosis,
                                                     t_stage="late").tolist(),
        "risk_late_II_III": float(model.risk(involvement={"II": True, "III": True},
                                             given_diagnosis=diagnosis, t_stage="late")),
    }


def build(modalities, params):
    model = Unilateral.binary(graph_dict=GRAPH, max_time=MAX_TIME)
    for name, (spec, sens) in modalities.items():
        model.set_modality(name, spec, sens)
    model.set_distribution("early", EARLY)
    model.set_distribution("late", late_binomial)
    model.set_params(**params)
    return model


def synthetic():
    modalities = {"CT": (0.76, 0.81), "MRI": (0.63, 0.86)}
    params = {"TtoI_spread": 0.05, "TtoII_spread": 0.35, "TtoIII_spread": 0.08,
              "TtoIV_spread": 0.02, "ItoII_spread": 0.4, "IItoIII_spread": 0.3,
              "IIItoIV_spread": 0.2, "late_p": 0.55}
    model = build(modalities, params)
    rng = np.random.default_rng(7)
    table = model.draw_patients(80, stage_dist=[0.6, 0.4], rng=rng)
    obs = table.drop(columns=[("tumor", "1", "t_stage")]).astype(object)
    mask = rng.random(obs.shape) < 0.25
    obs = obs.mask(mask)
    table = pd.concat([obs, table[[("tumor", "1", "t_stage")]]], axis=1)
    # a patient with every finding missing contributes its state-dist sum (1)
    table.iloc[3, : obs.shape[1]] = None
    csv = table.to_csv(index=False)
    loaded = pd.read_csv(pd.io.common.StringIO(csv), header=[0, 1, 2])
    model.load_patient_data(loaded, mapping=lambda x: x)
    diagnosis = {"CT": {"II": True, "III": False}, "MRI": {"II": True, "IV": None}}
    other = {"CT": {"II": True, "III": False}, "MRI": {"II": True, "IV": None}}
    res = outputs(model, diagnosis)
    res["observation_matrix"] = model.observation_matrix().tolist()
    res["diagnosis"] = other
    return {"graph": graph_json(), "max_time": MAX_TIME, "modalities": modalities,
            "early_pmf": EARLY.tolist(), "params": params, "csv": csv, "mapping": "identity",
            **res}


def real(folder, modalities, params, combine):
    raw = pd.read_csv(DATA / folder / "data.csv", header=[0, 1, 2])
    keep = [c for c in raw.columns if c[0] in ("patient", "tumor") and c[2] in ("id", "t_stage")]
    keep += [c for c in raw.columns if c[0] in modalities and c[1] == "ipsi"]
    raw = raw[keep]
    raw.columns = pd.MultiIndex.from_tuples(list(raw.columns))  # drop unused header levels
    table = raw.copy()
    if combine:  # the lydata rule, done with pandas for lymph's sake
        for mod in modalities:
            for lnl in ("I", "II"):
                subs = [c for c in table[mod]["ipsi"].columns if c in (lnl + "a", lnl + "b")]
                if not subs:
                    continue
                sub = table[mod]["ipsi"][subs].astype(float)
                combined = np.where((sub == 1).any(axis=1), 1.0,
                                    np.where((sub == 0).all(axis=1), 0.0, np.nan))
                level = table[(mod, "ipsi", lnl)].astype(float)
                table[(mod, "ipsi", lnl)] = np.where(level.isna(), combined, level)
    model = build(modalities, params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_patient_data(table)
    diagnosis = {list(modalities)[0]: {"II": True, "III": False}}
    res = outputs(model, diagnosis)
    res["diagnosis"] = diagnosis
    if combine:
        plain = build(modalities, params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plain.load_patient_data(raw)
        res["loglik_lymph_on_raw_table"] = float(plain.likelihood(log=True))
    return {"graph": graph_json(), "max_time": MAX_TIME, "modalities": modalities,
            "early_pmf": EARLY.tolist(), "params": params, "csv": raw.to_csv(index=False),
            "mapping": "default", **res}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    params = {"TtoI_spread": 0.03, "TtoII_spread": 0.6, "TtoIII_spread": 0.1,
              "TtoIV_spread": 0.02, "ItoII_spread": 0.3, "IItoIII_spread": 0.25,
              "IIItoIV_spread": 0.15, "late_p": 0.45}
    cases = {
        "synthetic": synthetic(),
        "usz": real("2021-usz-oropharynx", {"CT": (0.76, 0.81), "MRI": (0.63, 0.81),
                                            "PET": (0.86, 0.79), "FNA": (0.98, 0.80)},
                    params, combine=False),
        "isb_combined": real("2023-isb-multisite", {"CT": (0.76, 0.81), "MRI": (0.63, 0.81),
                                                    "PET": (0.86, 0.79),
                                                    "pathology": (1.0, 1.0)},
                             params, combine=True),
    }
    for name, case in cases.items():
        (OUT / f"lymph_{name}.json").write_text(json.dumps(case))
        print(name, "loglik", case["loglik"], case.get("loglik_lymph_on_raw_table", ""))


if __name__ == "__main__":
    main()
