"""``infer(cells, mode, **tramway_kwargs) -> Maps``: TRamWAy 0.7's inference modes.

The modes, their posteriors, parameters, bounds and output columns are those of the one
registry, :data:`jaxinfer.spt.modes.REGISTRY` (``MODES`` lists every accepted name, aliases
included). ``d`` / ``dd`` / ``df`` are solved per cell when all their priors are None (as
TRamWAy), else as one smooth problem. Analysis modes are in :mod:`jaxinfer.spt.plugins`.

The objectives are TRamWAy's, term for term (:mod:`jaxinfer.spt.posteriors`). The solver is
jaxinfer's L-BFGS-B with exact gradients from ``jax.grad`` (TRamWAy: scipy's L-BFGS-B with
finite differences); per-cell modes vmap one small L-BFGS-B over cells.

Defaults follow TRamWAy: sigma = 0.03 µm when no localization error is given
(``localization_error`` means sigma; ``sigma2`` is the variance); D/DD/DF ``maxiter=1000``
and ``ftol=1e-10`` (TRamWAy: 1e-6, which stops up to ~6e-7 relative above the optimum); DV ``maxiter=1000, ftol=1e-8`` on f - f(x0); D bounds ``(1e-16 - sigma2) / max
dt_i`` when ``min_diffusivity`` is None; x0: D_i = mean(dr^2)/(2<dt>_i), drift / force 0,
V_i = log max_j(n_j/A_j) - log(n_i/A_i). One deliberate difference: DV's L-BFGS-B memory is
``maxcor=10`` (TRamWAy: the number of parameters, which makes every step O(m^2)). Stochastic
DV is solved with ``maxiter=1000, ftol=1e-8`` on the summed local objective, by L-BFGS-B or,
with ``solver='block'``, block-coordinate BFGS.

Precision: every optimising mode needs float64. Its objective sums every translocation's
term, and float32 rounding of that sum (~1e-7 relative) is as large as the objective's
change over a 1e-3 relative change of D, so L-BFGS-B stops at a different map (measured:
per-cell D up to 3e-3 off, smooth DV 6 objective units off, both "converged"). With float32
cells these modes raise a ValueError that says how to turn float64 on. Closed forms
(``d.conj_prior``, ``density``, ``gradient``) work in float32 (tested against float64 to 1e-3).
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.spt import plugins
from jaxinfer.spt.cells import Cells, distributed, host_array
from jaxinfer.spt.fitting import solve_blocks, solve_map, solve_per_cell
from jaxinfer.spt.gradient import delta0_stencil, delta1_stencil, grad1_stencil
from jaxinfer.spt.maps import Maps, counts_of, maps_frame
from jaxinfer.spt.modes import (ANALYSIS, MODES, PER_CELL, REGISTRY, SMOOTH, VECTOR_PARAMETERS,
                                Mode, Problem, resolve, space_axes)
from jaxinfer.spt.plugins import group_by_sign
from jaxinfer.spt.settings import InferSettings, localization_variance, settings_from_kwargs

__all__ = ["Maps", "infer", "infer_map", "smooth_setup", "SmoothSetup", "localization_variance", "MODES", "group_by_sign",
           "SparseCellsWarning", "MIN_MEAN_TRANSLOCATIONS"]

MIN_MEAN_TRANSLOCATIONS = 2.0  # fewer translocations per cell on average: refused
FLOAT64_HOWTO = 'jax.config.update("jax_enable_x64", True)'


class SparseCellsWarning(UserWarning):
    """Cells hold too few translocations for their values to rest on their own data."""


def infer(cells, mode: str = "d", *, progress: Optional[Callable] = None, **kwargs) -> Maps:
    """Infer maps of diffusivity, drift, force or potential (``tramway.helper.infer``).

    Parameters
    ----------
    cells : :class:`~jaxinfer.spt.cells.Cells` or :class:`~jaxinfer.spt.tessellation.Partition`
    mode : a name of :data:`MODES` (see :data:`jaxinfer.spt.modes.REGISTRY`).
    localization_error / sigma (µm) / sigma2 (µm²) : localization error; default sigma =
        0.03 µm. Negative or non-finite values raise.
    diffusivity_prior, drift_prior, force_prior (alias ``potential_prior`` for DF),
    potential_prior : smoothing / ridge weights, finite and >= 0 (None = term absent).
    diffusivity_time_prior, potential_time_prior, time_prior : stochastic DV time priors
        (``time_prior`` multiplies the spatial priors, as TRamWAy); need space-time cells
        (:func:`jaxinfer.spt.cells.space_time_cells`).
    jeffreys_prior : add the Jeffreys term.
    min_diffusivity : lower bound on D, µm²/s (None: TRamWAy's (1e-16 - sigma2)/max dt;
        False: none).
    max_iter : maximum iterations (overrides ``options['maxiter']``).
    epsilon / grad_epsilon, grad_selection_angle, compatibility : grad1 neighbour selection
        (TRamWAy's ``get_grad_kwargs``; default selection angle 0.9).
    rgrad : ``'delta0'`` / ``'delta'`` / ``'delta1'``: the priors use that variation operator
        instead of grad1 (TRamWAy's ``*_neg_posterior1``).
    D0 (µm²/s), V0 (kT) : initial values (scalars or [ncells]).
    options : L-BFGS-B options (``maxiter``, ``ftol``, ``gtol``, ``maxcor``); tol : ftol.
    allow_negative_potential : stochastic DV: do not shift V to non-negative values.
    tramway_jeffreys_bug : stochastic DV: reproduce TRamWAy's Jeffreys precedence bug.
    exact_normalization : exact Gaussian normalisation in any dimension (TRamWAy's is exact
        in 2D only and inflates 3D diffusivities by 1.5x).
    solver : ``"lbfgsb"`` or, for ``stochastic.dv``, ``"block"`` (block-coordinate BFGS over
        (D_i, V_i) blocks, non-interacting cells updated in parallel).
    export_centers : add the cell centre columns.
    input_maps, feature, B_threshold, alpha : analysis modes (see :mod:`~jaxinfer.spt.plugins`).
    init_max_iter : ``semi.stochastic.dv``: epochs of the block-coordinate stage (300).
    progress : optional ``progress(intermediate_result)`` called once per L-BFGS-B iteration
        of a smooth mode (``nit``, ``fun``, ``x``, ``jac``); per-cell modes do not call it.

    Returns
    -------
    Maps (``maps`` DataFrame by cell label, ``result``, ``parameters``, ``counts``)

    Raises
    ------
    ValueError for bad values (negative sigma or priors, too few translocations per cell,
    float32 cells in a mode that needs float64), TypeError for unknown keywords; both before
    any tracing. Warns :class:`SparseCellsWarning` when cells hold a single translocation.
    """
    settings = settings_from_kwargs(progress=progress, **kwargs)
    if not isinstance(cells, Cells):
        if hasattr(cells, "tessellation") and hasattr(cells, "translocations"):
            cells = distributed(cells)
        else:
            raise TypeError(f"infer expects Cells or a Partition, got {type(cells).__name__}")
    return infer_map(cells, mode, settings)


def infer_map(cells: Cells, mode_name: str, settings: InferSettings) -> Maps:
    """:func:`infer` on validated settings (the plugins call it for their diffusivity map)."""
    name = str(mode_name).lower()
    if (name == "df" or name.endswith(".df")) and settings.force_prior is None:
        settings = dataclasses.replace(settings, force_prior=settings.potential_prior)
    mode = resolve(name, settings.given_priors())
    _check_precision(mode, name, cells)
    if mode.kind == ANALYSIS:
        return getattr(plugins, mode.compute)(cells, settings, infer_map)
    _check_counts(cells, name)
    if mode.kind == PER_CELL:
        return _per_cell(mode, name, cells, settings)
    return _smooth(mode, name, cells, settings)


# ----------------------------------------------------------------------------- edge checks


def _check_precision(mode: Mode, name: str, cells: Cells):
    if cells.dr.dtype == jnp.float64 or mode.float32:
        return
    ok = [m.name for m in REGISTRY.values() if m.float32 and not m.needs_input_maps]
    raise ValueError(
        f"mode {name!r} needs float64 but the cells are {cells.dr.dtype}: its objective sums "
        f"{int(np.sum(np.asarray(cells.counts)))} translocations, and float32 rounding stops "
        f"L-BFGS-B at a different map. Turn float64 on before building the cells: "
        f"{FLOAT64_HOWTO} (the CLI does unless --float32). Modes that work in float32: "
        f"{', '.join(ok)}.")


def _check_counts(cells: Cells, name: str):
    counts = np.asarray(cells.counts)
    m, total = counts.size, int(counts.sum())
    if m == 0:
        raise ValueError(f"mode {name!r}: no cell holds a translocation")
    if total < MIN_MEAN_TRANSLOCATIONS * m:
        raise ValueError(
            f"mode {name!r}: {total} translocations in {m} occupied cells ({total / m:.2f} per "
            f"cell); maps need at least {MIN_MEAN_TRANSLOCATIONS:g} per cell on average. Use "
            f"fewer cells (CLI --cells; Python count_per_dim / avg_location_count of "
            f"tessellate) or more data")
    single = counts < 2
    if single.any():
        warnings.warn(
            f"{int(single.sum())} of {m} cells hold a single translocation (cell labels "
            f"{np.asarray(cells.cell_ids)[single][:10].tolist()}"
            f"{', ...' if single.sum() > 10 else ''}): their values rest on one jump (and the "
            f"priors); Maps.counts gives every cell's count", SparseCellsWarning, stacklevel=4)


# ----------------------------------------------------------------------------- shared pieces


def _lower_diffusivity(cells: Cells, sigma2, min_diffusivity):
    if min_diffusivity is False:
        return np.full(cells.ncells, -np.inf)
    if min_diffusivity is None:
        return (1e-16 - sigma2) / np.asarray(cells.dt_max, dtype=float)
    return np.full(cells.ncells, float(min_diffusivity))


def _initial_diffusivity(cells: Cells, D0):
    if D0 is None:
        return np.asarray(cells.initial_diffusivity(), dtype=float)
    return np.broadcast_to(np.asarray(D0, float), (cells.ncells,)).copy()


def _initial_potential(cells: Cells, V0, compatibility=False):
    if V0 is not None:
        return np.broadcast_to(np.asarray(V0, float), (cells.ncells,)).copy()
    n = np.asarray(cells.counts, dtype=float)
    if compatibility:
        return -np.log(n / n.max())
    vol = np.asarray(cells.volumes, dtype=float)
    vol = np.where(np.isfinite(vol) & (vol > 0), vol, np.inf)
    density = n / vol
    if not np.any(density > 0):
        raise ValueError("no cell has a finite positive volume; cannot initialise the potential")
    density[density == 0] = np.min(density[density > 0])
    return np.log(density.max()) - np.log(density)


def _solver_options(mode: Mode, settings: InferSettings):
    opts = dict(mode.solver_options)
    if settings.tol is not None:
        opts["ftol"] = settings.tol
    opts.update(settings.options or {})
    if settings.max_iter:
        opts["maxiter"] = int(settings.max_iter)
    opts.pop("maxfun", None)
    return opts


def _columns(mode: Mode, x: dict, dim: int) -> dict:
    cols = {}
    for pname in mode.parameters:
        value = np.asarray(x[pname], dtype=float)
        if pname in VECTOR_PARAMETERS:
            for d, a in enumerate(space_axes(dim)):
                cols[f"{pname} {a}"] = value[:, d]
        else:
            cols[pname] = value.reshape(-1)
    return cols


def _parameters(settings: InferSettings, **more) -> dict:
    out = dict(sigma2=settings.sigma2, diffusivity_prior=settings.diffusivity_prior,
               jeffreys_prior=settings.jeffreys_prior, min_diffusivity=settings.min_diffusivity,
               exact_normalization=settings.exact_normalization)
    out.update(more)
    return out


def _normalization(cells, settings):
    return cells.dim / 2.0 if settings.exact_normalization else 1.0


# ----------------------------------------------------------------------------- per cell


def _per_cell(mode: Mode, name: str, cells: Cells, settings: InferSettings) -> Maps:
    m, dim, dtype = cells.ncells, cells.dim, cells.dr.dtype
    f = lambda v: host_array(v, dtype)  # noqa: E731
    x0 = {"diffusivity": f(_initial_diffusivity(cells, settings.D0)[:, None])}
    lower = {"diffusivity": f(_lower_diffusivity(cells, settings.sigma2,
                                                 settings.min_diffusivity)[:, None])}
    for pname in mode.parameters[1:]:
        x0[pname] = f(np.zeros((m, dim)))
        lower[pname] = f(np.full((m, dim), -np.inf))
    upper = jax.tree_util.tree_map(lambda a: f(np.full(a.shape, np.inf)), x0)
    opts = _solver_options(mode, settings)
    res = solve_per_cell(mode, cells, x0, lower, upper, settings.sigma2,
                         _normalization(cells, settings), settings.jeffreys_prior, opts)
    df = maps_frame(_columns(mode, res.x, dim), cells, settings.export_centers)
    return Maps(df, name, res, _parameters(settings, options=opts), counts_of(cells, df.index))


# ----------------------------------------------------------------------------- smooth


def _stencils(cells: Cells, settings: InferSettings, need_delta: bool):
    """(grad1, the priors' operator, delta0 or None): delta0 only where the mode uses it."""
    lists = cells.neighbour_lists()
    centers = np.asarray(cells.centers, dtype=float)
    kw = settings.grad_kwargs()
    cast = lambda st: type(st)(host_array(st.self_weight, cells.dr.dtype),  # noqa: E731
                               host_array(st.neighbour_weight, cells.dr.dtype),
                               st.neighbours, st.defined)
    grad = cast(grad1_stencil(centers, lists, **kw))
    delta = cast(delta0_stencil(centers, lists)) if (
        need_delta or settings.rgrad in ("delta", "delta0")) else None
    if settings.rgrad in ("delta", "delta0"):
        reg = delta
    elif settings.rgrad == "delta1":
        reg = cast(delta1_stencil(centers, lists, **kw))
    else:
        reg = grad
    return grad, reg, delta if need_delta else None


def _time_priors(cells: Cells, settings: InferSettings):
    """(diffusivity_time, potential_time, time stencil or None) for stochastic DV."""
    ltD, ltV = settings.diffusivity_time_prior, settings.potential_time_prior
    tp = settings.time_prior
    if not isinstance(tp, (tuple, list)):
        tp = (tp, tp)
    if ltD is None and tp[0] is not None and settings.diffusivity_prior is not None:
        ltD = tp[0] * settings.diffusivity_prior
    if ltV is None and tp[1] is not None and settings.potential_prior is not None:
        ltV = tp[1] * settings.potential_prior
    if ltD is None and ltV is None:
        return None, None, None
    if cells.time_neighbours is None:
        raise ValueError("time priors need space-time cells (see "
                         "jaxinfer.spt.cells.space_time_cells)")
    from jaxinfer.spt.cells import time_variation_stencil

    st = time_variation_stencil(cells)
    st = type(st)(st.self_weight.astype(cells.dr.dtype),
                  st.neighbour_weight.astype(cells.dr.dtype), st.neighbours, st.defined)
    return ltD, ltV, st


class SmoothSetup(NamedTuple):
    """A smooth mode's problem as :func:`infer` solves it: ``mode.posterior(params, problem)``
    from ``x0`` within ``[lower, upper]`` (dicts of named parameters) with L-BFGS-B
    ``options``; ``cells`` are the cells kept (those with neighbours)."""

    mode: Mode
    cells: Cells
    problem: Problem
    x0: dict
    lower: dict
    upper: dict
    options: dict


def smooth_setup(cells, mode: str, **kwargs) -> SmoothSetup:
    """The objective, start, bounds and options :func:`infer` uses for a smooth mode (same
    keywords as ``infer``), e.g. to hand the same problem to another solver."""
    settings = settings_from_kwargs(**kwargs)
    if not isinstance(cells, Cells):
        cells = distributed(cells)
    name = str(mode).lower()
    if (name == "df" or name.endswith(".df")) and settings.force_prior is None:
        settings = dataclasses.replace(settings, force_prior=settings.potential_prior)
    entry = resolve(name, settings.given_priors())
    if entry.kind != SMOOTH:
        raise ValueError(f"mode {mode!r} is not a smooth mode (it is {entry.kind})")
    _check_precision(entry, name, cells)
    _check_counts(cells, name)
    return _smooth_setup(entry, name, cells, settings)


def _smooth_setup(mode: Mode, name: str, cells: Cells, settings: InferSettings,
                  with_offset: bool = True) -> SmoothSetup:
    cells = cells.with_neighbours_only()
    if cells.ncells == 0:
        raise ValueError("no cell has a non-empty neighbour; smooth modes need adjacent cells")
    vols = np.asarray(cells.volumes, dtype=float)
    if not np.all(np.isfinite(vols) & (vols > 0)):
        bad = np.asarray(cells.cell_ids)[~(np.isfinite(vols) & (vols > 0))]
        raise ValueError(f"cells {bad[:10].tolist()} have no finite positive area/volume, which "
                         "the area-weighted priors need (unbounded Voronoi cells in 3D?); use "
                         "tessellate(..., clip_to_hull=True) in 2D or a grid")
    if settings.solver == "block" and mode.name not in ("stochastic.dv", "semi.stochastic.dv"):
        raise ValueError(f"solver='block' is for stochastic.dv only, not mode {name!r}; "
                         "expected 'lbfgsb'")
    m, dim, dtype = cells.ncells, cells.dim, cells.dr.dtype
    f = lambda v: host_array(v, dtype)  # noqa: E731  (device_put: no XLA program)
    grad, reg, delta = _stencils(cells, settings,
                                 need_delta=mode.name in ("stochastic.dv", "semi.stochastic.dv"))
    ltD, ltV, time = (_time_priors(cells, settings) if "diffusivity_time_prior" in mode.priors
                      else (None, None, None))
    weights = dict(diffusivity=settings.diffusivity_prior, drift=settings.drift_prior,
                   force=settings.force_prior, potential=settings.potential_prior,
                   diffusivity_time=ltD, potential_time=ltV)
    problem = Problem(cells=cells, grad=grad, regularizer=None if reg is grad else reg,
                      sigma2=f(settings.sigma2),
                      priors={k: f(0.0 if v is None else v) for k, v in weights.items()},
                      normalization=f(_normalization(cells, settings)), offset=f(0.0),
                      delta=delta, time=time, jeffreys=bool(settings.jeffreys_prior),
                      tramway_jeffreys_bug=bool(settings.tramway_jeffreys_bug))

    x0 = {"diffusivity": f(_initial_diffusivity(cells, settings.D0))}
    lower = {"diffusivity": f(_lower_diffusivity(cells, settings.sigma2,
                                                 settings.min_diffusivity))}
    V0 = settings.V0
    potential_free = V0 is not None and np.isscalar(V0) and V0 == 0
    for pname in mode.parameters[1:]:
        if pname == "potential":
            x0[pname] = f(_initial_potential(cells, V0, settings.compatibility))
            floor = 0.0 if mode.potential_nonnegative and not potential_free else -np.inf
            lower[pname] = f(np.full((m,), floor))
        else:
            x0[pname] = f(np.zeros((m, dim)))
            lower[pname] = f(np.full((m, dim), -np.inf))
    upper = jax.tree_util.tree_map(lambda a: f(np.full(a.shape, np.inf)), x0)
    opts = _solver_options(mode, settings)
    if with_offset and mode.relative_to_start:  # TRamWAy minimises f - f(x0)
        problem = dataclasses.replace(problem, offset=jax.jit(mode.posterior)(x0, problem))
    return SmoothSetup(mode, cells, problem, x0, lower, upper, opts)


def _smooth(mode: Mode, name: str, cells: Cells, settings: InferSettings) -> Maps:
    # the solver computes DV's offset f(x0) in its own program
    mode, cells, problem, x0, lower, upper, opts = _smooth_setup(mode, name, cells, settings,
                                                                 with_offset=False)
    m, dim, dtype = cells.ncells, cells.dim, cells.dr.dtype
    f = lambda v: host_array(v, dtype)  # noqa: E731
    grad = problem.grad
    potential_free = settings.V0 is not None and np.isscalar(settings.V0) and settings.V0 == 0
    params = _parameters(settings, options=opts, rgrad=settings.rgrad,
                         **settings.grad_kwargs())
    params.update({p: getattr(settings, p) for p in mode.priors})

    if mode.name == "semi.stochastic.dv":
        # TRamWAy: a stochastic (one cell at a time) run of init_max_iter x ncells
        # iterations, then a non-stochastic fine-tuning from its result. Here: that many
        # block-coordinate epochs, then L-BFGS-B on the whole vector.
        first = solve_blocks(problem, x0, lower, dict(opts, maxiter=int(settings.init_max_iter)))
        res = solve_map(mode, problem, first.x, lower, upper, opts, settings.progress)
        params.update(init_result=first, init_max_iter=int(settings.init_max_iter))
    elif settings.solver == "block":
        res = solve_blocks(problem, x0, lower, opts)
    else:
        res = solve_map(mode, problem, x0, lower, upper, opts, settings.progress)

    cols = _columns(mode, res.x, dim)
    if "potential" in cols:
        V = cols["potential"]
        shift = mode.name == "dv" or (potential_free and not settings.allow_negative_potential)
        if shift and np.nanmin(V) < 0:
            cols["potential"] = V - np.nanmin(V)
    if mode.derived_force:
        F = -np.asarray(grad.apply(f(cols["potential"]), na=jnp.nan), dtype=float)
        for d, a in enumerate(space_axes(dim)):
            cols[f"force {a}"] = F[:, d]
        undefined = np.isnan(F).any(axis=1)
        if undefined.any():
            warnings.warn(
                f"{int(undefined.sum())} of {m} cells have no neighbour on one side along an "
                f"axis: their force is undefined (NaN) and their potential is set by their "
                f"neighbours only", SparseCellsWarning, stacklevel=4)
    df = maps_frame(cols, cells, settings.export_centers)
    return Maps(df, name, res, params, counts_of(cells, df.index))
