"""Negative log-posteriors of TRamWAy 0.7's inference modes, term for term, in pure JAX.

Notation (cell i with n_i translocations k, durations dt_k, displacements dr_k; sigma2 the
localization error variance):

    s_k = D_i dt_k + sigma2
    L_i(mu) = n_i log(pi) + sum_k log(4 s_k) + sum_k |dr_k - mu_k|^2 / (4 s_k)

==========  ======================  ===============================================  =======================================
mode        mu_k                    priors                                           Jeffreys (``jeffreys_prior=True``)
==========  ======================  ===============================================  =======================================
D           0                       lD sum_i A_i |grad D_i|^2                        2 sum_i log(D_i <dt>_i + sigma2)
DD          dt_k a_i                lD ... + la (sum_i A_i)(sum_j |a_j|^2)  (*)      as D
DF          D_i dt_k F_i            lD ... + lF (sum_i A_i)(sum_j |F_j|^2)  (*)      2 sum_i [log(D_i<dt>_i+sigma2) - log D_i]
DV          -D_i dt_k grad V_i      lV sum_i A_i|grad V_i|^2 + lD sum A_i|grad D_i|^2 as DF
==========  ======================  ===============================================  =======================================

(*) TRamWAy passes the *whole* drift / force array to ``grad_sum`` at every cell, so the
"drift prior" is a ridge penalty scaled by the total area. We reproduce it.

``grad`` is TRamWAy's ``grad1`` (:func:`jaxinfer.spt.gradient.grad1_stencil`); the priors can
use another operator (``regularizer``: TRamWAy's ``rgrad='delta0'`` variants ``*_neg_posterior1``
use ``delta0``). Components TRamWAy leaves undefined (NaN) count as 0 here, except in DV where,
as in TRamWAy, a cell whose grad V is undefined is left out of the likelihood and priors
(TRamWAy's D/DD/DF objectives would become NaN: we add 0 instead).

Stochastic DV (:func:`stochastic_dv_neg_posterior`) sums TRamWAy's ``local_dv_neg_posterior``
over cells: grad V undefined -> 0 vector; priors use ``delta0`` (area weighted); optional
time priors ``l_t sum (time variation)^2`` (not area weighted); its Jeffreys term has an
operator-precedence bug in TRamWAy: ``j*2*log(D<dt>+sigma2) - log D`` (i.e. 2 log(...) - log D
instead of 2[log(...) - log D]). ``tramway_jeffreys_bug=True`` (default) reproduces it;
``False`` uses the DV formula.

Every objective takes ``normalization`` (default 1, TRamWAy): the weight of the Gaussian
normalisation term, exact in 2D only; pass ``dim / 2`` for the exact likelihood in 3D (TRamWAy's
3D diffusivities are 1.5x too large).

Every function here is pure: it jits, vmaps and differentiates.
"""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp

from jaxinfer.spt.cells import Cells
from jaxinfer.spt.gradient import Stencil

__all__ = ["cell_neg_log_likelihood", "d_neg_posterior", "dd_neg_posterior", "df_neg_posterior",
           "dv_neg_posterior", "local_dv_neg_posteriors", "stochastic_dv_neg_posterior",
           "unsmooth_d_neg_posterior", "unsmooth_dd_neg_posterior", "unsmooth_df_neg_posterior",
           "dv_active_cells"]

_LOG_PI = 1.1447298858494002


def cell_neg_log_likelihood(diffusivity, cells: Cells, sigma2, velocity=None,
                            normalization=1.0):
    """L_i for every cell -> [ncells], with the expected displacement mu_k = dt_k v_i.

    diffusivity : [ncells]; velocity : None (mu = 0) or v [ncells, dim] (DD: the drift, DF:
    D F, DV: -D grad V). Evaluated on the cells' :class:`~jaxinfer.spt.cells.DurationGroups`
    (sum_k |dr_k - dt v|^2 = S2 - 2 dt v.S1 + n dt^2 |v|^2 per group of equal dt), which is
    L_i exactly, in O(ncells x groups).
    normalization : weight of the Gaussian normalisation n log(pi) + sum log(4 s). TRamWAy uses
        1 whatever the dimension, which is exact in 2D only (in 3D it biases D up by 1.5x);
        ``dim / 2`` gives the exact Gaussian likelihood in any dimension."""
    g = cells.duration_groups
    used = g.count > 0
    s4 = jnp.where(used, 4.0 * (diffusivity[:, None] * g.dt + sigma2), 1.0)  # [m, G]
    r2 = g.sum_dr2
    if velocity is not None:
        # one component at a time: XLA's CPU backend reduces a minor axis of length dim
        # slowly (that sum was ~3/4 of the DV objective's value and gradient)
        for d in range(velocity.shape[-1]):
            vdt = g.dt * velocity[:, d, None]  # [m, G]
            r2 = r2 - 2.0 * vdt * g.sum_dr[..., d] + g.count * vdt * vdt
    terms = jnp.where(used, normalization * g.count * jnp.log(s4) + r2 / s4, 0.0)
    return normalization * cells.counts * _LOG_PI + jnp.sum(terms, axis=1)


def _smooth_prior(X, regularizer: Stencil, volumes, weight):
    return weight * jnp.sum(volumes * jnp.sum(regularizer.apply(X) ** 2, axis=-1))


def _jeffreys_d(D, cells, sigma2):
    return 2.0 * jnp.sum(jnp.log(D * cells.dt_mean + sigma2))


def _jeffreys_dv(D, cells, sigma2):
    return 2.0 * jnp.sum(jnp.log(D * cells.dt_mean + sigma2) - jnp.log(D))


def d_neg_posterior(diffusivity, cells: Cells, grad: Stencil, sigma2, diffusivity_prior=0.0,
                    jeffreys_prior: bool = False, regularizer: Optional[Stencil] = None,
                    normalization=1.0):
    """TRamWAy ``smooth_d_neg_posterior`` (``d_neg_posterior1`` with regularizer=delta0).

    diffusivity : [ncells] (µm²/s); returns a scalar."""
    reg = grad if regularizer is None else regularizer
    out = jnp.sum(cell_neg_log_likelihood(diffusivity, cells, sigma2, None, normalization))
    out = out + _smooth_prior(diffusivity, reg, cells.volumes, diffusivity_prior)
    if jeffreys_prior:
        out = out + _jeffreys_d(diffusivity, cells, sigma2)
    return out


def dd_neg_posterior(diffusivity, drift, cells: Cells, grad: Stencil, sigma2,
                     diffusivity_prior=0.0, drift_prior=0.0, jeffreys_prior: bool = False,
                     regularizer: Optional[Stencil] = None, normalization=1.0):
    """TRamWAy ``smooth_dd_neg_posterior``. drift : [ncells, dim] (µm/s)."""
    reg = grad if regularizer is None else regularizer
    out = jnp.sum(cell_neg_log_likelihood(diffusivity, cells, sigma2, drift, normalization))
    out = out + _smooth_prior(diffusivity, reg, cells.volumes, diffusivity_prior)
    out = out + drift_prior * jnp.sum(cells.volumes) * jnp.sum(drift * drift)
    if jeffreys_prior:
        out = out + _jeffreys_d(diffusivity, cells, sigma2)
    return out


def df_neg_posterior(diffusivity, force, cells: Cells, grad: Stencil, sigma2,
                     diffusivity_prior=0.0, force_prior=0.0, jeffreys_prior: bool = False,
                     regularizer: Optional[Stencil] = None, normalization=1.0):
    """TRamWAy ``smooth_df_neg_posterior``. force : [ncells, dim] (kT/µm)."""
    reg = grad if regularizer is None else regularizer
    velocity = diffusivity[:, None] * force
    out = jnp.sum(cell_neg_log_likelihood(diffusivity, cells, sigma2, velocity, normalization))
    out = out + _smooth_prior(diffusivity, reg, cells.volumes, diffusivity_prior)
    out = out + force_prior * jnp.sum(cells.volumes) * jnp.sum(force * force)
    if jeffreys_prior:
        out = out + _jeffreys_dv(diffusivity, cells, sigma2)
    return out


def dv_active_cells(grad: Stencil):
    """[ncells] bool: cells whose grad V is fully defined (TRamWAy's DV skips the others)."""
    return jnp.all(grad.defined, axis=1)


def dv_neg_posterior(diffusivity, potential, cells: Cells, grad: Stencil, sigma2,
                     diffusivity_prior=0.0, potential_prior=0.0, jeffreys_prior: bool = False,
                     regularizer: Optional[Stencil] = None, y0=0.0, normalization=1.0):
    """TRamWAy ``dv_neg_posterior`` (minus ``y0``; TRamWAy passes y0 = f(x0)).

    potential : [ncells] (kT). Drift = -D grad V."""
    reg = grad if regularizer is None else regularizer
    active = dv_active_cells(grad)
    gradV = grad.apply(potential)  # [m, dim]
    lik = cell_neg_log_likelihood(diffusivity, cells, sigma2, -diffusivity[:, None] * gradV,
                                  normalization)
    pV = cells.volumes * jnp.sum((gradV if reg is grad else reg.apply(potential)) ** 2, axis=-1)
    pD = cells.volumes * jnp.sum(reg.apply(diffusivity) ** 2, axis=-1)
    per_cell = lik + potential_prior * pV + diffusivity_prior * pD
    out = jnp.sum(jnp.where(active, per_cell, 0.0))
    if jeffreys_prior:
        out = out + _jeffreys_dv(diffusivity, cells, sigma2)
    return out - y0


def local_dv_neg_posteriors(diffusivity, potential, cells: Cells, grad: Stencil,
                            delta: Stencil, sigma2, diffusivity_prior=0.0, potential_prior=0.0,
                            jeffreys_prior: bool = False, time: Optional[Stencil] = None,
                            diffusivity_time_prior=0.0, potential_time_prior=0.0,
                            tramway_jeffreys_bug: bool = True, normalization=1.0, rows=None):
    """TRamWAy ``local_dv_neg_posterior`` for every cell -> [ncells] (or for ``rows`` only,
    [R], e.g. the cells around one block of a block-coordinate solver).

    delta : spatial variation for the priors (TRamWAy: ``delta0``); time : temporal variation
    stencil of space-time cells (TRamWAy's ``time_variation``, undefined sides = 0)."""
    if rows is None:
        rows = jnp.arange(cells.ncells)
    D = diffusivity[rows]
    gradV = grad.apply_at(potential, rows)
    gradV = jnp.where(jnp.all(grad.defined[rows], axis=1, keepdims=True), gradV, 0.0)
    sub = Cells(cells.dr[rows], cells.dt[rows], cells.mask[rows], cells.counts[rows],
                cells.centers[rows], cells.volumes[rows], cells.neighbours[rows],
                cells.neighbour_mask[rows], cells.cell_ids[rows],
                groups=cells.duration_groups[rows])
    out = cell_neg_log_likelihood(D, sub, sigma2, -D[:, None] * gradV, normalization)
    vol = sub.volumes
    out = out + potential_prior * vol * jnp.sum(delta.apply_at(potential, rows) ** 2, axis=-1)
    out = out + diffusivity_prior * vol * jnp.sum(delta.apply_at(diffusivity, rows) ** 2, axis=-1)
    if jeffreys_prior:
        lg = jnp.log(D * sub.dt_mean + sigma2)
        if tramway_jeffreys_bug:
            out = out + 2.0 * lg - jnp.log(D)
        else:
            out = out + 2.0 * (lg - jnp.log(D))
    if time is not None:
        out = out + diffusivity_time_prior * jnp.sum(time.apply_at(diffusivity, rows) ** 2, -1)
        out = out + potential_time_prior * jnp.sum(time.apply_at(potential, rows) ** 2, -1)
    return out


def stochastic_dv_neg_posterior(diffusivity, potential, cells: Cells, grad: Stencil,
                                delta: Stencil, sigma2, **kwargs):
    """Sum over cells of :func:`local_dv_neg_posteriors` (the objective stochastic DV
    minimises block by block)."""
    return jnp.sum(local_dv_neg_posteriors(diffusivity, potential, cells, grad, delta, sigma2,
                                           **kwargs))


def unsmooth_d_neg_posterior(diffusivity, cells: Cells, sigma2, jeffreys_prior: bool = False,
                             normalization=1.0):
    """TRamWAy ``unsmooth_d.d_neg_posterior`` for every cell -> [ncells] (independent)."""
    out = cell_neg_log_likelihood(diffusivity, cells, sigma2, None, normalization)
    if jeffreys_prior:
        out = out + 2.0 * jnp.log(diffusivity * cells.dt_mean + sigma2)
    return out


def unsmooth_dd_neg_posterior(diffusivity, drift, cells: Cells, sigma2,
                              jeffreys_prior: bool = False, normalization=1.0):
    """Per-cell DD objective without priors -> [ncells]."""
    out = cell_neg_log_likelihood(diffusivity, cells, sigma2, drift, normalization)
    if jeffreys_prior:
        out = out + 2.0 * jnp.log(diffusivity * cells.dt_mean + sigma2)
    return out


def unsmooth_df_neg_posterior(diffusivity, force, cells: Cells, sigma2,
                              jeffreys_prior: bool = False, normalization=1.0):
    """Per-cell DF objective without priors -> [ncells]."""
    out = cell_neg_log_likelihood(diffusivity, cells, sigma2, diffusivity[:, None] * force,
                                  normalization)
    if jeffreys_prior:
        out = out + 2.0 * (jnp.log(diffusivity * cells.dt_mean + sigma2) - jnp.log(diffusivity))
    return out
