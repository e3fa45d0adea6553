"""Bayes factors for active vs spurious forces, and the diffusivity posterior (TRamWAy's
``tramway.inference.bayes_factors``, Serov et al.), in JAX.

Per cell, with ``n`` jumps, biased jump variance ``V`` (summed over dims), the variance of all
other cells ``V_π``, signal-to-noise ratios ``ζ_t = mean(Δr)/√V`` (total force) and
``ζ_sp = ∇D Δt/√V`` (spurious force), and ``σ²`` the localization variance:

    n_π = 5 − dim,  p = dim (n + n_π − 1)/2 − 1,  v = 1 + (n_π/n) V_π/V,  η² = n_π/(n + n_π),
    r = n V / (4 σ²)  (r = ∞ when σ² = 0),
    I(E) = ∫_0^1 q_E(λ)^{−p} P(p, r q_E(λ)) dλ,   q_E(λ) = v + E ‖ζ_t − λ ζ_sp‖²,
    log10 B = log10 I(η²) − log10 I(1) + dim log10 η .

``B > 1`` favours an active (conservative) force, ``B < 1`` a spurious force (diffusivity
gradient, Itô/Stratonovich-type convention marginalised over λ ∈ [0, 1]). ``P`` is the
regularised lower incomplete gamma function.

The λ-integrals are computed in log space with :func:`jaxinfer.quadrature.log_integrate_peaked`
centred on the minimum of ``q_E`` (where ``q^{−p}`` peaks; its width shrinks as 1/√p), which
keeps large-``n`` cells accurate without adaptive quadrature. Everything is jit / vmap / grad
friendly and vectorised over cells.

Differences from TRamWAy, on purpose: TRamWAy's series/quad tolerances are 1e-6 relative,
ours are ~1e-12; the minimal ``n`` is the exact smallest integer meeting the threshold (TRamWAy
stops its root search within ~1 + 0.001 n); any ``dim`` is accepted (TRamWAy: 2 only).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammainc, gammaln

from jaxinfer.quadrature import log_integrate_peaked
from jaxinfer.spt.conjugate import d_conj_prior_from_statistics, n_pi, power

__all__ = [
    "log10_bayes_factor",
    "calculate_bayes_factors",
    "calculate_minimal_n",
    "get_D_posterior",
    "get_MAP_D",
    "get_D_confidence_interval",
    "bayes_factors_for_cells",
]


def _log_lambda_integral(zeta_t, zeta_sp, p, v, E, r, n_nodes):
    """log ∫_0^1 q^{-p} P(p, r q) dλ with q = v + E‖ζ_t − λ ζ_sp‖² (one cell)."""
    dtype = zeta_t.dtype
    b = E * jnp.sum(zeta_sp * zeta_sp)
    tz = jnp.sum(zeta_t * zeta_sp)
    zz = jnp.sum(zeta_sp * zeta_sp)
    eps = jnp.finfo(dtype).eps
    lam_star = jnp.where(zz > 0, tz / jnp.where(zz > 0, zz, 1.0), 0.5)
    # q(λ) = a + b (λ − λ*)², a = v + E ‖ζ_t − λ* ζ_sp‖²
    resid = zeta_t - lam_star * zeta_sp
    a = v + E * jnp.sum(resid * resid)
    b_safe = jnp.maximum(b, a * eps * eps)
    width = jnp.sqrt(a / (b_safe * jnp.maximum(p, 1.0)))
    finite_r = jnp.isfinite(r)
    r_safe = jnp.where(finite_r, r, 1.0)

    def log_f(lam):
        d = zeta_t[..., None, :] - lam[..., :, None] * zeta_sp[..., None, :]
        q = v + E * jnp.sum(d * d, axis=-1)
        log_p = jnp.where(finite_r, jnp.log(gammainc(p, r_safe * q)), 0.0)
        return -p * jnp.log(q) + log_p

    return log_integrate_peaked(log_f, jnp.zeros((), dtype), jnp.ones((), dtype), lam_star,
                                width, n=n_nodes)


@functools.partial(jax.jit, static_argnames=("n_nodes",))
def _log10_bayes_factor_one(zeta_t, zeta_sp, n, V, V_pi, loc_error, n_nodes=48):
    dim = zeta_t.shape[-1]
    npi = n_pi(dim)
    p = power(n, dim)
    v = 1.0 + npi / n * V_pi / V
    eta2 = npi / (n + npi)
    r = jnp.where(loc_error > 0, n * V / (4.0 * jnp.where(loc_error > 0, loc_error, 1.0)),
                  jnp.inf)
    # up (E = η²) and down (E = 1) in one vmapped call: one trace of the integrand
    E = jnp.stack([eta2, jnp.ones_like(eta2)])
    up, down = jax.vmap(lambda e: _log_lambda_integral(zeta_t, zeta_sp, p, v, e, r, n_nodes))(E)
    return (up - down) / jnp.log(10.0) + 0.5 * dim * jnp.log10(eta2)


def log10_bayes_factor(zeta_t, zeta_sp, n, V, V_pi, loc_error, *, n_nodes: int = 48):
    """log10 Bayes factor (active force vs spurious force) for one or many cells.

    Parameters
    ----------
    zeta_t, zeta_sp : arrays [..., dim]
        Total- and spurious-force signal-to-noise ratios.
    n, V, V_pi : arrays [...]
        Jump count, jump variance of the cell and of all other cells (µm², summed over dims).
    loc_error : scalar or array [...]
        Localization variance σ² (µm²; TRamWAy's ``loc_error``), 0 to ignore.
    n_nodes : int
        Gauss–Legendre nodes per side of the peak (static).

    Returns
    -------
    array [...]: log10 B. NaN where an input is NaN.
    """
    zeta_t = jnp.asarray(zeta_t)
    dtype = jnp.result_type(zeta_t.dtype, jnp.float32)
    zeta_t = zeta_t.astype(dtype)
    zeta_sp = jnp.asarray(zeta_sp, dtype)
    batch = jnp.broadcast_shapes(zeta_t.shape[:-1], zeta_sp.shape[:-1], jnp.shape(n),
                                 jnp.shape(V), jnp.shape(V_pi), jnp.shape(loc_error))
    dim = zeta_t.shape[-1]
    args = [jnp.broadcast_to(zeta_t, batch + (dim,)), jnp.broadcast_to(zeta_sp, batch + (dim,))]
    args += [jnp.broadcast_to(jnp.asarray(x, dtype), batch) for x in (n, V, V_pi, loc_error)]
    flat = [x.reshape((-1,) + x.shape[len(batch):]) for x in args]
    fn = jax.vmap(functools.partial(_log10_bayes_factor_one, n_nodes=n_nodes))
    return fn(*flat).reshape(batch)


def _forces(lg_B, B_threshold):
    thr = np.log10(B_threshold)
    return jnp.where(lg_B >= thr, 1, 0) - jnp.where(lg_B <= -thr, 1, 0)


@functools.partial(jax.jit, static_argnames=("n_nodes", "max_doublings"))
def _minimal_n_one(zeta_t, zeta_sp, n0, V, V_pi, loc_error, lg_threshold, n_nodes=48,
                   max_doublings=40):
    def lg_b(n):
        return _log10_bayes_factor_one(zeta_t, zeta_sp, n, V, V_pi, loc_error, n_nodes)

    dtype = zeta_t.dtype
    # One loop, one Bayes-factor evaluation per iteration (a single trace of the integrand):
    # phase 0 doubles n = n0 − 1 + 2^k (TRamWAy's bracket search) until |lg B| >= threshold;
    # phase 1 bisects on integers for the smallest n in (lo, hi] with sign·lg B >= threshold.
    # state: phase, k, lo, hi, sign, lg_b(n0)
    init = (jnp.zeros((), jnp.int32), jnp.zeros((), dtype), n0 - 1.0, n0, jnp.zeros((), dtype),
            jnp.full((), jnp.nan, dtype))

    def body(i, state):
        phase, k, lo, hi, sign, lg_b0 = state
        n_eval = jnp.where(phase == 0, n0 - 1.0 + 2.0 ** k, jnp.floor(0.5 * (lo + hi)))
        value = lg_b(n_eval)
        lg_b0 = jnp.where(i == 0, value, lg_b0)
        # phase 0
        strong = jnp.abs(value) >= lg_threshold
        give_up = k + 1 >= max_doublings
        p0_phase = jnp.where(strong, 1, jnp.where(give_up, 2, 0))
        p0_lo = jnp.where(strong, lo, n_eval)
        p0_hi = jnp.where(strong, n_eval, hi)
        p0_sign = jnp.where(strong, jnp.sign(value), sign)
        # phase 1
        ok = sign * value >= lg_threshold
        active = hi - lo > 1
        p1_lo = jnp.where(active & ~ok, n_eval, lo)
        p1_hi = jnp.where(active & ok, n_eval, hi)
        in0 = phase == 0
        in1 = phase == 1
        return (jnp.where(in0, p0_phase, phase).astype(jnp.int32),
                jnp.where(in0, k + 1.0, k),
                jnp.where(in0, p0_lo, jnp.where(in1, p1_lo, lo)),
                jnp.where(in0, p0_hi, jnp.where(in1, p1_hi, hi)),
                jnp.where(in0, p0_sign, sign),
                lg_b0)

    def cond(carry):
        i, (phase, _, lo, hi, _, _) = carry
        running = (phase == 0) | ((phase == 1) & (hi - lo > 1))
        return running & (i < 2 * max_doublings + 2)

    def step(carry):
        i, state = carry
        return i + 1, body(i, state)

    # while_loop: stops as soon as every cell (under vmap) has its answer
    _, (phase, _, _, hi, _, lg_b0) = jax.lax.while_loop(cond, step, (jnp.zeros((), jnp.int32), init))
    return jnp.where(phase == 1, hi, jnp.nan), lg_b0


def calculate_minimal_n(zeta_t, zeta_sp, n0, V, V_pi, loc_error, dim=None, B_threshold=10,
                        *, n_nodes: int = 48):
    """Minimal number of jumps for strong evidence (|log10 B| >= log10 B_threshold).

    TRamWAy's ``calculate_minimal_n``: returns ``n0`` if the evidence is already strong,
    else the smallest integer ``n > n0`` at which the model favoured for large ``n`` reaches
    the threshold (other inputs held fixed), NaN if none up to ``n0 + 2^39``.

    Arrays broadcast over cells like :func:`log10_bayes_factor`; ``dim`` is read from
    ``zeta_t`` (the argument is accepted for TRamWAy compatibility and checked).
    Returns a float array (integers or NaN).
    """
    zeta_t = jnp.asarray(zeta_t)
    dtype = jnp.result_type(zeta_t.dtype, jnp.float32)
    zeta_t = jnp.atleast_1d(zeta_t.astype(dtype))
    if dim is not None and zeta_t.shape[-1] != dim:
        raise ValueError(f"dim={dim} but zeta_t has {zeta_t.shape[-1]} components")
    zeta_sp = jnp.asarray(zeta_sp, dtype)
    batch = jnp.broadcast_shapes(zeta_t.shape[:-1], zeta_sp.shape[:-1], jnp.shape(n0),
                                 jnp.shape(V), jnp.shape(V_pi), jnp.shape(loc_error))
    d = zeta_t.shape[-1]
    args = [jnp.broadcast_to(zeta_t, batch + (d,)), jnp.broadcast_to(zeta_sp, batch + (d,))]
    args += [jnp.broadcast_to(jnp.asarray(x, dtype), batch) for x in (n0, V, V_pi, loc_error)]
    flat = [x.reshape((-1,) + x.shape[len(batch):]) for x in args]
    thr = jnp.asarray(np.log10(B_threshold), dtype)
    fn = jax.vmap(lambda *a: _minimal_n_one(*a, thr, n_nodes=n_nodes))
    n_min, lg_b0 = fn(*flat)
    n0_flat = flat[2]
    out = jnp.where(jnp.abs(lg_b0) >= thr, n0_flat, n_min)
    return out.reshape(batch)


def calculate_bayes_factors(zeta_ts, zeta_sps, ns, Vs, Vs_pi, loc_error, dim=2, B_threshold=10,
                            *, n_nodes: int = 48, minimal_n: bool = True):
    """Bayes factors for a set of cells (TRamWAy's ``calculate_bayes_factors``).

    Parameters
    ----------
    zeta_ts, zeta_sps : arrays [M, dim]
    ns, Vs, Vs_pi : arrays [M]
    loc_error : float or array [M]
        Localization variance σ² (µm²).
    dim : int
        Checked against ``zeta_ts.shape[1]``.
    B_threshold : float
        Evidence threshold on B (10 = "strong").
    minimal_n : bool
        Also compute the minimal n (the costly part); NaN array otherwise.

    Returns
    -------
    (lg_Bs, forces, min_ns) : arrays [M]
        log10 B; +1 (strong evidence for an active force), −1 (for a spurious force), 0
        (inconclusive); minimal number of jumps for strong evidence (NaN if not found).
        Cells with NaN inputs get NaN (and force 0) instead of being skipped with a log line.
    """
    zeta_ts = jnp.asarray(zeta_ts)
    if zeta_ts.ndim != 2 or zeta_ts.shape[1] != dim:
        raise ValueError(f"zeta_ts must have shape (M, dim={dim}), got {zeta_ts.shape}")
    if jnp.shape(zeta_sps) != zeta_ts.shape:
        raise ValueError(f"zeta_sps must have shape {zeta_ts.shape}, got {jnp.shape(zeta_sps)}")
    ns, Vs, Vs_pi = (jnp.ravel(jnp.asarray(x)) for x in (ns, Vs, Vs_pi))
    lg_b = log10_bayes_factor(zeta_ts, zeta_sps, ns, Vs, Vs_pi, loc_error, n_nodes=n_nodes)
    forces = _forces(lg_b, B_threshold)
    if minimal_n:
        min_ns = calculate_minimal_n(zeta_ts, zeta_sps, ns, Vs, Vs_pi, loc_error,
                                     B_threshold=B_threshold, n_nodes=n_nodes)
    else:
        min_ns = jnp.full(lg_b.shape, jnp.nan, lg_b.dtype)
    return lg_b, forces, min_ns


# --------------------------------------------------------------------------- D posterior


def _g3(n, zeta_t, V, V_pi, dim):
    npi = n_pi(dim)
    return 1.0 + npi / n * V_pi / V + npi / (n + npi) * jnp.sum(jnp.square(zeta_t), axis=-1)


def get_D_posterior(n, zeta_t, V, V_pi, dt, sigma2, dim):
    """Diffusivity posterior density as a function of D (TRamWAy's ``get_D_posterior``).

    Returns ``posterior(D)``: a jnp function, elementwise in ``D`` (µm²/s), of the
    inverse-gamma law ``∝ D^{−p−1} exp(−β/D)`` truncated to ``D > σ²/Δt`` and normalised
    (β = n V G3 / (4 Δt)); 0 below the truncation. ``zeta_t`` has ``dim`` components.
    """
    zeta_t = jnp.atleast_1d(jnp.asarray(zeta_t))
    if zeta_t.shape[-1] != dim:
        raise ValueError(f"dim={dim} but zeta_t has {zeta_t.shape[-1]} components")
    dtype = jnp.result_type(zeta_t.dtype, jnp.float32)
    p = power(jnp.asarray(n, dtype), dim)
    beta = n * V * _g3(n, zeta_t, V, V_pi, dim) / (4.0 * dt)
    sigma2 = jnp.asarray(sigma2, dtype)
    y_l = jnp.where(sigma2 > 0, beta * dt / jnp.where(sigma2 > 0, sigma2, 1.0), jnp.inf)
    log_norm = jnp.where(jnp.isfinite(y_l),
                         jnp.log(gammainc(p, jnp.where(jnp.isfinite(y_l), y_l, 1.0))), 0.0)
    min_d = sigma2 / dt

    def posterior(D):
        D = jnp.asarray(D, dtype)
        safe = jnp.where(D > min_d, D, 1.0)
        y = beta / safe
        log_pdf = p * jnp.log(y) - y - jnp.log(safe) - log_norm - gammaln(p)
        return jnp.where(D > min_d, jnp.exp(log_pdf), 0.0)

    return posterior


def get_MAP_D(n, zeta_t, V, V_pi, dt, sigma2, dim):
    """MAP diffusivity ``β/(p+1)`` (TRamWAy's ``get_MAP_D``; ignores the truncation)."""
    zeta_t = jnp.atleast_1d(jnp.asarray(zeta_t))
    p = power(jnp.asarray(n, jnp.result_type(zeta_t.dtype, jnp.float32)), dim)
    return n * V * _g3(n, zeta_t, V, V_pi, dim) / (4.0 * dt) / (p + 1.0)


def get_D_confidence_interval(alpha, n, zeta_t, V, V_pi, dt, sigma2, dim):
    """MAP diffusivity and the equal-tailed ``alpha`` credible interval.

    TRamWAy's ``get_D_confidence_interval``. Returns ``(MAP_D, CI)`` with ``CI`` of shape
    ``[..., 2]`` (low, high), from the closed-form quantiles of
    :func:`jaxinfer.spt.conjugate.d_conj_prior_from_statistics`.
    """
    zeta_t = jnp.atleast_1d(jnp.asarray(zeta_t))
    if zeta_t.shape[-1] != dim:
        raise ValueError(f"dim={dim} but zeta_t has {zeta_t.shape[-1]} components")
    out = d_conj_prior_from_statistics(n, zeta_t, V, V_pi, dt, sigma2, alpha=alpha)
    return out["diffusivity"], jnp.stack([out["ci_low"], out["ci_high"]], axis=-1)


# --------------------------------------------------------------------------- per-cell front end


def bayes_factors_for_cells(dr, dt, mask, diffusivity_gradient, *, sigma=None, sigma2=None,
                            B_threshold=10, minimal_n: bool = True, n_nodes: int = 48):
    """TRamWAy's ``bayes_factor`` mode on padded per-cell arrays.

    Parameters
    ----------
    dr : array [ncells, max_n, dim]       translocation displacements (µm), padded
    dt : array [ncells, max_n]            durations (s), identical for real translocations
    mask : bool array [ncells, max_n]     True for real translocations
    diffusivity_gradient : array [ncells, dim]
        ∇D at each cell (µm/s), e.g. grad1 of a diffusivity map (NaN where undefined).
    sigma, sigma2 : localization error as σ (µm) or σ² (µm²), exactly one.
    B_threshold, minimal_n, n_nodes : as :func:`calculate_bayes_factors`.

    Returns
    -------
    dict of arrays [ncells] / [ncells, dim]: ``lg_B``, ``force``, ``min_n``, ``zeta_total``,
    ``zeta_spurious`` (= ∇D Δt / √V, TRamWAy's SNR extension), ``n``, ``V``, ``V_prior``.
    Cells with fewer than 2 translocations or an undefined gradient get NaN (force 0).
    """
    from jaxinfer.spt.conjugate import _check_identical_dt, jump_statistics, localization_variance

    s2 = localization_variance(sigma, sigma2)
    if not any(isinstance(x, jax.core.Tracer) for x in (dt, mask)):
        _check_identical_dt(dt, mask)
    dr = jnp.asarray(dr)
    mask = jnp.asarray(mask, dtype=bool)
    dt = jnp.asarray(dt, dr.dtype)
    grad_d = jnp.asarray(diffusivity_gradient, dr.dtype)
    if grad_d.shape != (dr.shape[0], dr.shape[2]):
        raise ValueError(f"diffusivity_gradient must have shape {(dr.shape[0], dr.shape[2])} "
                         f"(ncells, dim), got {grad_d.shape}")
    stats = jump_statistics(dr, mask)
    w = mask.astype(dr.dtype)
    common_dt = jnp.sum(w * dt) / jnp.sum(w)
    zeta_sp = grad_d * common_dt / stats["sd"][:, None]
    lg_b, force, min_n = calculate_bayes_factors(
        stats["zeta_total"], zeta_sp, stats["n"], stats["V"], stats["V_prior"], s2,
        dim=dr.shape[2], B_threshold=B_threshold, n_nodes=n_nodes, minimal_n=minimal_n)
    return dict(lg_B=lg_b, force=force, min_n=min_n, zeta_total=stats["zeta_total"],
                zeta_spurious=zeta_sp, n=stats["n"], V=stats["V"], V_prior=stats["V_prior"])
