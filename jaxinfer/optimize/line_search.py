"""Strong-Wolfe line search as one ``lax.while_loop`` (jit- and vmap-safe).

Used by BFGS, L-BFGS-B and Newton-CG. The search is over ``phi(alpha) = f(point(alpha))``
where ``point(alpha)`` is usually ``x + alpha * p`` (clipped into the bounds for L-BFGS-B,
whose search segment is feasible for ``alpha <= alpha_max``).

Algorithm: bracketing then zoom (Nocedal & Wright, *Numerical Optimization*, 2nd ed.,
algorithms 3.5 and 3.6) with safeguarded cubic interpolation. The search stops by a rule
(``converged``): a strong-Wolfe point, an approximate-Wolfe point at the rounding floor of
``f``, still descending at ``alpha_max``, or a bracket collapsed to rounding width. When the
evaluation budget runs out first, the best sufficient-decrease (Armijo) point found is still
returned (``success``), with ``converged=False``; callers decide whether to take it (Newton-CG
does; L-BFGS-B treats it as a failed search, as scipy does).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp
from jax import lax


class LineSearchResult(NamedTuple):
    """Outcome of :func:`wolfe_line_search`.

    alpha : scalar, the accepted step (0 when no Armijo point was found).
    x, f, g : the point, objective and gradient vector (n,) at ``alpha``.
    nfev : number of objective+gradient evaluations spent.
    success : bool, a step with sufficient decrease was found.
    wolfe : bool, the step also satisfies the strong curvature condition (or its
        approximate form at the rounding floor of ``f``).
    converged : bool, the search stopped by one of its rules, not by running out of
        evaluations.
    """

    alpha: jnp.ndarray
    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    nfev: jnp.ndarray
    success: jnp.ndarray
    wolfe: jnp.ndarray
    converged: jnp.ndarray


class _LSState(NamedTuple):
    nfev: jnp.ndarray
    done: jnp.ndarray
    wolfe: jnp.ndarray
    bracketed: jnp.ndarray
    trial: jnp.ndarray
    lo_a: jnp.ndarray
    lo_f: jnp.ndarray
    lo_d: jnp.ndarray
    lo_x: jnp.ndarray
    lo_g: jnp.ndarray
    hi_a: jnp.ndarray
    hi_f: jnp.ndarray
    hi_d: jnp.ndarray


def _cubic_minimizer(a1, f1, d1, a2, f2, d2):
    """Minimiser of the cubic interpolating (a1, f1, f'1) and (a2, f2, f'2); NaN if none."""
    t1 = d1 + d2 - 3.0 * (f1 - f2) / (a1 - a2)
    disc = t1 * t1 - d1 * d2
    t2 = jnp.sign(a2 - a1) * jnp.sqrt(jnp.where(disc >= 0, disc, jnp.nan))
    return a2 - (a2 - a1) * (d2 + t2 - t1) / (d2 - d1 + 2.0 * t2)


def wolfe_line_search(
    value_and_grad_at: Callable,
    x: jnp.ndarray,
    f0: jnp.ndarray,
    g0: jnp.ndarray,
    direction: jnp.ndarray,
    alpha_init,
    alpha_max,
    c1: float = 1e-4,
    c2: float = 0.9,
    maxls: int = 20,
    project: Callable = None,
) -> LineSearchResult:
    """Find ``alpha`` in ``(0, alpha_max]`` satisfying the strong Wolfe conditions.

    Parameters
    ----------
    value_and_grad_at : ``x (n,) -> (f scalar, g (n,))``.
    x, f0, g0 : start point, its objective and gradient.
    direction : (n,) a descent direction (``g0 @ direction < 0``).
    alpha_init, alpha_max : first trial step and the largest allowed step.
    c1, c2 : sufficient-decrease and curvature constants (0 < c1 < c2 < 1).
    maxls : evaluation budget.
    project : optional ``x -> x`` applied to every trial point (e.g. clipping to bounds).
    """
    dtype = x.dtype
    d0 = jnp.vdot(g0, direction)
    alpha_max = jnp.asarray(alpha_max, dtype)
    alpha_init = jnp.minimum(jnp.asarray(alpha_init, dtype), alpha_max)
    eps = jnp.finfo(dtype).eps

    def point(a):
        xa = x + a * direction
        return project(xa) if project is not None else xa

    zero = jnp.zeros((), dtype)
    init = _LSState(
        nfev=jnp.zeros((), jnp.int32),
        done=jnp.asarray(False),
        wolfe=jnp.asarray(False),
        bracketed=jnp.asarray(False),
        trial=alpha_init,
        lo_a=zero, lo_f=f0, lo_d=d0, lo_x=x, lo_g=g0,
        hi_a=zero, hi_f=f0, hi_d=d0,
    )

    def cond(s):
        return (~s.done) & (s.nfev < maxls)

    def body(s):
        a = s.trial
        xa = point(a)
        fa, ga = value_and_grad_at(xa)
        da = jnp.vdot(ga, direction)
        finite = jnp.isfinite(fa) & jnp.isfinite(da)
        # Armijo fails (or no decrease w.r.t. the best point so far): a becomes the upper end.
        too_high = (~finite) | (fa > f0 + c1 * a * d0) | (fa >= s.lo_f)
        curvature_ok = jnp.abs(da) <= -c2 * d0
        # Approximate Wolfe (Hager & Zhang 2005): at the rounding floor of f, accept a point
        # whose f is within rounding of f0 and whose slope has shrunk, so that gradients can
        # still be driven far below sqrt(eps).
        noise = 10.0 * eps * jnp.abs(f0)
        approx = finite & (fa <= f0 + noise) & (da >= c2 * d0) & (da <= (2.0 * c1 - 1.0) * d0)
        accept = ((~too_high) & curvature_ok) | approx
        too_high = too_high & ~accept
        # Derivative points back towards lo: the old lo becomes hi, a becomes lo.
        flip = (~too_high) & (~curvature_ok) & jnp.where(
            s.bracketed, da * (s.hi_a - s.lo_a) >= 0, da >= 0)
        move_lo = ~too_high
        new_hi_a = jnp.where(too_high, a, jnp.where(flip, s.lo_a, s.hi_a))
        new_hi_f = jnp.where(too_high, jnp.where(finite, fa, jnp.inf),
                             jnp.where(flip, s.lo_f, s.hi_f))
        new_hi_d = jnp.where(too_high, jnp.where(finite, da, jnp.nan),
                             jnp.where(flip, s.lo_d, s.hi_d))
        lo_a = jnp.where(move_lo, a, s.lo_a)
        lo_f = jnp.where(move_lo, fa, s.lo_f)
        lo_d = jnp.where(move_lo, da, s.lo_d)
        lo_x = jnp.where(move_lo, xa, s.lo_x)
        lo_g = jnp.where(move_lo, ga, s.lo_g)
        bracketed = s.bracketed | too_high | flip
        # Next trial: zoom by safeguarded cubic interpolation, or extrapolate.
        left = jnp.minimum(lo_a, new_hi_a)
        right = jnp.maximum(lo_a, new_hi_a)
        width = right - left
        cubic = _cubic_minimizer(lo_a, lo_f, lo_d, new_hi_a, new_hi_f, new_hi_d)
        # keep the trial at least 10% of the interval away from either end (clamp, so that a
        # far too long first step shrinks by 10x per evaluation, not 2x); bisect if no cubic
        zoom_trial = jnp.where(jnp.isfinite(cubic),
                               jnp.clip(cubic, left + 0.1 * width, right - 0.1 * width),
                               0.5 * (lo_a + new_hi_a))
        extrap_trial = jnp.minimum(4.0 * a, alpha_max)
        trial = jnp.where(bracketed, zoom_trial, extrap_trial)
        # Stop: Wolfe point found; or still descending at alpha_max; or interval collapsed.
        at_max = (~bracketed) & (a >= alpha_max)
        collapsed = bracketed & (width <= eps * jnp.maximum(right, eps))
        done = accept | at_max | collapsed
        return _LSState(
            nfev=s.nfev + 1, done=done, wolfe=accept, bracketed=bracketed, trial=trial,
            lo_a=lo_a, lo_f=lo_f, lo_d=lo_d, lo_x=lo_x, lo_g=lo_g,
            hi_a=new_hi_a, hi_f=new_hi_f, hi_d=new_hi_d,
        )

    s = lax.while_loop(cond, body, init)
    success = s.lo_a > 0
    return LineSearchResult(alpha=s.lo_a, x=s.lo_x, f=s.lo_f, g=s.lo_g, nfev=s.nfev,
                            success=success, wolfe=s.wolfe & success, converged=s.done)
