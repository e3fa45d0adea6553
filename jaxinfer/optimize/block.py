"""Block-coordinate BFGS for objectives that are sums of local terms.

The JAX counterpart of TRamWAy's ``minimize_sparse_bfgs``: the parameters are split into
blocks (one per cell / component), ``x[i]`` of shape ``(block_size,)``, and the objective is a
sum of local terms, each touching few blocks. A step updates ONE block (or a group of blocks
that share no term) with a quasi-Newton (BFGS) direction computed from the terms that involve
it, followed by a backtracking Armijo line search on those terms only. Each block keeps its
own dense inverse-Hessian approximation ``H[i]`` (block_size × block_size).

Differences from TRamWAy, on purpose: gradients are exact (autodiff of ``local_fun``), not
Ridders-extrapolated finite differences; groups of non-interacting blocks are updated in
parallel with ``vmap`` (pass ``groups``, e.g. a graph colouring of the cell adjacency); the
stopping rule is explicit and honest (below).

Stopping, checked after every epoch (one pass over all groups):

* ``GTOL``: ``max |projected gradient| <= gtol`` (full gradient, every block);
* ``FTOL``: ``(f_prev − f) <= ftol · max(|f_prev|, |f|, 1)`` over the epoch, with at least
  one accepted step in the epoch;
* ``LINE_SEARCH``: no block could make progress in a whole epoch (and no test above passed);
* ``NONFINITE``: the objective became NaN / inf;
* ``MAX_ITER``: ``max_epochs`` epochs without any of the above.

:class:`BlockBFGS` is a solver of the one shape (one epoch per ``step``) over
:class:`BlockBFGSState`, run by :func:`~jaxinfer.optimize._iterate.iterate`;
:func:`minimize_block_bfgs` is its front door: compiled once per (functions, settings, shapes)
when called eagerly, inlined under a user's ``jit`` / ``vmap`` (it vmaps over ``x0`` / ``args``).
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinfer.optimize._compile import callback_key, is_traced, run_compiled
from jaxinfer.optimize._iterate import AbstractSolver, Progress, first_status, iterate
from jaxinfer.optimize.result import OptimizeResult, Status

__all__ = ["BlockBFGS", "BlockBFGSState", "minimize_block_bfgs", "chain_groups",
           "colour_groups"]


def chain_groups(nblocks: int, coupling_range: int = 1) -> np.ndarray:
    """Groups of blocks that share no term, for chain-structured objectives.

    For terms that couple blocks ``i .. i + coupling_range`` (e.g. pair terms
    ``(x[i+1] − x[i])²`` for range 1), blocks ``coupling_range + 1`` apart never appear in a
    common term, so they can be updated simultaneously with the same result as sequentially.

    Returns an int array [coupling_range + 1, ceil(nblocks / (coupling_range + 1))] padded
    with −1.
    """
    step = coupling_range + 1
    groups = [np.arange(start, nblocks, step) for start in range(min(step, nblocks))]
    width = max(len(g) for g in groups)
    return np.stack([np.pad(g, (0, width - len(g)), constant_values=-1) for g in groups])


def colour_groups(block_terms) -> np.ndarray:
    """Groups of blocks that share no term, by greedy graph colouring (for any structure).

    Two blocks *conflict* when some term of the objective involves both; blocks of one
    colour share no term, so they can be updated simultaneously (``groups`` of
    :func:`minimize_block_bfgs`) with the same result as one after the other. Blocks are
    coloured in index order, each with the smallest colour no conflicting, already
    coloured block has (the greedy rule; colours used <= 1 + the largest number of blocks
    any one block conflicts with).

    Parameters
    ----------
    block_terms : sequence of length ``nblocks``
        ``block_terms[i]`` is an iterable of the ids (any hashable, e.g. ints) of the terms
        that involve block ``i``. For a spatial map whose local term of cell ``j`` involves
        ``j`` and its neighbours, ``block_terms[i] = {i} | neighbours(i)``: cells at graph
        distance <= 2 then conflict (a distance-2 colouring of the adjacency graph).

    Returns
    -------
    int array [ncolours, max group size], row ``c`` the blocks of colour ``c`` in increasing
    order, padded with -1. Every block appears exactly once.
    """
    terms = [set(t) for t in block_terms]
    nblocks = len(terms)
    if nblocks == 0:
        raise ValueError("block_terms must describe at least one block")
    owners = {}  # term id -> blocks it involves
    for i, ts in enumerate(terms):
        for t in ts:
            owners.setdefault(t, []).append(i)
    colour = np.full(nblocks, -1)
    for i, ts in enumerate(terms):
        taken = {colour[k] for t in ts for k in owners[t] if colour[k] >= 0}
        c = 0
        while c in taken:
            c += 1
        colour[i] = c
    members = [np.nonzero(colour == c)[0] for c in range(colour.max() + 1)]
    width = max(len(g) for g in members)
    return np.stack([np.pad(g, (0, width - len(g)), constant_values=-1) for g in members])


class BlockBFGSState(eqx.Module):
    """Public state of :class:`BlockBFGS`.

    x [nblocks, b] : iterate; H [nblocks, b, b] : per-block inverse-Hessian approximations;
    f, f_prev : total objective after the last and the previous epoch; g [nblocks, b] : full
    gradient at ``x``; epoch : epochs done; nfev / njev : local-function and local-gradient
    evaluations; accepted : accepted block steps in the last epoch; failures : failed line
    searches in total.
    """

    x: jnp.ndarray
    H: jnp.ndarray
    f: jnp.ndarray
    f_prev: jnp.ndarray
    g: jnp.ndarray
    epoch: jnp.ndarray
    nfev: jnp.ndarray
    njev: jnp.ndarray
    accepted: jnp.ndarray
    failures: jnp.ndarray


class BlockBFGS(AbstractSolver):
    """Block-coordinate BFGS on ``x [nblocks, b]`` (module docstring); ``fn(x, args) ->``
    the total objective (scalar).

    Settings: ``local_fun`` (``local(i, x, args) -> scalar``, the terms involving block
    ``i``; None: use ``fn``), ``groups`` (int array [ngroups, group_size] padded with -1;
    None: one block per group in order), ``lower`` / ``upper`` (broadcastable to ``x``;
    None: unbounded), ``ftol`` (1e-10), ``gtol`` (1e-6), ``max_epochs`` (200),
    ``max_line_search`` (30 halvings), ``armijo`` (1e-4).
    """

    local_fun: Optional[Callable] = eqx.field(static=True, default=None)
    groups: Any = None
    lower: Any = None
    upper: Any = None
    ftol: float = 1e-10
    gtol: float = 1e-6
    max_epochs: int = 200
    max_line_search: int = 30
    armijo: float = 1e-4

    def _bounds(self, x):
        lb = -jnp.inf if self.lower is None else self.lower
        ub = jnp.inf if self.upper is None else self.upper
        return (jnp.broadcast_to(jnp.asarray(lb, x.dtype), x.shape),
                jnp.broadcast_to(jnp.asarray(ub, x.dtype), x.shape))

    def _groups(self, nblocks):
        if self.groups is None:
            return jnp.arange(nblocks)[:, None]
        return jnp.asarray(self.groups)

    def _local(self, fn, i, x, args):
        if self.local_fun is None:
            return fn(x, args)
        return self.local_fun(i, x, args)

    def _block_value_and_grad(self, fn, i, xi, x, args):
        return jax.value_and_grad(lambda v: self._local(fn, i, x.at[i].set(v), args))(xi)

    def _full_gradient(self, fn, x, args):
        return jax.vmap(lambda i: self._block_value_and_grad(fn, i, x[i], x, args)[1])(
            jnp.arange(x.shape[0]))

    def _projected_max(self, x, g):
        lb, ub = self._bounds(x)
        return jnp.max(jnp.abs(jnp.clip(x - g, lb, ub) - x))

    def init(self, fn, x0, args) -> BlockBFGSState:
        lb, ub = self._bounds(x0)
        x = jnp.clip(x0, lb, ub)
        nblocks, bsize = x.shape
        f = fn(x, args)
        zero = jnp.zeros((), jnp.int32)
        return BlockBFGSState(
            x=x, H=jnp.broadcast_to(jnp.eye(bsize, dtype=x.dtype), (nblocks, bsize, bsize)),
            f=f, f_prev=f, g=self._full_gradient(fn, x, args), epoch=zero,
            nfev=jnp.asarray(1 + nblocks, jnp.int32), njev=jnp.asarray(nblocks, jnp.int32),
            accepted=zero, failures=zero)

    def _block_step(self, fn, i, xb, H, args, lower, upper):
        """One BFGS step on block i with x elsewhere fixed. Returns new x_i, H_i, stats."""
        dtype = xb.dtype
        bsize = xb.shape[1]
        xi = xb[i]
        Hi = H[i]
        f0, g = self._block_value_and_grad(fn, i, xi, xb, args)
        lo_i, hi_i = lower[i], upper[i]
        # variables held at a bound by the gradient are frozen for this step
        free = ~(((xi <= lo_i) & (g > 0)) | ((xi >= hi_i) & (g < 0)))
        g_free = jnp.where(free, g, 0.0)
        d = jnp.where(free, -(Hi @ g_free), 0.0)
        # not a descent direction: reset to steepest descent
        bad = ~(jnp.dot(g_free, d) < 0)
        d = jnp.where(bad, -g_free, d)
        Hi = jnp.where(bad, jnp.eye(bsize, dtype=dtype), Hi)
        g_norm = jnp.sqrt(jnp.dot(g_free, g_free))
        # the rounding level of the block objective: its terms can be far larger than their
        # sum (f0 ~ 0.02 from terms ~ 1 rounds at ~3e-16, not at 8 eps |f0|), so scale by
        # max(|f0|, 1), as the ftol tests do
        roundoff = 8.0 * jnp.finfo(dtype).eps * jnp.maximum(jnp.abs(f0), 1.0)

        def ls_cond(c):
            k, alpha, f_new, g_new, _, done = c
            return (~done) & (k < self.max_line_search)

        def ls_body(c):
            k, alpha, _, _, _, _ = c
            cand = jnp.clip(xi + alpha * d, lo_i, hi_i)
            f_new, g_new = self._block_value_and_grad(fn, i, cand, xb, args)
            decrease = jnp.dot(g_free, cand - xi)  # projected slope, <= 0
            armijo_ok = (f_new <= f0 + self.armijo * decrease) & (f_new < f0)
            # when the decrease is below the objective's rounding level, accept a step that
            # reduces the gradient instead (otherwise BFGS stalls at |g| ~ sqrt(eps))
            g_new_free = jnp.where(free, g_new, 0.0)
            flat_ok = (f_new <= f0 + roundoff) & (
                jnp.sqrt(jnp.dot(g_new_free, g_new_free)) < 0.9 * g_norm)
            ok = jnp.isfinite(f_new) & (armijo_ok | flat_ok) & jnp.any(cand != xi)
            return k + 1, jnp.where(ok, alpha, 0.5 * alpha), f_new, g_new, cand, ok

        init = (jnp.zeros((), jnp.int32), jnp.ones((), dtype), f0, g, xi, jnp.zeros((), bool))
        k, _, f_new, g_ls, cand, ok = lax.while_loop(ls_cond, ls_body, init)
        x_new = jnp.where(ok, cand, xi)
        g_new = jnp.where(ok, g_ls, g)
        s = x_new - xi
        y = g_new - g
        sy = jnp.dot(s, y)
        curvature = ok & (sy > jnp.finfo(dtype).eps * jnp.sqrt(jnp.dot(s, s) * jnp.dot(y, y)))
        rho = 1.0 / jnp.where(curvature, sy, 1.0)
        eye = jnp.eye(bsize, dtype=dtype)
        V = eye - rho * jnp.outer(s, y)
        # first update: scale the identity as in Nocedal & Wright (6.20)
        first = jnp.all(Hi == eye)
        H0 = jnp.where(first, (sy / jnp.where(curvature, jnp.dot(y, y), 1.0)) * eye, Hi)
        Hi = jnp.where(curvature, V @ H0 @ V.T + rho * jnp.outer(s, s), Hi)
        return x_new, Hi, ok, k + 1, k + 1

    def step(self, fn, state: BlockBFGSState, args) -> BlockBFGSState:
        nblocks = state.x.shape[0]
        groups = self._groups(nblocks)
        lower, upper = self._bounds(state.x)
        i32 = jnp.int32

        def group_step(gi, carry):
            xb, H, acc, fail, nfev, njev = carry
            members = groups[gi]
            valid = members >= 0
            safe = jnp.where(valid, members, 0)
            x_new, H_new, ok, nf, nj = jax.vmap(
                lambda i: self._block_step(fn, i, xb, H, args, lower, upper))(safe)
            # padded slots scatter out of range and are dropped
            target = jnp.where(valid, members, nblocks)
            xb = xb.at[target].set(x_new, mode="drop")
            H = H.at[target].set(H_new, mode="drop")
            return (xb, H, acc + jnp.sum(ok & valid, dtype=i32),
                    fail + jnp.sum(~ok & valid, dtype=i32),
                    nfev + jnp.sum(jnp.where(valid, nf, 0), dtype=i32),
                    njev + jnp.sum(jnp.where(valid, nj, 0), dtype=i32))

        carry = (state.x, state.H, jnp.zeros((), i32), state.failures, state.nfev, state.njev)
        xb, H, acc, fail, nfev, njev = lax.fori_loop(0, groups.shape[0], group_step, carry)
        return BlockBFGSState(x=xb, H=H, f=fn(xb, args), f_prev=state.f,
                              g=self._full_gradient(fn, xb, args), epoch=state.epoch + 1,
                              nfev=nfev + 1 + nblocks, njev=njev + nblocks, accepted=acc,
                              failures=fail)

    def terminate(self, fn, state: BlockBFGSState, args) -> jnp.ndarray:
        scale = jnp.maximum(jnp.maximum(jnp.abs(state.f_prev), jnp.abs(state.f)), 1.0)
        stepped = state.epoch >= 1
        small_decrease = (stepped & (state.accepted > 0) & jnp.asarray(self.ftol > 0)
                          & (state.f_prev - state.f <= self.ftol * scale))
        return first_status(
            (~jnp.isfinite(state.f), Status.NONFINITE),
            (self._projected_max(state.x, state.g) <= self.gtol, Status.GTOL),
            (small_decrease, Status.FTOL),
            (stepped & (state.accepted == 0), Status.LINE_SEARCH),
            (state.epoch >= self.max_epochs, Status.MAX_ITER),
        )

    def postprocess(self, fn, state: BlockBFGSState, args, status) -> OptimizeResult:
        return OptimizeResult(
            x=state.x, fun=state.f, jac=state.g, status=status, nit=state.epoch,
            nfev=state.nfev, njev=state.njev, hess_inv=None,
            extra={"block_hess_inv": state.H, "line_search_failures": state.failures,
                   "projected_gradient_max": self._projected_max(state.x, state.g)})

    def progress(self, state: BlockBFGSState) -> Progress:
        return Progress(nit=state.epoch, fun=state.f, x=state.x)


class _BlockStatic(NamedTuple):
    """The compile key of :func:`minimize_block_bfgs`."""

    fun: Any
    local_fun: Any
    groups: Any              # tuple of tuples, or None
    settings: tuple          # (ftol, gtol, max_epochs, max_line_search, armijo)
    arg_static: tuple
    scalar_blocks: bool
    callback: Any


def minimize_block_bfgs(
    fun: Callable,
    x0,
    *,
    local_fun: Optional[Callable] = None,
    args: tuple = (),
    groups=None,
    bounds: Optional[tuple] = None,
    ftol: float = 1e-10,
    gtol: float = 1e-6,
    max_epochs: int = 200,
    max_line_search: int = 30,
    armijo: float = 1e-4,
    callback: Optional[Callable] = None,
) -> OptimizeResult:
    """Minimise ``fun(x, *args)`` block by block with per-block BFGS.

    Parameters
    ----------
    fun : callable
        ``fun(x, *args) -> scalar``, the total objective; ``x`` has shape
        ``[nblocks, block_size]``. Used once per epoch (stopping tests) and, when
        ``local_fun`` is None, for the block steps too (exact but O(total) per step).
    x0 : array [nblocks, block_size] (or [nblocks] for scalar blocks)
    local_fun : callable, optional
        ``local_fun(i, x, *args) -> scalar``: the sum of the terms of ``fun`` that involve
        block ``i`` (``i`` is a traced int). Its gradient with respect to ``x[i]`` must equal
        that of ``fun`` (it includes every term touching block ``i``); it is what makes a
        step cost O(local).
    groups : int array [ngroups, group_size], optional
        Blocks updated simultaneously (padded with −1); blocks in one group must not share
        any term (e.g. :func:`chain_groups`, or :func:`colour_groups` for any structure).
        Default: one block per group, in order (Gauss–Seidel sweeps like TRamWAy).
    bounds : (lower, upper), optional
        Arrays broadcastable to ``x0`` (use ±inf for free parameters); steps are projected.
    ftol, gtol, max_epochs : see the module docstring.
    max_line_search : int
        Halvings of the step before a block's line search is declared failed.
    armijo : float
        Sufficient-decrease constant of the line search.
    callback : optional ``callback(Progress(nit, fun, x))`` after every epoch (host values;
        ``nit`` counts epochs; not part of the compile key).

    Returns
    -------
    OptimizeResult
        ``x`` (shape of ``x0``), ``fun``, ``jac`` (full gradient), ``status``, ``nit``
        (epochs), ``nfev`` / ``njev`` (local-function and local-gradient evaluations),
        ``extra`` = {"block_hess_inv": H [nblocks, b, b], "line_search_failures": int,
        "projected_gradient_max": float}.
    """
    x0 = jnp.asarray(x0)
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(jnp.result_type(float))
    if x0.ndim not in (1, 2):
        raise ValueError(f"x0 must have shape [nblocks, block_size] or [nblocks], got {x0.shape}")
    nblocks = x0.shape[0]
    groups_key = None
    if groups is not None:
        groups_np = np.asarray(groups)
        if groups_np.ndim != 2 or not np.issubdtype(groups_np.dtype, np.integer):
            raise ValueError("groups must be an int array [ngroups, group_size] padded with -1")
        members = groups_np[groups_np >= 0]
        if members.max(initial=-1) >= nblocks or np.unique(members).size != nblocks \
                or members.size != nblocks:
            raise ValueError(f"groups must cover every block 0..{nblocks - 1} exactly once")
        groups_key = tuple(map(tuple, groups_np.tolist()))
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if not isinstance(args, tuple):
        args = (args,)
    from jaxinfer.optimize.minimize import _split_args
    arg_static, arg_dynamic = _split_args(args)
    if bounds is None:
        lower, upper = -jnp.inf, jnp.inf
    else:
        lower, upper = bounds
    lower = jnp.broadcast_to(jnp.asarray(lower, x0.dtype), x0.shape)
    upper = jnp.broadcast_to(jnp.asarray(upper, x0.dtype), x0.shape)
    arrays = (x0, arg_dynamic, lower, upper)
    traced = is_traced(arrays)
    static = _BlockStatic(fun=fun, local_fun=local_fun, groups=groups_key,
                          settings=(float(ftol), float(gtol), int(max_epochs),
                                    int(max_line_search), float(armijo)),
                          arg_static=arg_static, scalar_blocks=x0.ndim == 1,
                          callback=callback_key(callback, traced))
    return run_compiled(_solve_block, static, *arrays, progress=None if traced else callback)


def _solve_block(static: _BlockStatic, x0, arg_dynamic, lower, upper) -> OptimizeResult:
    from jaxinfer.optimize.minimize import _join_args
    user_args = _join_args(static.arg_static, arg_dynamic)
    scalar = static.scalar_blocks
    unblock = (lambda xb: xb[:, 0]) if scalar else (lambda xb: xb)  # noqa: E731

    def total(xb, args):
        return static.fun(unblock(xb), *args)

    local = None
    if static.local_fun is not None:
        def local(i, xb, args):
            return static.local_fun(i, unblock(xb), *args)

    ftol, gtol, max_epochs, max_line_search, armijo = static.settings
    block = (lambda a: a[:, None]) if scalar else (lambda a: a)  # noqa: E731
    solver = BlockBFGS(local_fun=local,
                       groups=None if static.groups is None else np.asarray(static.groups),
                       lower=block(lower), upper=block(upper), ftol=ftol, gtol=gtol,
                       max_epochs=max_epochs, max_line_search=max_line_search, armijo=armijo)
    cb = static.callback
    if cb is not None:
        # the user's callable (traced call) or callback_key's sink, which forwards to it:
        # either way it receives Progress with x shaped like x0
        forward = cb
        cb = lambda p: forward(p._replace(x=np.asarray(p.x)[:, 0] if scalar else p.x))  # noqa: E731
    res = iterate(solver, total, block(x0), user_args, callback=cb)
    return OptimizeResult(x=unblock(res.x), fun=res.fun, jac=unblock(res.jac), status=res.status,
                          nit=res.nit, nfev=res.nfev, njev=res.njev, extra=res.extra)
