"""jaxinfer.scipy.differentiate / misc / fft / interpolate against scipy (seed 003)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.differentiate as sd
import scipy.fft as sf
import scipy.interpolate as si

from jaxinfer.scipy import differentiate, fft, misc
from jaxinfer.scipy.interpolate import interp1d


def test_derivative_matches_scipy_differentiate():
    x = np.array([0.3, 1.0, 2.5])
    ours = differentiate.derivative(lambda x, c: jnp.exp(c * x) * jnp.sin(x), x, args=(0.5,))
    ref = sd.derivative(lambda x, c: np.exp(c * x) * np.sin(x), x, args=(0.5,))
    np.testing.assert_allclose(np.asarray(ours.df), ref.df, rtol=1e-10)
    assert np.all(np.asarray(ours.success)) and np.all(np.asarray(ours.error) == 0)


def test_jacobian_and_hessian_match_scipy():
    x = np.array([[1.0, 2.0], [3.0, 0.5]])          # two points, one per column
    f = lambda x: jnp.stack([x[0] ** 2 * x[1], jnp.sin(x[0]) + x[1] ** 3])  # noqa: E731
    fn = lambda x: np.stack([x[0] ** 2 * x[1], np.sin(x[0]) + x[1] ** 3])  # noqa: E731
    np.testing.assert_allclose(np.asarray(differentiate.jacobian(f, x).df),
                               sd.jacobian(fn, x).df, rtol=1e-10)
    g = lambda x: x[0] ** 2 * x[1] + jnp.sin(x[1])  # noqa: E731
    gn = lambda x: x[0] ** 2 * x[1] + np.sin(x[1])  # noqa: E731
    np.testing.assert_allclose(np.asarray(differentiate.hessian(g, x).ddf),
                               sd.hessian(gn, x).ddf, rtol=1e-8, atol=1e-10)


def test_seed_partial_derivative_with_the_old_misc_shape():
    # the seed's pd() unchanged, with scipy.misc -> jaxinfer.scipy.misc
    def foo(x, y):
        return x ** 2 + y ** 3

    def pd(func, var=0, point=[]):
        args = point[:]

        def wraps(x):
            args[var] = x
            return func(*args)
        return misc.derivative(wraps, point[var], dx=1e-6)

    assert float(pd(foo, 0, [3.0, 1.0])) == pytest.approx(6.0, rel=1e-15)
    assert float(pd(foo, 1, [3.0, 1.0])) == pytest.approx(3.0, rel=1e-15)
    # second derivative, and the same through jax.grad of the result (third derivative)
    assert float(misc.derivative(jnp.sin, 1.0, n=2)) == pytest.approx(-np.sin(1.0), rel=1e-15)
    third = jax.grad(lambda x: misc.derivative(jnp.sin, x, n=2))(1.0)
    assert float(third) == pytest.approx(-np.cos(1.0), rel=1e-15)


def test_seed_fft2_and_fftfreq():
    img = np.random.default_rng(0).normal(size=(6, 8))
    np.testing.assert_allclose(np.asarray(fft.fft2(img)), sf.fft2(img), atol=1e-12)
    np.testing.assert_allclose(np.asarray(fft.ifft2(fft.fft2(img))).real, img, atol=1e-13)
    np.testing.assert_allclose(np.asarray(fft.fftfreq(img.shape[0], d=10)),
                               sf.fftfreq(6, d=10), rtol=1e-15)
    np.testing.assert_allclose(np.asarray(fft.fftshift(fft.fftfreq(8, d=10))),
                               sf.fftshift(sf.fftfreq(8, d=10)), rtol=1e-15)
    np.testing.assert_allclose(np.asarray(fft.rfft(img, axis=0)), sf.rfft(img, axis=0),
                               atol=1e-12)
    # differentiable: d/dimg sum |fft2(img)|² = 2 N img (Parseval)
    g = jax.grad(lambda a: jnp.sum(jnp.abs(fft.fft2(a)) ** 2))(img)
    np.testing.assert_allclose(np.asarray(g), 2 * img.size * img, rtol=1e-12)


X = np.sort(np.random.default_rng(1).uniform(0, 10, 9))


@pytest.mark.parametrize("kind", ["linear", "cubic", "nearest", "nearest-up", "previous",
                                  "next", "zero", "slinear"])
def test_interp1d_kinds_match_scipy(kind):
    y = np.sin(X)
    xn = np.linspace(X[0], X[-1], 41)
    np.testing.assert_allclose(np.asarray(interp1d(X, y, kind=kind)(xn)),
                               si.interp1d(X, y, kind=kind)(xn), rtol=1e-13, atol=1e-14)


def test_interp1d_axis_fill_extrapolate_unsorted():
    rng = np.random.default_rng(2)
    Y = rng.normal(size=(3, 9, 2))
    xo = np.linspace(-1, 11, 7).reshape(7, 1)
    for kind in ("linear", "cubic"):
        for opts in ({"fill_value": "extrapolate"},
                     {"bounds_error": False, "fill_value": (-1.0, 2.0)},
                     {"bounds_error": False}):
            ours = np.asarray(interp1d(X, Y, kind=kind, axis=1, **opts)(xo))
            ref = si.interp1d(X, Y, kind=kind, axis=1, **opts)(xo)
            assert ours.shape == ref.shape == (3, 7, 1, 2)
            np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-13)
    perm = rng.permutation(9)
    xn = np.linspace(X[0], X[-1], 13)
    np.testing.assert_allclose(np.asarray(interp1d(X[perm], np.cos(X[perm]), kind="cubic")(xn)),
                               si.interp1d(X, np.cos(X), kind="cubic")(xn), rtol=1e-12)


def test_interp1d_bounds_errors_and_gradients():
    f = interp1d(X, np.sin(X), kind="cubic")
    with pytest.raises(ValueError, match="above the interpolation range"):
        f(11.0)
    with pytest.raises(ValueError, match="below the interpolation range"):
        f(np.array([X[0] - 1, X[1]]))
    # inside a trace it cannot raise: NaN marks the out-of-range point
    out = jax.jit(lambda f, x: f(x))(f, jnp.array([X[1], 11.0]))  # the interpolant is a pytree
    assert np.isfinite(out[0]) and np.isnan(out[1])
    with pytest.raises(ValueError, match="at least 4 points"):
        interp1d(X[:3], X[:3], kind="cubic")
    with pytest.raises(NotImplementedError, match="quadratic"):
        interp1d(X, X, kind="quadratic")
    # derivative w.r.t. x_new: the spline's slope (central differences of scipy's spline)
    xq, h = 4.2, 1e-6
    ref = si.interp1d(X, np.sin(X), kind="cubic")
    g = jax.grad(f)(xq)
    assert float(g) == pytest.approx((ref(xq + h) - ref(xq - h)) / (2 * h), rel=1e-7)
    # derivative w.r.t. y: the cubic spline is linear in y, so grad is scipy's spline of e_i
    gy = jax.grad(lambda y: interp1d(X, y, kind="cubic")(xq))(jnp.sin(X))
    basis = [float(si.interp1d(X, np.eye(9)[i], kind="cubic")(xq)) for i in range(9)]
    np.testing.assert_allclose(np.asarray(gy), basis, rtol=1e-10, atol=1e-13)


def test_submodules_mirror_scipy_and_optimize_is_jaxinfer_optimize():
    import jaxinfer.optimize
    import jaxinfer.scipy as jsc

    assert jsc.optimize.minimize is jaxinfer.optimize.minimize
    assert jsc.optimize.curve_fit is jaxinfer.optimize.curve_fit
    assert jsc.integrate.quad is not None and jsc.stats.beta is not None
    with pytest.raises(AttributeError, match="linalg"):
        jsc.linalg
