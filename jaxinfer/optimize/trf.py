"""scipy's trust-region least-squares methods ``'trf'`` and ``'dogbox'`` as one compiled loop.

The algorithms are those of scipy's ``least_squares`` (Branch, Coleman & Li's trust-region
reflective method; Voglis & Lagaris' dogleg in a rectangular trust region), written for JAX
from their published formulas, with scipy's stopping rules, counters and status codes:

* ``ftol``: ``dF < ftol F`` on an iteration whose reduction ratio exceeds 1/4 (status 2);
  ``xtol``: ``|dx| < xtol (xtol + |x|)`` (status 3), both at once status 4;
  ``gtol``: ``max |v g| < gtol`` with Coleman–Li's scaling ``v`` (trf) or the gradient of the
  free variables (dogbox) (status 1); the evaluation budget ``max_nfev`` (status 0).
* ``nfev`` counts residual evaluations (one per trial step), ``njev`` Jacobians (one per
  accepted step); ``nit`` counts iterations (one Jacobian each).

One trip of the ``lax.while_loop`` is one trial step: the loop state carries the trust radius,
the Levenberg–Marquardt parameter of the subproblem and the factorisation of the current
Jacobian, which is rebuilt only after an accepted step.

Shapes: ``x`` (n,), residuals ``f`` (m,), Jacobian ``J`` (m, n). The subproblem of 'trf' is
solved on the augmented (m + n, n) matrix ``[J D; diag(√(g dv s))]`` by a thin SVD and
Moré's iteration for the multiplier; 'dogbox' uses a least-squares Newton step of the free
variables and the Cauchy point along the anti-gradient.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import io_callback

from jaxinfer.optimize.losses import rho

__all__ = ["TrustRegionStatic", "active_constraints", "trust_region_solve"]

_RUNNING = -99


class TrustRegionStatic(NamedTuple):
    """The compile key of :func:`trust_region_solve` (hashable: callables and flags).

    fun : ``fun(x, *args, **kwargs) -> (m,)``. jac : traceable ``jac(x, *args, **kwargs) ->
    (m, n)`` or None (autodiff). host_jac : ``host_jac(x numpy) -> (m, n) numpy`` for a
    Jacobian that cannot be traced (sparse matrices, operators), called through
    ``pure_callback``; or None. loss : scipy's loss name or callable. method : 'trf' or
    'dogbox'. jac_scale : ``x_scale='jac'``. m : residual count. sink : host callback
    ``(nit, cost, x, new_iteration) -> stop`` or None. bounded : False when every bound is
    infinite ('trf' then skips the reflection logic: a smaller program, the same steps).
    """

    fun: Callable
    jac: Optional[Callable]
    host_jac: Optional[Callable]
    loss: Any
    method: str
    jac_scale: bool
    m: int
    sink: Optional[Callable]
    bounded: bool = True


def active_constraints(x, lower, upper, rtol=1e-10, xp=jnp):
    """scipy's active set: -1 / 1 where x is within ``rtol·max(1, |bound|)`` of a finite
    lower / upper bound (the nearer one), else 0. ``rtol = 0``: only x on or past a bound.
    ``xp``: ``jax.numpy`` (traced) or ``numpy`` (concrete inputs, no compilation)."""
    lo_dist, hi_dist = x - lower, upper - x
    lo_tol = rtol * xp.maximum(1.0, xp.abs(lower))
    hi_tol = rtol * xp.maximum(1.0, xp.abs(upper))
    at_lo = xp.isfinite(lower) & (lo_dist <= xp.minimum(lo_tol, hi_dist))
    at_hi = xp.isfinite(upper) & (hi_dist <= xp.minimum(hi_tol, lo_dist))
    return xp.where(at_lo, -1, xp.where(at_hi, 1, 0)).astype(xp.int32)


def strictly_feasible(x, lower, upper, rstep=1e-10, xp=jnp):
    """Move x off the bounds it touches: by ``rstep·max(1, |bound|)``, or (``rstep = 0``) to
    the next float inside; a box too tight for that gives its midpoint."""
    active = active_constraints(x, lower, upper, rstep, xp)
    if rstep == 0:
        lo_new, hi_new = xp.nextafter(lower, upper), xp.nextafter(upper, lower)
    else:
        lo_new = lower + rstep * xp.maximum(1.0, xp.abs(lower))
        hi_new = upper - rstep * xp.maximum(1.0, xp.abs(upper))
    x = xp.where(active == -1, lo_new, xp.where(active == 1, hi_new, x))
    return xp.where((x < lower) | (x > upper), 0.5 * (lower + upper), x)


def _step_to_bound(x, s, lower, upper):
    """Largest t with ``x + t s`` in the box, and the hit pattern (sign of s where it binds)."""
    nonzero = s != 0
    safe = jnp.where(nonzero, s, 1.0)
    steps = jnp.where(nonzero, jnp.maximum((lower - x) / safe, (upper - x) / safe), jnp.inf)
    t = jnp.min(steps)
    return t, jnp.where(steps == t, jnp.sign(s), 0.0).astype(jnp.int32)


def _in_bounds(x, lower, upper):
    return jnp.all((x >= lower) & (x <= upper))


def _quadratic(J, g, s, diag=None):
    """``½ |J s|² + ½ s·diag·s + g·s``."""
    js = J @ s
    q = js @ js if diag is None else js @ js + (s * diag) @ s
    return 0.5 * q + g @ s


def _quadratic_1d(J, g, s, diag=None, s0=None):
    """Coefficients of ``t -> a t² + b t + c``, the model along ``s0 + t s``."""
    v = J @ s
    a = v @ v if diag is None else v @ v + (s * diag) @ s
    a = 0.5 * a
    b = g @ s
    if s0 is None:
        return a, b, jnp.zeros_like(a)
    u = J @ s0
    b = b + u @ v
    c = 0.5 * (u @ u) + g @ s0
    if diag is not None:
        b = b + (s0 * diag) @ s
        c = c + 0.5 * (s0 * diag) @ s0
    return a, b, c


def _minimise_1d(a, b, lo, hi, c=0.0):
    """Minimiser and value of ``a t² + b t + c`` on ``[lo, hi]`` (ends or the vertex)."""
    vertex = -0.5 * b / jnp.where(a != 0, a, 1.0)
    inside = (a != 0) & (lo < vertex) & (vertex < hi)
    ts = jnp.stack([lo, hi, jnp.where(inside, vertex, lo)])
    ys = ts * (a * ts + b) + c
    k = jnp.argmin(ys)
    return ts[k], ys[k]


def _tr_subproblem(uf, s, V, Delta, alpha0, m, n, eps):
    """Moré's solution of ``min |J p + f|``, ``|p| <= Delta`` from the thin SVD of J
    (``uf = Uᵀ f``): the Gauss–Newton step when it fits, else the boundary step with its
    multiplier found by safeguarded Newton iterations on ``|p(α)| - Δ`` (relative tolerance
    0.01, at most 10). Returns (p, alpha)."""
    suf = s * uf
    full_rank = (m >= n) & (s[-1] > eps * m * s[0])
    s_safe = jnp.where(s > 0, s, 1.0)
    p_gn = -V @ jnp.where(s > 0, uf / s_safe, 0.0)
    gn_fits = full_rank & (jnp.linalg.norm(p_gn) <= Delta)

    def phi(alpha):
        denom = s ** 2 + alpha
        p_norm = jnp.linalg.norm(suf / denom)
        return p_norm - Delta, -jnp.sum(suf ** 2 / denom ** 3) / p_norm

    upper = jnp.linalg.norm(suf) / Delta
    phi0, dphi0 = phi(jnp.zeros_like(Delta))
    lower = jnp.where(full_rank, -phi0 / jnp.where(full_rank, dphi0, 1.0), 0.0)
    restart = lambda lo, hi: jnp.maximum(0.001 * hi, jnp.sqrt(lo * hi))  # noqa: E731
    alpha = jnp.where(~full_rank & (alpha0 == 0), restart(lower, upper), alpha0)

    def body(carry):
        it, alpha, lo, hi, _ = carry
        alpha = jnp.where((alpha < lo) | (alpha > hi), restart(lo, hi), alpha)
        ph, dph = phi(alpha)
        hi = jnp.where(ph < 0, alpha, hi)
        ratio = ph / dph
        lo = jnp.maximum(lo, alpha - ratio)
        alpha = alpha - (ph + Delta) * ratio / Delta
        return it + 1, alpha, lo, hi, jnp.abs(ph) < 0.01 * Delta

    def cond(carry):
        return (carry[0] < 10) & ~carry[4] & ~gn_fits

    _, alpha, _, _, _ = lax.while_loop(cond, body, (0, alpha, lower, upper, jnp.array(False)))
    p = -V @ (suf / (s ** 2 + alpha))
    p = p * (Delta / jnp.linalg.norm(p))
    return jnp.where(gn_fits, p_gn, p), jnp.where(gn_fits, 0.0, alpha)


def _coleman_li(x, g, lower, upper):
    """Coleman–Li's scaling ``v`` (distance to the bound the anti-gradient points at, else 1)
    and its derivative sign ``dv``."""
    to_upper = (g < 0) & jnp.isfinite(upper)
    to_lower = (g > 0) & jnp.isfinite(lower)
    v = jnp.where(to_lower, x - lower, jnp.where(to_upper, upper - x, 1.0))
    dv = jnp.where(to_lower, 1.0, jnp.where(to_upper, -1.0, 0.0))
    return v, dv


def _reflective_step(x, J_h, diag_h, g_h, p, p_h, d, Delta, lower, upper, theta):
    """trf's choice among the (θ-shortened) trust-region step, its reflection off the first
    bound it hits and the Cauchy step along the scaled anti-gradient. Returns
    (step, step_h, predicted reduction)."""
    inside = _in_bounds(x + p, lower, upper)
    p_full, p_h_full, p_value_full = p, p_h, _quadratic(J_h, g_h, p_h, diag_h)
    p_stride, hits = _step_to_bound(x, p, lower, upper)
    p_stride = jnp.where(inside, 1.0, p_stride)
    r_h = jnp.where(hits != 0, -p_h, p_h)
    r = d * r_h
    p, p_h = p * p_stride, p_h * p_stride
    # the reflected direction ends at the trust-region boundary or at the next bound
    a_tr = r_h @ r_h
    b_tr = p_h @ r_h
    c_tr = p_h @ p_h - Delta ** 2
    disc = jnp.sqrt(jnp.maximum(b_tr * b_tr - a_tr * c_tr, 0.0))
    q = -(b_tr + jnp.where(b_tr >= 0, disc, -disc))
    q = jnp.where(q != 0, q, 1.0)
    to_tr = jnp.maximum(q / jnp.where(a_tr > 0, a_tr, 1.0), c_tr / q)
    to_bound, _ = _step_to_bound(x + p, r, lower, upper)
    r_stride = jnp.minimum(to_bound, to_tr)
    positive = r_stride > 0
    r_lo = jnp.where(positive, (1 - theta) * p_stride / jnp.where(positive, r_stride, 1.0), 0.0)
    r_hi = jnp.where(positive, jnp.where(r_stride == to_bound, theta * to_bound, to_tr), -1.0)
    a, b, c = _quadratic_1d(J_h, g_h, r_h, diag_h, s0=p_h)
    t_r, r_value = _minimise_1d(a, b, r_lo, r_hi, c)
    r_value = jnp.where(r_lo <= r_hi, r_value, jnp.inf)
    r_h = t_r * r_h + p_h
    r = d * r_h
    # the interior step, shortened by θ
    p, p_h = theta * p, theta * p_h
    p_value = _quadratic(J_h, g_h, p_h, diag_h)
    ag_h = -g_h
    ag = d * ag_h
    to_tr = Delta / jnp.linalg.norm(ag_h)
    to_bound, _ = _step_to_bound(x, ag, lower, upper)
    ag_stride = jnp.where(to_bound < to_tr, theta * to_bound, to_tr)
    ag_stride = jnp.where(jnp.isfinite(ag_stride), ag_stride, 0.0)   # a zero gradient
    a, b, _ = _quadratic_1d(J_h, g_h, ag_h, diag_h)
    t_ag, ag_value = _minimise_1d(a, b, 0.0, ag_stride)
    ag_h, ag = t_ag * ag_h, t_ag * ag
    pick_p = (p_value < r_value) & (p_value < ag_value)
    pick_r = ~pick_p & (r_value < p_value) & (r_value < ag_value)

    def choose(pv, rv, av):
        return jnp.where(pick_p, pv, jnp.where(pick_r, rv, av))

    step = choose(p, r, ag)
    step_h = choose(p_h, r_h, ag_h)
    pred = -choose(p_value, r_value, ag_value)
    # inside the box the trust-region step is taken whole
    return (jnp.where(inside, p_full, step), jnp.where(inside, p_h_full, step_h),
            jnp.where(inside, -p_value_full, pred))


def _dogleg(x, newton, g, a, b, tr_bounds, lower, upper):
    """dogbox's step in the intersection of the box and the rectangular trust region: the
    Newton step if it fits, else the dogleg path from the Cauchy point towards it, cut at
    the first face. Returns (step, bound_hits (-1/0/1, int), trust-region face hit)."""
    lo_c, hi_c = lower - x, upper - x
    lo_t = jnp.maximum(lo_c, -tr_bounds)
    hi_t = jnp.minimum(hi_c, tr_bounds)
    orig_l, orig_u = lo_t == lo_c, hi_t == hi_c
    tr_l, tr_u = lo_t == -tr_bounds, hi_t == tr_bounds
    fits = _in_bounds(newton, lo_t, hi_t)
    to_bounds, _ = _step_to_bound(jnp.zeros_like(x), -g, lo_t, hi_t)
    t, _ = _minimise_1d(a, b, 0.0, jnp.where(jnp.isfinite(to_bounds), to_bounds, 0.0))
    cauchy = -t * g
    diff = newton - cauchy
    size, hits = _step_to_bound(cauchy, diff, lo_t, hi_t)
    size = jnp.where(jnp.isfinite(size), size, 0.0)
    bound_hits = jnp.where((hits < 0) & orig_l, -1, jnp.where((hits > 0) & orig_u, 1, 0))
    tr_hit = jnp.any(((hits < 0) & tr_l) | ((hits > 0) & tr_u))
    return (jnp.where(fits, newton, cauchy + size * diff),
            jnp.where(fits, 0, bound_hits).astype(jnp.int32), ~fits & tr_hit)


class _Loop(NamedTuple):
    x: Any
    f_true: Any
    f: Any          # loss-scaled residuals
    J: Any          # loss-scaled Jacobian
    g: Any
    cost: Any
    scale_inv: Any
    Delta: Any
    alpha: Any
    on_bound: Any
    nfev: Any
    njev: Any
    nit: Any
    status: Any
    done: Any


def trust_region_solve(static: TrustRegionStatic, x0, args, kwargs, lower, upper, x_scale,
                       f_scale, ftol, xtol, gtol, max_nfev):
    """Run 'trf' or 'dogbox' from ``x0`` (n,) (inside the box; for 'trf' strictly).

    args, kwargs : the user's extra arguments (pytrees of arrays). lower, upper (n,): ±inf
    for none. x_scale (n,): used unless ``static.jac_scale``. f_scale, ftol, xtol, gtol :
    scalars (a tolerance of 0 is off). max_nfev : int scalar. All are traced, so settings
    share one compilation. Returns a dict of scipy's fields (x, cost, fun, jac, grad,
    optimality, active_mask, nfev, njev, status, nit).
    """
    dtype = x0.dtype
    eps = jnp.finfo(dtype).eps
    n, m = x0.shape[0], static.m
    trf = static.method == "trf"

    def fun(x):
        return jnp.ravel(jnp.asarray(static.fun(x, *args, **kwargs))).astype(dtype)

    def jac(x):
        if static.host_jac is not None:
            return jax.pure_callback(static.host_jac, jax.ShapeDtypeStruct((m, n), dtype), x,
                                     args, kwargs)
        if static.jac is not None:
            return jnp.reshape(jnp.asarray(static.jac(x, *args, **kwargs), dtype), (m, n))
        return (jax.jacfwd if m >= n else jax.jacrev)(fun)(x)

    def cost_of(f):
        return 0.5 * jnp.sum(rho(static.loss, f, f_scale)[0])

    def scaled(f, J):
        """scipy's loss scaling: (f̃, J̃) with J̃ᵀJ̃ the Gauss–Newton Hessian of the cost."""
        if static.loss == "linear":
            return f, J
        r = rho(static.loss, f, f_scale)
        j_scale = jnp.sqrt(jnp.maximum(r[1] + 2 * r[2] * f ** 2, eps))
        return f * r[1] / j_scale, J * j_scale[:, None]

    def col_norms(J, old):
        norms = jnp.sqrt(jnp.sum(J ** 2, axis=0))
        return jnp.where(norms == 0, 1.0, norms) if old is None else jnp.maximum(norms, old)

    def measure(st):
        """(g_norm, free mask): the first-order measure scipy tests against gtol."""
        if trf:
            v, _ = _coleman_li(st.x, st.g, lower, upper)
            return jnp.max(jnp.abs(st.g * v)), jnp.ones((n,), bool)
        free = ~(st.on_bound * st.g < 0)
        return jnp.max(jnp.abs(jnp.where(free, st.g, 0.0))), free

    def scale_of(st):
        return (1.0 / st.scale_inv) if static.jac_scale else x_scale

    def trial(st):
        """One trial step from st.x with radius st.Delta: (x_new, step, step_h_norm,
        predicted reduction, trust-region boundary hit, alpha, bound hits)."""
        scale = scale_of(st)
        scale_inv = 1.0 / scale
        g_norm, free = measure(st)
        if trf:
            v, dv = _coleman_li(st.x, st.g, lower, upper)
            v = jnp.where(dv != 0, v * scale_inv, v)
            d = jnp.sqrt(v) * scale
            diag_h = st.g * dv * scale
            g_h = d * st.g
            J_h = st.J * d[None, :]
            if static.bounded:
                aug = jnp.concatenate([J_h, jnp.diag(jnp.sqrt(diag_h))], axis=0)
            else:
                aug = J_h
            U, s, Vt = jnp.linalg.svd(aug, full_matrices=False)
            uf = U[:m].T @ st.f
            p_h, alpha = _tr_subproblem(uf, s, Vt.T, st.Delta, st.alpha, m, n, eps)
            if static.bounded:
                theta = jnp.maximum(0.995, 1 - g_norm)
                step, step_h, pred = _reflective_step(st.x, J_h, diag_h, g_h, d * p_h, p_h,
                                                      d, st.Delta, lower, upper, theta)
                x_new = strictly_feasible(st.x + step, lower, upper, rstep=0)
            else:
                step, step_h, x_new = d * p_h, p_h, st.x + d * p_h
                pred = -_quadratic(J_h, g_h, p_h)
            step_h_norm = jnp.linalg.norm(step_h)
            return (x_new, step, step_h_norm, pred, step_h_norm > 0.95 * st.Delta, alpha,
                    st.on_bound)
        J_free = st.J * free[None, :]
        g_free = jnp.where(free, st.g, 0.0)
        newton = jnp.linalg.lstsq(J_free, -st.f, rcond=eps)[0]
        a, b, _ = _quadratic_1d(J_free, g_free, -g_free)
        step, hits, tr_hit = _dogleg(st.x, jnp.where(free, newton, 0.0), g_free, a, b,
                                     st.Delta * scale, lower, upper)
        step = jnp.where(free, step, 0.0)
        pred = -_quadratic(J_free, g_free, step)
        x_new = jnp.clip(st.x + step, lower, upper)
        return (x_new, step, jnp.max(jnp.abs(step * scale_inv)), pred, tr_hit, st.alpha,
                jnp.where(free, hits, st.on_bound))

    def outer_check(st):
        """scipy's test at the top of an iteration: gtol (it wins over an ftol / xtol stop of
        the step just taken), or the budget spent."""
        g_norm, _ = measure(st)
        status = jnp.where(g_norm < gtol, 1, st.status)
        return st._replace(status=status, done=(status != _RUNNING) | (st.nfev >= max_nfev))

    def body(st):
        x_new, step, step_h_norm, pred, tr_hit, alpha, hits = trial(st)
        f_new = fun(x_new)
        finite = jnp.all(jnp.isfinite(f_new))
        cost_new = cost_of(jnp.where(finite, f_new, 0.0))
        actual = jnp.where(finite, st.cost - cost_new, -1.0)
        ratio = jnp.where(pred > 0, actual / jnp.where(pred > 0, pred, 1.0),
                          jnp.where((actual == 0) & (pred == 0), 1.0, 0.0))
        Delta_new = jnp.where(ratio < 0.25, 0.25 * step_h_norm,
                              jnp.where((ratio > 0.75) & tr_hit, 2.0 * st.Delta, st.Delta))
        Delta_new = jnp.where(finite, Delta_new, 0.25 * step_h_norm)
        step_norm = jnp.linalg.norm(step)
        f_ok = (actual < ftol * st.cost) & (ratio > 0.25)
        x_ok = step_norm < xtol * (xtol + jnp.linalg.norm(st.x))
        term = jnp.where(f_ok & x_ok, 4, jnp.where(f_ok, 2, jnp.where(x_ok, 3, _RUNNING)))
        term = jnp.where(finite, term, _RUNNING)
        stopped = term != _RUNNING
        nfev = st.nfev + 1
        inner_end = stopped | (actual > 0) | (nfev >= max_nfev)
        accepted = actual > 0
        # trf keeps Δ and α of the terminating trial; dogbox updates Δ before its test
        keep = stopped & trf
        Delta = jnp.where(keep, st.Delta, Delta_new)
        alpha = jnp.where(keep | ~finite | ~trf, alpha,
                          alpha * st.Delta / jnp.where(Delta_new > 0, Delta_new, 1.0))

        def accept(_):
            x = x_new
            if not trf:
                x = jnp.where(hits == -1, lower, jnp.where(hits == 1, upper, x))
            f, J = scaled(f_new, jac(x))
            scale_inv = col_norms(J, st.scale_inv) if static.jac_scale else st.scale_inv
            return x, f_new, f, J, J.T @ f, scale_inv, hits

        def reject(_):
            return st.x, st.f_true, st.f, st.J, st.g, st.scale_inv, st.on_bound

        x, f_true, f, J, g, scale_inv, on_bound = lax.cond(accepted, accept, reject, None)
        nit = st.nit + inner_end.astype(st.nit.dtype)
        status = jnp.where(stopped, term, st.status)
        halted = jnp.array(False)
        if static.sink is not None:
            halted = inner_end & io_callback(
                static.sink, jax.ShapeDtypeStruct((), jnp.bool_), nit,
                jnp.where(accepted, cost_new, st.cost), x, inner_end)
        new = _Loop(x=x, f_true=f_true, f=f, J=J, g=g,
                    cost=jnp.where(accepted, cost_new, st.cost), scale_inv=scale_inv,
                    Delta=Delta, alpha=alpha, on_bound=on_bound, nfev=nfev,
                    njev=st.njev + accepted.astype(st.njev.dtype), nit=nit, status=status,
                    done=jnp.array(False))
        checked = outer_check(new)
        stopped_by_user = new._replace(status=jnp.int32(-2), done=jnp.array(True))
        return jax.tree_util.tree_map(
            lambda h, c, n_: jnp.where(halted, h, jnp.where(inner_end, c, n_)),
            stopped_by_user, checked, new)

    f0 = fun(x0)
    f, J = scaled(f0, jac(x0))
    g = J.T @ f
    scale_inv = col_norms(J, None) if static.jac_scale else 1.0 / x_scale
    on_bound = jnp.where(x0 == lower, -1, jnp.where(x0 == upper, 1, 0)).astype(jnp.int32)
    if trf:
        v, dv = _coleman_li(x0, g, lower, upper)
        v = jnp.where(dv != 0, v * scale_inv, v)
        Delta = jnp.linalg.norm(x0 * scale_inv / jnp.sqrt(v))
    else:
        Delta = jnp.max(jnp.abs(x0 * scale_inv))
    Delta = jnp.where(Delta == 0, 1.0, Delta).astype(dtype)
    zero = jnp.zeros((), jnp.int32)
    st = _Loop(x=x0, f_true=f0, f=f, J=J, g=g, cost=cost_of(f0), scale_inv=scale_inv,
               Delta=Delta, alpha=jnp.zeros((), dtype), on_bound=on_bound, nfev=zero + 1,
               njev=zero + 1, nit=zero, status=zero + _RUNNING, done=jnp.array(False))
    st = outer_check(st)
    st = st._replace(done=st.done | ~jnp.all(jnp.isfinite(f0)))   # the caller raises
    st = lax.while_loop(lambda s: ~s.done, body, st)
    g_norm, free = measure(st)
    active = active_constraints(st.x, lower, upper, xtol) if trf else st.on_bound
    return dict(x=st.x, cost=st.cost, fun=st.f_true, jac=st.J,
                grad=st.g, optimality=g_norm, active_mask=active, nfev=st.nfev,
                njev=st.njev, status=jnp.where(st.status == _RUNNING, 0, st.status),
                nit=st.nit)
