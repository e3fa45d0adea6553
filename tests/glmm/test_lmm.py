"""LMM against glimix-core 3.1.14 outputs (fixtures), the seed's documented numbers, a dense
Gaussian likelihood, and autodiff checks."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinfer.glmm import LMM, economic_qs, economic_qs_linear, fit_lmm, lmm_profile, lmm_statistics
from jaxinfer.glmm.lmm import lmm_lml_dense

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
RTOL = 1e-6


def load(name):
    with np.load(os.path.join(FIXTURES, f"lmm_{name}.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module", params=["lowrank", "fullrank"])
def case(request):
    ref = load(request.param)
    ref["QS"] = economic_qs(ref["K"])
    return ref


def test_seed_documented_numbers():
    X = np.array([[1, 2], [3, -1]], float)
    QS = economic_qs_linear(X)
    covariates = np.array([[1], [1]])
    y = np.array([-1, 2], float)
    lmm = LMM(y, covariates, QS)
    lmm.fit(verbose=False)
    assert f"{lmm.lml():.3f}" == "-3.649"
    lmm = LMM(y, covariates, QS)
    lmm.fix("delta")
    lmm.fix("scale")
    lmm.delta = 0.5
    lmm.scale = 1
    lmm.fit(verbose=False)
    assert f"{lmm.lml():.3f}" == "-3.832"
    lmm.unfix("delta")
    lmm.fit(verbose=False)
    assert f"{lmm.lml():.3f}" == "-3.713"


def assert_delta_is_glimix(ours, theirs):
    """In float64 the fit runs glimix-core's own search (bracket, then Brent on logit δ,
    tolerance 1e-6) without a polish, so it usually stops where glimix-core stops (~1e-12).
    Where the lml is flat in δ (curvature ~1e-2 in logit δ) rounding differences in the lml
    can turn a Brent step the other way; both answers are then within Brent's guarantee,
    logit δ within 2·(1e-6·|x| + 1e-6) of the optimum, which is what is asserted."""
    if min(theirs, 1 - theirs) < 1.5e-8:
        # on a bound of δ the lml is flat to rounding in logit δ: compare δ itself
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-9)
        return
    x_ours, x_theirs = logit(ours), logit(theirs)
    assert abs(x_ours - x_theirs) <= 2 * (1e-6 * abs(x_theirs) + 1e-6) + 1e-12, (
        x_ours, x_theirs)


def logit(p):
    return float(np.log(p) - np.log1p(-p))


@pytest.mark.parametrize("tag", ["ml", "reml"])
def test_fit_matches_glimix(case, tag):
    restricted = tag == "reml"
    lmm = LMM(case["y"], case["X"], case["QS"], restricted=restricted)
    np.testing.assert_allclose(lmm.lml(), case[f"{tag}_lml_init"], rtol=RTOL)
    lmm.fit(verbose=False)
    assert bool(lmm.fit_result.success) and lmm.fit_result.message.startswith("Converged")
    # the maximum: glimix-core's lml to 1e-9 and never above ours (ours is the exact maximiser)
    np.testing.assert_allclose(lmm.lml(), case[f"{tag}_lml"], rtol=1e-9)
    assert_delta_is_glimix(lmm.delta, case[f"{tag}_delta"])
    # the closed forms at glimix-core's δ give glimix-core's scale, v0, v1, beta, covariance
    at = LMM(case["y"], case["X"], case["QS"], restricted=restricted)
    at.delta = float(case[f"{tag}_delta"])
    at.fix("delta")
    at.fit()
    np.testing.assert_allclose(at.scale, case[f"{tag}_scale"], rtol=RTOL)
    # v0 = s(1 - δ) is ~1e-14 when δ reaches its upper clip: compare absolutely there
    np.testing.assert_allclose(at.v0, case[f"{tag}_v0"], rtol=RTOL, atol=1e-9)
    np.testing.assert_allclose(at.v1, case[f"{tag}_v1"], rtol=RTOL)
    np.testing.assert_allclose(at.beta, case[f"{tag}_beta"], rtol=RTOL)
    np.testing.assert_allclose(at.beta_covariance, case[f"{tag}_beta_covariance"], rtol=RTOL)


@pytest.mark.parametrize("tag", ["ml", "reml"])
def test_fix_unfix_matches_glimix(case, tag):
    restricted = tag == "reml"
    lmm = LMM(case["y"], case["X"], case["QS"], restricted=restricted)
    lmm.fix("delta")
    lmm.fix("scale")
    lmm.delta = 0.3
    lmm.scale = 1.5
    lmm.fit()
    assert lmm.delta == pytest.approx(0.3) and lmm.scale == 1.5
    np.testing.assert_allclose(lmm.lml(), case[f"{tag}_fixed_lml"], rtol=RTOL)
    np.testing.assert_allclose(lmm.beta, case[f"{tag}_fixed_beta"], rtol=RTOL)
    np.testing.assert_allclose(lmm.beta_covariance, case[f"{tag}_fixed_beta_covariance"],
                               rtol=RTOL)
    lmm.unfix("delta")
    lmm.fit()
    np.testing.assert_allclose(lmm.lml(), case[f"{tag}_scalefixed_lml"], rtol=RTOL)
    assert_delta_is_glimix(lmm.delta, case[f"{tag}_scalefixed_delta"])


def test_beta_fixed_matches_glimix():
    ref = load("lowrank")
    QS = economic_qs(ref["K"])
    random = np.random.RandomState(0)
    # regenerate the simulation's true beta exactly as the fixture script drew it
    n, m, ncov = 80, 40, 3
    maf = random.uniform(0.1, 0.5, m)
    random.binomial(2, maf, size=(n, m))
    for _ in range(ncov - 1):
        random.randn(n)
    beta_true = random.randn(ncov)
    for tag in ("ml", "reml"):
        lmm = LMM(ref["y"], ref["X"], QS, restricted=tag == "reml")
        lmm.beta = beta_true
        lmm.fix("beta")
        lmm.fit()
        np.testing.assert_allclose(lmm.beta, beta_true)
        np.testing.assert_allclose(lmm.lml(), ref[f"{tag}_betafixed_lml"], rtol=RTOL)
        assert_delta_is_glimix(lmm.delta, ref[f"{tag}_betafixed_delta"])
        np.testing.assert_allclose(lmm.scale, ref[f"{tag}_betafixed_scale"], rtol=1e-5)


def test_lml_equals_dense_gaussian(case):
    lmm = LMM(case["y"], case["X"], case["QS"])
    lmm.fit()
    dense = lmm_lml_dense(jnp.asarray(case["y"]), jnp.asarray(case["X"]), jnp.asarray(case["K"]),
                          lmm.beta, lmm.v0, lmm.v1)
    np.testing.assert_allclose(lmm.lml(), dense, rtol=1e-10)
    np.testing.assert_allclose(lmm.covariance(), lmm.v0 * case["K"] + lmm.v1 * np.eye(len(case["y"])),
                               rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(lmm.mean(), case["X"] @ np.asarray(lmm.beta), rtol=1e-12)
    # the closed forms are the maximisers: the gradient over beta and log-scale vanishes
    data = lmm.data
    g = jax.grad(lambda b, ls: lmm_profile(data, lmm.delta, b, jnp.exp(ls)).lml, argnums=(0, 1))(
        lmm.beta, jnp.log(lmm.scale))
    np.testing.assert_allclose(g[0], 0, atol=1e-8)
    np.testing.assert_allclose(g[1], 0, atol=1e-8)


def test_reml_equals_dense_restricted_likelihood():
    ref = load("lowrank")
    y, X, K = ref["y"], ref["X"], ref["K"]
    lmm = LMM(y, X, economic_qs(K), restricted=True)
    lmm.fit()
    V = lmm.v0 * K + lmm.v1 * np.eye(len(y))
    Vi = np.linalg.inv(V)
    r = y - X @ np.asarray(lmm.beta)
    n, c = X.shape
    dense = -0.5 * ((n - c) * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + r @ Vi @ r
                    + np.linalg.slogdet(X.T @ Vi @ X)[1] - np.linalg.slogdet(X.T @ X)[1])
    np.testing.assert_allclose(lmm.lml(), dense, rtol=1e-10)


def test_grad_of_lml_matches_finite_differences():
    ref = load("fullrank")
    Q0, S0 = economic_qs(ref["K"])[0][0], economic_qs(ref["K"])[1]

    def lml_of(y, delta):
        data = lmm_statistics(y, ref["X"], Q0, S0)
        return lmm_profile(data, delta).lml

    y = jnp.asarray(ref["y"])
    gy, gd = jax.grad(lml_of, argnums=(0, 1))(y, 0.4)
    h = 1e-6
    fd = (lml_of(y, 0.4 + h) - lml_of(y, 0.4 - h)) / (2 * h)
    np.testing.assert_allclose(gd, fd, rtol=1e-6)
    e = jnp.zeros_like(y).at[3].set(h)
    fd_y = (lml_of(y + e, 0.4) - lml_of(y - e, 0.4)) / (2 * h)
    np.testing.assert_allclose(gy[3], fd_y, rtol=1e-6)


def test_fit_vmaps_over_traits():
    ref = load("lowrank")
    QS = economic_qs(ref["K"])
    Q0, S0 = QS[0][0], QS[1]
    Y = np.stack([ref["y"], ref["y"][::-1] * 0.5 + 1.0])
    datas = jax.vmap(lambda y: lmm_statistics(y, ref["X"], Q0, S0))(jnp.asarray(Y))
    fits = jax.vmap(lambda d: fit_lmm(d))(datas)
    for i in range(2):
        lmm = LMM(Y[i], ref["X"], QS)
        lmm.fit()
        # batched BLAS rounds differently: the Brent path may move by ~1e-10
        np.testing.assert_allclose(fits.lml[i], lmm.lml(), rtol=1e-12)
        np.testing.assert_allclose(fits.delta[i], lmm.delta, rtol=1e-8)


def test_rank_deficient_covariates_and_no_K():
    ref = load("lowrank")
    QS = economic_qs(ref["K"])
    X = ref["X"]
    Xdup = np.column_stack([X, X[:, 1]])  # duplicated column
    a = LMM(ref["y"], X, QS)
    a.fit()
    b = LMM(ref["y"], Xdup, QS)
    b.fit()
    np.testing.assert_allclose(b.lml(), a.lml(), rtol=1e-10)
    np.testing.assert_allclose(b.mean(), a.mean(), rtol=1e-8)
    # QS None: ordinary least squares (delta fixed at 1)
    ols = LMM(ref["y"], X)
    ols.fit()
    resid = ref["y"] - X @ np.linalg.lstsq(X, ref["y"], rcond=None)[0]
    np.testing.assert_allclose(ols.beta, np.linalg.lstsq(X, ref["y"], rcond=None)[0], rtol=1e-8)
    np.testing.assert_allclose(ols.scale, resid @ resid / len(resid), rtol=1e-8)


@pytest.fixture(scope="module")
def traits():
    """Eight traits with h² ≈ 0.4-0.7 on 300 simulated sibling pairs (one GRM)."""
    from jaxinfer.glmm import simulate as sim

    cohort = sim.simulate_cohort(11, n_individuals=300, n_snps=1000, heritability=0.6,
                                 n_causal=4, n_covariates=2, covariate_effects=[1.0, 0.3],
                                 family_size=2)
    X = cohort.phenotype.covariates
    Y = np.stack([sim.simulate_phenotype(seed, cohort.genotypes.genotypes, heritability=h2,
                                         covariates=X, covariate_effects=[1.0, 0.3]).y
                  for seed, h2 in enumerate(np.linspace(0.4, 0.7, 8))])
    return Y, X, economic_qs(cohort.kinship)


def _fit_traits(Y, X, QS, dtype):
    Q0, S0 = (jnp.asarray(a, dtype) for a in (QS[0][0], QS[1]))
    datas = jax.vmap(lambda y: lmm_statistics(y, jnp.asarray(X, dtype), Q0, S0))(
        jnp.asarray(Y, dtype))
    return jax.vmap(fit_lmm)(datas)


def test_float32_fit_agrees_with_float64(traits):
    """Without x64 the value search alone left h² up to 0.1 off (lml noise ~1e-4 hides the
    maximum); the derivative polish brings float32 to float64's answer."""
    Y, X, QS = traits
    fit64 = _fit_traits(Y, X, QS, jnp.float64)
    fit32 = _fit_traits(Y, X, QS, jnp.float32)
    assert fit32.lml.dtype == jnp.float32
    assert np.all(fit32.success) and np.all(fit64.success)
    h2_64, h2_32 = 1 - np.asarray(fit64.delta), 1 - np.asarray(fit32.delta, float)
    assert np.ptp(h2_64) > 0.1  # the traits really differ
    np.testing.assert_allclose(h2_32, h2_64, rtol=0, atol=1e-3)
    np.testing.assert_allclose(np.asarray(fit32.lml, float), fit64.lml, rtol=1e-5)
    # and float64 itself is the maximiser: one LMM facade fit gives the same numbers
    lmm = LMM(Y[0], X, QS)
    lmm.fit()
    np.testing.assert_allclose(lmm.lml(), fit64.lml[0], rtol=1e-12)


def test_float64_fit_is_glimix_search_on_ordinary_data():
    # glimix-core 3.1.14's own test_lmm_beta_covariance (its data and its printed numbers):
    # the float64 fit is glimix-core's search, so β's covariance is glimix-core's to 1e-6
    rng = np.random.default_rng(0)
    n = 30
    G = rng.normal(size=(n, n + 1))
    X = rng.normal(size=(n, 2))
    y = X @ rng.normal(size=2) + G @ rng.normal(size=G.shape[1]) + rng.normal(size=n)
    y = (y - y.mean()) / y.std()
    lmm = LMM(y, X, economic_qs_linear(G))
    lmm.fit()
    np.testing.assert_allclose(lmm.beta_covariance,
                               [[0.0016815025, -0.0001486849], [-0.0001486849, 0.0023484078]],
                               rtol=1e-6)
