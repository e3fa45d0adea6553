"""The NUTS driver: a closed-form posterior, and checkpoint + resume giving the same chain."""

import io
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from jaxinfer.sampling import continue_sampling, load_checkpoint, run_nuts

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SIGMA = 0.3


def bounded_mean_model(y):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Uniform(0.0, 1.0))
    numpyro.sample("y", dist.Normal(mu, SIGMA), obs=y)


Y = jnp.asarray(np.random.default_rng(0).normal(0.9, SIGMA, 20))


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt") / "full.ckpt")
    return run_nuts(bounded_mean_model, (Y,), key=jax.random.PRNGKey(1), num_warmup=200,
                    num_samples=1200, checkpoint=path, checkpoint_every=200)


def test_posterior_matches_the_truncated_normal(uninterrupted):
    # flat prior on [0, 1] x Gaussian likelihood = normal truncated to [0, 1]
    draws = uninterrupted.flat("mu")
    assert uninterrupted.samples["mu"].shape == (1, 1200) and np.all((draws > 0) & (draws < 1))
    loc, scale = float(jnp.mean(Y)), SIGMA / np.sqrt(len(Y))
    exact = stats.truncnorm((0 - loc) / scale, (1 - loc) / scale, loc=loc, scale=scale)
    idata = uninterrupted.to_inference_data()
    import arviz as az
    ess = float(az.ess(idata, var_names=["mu"])["mu"])
    assert ess > 100
    assert np.mean(draws) == pytest.approx(exact.mean(), abs=4 * exact.std() / np.sqrt(ess))
    assert np.std(draws) == pytest.approx(exact.std(), rel=0.2)


def test_interrupted_and_resumed_chain_equals_uninterrupted(uninterrupted, tmp_path):
    path = str(tmp_path / "part.ckpt")

    def stop_after_two_chunks(p):
        if p.done >= 600:
            raise Interrupted

    with pytest.raises(Interrupted):
        run_nuts(bounded_mean_model, (Y,), key=jax.random.PRNGKey(1), num_warmup=200,
                 num_samples=1200, checkpoint=path, checkpoint_every=200,
                 progress=stop_after_two_chunks)
    assert load_checkpoint(path)["done"] == 600
    seen = []
    resumed = continue_sampling(path, bounded_mean_model, (Y,), progress=seen.append)
    np.testing.assert_array_equal(resumed.samples["mu"], uninterrupted.samples["mu"])
    np.testing.assert_array_equal(resumed.stats["diverging"], uninterrupted.stats["diverging"])
    assert [p.done for p in seen] == [800, 1000, 1200, 1400]
    assert seen[-1].draws == 1200


def test_bad_checkpoint_is_refused(tmp_path):
    path = tmp_path / "x.ckpt"
    import pickle
    path.write_bytes(pickle.dumps({"version": -1}))
    with pytest.raises(ValueError, match="not a jaxinfer sampling checkpoint"):
        continue_sampling(str(path), bounded_mean_model, (Y,))


def test_mixture_samplers_return_inference_data_in_the_original_order(tmp_path):
    # sample_fixed_mixture on the small lymixture cohort, started at lymixture's EM optimum:
    # draws stay in [0, 1], columns are named in the original's order, and the posterior
    # mean of each well-determined spread parameter is within 4 posterior sd of the optimum
    from jaxinfer.mixture import LymphMixture, em, utils
    from jaxinfer.mixture.simulate import SUBSITE_COL

    fx = json.loads((FIXTURES / "lymixture_small.json").read_text())
    graph = {tuple(k): v for k, v in fx["graph"]}
    model = LymphMixture(model_kwargs={"graph_dict": graph}, num_components=2)
    model.set_distribution("early", fx["early_pmf"])
    from jaxinfer.mixture import utils as u
    model.set_distribution("late", u.late_binomial)
    model.load_patient_data(pd.read_csv(io.StringIO(fx["csv"]), header=[0, 1, 2]),
                            split_by=SUBSITE_COL, mapping=lambda x: x)
    for name, (spec, sens) in fx["modalities"].items():
        model.set_modality(name, spec, sens)
    model.set_params(**fx["em"]["params"])
    model.set_resps(em.expectation(model))
    idata, chain = em.sample_fixed_mixture(model, steps=60, num_warmup=60,
                                           filename=str(tmp_path / "fm.ckpt"),
                                           checkpoint_every=60, seed=3)
    names = [k for k in fx["em"]["params"] if not k.endswith("_coef")]
    assert list(idata.posterior.data_vars) == names and chain.shape == (60, len(names))
    assert np.all((chain > 0) & (chain < 1))
    mean, sd = chain.mean(axis=0), chain.std(axis=0)
    for j, name in enumerate(names):
        if name.endswith(("TtoII_spread", "TtoI_spread")):
            assert abs(mean[j] - fx["em"]["params"][name]) < 4 * sd[j] + 0.02, name
