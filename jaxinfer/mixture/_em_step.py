"""One EM step for a mixture of lymphatic-spread HMMs, as the map ``T`` of the solver
core's fixed-point iteration (:class:`jaxinfer.optimize.fixed_point.FixedPoint`).

``em_map((thetas, coefs), data) -> ((thetas_new, coefs_new), loglik, aux)``:

1. E-step at the input: the incomplete log-likelihood ``loglik`` and the responsibilities,
   from one evaluation of the component likelihoods (lymixture's zeroing of r <= 1e-8);
2. M-step: coefficients in closed form (mean responsibility per subgroup), then all
   components' parameters at once: bounded L-BFGS-B (``jaxinfer.optimize.minimize``) of
   ``-sum_i r_ik log L_ik(theta_k)`` on autodiff gradients, vmapped over components (with
   ``universal_p``, one fit of their sum with the time prior's parameters shared);
   ``aux = {"inner_nit": (K,), "inner_status": (K,)}`` from those fits.

The log-likelihood is the objective at the *input*, so FixedPoint's state holds ``x``,
``T(x)`` and ``loglik(x)`` of one evaluation, and its ``ftol``/``fatol`` test is EM's
``|l_new - l_old| <= atol + rtol |l_new|`` (lymixture's quickstart stop).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxinfer.mixture import _core
from jaxinfer.mixture._hmm import ModelSpec
from jaxinfer.optimize.minimize import minimize


def _m_step_one(theta, weights, spec, diagnosis, t_index, options):
    res = minimize(_core.component_objective, theta, args=(weights, spec, diagnosis, t_index),
                   method="L-BFGS-B", bounds=(0.0, 1.0), options=options)
    # jaxinfer's Status (failures >= 20): ``reason`` where minimize reports scipy's codes
    # in ``status``
    reason = getattr(res, "reason", None)
    return res.x, res.nit, res.status if reason is None else reason


def maximize_components(thetas, resp, spec: ModelSpec, data: _core.MixtureData, options: dict,
                        num_shared: int = 0):
    """All components' M-step at once: ``(thetas_new (K, d), nit (K,), status (K,))``.

    ``num_shared > 0`` (``universal_p``): the last ``num_shared`` parameters (the time
    prior's) are shared by all components, so the M-step is one bounded L-BFGS-B over every
    component's own parameters and the shared ones, of ``sum_k -sum_i r_ik log L_ik``;
    ``nit`` and ``status`` are that fit's, repeated per component."""
    if num_shared:
        return _maximize_shared(thetas, resp, spec, data, options, num_shared)

    def one(theta, weights):
        return _m_step_one(theta, weights, spec, data.diagnosis, data.t_index, options)

    return jax.vmap(one, in_axes=(0, 1))(thetas, resp)


def _tie(z, num_components: int, num_shared: int):
    """``(K, d)`` thetas from ``z = (own parameters of each component..., shared...)``."""
    own = z[: z.shape[0] - num_shared].reshape(num_components, -1)
    shared = jnp.broadcast_to(z[z.shape[0] - num_shared:], (num_components, num_shared))
    return jnp.concatenate([own, shared], axis=1)


def _shared_objective(z, resp, spec, diagnosis, t_index, num_components, num_shared):
    thetas = _tie(z, num_components, num_shared)
    per_component = jax.vmap(
        lambda theta, w: _core.component_objective(theta, w, spec, diagnosis, t_index),
        in_axes=(0, 1))(thetas, resp)
    return jnp.sum(per_component)


def _maximize_shared(thetas, resp, spec, data, options, num_shared):
    k, d = thetas.shape
    # the shared parameters start from their mean (equal in every component after set_params)
    z0 = jnp.concatenate([thetas[:, : d - num_shared].ravel(),
                          jnp.mean(thetas[:, d - num_shared:], axis=0)])
    res = minimize(_shared_objective, z0,
                   args=(resp, spec, data.diagnosis, data.t_index, k, num_shared),
                   method="L-BFGS-B", bounds=(0.0, 1.0), options=options)
    reason = getattr(res, "reason", None)
    status = res.status if reason is None else reason
    return (_tie(res.x, k, num_shared), jnp.full((k,), res.nit, jnp.int32),
            jnp.full((k,), status, jnp.int32))


def inner_options(dtype, ftol=None, gtol=None, maxiter=200) -> dict:
    """L-BFGS-B settings for the M-step; the defaults are scipy's in float64 and loosened to
    what float32 can resolve (ftol ~ 100 eps) in float32."""
    eps = float(jnp.finfo(dtype).eps)
    return {"ftol": max(2.2e-9, 100 * eps) if ftol is None else ftol,
            "gtol": (1e-5 if eps < 1e-10 else 1e-2) if gtol is None else gtol,
            "maxiter": int(maxiter)}


def project(thetas, coefs):
    """The nearest valid parameters of a SQUAREM extrapolation: ``thetas`` clipped to
    [0, 1], ``coefs`` clipped at 0 and renormalised over components (identity on valid
    input up to rounding; a column of zeros gives NaN, and SQUAREM falls back)."""
    coefs = jnp.clip(coefs, 0.0, None)
    return jnp.clip(thetas, 0.0, 1.0), coefs / jnp.sum(coefs, axis=0, keepdims=True)


def em_map(x, data: _core.MixtureData, spec: ModelSpec, num_groups: int, inner: tuple,
           projected: bool = False, num_shared: int = 0):
    """``T`` of EM: ``x = (thetas (K, d), coefs (K, G))`` -> ``(x_new, loglik(x), aux)``
    (see the module docstring). ``inner``: L-BFGS-B options as sorted ``(name, value)``
    pairs; ``projected``: evaluate at :func:`project` of ``x`` (for SQUAREM);
    ``num_shared``: time-prior parameters shared by the components (``universal_p``)."""
    thetas, coefs = project(*x) if projected else x
    loglik, resp = _core.e_step(thetas, coefs, spec, data)
    coefs_new = _core.infer_coefs(resp, data, num_groups)
    thetas_new, nit, status = maximize_components(thetas, resp, spec, data, dict(inner),
                                                  num_shared)
    aux = {"inner_nit": nit.astype(jnp.int32), "inner_status": status.astype(jnp.int32)}
    return (thetas_new, coefs_new), loglik, aux


__all__ = ["em_map", "project", "maximize_components", "inner_options"]
