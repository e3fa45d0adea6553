"""Expectation propagation for latent Gaussian models, as pure JAX functions.

Model: latent ``z ~ N(m, K)`` (prior mean ``m``, covariance ``K``, both ``(n,)``/``(n, n)``),
observations ``y_i ~ p(y_i | z_i)`` from a likelihood in :mod:`jaxinfer.glmm.lik`. EP replaces
each ``p(y_i | z_i)`` by a Gaussian site ``exp(η̃_i z_i - τ̃_i z_i²/2)`` (natural parameters
``sites.eta``, ``sites.tau``).

The algorithm follows glimix-core 3.1.14 (``glimix_core._ep``):

* **parallel** updates: every site is refreshed from the same posterior, then the posterior is
  recomputed once (one Cholesky per sweep);
* **undamped** by default (``damping=0``); ``damping=d`` mixes ``d`` of the old natural
  parameters into each update (an addition, off by default);
* cavity precisions are floored at ``tiny = 2.2e-16`` (numpy-sugar's ``epsilon.tiny``) so
  they stay positive; new site precisions are floored at 0;
* stopping rule: stop when ``‖τ̃_new - τ̃_old‖ ≤ rtol·min(‖τ̃_old‖, ‖τ̃_new‖) + atol``, with
  ``rtol`` multiplied by 10 after sweeps 9, 19, 29, ... and at most ``max_iter`` (100) sweeps;
* sweeps start from ``init_sites`` (zero sites by default; the classes warm-start from the
  previous fit as glimix-core does).

Differences from glimix-core, on purpose:

* the tilted moments come from a JAX quadrature (:mod:`jaxinfer.glmm._moments`), not liknorm;
* the posterior uses a Cholesky factor of ``B = I + T̃^½ K T̃^½`` (eigenvalues ≥ 1, safe in
  float32) instead of an LU factor on the eigenbasis of ``K``;
* the marginal likelihood is evaluated at the returned sites with their own cavities
  (glimix-core reuses the cavities of the sweep before the last one); the two differ by the
  EP tolerance, and ours is a function of the sites alone;
* glimix-core loosens ``rtol`` on the EP object permanently (the 10× steps accumulate over
  calls); here each call starts from the ``rtol`` it is given;
* reaching ``max_iter`` is reported (``status=Status.MAX_ITER``, ``success=False``) instead
  of raising.

Gradients: :func:`ep_log_marginal_likelihood` treats the sites as constants and differentiates
everything else (prior → posterior → cavities → tilted normalisers) by autodiff. At an EP fixed
point the EP marginal likelihood is stationary in the sites, so this is the total derivative
(the identity glimix-core's analytic gradient relies on too). :func:`expectation_propagation_lml`
runs EP under ``stop_gradient`` and attaches the same derivative in closed form
(:func:`_lml_jvp`: the Gaussian normaliser's ``αᵀdm + ½αᵀdKα - ½tr(W dK)`` plus the cavity
terms, which vanish at the fixed point), from the last sweep's posterior: a few matrix products
instead of a backward pass through the Cholesky factor and the quadrature (~8x cheaper at
n = 300). ``jax.grad`` and ``jax.jvp`` of it with respect to ``prior_mean`` / ``prior_cov``
(and anything they are built from) work; it jits and vmaps. Higher derivatives are not
provided.

The lml and its derivative come from the last sweep's own posterior, cavities and tilted
moments: the loop returns the sites *before* its last step (the one that passed the stopping
rule), so no extra posterior / moments pass follows the loop.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.linalg import cho_solve, solve_triangular

from jaxinfer.glmm._moments import clamp_cavity_precision
from jaxinfer.glmm.lik import Likelihood
from jaxinfer.optimize.result import Status, is_success, status_message

__all__ = [
    "EPSites",
    "EPPosterior",
    "EPResult",
    "EPOptions",
    "zero_sites",
    "ep_posterior",
    "ep_log_marginal_likelihood",
    "expectation_propagation",
    "expectation_propagation_lml",
    "expectation_propagation_lml_scaled",
]

# numpy_sugar.epsilon.tiny, the floor glimix-core puts under cavity precisions
CAVITY_TINY = 2.220446049250313e-16


class EPSites(NamedTuple):
    """Site natural parameters: ``eta = μ̃/σ̃²`` and ``tau = 1/σ̃²`` (both ``(n,)``)."""

    eta: jnp.ndarray
    tau: jnp.ndarray


class EPPosterior(NamedTuple):
    """Gaussian approximation ``N(mean, Σ)`` and the pieces the marginal likelihood needs."""

    mean: jnp.ndarray        # (n,) posterior mean
    variance: jnp.ndarray    # (n,) diag(Σ)
    chol: jnp.ndarray        # (n, n) lower Cholesky factor L of B = I + T̃^½ K T̃^½
    quad: jnp.ndarray        # () rᵀ Σ r with r = η̃ - τ̃ m
    alpha: jnp.ndarray       # (n,) (K + T̃⁻¹)⁻¹ (μ̃ - m) = r - T̃ Σ r
    scaled: jnp.ndarray      # (n, n) L⁻¹ T̃^½ K, so Σ = K - scaledᵀ scaled
    b_inv_diag: jnp.ndarray  # (n,) diag(B⁻¹) = 1 - τ̃ᵢ Σᵢᵢ


class EPResult(NamedTuple):
    """Outcome of :func:`expectation_propagation` (a pytree; jits and vmaps)."""

    sites: EPSites
    cavity_eta: jnp.ndarray   # (n,) cavities of the final posterior
    cavity_tau: jnp.ndarray
    posterior_mean: jnp.ndarray
    posterior_variance: jnp.ndarray
    log_marginal_likelihood: jnp.ndarray
    n_iter: jnp.ndarray       # sweeps done
    status: jnp.ndarray       # Status code: XTOL (stopping rule passed), MAX_ITER, NONFINITE
    last_step: jnp.ndarray    # ‖τ̃_new - τ̃_old‖ of the last sweep

    @property
    def success(self) -> jnp.ndarray:
        """Bool array: the stopping rule passed before ``max_iter`` (from :attr:`status`)."""
        return is_success(self.status)

    @property
    def converged(self) -> jnp.ndarray:
        """Same as :attr:`success`."""
        return self.success

    @property
    def message(self):
        """Why EP stopped (str, or an array of str for a batch)."""
        return status_message(self.status)


class EPOptions(eqx.Module):
    """Settings of the EP loop (glimix-core's defaults)."""

    rtol: float = 1.49e-05
    atol: float = 1.49e-08
    max_iter: int = eqx.field(static=True, default=100)
    damping: float = 0.0


def zero_sites(n: int, dtype=None) -> EPSites:
    """Sites with zero natural parameters (the prior itself): the cold start."""
    dtype = jnp.result_type(float) if dtype is None else dtype
    return EPSites(jnp.zeros((n,), dtype), jnp.zeros((n,), dtype))


def placeholder_result(sites: EPSites) -> EPResult:
    """An :class:`EPResult` of zeros around ``sites`` (shapes and dtypes of a real one): the
    first value of a loop that carries EP results."""
    zeros = jnp.zeros_like(sites.tau)
    scalar = jnp.zeros((), sites.tau.dtype)
    return EPResult(sites, zeros, zeros, zeros, zeros, scalar, jnp.asarray(0),
                    jnp.asarray(0, jnp.int32), scalar)


# largest τ̃ᵢKᵢᵢ for which ep_posterior's default float64 route takes Σᵢᵢ = Kᵢᵢ - ‖AK eᵢ‖²
# (relative rounding error ~eps·τ̃ᵢKᵢᵢ in Σᵢᵢ, ~eps·(τ̃ᵢKᵢᵢ)² in [B⁻¹]ᵢᵢ: 1e-14 / 2e-12 here)
SOLVE_ROUTE_MAX_TAU_K = 100.0


def ep_posterior(prior_mean, prior_cov, sites: EPSites,
                 inverse: Optional[bool] = None) -> EPPosterior:
    """Posterior marginals of ``N(z | m, K) · Π exp(η̃ᵢ zᵢ - τ̃ᵢ zᵢ²/2)``.

    Uses ``B = I + T̃^½ K T̃^½ = L Lᵀ`` and ``AK = L⁻¹ T̃^½ K``, so ``Σ = K - (AK)ᵀ(AK)``.
    Two routes to ``AK``, ``diag(Σ)`` and ``diag(B⁻¹)``:

    * the inverse (``inverse=True``): ``L⁻¹`` first (a solve against ``I``, then a product),
      so ``[B⁻¹]ᵢᵢ = ‖L⁻¹ eᵢ‖²`` is accurate when small and strong sites take
      ``Σᵢᵢ = (1 - [B⁻¹]ᵢᵢ)/τ̃ᵢ``: no cancellation (float32 needs this, and so do the lml's
      derivatives when sites are strong, ``τ̃ᵢKᵢᵢ ≫ 1``);
    * the solve (``inverse=False``): ``AK`` by one triangular solve with ``T̃^½K`` as
      right-hand side (1.5x faster at n = 300), ``Σᵢᵢ = Kᵢᵢ - ‖AK eᵢ‖²`` and
      ``[B⁻¹]ᵢᵢ = 1 - τ̃ᵢΣᵢᵢ``, whose relative rounding errors are ``~eps·τ̃ᵢKᵢᵢ`` and
      ``~eps·(τ̃ᵢKᵢᵢ)²``.

    ``inverse=None`` (default): the solve in float64 while every ``τ̃ᵢKᵢᵢ`` is at most
    :data:`SOLVE_ROUTE_MAX_TAU_K`, the inverse otherwise.
    """
    n = prior_mean.shape[0]
    dtype = prior_mean.dtype
    eye = jnp.eye(n, dtype=dtype)
    root = jnp.sqrt(sites.tau)
    b_matrix = eye + root[:, None] * prior_cov * root[None, :]
    chol = jnp.linalg.cholesky(b_matrix)
    k_diag = jnp.diagonal(prior_cov)

    def by_inverse(_):
        chol_inv = solve_triangular(chol, eye, lower=True)
        scaled = (chol_inv * root[None, :]) @ prior_cov                  # L⁻¹ T̃^½ K
        b_inv_diag = jnp.sum(chol_inv ** 2, axis=0)
        var_direct = k_diag - jnp.sum(scaled ** 2, axis=0)
        safe_tau = jnp.where(sites.tau > 0, sites.tau, 1.0)
        var_site = (1.0 - b_inv_diag) / safe_tau
        variance = jnp.where((b_inv_diag < 0.5) & (sites.tau > 0), var_site, var_direct)
        return scaled, variance, b_inv_diag

    def by_solve(_):
        scaled = solve_triangular(chol, root[:, None] * prior_cov, lower=True)
        variance = k_diag - jnp.sum(scaled ** 2, axis=0)
        return scaled, variance, 1.0 - sites.tau * variance

    if inverse is None and dtype == jnp.float64:
        solve_ok = jnp.max(sites.tau * k_diag) <= SOLVE_ROUTE_MAX_TAU_K
        scaled, variance, b_inv_diag = jax.lax.cond(solve_ok, by_solve, by_inverse, None)
    elif inverse is False:
        scaled, variance, b_inv_diag = by_solve(None)
    else:
        scaled, variance, b_inv_diag = by_inverse(None)
    resid = sites.eta - sites.tau * prior_mean
    k_resid = prior_cov @ resid
    sigma_resid = k_resid - scaled.T @ (scaled @ resid)
    mean = prior_mean + sigma_resid
    quad = resid @ sigma_resid
    alpha = resid - sites.tau * sigma_resid
    return EPPosterior(mean, variance, chol, quad, alpha, scaled, b_inv_diag)


def _cavities(posterior: EPPosterior, sites: EPSites):
    dtype = posterior.mean.dtype
    tiny = jnp.asarray(CAVITY_TINY if dtype == jnp.float64 else jnp.finfo(dtype).tiny, dtype)
    cavity_tau = jnp.maximum(1.0 / posterior.variance - sites.tau, tiny)
    cavity_eta = posterior.mean / posterior.variance - sites.eta
    return cavity_eta, cavity_tau


def _lml_from_parts(prior_mean, posterior: EPPosterior, sites: EPSites, cavity_eta, cavity_tau,
                    log_zeroth):
    """EP log marginal likelihood (Rasmussen & Williams eq. 3.65, written in shifted form)."""
    log_det_b = 2.0 * jnp.sum(jnp.log(jnp.diagonal(posterior.chol)))
    resid = sites.eta - sites.tau * prior_mean           # site natural mean about the prior
    cav_resid = cavity_eta - cavity_tau * prior_mean     # cavity natural mean about the prior
    total_tau = cavity_tau + sites.tau
    cavity_terms = (0.5 * jnp.log1p(sites.tau / cavity_tau)
                    + 0.5 * cav_resid ** 2 * sites.tau / (cavity_tau * total_tau)
                    - cav_resid * resid / total_tau
                    - 0.5 * resid ** 2 / total_tau)
    return -0.5 * log_det_b + 0.5 * posterior.quad + jnp.sum(log_zeroth) + jnp.sum(cavity_terms)


def ep_log_marginal_likelihood(prior_mean, prior_cov, likelihood: Likelihood, outcome, trials,
                               sites: EPSites, return_parts: bool = False):
    """EP approximation of ``log p(y)`` given the sites (differentiable in the prior).

    Parameters
    ----------
    prior_mean : (n,) array
    prior_cov : (n, n) array, symmetric positive semi-definite
    likelihood : Likelihood
    outcome, trials : (n,) arrays (trials are ignored unless the likelihood needs them)
    sites : EPSites, usually ``expectation_propagation(...).sites``
    return_parts : also return ``(posterior, cavity_eta, cavity_tau)``

    Returns
    -------
    () array: the EP log marginal likelihood, in nats (and the parts when asked).
    """
    posterior = ep_posterior(prior_mean, prior_cov, sites, inverse=True)
    cavity_eta, cavity_tau = _cavities(posterior, sites)
    log_zeroth, _, _ = likelihood.moments(outcome, trials, cavity_eta, cavity_tau)
    lml = _lml_from_parts(prior_mean, posterior, sites, cavity_eta, cavity_tau, log_zeroth)
    if return_parts:
        return lml, (posterior, cavity_eta, cavity_tau)
    return lml


def _prepare(prior_mean, prior_cov, outcome, trials):
    prior_mean = jnp.asarray(prior_mean)
    dtype = jnp.result_type(prior_mean, prior_cov, jnp.float32)
    n = prior_mean.shape[0]
    prior_mean = prior_mean.astype(dtype)
    prior_cov = jnp.asarray(prior_cov, dtype)
    outcome = jnp.asarray(outcome, dtype)
    trials = jnp.ones((n,), dtype) if trials is None else jnp.asarray(trials, dtype)
    return prior_mean, prior_cov, outcome, trials, dtype


def _sweep_parts(prior_mean, prior_cov, likelihood, outcome, trials, sites):
    """One EP sweep from ``sites``: the lml at ``sites`` and its gradient pieces, and the
    refreshed (undamped) sites. Returns ``(new_eta, new_tau, _Parts)``."""
    posterior = ep_posterior(prior_mean, prior_cov, sites)
    cavity_eta, cavity_tau = _cavities(posterior, sites)
    log_zeroth, mean, variance = likelihood.moments(outcome, trials, cavity_eta, cavity_tau)
    lml = _lml_from_parts(prior_mean, posterior, sites, cavity_eta, cavity_tau, log_zeroth)
    new_tau = jnp.maximum(1.0 / variance - cavity_tau, 0.0)
    new_eta = mean / variance - cavity_eta
    h_mean, h_var = _cavity_sensitivity(posterior, sites, cavity_eta, cavity_tau, mean,
                                        variance)
    parts = _Parts(lml, posterior.alpha, posterior.scaled, posterior.b_inv_diag, sites.tau,
                   h_mean, h_var, cavity_eta, cavity_tau, posterior.mean, posterior.variance)
    return new_eta, new_tau, parts


def _cavity_sensitivity(posterior, sites, cavity_eta, cavity_tau, tilted_mean, tilted_var):
    """``(h_mean, h_var)`` (n,) each: derivatives of the lml's cavity part (sites fixed) with
    respect to the posterior marginal means ``μᵢ`` and variances ``vᵢ``.

    The cavity part is ``Σᵢ log Zᵢ(cᵢ) - A(cᵢ + sᵢ) + A(cᵢ)`` (``A`` the Gaussian
    log-partition in natural parameters, ``c`` the cavity, ``s`` the site). By the moment
    identity of ``log Z``, ``∂/∂η_c = m_t - μ`` and ``∂/∂τ_c = ½(μ² + v - m_t² - v_t)`` (``m_t``,
    ``v_t`` the tilted moments): both vanish at an EP fixed point. The cavity floors
    (``CAVITY_TINY`` here, liknorm's in the moments) are honoured: a floored precision does not
    move. Then ``η_c = μ/v - η̃``, ``τ_c = 1/v - τ̃``.
    """
    mu, v = posterior.mean, posterior.variance
    tau_q = clamp_cavity_precision(cavity_tau)      # the precision the moments used
    mean_q = cavity_eta / tau_q
    mean_c = cavity_eta / cavity_tau
    h_eta = tilted_mean - mean_q + mean_c - mu
    second_t = tilted_var + tilted_mean ** 2
    d_log_z = jnp.where(tau_q > cavity_tau, 0.0,
                        -0.5 * second_t + 0.5 * mean_c ** 2 + 0.5 / cavity_tau)
    h_tau = d_log_z + 0.5 * (mu ** 2 + v) - 0.5 * mean_c ** 2 - 0.5 / cavity_tau
    moves = 1.0 / v - sites.tau > cavity_tau * (1.0 - 1e-12)   # not floored in _cavities
    h_tau = jnp.where(moves, h_tau, 0.0)
    return h_eta / v, -(h_eta * mu + h_tau) / v ** 2


class _Parts(NamedTuple):
    lml: jnp.ndarray
    alpha: jnp.ndarray
    scaled: jnp.ndarray
    b_inv_diag: jnp.ndarray
    tau: jnp.ndarray
    h_mean: jnp.ndarray
    h_var: jnp.ndarray
    cavity_eta: jnp.ndarray
    cavity_tau: jnp.ndarray
    posterior_mean: jnp.ndarray
    posterior_variance: jnp.ndarray


def _ep_loop(prior_mean, prior_cov, likelihood, outcome, trials, init_sites, options):
    """The EP sweeps (no gradient).

    Each sweep computes the posterior, cavities and tilted moments at the current sites, hence
    the lml there, and the next sites. The loop stops when the step to the next sites passes
    the stopping rule and returns the sites *before* that step with their own lml and
    posterior (so no extra posterior / moments pass is needed after the loop, and the lml is
    still a function of the returned sites alone).

    Returns ``(sites, _Parts, n_iter, status, last_step)``.
    """
    dtype = prior_mean.dtype
    n = prior_mean.shape[0]
    prior_mean = jax.lax.stop_gradient(prior_mean)
    prior_cov = jax.lax.stop_gradient(prior_cov)
    sites = zero_sites(n, dtype) if init_sites is None else EPSites(
        jnp.asarray(init_sites.eta, dtype), jnp.asarray(init_sites.tau, dtype))
    sites = jax.lax.stop_gradient(sites)
    rtol0 = jnp.asarray(options.rtol, dtype)
    atol = jnp.asarray(options.atol, dtype)
    damping = jnp.asarray(options.damping, dtype)

    def sweep(sites):
        new_eta, new_tau, parts = _sweep_parts(prior_mean, prior_cov, likelihood, outcome,
                                               trials, sites)
        new_tau = (1.0 - damping) * new_tau + damping * sites.tau
        new_eta = (1.0 - damping) * new_eta + damping * sites.eta
        return EPSites(new_eta, new_tau), parts

    def cond(state):
        i, _, _, _, step, tol, _ = state
        return (i < options.max_iter) & (step > tol)

    def body(state):
        i, _, current, _, _, _, rtol = state
        new, parts = sweep(current)
        step = jnp.linalg.norm(new.tau - current.tau)
        tol = rtol * jnp.minimum(jnp.linalg.norm(current.tau), jnp.linalg.norm(new.tau)) + atol
        # a sweep that produced NaNs stops the loop (reported as not converged)
        bad = ~(jnp.all(jnp.isfinite(new.tau)) & jnp.all(jnp.isfinite(new.eta)))
        step = jnp.where(bad, jnp.asarray(jnp.inf, dtype), step)
        tol = jnp.where(bad, jnp.asarray(jnp.inf, dtype), tol)
        i = i + 1
        rtol = jnp.where(i % 10 == 9, rtol * 10.0, rtol)
        return i, current, new, parts, step, tol, rtol

    zeros = jnp.zeros((n,), dtype)
    parts0 = _Parts(jnp.zeros((), dtype), zeros, jnp.zeros((n, n), dtype),
                    *([zeros] * (len(_Parts._fields) - 3)))
    inf = jnp.asarray(jnp.inf, dtype)
    state = (jnp.asarray(0), sites, sites, parts0, inf, -inf, rtol0)
    n_iter, sites, _, parts, step, tol, _ = jax.lax.while_loop(cond, body, state)
    status = jnp.where(~jnp.isfinite(step), int(Status.NONFINITE),
                       jnp.where(step <= tol, int(Status.XTOL), int(Status.MAX_ITER)))
    return sites, parts, n_iter, status.astype(jnp.int32), step


def _posterior_matrices(prior_cov, parts):
    """``(Σ, P, W)`` (n, n) each from a sweep's parts: ``Σ = K - (AK)ᵀ(AK)`` (one matrix
    product; its diagonal from the posterior, no cancellation for strong sites),
    ``P = I - ΣT̃`` and ``W = (K + T̃⁻¹)⁻¹ = T̃ - T̃ΣT̃`` elementwise, their diagonals
    ``[B⁻¹]ᵢᵢ`` and ``τ̃ᵢ[B⁻¹]ᵢᵢ``."""
    n = prior_cov.shape[0]
    tau, b_inv_diag = parts.tau, parts.b_inv_diag
    diag = jnp.arange(n)
    sigma = prior_cov - parts.scaled.T @ parts.scaled
    sigma = sigma.at[diag, diag].set(parts.posterior_variance)
    sigma_tau = sigma * tau[None, :]
    proj = (-sigma_tau).at[diag, diag].set(b_inv_diag)
    w_matrix = (-(tau[:, None] * sigma_tau)).at[diag, diag].set(tau * b_inv_diag)
    return sigma, proj, w_matrix


def _general_weight(proj, w_matrix, h_var):
    """``Pᵀ diag(h_var) P - ½W`` (n, n): the lml's derivative in ``K`` beyond ``αα``
    (two more n×n products)."""
    return (proj.T * h_var[None, :]) @ proj - 0.5 * w_matrix


@jax.custom_jvp
def _lml_with_derivative(prior_mean, prior_cov, parts):
    """``parts.lml`` with its derivative in the prior attached (see :func:`_lml_jvp`)."""
    return parts.lml


@_lml_with_derivative.defjvp
def _lml_jvp(primals, tangents):
    """Derivative of the lml with the sites held fixed, in closed form.

    ``lml = G(m, K) + H(μ, v)``: ``G = log ∫ N(z|m, K) Π exp(η̃ᵢzᵢ - τ̃ᵢzᵢ²/2) dz``, whose
    differential is ``αᵀdm + ½αᵀdKα - ½tr(W dK)`` with ``W = (K + T̃⁻¹)⁻¹ = AᵀA`` and
    ``α = W(μ̃ - m)`` (Rasmussen & Williams 2006, eq. 5.27), plus the cavity part ``H`` of the
    posterior marginals (:func:`_cavity_sensitivity`), which moves with
    ``dμ = P(dm + dK α)`` and ``dv = diag(P dK Pᵀ)``, ``P = I - ΣT̃``. At an EP fixed point
    ``∂H = 0`` and only ``G`` is left; away from it the ``H`` terms keep the derivative equal
    to autodiff of :func:`ep_log_marginal_likelihood`. A derivative in a general ``dK`` costs
    three n×n products (:func:`_posterior_matrices`, :func:`_general_weight`); they are formed
    only here, i.e. only when a derivative is asked for.
    """
    prior_mean, prior_cov, parts = primals
    d_mean, d_cov = tangents[0], tangents[1]
    _, proj, w_matrix = _posterior_matrices(prior_cov, parts)
    g = proj.T @ parts.h_mean
    weight = _general_weight(proj, w_matrix, parts.h_var)
    d_lml = ((parts.alpha + g) @ d_mean + (0.5 * parts.alpha + g) @ (d_cov @ parts.alpha)
             + jnp.sum(weight * d_cov))
    return parts.lml, d_lml


def _dense_tangent(tangent, primal):
    if isinstance(tangent, jax.custom_derivatives.SymbolicZero):
        return jnp.zeros(jnp.shape(primal), jnp.result_type(primal))
    return tangent


@jax.custom_jvp
def _scaled_lml_with_derivative(prior_mean, kernel, v0, v1, parts):
    """``parts.lml`` for the prior ``N(m, v0·kernel + v1·I)``, derivative attached (see
    :func:`_scaled_lml_jvp`)."""
    return parts.lml


def _scaled_lml_jvp(primals, tangents):
    """:func:`_lml_jvp` for ``K = v0·kernel + v1·I``, ``dK = dv0·kernel + dv1·I``: every term
    is a trace or a diagonal of a product of two n×n matrices already formed, so after
    ``Σ`` (one n×n product) the derivative costs O(n²):

    * ``tr(W kernel) = Σᵢⱼ Wᵢⱼ kernelᵢⱼ``, ``tr(W) = Σᵢ τ̃ᵢ[B⁻¹]ᵢᵢ``;
    * ``diag(P Pᵀ)ᵢ = Σⱼ Pᵢⱼ²`` and ``diag(P kernel Pᵀ) = (diag(ΣPᵀ) - v1·diag(PPᵀ))/v0``
      (``PK = Σ``); these enter only through the cavity sensitivities ``h_var``, which
      vanish at the fixed point, so the cancellation for small ``v0`` stays at rounding
      level (and ``v0 = 0`` drops them).

    A tangent in ``kernel`` itself (not used by the GLMM fit) takes the general rule's
    n×n products.
    """
    prior_mean, kernel, v0, v1, parts = primals
    d_mean = _dense_tangent(tangents[0], prior_mean)
    d_v0 = _dense_tangent(tangents[2], v0)
    d_v1 = _dense_tangent(tangents[3], v1)
    n = prior_mean.shape[0]
    alpha, tau = parts.alpha, parts.tau
    prior_cov = v0 * kernel + v1 * jnp.eye(n, dtype=kernel.dtype)
    sigma, proj, w_matrix = _posterior_matrices(prior_cov, parts)
    g = proj.T @ parts.h_mean
    kernel_alpha = kernel @ alpha
    pp_diag = jnp.sum(proj ** 2, axis=1)                       # diag(P Pᵀ)
    sp_diag = jnp.sum(sigma * proj, axis=1)                    # diag(Σ Pᵀ) = diag(P K Pᵀ)
    safe_v0 = jnp.where(v0 > 0, v0, 1.0)
    pkp_diag = jnp.where(v0 > 0, (sp_diag - v1 * pp_diag) / safe_v0, 0.0)
    half_alpha_g = 0.5 * alpha + g
    coef_v0 = (half_alpha_g @ kernel_alpha - 0.5 * jnp.sum(w_matrix * kernel)
               + parts.h_var @ pkp_diag)
    coef_v1 = half_alpha_g @ alpha - 0.5 * jnp.sum(tau * parts.b_inv_diag) + parts.h_var @ pp_diag
    d_lml = (alpha + g) @ d_mean + coef_v0 * d_v0 + coef_v1 * d_v1
    if not isinstance(tangents[1], jax.custom_derivatives.SymbolicZero):
        d_cov = v0 * tangents[1]
        weight = _general_weight(proj, w_matrix, parts.h_var)
        d_lml = d_lml + half_alpha_g @ (d_cov @ alpha) + jnp.sum(weight * d_cov)
    return parts.lml, d_lml


_scaled_lml_with_derivative.defjvp(_scaled_lml_jvp, symbolic_zeros=True)


def expectation_propagation(prior_mean, prior_cov, likelihood: Likelihood, outcome, trials=None,
                            init_sites: Optional[EPSites] = None,
                            options: Optional[EPOptions] = None) -> EPResult:
    """Run EP to its stopping rule. Pure; jits and vmaps (no gradient flows through the loop).

    Parameters
    ----------
    prior_mean : (n,) array; prior_cov : (n, n) array
    likelihood : Likelihood
    outcome : (n,) array; trials : (n,) array or None (ones)
    init_sites : EPSites or None (zeros)
    options : EPOptions or None (glimix-core's rtol 1.49e-5, atol 1.49e-8, 100 sweeps, undamped)

    Returns
    -------
    EPResult with the final sites, cavities, posterior marginals and log marginal likelihood.
    """
    lml, result = expectation_propagation_lml(prior_mean, prior_cov, likelihood, outcome,
                                              trials, init_sites=init_sites, options=options)
    return result


def expectation_propagation_lml(prior_mean, prior_cov, likelihood: Likelihood, outcome,
                                trials=None, init_sites: Optional[EPSites] = None,
                                options: Optional[EPOptions] = None):
    """``(lml, EPResult)``: EP run to convergence, ``lml`` differentiable in the prior.

    ``jax.grad`` (or ``jax.jvp``) of the first output with respect to ``prior_mean`` /
    ``prior_cov`` (or parameters they are built from) is the gradient of the EP log marginal
    likelihood at the fixed point, in closed form from the final posterior (the sites held at
    their converged values; see the module docstring). It is exact at the fixed point, and
    equal to autodiff of :func:`ep_log_marginal_likelihood` with the sites held fixed.
    """
    prior_mean, prior_cov, outcome, trials, _ = _prepare(prior_mean, prior_cov, outcome, trials)
    parts, result = _run(prior_mean, prior_cov, likelihood, outcome, trials, init_sites, options)
    return _lml_with_derivative(prior_mean, prior_cov, parts), result


def expectation_propagation_lml_scaled(prior_mean, kernel, v0, v1, likelihood: Likelihood,
                                       outcome, trials=None,
                                       init_sites: Optional[EPSites] = None,
                                       options: Optional[EPOptions] = None):
    """:func:`expectation_propagation_lml` for the prior ``N(m, v0·kernel + v1·I)``.

    Parameters: ``prior_mean`` (n,), ``kernel`` (n, n) symmetric PSD, ``v0``, ``v1`` ()
    non-negative; the rest as :func:`expectation_propagation_lml`. Same sweeps, same ``(lml,
    EPResult)``; the derivative in ``prior_mean``, ``v0`` and ``v1`` costs one n×n product
    instead of three (:func:`_scaled_lml_jvp`), which is what a GLMM fit differentiates.
    """
    prior_mean = jnp.asarray(prior_mean)
    dtype = jnp.result_type(prior_mean, kernel, v0, v1, jnp.float32)
    kernel = jnp.asarray(kernel, dtype)
    v0 = jnp.asarray(v0, dtype)
    v1 = jnp.asarray(v1, dtype)
    n = kernel.shape[0]
    prior_cov = v0 * kernel + v1 * jnp.eye(n, dtype=dtype)
    prior_mean, prior_cov, outcome, trials, _ = _prepare(prior_mean, prior_cov, outcome, trials)
    parts, result = _run(prior_mean, prior_cov, likelihood, outcome, trials, init_sites, options)
    return _scaled_lml_with_derivative(prior_mean, kernel, v0, v1, parts), result


def _run(prior_mean, prior_cov, likelihood, outcome, trials, init_sites, options):
    """The sweeps under ``stop_gradient``: ``(_Parts, EPResult)``."""
    options = EPOptions() if options is None else options
    sites, parts, n_iter, status, step = _ep_loop(prior_mean, prior_cov, likelihood, outcome,
                                                  trials, init_sites, options)
    sites = jax.lax.stop_gradient(sites)
    parts = jax.lax.stop_gradient(parts)
    result = EPResult(sites, parts.cavity_eta, parts.cavity_tau, parts.posterior_mean,
                      parts.posterior_variance, parts.lml, n_iter, status, step)
    return parts, result
