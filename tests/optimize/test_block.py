"""Block-coordinate BFGS on sums of local terms, against scipy L-BFGS-B."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize as so

from jaxinfer.optimize.block import chain_groups, colour_groups, minimize_block_bfgs
from jaxinfer.optimize.result import Status

NB, B = 12, 2
KAPPA = 0.7
rng = np.random.default_rng(0)
TARGET = jnp.asarray(rng.normal(size=(NB, B)))


def unary(xi, ti):
    # non-quadratic local term (log-cosh data fit + quartic)
    return jnp.sum(jnp.log(jnp.cosh(xi - ti))) + 0.05 * jnp.sum(xi ** 4)


def total(x, target=TARGET, kappa=KAPPA):
    un = jax.vmap(unary)(x, target).sum()
    pair = kappa * jnp.sum((x[1:] - x[:-1]) ** 2)
    return un + pair


def local(i, x, target=TARGET, kappa=KAPPA):
    """Terms touching block i: its unary term and the pair terms (i-1, i), (i, i+1)."""
    xi = x[i]
    left = jnp.where(i > 0, jnp.sum((xi - x[jnp.maximum(i - 1, 0)]) ** 2), 0.0)
    right = jnp.where(i < x.shape[0] - 1, jnp.sum((x[jnp.minimum(i + 1, NB - 1)] - xi) ** 2), 0.0)
    return unary(xi, target[i]) + kappa * (left + right)


@pytest.fixture(scope="module")
def scipy_optimum():
    f = jax.jit(jax.value_and_grad(lambda v: total(v.reshape(NB, B))))
    res = so.minimize(lambda v: tuple(map(np.asarray, f(v))), np.zeros(NB * B), jac=True,
                      method="L-BFGS-B", options=dict(ftol=1e-15, gtol=1e-12, maxiter=10000))
    return res.x.reshape(NB, B), res.fun


@pytest.fixture(scope="module")
def solved():
    run = jax.jit(lambda x0: minimize_block_bfgs(total, x0, local_fun=local, gtol=1e-9,
                                                 ftol=0.0, groups=chain_groups(NB)))
    return run


def test_matches_scipy_lbfgsb(scipy_optimum, solved):
    x_ref, f_ref = scipy_optimum
    res = solved(jnp.zeros((NB, B)))
    assert int(res.status) == Status.GTOL and bool(res.success)
    np.testing.assert_allclose(res.x, x_ref, atol=1e-7)
    np.testing.assert_allclose(res.fun, f_ref, rtol=1e-12)
    # the reported gradient is the true full gradient at x
    np.testing.assert_allclose(res.jac, jax.grad(total)(res.x), atol=1e-12)
    assert float(jnp.max(jnp.abs(res.jac))) <= 1e-9


def test_sequential_and_total_objective_agree(scipy_optimum):
    x_ref, _ = scipy_optimum
    # Gauss-Seidel order without local_fun (block steps on the total objective)
    res = jax.jit(lambda x0: minimize_block_bfgs(total, x0, gtol=1e-8, ftol=0.0))(jnp.zeros((NB, B)))
    assert int(res.status) == Status.GTOL
    np.testing.assert_allclose(res.x, x_ref, atol=1e-6)


def test_max_iter_is_a_failure_and_callback_sees_every_epoch():
    seen = []
    res = minimize_block_bfgs(total, jnp.zeros((NB, B)), local_fun=local, max_epochs=2,
                              groups=chain_groups(NB), gtol=1e-12, ftol=0.0,
                              callback=lambda p: seen.append((int(p.nit), float(p.fun))))
    assert int(res.status) == Status.MAX_ITER and not bool(res.success)
    assert int(res.nit) == 2
    assert [k for k, _ in seen] == [1, 2] and seen[-1][1] == float(res.fun)
    assert seen[1][1] < seen[0][1] < float(total(jnp.zeros((NB, B))))


def test_bounds_and_vmap(solved, scipy_optimum):
    # scalar blocks with a lower bound, against L-BFGS-B with the same bound
    t = np.linspace(-1.0, 1.0, 9)

    def f(x, t):
        return jnp.sum((x - t) ** 2 * (1 + 0.1 * x ** 2)) + 0.5 * jnp.sum((x[1:] - x[:-1]) ** 2)

    ref = so.minimize(lambda v: float(f(v, t)), np.zeros(9), jac=lambda v: np.asarray(jax.grad(f)(v, t)),
                      method="L-BFGS-B", bounds=[(0.0, None)] * 9,
                      options=dict(ftol=1e-15, gtol=1e-12)).x
    run = jax.jit(jax.vmap(lambda tt: minimize_block_bfgs(
        f, jnp.full(9, 0.5), args=(tt,), bounds=(0.0, jnp.inf), gtol=1e-10, ftol=0.0,
        groups=chain_groups(9))))
    res = run(jnp.stack([t, 2 * t]))
    assert np.all(np.asarray(res.status) == Status.GTOL)
    np.testing.assert_allclose(res.x[0], ref, atol=1e-7)
    assert np.all(np.asarray(res.x) >= 0)


def test_groups_validation():
    with pytest.raises(ValueError, match="cover every block"):
        minimize_block_bfgs(total, jnp.zeros((NB, B)), groups=np.array([[0, 1], [2, -1]]))
    with pytest.raises(ValueError, match="x0 must have shape"):
        minimize_block_bfgs(total, jnp.zeros((2, 2, 2)))


def test_chain_groups():
    g = chain_groups(7)
    np.testing.assert_array_equal(g, [[0, 2, 4, 6], [1, 3, 5, -1]])
    assert chain_groups(7, coupling_range=2).shape == (3, 3)


def _conflicts(block_terms):
    return {(i, k) for i, a in enumerate(block_terms) for k, b in enumerate(block_terms)
            if i < k and set(a) & set(b)}


def test_colour_groups_on_a_chain_is_the_parity_split():
    # pair terms (i, i+1): block i takes part in terms i-1 and i; conflicts are |i - k| = 1
    terms = [{i - 1, i} for i in range(7)]
    np.testing.assert_array_equal(colour_groups(terms), chain_groups(7))


def test_colour_groups_on_a_grid_share_no_term():
    # 4x5 grid; the local term of cell j involves j and its 4-neighbours
    rows, cols = 4, 5
    cell = lambda r, c: r * cols + c  # noqa: E731
    neighbours = [{cell(r + dr, c + dc) for dr, dc in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
                   if 0 <= r + dr < rows and 0 <= c + dc < cols}
                  for r in range(rows) for c in range(cols)]
    # block i is involved in the terms of every cell whose neighbourhood contains i
    terms = [{j for j, nb in enumerate(neighbours) if i in nb} for i in range(rows * cols)]
    groups = colour_groups(terms)
    members = groups[groups >= 0]
    np.testing.assert_array_equal(np.sort(members), np.arange(rows * cols))
    conflicts = _conflicts(terms)
    for g in groups:
        g = g[g >= 0]
        assert all((a, b) not in conflicts for a in g for b in g if a < b)
    # a distance-2 colouring of a grid needs 5 colours (a cell and its 4 neighbours);
    # greedy in row-major order finds at most 1 + max conflicts (12 here)
    assert 5 <= groups.shape[0] <= 13
    with pytest.raises(ValueError, match="at least one block"):
        colour_groups([])

