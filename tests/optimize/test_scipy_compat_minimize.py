"""``minimize`` as a drop-in for ``scipy.optimize.minimize``: types, status codes and
messages, ``hess_inv`` objects, scipy's bounds / constraint classes, ``jac`` / ``hess``
strings and update strategies, callable methods, callbacks (``StopIteration``, the
intermediate result), warnings, and the legacy ``fmin_*`` wrappers. Every number is
compared with scipy's own run of the same problem.

Small problems (n <= 5) and one objective function object per problem, so each compiles
once per method.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
from numpy.testing import assert_allclose, assert_equal

import jaxinfer.optimize as jo
from jaxinfer.optimize import Status, minimize

X0 = np.array([1.3, 0.7, 0.8, 1.9, 1.2])


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


H0 = np.array([[3.0, 0.0], [1.0, 2.0]])
H0_INV = np.linalg.inv(H0)


def quad(x):
    return jnp.dot(x, jnp.dot(H0_INV, x))


def np_quad(x):
    return float(np.dot(x, np.dot(H0_INV, x)))


# ---------------------------------------------------------------------------------------
# result types: numpy outside a trace, arrays inside


def test_fields_are_numpy_outside_a_trace_and_arrays_inside():
    res = minimize(rosen, X0, method="L-BFGS-B")
    ref = so.minimize(so.rosen, X0, jac=so.rosen_der, method="L-BFGS-B")
    assert res.success is True and ref.success is True
    assert isinstance(res.x, np.ndarray) and isinstance(res.jac, np.ndarray)
    assert isinstance(res.fun, np.floating) and isinstance(res.nit, np.integer)
    # no active bounds: scipy's iterates; ours stops one step later or earlier (ftol must
    # hold twice, docs/scipy_migration.md)
    assert abs(int(res.nit) - ref.nit) <= 1
    assert_allclose(res.x, ref.x, atol=1e-5)
    short = minimize(rosen, X0, method="L-BFGS-B", options={"maxiter": 3})
    assert short.success is False and short.status == 1 and short.reason == Status.MAX_ITER

    def inside(x0):
        r = minimize(rosen, x0, method="L-BFGS-B")
        assert isinstance(r.nit, jax.Array) and isinstance(r.x, jax.Array)
        assert isinstance(r.success, jax.Array)
        return r.status, r.nit

    status, nit = jax.jit(inside)(jnp.asarray(X0))
    assert int(status) == 0 and int(nit) == res.nit


def test_front_door_signatures_are_scipys():
    """Same parameter names, order, kinds and defaults as scipy 1.17's front doors (ours may
    add keyword parameters at the end); the fmin_* defaults that select finite-difference
    steps or printing differ (None: no effect here)."""
    import inspect

    no_effect = {"epsilon", "iprint", "disp"}
    for name in ("minimize", "minimize_scalar", "least_squares", "curve_fit", "fmin_bfgs",
                 "fmin_l_bfgs_b", "fmin_ncg", "fmin_slsqp"):
        ours = inspect.signature(getattr(jo, name)).parameters
        ref = inspect.signature(getattr(so, name)).parameters
        assert [k for k in ours if k in ref] == list(ref), name
        for k, p in ref.items():
            assert ours[k].kind == p.kind, (name, k)
            if k not in no_effect:
                assert ours[k].default is p.default or ours[k].default == p.default, (name, k)


def test_counters_like_scipys():
    """nit / nfev / njev / nhev from scipy's test start: BFGS takes scipy's iterates (equal
    counts); L-BFGS-B within one iteration (its ftol test must hold twice); Newton-CG counts
    one Hessian per iteration with ``hess`` and one evaluation of f and g together, as
    scipy (its iterates differ: the first line-search step, docs/optimize.md)."""
    res = minimize(rosen, X0, method="BFGS")
    ref = so.minimize(so.rosen, X0, jac=so.rosen_der, method="BFGS")
    assert (res.nit, res.nfev, res.njev) == (ref.nit, ref.nfev, ref.njev) == (25, 30, 30)
    res = minimize(rosen, X0, method="L-BFGS-B")
    ref = so.minimize(so.rosen, X0, jac=so.rosen_der, method="L-BFGS-B")
    assert abs(res.nit - ref.nit) <= 1 and abs(res.nfev - ref.nfev) <= 1
    assert res.nfev == res.njev and ref.nfev == ref.njev
    res = minimize(rosen, X0, method="Newton-CG", hess=jo.rosen_hess)
    ref = so.minimize(so.rosen, X0, jac=so.rosen_der, hess=so.rosen_hess, method="Newton-CG")
    assert res.nhev == res.nit and ref.nhev == ref.nit
    assert res.nfev == res.njev and ref.nfev == ref.njev
    assert_allclose(res.fun, 0.0, atol=1e-6) and ref.fun < 1e-6


def test_repr_lists_scipys_fields_with_values():
    """``repr(res)``: scipy's layout (names right-aligned on the colon, one per line) with
    the values, never array shapes."""
    res = minimize(rosen, X0, method="BFGS")
    ref = so.minimize(so.rosen, X0, jac=so.rosen_der, method="BFGS")

    def fields(text):
        lines = [line for line in text.splitlines() if ": " in line and
                 line.split(": ")[0].strip().isidentifier()]
        return {line.split(": ")[0].strip(): line.split(": ", 1)[1] for line in lines}, lines

    ours, lines = fields(repr(res))
    theirs, _ = fields(repr(ref))
    assert set(ours) == set(theirs)
    assert len({line.index(": ") for line in lines}) == 1   # right-aligned names
    for key in ("message", "success", "status", "nit", "nfev", "njev"):
        assert ours[key] == theirs[key], key
    assert_allclose(float(ours["fun"]), ref.fun, rtol=1e-6, atol=1e-12)
    x = np.array(ours["x"].strip("[]").split(), float)
    assert_allclose(x, ref.x, atol=1e-5)
    assert "f64[" not in repr(res) and "f32[" not in repr(res)
    lbfgsb = minimize(rosen, X0, method="L-BFGS-B")
    ref = so.minimize(so.rosen, X0, jac=so.rosen_der, method="L-BFGS-B")
    assert repr(lbfgsb.hess_inv) == repr(ref.hess_inv)   # <5x5 LbfgsInvHessProduct ...>


def test_float32_runs_are_right_or_say_float64_is_needed():
    """float32 in, float32 out: BFGS and L-BFGS-B reach Rosenbrock's minimum to float32's
    resolution; a tolerance float32 cannot meet (Newton-CG's xtol 1e-14) ends with scipy's
    precision-loss status 2, not success, and the message says how to enable float64."""
    x0 = jnp.asarray(X0, jnp.float32)
    for method in ("BFGS", "L-BFGS-B"):
        res = minimize(rosen, x0, method=method)
        assert res.x.dtype == np.float32 and res.success is True, method
        assert_allclose(res.x, np.ones(5), atol=1e-4)
    res = minimize(rosen, x0, method="Newton-CG", options={"xtol": 1e-14})
    assert res.success is False and res.status == 2
    assert res.message.startswith("Warning: Desired error not necessarily achieved")
    assert 'jax.config.update("jax_enable_x64", True)' in res.message
    assert np.max(np.abs(res.x - 1)) <= 1e-4   # the point reached is still float32-right


# ---------------------------------------------------------------------------------------
# status codes and messages per method, as scipy's


@pytest.mark.parametrize("method", ["BFGS", "L-BFGS-B", "Newton-CG"])
def test_status_and_message_at_maxiter_and_success(method):
    for opts in ({"maxiter": 2}, {}):
        res = minimize(rosen, X0, method=method, options=opts)
        ref = so.minimize(so.rosen, X0, jac=so.rosen_der, method=method, options=opts)
        assert res.status == ref.status and res.success is ref.success
        if opts or method != "L-BFGS-B":  # L-BFGS-B: gtol (ours) or ftol (scipy) first
            assert res.message == ref.message, (opts, res.message)
        else:
            assert res.message.startswith("CONVERGENCE: ")
    if method != "L-BFGS-B":  # scipy's disp=True: a failed run warns (gh-1953), no print
        with pytest.warns(so.OptimizeWarning, match="Maximum number of iterations"):
            minimize(rosen, X0, method=method, options={"maxiter": 2, "disp": True})


def test_slsqp_status_and_message():
    cons = {"type": "ineq", "fun": lambda x: x[0] - 2.0}
    ref_cons = {"type": "ineq", "fun": lambda x: x[0] - 2.0}
    for opts in ({"maxiter": 1}, {}):
        res = minimize(quad, [1.0, 1.0], method="SLSQP", constraints=cons, options=opts)
        ref = so.minimize(np_quad, [1.0, 1.0], method="SLSQP", constraints=ref_cons,
                          options=opts)
        assert res.status == ref.status and res.message == ref.message
    assert_allclose(res.x, ref.x, atol=1e-7)


# ---------------------------------------------------------------------------------------
# hess_inv


def test_lbfgsb_hess_inv_is_scipys_operator():
    res = minimize(quad, [10.0, 20.0], method="L-BFGS-B")
    ref = so.minimize(np_quad, [10.0, 20.0], method="L-BFGS-B")
    H = res.hess_inv
    assert H.shape == (2, 2) and H.sk.shape == H.yk.shape == (H.n_corrs, 2)
    assert_allclose(H(np.array([1.0, 0.0])), H.todense()[:, 0], atol=1e-14)
    assert_allclose(H(np.array([[1.0], [0.0]])).reshape(-1), H(np.array([1.0, 0.0])),
                    atol=1e-14)
    assert_allclose(H.todense(), so.LbfgsInvHessProduct(H.sk, H.yk).todense(), atol=1e-13)
    assert_allclose(H.todense(), ref.hess_inv.todense(), atol=0.05)
    bfgs = minimize(quad, [10.0, 20.0], method="BFGS")
    ref_bfgs = so.minimize(np_quad, [10.0, 20.0], method="BFGS")
    assert isinstance(bfgs.hess_inv, np.ndarray)
    assert_allclose(bfgs.hess_inv, ref_bfgs.hess_inv, atol=0.01)


# ---------------------------------------------------------------------------------------
# bounds and constraints: scipy's classes, ours, dicts and (min, max) pairs


def cfun(x):
    return jnp.array([x[0] ** 2 + x[1], x[0] - x[1]])


def np_cfun(x):
    return np.array([x[0] ** 2 + x[1], x[0] - x[1]])


def test_constraint_classes_ours_and_scipys():
    # min (x0-1)^2 + (x1-2.5)^2  s.t. x0 + 2 x1 <= 6 (linear, lb..ub form),
    # x0^2 + x1 >= 0.5, x0 - x1 == -1 (nonlinear), x >= 0
    def f(x):
        return (x[0] - 1.0) ** 2 + (x[1] - 2.5) ** 2

    ref = so.minimize(lambda x: (x[0] - 1.0) ** 2 + (x[1] - 2.5) ** 2, [2.0, 0.0],
                      method="SLSQP", bounds=so.Bounds([0, 0], [np.inf, np.inf]),
                      constraints=[so.LinearConstraint([[1, 2]], -np.inf, 6),
                                   so.NonlinearConstraint(np_cfun, [0.5, -1], [np.inf, -1])],
                      options={"ftol": 1e-12})
    assert ref.success
    spellings = [
        (so.Bounds([0, 0], [np.inf, np.inf]),
         [so.LinearConstraint([[1, 2]], -np.inf, 6),
          so.NonlinearConstraint(cfun, [0.5, -1], [np.inf, -1])]),
        (jo.Bounds([0, 0], [np.inf, np.inf]),
         [jo.LinearConstraint([[1, 2]], -np.inf, 6),
          jo.NonlinearConstraint(cfun, [0.5, -1], [np.inf, -1])]),
        ([(0, None), (0, None)],
         [{"type": "ineq", "fun": lambda x: 6 - x[0] - 2 * x[1]},
          {"type": "ineq", "fun": lambda x: x[0] ** 2 + x[1] - 0.5},
          {"type": "eq", "fun": lambda x: x[0] - x[1] + 1}]),
    ]
    for bounds, cons in spellings:
        res = minimize(f, [2.0, 0.0], method="SLSQP", bounds=bounds, constraints=cons)
        assert res.success is True and res.status == 0, res.message
        assert_allclose(res.x, ref.x, atol=1e-8)
        assert abs(res.x[0] - res.x[1] + 1) <= 1e-10
        # scipy's KKT multipliers: the equality rows, then the inequality rows
        assert_allclose(res.multipliers, ref.multipliers, atol=1e-7)


@pytest.mark.parametrize("method", ["L-BFGS-B", "SLSQP"])
def test_all_variables_fixed_by_bounds_like_scipy(method):
    # lb == ub everywhere: scipy evaluates fun once at the bounds and reports why
    bounds = [(1.0, 1.0), (2.0, 2.0)]
    cases = [(), [jo.NonlinearConstraint(lambda x: jnp.sum(x), -np.inf, 0.0)],
             [{"type": "ineq", "fun": lambda x: 4.0 - jnp.sum(x)}]]
    ref_cases = [(), [so.NonlinearConstraint(lambda x: np.sum(x), -np.inf, 0.0)],
                 [{"type": "ineq", "fun": lambda x: 4.0 - np.sum(x)}]]
    for cons, ref_cons in zip(cases if method == "SLSQP" else cases[:1],
                              ref_cases if method == "SLSQP" else ref_cases[:1]):
        res = minimize(quad, [0.5, 3.0], method=method, bounds=bounds, constraints=cons)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = so.minimize(np_quad, [0.5, 3.0], method=method, bounds=bounds,
                              constraints=ref_cons)
        # scipy's result here has no status / nit; ours says 0 for both
        assert (res.success, res.nfev, res.njev) == (ref.success, ref.nfev, ref.njev)
        assert (res.status, res.nit) == (0, 0)
        assert res.message.split("(")[0].split(",")[0] == ref.message.split("(")[0].split(",")[0]
        assert_allclose(res.fun, ref.fun, rtol=1e-15)
        assert_allclose(res.x, [1.0, 2.0])
        if not ref.success:  # scipy puts the largest violation in its message
            assert_allclose(res.maxcv, float(ref.message.split(": ")[-1].rstrip(").")))
    with pytest.raises(ValueError, match="An upper bound is less than the corresponding lower"):
        minimize(quad, [0.5, 3.0], method=method, bounds=[(1.0, 1.0), (2.0, 1.0)])


def test_numpy_constraint_jacobian_runs_on_the_host():
    # a constraint 'jac' written in numpy (here returning a list) cannot be traced: it is
    # called on the host, as scipy calls it, and the run equals the autodiff one and scipy's
    def f(x):
        return -(2 * x[0] * x[1] + 2 * x[0] - x[0] ** 2 - 2 * x[1] ** 2)

    def np_f(x):
        return float(-(2 * x[0] * x[1] + 2 * x[0] - x[0] ** 2 - 2 * x[1] ** 2))

    calls = []

    def numpy_jac(x, a):
        x = np.asarray(x)           # refuses a tracer
        calls.append(type(x))
        return (np.array([1.0, -1.0]) * a + 0.0 * x).tolist()

    cons = {"type": "eq", "fun": lambda x, a: a * (x[0] - x[1]), "args": (2.0,)}
    res = minimize(f, [-1.0, 1.0], method="SLSQP", constraints={**cons, "jac": numpy_jac})
    auto = minimize(f, [-1.0, 1.0], method="SLSQP", constraints=cons)
    ref = so.minimize(np_f, [-1.0, 1.0], method="SLSQP", constraints={**cons, "jac": numpy_jac})
    assert res.success is True and ref.success
    assert calls and all(t is np.ndarray for t in calls)
    assert_allclose(res.x, auto.x, atol=1e-14)
    assert_allclose(res.x, ref.x, atol=1e-8)
    assert_allclose(res.x, [1.0, 1.0], atol=1e-10)


def test_lbfgsb_scipy_bounds_object():
    bounds = so.Bounds([-1.0, 1.5, 0, 0, 0], [0.5, 3.0, 2.0, 2.0, 2.0])
    res = minimize(rosen, X0, method="L-BFGS-B", bounds=bounds)
    ref = so.minimize(so.rosen, X0, jac=so.rosen_der, method="L-BFGS-B", bounds=bounds)
    assert res.success is True
    assert res.fun <= ref.fun * (1 + 1e-6) + 1e-12  # ours lower here (another local minimum)
    assert np.all(res.x >= bounds.lb) and np.all(res.x <= bounds.ub)


# ---------------------------------------------------------------------------------------
# jac / hess spellings, update strategies, callable method


def test_jac_and_hess_strings_and_update_strategies_select_autodiff():
    base = minimize(rosen, X0, method="Newton-CG")
    for jac in ("2-point", "3-point", "cs", False, None):
        res = minimize(rosen, X0, method="Newton-CG", jac=jac)
        assert_allclose(res.x, base.x, atol=1e-12)
    for hess in ("2-point", "3-point", "cs", jo.SR1(), jo.BFGS(), so.BFGS(), so.SR1()):
        res = minimize(rosen, X0, method="Newton-CG", jac=jo.rosen_der, hess=hess, tol=1e-9)
        assert res.success is True
        assert_allclose(res.x, np.ones(5), atol=1e-6)

    def fun_and_grad(x):
        return rosen(x), jax.grad(rosen)(x)

    res = minimize(fun_and_grad, X0, method="BFGS", jac=True)
    ref = so.minimize(so.rosen, X0, jac=so.rosen_der, method="BFGS")
    assert_allclose(res.x, ref.x, atol=1e-5)
    with pytest.raises(ValueError, match="accepted strings"):
        minimize(rosen, X0, method="BFGS", jac="4-point")


def test_sparse_hessian_runs_on_the_host_like_a_dense_one():
    """A ``hess`` returning a scipy sparse matrix (not traceable) is called on the host:
    Newton-CG then takes the same steps as with the dense Hessian, as scipy does."""
    import scipy.sparse

    def sparse_hess(x):
        return scipy.sparse.csr_array(so.rosen_hess(np.asarray(x)))

    x0 = np.array([2.0, 2.0])
    res = minimize(rosen, x0, method="Newton-CG", jac=jo.rosen_der, hess=sparse_hess)
    ref = so.minimize(so.rosen, x0, method="Newton-CG", jac=so.rosen_der, hess=sparse_hess)
    dense = minimize(rosen, x0, method="Newton-CG", jac=jo.rosen_der, hess=jo.rosen_hess)
    assert (res.nfev, res.njev, res.nhev) == (dense.nfev, dense.njev, dense.nhev)
    assert_allclose(res.x, dense.x, rtol=1e-12)
    assert_allclose(res.x, ref.x, atol=1e-4)   # Newton-CG's first line-search step differs


def test_callable_method_is_called_like_scipy():
    seen = {}

    def custom(fun, x0, args=(), jac=None, hess=None, hessp=None, bounds=None,
               constraints=(), callback=None, **options):
        seen.update(options, args=args, bounds=bounds)
        return so.OptimizeResult(x=np.asarray(x0) * 0 + 1, fun=0.0, success=True)

    res = minimize(rosen, X0, args=(), method=custom, bounds=[(0, 2)] * 5,
                   options={"stepsize": 0.1})
    ref = so.minimize(so.rosen, X0, method=custom, bounds=[(0, 2)] * 5,
                      options={"stepsize": 0.1})
    assert_equal(res.x, ref.x)
    assert seen["stepsize"] == 0.1 and seen["bounds"] == [(0, 2)] * 5


def test_hess_given_to_bfgs_warns_and_is_ignored():
    base = minimize(rosen, X0, method="BFGS")
    with pytest.warns(RuntimeWarning, match="does not use Hessian information"):
        res = minimize(rosen, X0, method="BFGS", hess=jo.rosen_hess)
    with pytest.warns(RuntimeWarning, match="Hessian-vector product"):
        minimize(rosen, X0, method="L-BFGS-B", hessp=jo.rosen_hess_prod)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        minimize(rosen, X0, method="Newton-CG", hess=jo.rosen_hess)
    assert_equal(res.x, base.x)


def test_bfgs_hess_inv0_checked_like_scipy():
    with pytest.raises(ValueError, match="'hess_inv0' matrix isn't positive definite."):
        minimize(rosen, X0, method="BFGS", options={"hess_inv0": -np.eye(5)})
    res = minimize(rosen, X0, method="BFGS", options={"hess_inv0": 1e-2 * np.eye(5)})
    assert_allclose(res.fun, 0.0, atol=1e-6)


# ---------------------------------------------------------------------------------------
# callbacks


@pytest.mark.parametrize("method", ["BFGS", "L-BFGS-B", "Newton-CG", "SLSQP"])
def test_stop_iteration_in_callback_stops_like_scipy(method):
    def stopper(limit):
        calls = []

        def callback(intermediate_result):
            calls.append(intermediate_result)
            if len(calls) == limit:
                raise StopIteration
        return callback, calls

    cb, calls = stopper(5)
    res = minimize(rosen, [1.1] * 5, method=method, callback=cb)
    ref_cb, ref_calls = stopper(5)
    ref = so.minimize(so.rosen, [1.1] * 5, jac=so.rosen_der, hess=so.rosen_hess,
                      method=method, callback=ref_cb)
    assert res.status == ref.status == 99
    assert res.message == ref.message == "`callback` raised `StopIteration`."
    assert res.success is False and res.nit == ref.nit == 5
    maxiter = minimize(rosen, [1.1] * 5, method=method, options={"maxiter": 5})
    assert res.nit == maxiter.nit
    if method != "SLSQP":
        assert_allclose(res.fun, maxiter.fun, rtol=1e-12)
    # the intermediate result is an OptimizeResult with x, fun and the gradient
    last = calls[-1]
    assert isinstance(last, jo.OptimizeResult) and last.nit == 5
    assert_allclose(last.fun, rosen(jnp.asarray(last.x)), rtol=1e-12)
    assert_allclose(last.jac, jax.grad(rosen)(jnp.asarray(last.x)), rtol=1e-10, atol=1e-12)
    if method == "L-BFGS-B":  # no active bounds: scipy's iterates
        assert_allclose(last.x, ref_calls[-1].x, rtol=1e-8)


def test_xk_callback_gets_numpy_copies():
    xs = []
    res = minimize(rosen, X0, method="BFGS", callback=lambda xk: xs.append(xk))
    ref_xs = []
    so.minimize(so.rosen, X0, jac=so.rosen_der, method="BFGS",
                callback=lambda xk: ref_xs.append(np.copy(xk)))
    assert len(xs) == res.nit and abs(len(ref_xs) - len(xs)) <= 2
    assert all(isinstance(x, np.ndarray) for x in xs)
    assert_allclose(xs[-1], ref_xs[-1], atol=1e-5)


# ---------------------------------------------------------------------------------------
# legacy interfaces


def test_fmin_wrappers_match_scipy():
    x = jo.fmin_bfgs(rosen, X0, disp=0)
    assert_allclose(x, so.fmin_bfgs(so.rosen, X0, so.rosen_der, disp=0), atol=1e-5)
    out = jo.fmin_bfgs(rosen, X0, full_output=True, disp=0)
    ref = so.fmin_bfgs(so.rosen, X0, so.rosen_der, full_output=True, disp=0)
    assert len(out) == len(ref) == 7 and out[6] == ref[6] == 0
    x, f, d = jo.fmin_l_bfgs_b(rosen, X0, approx_grad=True, bounds=[(0, 2)] * 5)
    xr, fr, dr = so.fmin_l_bfgs_b(so.rosen, X0, so.rosen_der, bounds=[(0, 2)] * 5)
    assert_allclose(x, xr, atol=1e-5) and d["warnflag"] == dr["warnflag"] == 0
    x = jo.fmin_ncg(rosen, X0, jo.rosen_der, fhess=jo.rosen_hess, avextol=1e-9, disp=0)
    xr = so.fmin_ncg(so.rosen, X0, so.rosen_der, fhess=so.rosen_hess, avextol=1e-9, disp=0)
    assert_allclose(x, xr, atol=1e-6)
    x = jo.fmin_slsqp(lambda z: jnp.sum(z ** 2), [2.5, 2.5], eqcons=[lambda z: z[0] + z[1] - 1],
                      bounds=[(0.6, None), (None, None)], iprint=0)
    xr = so.fmin_slsqp(lambda z: np.sum(z ** 2), [2.5, 2.5],
                       eqcons=[lambda z: z[0] + z[1] - 1], bounds=[(0.6, None), (None, None)],
                       iprint=0)
    assert_allclose(x, xr, atol=1e-7)
    for fn, ref_fn in ((jo.rosen, so.rosen), (jo.rosen_der, so.rosen_der),
                       (jo.rosen_hess, so.rosen_hess)):
        assert_allclose(fn(X0), ref_fn(X0), rtol=1e-14)
    assert_allclose(jo.rosen_hess_prod(X0, X0[::-1]), so.rosen_hess_prod(X0, X0[::-1]),
                    rtol=1e-14)


def test_lbfgsb_iterates_follow_scipys_cauchy_point_under_active_bounds():
    """With bounds active from the first step, the generalised Cauchy point and subspace
    minimisation give scipy's iterates (until the runs' stopping rules differ)."""
    bounds = so.Bounds([-1.0, 1.5, 0, 0, 0], [0.5, 3.0, 2.0, 2.0, 2.0])
    ours, ref = [], []
    minimize(rosen, X0, method="L-BFGS-B", bounds=bounds, callback=ours.append)
    so.minimize(so.rosen, X0, jac=so.rosen_der, method="L-BFGS-B", bounds=bounds,
                callback=lambda xk: ref.append(np.copy(xk)))
    assert_allclose(np.array(ours[:6]), np.array(ref[:6]), rtol=1e-9)
    assert ours[0][0] == 0.5 and ours[0][1] == 1.5  # on the bounds, as scipy's
