"""curve_fit against scipy.optimize.curve_fit: popt, pcov conventions, sigma forms, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from jaxinfer.optimize.curve_fit import curve_fit

RNG = np.random.default_rng(1)
X = np.linspace(0.0, 4.0, 30)
P_TRUE = np.array([2.5, 1.3, 0.5])
SIGMA = 0.02 + 0.03 * RNG.random(X.size)
Y = P_TRUE[0] * np.exp(-P_TRUE[1] * X) + P_TRUE[2] + SIGMA * RNG.normal(size=X.size)
P0 = np.array([1.0, 1.0, 0.0])


def model(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def model_np(x, a, b, c):
    return a * np.exp(-b * x) + c


def scipy_fit(**kwargs):
    return scipy.optimize.curve_fit(model_np, X, Y, p0=P0, xtol=1e-14, ftol=1e-14, gtol=1e-14,
                                    **kwargs)


@pytest.mark.parametrize("sigma_kind", ["none", "1d", "1d-absolute", "2d"])
def test_popt_and_pcov_match_scipy(sigma_kind):
    kwargs = {}
    if sigma_kind.startswith("1d"):
        kwargs["sigma"] = SIGMA
    if sigma_kind == "1d-absolute":
        kwargs["absolute_sigma"] = True
    if sigma_kind == "2d":
        corr = 0.3 ** np.abs(np.subtract.outer(np.arange(X.size), np.arange(X.size)))
        kwargs["sigma"] = np.outer(SIGMA, SIGMA) * corr
    popt_ref, pcov_ref = scipy_fit(**kwargs)
    popt, pcov = curve_fit(model, X, Y, p0=P0, **kwargs)
    np.testing.assert_allclose(popt, popt_ref, rtol=1e-8)
    np.testing.assert_allclose(pcov, pcov_ref, rtol=1e-6)


def test_default_p0_full_output_and_jac():
    popt, pcov, info, mesg, ier = curve_fit(model, X, Y, full_output=True)  # p0 = ones
    res = info["result"]
    assert ier in (1, 2, 3, 4) and isinstance(mesg, str)
    popt_ref, _ = scipy_fit()
    np.testing.assert_allclose(popt, popt_ref, rtol=1e-8)
    assert bool(res.success) and res.nfev > 0
    np.testing.assert_allclose(2 * res.fun, np.sum((model_np(X, *popt_ref) - Y) ** 2), rtol=1e-10)

    def jac(x, a, b, c):
        e = jnp.exp(-b * x)
        return jnp.stack([e, -a * x * e, jnp.ones_like(x)], axis=1)

    popt_j, pcov_j = curve_fit(model, X, Y, p0=P0, jac=jac)
    np.testing.assert_allclose(popt_j, popt_ref, rtol=1e-8)
    np.testing.assert_allclose(pcov_j, pcov, rtol=1e-6)


def test_singular_problem_gives_infinite_pcov():
    # a and d enter only as the product a*d: J is rank-deficient everywhere
    def redundant(x, a, b, c, d):
        return a * d * jnp.exp(-b * x) + c

    # LM stalls on the exact redundancy (status DAMPING), so outside a trace this raises
    # scipy's RuntimeError; inside jit it cannot raise and pcov says inf
    pcov = jax.jit(lambda y: curve_fit(redundant, X, y, p0=np.array([1.0, 1.0, 0.0, 1.0]))[1])(Y)
    assert np.all(np.isinf(pcov))


def test_as_many_parameters_as_points_gives_infinite_pcov():
    y_exact = model_np(X[:3], *P_TRUE)
    popt, pcov = curve_fit(model, X[:3], y_exact, p0=P0)
    np.testing.assert_allclose(model_np(X[:3], *popt), y_exact, atol=1e-8)
    assert np.all(np.isinf(pcov))


def test_bounds_match_scipy_trf():
    lower, upper = [0.0, 0.0, 0.6], [10.0, 10.0, 2.0]   # c's bound is active
    ref, _ = scipy.optimize.curve_fit(model_np, X, Y, p0=[1.0, 1.0, 1.0], bounds=(lower, upper),
                                      method="trf", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    popt, _, info, _, _ = curve_fit(model, X, Y, p0=np.array([1.0, 1.0, 1.0]),
                                    bounds=(lower, upper), full_output=True)
    res = info["result"]
    assert bool(res.success), res.message
    np.testing.assert_allclose(popt, ref, rtol=1e-7)
    assert popt[2] == pytest.approx(0.6)


def test_jit_and_vmap_over_data_sets():
    ys = np.stack([Y, Y * 1.1, Y + 0.2])

    def fit(y):
        popt, pcov, info, mesg, ier = curve_fit(model, X, y, p0=jnp.asarray(P0),
                                                full_output=True)
        assert mesg is None   # not known inside a trace: ier is an array there
        return popt, pcov, info["result"].success & (ier >= 1) & (ier <= 4)

    popts, pcovs, ok = jax.jit(jax.vmap(fit))(jnp.asarray(ys))
    assert bool(jnp.all(ok))
    for k in range(3):
        ref, ref_cov = scipy.optimize.curve_fit(model_np, X, ys[k], p0=P0, xtol=1e-14, ftol=1e-14)
        np.testing.assert_allclose(popts[k], ref, rtol=1e-8)
        np.testing.assert_allclose(pcovs[k], ref_cov, rtol=1e-6)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="ydata"):
        curve_fit(model, X, np.where(X > 1, np.nan, Y), p0=P0)
    with pytest.raises(ValueError, match="xdata"):
        curve_fit(model, np.where(X > 1, np.inf, X), Y, p0=P0)
    with pytest.raises(ValueError, match="shape"):
        curve_fit(model, X, Y[:-1], p0=P0)
    with pytest.raises(ValueError, match="p0 has 2 entries"):
        curve_fit(model, X, Y, p0=[1.0, 1.0])
    with pytest.raises(ValueError, match="sigma"):
        curve_fit(model, X, Y, p0=P0, sigma=np.ones(5))
    with pytest.raises(ValueError, match="sigma must be positive"):
        curve_fit(model, X, Y, p0=P0, sigma=np.zeros(X.size))
    with pytest.raises(ValueError, match="lower bound"):
        curve_fit(model, X, Y, p0=P0, bounds=([0, 0, 1], [1, 1, 0]))


def test_float32_fit_is_float32_and_right(tol):
    popt, pcov, info, _, _ = curve_fit(model, X.astype(np.float32), Y.astype(np.float32),
                                       p0=P0.astype(np.float32), full_output=True)
    res = info["result"]
    popt_ref, pcov_ref = scipy_fit()
    assert popt.dtype == jnp.float32 and bool(res.success), res.message
    np.testing.assert_allclose(popt, popt_ref, rtol=tol(jnp.float32))
    np.testing.assert_allclose(pcov, pcov_ref, rtol=10 * tol(jnp.float32))
