"""The Unilateral HMM against lymph-model 1.3.3's own numbers (fixtures made by
benchmarks/mixture/make_lymph_fixtures.py in a venv with lymph-model==1.3.3)."""

import io
import json
import pathlib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaxinfer.mixture import utils
from jaxinfer.mixture._data import DataWarning
from jaxinfer.mixture._hmm import state_dists
from jaxinfer.mixture.lymph import Unilateral

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
CASES = ["synthetic", "usz", "isb_combined"]


def build(fx):
    graph = {tuple(k): v for k, v in fx["graph"]}
    model = Unilateral.binary(graph, max_time=fx["max_time"])
    for name, (spec, sens) in fx["modalities"].items():
        model.set_modality(name, spec, sens)
    model.set_distribution("early", fx["early_pmf"])
    model.set_distribution("late", utils.late_binomial)
    model.set_params(**fx["params"])
    return model


@pytest.fixture(scope="module", params=CASES)
def case(request):
    fx = json.loads((FIXTURES / f"lymph_{request.param}.json").read_text())
    model = build(fx)
    table = pd.read_csv(io.StringIO(fx["csv"]), header=[0, 1, 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.load_patient_data(table, mapping=(lambda x: x) if fx["mapping"] == "identity" else None)
        model.likelihood()
    return request.param, fx, model, [str(w.message) for w in caught]


def test_transition_matrix_equals_lymph(case):
    _, fx, model, _ = case
    np.testing.assert_allclose(model.transition_matrix(), fx["transition_matrix"], rtol=0, atol=1e-12)


def test_state_dists_equal_lymph(case):
    _, fx, model, _ = case
    for t_stage, ref in fx["state_dist"].items():
        np.testing.assert_allclose(model.state_dist(t_stage), ref, rtol=0, atol=1e-12)


def test_patient_logliks_equal_lymph(case):
    _, fx, model, _ = case
    ref = np.array([np.nan if v is None else v for v in fx["patient_loglik"]])
    ours = model.patient_likelihoods(log=True)
    np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-10)
    assert model.likelihood(log=True) == pytest.approx(fx["loglik"], rel=1e-12, abs=1e-10)


def test_posterior_and_risk_equal_lymph(case):
    _, fx, model, _ = case
    post = model.posterior_state_dist(given_diagnosis=fx["diagnosis"], t_stage="late")
    np.testing.assert_allclose(post, fx["posterior_late"], rtol=0, atol=1e-12)
    risk = model.risk(involvement={"II": True, "III": True}, given_diagnosis=fx["diagnosis"],
                      t_stage="late")
    assert risk == pytest.approx(fx["risk_late_II_III"], abs=1e-12)


def test_observation_matrix_equals_lymph():
    # stored for the synthetic case only (2**(N*M) columns)
    fx = json.loads((FIXTURES / "lymph_synthetic.json").read_text())
    model = build(fx)
    np.testing.assert_allclose(model.observation_matrix(), fx["observation_matrix"], atol=1e-15)


def test_sublevels_fill_empty_levels_with_a_message(case):
    name, fx, model, messages = case
    filled = [m for m in messages if "filled from their sublevels" in m]
    if name == "isb_combined":
        assert filled, messages
        # lymph on the raw table treats levels I / II as unknown: a different likelihood
        assert abs(fx["loglik_lymph_on_raw_table"] - fx["loglik"]) > 100
    else:
        assert not filled


def test_binomial_prior_gradient_matches_finite_differences():
    # d/dp of the late state distribution, autodiff vs central differences (and finite at p=0)
    fx = json.loads((FIXTURES / "lymph_synthetic.json").read_text())
    model = build(fx)
    spec, theta = model.spec, model.theta

    @jax.jit
    def f(p):
        return state_dists(theta.at[-1].set(p), spec)[1, -1]

    grad = jax.jit(jax.grad(f))
    g = float(grad(0.4))
    h = 1e-6
    assert g == pytest.approx(float(f(0.4 + h) - f(0.4 - h)) / (2 * h), rel=1e-6)
    assert np.isfinite(float(grad(0.0))) and np.isfinite(float(grad(1.0)))


def test_draw_patients_frequencies_match_the_model():
    # simulation check: the observed frequency of CT-positive level II among late patients
    # equals the model's marginal P(z_II = 1 | late) = sum_x pi(x) C[x_II, 1]
    fx = json.loads((FIXTURES / "lymph_synthetic.json").read_text())
    model = build(fx)
    table = model.draw_patients(6000, stage_dist=[0.0, 1.0], key=jax.random.PRNGKey(3))
    assert set(table[("tumor", "1", "t_stage")]) == {"late"}
    freq = table[("CT", "ipsi", "II")].mean()
    sd = model.state_dist("late")
    p_inv = model.marginalize({"II": True}, sd)
    spec, sens = fx["modalities"]["CT"]
    expected = p_inv * sens + (1 - p_inv) * (1 - spec)
    assert freq == pytest.approx(expected, abs=4 * np.sqrt(expected * (1 - expected) / 6000))


def test_bad_input_is_refused_with_names():
    fx = json.loads((FIXTURES / "lymph_synthetic.json").read_text())
    model = build(fx)
    with pytest.raises(ValueError, match="TtoII_spread"):
        model.set_params(TtoII_spread=1.5)
    assert model.get_params()["TtoII_spread"] == fx["params"]["TtoII_spread"]
    model.set_params(0.0)  # a positional 0.0 is honoured (lymph 1.3.3 keeps the old value)
    assert model.get_params()["TtoI_spread"] == 0.0
    table = pd.read_csv(io.StringIO(fx["csv"]), header=[0, 1, 2])
    model.load_patient_data(table, mapping=lambda x: x)
    model.set_modality("PET", 0.9, 0.8)
    with pytest.raises(ValueError, match="PET"):
        model.likelihood()
    with pytest.raises(ValueError, match="three-level"):
        model.load_patient_data(pd.DataFrame({"a": [1]}))
    with pytest.raises(ValueError, match="'V'"):
        Unilateral.binary({("tumor", "T"): ["V"], ("lnl", "II"): []})
    with pytest.raises(ValueError, match="max_time"):
        model.set_distribution("early", [0.5, 0.5])


def test_unusable_t_stages_are_counted():
    fx = json.loads((FIXTURES / "lymph_synthetic.json").read_text())
    model = build(fx)
    table = pd.read_csv(io.StringIO(fx["csv"]), header=[0, 1, 2])
    table.loc[:4, ("tumor", "1", "t_stage")] = np.nan
    with pytest.warns(DataWarning, match="5 of 80"):
        model.load_patient_data(table, mapping=lambda x: None if x != x else x)
    ref = np.array(fx["patient_loglik"][5:])
    ll = model.patient_likelihoods()
    assert np.isnan(ll[:5]).all()
    np.testing.assert_allclose(ll[5:], ref, rtol=1e-10)
    assert model.likelihood() == pytest.approx(ref.sum(), rel=1e-12)


def test_float32_likelihood_close_to_float64():
    fx = json.loads((FIXTURES / "lymph_usz.json").read_text())
    model = build(fx)
    table = pd.read_csv(io.StringIO(fx["csv"]), header=[0, 1, 2])
    model.load_patient_data(table)
    diagnosis, t_index = model.data_arrays()
    from jaxinfer.mixture._hmm import patient_likelihoods
    lik32 = jax.jit(patient_likelihoods, static_argnums=1)(model.theta.astype(jnp.float32), model.spec,
                                diagnosis.astype(jnp.float32), t_index)
    assert lik32.dtype == jnp.float32
    assert float(jnp.sum(jnp.log(lik32))) == pytest.approx(fx["loglik"], rel=1e-5)
