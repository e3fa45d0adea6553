"""jaxinfer.scipy.stats against scipy.stats (seed 003's stats examples)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats as ss

from jaxinfer.scipy import stats as js


def test_seed_proportion_exact_and_approximate():
    p, n, alpha = 0.2, 1_000, 0.95
    sig = (1 - alpha) / 2
    k = int(p * n)
    low, high = js.binomtest(k, n, p).proportion_ci(confidence_level=alpha, method="exact")
    ref = ss.binomtest(k, n, p).proportion_ci(confidence_level=alpha, method="exact")
    assert float(low) == pytest.approx(ref.low, rel=1e-12)
    assert float(high) == pytest.approx(ref.high, rel=1e-12)
    dist = js.binom(n, p)
    rd = ss.binom(n, p)
    assert float(dist.ppf(sig)) / n == rd.ppf(sig) / n
    assert float(dist.ppf(1 - sig)) / n == rd.ppf(1 - sig) / n


def test_binom_pmf_cdf_sf_ppf_stats():
    n, p = 30, 0.3
    k = np.arange(-1, 32)
    for name in ("pmf", "cdf", "sf"):
        np.testing.assert_allclose(np.asarray(getattr(js.binom, name)(k, n, p)),
                                   getattr(ss.binom, name)(k, n, p), rtol=1e-12, atol=1e-300)
    q = np.linspace(0, 1, 101)
    np.testing.assert_array_equal(np.asarray(js.binom.ppf(q, n, p)), ss.binom.ppf(q, n, p))
    np.testing.assert_allclose(np.asarray(js.binom.stats(n, p, moments="mvsk")),
                               ss.binom.stats(n, p, moments="mvsk"), rtol=1e-14)
    draws = js.binom.rvs(n, p, size=2000, random_state=0)
    assert draws.shape == (2000,)
    assert abs(float(jnp.mean(draws)) - n * p) < 4 * np.sqrt(n * p * (1 - p) / 2000)


def test_binomtest_pvalues_and_ci_methods_match_scipy():
    cases = [(1000, 0.2), (10, 0.35), (20, 0.5), (7, 0.9)]
    for alternative in ("two-sided", "less", "greater"):
        # one compiled program per alternative: the same number of k for every (n, p)
        pvalues = jax.jit(jax.vmap(lambda k, n, p: js.binomtest(k, n, p, alternative).pvalue,
                                   in_axes=(0, None, None)))
        for n, p in cases:
            ks = np.round(np.linspace(0, n, 8))
            ours = pvalues(ks, float(n), p)
            ref = [ss.binomtest(int(k), n, p, alternative=alternative).pvalue for k in ks]
            np.testing.assert_allclose(np.asarray(ours), ref, rtol=1e-10, atol=1e-300)
    for method in ("exact", "wilson", "wilsoncc"):
        for alternative in ("two-sided", "less", "greater"):
            for k in (0, 3, 200, 1000):
                ours = js.binomtest(k, 1000, 0.2, alternative).proportion_ci(0.9, method)
                ref = ss.binomtest(k, 1000, 0.2, alternative=alternative).proportion_ci(0.9, method)
                # 5e-11: scipy's own high end at k = 0 (1 - 0.05**(1/1000) exactly: ours is
                # within 2e-14 of it, scipy 5e-11 off); 1e-14 elsewhere
                np.testing.assert_allclose(np.asarray(ours), [ref.low, ref.high], rtol=1e-10,
                                           atol=1e-14)
    with pytest.raises(ValueError, match="method"):
        js.binomtest(3, 10).proportion_ci(method="agresti")


def test_exact_ci_is_differentiable_in_the_confidence_level():
    # high = beta.ppf((1 + c)/2, k + 1, n - k): d high / dc = 1 / (2 beta.pdf(high))
    k, n, c = 200, 1000, 0.95
    g = jax.grad(lambda c: js.binomtest(k, n).proportion_ci(c).high)(c)
    high = ss.beta.ppf((1 + c) / 2, k + 1, n - k)
    assert float(g) == pytest.approx(0.5 / ss.beta.pdf(high, k + 1, n - k), rel=1e-9)


def test_seed_beta_moments_quantiles_and_samples():
    a, b = 2.5, 3.1
    mean, var, skew, kurt = js.beta.stats(a, b, moments="mvsk")
    np.testing.assert_allclose([mean, var, skew, kurt], ss.beta.stats(a, b, moments="mvsk"),
                               rtol=1e-14)
    x = np.array([0.0, 0.05, 0.3, 0.7, 0.99, 1.0, 1.2])
    for name in ("pdf", "cdf", "sf", "logpdf"):
        np.testing.assert_allclose(np.asarray(getattr(js.beta, name)(x, a, b)),
                                   getattr(ss.beta, name)(x, a, b), rtol=1e-12, atol=1e-15)
    q = np.array([0.0, 1e-10, 0.025, 0.5, 0.975, 1 - 1e-10, 1.0])
    for shapes in ((a, b), (0.3, 0.5)):
        np.testing.assert_allclose(np.asarray(js.beta.ppf(q, *shapes)), ss.beta.ppf(q, *shapes),
                                   rtol=1e-9)
    frozen = js.beta(a, b, loc=1.0, scale=2.0)
    rf = ss.beta(a, b, loc=1.0, scale=2.0)
    # same q shape as above: the compiled ppf is reused
    np.testing.assert_allclose(np.asarray(frozen.ppf(q)), rf.ppf(q), rtol=1e-9)
    assert float(frozen.pdf(1.6)) == pytest.approx(rf.pdf(1.6), rel=1e-13)
    assert float(frozen.mean()) == pytest.approx(rf.mean(), rel=1e-14)
    assert np.isnan(float(js.beta.pdf(0.3, -1.0, b)))          # invalid shape -> NaN, as scipy
    draws = js.beta.rvs(a, b, size=1000, random_state=1)
    assert draws.shape == (1000,)
    assert ss.kstest(np.asarray(draws), ss.beta(a, b).cdf).pvalue > 1e-3
    again = js.beta.rvs(a, b, size=1000, key=jax.random.key(1))
    np.testing.assert_array_equal(np.asarray(draws), np.asarray(again))


@pytest.mark.parametrize("a", [5.0, -5.0])
def test_seed_skewnorm_moments_and_samples(a):
    mean, var, skew, kurt = js.skewnorm.stats(a, moments="mvsk")
    np.testing.assert_allclose([mean, var, skew, kurt], ss.skewnorm.stats(a, moments="mvsk"),
                               rtol=1e-13)
    generated_values = js.skewnorm.rvs(a, size=1000, random_state=2)
    assert ss.kstest(np.asarray(generated_values), ss.skewnorm(a).cdf).pvalue > 1e-3


def test_skewnorm_cdf_ppf_and_gradient():
    a = 5.0
    x = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(np.asarray(js.skewnorm.cdf(x, a)), ss.skewnorm.cdf(x, a),
                               rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(np.asarray(js.skewnorm.pdf(x, a)), ss.skewnorm.pdf(x, a),
                               rtol=1e-12, atol=1e-16)
    q = np.array([0.01, 0.3, 0.5, 0.9, 0.999])
    np.testing.assert_allclose(np.asarray(js.skewnorm.ppf(q, a)), ss.skewnorm.ppf(q, a),
                               rtol=1e-11)
    # implicit derivative of the quantile in the shape against central differences of scipy
    g = jax.grad(lambda a: js.skewnorm.ppf(0.3, a))(a)
    h = 1e-5
    fd = (ss.skewnorm.ppf(0.3, a + h) - ss.skewnorm.ppf(0.3, a - h)) / (2 * h)
    assert float(g) == pytest.approx(fd, rel=1e-6)


class _Weibull(js.rv_continuous):
    """A custom distribution from its pdf only (Weibull, so scipy has the exact answer)."""

    def _pdf(self, x, c):
        return c * x ** (c - 1) * jnp.exp(-x ** c)


def test_seed_custom_continuous_distribution_from_its_pdf():
    c = 1.5
    ours = _Weibull(a=0, name="my_weibull")
    exact = ss.weibull_min(c)
    x = np.array([0.1, 0.7, 1.5, 3.0])
    np.testing.assert_allclose(np.asarray(ours.cdf(x, c)), exact.cdf(x), rtol=1e-13)
    q = np.linspace(0.01, 0.99, 50)   # the shape rvs uses below: one compiled ppf for both
    np.testing.assert_allclose(np.asarray(ours.ppf(q, c)), exact.ppf(q), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(ours.stats(c, moments="mvsk")),
                               exact.stats(moments="mvsk"), rtol=1e-11)
    # scipy's own generic machinery on the same pdf agrees too (to its quad tolerance)
    class ScipyWeibull(ss.rv_continuous):
        def _pdf(self, x, c):
            return c * x ** (c - 1) * np.exp(-x ** c)
    np.testing.assert_allclose(np.asarray(ours.cdf(x, c)), ScipyWeibull(a=0).cdf(x, c),
                               rtol=1e-10)
    draws = ours.rvs(c, size=q.shape, random_state=3)
    assert ss.kstest(np.asarray(draws), exact.cdf).pvalue > 1e-3


def test_custom_distribution_without_shapes_on_a_finite_support():
    class SinDist(js.rv_continuous):
        def _pdf(self, x):
            return jnp.sin(x) / 2

    d = SinDist(a=0, b=np.pi)
    assert float(d.cdf(1.0)) == pytest.approx((1 - np.cos(1.0)) / 2, rel=1e-14)
    assert float(d.ppf(0.3)) == pytest.approx(np.arccos(1 - 0.6), rel=1e-13)
    mean, var = d.stats()
    assert float(mean) == pytest.approx(np.pi / 2, rel=1e-14)
    assert float(var) == pytest.approx(np.pi ** 2 / 4 - 2, rel=1e-12)
    with pytest.raises(TypeError, match="shapes"):
        class Star(js.rv_continuous):
            def _pdf(self, x, *args):
                return x
        Star(a=0, b=1)
