"""Mean functions: glimix-core's documented examples and identities."""

import equinox as eqx
import jax
import numpy as np
import pytest

from jaxinfer.glmm import KronMean, LinearMean, OffsetMean, SumMean, parameter_mask
from jaxinfer.glmm.mean import unvec, vec


def test_offset_documented_example():
    mean = OffsetMean(3)
    mean.offset = 2.0
    np.testing.assert_allclose(mean.value(), [2.0, 2.0, 2.0])
    np.testing.assert_allclose(mean.gradient()["offset"], [1.0, 1.0, 1.0])
    mean.name = "𝐦"
    assert str(mean) == "OffsetMean(): 𝐦\n  offset: 2.0"
    mean.fix_offset()
    assert not parameter_mask(mean.module).offset
    mean.unfix_offset()
    assert parameter_mask(mean.module).offset


def test_linear_documented_example():
    mean = LinearMean([[1.5, 0.2], [0.5, 0.4]])
    mean.effsizes = [1.0, -1.0]
    np.testing.assert_allclose(mean.value(), [1.3, 0.1])
    np.testing.assert_allclose(mean.gradient()["effsizes"], [[1.5, 0.2], [0.5, 0.4]])
    mean.name = "𝐦"
    assert str(mean) == "LinearMean(m=2): 𝐦\n  effsizes: [ 1. -1.]"


def test_sum_documented_example():
    mean0 = LinearMean([[5.1, 1.0], [2.1, -0.2]])
    mean0.effsizes = [-1.0, 0.5]
    mean1 = OffsetMean(2)
    mean1.offset = 2.0
    mean = SumMean([mean0, mean1])
    np.testing.assert_allclose(mean.value(), [-2.6, -0.2])
    g = mean.gradient()
    np.testing.assert_allclose(g["SumMean[0].effsizes"], [[5.1, 1.0], [2.1, -0.2]])
    np.testing.assert_allclose(g["SumMean[1].offset"], [1.0, 1.0])
    mean0.name, mean1.name, mean.name = "A", "B", "A+B"
    assert str(mean) == (
        "SumMean(means=...): A+B\n  LinearMean(m=2): A\n    effsizes: [-1.   0.5]\n"
        "  OffsetMean(): B\n    offset: 2.0"
    )
    # writing a new core back distributes it to the children
    core = eqx.tree_at(lambda t: t.means[1].offset, mean.module, 5.0)
    mean.module = core
    assert mean1.offset == 5.0


def test_kron_mean_matches_explicit_kronecker():
    rng = np.random.RandomState(0)
    A, X, B = rng.randn(3, 3), rng.randn(5, 2), rng.randn(2, 3)
    mean = KronMean(A, X)
    mean.B = B
    np.testing.assert_allclose(mean.module.vecB, B.T.ravel())  # column-major vec
    np.testing.assert_allclose(mean.value(), np.kron(A, X) @ B.ravel(order="F"), rtol=1e-12)
    np.testing.assert_allclose(mean.gradient()["vecB"], np.kron(A, X), rtol=1e-12)
    np.testing.assert_allclose(unvec(vec(B), B.shape), B)
    assert mean.nparams == 6
    with pytest.raises(ValueError, match="shape"):
        mean.B = np.ones((3, 3))


def test_grad_through_core():
    mean = LinearMean(np.arange(6.0).reshape(3, 2))
    g = jax.grad(lambda m: (m.value() ** 2).sum())(mean.module)
    X = np.arange(6.0).reshape(3, 2)
    np.testing.assert_allclose(g.effsizes, 2 * X.T @ (X @ np.zeros(2)))
    np.testing.assert_allclose(g.X, np.zeros((3, 2)))
