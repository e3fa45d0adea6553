"""Bayes factors and D posterior against TRamWAy 0.7 outputs, scipy quad and closed forms."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate as si
from scipy import special

from jaxinfer.quadrature import integrate
from jaxinfer.spt.bayes_factors import (
    calculate_bayes_factors,
    bayes_factors_for_cells,
    calculate_minimal_n,
    get_D_confidence_interval,
    get_D_posterior,
    get_MAP_D,
    log10_bayes_factor,
)

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "periph_bayes.npz")


@pytest.fixture(scope="module")
def fx():
    return dict(np.load(FIX))


@pytest.fixture(scope="module")
def ours(fx):
    return calculate_bayes_factors(fx["zeta_t"], fx["zeta_sp"], fx["n"], fx["V"], fx["V_pi"],
                                   fx["loc_error"], dim=2, B_threshold=10)


def scipy_lg_b(zt, zs, n, V, Vp, s2, dim=2):
    """Reference straight from the formula, integrated by scipy.quad (independent code)."""
    npi, p = 5 - dim, dim * (n + 5 - dim - 1) / 2 - 1
    v, e2 = 1 + npi / n * Vp / V, npi / (n + npi)
    r = n * V / (4 * s2) if s2 > 0 else np.inf
    lam_star = np.clip(np.dot(zt, zs) / max(np.dot(zs, zs), 1e-300), 0, 1)

    def log_i(E):
        q = lambda l: v + E * np.sum((zt - l * zs) ** 2)  # noqa: E731
        ref = q(lam_star)
        f = lambda l: (q(l) / ref) ** (-p) * (special.gammainc(p, r * q(l)) if np.isfinite(r) else 1.0)  # noqa: E731
        pts = [lam_star] if 0 < lam_star < 1 else None
        return np.log(si.quad(f, 0, 1, points=pts, epsabs=0, epsrel=1e-13, limit=200)[0]) - p * np.log(ref)

    return (log_i(e2) - log_i(1.0)) / np.log(10) + dim * np.log10(np.sqrt(e2))


def test_lg_b_force_min_n_match_tramway(fx, ours):
    lg_b, force, min_n = map(np.asarray, ours)
    # tramway integrates with quad (epsrel 1e-6) and a series truncated at 1e-6 relative
    np.testing.assert_allclose(lg_b, fx["lg_B"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(force, fx["force"])
    # tramway stops brentq within 1 + 1e-3 n of the root; ours is the exact integer
    assert np.all(np.abs(min_n - fx["min_n"]) <= 1 + 1e-3 * fx["min_n"])


def test_min_n_definition(fx, ours):
    """min_n is n0 when evidence is already strong, else the first integer reaching it."""
    lg_b, _, min_n = map(np.asarray, ours)
    thr = 1.0
    for i in range(len(lg_b)):
        if abs(lg_b[i]) >= thr:
            assert min_n[i] == fx["n"][i]
            continue
        m = min_n[i]
        args = (fx["zeta_t"][i], fx["zeta_sp"][i])
        rest = (fx["V"][i], fx["V_pi"][i], fx["loc_error"][i])
        at_m = scipy_lg_b(*args, m, *rest)
        before = scipy_lg_b(*args, m - 1, *rest)
        assert abs(at_m) >= thr and abs(before) < thr, (i, m, at_m, before)


@pytest.mark.parametrize("case", [
    ([0.3, -0.2], [0.5, 0.1], 40, 0.02, 0.03, 0.0),
    ([0.3, -0.2], [0.5, 0.1], 40, 0.02, 0.03, 0.004),  # strong localization error
    ([0.05, 0.02], [0.3, 0.12], 5000, 0.02, 0.02, 0.0004),  # narrow peak in lambda
    ([0.2, 0.1], [0.0, 0.0], 30, 0.02, 0.02, 0.0004),  # no spurious force
    ([-0.4, 0.3], [0.2, 0.2], 7, 0.05, 0.01, 0.0009),  # peak outside [0, 1]
])
def test_lg_b_vs_scipy_quad(case):
    zt, zs, n, V, Vp, s2 = case
    ours = log10_bayes_factor(np.array(zt), np.array(zs), n, V, Vp, s2)
    np.testing.assert_allclose(ours, scipy_lg_b(np.array(zt), np.array(zs), n, V, Vp, s2),
                               rtol=0, atol=1e-10)


def test_zero_noise_closed_form_incomplete_beta():
    """σ² = 0: ∫_0^1 (a + b(λ−λ*)²)^{−p} dλ in closed form (Student-t CDF / incomplete beta)."""
    zt, zs, n, V, Vp = np.array([0.25, -0.1]), np.array([0.4, 0.3]), 60.0, 0.02, 0.025
    npi, p = 3, 2 * (n + 3 - 1) / 2 - 1
    v, e2 = 1 + npi / n * Vp / V, npi / (n + npi)
    ls = np.dot(zt, zs) / np.dot(zs, zs)

    def log_i(E):
        a = v + E * np.sum((zt - ls * zs) ** 2)
        b = E * np.dot(zs, zs)
        k = np.sqrt(b / a)

        def prim(u):  # ∫_0^u (1+x²)^{-p} dx, u >= 0
            return 0.5 * special.beta(0.5, p - 0.5) * special.betainc(0.5, p - 0.5, u * u / (1 + u * u))

        total = (np.sign(1 - ls) * prim(k * abs(1 - ls)) + np.sign(ls) * prim(k * abs(ls))) / k
        return np.log(total) - p * np.log(a)

    expected = (log_i(e2) - log_i(1.0)) / np.log(10) + np.log10(e2)
    np.testing.assert_allclose(log10_bayes_factor(zt, zs, n, V, Vp, 0.0), expected, atol=1e-11)


def test_grad_and_vmap(fx, ours, tol):
    f = jax.jit(lambda z: log10_bayes_factor(z, fx["zeta_sp"][4], fx["n"][4], fx["V"][4],
                                             fx["V_pi"][4], fx["loc_error"][4]))
    z0 = jnp.asarray(fx["zeta_t"][4])  # (cell 2 sits at the stationary point zeta_sp/2)
    g = jax.grad(f)(z0)
    h = 1e-6
    fd = [(f(z0.at[k].add(h)) - f(z0.at[k].add(-h))) / (2 * h) for k in range(2)]
    np.testing.assert_allclose(g, fd, rtol=1e-6)
    # the batched call equals a single-cell call
    np.testing.assert_allclose(f(z0), np.asarray(ours[0])[4], rtol=1e-13)
    # float32 runs and agrees to float32 accuracy
    lg32 = log10_bayes_factor(fx["zeta_t"].astype(np.float32), fx["zeta_sp"].astype(np.float32),
                              fx["n"].astype(np.float32), fx["V"].astype(np.float32),
                              fx["V_pi"].astype(np.float32), fx["loc_error"].astype(np.float32))
    assert lg32.dtype == jnp.float32
    np.testing.assert_allclose(lg32, fx["lg_B"], rtol=0, atol=1e-3)


def test_min_n_not_found_is_nan(fx):
    # zero SNR: lg B = dim log10(eta) -> log10(3/n) only reaches -11.3 by n0 + 2^39, so a
    # threshold of 1e15 is never met (same shapes as the fixture: no recompilation)
    zeros = np.zeros_like(fx["zeta_t"])
    out = calculate_minimal_n(zeros, zeros, fx["n"], fx["V"], fx["V_pi"], fx["loc_error"],
                              B_threshold=1e15)
    assert np.all(np.isnan(out))
    # and a reachable threshold gives the closed-form answer: log10(3/(n+3)) <= -3
    out = calculate_minimal_n(zeros, zeros, fx["n"], fx["V"], fx["V_pi"], fx["loc_error"],
                              B_threshold=1e3)
    np.testing.assert_array_equal(out, np.full(len(out), 2997.0))


def test_errors(fx):
    with pytest.raises(ValueError, match=r"shape \(M, dim=2\)"):
        calculate_bayes_factors(fx["zeta_t"][:, :1], fx["zeta_sp"], fx["n"], fx["V"],
                                fx["V_pi"], 0.0)
    with pytest.raises(ValueError, match="dim=3"):
        get_D_posterior(10, [0.1, 0.2], 0.02, 0.02, 0.05, 0.0, 3)


def test_D_posterior_matches_tramway_and_normalises(fx):
    for i, row in enumerate(fx["post_params"]):
        dim = int(row[0])
        n, V, Vp, dt, s2 = row[1:6]
        z = row[6:6 + dim]
        post = get_D_posterior(n, z, V, Vp, dt, s2, dim)
        D = fx["post_D"][i]
        ok = np.isfinite(D)
        np.testing.assert_allclose(post(D[ok]), fx["post_values"][i][ok], rtol=1e-10)
        np.testing.assert_allclose(get_MAP_D(n, z, V, Vp, dt, s2, dim), fx["post_map"][i], rtol=1e-12)
        m, ci = get_D_confidence_interval(0.95, n, z, V, Vp, dt, s2, dim)
        np.testing.assert_allclose(m, fx["post_map"][i], rtol=1e-12)
        np.testing.assert_allclose(ci, fx["post_ci"][i], rtol=1e-9)
        # the density integrates to 1, and to 0.025 below the lower bound
        lo = s2 / dt
        # (our quadrature is checked against closed forms in tests/test_quadrature.py)
        mass = integrate(post, lo, float(ci[0]), n=80) + integrate(post, float(ci[0]), np.inf, n=200)
        np.testing.assert_allclose(mass, 1.0, rtol=1e-8)
        tail = integrate(post, lo, float(ci[0]), n=80)
        np.testing.assert_allclose(tail, 0.025, rtol=1e-6)


def test_bayes_factors_for_cells_matches_snr_formulas():
    """Per-cell front end = TRamWAy's SNR extensions (checked on the d.conj_prior fixture
    statistics) fed to log10_bayes_factor."""
    f = np.load(os.path.join(os.path.dirname(__file__), "fixtures", "periph_conj_prior.npz"))
    cells = f["cell_id"]
    ncells, max_n = cells.max() + 1, np.bincount(cells).max()
    dr = np.zeros((ncells, max_n, 2))
    mask = np.zeros((ncells, max_n), bool)
    for c in range(ncells):
        rows = np.flatnonzero(cells == c)
        dr[c, :rows.size] = f["dr"][rows]
        mask[c, :rows.size] = True
    grad_d = np.random.default_rng(2).normal(scale=0.5, size=(ncells, 2))
    grad_d[3] = np.nan
    out = bayes_factors_for_cells(dr, np.full(dr.shape[:2], 0.05), mask, grad_d, sigma=0.02,
                                  minimal_n=False)
    V = f["s002_a95_V"]
    zt = np.stack([f["s002_a95_zeta_total_x"], f["s002_a95_zeta_total_y"]], axis=1)
    np.testing.assert_allclose(out["zeta_total"], zt, rtol=1e-10)
    zs = grad_d * 0.05 / np.sqrt(V)[:, None]
    np.testing.assert_allclose(out["zeta_spurious"], zs, rtol=1e-12)
    ok = np.isfinite(zs).all(axis=1)
    ref = [scipy_lg_b(zt[i], zs[i], f["s002_a95_n"][i], V[i], f["s002_a95_V_prior"][i], 0.0004)
           for i in np.flatnonzero(ok)[:4]]
    np.testing.assert_allclose(np.asarray(out["lg_B"])[np.flatnonzero(ok)[:4]], ref, atol=1e-10)
    assert np.isnan(out["lg_B"][3]) and int(out["force"][3]) == 0
