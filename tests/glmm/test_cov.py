"""Covariance functions: glimix-core's documented examples, dense identities, autodiff checks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.random import RandomState

from jaxinfer.glmm import (
    EyeCov, FreeFormCov, GivenCov, Kron2SumCov, LinearCov, LRFreeFormCov, SumCov,
    parameter_bounds, parameter_mask,
)
from jaxinfer.glmm.cov import FREEFORM_EPSILON


def test_eyecov_documented_example():
    cov = EyeCov(2)
    cov.scale = 2.5
    np.testing.assert_allclose(cov.value(), [[2.5, 0], [0, 2.5]])
    np.testing.assert_allclose(cov.gradient()["logscale"], [[2.5, 0], [0, 2.5]])
    cov.name = "I"
    assert str(cov) == "EyeCov(dim=2): I\n  scale: 2.5"
    np.testing.assert_allclose(cov.logdet(), 2 * np.log(2.5))


def test_freeform_documented_gradient_and_parametrisation():
    cov = FreeFormCov(2)
    cov.L = [[1.0, 0.0], [0.5, 2.0]]
    expected = [[[0, 2, 0], [1, 0.5, 0]], [[1, 0.5, 0], [1, 0, 8]]]
    np.testing.assert_allclose(cov.gradient()["Lu"], expected, atol=1e-12)
    np.testing.assert_allclose(cov.Lu, [0.5, 0.0, np.log(2.0)])
    L = np.array([[1.0, 0.0], [0.5, 2.0]])
    np.testing.assert_allclose(cov.value(), L @ L.T + FREEFORM_EPSILON * np.eye(2))
    np.testing.assert_allclose(cov.logdet(), np.linalg.slogdet(np.asarray(cov.value()))[1])
    cov.name = "K"
    assert str(cov) == "FreeFormCov(dim=2): K\n  L: [[1.  0. ]\n      [0.5 2. ]]"
    # default: strictly-lower ones, unit diagonal
    np.testing.assert_allclose(FreeFormCov(3).L, np.tril(np.ones((3, 3))))


def test_lrfreeform_documented_example():
    cov = LRFreeFormCov(3, 2)
    np.testing.assert_allclose(cov.L, np.ones((3, 2)))
    cov.L = [[1, 2], [0, 3], [1, 3]]
    L = np.array([[1.0, 2], [0, 3], [1, 3]])
    np.testing.assert_allclose(cov.value(), L @ L.T)
    cov.name = "F"
    assert str(cov) == "LRFreeFormCov(n=3, m=2): F\n  L: [[1. 2.]\n      [0. 3.]\n      [1. 3.]]"
    # ∂K/∂L_ij = A Lᵀ + L Aᵀ (the documented formula) against autodiff
    g = np.asarray(cov.gradient()["Lu"])
    for k in range(6):
        A = np.zeros((3, 2))
        A.flat[k] = 1
        np.testing.assert_allclose(g[..., k], A @ L.T + L @ A.T)


def test_given_linear_sum_documented_examples():
    G = RandomState(0).randn(5, 3)
    cov = GivenCov(G @ G.T)
    cov.scale = 1.3
    cov.name = "K"
    assert str(cov) == "GivenCov(K0=...): K\n  scale: 1.3"
    np.testing.assert_allclose(cov.value(), 1.3 * G @ G.T)

    random = RandomState(0)
    left = LinearCov(random.randn(4, 20))
    right = LinearCov(random.randn(4, 15))
    left.scale = 0.5
    total = SumCov([left, right])
    left.name, right.name, total.name = "A", "B", "A+B"
    assert str(total) == (
        "SumCov(covariances=...): A+B\n  LinearCov(): A\n    scale: 0.5\n"
        "  LinearCov(): B\n    scale: 1.0"
    )
    np.testing.assert_allclose(
        total.value(), 0.5 * left.X @ left.X.T + right.X @ right.X.T, rtol=1e-12
    )
    # the sum sees later changes of a child
    right.scale = 2.0
    np.testing.assert_allclose(total.value(), 0.5 * left.X @ left.X.T + 2 * right.X @ right.X.T,
                               rtol=1e-12)
    g = total.gradient()
    assert set(g) == {"SumCov[0].logscale", "SumCov[1].logscale"}
    np.testing.assert_allclose(g["SumCov[1].logscale"], 2 * right.X @ right.X.T, rtol=1e-12)


def test_scale_clipped_at_tiny():
    cov = EyeCov(3)
    cov.scale = 0.0
    assert cov.scale == pytest.approx(np.finfo(float).eps)


@pytest.fixture(scope="module")
def kron_cov():
    G = RandomState(1).randn(6, 3)
    cov = Kron2SumCov(G, 3, 2)
    cov.C0.L = RandomState(2).randn(3, 2)
    cov.C1.L = [[1.0, 0, 0], [0.3, 0.7, 0], [-0.2, 0.4, 1.5]]
    return cov


def test_kron2sum_value_logdet_solve_against_dense(kron_cov):
    G = np.asarray(kron_cov.G)
    C0 = np.asarray(kron_cov.C0.value())
    C1 = np.asarray(kron_cov.C1.value())
    K = np.kron(C0, G @ G.T) + np.kron(C1, np.eye(6))
    np.testing.assert_allclose(kron_cov.value(), K, rtol=1e-12)
    np.testing.assert_allclose(kron_cov.logdet(), np.linalg.slogdet(K)[1], rtol=1e-10)
    v = RandomState(3).randn(18, 2)
    np.testing.assert_allclose(kron_cov.solve(v), np.linalg.solve(K, v), rtol=1e-8, atol=1e-10)
    g = kron_cov.gradient()
    assert g["C0.Lu"].shape == (18, 18, 6) and g["C1.Lu"].shape == (18, 18, 6)
    # documented example prints its parts
    cov = Kron2SumCov(np.array([[-1.5, 1.0]] * 3), 2, 1)
    cov.C0.L = [[3.0], [2.0]]
    cov.C1.L = [[1, 0], [2, 1.0]]
    assert str(cov).startswith("Kron2SumCov(G=..., dim=2, rank=1): Kron2SumCov\n"
                               "  LRFreeFormCov(n=2, m=1): C₀\n    L: [[3.]\n")


def test_logdet_gradient_matches_finite_differences(kron_cov):
    core = kron_cov.module
    f = jax.jit(lambda Lu: eqx.tree_at(lambda t: t.C1.Lu, core, Lu).logdet())
    x = core.C1.Lu
    g = jax.jit(jax.grad(f))(x)
    h = 1e-6
    shifts = h * jnp.eye(x.shape[0], dtype=x.dtype)
    central = (jax.vmap(f)(x + shifts) - jax.vmap(f)(x - shifts)) / (2 * h)
    np.testing.assert_allclose(g, central, rtol=1e-6, atol=1e-8)
    # trace identity ∂log|K| = tr(K⁻¹∂K)
    K = np.asarray(core.value())
    dK = np.asarray(core.gradient()["C1.Lu"])
    np.testing.assert_allclose(g, np.einsum("ij,jik->k", np.linalg.inv(K), dK), rtol=1e-8)


def test_mask_bounds_and_jit():
    a, b = LinearCov(np.eye(3)), EyeCov(3)
    total = SumCov([a, b])
    a.fix()
    core = total.module
    params, static = eqx.partition(core, parameter_mask(core))
    assert params.covariances[0].logscale is None
    lower, upper = parameter_bounds(core)
    assert float(lower.covariances[1].logscale) == -20.0
    assert float(upper.covariances[1].logscale) == 10.0
    value = jax.jit(lambda p: eqx.combine(p, static).value())(params)
    np.testing.assert_allclose(value, 2 * np.eye(3))
    a.unfix()
    assert parameter_mask(total.module).covariances[0].logscale
    ff_lower, ff_upper = parameter_bounds(FreeFormCov(2).module)
    np.testing.assert_allclose(ff_lower.Lu, [-np.inf, np.log(FREEFORM_EPSILON), np.log(FREEFORM_EPSILON)])
    np.testing.assert_allclose(ff_upper.Lu, [np.inf, 11, 11])


def test_float32_value():
    cov = FreeFormCov(2)
    core = cov.module
    core32 = eqx.tree_at(lambda t: t.Lu, core, core.Lu.astype(jnp.float32))
    assert core32.value().dtype == jnp.float32
    np.testing.assert_allclose(core32.value(), cov.value(), rtol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="positive"):
        EyeCov(0)
    with pytest.raises(ValueError, match="square"):
        GivenCov(np.ones((2, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        LinearCov(np.array([[1.0, np.nan]]))
    with pytest.raises(ValueError, match="shape"):
        FreeFormCov(2).L = np.eye(3)
    with pytest.raises(ValueError, match="positive diagonal"):
        FreeFormCov(2).L = [[0.0, 0], [1, 1]]
