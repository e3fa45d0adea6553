"""The glimix-core API a migrating user's code (and glimix-core's own tests) touches:
writable numpy values, ``_check_grad``, ``name``, ``_isfixed``, ``LMMPredict``."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxinfer.glmm import (LMM, EyeCov, FreeFormCov, GLMMNormal, LinearCov, LinearMean,
                           LMMPredict, OffsetMean, SumCov, economic_qs)
from jaxinfer.glmm._module import finite_difference_error


def test_finite_difference_error_is_the_forward_difference_bias():
    # f(x) = x², forward difference (f(1+h) - f(1))/h = 2 + h, exact derivative 2: error h
    assert finite_difference_error(lambda x: x[0] ** 2, jnp.ones(1), step=1e-3) == pytest.approx(
        1e-3, rel=1e-6)
    # two parameters, vector output: errors add in quadrature (h and 3h² ... from x1³)
    f = lambda x: jnp.stack([x[0] ** 2, x[1] ** 3])
    h = 1e-3
    expected = np.hypot(h, 3 * h + h * h)  # (1+h)³ - 1 = 3h + 3h² + h³, /h - 3
    assert finite_difference_error(f, jnp.ones(2), step=h) == pytest.approx(expected, rel=1e-6)


def test_facades_return_writable_numpy_and_pass_check_grad():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 3))
    free = FreeFormCov(3)
    free.L = [[1.0, 0, 0], [0.5, 2.0, 0], [-0.3, 0.2, 0.7]]
    lin = LinearCov(X)
    lin.scale = 1.7
    covs = [EyeCov(5), lin, free, SumCov([EyeCov(5), LinearCov(X)])]
    means = [OffsetMean(5), LinearMean(X)]
    for facade in covs + means:
        value = facade.value()
        assert isinstance(value, np.ndarray) and value.flags.writeable
        value[...] = 0  # glimix-core's samplers write into values
        assert np.any(facade.value() != 0) or isinstance(facade, (OffsetMean, LinearMean))
        assert facade._check_grad() < 1e-5
    # the facade's numbers are the core's
    np.testing.assert_allclose(lin.value(), 1.7 * X @ X.T, rtol=1e-12)


def test_names_and_isfixed():
    rng = np.random.default_rng(1)
    n = 12
    y = rng.normal(size=n)
    X = np.ones((n, 1))
    K = np.cov(rng.normal(size=(n, 20)))
    lmm = LMM(y, X, economic_qs(K))
    assert lmm.name == "LMM"
    lmm.name = "lmm"
    assert lmm.name == "lmm" and LMM(y, X).name == "LMM"
    glmm = GLMMNormal(y, np.ones(n), X, economic_qs(K))
    assert not glmm._isfixed("logitdelta")
    glmm.fix("delta")
    assert glmm._isfixed("logitdelta") and glmm.isfixed("delta")
    # the GLMM's lml gradient passes the finite-difference check at a non-optimal point
    assert glmm._check_grad() < 1e-4


def test_lmm_predict_equals_gaussian_conditional():
    rng = np.random.default_rng(2)
    n, p = 20, 4
    Z = rng.normal(size=(n + p, 30)) / np.sqrt(30)
    Kall = Z @ Z.T
    X = np.ones((n + p, 1))
    y = 0.5 + rng.multivariate_normal(np.zeros(n), Kall[:n, :n] + 0.5 * np.eye(n))
    lmm = LMM(y, X[:n], economic_qs(Kall[:n, :n]))
    lmm.fit()
    pred = LMMPredict(y, lmm.beta, lmm.v0, lmm.v1, lmm.mean(), lmm.covariance())
    ks, kss = Kall[n:, :n], np.diag(Kall[n:, n:])
    V = lmm.v0 * Kall[:n, :n] + lmm.v1 * np.eye(n)
    mean = X[n:] @ np.asarray(lmm.beta) + lmm.v0 * ks @ np.linalg.solve(V, y - lmm.mean())
    var = lmm.v0 * kss + lmm.v1 - np.diag(lmm.v0 ** 2 * ks @ np.linalg.solve(V, ks.T))
    np.testing.assert_allclose(pred.predictive_mean(X[n:], ks, kss), mean, rtol=1e-10)
    np.testing.assert_allclose(pred.predictive_covariance(X[n:], ks, kss), var, rtol=1e-10)


def test_kron2sumcov_factorisation_helpers():
    from jaxinfer.glmm import Kron2SumCov

    G = np.array([[-1.5, 1.0], [0.5, 1.0], [0.3, -2.0]])
    cov = Kron2SumCov(G, 2, 1)
    cov.C0.L = [[3.0], [2.0]]
    cov.C1.L = [[1.0, 0.0], [2.0, 1.0]]
    K = cov.value()
    L = np.kron(cov.Lh, cov.Lx)
    # L K Lᵀ = Sₕ ⊗ Sₓ + I is diagonal (glimix-core's factorisation)
    LKL = L @ K @ L.T
    np.testing.assert_allclose(LKL - np.diag(np.diag(LKL)), 0, atol=1e-10)
    # ∂log|K| against central differences of log|K| over C₁'s parameters
    grad = cov.logdet_gradient()["C1.Lu"]
    Lu = np.array(cov.C1.Lu, float)
    fd = []
    for i in range(Lu.size):
        step = np.zeros_like(Lu)
        step[i] = 1e-6
        cov.C1.Lu = Lu + step
        up = float(cov.logdet())
        cov.C1.Lu = Lu - step
        fd.append((up - float(cov.logdet())) / 2e-6)
    cov.C1.Lu = Lu
    np.testing.assert_allclose(grad, fd, rtol=1e-6)
    # ∂K·v is the gradient contracted with v
    v = np.arange(6.0)
    np.testing.assert_allclose(cov.gradient_dot(v)["C0.Lu"],
                               np.einsum("abi,b->ai", cov.gradient()["C0.Lu"], v), rtol=1e-12)


def _public(cls, kind):
    names = [a for a in dir(cls) if not a.startswith("_")]
    if kind == "property":
        return {a for a in names if isinstance(getattr(cls, a), property)}
    return {a for a in names if callable(getattr(cls, a))}


def test_public_interface_is_glimix_cores():
    # glimix-core's assert_interface lists exactly these; jaxinfer's extras (fit_result, data,
    # cov, null) are plain instance attributes, not class properties
    from jaxinfer.glmm import FastScanner, Kron2Sum, KronFastScanner

    assert _public(LMM, "callable") == {"covariance", "fit", "fix", "get_fast_scanner",
                                        "gradient", "lml", "mean", "unfix", "value"}
    assert _public(LMM, "property") == {"X", "beta", "beta_covariance", "delta", "name",
                                        "ncovariates", "nsamples", "scale", "v0", "v1"}
    assert _public(Kron2Sum, "property") == {"A", "B", "C0", "C1", "M", "X", "beta",
                                             "beta_covariance", "name", "ncovariates",
                                             "nsamples", "ntraits"}
    assert _public(FastScanner, "property") == {"null_beta", "null_beta_covariance",
                                                "null_scale", "null_beta_se"}
    assert _public(KronFastScanner, "property") == _public(FastScanner, "property")


def test_givencov_refuses_a_non_symmetric_matrix():
    from jaxinfer.glmm import GivenCov

    K = np.array([[2.0, 0.5], [0.4, 1.0]])
    with pytest.raises(ValueError, match="not symmetric"):
        GivenCov(K)
    # asymmetry below sqrt(eps) (numpy-sugar's check_symmetry) is accepted
    K = np.array([[2.0, 0.5], [0.5 + 1e-10, 1.0]])
    np.testing.assert_allclose(GivenCov(K).value(), K)


def test_kronmean_takes_any_shape_holding_vec_b():
    from jaxinfer.glmm import KronMean

    rng = np.random.default_rng(0)
    A, X = rng.normal(size=(2, 2)), rng.normal(size=(4, 3))
    B = rng.normal(size=(2, 3))  # (p, c), as glimix-core's own test passes it
    mean = KronMean(A, X)
    mean.B = B
    np.testing.assert_allclose(mean.value(), np.kron(A, X) @ B.ravel(order="F"), rtol=1e-12)
    with pytest.raises(ValueError, match="6 entries"):
        mean.B = np.ones(5)


def test_kron2sum_warns_like_glimix():
    from jaxinfer.glmm import Kron2Sum

    rng = np.random.default_rng(2)
    Y, F, G = rng.normal(size=(2, 3)), rng.normal(size=(2, 2)), rng.normal(size=(2, 4))
    A = rng.normal(size=(3, 3))
    with pytest.warns(UserWarning) as record:
        Kron2Sum(Y, A @ A.T, F, G)
    messages = " ".join(str(w.message) for w in record)
    assert "rank(Y)=2" in messages  # 2 samples, 3 traits
    assert "(15: B, C₀, C₁) is larger than the outcome size (6)" in messages  # 6 + 3 + 6
