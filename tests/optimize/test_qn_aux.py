"""L-BFGS-B's auxiliary state channel (``LBFGSB(aux0=...)``, ``fn(x, args, aux) -> (f, g,
aux)``) and its one evaluation site.

The objective runs an inner fixed-point iteration: ``z = A x`` found by the contraction
``z <- z / 2 + A x / 2`` to 1e-15, then ``f = |z - b|^2 / 2 + lam |x|^2 / 2`` with the exact
gradient ``A'(z - b) + lam x``. Its minimiser is the ridge solution
``(A'A + lam I)^-1 A'b`` (the reference). Warm-started from the aux of the last accepted
iterate, the inner iteration needs fewer sweeps than started from zero each time.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinfer.optimize._iterate import iterate
from jaxinfer.optimize.quasi_newton import LBFGSB

N, M, LAM = 6, 9, 0.1


def _data():
    rng = np.random.default_rng(3)
    return jnp.asarray(rng.normal(size=(M, N))), jnp.asarray(rng.normal(size=M))


def _objective(warm):
    """``fn(x, args, aux)``; aux = {"z": the inner fixed point, "sweeps": inner sweeps
    summed along the accepted iterates}."""
    def fn(x, args, aux):
        A, b = args
        target = A @ x
        z0 = aux["z"] if warm else jnp.zeros_like(aux["z"])

        def cond(c):
            z, z_old, k = c
            return (k == 0) | (jnp.max(jnp.abs(z - z_old)) > 1e-15)

        def body(c):
            z, _, k = c
            return 0.5 * z + 0.5 * target, z, k + 1

        z, _, k = jax.lax.while_loop(cond, body, (z0, z0, jnp.zeros((), jnp.int32)))
        f = 0.5 * jnp.sum((z - b) ** 2) + 0.5 * LAM * jnp.sum(x * x)
        g = A.T @ (z - b) + LAM * x
        return f, g, {"z": z, "sweeps": aux["sweeps"] + k}
    return fn


@pytest.fixture(scope="module")
def runs():
    """One program: the warm and cold runs, and the warm one vmapped over 3 right-hand
    sides."""
    A, b = _data()
    bs = jnp.asarray(np.random.default_rng(4).normal(size=(3, M)))
    aux0 = {"z": jnp.zeros(M), "sweeps": jnp.zeros((), jnp.int32)}
    x0 = jnp.zeros(N)

    def run(warm, b):
        return iterate(LBFGSB(aux0=aux0, gtol=1e-8, ftol=1e-14), _objective(warm), x0, (A, b))

    @jax.jit
    def solve(b, bs):
        return run(True, b), run(False, b), jax.vmap(lambda b: run(True, b))(bs)

    return solve(b, bs), (A, b, bs)


def _ridge(A, b):
    return np.linalg.solve(np.asarray(A.T @ A) + LAM * np.eye(N), np.asarray(A.T @ b))


def test_aux_warm_start_same_solution_fewer_inner_sweeps(runs):
    (warm, cold, _), (A, b, _) = runs
    ref = _ridge(A, b)
    for res in (warm, cold):
        assert int(res.status) in (0, 1), res.message      # GTOL or FTOL
        np.testing.assert_allclose(res.x, ref, atol=1e-7)
        # the final aux is the accepted iterate's: its z is A x there
        np.testing.assert_allclose(res.extra["aux"]["z"], A @ res.x, atol=1e-12)
    np.testing.assert_allclose(warm.x, cold.x, atol=1e-7)
    # the run ends at the rounding level of f (|f| ~ 4, gtol 1e-8): warm and cold may stop
    # one iteration apart, by gtol or by the line search's rounding stop (FTOL)
    assert abs(int(warm.nit) - int(cold.nit)) <= 1
    # the contraction halves the error per sweep: from zero each evaluation takes ~55 sweeps
    # to 1e-15, from the last accepted z log2(1 / |A dx|) fewer (per accepted iterate
    # 874 / 22 against 1101 / 22 at the same nit)
    per_iterate = [int(r.extra["aux"]["sweeps"]) / int(r.nit) for r in (warm, cold)]
    assert per_iterate[0] < 0.9 * per_iterate[1]


def test_aux_under_vmap(runs):
    """Each lane of the batch: the ridge solution of its right-hand side."""
    (_, _, batch), (A, _, bs) = runs
    for k in range(3):
        assert int(batch.status[k]) in (0, 1)
        np.testing.assert_allclose(batch.x[k], _ridge(A, bs[k]), atol=1e-7)


def test_aux_of_the_wrong_structure_is_refused():
    A, b = _data()
    aux0 = {"z": jnp.zeros(M), "sweeps": jnp.zeros((), jnp.int32)}

    def bad(x, args, aux):
        f, g, new = _objective(True)(x, args, aux)
        return f, g, new["z"]

    with pytest.raises(ValueError, match="aux0's structure"):
        iterate(LBFGSB(aux0=aux0), bad, jnp.zeros(N), (A, b))
    with pytest.raises(ValueError, match=r"must return \(f, g, aux_new\)"):
        iterate(LBFGSB(aux0=aux0), lambda x, args, aux: (jnp.sum(x * x), 2 * x), jnp.zeros(N),
                (A, b))


def test_objective_is_traced_once_into_the_program():
    """One evaluation site: fn is traced twice, once for its output shapes (not compiled)
    and once into the loop (before: three copies, x0's, the first trial's, the loop's)."""
    calls = []

    def fn(x, args):
        calls.append(1)
        return jnp.sum((x - 1.0) ** 2), 2.0 * (x - 1.0)

    lb = jnp.zeros(4)
    jax.jit(lambda x0: iterate(LBFGSB(lower=lb), fn, x0)).lower(jnp.full(4, 3.0))
    assert len(calls) == 2
