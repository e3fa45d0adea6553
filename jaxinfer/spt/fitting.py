"""Solving a mode's posterior: L-BFGS-B over all cells, vmapped per-cell L-BFGS-B, or
block-coordinate BFGS over (D_i, V_i) blocks.

Posteriors are module-level functions of ``(params, problem)`` from
:mod:`jaxinfer.spt.modes`, so each solve is one XLA program per (posterior, options, shapes),
reused across calls; a progress callable is routed to the program, never part of its key.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.optimize._compile import compiler_options
from jaxinfer.optimize._iterate import PROGRESS_SINK, progress_to
from jaxinfer.optimize.block import colour_groups
from jaxinfer.optimize.minimize import _host_result, minimize
from jaxinfer.spt.cells import host_array
from jaxinfer.spt.modes import CellProblem, Mode, Problem, stochastic_dv_local_terms

__all__ = ["solve_map", "solve_per_cell", "solve_blocks", "block_structure"]


def _route_progress(intermediate_result):
    """The fixed callback of the compiled smooth solves: forwards to the ``progress`` of the
    running :func:`solve_map` call (``progress_to``)."""
    PROGRESS_SINK(intermediate_result)


@functools.lru_cache(maxsize=32)
def _map_solver(posterior, opts_items, relative_to_start: bool, with_progress: bool):
    """``jit(run)``: ``run(x0, lower, upper, problem)`` is L-BFGS-B on ``posterior`` (one
    program; with ``relative_to_start`` the objective is ``f - f(x0)``, f(x0) computed in
    that same program rather than by a program of its own)."""
    opts = dict(opts_items)

    def run(x0, lower, upper, problem):
        if relative_to_start:
            zero = dataclasses.replace(problem, offset=jnp.zeros_like(problem.offset))
            problem = dataclasses.replace(problem, offset=posterior(x0, zero))
        return minimize(posterior, x0, args=(problem,), method="L-BFGS-B",
                        bounds=(lower, upper), options=opts,
                        callback=_route_progress if with_progress else None)

    return jax.jit(run, compiler_options=compiler_options())


def solve_map(mode: Mode, problem: Problem, x0: dict, lower: dict, upper: dict,
              options: dict, progress: Optional[Callable] = None):
    """L-BFGS-B on ``mode.posterior(params, problem)`` from ``x0`` within ``[lower, upper]``.

    Modes with ``relative_to_start`` (DV, as TRamWAy) minimise ``f - f(x0)``: the problem's
    ``offset`` is replaced by f(x0). ``progress(intermediate_result)`` (optional) is called on
    the host once per iteration with ``nit``, ``fun``, ``x``, ``jac`` (dicts like ``x0``).
    Returns an OptimizeResult (numpy fields) whose ``x`` is a dict like ``x0``.
    """
    solver = _map_solver(mode.posterior, tuple(sorted(options.items())),
                         bool(mode.relative_to_start), progress is not None)
    with progress_to(progress):
        res = jax.block_until_ready(solver(x0, lower, upper, problem))
    return _host_result(res)


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
    problems = CellProblem.of_cells(cells, sigma2, normalization, jeffreys)
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
