"""Line-search Newton-CG (scipy's ``'Newton-CG'``) with autodiff Hessian-vector products.

Each iteration solves ``H p = -g`` approximately by conjugate gradients (truncated at the
residual ``min(0.5, sqrt(|g|_1)) |g|_1`` in the 1-norm, or at negative curvature, as scipy
does), then takes a strong-Wolfe line search along ``p``. Hessian-vector products come from
forward-over-reverse autodiff (``jax.linearize`` of the gradient, so one linearisation per
iteration serves all CG steps), or from the user's ``hessp`` / ``hess``.

Stopping: ``sum |alpha p| <= n * xtol`` (scipy's ``xtol`` test, status ``XTOL``), or
``max |g| <= gtol`` when ``gtol > 0`` (``GTOL``); ``maxiter`` (default ``200 n``) ->
``MAX_ITER``; a failed line search -> ``LINE_SEARCH``.

:class:`NewtonCG` is a solver of the one shape (``init / step / terminate / postprocess``
over :class:`NewtonCGState`, run by :func:`~jaxinfer.optimize._iterate.iterate`) on a flat
vector and ``fn(x, args) -> (f, g)``; one ``step`` is one Newton iteration (the truncated CG
solve and the line search inside it).
"""

from __future__ import annotations

from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxinfer.optimize._iterate import AbstractSolver, Progress, all_finite, first_status
from jaxinfer.optimize.line_search import wolfe_line_search
from jaxinfer.optimize.result import OptimizeResult, Status


def make_hvp(fun, args, unravel, x0_flat, hess=None, hessp=None):
    """The user's second derivatives as ``linearize(x, args) -> (v -> H(x) v)`` on flat
    vectors, or None (autodiff) when neither is given.

    ``hessp(x, p, *args)`` takes and returns pytrees like ``x0``; ``hess(x, *args)`` returns
    the (n, n) Hessian over the flattened parameters. ``args`` here are the user's extra
    arguments (closed over); the solver's own ``args`` are ignored.
    """
    n = x0_flat.shape[0]
    dtype = x0_flat.dtype
    if hessp is not None:
        if not callable(hessp):
            raise TypeError("hessp must be callable")

        def linearize(x, _solver_args):
            xt = unravel(x)
            return lambda v: ravel_pytree(hessp(xt, unravel(v), *args))[0].astype(dtype)
        return linearize
    if hess is not None:
        if not callable(hess):
            raise TypeError("hess must be callable (finite-difference strategies are not used)")

        def linearize(x, _solver_args):
            H = jnp.reshape(jnp.asarray(hess(unravel(x), *args), dtype), (n, n))
            return lambda v: H @ v
        linearize.dense_hessian = True  # one evaluation of hess per iteration (scipy's nhev)
        return linearize
    return None


class NewtonCGState(eqx.Module):
    """Public state of :class:`NewtonCG` (flat vectors of length n).

    x, f, g : iterate, objective, gradient; update_l1 : ``sum |x_k - x_{k-1}|`` of the last
    step (inf before the first); nit, nfev, nhev : iterations, objective+gradient and
    Hessian evaluations (Hessian-vector products, or (n, n) Hessians when ``linearize`` has
    ``dense_hessian``: scipy's count); ls_failed : the last line search found no acceptable step.
    """

    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    update_l1: jnp.ndarray
    nit: jnp.ndarray
    nfev: jnp.ndarray
    nhev: jnp.ndarray
    ls_failed: jnp.ndarray


class NewtonCG(AbstractSolver):
    """Truncated-Newton (Newton-CG) with a strong-Wolfe line search.

    Settings: ``xtol`` (1e-5, average step per parameter), ``gtol`` (0: off), ``maxiter``
    (None -> 200 n), ``cg_maxiter`` (None -> 20 n), ``c1``/``c2`` (1e-4, 0.9),
    ``maxls`` (30), ``linearize``: None (autodiff: forward-over-reverse on ``fn``'s
    gradient) or ``linearize(x, args) -> (v -> H(x) v)`` (see :func:`make_hvp`).
    ``fn(x, args) -> (f scalar, g (n,))``.
    """

    xtol: float = 1e-5
    gtol: float = 0.0
    maxiter: Optional[int] = None
    cg_maxiter: Optional[int] = None
    c1: float = 1e-4
    c2: float = 0.9
    maxls: int = 30
    linearize: Optional[Callable] = eqx.field(static=True, default=None)

    def _maxiter(self, n):
        return 200 * n if self.maxiter is None else self.maxiter

    def _hvp(self, fn, x, args):
        if self.linearize is not None:
            return self.linearize(x, args)
        return jax.linearize(lambda z: fn(z, args)[1], x)[1]

    def init(self, fn, x0, args) -> NewtonCGState:
        f, g = fn(x0, args)
        return NewtonCGState(x=x0, f=f, g=g, update_l1=jnp.asarray(jnp.inf, x0.dtype),
                             nit=jnp.zeros((), jnp.int32), nfev=jnp.ones((), jnp.int32),
                             nhev=jnp.zeros((), jnp.int32), ls_failed=jnp.asarray(False))

    def _cg(self, hvp, g):
        """Approximately solve ``H p = -g``; returns ``(p, number of H products)``."""
        n = g.shape[0]
        dtype = g.dtype
        cg_maxiter = 20 * n if self.cg_maxiter is None else self.cg_maxiter
        maggrad = jnp.sum(jnp.abs(g))
        eta = jnp.minimum(0.5, jnp.sqrt(maggrad))
        termcond = eta * maggrad
        tiny = 3.0 * jnp.finfo(dtype).eps

        def cond(s):
            xs, r, p, rr, i, stop = s
            return (~stop) & (i < cg_maxiter) & (jnp.sum(jnp.abs(r)) > termcond)

        def body(s):
            xs, r, p, rr, i, stop = s
            Ap = hvp(p)
            curv = jnp.vdot(p, Ap)
            flat = (curv >= 0) & (curv <= tiny)
            negative = curv < 0
            # negative curvature on the first step: scaled steepest descent (scipy's rule)
            xs_neg = jnp.where(i == 0, (rr / jnp.where(negative, -curv, 1.0)) * (-g), xs)
            alpha = rr / jnp.where(flat | negative, 1.0, curv)
            xs_new = xs + alpha * p
            r_new = r + alpha * Ap
            rr_new = jnp.vdot(r_new, r_new)
            p_new = -r_new + (rr_new / jnp.where(rr == 0, 1.0, rr)) * p
            halt = flat | negative
            return (jnp.where(negative, xs_neg, jnp.where(flat, xs, xs_new)),
                    jnp.where(halt, r, r_new), jnp.where(halt, p, p_new),
                    jnp.where(halt, rr, rr_new), i + 1, halt)

        zeros = jnp.zeros_like(g)
        s = (zeros, g, -g, jnp.vdot(g, g), jnp.zeros((), jnp.int32), jnp.asarray(False))
        xs, _, _, _, i, _ = lax.while_loop(cond, body, s)
        return xs, i

    def step(self, fn, state: NewtonCGState, args) -> NewtonCGState:
        x, g = state.x, state.g
        dtype = x.dtype
        p, nh = self._cg(self._hvp(fn, x, args), g)
        if getattr(self.linearize, "dense_hessian", False):
            nh = jnp.ones((), jnp.int32)  # one (n, n) Hessian, not one per product
        # CG stopped before its first step (flat curvature) at a gradient at the rounding
        # level of f: a zero update, which passes any xtol >= 0 (scipy, gh-20214)
        eps = jnp.finfo(dtype).eps
        zero = (jnp.all(p == 0) & all_finite(g)
                & (jnp.max(jnp.abs(g)) <= eps * jnp.maximum(1.0, jnp.abs(state.f))))
        bad = ~(jnp.vdot(g, p) < 0) | ~all_finite(p)
        p = jnp.where(bad, -g, p)
        # the Newton step first (scipy guesses min(1, 2.02 (f - f_prev) / phi'(0)), which near
        # the optimum can start, and end, the search at a tiny step that passes xtol)
        ls = wolfe_line_search(lambda z: fn(z, args), x, state.f, g, p,
                               jnp.asarray(1.0, dtype), 1e10, c1=self.c1, c2=self.c2,
                               maxls=self.maxls)
        ok = ls.success
        update = ls.x - x
        # A full Newton step already below xtol: converged even if rounding leaves the line
        # search no decrease to find.
        step_l1 = jnp.sum(jnp.abs(p))
        small = zero | (step_l1 <= x.shape[0] * self.xtol)
        step_l1 = jnp.where(zero, 0.0, step_l1)
        ok = ok & ~zero
        return NewtonCGState(
            x=jnp.where(ok, ls.x, x), f=jnp.where(ok, ls.f, state.f), g=jnp.where(ok, ls.g, g),
            update_l1=jnp.where(ok, jnp.sum(jnp.abs(update)), jnp.where(small, step_l1, jnp.inf)),
            nit=state.nit + 1, nfev=state.nfev + ls.nfev, nhev=state.nhev + nh,
            ls_failed=(~ok) & (~small))

    def terminate(self, fn, state: NewtonCGState, args) -> jnp.ndarray:
        n = state.x.shape[0]
        return first_status(
            (~all_finite(state.f, state.g), Status.NONFINITE),
            (jnp.max(jnp.abs(state.g)) <= self.gtol, Status.GTOL),
            (state.update_l1 <= n * self.xtol, Status.XTOL),
            (state.ls_failed, Status.LINE_SEARCH),
            (state.nit >= self._maxiter(n), Status.MAX_ITER),
        )

    def postprocess(self, fn, state: NewtonCGState, args, status) -> OptimizeResult:
        return OptimizeResult(x=state.x, fun=state.f, jac=state.g, status=status,
                              nit=state.nit, nfev=state.nfev, njev=state.nfev,
                              extra={"nhev": state.nhev})

    def progress(self, state: NewtonCGState) -> Progress:
        return Progress(nit=state.nit, fun=state.f, x=state.x)
