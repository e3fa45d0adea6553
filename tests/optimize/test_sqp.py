"""The SQP solver (jaxinfer.optimize.sqp.SQP) against published Hock–Schittkowski optima,
scipy's SLSQP, closed forms, and its own loop under vmap; feasibility to 1e-10 in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

from jaxinfer.optimize import Status
from jaxinfer.optimize._iterate import iterate
from jaxinfer.optimize.sqp import SQP, refine_active_set, solve_qp


def solve(fun, x0, *, eq=None, ineq=None, lower=None, upper=None, **settings):
    solver = SQP(eq=eq, ineq=ineq, lower=lower, upper=upper, **settings)
    vg = jax.value_and_grad(fun)
    return jax.jit(lambda x: iterate(solver, lambda z, a: vg(z), x))(jnp.asarray(x0))


def violation(res, eq=None, ineq=None):
    v = 0.0
    if eq is not None:
        v = max(v, float(jnp.max(jnp.abs(eq(res.x)))))
    if ineq is not None:
        v = max(v, float(jnp.max(jnp.maximum(-ineq(res.x), 0.0))))
    return v


def scipy_slsqp(fun, x0, eq, ineq, bounds):
    vg = jax.jit(jax.value_and_grad(fun))
    cons = []
    for kind, c in (("eq", eq), ("ineq", ineq)):
        if c is not None:
            cj, Jj = jax.jit(c), jax.jit(jax.jacfwd(c))
            cons.append(dict(type=kind, fun=lambda x, cj=cj: np.asarray(cj(jnp.asarray(x))),
                             jac=lambda x, Jj=Jj: np.asarray(Jj(jnp.asarray(x)))))
    ref = so.minimize(lambda x: tuple(map(np.asarray, vg(jnp.asarray(x)))), np.asarray(x0),
                      jac=True, method="SLSQP", constraints=cons, bounds=bounds,
                      options={"ftol": 1e-10, "maxiter": 500})
    assert ref.success, ref.message
    return ref


# Hock & Schittkowski (1981) problems 21, 35, 71: published optima
HS = {
    "hs21": dict(fun=lambda x: 0.01 * x[0] ** 2 + x[1] ** 2 - 100.0, x0=[-1.0, -1.0],
                 ineq=lambda x: jnp.atleast_1d(10.0 * x[0] - x[1] - 10.0), eq=None,
                 bounds=[(2.0, 50.0), (-50.0, 50.0)], f_star=-99.96, x_star=[2.0, 0.0]),
    "hs35": dict(fun=lambda x: (9.0 - 8.0 * x[0] - 6.0 * x[1] - 4.0 * x[2] + 2.0 * x[0] ** 2
                                + 2.0 * x[1] ** 2 + x[2] ** 2 + 2.0 * x[0] * x[1]
                                + 2.0 * x[0] * x[2]),
                 x0=[0.5, 0.5, 0.5], ineq=lambda x: jnp.atleast_1d(3.0 - x[0] - x[1] - 2 * x[2]),
                 eq=None, bounds=[(0.0, np.inf)] * 3, f_star=1.0 / 9.0,
                 x_star=[4.0 / 3.0, 7.0 / 9.0, 4.0 / 9.0]),
    "hs71": dict(fun=lambda x: x[0] * x[3] * (x[0] + x[1] + x[2]) + x[2], x0=[1.0, 5.0, 5.0, 1.0],
                 ineq=lambda x: jnp.atleast_1d(jnp.prod(x) - 25.0),
                 eq=lambda x: jnp.atleast_1d(jnp.sum(x ** 2) - 40.0),
                 bounds=[(1.0, 5.0)] * 4, f_star=17.0140173,
                 x_star=[1.0, 4.7429994, 3.8211503, 1.3794082]),
}


@pytest.mark.parametrize("name", sorted(HS))
def test_hock_schittkowski(name):
    p = HS[name]
    lb, ub = np.array(p["bounds"]).T
    res = solve(p["fun"], np.asarray(p["x0"]), eq=p["eq"], ineq=p["ineq"], lower=lb, upper=ub)
    assert int(res.status) == Status.CONSTRAINED_OK and bool(res.success), res.message
    np.testing.assert_allclose(res.fun, p["f_star"], atol=1e-6)
    np.testing.assert_allclose(res.x, p["x_star"], atol=1e-6)
    ref = scipy_slsqp(p["fun"], p["x0"], p["eq"], p["ineq"], p["bounds"])
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert violation(res, p["eq"], p["ineq"]) <= 1e-10
    assert np.all(np.asarray(res.x) >= lb) and np.all(np.asarray(res.x) <= ub)


def test_seed_example_equality_inequality_bounds():
    """The cheat sheet's constraints (sum x = 1, sum x + 1 >= 0, x >= 0) on a quadratic whose
    constrained minimum has x[1] on its bound: closed form (1, 0), and scipy's SLSQP."""
    target = jnp.array([1.4, -0.2])
    fun = lambda x: jnp.sum((x - target) ** 2) + 0.5 * x[0] * x[1]  # noqa: E731
    eq = lambda x: jnp.atleast_1d(x.sum() - 1.0)  # noqa: E731
    ineq = lambda x: jnp.atleast_1d(x.sum() + 1.0)  # noqa: E731
    res = solve(fun, jnp.zeros(2), eq=eq, ineq=ineq, lower=0.0)
    assert int(res.status) == Status.CONSTRAINED_OK, res.message
    np.testing.assert_allclose(res.x, [1.0, 0.0], atol=1e-8)
    ref = scipy_slsqp(fun, [0.0, 0.0], eq, ineq, [(0, None), (0, None)])
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert violation(res, eq, ineq) <= 1e-10
    # multipliers: grad f = lam * (1, 1) + (0, mu_lower); grad f(1, 0) = (-0.8, 0.9)
    np.testing.assert_allclose(res.extra["multipliers_eq"], [-0.8], atol=1e-8)
    np.testing.assert_allclose(res.extra["multipliers_lower"], [0.0, 1.7], atol=1e-8)


def test_equality_only_closed_form():
    """min x.x s.t. a.x = 1: x* = a / |a|^2, multiplier 2 / |a|^2."""
    a = jnp.array([1.0, 2.0, -2.0])
    res = solve(lambda x: x @ x, jnp.array([3.0, 0.0, 1.0]),
                eq=lambda x: jnp.atleast_1d(a @ x - 1.0))
    assert int(res.status) == Status.CONSTRAINED_OK, res.message
    np.testing.assert_allclose(res.x, a / 9.0, atol=1e-10)
    np.testing.assert_allclose(res.extra["multipliers_eq"], [2.0 / 9.0], atol=1e-10)
    assert abs(float(a @ res.x) - 1.0) <= 1e-10


def test_inequality_only_projection_on_disc():
    """Nearest point of the unit disc to c = (2, 1): c / |c|."""
    c = jnp.array([2.0, 1.0])
    res = solve(lambda x: jnp.sum((x - c) ** 2), jnp.zeros(2),
                ineq=lambda x: jnp.atleast_1d(1.0 - x @ x))
    assert int(res.status) == Status.CONSTRAINED_OK, res.message
    np.testing.assert_allclose(res.x, c / jnp.linalg.norm(c), atol=1e-8)
    assert float(jnp.maximum(res.x @ res.x - 1.0, 0.0)) <= 1e-10


def test_bounds_only_is_clipping():
    """A separable quadratic with box bounds: the minimiser is the clipped target."""
    t = jnp.array([-2.0, 0.3, 4.0, 1.0])
    w = jnp.array([1.0, 3.0, 0.5, 2.0])
    lb, ub = jnp.array([-1.0, 0.0, 0.0, -np.inf]), jnp.array([1.0, 1.0, 2.0, np.inf])
    res = solve(lambda x: jnp.sum(w * (x - t) ** 2), jnp.zeros(4), lower=lb, upper=ub)
    assert int(res.status) == Status.CONSTRAINED_OK, res.message
    np.testing.assert_allclose(res.x, jnp.clip(t, lb, ub), atol=1e-10)


def test_infeasible_reports_failure():
    """x >= 1 and x <= 0 cannot both hold: INFEASIBLE, success False."""
    res = solve(lambda x: jnp.sum(x ** 2), jnp.array([0.5, 0.5]),
                ineq=lambda x: jnp.stack([x[0] - 1.0, -x[0]]), maxiter=15)
    assert int(res.status) == Status.INFEASIBLE and not bool(res.success)


def test_vmap_batch_equals_loop():
    """Projection of 8 points onto {|x| <= 1, x0 >= 0.2}: vmap == one-by-one, and closed forms."""
    cs = jnp.array([[2.0, 0.0], [0.3, 0.1], [-1.0, 1.0], [0.0, -3.0], [1.0, 1.0],
                    [0.5, 0.5], [3.0, -4.0], [0.1, 0.0]])
    solver = SQP(ineq=lambda x: jnp.atleast_1d(1.0 - x @ x), lower=jnp.array([0.2, -np.inf]))

    def one(c):
        vg = jax.value_and_grad(lambda x: jnp.sum((x - c) ** 2))
        return iterate(solver, lambda z, a: vg(z), jnp.array([0.5, 0.0]))

    batched = jax.jit(jax.vmap(one))(cs)
    single = jax.jit(one)
    looped = [single(c) for c in cs]
    np.testing.assert_allclose(batched.x, jnp.stack([r.x for r in looped]), atol=1e-12)
    np.testing.assert_array_equal(batched.status, [int(r.status) for r in looped])
    assert bool(jnp.all(batched.success))
    norms = np.linalg.norm(np.asarray(cs), axis=1)
    expected = np.where(norms[:, None] > 1, np.asarray(cs) / norms[:, None], np.asarray(cs))
    expected[2] = [0.2, np.sqrt(1 - 0.04)]           # corner of disc and bound
    expected[3] = [0.2, -np.sqrt(1 - 0.04)]
    expected[7] = [0.2, 0.0]                         # on the bound, inside the disc
    np.testing.assert_allclose(batched.x, expected, atol=1e-8)


def test_qp_against_scipy():
    """One QP subproblem (inequalities, an equality) against scipy's SLSQP on the same QP."""
    rng = np.random.default_rng(0)
    M = rng.normal(size=(4, 4))
    B, g = M @ M.T + np.eye(4), rng.normal(size=4)
    E, h = rng.normal(size=(1, 4)), rng.normal(size=1)
    G, c = rng.normal(size=(3, 4)), rng.normal(size=3)
    sol = jax.jit(solve_qp)(*(jnp.asarray(a) for a in (B, g, E, h, G, c)))
    ref = so.minimize(lambda d: g @ d + 0.5 * d @ B @ d, np.zeros(4), jac=lambda d: g + B @ d,
                      method="SLSQP", options={"ftol": 1e-14, "maxiter": 200},
                      constraints=[dict(type="eq", fun=lambda d: E @ d + h, jac=lambda d: E),
                                   dict(type="ineq", fun=lambda d: G @ d + c, jac=lambda d: G)])
    assert bool(sol.converged) and ref.success
    np.testing.assert_allclose(sol.d, ref.x, atol=1e-7)
    # KKT: stationarity with the returned multipliers, z >= 0
    np.testing.assert_allclose(B @ sol.d + g - E.T @ sol.y - G.T @ sol.z, 0.0, atol=1e-10)
    assert float(jnp.min(sol.z)) >= 0.0


def test_float32_hs71_right_or_refused():
    """float32: either the right answer (to float32 accuracy) or not reported as converged."""
    p = HS["hs71"]
    lb, ub = np.array(p["bounds"], np.float32).T
    res = solve(p["fun"], np.asarray(p["x0"], np.float32), eq=p["eq"], ineq=p["ineq"],
                lower=lb, upper=ub)
    assert res.x.dtype == jnp.float32
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.fun, p["f_star"], rtol=1e-5)
    np.testing.assert_allclose(res.x, p["x_star"], atol=5e-3)
    assert violation(res, p["eq"], p["ineq"]) <= 1e-3


def test_inconsistent_linearisation_is_relaxed():
    """At x0 = (0, 1) the linearised x0^2 >= 1 reads -1 >= 0: the QP is relaxed (elastic)
    and the run goes on to the solution (1, 1), in scipy's 3 iterations."""
    fun = lambda x: x[0] ** 2 + x[1] ** 2  # noqa: E731
    eq = lambda x: jnp.atleast_1d(x[0] + x[1] - 2.0)  # noqa: E731
    ineq = lambda x: jnp.atleast_1d(x[0] ** 2 - 1.0)  # noqa: E731
    res = solve(fun, jnp.array([0.0, 1.0]), eq=eq, ineq=ineq, lower=0.0)
    ref = so.minimize(lambda x: x[0] ** 2 + x[1] ** 2, [0.0, 1.0], method="SLSQP",
                      bounds=[(0, None)] * 2,
                      constraints=[{"type": "eq", "fun": lambda x: x[0] + x[1] - 2},
                                   {"type": "ineq", "fun": lambda x: x[0] ** 2 - 1}])
    assert int(res.status) == Status.CONSTRAINED_OK and ref.success, res.message
    np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-10)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-8)
    assert violation(res, eq, ineq) <= 1e-10 and int(res.nit) <= ref.nit


def test_active_bound_with_zero_multiplier_is_met_exactly():
    """min |x|^2 over x0 >= 1, x1 >= 0: x1's bound is active with a zero multiplier (the
    interior point alone stops ~1e-7 inside it); the step lands on it exactly, as scipy's."""
    res = solve(lambda x: x @ x, jnp.zeros(2), lower=jnp.array([1.0, 0.0]))
    ref = so.minimize(lambda x: x @ x, [0.0, 0.0], method="SLSQP",
                      bounds=so.Bounds([1, 0], [np.inf, np.inf]))
    assert int(res.status) == Status.CONSTRAINED_OK
    np.testing.assert_array_equal(np.asarray(res.x), [1.0, 0.0])
    np.testing.assert_array_equal(np.asarray(res.x), ref.x)
    assert int(res.nit) == ref.nit == 1


def test_refine_active_set_makes_the_qp_step_exact():
    """A degenerate QP (active row, zero multiplier): the interior point's step misses the
    row by ~1e-7; the refined one is the closed form d = (-c0/2, c0/2) with z = 0."""
    B = jnp.array([[3.0, 1.0], [1.0, 2.0]])
    g, E, h = jnp.array([2.0, 2.0]), jnp.array([[1.0, 1.0]]), jnp.zeros(1)
    G = jnp.array([[2.0, 0.0], [1.0, 0.0]])
    c = jnp.array([1e-13, 1.0])
    sol = solve_qp(B, g, E, h, G, c)
    assert float(jnp.abs(sol.d[0])) > 1e-9
    ref = refine_active_set(B, g, E, h, G, c, sol)
    np.testing.assert_allclose(ref.d, [-0.5e-13, 0.5e-13], rtol=1e-6, atol=1e-20)
    np.testing.assert_allclose(ref.z, 0.0, atol=1e-14)
    np.testing.assert_allclose(ref.y, [2.0], rtol=1e-12)
    np.testing.assert_array_equal(np.asarray(ref.active), [True, False])


def test_step_onto_a_bound_with_infinite_gradient_is_refused():
    """NLopt's tutorial problem (scipy gh-1758): min sqrt(x1) s.t. x1 = (2 x0)^3,
    x1 = (1 - x0)^3 in a box. The first QP step lands on x1 = 0, where d sqrt/dx1 = inf:
    the merit search backs off, and the run reaches x* = (1/3, 8/27), f* = sqrt(8/27)."""
    eq = lambda x: jnp.stack([x[1] - (2 * x[0]) ** 3, x[1] - (1 - x[0]) ** 3])  # noqa: E731
    res = solve(lambda x: jnp.sqrt(x[1]), jnp.array([8.0, 0.25]), eq=eq,
                lower=jnp.array([-0.5, 0.0]), upper=jnp.array([1.0, 8.0]))
    assert int(res.status) == Status.CONSTRAINED_OK, res.message
    np.testing.assert_allclose(res.x, [1.0 / 3.0, 8.0 / 27.0], atol=1e-8)
    np.testing.assert_allclose(res.fun, np.sqrt(8.0 / 27.0), rtol=1e-10)
    assert violation(res, eq) <= 1e-10
