"""``infer(cells, mode, **tramway_kwargs) -> Maps``: TRamWAy 0.7's inference modes.

Modes (TRamWAy names): ``'d'``, ``'dd'``, ``'df'`` (per cell without prior when all priors
are None, as TRamWAy, else the smooth ``standard.*`` objective), ``'standard.d'`` /
``'smooth.d'`` (and dd/df), ``'degraded.d'`` / ``'unsmooth.d'`` / ``'unsmooth.dd'`` /
``'unsmooth.df'`` (per cell), ``'dv'``, ``'stochastic.dv'``, ``'semi.stochastic.dv'`` (same
objective; block-coordinate start, then L-BFGS-B), ``'density'``, ``'d.conj_prior'`` (MAP, CI and
SNR extensions, TRamWAy's columns), ``'snr'`` / ``'d.snr'`` (diffusivity + n, V, V_prior,
zeta_total, zeta_spurious), ``'bayes_factor'`` (lg_B, force, min_n and sign groups), and
``'gradient'`` (grad1 of features of ``input_maps``).

The objectives are those of :mod:`jaxinfer.spt.posteriors` (TRamWAy's, term for term). The
solver is jaxinfer's L-BFGS-B with exact gradients from ``jax.grad`` (TRamWAy: scipy L-BFGS-B
with forward finite differences). Per-cell modes vmap one small L-BFGS-B over cells.

Defaults follow TRamWAy: sigma = 0.03 when no localization error is given (``localization_error``
means sigma; ``sigma2`` is the variance); D/DD/DF ``maxiter=1000, ftol=1e-6``; DV ``maxiter=1000,
ftol=1e-8`` on f - f(x0); D bounds ``(1e-16 - sigma2) / max dt_i`` when ``min_diffusivity`` is None;
x0: D_i = mean(dr^2)/(2<dt>_i), drift / force 0, V_i = log max_j(n_j/A_j) - log(n_i/A_i).
One deliberate difference: DV's L-BFGS-B memory is ``maxcor=10`` (TRamWAy: the number of
parameters, which makes every step O(m^2)); pass ``options={'maxcor': ...}`` to change it.
Stochastic DV is solved with ``maxiter=1000, ftol=1e-8`` on the summed local objective (TRamWAy's
sparse BFGS uses its own per-component ``ftol=1e-3``), by L-BFGS-B or, with ``solver='block'``,
block-coordinate BFGS (:func:`jaxinfer.optimize.block.minimize_block_bfgs`).
With float32 cells the default ``ftol`` is raised to 1e-5 (TRamWAy's float64 tolerances are
below float32 rounding of objectives summing thousands of terms).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxinfer.spt import posteriors as post
from jaxinfer.spt.cells import Cells, distributed
from jaxinfer.spt.gradient import (DEFAULT_SELECTION_ANGLE, delta0_stencil, delta1_stencil,
                                   grad1_stencil, gradn_stencil)

__all__ = ["Maps", "infer", "localization_variance", "MODES", "group_by_sign"]

FLOAT32_FTOL = 1e-5  # default relative ftol when the cells are float32

MODES = ("d", "dd", "df", "dv", "stochastic.dv", "standard.d", "standard.dd", "standard.df",
         "smooth.d", "smooth.dd", "smooth.df", "degraded.d", "unsmooth.d", "unsmooth.dd",
         "unsmooth.df", "density", "d.conj_prior", "snr", "d.snr", "bayes_factor", "gradient",
         "semi.stochastic.dv")


@dataclasses.dataclass
class Maps:
    """Inferred maps (TRamWAy's ``Maps``).

    Attributes
    ----------
    maps : DataFrame indexed by cell label; columns among ``diffusivity``, ``drift x``, ...,
        ``force x``, ..., ``potential``, ``density``.
    mode : the mode that produced them.
    result : OptimizeResult (batched over cells for per-cell modes) or None.
    parameters : the arguments in effect (sigma2, priors, bounds, options, ...).
    """

    maps: pd.DataFrame
    mode: str
    result: Any = None
    parameters: dict = dataclasses.field(default_factory=dict)

    @property
    def features(self) -> list:
        out = []
        for c in self.maps.columns:
            base = c.rsplit(" ", 1)[0] if c.endswith((" x", " y", " z")) else c
            if base not in out:
                out.append(base)
        return out

    variables = features

    def __getitem__(self, feature):
        cols = [c for c in self.maps.columns if c == feature or c.startswith(feature + " ")]
        if not cols:
            raise KeyError(f"no feature {feature!r} in maps with columns {list(self.maps.columns)}")
        return self.maps[cols]

    def __contains__(self, feature):
        return feature in self.features

    @property
    def success(self) -> bool:
        """Did the solver(s) pass a convergence test (every cell, for per-cell modes)?"""
        if self.result is None:
            return True
        return bool(np.all(np.asarray(self.result.success)))


def localization_variance(localization_error=None, sigma=None, sigma2=None,
                          default_sigma: float = 0.03) -> float:
    """TRamWAy's ``get_localization_error``: sigma^2 from ``localization_error`` (= sigma),
    ``sigma`` or ``sigma2``; ``default_sigma**2`` when none is given. Conflicting values raise."""
    cand = []
    if localization_error is not None:
        warnings.warn("`localization_error` is read as sigma (not sigma^2), as TRamWAy; "
                      "prefer `sigma` or `sigma2`", UserWarning, stacklevel=3)
        cand.append(("localization_error", float(localization_error) ** 2))
    if sigma is not None:
        cand.append(("sigma", float(sigma) ** 2))
    if sigma2 is not None:
        cand.append(("sigma2", float(sigma2)))
    if not cand:
        return float(default_sigma) ** 2
    for name, v in cand:
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite non-negative number, got {v}")
        if not np.isclose(v, cand[0][1]):
            raise ValueError(f"conflicting localization errors: {cand[0][0]} and {name} give "
                             f"sigma^2 = {cand[0][1]} and {v}")
    return cand[0][1]


def _minimize():
    try:
        from jaxinfer.optimize.minimize import minimize
    except ImportError:  # pragma: no cover - optimize engine missing
        minimize = None
    return minimize


def _bounds_for_d(cells: Cells, sigma2, min_diffusivity):
    m = cells.ncells
    if min_diffusivity is False:
        return np.full(m, -np.inf)
    if min_diffusivity is None:
        return (1e-16 - sigma2) / np.asarray(cells.dt_max, dtype=float)
    return np.full(m, float(min_diffusivity))


def _initial_potential(cells: Cells, compatibility=False):
    n = np.asarray(cells.counts, dtype=float)
    if compatibility:
        return -np.log(n / n.max())
    vol = np.asarray(cells.volumes, dtype=float)
    vol = np.where(np.isfinite(vol) & (vol > 0), vol, np.inf)
    density = n / vol
    if np.any(density > 0):
        density[density == 0] = np.min(density[density > 0])
    else:
        raise ValueError("no cell has a finite positive volume; cannot initialise the potential")
    return np.log(density.max()) - np.log(density)


# ----------------------------------------------------------------------------- solvers


def _solve(fun, x0, lb, problem, options, progress):
    """L-BFGS-B on fun(x, problem) with exact gradients; jitted once per problem shape."""
    minimize = _minimize()
    ub = np.full_like(lb, np.inf)
    if minimize is None:  # scipy fallback with exact gradients
        return _solve_scipy(fun, x0, lb, problem, options, progress)
    opts = dict(options)
    callback = None
    if progress is not None:
        callback = progress
    return _jitted_lbfgsb(fun, tuple(sorted(opts.items())), callback)(
        jnp.asarray(x0), jnp.asarray(lb), jnp.asarray(ub), problem)


@functools.lru_cache(maxsize=64)
def _jitted_lbfgsb(fun, opts_items, callback):
    minimize = _minimize()
    opts = dict(opts_items)

    def run(x0, lb, ub, problem):
        return minimize(fun, x0, args=(problem,), method="L-BFGS-B", bounds=(lb, ub),
                        options=opts, callback=callback)

    return jax.jit(run)


def _solve_scipy(fun, x0, lb, problem, options, progress):  # pragma: no cover
    import scipy.optimize as so

    from jaxinfer.optimize.result import OptimizeResult, Status

    vg = jax.jit(jax.value_and_grad(fun))

    def f(x):
        v, g = vg(jnp.asarray(x), problem)
        return float(v), np.asarray(g, dtype=float)

    bounds = [(None if not np.isfinite(b) else float(b), None) for b in lb]
    res = so.minimize(f, np.asarray(x0, float), jac=True, method="L-BFGS-B", bounds=bounds,
                      options={k: v for k, v in options.items()}, callback=progress)
    status = Status.FTOL if res.success else Status.MAX_ITER
    return OptimizeResult(x=jnp.asarray(res.x), fun=jnp.asarray(res.fun), status=jnp.asarray(int(status)),
                          nit=jnp.asarray(res.nit), nfev=jnp.asarray(res.nfev))


# ----------------------------------------------------------------------------- objectives
# Module-level functions of (x, problem) so that jit caches by identity across calls.


def _split_vec(x, m, dim):
    return x[:m], x[m:].reshape(m, dim)


def _make_obj(kind, jeffreys, extra_flag=None):
    """Objective of flat x for a mode (jeffreys static)."""
    if kind == "d":
        def f(x, p):
            cells, grad, reg, s2, lD, nrm = p
            return post.d_neg_posterior(x, cells, grad, s2, lD, jeffreys, reg, nrm)
    elif kind == "dd":
        def f(x, p):
            cells, grad, reg, s2, lD, la, nrm = p
            D, a = _split_vec(x, cells.ncells, cells.dim)
            return post.dd_neg_posterior(D, a, cells, grad, s2, lD, la, jeffreys, reg, nrm)
    elif kind == "df":
        def f(x, p):
            cells, grad, reg, s2, lD, lF, nrm = p
            D, F = _split_vec(x, cells.ncells, cells.dim)
            return post.df_neg_posterior(D, F, cells, grad, s2, lD, lF, jeffreys, reg, nrm)
    elif kind == "dv":
        def f(x, p):
            cells, grad, reg, s2, lD, lV, nrm, y0 = p
            m = cells.ncells
            return post.dv_neg_posterior(x[:m], x[m:], cells, grad, s2, lD, lV, jeffreys, reg, y0,
                                         nrm)
    elif kind == "stochastic.dv":
        bug = extra_flag

        def f(x, p):
            cells, grad, delta, s2, lD, lV, time, ltD, ltV, nrm = p
            m = cells.ncells
            return post.stochastic_dv_neg_posterior(
                x[:m], x[m:], cells, grad, delta, s2, diffusivity_prior=lD, potential_prior=lV,
                jeffreys_prior=jeffreys, time=time, diffusivity_time_prior=ltD,
                potential_time_prior=ltV, tramway_jeffreys_bug=bug, normalization=nrm)
    else:  # pragma: no cover
        raise ValueError(kind)
    return f


_make_obj = functools.lru_cache(maxsize=None)(_make_obj)


def _make_cell_obj(kind, jeffreys):
    """Per-cell objective for unsmooth modes: f(theta, (cell arrays..., s2))."""

    def f(theta, p):
        dr, dt, mask, n, dt_mean, s2, nrm = p
        one = Cells(dr[None], dt[None], mask[None], n[None], jnp.zeros((1, dr.shape[-1]), dr.dtype),
                    jnp.ones((1,), dr.dtype), jnp.zeros((1, 1), jnp.int32),
                    jnp.zeros((1, 1), bool), jnp.zeros((1,), jnp.int32))
        D = theta[:1]
        if kind == "d":
            out = post.cell_neg_log_likelihood(D, one, s2, None, nrm)
            if jeffreys:
                out = out + 2.0 * jnp.log(D * dt_mean + s2)
        elif kind == "dd":
            out = post.unsmooth_dd_neg_posterior(D, theta[None, 1:], one, s2, jeffreys, nrm)
        else:
            out = post.unsmooth_df_neg_posterior(D, theta[None, 1:], one, s2, jeffreys, nrm)
        return jnp.sum(out)

    return f


_make_cell_obj = functools.lru_cache(maxsize=None)(_make_cell_obj)


@functools.lru_cache(maxsize=32)
def _vmapped_cell_solver(kind, jeffreys, opts_items):
    minimize = _minimize()
    f = _make_cell_obj(kind, jeffreys)
    opts = dict(opts_items)

    def one(theta0, lb, dr, dt, mask, n, dt_mean, s2, nrm):
        ub = jnp.full_like(lb, jnp.inf)
        return minimize(f, theta0, args=((dr, dt, mask, n, dt_mean, s2, nrm),),
                        method="L-BFGS-B", bounds=(lb, ub), options=opts)

    return jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, 0, 0, 0, None, None)))


# ----------------------------------------------------------------------------- front door


def _prior(v):
    return 0.0 if v is None else float(v)


def infer(cells, mode: str = "d", *, localization_error=None, sigma=None, sigma2=None,
          diffusivity_prior=None, drift_prior=None, force_prior=None, potential_prior=None,
          diffusivity_time_prior=None, potential_time_prior=None, time_prior=None,
          jeffreys_prior: bool = False, min_diffusivity=None, max_iter=None, epsilon=None,
          grad_epsilon=None, grad_selection_angle=None, compatibility: bool = False,
          rgrad: Optional[str] = None, D0=None, V0=None, options: Optional[dict] = None,
          tol=None, allow_negative_potential: bool = False, tramway_jeffreys_bug: bool = True,
          exact_normalization: bool = False, solver: str = "lbfgsb",
          export_centers: bool = False, input_maps=None, feature=None, B_threshold=10,
          init_max_iter: int = 300,
          progress: Optional[Callable] = None, **ignored) -> Maps:
    """Infer maps of diffusivity, drift, force or potential (``tramway.helper.infer``).

    Parameters
    ----------
    cells : :class:`~jaxinfer.spt.cells.Cells` or :class:`~jaxinfer.spt.tessellation.Partition`
    mode : see :data:`MODES`.
    localization_error / sigma / sigma2 : localization error (sigma in µm, or its square);
        default sigma = 0.03 µm.
    diffusivity_prior, drift_prior, force_prior (alias ``potential_prior`` for DF),
    potential_prior : smoothing / ridge weights (None = term absent).
    diffusivity_time_prior, potential_time_prior, time_prior : stochastic DV time priors
        (``time_prior`` multiplies the spatial priors, as TRamWAy); need space-time cells
        (:func:`jaxinfer.spt.cells.space_time_cells`).
    jeffreys_prior : add the Jeffreys term.
    min_diffusivity : lower bound on D (None: TRamWAy's (1e-16 - sigma2)/max dt; False: none).
    max_iter : maximum iterations (overrides ``options['maxiter']``).
    epsilon / grad_epsilon, grad_selection_angle, compatibility : grad1 neighbour selection
        (TRamWAy's ``get_grad_kwargs``; default selection angle 0.9).
    rgrad : ``'delta0'`` / ``'delta'`` / ``'delta1'``: the priors use that variation
        operator instead of grad1 (TRamWAy's ``*_neg_posterior1``).
    D0, V0 : initial values (scalars or [ncells]).
    options : solver options (``maxiter``, ``ftol``, ``gtol``, ``maxcor``).
    allow_negative_potential : stochastic DV: do not shift V to non-negative values.
    tramway_jeffreys_bug : stochastic DV: reproduce TRamWAy's Jeffreys precedence bug.
    exact_normalization : use the exact Gaussian normalisation in any dimension (weight dim/2);
        TRamWAy's (False) is exact in 2D only and inflates 3D diffusivities by 1.5x.
    export_centers : add the cell centre columns.
    solver : ``"lbfgsb"`` (default: L-BFGS-B on the whole parameter vector) or, for
        ``stochastic.dv``, ``"block"``: block-coordinate BFGS over cells, (D_i, V_i) blocks,
        each step touching only the local terms around one cell, non-interacting cells
        updated in parallel (the JAX counterpart of TRamWAy's ``minimize_sparse_bfgs``).
    input_maps : :class:`Maps` or DataFrame indexed by cell label: maps an earlier inference made
        (TRamWAy's input maps). ``snr`` reads its ``diffusivity``; ``bayes_factor`` reads its
        SNR columns (``n, V, V_prior, zeta_total *, zeta_spurious *``) or else its
        ``diffusivity``; ``gradient`` reads ``feature``.
    feature : ``gradient`` mode: column name(s) of ``input_maps`` (str, comma-separated str or
        list of str) whose grad1 is wanted.
    B_threshold : ``bayes_factor`` mode: evidence threshold on B (TRamWAy default 10).
    init_max_iter : ``semi.stochastic.dv``: epochs of the block-coordinate stage (TRamWAy:
        300 x ncells single-cell iterations, i.e. ~300 sweeps).
    progress : optional callback, called once per solver iteration (L-BFGS-B only).

    Returns
    -------
    Maps
    """
    call_args = {k: v for k, v in locals().items() if k not in ("cells", "mode", "ignored")}
    if ignored:
        unknown = set(ignored) - {"alpha", "worker_count", "verbose", "gradient", "grad", "superlocal",
                                  "stochastic", "debug", "fulltime"}
        if unknown:
            raise TypeError(f"infer() got unexpected keyword arguments {sorted(unknown)}")
    if not isinstance(cells, Cells):
        if hasattr(cells, "tessellation") and hasattr(cells, "translocations"):
            cells = distributed(cells)
        else:
            raise TypeError(f"infer expects Cells or a Partition, got {type(cells).__name__}")
    mode = mode.lower()
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
    s2 = localization_variance(localization_error, sigma, sigma2)
    if mode == "df" or mode.endswith(".df"):
        if force_prior is None and potential_prior is not None:
            force_prior = potential_prior
    params = dict(sigma2=s2, diffusivity_prior=diffusivity_prior, jeffreys_prior=jeffreys_prior,
                  min_diffusivity=min_diffusivity, exact_normalization=exact_normalization)
    nrm = cells.dim / 2.0 if exact_normalization else 1.0

    if mode == "density":
        vol = np.asarray(cells.volumes, dtype=float)
        dens = np.asarray(cells.counts, float) / np.where(np.isfinite(vol) & (vol > 0), vol, np.nan)
        df = pd.DataFrame({"density": dens}, index=np.asarray(cells.cell_ids))
        return Maps(_with_centers(df, cells, export_centers), mode, None, params)
    if mode == "d.conj_prior":
        return _conj_prior(cells, s2, localization_error, sigma, sigma2, export_centers, params,
                           ignored, _grad_kwargs(grad_epsilon, epsilon, grad_selection_angle))

    grad_kw = _grad_kwargs(grad_epsilon, epsilon, grad_selection_angle)
    if mode in ("snr", "d.snr"):
        return _snr(cells, input_maps, call_args, ignored, grad_kw, export_centers, params, mode)
    if mode == "bayes_factor":
        if localization_error is None and sigma is None and sigma2 is None:
            raise ValueError("bayes_factor needs sigma or sigma2 (TRamWAy has no default here)")
        return _bayes_factor(cells, input_maps, call_args, ignored, grad_kw, s2, B_threshold,
                             export_centers, params)
    if mode == "gradient":
        return _gradient_mode(cells, input_maps, feature, grad_kw, export_centers, params)

    base = mode.split(".")[-1]
    priors = {"d": (diffusivity_prior,), "dd": (diffusivity_prior, drift_prior),
              "df": (diffusivity_prior, force_prior)}
    per_cell = mode in ("degraded.d", "unsmooth.d", "unsmooth.dd", "unsmooth.df") or (
        mode in ("d", "dd", "df") and all(p is None for p in priors[mode]))
    if per_cell:
        return _infer_per_cell(cells, base, s2, jeffreys_prior, min_diffusivity, max_iter,
                               options, tol, D0, export_centers, params, mode, nrm)

    # smooth modes: cells without neighbours are dropped
    cells = cells.with_neighbours_only()
    if cells.ncells == 0:
        raise ValueError("no cell has a non-empty neighbour; smooth modes need adjacent cells")
    vols = np.asarray(cells.volumes, dtype=float)
    if not np.all(np.isfinite(vols) & (vols > 0)):
        bad = np.asarray(cells.cell_ids)[~(np.isfinite(vols) & (vols > 0))]
        raise ValueError(f"cells {bad[:10].tolist()} have no finite positive area/volume, which "
                         "the area-weighted priors need (unbounded Voronoi cells in 3D?); use "
                         "tessellate(..., clip_to_hull=True) in 2D or a grid")
    m, dim = cells.ncells, cells.dim
    eps = grad_epsilon if grad_epsilon is not None else epsilon
    # TRamWAy's get_grad_kwargs: eps wins; else the selection angle, 0.9 by default
    angle = None if eps is not None else (grad_selection_angle or DEFAULT_SELECTION_ANGLE)
    lists = cells.neighbour_lists()
    centers = np.asarray(cells.centers, dtype=float)
    grad = _cast(grad1_stencil(centers, lists, eps=eps, selection_angle=angle), cells)
    if rgrad in ("delta", "delta0"):
        reg = _cast(delta0_stencil(centers, lists), cells)
    elif rgrad == "delta1":
        reg = _cast(delta1_stencil(centers, lists, eps=eps, selection_angle=angle), cells)
    elif rgrad in (None, "grad", "grad1", "gradn"):
        reg = grad
    else:
        raise ValueError(f"unknown rgrad {rgrad!r}; expected None, 'grad1', 'delta0' or 'delta1'")
    dtype = cells.dr.dtype
    D_init = np.asarray(cells.initial_diffusivity(), dtype=float)
    if D0 is not None:
        D_init = np.broadcast_to(np.asarray(D0, float), (m,)).copy()
    lbD = _bounds_for_d(cells, s2, min_diffusivity)
    f = lambda v: jnp.asarray(v, dtype=dtype)  # noqa: E731
    defaults = dict(maxiter=1000, ftol=1e-6)
    if mode == "dv":
        defaults = dict(maxiter=1000, ftol=1e-8, maxcor=10)
    elif mode in ("stochastic.dv", "semi.stochastic.dv"):
        defaults = dict(maxiter=1000, ftol=1e-8)
    if dtype == jnp.float32:  # TRamWAy's float64 tolerances are below float32 rounding
        defaults["ftol"] = max(defaults["ftol"], FLOAT32_FTOL)
    opts = dict(defaults)
    if tol is not None:
        opts["ftol"] = tol
    opts.update(options or {})
    if max_iter:
        opts["maxiter"] = int(max_iter)
    opts.pop("maxfun", None)
    params.update(options=opts, rgrad=rgrad, selection_angle=angle, epsilon=eps)

    if base == "d":
        fun = _make_obj("d", bool(jeffreys_prior))
        prob = (cells, grad, reg, f(s2), f(_prior(diffusivity_prior)), f(nrm))
        res = _solve(fun, f(D_init), f(lbD), prob, opts, progress)
        x = np.asarray(res.x, dtype=float)
        df = pd.DataFrame({"diffusivity": x}, index=np.asarray(cells.cell_ids))
    elif base in ("dd", "df"):
        fun = _make_obj(base, bool(jeffreys_prior))
        lam = drift_prior if base == "dd" else force_prior
        params["drift_prior" if base == "dd" else "force_prior"] = lam
        prob = (cells, grad, reg, f(s2), f(_prior(diffusivity_prior)), f(_prior(lam)), f(nrm))
        x0 = np.r_[D_init, np.zeros(m * dim)]
        lb = np.r_[lbD, np.full(m * dim, -np.inf)]
        res = _solve(fun, f(x0), f(lb), prob, opts, progress)
        x = np.asarray(res.x, dtype=float)
        name = "drift" if base == "dd" else "force"
        cols = {"diffusivity": x[:m]}
        vec = x[m:].reshape(m, dim)
        for d, c in enumerate(_space_cols(dim)):
            cols[f"{name} {c}"] = vec[:, d]
        df = pd.DataFrame(cols, index=np.asarray(cells.cell_ids))
    else:  # dv, stochastic.dv
        if V0 is None:
            V_init = _initial_potential(cells, compatibility)
        else:
            V_init = np.broadcast_to(np.asarray(V0, float), (m,)).copy()
        x0 = np.r_[D_init, V_init]
        params.update(potential_prior=potential_prior)
        if mode == "dv":
            fun = _make_obj("dv", bool(jeffreys_prior))
            prob0 = (cells, grad, reg, f(s2), f(_prior(diffusivity_prior)),
                     f(_prior(potential_prior)), f(nrm), f(0.0))
            y0 = jax.jit(fun)(f(x0), prob0)
            prob = prob0[:-1] + (y0,)
            lb = np.r_[lbD, np.full(m, -np.inf)]
        else:
            delta = _cast(delta0_stencil(centers, lists), cells)
            time = None
            ltD, ltV = diffusivity_time_prior, potential_time_prior
            if not isinstance(time_prior, (tuple, list)):
                time_prior = (time_prior, time_prior)
            if ltD is None and time_prior[0] is not None and diffusivity_prior is not None:
                ltD = time_prior[0] * diffusivity_prior
            if ltV is None and time_prior[1] is not None and potential_prior is not None:
                ltV = time_prior[1] * potential_prior
            if ltD is not None or ltV is not None:
                if cells.time_neighbours is None:
                    raise ValueError("time priors need space-time cells (see "
                                     "jaxinfer.spt.cells.space_time_cells)")
                from jaxinfer.spt.cells import time_variation_stencil

                time = _cast(time_variation_stencil(cells), cells)
            params.update(diffusivity_time_prior=ltD, potential_time_prior=ltV,
                          tramway_jeffreys_bug=tramway_jeffreys_bug)
            fun = _make_obj("stochastic.dv", bool(jeffreys_prior), bool(tramway_jeffreys_bug))
            prob = (cells, grad, delta, f(s2), f(_prior(diffusivity_prior)),
                    f(_prior(potential_prior)), time, f(_prior(ltD)), f(_prior(ltV)), f(nrm))
            V_free = V0 is not None and np.isscalar(V0) and V0 == 0
            lb = np.r_[lbD, np.full(m, -np.inf if V_free else 0.0)]
        if mode == "semi.stochastic.dv":
            # TRamWAy: a stochastic (one cell at a time) run of init_max_iter x ncells
            # iterations, then a non-stochastic fine-tuning from its result. Here: that many
            # block-coordinate epochs, then L-BFGS-B on the whole vector.
            if solver not in ("lbfgsb", "l-bfgs-b", "block"):
                raise ValueError(f"unknown solver {solver!r} for mode {mode!r}")
            opts0 = dict(opts, maxiter=int(init_max_iter))
            res0 = _solve_block(cells, grad, delta, time, prob, f(x0), f(lb), opts0,
                                bool(jeffreys_prior), bool(tramway_jeffreys_bug))
            res = _solve(fun, res0.x, f(lb), prob, opts, progress)
            params.update(init_result=res0, init_max_iter=int(init_max_iter))
        elif solver == "block" and mode == "stochastic.dv":
            res = _solve_block(cells, grad, delta, time, prob, f(x0), f(lb), opts,
                               bool(jeffreys_prior), bool(tramway_jeffreys_bug))
        elif solver not in ("lbfgsb", "l-bfgs-b"):
            raise ValueError(f"unknown solver {solver!r} for mode {mode!r}; expected 'lbfgsb'"
                             + (" or 'block'" if mode == "stochastic.dv" else ""))
        else:
            res = _solve(fun, f(x0), f(lb), prob, opts, progress)
        x = np.asarray(res.x, dtype=float)
        D, V = x[:m], x[m:].copy()
        if mode == "dv":
            if np.any(V < 0):
                V -= V.min()
        elif V0 is not None and np.isscalar(V0) and V0 == 0 and not allow_negative_potential:
            if np.nanmin(V) < 0:
                V -= np.nanmin(V)
        F = -np.asarray(grad.apply(jnp.asarray(V, dtype=dtype), na=jnp.nan), dtype=float)
        cols = {"diffusivity": D, "potential": V}
        for d, c in enumerate(_space_cols(dim)):
            cols[f"force {c}"] = F[:, d]
        df = pd.DataFrame(cols, index=np.asarray(cells.cell_ids))
    return Maps(_with_centers(df, cells, export_centers), mode, res, params)


def _block_structure(cells, stencils):
    """Regions (cells whose local term involves cell i) and groups of cells sharing no term."""
    m = cells.ncells
    region = [{i} for i in range(m)]
    for st in stencils:
        if st is None:
            continue
        nb = np.asarray(st.neighbours)
        w = np.asarray(st.neighbour_weight)
        for j in range(m):
            for k in range(nb.shape[1]):
                if np.any(w[j, :, k] != 0):
                    region[int(nb[j, k])].add(j)
    R = max(len(r) for r in region)
    rows = np.tile(np.arange(m)[:, None], (1, R))
    rmask = np.zeros((m, R), dtype=bool)
    for i, r in enumerate(region):
        r = sorted(r)
        rows[i, :len(r)] = r
        rmask[i, :len(r)] = True
    # greedy colouring: i and k conflict when some term involves both
    owners = [[] for _ in range(m)]  # term j -> blocks whose region holds j
    for i, r in enumerate(region):
        for j in r:
            owners[j].append(i)
    colour = np.full(m, -1)
    for i in range(m):
        taken = {colour[k] for j in region[i] for k in owners[j] if colour[k] >= 0}
        c = 0
        while c in taken:
            c += 1
        colour[i] = c
    ncol = colour.max() + 1
    members = [np.nonzero(colour == c)[0] for c in range(ncol)]
    width = max(len(g) for g in members)
    groups = np.stack([np.pad(g, (0, width - len(g)), constant_values=-1) for g in members])
    return jnp.asarray(rows), jnp.asarray(rmask), groups


@functools.lru_cache(maxsize=16)
def _jitted_block(jeffreys, bug, groups_key, opts_items):
    from jaxinfer.optimize.block import minimize_block_bfgs

    opts = dict(opts_items)
    groups = np.asarray(groups_key[1]).reshape(groups_key[0])

    def unpack(prob):
        cells, grad, delta, s2, lD, lV, time, ltD, ltV, nrm = prob
        return dict(cells=cells, grad=grad, delta=delta, sigma2=s2, diffusivity_prior=lD,
                    potential_prior=lV, jeffreys_prior=jeffreys, time=time,
                    diffusivity_time_prior=ltD, potential_time_prior=ltV,
                    tramway_jeffreys_bug=bug, normalization=nrm)

    def total(x, prob, rows, rmask):
        kw = unpack(prob)
        return post.stochastic_dv_neg_posterior(x[:, 0], x[:, 1], **kw)

    def local(i, x, prob, rows, rmask):
        kw = unpack(prob)
        terms = post.local_dv_neg_posteriors(x[:, 0], x[:, 1], rows=rows[i], **kw)
        return jnp.sum(jnp.where(rmask[i], terms, 0.0))

    def run(x0, lower, prob, rows, rmask):
        return minimize_block_bfgs(total, x0, local_fun=local, args=(prob, rows, rmask),
                                   groups=groups, bounds=(lower, jnp.full_like(lower, jnp.inf)),
                                   ftol=opts.get("ftol", 1e-8), gtol=opts.get("gtol", 1e-5),
                                   max_epochs=int(opts.get("maxiter", 1000)))

    return jax.jit(run)


def _solve_block(cells, grad, delta, time, prob, x0, lb, opts, jeffreys, bug):
    m = cells.ncells
    rows, rmask, groups = _block_structure(cells, (grad, delta, time))
    key = (groups.shape, tuple(groups.ravel().tolist()))
    run = _jitted_block(jeffreys, bug, key, tuple(sorted(opts.items())))
    x0b = jnp.stack([x0[:m], x0[m:]], axis=1)
    lower = jnp.stack([lb[:m], lb[m:]], axis=1)
    res = run(x0b, lower, prob, rows, rmask)
    return eqx_tree_replace(res, x=jnp.concatenate([res.x[:, 0], res.x[:, 1]]))


def eqx_tree_replace(res, **changes):
    import equinox as eqx

    for name, value in changes.items():
        res = eqx.tree_at(lambda r: getattr(r, name), res, value)
    return res


def _cast(stencil, cells):
    dtype = cells.dr.dtype
    return type(stencil)(stencil.self_weight.astype(dtype), stencil.neighbour_weight.astype(dtype),
                         stencil.neighbours, stencil.defined)


def _space_cols(dim):
    return ["x", "y", "z"][:dim] if dim <= 3 else [str(d) for d in range(dim)]


def _with_centers(df, cells, export_centers):
    if export_centers:
        c = np.asarray(cells.centers, dtype=float)
        pos = pd.Index(np.asarray(cells.cell_ids)).get_indexer(df.index)
        for d, name in enumerate(_space_cols(cells.dim)):
            df[name] = c[pos, d]
    return df


def _infer_per_cell(cells, base, s2, jeffreys, min_diffusivity, max_iter, options, tol, D0,
                    export_centers, params, mode, nrm):
    m, dim = cells.ncells, cells.dim
    dtype = cells.dr.dtype
    D_init = np.asarray(cells.initial_diffusivity(), dtype=float)
    if D0 is not None:
        D_init = np.broadcast_to(np.asarray(D0, float), (m,)).copy()
    lbD = _bounds_for_d(cells, s2, min_diffusivity)
    k = 1 if base == "d" else 1 + dim
    theta0 = np.zeros((m, k))
    theta0[:, 0] = D_init
    lb = np.full((m, k), -np.inf)
    lb[:, 0] = lbD
    opts = dict(maxiter=15000, ftol=2.220446049250313e-09)  # scipy L-BFGS-B defaults
    if dtype == jnp.float32:
        opts["ftol"] = FLOAT32_FTOL
    if tol is not None:
        opts["ftol"] = tol
    opts.update(options or {})
    if max_iter:
        opts["maxiter"] = int(max_iter)
    opts.pop("maxfun", None)
    solver = _vmapped_cell_solver(base, bool(jeffreys), tuple(sorted(opts.items())))
    f = lambda v: jnp.asarray(v, dtype=dtype)  # noqa: E731
    res = solver(f(theta0), f(lb), cells.dr, cells.dt, cells.mask, cells.counts.astype(dtype),
                 cells.dt_mean, f(s2), f(nrm))
    x = np.asarray(res.x, dtype=float)
    cols = {"diffusivity": x[:, 0]}
    if base != "d":
        name = "drift" if base == "dd" else "force"
        for d, c in enumerate(_space_cols(dim)):
            cols[f"{name} {c}"] = x[:, 1 + d]
    params.update(options=opts)
    df = pd.DataFrame(cols, index=np.asarray(cells.cell_ids))
    return Maps(_with_centers(df, cells, export_centers), mode, res, params)


def _conj_prior(cells, s2, localization_error, sigma, sigma2, export_centers, params, kwargs,
                grad_kw):
    try:
        from jaxinfer.spt import conjugate
    except ImportError as e:  # pragma: no cover
        raise NotImplementedError("d.conj_prior needs jaxinfer.spt.conjugate") from e
    if localization_error is None and sigma is None and sigma2 is None:
        raise ValueError("d.conj_prior needs sigma or sigma2 (TRamWAy has no default here)")
    alpha = kwargs.get("alpha", 0.95)
    est = conjugate.d_conj_prior(cells.dr, cells.dt, cells.mask, sigma2=s2, alpha=alpha)
    D = np.asarray(est["diffusivity"], dtype=float)
    # TRamWAy's column order: SNR extensions, then diffusivity, ci low, ci high
    cols = _snr_columns(cells, est, D, float(est["dt"]), grad_kw)
    cols["diffusivity"] = D
    cols["ci low"] = np.asarray(est["ci_low"], dtype=float)
    cols["ci high"] = np.asarray(est["ci_high"], dtype=float)
    df = pd.DataFrame(cols, index=np.asarray(cells.cell_ids))
    return Maps(_with_centers(df, cells, export_centers), "d.conj_prior", None, params)


def _grad_kwargs(grad_epsilon, epsilon, grad_selection_angle):
    """TRamWAy's get_grad_kwargs: eps wins; else the selection angle, 0.9 by default."""
    eps = grad_epsilon if grad_epsilon is not None else epsilon
    angle = None if eps is not None else (grad_selection_angle or DEFAULT_SELECTION_ANGLE)
    return dict(eps=eps, selection_angle=angle)


def _gradient_of(cells, values, grad_kw):
    """grad1 of a per-cell scalar field [ncells] -> [ncells, dim]; cells where ``values`` is NaN
    are left out of the neighbourhoods (TRamWAy's ``reverse_index``) and get NaN, as do
    components with no neighbour on either side."""
    values = np.asarray(values, dtype=float)
    m, dim = cells.ncells, cells.dim
    out = np.full((m, dim), np.nan)
    keep = np.isfinite(values)
    if not keep.any():
        return out
    sub = cells if keep.all() else cells.subset(keep)
    st = grad1_stencil(np.asarray(sub.centers, dtype=float), sub.neighbour_lists(), **grad_kw)
    g = np.asarray(st.apply(jnp.asarray(values[keep]), na=jnp.nan), dtype=float)
    out[keep] = g
    return out


def _snr_columns(cells, stats, D, dt, grad_kw):
    """TRamWAy's SNR extensions (``add_snr_extensions``): n, V_prior, V, zeta_total,
    zeta_spurious = grad1(D) dt / sqrt(V) (NaN where n < 2 or the gradient is undefined)."""
    cols = {"n": np.asarray(stats["n"], dtype=float),
            "V_prior": np.asarray(stats["V_prior"], dtype=float),
            "V": np.asarray(stats["V"], dtype=float)}
    zt = np.asarray(stats["zeta_total"], dtype=float)
    n = cols["n"]
    zt = np.where((n > 1)[:, None], zt, np.nan)
    g = _gradient_of(cells, D, grad_kw)
    sd = np.asarray(stats["sd"], dtype=float)
    zs = g * dt / sd[:, None]
    for d, c in enumerate(_space_cols(cells.dim)):
        cols[f"zeta_total {c}"] = zt[:, d]
    for d, c in enumerate(_space_cols(cells.dim)):
        cols[f"zeta_spurious {c}"] = zs[:, d]
    return cols


# ----------------------------------------------------------------------------- snr, bayes_factor,
# gradient (TRamWAy's plugins of the same names)


def _input_frame(input_maps, mode):
    if input_maps is None:
        return None
    if isinstance(input_maps, Maps):
        return input_maps.maps
    if isinstance(input_maps, pd.DataFrame):
        return input_maps
    raise TypeError(f"{mode}: input_maps must be a Maps or a DataFrame indexed by cell label, "
                    f"got {type(input_maps).__name__}")


def _diffusivity_map(cells, frame, call_args, ignored, mode):
    """(cells, D [ncells], frame restricted to cells): D read from the input maps (cells with
    a non-empty neighbour, as TRamWAy's infer_snr) or inferred with mode 'd' (or 'smooth.d'
    when a diffusivity prior is given), with the caller's keywords."""
    if frame is not None:
        if "diffusivity" not in frame.columns:
            raise ValueError(f"{mode}: input_maps has no 'diffusivity' column (columns: "
                             f"{list(frame.columns)})")
        cells = cells.with_neighbours_only()
        ids = np.asarray(cells.cell_ids)
        present = np.isin(ids, frame.index.values)
        if not present.any():
            raise ValueError(f"{mode}: no cell label of input_maps matches the cells")
        cells = cells.subset(present)
        sub = frame.reindex(np.asarray(cells.cell_ids))
        return cells, sub["diffusivity"].to_numpy(dtype=float), sub
    args = {k: v for k, v in call_args.items()
            if k not in ("input_maps", "feature", "B_threshold", "init_max_iter")}
    dmode = "smooth.d" if call_args.get("diffusivity_prior") else "d"
    dmaps = infer(cells, dmode, **args, **ignored)
    if dmode == "smooth.d":
        cells = cells.with_neighbours_only()
    sub = dmaps.maps.reindex(np.asarray(cells.cell_ids))
    return cells, sub["diffusivity"].to_numpy(dtype=float), sub


def _common_dt(cells, mode):
    dt = np.asarray(cells.dt, dtype=float)[np.asarray(cells.mask)]
    med = float(np.median(dt))
    if not np.allclose(dt, med):
        raise ValueError(f"{mode} needs identical translocation durations (dt), got values "
                         f"from {dt.min()} to {dt.max()}")
    return med


def _snr(cells, input_maps, call_args, ignored, grad_kw, export_centers, params, mode="snr"):
    """TRamWAy's ``snr`` mode: diffusivity (input or inferred) + ``add_snr_extensions``."""
    from jaxinfer.spt.conjugate import jump_statistics

    frame = _input_frame(input_maps, mode)
    cells, D, sub = _diffusivity_map(cells, frame, call_args, ignored, mode)
    dt = _common_dt(cells, mode)
    stats = jump_statistics(cells.dr, cells.mask)
    snr = _snr_columns(cells, stats, D, dt, grad_kw)
    keep = [c for c in sub.columns if c not in snr and c not in _space_cols(cells.dim)]
    df = sub[keep].copy()
    for c, v in snr.items():
        df[c] = v
    params.update(dt=dt, **grad_kw)
    return Maps(_with_centers(df, cells, export_centers), mode, None, params)


SNR_COLUMNS = ("n", "V", "V_prior", "zeta_total", "zeta_spurious")


def _bayes_factor(cells, input_maps, call_args, ignored, grad_kw, s2, B_threshold,
                  export_centers, params):
    """TRamWAy's ``bayes_factor`` mode: lg_B, force, min_n per cell from the SNR variables,
    then regions of equal sign of lg_B (groups), their summed lg_B and thresholded force."""
    from jaxinfer.spt import bayes_factors as bf

    frame = _input_frame(input_maps, "bayes_factor")
    dim = cells.dim
    axes = _space_cols(dim)
    snr_cols = ["n", "V", "V_prior"] + [f"{v} {a}" for v in ("zeta_total", "zeta_spurious")
                                         for a in axes]
    if frame is not None and all(c in frame.columns for c in snr_cols):
        # the SNR variables are given (e.g. the output of mode 'snr' or 'd.conj_prior')
        sub = frame.reindex(np.asarray(cells.cell_ids))
        zt = sub[[f"zeta_total {a}" for a in axes]].to_numpy(float)
        zs = sub[[f"zeta_spurious {a}" for a in axes]].to_numpy(float)
        lg_b, force, min_n = bf.calculate_bayes_factors(
            zt, zs, sub["n"].to_numpy(float), sub["V"].to_numpy(float),
            sub["V_prior"].to_numpy(float), s2, dim=dim, B_threshold=B_threshold)
    else:
        cells, D, _ = _diffusivity_map(cells, frame, call_args, ignored, "bayes_factor")
        _common_dt(cells, "bayes_factor")
        out = bf.bayes_factors_for_cells(cells.dr, cells.dt, cells.mask,
                                         _gradient_of(cells, D, grad_kw), sigma2=s2,
                                         B_threshold=B_threshold)
        lg_b, force, min_n = out["lg_B"], out["force"], out["min_n"]
    lg_b = np.asarray(lg_b, dtype=float)
    force = np.where(np.isnan(lg_b), np.nan, np.asarray(force, dtype=float))
    min_n = np.where(np.isnan(lg_b), np.nan, np.asarray(min_n, dtype=float))
    groups, group_lg_b, group_forces = group_by_sign(lg_b, cells.neighbour_lists(), B_threshold)
    df = pd.DataFrame({"lg_B": lg_b, "force": force, "min_n": min_n, "groups": groups,
                       "group_lg_B": group_lg_b, "group_forces": group_forces},
                      index=np.asarray(cells.cell_ids))
    params.update(B_threshold=B_threshold, **grad_kw)
    return Maps(_with_centers(df, cells, export_centers), "bayes_factor", None, params)


def group_by_sign(lg_B, neighbours, B_threshold=10):
    """Connected regions of cells whose log10 Bayes factors have the same sign.

    Parameters
    ----------
    lg_B : [ncells] log10 Bayes factors (NaN: no group)
    neighbours : sequence of int arrays, neighbours of each cell (positions)
    B_threshold : evidence threshold on B

    Returns
    -------
    groups [ncells] (float labels 0, 1, ... in order of discovery; NaN where lg_B is NaN),
    group_lg_B [ncells] (sum of lg_B over the cell's group), group_forces [ncells]
    (1 / -1 / 0: the group's summed lg_B is >= log10 B_threshold / <= -log10 B_threshold /
    neither; 0 for ungrouped cells).

    TRamWAy's ``group_by_sign`` additionally permutes the labels at random and leaves the last
    group's ``group_lg_B`` at NaN (its loop stops one group short); here every group is summed
    and labels are deterministic.
    """
    lg_B = np.asarray(lg_B, dtype=float)
    m = lg_B.shape[0]
    sign = np.sign(lg_B)
    groups = np.full(m, np.nan)
    label = 0
    for i in range(m):
        if not np.isnan(groups[i]) or np.isnan(sign[i]):
            continue
        stack = [i]
        groups[i] = label
        while stack:
            j = stack.pop()
            for k in neighbours[j]:
                if np.isnan(groups[k]) and sign[k] == sign[j]:
                    groups[k] = label
                    stack.append(k)
        label += 1
    group_lg_b = np.full(m, np.nan)
    for g in range(label):
        sel = groups == g
        group_lg_b[sel] = lg_B[sel].sum()
    thr = np.log10(B_threshold)
    with np.errstate(invalid="ignore"):
        group_forces = (group_lg_b >= thr).astype(float) - (group_lg_b <= -thr).astype(float)
    return groups, group_lg_b, group_forces


def _gradient_mode(cells, input_maps, feature, grad_kw, export_centers, params):
    """TRamWAy's ``gradient`` mode: grad1 of map feature(s) at the cells that carry them."""
    frame = _input_frame(input_maps, "gradient")
    if frame is None:
        raise ValueError("gradient mode needs input_maps (the maps whose feature is derived)")
    if not feature:
        raise ValueError("gradient mode needs feature= (a column of input_maps, or several "
                         "as a comma-separated string or a list)")
    if isinstance(feature, str):
        feature = [f.strip() for f in feature.split(",")]
    missing = [f for f in feature if f not in frame.columns]
    if missing:
        raise ValueError(f"gradient: input_maps has no column {missing}; columns are "
                         f"{list(frame.columns)}")
    ids = np.asarray(cells.cell_ids)
    present = np.isin(ids, frame.index.values)
    if not present.any():
        raise ValueError("gradient: no cell label of input_maps matches the cells")
    cells = cells.subset(present) if not present.all() else cells
    sub = frame.reindex(np.asarray(cells.cell_ids))
    cols = {}
    defined = np.zeros(cells.ncells, dtype=bool)
    for f in feature:
        g = _gradient_of(cells, sub[f].to_numpy(dtype=float), grad_kw)
        defined |= ~np.all(np.isnan(g), axis=1)
        for d, c in enumerate(_space_cols(cells.dim)):
            cols[f"{f} {c}"] = g[:, d]
    df = pd.DataFrame(cols, index=np.asarray(cells.cell_ids))[defined]
    params.update(feature=feature, **grad_kw)
    return Maps(_with_centers(df, cells, export_centers), "gradient", None, params)
