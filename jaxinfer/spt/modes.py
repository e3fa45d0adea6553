"""The one registry of inference modes: name -> posterior, parameters, priors, bounds, columns.

Every consumer reads this table: :func:`jaxinfer.spt.infer.infer` (dispatch, initial values,
bounds, output columns), :mod:`jaxinfer.spt.sampling` (the NUTS potential energy), the command
line (``--mode`` choices and their help) and the tests. There is no second list of modes.

A posterior is a pure function ``posterior(params, problem) -> scalar`` of a dict of named
parameters (``{"diffusivity": [ncells], "potential": [ncells]}``; ``drift`` / ``force`` are
``[ncells, dim]``) and a :class:`Problem` (the cells, the stencils, sigma^2 and the prior
weights as arrays). Bounds are dicts of the same structure. The objectives themselves are
TRamWAy's, term for term, in :mod:`jaxinfer.spt.posteriors`.

Per-cell modes (``unsmooth.*``) have a posterior of one cell's parameters
(``{"diffusivity": [1], "drift": [dim]}``) and a :class:`CellProblem`, vmapped over cells.
Analysis modes (``density``, ``d.conj_prior``, ``snr``, ``bayes_factor``, ``gradient``) have no
posterior; :mod:`jaxinfer.spt.plugins` computes them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.spt import posteriors as post
from jaxinfer.spt.cells import Cells, DurationGroups, host_array
from jaxinfer.spt.gradient import Stencil

__all__ = ["Problem", "CellProblem", "Mode", "REGISTRY", "ALIASES", "MODES", "resolve",
           "PARAMETER_UNITS", "space_axes", "SMOOTH", "PER_CELL", "ANALYSIS"]

SMOOTH, PER_CELL, ANALYSIS = "smooth", "per cell", "analysis"

# units of the named parameters (lengths in µm, times in s, energies in kT)
PARAMETER_UNITS = {"diffusivity": "µm²/s", "drift": "µm/s", "force": "kT/µm", "potential": "kT"}
VECTOR_PARAMETERS = ("drift", "force")


def space_axes(dim: int) -> list:
    """Axis suffixes of vector columns: ``['x', 'y'(, 'z')]``."""
    return ["x", "y", "z"][:dim] if dim <= 3 else [str(d) for d in range(dim)]


# ----------------------------------------------------------------------------- problems


class Problem(eqx.Module):
    """Everything a smooth posterior needs besides its parameters (a pytree of arrays).

    cells : Cells; grad : TRamWAy's grad1 stencil; regularizer : the operator of the smoothing
    priors (delta0 / delta1 for ``rgrad``; None: ``grad``, which the objective then applies
    once for the likelihood and the prior); delta : delta0 (stochastic DV priors);
    time : time-variation stencil (space-time cells) or None; sigma2 : localization variance
    (µm²); priors : dict of prior weights (``diffusivity``, ``drift``, ``force``,
    ``potential``, ``diffusivity_time``, ``potential_time``; 0 = term absent);
    normalization : weight of the Gaussian normalisation term (1 as TRamWAy, dim/2 exact);
    offset : subtracted from the objective (DV: f(x0), as TRamWAy); jeffreys,
    tramway_jeffreys_bug : static flags.
    """

    cells: Cells
    grad: Stencil
    regularizer: Optional[Stencil]
    sigma2: jax.Array
    priors: dict
    normalization: jax.Array
    offset: jax.Array
    delta: Optional[Stencil] = None
    time: Optional[Stencil] = None
    jeffreys: bool = eqx.field(static=True, default=False)
    tramway_jeffreys_bug: bool = eqx.field(static=True, default=True)


class CellProblem(eqx.Module):
    """One cell's data for the per-cell posteriors (vmapped over cells).

    groups : the cell's :class:`~jaxinfer.spt.cells.DurationGroups` (dt [G] (s), count [G],
    sum_dr [G, dim] (µm), sum_dr2 [G] (µm²)): the likelihood's sufficient statistics, so a
    cell costs O(groups), not O(translocations), and data sets with as many duration groups
    share one compiled program whatever their counts; count [], dt_mean [] (s), sigma2 []
    (µm²), normalization [], jeffreys (static).
    """

    groups: DurationGroups
    count: jax.Array
    dt_mean: jax.Array
    sigma2: jax.Array
    normalization: jax.Array
    jeffreys: bool = eqx.field(static=True, default=False)

    @classmethod
    def of_cells(cls, cells: Cells, sigma2, normalization=1.0, jeffreys: bool = False):
        """The per-cell problems of every cell of ``cells``, batched ([ncells, ...] leaves,
        on the device without an XLA program of their own)."""
        m, dtype = cells.ncells, cells.dr.dtype
        full = lambda v: host_array(np.full((m,), v), dtype)  # noqa: E731
        return cls(cells.duration_groups, host_array(cells.counts, dtype),
                   host_array(cells.dt_mean, dtype), full(sigma2), full(normalization),
                   bool(jeffreys))

    def as_cells(self) -> Cells:
        """The cell as a one-cell :class:`Cells` (its groups; geometry and padded
        translocations are unused by the per-cell terms)."""
        dtype = self.groups.dt.dtype
        dim = self.groups.sum_dr.shape[-1]
        groups = jax.tree_util.tree_map(lambda a: a[None], self.groups)
        return Cells(jnp.zeros((1, 0, dim), dtype), jnp.zeros((1, 0), dtype),
                     jnp.zeros((1, 0), bool), self.count[None],
                     jnp.zeros((1, dim), dtype), jnp.ones((1,), dtype),
                     jnp.zeros((1, 1), jnp.int32), jnp.zeros((1, 1), bool),
                     jnp.zeros((1,), jnp.int32), groups=groups)


# ----------------------------------------------------------------------------- posteriors


def d_posterior(params: dict, pb: Problem):
    """Smooth D (TRamWAy ``smooth_d_neg_posterior``)."""
    return post.d_neg_posterior(params["diffusivity"], pb.cells, pb.grad, pb.sigma2,
                                pb.priors["diffusivity"], pb.jeffreys, pb.regularizer,
                                pb.normalization)


def dd_posterior(params: dict, pb: Problem):
    """Smooth DD (TRamWAy ``smooth_dd_neg_posterior``)."""
    return post.dd_neg_posterior(params["diffusivity"], params["drift"], pb.cells, pb.grad,
                                 pb.sigma2, pb.priors["diffusivity"], pb.priors["drift"],
                                 pb.jeffreys, pb.regularizer, pb.normalization)


def df_posterior(params: dict, pb: Problem):
    """Smooth DF (TRamWAy ``smooth_df_neg_posterior``)."""
    return post.df_neg_posterior(params["diffusivity"], params["force"], pb.cells, pb.grad,
                                 pb.sigma2, pb.priors["diffusivity"], pb.priors["force"],
                                 pb.jeffreys, pb.regularizer, pb.normalization)


def dv_posterior(params: dict, pb: Problem):
    """DV (TRamWAy ``dv_neg_posterior`` minus ``offset``)."""
    return post.dv_neg_posterior(params["diffusivity"], params["potential"], pb.cells, pb.grad,
                                 pb.sigma2, pb.priors["diffusivity"], pb.priors["potential"],
                                 pb.jeffreys, pb.regularizer, pb.offset, pb.normalization)


def stochastic_dv_posterior(params: dict, pb: Problem):
    """Stochastic DV: the sum of TRamWAy's ``local_dv_neg_posterior`` over cells."""
    return post.stochastic_dv_neg_posterior(
        params["diffusivity"], params["potential"], pb.cells, pb.grad, pb.delta, pb.sigma2,
        **_stochastic_kwargs(pb))


def stochastic_dv_local_terms(params: dict, pb: Problem, rows):
    """The local terms of stochastic DV at cells ``rows`` -> [len(rows)] (block solver)."""
    return post.local_dv_neg_posteriors(
        params["diffusivity"], params["potential"], pb.cells, pb.grad, pb.delta, pb.sigma2,
        rows=rows, **_stochastic_kwargs(pb))


def _stochastic_kwargs(pb: Problem) -> dict:
    return dict(diffusivity_prior=pb.priors["diffusivity"],
                potential_prior=pb.priors["potential"], jeffreys_prior=pb.jeffreys,
                time=pb.time, diffusivity_time_prior=pb.priors["diffusivity_time"],
                potential_time_prior=pb.priors["potential_time"],
                tramway_jeffreys_bug=pb.tramway_jeffreys_bug, normalization=pb.normalization)


def unsmooth_d_posterior(params: dict, cp: CellProblem):
    """One cell's D posterior without prior (TRamWAy ``unsmooth_d``)."""
    D = params["diffusivity"]
    out = post.cell_neg_log_likelihood(D, cp.as_cells(), cp.sigma2, None, cp.normalization)
    if cp.jeffreys:
        out = out + 2.0 * jnp.log(D * cp.dt_mean + cp.sigma2)
    return jnp.sum(out)


def unsmooth_dd_posterior(params: dict, cp: CellProblem):
    """One cell's DD posterior without prior."""
    return jnp.sum(post.unsmooth_dd_neg_posterior(params["diffusivity"], params["drift"][None],
                                                  cp.as_cells(), cp.sigma2, cp.jeffreys,
                                                  cp.normalization))


def unsmooth_df_posterior(params: dict, cp: CellProblem):
    """One cell's DF posterior without prior."""
    return jnp.sum(post.unsmooth_df_neg_posterior(params["diffusivity"], params["force"][None],
                                                  cp.as_cells(), cp.sigma2, cp.jeffreys,
                                                  cp.normalization))


# ----------------------------------------------------------------------------- the registry


@dataclasses.dataclass(frozen=True)
class Mode:
    """One inference mode.

    name : registry key (TRamWAy's name); kind : SMOOTH (one problem over all cells),
    PER_CELL (independent cells, vmapped) or ANALYSIS (no optimiser; see plugins);
    summary : one line for the CLI help; parameters : named parameters of the posterior;
    priors : the ``infer`` prior keywords it reads; posterior : ``(params, problem) ->
    scalar`` (None for analysis modes); solver_options : L-BFGS-B defaults (TRamWAy's);
    potential_nonnegative : the potential's lower bound is 0 (stochastic DV) instead of
    -inf; derived_force : output ``force`` = -grad1(potential); relative_to_start : the
    solver minimises f - f(x0) (TRamWAy's DV; ftol then applies to that); samplable : NUTS can sample
    it (:mod:`jaxinfer.spt.sampling`); float32 : float32 maps equal float64's to 1e-3 (else
    ``infer`` refuses float32 cells); needs_input_maps : analysis modes that read an earlier
    map (not offered by the CLI).
    """

    name: str
    kind: str
    summary: str
    parameters: tuple = ()
    priors: tuple = ()
    posterior: Optional[Callable] = None
    solver_options: dict = dataclasses.field(default_factory=dict)
    potential_nonnegative: bool = False
    derived_force: bool = False
    relative_to_start: bool = False
    samplable: bool = False
    float32: bool = False
    needs_input_maps: bool = False
    compute: Optional[str] = None

    def columns(self, dim: int) -> list:
        """Output columns of the maps (analysis modes: empty, plugins define theirs)."""
        out = []
        for name in self.parameters:
            if name in VECTOR_PARAMETERS:
                out += [f"{name} {a}" for a in space_axes(dim)]
            else:
                out.append(name)
        if self.derived_force:
            out += [f"force {a}" for a in space_axes(dim)]
        return out

    def parameters_from(self, table, dim: int, dtype=None) -> dict:
        """The posterior's named parameters read back from a maps table (columns as
        :meth:`columns`, rows in the cells' order): ``{"diffusivity": [m], ...}``."""
        out = {}
        for name in self.parameters:
            cols = ([f"{name} {a}" for a in space_axes(dim)] if name in VECTOR_PARAMETERS
                    else [name])
            missing = [c for c in cols if c not in table.columns]
            if missing:
                raise ValueError(f"mode {self.name!r} needs column(s) {missing}; the table has "
                                 f"{list(table.columns)}")
            value = table[cols].to_numpy(dtype=float)
            out[name] = jnp.asarray(value if name in VECTOR_PARAMETERS else value[:, 0],
                                    dtype=dtype)
        return out


# TRamWAy's smooth D / DD / DF use ftol = 1e-6, which stops up to ~6e-7 (relative) above
# the optimum of a 400-cell map, and 1e-8 still 2e-7 for DD (its drift ridge converges
# slowly); 1e-10 lands within 1e-9 for a few dozen more iterations (benchmarks/spt/bench_maps.py)
_SMOOTH_OPTIONS = dict(maxiter=1000, ftol=1e-10)
_PER_CELL_OPTIONS = dict(maxiter=15000, ftol=2.220446049250313e-09)  # scipy L-BFGS-B defaults

REGISTRY = {m.name: m for m in (
    Mode("smooth.d", SMOOTH, "diffusivity, smoothed by --diffusivity-prior",
         ("diffusivity",), ("diffusivity_prior",), d_posterior, _SMOOTH_OPTIONS, samplable=True),
    Mode("smooth.dd", SMOOTH, "diffusivity and drift (ridge --drift-prior)",
         ("diffusivity", "drift"), ("diffusivity_prior", "drift_prior"), dd_posterior,
         _SMOOTH_OPTIONS, samplable=True),
    Mode("smooth.df", SMOOTH, "diffusivity and force (ridge --force-prior)",
         ("diffusivity", "force"), ("diffusivity_prior", "force_prior"), df_posterior,
         _SMOOTH_OPTIONS, samplable=True),
    Mode("dv", SMOOTH, "diffusivity and potential (force = -grad V)",
         ("diffusivity", "potential"), ("diffusivity_prior", "potential_prior"), dv_posterior,
         dict(maxiter=1000, ftol=1e-8, maxcor=10), derived_force=True, relative_to_start=True,
         samplable=True),
    Mode("stochastic.dv", SMOOTH, "DV with TRamWAy's local (delta0) priors",
         ("diffusivity", "potential"),
         ("diffusivity_prior", "potential_prior", "diffusivity_time_prior",
          "potential_time_prior"), stochastic_dv_posterior, dict(maxiter=1000, ftol=1e-8),
         potential_nonnegative=True, derived_force=True),
    Mode("semi.stochastic.dv", SMOOTH, "stochastic DV: block-coordinate start, then L-BFGS-B",
         ("diffusivity", "potential"),
         ("diffusivity_prior", "potential_prior", "diffusivity_time_prior",
          "potential_time_prior"), stochastic_dv_posterior, dict(maxiter=1000, ftol=1e-8),
         potential_nonnegative=True, derived_force=True),
    Mode("unsmooth.d", PER_CELL, "diffusivity of each cell alone (no prior)",
         ("diffusivity",), (), unsmooth_d_posterior, _PER_CELL_OPTIONS),
    Mode("unsmooth.dd", PER_CELL, "diffusivity and drift of each cell alone",
         ("diffusivity", "drift"), (), unsmooth_dd_posterior, _PER_CELL_OPTIONS),
    Mode("unsmooth.df", PER_CELL, "diffusivity and force of each cell alone",
         ("diffusivity", "force"), (), unsmooth_df_posterior, _PER_CELL_OPTIONS),
    Mode("density", ANALYSIS, "translocations per unit area (no optimiser)", float32=True,
         compute="density"),
    Mode("d.conj_prior", ANALYSIS, "conjugate-prior diffusivity and its credible interval",
         float32=True, compute="conj_prior"),
    Mode("snr", ANALYSIS, "diffusivity and the signal-to-noise extensions", compute="snr"),
    Mode("bayes_factor", ANALYSIS, "Bayes factors of active vs spurious forces",
         compute="bayes_factor"),
    Mode("gradient", ANALYSIS, "grad1 of a feature of input_maps", needs_input_maps=True,
         float32=True, compute="gradient"),
)}

# name -> registry key; "d", "dd", "df" pick the smooth mode when a prior is given
ALIASES = {"standard.d": "smooth.d", "standard.dd": "smooth.dd", "standard.df": "smooth.df",
           "degraded.d": "unsmooth.d", "degraded.dd": "unsmooth.dd",
           "degraded.df": "unsmooth.df", "d.snr": "snr"}
_PRIOR_SELECTED = {"d": ("smooth.d", "unsmooth.d"), "dd": ("smooth.dd", "unsmooth.dd"),
                   "df": ("smooth.df", "unsmooth.df")}

MODES = tuple(_PRIOR_SELECTED) + tuple(REGISTRY) + tuple(ALIASES)


def resolve(name: str, given_priors=()) -> Mode:
    """The registry entry for a mode name (aliases included).

    ``d`` / ``dd`` / ``df`` are TRamWAy's: the smooth mode when any of its priors is in
    ``given_priors`` (names of the prior keywords that are not None), else per cell.
    """
    key = str(name).lower()
    if key in _PRIOR_SELECTED:
        smooth, per_cell = _PRIOR_SELECTED[key]
        return REGISTRY[smooth if set(REGISTRY[smooth].priors) & set(given_priors)
                        else per_cell]
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        raise ValueError(f"unknown mode {name!r}; expected one of {', '.join(MODES)}")
    return REGISTRY[key]
