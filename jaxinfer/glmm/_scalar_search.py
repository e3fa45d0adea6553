"""Bracketing followed by Brent's minimisation, as one ``lax`` program (jit / vmap friendly).

This is the scalar search glimix-core's LMM uses for logit(δ): start at x = clip(0, a, b), take
a second point 20·(rtol·|x| + atol) to the side with more room, walk downhill growing the step
by ``gfactor`` until f(x0) > f(x1) < f(x2) or a bound is hit, then run Brent's method
(parabolic steps with golden-section fallback) inside the bracket, stopping when
|x - m| ≤ 2·tol - (b - a)/2 with tol = rtol·|x| + atol.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

_GOLDEN = 0.3819660112501051  # (3 - sqrt(5)) / 2


class ScalarSearchResult(NamedTuple):
    """x: minimiser; fun: f(x); nfev: evaluations; converged: Brent's test passed (bool)."""

    x: jnp.ndarray
    fun: jnp.ndarray
    nfev: jnp.ndarray
    converged: jnp.ndarray


def _tol(x, rtol, atol):
    return jnp.abs(x) * rtol + atol


def bracket_brent_minimize(
    fun: Callable[[jnp.ndarray], jnp.ndarray],
    lower: float,
    upper: float,
    rtol: float = 1e-6,
    atol: float = 1e-6,
    gfactor: float = 2.0,
    maxiter: int = 500,
    dtype=None,
) -> ScalarSearchResult:
    """Minimise a scalar ``fun`` on [lower, upper] by bracketing from 0 then Brent.

    ``fun`` maps a scalar array to a scalar array and must be traceable.
    """
    dtype = dtype or jnp.result_type(float)
    a = jnp.asarray(lower, dtype)
    b = jnp.asarray(upper, dtype)
    rtol = jnp.asarray(rtol, dtype)
    atol = jnp.asarray(atol, dtype)

    # ---- initial pair ------------------------------------------------------------------
    x0 = jnp.clip(jnp.zeros((), dtype), a, b)
    step = 10 * gfactor * _tol(x0, rtol, atol)
    x1 = jnp.where(x0 - a > b - x0, jnp.maximum(x0 - step, a), jnp.minimum(x0 + step, b))
    f0 = fun(x0)
    f1 = fun(x1)
    swap = f0 < f1
    x0, x1 = jnp.where(swap, x1, x0), jnp.where(swap, x0, x1)
    f0, f1 = jnp.where(swap, f1, f0), jnp.where(swap, f0, f1)

    # ---- downhill walk: keep (x0, x1, x2) with f decreasing from x0 to x1 -------------------
    x2 = jnp.clip(x1 + (x1 - x0) * gfactor, a, b)
    f2 = fun(x2)

    def walk_cond(state):
        x0, x1, x2, f0, f1, f2, nit = state
        bracketed = (f0 > f1) & (f1 < f2)
        inside = (a < x2) & (x2 < b)
        return (~bracketed) & inside & (nit < maxiter) & (f1 != f2)

    def walk_body(state):
        x0, x1, x2, f0, f1, f2, nit = state
        xt = jnp.clip(x2 + gfactor * (x2 - x1), a, b)
        ft = fun(xt)
        return x1, x2, xt, f1, f2, ft, nit + 1

    x0, x1, x2, f0, f1, f2, nwalk = lax.while_loop(
        walk_cond, walk_body, (x0, x1, x2, f0, f1, f2, jnp.zeros((), jnp.int32))
    )
    # equal values: take the midpoint as the interior point
    equal = f1 == f2
    xm = 0.5 * (x1 + x2)
    fm = lax.cond(equal, fun, lambda x: f1, xm)
    x1, x2, f1, f2 = (jnp.where(equal, xm, x1), jnp.where(equal, x1, x2),
                      jnp.where(equal, fm, f1), jnp.where(equal, f1, f2))
    lo = jnp.minimum(x0, x2)
    hi = jnp.maximum(x0, x2)
    # Brent starts from the middle point of the bracket (as glimix-core / brent-search)
    nfev0 = 3 + nwalk + equal.astype(jnp.int32)
    return _brent(fun, lo, hi, x1, f1, rtol, atol, maxiter, nfev0)


class _BrentState(NamedTuple):
    a: jnp.ndarray
    b: jnp.ndarray
    x: jnp.ndarray   # best point
    w: jnp.ndarray   # second best
    v: jnp.ndarray   # previous w
    fx: jnp.ndarray
    fw: jnp.ndarray
    fv: jnp.ndarray
    d: jnp.ndarray   # last step
    e: jnp.ndarray   # step before last
    nit: jnp.ndarray
    nfev: jnp.ndarray
    done: jnp.ndarray


def _brent(fun, a, b, x, fx, rtol, atol, maxiter, nfev0):
    zero = jnp.zeros_like(x)

    def stop_test(s):
        m = 0.5 * (s.a + s.b)
        tol = _tol(s.x, rtol, atol)
        return jnp.abs(s.x - m) <= 2 * tol - 0.5 * (s.b - s.a)

    def cond(s):
        return (~s.done) & (s.nit < maxiter)

    def body(s):
        m = 0.5 * (s.a + s.b)
        tol = _tol(s.x, rtol, atol)
        tol2 = 2 * tol
        # parabola through (x, fx), (w, fw), (v, fv)
        try_parabola = tol < jnp.abs(s.e)
        r = (s.x - s.w) * (s.fx - s.fv)
        q = (s.x - s.v) * (s.fx - s.fw)
        p = (s.x - s.v) * q - (s.x - s.w) * r
        q = 2 * (q - r)
        p = jnp.where(q > 0, -p, p)
        q = jnp.abs(q)
        p = jnp.where(try_parabola, p, zero)
        q = jnp.where(try_parabola, q, zero)
        e_prev = jnp.where(try_parabola, s.e, zero)   # the step two iterations ago
        e = jnp.where(try_parabola, s.d, s.e)
        accept = (jnp.abs(p) < jnp.abs(0.5 * q * e_prev)) & (q * (s.a - s.x) < p) & (
            p < q * (s.b - s.x))
        d_par = p / jnp.where(q == 0, 1.0, q)
        u_par = s.x + d_par
        near_edge = ((u_par - s.a) < tol2) | ((s.b - u_par) < tol2)
        d_par = jnp.where(near_edge, jnp.where(s.x < m, tol, -tol), d_par)
        e_gold = jnp.where(s.x < m, s.b - s.x, s.a - s.x)
        d = jnp.where(accept, d_par, _GOLDEN * e_gold)
        e = jnp.where(accept, e, e_gold)
        u = jnp.where(tol <= jnp.abs(d), s.x + d, jnp.where(d > 0, s.x + tol, s.x - tol))
        fu = fun(u)

        better = fu <= s.fx
        # better: shrink towards u, shift the memory
        a_b = jnp.where(u < s.x, s.a, s.x)
        b_b = jnp.where(u < s.x, s.x, s.b)
        # worse: u becomes a bound
        a_w = jnp.where(u < s.x, u, s.a)
        b_w = jnp.where(u < s.x, s.b, u)
        second = (fu <= s.fw) | (s.w == s.x)
        third = (fu <= s.fv) | (s.v == s.x) | (s.v == s.w)
        w_w = jnp.where(second, u, s.w)
        fw_w = jnp.where(second, fu, s.fw)
        v_w = jnp.where(second, s.w, jnp.where(third, u, s.v))
        fv_w = jnp.where(second, s.fw, jnp.where(third, fu, s.fv))

        new = _BrentState(
            a=jnp.where(better, a_b, a_w),
            b=jnp.where(better, b_b, b_w),
            x=jnp.where(better, u, s.x),
            w=jnp.where(better, s.x, w_w),
            v=jnp.where(better, s.w, v_w),
            fx=jnp.where(better, fu, s.fx),
            fw=jnp.where(better, s.fx, fw_w),
            fv=jnp.where(better, s.fw, fv_w),
            d=d, e=e, nit=s.nit + 1, nfev=s.nfev + 1, done=s.done,
        )
        return new._replace(done=stop_test(new))

    init = _BrentState(a=a, b=b, x=x, w=x, v=x, fx=fx, fw=fx, fv=fx, d=zero, e=zero,
                       nit=jnp.zeros((), jnp.int32), nfev=jnp.asarray(nfev0, jnp.int32),
                       done=jnp.zeros((), bool))
    init = init._replace(done=stop_test(init))
    final = lax.while_loop(cond, body, init)
    return ScalarSearchResult(x=final.x, fun=final.fx, nfev=final.nfev, converged=final.done)
