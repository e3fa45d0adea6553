"""scipy drop-in: least_squares and curve_fit against scipy.optimize (numbers and interface).

Each test compares with scipy 1.17's own output on the same problem. Problems are few and
small: every (function, settings, shape) is one compilation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.sparse
import scipy.sparse.linalg

from jaxinfer.optimize.curve_fit import OptimizeWarning, curve_fit
from jaxinfer.optimize.least_squares import least_squares

T = np.linspace(-1.0, 1.0, 11)
Y_EXP = 1.0 + np.exp(0.1 * T) + 0.1 * np.random.default_rng(3).standard_normal(T.size)
Y_EXP[4] += 3.0   # an outlier, so the robust losses matter
TIGHT = dict(ftol=1e-14, xtol=1e-14, gtol=1e-14)


def exp_residuals(p, t, y):
    return p[0] + jnp.exp(p[1] * t) - y


def exp_residuals_np(p):
    return p[0] + np.exp(p[1] * T) - Y_EXP


def exp_jac_np(p):
    """The exact Jacobian for scipy's reference runs (its default is finite differences)."""
    return np.stack([np.ones_like(T), T * np.exp(p[1] * T)], axis=1)


def trivial(x, a=0.0):
    return (x - a) ** 2 + 5.0


def cubic_soft_l1(z):
    t = 1 + z
    return jnp.stack([3 * (t ** (1 / 3) - 1), t ** (-2 / 3), -2 / 3 * t ** (-5 / 3)])


def cubic_soft_l1_np(z):
    t = 1 + z
    return np.stack([3 * (t ** (1 / 3) - 1), t ** (-2 / 3), -2 / 3 * t ** (-5 / 3)])


def test_result_fields_match_scipy_trf_and_lm():
    ref = scipy.optimize.least_squares(exp_residuals_np, np.zeros(2), exp_jac_np, **TIGHT)
    res = least_squares(exp_residuals, np.zeros(2), args=(T, Y_EXP), **TIGHT)
    assert res.success is True and isinstance(res.nfev, int) and isinstance(res.message, str)
    # 'trf' is scipy's algorithm: the same iterates, counters and stopping test
    assert (res.status, res.nfev, res.njev) == (ref.status, ref.nfev, ref.njev)
    assert res.message == ref.message
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-10)
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-13)
    np.testing.assert_allclose(res.fun, ref.fun, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(res.jac, ref.jac, rtol=1e-10)
    np.testing.assert_allclose(res.grad, res.jac.T @ res.fun, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(res.optimality, ref.optimality, rtol=1e-3, atol=1e-14)
    np.testing.assert_array_equal(res.active_mask, [0, 0])
    lm = least_squares(exp_residuals, np.zeros(2), args=(T, Y_EXP), method="lm", **TIGHT)
    np.testing.assert_allclose(lm.x, res.x, rtol=1e-6, atol=1e-7)   # trf stops at |g| 6e-8
    assert lm.njev is None and res.njev >= 1           # scipy reports no njev for 'lm'
    assert res["x"] is res.x and "optimality" in repr(res)


def rosen(x):
    return jnp.stack([10 * (x[1] - x[0] ** 2), 1 - x[0]])


def rosen_np(x):
    return np.array([10 * (x[1] - x[0] ** 2), 1 - x[0]])


def rosen_jac_np(x):
    return np.array([[-20 * x[0], 10.0], [-1.0, 0.0]])


@pytest.mark.parametrize("method", ["trf", "dogbox"])
def test_trust_region_methods_follow_scipy(method):
    """'trf' and 'dogbox' take scipy's steps: the counters, the status, the active set and x
    agree with scipy's run (exact Jacobians on both sides), with and without bounds, with
    x_scale an array or 'jac'."""
    inf = np.inf
    cases = [([-2.0, 1.0], (-inf, inf), "jac"), ([2.0, 2.0], ([-inf, 1.5], inf), 1.0),
             ([-1.2, 1.0], ([-50.0, 0.0], [0.5, 100.0]), 1.0),
             ([0.0, 2.0], ([-inf, 1.5], [1.0, inf]), [1.0, 0.5])]
    for x0, bounds, x_scale in cases:
        ref = scipy.optimize.least_squares(rosen_np, x0, rosen_jac_np, bounds=bounds,
                                           x_scale=x_scale, method=method)
        res = least_squares(rosen, x0, bounds=bounds, x_scale=x_scale, method=method)
        assert (res.status, res.nfev, res.njev) == (ref.status, ref.nfev, ref.njev)
        np.testing.assert_allclose(res.x, ref.x, rtol=1e-9, atol=1e-12)
        np.testing.assert_array_equal(res.active_mask, ref.active_mask)
        np.testing.assert_allclose(res.optimality, ref.optimality, rtol=1e-3, atol=1e-11)


def tridiagonal(x):
    f = (3 - x) * x + 1
    return f.at[1:].add(-x[:-1]).at[:-1].add(-2 * x[1:])


def tridiagonal_np(x):
    f = (3 - x) * x + 1
    f[1:] -= x[:-1]
    f[:-1] -= 2 * x[1:]
    return f


def tridiagonal_jac_sparse(x):
    """numpy code returning a scipy sparse matrix: not traceable, so it runs on the host."""
    return scipy.sparse.diags_array([-np.ones(x.size - 1), 3 - 2 * x, -2 * np.ones(x.size - 1)],
                                    offsets=[-1, 0, 1], format="csr")


def tridiagonal_operator(x):
    return scipy.sparse.linalg.aslinearoperator(tridiagonal_jac_sparse(x))


def test_sparse_and_operator_jacobians_run_on_the_host():
    x0 = -np.ones(8)
    ref = scipy.optimize.least_squares(tridiagonal_np, x0, tridiagonal_jac_sparse)
    res = least_squares(tridiagonal, x0, tridiagonal_jac_sparse)
    assert scipy.sparse.issparse(res.jac) and scipy.sparse.issparse(ref.jac)
    assert (res.status, res.nfev, res.njev) == (ref.status, ref.nfev, ref.njev)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-12)
    np.testing.assert_allclose(res.jac.toarray(), ref.jac.toarray(), rtol=1e-12)
    assert res.cost < 1e-20
    op = least_squares(tridiagonal, x0, tridiagonal_operator, method="dogbox")
    ref = scipy.optimize.least_squares(tridiagonal_np, x0, tridiagonal_operator,
                                       method="dogbox")
    assert (op.status, op.nfev) == (ref.status, ref.nfev) and op.cost < 1e-20
    for jac, kwargs, message in [
            (tridiagonal_jac_sparse, dict(tr_solver="exact"), "only with dense Jacobian"),
            (tridiagonal_jac_sparse, dict(method="lm"), "method='lm' works only with dense"),
            (tridiagonal_operator, dict(x_scale="jac"), "LinearOperator"),
            ("2-point", dict(tr_solver="exact", jac_sparsity=np.eye(8)), "incompatible")]:
        with pytest.raises(ValueError, match=message):
            least_squares(tridiagonal, x0, jac, **kwargs)


@pytest.mark.parametrize("loss", ["soft_l1", "huber", "callable"])
def test_robust_losses_match_scipy(loss):
    ours, theirs = (cubic_soft_l1, cubic_soft_l1_np) if loss == "callable" else (loss, loss)
    ref = scipy.optimize.least_squares(exp_residuals_np, np.zeros(2), exp_jac_np, loss=theirs,
                                       f_scale=0.1, **TIGHT)
    res = least_squares(exp_residuals, np.zeros(2), args=(T, Y_EXP), loss=ours, f_scale=0.1,
                        **TIGHT)
    assert res.success
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-5)
    np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-10)
    assert res.cost <= ref.cost * (1 + 1e-14)
    np.testing.assert_allclose(res.fun, ref.fun, rtol=1e-6, atol=1e-8)
    # the loss-modified Jacobian and the true gradient, scipy's formulas
    np.testing.assert_allclose(res.jac, ref.jac, rtol=1e-5, atol=1e-9)
    assert res.optimality < 1e-8


def test_loss_formulas_at_a_point_match_scipy():
    """At max_nfev=1 (x stays at x0) grad and jac are scipy's formulas at x0 exactly."""
    x0 = np.array([2.0])
    for loss, f_scale in [("huber", 1.0), ("huber", 10.0), ("cauchy", 10.0)]:
        ref = scipy.optimize.least_squares(trivial, x0, lambda x: 2 * x[:, None], loss=loss,
                                           f_scale=f_scale, max_nfev=1)
        res = least_squares(trivial, x0, lambda x: 2 * x[:, None], loss=loss,
                            f_scale=f_scale, max_nfev=1)
        assert res.status == ref.status == 0 and res.success is False and res.nfev == 1
        np.testing.assert_array_equal(res.x, x0)
        np.testing.assert_allclose(res.cost, ref.cost, rtol=1e-14)
        np.testing.assert_allclose(res.grad, ref.grad, rtol=1e-14)
        np.testing.assert_allclose(res.jac, ref.jac, rtol=1e-12)


def test_bounds_active_mask_and_optimality_match_scipy():
    lower, upper = np.array([-np.inf, 0.3]), np.array([1.5, np.inf])
    ref = scipy.optimize.least_squares(exp_residuals_np, np.array([0.5, 0.5]), exp_jac_np,
                                       bounds=(lower, upper), **TIGHT)
    res = least_squares(exp_residuals, np.array([0.5, 0.5]), args=(T, Y_EXP),
                        bounds=scipy.optimize.Bounds(lower, upper), **TIGHT)
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-5)
    np.testing.assert_array_equal(res.active_mask, ref.active_mask)
    np.testing.assert_array_equal(res.active_mask, [0, -1])
    assert res.optimality < 1e-8


def test_x_scale_jac_options_and_callback_stop():
    ref = scipy.optimize.least_squares(exp_residuals_np, np.zeros(2), exp_jac_np, **TIGHT)
    scaled = least_squares(exp_residuals, np.zeros(2), jac="3-point", args=(T, Y_EXP),
                           x_scale=np.array([1.0, 0.2]), **TIGHT)
    np.testing.assert_allclose(scaled.x, ref.x, rtol=1e-5)
    seen = []

    def stop(intermediate_result):
        seen.append(intermediate_result)
        raise StopIteration

    res = least_squares(exp_residuals, np.zeros(2), args=(T, Y_EXP), callback=stop)
    assert res.status == -2 and not res.success and seen[-1].nit == 1
    assert res.message == ("Stopped because `callback` function raised `StopIteration` or "
                           "returned `True`")
    xs = []
    res = least_squares(exp_residuals, np.zeros(2), args=(T, Y_EXP), callback=xs.append)
    assert res.success and len(xs) == res.nit
    np.testing.assert_allclose(xs[-1], res.x)


def test_scipy_input_errors():
    cases = [(dict(method="lm", bounds=(-3.0, 3.0)), "doesn't support bounds"),
             (dict(method="lm", loss="huber"), "only 'linear' loss"),
             (dict(method="lm", jac_sparsity=[1]), "jac_sparsity"),
             (dict(method="lm", xtol=1e-13, ftol=None), "machine epsilon"),
             (dict(ftol=None, xtol=None, gtol=None), "At least one of the tolerances"),
             (dict(bounds=(3.0, 4.0)), "outside of provided bounds"),
             (dict(bounds=(10.0, 0.0)), "strictly less"),
             (dict(bounds=(1.0, 2, 3)), "2 elements"),
             (dict(bounds=(1.0, [2.0, 3.0])), "Inconsistent shapes"),
             (dict(x_scale="auto"), "x_scale"), (dict(x_scale=-1.0), "x_scale"),
             (dict(loss="hinge"), "`loss` must be one of"), (dict(method="x"), "`method`"),
             (dict(jac="oops"), "`jac` must be"), (dict(tr_solver="best"), "tr_solver"),
             (dict(max_nfev=0), "max_nfev"), (dict(verbose=3), "verbose")]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            least_squares(trivial, 2.0, **kwargs)
    with pytest.raises(ValueError, match="less than the number of variables"):
        least_squares(lambda x: x[0] * x[1][None], [1.0, 2.0], method="lm")
    with pytest.raises(ValueError, match="at most 1 dimension"):
        least_squares(trivial, np.ones((2, 2)))
    with pytest.raises(ValueError, match="must be real"):
        least_squares(trivial, 2.0 + 0j)
    with pytest.raises(ValueError, match="wrong shape"):
        least_squares(trivial, 2.0, lambda x: jnp.ones((1, 1, 1, 2)))
    for kwargs in (dict(args=(3, 4)), dict(kwargs={"kaboom": 3}), dict(options={"a": 1}),
                   dict(tr_solver="lsmr", tr_options={"tol": 1e-10}),
                   dict(damping=1.0)):   # jaxinfer's LM options go with method="lm"
        with pytest.raises(TypeError):
            least_squares(trivial, 2.0, **kwargs)
    with pytest.warns(UserWarning, match="not supported with `lm`"):
        least_squares(trivial, [0.0], method="lm", callback=lambda x: None)


def test_jit_vmap_and_implicit_derivative_of_x():
    def fit(a):
        return least_squares(lambda x, a: jnp.stack([x[0] - a, 2 * (x[0] - a ** 2)]), 2.0,
                             args=(a,), kwargs={}).x[0]

    a = jnp.array([0.5, 1.5])
    # closed form: argmin (x - a)² + 4 (x - a²)² = (a + 4 a²) / 5
    x, dx = jax.jit(jax.vmap(jax.value_and_grad(fit)))(a)
    np.testing.assert_allclose(x, (a + 4 * a ** 2) / 5, rtol=1e-10)
    np.testing.assert_allclose(dx, (1 + 8 * a) / 5, rtol=1e-8)


# ---- curve_fit --------------------------------------------------------------------------

X = np.linspace(0.0, 4.0, 30)
Y = 2.5 * np.exp(-1.3 * X) + 0.5 + 0.05 * np.random.default_rng(5).normal(size=X.size)


def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def decay_np(x, a, b, c):
    return a * np.exp(-b * x) + c


def test_curve_fit_full_output_and_methods_match_scipy():
    ref = scipy.optimize.curve_fit(decay_np, X, Y, full_output=True, **TIGHT)
    popt, pcov, info, mesg, ier = curve_fit(decay, X, Y, full_output=True, **TIGHT)
    np.testing.assert_allclose(popt, ref[0], rtol=1e-7)
    np.testing.assert_allclose(pcov, ref[1], rtol=1e-6)
    assert set(ref[2]) <= set(info) and ier in (1, 2, 3, 4) and isinstance(mesg, str)
    np.testing.assert_allclose(info["fvec"], ref[2]["fvec"], rtol=1e-6, atol=1e-8)
    r = np.linalg.qr(np.asarray(jax.jacfwd(lambda p: decay(X, *p))(jnp.asarray(popt))))[1]
    np.testing.assert_allclose(np.abs(info["fjac"]), np.abs(r), rtol=1e-8, atol=1e-10)
    np.testing.assert_array_equal(info["ipvt"], [1, 2, 3])
    # 'trf' with bounds: scipy's pseudo-inverse pcov, least_squares' status as ier
    bounds = ([0.0, 0.0, 0.55], [10.0, 10.0, 2.0])
    ref = scipy.optimize.curve_fit(decay_np, X, Y, bounds=bounds, full_output=True, **TIGHT)
    popt, pcov, info, mesg, ier = curve_fit(decay, X, Y, bounds=bounds, full_output=True,
                                            **TIGHT)
    np.testing.assert_allclose(popt, ref[0], rtol=1e-6)
    np.testing.assert_allclose(pcov, ref[1], rtol=1e-5)
    assert ier > 0 and set(info) >= {"nfev", "fvec"}


def test_curve_fit_sigma_forms_and_default_p0_match_scipy():
    # each form once: a scalar sigma (relative) and a 1-D sigma (absolute), two compilations
    for sigma, absolute in ((0.1, False), (np.full(X.size, 0.1), True)):
        ref = scipy.optimize.curve_fit(decay_np, X, Y, sigma=sigma,
                                       absolute_sigma=absolute, **TIGHT)
        ours = curve_fit(decay, X, Y, sigma=sigma, absolute_sigma=absolute)
        np.testing.assert_allclose(ours[0], ref[0], rtol=1e-7)
        np.testing.assert_allclose(ours[1], ref[1], rtol=1e-6)
    # p0 defaults: ones, moved into the bounds (midpoint / bound + 1) as scipy does
    bounds = ([2.0, -np.inf, 0.0], [3.0, np.inf, np.inf])
    ref = scipy.optimize.curve_fit(decay_np, list(X), list(Y), bounds=bounds)
    np.testing.assert_allclose(curve_fit(decay, list(X), list(Y), bounds=bounds)[0], ref[0],
                               rtol=1e-6)


def test_curve_fit_raises_and_warns_like_scipy():
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        curve_fit(decay, X, Y, maxfev=2)
    with pytest.warns(OptimizeWarning, match="Covariance of the parameters could not"):
        _, pcov = curve_fit(lambda x, a, b: a * x, X, Y)
    assert np.all(np.isinf(pcov)) and OptimizeWarning is scipy.optimize.OptimizeWarning
    x_nan, y_nan = X.copy(), Y.copy()
    x_nan[3], y_nan[7] = np.nan, np.nan
    with pytest.raises(ValueError, match="contains nan"):
        curve_fit(decay, x_nan, y_nan, check_finite=False, nan_policy="raise")
    ref = scipy.optimize.curve_fit(decay_np, x_nan, y_nan, nan_policy="omit")
    np.testing.assert_allclose(curve_fit(decay, x_nan, y_nan, nan_policy="omit")[0], ref[0],
                               rtol=1e-6)
    for kwargs, error, message in [
            (dict(nan_policy="propagate", check_finite=False), ValueError, "propagate"),
            (dict(nan_policy="hi", check_finite=False), ValueError, "nan_policy must be"),
            (dict(bounds=(0, 3), method="lm"), ValueError, "unconstrained problems"),
            (dict(method="unknown"), ValueError, "`method`"),
            (dict(p0=[1.0, 1.0, 1.0], bounds=(10, 11)), ValueError, "outside of provided"),
            (dict(args=(1,)), ValueError, "'args' is not a supported"),
            (dict(kaboom=1), TypeError, "unexpected keyword")]:
        with pytest.raises(error, match=message):
            curve_fit(decay, X, Y, **kwargs)
    with pytest.raises(TypeError, match="must not exceed the number of data points"):
        curve_fit(decay, X[:2], Y[:2])
    with pytest.raises(ValueError, match="Unable to determine number of fit parameters"):
        curve_fit(lambda x: x, X, Y)
    with pytest.raises(ValueError, match="must not be empty"):
        curve_fit(lambda x, a: a * x, [], [])
