"""Quasi-Newton solvers: dense BFGS and limited-memory L-BFGS-B with box bounds.

Both work on a flat parameter vector ``x (n,)`` and ``value_and_grad(x) -> (f, g)``; use
:func:`jaxinfer.optimize.minimize` for pytrees and scipy-style options. Each solver is an
``equinox`` module that only holds settings; ``init`` / ``step`` / ``terminate`` are pure
functions of a state NamedTuple and ``run`` drives them with one ``lax.while_loop``, so
solvers ``jit`` and ``vmap``.

L-BFGS-B here follows scipy's stopping rules exactly (projected-gradient ``gtol`` test,
relative-reduction ``ftol`` test, ``maxiter``, ``maxfun``) but computes its search direction
by a projected limited-memory quasi-Newton step rather than the generalised Cauchy point of
Byrd, Lu, Nocedal & Zhu (1995):

1. variables at a bound whose gradient pushes outward are *active* and held fixed;
2. the two-loop recursion over the memory pairs restricted to the free variables gives a
   quasi-Newton step ``d`` in the free subspace (pairs without positive curvature there
   are skipped);
3. the target ``xbar = clip(x + d, lb, ub)`` defines a feasible segment ``x + a (xbar - x)``,
   ``0 < a <= 1``, searched with a strong-Wolfe line search (c1 = 1e-3, c2 = 0.9 as in
   scipy); if ``xbar - x`` is not a descent direction the projected-gradient segment is used.

Iterates therefore differ from scipy's, the optima and the stopping semantics do not.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from jaxinfer.optimize._iterate import RUNNING, all_finite, first_status
from jaxinfer.optimize.line_search import wolfe_line_search
from jaxinfer.optimize.result import Status


def projected_gradient(x, g, lb, ub):
    """``clip(x - g, lb, ub) - x`` (n,): zero exactly at a KKT point of the box problem."""
    return jnp.clip(x - g, lb, ub) - x


# --------------------------------------------------------------------------------------
# L-BFGS-B
# --------------------------------------------------------------------------------------


class LBFGSBState(NamedTuple):
    x: jnp.ndarray          # (n,) current iterate (always inside the bounds)
    f: jnp.ndarray          # objective at x
    g: jnp.ndarray          # (n,) gradient at x
    f_prev: jnp.ndarray     # objective before the last accepted step
    s_mem: jnp.ndarray      # (m, n) steps, circular buffer
    y_mem: jnp.ndarray      # (m, n) gradient changes
    count: jnp.ndarray      # number of valid pairs (<= m)
    head: jnp.ndarray       # next slot to write
    gamma: jnp.ndarray      # initial inverse-Hessian scale s'y / y'y of the newest pair
    nit: jnp.ndarray
    nfev: jnp.ndarray
    moved: jnp.ndarray      # did the last step change x (False after a memory reset)
    ls_failed: jnp.ndarray  # the last line search failed with an empty memory
    status: jnp.ndarray


class LbfgsInvHessProduct(eqx.Module):
    """The L-BFGS inverse-Hessian approximation as an operator (like scipy's object of the
    same name): ``matvec(v)`` / ``dot(v)`` / ``H @ v`` for ``v (n,)`` over the flattened
    parameters, and ``todense() -> (n, n)``. A pytree, so it passes through jit and vmap.
    """

    s: jnp.ndarray      # (m, n) steps, newest first (invalid rows are zero)
    y: jnp.ndarray      # (m, n) gradient changes, newest first
    rho: jnp.ndarray    # (m,) 1 / s'y, 0 for unused or skipped pairs
    gamma: jnp.ndarray  # initial scale s'y / y'y of the newest pair

    def matvec(self, v):
        def newest_first(q, pair):
            s, y, r = pair
            a = r * jnp.vdot(s, q)
            return q - a * y, a

        q, alphas = lax.scan(newest_first, v, (self.s, self.y, self.rho))

        def oldest_first(r, pair):
            s, y, rh, a = pair
            return r + s * (a - rh * jnp.vdot(y, r)), None

        r, _ = lax.scan(oldest_first, self.gamma * q, (self.s, self.y, self.rho, alphas),
                        reverse=True)
        return r

    def dot(self, v):
        return self.matvec(v)

    def __matmul__(self, v):
        return self.matvec(v)

    def todense(self):
        n = self.s.shape[-1]
        return jax.vmap(self.matvec, out_axes=1)(jnp.eye(n, dtype=self.s.dtype))


def inverse_hessian_operator(state: "LBFGSBState", maxcor: int) -> LbfgsInvHessProduct:
    """The final memory of an L-BFGS-B run as a :class:`LbfgsInvHessProduct`."""
    order = (state.head - 1 - jnp.arange(maxcor)) % maxcor
    S = state.s_mem[order]
    Y = state.y_mem[order]
    sy = jnp.sum(S * Y, axis=1)
    valid = (jnp.arange(maxcor) < state.count) & (sy > 0)
    rho = jnp.where(valid, 1.0 / jnp.where(valid, sy, 1.0), 0.0)
    return LbfgsInvHessProduct(s=S, y=Y, rho=rho, gamma=state.gamma)


class LBFGSB(eqx.Module):
    """Limited-memory BFGS with box bounds (scipy's ``'L-BFGS-B'`` stopping semantics).

    Settings: ``maxcor`` memory pairs (10), ``ftol`` relative reduction (2.2e-9),
    ``gtol`` on ``max |projected gradient|`` (1e-5), ``maxiter`` (15000), ``maxfun``
    (15000), ``maxls`` line-search evaluations per iteration (20).
    """

    maxcor: int = 10
    ftol: float = 2.2204460492503131e-09
    gtol: float = 1e-5
    maxiter: int = 15000
    maxfun: int = 15000
    maxls: int = 20

    def init(self, value_and_grad: Callable, x0, lb, ub) -> LBFGSBState:
        x0 = jnp.clip(x0, lb, ub)
        f, g = value_and_grad(x0)
        n = x0.shape[0]
        dtype = x0.dtype
        m = self.maxcor
        pg = projected_gradient(x0, g, lb, ub)
        status = first_status(
            (~all_finite(f, g), Status.NONFINITE),
            (jnp.max(jnp.abs(pg), initial=0.0) <= self.gtol, Status.GTOL),
            (jnp.asarray(self.maxiter <= 0), Status.MAX_ITER),
        )
        return LBFGSBState(
            x=x0, f=f, g=g, f_prev=f,
            s_mem=jnp.zeros((m, n), dtype), y_mem=jnp.zeros((m, n), dtype),
            count=jnp.zeros((), jnp.int32), head=jnp.zeros((), jnp.int32),
            gamma=jnp.ones((), dtype),
            nit=jnp.zeros((), jnp.int32), nfev=jnp.ones((), jnp.int32),
            moved=jnp.asarray(False), ls_failed=jnp.asarray(False), status=status,
        )

    def _direction(self, state: LBFGSBState, free):
        """Two-loop recursion restricted to the free variables: ``-H_free g_free``.

        Pairs without positive curvature in the free subspace are skipped. Written as two
        ``lax.scan``s over the (masked) memory, newest pair first then oldest first, which
        compiles faster than the compact-matrix form with triangular solves.
        """
        m = self.maxcor
        dtype = state.x.dtype
        tiny = jnp.finfo(dtype).eps
        order = (state.head - 1 - jnp.arange(m)) % m        # newest pair first
        S = jnp.where(free[None, :], state.s_mem[order], 0.0)
        Y = jnp.where(free[None, :], state.y_mem[order], 0.0)
        sy = jnp.sum(S * Y, axis=1)
        valid = (jnp.arange(m) < state.count) & (sy > tiny * jnp.sum(Y * Y, axis=1))
        rho = jnp.where(valid, 1.0 / jnp.where(valid, sy, 1.0), 0.0)
        q = jnp.where(free, state.g, 0.0)

        def newest_first(q, pair):
            s, y, r = pair
            a = r * jnp.vdot(s, q)
            return q - a * y, a

        q, alphas = lax.scan(newest_first, q, (S, Y, rho))

        def oldest_first(r, pair):
            s, y, rh, a = pair
            b = rh * jnp.vdot(y, r)
            return r + s * (a - b), None

        r, _ = lax.scan(oldest_first, state.gamma * q, (S, Y, rho, alphas), reverse=True)
        return -jnp.where(free, r, 0.0)

    def step(self, value_and_grad: Callable, state: LBFGSBState, lb, ub) -> LBFGSBState:
        x, g = state.x, state.g
        dtype = x.dtype
        active = ((x <= lb) & (g > 0)) | ((x >= ub) & (g < 0))
        d = self._direction(state, ~active)
        p = jnp.clip(x + d, lb, ub) - x
        descent = jnp.vdot(g, p) < 0
        p_pg = jnp.clip(x - state.gamma * g, lb, ub) - x
        p = jnp.where(descent & all_finite(p), p, p_pg)
        bounded = jnp.any(jnp.isfinite(lb)) | jnp.any(jnp.isfinite(ub))
        alpha_max = jnp.where(bounded, 1.0, 1e10).astype(dtype)
        pnorm = jnp.linalg.norm(p)
        alpha0 = jnp.where(state.count == 0,
                           jnp.minimum(1.0 / jnp.maximum(pnorm, jnp.finfo(dtype).tiny), alpha_max),
                           1.0).astype(dtype)
        ls = wolfe_line_search(value_and_grad, x, state.f, g, p, alpha0, alpha_max,
                               c1=1e-3, c2=0.9, maxls=self.maxls,
                               project=lambda z: jnp.clip(z, lb, ub))
        ok = ls.success
        s = ls.x - x
        y = ls.g - g
        sy = jnp.vdot(s, y)
        store = ok & (sy > jnp.finfo(dtype).eps * (-jnp.vdot(g, s)))
        m = self.maxcor
        s_mem = jnp.where(store, state.s_mem.at[state.head].set(s), state.s_mem)
        y_mem = jnp.where(store, state.y_mem.at[state.head].set(y), state.y_mem)
        head = jnp.where(store, (state.head + 1) % m, state.head)
        count = jnp.where(store, jnp.minimum(state.count + 1, m), state.count)
        gamma = jnp.where(store, sy / jnp.where(store, jnp.vdot(y, y), 1.0), state.gamma)
        # A failed search with a non-empty memory: forget the memory and try again.
        reset = (~ok) & (state.count > 0)
        count = jnp.where(reset, 0, count)
        gamma = jnp.where(reset, 1.0, gamma).astype(dtype)
        return LBFGSBState(
            x=jnp.where(ok, ls.x, x), f=jnp.where(ok, ls.f, state.f),
            g=jnp.where(ok, ls.g, g), f_prev=state.f,
            s_mem=s_mem, y_mem=y_mem, count=count, head=head, gamma=gamma,
            nit=state.nit + ok.astype(jnp.int32), nfev=state.nfev + ls.nfev,
            moved=ok, ls_failed=(~ok) & (state.count == 0), status=state.status,
        )

    def terminate(self, state: LBFGSBState, lb, ub) -> jnp.ndarray:
        pg_norm = jnp.max(jnp.abs(projected_gradient(state.x, state.g, lb, ub)), initial=0.0)
        rel_red = (state.f_prev - state.f) / jnp.maximum(
            jnp.maximum(jnp.abs(state.f_prev), jnp.abs(state.f)), 1.0)
        return first_status(
            (~all_finite(state.f, state.g), Status.NONFINITE),
            (pg_norm <= self.gtol, Status.GTOL),
            (state.moved & (rel_red <= self.ftol), Status.FTOL),
            (state.ls_failed, Status.LINE_SEARCH),
            (state.nit >= self.maxiter, Status.MAX_ITER),
            (state.nfev >= self.maxfun, Status.MAX_FEV),
        )

    def run(self, value_and_grad: Callable, x0, lb, ub, callback: Optional[Callable] = None):
        """Minimise from ``x0 (n,)`` within ``lb <= x <= ub`` ((n,) arrays, +-inf allowed)."""
        lb = jnp.broadcast_to(jnp.asarray(lb, x0.dtype), x0.shape)
        ub = jnp.broadcast_to(jnp.asarray(ub, x0.dtype), x0.shape)
        state = self.init(value_and_grad, x0, lb, ub)

        def body(state):
            state = self.step(value_and_grad, state, lb, ub)
            if callback is not None:
                callback(state.x, state.f, state.g, state.nit)
            return state._replace(status=self.terminate(state, lb, ub))

        return lax.while_loop(lambda s: s.status == RUNNING, body, state)


# --------------------------------------------------------------------------------------
# BFGS
# --------------------------------------------------------------------------------------


class BFGSState(NamedTuple):
    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    f_prev: jnp.ndarray
    hess_inv: jnp.ndarray   # (n, n)
    fresh: jnp.ndarray      # hess_inv is the identity (no update since the last reset)
    step_norm: jnp.ndarray
    nit: jnp.ndarray
    nfev: jnp.ndarray
    ls_failed: jnp.ndarray
    status: jnp.ndarray


class BFGS(eqx.Module):
    """Dense BFGS on the inverse Hessian with a strong-Wolfe line search (scipy ``'BFGS'``).

    Settings: ``gtol`` on ``norm(g, ord=norm)`` (1e-5, ``norm=inf``), ``maxiter``
    (None -> 200 n), ``xrtol`` relative step test (0: off), ``c1``/``c2`` Wolfe constants
    (1e-4, 0.9), ``maxls`` line-search evaluations (30). A failed line search first resets
    the inverse Hessian to the identity; a second failure stops with ``LINE_SEARCH``.
    """

    gtol: float = 1e-5
    norm: float = float("inf")
    maxiter: Optional[int] = None
    xrtol: float = 0.0
    c1: float = 1e-4
    c2: float = 0.9
    maxls: int = 30

    def _gnorm(self, g):
        if self.norm == float("inf"):
            return jnp.max(jnp.abs(g), initial=0.0)
        if self.norm == -float("inf"):
            return jnp.min(jnp.abs(g), initial=0.0)
        return jnp.sum(jnp.abs(g) ** self.norm) ** (1.0 / self.norm)

    def _maxiter(self, n):
        return 200 * n if self.maxiter is None else self.maxiter

    def init(self, value_and_grad, x0, hess_inv0=None) -> BFGSState:
        f, g = value_and_grad(x0)
        n = x0.shape[0]
        eye = jnp.eye(n, dtype=x0.dtype)
        h0 = eye if hess_inv0 is None else jnp.asarray(hess_inv0, x0.dtype)
        status = first_status(
            (~all_finite(f, g), Status.NONFINITE),
            (self._gnorm(g) <= self.gtol, Status.GTOL),
            (jnp.asarray(self._maxiter(n) <= 0), Status.MAX_ITER),
        )
        return BFGSState(x=x0, f=f, g=g, f_prev=f + 0.5 * jnp.linalg.norm(g), hess_inv=h0,
                         fresh=jnp.asarray(hess_inv0 is None), step_norm=jnp.zeros((), x0.dtype),
                         nit=jnp.zeros((), jnp.int32), nfev=jnp.ones((), jnp.int32),
                         ls_failed=jnp.asarray(False), status=status)

    def step(self, value_and_grad, state: BFGSState) -> BFGSState:
        x, g, H = state.x, state.g, state.hess_inv
        n = x.shape[0]
        dtype = x.dtype
        eye = jnp.eye(n, dtype=dtype)
        p = -H @ g
        dphi0 = jnp.vdot(g, p)
        bad = ~(dphi0 < 0) | ~all_finite(p)
        H = jnp.where(bad, eye, H)
        p = jnp.where(bad, -g, p)
        dphi0 = jnp.vdot(g, p)
        # scipy's first trial step: 1.01 * 2 (f - f_prev) / phi'(0), capped at 1
        guess = 1.01 * 2.0 * (state.f - state.f_prev) / dphi0
        alpha0 = jnp.where(jnp.isfinite(guess) & (guess > 0), jnp.minimum(1.0, guess), 1.0)
        ls = wolfe_line_search(value_and_grad, x, state.f, g, p, alpha0.astype(dtype), 1e10,
                               c1=self.c1, c2=self.c2, maxls=self.maxls)
        ok = ls.success
        s = ls.x - x
        y = ls.g - g
        sy = jnp.vdot(s, y)
        update = ok & (sy > 0) & jnp.isfinite(sy)
        rho = 1.0 / jnp.where(update, sy, 1.0)
        A = eye - rho * jnp.outer(s, y)
        H_new = A @ H @ A.T + rho * jnp.outer(s, s)
        H_new = jnp.where(update, H_new, H)
        fresh = bad | state.fresh
        # failure with a used hess_inv: reset it and try again from the same point
        retry = (~ok) & (~fresh)
        H_new = jnp.where(retry, eye, H_new)
        return BFGSState(
            x=jnp.where(ok, ls.x, x), f=jnp.where(ok, ls.f, state.f), g=jnp.where(ok, ls.g, g),
            f_prev=jnp.where(ok, state.f, state.f_prev), hess_inv=H_new,
            fresh=jnp.where(ok, (~update) & fresh, True),
            step_norm=jnp.where(ok, jnp.linalg.norm(s), jnp.inf),
            nit=state.nit + ok.astype(jnp.int32), nfev=state.nfev + ls.nfev,
            ls_failed=(~ok) & fresh, status=state.status)

    def terminate(self, state: BFGSState) -> jnp.ndarray:
        n = state.x.shape[0]
        return first_status(
            (~all_finite(state.f, state.g), Status.NONFINITE),
            (self._gnorm(state.g) <= self.gtol, Status.GTOL),
            (jnp.asarray(self.xrtol > 0)
             & (state.step_norm <= self.xrtol * (self.xrtol + jnp.linalg.norm(state.x))),
             Status.XTOL),
            (state.ls_failed, Status.LINE_SEARCH),
            (state.nit >= self._maxiter(n), Status.MAX_ITER),
        )

    def run(self, value_and_grad, x0, callback=None, hess_inv0=None):
        state = self.init(value_and_grad, x0, hess_inv0)

        def body(state):
            state = self.step(value_and_grad, state)
            if callback is not None:
                callback(state.x, state.f, state.g, state.nit)
            return state._replace(status=self.terminate(state))

        return lax.while_loop(lambda s: s.status == RUNNING, body, state)
