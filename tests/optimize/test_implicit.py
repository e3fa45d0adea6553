"""Implicit differentiation of solutions: against closed forms and central differences of
re-solves (never against the helper itself)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxinfer.optimize.implicit import implicit_minimum, implicit_root, implicit_solve

A = jnp.array([[3.0, 1.0], [1.0, 2.0]])
THETA = jnp.array([0.3, 0.7])


def quartic(x, theta):
    return 0.5 * x @ A @ x - jnp.sin(theta) @ x + 0.25 * jnp.sum(x ** 4)


@jax.jit
def newton_minimiser(theta, lower=None):
    """Projected Newton on ``quartic`` (50 fixed steps: converged to rounding)."""
    lo = jnp.full(2, -jnp.inf) if lower is None else lower

    def body(_, x):
        g = jax.grad(quartic)(x, theta)
        free = ~((x <= lo) & (g > 0))
        h = jax.hessian(quartic)(x, theta)
        h = jnp.where(free[:, None] & free[None, :], h, jnp.eye(2))
        return jnp.maximum(x - jnp.linalg.solve(h, jnp.where(free, g, 0.0)), lo)

    return lax.fori_loop(0, 50, body, jnp.ones(2))


def central_jacobian(fn, theta, h=1e-6):
    fn = jax.jit(fn)
    cols = [(np.asarray(fn(theta + h * e)) - np.asarray(fn(theta - h * e))) / (2 * h)
            for e in np.eye(theta.size)]
    return np.stack(cols, axis=-1)


def test_quadratic_minimiser_matches_closed_form():
    # x*(θ) = A⁻¹ b(θ), b = (θ0², θ0 θ1): dx*/dθ = A⁻¹ db/dθ
    def objective(x, th):
        return 0.5 * x @ A @ x - jnp.array([th[0] ** 2, th[0] * th[1]]) @ x

    def fitted(th):
        x_star = jnp.linalg.solve(A, jnp.array([th[0] ** 2, th[0] * th[1]]))
        return implicit_minimum(lax.stop_gradient(x_star), objective, th)

    db = np.array([[2 * THETA[0], 0.0], [THETA[1], THETA[0]]])
    expected = np.linalg.solve(np.asarray(A), db)
    np.testing.assert_allclose(jax.jit(jax.jacrev(fitted))(THETA), expected, rtol=1e-12)
    np.testing.assert_allclose(jax.jit(jax.jacfwd(fitted))(THETA), expected, rtol=1e-12)


@pytest.mark.parametrize("linear_solver", ["dense", "cg"])
def test_nonlinear_minimiser_grad_and_jvp_match_resolves(linear_solver):
    def fitted(th):
        return implicit_minimum(newton_minimiser(lax.stop_gradient(th)), quartic, th,
                                linear_solver=linear_solver, tol=1e-12)

    reference = central_jacobian(newton_minimiser, THETA)
    np.testing.assert_allclose(jax.jit(jax.jacrev(fitted))(THETA), reference, rtol=1e-6)
    tangent = jnp.array([0.4, -1.0])
    _, jvp = jax.jit(lambda t, d: jax.jvp(fitted, (t,), (d,)))(THETA, tangent)
    np.testing.assert_allclose(jvp, reference @ np.asarray(tangent), rtol=1e-6)


def test_second_derivatives_see_the_solution_move():
    def loss(th):
        x = implicit_minimum(newton_minimiser(lax.stop_gradient(th)), quartic, th)
        return jnp.sum(x ** 2)

    grad = jax.grad(loss)
    reference = central_jacobian(grad, THETA, h=1e-5)
    np.testing.assert_allclose(jax.jit(jax.hessian(loss))(THETA), reference, rtol=1e-6)


def test_closed_over_values_are_differentiated_and_batched():
    def loss(scale, th):
        def objective(x, t):  # closes over the traced `scale`
            return scale * quartic(x, t) + scale ** 2 * jnp.sum(x)

        def solve(t):
            def body(_, x):
                return x - jnp.linalg.solve(jax.hessian(objective)(x, t),
                                            jax.grad(objective)(x, t))
            return lax.fori_loop(0, 50, body, jnp.zeros(2))

        return jnp.sum(implicit_solve(solve, jax.grad(objective), th, symmetric=True) ** 2)

    scales = jnp.array([1.5, 0.8])
    grads = jax.jit(jax.vmap(jax.grad(loss), in_axes=(0, None)))(scales, THETA)
    loss_jit = jax.jit(loss)
    for scale, g in zip(scales, grads):
        fd = (loss_jit(scale + 1e-6, THETA) - loss_jit(scale - 1e-6, THETA)) / 2e-6
        np.testing.assert_allclose(g, fd, rtol=1e-6)


def test_bounded_minimiser_follows_the_active_bound():
    lower = jnp.array([0.0, 0.5])   # at THETA2 the second parameter sits on its bound
    theta2 = jnp.array([1.2, 0.1])

    def fitted(th, lo):
        x_star = newton_minimiser(lax.stop_gradient(th), lax.stop_gradient(lo))
        return implicit_minimum(x_star, quartic, th, bounds=(lo, jnp.inf))

    x = jax.jit(fitted)(theta2, lower)
    assert float(x[1]) == 0.5 and float(x[0]) > 0.0
    reference = central_jacobian(lambda t: newton_minimiser(t, lower), theta2)
    np.testing.assert_allclose(jax.jit(jax.jacrev(fitted))(theta2, lower), reference, rtol=1e-6,
                               atol=1e-9)
    # d x / d lower: the held parameter moves with its bound, the free one responds to it
    ref_lo = central_jacobian(lambda lo: newton_minimiser(theta2, lo), lower)
    np.testing.assert_allclose(jax.jit(jax.jacrev(fitted, argnums=1))(theta2, lower), ref_lo,
                               rtol=1e-6, atol=1e-9)


def test_root_of_a_non_symmetric_condition():
    # fixed point x = cos(θ x) + 0.1 y, y = 0.5 x: a non-symmetric 2x2 condition
    def condition(z, th):
        x, y = z
        return jnp.stack([x - jnp.cos(th * x) - 0.1 * y, y - 0.5 * x])

    def solve(th):
        return lax.fori_loop(0, 200, lambda _, z: z - condition(z, th), jnp.zeros(2))

    def fitted(th):
        return implicit_solve(solve, condition, th, linear_solver="gmres", tol=1e-12)

    th = jnp.asarray(0.8)
    solve_jit = jax.jit(solve)
    fd = (np.asarray(solve_jit(th + 1e-6)) - np.asarray(solve_jit(th - 1e-6))) / 2e-6
    np.testing.assert_allclose(jax.jit(jax.jacrev(fitted))(th), fd, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(jax.jacfwd(fitted))(th), fd, rtol=1e-6)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="square system"):
        implicit_root(jnp.zeros(2), lambda x, t: jnp.zeros(3), THETA)
    with pytest.raises(ValueError, match="linear_solver"):
        implicit_root(jnp.zeros(2), lambda x, t: x, THETA, linear_solver="lu")
    with pytest.raises(TypeError, match="floating point"):
        implicit_root(jnp.zeros(2, jnp.int32), lambda x, t: x, THETA)
