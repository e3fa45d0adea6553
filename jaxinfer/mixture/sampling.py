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
"""

from __future__ import annotations

import os
from functools import partial
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.mixture import _core
from jaxinfer.mixture.models import LymphMixture
from jaxinfer.sampling import continue_sampling as _continue
from jaxinfer.sampling import run_nuts


def _fixed_mixture_model(coefs, data, *, spec, num_components, num_params):
    import numpyro
    import numpyro.distributions as dist

    theta = numpyro.sample("theta", dist.Uniform(0.0, 1.0).expand([num_components * num_params])
                           .to_event(1))
    thetas = theta.reshape(num_components, num_params)
    numpyro.factor("loglik", _core.incomplete_loglik(thetas, coefs, spec, data))


def _model_params_model(resp, data, *, spec, num_components, num_params, num_groups):
    import numpyro
    import numpyro.distributions as dist

    theta = numpyro.sample("theta", dist.Uniform(0.0, 1.0).expand([num_components * num_params])
                           .to_event(1))
    raw = numpyro.sample("raw_coefs", dist.Uniform(0.0, 1.0).expand([num_components * num_groups])
                         .to_event(1))
    coefs = raw.reshape(num_components, num_groups)
    coefs = coefs / jnp.sum(coefs, axis=0, keepdims=True)
    thetas = theta.reshape(num_components, num_params)
    numpyro.factor("loglik", _core.complete_loglik(thetas, coefs, resp, spec, data))


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
    fn = partial(_fixed_mixture_model, spec=model.spec, num_components=k, num_params=d)
    run = _run(fn, (coefs, data), {"theta": _inside(thetas.reshape(-1))}, names, steps,
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
    fn = partial(_model_params_model, spec=model.spec, num_components=k, num_params=d,
                 num_groups=g)
    args = (jnp.asarray(latent), data)
    init = {"theta": _inside(thetas.reshape(-1)), "raw_coefs": _inside(np.asarray(coefs).reshape(-1))}
    run = _run(fn, args, init, None, steps, filename, continue_sampling,
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


@jax.jit
def _swap_step(key, log_joint, assign, temp):
    """One MH sweep over patients for 2 components: propose flipping each hard assignment,
    accept with ``log alpha = (lj[new] - lj[old]) / temp``."""
    rows = jnp.arange(assign.shape[0])
    log_alpha = (log_joint[rows, 1 - assign] - log_joint[rows, assign]) / temp
    accept = jnp.log(jax.random.uniform(key, assign.shape)) < log_alpha
    return jnp.where(accept, 1 - assign, assign), accept


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


__all__ = ["sample_fixed_mixture", "sample_model_params",
           "mh_latent_sampler_per_patient_2_component"]
