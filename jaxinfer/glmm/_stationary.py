"""Polish a scalar minimiser by finding the root of the derivative (jit / vmap friendly).

A value-only search (bracketing + Brent) can locate a minimum only as finely as the objective
can be resolved: near the minimum ``f(x) ≈ f* + ½h(x - x*)²``, so rounding noise ``ε|f|`` in
``f`` hides ``x`` within ``sqrt(2ε|f|/h)``. In float32 with ``|f| ~ 10³`` that is ~1e-2 in
logit(δ), far too coarse. The derivative ``g = f'`` (autodiff) carries no such large constant,
so its sign is reliable much closer to ``x*``.

:func:`polish_minimum` takes the value search's answer ``x0``, brackets a sign change of ``g``
(``g(lo) < 0 < g(hi)``) in ``[x0 - w, x0 + w]`` with ``w`` growing 4× from ``width`` (at most
``max_widen`` times, never past the domain ``[lower, upper]``), then runs a bracketed secant
(Illinois variant of regula falsi) until the bracket is narrower than
``xtol·(1 + |x|)``. If no sign change is found (the minimum sits on a bound of the domain, or
``g`` is not finite), ``x0`` is returned unchanged with ``polished=False``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class PolishResult(NamedTuple):
    """x: the polished minimiser; polished: a derivative root was bracketed and refined;
    converged: the bracket shrank below tolerance; nfev: derivative evaluations."""

    x: jnp.ndarray
    polished: jnp.ndarray
    converged: jnp.ndarray
    nfev: jnp.ndarray


def polish_minimum(fun: Callable, x0, lower, upper, *, width, xtol, max_widen: int = 8,
                   maxiter: int = 60) -> PolishResult:
    """Root of ``fun'`` near ``x0`` inside ``[lower, upper]`` (scalars; ``fun`` traceable)."""
    grad = jax.grad(fun)
    x0 = jnp.asarray(x0)
    dtype = x0.dtype
    lower = jnp.asarray(lower, dtype)
    upper = jnp.asarray(upper, dtype)
    width = jnp.asarray(width, dtype)
    xtol = jnp.asarray(xtol, dtype)

    # ---- bracket a sign change of the derivative ---------------------------------------
    def ends(w):
        lo = jnp.maximum(x0 - w, lower)
        hi = jnp.minimum(x0 + w, upper)
        return lo, hi, grad(lo), grad(hi)

    def bracketed(glo, ghi):
        return (glo < 0) & (ghi > 0)

    def widen_cond(state):
        w, lo, hi, glo, ghi, k = state
        at_domain = (lo <= lower) & (hi >= upper)
        return (~bracketed(glo, ghi)) & (k < max_widen) & ~at_domain & jnp.isfinite(glo + ghi)

    def widen_body(state):
        w, *_, k = state
        w = 4 * w
        return (w, *ends(w), k + 1)

    w, lo, hi, glo, ghi, nwiden = lax.while_loop(
        widen_cond, widen_body, (width, *ends(width), jnp.zeros((), jnp.int32)))
    found = bracketed(glo, ghi)

    # ---- Illinois regula falsi on the bracket -------------------------------------------
    def small(lo, hi):
        mid = 0.5 * (lo + hi)
        return (hi - lo) <= xtol * (1 + jnp.abs(mid))

    def cond(state):
        lo, hi, glo, ghi, side, k, done = state
        return (~done) & (k < maxiter)

    def body(state):
        lo, hi, glo, ghi, side, k, _ = state
        x = (lo * ghi - hi * glo) / (ghi - glo)
        # keep the secant point strictly inside; fall back to bisection when it is not
        inside = (x > lo) & (x < hi) & jnp.isfinite(x)
        x = jnp.where(inside, x, 0.5 * (lo + hi))
        gx = grad(x)
        right = gx > 0   # the root is left of x: x becomes hi
        # Illinois: halve the stale end's derivative when the same end is kept twice
        new_glo = jnp.where(right & (side == 1), 0.5 * glo, glo)
        new_ghi = jnp.where(~right & (side == -1), 0.5 * ghi, ghi)
        lo2 = jnp.where(right, lo, x)
        hi2 = jnp.where(right, x, hi)
        glo2 = jnp.where(right, new_glo, gx)
        ghi2 = jnp.where(right, gx, new_ghi)
        side2 = jnp.where(right, 1, -1).astype(jnp.int32)
        done = small(lo2, hi2) | (gx == 0) | ~jnp.isfinite(gx)
        lo2 = jnp.where(gx == 0, x, lo2)
        hi2 = jnp.where(gx == 0, x, hi2)
        return lo2, hi2, glo2, ghi2, side2, k + 1, done

    init = (lo, hi, glo, ghi, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32),
            (~found) | small(lo, hi))
    lo, hi, glo, ghi, _, nit, _ = lax.while_loop(cond, body, init)
    x = 0.5 * (lo + hi)
    converged = found & small(lo, hi)
    x = jnp.where(found, x, x0)
    nfev = 2 * (1 + nwiden) + nit
    return PolishResult(x=x, polished=found, converged=converged, nfev=nfev)
