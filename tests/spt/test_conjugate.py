"""Conjugate-prior diffusivity against TRamWAy 0.7 outputs and scipy closed forms."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import special, stats

from jaxinfer.spt.conjugate import (
    d_conj_prior,
    d_conj_prior_from_statistics,
    d_conj_prior_table,
    gammainc_inverse,
    jump_statistics,
)

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "periph_conj_prior.npz")
CASES = (("s002_a95", dict(sigma=0.02, alpha=0.95)),
         ("s0_a95", dict(sigma2=0.0, alpha=0.95)),
         ("s002_a68", dict(sigma=0.02, alpha=0.68)))


@pytest.fixture(scope="module")
def fixture():
    f = np.load(FIX)
    tr = pd.DataFrame({"dx": f["dr"][:, 0], "dy": f["dr"][:, 1], "dt": f["dt"]})
    return f, tr


@pytest.mark.parametrize("tag,kw", CASES)
def test_matches_tramway_d_conj_prior(fixture, tag, kw):
    f, tr = fixture
    table = d_conj_prior_table(tr, f["cell_id"], **kw)
    np.testing.assert_array_equal(table.index.values, f[f"{tag}_index"])
    for col in ("n", "V", "V_prior", "zeta_total x", "zeta_total y", "diffusivity"):
        np.testing.assert_allclose(table[col].values, f[f"{tag}_{col.replace(' ', '_')}"],
                                   rtol=1e-10, err_msg=col)
    # tramway brackets the interval with brentq (xtol 2e-12): agreement to ~1e-11
    for col in ("ci low", "ci high"):
        np.testing.assert_allclose(table[col].values, f[f"{tag}_{col.replace(' ', '_')}"],
                                   rtol=1e-9, err_msg=col)


def test_interval_is_truncated_inverse_gamma_quantile(fixture):
    """Independent check with scipy: CDF of the truncated inverse gamma at the bounds."""
    f, tr = fixture
    sigma2, alpha, dt = 0.02 ** 2, 0.9, 0.05
    table = d_conj_prior_table(tr, f["cell_id"], sigma2=sigma2, alpha=alpha)
    n = table["n"].values.astype(float)
    V, Vp = table["V"].values, table["V_prior"].values
    z2 = table["zeta_total x"].values ** 2 + table["zeta_total y"].values ** 2
    p = 2 * (n + 3 - 1) / 2 - 1
    beta = n * V * (1 + 3 / n * Vp / V + 3 / (n + 3) * z2) / (4 * dt)
    law = stats.invgamma(p, scale=beta)
    lower = law.cdf(sigma2 / dt)
    cdf = lambda d: (law.cdf(d) - lower) / (1 - lower)  # noqa: E731
    np.testing.assert_allclose(cdf(table["ci low"].values), (1 - alpha) / 2, rtol=1e-9)
    np.testing.assert_allclose(cdf(table["ci high"].values), (1 + alpha) / 2, rtol=1e-9)
    # the mode of the inverse gamma is beta / (p + 1)
    np.testing.assert_allclose(table["diffusivity"].values, beta / (p + 1), rtol=1e-12)


def test_gammainc_inverse_vs_scipy_and_grad():
    a = np.array([0.5, 1.0, 3.0, 20.0, 150.0, 2000.0])
    t = np.array([1e-8, 0.025, 0.4, 0.6, 0.975, 1 - 1e-6])
    A, T = np.meshgrid(a, t)
    y = gammainc_inverse(A, T)
    np.testing.assert_allclose(y, special.gammaincinv(A, T), rtol=1e-10)
    g_t = jax.grad(lambda tt: gammainc_inverse(20.0, tt))(0.3)
    g_a = jax.grad(lambda aa: gammainc_inverse(aa, 0.3))(20.0)
    h = 1e-6
    np.testing.assert_allclose(g_t, (special.gammaincinv(20, 0.3 + h)
                                     - special.gammaincinv(20, 0.3 - h)) / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(g_a, (special.gammaincinv(20 + h, 0.3)
                                     - special.gammaincinv(20 - h, 0.3)) / (2 * h), rtol=1e-6)


def _padded(fixture):
    f, tr = fixture
    cells = f["cell_id"]
    ncells, max_n = cells.max() + 1, np.bincount(cells).max()
    dr = np.zeros((ncells, max_n, 2))
    dt = np.full((ncells, max_n), 0.05)
    mask = np.zeros((ncells, max_n), bool)
    for c in range(ncells):
        rows = np.flatnonzero(cells == c)
        dr[c, :rows.size] = f["dr"][rows]
        mask[c, :rows.size] = True
    return dr, dt, mask


def test_jit_vmap_grad_float32(fixture, tol):
    dr, dt, mask = _padded(fixture)
    ref = d_conj_prior(dr, dt, mask, sigma=0.02)
    # one program with a traced scale of the jumps and a traced sigma2
    both = jax.jit(lambda c, s: d_conj_prior(c * dr, dt, mask, sigma2=s))
    jitted = both(1.0, 0.0004)  # (XLA fuses c * dr into the sums: rounding ~5e-12)
    for k in ("diffusivity", "ci_low", "ci_high"):
        np.testing.assert_allclose(jitted[k], ref[k], rtol=1e-10)
    # vmap over a batch of data sets equals a loop
    batch = np.stack([dr, 1.5 * dr])
    out = jax.vmap(lambda a: d_conj_prior(a, dt, mask, sigma=0.02)["diffusivity"])(batch)
    np.testing.assert_allclose(out[1], d_conj_prior(1.5 * dr, dt, mask, sigma=0.02)["diffusivity"],
                               rtol=1e-12)
    # grad of the total CI bounds + MAP w.r.t. the scale and sigma2 vs central differences
    # (sigma = 0.06: the truncation at sigma2/dt matters, so both paths carry derivatives;
    # sigma2 enters the bounds through the implicit derivatives of the gamma inverse)
    def total(c, s):
        out = d_conj_prior(c * dr, dt, mask, sigma2=s)
        return jnp.nansum(out["ci_low"]) + jnp.nansum(out["ci_high"] + out["diffusivity"])

    host_total = lambda c, s: sum(float(np.nansum(v)) for k, v in both(c, s).items()  # noqa: E731
                                  if k in ("ci_low", "ci_high", "diffusivity"))
    g_c, g_s = jax.jit(jax.grad(total, argnums=(0, 1)))(1.0, 0.0036)
    h = 1e-6
    np.testing.assert_allclose(g_c, (host_total(1.0 + h, 0.0036) - host_total(1.0 - h, 0.0036))
                               / (2 * h), rtol=1e-6)
    h = 1e-7
    np.testing.assert_allclose(g_s, (host_total(1.0, 0.0036 + h) - host_total(1.0, 0.0036 - h))
                               / (2 * h), rtol=1e-5)
    # float32
    out32 = d_conj_prior(dr.astype(np.float32), dt.astype(np.float32), mask, sigma=0.02)
    assert out32["diffusivity"].dtype == jnp.float32
    np.testing.assert_allclose(out32["ci_high"], ref["ci_high"], rtol=tol(jnp.float32, rtol32=1e-3))


def test_localization_correction(fixture):
    dr, dt, mask = _padded(fixture)
    plain = d_conj_prior(dr, dt, mask, sigma=0.05)
    corrected = d_conj_prior(dr, dt, mask, sigma=0.05, localization_correction=True)
    shift = 0.05 ** 2 / 0.05
    np.testing.assert_allclose(corrected["ci_low"], plain["ci_low"] - shift, rtol=1e-12)
    expected = np.maximum(plain["diffusivity"], shift) - shift
    np.testing.assert_allclose(corrected["diffusivity"], expected, rtol=1e-12, atol=1e-15)
    assert np.all(np.asarray(corrected["diffusivity"])[np.isfinite(corrected["diffusivity"])] >= 0)


def test_simulated_truth_recovered():
    """Pure Brownian motion, no noise: the MAP is within its CI and near the truth."""
    rng = np.random.default_rng(0)
    D, dt = 0.3, 0.02
    dr = rng.normal(scale=np.sqrt(2 * D * dt), size=(40, 400, 2))
    out = d_conj_prior(dr, np.full((40, 400), dt), np.ones((40, 400), bool), sigma2=0.0)
    inside = (out["ci_low"] <= D) & (D <= out["ci_high"])
    assert 0.8 <= float(np.mean(inside)) <= 1.0  # nominal 95 %
    np.testing.assert_allclose(np.mean(out["diffusivity"]), D, rtol=0.03)


def test_errors(fixture):
    dr, dt, mask = _padded(fixture)
    with pytest.raises(ValueError, match="undefined localization error"):
        d_conj_prior(dr, dt, mask)
    with pytest.raises(ValueError, match="either sigma or sigma2"):
        d_conj_prior(dr, dt, mask, sigma=0.1, sigma2=0.01)
    bad = dt.copy()
    bad[0, 0] = 0.06
    with pytest.raises(ValueError, match="identical time steps"):
        d_conj_prior(dr, bad, mask, sigma=0.02)
    with pytest.raises(ValueError, match=r"shape \[ncells, max_n, dim\]"):
        d_conj_prior(dr[0], dt, mask, sigma=0.02)
    f, tr = fixture
    with pytest.raises(ValueError, match="one entry per translocation"):
        d_conj_prior_table(tr, f["cell_id"][:-1], sigma=0.02)


def test_statistics_single_jump_cells_are_nan():
    dr = np.zeros((3, 4, 2))
    dr[0, :4] = [[0.1, 0], [0, 0.1], [-0.1, 0], [0, -0.2]]
    dr[1, 0] = [0.3, 0.1]
    mask = np.zeros((3, 4), bool)
    mask[0] = True
    mask[1, 0] = True
    s = jump_statistics(dr, mask)
    assert np.isnan(s["V"][1]) and np.isnan(s["V"][2])
    np.testing.assert_allclose(s["V"][0], np.var(dr[0, :, 0]) + np.var(dr[0, :, 1]))
    pooled = np.concatenate([dr[1, :1]])  # cell 0's "others": the single jump of cell 1
    np.testing.assert_allclose(s["n"], [4, 1, 0])
    assert np.isnan(s["V_prior"][0])  # one other jump only: undefined variance
    np.testing.assert_allclose(s["V_prior"][2], np.var(np.concatenate([dr[0], pooled]), axis=0).sum())
    out = d_conj_prior_from_statistics(s["n"], s["zeta_total"], s["V"], s["V_prior"], 0.05, 0.0)
    assert np.all(np.isnan(out["diffusivity"][1:]))
