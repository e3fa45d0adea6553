"""One EM step for a mixture of lymphatic-spread HMMs, as the map ``T`` of the solver
core's fixed-point iteration (:class:`jaxinfer.optimize.fixed_point.FixedPoint`).

``em_map((thetas, coefs), data) -> ((thetas_new, coefs_new), loglik, aux)``:

1. E-step at the input: the incomplete log-likelihood ``loglik`` and the responsibilities,
   from one evaluation of the component likelihoods (lymixture's zeroing of r <= 1e-8);
2. M-step: coefficients in closed form (mean responsibility per subgroup), then all
   components' parameters at once: bounded L-BFGS-B (``jaxinfer.optimize.minimize``) of
   ``-sum_i r_ik log L_ik(theta_k)`` on autodiff gradients, vmapped over components;
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


def maximize_components(thetas, resp, spec: ModelSpec, data: _core.MixtureData, options: dict):
    """All components' M-step at once: ``(thetas_new (K, d), nit (K,), status (K,))``."""
    def one(theta, weights):
        return _m_step_one(theta, weights, spec, data.diagnosis, data.t_index, options)

    return jax.vmap(one, in_axes=(0, 1))(thetas, resp)


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
           projected: bool = False):
    """``T`` of EM: ``x = (thetas (K, d), coefs (K, G))`` -> ``(x_new, loglik(x), aux)``
    (see the module docstring). ``inner``: L-BFGS-B options as sorted ``(name, value)``
    pairs; ``projected``: evaluate at :func:`project` of ``x`` (for SQUAREM)."""
    thetas, coefs = project(*x) if projected else x
    loglik, resp = _core.e_step(thetas, coefs, spec, data)
    coefs_new = _core.infer_coefs(resp, data, num_groups)
    thetas_new, nit, status = maximize_components(thetas, resp, spec, data, dict(inner))
    aux = {"inner_nit": nit.astype(jnp.int32), "inner_status": status.astype(jnp.int32)}
    return (thetas_new, coefs_new), loglik, aux


__all__ = ["em_map", "project", "maximize_components", "inner_options"]
