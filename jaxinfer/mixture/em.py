"""EM for :class:`~jaxinfer.mixture.models.LymphMixture` with lymixture 0.0.2's names.

* :func:`expectation` - E-step: responsibilities (entries <= 1e-8 set to 0, renormalised).
* :func:`maximization` - M-step: coefficients in closed form, then every component's
  parameters at once by bounded L-BFGS-B on autodiff gradients, vmapped over components
  (lymixture: scipy Powell, one component after the other).
* :func:`fit` - the whole EM loop compiled into one ``lax.while_loop``: the solver core's
  fixed-point iteration (:class:`~jaxinfer.optimize.fixed_point.FixedPoint`) of the EM map
  (:func:`jaxinfer.mixture._em_step.em_map`), with a real convergence test, the
  log-likelihood history, the inner fits' statuses, optional monotone SQUAREM and a
  progress callback (lymixture leaves the loop to the user).
* :func:`log_prob_fn`, :func:`log_prob_fn_fixed_mixture`, :func:`complete_latent_likelihood`
  - the original's log-densities (``-inf`` outside [0, 1]).
* Sampling (NumPyro NUTS instead of emcee): :func:`sample_fixed_mixture`,
  :func:`sample_model_params` (see :mod:`jaxinfer.mixture.sampling`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Mapping, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jax.flatten_util import ravel_pytree

from jaxinfer.mixture import _core
from jaxinfer.mixture._em_step import em_map, inner_options, maximize_components
from jaxinfer.mixture.models import LymphMixture
from jaxinfer.optimize._compile import compiler_options
from jaxinfer.optimize._iterate import PROGRESS_SINK, Progress, iterate, progress_to
from jaxinfer.optimize.fixed_point import FixedPoint, make_fixed_point_fn
from jaxinfer.optimize.result import OptimizeResult, status_message


def _set_params(model: LymphMixture, params) -> None:
    if params is None:
        return
    if isinstance(params, Mapping):
        model.set_params(**params)
    else:
        model.set_params(*params)


def _require_float64(what: str) -> None:
    # EM's stopping rule compares log-likelihoods of ~1e3 to ~1e-3: float32 cannot resolve it
    if jnp.result_type(float) != jnp.float64:
        raise ValueError(f"{what} needs float64 (its convergence tests compare log-likelihoods "
                         "of order 1e3 to 1e-3); turn it on with "
                         "jax.config.update('jax_enable_x64', True)")


def _ensure_coefs(model: LymphMixture) -> None:
    coefs = model.get_mixture_coefs(norm=False).to_numpy()
    if np.isnan(coefs).any():
        raise ValueError("mixture coefficients are not set: give {c}_{subgroup}_coef values with "
                         "set_params(...) or set_mixture_coefs(...) first")


@lru_cache(maxsize=None)
def _jit(fn, static_argnums):
    """``jax.jit(fn)`` made on first use (when the backend is known), with the solver core's
    CPU compiler options: ~25% less compile CPU for these loop-heavy programs (EM on a
    2-LNL mixture: 13.7 -> 10.3 CPU-s)."""
    return jax.jit(fn, static_argnums=static_argnums, compiler_options=compiler_options())


def _responsibilities(thetas, coefs, spec, data):
    return _jit(_core.responsibilities, 2)(thetas, coefs, spec, data)


def expectation(model: LymphMixture, params=None, *, log: bool = False) -> np.ndarray:
    """E-step at ``params`` (dict or sequence, set on the model first; None: the current
    ones): ``(P, K)`` responsibilities (their logarithm if ``log``)."""
    _set_params(model, params)
    _ensure_coefs(model)
    thetas, coefs, data = model.arrays()
    resp = np.asarray(_responsibilities(thetas, coefs, model.spec, data))
    with np.errstate(divide="ignore"):
        return np.log(resp) if log else resp


def _maximize_program(thetas, resp, spec, num_groups, options, num_shared, data):
    coefs = _core.infer_coefs(resp, data, num_groups)
    new, nit, status = maximize_components(thetas, resp, spec, data, dict(options), num_shared)
    return coefs, new, nit, status


def _maximize(thetas, resp, spec, num_groups, options, num_shared, data):
    return _jit(_maximize_program, (2, 3, 4, 5))(thetas, resp, spec, num_groups, options,
                                                 num_shared, data)


def _num_shared(model: LymphMixture) -> int:
    """How many trailing parameters of every component the components share: the time
    prior's with ``universal_p`` (their values are equal on every component), else 0."""
    if not model.universal_p:
        return 0
    return len(model.components[0].get_distribution_params())


def _options_key(model, options: Optional[Mapping]):
    dtype = jnp.result_type(float)
    merged = inner_options(dtype)
    merged.update(options or {})
    return tuple(sorted(merged.items()))


def maximization(model: LymphMixture, latent, *, log: bool = False,
                 options: Optional[Mapping] = None) -> dict:
    """M-step given responsibilities ``latent (P, K)`` (log-responsibilities if ``log``):
    sets the closed-form coefficients and the L-BFGS-B optimum of every component on the
    model and returns :meth:`LymphMixture.get_params`. RuntimeError if a component's fit
    passed no convergence test (as lymixture does). ``options``: L-BFGS-B options. With
    ``universal_p`` the components' parameters and the shared time prior's are one fit."""
    _require_float64("em.maximization")
    latent = np.asarray(latent.to_numpy() if hasattr(latent, "to_numpy") else latent, float)
    resp = np.exp(latent) if log else latent
    if resp.shape != (model.num_patients, len(model.components)):
        raise ValueError(f"latent must have shape (patients, components) = "
                         f"{(model.num_patients, len(model.components))}, got {resp.shape}")
    model.set_resps(resp)
    thetas, _, data = model.arrays()
    coefs, new, nit, status = _maximize(thetas, jnp.asarray(resp), model.spec,
                                        len(model.subgroups), _options_key(model, options),
                                        _num_shared(model), data)
    model.set_mixture_coefs(np.asarray(coefs))
    model.normalize_mixture_coefs()
    status = np.asarray(status)
    for c, comp in enumerate(model.components):
        if status[c] >= 20:
            raise RuntimeError(f"M-step of component {c} did not converge: "
                               f"{status_message(status[c])}")
        comp.set_params(*np.clip(np.asarray(new[c]), 0.0, 1.0).tolist())
    return model.get_params(as_dict=True)


def _em_program(dynamic, static, x0, data):
    solver_static, spec, num_groups, inner, num_shared = static
    solver = eqx.combine(dynamic, solver_static)
    x0_flat, unravel = ravel_pytree(x0)
    projected = solver.accelerate is not None

    def T(x, data):
        return em_map(x, data, spec, num_groups, inner, projected, num_shared)

    fn = make_fixed_point_fn(T, unravel, objective=True, has_aux=True)
    res = iterate(solver, fn, x0_flat, (data,), callback=PROGRESS_SINK)
    thetas, coefs = unravel(res.x)
    # aux_history[k]: the inner fits of the M-step from x_k (plain EM: x_nit is the output
    # of the one from x_{nit-1}; with SQUAREM, of the accepted points' own M-steps)
    inner_status = res.extra["aux_history"]["inner_status"]
    done = (jnp.arange(inner_status.shape[0]) < res.nit)[:, None]
    last = jnp.maximum(res.nit - 1, 0)
    return OptimizeResult(
        x={"thetas": thetas, "coefs": coefs}, fun=-res.fun, jac=None, status=res.status,
        nit=res.nit, nfev=res.nfev, njev=res.njev,
        extra={"loglik": res.fun, "history": res.extra["history"],
               "resp": _core.responsibilities(thetas, coefs, spec, data),
               "inner_nit": res.extra["aux_history"]["inner_nit"][last],
               "inner_status": inner_status[last],
               "inner_failures": jnp.sum(done & (inner_status >= 20)).astype(jnp.int32),
               "accelerated": res.extra["accelerated"]})


def _run_em(solver: FixedPoint, model: LymphMixture, inner: tuple, x0, data):
    dynamic, solver_static = eqx.partition(solver, eqx.is_array)
    static = (solver_static, model.spec, len(model.subgroups), inner, _num_shared(model))
    return _jit(_em_program, 1)(dynamic, static, x0, data)


def _thetas_progress(callback, shape):
    """Host adapter: FixedPoint's flat ``Progress.x`` -> the ``(K, d)`` thetas; the start
    step (the evaluation at x0, ``nit = 0``) is not an EM step and is not reported."""
    if callback is None:
        return None
    size = int(np.prod(shape))

    def host(progress: Progress):
        if int(progress.nit) == 0:
            return
        thetas = np.asarray(progress.x)[:size].reshape(shape)
        callback(Progress(nit=progress.nit, fun=progress.fun, x=thetas))

    return host


def fit(model: LymphMixture, *, maxiter: int = 100, atol: float = 1e-3, rtol: float = 0.0,
        options: Optional[Mapping] = None, accelerate: Optional[str] = None,
        callback: Optional[Callable] = None) -> OptimizeResult:
    """Run EM from the model's current parameters and coefficients to convergence.

    Stops when ``|l_new - l_old| <= atol + rtol |l_new|`` (``l`` the incomplete-data
    log-likelihood; lymixture's quickstart uses ``atol=1e-8, rtol=1e-4``; Status.FTOL),
    when an EM step leaves every parameter exactly where it was (XTOL), or after
    ``maxiter`` steps (MAX_ITER: ``success`` is False). ``callback(Progress)`` fires after
    every step on the host (``Progress.fun`` is the log-likelihood, ``Progress.x`` the
    ``(K, d)`` component parameters). ``options``: L-BFGS-B options of the M-step.
    With ``universal_p`` the time prior's parameters are shared by the components in every
    M-step (one L-BFGS-B fit over all components, :func:`maximize_components`).
    ``accelerate``: None (plain EM) or ``"squarem"`` (SQUAREM extrapolation, projected onto
    valid parameters and kept only where the log-likelihood does not drop below the plain
    step's: the history stays monotone; three EM maps per step).

    Runs on the solver core's fixed-point iteration: each evaluation of the EM map computes
    the log-likelihood of its input and the next parameters, so a run of ``nit`` plain
    steps evaluates the map ``nit + 1`` times (``nfev``; the last M-step's result is the
    ``T(x)`` the stopping rule did not need).

    The fitted parameters, coefficients and final responsibilities are set on the model.
    Returns an :class:`OptimizeResult`: ``x = {"thetas": (K, d), "coefs": (K, G)}``,
    ``fun`` = minus the log-likelihood, ``extra["loglik"]``, ``extra["history"]``
    (``(max(100, maxiter) + 1,)``, NaN after ``nit``), ``extra["resp"]``,
    ``extra["inner_nit"]``, ``extra["inner_status"]`` (the last M-step's L-BFGS-B fits,
    ``(K,)``), ``extra["inner_failures"]`` (fits over all steps that passed no convergence
    test), ``extra["accelerated"]`` (SQUAREM extrapolations kept).
    """
    _require_float64("em.fit")
    if isinstance(maxiter, bool) or int(maxiter) != maxiter or int(maxiter) < 1:
        raise ValueError(f"maxiter must be an integer >= 1, got {maxiter}")
    if atol < 0 or rtol < 0:
        raise ValueError(f"atol and rtol must be >= 0, got {atol}, {rtol}")
    if accelerate not in (None, "squarem"):
        raise ValueError(f"accelerate must be None or 'squarem', got {accelerate!r}")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable or None")
    _ensure_coefs(model)
    thetas, coefs, data = model.arrays()
    dtype = jnp.result_type(float)
    solver = FixedPoint(xtol=0.0, xatol=0.0, ftol=jnp.asarray(rtol, dtype),
                        fatol=jnp.asarray(atol, dtype),
                        maxiter=jnp.asarray(int(maxiter), jnp.int32), use_objective=True,
                        accelerate=accelerate, monotone="increase", has_aux=True,
                        history_size=max(100, int(maxiter)), start_in_step=True)
    with progress_to(_thetas_progress(callback, thetas.shape)):
        result = jax.block_until_ready(
            _run_em(solver, model, _options_key(model, options), (thetas, coefs), data))
    _store(model, result.x["thetas"], result.x["coefs"], result.extra["resp"])
    return result


def _store(model: LymphMixture, thetas, coefs, resp=None) -> None:
    thetas = np.clip(np.asarray(thetas), 0.0, 1.0)
    for c, comp in enumerate(model.components):
        comp.set_params(*thetas[c].tolist())
    model.set_mixture_coefs(np.asarray(coefs))
    model.normalize_mixture_coefs()
    if resp is not None:
        model.set_resps(np.asarray(resp))


# ------------------------------------------------------------------ log-densities


def _component_thetas(theta, model: LymphMixture):
    k = len(model.components)
    return jnp.asarray(theta, dtype=jnp.result_type(float)).reshape(k, -1)


def log_prob_fn_fixed_mixture(theta, model: LymphMixture) -> float:
    """Incomplete-data log-likelihood at the components' parameters ``theta``
    (``(K * d,)``, component after component), coefficients fixed; ``-inf`` outside [0, 1]."""
    theta = np.asarray(theta, dtype=float)
    if np.any(theta < 0) or np.any(theta > 1):
        return -np.inf
    _, coefs, data = model.arrays()
    return float(_incomplete(_component_thetas(theta, model), coefs, model.spec, data))


def _incomplete(thetas, coefs, spec, data):
    return _jit(_core.incomplete_loglik, 2)(thetas, coefs, spec, data)


def log_prob_fn(theta, model: LymphMixture) -> float:
    """Complete-data log-likelihood with the stored responsibilities at all parameters
    ``theta`` (:meth:`LymphMixture.get_params` order, coefficients included and renormalised
    on setting); ``-inf`` outside [0, 1]."""
    theta = np.asarray(theta, dtype=float)
    if np.any(theta < 0) or np.any(theta > 1):
        return -np.inf
    model.set_params(*theta.tolist())
    return model.likelihood(log=True, use_complete=True)


def complete_latent_likelihood(theta, model: LymphMixture) -> float:
    """Complete-data log-likelihood with the latent assignments ``theta (P, K)`` set as
    the responsibilities."""
    model.set_resps(np.asarray(theta, dtype=float).reshape(model.num_patients, -1))
    return model.complete_data_likelihood(log=True)


def __getattr__(name):  # the samplers live in jaxinfer.mixture.sampling (NumPyro, lazily)
    if name in ("sample_fixed_mixture", "sample_model_params",
                "mh_latent_sampler_per_patient_2_component", "aip_sampling_algorithm"):
        from jaxinfer.mixture import sampling
        return getattr(sampling, name)
    raise AttributeError(f"module 'jaxinfer.mixture.em' has no attribute {name!r}")


__all__ = ["expectation", "maximization", "fit", "log_prob_fn", "log_prob_fn_fixed_mixture",
           "complete_latent_likelihood", "sample_fixed_mixture", "sample_model_params",
           "mh_latent_sampler_per_patient_2_component", "aip_sampling_algorithm"]
