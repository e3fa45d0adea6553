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

from typing import Any, Callable, NamedTuple

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
    aux : the auxiliary state returned with the trial ``x`` (searches given ``aux``; else
        None).
    rounding : bool, the search stopped because no step left in its interval can change
        ``f`` by more than its rounding (Moré–Thuente with ``rounding_stop``; else False).
    """

    alpha: jnp.ndarray
    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    nfev: jnp.ndarray
    success: jnp.ndarray
    wolfe: jnp.ndarray
    converged: jnp.ndarray
    aux: Any = None
    rounding: Any = False


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
        # f = -inf: the objective is unbounded below along the direction; take the point
        unbounded = fa == -jnp.inf
        # Armijo fails (or no decrease w.r.t. the best point so far): a becomes the upper end.
        too_high = ((~finite) & ~unbounded) | (fa > f0 + c1 * a * d0) | (fa >= s.lo_f)
        curvature_ok = jnp.abs(da) <= -c2 * d0
        # Approximate Wolfe (Hager & Zhang 2005): at the rounding floor of f, accept a point
        # whose f is within rounding of f0 and whose slope has shrunk, so that gradients can
        # still be driven far below sqrt(eps).
        noise = 10.0 * eps * jnp.abs(f0)
        approx = finite & (fa <= f0 + noise) & (da >= c2 * d0) & (da <= (2.0 * c1 - 1.0) * d0)
        accept = ((~too_high) & curvature_ok) | approx | unbounded
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


# --------------------------------------------------------------------------------------------
# Moré-Thuente (MINPACK-2 dcsrch / dcstep), the line search of scipy's L-BFGS-B
# --------------------------------------------------------------------------------------------


def _safe_div(a, b):
    return a / jnp.where(b == 0, jnp.ones_like(b), b)


def _cubic_gamma(theta, d1, d2, clamp):
    s = jnp.maximum(jnp.maximum(jnp.abs(theta), jnp.abs(d1)), jnp.abs(d2))
    s = jnp.where(s == 0, jnp.ones_like(s), s)
    disc = (theta / s) ** 2 - (d1 / s) * (d2 / s)
    disc = jnp.maximum(disc, 0.0) if clamp else jnp.where(disc >= 0, disc, 0.0)
    return s * jnp.sqrt(disc)


def more_thuente_step(stx, fx, dx, sty, fy, dy, stp, fp, dp, brackt, stpmin, stpmax):
    """One safeguarded step of Moré & Thuente (1994), MINPACK-2's ``dcstep``: the next trial
    and the updated interval ``(stx, fx, dx), (sty, fy, dy)`` of uncertainty (all scalars).
    Returns ``(stx, fx, dx, sty, fy, dy, stp, brackt)``."""
    sgnd = dp * jnp.sign(dx)
    theta_x = 3.0 * _safe_div(fx - fp, stp - stx) + dx + dp
    # case 1: higher function value, the minimum is bracketed
    g1 = _cubic_gamma(theta_x, dx, dp, clamp=False)
    g1 = jnp.where(stp < stx, -g1, g1)
    r1 = _safe_div((g1 - dx) + theta_x, ((g1 - dx) + g1) + dp)
    stpc1 = stx + r1 * (stp - stx)
    stpq1 = stx + _safe_div(dx, _safe_div(fx - fp, stp - stx) + dx) / 2.0 * (stp - stx)
    stpf1 = jnp.where(jnp.abs(stpc1 - stx) < jnp.abs(stpq1 - stx), stpc1,
                      stpc1 + (stpq1 - stpc1) / 2.0)
    # case 2: lower value, derivatives of opposite sign: bracketed
    g2 = _cubic_gamma(theta_x, dx, dp, clamp=False)
    g2 = jnp.where(stp > stx, -g2, g2)
    r2 = _safe_div((g2 - dp) + theta_x, ((g2 - dp) + g2) + dx)
    stpc2 = stp + r2 * (stx - stp)
    stpq2 = stp + _safe_div(dp, dp - dx) * (stx - stp)
    stpf2 = jnp.where(jnp.abs(stpc2 - stp) > jnp.abs(stpq2 - stp), stpc2, stpq2)
    # case 3: lower value, same sign, the derivative decreases in magnitude
    g3 = _cubic_gamma(theta_x, dx, dp, clamp=True)
    g3 = jnp.where(stp > stx, -g3, g3)
    r3 = _safe_div((g3 - dp) + theta_x, (g3 + (dx - dp)) + g3)
    stpc3 = jnp.where((r3 < 0) & (g3 != 0), stp + r3 * (stx - stp),
                      jnp.where(stp > stx, stpmax, stpmin))
    stpq3 = stp + _safe_div(dp, dp - dx) * (stx - stp)
    near = jnp.where(jnp.abs(stpc3 - stp) < jnp.abs(stpq3 - stp), stpc3, stpq3)
    far = jnp.where(jnp.abs(stpc3 - stp) > jnp.abs(stpq3 - stp), stpc3, stpq3)
    bound = stp + 0.66 * (sty - stp)
    stpf3 = jnp.where(brackt,
                      jnp.where(stp > stx, jnp.minimum(bound, near), jnp.maximum(bound, near)),
                      jnp.clip(far, stpmin, stpmax))
    # case 4: lower value, same sign, the derivative does not decrease
    theta_y = 3.0 * _safe_div(fp - fy, sty - stp) + dy + dp
    g4 = _cubic_gamma(theta_y, dy, dp, clamp=False)
    g4 = jnp.where(stp > sty, -g4, g4)
    r4 = _safe_div((g4 - dp) + theta_y, ((g4 - dp) + g4) + dy)
    stpf4 = jnp.where(brackt, stp + r4 * (sty - stp), jnp.where(stp > stx, stpmax, stpmin))

    case1 = fp > fx
    case2 = (~case1) & (sgnd < 0)
    case3 = (~case1) & (~case2) & (jnp.abs(dp) < jnp.abs(dx))
    stpf = jnp.where(case1, stpf1, jnp.where(case2, stpf2, jnp.where(case3, stpf3, stpf4)))
    brackt = brackt | case1 | case2
    # update the interval
    new_sty = jnp.where(case1, stp, jnp.where(sgnd < 0, stx, sty))
    new_fy = jnp.where(case1, fp, jnp.where(sgnd < 0, fx, fy))
    new_dy = jnp.where(case1, dp, jnp.where(sgnd < 0, dx, dy))
    new_stx = jnp.where(case1, stx, stp)
    new_fx = jnp.where(case1, fx, fp)
    new_dx = jnp.where(case1, dx, dp)
    return new_stx, new_fx, new_dx, new_sty, new_fy, new_dy, stpf, brackt


class _MTState(NamedTuple):
    nfev: jnp.ndarray
    stp: jnp.ndarray
    brackt: jnp.ndarray
    stage2: jnp.ndarray
    stx: jnp.ndarray
    fx: jnp.ndarray
    gx: jnp.ndarray
    sty: jnp.ndarray
    fy: jnp.ndarray
    gy: jnp.ndarray
    stmin: jnp.ndarray
    stmax: jnp.ndarray
    width: jnp.ndarray
    width1: jnp.ndarray
    x: jnp.ndarray   # the last trial point, its objective, gradient and auxiliary state
    f: jnp.ndarray
    g: jnp.ndarray
    aux: Any
    conv: jnp.ndarray  # dcsrch's tests on that trial: converged, search ended
    done: jnp.ndarray
    rounding: jnp.ndarray  # stopped at the rounding level of f (rounding_stop)
    fdev: jnp.ndarray      # max |f(trial) - f0| over the trials so far (rounding_stop)


def more_thuente_line_search(value_and_grad_at: Callable, x, f0, g0, direction, alpha_init,
                             alpha_max, ftol: float = 1e-3, gtol: float = 0.9,
                             xtol: float = 0.1, maxls=20,
                             project: Callable = None, stpmin: float = 0.0,
                             aux: Any = None, rounding_stop: bool = False) -> LineSearchResult:
    """Moré & Thuente's line search (MINPACK-2 ``dcsrch``, scipy L-BFGS-B's constants by
    default): a step in ``[0, alpha_max]`` with sufficient decrease (``ftol``) and the strong
    curvature condition (``gtol``), or one of dcsrch's warnings (rounding errors prevent
    progress, interval below ``xtol``, the step at ``alpha_max``), all ``converged=True``
    with the last trial returned, as scipy does. ``success`` additionally requires the trial
    to be no higher than ``f0``. A trial with ``f = -inf`` (unbounded below) ends the search
    as a Wolfe point. ``stpmin`` is dcsrch's smallest step (0 for L-BFGS-B, scipy's 1e-8 for
    BFGS). ``maxls`` may be traced (>= 1).

    The objective is called in one place (the loop body; the first trial is its first trip),
    so it is compiled once. With ``aux`` (a pytree, not None) it is called as
    ``value_and_grad_at(x, aux) -> (f, g, aux_new)``, every trial from the given ``aux``, and
    the result carries the returned trial's ``aux_new``.

    ``rounding_stop`` (not in dcsrch; off by default): once the minimum is bracketed, stop
    when every trial so far was within rounding of ``f0`` (``|f - f0| <= 2 eps |f0|``) and
    no step in the interval can change ``f`` by more than one unit of rounding to first
    order (``max(stx, sty) * max(|f'(0)|, |f'(stx)|, |f'(sty)|) <= eps |f0|``). There
    dcsrch (and scipy) would spend the rest of ``maxls`` on trials whose values differ from
    ``f0`` only by rounding. (An interval that shrank to rounding width after trials far
    above ``f0``, e.g. a gradient inconsistent with ``f``, is not such a stop.) The result then has ``rounding=True``, ``converged=False`` and the last
    trial (the caller keeps its point: L-BFGS-B ends with its ``ftol`` test). Other
    arguments as :func:`wolfe_line_search`."""
    dtype = x.dtype
    ginit = jnp.vdot(g0, direction)
    gtest = ftol * ginit
    stpmax = jnp.asarray(alpha_max, dtype)
    stp0 = jnp.minimum(jnp.asarray(alpha_init, dtype), stpmax)
    zero = jnp.zeros((), dtype)
    width = stpmax

    def point(a):
        xa = x + a * direction
        return project(xa) if project is not None else xa

    init = _MTState(nfev=jnp.zeros((), jnp.int32), stp=stp0,
                    brackt=jnp.asarray(False), stage2=jnp.asarray(False),
                    stx=zero, fx=f0, gx=ginit, sty=zero, fy=f0, gy=ginit,
                    stmin=zero, stmax=stp0 + 4.0 * stp0, width=width, width1=2.0 * width,
                    x=x, f=f0, g=g0, aux=aux, conv=jnp.asarray(False),
                    done=jnp.asarray(False), rounding=jnp.asarray(False), fdev=zero)

    def evaluate(s, stp):
        """The trial at ``stp``: the state with its point, objective, gradient (and aux), one
        more evaluation counted."""
        xa = point(stp)
        if aux is None:
            fa, ga = value_and_grad_at(xa)
            new_aux = None
        else:
            fa, ga, new_aux = value_and_grad_at(xa, aux)
        return s._replace(nfev=s.nfev + 1, stp=stp, x=xa, f=fa, g=ga, aux=new_aux)

    def tests(s):
        """dcsrch's tests on the evaluated trial ``s.stp``: ``(f, f', ftest, stage2, conv,
        done)`` (a non-finite trial counts as a very high value and never ends the search)."""
        stp = s.stp
        da = jnp.vdot(s.g, direction)
        finite = jnp.isfinite(s.f) & jnp.isfinite(da)
        unbounded = s.f == -jnp.inf
        fa_s = jnp.where(finite, s.f, jnp.asarray(jnp.finfo(dtype).max, dtype))
        da_s = jnp.where(finite, da, -ginit)
        ftest = f0 + stp * gtest
        stage2 = s.stage2 | ((fa_s <= ftest) & (da_s >= 0))
        warn = ((s.brackt & ((stp <= s.stmin) | (stp >= s.stmax)))
                | (s.brackt & (s.stmax - s.stmin <= xtol * s.stmax))
                | ((stp == stpmax) & (fa_s <= ftest) & (da_s <= gtest))
                | ((stp == stpmin) & ((fa_s > ftest) | (da_s >= gtest))))
        conv = ((fa_s <= ftest) & (jnp.abs(da_s) <= gtol * (-ginit)) & finite) | unbounded
        return fa_s, da_s, ftest, stage2, conv, ((warn | conv) & finite) | unbounded

    def update(s, fa_s, da_s, ftest, stage2):
        """dcstep's next trial and interval after a trial that did not end the search."""
        stp = s.stp
        # dcstep on the modified function psi(a) = f(a) - f0 - a * gtest in stage 1
        modified = (~stage2) & (fa_s <= s.fx) & (fa_s > ftest)
        sh = jnp.where(modified, gtest, 0.0)
        stx, fx, gx, sty, fy, gy, nstp, brackt = more_thuente_step(
            s.stx, s.fx - s.stx * sh, s.gx - sh, s.sty, s.fy - s.sty * sh, s.gy - sh,
            stp, fa_s - stp * sh, da_s - sh, s.brackt, s.stmin, s.stmax)
        fx, fy, gx, gy = fx + stx * sh, fy + sty * sh, gx + sh, gy + sh
        # bisect when the interval does not shrink fast enough
        bisect = brackt & (jnp.abs(sty - stx) >= 0.66 * s.width1)
        nstp = jnp.where(bisect, stx + 0.5 * (sty - stx), nstp)
        width1 = jnp.where(brackt, s.width, s.width1)
        width = jnp.where(brackt, jnp.abs(sty - stx), s.width)
        stmin = jnp.where(brackt, jnp.minimum(stx, sty), nstp + 1.1 * (nstp - stx))
        stmax = jnp.where(brackt, jnp.maximum(stx, sty), nstp + 4.0 * (nstp - stx))
        nstp = jnp.clip(nstp, stpmin, stpmax)
        stuck = brackt & ((nstp <= stmin) | (nstp >= stmax) | (stmax - stmin <= xtol * stmax))
        nstp = jnp.where(stuck, stx, nstp)
        if rounding_stop:
            slope = jnp.maximum(jnp.maximum(jnp.abs(ginit), jnp.abs(gx)), jnp.abs(gy))
            unit = jnp.finfo(dtype).eps * jnp.abs(f0)
            fdev = jnp.maximum(s.fdev, jnp.abs(fa_s - f0))
            rounding = (brackt & (jnp.maximum(stx, sty) * slope <= unit)
                        & (fdev <= 2.0 * unit))
            nstp = jnp.where(rounding, stp, nstp)     # the result is the last trial
        else:
            rounding, fdev = s.rounding, s.fdev
        return s._replace(stp=nstp, brackt=brackt, stage2=stage2, stx=stx, fx=fx, gx=gx,
                          sty=sty, fy=fy, gy=gy, stmin=stmin, stmax=stmax, width=width,
                          width1=width1, rounding=rounding, fdev=fdev)

    # The loop carries the scalars packed in two vectors (floats, flags): each scalar of a
    # loop's state is otherwise a copy into and out of the loop per trip, a kernel launch
    # each (~40 per L-BFGS-B iteration, 10-15 % of spt dv's warm run).
    floats = ("stp", "stx", "fx", "gx", "sty", "fy", "gy", "stmin", "stmax", "width",
              "width1", "fdev")
    flags = ("brackt", "stage2", "conv", "done", "rounding")
    kinds = {k: jnp.result_type(getattr(init, k)) for k in floats}
    packed = jnp.result_type(*kinds.values())

    def pack(s):
        return (s.nfev, jnp.stack([jnp.asarray(getattr(s, k), packed) for k in floats]),
                jnp.stack([getattr(s, k) for k in flags]), s.x, s.f, s.g, s.aux)

    def unpack(c):
        nfev, fl, bl, x, f, g, aux_ = c
        return _MTState(nfev=nfev, x=x, f=f, g=g, aux=aux_,
                        **{k: fl[i].astype(kinds[k]) for i, k in enumerate(floats)},
                        **{k: bl[i] for i, k in enumerate(flags)})

    def cond(c):
        s = unpack(c)
        return (~s.done) & (~s.rounding) & (s.nfev < maxls)

    def dcstep_branch(c):
        s = unpack(c)
        fa_s, da_s, ftest, stage2, _, _ = tests(s)
        return pack(update(s, fa_s, da_s, ftest, stage2))

    # One trip: evaluate the trial, test it, and unless that ends the search take dcstep's
    # next trial (a branch: most quasi-Newton searches end at their first trial, and there
    # dcstep's scalar work would cost more than the branch).
    def body(c):
        s = evaluate(unpack(c), unpack(c).stp)
        _, _, _, _, conv, done = tests(s)
        c = pack(s._replace(conv=conv, done=done))
        return lax.cond(done | (s.nfev >= maxls), lambda c: c, dcstep_branch, c)

    s = unpack(lax.while_loop(cond, body, pack(init)))
    conv, done = s.conv, s.done
    success = done & (s.f <= f0) & (s.stp > 0)
    return LineSearchResult(alpha=s.stp, x=s.x, f=s.f, g=s.g, nfev=s.nfev, success=success,
                            wolfe=conv & success, converged=done, aux=s.aux,
                            rounding=s.rounding)


def scipy_wolfe12(value_and_grad_at: Callable, x, f0, g0, direction, alpha_init,
                  c1: float = 1e-4, c2: float = 0.9, maxls: int = 30, amin: float = 1e-100,
                  amax: float = 1e100) -> LineSearchResult:
    """scipy's line search for BFGS (``_line_search_wolfe12``): Moré–Thuente (dcsrch with
    ``xtol=1e-14``, steps in ``[amin, amax]``, at most 100 evaluations) taken only when it
    converges to a strong-Wolfe point; otherwise the bracketing / zoom search
    (:func:`wolfe_line_search`, ``maxls`` evaluations, steps up to ``amax``) from the same
    point, the evaluations of both counted. ``c1`` shapes the Moré–Thuente trials (through
    its modified function), not only the acceptance test. ``amin`` / ``amax`` default to
    BFGS's (1e-100, 1e100; ``amax`` capped at the dtype's largest number). Arguments as
    :func:`wolfe_line_search`."""
    dtype = x.dtype
    big = min(float(amax), float(jnp.finfo(dtype).max))
    mt = more_thuente_line_search(value_and_grad_at, x, f0, g0, direction, alpha_init,
                                  jnp.asarray(big, dtype), ftol=c1, gtol=c2, xtol=1e-14,
                                  maxls=100, stpmin=amin)

    def fallback():
        nw = wolfe_line_search(value_and_grad_at, x, f0, g0, direction, alpha_init,
                               jnp.asarray(big, dtype), c1=c1, c2=c2, maxls=maxls)
        return nw._replace(nfev=nw.nfev + mt.nfev)

    return lax.cond(mt.wolfe, lambda: mt, fallback)
