"""Bayesian LMM / GLMM: likelihoods against dense scipy densities, NUTS against closed forms and ML."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from numpyro.infer.util import log_density

from jaxinfer.glmm import bayes
from jaxinfer.glmm import simulate as sim
from jaxinfer.glmm.lmm import LMM, lmm_statistics
from jaxinfer.glmm.qs import economic_qs


@pytest.fixture(scope="module")
def cohort():
    # 60 individuals, 40 SNPs: K has rank < n, so the null-space terms are exercised.
    return sim.simulate_cohort(21, 60, 40, heritability=0.6, n_causal=0, n_covariates=2,
                               covariate_effects=[1.0, -0.5], family_size=2)


def test_lmm_log_likelihood_is_the_dense_gaussian(cohort):
    y, X, K = cohort.phenotype.y, cohort.phenotype.covariates, cohort.kinship
    (Q0, _), S0 = economic_qs(K)
    assert Q0.shape[1] < len(y)
    data = lmm_statistics(y, X, Q0, S0)
    loglik = jax.jit(bayes.lmm_log_likelihood)
    for beta, scale, delta in [([0.3, 1.0], 1.7, 0.2), ([-1.0, 0.0], 0.4, 0.9)]:
        cov = scale * ((1 - delta) * K + delta * np.eye(len(y)))
        expected = scipy.stats.multivariate_normal(X @ np.array(beta), cov).logpdf(y)
        np.testing.assert_allclose(float(loglik(data, jnp.array(beta), scale, delta)), expected, rtol=1e-10)


def test_fixed_variances_give_the_conjugate_gaussian_posterior(cohort):
    y, X, K = cohort.phenotype.y, cohort.phenotype.covariates, cohort.kinship
    scale, delta, prior_sd = 1.3, 0.35, 2.0
    # Closed form written out here: V = s((1-δ)K + δI), precision XᵀV⁻¹X + I/τ².
    V = scale * ((1 - delta) * K + delta * np.eye(len(y)))
    precision = X.T @ np.linalg.solve(V, X) + np.eye(2) / prior_sd**2
    cov = np.linalg.inv(precision)
    mean = cov @ (X.T @ np.linalg.solve(V, y))
    ref_mean, ref_cov = bayes.gaussian_beta_posterior(y, X, K, scale, delta, prior_sd)
    np.testing.assert_allclose(ref_mean, mean, rtol=1e-10)
    np.testing.assert_allclose(ref_cov, cov, rtol=1e-10)

    import numpyro.distributions as dist

    result = bayes.sample_lmm(jax.random.key(0), y, X, economic_qs(K), priors=bayes.Priors(beta=dist.Normal(0.0, prior_sd)),
                              fixed={"scale": scale, "delta": delta}, num_warmup=200, num_samples=1000)
    draws = result.samples["beta"]
    sd = np.sqrt(np.diag(cov))
    n_eff = result.summary.loc[["beta[0]", "beta[1]"], "n_eff"].to_numpy()
    assert result.divergences == 0
    assert np.all(np.abs(draws.mean(axis=0) - mean) < 4 * sd / np.sqrt(n_eff))
    np.testing.assert_allclose(draws.std(axis=0), sd, rtol=0.15)
    np.testing.assert_allclose(np.corrcoef(draws.T)[0, 1], cov[0, 1] / (sd[0] * sd[1]), atol=0.1)
    np.testing.assert_allclose(result.samples["v0"], scale * (1 - delta))


def test_free_variances_posterior_centres_on_the_ml_fit(cohort):
    y, X, K = cohort.phenotype.y, cohort.phenotype.covariates, cohort.kinship
    QS = economic_qs(K)
    lmm = LMM(y, X, QS)
    lmm.fit(verbose=False)
    result = bayes.sample_lmm(jax.random.key(1), y, X, QS, num_warmup=300, num_samples=600)
    s = result.summary
    assert result.divergences <= 5
    assert set(["beta[0]", "beta[1]", "scale", "delta", "v0", "v1"]) <= set(s.index)
    assert np.all(s["r_hat"] < 1.05)
    beta_ml = np.asarray(lmm.beta)
    # A flat-ish prior: the posterior mean of β sits within a fraction of a posterior sd of the
    # ML estimate, and the ML δ lies inside the 90 % interval.
    post_mean, post_sd = result.posterior_mean("beta"), s.loc[["beta[0]", "beta[1]"], "sd"].to_numpy()
    assert np.all(np.abs(post_mean - beta_ml) < 0.5 * post_sd)
    assert s.loc["delta", "q05"] < lmm.delta < s.loc["delta", "q95"]


def test_glmm_model_density_matches_scipy():
    rng = np.random.default_rng(3)
    n, r = 12, 5
    X = np.column_stack([np.ones(n), rng.standard_normal(n)])
    Q0 = np.linalg.qr(rng.standard_normal((n, r)))[0]
    S0 = rng.uniform(0.5, 2.0, r)
    y = rng.poisson(2.0, n).astype(float)
    trials = rng.integers(3, 8, n).astype(float)
    params = {"beta": np.array([0.2, -0.3]), "scale": 0.8, "delta": 0.3,
              "a": rng.standard_normal(r), "e": rng.standard_normal(n)}
    z = X @ params["beta"] + np.sqrt(0.8 * 0.7) * Q0 @ (np.sqrt(S0) * params["a"]) + np.sqrt(0.8 * 0.3) * params["e"]
    prior = (scipy.stats.norm(0, 10).logpdf(params["beta"]).sum() + scipy.stats.halfcauchy(scale=5).logpdf(0.8)
             + scipy.stats.beta(1, 1).logpdf(0.3) + scipy.stats.norm.logpdf(params["a"]).sum()
             + scipy.stats.norm.logpdf(params["e"]).sum())
    cases = {
        "poisson": (y, scipy.stats.poisson(np.exp(z)).logpmf(y).sum()),
        "bernoulli": ((y > 1).astype(float), scipy.stats.bernoulli(1 / (1 + np.exp(-z))).logpmf(y > 1).sum()),
        "binomial": (np.minimum(y, trials), scipy.stats.binom(trials, 1 / (1 + np.exp(-z))).logpmf(np.minimum(y, trials)).sum()),
    }
    density = jax.jit(lambda kw, p, name: log_density(bayes.glmm_model, (), dict(kw, likelihood=name), p)[0],
                      static_argnums=2)
    for name, (obs, loglik) in cases.items():
        kwargs = dict(y=jnp.asarray(obs), trials=jnp.asarray(trials), X=jnp.asarray(X), Q0=jnp.asarray(Q0),
                      S0=jnp.asarray(S0))
        value = density(kwargs, {k: jnp.asarray(v) for k, v in params.items()}, name)
        np.testing.assert_allclose(float(value), prior + loglik, rtol=1e-10, err_msg=name)


def test_poisson_glmm_recovers_fixed_effects():
    c = sim.simulate_cohort(5, 60, 50, heritability=0.3, n_causal=0, n_covariates=2,
                            covariate_effects=[0.5, 0.6], likelihood="poisson", family_size=2)
    ph = c.phenotype
    result = bayes.sample_glmm(jax.random.key(2), ph.y, ("poisson",), ph.latent.covariates, economic_qs(c.kinship),
                               num_warmup=200, num_samples=300, keep_latent=True)
    s = result.summary
    assert result.divergences <= 5
    truth = np.array([0.5, 0.6])
    mean, sd = result.posterior_mean("beta"), s.loc[["beta[0]", "beta[1]"], "sd"].to_numpy()
    assert np.all(np.abs(mean - truth) < 3 * sd)
    # The latent field tracks the simulated linear predictor.
    z = result.posterior_mean("z")
    assert np.corrcoef(z, ph.latent.y)[0, 1] > 0.6


def test_bad_arguments():
    y, X = np.zeros(4), np.ones((4, 1))
    QS = economic_qs(np.eye(4))
    with pytest.raises(ValueError, match="unknown parameter"):
        bayes.sample_lmm(jax.random.key(0), y, X, QS, fixed={"sigma": 1.0})
    with pytest.raises(ValueError, match=r"fixed\['delta'\]"):
        bayes.sample_lmm(jax.random.key(0), y, X, QS, fixed={"delta": 1.5})
    with pytest.raises(ValueError, match="lik"):
        bayes.sample_glmm(jax.random.key(0), y, "gamma", X, QS)
    with pytest.raises(ValueError, match="Bernoulli outcome"):
        bayes.sample_glmm(jax.random.key(0), np.array([0, 1, 2, 0.0]), "bernoulli", X, QS)
    with pytest.raises(TypeError, match="key"):
        bayes.sample_lmm(0, y, X, QS)
