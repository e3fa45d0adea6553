"""LymphMixture and EM against lymixture 0.0.2's own numbers (fixture made by
benchmarks/mixture/make_lymixture_fixtures.py). EM's recovery of a simulated truth is
tested on a Bilateral mixture (tests/mixture/test_bilateral.py), through the same EM code."""

import io
import json
import pathlib

import jax
import numpy as np
import pandas as pd
import pytest
import scipy.optimize as so

from jaxinfer.mixture import LymphMixture, em, utils
from jaxinfer.mixture.simulate import SUBSITE_COL

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def build(fx, table, **kwargs):
    graph = {tuple(k): v for k, v in fx["graph"]}
    model = LymphMixture(model_kwargs={"graph_dict": graph}, num_components=2, **kwargs)
    # Binom(10, 0.3) as the CLI builds it (equal to the fixture's to ~1e-17), so the CLI
    # test reuses this file's compiled EM
    early = np.asarray(utils.binom_pmf(np.arange(11), 10, 0.3))
    np.testing.assert_allclose(early, fx["early_pmf"], rtol=1e-14)
    model.set_distribution("early", early)
    model.set_distribution("late", utils.late_binomial)
    model.load_patient_data(table, split_by=SUBSITE_COL, mapping=lambda x: x)
    for name, (spec, sens) in fx["modalities"].items():
        model.set_modality(name, spec, sens)
    return model


@pytest.fixture(scope="module")
def small_table():
    fx = json.loads((FIXTURES / "lymixture_small.json").read_text())
    return fx, pd.read_csv(io.StringIO(fx["csv"]), header=[0, 1, 2])


@pytest.fixture(scope="module")
def small(small_table):
    fx, table = small_table
    model = build(fx, table)
    model.set_params(**fx["start_params"])
    return fx, model


def test_parameter_names_and_order_equal_lymixture(small):
    fx, model = small
    ours = model.get_params()
    assert list(ours) == list(fx["start_params"])
    np.testing.assert_allclose(list(ours.values()), list(fx["start_params"].values()), atol=1e-12)


def test_likelihoods_and_e_step_equal_lymixture(small):
    fx, model = small
    model.set_params(**fx["start_params"])
    np.testing.assert_allclose(model.patient_component_likelihoods(log=True),
                               fx["component_loglik"], rtol=1e-10, atol=1e-10)
    assert model.incomplete_data_likelihood() == pytest.approx(fx["incomplete_loglik"], rel=1e-12)
    resps = em.expectation(model, fx["start_params"])
    np.testing.assert_allclose(resps, fx["resps"], rtol=1e-10, atol=1e-12)
    model.set_resps(resps)
    assert model.complete_data_likelihood() == pytest.approx(fx["complete_loglik"], rel=1e-12)
    np.testing.assert_allclose(model.infer_mixture_coefs(resps).to_numpy(), fx["infer_coefs"],
                               rtol=1e-10, atol=1e-12)


def test_m_step_at_least_as_good_as_lymixture_powell(small):
    fx, model = small
    model.set_params(**fx["start_params"])
    resps = np.asarray(fx["resps"])
    params = em.maximization(model, resps)
    model.set_resps(resps)
    ours = model.complete_data_likelihood()
    # the same objective, maximised by L-BFGS-B (ours) and Powell (lymixture)
    assert ours >= fx["mstep_complete_loglik"] - 1e-6
    assert ours == pytest.approx(fx["mstep_complete_loglik"], abs=0.05)
    coef_names = [k for k in params if k.endswith("_coef")]
    np.testing.assert_allclose([params[k] for k in coef_names],
                               [fx["mstep_params"][k] for k in coef_names], atol=1e-10)


def test_m_step_with_a_shared_time_prior_is_scipys_optimum(small_table):
    # universal_p: one late_p for both components, so the M-step is one joint fit
    fx, table = small_table
    model = build(fx, table, universal_p=True)
    start = {k: v for k, v in fx["start_params"].items() if not k.endswith("_late_p")}
    model.set_params(**start, late_p=0.35)
    names = list(model.get_params())
    assert names[-1] == "late_p" and not any(n.endswith("_late_p") for n in names)
    resps = np.asarray(fx["resps"])
    params = em.maximization(model, resps)
    model.set_resps(resps)
    ours = model.complete_data_likelihood()
    # scipy's L-BFGS-B (finite-difference gradients) on the same objective, started at our
    # optimum with the coefficients at their closed form, finds nothing better
    free = [n for n in names if not n.endswith("_coef")]
    coefs = {n: params[n] for n in names if n.endswith("_coef")}

    def negative(z):
        model.set_params(**dict(zip(free, z.tolist())), **coefs)
        return -model.complete_data_likelihood()

    assert -negative(np.array([params[n] for n in free])) == pytest.approx(ours, rel=1e-12)
    ref = so.minimize(negative, [params[n] for n in free], method="L-BFGS-B",
                      bounds=[(0.0, 1.0)] * len(free))
    assert ours >= -ref.fun - 1e-6
    assert params["late_p"] == pytest.approx(ref.x[-1], abs=1e-3)
    # and the fit moved from the start: the shared late_p is estimated, not kept
    assert abs(params["late_p"] - 0.35) > 1e-3


@pytest.fixture(scope="module")
def small_fit(small):
    fx, model = small
    model.set_params(**fx["start_params"])
    seen = []
    result = em.fit(model, atol=1e-8, rtol=1e-4, maxiter=100,
                    callback=lambda p: seen.append((int(p.nit), float(p.fun))))
    return fx, model, result, seen


def test_em_reaches_lymixture_loglik_from_the_same_start(small_fit):
    fx, model, result, _ = small_fit
    assert bool(result.success)
    ll = float(result.extra["loglik"])
    assert ll >= fx["em"]["loglik"] - 1e-3
    assert model.incomplete_data_likelihood() == pytest.approx(ll, rel=1e-12)
    # FixedPoint's channels: the inner L-BFGS-B fits of every M-step passed a convergence
    # test, and each step evaluated the EM map once (plus the start)
    assert int(result.extra["inner_failures"]) == 0
    assert result.extra["inner_status"].shape == (2,)
    assert np.all(np.asarray(result.extra["inner_status"]) < 20)
    assert int(result.nfev) == int(result.nit) + 1


def test_em_history_is_monotone_and_callback_sees_every_step(small_fit):
    _, _, result, seen = small_fit
    nit = int(result.nit)
    history = np.asarray(result.extra["history"])
    assert np.all(np.isnan(history[nit + 1:]))
    steps = np.diff(history[: nit + 1])
    assert np.all(steps >= -1e-8 * np.abs(history[1: nit + 1]))
    assert [s[0] for s in seen] == list(range(1, nit + 1))
    np.testing.assert_allclose([s[1] for s in seen], history[1: nit + 1], rtol=1e-12)
    # the stopping rule really held at the end and not one step earlier
    assert abs(history[nit] - history[nit - 1]) <= 1e-8 + 1e-4 * abs(history[nit])
    if nit >= 2:
        assert abs(history[nit - 1] - history[nit - 2]) > 1e-8 + 1e-4 * abs(history[nit - 1])


def test_em_without_convergence_reports_failure(small):
    fx, model = small
    model.set_params(**fx["start_params"])
    result = em.fit(model, atol=0.0, rtol=0.0, maxiter=2)
    assert not bool(result.success) and int(result.nit) == 2
    assert "maximum number of iterations" in str(result.message)


def test_em_refuses_float32_with_the_fix_in_the_message(small):
    fx, model = small
    with jax.enable_x64(False):
        with pytest.raises(ValueError, match="jax_enable_x64"):
            em.fit(model)
        with pytest.raises(ValueError, match="jax_enable_x64"):
            em.maximization(model, np.asarray(fx["resps"]))
