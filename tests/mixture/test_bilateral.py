"""Bilateral against lymph-model 1.3.3's own numbers (fixture made by
benchmarks/mixture/make_bilateral_fixtures.py): parameter names and order for the three
symmetry settings, joint state distributions, per-patient likelihoods, log-likelihoods."""

import io
import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from jaxinfer.mixture.lymph import Bilateral

FIXTURE = json.loads((pathlib.Path(__file__).parent / "fixtures" / "lymph_bilateral.json")
                     .read_text())
CASES = list(FIXTURE["cases"])


def late_binomial(support, p=0.5):
    from jaxinfer.mixture import utils
    return utils.late_binomial(support, p)


@pytest.fixture(scope="module")
def table():
    return pd.read_csv(io.StringIO(FIXTURE["csv"]), header=[0, 1, 2])


def build(case, table):
    graph = {tuple(k): v for k, v in FIXTURE["graph"]}
    model = Bilateral(graph, is_symmetric=FIXTURE["cases"][case]["is_symmetric"],
                      uni_kwargs={"max_time": 10})
    for name, (spec, sens) in FIXTURE["modalities"].items():
        model.set_modality(name, spec, sens)
    model.set_distribution("early", FIXTURE["early_pmf"])
    model.set_distribution("late", late_binomial)
    model.load_patient_data(table, mapping=lambda x: x)
    return model


@pytest.mark.parametrize("case", CASES)
def test_bilateral_equals_lymph(case, table):
    fx = FIXTURE["cases"][case]
    model = build(case, table)
    assert list(model.get_params()) == fx["param_names"]
    model.set_params(**fx["params"])
    np.testing.assert_allclose(model.get_params(as_dict=False), fx["positional"], rtol=1e-15)
    for t in ("early", "late"):
        np.testing.assert_allclose(model.state_dist(t), fx["state_dist"][t], rtol=1e-10,
                                   atol=1e-15)
        np.testing.assert_allclose(model.patient_likelihoods(t), fx["patient_likelihoods"][t],
                                   rtol=1e-10)
    assert model.likelihood() == pytest.approx(fx["loglik"], rel=1e-12)
    assert model.likelihood(t_stage="late") == pytest.approx(fx["loglik_late"], rel=1e-12)
    # positional parameters in get_params order give the same model
    other = build(case, table)
    assert other.set_params(*fx["positional"], 0.5) == (0.5,)
    assert other.likelihood() == pytest.approx(fx["loglik"], rel=1e-12)


def test_side_prefixes_symmetry_and_bounds(table):
    model = build("default", table)
    model.set_params(spread=0.2, late_p=0.4, ipsi_TtoI_spread=0.7, contra_ItoII_spread=0.9)
    params = model.get_params()
    assert params["ipsi_TtoI_spread"] == 0.7 and params["contra_TtoI_spread"] == 0.2
    # LNL spread is symmetric by default: a contra_ name does not break the symmetry
    assert params["ItoII_spread"] == 0.2 and model.contra._spread["ItoII"] == 0.2
    before = model.get_params()
    with pytest.raises(ValueError):
        model.set_params(ipsi_TtoII_spread=1.5)
    assert model.get_params() == before
    assert model.likelihood(given_params={"late_p": 2.0}) == -np.inf
    with pytest.raises(ValueError, match="is_symmetric"):
        Bilateral({tuple(k): v for k, v in FIXTURE["graph"]}, is_symmetric={"tumour": True})
