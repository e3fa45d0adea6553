"""EM for a mixture of unilateral HMMs, in the solver core's shape.

``EM`` is an :class:`~jaxinfer.optimize._iterate.AbstractSolver` (settings only) driven by
:func:`~jaxinfer.optimize._iterate.iterate` in one ``lax.while_loop``. One step is

1. E-step: responsibilities at the current parameters (lymixture's zeroing of r <= 1e-8);
2. M-step: coefficients in closed form (mean responsibility per subgroup), then all
   components' parameters at once: bounded L-BFGS-B (``jaxinfer.optimize.minimize``) of
   ``-sum_i r_ik log L_ik(theta_k)`` on autodiff gradients, vmapped over components;
3. the incomplete log-likelihood at the new parameters.

It stops when ``|l_new - l_old| <= atol + rtol |l_new|`` (Status.FTOL), after ``maxiter``
steps (MAX_ITER) or on a non-finite log-likelihood (NONFINITE). The log-likelihood history
is kept in a fixed-size buffer (NaN after the last step).

(The solver core's fixed-point iteration was not available when this was written; EM is
its own solver on the same driver.)
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from jaxinfer.mixture import _core
from jaxinfer.mixture._hmm import ModelSpec
from jaxinfer.optimize._iterate import AbstractSolver, Progress, RUNNING, first_status
from jaxinfer.optimize.minimize import minimize
from jaxinfer.optimize.result import OptimizeResult, Status


class EMState(eqx.Module):
    thetas: jnp.ndarray       # (K, d) component parameters
    coefs: jnp.ndarray        # (K, G) mixture coefficients
    resp: jnp.ndarray         # (P, K) responsibilities of the last E-step
    loglik: jnp.ndarray       # incomplete log-likelihood at (thetas, coefs)
    loglik_prev: jnp.ndarray  # before the last step
    history: jnp.ndarray      # (maxiter + 1,) log-likelihoods, NaN beyond nit
    nit: jnp.ndarray
    inner_nit: jnp.ndarray    # (K,) L-BFGS-B iterations of the last M-step
    inner_status: jnp.ndarray  # (K,) their statuses
    inner_failures: jnp.ndarray  # M-step fits (over all steps) that passed no convergence test


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


class EM(AbstractSolver):
    """EM settings. spec : the components' static ModelSpec; num_groups : G;
    atol / rtol : stop when ``|dl| <= atol + rtol |l|``; maxiter : EM steps (at most
    history_size, the static length of the history buffer);
    inner : L-BFGS-B options for the M-step (see :func:`inner_options`)."""

    spec: ModelSpec = eqx.field(static=True)
    num_groups: int = eqx.field(static=True)
    atol: jnp.ndarray = 1e-3       # dynamic: changing a tolerance does not recompile
    rtol: jnp.ndarray = 0.0
    maxiter: jnp.ndarray = 100     # dynamic too; the history buffer has history_size + 1
    history_size: int = eqx.field(static=True, default=100)
    inner: tuple = eqx.field(static=True, default=())

    def init(self, fn, x0, args: _core.MixtureData):
        thetas, coefs = x0
        ll = _core.incomplete_loglik(thetas, coefs, self.spec, args)
        history = jnp.full((self.history_size + 1,), jnp.nan, ll.dtype).at[0].set(ll)
        k = thetas.shape[0]
        return EMState(thetas=thetas, coefs=coefs,
                       resp=_core.responsibilities(thetas, coefs, self.spec, args),
                       loglik=ll, loglik_prev=jnp.asarray(jnp.nan, ll.dtype), history=history,
                       nit=jnp.zeros((), jnp.int32), inner_nit=jnp.zeros((k,), jnp.int32),
                       inner_status=jnp.zeros((k,), jnp.int32),
                       inner_failures=jnp.zeros((), jnp.int32))

    def step(self, fn, state: EMState, args: _core.MixtureData):
        resp = _core.responsibilities(state.thetas, state.coefs, self.spec, args)
        coefs = _core.infer_coefs(resp, args, self.num_groups)
        thetas, nit, status = maximize_components(state.thetas, resp, self.spec, args,
                                                  dict(self.inner))
        ll = _core.incomplete_loglik(thetas, coefs, self.spec, args)
        n = state.nit + 1
        return EMState(thetas=thetas, coefs=coefs, resp=resp, loglik=ll,
                       loglik_prev=state.loglik,
                       history=state.history.at[jnp.minimum(n, self.history_size)].set(ll), nit=n,
                       inner_nit=nit.astype(jnp.int32), inner_status=status.astype(jnp.int32),
                       inner_failures=state.inner_failures + jnp.sum(status >= 20).astype(jnp.int32))

    def terminate(self, fn, state: EMState, args):
        change = jnp.abs(state.loglik - state.loglik_prev)
        converged = (state.nit > 0) & (change <= self.atol + self.rtol * jnp.abs(state.loglik))
        return first_status(
            (~jnp.isfinite(state.loglik), Status.NONFINITE),
            (converged, Status.FTOL),
            (state.nit >= self.maxiter, Status.MAX_ITER),
        )

    def postprocess(self, fn, state: EMState, args, status) -> OptimizeResult:
        resp = _core.responsibilities(state.thetas, state.coefs, self.spec, args)
        return OptimizeResult(
            x={"thetas": state.thetas, "coefs": state.coefs}, fun=-state.loglik,
            jac=None, status=status, nit=state.nit, nfev=state.nit + 1, njev=state.nit,
            extra={"loglik": state.loglik, "history": state.history, "resp": resp,
                   "inner_nit": state.inner_nit, "inner_status": state.inner_status,
                   "inner_failures": state.inner_failures})

    def progress(self, state: EMState) -> Progress:
        # fun is the incomplete log-likelihood EM increases
        return Progress(nit=state.nit, fun=state.loglik, x=state.thetas)


__all__ = ["EM", "EMState", "maximize_components", "inner_options"]
