"""Posterior sampling of whole maps with NumPyro's NUTS.

TRamWAy reports the maximum a posteriori map only. Here the same negative log-posterior
(:mod:`jaxinfer.spt.posteriors`, TRamWAy's objectives) is the potential energy of a
No-U-Turn sampler over every cell's parameters jointly, which gives per-cell posterior means
and credible intervals that account for the smoothing priors' coupling between cells.

Parameters with bounds are sampled in an unconstrained space: the diffusivity as
``D = lower + exp(u)`` (with the log-Jacobian ``u`` added, so the prior stays flat in D);
drift, force and potential are unconstrained. The potential is defined up to a constant
(nothing in the likelihood or the priors sees its level), so its level is pinned by a
standard normal prior on the cell-mean of V and the reported potential is centred per sample
(``V - mean(V)``); gradients, forces and the map's shape are unaffected.

The sampler is a pure function of a key and a :class:`~jaxinfer.spt.cells.Cells` pytree, so
:func:`sample_batch` vmaps it over many data sets of the same shape (bootstrap replicates
from :func:`bootstrap_cells`, or several acquisitions tessellated alike) in one compiled call.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxinfer.spt.modes import VECTOR_PARAMETERS

__all__ = ["sample", "sample_batch", "bootstrap_cells", "run_nuts", "SampleResult",
           "unconstrained_potential", "SAMPLING_MODES"]

def _samplable_names():
    from jaxinfer.spt.modes import MODES, resolve
    from jaxinfer.spt.settings import PRIOR_NAMES

    return tuple(m for m in MODES if resolve(m, PRIOR_NAMES).samplable)


SAMPLING_MODES = _samplable_names()  # from the one registry (jaxinfer.spt.modes)


class SampleResult(NamedTuple):
    """Output of :func:`sample` / :func:`sample_batch`.

    Attributes
    ----------
    maps : pandas.DataFrame (or list of them for a batch)
        One row per cell (index: cell ids): for every feature (``diffusivity``,
        ``potential``, ``drift x``...) its posterior mean, ``<feature> sd``,
        ``<feature> lower`` and ``<feature> upper`` (equal-tailed credible interval).
    samples : dict of arrays
        Constrained samples, ``{name: [num_samples, ncells(, dim)]}`` (a leading batch axis
        for :func:`sample_batch`).
    diagnostics : dict
        ``accept_prob`` (mean acceptance probability), ``divergences`` (count),
        ``num_steps`` (mean leapfrog steps per sample), ``step_size``.
    """

    maps: object
    samples: dict
    diagnostics: dict


# --------------------------------------------------------------------------- objectives


def _stencil(cells):
    """TRamWAy's ``grad1`` stencil of the (unbatched) cell geometry, built at the edge."""
    from jaxinfer.spt.gradient import grad1_stencil

    centers = np.asarray(cells.centers)
    neighbours = np.asarray(cells.neighbours)
    neighbour_mask = np.asarray(cells.neighbour_mask)
    if centers.ndim == 3:  # batched geometry: must be shared
        centers, neighbours, neighbour_mask = centers[0], neighbours[0], neighbour_mask[0]
    lists = [n[m] for n, m in zip(neighbours, neighbour_mask)]
    return grad1_stencil(centers, lists)


def sampling_mode(name: str):
    """The registry entry NUTS samples for ``name`` (``d``/``dd``/``df`` are the smooth
    modes here: the sampler always has the priors' terms, zero when a prior is None)."""
    from jaxinfer.spt.modes import resolve
    from jaxinfer.spt.settings import PRIOR_NAMES

    try:
        mode = resolve(name, PRIOR_NAMES)
    except ValueError:
        mode = None
    if mode is None or not mode.samplable:
        raise ValueError(f"unknown sampling mode {name!r}; expected one of {SAMPLING_MODES}")
    return mode


def _objective(mode: str, cells, grad, *, sigma2, diffusivity_prior=None, potential_prior=None,
               drift_prior=None, force_prior=None, jeffreys_prior=False):
    """``params -> negative log-posterior`` for ``mode``: the registry's posterior (TRamWAy's
    objective) over a dict of ``diffusivity`` [ncells] and, by mode, ``drift`` / ``force``
    [ncells, dim] or ``potential`` [ncells]. None priors count as 0."""
    from jaxinfer.spt.modes import Problem

    entry = sampling_mode(mode)
    dtype = cells.dr.dtype
    weight = lambda v: jnp.asarray(0.0 if v is None else v, dtype)  # noqa: E731
    priors = dict(diffusivity=weight(diffusivity_prior), drift=weight(drift_prior),
                  force=weight(force_prior), potential=weight(potential_prior),
                  diffusivity_time=weight(None), potential_time=weight(None))
    problem = Problem(cells=cells, grad=grad, regularizer=None, sigma2=weight(sigma2),
                      priors=priors, normalization=weight(1.0), offset=weight(0.0),
                      jeffreys=bool(jeffreys_prior))
    return lambda params: entry.posterior(params, problem)


def _parameter_names(mode: str):
    return sampling_mode(mode).parameters


def unconstrained_potential(neg_log_posterior: Callable, lower_diffusivity,
                            potential_gauge: float = 1.0) -> Callable:
    """Wrap a negative log-posterior over constrained params into NUTS's potential energy.

    ``u["diffusivity"]`` maps to ``lower + exp(u)`` (log-Jacobian included); a
    ``u["potential"]`` gets a ``N(0, potential_gauge²)`` prior on its cell mean (the gauge).
    """

    def potential(u):
        params = dict(u)
        log_d = u["diffusivity"]
        params["diffusivity"] = lower_diffusivity + jnp.exp(log_d)
        energy = neg_log_posterior(params) - jnp.sum(log_d)
        if "potential" in u:
            energy = energy + 0.5 * (jnp.mean(u["potential"]) / potential_gauge) ** 2
        return energy

    return potential


def _to_constrained(u, lower_diffusivity):
    out = dict(u)
    out["diffusivity"] = lower_diffusivity + jnp.exp(u["diffusivity"])
    if "potential" in u:
        out["potential"] = u["potential"] - jnp.mean(u["potential"], axis=-1, keepdims=True)
    return out


# --------------------------------------------------------------------------- NUTS driver


def _diagnostics(stats, state):
    accept = stats["accept_prob"]
    return dict(accept_prob=jnp.mean(accept), divergences=jnp.sum(stats["diverging"]),
                num_steps=jnp.mean(stats["num_steps"].astype(accept.dtype)),
                step_size=state.adapt_state.step_size)


def run_nuts(key, potential_fn: Callable, init_params, *, num_warmup: int = 500,
             num_samples: int = 500, target_accept_prob: float = 0.8, max_tree_depth: int = 8,
             dense_mass: bool = False):
    """Run one NUTS chain as a pure JAX function (jit- and vmap-able), on the shared driver
    (:func:`jaxinfer.sampling.chain`).

    Parameters
    ----------
    key : jax.random key
    potential_fn : callable ``params -> scalar`` (negative log density, unconstrained space)
    init_params : pytree, starting point
    num_warmup, num_samples : int, step-size and diagonal-mass adaptation steps, then draws

    Returns
    -------
    samples : pytree with a leading ``num_samples`` axis
    diagnostics : dict of scalars (``accept_prob``, ``divergences``, ``num_steps``,
        ``step_size``)
    """
    from jaxinfer.sampling import Target, chain

    target = Target(potential=lambda: potential_fn, constrain=lambda: (lambda z: z))
    z, stats, state = chain(target, init_params, (), key, num_warmup=int(num_warmup),
                            num_samples=int(num_samples),
                            target_accept_prob=target_accept_prob,
                            max_tree_depth=max_tree_depth, dense_mass=dense_mass)
    return z, _diagnostics(stats, state)


# --------------------------------------------------------------------------- public API


def _prepare(cells, mode, sigma, sigma2, min_diffusivity, init):
    sampling_mode(mode)
    if sigma is not None and sigma2 is not None:
        raise ValueError("give sigma (localization error, µm) or sigma2 (its square), not both")
    from jaxinfer.spt.settings import localization_variance

    sigma2 = localization_variance(sigma=sigma, sigma2=sigma2)  # refuses sigma < 0, NaN
    lower = 0.0 if min_diffusivity is None else float(min_diffusivity)
    ncells, dim = cells.dt.shape[-2], cells.dr.shape[-1]
    dtype = cells.dr.dtype
    if init is None:
        # TRamWAy's starting diffusivity; drift / force / potential start at 0
        dr2 = jnp.sum(jnp.where(cells.mask[..., None], cells.dr**2, 0.0), axis=(-1, -2))
        dt_mean = jnp.sum(jnp.where(cells.mask, cells.dt, 0.0), axis=-1) / cells.counts
        D0 = dr2 / (cells.counts * dim) / (2.0 * dt_mean)
        init = {"diffusivity": D0}
    init = dict(init)
    init["diffusivity"] = jnp.log(jnp.maximum(jnp.asarray(init["diffusivity"], dtype) - lower,
                                              1e-6))
    shape = init["diffusivity"].shape
    for name in _parameter_names(mode)[1:]:
        if name not in init:
            extra = (dim,) if name in VECTOR_PARAMETERS else ()
            init[name] = jnp.zeros(shape + extra, dtype)
        else:
            init[name] = jnp.asarray(init[name], dtype)
    return float(sigma2), lower, init


def _summaries(samples: dict, cell_ids, credible_level: float) -> pd.DataFrame:
    alpha = (1.0 - credible_level) / 2.0
    out = {}
    for name, values in samples.items():
        values = np.asarray(values)
        columns = [name] if values.ndim == 2 else [f"{name} {a}" for a in "xyz"[:values.shape[2]]]
        per_column = [values] if values.ndim == 2 else [values[..., d] for d in range(values.shape[2])]
        for column, v in zip(columns, per_column):
            out[column] = v.mean(axis=0)
            out[f"{column} sd"] = v.std(axis=0, ddof=1)
            out[f"{column} lower"] = np.quantile(v, alpha, axis=0)
            out[f"{column} upper"] = np.quantile(v, 1.0 - alpha, axis=0)
    return pd.DataFrame(out, index=pd.Index(np.asarray(cell_ids), name="cell"))


@functools.lru_cache(maxsize=32)
def _target(mode, lower, sigma2, objective_items):
    """The shared driver's Target for a setting: ``potential(cells, grad)`` and
    ``constrain(cells, grad)`` over the unconstrained parameters (one object per setting,
    so the driver's compiled chain is reused)."""
    from jaxinfer.sampling import Target

    objective_kwargs = dict(objective_items)

    def potential(cells, grad):
        nlp = _objective(mode, cells, grad, sigma2=sigma2, **objective_kwargs)
        return unconstrained_potential(nlp, lower)

    return Target(potential=potential,
                  constrain=lambda cells, grad: (lambda u: _to_constrained(u, lower)))


@functools.lru_cache(maxsize=32)
def _compiled_chain(mode, num_warmup, num_samples, target_accept_prob, max_tree_depth, lower,
                    sigma2, objective_items, batched):
    """jit-compiled chain ``(key, cells, grad, init) -> (samples, diagnostics)`` on the
    shared driver (:func:`jaxinfer.sampling.chain`), cached per setting so repeated calls
    with same-shaped data reuse the compilation."""
    from jaxinfer.sampling import chain as nuts_chain

    target = _target(mode, lower, sigma2, objective_items)

    def chain(key, cells, grad, init):
        z, stats, state = nuts_chain(target, init, (cells, grad), key, num_warmup=num_warmup,
                                     num_samples=num_samples,
                                     target_accept_prob=target_accept_prob,
                                     max_tree_depth=max_tree_depth)
        return z, _diagnostics(stats, state)

    if batched is None:
        return jax.jit(chain)
    return jax.jit(jax.vmap(chain, in_axes=(0, batched, None, 0)))


def _objective_items(jeffreys_prior=False, **priors):
    from jaxinfer.spt.settings import check_priors

    items = dict(check_priors(**priors), jeffreys_prior=jeffreys_prior)
    return tuple(sorted(items.items()))


def sample(cells, mode: str = "d", *, key, num_samples: int = 500, num_warmup: int = 500,
           sigma: Optional[float] = None, sigma2: Optional[float] = None,
           diffusivity_prior: Optional[float] = None, potential_prior: Optional[float] = None,
           drift_prior: Optional[float] = None, force_prior: Optional[float] = None,
           jeffreys_prior: bool = False, min_diffusivity: Optional[float] = None,
           credible_level: float = 0.95, init: Optional[dict] = None,
           target_accept_prob: float = 0.8, max_tree_depth: int = 8) -> SampleResult:
    """Sample the joint posterior of a whole map with NUTS.

    Parameters
    ----------
    cells : Cells
        From :func:`jaxinfer.spt.cells.distributed`. For smoothing priors, pass cells that
        all have neighbours (``cells.with_neighbours_only()``, as TRamWAy's smooth modes).
    mode : {"d", "dd", "df", "dv"}
        The model (TRamWAy's names); ``None`` priors mean no prior term.
    key : jax.random key
    num_samples, num_warmup : int
        Draws kept, and adaptation steps before them (one chain).
    sigma / sigma2 : float
        Localization error (µm) or its square; default sigma = 0.03 µm (TRamWAy's).
    diffusivity_prior, potential_prior, drift_prior, force_prior, jeffreys_prior :
        As :func:`jaxinfer.spt.infer.infer` (same objective).
    min_diffusivity : float, optional
        Lower bound of D (default 0: the sampler keeps D > 0).
    credible_level : float
        Mass of the equal-tailed credible intervals (default 0.95).
    init : dict, optional
        Starting point ``{"diffusivity": [ncells], ...}`` (e.g. the MAP from ``infer``);
        default: TRamWAy's starting point.

    Returns
    -------
    SampleResult
        ``maps`` DataFrame (posterior mean, sd, lower, upper per feature), ``samples``,
        ``diagnostics``.
    """
    sigma2, lower, init = _prepare(cells, mode, sigma, sigma2, min_diffusivity, init)
    items = _objective_items(diffusivity_prior=diffusivity_prior,
                             potential_prior=potential_prior, drift_prior=drift_prior,
                             force_prior=force_prior, jeffreys_prior=bool(jeffreys_prior))
    chain = _compiled_chain(mode, int(num_warmup), int(num_samples), float(target_accept_prob),
                            int(max_tree_depth), lower, sigma2, items, None)
    samples, diagnostics = chain(key, cells, _stencil(cells), init)
    diagnostics = {k: np.asarray(v).item() for k, v in diagnostics.items()}
    maps = _summaries(samples, np.asarray(cells.cell_ids), credible_level)
    return SampleResult(maps, {k: np.asarray(v) for k, v in samples.items()}, diagnostics)


def sample_batch(batched_cells, mode: str = "d", *, key, num_samples: int = 500,
                 num_warmup: int = 500, sigma: Optional[float] = None,
                 sigma2: Optional[float] = None, diffusivity_prior: Optional[float] = None,
                 potential_prior: Optional[float] = None, drift_prior: Optional[float] = None,
                 force_prior: Optional[float] = None, jeffreys_prior: bool = False,
                 min_diffusivity: Optional[float] = None, credible_level: float = 0.95,
                 target_accept_prob: float = 0.8, max_tree_depth: int = 8) -> SampleResult:
    """:func:`sample` vmapped over a batch of data sets of identical shapes.

    ``batched_cells`` is a Cells whose array leaves have a leading batch axis ``B`` (e.g.
    :func:`bootstrap_cells`, or ``jax.tree.map(lambda *x: jnp.stack(x), *cells_list)`` for
    cells that share the tessellation and the padding). ``key`` is split into ``B`` keys.
    Everything runs as one compiled, vmapped call. Returns a SampleResult whose ``maps`` is a
    list of ``B`` DataFrames and whose ``samples`` / ``diagnostics`` have a leading ``B``
    axis.
    """
    batch = int(batched_cells.dt.shape[0])
    if batched_cells.dt.ndim != 3:
        raise ValueError(f"batched_cells.dt must have shape [batch, ncells, max_count], got "
                         f"{batched_cells.dt.shape}; use sample() for a single data set")
    sigma2, lower, init = _prepare(batched_cells, mode, sigma, sigma2, min_diffusivity, None)
    items = _objective_items(diffusivity_prior=diffusivity_prior,
                             potential_prior=potential_prior, drift_prior=drift_prior,
                             force_prior=force_prior, jeffreys_prior=bool(jeffreys_prior))
    chain = _compiled_chain(mode, int(num_warmup), int(num_samples), float(target_accept_prob),
                            int(max_tree_depth), lower, sigma2, items,
                            _batch_axes(batched_cells))
    keys = jax.random.split(key, batch)
    samples, diagnostics = chain(keys, batched_cells, _stencil(batched_cells), init)
    samples = {k: np.asarray(v) for k, v in samples.items()}
    cell_ids = np.asarray(batched_cells.cell_ids)
    cell_ids = cell_ids[0] if cell_ids.ndim == 2 else cell_ids
    maps = [_summaries({k: v[b] for k, v in samples.items()}, cell_ids, credible_level)
            for b in range(batch)]
    return SampleResult(maps, samples, {k: np.asarray(v) for k, v in diagnostics.items()})


def _batch_axes(batched_cells):
    """vmap axes for a Cells: 0 for leaves that carry the batch axis, None otherwise."""
    reference = batched_cells.dt.ndim  # [B, m, K]

    def axis(leaf, expected_unbatched_ndim):
        return 0 if jnp.ndim(leaf) == expected_unbatched_ndim + 1 else None

    unbatched = dict(dr=3, dt=2, mask=2, counts=1, centers=2, volumes=1, neighbours=2,
                     neighbour_mask=2, cell_ids=1)
    del reference
    fields = {name: axis(getattr(batched_cells, name), nd) for name, nd in unbatched.items()}
    return type(batched_cells)(**fields)


def bootstrap_cells(cells, key, num_replicates: int):
    """Bootstrap replicates: translocations resampled with replacement within every cell.

    Returns a Cells whose ``dr`` / ``dt`` have a leading ``num_replicates`` axis (other
    leaves are shared), ready for :func:`sample_batch` or a vmapped ``infer``.
    """
    m, K = cells.dt.shape
    counts = cells.counts

    def one(k):
        u = jax.random.uniform(k, (m, K))
        slots = jnp.minimum((u * counts[:, None]).astype(jnp.int32), counts[:, None] - 1)
        dr = jnp.take_along_axis(cells.dr, slots[..., None], axis=1)
        dt = jnp.take_along_axis(cells.dt, slots, axis=1)
        dr = jnp.where(cells.mask[..., None], dr, 0.0)
        dt = jnp.where(cells.mask, dt, 1.0)
        return dr, dt

    dr, dt = jax.vmap(one)(jax.random.split(key, num_replicates))
    return type(cells)(dr=dr, dt=dt, mask=cells.mask, counts=cells.counts,
                       centers=cells.centers, volumes=cells.volumes, neighbours=cells.neighbours,
                       neighbour_mask=cells.neighbour_mask, cell_ids=cells.cell_ids)
