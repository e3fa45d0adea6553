"""jaxinfer.quadrature against closed forms and scipy.integrate.quad, with jit / vmap / grad."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate as si

from jaxinfer.quadrature import (
    gauss_hermite,
    integrate,
    log_integrate,
    log_integrate_peaked,
    tanh_sinh,
)


def test_finite_closed_forms():
    np.testing.assert_allclose(integrate(lambda x: x ** 7, 0.0, 2.0, n=4), 2.0 ** 8 / 8, rtol=1e-13)
    np.testing.assert_allclose(integrate(jnp.sin, 0.0, np.pi, n=20), 2.0, rtol=1e-13)
    # kink at 0.3: composite rule with the break point is exact for the piecewise polynomial
    f = lambda x: jnp.abs(x - 0.3) ** 3  # noqa: E731
    exact = (0.3 ** 4 + 0.7 ** 4) / 4
    np.testing.assert_allclose(integrate(f, 0.0, 1.0, n=3, points=(0.3,)), exact, rtol=1e-13)


@pytest.mark.parametrize("rule,n", [("gauss-legendre", 200), ("tanh-sinh", 201)])
def test_infinite_limits(rule, n):
    np.testing.assert_allclose(integrate(lambda x: jnp.exp(-x), 0.0, np.inf, n=n, rule=rule),
                               1.0, rtol=1e-10)
    np.testing.assert_allclose(integrate(lambda x: jnp.exp(x), -np.inf, 0.5, n=n, rule=rule),
                               np.exp(0.5), rtol=1e-10)
    np.testing.assert_allclose(integrate(lambda x: 1 / (1 + x * x), -np.inf, np.inf, n=n, rule=rule),
                               np.pi, rtol=1e-8)
    np.testing.assert_allclose(
        integrate(lambda x: jnp.exp(-0.5 * x * x), -np.inf, np.inf, n=n, rule=rule),
        np.sqrt(2 * np.pi), rtol=1e-10)


def test_tanh_sinh_endpoint_singularity_and_hermite():
    # 1/sqrt(x) on (0, 1]: Gauss-Legendre converges slowly, tanh-sinh does not care
    val = integrate(lambda x: 1 / jnp.sqrt(x), 0.0, 1.0, n=81, rule="tanh-sinh")
    np.testing.assert_allclose(val, 2.0, rtol=1e-10)
    x, w = gauss_hermite(30)
    np.testing.assert_allclose(jnp.sum(w * jnp.cos(x)), np.sqrt(np.pi) * np.exp(-0.25), rtol=1e-13)
    with pytest.raises(ValueError, match="odd"):
        tanh_sinh(10)
    with pytest.raises(ValueError, match="positive int"):
        integrate(jnp.sin, 0.0, 1.0, n=0)


def test_log_integrate_no_overflow():
    # ∫_0^1 exp(-1000 + 3x) = e^-1000 (e^3 - 1)/3 : underflows in plain arithmetic
    val = log_integrate(lambda x: -1000.0 + 3.0 * x, 0.0, 1.0, n=30)
    np.testing.assert_allclose(val, -1000.0 + np.log((np.exp(3.0) - 1) / 3), rtol=1e-14)
    # composite in log space, against scipy
    ref = si.quad(lambda x: np.exp(-5 * abs(x - 0.4)), 0, 1, points=[0.4], epsabs=0, epsrel=1e-13)[0]
    val = log_integrate(lambda x: -5 * jnp.abs(x - 0.4), 0.0, 1.0, n=30, points=(0.4,))
    np.testing.assert_allclose(val, np.log(ref), rtol=1e-13)


@pytest.mark.parametrize("p,center", [(3.0, 0.5), (400.0, 0.27), (5000.0, 1.4), (20.0, -0.3)])
def test_peaked_vs_scipy(p, center):
    # (a + b (x - c)^2)^(-p): the Bayes-factor integrand shape; narrow for large p
    a_, b_ = 1.3, 2.0
    log_f = lambda x: -p * jnp.log(a_ + b_ * (x - center) ** 2)  # noqa: E731
    width = np.sqrt(a_ / (b_ * p))
    val = log_integrate_peaked(log_f, 0.0, 1.0, center, width, n=48)
    c = min(max(center, 0.0), 1.0)
    scale = -p * np.log(a_ + b_ * (c - center) ** 2)
    ref = si.quad(lambda x: np.exp(-p * np.log(a_ + b_ * (x - center) ** 2) - scale), 0, 1,
                  points=[c] if 0 < c < 1 else None, epsabs=0, epsrel=1e-13, limit=200)[0]
    np.testing.assert_allclose(val, np.log(ref) + scale, rtol=1e-12)


def test_jit_vmap_grad():
    @jax.jit
    def gauss_mass(mu, sigma, b):
        return integrate(lambda x: jnp.exp(-0.5 * ((x - mu) / sigma) ** 2), 0.0, b, n=40)

    mu, sigma, b = 0.4, 0.7, 1.5
    g = jax.grad(gauss_mass, argnums=(0, 1, 2))(mu, sigma, b)
    # closed forms: d/db = f(b); d/dmu = f(0) - f(b) ; d/dsigma by central differences
    f = lambda x: np.exp(-0.5 * ((x - mu) / sigma) ** 2)  # noqa: E731
    np.testing.assert_allclose(g[2], f(b), rtol=1e-12)
    np.testing.assert_allclose(g[0], f(0.0) - f(b), rtol=1e-12)
    h = 1e-6
    fd = (gauss_mass(mu, sigma + h, b) - gauss_mass(mu, sigma - h, b)) / (2 * h)
    np.testing.assert_allclose(g[1], fd, rtol=1e-7)
    mus = jnp.linspace(-1, 1, 5)
    batched = jax.jit(jax.vmap(lambda m: gauss_mass(m, sigma, b)))(mus)
    np.testing.assert_allclose(batched[3], gauss_mass(float(mus[3]), sigma, b), rtol=1e-13)
    # grad through the peaked log-integral w.r.t. the peak position, vs finite differences
    lp = jax.jit(lambda c: log_integrate_peaked(lambda x: -50 * jnp.log(1 + (x - c) ** 2), 0.0, 1.0, c, 0.1))
    fd = (lp(0.3 + 1e-6) - lp(0.3 - 1e-6)) / 2e-6
    np.testing.assert_allclose(jax.grad(lp)(0.3), fd, rtol=1e-6)


def test_float32():
    val = integrate(jnp.sin, jnp.float32(0.0), jnp.float32(np.pi), n=20)
    assert val.dtype == jnp.float32
    np.testing.assert_allclose(val, 2.0, rtol=1e-6)
