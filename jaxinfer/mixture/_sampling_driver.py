"""A NumPyro NUTS driver with checkpoints, resumption, progress and ArviZ output.

Written so that it can become the one driver of every jaxinfer sampler (spt.sampling and
glmm.bayes have their own today): it knows nothing about mixtures. The kernel is NumPyro's
NUTS; the driver runs warmup, then the draws in chunks of ``checkpoint_every``. After every
chunk it writes a checkpoint (the draws so far and the sampler's exact state, written to a
temporary file and renamed, so a crash never leaves half a file) and then reports progress.
:func:`continue_sampling` resumes from a checkpoint: because the chunks and the state are the
same, an interrupted and resumed run yields the same chain as an uninterrupted one with the
same key.

Checkpoints are pickles of NumPy arrays: load only files you wrote yourself.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

CHECKPOINT_VERSION = 1


class SamplingProgress(NamedTuple):
    """What the progress callback receives after each chunk: draws done of ``total``."""

    done: int
    total: int


class SamplingRun(NamedTuple):
    """Draws ``samples`` ``{site: (n, ...)}``, ``stats`` ``{'diverging', 'potential_energy',
    'accept_prob', 'num_steps': (n,)}`` and where the checkpoint is (or None)."""

    samples: dict
    stats: dict
    checkpoint: Optional[str]

    def to_inference_data(self, names: Optional[dict] = None):
        """ArviZ InferenceData, one chain. ``names`` maps a vector site to a list of
        per-element names, which become separate variables."""
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


_EXTRA = ("diverging", "potential_energy", "accept_prob", "num_steps")


def _to_numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def _write(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(payload, f)
    os.replace(tmp, path)


def _mcmc(model_fn, chunk: int, num_warmup: int, kernel_kwargs: dict):
    from numpyro.infer import MCMC, NUTS

    return MCMC(NUTS(model_fn, **kernel_kwargs), num_warmup=num_warmup, num_samples=chunk,
                num_chains=1, progress_bar=False)


def _draw_chunks(mcmc, state, model_args, done: int, total: int, samples: list, stats: list,
                 checkpoint: Optional[str], header: dict, progress: Optional[Callable]):
    while done < total:
        mcmc.post_warmup_state = state
        mcmc.run(state.rng_key, *model_args, extra_fields=_EXTRA)
        state = mcmc.last_state
        samples.append(_to_numpy(mcmc.get_samples()))
        stats.append(_to_numpy(mcmc.get_extra_fields()))
        done += mcmc.num_samples
        if checkpoint is not None:
            _write(checkpoint, {**header, "done": done, "total": total,
                                "samples": samples, "stats": stats, "state": _to_numpy(state)})
        if progress is not None:
            progress(SamplingProgress(min(done, total), total))
    return state


def _concat(chunks: list, total: int) -> dict:
    keys = chunks[0].keys()
    return {k: np.concatenate([c[k] for c in chunks])[:total] for k in keys}


def run_nuts(model_fn: Callable, model_args: tuple = (), *, key, num_warmup: int = 500,
             num_samples: int = 1000, checkpoint: Optional[str] = None,
             checkpoint_every: int = 100, progress: Optional[Callable] = None,
             init_params: Optional[dict] = None, **kernel_kwargs) -> SamplingRun:
    """NUTS on the NumPyro model ``model_fn(*model_args)``.

    key : ``jax.random`` key; num_warmup / num_samples : adaptation steps and kept draws;
    checkpoint : file path written after every ``checkpoint_every`` draws (None: none);
    progress : ``progress(SamplingProgress)`` after every chunk; init_params : starting
    point in the constrained space ``{site: value}``; kernel_kwargs : NUTS settings
    (``target_accept_prob``, ``max_tree_depth``, ...).
    """
    if int(num_samples) < 1 or int(num_warmup) < 0 or int(checkpoint_every) < 1:
        raise ValueError(f"need num_samples >= 1, num_warmup >= 0, checkpoint_every >= 1; got "
                         f"{num_samples}, {num_warmup}, {checkpoint_every}")
    chunk = min(int(checkpoint_every), int(num_samples))
    mcmc = _mcmc(model_fn, chunk, int(num_warmup), kernel_kwargs)
    if init_params is not None:
        from numpyro.infer.util import init_to_value
        mcmc = _mcmc(model_fn, chunk, int(num_warmup),
                     {**kernel_kwargs, "init_strategy": init_to_value(values=init_params)})
    mcmc.warmup(key, *model_args, collect_warmup=False)
    header = {"version": CHECKPOINT_VERSION, "chunk": chunk, "num_warmup": int(num_warmup),
              "kernel_kwargs": {k: v for k, v in kernel_kwargs.items()
                                if isinstance(v, (int, float, bool, str))}}
    samples, stats = [], []
    _draw_chunks(mcmc, mcmc.post_warmup_state, model_args, 0, int(num_samples), samples, stats,
                 checkpoint, header, progress)
    return SamplingRun(_concat(samples, int(num_samples)), _concat(stats, int(num_samples)),
                       checkpoint)


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
    """Resume :func:`run_nuts` from ``checkpoint`` up to ``num_samples`` draws in all (default:
    the total the run was started with), same model and settings; keeps writing the file."""
    payload = load_checkpoint(checkpoint)
    total = int(payload["total"] if num_samples is None else num_samples)
    settings = {**payload["kernel_kwargs"], **kernel_kwargs}
    mcmc = _mcmc(model_fn, payload["chunk"], payload["num_warmup"], settings)
    state = jax.tree_util.tree_map(jnp.asarray, payload["state"])
    samples, stats = list(payload["samples"]), list(payload["stats"])
    header = {k: payload[k] for k in ("version", "chunk", "num_warmup", "kernel_kwargs")}
    if payload["done"] < total:
        _draw_chunks(mcmc, state, model_args, payload["done"], total, samples, stats,
                     checkpoint, header, progress)
    return SamplingRun(_concat(samples, total), _concat(stats, total), checkpoint)


__all__ = ["SamplingProgress", "SamplingRun", "run_nuts", "continue_sampling",
           "load_checkpoint"]
