"""``minimize_scalar``: Brent, bounded Brent (fminbound) and golden section, scipy-shaped.

All three run as ``lax.while_loop``s over scalars, so they jit and vmap (e.g. one 1-D
minimisation per cell). The algorithms and their defaults are scipy's:

* ``'brent'`` (default without bounds): expand a bracket from ``bracket`` (default
  ``(0, 1)``) by golden steps with parabolic extrapolation (growth limit 110), then Brent's
  parabolic / golden-section method; ``xtol`` relative (1.48e-8) plus an absolute 1e-11.
* ``'bounded'`` (default with ``bounds``): Brent's method restricted to ``[a, b]``, started
  at the golden point, stopping when the bracket is below ``xatol`` (1e-5) plus a relative
  ``sqrt(2.2e-16) |x|``.
* ``'golden'``: golden-section search after the same bracketing, ``xtol`` 1.49e-8.

``status`` is ``XTOL`` on convergence, ``MAX_ITER`` / ``MAX_FEV`` when the budget ran out
(also when no bracket was found) and ``NONFINITE`` on NaN.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from jax import lax

from jaxinfer.optimize.result import OptimizeResult, Status

_GOLD = 1.618034          # golden-ratio growth for bracketing
_CG = 0.3819660           # golden section fraction for Brent
_MINTOL = 1.0e-11
_SQRT_EPS = math.sqrt(2.2e-16)
_GOLDEN_MEAN = 0.5 * (3.0 - math.sqrt(5.0))

_SCALAR_OPTIONS = {
    "brent": {"xtol": 1.48e-8, "maxiter": 500},
    "bounded": {"xatol": 1e-5, "maxiter": 500},
    "golden": {"xtol": 1.4901161193847656e-08, "maxiter": 5000},
}
_SCALAR_IGNORED = {"disp"}


def _float_dtype():
    return jnp.result_type(float)


def find_bracket(fun: Callable, xa=0.0, xb=1.0, grow_limit: float = 110.0, maxiter: int = 1000):
    """Find ``xa, xb, xc`` with ``f(xb) < f(xa), f(xc)`` by downhill expansion (scipy's rules).

    Returns ``(xa, xb, xc, fa, fb, fc, nfev, found)``; ``found`` is a bool array.
    """
    dtype = jnp.result_type(jnp.asarray(xa).dtype, jnp.asarray(xb).dtype, _float_dtype())
    xa = jnp.asarray(xa, dtype)
    xb = jnp.asarray(xb, dtype)
    fa = fun(xa)
    fb = fun(xb)
    swap = fa < fb
    xa, xb = jnp.where(swap, xb, xa), jnp.where(swap, xa, xb)
    fa, fb = jnp.where(swap, fb, fa), jnp.where(swap, fa, fb)
    xc = xb + _GOLD * (xb - xa)
    fc = fun(xc)
    tiny = 1e-21

    def cond(s):
        xa, xb, xc, fa, fb, fc, nfev, it, stop = s
        return (fc < fb) & (~stop) & (it <= maxiter)

    def body(s):
        xa, xb, xc, fa, fb, fc, nfev, it, _ = s
        tmp1 = (xb - xa) * (fb - fc)
        tmp2 = (xb - xc) * (fb - fa)
        val = tmp2 - tmp1
        denom = jnp.where(jnp.abs(val) < tiny, 2.0 * tiny, 2.0 * val)
        w = xb - ((xb - xc) * tmp2 - (xb - xa) * tmp1) / denom
        wlim = xb + grow_limit * (xc - xb)
        between = (w - xc) * (xb - w) > 0.0
        beyond_lim = (~between) & ((w - wlim) * (wlim - xc) >= 0.0)
        inside_lim = (~between) & (~beyond_lim) & ((w - wlim) * (xc - w) > 0.0)
        default = (~between) & (~beyond_lim) & (~inside_lim)
        w1 = jnp.where(beyond_lim, wlim, jnp.where(default, xc + _GOLD * (xc - xb), w))
        fw1 = fun(w1)
        # case "between": a minimum between xb and xc, or between xa and w
        stop_a = between & (fw1 < fc)
        stop_b = between & (~stop_a) & (fw1 > fb)
        between_more = between & (~stop_a) & (~stop_b)
        inside_better = inside_lim & (fw1 < fc)
        # second evaluation when needed
        xb2 = jnp.where(inside_better, xc, xb)
        xc2 = jnp.where(inside_better, w1, xc)
        fb2 = jnp.where(inside_better, fc, fb)
        fc2 = jnp.where(inside_better, fw1, fc)
        need2 = between_more | inside_better
        w2 = xc2 + _GOLD * (xc2 - xb2)
        fw2 = lax.cond(need2, lambda: fun(w2), lambda: jnp.asarray(jnp.nan, fw1.dtype))
        w_fin = jnp.where(need2, w2, w1)
        fw_fin = jnp.where(need2, fw2, fw1)
        # shift (xa, xb, xc) <- (xb, xc, w)
        sh = (xb2, xc2, w_fin, fb2, fc2, fw_fin)
        out_a = (xb, w1, xc, fb, fw1, fc)        # stop_a: (xb, w, xc)
        out_b = (xa, xb, w1, fa, fb, fw1)        # stop_b: (xa, xb, w)
        pick = lambda a, b, c: jnp.where(stop_a, a, jnp.where(stop_b, b, c))  # noqa: E731
        new = tuple(pick(a, b, c) for a, b, c in zip(out_a, out_b, sh))
        nfev_new = nfev + 1 + need2.astype(jnp.int32)
        return (*new, nfev_new, it + 1, stop_a | stop_b)

    s = (xa, xb, xc, fa, fb, fc, jnp.asarray(3, jnp.int32), jnp.asarray(0, jnp.int32),
         jnp.asarray(False))
    xa, xb, xc, fa, fb, fc, nfev, it, _ = lax.while_loop(cond, body, s)
    found = (((fb < fc) & (fb <= fa)) | ((fb < fa) & (fb <= fc))) & (
        ((xa < xb) & (xb < xc)) | ((xc < xb) & (xb < xa))) & jnp.isfinite(xa) & jnp.isfinite(
        xb) & jnp.isfinite(xc)
    return xa, xb, xc, fa, fb, fc, nfev, found


def _brent(fun, xa, xb, xc, fb, xtol, maxiter):
    x = w = v = xb
    fx = fw = fv = fb
    a = jnp.minimum(xa, xc)
    b = jnp.maximum(xa, xc)
    zero = jnp.zeros_like(xb)

    def converged(s):
        a, b, x, w, v, fx, fw, fv, deltax, rat, it, nfev = s
        tol1 = xtol * jnp.abs(x) + _MINTOL
        tol2 = 2.0 * tol1
        xmid = 0.5 * (a + b)
        return jnp.abs(x - xmid) < (tol2 - 0.5 * (b - a))

    def cond(s):
        return (~converged(s)) & (s[10] < maxiter) & jnp.isfinite(s[5])

    def body(s):
        a, b, x, w, v, fx, fw, fv, deltax, rat, it, nfev = s
        tol1 = xtol * jnp.abs(x) + _MINTOL
        tol2 = 2.0 * tol1
        xmid = 0.5 * (a + b)
        golden_delta = jnp.where(x >= xmid, a - x, b - x)
        # parabolic candidate
        tmp1 = (x - w) * (fx - fv)
        tmp2 = (x - v) * (fx - fw)
        p = (x - v) * tmp2 - (x - w) * tmp1
        tmp2 = 2.0 * (tmp2 - tmp1)
        p = jnp.where(tmp2 > 0.0, -p, p)
        tmp2 = jnp.abs(tmp2)
        try_parabola = jnp.abs(deltax) > tol1
        parabola_ok = try_parabola & (p > tmp2 * (a - x)) & (p < tmp2 * (b - x)) & (
            jnp.abs(p) < jnp.abs(0.5 * tmp2 * deltax))
        rat_par = p / jnp.where(tmp2 == 0, 1.0, tmp2)
        u_par = x + rat_par
        rat_par = jnp.where((u_par - a < tol2) | (b - u_par < tol2),
                            jnp.where(xmid - x >= 0, tol1, -tol1), rat_par)
        new_deltax = jnp.where(parabola_ok, rat, golden_delta)
        new_rat = jnp.where(parabola_ok, rat_par, _CG * golden_delta)
        u = jnp.where(jnp.abs(new_rat) < tol1,
                      jnp.where(new_rat >= 0, x + tol1, x - tol1), x + new_rat)
        fu = fun(u)
        worse = fu > fx
        # fu > fx: shrink the bracket on u's side, maybe update w, v
        a_w = jnp.where(u < x, u, a)
        b_w = jnp.where(u < x, b, u)
        upd_w = worse & ((fu <= fw) | (w == x))
        upd_v = worse & (~upd_w) & ((fu <= fv) | (v == x) | (v == w))
        # fu <= fx: u is the new best
        a_b = jnp.where(u >= x, x, a)
        b_b = jnp.where(u >= x, b, x)
        na = jnp.where(worse, a_w, a_b)
        nb = jnp.where(worse, b_w, b_b)
        nv = jnp.where(worse, jnp.where(upd_w, w, jnp.where(upd_v, u, v)), w)
        nfv = jnp.where(worse, jnp.where(upd_w, fw, jnp.where(upd_v, fu, fv)), fw)
        nw = jnp.where(worse, jnp.where(upd_w, u, w), x)
        nfw = jnp.where(worse, jnp.where(upd_w, fu, fw), fx)
        nx = jnp.where(worse, x, u)
        nfx = jnp.where(worse, fx, fu)
        return (na, nb, nx, nw, nv, nfx, nfw, nfv, new_deltax, new_rat, it + 1, nfev + 1)

    s = (a, b, x, w, v, fx, fw, fv, zero, zero, jnp.asarray(0, jnp.int32),
         jnp.asarray(0, jnp.int32))
    s = lax.while_loop(cond, body, s)
    return s[2], s[5], s[10], s[11], converged(s)


def _golden(fun, xa, xb, xc, xtol, maxiter):
    gr = 0.61803399
    gc = 1.0 - gr
    x0, x3 = xa, xc
    long_right = jnp.abs(xc - xb) > jnp.abs(xb - xa)
    x1 = jnp.where(long_right, xb, xb - gc * (xb - xa))
    x2 = jnp.where(long_right, xb + gc * (xc - xb), xb)
    f1 = fun(x1)
    f2 = fun(x2)

    def converged(s):
        x0, x1, x2, x3, f1, f2, it = s
        return jnp.abs(x3 - x0) <= xtol * (jnp.abs(x1) + jnp.abs(x2))

    def cond(s):
        return (~converged(s)) & (s[6] < maxiter) & jnp.isfinite(s[4]) & jnp.isfinite(s[5])

    def body(s):
        x0, x1, x2, x3, f1, f2, it = s
        right = f2 < f1
        xn = jnp.where(right, gr * x2 + gc * x3, gr * x1 + gc * x0)
        fn = fun(xn)
        return (jnp.where(right, x1, x0), jnp.where(right, x2, xn), jnp.where(right, xn, x1),
                jnp.where(right, x3, x2), jnp.where(right, f2, fn), jnp.where(right, fn, f1),
                it + 1)

    s = lax.while_loop(cond, body, (x0, x1, x2, x3, f1, f2, jnp.asarray(0, jnp.int32)))
    x0, x1, x2, x3, f1, f2, it = s
    better1 = f1 < f2
    return (jnp.where(better1, x1, x2), jnp.where(better1, f1, f2), it, it + 2, converged(s))


def _bounded(fun, lo, hi, xatol, maxfun):
    a, b = lo, hi
    fulc = a + _GOLDEN_MEAN * (b - a)
    nfc = xf = fulc
    fx = fun(xf)
    ffulc = fnfc = fx
    zero = jnp.zeros_like(xf)

    def converged(s):
        a, b, xf, fx, nfc, fnfc, fulc, ffulc, e, rat, num = s
        xm = 0.5 * (a + b)
        tol1 = _SQRT_EPS * jnp.abs(xf) + xatol / 3.0
        return jnp.abs(xf - xm) <= (2.0 * tol1 - 0.5 * (b - a))

    def cond(s):
        return (~converged(s)) & (s[10] < maxfun) & jnp.isfinite(s[3])

    def body(s):
        a, b, xf, fx, nfc, fnfc, fulc, ffulc, e, rat, num = s
        xm = 0.5 * (a + b)
        tol1 = _SQRT_EPS * jnp.abs(xf) + xatol / 3.0
        tol2 = 2.0 * tol1
        try_parabola = jnp.abs(e) > tol1
        r = (xf - nfc) * (fx - ffulc)
        q = (xf - fulc) * (fx - fnfc)
        p = (xf - fulc) * q - (xf - nfc) * r
        q = 2.0 * (q - r)
        p = jnp.where(q > 0.0, -p, p)
        q = jnp.abs(q)
        r_old_e = e
        parabola_ok = try_parabola & (jnp.abs(p) < jnp.abs(0.5 * q * r_old_e)) & (
            p > q * (a - xf)) & (p < q * (b - xf))
        rat_par = p / jnp.where(q == 0, 1.0, q)
        x_par = xf + rat_par
        si_mid = jnp.sign(xm - xf) + ((xm - xf) == 0)
        rat_par = jnp.where(((x_par - a) < tol2) | ((b - x_par) < tol2), tol1 * si_mid, rat_par)
        golden = ~parabola_ok
        e_gold = jnp.where(xf >= xm, a - xf, b - xf)
        # e: on the parabolic branch e takes the previous rat (scipy's "e = rat")
        new_e = jnp.where(golden, e_gold, rat)
        new_rat = jnp.where(golden, _GOLDEN_MEAN * e_gold, rat_par)
        si = jnp.sign(new_rat) + (new_rat == 0)
        x = xf + si * jnp.maximum(jnp.abs(new_rat), tol1)
        fu = fun(x)
        better = fu <= fx
        # fu <= fx
        a_b = jnp.where(x >= xf, xf, a)
        b_b = jnp.where(x >= xf, b, xf)
        # fu > fx
        a_w = jnp.where(x < xf, x, a)
        b_w = jnp.where(x < xf, b, x)
        upd_nfc = (fu <= fnfc) | (nfc == xf)
        upd_fulc = (~upd_nfc) & ((fu <= ffulc) | (fulc == xf) | (fulc == nfc))
        n_fulc = jnp.where(better, nfc, jnp.where(upd_nfc, nfc, jnp.where(upd_fulc, x, fulc)))
        n_ffulc = jnp.where(better, fnfc,
                            jnp.where(upd_nfc, fnfc, jnp.where(upd_fulc, fu, ffulc)))
        n_nfc = jnp.where(better, xf, jnp.where(upd_nfc, x, nfc))
        n_fnfc = jnp.where(better, fx, jnp.where(upd_nfc, fu, fnfc))
        n_xf = jnp.where(better, x, xf)
        n_fx = jnp.where(better, fu, fx)
        return (jnp.where(better, a_b, a_w), jnp.where(better, b_b, b_w), n_xf, n_fx, n_nfc,
                n_fnfc, n_fulc, n_ffulc, new_e, new_rat, num + 1)

    s = (a, b, xf, fx, nfc, fnfc, fulc, ffulc, zero, zero, jnp.asarray(1, jnp.int32))
    s = lax.while_loop(cond, body, s)
    return s[2], s[3], s[10], converged(s)


def minimize_scalar(fun: Callable, bracket=None, bounds=None, args=(), method: Optional[str] = None,
                    tol=None, options: Optional[dict] = None) -> OptimizeResult:
    """Minimise ``fun(x, *args)`` of one scalar variable, with scipy's signature.

    Parameters
    ----------
    fun : JAX-traceable ``fun(x, *args) -> scalar``.
    bracket : ``(xa, xb)`` to start the downhill bracket search, or ``(xa, xb, xc)`` with
        ``f(xb) < f(xa), f(xc)``; 'brent' and 'golden' only (default ``(0, 1)``).
    bounds : ``(a, b)`` finite, for ``method='bounded'`` (the default when given).
    method : 'brent' (default), 'bounded' or 'golden'; case-insensitive.
    tol : sets ``xtol`` ('brent', 'golden') or ``xatol`` ('bounded').
    options : 'brent': ``xtol`` (1.48e-8), ``maxiter`` (500); 'bounded': ``xatol`` (1e-5),
        ``maxiter`` (500 function evaluations); 'golden': ``xtol`` (1.49e-8), ``maxiter``
        (5000); ``disp`` is ignored. Unknown names raise ValueError.

    Returns
    -------
    OptimizeResult with scalar ``x`` and ``fun``; ``jac`` is NaN (not computed); ``status``
    XTOL when converged.
    """
    if not callable(fun):
        raise TypeError("fun must be callable")
    if method is None:
        method = "brent" if bounds is None else "bounded"
    if not isinstance(method, str) or method.lower() not in _SCALAR_OPTIONS:
        raise ValueError(f"Unknown method {method!r} for minimize_scalar; valid: "
                         "'brent', 'bounded', 'golden'")
    method = method.lower()
    if not isinstance(args, tuple):
        args = (args,)
    options = {} if options is None else dict(options)
    defaults = _SCALAR_OPTIONS[method]
    unknown = sorted(k for k in options if k not in defaults and k not in _SCALAR_IGNORED)
    if unknown:
        raise ValueError(f"Unknown option(s) {unknown} for method {method!r}; accepted: "
                         f"{sorted(defaults)}")
    opts = dict(defaults)
    if tol is not None:
        opts["xatol" if method == "bounded" else "xtol"] = float(tol)
    opts.update({k: v for k, v in options.items() if k not in _SCALAR_IGNORED})
    if method == "bounded" and bounds is None:
        raise ValueError("method='bounded' needs bounds=(a, b)")
    if method != "bounded" and bounds is not None:
        raise ValueError(f"bounds are only used by method='bounded', not {method!r}")
    if method == "bounded":
        if len(bounds) != 2:
            raise ValueError("bounds must have two elements (a, b)")
        ends = tuple(bounds)
        if not any(isinstance(v, jax.core.Tracer) for v in ends):
            lo, hi = (float(v) for v in ends)
            if not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError("bounds must be finite scalars")
            if lo > hi:
                raise ValueError(f"the lower bound exceeds the upper bound ({lo} > {hi})")
    else:
        if bracket is None:
            bracket = (0.0, 1.0)
        if len(bracket) not in (2, 3):
            raise ValueError("bracket must be a sequence of 2 or 3 numbers")
        ends = tuple(bracket)
        if len(ends) == 3 and not any(isinstance(v, jax.core.Tracer) for v in ends):
            xa, xb, xc = sorted((float(ends[0]), float(ends[2])))[0], float(ends[1]), max(
                float(ends[0]), float(ends[2]))
            values = [float(fun(v, *args)) for v in (xa, xb, xc)]
            if not (xa < xb < xc and values[1] < values[0] and values[1] < values[2]):
                raise ValueError("bracket (xa, xb, xc) must satisfy xa < xb < xc and "
                                 "f(xb) < f(xa), f(xc)")
    from jaxinfer.optimize.minimize import _split_args
    arg_static, arg_dynamic = _split_args(args)
    static = (method, tuple(sorted(opts.items())), fun, arg_static, len(ends))
    ends = tuple(jnp.asarray(v, _float_dtype()) for v in ends)
    try:
        hash(static)
    except TypeError:
        return _scalar_solve(static, ends, arg_dynamic)
    return _scalar_cached(static, ends, arg_dynamic)


def _scalar_solve(static, ends, arg_dynamic) -> OptimizeResult:
    from jaxinfer.optimize.minimize import _join_args
    method, opts, fun, arg_static, _ = static
    opts = dict(opts)
    args = _join_args(arg_static, arg_dynamic)
    dtype = _float_dtype()

    def f(x):
        val = jnp.asarray(fun(x, *args))
        if val.size != 1:
            raise ValueError(f"fun must return a scalar, got shape {val.shape}")
        return jnp.reshape(val, ()).astype(dtype)

    if method == "bounded":
        lo, hi = ends
        x, fx, nfev, conv = _bounded(f, lo, hi, opts["xatol"], int(opts["maxiter"]))
        status = jnp.where(~(jnp.isfinite(fx) & jnp.isfinite(x)), jnp.int32(Status.NONFINITE),
                           jnp.where(conv, jnp.int32(Status.XTOL), jnp.int32(Status.MAX_FEV)))
        return OptimizeResult(x=x, fun=fx, jac=jnp.asarray(jnp.nan, dtype), status=status,
                              nit=nfev, nfev=nfev, njev=jnp.asarray(0, jnp.int32))

    if len(ends) == 2:
        xa, xb, xc, fa, fb, fc, nfev0, found = find_bracket(f, ends[0], ends[1])
    else:
        xa, xb, xc = ends
        xa, xc = jnp.minimum(xa, xc), jnp.maximum(xa, xc)
        fa, fb, fc = f(xa), f(xb), f(xc)
        nfev0 = jnp.asarray(3, jnp.int32)
        found = (xa < xb) & (xb < xc) & (fb < fa) & (fb < fc)
    if method == "brent":
        x, fx, nit, nfev, conv = _brent(f, xa, xb, xc, fb, opts["xtol"], int(opts["maxiter"]))
    else:
        x, fx, nit, nfev, conv = _golden(f, xa, xb, xc, opts["xtol"], int(opts["maxiter"]))
    status = jnp.where(~(jnp.isfinite(fx) & jnp.isfinite(x)), jnp.int32(Status.NONFINITE),
                       jnp.where(conv & found, jnp.int32(Status.XTOL), jnp.int32(Status.MAX_ITER)))
    return OptimizeResult(x=x, fun=fx, jac=jnp.asarray(jnp.nan, dtype), status=status,
                          nit=nit, nfev=nfev + nfev0, njev=jnp.asarray(0, jnp.int32))


_scalar_cached = jax.jit(_scalar_solve, static_argnums=0)


__all__ = ["minimize_scalar", "find_bracket"]
