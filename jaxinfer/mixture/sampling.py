"""Bayesian sampling of a :class:`LymphMixture` with NumPyro NUTS (lymixture: emcee).

Both samplers put a flat prior on the box [0, 1] of every parameter (lymixture's log-prob
is -inf outside it); NumPyro samples them through a logit transform, so NUTS never leaves
the box. They return ``(InferenceData, flat chain (steps, ndim))`` where the flat chain's
columns are in the original's order, and write a checkpoint after every
``checkpoint_every`` draws to ``filename``; ``continue_sampling=True`` resumes from it
(same chain as an uninterrupted run with the same key).

* :func:`sample_fixed_mixture` - the components' parameters (spread, late_p), mixture
  coefficients fixed to the mean responsibilities; target: incomplete-data log-likelihood.
* :func:`sample_model_params` - components' parameters and raw coefficients (renormalised
  over components as ``set_params`` does); target: complete-data log-likelihood with the
  responsibilities fixed.
* :func:`mh_latent_sampler_per_patient_2_component` - one MH sweep of the hard assignments.
* :func:`aip_sampling_algorithm` - lymixture's alternating algorithm: MH sweeps of the
  assignments alternating with NUTS steps of the parameters, as a Gibbs block of the shared
  driver (:func:`jaxinfer.sampling.run_nuts`).
"""

from __future__ import annotations

import os
from functools import lru_cache, partial
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.mixture import _core
from jaxinfer.mixture.models import LymphMixture
from jaxinfer.sampling import Target, run_nuts
from jaxinfer.sampling import continue_sampling as _continue


# The targets are written out (a logit transform per parameter, as NumPyro's for a
# Uniform(0, 1) site) rather than NumPyro models: NumPyro's initialisation runs a model
# eagerly, op by op, which costs more CPU time than compiling the whole NUTS chunk.


def _box(z):
    """``(sigmoid(z), sum log |d sigmoid / dz|)``: a vector in (0, 1) and its Jacobian."""
    return jax.nn.sigmoid(z), jnp.sum(-jax.nn.softplus(z) - jax.nn.softplus(-z))


def _logit(values):
    values = _inside(values)
    return jnp.asarray(np.log(values) - np.log1p(-values))


def _constrain(*_args):
    return lambda z: {name: jax.nn.sigmoid(v) for name, v in z.items()}


@lru_cache(maxsize=None)
def _fixed_mixture_target(spec, num_components, num_params) -> Target:
    """Flat prior on [0, 1]^(K d), incomplete-data log-likelihood; args ``(coefs, data)``."""
    def potential(coefs, data):
        def energy(z):
            theta, logdet = _box(z["theta"])
            thetas = theta.reshape(num_components, num_params)
            return -(_core.incomplete_loglik(thetas, coefs, spec, data) + logdet)
        return energy

    return Target(potential, _constrain)


def _params_energy(z, resp, data, spec, num_components, num_params, num_groups):
    theta, logdet_t = _box(z["theta"])
    raw, logdet_c = _box(z["raw_coefs"])
    coefs = raw.reshape(num_components, num_groups)
    coefs = coefs / jnp.sum(coefs, axis=0, keepdims=True)
    thetas = theta.reshape(num_components, num_params)
    return -(_core.complete_loglik(thetas, coefs, resp, spec, data) + logdet_t + logdet_c)


@lru_cache(maxsize=None)
def _model_params_target(spec, num_components, num_params, num_groups) -> Target:
    """Flat prior on the parameters and raw coefficients (renormalised over components),
    complete-data log-likelihood; args ``(resp, data)``."""
    def potential(resp, data):
        return lambda z: _params_energy(z, resp, data, spec, num_components, num_params,
                                        num_groups)

    return Target(potential, _constrain)


def _latent(model: LymphMixture, latent):
    if latent is None:
        latent = model.get_resps()
    latent = np.asarray(latent.to_numpy() if hasattr(latent, "to_numpy") else latent, float)
    if np.isnan(latent).any():
        raise ValueError("responsibilities contain NaN: run em.fit or em.expectation first, or "
                         "pass latent=(patients, components) array")
    return latent


def _key(key, seed):
    return jax.random.PRNGKey(seed) if key is None else key


def _inside(values, eps=1e-6):
    # NUTS starts in the interior: the logit transform maps 0 and 1 to -inf / inf
    return np.clip(np.asarray(values, float), eps, 1 - eps)


def _run(model_fn, args, init, names, steps, filename, continue_sampling, key, num_warmup,
         checkpoint_every, progress, kernel_kwargs):
    if continue_sampling:
        if not os.path.exists(filename):
            raise FileNotFoundError(f"continue_sampling=True but there is no checkpoint {filename}")
        run = _continue(filename, model_fn, args, num_samples=steps, progress=progress,
                        **kernel_kwargs)
    else:
        run = run_nuts(model_fn, args, key=key, num_warmup=steps if num_warmup is None
                       else num_warmup, num_samples=steps, checkpoint=filename,
                       checkpoint_every=checkpoint_every, progress=progress,
                       init_params=init, **kernel_kwargs)
    return run


def sample_fixed_mixture(model: LymphMixture, steps: int = 100, latent=None,
                         filename: str = "chain_fixed_mix.ckpt", *,
                         continue_sampling: bool = False, key=None, seed: int = 42,
                         num_warmup: Optional[int] = None, checkpoint_every: int = 100,
                         progress: Optional[Callable] = None, **kernel_kwargs):
    """NUTS over the components' parameters with the coefficients fixed to the mean of
    ``latent`` (default: the stored responsibilities).

    Returns ``(idata, chain)``: ArviZ InferenceData with one variable per parameter
    (``'{c}_{name}'``), and the ``(steps, K * d)`` draws in that order.
    """
    latent = _latent(model, latent)
    model.set_resps(latent)
    model.set_mixture_coefs(model.infer_mixture_coefs().to_numpy())
    model.normalize_mixture_coefs()
    thetas, coefs, data = model.arrays()
    k, d = thetas.shape
    names = [f"{c}_{n}" for c in range(k) for n in model.spec.param_names]
    target = _fixed_mixture_target(model.spec, k, d)
    run = _run(target, (coefs, data), {"theta": _logit(thetas.reshape(-1))}, names, steps,
               filename, continue_sampling, _key(key, seed), num_warmup, checkpoint_every,
               progress, kernel_kwargs)
    return run.to_inference_data({"theta": names}), run.flat("theta")


def sample_model_params(model: LymphMixture, steps: int = 100, latent=None,
                        filename: str = "chain_fixed_latent.ckpt", *,
                        continue_sampling: bool = False, key=None, seed: int = 42,
                        num_warmup: Optional[int] = None, checkpoint_every: int = 100,
                        progress: Optional[Callable] = None, **kernel_kwargs):
    """NUTS over all parameters (coefficients included) with the responsibilities fixed to
    ``latent`` (default: the stored ones). Returns ``(idata, chain)`` with the chain's
    columns in :meth:`LymphMixture.get_params` order (coefficients renormalised)."""
    latent = _latent(model, latent)
    model.set_resps(latent)
    model.set_mixture_coefs(model.infer_mixture_coefs().to_numpy())
    model.normalize_mixture_coefs()
    thetas, coefs, data = model.arrays()
    k, d = thetas.shape
    g = coefs.shape[1]
    target = _model_params_target(model.spec, k, d, g)
    args = (jnp.asarray(latent), data)
    init = {"theta": _logit(thetas.reshape(-1)), "raw_coefs": _logit(np.asarray(coefs).reshape(-1))}
    run = _run(target, args, init, None, steps, filename, continue_sampling,
               _key(key, seed), num_warmup, checkpoint_every, progress, kernel_kwargs)
    theta = run.flat("theta").reshape(-1, k, d)
    raw = run.flat("raw_coefs").reshape(-1, k, g)
    norm = raw / raw.sum(axis=1, keepdims=True)
    chain = np.concatenate([theta, norm], axis=2).reshape(len(theta), -1)  # get_params order
    names = [f"{c}_{n}" for c in range(k)
             for n in list(model.spec.param_names) + [f"{s}_coef" for s in model.subgroups]]
    import arviz as az
    idata = az.from_dict(posterior={n: chain[None, :, j] for j, n in enumerate(names)},
                         sample_stats={"diverging": run.stats["diverging"][None],
                                       "lp": -run.stats["potential_energy"][None]})
    return idata, chain


def swap_sweep(key, log_joint, assign, temp):
    """One MH sweep over the hard assignments of a 2-component mixture (lymixture's
    ``mh_latent_sampler_per_patient_2_component``): propose flipping every patient's
    assignment, accept with ``log alpha = (lj[i, new] - lj[i, old]) / temp``.

    log_joint : ``(P, 2)`` ``log coefs[k, g_i] + log L_ik``; assign : ``(P,)`` int in {0, 1};
    temp : scalar. Returns ``(new assignments (P,), accepted (P,) bool)``.
    """
    rows = jnp.arange(assign.shape[0])
    log_alpha = (log_joint[rows, 1 - assign] - log_joint[rows, assign]) / temp
    accept = jnp.log(jax.random.uniform(key, assign.shape, log_joint.dtype)) < log_alpha
    return jnp.where(accept, 1 - assign, assign), accept


_swap_step = jax.jit(swap_sweep)


def mh_latent_sampler_per_patient_2_component(model: LymphMixture, temp: Optional[float] = None,
                                              key=None, seed: int = 42):
    """One Metropolis-Hastings sweep of the hard assignments of a 2-component mixture
    (temperature 0.5 by default, as lymixture). Sets the new one-hot responsibilities and
    returns ``(previous responsibilities (P, 2), complete log-likelihood before the sweep)``."""
    if len(model.components) != 2:
        raise ValueError(f"this sampler swaps between exactly 2 components, the model has "
                         f"{len(model.components)}")
    temp = 0.5 if temp is None else float(temp)
    before = model.get_resps().to_numpy()
    ll_before = model.complete_data_likelihood()
    thetas, coefs, data = model.arrays()
    lj = _core.log_joint(thetas, coefs, model.spec, data)
    assign = jnp.asarray(np.argmax(before, axis=1))
    new, _ = _swap_step(_key(key, seed), lj, assign, temp)
    model.set_resps(np.eye(2)[np.asarray(new)])
    return before, ll_before


# ------------------------------------------------------------------ AIP


def _split_params(params, num_components, num_params, num_groups):
    """``(thetas (K, d), coefs (K, G))`` from the constrained sites of the AIP target."""
    thetas = params["theta"].reshape(num_components, num_params)
    raw = params["raw_coefs"].reshape(num_components, num_groups)
    return thetas, raw / jnp.sum(raw, axis=0, keepdims=True)


@lru_cache(maxsize=None)
def _aip_target(spec, num_components, num_params, num_groups) -> Target:
    """The parameters' conditional given hard assignments ``assign (P,)``: the target of
    :func:`sample_model_params` with one-hot responsibilities; args ``(assign, temps, data)``."""
    def potential(assign, temps, data):
        resp = jax.nn.one_hot(assign, num_components, dtype=data.diagnosis.dtype)
        return lambda z: _params_energy(z, resp, data, spec, num_components, num_params,
                                        num_groups)

    return Target(potential, _constrain)


def _aip_update(key, assign, params, step, temps, data, *, spec, num_components,
                num_params, num_groups, steps_per_round):
    """The Gibbs block of AIP: one MH swap sweep at ``temps[round]`` before the first NUTS
    step of every round (``steps_per_round`` NUTS steps a round)."""
    thetas, coefs = _split_params(params, num_components, num_params, num_groups)
    lj = _core.log_joint(thetas, coefs, spec, data)
    temp = temps[jnp.clip(step // steps_per_round, 0, temps.shape[0] - 1)]
    new, accept = swap_sweep(key, lj, assign, temp)
    sweep = step % steps_per_round == 0
    new = jnp.where(sweep, new, assign)
    swaps = jnp.where(sweep, jnp.sum(accept & data.valid), 0)
    return new, {"assignment": new.astype(jnp.int8), "swaps": swaps.astype(jnp.int32)}


@partial(jax.jit, static_argnums=(2, 3))
def _round_likelihoods(thetas, coefs, spec, num_components, assign, data):
    """Per round: complete (hard assignments) and incomplete log-likelihoods."""
    def one(th, co, a):
        resp = jax.nn.one_hot(a, num_components, dtype=th.dtype)
        return (_core.complete_loglik(th, co, resp, spec, data),
                _core.incomplete_loglik(th, co, spec, data))

    return jax.vmap(one)(thetas, coefs, assign)


def aip_sampling_algorithm(model: LymphMixture, ip_rounds: int = 4000,
                           n_steps_params: int = 1,
                           temperature_schedule: Optional[Callable[[int], float]] = None,
                           params_filename: str = "params_samples.ckpt", *,
                           num_warmup: Optional[int] = None, latent=None, key=None,
                           seed: int = 42, checkpoint_every: int = 500,
                           continue_sampling: bool = False,
                           progress: Optional[Callable] = None, **kernel_kwargs) -> dict:
    """Alternating Iterative Posterior sampling (lymixture 0.0.2's AIP) of a 2-component
    mixture, on the shared NUTS driver (Metropolis-within-Gibbs).

    Every round: one MH sweep of the hard assignments (each patient's flip accepted with
    ``exp((lj_new - lj_old) / T_r)``, lymixture's latent sampler), then ``n_steps_params``
    NUTS steps of all parameters (spread, late_p, raw coefficients; the target of
    :func:`sample_model_params` with one-hot responsibilities), the whole run in compiled
    chunks. ``T_r = temperature_schedule(r)`` (default lymixture's ``1 - r / ip_rounds +
    0.05``); with ``T = 1`` throughout the chain targets the joint posterior of parameters
    and assignments, whose parameter marginal is the incomplete-data posterior.

    ip_rounds : kept rounds; num_warmup : NUTS adaptation rounds before them (default
    ``ip_rounds // 4``, at ``T_0``); latent : start ``(P, 2)`` responsibilities (their argmax;
    default: lymixture's uniformly random assignments); params_filename : checkpoint written
    every ``checkpoint_every`` NUTS steps, resumed by ``continue_sampling=True``.

    Returns lymixture's dict: ``params_samples (ip_rounds, ndim)`` (:meth:`LymphMixture.
    get_params` order, coefficients renormalised), ``latent_samples (ip_rounds, P, 2)``
    (one-hot, the assignments each round's parameter step saw; lymixture stores those
    before the sweep), ``complete_likelihoods`` / ``incomplete_likelihoods``
    ``(ip_rounds,)`` at each round's parameters, ``number_of_swaps (ip_rounds,)``, plus
    ``idata`` (ArviZ InferenceData of the parameters). The last round's parameters and
    assignments are set on the model.
    """
    if len(model.components) != 2:
        raise ValueError(f"AIP swaps assignments between exactly 2 components, the model has "
                         f"{len(model.components)}")
    if int(ip_rounds) < 1 or int(n_steps_params) < 1:
        raise ValueError(f"need ip_rounds >= 1 and n_steps_params >= 1, got {ip_rounds}, "
                         f"{n_steps_params}")
    rounds, per_round = int(ip_rounds), int(n_steps_params)
    warm = rounds // 4 if num_warmup is None else int(num_warmup)
    schedule = temperature_schedule or (lambda r: 1.0 - r / rounds + 0.05)
    temps = np.array([schedule(0)] * warm + [schedule(r) for r in range(rounds)], float)
    if not np.all(np.isfinite(temps) & (temps > 0)):
        raise ValueError("the temperature schedule must give finite temperatures > 0")
    thetas, _, data = model.arrays()
    k, d = thetas.shape
    g = len(model.subgroups)
    key = _key(key, seed)
    init_key, run_key = jax.random.split(key)
    if latent is None:
        assign = jax.random.bernoulli(init_key, 0.5, (model.num_patients,)).astype(jnp.int32)
    else:
        assign = jnp.asarray(np.argmax(_latent(model, latent), axis=1), jnp.int32)
    if np.isnan(model.get_mixture_coefs(norm=False).to_numpy()).any():
        model.set_resps(np.eye(2)[np.asarray(assign)])
        model.set_mixture_coefs(model.infer_mixture_coefs().to_numpy())
    coefs = np.asarray(model.get_mixture_coefs().to_numpy())
    static = dict(spec=model.spec, num_components=k, num_params=d, num_groups=g)
    fn = _aip_target(model.spec, k, d, g)
    update = partial(_aip_update, steps_per_round=per_round, **static)
    args = (jnp.asarray(temps), data)
    if continue_sampling:
        if not os.path.exists(params_filename):
            raise FileNotFoundError(f"continue_sampling=True but there is no checkpoint "
                                    f"{params_filename}")
        run = _continue(params_filename, fn, args, progress=progress, gibbs=update,
                        **kernel_kwargs)
    else:
        init = {"theta": _logit(np.asarray(thetas).reshape(-1)),
                "raw_coefs": _logit(coefs.reshape(-1))}
        run = run_nuts(fn, args, key=run_key, num_warmup=warm * per_round,
                       num_samples=rounds * per_round, checkpoint=params_filename,
                       checkpoint_every=checkpoint_every, progress=progress,
                       init_params=init, gibbs=update, latent=assign, **kernel_kwargs)
    last = slice(per_round - 1, None, per_round)        # the last NUTS step of each round
    theta = run.flat("theta")[last].reshape(-1, k, d)
    raw = run.flat("raw_coefs")[last].reshape(-1, k, g)
    norm = raw / raw.sum(axis=1, keepdims=True)
    assigns = run.flat("assignment")[last].astype(np.int32)
    swaps = run.flat("swaps").reshape(-1, per_round).sum(axis=1)
    complete, incomplete = _round_likelihoods(jnp.asarray(theta), jnp.asarray(norm),
                                              model.spec, k, jnp.asarray(assigns), data)
    chain = np.concatenate([theta, norm], axis=2).reshape(len(theta), -1)
    names = [f"{c}_{n}" for c in range(k)
             for n in list(model.spec.param_names) + [f"{s}_coef" for s in model.subgroups]]
    import arviz as az
    idata = az.from_dict(posterior={n: chain[None, :, j] for j, n in enumerate(names)},
                         sample_stats={"diverging": run.stats["diverging"][:, last],
                                       "lp": -run.stats["potential_energy"][:, last]})
    model.set_params(*chain[-1].tolist())
    model.set_resps(np.eye(2)[assigns[-1]])
    return {"params_samples": chain, "latent_samples": np.eye(2)[assigns],
            "complete_likelihoods": np.asarray(complete),
            "incomplete_likelihoods": np.asarray(incomplete), "number_of_swaps": swaps,
            "idata": idata}


__all__ = ["sample_fixed_mixture", "sample_model_params",
           "mh_latent_sampler_per_patient_2_component", "aip_sampling_algorithm", "swap_sweep"]
