"""Conjugate-prior diffusivity: closed-form MAP and confidence intervals (Serov et al. 2019).

This is TRamWAy's ``d.conj_prior`` mode. No optimiser: per cell, with ``n`` translocations of
identical duration ``Δt`` in ``dim`` dimensions,

* ``n_π = 5 − dim`` (prior pseudo-count), ``p = dim (n + n_π − 1)/2 − 1``;
* ``V`` = biased variance of the jumps of the cell, summed over dimensions;
  ``V_π`` = the same over the pooled jumps of all OTHER cells;
* ``ζ_t = mean(Δr) / √V`` (total-force signal-to-noise ratio, one entry per dimension);
* ``G3 = 1 + (n_π/n) V_π/V + n_π/(n+n_π) ‖ζ_t‖²`` and ``β = n V G3 / (4 Δt)``.

The posterior of ``D`` is an inverse-gamma law ``∝ D^{−p−1} exp(−β/D)``, truncated to
``D > σ²/Δt``. Hence ``D_MAP = β/(p+1)`` and the confidence interval bounds ``D_q`` solve
``P(p, β/D_q) = (1 − q) P(p, β Δt/σ²)`` for ``q = (1 ∓ α)/2`` (``P``: regularised lower
incomplete gamma function), which we invert directly instead of root-bracketing.

Localization noise: the likelihood behind this posterior has variance ``4 (D Δt)`` per jump;
``σ²`` enters only through the truncation. So ``D`` here is really ``D + σ²/Δt`` and is biased
up by about ``σ²/Δt`` (TRamWAy's behaviour, the default). Also, TRamWAy's MAP ignores the
truncation: if ``β/(p+1) < σ²/Δt`` the reported MAP lies outside the posterior's support.
``localization_correction=True`` reads the same posterior as one for ``D_total = D + σ²/Δt``
and reports ``D = D_total − σ²/Δt`` with the MAP clipped to the support (so ``D ≥ 0``).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammainc, gammaln, ndtri

from jaxinfer.optimize.implicit import implicit_root

__all__ = [
    "n_pi",
    "power",
    "jump_statistics",
    "d_conj_prior",
    "d_conj_prior_from_statistics",
    "d_conj_prior_table",
    "gammainc_inverse",
    "localization_variance",
]


def n_pi(dim: int) -> int:
    """Prior pseudo-count ``n_π = 5 − dim`` (TRamWAy's ``n_pi_func``)."""
    return 5 - dim


def power(n, dim: int):
    """Posterior power ``p = dim (n + n_π − 1)/2 − 1`` (TRamWAy's ``p``)."""
    return dim * (n + n_pi(dim) - 1.0) / 2.0 - 1.0


def localization_variance(sigma=None, sigma2=None) -> float:
    """σ² from exactly one of ``sigma`` (µm) or ``sigma2`` (µm²); ValueError otherwise."""
    if sigma is None and sigma2 is None:
        raise ValueError("undefined localization error: pass sigma (µm) or sigma2 (µm²); "
                         "use sigma2=0 to ignore localization noise")
    if sigma is not None and sigma2 is not None:
        raise ValueError("pass either sigma or sigma2, not both")
    value = sigma2 if sigma is None else sigma * sigma
    if not isinstance(value, jax.core.Tracer) and float(np.asarray(value)) < 0:
        raise ValueError(f"the localization variance must be >= 0, got {value}")
    return value


# --------------------------------------------------------------------------- special function


def gammainc_inverse(a, target, *, iterations: int = 40):
    """Inverse of the regularised lower incomplete gamma function in its second argument.

    Solves ``gammainc(a, y) = target`` for ``y > 0`` (elementwise, broadcasting).

    Safeguarded Newton iterations on ``log y`` (a bracket guarantees progress), started from
    the Wilson–Hilferty approximation. Targets very close to 1 lose relative accuracy in
    ``1 − target`` (fine for confidence bounds up to α ≈ 1 − 1e-6). jit / vmap-able;
    differentiable in ``a`` and ``target`` by the implicit function theorem
    (:func:`jaxinfer.optimize.implicit.implicit_root`).

    Parameters
    ----------
    a : array, > 0
    target : array in (0, 1)

    Returns
    -------
    y : array
    """
    return _gammainc_inverse(a, target, iterations)


@functools.partial(jax.jit, static_argnums=2)
def _gammainc_inverse(a, target, iterations):
    a, target = jnp.broadcast_arrays(jnp.asarray(a), jnp.asarray(target))
    dtype = jnp.result_type(a.dtype, target.dtype, jnp.float32)
    a = a.astype(dtype)
    target = target.astype(dtype)
    a_sg = jax.lax.stop_gradient(a)
    t_sg = jax.lax.stop_gradient(target)
    log_t = jnp.log(t_sg)

    # bracket on u = log y: P(a, y) <= y^a / Γ(a+1) gives a lower bound; a Chernoff bound
    # on the upper tail gives the upper bound.
    lo = (log_t + gammaln(a_sg + 1.0)) / a_sg
    hi = jnp.log(a_sg + 10.0 * jnp.sqrt(a_sg) + 50.0 - 2.0 * jnp.log1p(-t_sg))
    z = ndtri(t_sg)
    wh = a_sg * (1.0 - 1.0 / (9.0 * a_sg) + z / (3.0 * jnp.sqrt(a_sg))) ** 3
    u0 = jnp.where(wh > 0, jnp.log(jnp.maximum(wh, jnp.finfo(dtype).tiny)), lo)
    u0 = jnp.clip(u0, lo, hi)

    def body(_, state):
        # Newton on g(u) = log P(a, e^u) - log t, increasing in u; g'(u) = y f(y) / P
        u, lo, hi = state
        y = jnp.exp(u)
        log_p = jnp.log(gammainc(a_sg, y))  # the only special-function call per iteration
        r = log_p - log_t
        lo = jnp.where(r < 0, u, lo)
        hi = jnp.where(r > 0, u, hi)
        slope = jnp.exp(a_sg * u - y - gammaln(a_sg) - log_p)
        u_new = u - r / slope
        inside = (u_new > lo) & (u_new < hi) & jnp.isfinite(u_new)
        u_new = jnp.where(inside, u_new, 0.5 * (lo + hi))
        u_new = jnp.where(r == 0, u, u_new)
        return u_new, lo, hi

    u, _, _ = jax.lax.fori_loop(0, iterations, body, (u0, lo, hi))
    y_star = jax.lax.stop_gradient(jnp.exp(u))
    # derivatives w.r.t. a and target by the implicit function theorem on
    # P(a, y) - target = 0, one scalar equation per element
    one = lambda y, a, t: implicit_root(y, _gammainc_residual, (a, t),  # noqa: E731
                                        linear_solver="dense")
    flat = jax.vmap(one)(y_star.reshape(-1), a.reshape(-1), target.reshape(-1))
    return flat.reshape(y_star.shape)


def _gammainc_residual(y, theta):
    a, target = theta
    return gammainc(a, y) - target


# --------------------------------------------------------------------------- statistics


@jax.jit
def jump_statistics(dr, mask):
    """Per-cell jump statistics used by the conjugate prior and the Bayes factors.

    Parameters
    ----------
    dr : array [ncells, max_n, dim]
        Translocation displacements (µm), padded.
    mask : bool array [ncells, max_n]
        True for real translocations.

    Returns
    -------
    dict of arrays
        ``n`` [ncells] (count), ``mean`` [ncells, dim] (µm), ``V`` [ncells] (biased jump
        variance summed over dims, µm²), ``V_prior`` [ncells] (same over the pooled jumps
        of all other cells), ``zeta_total`` [ncells, dim] (``mean/√V``; 0 where n < 2),
        ``sd`` [ncells] (``√V``).
    """
    dr = jnp.asarray(dr)
    w = jnp.asarray(mask).astype(dr.dtype)
    n = jnp.sum(w, axis=1)
    s1 = jnp.einsum("cn,cnd->cd", w, dr)
    s2 = jnp.einsum("cn,cnd->cd", w, dr * dr)
    safe_n = jnp.maximum(n, 1.0)
    V = jnp.sum(s2 - s1 * s1 / safe_n[:, None], axis=1) / safe_n
    n_other = jnp.sum(n) - n
    s1_other = jnp.sum(s1, axis=0, keepdims=True) - s1
    s2_other = jnp.sum(s2, axis=0, keepdims=True) - s2
    safe_other = jnp.maximum(n_other, 1.0)
    V_prior = jnp.sum(s2_other - s1_other * s1_other / safe_other[:, None], axis=1) / safe_other
    mean = s1 / safe_n[:, None]
    enough = n > 1
    sd = jnp.sqrt(jnp.where(enough, V, 1.0))
    zeta_total = jnp.where(enough[:, None], mean / sd[:, None], 0.0)
    nan = jnp.asarray(jnp.nan, dr.dtype)
    return dict(n=n, mean=mean, V=jnp.where(enough, V, nan),
                V_prior=jnp.where(n_other > 1, V_prior, nan), zeta_total=zeta_total,
                sd=jnp.where(enough, sd, nan))


# --------------------------------------------------------------------------- the estimator


@functools.partial(jax.jit, static_argnames=("localization_correction",))
def d_conj_prior_from_statistics(n, zeta_total, V, V_prior, dt, sigma2, *, alpha=0.95,
                                 localization_correction: bool = False):
    """Conjugate-prior diffusivity from per-cell statistics (TRamWAy's
    ``get_D_confidence_interval``, vectorised).

    Parameters
    ----------
    n : array [...]          number of jumps (> 1 for a defined result)
    zeta_total : array [..., dim]   ``mean(Δr)/√V``
    V, V_prior : arrays [...]       jump variances (µm², summed over dims)
    dt : scalar or array [...]      time step (s)
    sigma2 : scalar                 localization variance σ² (µm²), >= 0
    alpha : float                   confidence level of the interval
    localization_correction : bool  see the module docstring

    Returns
    -------
    dict with ``diffusivity`` (MAP, µm²/s), ``ci_low``, ``ci_high`` (µm²/s), each [...].
    """
    zeta_total = jnp.asarray(zeta_total)
    dim = zeta_total.shape[-1]
    n = jnp.asarray(n, dtype=zeta_total.dtype)
    npi = n_pi(dim)
    p = power(n, dim)
    G3 = (1.0 + npi / n * V_prior / V
          + npi / (n + npi) * jnp.sum(zeta_total ** 2, axis=-1))
    beta = n * V * G3 / (4.0 * dt)
    map_d = beta / (p + 1.0)
    sigma2 = jnp.asarray(sigma2, dtype=zeta_total.dtype)
    min_d = sigma2 / dt
    # y_L = β Δt / σ²; P(p, ∞) = 1 when σ² = 0
    y_l = jnp.where(sigma2 > 0, beta * dt / jnp.where(sigma2 > 0, sigma2, 1.0), jnp.inf)
    p_l = jnp.where(jnp.isinf(y_l), 1.0, gammainc(p, jnp.where(jnp.isinf(y_l), 1.0, y_l)))
    q_low = (1.0 - alpha) / 2.0
    q_high = 1.0 - q_low
    # CDF(D) = 1 - P(p, β/D)/P(p, y_L)  =>  β/D_q = P^{-1}(p, (1-q) P(p, y_L))
    # both bounds in one solve (one compiled loop)
    y_q = gammainc_inverse(jnp.stack([p, p]),
                           jnp.stack([(1.0 - q_low) * p_l, (1.0 - q_high) * p_l]))
    ci_low = beta / y_q[0]
    ci_high = beta / y_q[1]
    if localization_correction:
        map_d = jnp.maximum(map_d, min_d) - min_d
        ci_low = ci_low - min_d
        ci_high = ci_high - min_d
    valid = n > 1
    nan = jnp.asarray(jnp.nan, zeta_total.dtype)
    return dict(diffusivity=jnp.where(valid, map_d, nan),
                ci_low=jnp.where(valid, ci_low, nan),
                ci_high=jnp.where(valid, ci_high, nan))


def _check_identical_dt(dt, mask, rtol=1e-6):
    dt = np.asarray(dt, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    values = dt[mask]
    if values.size == 0:
        raise ValueError("no translocation: mask is all False")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError("dt must be finite and > 0 for every translocation")
    lo, hi = values.min(), values.max()
    if hi - lo > rtol * hi:
        raise ValueError(
            f"d_conj_prior requires identical time steps; dt ranges from {lo!r} to {hi!r} s. "
            f"Resample the trajectories to a single frame interval (or split by dt).")


def d_conj_prior(dr, dt, mask, *, sigma=None, sigma2=None, alpha: float = 0.95,
                 localization_correction: bool = False):
    """Conjugate-prior diffusivity MAP and confidence interval for every cell.

    Parameters
    ----------
    dr : array [ncells, max_n, dim]
        Padded translocation displacements (µm); padding is ignored via ``mask``.
    dt : array [ncells, max_n]
        Translocation durations (s); must be identical for all real translocations (checked
        when the arrays are concrete, i.e. outside ``jit``: ValueError otherwise).
    mask : bool array [ncells, max_n]
        True for real translocations.
    sigma, sigma2 : float
        Localization error as σ (µm) or σ² (µm²); exactly one is required (σ² = 0 allowed).
    alpha : float
        Confidence level of the interval (TRamWAy default 0.95).
    localization_correction : bool
        False (default): TRamWAy's estimate, biased up by ≈ σ²/Δt. True: subtract σ²/Δt (MAP
        clipped at 0); see the module docstring.

    Returns
    -------
    dict of arrays
        ``diffusivity``, ``ci_low``, ``ci_high`` [ncells] (µm²/s; NaN where n < 2) and the
        statistics of :func:`jump_statistics` (``n``, ``V``, ``V_prior``, ``zeta_total``,
        ``sd``, ``mean``) plus ``dt`` (scalar).

    jit (with ``sigma``/``sigma2``/``alpha`` static or traced), vmap and grad work; the
    identical-dt check only runs outside tracing.
    """
    s2 = localization_variance(sigma, sigma2)
    if not any(isinstance(x, jax.core.Tracer) for x in (dt, mask)):
        _check_identical_dt(dt, mask)
    dr = jnp.asarray(dr)
    if dr.ndim != 3:
        raise ValueError(f"dr must have shape [ncells, max_n, dim], got {dr.shape}")
    mask = jnp.asarray(mask, dtype=bool)
    dt = jnp.asarray(dt, dtype=dr.dtype)
    if mask.shape != dr.shape[:2] or dt.shape != dr.shape[:2]:
        raise ValueError(f"dt and mask must have shape {dr.shape[:2]} (ncells, max_n); got "
                         f"dt {dt.shape}, mask {mask.shape}")
    stats = jump_statistics(dr, mask)
    w = mask.astype(dr.dtype)
    common_dt = jnp.sum(w * dt) / jnp.sum(w)
    est = d_conj_prior_from_statistics(stats["n"], stats["zeta_total"], stats["V"],
                                       stats["V_prior"], common_dt, s2, alpha=alpha,
                                       localization_correction=localization_correction)
    return {**est, **stats, "dt": common_dt}


def d_conj_prior_table(translocations, cell_index, *, sigma=None, sigma2=None,
                       alpha: float = 0.95, localization_correction: bool = False,
                       ncells: Optional[int] = None):
    """pandas front end of :func:`d_conj_prior`.

    Parameters
    ----------
    translocations : pandas.DataFrame
        From :func:`jaxinfer.spt.trajectories.translocations`: columns ``dx, dy[, dz], dt``.
    cell_index : array-like of int [n_translocations]
        Cell of each translocation (origin cell); negative values = not assigned (ignored).
    ncells : int, optional
        Number of cells (default: ``max(cell_index) + 1``).

    Returns
    -------
    pandas.DataFrame indexed by cell id (only cells with >= 1 translocation): columns
    ``n, V, V_prior, zeta_total x, zeta_total y[, zeta_total z], diffusivity, ci low, ci high``
    (TRamWAy's column names).
    """
    import pandas as pd

    dcols = [c for c in ("dx", "dy", "dz") if c in translocations.columns]
    missing = [c for c in ("dx", "dy", "dt") if c not in translocations.columns]
    if missing:
        raise ValueError(f"translocations lacks column(s) {missing}; expected dx, dy[, dz], dt")
    cell_index = np.asarray(cell_index)
    if cell_index.shape != (len(translocations),):
        raise ValueError(f"cell_index must have one entry per translocation "
                         f"({len(translocations)}), got shape {cell_index.shape}")
    if not np.issubdtype(cell_index.dtype, np.integer):
        raise TypeError(f"cell_index must hold integers, got {cell_index.dtype}")
    keep = cell_index >= 0
    cells = cell_index[keep]
    if cells.size == 0:
        raise ValueError("no translocation is assigned to a cell (cell_index all negative)")
    ncells = int(cells.max()) + 1 if ncells is None else int(ncells)
    if cells.max() >= ncells:
        raise ValueError(f"cell_index has {cells.max()} but ncells={ncells}")
    dr_rows = translocations[dcols].to_numpy(dtype=np.float64)[keep]
    dt_rows = translocations["dt"].to_numpy(dtype=np.float64)[keep]
    counts = np.bincount(cells, minlength=ncells)
    max_n = int(counts.max())
    order = np.argsort(cells, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    slot = np.arange(cells.size) - starts[cells[order]]
    dr = np.zeros((ncells, max_n, len(dcols)))
    dt = np.ones((ncells, max_n))
    mask = np.zeros((ncells, max_n), dtype=bool)
    dr[cells[order], slot] = dr_rows[order]
    dt[cells[order], slot] = dt_rows[order]
    mask[cells[order], slot] = True
    out = d_conj_prior(dr, dt, mask, sigma=sigma, sigma2=sigma2, alpha=alpha,
                       localization_correction=localization_correction)
    present = counts > 0
    index = np.flatnonzero(present)
    axes = [c[1:] for c in dcols]
    table = {"n": np.asarray(out["n"])[present].astype(np.int64),
             "V": np.asarray(out["V"])[present],
             "V_prior": np.asarray(out["V_prior"])[present]}
    zt = np.asarray(out["zeta_total"])[present]
    for k, ax in enumerate(axes):
        table[f"zeta_total {ax}"] = zt[:, k]
    table["diffusivity"] = np.asarray(out["diffusivity"])[present]
    table["ci low"] = np.asarray(out["ci_low"])[present]
    table["ci high"] = np.asarray(out["ci_high"])[present]
    return pd.DataFrame(table, index=pd.Index(index, name="cell"))
