"""Levenberg–Marquardt engine: closed forms, scipy, transformations and every peri option."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from jaxinfer.optimize import Status
from jaxinfer.optimize.least_squares import levenberg_marquardt

# ---------------------------------------------------------------------------------------------
# shared small problems (few shapes: each shape is a compile)

RNG = np.random.default_rng(0)
A_LIN = RNG.normal(size=(12, 4))
B_LIN = RNG.normal(size=12)


def linear_residuals(x, a, b):
    return a @ x - b


T_EXP = np.linspace(0.0, 5.0, 40)
B_TRUE = np.array([2.0, 1.3, 1.0, 0.2, 0.5])
B_START = np.array([1.0, 2.0, 2.0, 0.5, 0.0])


def two_exp(b, t):
    return b[0] * jnp.exp(-b[1] * t) + b[2] * jnp.exp(-b[3] * t) + b[4]


Y_EXP = np.asarray(two_exp(B_TRUE, T_EXP)) + 1e-3 * RNG.normal(size=T_EXP.size)


def two_exp_residuals(b, t, y):
    return two_exp(b, t) - y


@pytest.fixture(scope="module")
def scipy_two_exp():
    res = scipy.optimize.least_squares(
        lambda b: np.asarray(two_exp_residuals(b, T_EXP, Y_EXP)), B_START, method="lm",
        xtol=1e-15, ftol=1e-15, gtol=1e-15)
    return res.x


@pytest.fixture(scope="module")
def default_two_exp():
    """The default fit of the two-exponential problem (shared: each distinct call compiles)."""
    return levenberg_marquardt(two_exp_residuals, jnp.asarray(B_START), args=(T_EXP, Y_EXP))


STALE_KWARGS = dict(args=(T_EXP, Y_EXP), update_J_frequency=5, run_type=1, max_iter=500)


@pytest.fixture(scope="module")
def stale_two_exp():
    """J refreshed every 5 iterations without updates: the baseline of Broyden / eigen."""
    return levenberg_marquardt(two_exp_residuals, jnp.asarray(B_START), **STALE_KWARGS)


def rosenbrock(x, a):
    """Rosenbrock as residuals: a narrow curved valley, minimum (1, 1) with zero cost."""
    return jnp.array([a * (x[1] - x[0] ** 2), 1.0 - x[0]])


ROSEN_START = jnp.array([-1.2, 1.0])

# ---------------------------------------------------------------------------------------------


def test_linear_least_squares_matches_closed_form(tol):
    res = levenberg_marquardt(linear_residuals, jnp.zeros(4), args=(A_LIN, B_LIN))
    expected = np.linalg.lstsq(A_LIN, B_LIN, rcond=None)[0]
    assert res.success, res.message
    np.testing.assert_allclose(res.x, expected, rtol=tol(res.x.dtype, 1e-10))
    r = A_LIN @ expected - B_LIN
    np.testing.assert_allclose(res.fun, 0.5 * r @ r, rtol=1e-12)
    np.testing.assert_allclose(res.jac, A_LIN, rtol=1e-14)
    assert int(res.njev) >= 1 and int(res.nfev) >= 2


def test_weights_match_weighted_normal_equations():
    w = np.linspace(0.5, 2.0, 12)
    res = levenberg_marquardt(linear_residuals, jnp.zeros(4), args=(A_LIN, B_LIN), weights=w)
    expected = np.linalg.solve(A_LIN.T @ (w[:, None] * A_LIN), A_LIN.T @ (w * B_LIN))
    np.testing.assert_allclose(res.x, expected, rtol=1e-10)
    r = A_LIN @ expected - B_LIN
    np.testing.assert_allclose(res.fun, 0.5 * np.sum(w * r * r), rtol=1e-12)


def test_nonlinear_fit_matches_scipy_lm(scipy_two_exp, default_two_exp):
    res = default_two_exp
    assert res.success, res.message
    np.testing.assert_allclose(res.x, scipy_two_exp, rtol=1e-7)
    # the returned Jacobian is the exact one at x
    np.testing.assert_allclose(res.jac, jax.jacfwd(two_exp_residuals)(res.x, T_EXP, Y_EXP),
                               rtol=1e-12)


@pytest.mark.parametrize("damp_mode, run_type, solver", [
    ("levenberg", 2, "svd"), ("marquardt", 2, "svd"), ("transtrum", 2, "svd"),
    ("minpack", 2, "svd"), ("levenberg", 1, "svd"), ("minpack", 1, "eigh")])
def test_every_damping_mode_run_type_and_solver_converges(damp_mode, run_type, solver,
                                                          scipy_two_exp):
    res = levenberg_marquardt(two_exp_residuals, jnp.asarray(B_START), args=(T_EXP, Y_EXP),
                        damp_mode=damp_mode, run_type=run_type, damping=1.0, max_iter=500,
                        linear_solver=solver)
    assert res.success, (damp_mode, run_type, solver, res.message)
    np.testing.assert_allclose(res.x, scipy_two_exp, rtol=1e-6)


def test_jit_and_vmap_equal_a_python_loop():
    starts = jnp.asarray(B_START) * jnp.array([[1.0], [1.1], [0.9]])
    solve = jax.jit(lambda b0: levenberg_marquardt(two_exp_residuals, b0, args=(T_EXP, Y_EXP)))
    batched = jax.vmap(solve)(starts)
    for k in range(starts.shape[0]):
        single = solve(starts[k])
        # batched linear algebra rounds differently; this sloppy fit amplifies it to ~1e-9
        np.testing.assert_allclose(batched.x[k], single.x, rtol=1e-7)
        assert bool(single.success)
    assert bool(jnp.all(batched.success))


def test_pytree_parameters_and_user_jacobian(default_two_exp):
    def residuals(p, t, y):
        return p["amp"] * jnp.exp(-p["rate"] * t) + p["rest"][0] * jnp.exp(-p["rest"][1] * t) \
            + p["rest"][2] - y

    x0 = {"amp": 1.0, "rate": 2.0, "rest": jnp.array([2.0, 0.5, 0.0])}
    res = levenberg_marquardt(residuals, x0, args=(T_EXP, Y_EXP))
    # ravel order of a dict is by sorted key: amp, rate, rest
    flat = jnp.concatenate([jnp.atleast_1d(res.x["amp"]), jnp.atleast_1d(res.x["rate"]),
                            res.x["rest"]])
    ref = default_two_exp
    np.testing.assert_allclose(flat, ref.x, rtol=1e-7)

    def jac(b, t, y):
        return jax.jacrev(two_exp_residuals)(b, t, y)

    with_jac = levenberg_marquardt(two_exp_residuals, jnp.asarray(B_START), args=(T_EXP, Y_EXP), jac=jac)
    np.testing.assert_allclose(with_jac.x, ref.x, rtol=1e-7)


def test_underdetermined_uses_reverse_mode_and_reaches_zero_residual():
    # m = 1 < n = 3: jacrev; minimum-norm-like solution with zero residual
    res = levenberg_marquardt(lambda x: jnp.array([jnp.sum(x ** 2) - 1.0]), jnp.array([0.3, 0.2, 0.1]))
    assert res.status == Status.ZERO_RESIDUAL or res.success
    np.testing.assert_allclose(jnp.sum(res.x ** 2), 1.0, atol=1e-10)


def test_mask_fits_only_the_selected_block():
    mask = np.array([True, False, True, False])
    x0 = jnp.array([0.0, 0.7, 0.0, -0.3])
    res = levenberg_marquardt(linear_residuals, x0, args=(A_LIN, B_LIN), mask=mask)
    # closed form of the reduced problem: fixed parameters move to the right-hand side
    rhs = B_LIN - A_LIN[:, ~mask] @ np.asarray(x0)[~mask]
    expected = np.linalg.lstsq(A_LIN[:, mask], rhs, rcond=None)[0]
    np.testing.assert_allclose(res.x[mask], expected, rtol=1e-10)
    np.testing.assert_array_equal(res.x[~mask], x0[~mask])
    np.testing.assert_allclose(res.jac, A_LIN, rtol=1e-14)  # all n columns, exact
    with pytest.raises(ValueError, match="mask"):
        levenberg_marquardt(linear_residuals, x0, args=(A_LIN, B_LIN), mask=np.array([True, False]))
    with pytest.raises(ValueError, match="no parameter"):
        levenberg_marquardt(linear_residuals, x0, args=(A_LIN, B_LIN), mask=np.zeros(4, bool))


def test_bounds_match_scipy_bounded_linear_least_squares():
    lower = np.array([-np.inf, -0.1, -np.inf, 0.0])
    upper = np.array([0.2, np.inf, np.inf, np.inf])
    expected = scipy.optimize.lsq_linear(A_LIN, B_LIN, bounds=(lower, upper), tol=1e-14).x
    assert np.any(np.isclose(expected, lower) | np.isclose(expected, upper))  # a bound is active
    res = levenberg_marquardt(linear_residuals, jnp.zeros(4), args=(A_LIN, B_LIN),
                        bounds=(lower, upper))
    assert res.success, res.message
    np.testing.assert_allclose(res.x, expected, atol=1e-8)
    assert np.all(np.asarray(res.x) >= lower) and np.all(np.asarray(res.x) <= upper)


def test_geodesic_acceleration_needs_fewer_iterations_same_answer():
    plain = levenberg_marquardt(rosenbrock, ROSEN_START, args=(100.0,), run_type=1, max_iter=500)
    accel = levenberg_marquardt(rosenbrock, ROSEN_START, args=(100.0,), run_type=1, max_iter=500,
                          use_accel=True)
    for res in (plain, accel):
        assert res.success, res.message
        np.testing.assert_allclose(res.x, [1.0, 1.0], atol=1e-8)
    assert int(accel.nit) < 0.5 * int(plain.nit)
    assert int(accel.njev) < int(plain.njev)
    assert int(accel.extra["num_jvp"]) > 0 and int(plain.extra["num_jvp"]) == 0
    # a tiny max_accel_correction rejects corrections: the counter says so
    strict = levenberg_marquardt(rosenbrock, ROSEN_START, args=(100.0,), run_type=1, max_iter=500,
                           use_accel=True, max_accel_correction=1e-3)
    assert int(strict.extra["accel_rejections"]) > 0


def test_broyden_update_saves_jacobians_same_answer(scipy_two_exp, stale_two_exp):
    stale = stale_two_exp
    broyden = levenberg_marquardt(two_exp_residuals, jnp.asarray(B_START), broyden_update=True,
                            **STALE_KWARGS)
    for res in (stale, broyden):
        assert res.success, res.message
        np.testing.assert_allclose(res.x, scipy_two_exp, rtol=1e-6)
    assert int(broyden.nit) < int(stale.nit)
    assert int(broyden.njev) < int(stale.njev)


def test_eigen_update_saves_jacobians_same_answer(scipy_two_exp, stale_two_exp):
    stale = stale_two_exp
    eig = levenberg_marquardt(two_exp_residuals, jnp.asarray(B_START), eig_update=True,
                        eig_update_frequency=1, num_eig_dirs=4, **STALE_KWARGS)
    for res in (stale, eig):
        assert res.success, res.message
        np.testing.assert_allclose(res.x, scipy_two_exp, rtol=1e-6)
    assert int(eig.nit) < int(stale.nit)
    assert int(eig.njev) < int(stale.njev)
    assert int(eig.extra["num_jvp"]) > 0


def test_eigen_update_uses_eigenvectors_of_jtj():
    """The update is exact along the stiffest eigenvectors (columns of V), and along all n
    of them it reproduces the true Jacobian."""
    from jaxinfer.optimize.lm import eigen_update as _eigen_update

    stale = np.asarray(jax.jacfwd(two_exp_residuals)(jnp.asarray(B_START), T_EXP, Y_EXP))
    x_new = jnp.asarray(B_START) + 0.1
    true = np.asarray(jax.jacfwd(two_exp_residuals)(x_new, T_EXP, Y_EXP))

    def jvp(v):
        return jax.jvp(lambda b: two_exp_residuals(b, T_EXP, Y_EXP), (x_new,), (v,))[1]

    _, vecs = np.linalg.eigh(stale.T @ stale)
    top2 = vecs[:, ::-1][:, :2]
    updated = np.asarray(_eigen_update(jnp.asarray(stale), jvp, 2))
    np.testing.assert_allclose(updated @ top2, true @ top2, rtol=1e-10, atol=1e-12)
    rest = vecs[:, ::-1][:, 2:]
    np.testing.assert_allclose(updated @ rest, stale @ rest, rtol=1e-10, atol=1e-12)
    full = np.asarray(_eigen_update(jnp.asarray(stale), jvp, 5))
    np.testing.assert_allclose(full, true, rtol=1e-9, atol=1e-12)


def test_max_iter_exhaustion_is_a_failure_with_a_message():
    res = levenberg_marquardt(rosenbrock, ROSEN_START, args=(100.0,), max_iter=2)
    assert int(res.status) == Status.MAX_ITER
    assert not bool(res.success)
    assert "maximum number of iterations" in str(res.message)
    assert int(res.nit) == 2


def test_peri_tolerances_and_statistics():
    # peri's defaults: absolute errtol etc.; a coarse fit stops early with a peri status
    res = levenberg_marquardt(two_exp_residuals, jnp.asarray(B_START), args=(T_EXP, Y_EXP),
                        damping=1.0, damp_mode="levenberg", broyden_update=True,
                        paramtol=1e-6, errtol=1e-5, exptol=1e-3, fractol=1e-6, costol=None,
                        xtol=None, gtol=None, max_iter=50)
    assert res.success
    assert int(res.status) in (Status.XTOL, Status.ERRTOL, Status.EXPTOL, Status.FRACTOL)
    for key in ("delta_vals", "delta_err", "exp_err", "frac_err", "num_iter", "model_cosine",
                "damping"):
        assert key in res.extra
    assert float(res.extra["delta_err"]) >= 0


def test_nonfinite_start_is_reported():
    res = levenberg_marquardt(lambda x: jnp.array([jnp.log(x[0]), x[1]]), jnp.array([-1.0, 1.0]))
    assert int(res.status) == Status.NONFINITE and not bool(res.success)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="damp_mode"):
        levenberg_marquardt(linear_residuals, jnp.zeros(4), args=(A_LIN, B_LIN), damp_mode="x")
    with pytest.raises(ValueError, match="run_type"):
        levenberg_marquardt(linear_residuals, jnp.zeros(4), args=(A_LIN, B_LIN), run_type=3)
    with pytest.raises(ValueError, match="increase_damp_factor"):
        levenberg_marquardt(linear_residuals, jnp.zeros(4), args=(A_LIN, B_LIN), increase_damp_factor=1)
    with pytest.raises(ValueError, match="linear_solver"):
        levenberg_marquardt(linear_residuals, jnp.zeros(4), args=(A_LIN, B_LIN), linear_solver="qr")


def test_float32_fit(scipy_two_exp):
    res = levenberg_marquardt(two_exp_residuals, jnp.asarray(B_START, jnp.float32),
                        args=(jnp.asarray(T_EXP, jnp.float32), jnp.asarray(Y_EXP, jnp.float32)))
    assert res.x.dtype == jnp.float32
    assert res.success, res.message
    np.testing.assert_allclose(res.x, scipy_two_exp, rtol=2e-3, atol=2e-3)


def test_nonzero_residual_minimum_within_scipys_evaluation_budget():
    """r(x) = x² + 5 has no zero: the minimum of the cost is x = 0, where J vanishes and
    Gauss-Newton steps overshoot. scipy's MINPACK gets |x| <= 1e-4 within 20 evaluations; so
    must the LM engine (its internal run lowered λ after every success for part of a session
    and needed 30)."""
    from jaxinfer.optimize import least_squares

    ref = scipy.optimize.least_squares(lambda x: x ** 2 + 5.0, 2.0, method="lm", max_nfev=20)
    res = least_squares(lambda x: x ** 2 + 5.0, 2.0, method="lm", max_nfev=20)
    assert abs(ref.x[0]) <= 1e-4
    assert abs(res.x[0]) <= 1e-4 and res.nfev <= 20
    assert res.cost == pytest.approx(12.5, rel=1e-12)   # ½ (0² + 5)²
