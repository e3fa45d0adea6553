"""BFGS and L-BFGS-B against known optima and scipy's own L-BFGS-B."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

from jaxinfer.optimize import Bounds, Status, minimize


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosen_start(n):
    return jnp.array([-1.2, 1.0]) if n == 2 else jnp.linspace(-1.2, 1.0, n)


def scipy_funcs(f):
    vg = jax.jit(jax.value_and_grad(f))

    def fun(x):
        v, g = vg(jnp.asarray(x))
        return float(v), np.asarray(g)
    return fun


@pytest.mark.parametrize("method", ["BFGS", "L-BFGS-B"])
@pytest.mark.parametrize("n", [10, 100])  # 5-D BFGS: the scipy-iterate test below
def test_rosenbrock_known_optimum(method, n):
    opts = {"gtol": 1e-9} if method == "BFGS" else {"gtol": 1e-9, "ftol": 0.0}
    res = minimize(rosen, rosen_start(n), method=method, options=opts)
    assert bool(res.success), res.message
    assert int(res.reason) == Status.GTOL
    np.testing.assert_allclose(res.x, np.ones(n), atol=1e-6)
    assert float(jnp.max(jnp.abs(res.jac))) <= 1e-9
    # the same problem solved by scipy with the same (tight) tolerances
    if n == 10:
        ref = so.minimize(scipy_funcs(rosen), np.asarray(rosen_start(n)), jac=True,
                          method=method, options=dict(opts, maxiter=10_000))
        np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
        np.testing.assert_allclose(res.fun, ref.fun, atol=1e-12)


@pytest.fixture(scope="module")
def bounded_problem():
    """10-D Rosenbrock with bounds that are active at the solution (some of them)."""
    n = 10
    lb = np.full(n, -np.inf)
    ub = np.full(n, np.inf)
    ub[::2] = 0.5
    lb[1] = 1.2
    lb[7] = -0.3
    ub[7] = 0.1
    x0 = np.zeros(n)
    ref = so.minimize(scipy_funcs(rosen), x0, jac=True, method="L-BFGS-B",
                      bounds=so.Bounds(lb, ub), options={"ftol": 1e-15, "gtol": 1e-11,
                                                         "maxiter": 10_000})
    return lb, ub, x0, ref


def test_lbfgsb_active_bounds_match_scipy(bounded_problem):
    lb, ub, x0, ref = bounded_problem
    assert ref.success
    pairs = [(None if not np.isfinite(lo) else lo, None if not np.isfinite(hi) else hi)
             for lo, hi in zip(lb, ub)]
    res = minimize(rosen, x0, method="L-BFGS-B", bounds=pairs,
                   options={"ftol": 1e-15, "gtol": 1e-11})
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    np.testing.assert_allclose(res.fun, ref.fun, rtol=1e-10)
    # the solution has active bounds and is feasible
    assert np.all(np.asarray(res.x) >= lb) and np.all(np.asarray(res.x) <= ub)
    assert np.sum(np.isclose(np.asarray(res.x), ub) | np.isclose(np.asarray(res.x), lb)) >= 3


def test_lbfgsb_bounds_forms_agree(bounded_problem):
    """scipy Bounds, jaxinfer Bounds and a (lb, ub) pair of arrays give the same answer."""
    lb, ub, x0, ref = bounded_problem
    opts = {"ftol": 1e-15, "gtol": 1e-11}
    a = minimize(rosen, x0, method="l-bfgs-b", bounds=so.Bounds(lb, ub), options=opts)
    b = minimize(rosen, x0, method="L-BFGS-B", bounds=Bounds(lb, ub), options=opts)
    c = minimize(rosen, x0, method="L-BFGS-B", bounds=(jnp.asarray(lb), jnp.asarray(ub)),
                 options=opts)
    np.testing.assert_allclose(a.x, ref.x, atol=1e-6)
    np.testing.assert_allclose(b.x, a.x, atol=1e-12)
    np.testing.assert_allclose(c.x, a.x, atol=1e-12)


def quad_bounded(x):
    target = jnp.array([2.0, -3.0, 0.5, 0.25])
    scale = jnp.array([1.0, 4.0, 0.5, 2.0])
    return jnp.sum(scale * (x - target) ** 2) + 0.3 * x[0] * x[1]


def test_lbfgsb_quadratic_box_matches_scipy_default_tolerances():
    """With scipy's default options both land on the same KKT point."""
    bounds = [(-1, 1), (-1, 1), (0, None), (None, 0)]
    x0 = np.zeros(4)
    res = minimize(quad_bounded, x0, method="L-BFGS-B", bounds=bounds)
    ref = so.minimize(scipy_funcs(quad_bounded), x0, jac=True, method="L-BFGS-B",
                      bounds=bounds)
    assert bool(res.success) and ref.success
    np.testing.assert_allclose(res.x, ref.x, atol=1e-6)
    assert int(res.reason) in (Status.GTOL, Status.FTOL)


def test_lbfgsb_ftol_rule_and_budget():
    """ftol stops on the relative reduction rule; maxiter / maxfun exhaustion is a failure."""
    x0 = rosen_start(10)
    res = minimize(rosen, x0, method="L-BFGS-B", options={"ftol": 1e-3, "gtol": 1e-12})
    assert int(res.reason) == Status.FTOL and bool(res.success)
    res = minimize(rosen, x0, method="L-BFGS-B", options={"maxiter": 5})
    assert int(res.reason) == Status.MAX_ITER and not bool(res.success)
    assert int(res.nit) == 5
    res = minimize(rosen, x0, method="L-BFGS-B", options={"maxfun": 7})
    assert int(res.reason) == Status.MAX_FEV and not bool(res.success)


def test_already_optimal_and_nonfinite():
    res = minimize(rosen, jnp.ones(3), method="L-BFGS-B")
    assert int(res.reason) == Status.GTOL and int(res.nit) == 0
    res = minimize(lambda x: jnp.sum(jnp.log(x)), -jnp.ones(2), method="BFGS")
    assert int(res.reason) == Status.NONFINITE and not bool(res.success)


def test_bfgs_takes_scipys_line_search_steps_and_c1_counts():
    # BFGS searches like scipy's (Moré–Thuente first, then bracketing/zoom): from scipy's
    # test start its iterates are scipy's; c1 shapes the trials, so a small c1 costs more
    # evaluations on a far start (scipy gh-18977: 222 vs 124 evaluations)
    runs = {}
    for c1 in (1e-8, 0.1):
        for x0 in ([1.3, 0.7, 0.8, 1.9, 1.2], [10.3, 20.7, 10.8, 1.9, -1.2]):
            ours, ref = [], []
            res = minimize(rosen, jnp.asarray(x0), method="BFGS", options={"c1": c1},
                           callback=lambda xk: ours.append(np.array(xk)))
            sp = so.minimize(so.rosen, x0, jac=so.rosen_der, method="BFGS",
                             options={"c1": c1}, callback=lambda xk: ref.append(np.array(xk)))
            assert res.success is True and sp.success is True
            runs[c1, x0[0]] = (res.nfev, sp.nfev)
            if x0[0] == 1.3:
                assert (res.nit, res.nfev) == (sp.nit, sp.nfev)
                np.testing.assert_allclose(np.array(ours), np.array(ref), atol=1e-10)
            else:  # rounding separates the long runs after a few iterations
                assert abs(res.nfev - sp.nfev) <= 0.05 * sp.nfev
            np.testing.assert_allclose(res.x, sp.x, atol=1e-6)
    assert runs[1e-8, 10.3][0] > 1.5 * runs[0.1, 10.3][0]


def test_bfgs_unbounded_below_ends_at_minus_inf():
    # -e^(-x) decreases without bound: the search takes the step where f = -inf (scipy too)
    res = minimize(lambda x: -jnp.exp(-x[0]), jnp.zeros(1), method="BFGS")
    ref = so.minimize(lambda x: -np.exp(-x[0]), [0.0], jac=lambda x: np.exp(-x), method="BFGS")
    assert res.fun == -np.inf and ref.fun == -np.inf
    assert res.success is False and int(res.reason) == Status.UNBOUNDED
    # scipy's code and message for an infinite objective (2, precision loss; NaN is 3)
    assert (res.status, res.message) == (ref.status, ref.message) == (
        2, "Desired error not necessarily achieved due to precision loss.")


def test_bfgs_hess_inv_on_quadratic():
    """On a quadratic, BFGS's inverse-Hessian estimate approaches the true inverse."""
    A = jnp.array([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])
    b = jnp.array([1.0, -2.0, 0.5])
    res = minimize(lambda x: 0.5 * x @ A @ x - b @ x, jnp.zeros(3), method="BFGS",
                   options={"gtol": 1e-12})
    assert bool(res.success)
    np.testing.assert_allclose(res.x, np.linalg.solve(A, b), atol=1e-10)
    np.testing.assert_allclose(res.hess_inv, np.linalg.inv(A), atol=0.1)


def test_float32():
    """Library code keeps float32 when given float32 (tests run with x64 enabled)."""
    A = jnp.diag(jnp.array([1.0, 3.0, 10.0], jnp.float32))
    f = lambda x: 0.5 * x @ A @ x - jnp.sum(x)  # noqa: E731
    for method in ("BFGS", "L-BFGS-B"):
        res = minimize(f, jnp.zeros(3, jnp.float32), method=method, options={"gtol": 1e-4})
        assert res.x.dtype == jnp.float32
        assert bool(res.success), res.message
        np.testing.assert_allclose(res.x, 1.0 / np.array([1.0, 3.0, 10.0]), rtol=1e-4)


def test_jit_and_vmap_over_data():
    """vmap over data closed into fun gives the loop's answers; jit gives the eager one."""
    def fit(c):
        f = lambda x: jnp.sum((x - c) ** 2 * jnp.array([1.0, 10.0])) + x[0] ** 4  # noqa: E731
        return minimize(f, jnp.zeros(2), method="L-BFGS-B", bounds=[(None, 1.0), (-1.0, 1.0)],
                        options={"gtol": 1e-10}).x

    cs = jnp.array([[0.5, 0.2], [2.0, -3.0], [-1.0, 0.7]])
    batched = jax.jit(jax.vmap(fit))(cs)
    fit_one = jax.jit(fit)
    looped = jnp.stack([fit_one(c) for c in cs])
    np.testing.assert_allclose(batched, looped, atol=1e-12)
    assert float(batched[1, 1]) == -1.0  # the lower bound is active for the second problem
    assert float(batched[0, 0]) < 1.0
    # vmap over x0 with BFGS
    starts = jnp.array([[-1.2, 1.0], [0.0, 0.0], [2.0, 2.0]])
    solve = jax.jit(jax.vmap(lambda x0: minimize(rosen, x0, method="BFGS",
                                                 options={"gtol": 1e-9}).x))
    np.testing.assert_allclose(solve(starts), np.ones((3, 2)), atol=1e-6)


def test_lbfgsb_hess_inv_operator():
    """L-BFGS-B returns its inverse-Hessian memory as an operator with todense(), like
    scipy's LbfgsInvHessProduct; near the optimum it approximates the true inverse."""
    A = jnp.array([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])
    b = jnp.array([1.0, -2.0, 0.5])

    def f(x):
        return 0.5 * x @ A @ x - b @ x + 0.01 * jnp.sum(x ** 4)

    res = minimize(f, jnp.zeros(3), method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 0.0})
    dense = np.asarray(res.hess_inv.todense())
    np.testing.assert_allclose(dense, dense.T, atol=1e-12)
    v = jnp.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(res.hess_inv.matvec(v), dense @ np.asarray(v), atol=1e-12)
    # scipy's operator (identity start of the recursion) built from our pairs is ours
    from scipy.optimize import LbfgsInvHessProduct as ScipyProduct
    assert res.hess_inv.sk.shape == res.hess_inv.yk.shape == (res.hess_inv.n_corrs, 3)
    np.testing.assert_allclose(dense, ScipyProduct(res.hess_inv.sk, res.hess_inv.yk).todense(),
                               atol=1e-12)
    true_inv = np.linalg.inv(np.asarray(jax.hessian(f)(res.x)))
    np.testing.assert_allclose(dense, true_inv, atol=0.05)
    ref = so.minimize(scipy_funcs(f), np.zeros(3), jac=True, method="L-BFGS-B",
                      options={"gtol": 1e-12, "ftol": 0.0})
    np.testing.assert_allclose(dense, ref.hess_inv.todense(), atol=0.02)
    # scipy's repr: shape and dtype, not the values
    assert repr(res.hess_inv) == repr(ref.hess_inv)
    assert repr(res.hess_inv) == "<3x3 LbfgsInvHessProduct with dtype=float64>"


def _line_function(name):
    """(value_and_grad of x (1,), x0, direction): 1-D problems for the line searches."""
    if name == "rosenbrock_descent":
        x0 = jnp.array([-1.2, 1.0])
        g0 = jax.grad(rosen)(x0)
        return jax.value_and_grad(rosen), x0, -g0 / jnp.linalg.norm(g0)
    if name == "needs_extrapolation":   # minimum at 20: the first trial 1 is far too short
        f = lambda x: jnp.sum((x - 20.0) ** 2) + 0.1 * jnp.sum(jnp.sin(x))  # noqa: E731
        return jax.value_and_grad(f), jnp.zeros(1), jnp.ones(1)
    f = lambda x: jnp.sum(jnp.log1p(jnp.exp(-3.0 * x)) + 0.05 * x ** 2)  # noqa: E731
    return jax.value_and_grad(f), jnp.array([-2.0]), jnp.ones(1)


@pytest.mark.parametrize("name", ["rosenbrock_descent", "needs_extrapolation", "softplus"])
def test_more_thuente_matches_scipys_dcsrch(name):
    """The L-BFGS-B line search is MINPACK-2's dcsrch: same step as scipy's implementation
    (scalar_search_wolfe1 drives scipy's DCSRCH) with L-BFGS-B's constants."""
    from scipy.optimize._linesearch import scalar_search_wolfe1

    from jaxinfer.optimize.line_search import more_thuente_line_search

    vg, x0, p = _line_function(name)
    f0, g0 = vg(x0)
    res = jax.jit(lambda x0: more_thuente_line_search(vg, x0, f0, g0, p, 1.0, 1e10, ftol=1e-3,
                                                      gtol=0.9, xtol=0.1, maxls=50,
                                                      rounding_stop=True))(x0)
    phi = lambda a: float(vg(x0 + a * p)[0])  # noqa: E731
    dphi = lambda a: float(jnp.vdot(vg(x0 + a * p)[1], p))  # noqa: E731
    alpha, _, _ = scalar_search_wolfe1(phi, dphi, float(f0), None, float(jnp.vdot(g0, p)),
                                       c1=1e-3, c2=0.9, amax=1e10, amin=0.0, xtol=0.1)
    assert alpha is not None
    assert bool(res.converged) and bool(res.success) and not bool(res.rounding)
    np.testing.assert_allclose(float(res.alpha), alpha, rtol=1e-10)


def test_more_thuente_rounding_stop_at_the_floor_of_f():
    """At the rounding level of f (|f| = 755, f' ~ 1e-14, values f0 or one ulp above, as
    glmm's EP lml at its optimum) dcsrch spends trials on rounding noise: ours without
    rounding_stop takes scipy's DCSRCH steps to the end; with it (L-BFGS-B's setting) the
    search stops after the first trial, flagged rounding, not converged."""
    from scipy.optimize._dcsrch import DCSRCH

    from jaxinfer.optimize.line_search import more_thuente_line_search

    ulp = float(np.spacing(755.0))

    def vg(x):
        f = 755.0 + ulp * (jnp.sin(1e7 * x[0] - 1.0) > 0.3)
        return f, (-3e-14 + 1.5e-14 * jnp.cos(3e6 * x[0]))[None]

    def phi(a):
        f, g = vg(jnp.array([a]))
        return float(f), float(g[0])

    x0, p = jnp.zeros(1), jnp.ones(1)
    f0, g0 = vg(x0)
    search = DCSRCH(None, None, ftol=1e-3, gtol=0.9, xtol=0.1, stpmin=0.0, stpmax=1e10)
    stp, _, _, task = search._iterate(1.0, float(f0), float(g0[0]), b"START")
    steps = []
    while task[:2] == b"FG" and len(steps) < 20:
        steps.append(stp)
        stp, _, _, task = search._iterate(stp, *phi(stp), task)
    assert task[:4] == b"WARN" and len(steps) == 8
    run = jax.jit(lambda x0, stop: more_thuente_line_search(
        vg, x0, f0, g0, p, 1.0, 1e10, maxls=20, rounding_stop=stop), static_argnums=1)
    plain, cut = run(x0, False), run(x0, True)
    assert int(plain.nfev) == len(steps) and bool(plain.converged)
    np.testing.assert_allclose(float(plain.alpha), stp, rtol=1e-12)
    assert int(cut.nfev) == 1 and bool(cut.rounding) and not bool(cut.converged)
    assert float(cut.alpha) == 1.0 and float(cut.f) == 755.0 + ulp


def test_lbfgsb_driven_by_hand_equals_minimize():
    """init / step / terminate in a Python loop reproduce minimize's run step for step."""
    from jaxinfer.optimize._iterate import RUNNING
    from jaxinfer.optimize.quasi_newton import LBFGSB

    x0 = rosen_start(10)
    lb, ub = -jnp.full(10, 2.0), jnp.full(10, 0.8)
    solver = LBFGSB(lower=lb, upper=ub)
    fn = lambda x, args: jax.value_and_grad(rosen)(x)  # noqa: E731
    step = jax.jit(lambda st: solver.step(fn, st, ()))
    state = solver.init(fn, x0, ())
    while int(solver.terminate(fn, state, ())) == RUNNING:
        state = step(state)
    res = minimize(rosen, x0, method="L-BFGS-B", bounds=(lb, ub))
    assert int(solver.terminate(fn, state, ())) == int(res.reason)
    assert int(state.nit) == int(res.nit) and int(state.nfev) == int(res.nfev)
    np.testing.assert_allclose(state.x, res.x, rtol=1e-10)  # one jit per step vs one loop


def _noisy_bowl(amplitude):
    """``100 + sum(a x^2) / 2`` plus deterministic noise of ``amplitude`` in the value only
    (the gradient is the smooth one), as an EP marginal likelihood near its optimum."""
    a = jnp.array([1.0, 2.0, 5.0, 10.0, 20.0])

    def fun(x):
        f = 100.0 + 0.5 * jnp.sum(a * x * x) + amplitude * jnp.sum(jnp.sin(1e9 * x))
        return f, a * x
    return fun


def test_lbfgsb_noise_floor_is_ftol_convergence_only_when_within_ftol():
    """A line search that cannot decrease f where the first-order bound on any gain along
    the step, |g.p|, is below the ftol test ends as scipy's ftol convergence (at the best
    point; before, LINE_SEARCH); a failure where the bound is above the test stays one."""
    x0 = jnp.full(5, 0.5)
    opts = {"ftol": 1e5 * np.finfo(float).eps, "gtol": 1e-7}  # glimix-core's factr, pgtol
    res = minimize(_noisy_bowl(1e-8), x0, jac=True, method="L-BFGS-B",
                   bounds=[(-1.0, 1.0)] * 5, options=opts)
    assert bool(res.success) and int(res.reason) == Status.FTOL, res.message
    assert float(res.fun) - 100.0 <= 1e-7           # at the optimum to the noise level
    assert np.max(np.abs(np.asarray(res.jac))) > opts["gtol"]   # not a gradient stop
    # every trial uphill (the gradient's sign is wrong) with a large first-order bound
    res = minimize(lambda x: (100.0 + 0.5 * jnp.sum(x * x), -x), x0, jac=True,
                   method="L-BFGS-B", bounds=[(-1.0, 1.0)] * 5, options=opts)
    assert not bool(res.success) and int(res.reason) == Status.LINE_SEARCH, res.message
