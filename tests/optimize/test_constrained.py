"""Constrained minimisation through ``minimize`` ('SLSQP': sequential quadratic programming;
'auglag': the augmented Lagrangian) against scipy's SLSQP and the published Hock–Schittkowski
optima."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

from jaxinfer.optimize import Status, minimize


def scipy_slsqp(fun, x0, constraints, bounds):
    """scipy's SLSQP with tight tolerance, given exact (autodiff) derivatives of the JAX
    objective and constraints, so that finite-difference noise does not stop it early."""
    vg = jax.jit(jax.value_and_grad(fun))

    def with_jac(con):
        c = jax.jit(con["fun"])
        J = jax.jit(jax.jacobian(con["fun"]))
        return dict(type=con["type"], fun=lambda x: np.asarray(c(jnp.asarray(x))),
                    jac=lambda x: np.asarray(J(jnp.asarray(x))))

    def fun_and_grad(x):
        v, g = vg(jnp.asarray(x))
        return float(v), np.asarray(g)

    ref = so.minimize(fun_and_grad, np.asarray(x0, float), jac=True, method="SLSQP",
                      constraints=[with_jac(c) for c in constraints],
                      bounds=bounds, options={"ftol": 1e-10, "maxiter": 500})
    assert ref.success, ref.message
    return ref


# --- the cheat sheet's example, made well-posed -------------------------------------------
# Its objective m*x + c is not a scalar function; keep its constraints and bounds exactly
# (x.sum() == 1, x.sum() + 1 >= 0, x >= 0) and minimise a quadratic whose unconstrained
# minimum (0.8, 0.6) violates the equality and whose constrained minimum has x[1] at its bound.
TARGET = jnp.array([1.4, -0.2])


def seed_objective(x):
    return jnp.sum((x - TARGET) ** 2) + 0.5 * x[0] * x[1]


def test_seed_example_matches_scipy():
    constraints = (
        dict(type="eq", fun=lambda x: x.sum() - 1.0, jac=lambda x: jnp.ones_like(x)),
        dict(type="ineq", fun=lambda x: x.sum() + 1.0, jac=lambda x: jnp.ones_like(x)),
    )
    bounds = ((0, None), (0, None))
    res = minimize(seed_objective, [0, 0], method="SLSQP", jac=jax.grad(seed_objective),
                   bounds=bounds, constraints=constraints)
    ref = scipy_slsqp(seed_objective, [0, 0], (
        dict(type="eq", fun=lambda x: x.sum() - 1.0),
        dict(type="ineq", fun=lambda x: x.sum() + 1.0),
    ), bounds)
    assert bool(res.success) and int(res.reason) == Status.CONSTRAINED_OK, res.message
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    np.testing.assert_allclose(res.x, [1.0, 0.0], atol=1e-6)  # closed form: bound active
    np.testing.assert_allclose(res.fun, ref.fun, atol=1e-8)
    assert abs(float(jnp.sum(res.x)) - 1.0) <= 1e-8


# --- Hock & Schittkowski (1981) test problems 21, 35, 71 ------------------------------------
def hs21(x):
    return 0.01 * x[0] ** 2 + x[1] ** 2 - 100.0


def hs35(x):
    return (9.0 - 8.0 * x[0] - 6.0 * x[1] - 4.0 * x[2] + 2.0 * x[0] ** 2 + 2.0 * x[1] ** 2
            + x[2] ** 2 + 2.0 * x[0] * x[1] + 2.0 * x[0] * x[2])


def hs71(x):
    return x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2]


HS = {
    "hs21": dict(
        fun=hs21, x0=[-1.0, -1.0], bounds=[(2, 50), (-50, 50)],
        cons=lambda xp: [dict(type="ineq", fun=lambda x: 10.0 * x[0] - x[1] - 10.0)],  # noqa
        f_star=-99.96, x_star=[2.0, 0.0]),
    "hs35": dict(
        fun=hs35, x0=[0.5, 0.5, 0.5], bounds=[(0, None)] * 3,
        cons=lambda xp: [dict(type="ineq", fun=lambda x: 3.0 - x[0] - x[1] - 2.0 * x[2])],
        f_star=1.0 / 9.0, x_star=[4.0 / 3.0, 7.0 / 9.0, 4.0 / 9.0]),
    "hs71": dict(
        fun=hs71, x0=[1.0, 5.0, 5.0, 1.0], bounds=[(1, 5)] * 4,
        cons=lambda xp: [dict(type="ineq", fun=lambda x: xp.prod(x) - 25.0),
                         dict(type="eq", fun=lambda x: xp.sum(x ** 2) - 40.0)],
        f_star=17.0140173, x_star=[1.0, 4.7429994, 3.8211503, 1.3794082]),
}


@pytest.mark.parametrize("name", sorted(HS))
def test_hock_schittkowski(name):
    p = HS[name]
    res = minimize(p["fun"], p["x0"], method="SLSQP", bounds=p["bounds"],
                   constraints=p["cons"](jnp))
    ref = scipy_slsqp(p["fun"], p["x0"], p["cons"](jnp), p["bounds"])
    assert bool(res.success), res.message
    assert int(res.reason) == Status.CONSTRAINED_OK
    # published optimum (x* given to 7-8 digits in Hock & Schittkowski)
    np.testing.assert_allclose(res.fun, p["f_star"], atol=1e-6)
    np.testing.assert_allclose(res.x, p["x_star"], atol=1e-6)
    # scipy SLSQP on the same problem
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    np.testing.assert_allclose(res.fun, ref.fun, atol=1e-6)
    assert float(res.extra["constraint_violation"]) <= 1e-8


@pytest.mark.parametrize("method", ["slsqp", "auglag"])
def test_infeasible_problem_fails_honestly(method):
    """x >= 1 and x <= 0 cannot both hold: INFEASIBLE, success False."""
    cons = [dict(type="ineq", fun=lambda x: x[0] - 1.0), dict(type="ineq", fun=lambda x: -x[0])]
    res = minimize(lambda x: jnp.sum(x ** 2), jnp.array([0.5, 0.5]), method=method,
                   constraints=cons, options={"maxiter": 15})
    assert int(res.reason) == Status.INFEASIBLE and not bool(res.success)


def test_constraint_errors():
    f = lambda x: jnp.sum(x ** 2)  # noqa: E731
    with pytest.raises(ValueError, match="'eq' or 'ineq'"):
        minimize(f, jnp.ones(2), method="SLSQP", constraints={"type": "le", "fun": f})
    # a numpy jac runs on the host (as scipy calls it); one of the wrong size is refused
    res = minimize(f, jnp.ones(2), method="SLSQP",
                   constraints={"type": "eq", "fun": lambda x: x[0] - 1.0,
                                "jac": lambda x: np.array([1.0, 0.0 * float(x[1])])})
    np.testing.assert_allclose(res.x, [1.0, 0.0], atol=1e-10)
    with pytest.raises(ValueError, match="JAX-traceable and return an \\(1, 2\\) array"):
        minimize(f, jnp.ones(2), method="SLSQP",
                 constraints={"type": "eq", "fun": lambda x: x[0] - 1.0,
                              "jac": lambda x: np.array([1.0, 0.0, float(x[1])])})


def test_jit_vmap_over_data():
    """Project points c onto the unit disc intersected with x[0] >= 0.2: vmap == loop."""
    def solve(c):
        cons = [dict(type="ineq", fun=lambda x: 1.0 - jnp.sum(x ** 2))]
        return minimize(lambda x: jnp.sum((x - c) ** 2), jnp.array([0.5, 0.0]),
                        method="SLSQP", constraints=cons, bounds=[(0.2, None), (None, None)]).x

    cs = jnp.array([[2.0, 0.0], [0.3, 0.1], [-1.0, 1.0]])
    batched = jax.jit(jax.vmap(solve))(cs)
    one = jax.jit(solve)
    np.testing.assert_allclose(batched, jnp.stack([one(c) for c in cs]), atol=1e-12)
    np.testing.assert_allclose(batched[0], [1.0, 0.0], atol=1e-6)      # on the circle
    np.testing.assert_allclose(batched[1], [0.3, 0.1], atol=1e-8)      # inside: unchanged
    np.testing.assert_allclose(batched[2], [0.2, np.sqrt(1 - 0.04)], atol=1e-6)  # corner


def test_float32_hs71():
    """float32 in, float32 out; default tolerances scale with the precision."""
    p = HS["hs71"]
    res = minimize(p["fun"], jnp.asarray(p["x0"], jnp.float32), method="SLSQP",
                   bounds=p["bounds"], constraints=p["cons"](jnp))
    assert res.x.dtype == jnp.float32
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.fun, p["f_star"], rtol=1e-5)
    # default float32 tolerances: sqrt(eps32) = 3.5e-4 relative to |grad f| ~ 15 bounds the
    # Lagrangian gradient by ~5e-3, so x is good to a few 1e-3 (f, flat at x*, to 1e-5)
    np.testing.assert_allclose(res.x, p["x_star"], atol=5e-3)


def test_degenerate_duplicate_equalities():
    """Two copies of the same equality (no unique multipliers): still converges to the
    closed-form projection, with multipliers satisfying lam1 + 2 lam2 = 1."""
    cons = [dict(type="eq", fun=lambda x: x[0] + x[1] - 1.0),
            dict(type="eq", fun=lambda x: 2.0 * x[0] + 2.0 * x[1] - 2.0)]
    res = minimize(lambda x: jnp.sum(x ** 2), jnp.ones(3), method="SLSQP", constraints=cons)
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.x, [0.5, 0.5, 0.0], atol=1e-7)
    lam = np.asarray(res.extra["multipliers_eq"])
    assert abs(lam[0] + 2.0 * lam[1] - 1.0) <= 1e-6


def test_solver_module_under_iterate_closed_form():
    """min x^2 + y^2 s.t. x + y = 1: x* = (1/2, 1/2), multiplier 1 (grad f = lam grad h)."""
    from jaxinfer.optimize._iterate import iterate
    from jaxinfer.optimize.constrained import AugmentedLagrangian

    solver = AugmentedLagrangian(eq=lambda x: jnp.atleast_1d(x[0] + x[1] - 1.0))
    res = iterate(solver, lambda x, a: jax.value_and_grad(lambda z: z @ z)(x), jnp.zeros(2))
    assert int(res.status) == Status.CONSTRAINED_OK and bool(res.success)
    np.testing.assert_allclose(res.x, [0.5, 0.5], atol=1e-7)
    np.testing.assert_allclose(res.extra["multipliers_eq"], [1.0], atol=1e-6)
    assert float(res.extra["constraint_violation"]) <= 1.5e-8
