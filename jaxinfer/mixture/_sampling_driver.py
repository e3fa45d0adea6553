"""A NumPyro NUTS driver with checkpoints, resumption, progress and ArviZ output.

Written so that it can become the one driver of every jaxinfer sampler (spt.sampling and
glmm.bayes have their own today): it knows nothing about mixtures. The kernel is NumPyro's
NUTS (``init`` / ``sample`` over an ``HMCState``); this driver owns the loop, as NumPyro's
``MCMC`` does, but runs the chain - warmup and draws alike - in chunks of
``checkpoint_every`` steps through one compiled ``lax.scan`` (NumPyro's ``MCMC.run``
recompiles on every call, which makes chunked runs slow).

After every chunk it writes a checkpoint (the draws so far and the kernel's exact state,
to a temporary file renamed over the old one, so a crash never leaves half a file) and then
reports progress. :func:`continue_sampling` resumes from a checkpoint: the chunks and the
state are the same, so an interrupted and resumed run yields the same chain as an
uninterrupted one with the same key.

Checkpoints are pickles of NumPy arrays: load only files you wrote yourself.
"""

from __future__ import annotations

import os
import pickle
from functools import partial
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

CHECKPOINT_VERSION = 2
_STATS = ("diverging", "potential_energy", "accept_prob", "num_steps")


class SamplingProgress(NamedTuple):
    """What the progress callback receives after each chunk: steps done of ``total``
    (warmup included) and how many of them are kept draws."""

    done: int
    total: int
    draws: int


class SamplingRun(NamedTuple):
    """Kept draws ``samples`` ``{site: (n, ...)}``, per-draw ``stats`` ``{'diverging',
    'potential_energy', 'accept_prob', 'num_steps': (n,)}`` and the checkpoint path."""

    samples: dict
    stats: dict
    checkpoint: Optional[str]

    def to_inference_data(self, names: Optional[dict] = None):
        """ArviZ InferenceData (one chain). ``names`` maps a vector site to per-element
        names, which become separate variables."""
        import arviz as az

        posterior = {}
        for site, values in self.samples.items():
            if names and site in names:
                for j, name in enumerate(names[site]):
                    posterior[name] = values[None, :, j]
            else:
                posterior[site] = values[None]
        stats = {"diverging": self.stats["diverging"][None],
                 "lp": -self.stats["potential_energy"][None],
                 "acceptance_rate": self.stats["accept_prob"][None],
                 "n_steps": self.stats["num_steps"][None]}
        return az.from_dict(posterior=posterior, sample_stats=stats)


_KERNELS: dict = {}


def _kernel(model_fn, kernel_kwargs):
    """A NUTS kernel; one per (model, settings) when those are hashable, so that runs of the
    same model (a fresh run, a resumed one) share one compiled chunk."""
    from numpyro.infer import NUTS

    try:
        key = (model_fn, tuple(sorted(kernel_kwargs.items())))
        hash(key)
    except TypeError:
        return NUTS(model_fn, **kernel_kwargs)
    if key not in _KERNELS:
        if len(_KERNELS) > 32:
            _KERNELS.clear()
        _KERNELS[key] = NUTS(model_fn, **kernel_kwargs)
    return _KERNELS[key]


@partial(jax.jit, static_argnums=(0, 1))
def _chunk(kernel, length, state, model_args):
    """``length`` kernel steps from ``state``: ``(last state, draws {site: (length, ...)},
    stats {name: (length,)})``."""
    constrain = kernel.postprocess_fn(model_args, {})

    def body(s, _):
        s = kernel.sample(s, model_args, {})
        return s, (constrain(s.z), {k: getattr(s, k) for k in _STATS})

    return lax.scan(body, state, None, length=length)


def _write(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(payload, f)
    os.replace(tmp, path)


def _loop(kernel, state, model_args, header, done, draws, stats, checkpoint, progress):
    chunk, total = header["chunk"], header["num_warmup"] + header["num_samples"]
    while done < total:
        state, (d, s) = _chunk(kernel, chunk, state, model_args)
        draws.append(jax.tree_util.tree_map(np.asarray, d))
        stats.append(jax.tree_util.tree_map(np.asarray, s))
        done += chunk
        if checkpoint is not None:
            _write(checkpoint, {**header, "done": done, "draws": draws, "stats": stats,
                                "state": jax.tree_util.tree_map(np.asarray, state)})
        if progress is not None:
            progress(SamplingProgress(min(done, total), total,
                                      max(0, min(done, total) - header["num_warmup"])))
    return _finish(header, draws, stats, checkpoint)


def _finish(header, draws, stats, checkpoint) -> SamplingRun:
    lo, hi = header["num_warmup"], header["num_warmup"] + header["num_samples"]
    cat = lambda chunks: {k: np.concatenate([c[k] for c in chunks])[lo:hi] for k in chunks[0]}
    return SamplingRun(cat(draws), cat(stats), checkpoint)


def _header(num_warmup, num_samples, chunk, kernel_kwargs):
    return {"version": CHECKPOINT_VERSION, "num_warmup": int(num_warmup),
            "num_samples": int(num_samples), "chunk": int(chunk),
            "kernel_kwargs": {k: v for k, v in kernel_kwargs.items()
                              if isinstance(v, (int, float, bool, str))}}


def run_nuts(model_fn: Callable, model_args: tuple = (), *, key, num_warmup: int = 500,
             num_samples: int = 1000, checkpoint: Optional[str] = None,
             checkpoint_every: int = 100, progress: Optional[Callable] = None,
             init_params: Optional[dict] = None, **kernel_kwargs) -> SamplingRun:
    """NUTS on the NumPyro model ``model_fn(*model_args)``.

    model_args : arrays or pytrees of arrays (bind static settings into ``model_fn`` with
    ``functools.partial``); key : ``jax.random`` key; num_warmup / num_samples :
    adaptation steps and kept draws; checkpoint : file written after every
    ``checkpoint_every`` steps (None: no file); progress : ``progress(SamplingProgress)``
    after every chunk; init_params : starting point ``{site: value}`` in the constrained
    space; kernel_kwargs : NUTS settings (``target_accept_prob``, ``max_tree_depth``, ...).
    """
    if int(num_samples) < 1 or int(num_warmup) < 0 or int(checkpoint_every) < 1:
        raise ValueError(f"need num_samples >= 1, num_warmup >= 0, checkpoint_every >= 1; got "
                         f"{num_samples}, {num_warmup}, {checkpoint_every}")
    kwargs = dict(kernel_kwargs)
    if init_params is not None:
        from numpyro.infer.util import init_to_value
        kwargs["init_strategy"] = init_to_value(values=init_params)
    kernel = _kernel(model_fn, kwargs)
    state = kernel.init(key, int(num_warmup), None, model_args, {})
    header = _header(num_warmup, num_samples, min(int(checkpoint_every),
                                                  int(num_warmup) + int(num_samples)), kernel_kwargs)
    header["key"] = np.asarray(jax.random.key_data(key) if jnp.issubdtype(
        key.dtype, jax.dtypes.prng_key) else key)
    header["init_params"] = None if init_params is None else jax.tree_util.tree_map(
        np.asarray, init_params)
    return _loop(kernel, state, model_args, header, 0, [], [], checkpoint, progress)


def load_checkpoint(path: str) -> dict:
    with open(path, "rb") as f:
        payload = pickle.load(f)
    if not isinstance(payload, dict) or payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} is not a jaxinfer sampling checkpoint (version "
                         f"{CHECKPOINT_VERSION})")
    return payload


def continue_sampling(checkpoint: str, model_fn: Callable, model_args: tuple = (), *,
                      num_samples: Optional[int] = None, progress: Optional[Callable] = None,
                      **kernel_kwargs) -> SamplingRun:
    """Resume :func:`run_nuts` from ``checkpoint`` with the same model and settings, up to
    ``num_samples`` kept draws (default: the number the run was started with); the file
    keeps being updated."""
    payload = load_checkpoint(checkpoint)
    header = {k: payload[k] for k in ("version", "num_warmup", "num_samples", "chunk",
                                      "kernel_kwargs", "key", "init_params")}
    if num_samples is not None:
        header["num_samples"] = int(num_samples)
    kwargs = {**payload["kernel_kwargs"], **kernel_kwargs}
    if payload["init_params"] is not None:
        from numpyro.infer.util import init_to_value
        kwargs["init_strategy"] = init_to_value(values=payload["init_params"])
    kernel = _kernel(model_fn, kwargs)
    # init sets the kernel up (potential, transforms); its state is replaced by the saved one
    template = kernel.init(jnp.asarray(payload["key"]), header["num_warmup"], None, model_args, {})
    state = jax.tree_util.tree_map(lambda t, v: jnp.asarray(v, t.dtype), template,
                                   payload["state"])
    return _loop(kernel, state, model_args, header, payload["done"], list(payload["draws"]),
                 list(payload["stats"]), checkpoint, progress)


__all__ = ["SamplingProgress", "SamplingRun", "run_nuts", "continue_sampling",
           "load_checkpoint"]
