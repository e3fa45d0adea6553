"""``minimize_scalar``: Brent, bounded Brent (fminbound), golden section (scipy's), and
glimix-core's bracket-then-Brent search, each a solver of the one shape.

Every method is a final :class:`~jaxinfer.optimize._iterate.AbstractSolver` over a public
state Module, run by :func:`~jaxinfer.optimize._iterate.iterate` in one ``lax.while_loop``
(so it jits and vmaps, e.g. one 1-D minimisation per cell or per SNP). Where a method first
has to find a bracket, the bracket search is a phase of the same loop: one expansion step
per iteration until bracketed, then one minimisation step per iteration. The objective is
``fn(x, args) -> scalar`` of a scalar ``x``.

* ``'brent'`` (:class:`Brent`, default without bounds): expand a bracket from ``bracket``
  (default ``(0, 1)``) by golden steps with parabolic extrapolation (growth limit 110), then
  Brent's parabolic / golden-section method; ``xtol`` relative (1.48e-8) plus an absolute
  1e-11 (in a lower precision: ``sqrt(eps)`` and ``eps`` of the dtype, so that float32
  searches can converge). scipy's algorithm and defaults: same iterates, same evaluation counts.
* ``'bounded'`` (:class:`BoundedBrent`, default with ``bounds``): Brent's method restricted
  to ``[a, b]``, started at the golden point, stopping when the bracket is below ``xatol``
  (1e-5) plus a relative ``sqrt(2.2e-16) |x|``.
* ``'golden'`` (:class:`Golden`): golden-section search after the same bracketing, ``xtol``
  1.49e-8.
* ``'bracket-brent'`` (:class:`BracketBrent`): glimix-core's search (the one its LMM uses
  for logit(delta)): start at ``x = clip(x0, a, b)`` (``x0`` default 0), take a second point
  ``20 (rtol |x| + atol)`` towards the side with more room, walk downhill growing the step
  by ``gfactor`` (2) until ``f(x0) > f(x1) < f(x2)`` or a bound is hit, then Brent's method
  inside the bracket, stopping when ``|x - m| <= 2 tol - (b - a) / 2`` with
  ``tol = rtol |x| + atol`` (both 1e-6 by default). ``bounds`` may be infinite here.

The solver Modules report a :class:`Status`: ``XTOL`` on convergence, ``MAX_ITER`` /
``MAX_FEV`` when the budget ran out (also when no bracket was found: then ``x`` is the best
point seen) and ``NONFINITE`` on NaN. The front door reports scipy's codes and messages for
scipy's three methods ('bounded': 0 "Solution found.", 1 "Maximum number of function calls
reached.", 2 "NaN result encountered."; 'brent' / 'golden': scipy's messages, with codes 0 /
1 / 2 in the same order) and keeps the :class:`Status` in ``res.reason``; 'bracket-brent'
reports the :class:`Status` itself.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from jaxinfer.optimize._compile import callback_key, is_traced, run_compiled
from jaxinfer.optimize._iterate import RUNNING, AbstractSolver, Progress, first_status, iterate
from jaxinfer.optimize.result import (OptimizeResult, OptimizeWarning, Status, convention_code,
                                      register_convention, to_host)

_GOLD = 1.618034          # golden-ratio growth for bracketing
_CG = 0.3819660           # golden section fraction for Brent
_MINTOL = 1.0e-11
_SQRT_EPS = math.sqrt(2.2e-16)
_GOLDEN_MEAN = 0.5 * (3.0 - math.sqrt(5.0))
_TINY = 1e-21

_SCALAR_OPTIONS = {
    "brent": {"xtol": None, "maxiter": 500},
    "bounded": {"xatol": 1e-5, "maxiter": 500},
    "golden": {"xtol": None, "maxiter": 5000},
    "bracket-brent": {"rtol": 1e-6, "atol": 1e-6, "gfactor": 2.0, "maxiter": 500, "x0": 0.0},
}
_SCALAR_IGNORED = {"disp"}
_METHOD_ALIASES = {"brent": "brent", "bounded": "bounded", "golden": "golden",
                   "bracket-brent": "bracket-brent", "bracket_brent": "bracket-brent"}


def _i32(v):
    return jnp.asarray(v, jnp.int32)


def _placeholder(fun, *args):
    """Zeros shaped like ``fun(*args)``'s output, without evaluating it (``args`` may hold
    callables)."""
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                  jax.eval_shape(lambda *a: fun(*a), *args)
                                  if not any(callable(a) for a in args)
                                  else jax.eval_shape(lambda t: fun(*_with(args, t)),
                                                      [a for a in args if not callable(a)]))


def _with(args, arrays):
    it = iter(arrays)
    return [a if callable(a) else next(it) for a in args]


def _finite(*values):
    ok = jnp.asarray(True)
    for v in values:
        ok = ok & jnp.isfinite(v)
    return ok


# --------------------------------------------------------------------------------------------
# scipy's downhill bracket search, one expansion per step


class BracketState(eqx.Module):
    """Points ``xa, xb, xc`` with values ``fa, fb, fc``; ``it`` expansion steps, ``nfev``
    evaluations, ``stop`` an early exit of scipy's loop (a minimum located between points)."""

    xa: jnp.ndarray
    xb: jnp.ndarray
    xc: jnp.ndarray
    fa: jnp.ndarray
    fb: jnp.ndarray
    fc: jnp.ndarray
    it: jnp.ndarray
    nfev: jnp.ndarray
    stop: jnp.ndarray


def _bracket_from_pair(f, xa, xb):
    fa, fb = f(xa), f(xb)
    swap = fa < fb
    xa, xb = jnp.where(swap, xb, xa), jnp.where(swap, xa, xb)
    fa, fb = jnp.where(swap, fb, fa), jnp.where(swap, fa, fb)
    xc = xb + _GOLD * (xb - xa)
    return BracketState(xa=xa, xb=xb, xc=xc, fa=fa, fb=fb, fc=f(xc), it=_i32(0), nfev=_i32(3),
                        stop=jnp.asarray(False))


def _bracket_from_triple(f, xa, xb, xc):
    xa, xc = jnp.minimum(xa, xc), jnp.maximum(xa, xc)
    return BracketState(xa=xa, xb=xb, xc=xc, fa=f(xa), fb=f(xb), fc=f(xc), it=_i32(0),
                        nfev=_i32(3), stop=jnp.asarray(True))


def _bracket_going(s: BracketState, maxiter):
    return (s.fc < s.fb) & (~s.stop) & (s.it <= maxiter)


def _bracket_found(s: BracketState):
    return (((s.fb < s.fc) & (s.fb <= s.fa)) | ((s.fb < s.fa) & (s.fb <= s.fc))) & (
        ((s.xa < s.xb) & (s.xb < s.xc)) | ((s.xc < s.xb) & (s.xb < s.xa))) & _finite(
        s.xa, s.xb, s.xc)


def _bracket_step(f, s: BracketState, grow_limit):
    xa, xb, xc, fa, fb, fc = s.xa, s.xb, s.xc, s.fa, s.fb, s.fc
    tmp1 = (xb - xa) * (fb - fc)
    tmp2 = (xb - xc) * (fb - fa)
    val = tmp2 - tmp1
    denom = jnp.where(jnp.abs(val) < _TINY, 2.0 * _TINY, 2.0 * val)
    w = xb - ((xb - xc) * tmp2 - (xb - xa) * tmp1) / denom
    wlim = xb + grow_limit * (xc - xb)
    between = (w - xc) * (xb - w) > 0.0
    beyond_lim = (~between) & ((w - wlim) * (wlim - xc) >= 0.0)
    inside_lim = (~between) & (~beyond_lim) & ((w - wlim) * (xc - w) > 0.0)
    default = (~between) & (~beyond_lim) & (~inside_lim)
    w1 = jnp.where(beyond_lim, wlim, jnp.where(default, xc + _GOLD * (xc - xb), w))
    fw1 = f(w1)
    # a minimum between xb and xc, or between xa and w
    stop_a = between & (fw1 < fc)
    stop_b = between & (~stop_a) & (fw1 > fb)
    between_more = between & (~stop_a) & (~stop_b)
    inside_better = inside_lim & (fw1 < fc)
    xb2 = jnp.where(inside_better, xc, xb)
    xc2 = jnp.where(inside_better, w1, xc)
    fb2 = jnp.where(inside_better, fc, fb)
    fc2 = jnp.where(inside_better, fw1, fc)
    need2 = between_more | inside_better
    w2 = xc2 + _GOLD * (xc2 - xb2)
    fw2 = lax.cond(need2, lambda: f(w2), lambda: jnp.asarray(jnp.nan, fw1.dtype))
    w_fin = jnp.where(need2, w2, w1)
    fw_fin = jnp.where(need2, fw2, fw1)
    shifted = (xb2, xc2, w_fin, fb2, fc2, fw_fin)   # (xa, xb, xc) <- (xb, xc, w)
    out_a = (xb, w1, xc, fb, fw1, fc)               # stop_a: (xb, w, xc)
    out_b = (xa, xb, w1, fa, fb, fw1)               # stop_b: (xa, xb, w)
    new = [jnp.where(stop_a, a, jnp.where(stop_b, b, c)) for a, b, c in
           zip(out_a, out_b, shifted)]
    return BracketState(*new, it=s.it + 1, nfev=s.nfev + 1 + need2.astype(jnp.int32),
                        stop=stop_a | stop_b)


# --------------------------------------------------------------------------------------------
# Brent (scipy's)


class BrentCore(eqx.Module):
    """Brent's iteration: bracket ``[a, b]``, best ``x``, second ``w``, previous ``v`` and
    their values; ``deltax``, ``rat`` the last two steps; ``nit`` iterations, ``nfev``
    evaluations of this phase."""

    a: jnp.ndarray
    b: jnp.ndarray
    x: jnp.ndarray
    w: jnp.ndarray
    v: jnp.ndarray
    fx: jnp.ndarray
    fw: jnp.ndarray
    fv: jnp.ndarray
    deltax: jnp.ndarray
    rat: jnp.ndarray
    nit: jnp.ndarray
    nfev: jnp.ndarray


def _brent_start(br: BracketState):
    zero = jnp.zeros_like(br.xb)
    return BrentCore(a=jnp.minimum(br.xa, br.xc), b=jnp.maximum(br.xa, br.xc), x=br.xb,
                     w=br.xb, v=br.xb, fx=br.fb, fw=br.fb, fv=br.fb, deltax=zero, rat=zero,
                     nit=_i32(0), nfev=_i32(0))


def _mintol(dtype):
    """Brent's absolute tolerance: scipy's 1e-11, at least the dtype's eps."""
    return max(_MINTOL, float(jnp.finfo(dtype).eps))


def _relative_tol(xtol, default, dtype):
    """``xtol`` if given, else scipy's ``default`` (float64), raised to ``sqrt(eps)`` of a
    lower-precision dtype."""
    if xtol is not None:
        return xtol
    eps = float(jnp.finfo(dtype).eps)
    return default if eps <= 2.3e-16 else max(default, math.sqrt(eps))


def _brent_converged(s: BrentCore, xtol):
    tol1 = xtol * jnp.abs(s.x) + _mintol(s.x.dtype)
    return jnp.abs(s.x - 0.5 * (s.a + s.b)) < (2.0 * tol1 - 0.5 * (s.b - s.a))


def _brent_step(f, s: BrentCore, xtol):
    a, b, x, w, v, fx, fw, fv, deltax, rat = (s.a, s.b, s.x, s.w, s.v, s.fx, s.fw, s.fv,
                                              s.deltax, s.rat)
    tol1 = xtol * jnp.abs(x) + _mintol(x.dtype)
    tol2 = 2.0 * tol1
    xmid = 0.5 * (a + b)
    golden_delta = jnp.where(x >= xmid, a - x, b - x)
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
    u = jnp.where(jnp.abs(new_rat) < tol1, jnp.where(new_rat >= 0, x + tol1, x - tol1),
                  x + new_rat)
    fu = f(u)
    worse = fu > fx
    upd_w = worse & ((fu <= fw) | (w == x))
    upd_v = worse & (~upd_w) & ((fu <= fv) | (v == x) | (v == w))
    return BrentCore(
        a=jnp.where(worse, jnp.where(u < x, u, a), jnp.where(u >= x, x, a)),
        b=jnp.where(worse, jnp.where(u < x, b, u), jnp.where(u >= x, b, x)),
        x=jnp.where(worse, x, u),
        w=jnp.where(worse, jnp.where(upd_w, u, w), x),
        v=jnp.where(worse, jnp.where(upd_w, w, jnp.where(upd_v, u, v)), w),
        fx=jnp.where(worse, fx, fu),
        fw=jnp.where(worse, jnp.where(upd_w, fu, fw), fx),
        fv=jnp.where(worse, jnp.where(upd_w, fw, jnp.where(upd_v, fu, fv)), fw),
        deltax=new_deltax, rat=new_rat, nit=s.nit + 1, nfev=s.nfev + 1)


# --------------------------------------------------------------------------------------------
# golden section (scipy's)


class GoldenCore(eqx.Module):
    """Golden section: ``x0 < x1 < x2 < x3`` (or reversed) with ``f1 = f(x1)``, ``f2 =
    f(x2)``; ``nit`` iterations (``nit + 2`` evaluations)."""

    x0: jnp.ndarray
    x1: jnp.ndarray
    x2: jnp.ndarray
    x3: jnp.ndarray
    f1: jnp.ndarray
    f2: jnp.ndarray
    nit: jnp.ndarray
    nfev: jnp.ndarray


_GR = 0.61803399
_GC = 1.0 - _GR


def _golden_start(f, br: BracketState):
    xa, xb, xc = br.xa, br.xb, br.xc
    long_right = jnp.abs(xc - xb) > jnp.abs(xb - xa)
    x1 = jnp.where(long_right, xb, xb - _GC * (xb - xa))
    x2 = jnp.where(long_right, xb + _GC * (xc - xb), xb)
    return GoldenCore(x0=xa, x1=x1, x2=x2, x3=xc, f1=f(x1), f2=f(x2), nit=_i32(0),
                      nfev=_i32(2))


def _golden_converged(s: GoldenCore, xtol):
    return jnp.abs(s.x3 - s.x0) <= xtol * (jnp.abs(s.x1) + jnp.abs(s.x2))


def _golden_step(f, s: GoldenCore):
    right = s.f2 < s.f1
    xn = jnp.where(right, _GR * s.x2 + _GC * s.x3, _GR * s.x1 + _GC * s.x0)
    fn = f(xn)
    return GoldenCore(
        x0=jnp.where(right, s.x1, s.x0), x1=jnp.where(right, s.x2, xn),
        x2=jnp.where(right, xn, s.x1), x3=jnp.where(right, s.x3, s.x2),
        f1=jnp.where(right, s.f2, fn), f2=jnp.where(right, fn, s.f1), nit=s.nit + 1,
        nfev=s.nfev + 1)


# --------------------------------------------------------------------------------------------
# the bracketing solvers: 'brent' and 'golden'


class BracketedState(eqx.Module):
    """State of :class:`Brent` / :class:`Golden`: ``bracketing`` (phase flag), the bracket
    search, and the core of the minimisation phase (zeros while bracketing)."""

    bracketing: jnp.ndarray
    bracket: BracketState
    core: eqx.Module


def _bracketed_init(solver, f, x0):
    """``x0`` (2,): a start pair for the bracket search; (3,): a bracket ``(xa, xb, xc)``."""
    if x0.shape == (2,):
        br = _bracket_from_pair(f, x0[0], x0[1])
        going = _bracket_going(br, solver.bracket_maxiter)
    elif x0.shape == (3,):
        br = _bracket_from_triple(f, x0[0], x0[1], x0[2])
        going = jnp.asarray(False)
    else:
        raise ValueError(f"x0 must be a bracket of 2 or 3 points, got shape {x0.shape}")
    core = lax.cond(going, lambda b: _placeholder(solver.start_core, f, b),
                    lambda b: solver.start_core(f, b), br)
    return BracketedState(bracketing=going, bracket=br, core=core)


def _bracketed_step(solver, f, state: BracketedState):
    def expand(state):
        br = _bracket_step(f, state.bracket, solver.grow_limit)
        going = _bracket_going(br, solver.bracket_maxiter)
        core = lax.cond(going, lambda b: state.core, lambda b: solver.start_core(f, b), br)
        return BracketedState(bracketing=going, bracket=br, core=core)

    def minimise(state):
        return BracketedState(bracketing=state.bracketing, bracket=state.bracket,
                              core=solver.step_core(f, state.core))

    return lax.cond(state.bracketing, expand, minimise, state)


def _bracketed_status(solver, state: BracketedState, x, fx, converged):
    br = state.bracket
    failed = (~state.bracketing) & (~_bracket_found(br))
    return first_status(
        (state.bracketing, RUNNING),
        (failed & ~_finite(br.fa, br.fb, br.fc), Status.NONFINITE),
        (failed, Status.MAX_ITER),
        (~_finite(x, fx), Status.NONFINITE),
        (converged, Status.XTOL),
        (state.core.nit >= solver.maxiter, Status.MAX_ITER),
    )


def _bracketed_result(state: BracketedState, status, x, fx):
    br = state.bracket
    failed = (~state.bracketing) & (~_bracket_found(br))
    # no bracket: report the best point the search saw
    fb = jnp.stack([br.fa, br.fb, br.fc])
    best = jnp.argmin(jnp.where(jnp.isnan(fb), jnp.inf, fb))
    xb = jnp.stack([br.xa, br.xb, br.xc])[best]
    x = jnp.where(failed, xb, x)
    fx = jnp.where(failed, fb[best], fx)
    return OptimizeResult(x=x, fun=fx, jac=jnp.asarray(jnp.nan, x.dtype), status=status,
                          nit=jnp.where(failed, 0, state.core.nit),
                          nfev=br.nfev + jnp.where(failed, 0, state.core.nfev),
                          njev=_i32(0), extra={"bracket": (br.xa, br.xb, br.xc)})


class Brent(AbstractSolver):
    """scipy's Brent with its bracket search. ``x0``: (2,) start pair or (3,) bracket.
    ``xtol`` (None: 1.48e-8 relative, at least sqrt(eps) of the dtype), ``maxiter`` (500
    Brent iterations), ``grow_limit`` (110),
    ``bracket_maxiter`` (1000 expansion steps)."""

    xtol: Optional[float] = None
    maxiter: int = 500
    grow_limit: float = 110.0
    bracket_maxiter: int = 1000

    def start_core(self, f, br):
        return _brent_start(br)

    def step_core(self, f, core):
        return _brent_step(f, core, _relative_tol(self.xtol, 1.48e-8, core.x.dtype))

    def init(self, fn, x0, args):
        return _bracketed_init(self, lambda x: fn(x, args), x0)

    def step(self, fn, state, args):
        return _bracketed_step(self, lambda x: fn(x, args), state)

    def terminate(self, fn, state, args):
        c = state.core
        xtol = _relative_tol(self.xtol, 1.48e-8, c.x.dtype)
        return _bracketed_status(self, state, c.x, c.fx, _brent_converged(c, xtol))

    def postprocess(self, fn, state, args, status):
        return _bracketed_result(state, status, state.core.x, state.core.fx)

    def progress(self, state) -> Progress:
        return Progress(nit=state.core.nit, fun=state.core.fx, x=state.core.x)


class Golden(AbstractSolver):
    """scipy's golden-section search with its bracket search. ``x0``: (2,) or (3,) as for
    :class:`Brent`; ``xtol`` (None: 1.49e-8, at least sqrt(eps) of the dtype), ``maxiter``
    (5000), ``grow_limit``,
    ``bracket_maxiter``."""

    xtol: Optional[float] = None
    maxiter: int = 5000
    grow_limit: float = 110.0
    bracket_maxiter: int = 1000

    def start_core(self, f, br):
        return _golden_start(f, br)

    def step_core(self, f, core):
        return _golden_step(f, core)

    def init(self, fn, x0, args):
        return _bracketed_init(self, lambda x: fn(x, args), x0)

    def step(self, fn, state, args):
        return _bracketed_step(self, lambda x: fn(x, args), state)

    def _best(self, c):
        better1 = c.f1 < c.f2
        return jnp.where(better1, c.x1, c.x2), jnp.where(better1, c.f1, c.f2)

    def terminate(self, fn, state, args):
        c = state.core
        converged = _golden_converged(
            c, _relative_tol(self.xtol, 1.4901161193847656e-08, c.x1.dtype))
        return first_status(
            (state.bracketing, RUNNING),
            ((~state.bracketing) & ~_bracket_found(state.bracket), Status.MAX_ITER),
            (~_finite(c.f1, c.f2), Status.NONFINITE),
            (converged, Status.XTOL),
            (c.nit >= self.maxiter, Status.MAX_ITER))

    def postprocess(self, fn, state, args, status):
        x, fx = self._best(state.core)
        return _bracketed_result(state, status, x, fx)

    def progress(self, state) -> Progress:
        x, fx = self._best(state.core)
        return Progress(nit=state.core.nit, fun=fx, x=x)


# --------------------------------------------------------------------------------------------
# 'bounded' (scipy's fminbound)


class BoundedState(eqx.Module):
    """fminbound's state: bracket ``[a, b]``, best ``xf``, ``nfc`` / ``fulc`` the two other
    points and their values, ``e`` / ``rat`` the last steps, ``nfev`` evaluations."""

    a: jnp.ndarray
    b: jnp.ndarray
    xf: jnp.ndarray
    fx: jnp.ndarray
    nfc: jnp.ndarray
    fnfc: jnp.ndarray
    fulc: jnp.ndarray
    ffulc: jnp.ndarray
    e: jnp.ndarray
    rat: jnp.ndarray
    nfev: jnp.ndarray


class BoundedBrent(AbstractSolver):
    """scipy's bounded Brent on ``[a, b]`` = ``x0`` (2,). ``xatol`` (1e-5), ``maxfun`` (500
    evaluations; reaching it gives ``MAX_FEV``)."""

    xatol: float = 1e-5
    maxfun: int = 500

    def init(self, fn, x0, args):
        a, b = x0[0], x0[1]
        fulc = a + _GOLDEN_MEAN * (b - a)
        fx = fn(fulc, args)
        zero = jnp.zeros_like(fulc)
        return BoundedState(a=a, b=b, xf=fulc, fx=fx, nfc=fulc, fnfc=fx, fulc=fulc, ffulc=fx,
                            e=zero, rat=zero, nfev=_i32(1))

    def _converged(self, s):
        tol1 = _SQRT_EPS * jnp.abs(s.xf) + self.xatol / 3.0
        return jnp.abs(s.xf - 0.5 * (s.a + s.b)) <= (2.0 * tol1 - 0.5 * (s.b - s.a))

    def step(self, fn, s, args):
        a, b, xf, fx, nfc, fnfc, fulc, ffulc, e, rat = (s.a, s.b, s.xf, s.fx, s.nfc, s.fnfc,
                                                        s.fulc, s.ffulc, s.e, s.rat)
        xm = 0.5 * (a + b)
        tol1 = _SQRT_EPS * jnp.abs(xf) + self.xatol / 3.0
        tol2 = 2.0 * tol1
        try_parabola = jnp.abs(e) > tol1
        r = (xf - nfc) * (fx - ffulc)
        q = (xf - fulc) * (fx - fnfc)
        p = (xf - fulc) * q - (xf - nfc) * r
        q = 2.0 * (q - r)
        p = jnp.where(q > 0.0, -p, p)
        q = jnp.abs(q)
        parabola_ok = try_parabola & (jnp.abs(p) < jnp.abs(0.5 * q * e)) & (
            p > q * (a - xf)) & (p < q * (b - xf))
        rat_par = p / jnp.where(q == 0, 1.0, q)
        x_par = xf + rat_par
        si_mid = jnp.sign(xm - xf) + ((xm - xf) == 0)
        rat_par = jnp.where(((x_par - a) < tol2) | ((b - x_par) < tol2), tol1 * si_mid, rat_par)
        golden = ~parabola_ok
        e_gold = jnp.where(xf >= xm, a - xf, b - xf)
        new_e = jnp.where(golden, e_gold, rat)   # scipy's "e = rat" on the parabolic branch
        new_rat = jnp.where(golden, _GOLDEN_MEAN * e_gold, rat_par)
        si = jnp.sign(new_rat) + (new_rat == 0)
        x = xf + si * jnp.maximum(jnp.abs(new_rat), tol1)
        fu = fn(x, args)
        better = fu <= fx
        upd_nfc = (fu <= fnfc) | (nfc == xf)
        upd_fulc = (~upd_nfc) & ((fu <= ffulc) | (fulc == xf) | (fulc == nfc))
        return BoundedState(
            a=jnp.where(better, jnp.where(x >= xf, xf, a), jnp.where(x < xf, x, a)),
            b=jnp.where(better, jnp.where(x >= xf, b, xf), jnp.where(x < xf, b, x)),
            xf=jnp.where(better, x, xf), fx=jnp.where(better, fu, fx),
            nfc=jnp.where(better, xf, jnp.where(upd_nfc, x, nfc)),
            fnfc=jnp.where(better, fx, jnp.where(upd_nfc, fu, fnfc)),
            fulc=jnp.where(better, nfc, jnp.where(upd_nfc, nfc, jnp.where(upd_fulc, x, fulc))),
            ffulc=jnp.where(better, fnfc,
                            jnp.where(upd_nfc, fnfc, jnp.where(upd_fulc, fu, ffulc))),
            e=new_e, rat=new_rat, nfev=s.nfev + 1)

    def terminate(self, fn, state, args):
        return first_status((~_finite(state.xf, state.fx), Status.NONFINITE),
                            (self._converged(state), Status.XTOL),
                            (state.nfev >= self.maxfun, Status.MAX_FEV))

    def postprocess(self, fn, state, args, status):
        return OptimizeResult(x=state.xf, fun=state.fx, jac=jnp.asarray(jnp.nan, state.xf.dtype),
                              status=status, nit=state.nfev, nfev=state.nfev, njev=_i32(0))

    def progress(self, state) -> Progress:
        return Progress(nit=state.nfev, fun=state.fx, x=state.xf)


# --------------------------------------------------------------------------------------------
# 'bracket-brent' (glimix-core's search)


class WalkState(eqx.Module):
    """The downhill walk: ``x0, x1, x2`` with values (decreasing from ``x0`` to ``x1``)."""

    x0: jnp.ndarray
    x1: jnp.ndarray
    x2: jnp.ndarray
    f0: jnp.ndarray
    f1: jnp.ndarray
    f2: jnp.ndarray
    nit: jnp.ndarray


class GlimixBrentCore(eqx.Module):
    """glimix-core's Brent: bracket ``[a, b]``, points ``x, w, v`` and values, steps ``d``,
    ``e``; ``nit`` iterations."""

    a: jnp.ndarray
    b: jnp.ndarray
    x: jnp.ndarray
    w: jnp.ndarray
    v: jnp.ndarray
    fx: jnp.ndarray
    fw: jnp.ndarray
    fv: jnp.ndarray
    d: jnp.ndarray
    e: jnp.ndarray
    nit: jnp.ndarray


class BracketBrentState(eqx.Module):
    """State of :class:`BracketBrent`: ``walking`` (phase flag), the walk, the Brent core
    (zeros while walking), ``nfev`` evaluations in total, and the interval ``[lower, upper]``."""

    walking: jnp.ndarray
    walk: WalkState
    core: GlimixBrentCore
    nfev: jnp.ndarray
    lower: jnp.ndarray
    upper: jnp.ndarray


class BracketBrent(AbstractSolver):
    """glimix-core's bracket-then-Brent search on ``[a, b]`` = ``x0[:2]`` starting at
    ``x0[2]`` (clipped into the interval); see the module docstring. ``rtol``, ``atol`` (1e-6
    each), ``gfactor`` (2), ``maxiter`` (500, for the walk and for Brent separately)."""

    rtol: float = 1e-6
    atol: float = 1e-6
    gfactor: float = 2.0
    maxiter: int = 500

    def _tol(self, x):
        return jnp.abs(x) * self.rtol + self.atol

    def _walk_going(self, s: WalkState, a, b):
        bracketed = (s.f0 > s.f1) & (s.f1 < s.f2)
        inside = (a < s.x2) & (s.x2 < b)
        return (~bracketed) & inside & (s.nit < self.maxiter) & (s.f1 != s.f2)

    def _start_core(self, f, s: WalkState):
        """Walk finished: fix up equal values (one evaluation), then Brent from the middle."""
        equal = s.f1 == s.f2
        xm = 0.5 * (s.x1 + s.x2)
        fm = lax.cond(equal, f, lambda x: s.f1, xm)
        x1, x2 = jnp.where(equal, xm, s.x1), jnp.where(equal, s.x1, s.x2)
        f1 = jnp.where(equal, fm, s.f1)
        zero = jnp.zeros_like(x1)
        core = GlimixBrentCore(a=jnp.minimum(s.x0, x2), b=jnp.maximum(s.x0, x2), x=x1, w=x1,
                               v=x1, fx=f1, fw=f1, fv=f1, d=zero, e=zero, nit=_i32(0))
        return core, equal.astype(jnp.int32)

    def init(self, fn, x0, args):
        f = lambda x: fn(x, args)  # noqa: E731
        a, b, start = x0[0], x0[1], x0[2]
        p0 = jnp.clip(start, a, b)
        step = 10 * self.gfactor * self._tol(p0)
        p1 = jnp.where(p0 - a > b - p0, jnp.maximum(p0 - step, a), jnp.minimum(p0 + step, b))
        f0, f1 = f(p0), f(p1)
        swap = f0 < f1
        p0, p1 = jnp.where(swap, p1, p0), jnp.where(swap, p0, p1)
        f0, f1 = jnp.where(swap, f1, f0), jnp.where(swap, f0, f1)
        p2 = jnp.clip(p1 + (p1 - p0) * self.gfactor, a, b)
        walk = WalkState(x0=p0, x1=p1, x2=p2, f0=f0, f1=f1, f2=f(p2), nit=_i32(0))
        walking = self._walk_going(walk, a, b)
        core, extra = lax.cond(walking, lambda w: _placeholder(self._start_core, f, w),
                               lambda w: self._start_core(f, w), walk)
        return BracketBrentState(walking=walking, walk=walk, core=core, nfev=3 + extra,
                                 lower=a, upper=b)

    def _brent_step(self, f, s: GlimixBrentCore):
        m = 0.5 * (s.a + s.b)
        tol = self._tol(s.x)
        tol2 = 2 * tol
        zero = jnp.zeros_like(s.x)
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
        d = jnp.where(accept, d_par, _GOLDEN_MEAN * e_gold)
        e = jnp.where(accept, e, e_gold)
        u = jnp.where(tol <= jnp.abs(d), s.x + d, jnp.where(d > 0, s.x + tol, s.x - tol))
        fu = f(u)
        better = fu <= s.fx
        second = (fu <= s.fw) | (s.w == s.x)
        third = (fu <= s.fv) | (s.v == s.x) | (s.v == s.w)
        return GlimixBrentCore(
            a=jnp.where(better, jnp.where(u < s.x, s.a, s.x), jnp.where(u < s.x, u, s.a)),
            b=jnp.where(better, jnp.where(u < s.x, s.x, s.b), jnp.where(u < s.x, s.b, u)),
            x=jnp.where(better, u, s.x),
            w=jnp.where(better, s.x, jnp.where(second, u, s.w)),
            v=jnp.where(better, s.w, jnp.where(second, s.w, jnp.where(third, u, s.v))),
            fx=jnp.where(better, fu, s.fx),
            fw=jnp.where(better, s.fx, jnp.where(second, fu, s.fw)),
            fv=jnp.where(better, s.fw, jnp.where(second, s.fw, jnp.where(third, fu, s.fv))),
            d=d, e=e, nit=s.nit + 1)

    def step(self, fn, state, args):
        f = lambda x: fn(x, args)  # noqa: E731

        def walk(state):
            s, a, b = state.walk, state.lower, state.upper
            xt = jnp.clip(s.x2 + self.gfactor * (s.x2 - s.x1), a, b)
            ws = WalkState(x0=s.x1, x1=s.x2, x2=xt, f0=s.f1, f1=s.f2, f2=f(xt), nit=s.nit + 1)
            going = self._walk_going(ws, a, b)
            core, extra = lax.cond(going, lambda w: (state.core, _i32(0)),
                                   lambda w: self._start_core(f, w), ws)
            return BracketBrentState(walking=going, walk=ws, core=core,
                                     nfev=state.nfev + 1 + extra, lower=a, upper=b)

        def brent(state):
            return BracketBrentState(walking=state.walking, walk=state.walk,
                                     core=self._brent_step(f, state.core), nfev=state.nfev + 1,
                                     lower=state.lower, upper=state.upper)

        return lax.cond(state.walking, walk, brent, state)

    def _converged(self, c: GlimixBrentCore):
        return jnp.abs(c.x - 0.5 * (c.a + c.b)) <= 2 * self._tol(c.x) - 0.5 * (c.b - c.a)

    def terminate(self, fn, state, args):
        c = state.core
        return first_status((state.walking, RUNNING),
                            (~_finite(c.x, c.fx), Status.NONFINITE),
                            (self._converged(c), Status.XTOL),
                            (c.nit >= self.maxiter, Status.MAX_ITER))

    def postprocess(self, fn, state, args, status):
        c = state.core
        return OptimizeResult(x=c.x, fun=c.fx, jac=jnp.asarray(jnp.nan, c.x.dtype),
                              status=status, nit=c.nit, nfev=state.nfev, njev=_i32(0))

    def progress(self, state) -> Progress:
        return Progress(nit=state.core.nit, fun=state.core.fx, x=state.core.x)


# --------------------------------------------------------------------------------------------
# the front door


def _ends_dtype(ends):
    dtype = jnp.result_type(*ends)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _is_traced(values):
    return is_traced(*values)


def minimize_scalar(fun: Callable, bracket=None, bounds=None, args=(), method: Optional[str] = None,
                    tol=None, options: Optional[dict] = None, *,
                    callback: Optional[Callable] = None) -> OptimizeResult:
    """Minimise ``fun(x, *args)`` of one scalar variable, with scipy's signature.

    Parameters
    ----------
    fun : JAX-traceable ``fun(x, *args) -> scalar``.
    bracket : ``(xa, xb)`` to start the downhill bracket search, or ``(xa, xb, xc)`` with
        ``f(xb) < f(xa), f(xc)``; 'brent' and 'golden' only (default ``(0, 1)``).
    bounds : ``(a, b)``: finite, for ``method='bounded'`` (the default when given); for
        'bracket-brent' the search interval (infinite ends allowed).
    method : 'brent' (default), 'bounded', 'golden' or 'bracket-brent' (glimix-core's
        search); case-insensitive.
    tol : sets ``xtol`` ('brent', 'golden'), ``xatol`` ('bounded') or ``rtol`` and ``atol``
        ('bracket-brent').
    options : 'brent': ``xtol`` (1.48e-8; sqrt(eps) in float32), ``maxiter`` (500);
        'bounded': ``xatol`` (1e-5), ``maxiter`` (500 function evaluations); 'golden':
        ``xtol`` (1.49e-8; sqrt(eps) in float32), ``maxiter``
        (5000); 'bracket-brent': ``rtol``, ``atol`` (1e-6), ``gfactor`` (2), ``maxiter``
        (500), ``x0`` (start, 0); ``disp`` is ignored. Unknown names warn an ``OptimizeWarning`` (scipy's) and are
        ignored.
    callback : optional ``callback(Progress(nit, fun, x))`` after every iteration (host
        values; not part of the compile key).

    The arithmetic runs in the floating dtype of ``bracket`` / ``bounds`` (Python numbers:
    the default float; pass float32 arrays to search in float32).

    Returns
    -------
    OptimizeResult with scalar ``x`` and ``fun``; ``jac`` is NaN (not computed). For
    'brent', 'golden' and 'bounded': scipy's ``status`` (0 converged, 1 budget, 2 NaN) and
    ``message``, jaxinfer's :class:`Status` in ``reason``, numpy fields outside a trace.
    'bracket-brent': ``status`` is the :class:`Status` (XTOL when converged).
    """
    if not callable(fun):
        raise TypeError("fun must be callable")
    if method is None:
        method = "brent" if bounds is None else "bounded"
    key = method.strip().lower() if isinstance(method, str) else None
    if key not in _METHOD_ALIASES:
        raise ValueError(f"Unknown method {method!r} for minimize_scalar; valid: "
                         "'brent', 'bounded', 'golden', 'bracket-brent'")
    method = _METHOD_ALIASES[key]
    if not isinstance(args, tuple):
        args = (args,)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    options = {} if options is None else dict(options)
    defaults = _SCALAR_OPTIONS[method]
    unknown = [k for k in options if k not in defaults and k not in _SCALAR_IGNORED]
    if unknown:  # scipy warns and ignores them
        warnings.warn(f"Unknown solver options: {', '.join(map(str, unknown))} (method "
                      f"{method!r} accepts {sorted(defaults)})", OptimizeWarning, stacklevel=2)
        options = {k: v for k, v in options.items() if k not in unknown}
    opts = dict(defaults)
    if tol is not None:
        if not (isinstance(tol, numbers.Real) and tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {tol!r}")
        names = {"bounded": ("xatol",), "bracket-brent": ("rtol", "atol")}.get(method, ("xtol",))
        for name in names:
            opts[name] = float(tol)
    opts.update({k: v for k, v in options.items() if k not in _SCALAR_IGNORED})
    if method in ("bounded", "bracket-brent"):
        if bounds is None:
            raise ValueError(f"method={method!r} needs bounds=(a, b)")
        if bracket is not None:
            raise ValueError(f"bracket is not used by method={method!r}; give bounds=(a, b)")
        if len(bounds) != 2:
            raise ValueError("bounds must have two elements (a, b)")
        ends = tuple(bounds)
        if not _is_traced(ends):
            lo, hi = (float(v) for v in ends)
            if method == "bounded" and not (math.isfinite(lo) and math.isfinite(hi)):
                raise ValueError("bounds must be finite scalars")
            if lo > hi:
                raise ValueError(f"the lower bound exceeds the upper bound ({lo} > {hi})")
        if method == "bracket-brent":
            ends = ends + (opts.pop("x0"),)
    else:
        if bounds is not None:
            raise ValueError(f"bounds are only used by method='bounded' or 'bracket-brent', "
                             f"not {method!r}")
        if bracket is None:
            bracket = (0.0, 1.0)
        if len(bracket) not in (2, 3):
            raise ValueError("bracket must be a sequence of 2 or 3 numbers")
        ends = tuple(bracket)
        if len(ends) == 3 and not _is_traced(ends):
            xa, xb, xc = (min(float(ends[0]), float(ends[2])), float(ends[1]),
                          max(float(ends[0]), float(ends[2])))
            values = [float(fun(v, *args)) for v in (xa, xb, xc)]
            if not (xa < xb < xc and values[1] < values[0] and values[1] < values[2]):
                raise ValueError("bracket (xa, xb, xc) must satisfy xa < xb < xc and "
                                 "f(xb) < f(xa), f(xc)")
    for name in ("maxiter",):
        if isinstance(opts[name], bool) or not isinstance(opts[name], numbers.Integral):
            raise ValueError(f"option {name} must be an integer, got {opts[name]!r}")
    from jaxinfer.optimize.minimize import _split_args
    arg_static, arg_dynamic = _split_args(args)
    dtype = _ends_dtype(ends)
    x0 = jnp.stack([jnp.asarray(v, dtype) for v in ends])
    traced = is_traced((x0, arg_dynamic))
    static = (method, tuple(sorted(opts.items())), fun, arg_static,
              callback_key(callback, traced))
    result = run_compiled(_scalar_solve, static, x0, arg_dynamic,
                          progress=None if traced else callback)
    # scipy's methods: numpy scalars and a Python bool outside a trace, as scipy returns
    return result if traced or method == "bracket-brent" else to_host(result)


def make_scalar_solver(method: str, opts: dict) -> AbstractSolver:
    """Canonical method name and resolved options -> the solver Module."""
    if method == "brent":
        return Brent(xtol=opts["xtol"], maxiter=int(opts["maxiter"]))
    if method == "golden":
        return Golden(xtol=opts["xtol"], maxiter=int(opts["maxiter"]))
    if method == "bounded":
        return BoundedBrent(xatol=opts["xatol"], maxfun=int(opts["maxiter"]))
    if method == "bracket-brent":
        return BracketBrent(rtol=opts["rtol"], atol=opts["atol"], gfactor=float(opts["gfactor"]),
                            maxiter=int(opts["maxiter"]))
    raise ValueError(f"unknown scalar method {method!r}")


def _scalar_solve(static, x0, arg_dynamic) -> OptimizeResult:
    from jaxinfer.optimize.minimize import _join_args
    method, opts, fun, arg_static, callback = static
    args = _join_args(arg_static, arg_dynamic)
    dtype = x0.dtype

    def fn(x, args):
        val = jnp.asarray(fun(x, *args))
        if val.size != 1:
            raise ValueError(f"fun must return a scalar, got shape {val.shape}")
        return jnp.reshape(val, ()).astype(dtype)

    solver = make_scalar_solver(method, dict(opts))
    res = iterate(solver, fn, x0, args, callback=callback)
    if method == "bracket-brent":
        return res
    conv = _scipy_convention(method, dict(opts), dtype)
    return OptimizeResult(x=res.x, fun=res.fun, jac=res.jac, status=convention_code(conv, res.status),
                          nit=res.nit, nfev=res.nfev, njev=res.njev, extra=res.extra,
                          reason=res.status, convention=conv)


_NAN_MESSAGE = "NaN result encountered."


def _scipy_convention(method: str, opts: dict, dtype) -> str:
    """The name of scipy's status / message convention for ``method`` (registered on first
    use: 'brent' and 'golden' put the tolerance they used in the success message)."""
    if method == "bounded":
        return register_convention(
            "scipy-bounded", {Status.XTOL: 0, Status.MAX_FEV: 1, Status.NONFINITE: 2}, 1,
            {Status.XTOL: "Solution found.",
             Status.MAX_FEV: "Maximum number of function calls reached.",
             Status.NONFINITE: _NAN_MESSAGE})
    default = 1.48e-8 if method == "brent" else 1.4901161193847656e-08
    xtol = _relative_tol(opts["xtol"], default, dtype)
    return register_convention(
        f"scipy-{method}-xtol={xtol!r}",
        {Status.XTOL: 0, Status.MAX_ITER: 1, Status.NONFINITE: 2}, 1,
        {Status.XTOL: ("\nOptimization terminated successfully;\nThe returned value satisfies "
                       f"the termination criteria\n(using xtol = {xtol} )"),
         Status.MAX_ITER: "\nMaximum number of iterations exceeded",
         Status.NONFINITE: _NAN_MESSAGE})


__all__ = ["minimize_scalar", "make_scalar_solver", "Brent", "BoundedBrent", "Golden",
           "BracketBrent"]
