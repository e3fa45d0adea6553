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


# ---- the front doors: curve_fit, minimize, least_squares ------------------------------------

from jaxinfer.optimize.curve_fit import curve_fit  # noqa: E402
from jaxinfer.optimize.minimize import minimize  # noqa: E402

XS = np.linspace(0.0, 3.0, 12)
YS = 2.0 * np.exp(-1.1 * XS) + 0.3 + 0.02 * np.cos(5.0 * XS)   # non-zero residuals
SIG = 0.05 + 0.01 * XS
TIGHT = {"xtol": 1e-15}


def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def popt_of(y, x=XS, sigma=None, p0=(1.0, 1.0, 0.0), **kw):
    return curve_fit(decay, x, y, p0=np.array(p0), sigma=sigma, **TIGHT, **kw)[0]


def fit_cost(p, x, y, sigma):
    return 0.5 * jnp.sum(((decay(x, *p) - y) / sigma) ** 2)


@jax.jit
def newton_polish(p, x, y, sigma, free):
    """Three Newton steps on the free parameters: LM stops ~1e-11 from the minimiser, too
    far for central differences at 1e-5 relative; Newton makes it exact to rounding."""
    for _ in range(3):
        g = jnp.where(free, jax.grad(fit_cost)(p, x, y, sigma), 0.0)
        h = jax.hessian(fit_cost)(p, x, y, sigma)
        h = jnp.where(free[:, None] & free[None, :], h, jnp.eye(3))
        p = p - jnp.linalg.solve(h, g)
    return p


def resolved(y, x=XS, sigma=None, bounds=None):
    """The minimiser at (x, y, sigma) recomputed from scratch: curve_fit, then polished."""
    kw = {} if bounds is None else {"bounds": bounds, "p0": tuple(np.clip(
        [1.0, 1.0, 0.0], bounds[0], bounds[1]))}   # curve_fit refuses a p0 outside the box
    p = popt_of(y, x=x, sigma=sigma, **kw)
    free = np.ones(3, bool)
    if bounds is not None:
        free = (np.asarray(p) > np.asarray(bounds[0])) & (np.asarray(p) < np.asarray(bounds[1]))
    return newton_polish(p, x, y, np.ones_like(y) if sigma is None else sigma, free)


def assert_relative(actual, reference, rtol=1e-5):
    """Relative error in the Frobenius norm (entries near zero are judged by the whole)."""
    actual, reference = np.asarray(actual), np.asarray(reference)
    error = np.linalg.norm(actual - reference) / np.linalg.norm(reference)
    assert error <= rtol, f"relative error {error:.2e} > {rtol:.0e}"


def central(fn, z, h):
    """Central differences of re-solves (eager calls, each a fresh fit) along every entry."""
    z = np.asarray(z, float)
    cols = []
    for i in range(z.size):
        e = np.zeros_like(z)
        e.flat[i] = h
        cols.append((np.asarray(fn(z + e)) - np.asarray(fn(z - e))) / (2 * h))
    return np.stack(cols, axis=-1)


def fit_outputs(x, y, sigma):
    """(popt (3,), pcov[1, 1]) of one weighted fit: every derivative below comes from one
    compiled program of this function (one LM trace), not one per derivative."""
    popt, pcov = curve_fit(decay, x, y, p0=np.array([1.0, 1.0, 0.0]), sigma=sigma, **TIGHT)
    return popt, pcov[1, 1]


def var_b_resolved(y, x=XS, sigma=SIG):
    """scipy's pcov[1, 1] (weighted, scaled by the reduced chi-square) in closed form at the
    re-solved minimiser."""
    a, b, c = np.asarray(resolved(y, x=x, sigma=sigma))
    e = np.exp(-b * x)
    r = (a * e + c - y) / sigma
    j = np.stack([e, -a * x * e, np.ones_like(x)], axis=1) / sigma[:, None]
    return (np.linalg.inv(j.T @ j) * (r @ r) / (x.size - 3))[1, 1]


def test_curve_fit_popt_and_pcov_wrt_ydata_xdata_and_sigma_match_resolves():
    # d popt / d ydata, d popt / d xdata, d popt[1] / d sigma and d pcov[1, 1] / d ydata,
    # all by reverse mode through one compiled fit, against central differences of re-solves
    (dp_x, dp_y, dp_s), (_, dv_y, _) = jax.jit(jax.jacrev(fit_outputs, argnums=(0, 1, 2)))(
        jnp.asarray(XS), jnp.asarray(YS), jnp.asarray(SIG))
    assert_relative(dp_y, central(lambda y: resolved(y, sigma=SIG), YS, h=1e-5))
    direction = np.sin(np.arange(XS.size))
    ref_x = (resolved(YS, x=XS + 1e-5 * direction, sigma=SIG)
             - resolved(YS, x=XS - 1e-5 * direction, sigma=SIG)) / 2e-5
    assert_relative(np.asarray(dp_x) @ direction, ref_x)
    assert_relative(dp_s[1], central(lambda s: resolved(YS, sigma=s)[1], SIG, h=1e-5))
    assert_relative(dv_y, central(var_b_resolved, YS, h=1e-5))


def test_curve_fit_popt_wrt_xdata_by_forward_mode():
    # forward mode (custom_jvp side) in the same program shape as the eager re-solves
    direction = np.sin(np.arange(XS.size))
    _, d_x = jax.jit(lambda x, v: jax.jvp(lambda xx: popt_of(YS, x=xx, sigma=SIG), (x,),
                                          (v,)))(jnp.asarray(XS), jnp.asarray(direction))
    ref_x = (resolved(YS, x=XS + 1e-5 * direction, sigma=SIG)
             - resolved(YS, x=XS - 1e-5 * direction, sigma=SIG)) / 2e-5
    assert_relative(d_x, ref_x)


def test_curve_fit_with_an_active_bound_holds_that_parameter():
    bounds = ([0.0, 0.0, 0.35], [10.0, 10.0, 2.0])      # c sits on its lower bound
    fit = lambda y: popt_of(y, bounds=bounds, p0=(1.0, 1.0, 0.35))  # noqa: E731  (in the box)
    assert float(fit(YS)[2]) == pytest.approx(0.35)
    jac = jax.jit(jax.jacrev(fit))(jnp.asarray(YS))
    reference = central(lambda y: resolved(y, bounds=bounds), YS, h=1e-5)
    assert_relative(jac, reference)
    assert np.all(np.asarray(jac)[2] == 0.0)


def rosen_scaled(x, a):
    return jnp.sum(a[0] * (x[1:] - x[:-1] ** 2) ** 2 + (a[1] - x[:-1]) ** 2) + 0.1 * jnp.sum(x ** 2)


@pytest.mark.parametrize("method", ["BFGS", "L-BFGS-B"])
def test_minimize_solution_wrt_a_parameter_matches_resolves(method):
    x0 = jnp.array([-1.0, 1.0, 0.5])
    options = {"gtol": 1e-12} if method == "BFGS" else {"gtol": 1e-12, "ftol": 1e-16,
                                                          "maxiter": 2000}
    bounds = None if method == "BFGS" else [(None, None), (None, 0.6), (None, None)]

    def solution(a):
        return minimize(rosen_scaled, x0, args=(a,), method=method, bounds=bounds,
                        options=options).x

    @jax.jit
    def resolved_minimum(a):
        # re-solve, then Newton on the free parameters (the bound holds x[1] at 0.6):
        # quasi-Newton stops ~1e-11 from the minimiser, too far for 1e-5 central differences
        x = solution(a)
        free = jnp.ones(3, bool) if bounds is None else jnp.array([True, False, True])
        for _ in range(3):
            g = jnp.where(free, jax.grad(rosen_scaled)(x, a), 0.0)
            h = jax.hessian(rosen_scaled)(x, a)
            x = x - jnp.linalg.solve(jnp.where(free[:, None] & free[None, :], h, jnp.eye(3)), g)
        return x

    a = np.array([10.0, 0.8])
    if bounds is not None:
        assert float(solution(jnp.asarray(a))[1]) == 0.6
    jac = jax.jit(jax.jacrev(solution))(jnp.asarray(a))
    reference = central(resolved_minimum, a, h=1e-5)
    assert_relative(jac, reference)


def test_least_squares_solution_wrt_args_and_weights_matches_resolves():
    from jaxinfer.optimize.least_squares import levenberg_marquardt

    def residuals(p, x, y):
        return p["amplitude"] * jnp.exp(-p["rate"] * x) + p["offset"] - y

    start = {"amplitude": 1.0, "rate": 1.0, "offset": 0.0}

    def fitted(y, w):
        x = levenberg_marquardt(residuals, start, args=(jnp.asarray(XS), y), weights=w,
                                xtol=1e-15).x
        return jnp.stack([x["amplitude"], x["rate"], x["offset"]])

    weights = 1.0 / SIG ** 2
    jac_y = jax.jit(jax.jacrev(fitted))(jnp.asarray(YS), jnp.asarray(weights))
    assert_relative(jac_y, central(lambda y: resolved(y, sigma=SIG), YS, h=1e-5))
    jac_w = jax.jit(jax.jacfwd(fitted, argnums=1))(jnp.asarray(YS), jnp.asarray(weights))
    assert_relative(jac_w, central(lambda w: resolved(YS, sigma=1 / np.sqrt(w)), weights,
                                   h=1e-3))
