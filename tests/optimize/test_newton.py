"""NewtonCG as a solver of the one shape: driven by hand, by iterate, against scipy."""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize as so

from jaxinfer.optimize import Status, minimize
from jaxinfer.optimize._iterate import RUNNING, iterate
from jaxinfer.optimize.newton import NewtonCG

A = jnp.array([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])
B = jnp.array([1.0, -2.0, 0.5])


def objective(x, args):
    """Strictly convex: 0.5 x'Ax - b'x + 0.1 sum x^4."""
    a, b = args
    return 0.5 * x @ a @ x - b @ x + 0.1 * jnp.sum(x ** 4)


value_and_grad = jax.value_and_grad(objective)


def test_hand_driven_newton_cg_matches_iterate_and_scipy():
    solver = NewtonCG(xtol=1e-12)
    args = (A, B)
    step = jax.jit(lambda st: solver.step(value_and_grad, st, args))
    terminate = jax.jit(lambda st: solver.terminate(value_and_grad, st, args))
    state = solver.init(value_and_grad, jnp.zeros(3), args)
    k = 0
    while int(terminate(state)) == RUNNING:
        state = step(state)
        k += 1
    res = jax.jit(lambda x0: iterate(solver, value_and_grad, x0, args))(jnp.zeros(3))
    assert int(terminate(state)) == int(res.status) == Status.XTOL and bool(res.success)
    assert k == int(res.nit) and int(res.extra["nhev"]) == int(state.nhev) > 0
    np.testing.assert_allclose(state.x, res.x, atol=1e-14)
    a, b = np.asarray(A), np.asarray(B)
    ref = so.minimize(lambda x: 0.5 * x @ a @ x - b @ x + 0.1 * np.sum(x ** 4), np.zeros(3),
                      jac=lambda x: a @ x - b + 0.4 * x ** 3, method="BFGS",
                      options={"gtol": 1e-12})
    np.testing.assert_allclose(res.x, ref.x, atol=1e-9)
    assert float(jnp.max(jnp.abs(res.jac))) <= 1e-9


def test_maxiter_is_a_failure_and_user_hessp_is_used():
    res = minimize(lambda x: objective(x, (A, B)), jnp.zeros(3), method="Newton-CG",
                   options={"maxiter": 1, "xtol": 1e-14})
    assert int(res.reason) == Status.MAX_ITER and not bool(res.success) and int(res.nit) == 1
    calls = []

    def hessp(x, p):
        calls.append(1)
        return A @ p + 1.2 * x ** 2 * p

    res = minimize(lambda x: objective(x, (A, B)), jnp.zeros(3), method="Newton-CG",
                   hessp=hessp, options={"xtol": 1e-12})
    assert calls and int(res.reason) == Status.XTOL
    full = minimize(lambda x: objective(x, (A, B)), jnp.zeros(3), method="Newton-CG",
                    options={"xtol": 1e-12})
    np.testing.assert_allclose(res.x, full.x, atol=1e-10)
