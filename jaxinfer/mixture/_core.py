"""The mixture of unilateral HMMs as pure JAX functions (lymixture 0.0.2's formulas).

Shapes: ``K`` components, ``G`` subgroups, ``P`` patients (subgroups concatenated in sorted
label order), ``S`` hidden states, ``d`` parameters per component.

* ``thetas (K, d)``: each component's parameters in ``ModelSpec.param_names`` order.
* ``coefs (K, G)``: mixture coefficients, columns sum to 1.
* :class:`MixtureData`: ``diagnosis (P, S)`` (``(P, 2, S)``, ipsi and contra, for
  Bilateral components), ``t_index (P,)`` (-1: T-stage without a time
  prior; such patients are left out of every sum), ``group (P,)`` subgroup index.

``L_ik = spec.likelihoods(theta_k, ...)_i`` (Unilateral: ``pi_{tau_i}(theta_k) . Delta_i``;
Bilateral: ``sum_t p(t) (D^ipsi_i . P^ipsi_t)(D^contra_i . P^contra_t)``); incomplete log-likelihood
``sum_i log sum_k coefs[k, g_i] L_ik``; complete log-likelihood
``sum_i sum_k r_ik (log coefs[k, g_i] + log L_ik)`` with ``0 * log 0 = 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from jaxinfer.mixture._hmm import ModelSpec

# lymixture's utils.normalize: np.isclose(r, 0) (atol 1e-8) -> exactly 0, then renormalise
ZERO_ATOL = 1e-8


class MixtureData(NamedTuple):
    """The arrays a mixture likelihood needs (see the module docstring for shapes)."""

    diagnosis: jnp.ndarray
    t_index: jnp.ndarray
    group: jnp.ndarray

    @property
    def valid(self):
        return self.t_index >= 0


def component_likelihoods(thetas, spec: ModelSpec, data: MixtureData):
    """``(P, K)`` ``L_ik``; rows of patients without a time prior are 1 (they drop out)."""
    lik = jax.vmap(lambda th: spec.likelihoods(th, data.diagnosis, data.t_index))(thetas)
    return jnp.where(data.valid[None, :], lik, 1.0).T


def _safe_log(x):
    return jnp.log(jnp.where(x > 0, x, 1.0)) + jnp.where(x > 0, 0.0, -jnp.inf)


def log_joint(thetas, coefs, spec: ModelSpec, data: MixtureData):
    """``(P, K)`` ``log coefs[k, g_i] + log L_ik`` (0 for patients without a time prior)."""
    log_lik = _safe_log(component_likelihoods(thetas, spec, data))
    log_coef = _safe_log(coefs.T[data.group])                             # (P, K)
    return jnp.where(data.valid[:, None], log_coef + log_lik, 0.0)


def _loglik_from_joint(lj, data: MixtureData):
    per_patient = logsumexp(lj, axis=1)
    return jnp.sum(jnp.where(data.valid, per_patient, 0.0))


def incomplete_loglik(thetas, coefs, spec: ModelSpec, data: MixtureData):
    """Scalar ``sum_i log sum_k coefs[k, g_i] L_ik`` over patients with a time prior."""
    return _loglik_from_joint(log_joint(thetas, coefs, spec, data), data)


def zero_and_renormalize(values, axis: int):
    """Normalise along ``axis``, set entries ``<= 1e-8`` to exactly 0, renormalise."""
    values = values / jnp.sum(values, axis=axis, keepdims=True)
    values = jnp.where(jnp.abs(values) <= ZERO_ATOL, 0.0, values)
    return values / jnp.sum(values, axis=axis, keepdims=True)


def _resp_from_joint(lj, data: MixtureData):
    r = jnp.exp(lj - logsumexp(lj, axis=1, keepdims=True))
    r = zero_and_renormalize(r, axis=1)
    return jnp.where(data.valid[:, None], r, 0.0)


def responsibilities(thetas, coefs, spec: ModelSpec, data: MixtureData):
    """E-step: ``(P, K)`` ``r_ik`` proportional to ``coefs[k, g_i] L_ik`` (zeroing as
    lymixture); rows of patients without a time prior are 0."""
    return _resp_from_joint(log_joint(thetas, coefs, spec, data), data)


def e_step(thetas, coefs, spec: ModelSpec, data: MixtureData):
    """``(incomplete_loglik, responsibilities)`` at ``(thetas, coefs)`` from one evaluation
    of the component likelihoods."""
    lj = log_joint(thetas, coefs, spec, data)
    return _loglik_from_joint(lj, data), _resp_from_joint(lj, data)


def xlogy_safe(r, log_value):
    """``r * log_value`` with ``0 * (-inf) = 0`` and finite gradients where ``r = 0``."""
    return jnp.where(r > 0, r * jnp.where(r > 0, log_value, 0.0), 0.0)


def complete_loglik(thetas, coefs, resp, spec: ModelSpec, data: MixtureData):
    """Scalar ``sum_i sum_k r_ik (log coefs[k, g_i] + log L_ik)`` with ``0 * (-inf) = 0``."""
    return jnp.sum(xlogy_safe(resp, log_joint(thetas, coefs, spec, data)))


def infer_coefs(resp, data: MixtureData, num_groups: int):
    """M-step for the coefficients: ``(K, G)`` mean responsibility per subgroup (over its
    patients with a time prior), then lymixture's zeroing and renormalisation over ``K``."""
    onehot = jax.nn.one_hot(data.group, num_groups, dtype=resp.dtype) * data.valid[:, None]
    sums = onehot.T @ resp                                               # (G, K)
    counts = jnp.sum(onehot, axis=0)[:, None]
    return zero_and_renormalize((sums / jnp.maximum(counts, 1.0)).T, axis=0)


def component_objective(theta, weights, spec: ModelSpec, diagnosis, t_index):
    """``-sum_i w_i log L_i(theta)`` for one component: what the M-step minimises
    (``w`` = that component's responsibilities; the ``log coefs`` term does not depend on
    ``theta``). Patients with ``t_index = -1`` have ``w = 0``."""
    lik = spec.likelihoods(theta, diagnosis, t_index)
    lik = jnp.where(t_index >= 0, lik, 1.0)
    return -jnp.sum(xlogy_safe(weights, _safe_log(lik)))


__all__ = ["MixtureData", "component_likelihoods", "log_joint", "incomplete_loglik",
           "responsibilities", "e_step", "complete_loglik", "infer_coefs", "component_objective",
           "zero_and_renormalize", "ZERO_ATOL"]
