"""Bilateral against lymph-model 1.3.3's own numbers (fixture made by
benchmarks/mixture/make_bilateral_fixtures.py): parameter names and order for the three
symmetry settings, joint state distributions, per-patient likelihoods, log-likelihoods,
posterior state distributions and risks, draw_patients' layout; and mixtures of Bilateral
models."""

import io
import itertools
import json
import pathlib
import warnings

import jax
import numpy as np
import pandas as pd
import pytest
from scipy import stats

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


@pytest.mark.parametrize("case", CASES)
def test_bilateral_posterior_and_risk_equal_lymph(case, table):
    fx = FIXTURE["cases"][case]
    model = build(case, table)
    model.set_params(**fx["params"])
    for rc in fx["risks"]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a side without diagnosis warns, as in lymph
            post = model.posterior_state_dist(given_diagnosis=rc["diagnosis"],
                                              t_stage=rc["t_stage"])
            risk = model.risk(rc["involvement"], given_diagnosis=rc["diagnosis"],
                              t_stage=rc["t_stage"])
        np.testing.assert_allclose(post, rc["posterior"], rtol=1e-10, atol=1e-15)
        assert risk == pytest.approx(rc["risk"], rel=1e-10)


def test_bilateral_draw_patients_layout_and_frequencies():
    # lymph's column layout; the frequency of every complete CT finding pattern (both
    # sides, 2**6 patterns) in 4000 drawn early patients fits the model's own probability
    # of that pattern (its likelihood, equal to lymph's above): chi-square p > 1e-3
    graph = {tuple(k): v for k, v in FIXTURE["graph"]}
    model = Bilateral(graph, uni_kwargs={"max_time": 10})
    for name, (spec, sens) in FIXTURE["modalities"].items():
        model.set_modality(name, spec, sens)
    model.set_distribution("early", FIXTURE["early_pmf"])
    model.set_distribution("late", late_binomial)
    model.set_params(**FIXTURE["cases"]["default"]["params"])
    drawn = model.draw_patients(5, [0.6, 0.4], key=jax.random.PRNGKey(0))
    assert [list(c) for c in drawn.columns] == FIXTURE["draw_columns"]
    model.ipsi.del_modality("MRI")
    model.contra.del_modality("MRI")
    drawn = model.draw_patients(4000, [1.0, 0.0], key=jax.random.PRNGKey(1))
    lnls = ["I", "II", "III"]
    cols = [("CT", side, lnl) for side in ("ipsi", "contra") for lnl in lnls]
    observed = drawn[cols].to_numpy(dtype=int) @ (2 ** np.arange(5, -1, -1))
    patterns = np.array(list(itertools.product([0, 1], repeat=6)), dtype=bool)
    every = pd.DataFrame(patterns, columns=pd.MultiIndex.from_tuples(cols))
    every[("tumor", "1", "t_stage")] = "early"
    model.load_patient_data(every, mapping=lambda x: x)
    expected = model.patient_likelihoods("early") * len(drawn)
    assert expected.sum() == pytest.approx(len(drawn), rel=1e-10)
    counts = np.bincount(observed, minlength=64)
    keep = expected >= 5
    chi2 = np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep])
    assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3


def bilateral_mixture(table, symmetry="default"):
    from jaxinfer.mixture import LymphMixture

    graph = {tuple(k): v for k, v in FIXTURE["graph"]}
    mixture = LymphMixture(Bilateral, {"graph_dict": graph, "uni_kwargs": {"max_time": 10},
                                       "is_symmetric": FIXTURE["cases"][symmetry]["is_symmetric"]},
                           num_components=2)
    mixture.set_distribution("early", FIXTURE["early_pmf"])
    mixture.set_distribution("late", late_binomial)
    split = table.copy()
    split[("tumor", "1", "subsite")] = np.where(np.arange(len(table)) % 3 == 0, "x", "y")
    mixture.load_patient_data(split, split_by=("tumor", "1", "subsite"), mapping=lambda x: x)
    for name, (spec, sens) in FIXTURE["modalities"].items():
        mixture.set_modality(name, spec, sens)
    return mixture


def test_mixture_of_bilateral_models_reduces_to_the_bilateral_likelihood(table):
    # lymixture refuses anything but Unilateral; here a mixture whose first component has
    # all the weight, or whose components are equal, is lymph's Bilateral likelihood
    fx = FIXTURE["cases"]["default"]
    mixture = bilateral_mixture(table)
    names = list(mixture.get_params())
    assert names == [f"{c}_{n}" for c in range(2)
                     for n in fx["param_names"] + ["x_coef", "y_coef"]]
    other = {n: 0.3 for n in fx["param_names"]}
    mixture.set_params(**{f"0_{k}": v for k, v in fx["params"].items()},
                       **{f"1_{k}": v for k, v in other.items()},
                       **{"0_x_coef": 1.0, "0_y_coef": 1.0, "1_x_coef": 0.0, "1_y_coef": 0.0})
    assert mixture.incomplete_data_likelihood() == pytest.approx(fx["loglik"], rel=1e-12)
    # per patient, component 0 (patients are reordered by subgroup)
    order = np.argsort(np.arange(len(table)) % 3 != 0, kind="stable")
    lymph_lik = np.empty(len(table))
    labels = table[("tumor", "1", "t_stage")].to_numpy()
    for t in ("early", "late"):
        lymph_lik[labels == t] = fx["patient_likelihoods"][t]
    np.testing.assert_allclose(mixture.patient_component_likelihoods(log=False)[:, 0],
                               lymph_lik[order], rtol=1e-10)
    mixture.set_params(**{f"1_{k}": v for k, v in fx["params"].items()}, **{"1_x_coef": 0.4})
    assert mixture.incomplete_data_likelihood() == pytest.approx(fx["loglik"], rel=1e-12)
    # the mixture's risk for a subgroup is the coefficient-weighted state distribution's
    diagnosis = fx["risks"][0]["diagnosis"]
    involvement = fx["risks"][0]["involvement"]
    assert mixture.risk("x", involvement, given_diagnosis=diagnosis) == pytest.approx(
        fx["risks"][0]["risk"], rel=1e-10)


def test_em_on_a_simulated_bilateral_mixture_recovers_the_truth():
    # 600 patients from two Bilateral components (ipsi- and contralateral findings, 2
    # subgroups); EM from a perturbed start reaches at least the truth's log-likelihood and
    # the coefficients and the best-determined spread parameters within sampling error
    from jaxinfer.mixture import LymphMixture, em, utils
    from jaxinfer.mixture.simulate import SUBSITE_COL, draw_mixture_cohort

    graph = {tuple(k): v for k, v in FIXTURE["graph"]}
    truth = [dict(ipsi_TtoI_spread=0.05, ipsi_TtoII_spread=0.5, ipsi_TtoIII_spread=0.05,
                  contra_TtoI_spread=0.01, contra_TtoII_spread=0.1, contra_TtoIII_spread=0.01,
                  ItoII_spread=0.3, IItoIII_spread=0.2, late_p=0.6),
             dict(ipsi_TtoI_spread=0.4, ipsi_TtoII_spread=0.1, ipsi_TtoIII_spread=0.02,
                  contra_TtoI_spread=0.15, contra_TtoII_spread=0.02, contra_TtoIII_spread=0.01,
                  ItoII_spread=0.6, IItoIII_spread=0.1, late_p=0.4)]
    coefs = np.array([[0.85, 0.15], [0.15, 0.85]])
    kwargs = {"graph_dict": graph, "uni_kwargs": {"max_time": 10}}
    table = draw_mixture_cohort(graph, truth, coefs, {"a": 300, "b": 300}, FIXTURE["modalities"],
                                {"early": FIXTURE["early_pmf"], "late": utils.late_binomial},
                                [0.6, 0.4], jax.random.PRNGKey(2), model_cls=Bilateral,
                                model_kwargs={k: v for k, v in kwargs.items() if k != "graph_dict"})
    model = LymphMixture(Bilateral, kwargs, 2)
    model.set_distribution("early", FIXTURE["early_pmf"])
    model.set_distribution("late", utils.late_binomial)
    model.load_patient_data(table, split_by=SUBSITE_COL, mapping=lambda x: x)
    for name, (spec, sens) in FIXTURE["modalities"].items():
        model.set_modality(name, spec, sens)
    true_params = {f"{c}_{k}": v for c in range(2) for k, v in truth[c].items()}
    true_params.update({f"{c}_{s}_coef": coefs[c, g] for c in range(2) for g, s in enumerate("ab")})
    model.set_params(**true_params)
    ll_truth = model.incomplete_data_likelihood()
    rng = np.random.default_rng(0)
    model.set_params(**{k: float(np.clip(v + rng.uniform(-0.1, 0.1), 0.05, 0.95))
                        for k, v in true_params.items()})
    # SQUAREM-accelerated EM (plain EM is checked against lymixture in test_mixture.py):
    # the extrapolations are kept only where the log-likelihood does not drop
    result = em.fit(model, atol=1e-2, maxiter=300, accelerate="squarem")
    assert bool(result.success) and int(result.extra["accelerated"]) > 0
    assert float(result.extra["loglik"]) >= ll_truth
    history = np.asarray(result.extra["history"])[: int(result.nit) + 1]
    assert np.all(np.diff(history) >= -1e-9 * np.abs(history[1:]))
    assert model.incomplete_data_likelihood() == pytest.approx(history[-1], rel=1e-12)
    fitted = model.get_params()
    for name in ("0_ipsi_TtoII_spread", "1_ipsi_TtoI_spread", "1_contra_TtoI_spread",
                 "0_a_coef", "0_b_coef"):
        assert fitted[name] == pytest.approx(true_params[name], abs=0.12), name
