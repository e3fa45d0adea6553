"""The one NUTS driver of jaxinfer: compiled chunks, checkpoints, exact resume, progress,
ArviZ output. Used by :mod:`jaxinfer.mixture.sampling`, :mod:`jaxinfer.spt.sampling` and
:mod:`jaxinfer.glmm.bayes`.

The kernel is NumPyro's NUTS in its functional form (``numpyro.infer.hmc.hmc`` with a
``potential_fn_gen``): the data are traced arguments of the compiled chunk, so a new data
set of the same shapes reuses the compilation. A target is either

* a NumPyro model ``model(*model_args)`` (sites in their constrained space; NumPyro's
  transforms and Jacobians), or
* a :class:`Target`: ``potential(*args) -> (z -> potential energy)`` and
  ``constrain(*args) -> (z -> {name: value})`` over an unconstrained pytree ``z``
  (for samplers that write their own transforms, as spt does).

:func:`run_nuts` runs warmup and draws alike in chunks of ``checkpoint_every`` steps through
one compiled ``lax.scan`` (NumPyro's ``MCMC.run`` recompiles on every call). After every
chunk it writes a checkpoint (the draws so far and the kernel's exact state, to a temporary
file renamed over the old one, so a crash never leaves half a file) and reports progress.
:func:`continue_sampling` resumes from a checkpoint: the chunks and the state are the same,
so an interrupted and resumed run yields the same chain as an uninterrupted one with the
same key. ``num_chains > 1`` runs the chains vectorised (``vmap``) in the same chunks.

Metropolis-within-Gibbs: with ``gibbs=update`` and ``latent=...`` a block of latent
variables is updated before every NUTS step, ``latent, record = update(key, latent, params,
step, *model_args)`` (``params`` the constrained sites at the current position, ``step``
the step index, warmup included), and the target sees it as its first argument:
``model(latent, *model_args)``. The NUTS state's potential energy and gradient are
recomputed at the new latent values, so each NUTS step is a valid kernel of the parameters'
conditional; ``record`` (a dict of arrays) is kept per step beside the draws. Checkpoints
hold the latent block, so resume stays exact.

:func:`chain` is the same chain as a pure function (no files, no host loop), to ``jit`` /
``vmap`` over data sets; it equals :func:`run_nuts` without a checkpoint.

Checkpoints are pickles of NumPy arrays: load only files you wrote yourself.
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

CHECKPOINT_VERSION = 4
_STATS = ("diverging", "potential_energy", "accept_prob", "num_steps")
#: NUTS settings the driver passes to NumPyro's ``init_kernel`` (NumPyro's names).
SETTINGS = ("target_accept_prob", "max_tree_depth", "dense_mass", "step_size",
            "adapt_step_size", "adapt_mass_matrix")


class Target(NamedTuple):
    """A sampling target over an unconstrained pytree ``z``.

    potential : ``potential(*args) -> (z -> scalar)``, the negative log density of ``z``
        (Jacobians of your transforms included);
    constrain : ``constrain(*args) -> (z -> {name: array})``, what is kept per draw.
    Keep one Target object per model (e.g. module level or ``functools.lru_cache``): the
    compiled chunk is cached per Target and settings.
    """

    potential: Callable
    constrain: Callable


class GibbsState(NamedTuple):
    """The driver's state with a Gibbs block: NumPyro's ``hmc`` state, the ``latent``
    values and the key of the latent updates."""

    hmc: object
    latent: object
    key: object


class SamplingProgress(NamedTuple):
    """What the progress callback receives after each chunk: steps done of ``total``
    (warmup included) and how many of them are kept draws."""

    done: int
    total: int
    draws: int


class SamplingRun(NamedTuple):
    """Kept draws ``samples`` ``{site: (chains, n, ...)}``, per-draw ``stats``
    ``{'diverging', 'potential_energy', 'accept_prob', 'num_steps': (chains, n)}``, the
    checkpoint path and the kernel's last ``state`` (NumPy leaves; ``state.adapt_state.
    step_size`` is the adapted step size)."""

    samples: dict
    stats: dict
    checkpoint: Optional[str]
    state: object = None

    def flat(self, site: str) -> np.ndarray:
        """Draws of ``site`` with the chains concatenated: ``(chains * n, ...)``."""
        values = self.samples[site]
        return values.reshape((-1,) + values.shape[2:])

    def to_inference_data(self, names: Optional[dict] = None):
        """ArviZ InferenceData. ``names`` maps a vector site to per-element names (its last
        axis), which become separate variables."""
        import arviz as az

        posterior = {}
        for site, values in self.samples.items():
            if names and site in names:
                for j, name in enumerate(names[site]):
                    posterior[name] = values[..., j]
            else:
                posterior[site] = values
        stats = {"diverging": self.stats["diverging"],
                 "lp": -self.stats["potential_energy"],
                 "acceptance_rate": self.stats["accept_prob"],
                 "n_steps": self.stats["num_steps"]}
        return az.from_dict(posterior=posterior, sample_stats=stats)


# --------------------------------------------------------------------------- targets


def _fn_key(fn):
    """A hashable identity for a model function; partials compare by their contents."""
    if isinstance(fn, functools.partial):
        key = (fn.func, fn.args, tuple(sorted(fn.keywords.items())))
    else:
        key = fn
    try:
        hash(key)
    except TypeError:
        return None
    return key


_MODEL_TARGETS: dict = {}


def _plain_key(key):
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return key


def model_target(model_fn: Callable, model_args: tuple, key, init_params=None):
    """``(Target, z0)`` of a NumPyro model: NumPyro's potential (transforms, Jacobians) and
    postprocessing (constrained sites and deterministics); ``z0`` the unconstrained start
    (``init_params`` in the constrained space, or NumPyro's uniform init from ``key``)."""
    from numpyro.infer.util import init_to_uniform, init_to_value, initialize_model

    strategy = init_to_uniform if init_params is None else init_to_value(values=init_params)
    # NumPyro runs this eagerly, op by op (each primitive compiled on its own); checking
    # only the potential (not its gradient, which the compiled init computes anyway) halves
    # that cost
    info = initialize_model(key, model_fn, init_strategy=strategy, model_args=tuple(model_args),
                            dynamic_args=True, validate_grad=False)
    cache_key = _fn_key(model_fn)
    target = _MODEL_TARGETS.get(cache_key) if cache_key is not None else None
    if target is None:
        target = Target(info.potential_fn, info.postprocess_fn)
        if cache_key is not None:
            if len(_MODEL_TARGETS) > 32:
                _MODEL_TARGETS.clear()
            _MODEL_TARGETS[cache_key] = target
    return target, info.param_info.z


# --------------------------------------------------------------------------- kernel


class _Kernel:
    """NumPyro's functional NUTS for one (target, settings, num_warmup, gibbs); hashed by
    identity and cached, so every run with the same ones shares the compiled chunk.
    (NumPyro's ``init_kernel`` fixes the warmup length and tree depth in its closure: they
    are part of the key.)"""

    def __init__(self, target: Target, settings: tuple, num_warmup: int,
                 gibbs: Optional[Callable] = None):
        from numpyro.infer.hmc import hmc

        self.target, self.settings, self.num_warmup = target, settings, num_warmup
        self.gibbs = gibbs
        self.init_fn, self.sample_fn = hmc(potential_fn_gen=target.potential, algo="NUTS")

    def init(self, z0, key, args, latent=None):
        settings = dict(self.settings)
        if isinstance(z0, dict) and isinstance(settings.get("dense_mass"), bool):
            # NumPyro's structural form for a dict of sites
            settings["dense_mass"] = [tuple(sorted(z0))] if settings["dense_mass"] else []
        if self.gibbs is None:
            return self.init_fn(z0, self.num_warmup, model_args=tuple(args), rng_key=key,
                                **settings)
        hmc_key, gibbs_key = jax.random.split(key)
        state = self.init_fn(z0, self.num_warmup, model_args=(latent,) + tuple(args),
                             rng_key=hmc_key, **settings)
        return GibbsState(state, latent, gibbs_key)

    def _stats(self, s):
        return {k: getattr(s, k) for k in _STATS}

    def scan(self, length, state, args):
        """``length`` steps: ``(last state, (draws {name: (length, ...)}, stats))``."""
        args = tuple(args)
        if self.gibbs is None:
            constrain = self.target.constrain(*args)

            def body(s, _):
                s = self.sample_fn(s, args, {})
                return s, (constrain(s.z), self._stats(s))

            return lax.scan(body, state, None, length=length)

        def gibbs_body(s, _):
            key, sub = jax.random.split(s.key)
            params = self.target.constrain(s.latent, *args)(s.hmc.z)
            latent, record = self.gibbs(sub, s.latent, params, s.hmc.i, *args)
            full = (latent,) + args
            # the stored energy and gradient belong to the old latent values
            pe, grad = jax.value_and_grad(self.target.potential(*full))(s.hmc.z)
            h = self.sample_fn(s.hmc._replace(potential_energy=pe, z_grad=grad), full, {})
            draws = {**self.target.constrain(*full)(h.z), **record}
            return GibbsState(h, latent, key), (draws, self._stats(h))

        return lax.scan(gibbs_body, state, None, length=length)


_KERNELS: dict = {}


def _settings(kernel_kwargs: dict) -> tuple:
    unknown = sorted(set(kernel_kwargs) - set(SETTINGS))
    if unknown:
        raise TypeError(f"unknown NUTS setting(s) {unknown}; expected some of {list(SETTINGS)}")
    return tuple(sorted(kernel_kwargs.items()))


def _kernel(target: Target, kernel_kwargs: dict, num_warmup: int, gibbs=None) -> _Kernel:
    settings = _settings(kernel_kwargs)
    gibbs_key = None if gibbs is None else (_fn_key(gibbs),)
    key = (target, settings, int(num_warmup), gibbs_key)
    try:
        hash(key)
    except TypeError:
        return _Kernel(target, settings, int(num_warmup), gibbs)
    if gibbs_key == (None,):  # an unhashable update: no sharing
        return _Kernel(target, settings, int(num_warmup), gibbs)
    if key not in _KERNELS:
        if len(_KERNELS) > 64:
            _KERNELS.clear()
        _KERNELS[key] = _Kernel(target, settings, int(num_warmup), gibbs)
    return _KERNELS[key]


def _init_impl(kernel, chains, z0, keys, args, latent):
    if chains is None:
        return kernel.init(z0, keys, args, latent)
    return jax.vmap(lambda z, k, lat: kernel.init(z, k, args, lat))(z0, keys, latent)


def _chunk_impl(kernel, length, chains, state, args):
    if chains is None:
        return kernel.scan(length, state, args)
    return jax.vmap(lambda s: kernel.scan(length, s, args))(state)


@functools.lru_cache(maxsize=None)
def _jitted(name: str):
    """The compiled init / chunk, made on first use (when the backend is known) with the
    solver core's CPU compiler options (less compile time for loop-heavy programs)."""
    from jaxinfer.optimize._compile import compiler_options

    fn, static = {"init": (_init_impl, (0, 1)), "chunk": (_chunk_impl, (0, 1, 2))}[name]
    return jax.jit(fn, static_argnums=static, compiler_options=compiler_options())


def _init(*args):
    return _jitted("init")(*args)


def _chunk(*args):
    return _jitted("chunk")(*args)


def chain(target: Target, z0, args: tuple, key, *, num_warmup: int, num_samples: int,
          **kernel_kwargs):  # (no Gibbs block here: run_nuts has it)
    """One NUTS chain as a pure function (``jit`` / ``vmap`` it over data sets or keys).

    target : :class:`Target`; z0 : unconstrained start (pytree); args : the target's
    arguments (arrays); key : ``jax.random`` key. Returns ``(draws {name: (num_samples,
    ...)}, stats {name: (num_samples,)}, last state)``, the same numbers as
    :func:`run_nuts` without a checkpoint.
    """
    kernel = _kernel(target, kernel_kwargs, num_warmup)
    state = kernel.init(z0, _plain_key(key), tuple(args))
    state, (draws, stats) = kernel.scan(int(num_warmup) + int(num_samples), state, tuple(args))
    cut = lambda tree: jax.tree_util.tree_map(lambda v: v[num_warmup:], tree)  # noqa: E731
    return cut(draws), cut(stats), state


# --------------------------------------------------------------------------- driver


def _write(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        pickle.dump(payload, f)
    os.replace(tmp, path)


def _numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def _loop(kernel, state, args, header, done, draws, stats, checkpoint, progress):
    chunk, total = header["chunk"], header["num_warmup"] + header["num_samples"]
    chains = None if header["num_chains"] == 1 else header["num_chains"]
    while done < total:
        state, (d, s) = _chunk(kernel, chunk, chains, state, args)
        draws.append(_numpy(d))
        stats.append(_numpy(s))
        done += chunk
        if checkpoint is not None:
            _write(checkpoint, {**header, "done": done, "draws": draws, "stats": stats,
                                "state": _numpy(state)})
        if progress is not None:
            progress(SamplingProgress(min(done, total), total,
                                      max(0, min(done, total) - header["num_warmup"])))
    lo, hi = header["num_warmup"], total
    axis = 0 if chains is None else 1

    def cat(chunks):
        out = {}
        for k in chunks[0]:
            v = np.concatenate([c[k] for c in chunks], axis=axis)
            v = v[lo:hi] if axis == 0 else v[:, lo:hi]
            out[k] = v[None] if axis == 0 else v
        return out

    return SamplingRun(cat(draws), cat(stats), checkpoint, _numpy(state))


def _check_counts(num_warmup, num_samples, checkpoint_every, num_chains):
    if (int(num_samples) < 1 or int(num_warmup) < 0 or int(num_chains) < 1
            or (checkpoint_every is not None and int(checkpoint_every) < 1)):
        raise ValueError(f"need num_samples >= 1, num_warmup >= 0, num_chains >= 1 and "
                         f"checkpoint_every >= 1 (or None); got {num_samples}, {num_warmup}, "
                         f"{num_chains}, {checkpoint_every}")


def _start(model, model_args, key, init_params, num_chains):
    """(target, z0, kernel key(s)) for a model or a Target; z0 stacked per chain
    (``model_args`` as the target sees them: the latent block first with Gibbs)."""
    key = _plain_key(key)
    if num_chains == 1:
        run_key, init_key = jax.random.split(key)
        keys = [(run_key, init_key)]
    else:
        keys = [tuple(jax.random.split(k)) for k in jax.random.split(key, num_chains)]
    if isinstance(model, Target):
        if init_params is None:
            raise ValueError("a Target needs init_params: the unconstrained starting point z0")
        target, z0s = model, [init_params] * num_chains
    elif callable(model):
        starts = [model_target(model, model_args, k, init_params) for _, k in keys]
        target, z0s = starts[0][0], [z for _, z in starts]
    else:
        raise TypeError(f"model must be a NumPyro model function or a Target, got "
                        f"{type(model).__name__}")
    if num_chains == 1:
        return target, z0s[0], keys[0][0]
    stack = lambda *leaves: jnp.stack([jnp.asarray(v) for v in leaves])  # noqa: E731
    return target, jax.tree_util.tree_map(stack, *z0s), jnp.stack([k for k, _ in keys])


def _stack(tree, num_chains):
    if num_chains == 1:
        return tree
    return jax.tree_util.tree_map(lambda v: jnp.stack([jnp.asarray(v)] * num_chains), tree)


def _first_chain(tree, num_chains):
    if num_chains == 1:
        return tree
    return jax.tree_util.tree_map(lambda v: v[0], tree)


def run_nuts(model, model_args: tuple = (), *, key, num_warmup: int = 500,
             num_samples: int = 1000, num_chains: int = 1, checkpoint: Optional[str] = None,
             checkpoint_every: Optional[int] = None, progress: Optional[Callable] = None,
             init_params=None, gibbs: Optional[Callable] = None, latent=None,
             **kernel_kwargs) -> SamplingRun:
    """NUTS on a NumPyro model ``model(*model_args)`` or a :class:`Target`.

    model_args : arrays or pytrees of arrays (bind static settings into the model with
    ``functools.partial``); key : ``jax.random`` key; num_warmup / num_samples : adaptation
    steps and kept draws per chain; num_chains : chains, run vectorised; checkpoint : file
    written after every chunk (None: no file); checkpoint_every : chunk length in steps
    (default: 100 with a checkpoint, else the whole run); progress :
    ``progress(SamplingProgress)`` after every chunk; init_params : start, ``{site: value}``
    in the constrained space for a model (default: NumPyro's uniform init), the
    unconstrained ``z0`` for a Target (required); gibbs / latent : a Gibbs block (see the
    module docstring; ``gibbs`` a hashable function, e.g. module level, ``latent`` its
    start, the same for every chain); kernel_kwargs : NUTS settings
    (``target_accept_prob``, ``max_tree_depth``, ``dense_mass``, ...).
    """
    _check_counts(num_warmup, num_samples, checkpoint_every, num_chains)
    if (gibbs is None) != (latent is None):
        raise ValueError("a Gibbs block needs both gibbs=update and latent=its start")
    total = int(num_warmup) + int(num_samples)
    every = (100 if checkpoint is not None else total) if checkpoint_every is None \
        else int(checkpoint_every)
    target_args = tuple(model_args) if gibbs is None else (latent,) + tuple(model_args)
    target, z0, keys = _start(model, target_args, key, init_params, int(num_chains))
    kernel = _kernel(target, kernel_kwargs, int(num_warmup), gibbs)
    chains = None if int(num_chains) == 1 else int(num_chains)
    state = _init(kernel, chains, z0, keys, tuple(model_args), _stack(latent, int(num_chains)))
    header = {"version": CHECKPOINT_VERSION, "num_warmup": int(num_warmup),
              "num_samples": int(num_samples), "num_chains": int(num_chains),
              "chunk": min(every, total), "kernel_kwargs": dict(kernel_kwargs),
              "gibbs": gibbs is not None,
              "init_params": None if isinstance(model, Target) or init_params is None
              else _numpy(init_params)}
    return _loop(kernel, state, tuple(model_args), header, 0, [], [], checkpoint, progress)


def load_checkpoint(path: str) -> dict:
    """The payload of a checkpoint written by :func:`run_nuts` (a dict)."""
    with open(path, "rb") as f:
        payload = pickle.load(f)
    if not isinstance(payload, dict) or payload.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"{path} is not a jaxinfer sampling checkpoint (version "
                         f"{CHECKPOINT_VERSION})")
    return payload


def continue_sampling(checkpoint: str, model, model_args: tuple = (), *,
                      num_samples: Optional[int] = None, progress: Optional[Callable] = None,
                      gibbs: Optional[Callable] = None, **kernel_kwargs) -> SamplingRun:
    """Resume :func:`run_nuts` from ``checkpoint`` with the same model (or Target),
    settings and ``gibbs`` update, up to ``num_samples`` kept draws per chain (default: the
    number the run was started with); the file keeps being updated."""
    payload = load_checkpoint(checkpoint)
    header = {k: payload[k] for k in ("version", "num_warmup", "num_samples", "num_chains",
                                      "chunk", "kernel_kwargs", "init_params", "gibbs")}
    if header["gibbs"] != (gibbs is not None):
        raise ValueError(f"{checkpoint} was written by a run "
                         f"{'with' if header['gibbs'] else 'without'} a Gibbs block; pass "
                         f"{'its gibbs=update' if header['gibbs'] else 'no gibbs'} to resume it")
    if num_samples is not None:
        header["num_samples"] = int(num_samples)
    kwargs = {**payload["kernel_kwargs"], **kernel_kwargs}
    n = header["num_chains"]
    chains = None if n == 1 else n
    saved = payload["state"]
    # a start sets the kernel up (its closure, the target's transforms); the state it would
    # begin from is replaced by the saved one
    hmc_saved = saved if gibbs is None else saved.hmc
    latent = None if gibbs is None else jax.tree_util.tree_map(jnp.asarray, saved.latent)
    target_args = tuple(model_args) if gibbs is None else \
        (_first_chain(latent, n),) + tuple(model_args)
    if isinstance(model, Target):
        target = model
    else:
        target, _ = model_target(model, target_args, jax.random.PRNGKey(0),
                                 header["init_params"])
    kernel = _kernel(target, kwargs, header["num_warmup"], gibbs)
    template = _init(kernel, chains, jax.tree_util.tree_map(jnp.asarray, hmc_saved.z),
                     jnp.asarray(hmc_saved.rng_key), tuple(model_args), latent)
    state = jax.tree_util.tree_map(lambda t, v: jnp.asarray(v, t.dtype), template, saved)
    return _loop(kernel, state, tuple(model_args), header, payload["done"],
                 list(payload["draws"]), list(payload["stats"]), checkpoint, progress)


__all__ = ["Target", "GibbsState", "SamplingProgress", "SamplingRun", "SETTINGS", "model_target", "chain",
           "run_nuts", "continue_sampling", "load_checkpoint", "CHECKPOINT_VERSION"]
