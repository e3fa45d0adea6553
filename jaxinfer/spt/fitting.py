"""Solving a mode's posterior: L-BFGS-B over all cells, vmapped per-cell L-BFGS-B, or
block-coordinate BFGS over (D_i, V_i) blocks.

Posteriors are module-level functions of ``(params, problem)`` from
:mod:`jaxinfer.spt.modes`, so the optimiser's compilation cache (keyed by the function, the
options and the shapes, never by the user's progress callable) is reused across calls.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.optimize.block import colour_groups
from jaxinfer.optimize.minimize import minimize
from jaxinfer.spt.modes import CellProblem, Mode, Problem, stochastic_dv_local_terms

__all__ = ["solve_map", "solve_per_cell", "solve_blocks", "block_structure"]


def solve_map(mode: Mode, problem: Problem, x0: dict, lower: dict, upper: dict,
              options: dict, progress: Optional[Callable] = None):
    """L-BFGS-B on ``mode.posterior(params, problem)`` from ``x0`` within ``[lower, upper]``.

    ``progress(intermediate_result)`` (optional) is called on the host once per iteration
    with ``nit``, ``fun``, ``x``, ``jac``. Returns an OptimizeResult whose ``x`` is a dict
    like ``x0``.
    """
    # minimize keeps the callback out of its compile key: a new progress callable does not
    # recompile
    res = minimize(mode.posterior, x0, args=(problem,), method="L-BFGS-B",
                   bounds=(lower, upper), options=options, callback=progress)
    return jax.block_until_ready(res)


@functools.lru_cache(maxsize=32)
def _vmapped_cell_solver(posterior, opts_items):
    opts = dict(opts_items)

    def one(x0, lower, upper, cell_problem):
        return minimize(posterior, x0, args=(cell_problem,), method="L-BFGS-B",
                        bounds=(lower, upper), options=opts)

    return jax.jit(jax.vmap(one))


def solve_per_cell(mode: Mode, cells, x0: dict, lower: dict, upper: dict, sigma2,
                   normalization, jeffreys: bool, options: dict):
    """One small L-BFGS-B per cell, vmapped: ``x0`` / bounds are dicts of [ncells, ...]
    arrays (``diffusivity`` [ncells, 1], ``drift`` / ``force`` [ncells, dim]). Returns the
    batched OptimizeResult (``x`` a dict of [ncells, ...])."""
    m = cells.ncells
    dtype = cells.dr.dtype
    full = lambda v: jnp.full((m,), v, dtype)  # noqa: E731
    problems = CellProblem(cells.dr, cells.dt, cells.mask, cells.counts.astype(dtype),
                           cells.dt_mean, full(sigma2), full(normalization), bool(jeffreys))
    solver = _vmapped_cell_solver(mode.posterior, tuple(sorted(options.items())))
    return jax.block_until_ready(solver(x0, lower, upper, problems))


# ----------------------------------------------------------------------------- block BFGS


def block_structure(cells, stencils):
    """Regions (cells whose local term involves cell i), and groups of cells that share no
    term (:func:`jaxinfer.optimize.block.colour_groups`), for block-coordinate BFGS.

    Returns ``rows [m, R]`` (int), ``row_mask [m, R]`` (bool) and ``groups [G, W]`` (numpy
    int, padded with -1)."""
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
    width = max(len(r) for r in region)
    rows = np.tile(np.arange(m)[:, None], (1, width))
    row_mask = np.zeros((m, width), dtype=bool)
    for i, r in enumerate(region):
        r = sorted(r)
        rows[i, :len(r)] = r
        row_mask[i, :len(r)] = True
    groups = colour_groups(region)  # blocks sharing no local term, updated together
    return jnp.asarray(rows), jnp.asarray(row_mask), groups


def _as_params(x):
    return {"diffusivity": x[:, 0], "potential": x[:, 1]}


def _block_total(x, problem, rows, row_mask):
    from jaxinfer.spt.modes import stochastic_dv_posterior

    return stochastic_dv_posterior(_as_params(x), problem)


def _block_local(i, x, problem, rows, row_mask):
    terms = stochastic_dv_local_terms(_as_params(x), problem, rows[i])
    return jnp.sum(jnp.where(row_mask[i], terms, 0.0))


@functools.lru_cache(maxsize=16)
def _jitted_block(groups_key, opts_items):
    from jaxinfer.optimize.block import minimize_block_bfgs

    opts = dict(opts_items)
    groups = np.asarray(groups_key[1]).reshape(groups_key[0])

    def run(x0, lower, problem, rows, row_mask):
        return minimize_block_bfgs(_block_total, x0, local_fun=_block_local,
                                   args=(problem, rows, row_mask), groups=groups,
                                   bounds=(lower, jnp.full_like(lower, jnp.inf)),
                                   ftol=opts.get("ftol", 1e-8), gtol=opts.get("gtol", 1e-5),
                                   max_epochs=int(opts.get("maxiter", 1000)))

    return jax.jit(run)


def solve_blocks(problem: Problem, x0: dict, lower: dict, options: dict):
    """Block-coordinate BFGS on stochastic DV's objective over (D_i, V_i) blocks, cells that
    share no local term updated in parallel. Returns an OptimizeResult with a dict ``x``."""
    rows, row_mask, groups = block_structure(problem.cells,
                                             (problem.grad, problem.delta, problem.time))
    run = _jitted_block((groups.shape, tuple(groups.ravel().tolist())),
                        tuple(sorted(options.items())))
    stack = lambda d: jnp.stack([d["diffusivity"], d["potential"]], axis=1)  # noqa: E731
    res = run(stack(x0), stack(lower), problem, rows, row_mask)
    return eqx.tree_at(lambda r: r.x, res, _as_params(res.x))
