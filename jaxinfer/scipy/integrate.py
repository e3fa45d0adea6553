"""``scipy.integrate``'s ``quad``, ``dblquad`` and ``odeint`` in JAX.

``quad`` is adaptive like QUADPACK's ``qag``/``qagi``: a 10-point Gauss rule and its 21-point
Kronrod extension on each piece, the piece with the largest error estimate bisected until the
summed estimate is below ``max(epsabs, epsrel·|integral|)`` or ``limit`` pieces exist.
The search for the pieces runs in a ``lax.while_loop`` on values with the gradient stopped;
the integral is then the Kronrod sum on the final pieces, a plain weighted sum, so it jits,
vmaps and differentiates (forward and reverse) with respect to the integrand's parameters
and to finite limits. Infinite limits are mapped onto a finite variable first
(``x = a + u/(1-u)`` on a half line, ``x = u/(1-u²)`` on the whole line), so the rule never
evaluates the integrand at an endpoint.

The Gauss nodes come from :func:`jaxinfer.quadrature.gauss_legendre`; the Kronrod nodes and
weights are computed from them once with numpy (roots of the Stieltjes polynomial, then the
weights that integrate Legendre polynomials of degree ≤ 3n+1 exactly).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import ode as _ode
from numpy.polynomial import legendre as _leg

from jaxinfer.quadrature import _is_inf

__all__ = ["quad", "dblquad", "odeint", "gauss_kronrod"]

_GAUSS_ORDER = 10  # G10 / K21, QUADPACK's qk21 pair


@functools.lru_cache(maxsize=8)
def _kronrod(n: int):
    """Nodes and weights (Kronrod, embedded Gauss) of the (2n+1)-point Gauss–Kronrod rule."""
    xg, wg = _leg.leggauss(n)  # numpy float64 whatever JAX's precision setting
    # Stieltjes polynomial E_{n+1} = P_{n+1} + sum_{j<=n} c_j P_j, orthogonal to P_n x^k, k<=n
    gx, gw = _leg.leggauss(3 * n + 4)
    pn = _leg.legval(gx, [0] * n + [1])
    basis = np.stack([_leg.legval(gx, [0] * j + [1]) for j in range(n + 2)])   # [n+2, m]
    powers = np.stack([gx ** k for k in range(n + 1)])                         # [n+1, m]
    a = (powers * pn * gw) @ basis.T                                           # [n+1, n+2]
    c, *_ = np.linalg.lstsq(a[:, :-1], -a[:, -1], rcond=None)
    e = np.concatenate([c, [1.0]])
    roots = np.sort(np.real(_leg.legroots(e)))
    x = np.sort(np.concatenate([xg, roots]))
    # weights: exact for P_0 .. P_{2n} at 2n+1 nodes (degree 3n+1 follows from the nodes)
    v = np.stack([_leg.legval(x, [0] * k + [1]) for k in range(2 * n + 1)])
    rhs = np.zeros(2 * n + 1)
    rhs[0] = 2.0
    wk = np.linalg.solve(v, rhs)
    gauss_idx = np.searchsorted(x, xg)
    wgk = np.zeros_like(x)
    wgk[gauss_idx] = wg
    return x, wk, wgk


def gauss_kronrod(n: int = _GAUSS_ORDER, dtype=None):
    """The (2n+1)-point Gauss–Kronrod rule on [-1, 1].

    Returns ``(x, w_kronrod, w_gauss)``, each of shape ``(2n+1,)``; ``w_gauss`` is zero at
    the Kronrod-only nodes, so ``sum(w_gauss * f(x))`` is the n-point Gauss value.
    """
    x, wk, wg = _kronrod(int(n))
    return tuple(jnp.asarray(v, dtype=dtype) for v in (x, wk, wg))


def _map(a, b, dtype):
    """The variable u, its range, and x(u), dx/du for ∫_a^b (limits possibly infinite)."""
    ia, ib = _is_inf(a), _is_inf(b)
    if ia == 0 and ib == 0:
        a = jnp.asarray(a, dtype)
        b = jnp.asarray(b, dtype)
        return (0.0, 1.0), (lambda u: a + (b - a) * u), (lambda u: (b - a) * jnp.ones_like(u))
    if ia == -1 and ib == 1:
        return ((-1.0, 1.0), (lambda u: u / (1.0 - u * u)),
                (lambda u: (1.0 + u * u) / (1.0 - u * u) ** 2))
    if ia == 0 and ib == 1:
        lower, sign = jnp.asarray(a, dtype), 1.0
    elif ia == -1 and ib == 0:
        lower, sign = jnp.asarray(b, dtype), -1.0
    elif ia == ib:
        # ∫ from inf to inf (or -inf to -inf) is 0; keep it finite and empty
        return (0.0, 0.0), (lambda u: jnp.zeros_like(u)), (lambda u: jnp.zeros_like(u))
    else:  # (inf, -inf) and similar: swap
        (lo, hi), x, dx = _map(b, a, dtype)
        return (lo, hi), x, (lambda u: -dx(u))
    return (0.0, 1.0), (lambda u: lower + sign * u / (1.0 - u)), (lambda u: 1.0 / (1.0 - u) ** 2)


def _panel_estimates(g, lo, hi, rule, dtype):
    """Kronrod value and QUADPACK's error estimate of ∫ g on each panel [lo_i, hi_i]."""
    xk, wk, wg = rule
    half = 0.5 * (hi - lo)
    center = 0.5 * (hi + lo)
    u = center[:, None] + half[:, None] * xk
    gu = g(u)                                                        # [p, 2n+1]
    resk = jnp.sum(wk * gu, axis=-1)
    resg = jnp.sum(wg * gu, axis=-1)
    resabs = jnp.sum(wk * jnp.abs(gu), axis=-1)
    resasc = jnp.sum(wk * jnp.abs(gu - 0.5 * resk[:, None]), axis=-1)
    habs = jnp.abs(half)
    resk, resabs, resasc = resk * half, resabs * habs, resasc * habs
    err = jnp.abs((resk - resg * half))
    scaled = resasc * jnp.minimum(1.0, (200.0 * err / jnp.where(resasc > 0, resasc, 1.0)) ** 1.5)
    err = jnp.where((resasc > 0) & (err > 0), scaled, err)
    eps = jnp.finfo(dtype).eps
    tiny = jnp.finfo(dtype).tiny
    err = jnp.where(resabs > tiny / (50 * eps), jnp.maximum(50 * eps * resabs, err), err)
    return resk, err


def _adaptive(g, edges, epsabs, epsrel, limit, dtype):
    """QUADPACK-style bisection of the panels (values only, no gradient).

    Returns ``(lo, hi, active, abserr)``. The integrand is traced once, in the loop body:
    each iteration evaluates two panels, first the initial panels (``edges``), then the two
    halves of the panel with the largest error.
    """
    rule = gauss_kronrod(_GAUSS_ORDER, dtype)
    gs = lambda u: jax.lax.stop_gradient(g(u))  # noqa: E731
    p0 = len(edges) - 1
    slots = jnp.arange(limit)
    lo = jnp.full(limit, edges[0], dtype).at[:p0].set(jnp.asarray(edges[:-1], dtype))
    hi = jnp.full(limit, edges[1], dtype).at[:p0].set(jnp.asarray(edges[1:], dtype))
    done = ~(slots < p0)                       # slots past p0 hold nothing yet
    zeros = jnp.zeros(limit, dtype)

    def cond(state):
        lo, hi, val, err, done, m = state
        tol = jnp.maximum(epsabs, epsrel * jnp.abs(jnp.sum(val)))
        total = jnp.sum(err)
        return ~jnp.all(done) | ((m < limit) & (total > tol) & jnp.isfinite(total))

    def body(state):
        lo, hi, val, err, done, m = state
        pending = ~jnp.all(done)
        # initial panels first (two at a time), then bisect the worst panel
        first = jnp.argmin(done)
        second = jnp.argmin(done.at[first].set(True))
        second = jnp.where(done.at[first].set(True)[second], first, second)
        i = jnp.argmax(err)
        mid = 0.5 * (lo[i] + hi[i])
        j = jnp.where(pending, jnp.stack([first, second]), jnp.stack([i, m]))
        new_lo = jnp.where(pending, lo[j], jnp.stack([lo[i], mid]))
        new_hi = jnp.where(pending, hi[j], jnp.stack([mid, hi[i]]))
        v2, e2 = _panel_estimates(gs, new_lo, new_hi, rule, dtype)
        lo, hi = lo.at[j].set(new_lo), hi.at[j].set(new_hi)
        val, err = val.at[j].set(v2), err.at[j].set(e2)
        return lo, hi, val, err, done.at[j].set(True), jnp.where(pending, m, m + 1)

    lo, hi, val, err, done, m = jax.lax.while_loop(
        cond, body, (lo, hi, zeros, zeros, done, jnp.asarray(p0)))
    return lo, hi, slots < m, jnp.sum(err)


def _integrand(func, args, dtype):
    """func(x, *args) for scalar x, applied to an array of nodes (any scalar function works)."""
    def f(x):
        flat = x.reshape(-1)
        out = jax.vmap(lambda xi: jnp.asarray(func(xi, *args)))(flat)
        if out.shape != flat.shape:
            raise ValueError(f"the integrand must return a scalar for a scalar x, got shape "
                             f"{out.shape[1:]}")
        return out.reshape(x.shape)
    return f


def _quad_real(f, a, b, points, epsabs, epsrel, limit, dtype, extra=None):
    """(∫ f, error). With ``extra`` (x -> (f(x), e(x)), e.g. dblquad's inner value and
    error), the final sum evaluates both at once and adds ∫ e to the error."""
    (u0, u1), x_of_u, dx_du = _map(a, b, dtype)
    if u0 == u1:
        return jnp.zeros((), dtype), jnp.zeros((), dtype)
    g = lambda u: f(x_of_u(u)) * dx_du(u)  # noqa: E731
    edges = [u0, u1]
    if points is not None and len(points):
        if _is_inf(a) or _is_inf(b):
            raise ValueError("quad: break points are only supported on finite intervals "
                             "(as in scipy)")
        a_, b_ = float(a), float(b)
        inner = sorted(float(p) for p in points if min(a_, b_) < float(p) < max(a_, b_))
        edges = [0.0] + [(p - a_) / (b_ - a_) for p in inner] + [1.0]
        edges = sorted(edges)
        if limit < len(edges) - 1:
            raise ValueError(f"quad: limit={limit} is smaller than the {len(edges) - 1} pieces "
                             f"the break points make")
    lo, hi, active, err = _adaptive(g, edges, epsabs, epsrel, limit, dtype)
    lo = jax.lax.stop_gradient(jnp.where(active, lo, lo[0]))
    hi = jax.lax.stop_gradient(jnp.where(active, hi, hi[0]))
    xk, wk, _ = gauss_kronrod(_GAUSS_ORDER, dtype)
    half = 0.5 * (hi - lo)
    u = (0.5 * (hi + lo))[:, None] + half[:, None] * xk
    w = wk * (half * active)[:, None]
    if extra is None:
        return jnp.sum(w * g(u)), err
    values, extras = extra(x_of_u(u))
    jac = dx_du(u)
    return jnp.sum(w * values * jac), err + jnp.abs(jnp.sum(w * extras * jac))


def quad(func: Callable, a, b, args=(), full_output=0, epsabs=1.49e-8, epsrel=1.49e-8,
         limit=50, points=None, weight=None, wvar=None, wopts=None, maxp1=50, limlst=50,
         complex_func=False):
    """∫_a^b func(x, *args) dx, adaptively, with scipy's signature. Returns ``(value, abserr)``.

    ``func`` maps a scalar ``x`` to a scalar (written with ``jnp``; it is vmapped over the
    nodes, so it need not be vectorised). ``a``/``b`` may be ``±inf`` (Python or numpy
    floats known at trace time); finite limits may be traced and differentiated. ``args``
    are passed on and may be traced. ``points`` are break points inside a finite ``(a, b)``.
    ``limit`` (static) is the largest number of pieces. ``complex_func=True`` integrates the
    real and imaginary parts separately and returns complex value and error, as scipy does.

    The value is a weighted sum on the pieces found by the adaptive search: ``jax.grad``
    differentiates that sum (the choice of pieces is treated as constant). The error is
    QUADPACK's Gauss–Kronrod estimate summed over the pieces; the search stops at
    ``max(epsabs, epsrel·|value|)`` or at ``limit`` pieces (check the returned error: there
    is no warning). There is no Wynn extrapolation (scipy's ``qags``), so an integrable
    endpoint singularity such as ``1/sqrt(x)`` stops near the tolerance (2 - 1.4e-9 for
    ``∫_0^1 x^-1/2``) rather than at machine precision. Not supported: ``weight``/``wvar``/``wopts`` (QUADPACK's weighted
    rules) and ``full_output`` (there is no infodict).
    """
    if weight is not None or wvar is not None or wopts is not None:
        raise NotImplementedError("quad: weight/wvar/wopts (QUADPACK's weighted rules) are not "
                                  "supported; multiply the weight into func instead")
    if full_output:
        raise NotImplementedError("quad: full_output is not supported (no QUADPACK infodict); "
                                  "call with full_output=0 to get (value, abserr)")
    if not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"quad: limit must be a positive int (static), got {limit!r}")
    if not isinstance(args, tuple):
        args = (args,)
    leaves = jax.tree_util.tree_leaves((a, b, args))
    dtype = jnp.result_type(*[jnp.asarray(v).dtype for v in leaves
                              if not isinstance(v, (int, np.integer))] + [float])
    if jnp.issubdtype(dtype, jnp.complexfloating):
        dtype = jnp.finfo(dtype).dtype
    f = _integrand(func, args, dtype)
    if complex_func:
        re, re_err = _quad_real(lambda x: jnp.real(f(x)), a, b, points, epsabs, epsrel,
                                int(limit), dtype)
        im, im_err = _quad_real(lambda x: jnp.imag(f(x)), a, b, points, epsabs, epsrel,
                                int(limit), dtype)
        return re + 1j * im, re_err + 1j * im_err
    return _quad_real(f, a, b, points, epsabs, epsrel, int(limit), dtype)


def dblquad(func: Callable, a, b, gfun, hfun, args=(), epsabs=1.49e-8, epsrel=1.49e-8):
    """∫_a^b ∫_{gfun(x)}^{hfun(x)} func(y, x, *args) dy dx, with scipy's argument order.

    Note scipy's order: ``func(y, x)``, inner variable first. ``gfun``/``hfun`` are callables
    of ``x`` or constants; infinite inner limits must be given as constants (a callable's
    value is traced, so it is taken as finite). Returns ``(value, abserr)``: the outer
    estimate plus the integral of the inner estimates. Differentiable like :func:`quad`.
    """
    if not isinstance(args, tuple):
        args = (args,)
    leaves = jax.tree_util.tree_leaves((a, b, args))
    dtype = jnp.result_type(*[jnp.asarray(v).dtype for v in leaves
                              if not isinstance(v, (int, np.integer))] + [float])

    def inner(x):
        lo = gfun(x) if callable(gfun) else gfun
        hi = hfun(x) if callable(hfun) else hfun
        return quad(lambda y: func(y, x, *args), lo, hi, epsabs=epsabs, epsrel=epsrel)

    def inner_nodes(x):                       # (value, error) at an array of outer nodes
        v, e = jax.vmap(inner)(x.reshape(-1))
        return v.reshape(x.shape), e.reshape(x.shape)

    # one compiled program (eager dispatch would compile the outer loop and the final sum
    # apart: about 2x the compile time)
    return jax.jit(lambda: _quad_real(lambda x: inner_nodes(x)[0], a, b, None, epsabs, epsrel,
                                      50, dtype, extra=inner_nodes))()


def odeint(func: Callable, y0, t, args=(), Dfun=None, col_deriv=0, full_output=0, ml=None,
           mu=None, rtol=None, atol=None, tcrit=None, h0=0.0, hmax=0.0, hmin=0.0, ixpr=0,
           mxstep=0, mxhnil=0, mxordn=12, mxords=5, printmessg=0, tfirst=False):
    """Integrate ``dy/dt = func(y, t, *args)`` with scipy's signature; returns ``(len(t), len(y0))``.

    The solver is JAX's own :func:`jax.experimental.ode.odeint` (adaptive Dormand–Prince
    5(4)), chosen because it adds no dependency and differentiates by the adjoint method
    (reverse mode with respect to ``y0``, ``t`` and ``args`` costs one backward solve, not a
    tape of every step). It is not LSODA: there is no stiff (BDF) switch, so very stiff
    problems take many steps (raise ``mxstep``).

    ``y0`` may be a scalar or a sequence (returned with a trailing axis, as scipy does);
    ``func`` may return a list. ``rtol``/``atol`` default to scipy's 1.49012e-8; ``mxstep``
    (0: scipy's 500) is the step budget per output time; ``hmax > 0`` caps the step.
    ``Dfun`` and the banded/LSODA options are accepted and ignored (autodiff gives the
    Jacobian; the method has no Jacobian); ``tfirst=True`` calls ``func(t, y, *args)``.
    ``full_output`` is not supported. ``args`` must be arrays (they are differentiated).
    """
    if full_output:
        raise NotImplementedError("odeint: full_output is not supported (JAX's solver keeps "
                                  "no LSODA infodict); call with full_output=0")
    if not isinstance(args, tuple):
        args = (args,)
    y0 = jnp.atleast_1d(jnp.asarray(y0))
    if not jnp.issubdtype(y0.dtype, jnp.inexact):
        y0 = y0.astype(jnp.result_type(float))
    t = jnp.asarray(t, y0.dtype)
    if t.ndim != 1:
        raise ValueError(f"odeint: t must be a 1-D sequence of times, got shape {t.shape}")
    args = tuple(jnp.asarray(v) for v in args)

    def rhs(y, s, *args):
        out = func(s, y, *args) if tfirst else func(y, s, *args)
        out = jnp.asarray(out if not isinstance(out, (list, tuple)) else jnp.stack(
            [jnp.asarray(o) for o in out]), y.dtype)
        return out.reshape(y.shape)

    rtol = 1.49012e-8 if rtol is None else rtol
    atol = 1.49012e-8 if atol is None else atol
    steps = 500 if not mxstep else int(mxstep)
    h = math.inf if not hmax else float(hmax)
    return _ode.odeint(rhs, y0, t, *args, rtol=rtol, atol=atol, mxstep=steps, hmax=h)
