"""Line-search Newton-CG (scipy's ``'Newton-CG'``) with autodiff Hessian-vector products.

Each iteration solves ``H p = -g`` approximately by conjugate gradients (truncated at the
residual ``min(0.5, sqrt(|g|_1)) |g|_1`` in the 1-norm, or at negative curvature, as scipy
does), then takes a strong-Wolfe line search along ``p``. Hessian-vector products come from
forward-over-reverse autodiff (``jax.linearize`` of the gradient, so one linearisation per
iteration serves all CG steps), or from the user's ``hessp`` / ``hess``.

Stopping: ``sum |alpha p| <= n * xtol`` (scipy's ``xtol`` test, status ``XTOL``), or
``max |g| <= gtol`` when ``gtol > 0`` (``GTOL``); ``maxiter`` (default ``200 n``) ->
``MAX_ITER``; a failed line search -> ``LINE_SEARCH``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxinfer.optimize._iterate import RUNNING, all_finite, first_status
from jaxinfer.optimize.line_search import wolfe_line_search
from jaxinfer.optimize.result import Status


def make_hvp(value_and_grad: Callable, fun, args, unravel, x0_flat, hess=None, hessp=None):
    """Return ``linearize(x) -> (v -> H(x) v)`` on flat vectors.

    ``hessp(x, p, *args)`` takes and returns pytrees like ``x0``; ``hess(x, *args)`` returns
    the (n, n) Hessian over the flattened parameters. Without either, autodiff is used.
    """
    n = x0_flat.shape[0]
    dtype = x0_flat.dtype
    if hessp is not None:
        if not callable(hessp):
            raise TypeError("hessp must be callable")

        def linearize(x):
            xt = unravel(x)
            return lambda v: ravel_pytree(hessp(xt, unravel(v), *args))[0].astype(dtype)
        return linearize
    if hess is not None:
        if not callable(hess):
            raise TypeError("hess must be callable (finite-difference strategies are not used)")

        def linearize(x):
            H = jnp.reshape(jnp.asarray(hess(unravel(x), *args), dtype), (n, n))
            return lambda v: H @ v
        return linearize

    def grad(x):
        return value_and_grad(x)[1]

    def linearize(x):
        return jax.linearize(grad, x)[1]
    return linearize


class NewtonCGState(NamedTuple):
    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    f_prev: jnp.ndarray
    update_l1: jnp.ndarray
    nit: jnp.ndarray
    nfev: jnp.ndarray
    nhev: jnp.ndarray
    ls_failed: jnp.ndarray
    status: jnp.ndarray


class NewtonCG(eqx.Module):
    """Truncated-Newton (Newton-CG) with a strong-Wolfe line search.

    Settings: ``xtol`` (1e-5, average step per parameter), ``gtol`` (0: off), ``maxiter``
    (None -> 200 n), ``cg_maxiter`` (None -> 20 n), ``c1``/``c2`` (1e-4, 0.9),
    ``maxls`` (30).
    """

    xtol: float = 1e-5
    gtol: float = 0.0
    maxiter: Optional[int] = None
    cg_maxiter: Optional[int] = None
    c1: float = 1e-4
    c2: float = 0.9
    maxls: int = 30

    def init(self, value_and_grad, x0) -> NewtonCGState:
        f, g = value_and_grad(x0)
        n = x0.shape[0]
        maxiter = 200 * n if self.maxiter is None else self.maxiter
        status = first_status(
            (~all_finite(f, g), Status.NONFINITE),
            (jnp.max(jnp.abs(g)) <= self.gtol, Status.GTOL),
            (jnp.asarray(maxiter <= 0), Status.MAX_ITER),
        )
        return NewtonCGState(x=x0, f=f, g=g, f_prev=f, update_l1=jnp.asarray(jnp.inf, x0.dtype),
                             nit=jnp.zeros((), jnp.int32), nfev=jnp.ones((), jnp.int32),
                             nhev=jnp.zeros((), jnp.int32), ls_failed=jnp.asarray(False),
                             status=status)

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

    def step(self, value_and_grad, linearize, state: NewtonCGState) -> NewtonCGState:
        x, g = state.x, state.g
        dtype = x.dtype
        hvp = linearize(x)
        p, nh = self._cg(hvp, g)
        bad = ~(jnp.vdot(g, p) < 0) | ~all_finite(p)
        p = jnp.where(bad, -g, p)
        ls = wolfe_line_search(value_and_grad, x, state.f, g, p, jnp.asarray(1.0, dtype), 1e10,
                               c1=self.c1, c2=self.c2, maxls=self.maxls)
        ok = ls.success
        update = ls.x - x
        # A full Newton step already below xtol: converged even if rounding leaves the line
        # search no decrease to find.
        step_l1 = jnp.sum(jnp.abs(p))
        small = step_l1 <= x.shape[0] * self.xtol
        return NewtonCGState(
            x=jnp.where(ok, ls.x, x), f=jnp.where(ok, ls.f, state.f), g=jnp.where(ok, ls.g, g),
            f_prev=state.f,
            update_l1=jnp.where(ok, jnp.sum(jnp.abs(update)), jnp.where(small, step_l1, jnp.inf)),
            nit=state.nit + 1, nfev=state.nfev + ls.nfev, nhev=state.nhev + nh,
            ls_failed=(~ok) & (~small), status=state.status)

    def terminate(self, state: NewtonCGState) -> jnp.ndarray:
        n = state.x.shape[0]
        maxiter = 200 * n if self.maxiter is None else self.maxiter
        return first_status(
            (~all_finite(state.f, state.g), Status.NONFINITE),
            (jnp.max(jnp.abs(state.g)) <= self.gtol, Status.GTOL),
            (state.update_l1 <= n * self.xtol, Status.XTOL),
            (state.ls_failed, Status.LINE_SEARCH),
            (state.nit >= maxiter, Status.MAX_ITER),
        )

    def run(self, value_and_grad, linearize, x0, callback=None):
        state = self.init(value_and_grad, x0)

        def body(state):
            state = self.step(value_and_grad, linearize, state)
            if callback is not None:
                callback(state.x, state.f, state.g, state.nit)
            return state._replace(status=self.terminate(state))

        return lax.while_loop(lambda s: s.status == RUNNING, body, state)
