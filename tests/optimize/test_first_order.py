"""Momentum GD, RMSProp and Adam: the cheat sheet's update rules, but honest termination."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinfer.optimize import Status, minimize

A = jnp.diag(jnp.array([1.0, 2.0, 3.0]))
B = jnp.array([1.0, -1.0, 0.5])
QUAD_MIN = np.asarray(B) / np.diag(np.asarray(A))


def quad(x):
    return 0.5 * x @ A @ x - B @ x


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosen_grad_np(x):
    g = np.zeros_like(x)
    g[:-1] = -400.0 * x[:-1] * (x[1:] - x[:-1] ** 2) - 2.0 * (1.0 - x[:-1])
    g[1:] += 200.0 * (x[1:] - x[:-1] ** 2)
    return g


# The cheat sheet's solvers (adapted from autograd), rewritten in NumPy as the reference.
def seed_momentum(grad, x, steps, learning_rate=1e-3, mass=0.9):
    v = np.zeros_like(x)
    for _ in range(steps):
        v = mass * v - (1.0 - mass) * grad(x)
        x = x + learning_rate * v
    return x


def seed_rmsprop(grad, x, steps, learning_rate=0.1, gamma=0.9, eps=1e-8):
    avg = np.ones_like(x)
    for _ in range(steps):
        g = grad(x)
        avg = avg * gamma + g ** 2 * (1 - gamma)
        x = x - learning_rate * g / (np.sqrt(avg) + eps)
    return x


def seed_adam(grad, x, steps, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
    m = np.zeros_like(x)
    v = np.zeros_like(x)
    for i in range(steps):
        g = grad(x)
        m = (1 - beta1) * g + beta1 * m
        v = (1 - beta2) * g ** 2 + beta2 * v
        mhat = m / (1 - beta1 ** (i + 1))
        vhat = v / (1 - beta2 ** (i + 1))
        x = x - learning_rate * mhat / (np.sqrt(vhat) + eps)
    return x


SEED = {"momentum": seed_momentum, "rmsprop": seed_rmsprop, "adam": seed_adam}


@pytest.mark.parametrize("method", ["momentum", "rmsprop", "adam"])
def test_update_rule_and_honest_failure(method):
    """50 steps on Rosenbrock: the same iterates as the cheat sheet's solver, and, since the
    budget runs out long before convergence, success=False with MAX_ITER (the original
    said success=True)."""
    x0 = np.array([-1.2, 1.0, 0.5])
    res = minimize(rosen, x0, method=method, options={"maxiter": 50})
    assert int(res.status) == Status.MAX_ITER
    assert not bool(res.success)
    assert "maximum number of iterations" in res.message
    assert int(res.nit) == 50
    ref = SEED[method](rosen_grad_np, x0.copy(), 50)
    np.testing.assert_allclose(res.x, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.fun, rosen(jnp.asarray(ref)), rtol=1e-10)


@pytest.mark.parametrize("method,options", [
    ("gd", {"learning_rate": 0.5, "maxiter": 5000}),
    ("rmsprop", {"learning_rate": 0.01, "maxiter": 5000}),
    ("adam", {"learning_rate": 0.05, "maxiter": 5000}),
])
def test_converges_on_easy_quadratic(method, options):
    res = minimize(quad, jnp.zeros(3), method=method, options=options)
    assert bool(res.success), res.message
    assert int(res.status) == Status.GTOL
    assert int(res.nit) < options["maxiter"]
    assert float(jnp.max(jnp.abs(res.jac))) <= 1e-5
    # |x - x*| <= |g| / lambda_min
    np.testing.assert_allclose(res.x, QUAD_MIN, atol=1.1e-5)


def test_ftol_and_bounds():
    res = minimize(quad, jnp.zeros(3), method="adam",
                   options={"learning_rate": 0.05, "ftol": 1e-10, "gtol": 0.0,
                            "maxiter": 5000})
    assert int(res.status) == Status.FTOL and bool(res.success)
    # projected steps: x[1] is held at its bound 0 where the gradient pushes outward
    res = minimize(quad, jnp.full(3, 0.1), method="momentum", bounds=[(None, None), (0, 1), (0, 1)],
                   options={"learning_rate": 0.5, "maxiter": 5000})
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.x, [QUAD_MIN[0], 0.0, QUAD_MIN[2]], atol=1.1e-5)


def test_vmap_over_x0_equals_loop():
    starts = jnp.array([[0.0, 0.0, 0.0], [2.0, -3.0, 1.0], [10.0, 10.0, 10.0]])

    def solve(x0):
        r = minimize(quad, x0, method="adam", options={"learning_rate": 0.05, "maxiter": 5000})
        return r.x, r.nit, r.status

    xs, nits, statuses = jax.jit(jax.vmap(solve))(starts)
    one = jax.jit(solve)
    for i, s in enumerate(starts):
        x, nit, status = one(s)
        np.testing.assert_allclose(xs[i], x, atol=1e-14)
        assert int(nits[i]) == int(nit) and int(statuses[i]) == int(status) == Status.GTOL


def test_any_optax_transform_as_a_solver_setting():
    """FirstOrder driven by iterate with plain optax.sgd: on a diagonal quadratic the error
    contracts by (1 - lr d_i) per step, so the step count to gtol has a closed form."""
    import optax

    from jaxinfer.optimize._iterate import iterate
    from jaxinfer.optimize.first_order import FirstOrder

    d = np.array([1.0, 2.0, 4.0])
    c = np.array([0.5, -1.0, 2.0])
    lr, gtol = 0.1, 1e-8

    def fn(x, args):
        return jax.value_and_grad(lambda z: 0.5 * jnp.sum(args[0] * (z - args[1]) ** 2))(x)

    solver = FirstOrder(transform=optax.sgd(lr), gtol=gtol, maxiter=1000)
    res = jax.jit(lambda x0: iterate(solver, fn, x0, (jnp.asarray(d), jnp.asarray(c))))(
        jnp.zeros(3))
    k = 0
    while np.max(np.abs(d * (1 - lr * d) ** k * (0 - c))) > gtol:
        k += 1
    assert int(res.status) == Status.GTOL and int(res.nit) == k
    np.testing.assert_allclose(res.x, c, atol=gtol)
    short = iterate(FirstOrder(transform=optax.sgd(lr), gtol=gtol, maxiter=5), fn,
                    jnp.zeros(3), (jnp.asarray(d), jnp.asarray(c)))
    assert int(short.status) == Status.MAX_ITER and not bool(short.success)
    np.testing.assert_allclose(short.x, c - (1 - lr * d) ** 5 * c, rtol=1e-12)
