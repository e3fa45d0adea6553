"""Quasi-Newton solvers: dense BFGS and limited-memory L-BFGS-B with box bounds.

Both are solvers of the one shape (:class:`~jaxinfer.optimize._iterate.AbstractSolver`): a
final module of settings with ``init / step / terminate / postprocess / progress`` over a
public state module, run by :func:`~jaxinfer.optimize._iterate.iterate`. They work on a flat
parameter vector ``x (n,)`` and ``fn(x, args) -> (f, g)`` (objective and gradient); use
:func:`jaxinfer.optimize.minimize` for pytrees and scipy-style options. By hand::

    solver = LBFGSB(lower=lb, upper=ub)
    state = solver.init(fn, x0, args)
    while solver.terminate(fn, state, args) == RUNNING:
        state = solver.step(fn, state, args)

L-BFGS-B follows scipy's rules (Byrd, Lu, Nocedal & Zhu 1995; scipy's ``lbfgsb``) where they
decide what is reported:

* stop on ``max |projected gradient| <= gtol``, or when an iteration's relative reduction
  ``(f_k - f_{k+1}) / max(|f_k|, |f_{k+1}|, 1) <= ftol``, or on ``maxiter`` / ``maxfun``;
* the memory pair ``(s, y)`` is stored only when ``s.y > eps * (-g.s)``; the initial
  inverse-Hessian scale is ``s.y / y.y`` of the newest pair (scipy's ``1 / theta``);
* the first iteration tries ``min(1 / |d|, 1)`` (bounded) or ``1 / |d|`` (unbounded); later
  ones try 1; the largest step is the longest feasible one along ``d`` (scipy's ``stpmx``);
* the line search is Moré & Thuente's (MINPACK-2 ``dcsrch``, ftol = 1e-3, gtol = 0.9,
  xtol = 0.1, at most ``maxls`` evaluations), whose warnings (rounding errors, xtol, step at
  ``stpmx``) end the search with the last trial, as in scipy;
* a line search that ends without an acceptable point (budget exhausted, or a trial above
  ``f_k``) is undone: with a non-empty memory the memory is dropped and the iteration
  restarts; with an empty one the run stops as failed (scipy's
  ``ABNORMAL_TERMINATION_IN_LNSRCH``; in float32 :attr:`Status.PRECISION`, since there it
  means the objective is at its rounding noise and float64 is needed);
* except at the noise floor of ``f``: when the failed search's trials were all at or above
  ``f_k`` and the first-order bound on any gain along the step, ``alpha0 |g.p|``, is itself
  below the ``ftol`` test, the run stops with ``FTOL`` at ``x_k``. scipy reaches the same
  stop by accepting dcsrch's warned (uphill) trial, whose reduction then passes its ftol
  test; we keep the better point. (EP's marginal likelihood is only ~1e-9 smooth at its
  optimum: glmm's Poisson fit ends this way.) The search itself stops early there
  (``rounding_stop`` of :func:`more_thuente_line_search`) once its interval leaves no step
  that could change ``f`` by more than ``eps |f_k|``: dcsrch has no such test, and scipy
  spends all ``maxls`` trials on values equal to ``f_k`` up to rounding, then restarts
  from steepest descent (another search of the same kind) before it stops;

Without active bounds the iterates are scipy's to rounding. Two deliberate differences in
the rules, both against reporting convergence that did not happen:

* the ``ftol`` test uses ``max(f_k - f_{k+1}, -g_k.d_k / 2)``: the measured reduction, or
  the decrease the quasi-Newton model promised for the full step if that is larger. A step
  cut short by the line search (a tiny ``alpha``), or taken at the rounding floor of ``f``
  (no measured reduction at all: scipy's ``(f_k - f_{k+1}) <= ftol * ...`` then passes
  trivially), does not end the run while the model still expects progress; this matters
  wherever ``f`` is noisier than its gradient (float32, objectives of large cancelling
  terms such as spt's posteriors);
* the ``ftol`` test must pass on ``ftol_iterations`` (2) consecutive iterations: on slowly
  converging, ill-conditioned objectives (spt's ``df`` without a force prior) one short
  step in a run of long ones otherwise ends the run at a point that depends on rounding;
* ``ftol`` below the dtype's resolution is raised to ``eps(dtype)`` (a relative reduction
  below it cannot be measured; ``ftol=0`` turns the test off).

With a finite bound, the search direction is scipy's: the generalised Cauchy point along the
projected steepest-descent path of the compact L-BFGS model (:func:`cauchy_point`), then
direct primal subspace minimisation over the variables free there, projected onto the box
or cut back to it (:func:`subspace_minimum`, as L-BFGS-B 3.0); so iterates with active
bounds follow scipy's (tests/optimize/test_scipy_compat_minimize.py). Without any finite
bound the two-loop recursion gives the same step without the Cauchy point's cost.
"""

from __future__ import annotations

from typing import Any, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from jaxinfer.optimize._iterate import (RUNNING, AbstractSolver, Progress, all_finite,
                                        first_status)
from jaxinfer.optimize.line_search import more_thuente_line_search, scipy_wolfe12
from jaxinfer.optimize.result import OptimizeResult, Status

SCIPY_FTOL = 2.2204460492503131e-09  # scipy's default factr * eps(float64) = 1e7 * 2.2e-16
_BIG_STEP = 1e10                      # scipy's stpmx when no bound limits the step


def projected_gradient(x, g, lb, ub):
    """``clip(x - g, lb, ub) - x`` (n,): zero exactly at a KKT point of the box problem."""
    return jnp.clip(x - g, lb, ub) - x


def resolved_ftol(ftol: Optional[float], dtype) -> float:
    """The relative-reduction tolerance used for ``dtype``: ``ftol`` (None: scipy's 2.2e-9),
    raised to ``eps(dtype)`` where it is below what the dtype can resolve (float32); 0 turns
    the test off (only strict decreases are accepted, so a zero reduction never occurs)."""
    base = SCIPY_FTOL if ftol is None else float(ftol)
    if base < 0:
        raise ValueError(f"ftol must be >= 0, got {ftol}")
    return 0.0 if base == 0 else max(base, float(jnp.finfo(dtype).eps))


def _low_precision(dtype) -> bool:
    return float(jnp.finfo(dtype).eps) > 1e-10


def _max_feasible_step(x, p, lb, ub):
    """Longest ``a`` with ``lb <= x + a p <= ub`` (scipy's ``stpmx``), capped at 1e10."""
    down = (p < 0) & jnp.isfinite(lb)
    up = (p > 0) & jnp.isfinite(ub)
    safe_p = jnp.where(down | up, p, 1.0)
    ratio = jnp.where(down, (lb - x) / safe_p, jnp.where(up, (ub - x) / safe_p, _BIG_STEP))
    return jnp.clip(jnp.min(ratio, initial=_BIG_STEP), 0.0, _BIG_STEP)


# --------------------------------------------------------------------------------------
# L-BFGS-B
# --------------------------------------------------------------------------------------


class LBFGSBState(eqx.Module):
    """State of an L-BFGS-B run (all arrays; ``n`` parameters, ``m = maxcor`` pairs)."""

    x: jnp.ndarray          # (n,) current iterate (always inside the bounds)
    f: jnp.ndarray          # objective at x
    g: jnp.ndarray          # (n,) gradient at x
    f_prev: jnp.ndarray     # objective before the last accepted step
    s_mem: jnp.ndarray      # (m, n) steps, circular buffer
    y_mem: jnp.ndarray      # (m, n) gradient changes
    count: jnp.ndarray      # number of valid pairs (<= m)
    head: jnp.ndarray       # next slot to write
    gamma: jnp.ndarray      # initial inverse-Hessian scale s'y / y'y of the newest pair
    nit: jnp.ndarray        # accepted iterations
    nfev: jnp.ndarray       # objective + gradient evaluations
    small_steps: jnp.ndarray  # consecutive accepted iterations with relative reduction <= ftol
    failed: jnp.ndarray     # a line search failed with an empty memory: nothing left to try
    started: jnp.ndarray    # x0 evaluated (by the first step; until then f is NaN, g zero)
    aux: Any = None         # the accepted iterate's auxiliary state (solvers given aux0)


class LbfgsInvHessProduct(eqx.Module):
    """The L-BFGS inverse-Hessian approximation as an operator, as scipy's object of the
    same name: ``H(v)`` / ``H @ v`` / ``matvec(v)`` / ``dot(v)`` for ``v`` (n,) or (n, k)
    over the flattened parameters, ``todense() -> (n, n)``, and scipy's attributes ``sk``,
    ``yk`` (n_corrs, n) (oldest pair first), ``rho`` (1 / s'y), ``n_corrs``, ``shape``,
    ``dtype``. Like scipy's, the initial matrix of the recursion is the identity.

    A pytree, so it passes through jit and vmap: there ``sk``/``yk`` keep all ``maxcor``
    rows and unused rows have ``rho = 0`` (they act as the identity); results returned
    outside a trace are trimmed to the stored pairs (:meth:`trimmed`).
    """

    sk: jnp.ndarray     # (m, n) steps, oldest first (unused rows are zero)
    yk: jnp.ndarray     # (m, n) gradient changes, oldest first
    rho: jnp.ndarray    # (m,) 1 / s'y, 0 for unused rows
    count: jnp.ndarray  # number of stored pairs

    @property
    def n_corrs(self) -> int:
        return int(self.count)

    @property
    def shape(self):
        n = self.sk.shape[-1]
        return (n, n)

    @property
    def dtype(self):
        return self.sk.dtype

    def __repr__(self):
        n = self.shape[0]
        return f"<{n}x{n} LbfgsInvHessProduct with dtype={self.dtype}>"   # scipy's

    def trimmed(self) -> "LbfgsInvHessProduct":
        """The operator with only its ``n_corrs`` stored pairs (needs concrete values)."""
        k = self.n_corrs
        return LbfgsInvHessProduct(sk=self.sk[:k], yk=self.yk[:k], rho=self.rho[:k],
                                   count=self.count)

    def matvec(self, v):
        v = jnp.asarray(v, self.dtype)
        if v.ndim == 2:
            return jax.vmap(self.matvec, in_axes=1, out_axes=1)(v)
        ones = jnp.ones((), self.dtype)
        m = self.sk.shape[0]
        return _two_loop(self.sk, self.yk, self.rho, ones, v.reshape(-1), m - 1)

    matmat = matvec
    rmatvec = matvec  # symmetric
    dot = matvec
    __matmul__ = matvec
    __call__ = matvec

    def todense(self):
        n = self.shape[0]
        return self.matvec(jnp.eye(n, dtype=self.dtype))


def _two_loop(S, Y, rho, gamma, v, newest):
    """``H v`` for the L-BFGS inverse Hessian of the pairs ``S, Y`` (m, n) kept as a ring
    buffer: row ``newest`` (an int, may be traced) is the newest pair, ``newest - 1`` (mod m)
    the one before, ...; rows with ``rho = 0`` act as the identity. The rows are read in
    place, one per trip of the two loops (no reordered copy of the memory). The loops are
    not unrolled: unrolled, each of the 2m trips is its own compiled kernel (a 10-D
    L-BFGS-B program took 3.3 instead of 1.7 CPU-s to compile)."""
    S, Y, rho = jnp.asarray(S), jnp.asarray(Y), jnp.asarray(rho)
    m = S.shape[0]
    # the row order, newest first, computed once (not a remainder per trip: each trip's
    # scalar work is a kernel launch of its own)
    rows = (newest - jnp.arange(m)) % m
    rhos = rho[rows]

    def row(j):
        return (lax.dynamic_index_in_dim(S, j, keepdims=False),
                lax.dynamic_index_in_dim(Y, j, keepdims=False))

    def newest_first(q, pair):
        j, r = pair
        s, y = row(j)
        a = r * jnp.vdot(s, q)
        return q - a * y, a

    q, alphas = lax.scan(newest_first, v, (rows, rhos))

    def oldest_first(r, pair):
        j, rh, a = pair
        s, y = row(j)
        return r + s * (a - rh * jnp.vdot(y, r)), None

    r, _ = lax.scan(oldest_first, gamma * q, (rows, rhos, alphas), reverse=True)
    return r


def _oldest_first(state: LBFGSBState, maxcor: int):
    """The stored pairs oldest first, ``(S, Y)`` (m, n) with unused rows zero, and the mask
    ``valid`` (m,) of used rows: one gather of the ring buffer (the bounded path and the
    final result only)."""
    k = jnp.arange(maxcor)
    valid = k < state.count
    order = (state.head - state.count + k) % maxcor
    S = jnp.where(valid[:, None], state.s_mem[order], 0.0)
    Y = jnp.where(valid[:, None], state.y_mem[order], 0.0)
    return S, Y, valid


def inverse_hessian_operator(state: LBFGSBState, maxcor: int) -> LbfgsInvHessProduct:
    """The final memory of an L-BFGS-B run as a :class:`LbfgsInvHessProduct` (oldest pair
    first, unused rows zero with ``rho = 0``)."""
    S, Y, valid = _oldest_first(state, maxcor)
    sy = jnp.sum(S * Y, axis=1)
    ok = valid & (sy > 0)
    rho = jnp.where(ok, 1.0 / jnp.where(ok, sy, 1.0), 0.0)
    return LbfgsInvHessProduct(sk=S, yk=Y, rho=rho, count=state.count)


def _compact_form(state: LBFGSBState, maxcor: int):
    """The compact L-BFGS matrix ``B = theta I - W M W'`` (Byrd, Nocedal & Schnabel 1994) of
    the memory: ``(W (n, 2m), M (2m, 2m), theta)``, pairs oldest first; unused pairs are
    zero columns of ``W`` with a decoupled identity block in ``M``."""
    S, Y, valid = _oldest_first(state, maxcor)             # (m, n) oldest first
    theta = 1.0 / state.gamma
    SY = S @ Y.T                                           # (m, m): s_i' y_j
    D = jnp.diag(jnp.where(valid, jnp.diag(SY), -1.0))    # -1: decoupled unused pairs
    L = jnp.tril(SY, -1)
    SS = theta * (S @ S.T) + jnp.diag(jnp.where(valid, 0.0, 1.0))
    K = jnp.block([[-D, L.T], [L, SS]])
    M = jnp.linalg.inv(K)
    W = jnp.concatenate([Y.T, theta * S.T], axis=1)       # (n, 2m)
    return W, M, theta


def cauchy_point(x, g, lb, ub, W, M, theta):
    """Generalised Cauchy point of the model ``g'(z-x) + 1/2 (z-x)'B(z-x)`` along the
    projected steepest-descent path ``P(x - t g)`` (Byrd, Lu, Nocedal & Zhu 1995,
    algorithm CP). Returns ``(xcp (n,), c = W'(xcp - x) (2m,))``."""
    dtype = x.dtype
    inf = jnp.asarray(jnp.inf, dtype)
    tb = jnp.where(g < 0, (x - ub) / jnp.where(g < 0, g, 1.0),
                   jnp.where(g > 0, (x - lb) / jnp.where(g > 0, g, 1.0), inf))
    tb = jnp.where(jnp.isnan(tb), inf, tb)
    d = jnp.where(tb <= 0, 0.0, -g)
    p = W.T @ d
    fp = -jnp.vdot(d, d)
    fpp = -theta * fp - p @ M @ p
    tiny = jnp.finfo(dtype).tiny
    dt_min = -fp / jnp.maximum(fpp, tiny)
    # Breakpoints in increasing order, ties by index (a stable sort's order), found one at a
    # time by argmin over those not yet crossed: scipy keeps a heap for the same reason, as
    # only the few crossed before the model's minimum are needed (a full sort of n costs
    # more than the rest of the iteration).
    remaining = jnp.where(tb <= 0, inf, tb)

    def cond(s):
        remaining, b, t_old, fp, fpp, p, c, d, xcp, dt_min = s
        tj = remaining[b]
        return jnp.isfinite(tj) & (dt_min >= tj - t_old) & (fp < 0)

    def body(s):
        remaining, b, t_old, fp, fpp, p, c, d, xcp, dt_min = s
        tj = remaining[b]
        dt = tj - t_old
        gb = g[b]
        xb_cp = jnp.where(d[b] > 0, ub[b], lb[b])
        zb = xb_cp - x[b]
        wb = W[b]
        c = c + dt * p
        Mc, Mp, Mw = M @ c, M @ p, M @ wb
        fp = fp + dt * fpp + gb * gb + theta * gb * zb - gb * (wb @ Mc)
        fpp = fpp - theta * gb * gb - 2.0 * gb * (wb @ Mp) - gb * gb * (wb @ Mw)
        p = p + gb * wb
        d = d.at[b].set(0.0)
        xcp = xcp.at[b].set(xb_cp)
        dt_min = -fp / jnp.maximum(fpp, tiny)
        remaining = remaining.at[b].set(inf)
        return (remaining, jnp.argmin(remaining), tj, fp, fpp, p, c, d, xcp, dt_min)

    c0 = jnp.zeros_like(p)
    s = (remaining, jnp.argmin(remaining), jnp.zeros((), dtype), fp, fpp, p, c0, d, x, dt_min)
    _, _, t_old, fp, fpp, p, c, d, xcp, dt_min = lax.while_loop(cond, body, s)
    dt_min = jnp.where(fp < 0, jnp.maximum(dt_min, 0.0), 0.0)
    t = t_old + dt_min
    free_left = d != 0
    xcp = jnp.where(free_left, x + t * d, xcp)
    c = c + dt_min * p
    return jnp.clip(xcp, lb, ub), c


def subspace_minimum(x, g, lb, ub, xcp, c, W, M, theta):
    """Direct primal subspace minimisation of the model over the variables free at the
    Cauchy point (Byrd et al. 1995, section 5.1), then projected onto the box, or, if that
    is not a descent step from ``x``, cut back to the feasible segment (Morales & Nocedal
    2011, as scipy's L-BFGS-B 3.0). Returns the point ``xbar`` (n,)."""
    free = (xcp > lb) & (xcp < ub)
    Wf = jnp.where(free[:, None], W, 0.0)
    r = jnp.where(free, g + theta * (xcp - x) - W @ (M @ c), 0.0)
    v = M @ (Wf.T @ r)
    N = jnp.eye(M.shape[0], dtype=x.dtype) - (M @ (Wf.T @ Wf)) / theta
    v = jnp.linalg.solve(N, v)
    du = jnp.where(free, -r / theta - (Wf @ v) / theta ** 2, 0.0)
    proj = jnp.clip(xcp + du, lb, ub)
    descent = jnp.vdot(g, proj - x) < 0
    # longest alpha <= 1 with xcp + alpha du inside the box
    up = (du > 0) & jnp.isfinite(ub)
    down = (du < 0) & jnp.isfinite(lb)
    ratio = jnp.where(up, (ub - xcp) / jnp.where(up, du, 1.0),
                      jnp.where(down, (lb - xcp) / jnp.where(down, du, 1.0), 1.0))
    alpha = jnp.clip(jnp.min(ratio, initial=1.0), 0.0, 1.0)
    return jnp.where(descent, proj, jnp.clip(xcp + alpha * du, lb, ub))


class LBFGSB(AbstractSolver):
    """Limited-memory BFGS with box bounds (scipy's ``'L-BFGS-B'`` rules; module docstring).

    Settings: ``maxcor`` memory pairs (10); ``ftol`` relative reduction (None: scipy's
    2.2e-9, at least ``eps(dtype)``); ``gtol`` on ``max |projected gradient|`` (1e-5);
    ``maxiter`` (15000); ``maxfun`` (15000); ``maxls`` evaluations per line search (20);
    ``ftol_iterations``: consecutive iterations the ``ftol`` test must pass (2; scipy: 1);
    ``lower`` / ``upper``: bounds, (n,) arrays or scalars, None or +-inf for none.
    ``fn(x, args) -> (f scalar, g (n,))``.

    ``aux0`` (a pytree of arrays; None: none) turns on an auxiliary state channel: ``fn`` is
    then ``fn(x, args, aux) -> (f, g, aux_new)`` with ``aux_new`` of ``aux0``'s structure,
    shapes and dtypes. The first evaluation (at ``x0``) gets ``aux0``; every later one (each
    line-search trial) gets the aux returned at the last accepted iterate; the final aux is
    ``result.extra["aux"]``. For an objective that runs an inner iteration (EP sweeps, a
    fixed point) warm-started from its last converged state; ``fn`` must stay a function of
    ``x`` (the aux changes its cost, not its value, beyond the inner tolerance).

    The program evaluates ``fn`` in one place (the line search's loop): the first step
    evaluates ``x0`` (``init`` does not; until then ``state.f`` is NaN).
    """

    maxcor: int = 10
    ftol: Optional[float] = None
    gtol: float = 1e-5
    maxiter: int = 15000
    maxfun: int = 15000
    maxls: int = 20
    ftol_iterations: int = 2
    lower: Any = None
    upper: Any = None
    aux0: Any = None

    def __check_init__(self):
        for name in ("maxcor", "maxls"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"L-BFGS-B {name} must be >= 1, got {getattr(self, name)}")

    def bounds(self, x):
        """``(lb, ub)`` as (n,) arrays of ``x``'s dtype."""
        lb = -jnp.inf if self.lower is None else self.lower
        ub = jnp.inf if self.upper is None else self.upper
        return (jnp.broadcast_to(jnp.asarray(lb, x.dtype), x.shape),
                jnp.broadcast_to(jnp.asarray(ub, x.dtype), x.shape))

    def _evaluations(self, fn, x0, args):
        """The shapes of ``fn``'s outputs at ``x0`` (traced, not run): ``(f, g)``; with
        ``aux0``, checked to return ``(f, g, aux)`` with ``aux`` like ``aux0``."""
        if self.aux0 is None:
            return jax.eval_shape(lambda x: fn(x, args), x0)
        out = jax.eval_shape(lambda x, a: fn(x, args, a), x0, self.aux0)
        if not (isinstance(out, tuple) and len(out) == 3):
            raise ValueError("L-BFGS-B with aux0: fn(x, args, aux) must return (f, g, aux_new), "
                             f"got {jax.tree_util.tree_structure(out)}")
        want = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a),
                                                                     jnp.result_type(a)),
                                      self.aux0)
        if (jax.tree_util.tree_structure(out[2]) != jax.tree_util.tree_structure(want)
                or any((a.shape, a.dtype) != (b.shape, b.dtype) for a, b in zip(
                    jax.tree_util.tree_leaves(out[2]), jax.tree_util.tree_leaves(want)))):
            raise ValueError("L-BFGS-B with aux0: the aux fn returns must have aux0's structure, "
                             f"shapes and dtypes; aux0 is {want}, fn returned {out[2]}")
        return out[:2]

    def init(self, fn, x0, args) -> LBFGSBState:
        lb, ub = self.bounds(x0)
        x0 = jnp.clip(x0, lb, ub)
        f_shape, g_shape = self._evaluations(fn, x0, args)
        n, m, dtype = x0.shape[0], self.maxcor, x0.dtype
        false = jnp.asarray(False)
        nan = jnp.full(f_shape.shape, jnp.nan, f_shape.dtype)
        aux0 = jax.tree_util.tree_map(jnp.asarray, self.aux0)
        return LBFGSBState(
            x=x0, f=nan, g=jnp.zeros(g_shape.shape, g_shape.dtype), f_prev=nan,
            s_mem=jnp.zeros((m, n), dtype), y_mem=jnp.zeros((m, n), dtype),
            count=jnp.zeros((), jnp.int32), head=jnp.zeros((), jnp.int32),
            gamma=jnp.ones((), dtype), nit=jnp.zeros((), jnp.int32),
            nfev=jnp.zeros((), jnp.int32), small_steps=jnp.zeros((), jnp.int32),
            failed=false, started=false, aux=aux0)

    def _direction(self, state: LBFGSBState):
        """The quasi-Newton step ``-H g`` (n,) by the two-loop recursion over the memory.

        Pairs without clearly positive curvature (``s.y <= eps y.y``) are skipped."""
        dtype = state.x.dtype
        m = self.maxcor
        S, Y = state.s_mem, state.y_mem          # ring buffer, read in place
        sy = jnp.sum(S * Y, axis=1)
        age = (state.head - 1 - jnp.arange(m)) % m    # 0 for the newest row
        valid = (age < state.count) & (sy > jnp.finfo(dtype).eps * jnp.sum(Y * Y, axis=1))
        rho = jnp.where(valid, 1.0 / jnp.where(valid, sy, 1.0), 0.0)
        return -_two_loop(S, Y, rho, state.gamma, state.g, state.head - 1)

    def step(self, fn, state: LBFGSBState, args) -> LBFGSBState:
        """One iteration; the first call evaluates ``x0`` only (a line search of one trial
        at step 0: the one place ``fn`` is called)."""
        x, g = state.x, state.g
        started = state.started
        dtype = x.dtype
        lb, ub = self.bounds(x)
        bounded = jnp.any(jnp.isfinite(lb)) | jnp.any(jnp.isfinite(ub))

        # The quasi-Newton step -H g (two-loop recursion, H the inverse of the compact B).
        step_qn = self._direction(state)
        newton = jnp.clip(x + step_qn, lb, ub) - x

        def cauchy_direction():
            # scipy's: generalised Cauchy point, then subspace minimisation
            W, M, theta = _compact_form(state, self.maxcor)
            xcp, c = cauchy_point(x, g, lb, ub, W, M, theta)
            return subspace_minimum(x, g, lb, ub, xcp, c, W, M, theta) - x

        # Where the Cauchy point crosses no breakpoint, every variable is free there and
        # scipy's subspace minimum is the quasi-Newton point x - H g, projected onto the box
        # when that is a descent step (subspace_minimum): then the compact form, the
        # breakpoint search and the subspace system are not needed. The Cauchy step
        # |g|^2 / g'Bg is at most g'Hg / |g|^2 (Cauchy-Schwarz), so it crosses no breakpoint
        # when that bound is below the first one.
        tb = jnp.where(g < 0, (x - ub) / jnp.where(g < 0, g, 1.0),
                       jnp.where(g > 0, (x - lb) / jnp.where(g > 0, g, 1.0), jnp.inf))
        gg = jnp.vdot(g, g)
        interior = (jnp.all(tb > 0)
                    & (-jnp.vdot(g, step_qn) < jnp.min(tb, initial=jnp.inf) * gg))
        plain = ~bounded | (interior & (jnp.vdot(g, newton) < 0)) | ~started
        p = lax.cond(plain, lambda: newton, cauchy_direction)
        p = jnp.clip(x + p, lb, ub) - x
        descent = (jnp.vdot(g, p) < 0) & all_finite(p)
        p = jnp.where(descent, p, jnp.clip(x - state.gamma * g, lb, ub) - x)
        p = jnp.where(started, p, 0.0)        # before the first step: one trial at x0
        boxed = jnp.all(jnp.isfinite(lb) & jnp.isfinite(ub))
        first = state.nit == 0
        alpha_max = jnp.where(first & bounded, 1.0, _max_feasible_step(x, p, lb, ub))
        alpha_max = jnp.maximum(alpha_max, 1.0).astype(dtype)
        pnorm = jnp.maximum(jnp.linalg.norm(p), jnp.finfo(dtype).tiny)
        alpha0 = jnp.where(first & ~boxed, jnp.minimum(1.0 / pnorm, alpha_max), 1.0)
        if self.aux0 is None:
            evaluate = lambda z: fn(z, args)  # noqa: E731
        else:
            evaluate = lambda z, a: fn(z, args, a)  # noqa: E731
        ls = more_thuente_line_search(evaluate, x, state.f, g, p,
                                      alpha0.astype(dtype), alpha_max, ftol=1e-3, gtol=0.9,
                                      xtol=0.1, maxls=jnp.where(started, self.maxls, 1),
                                      project=lambda z: jnp.clip(z, lb, ub), aux=state.aux,
                                      rounding_stop=True)
        # A search that ran out of evaluations is a failed search (scipy), even if it found
        # some decrease: the memory is dropped and the iteration restarts.
        ok = started & ls.success & ls.converged & all_finite(ls.f, ls.g)
        # scipy's ftol test on the measured reduction, or on the decrease the model promised
        # for the full step if larger (module docstring)
        ftol = resolved_ftol(self.ftol, dtype)
        reduction = jnp.maximum(state.f - ls.f, -0.5 * jnp.vdot(g, p))
        scale = jnp.maximum(jnp.maximum(jnp.abs(state.f), jnp.abs(ls.f)), 1.0)
        small = reduction <= ftol * scale
        s = ls.x - x
        y = ls.g - g
        sy = jnp.vdot(s, y)
        store = ok & (sy > jnp.finfo(dtype).eps * (-jnp.vdot(g, s)))
        m = self.maxcor
        s_mem = state.s_mem.at[state.head].set(jnp.where(store, s, state.s_mem[state.head]))
        y_mem = state.y_mem.at[state.head].set(jnp.where(store, y, state.y_mem[state.head]))
        head = jnp.where(store, (state.head + 1) % m, state.head)
        count = jnp.where(store, jnp.minimum(state.count + 1, m), state.count)
        gamma = jnp.where(store, sy / jnp.where(store, jnp.vdot(y, y), 1.0), state.gamma)
        # A failed search at the noise floor of f: every trial in (0, alpha0] was above f_k,
        # and the first-order bound on what any step along p could gain there,
        # alpha0 |g.p| (exact for a locally convex f), is itself below the ftol test. So
        # the relative reduction left along p is <= ftol: that is scipy's ftol convergence
        # (scipy accepts the warned, uphill trial and stops on its ftol test; we keep x).
        # Likewise a search stopped at the rounding level of f (no step left in its interval
        # can change f by more than eps |f_k| <= ftol |f_k|), where scipy's dcsrch would
        # spend the rest of maxls on trials equal to f_k up to rounding, then restart.
        bound = -alpha0.astype(dtype) * jnp.vdot(g, p)
        at_floor = (started & (~ok) & (ftol > 0) & all_finite(ls.f)
                    & (((ls.f >= state.f) & (bound <= ftol * jnp.maximum(jnp.abs(state.f), 1.0)))
                       | ls.rounding))
        # A failed search with a non-empty memory: forget the memory and try again.
        reset = (~ok) & (state.count > 0) & ~at_floor
        count = jnp.where(reset, 0, count)
        gamma = jnp.where(reset, 1.0, gamma).astype(dtype)
        take = ok | ~started                  # an accepted trial, or x0's evaluation
        aux = jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), ls.aux, state.aux)
        return LBFGSBState(
            x=jnp.where(take, ls.x, x), f=jnp.where(take, ls.f, state.f),
            g=jnp.where(take, ls.g, g), f_prev=jnp.where(started, state.f, ls.f),
            s_mem=s_mem, y_mem=y_mem, count=count, head=head, gamma=gamma,
            nit=state.nit + ok.astype(jnp.int32), nfev=state.nfev + ls.nfev,
            small_steps=jnp.where(at_floor, max(self.ftol_iterations, 1),
                                  jnp.where(ok, jnp.where(small, state.small_steps + 1, 0),
                                            state.small_steps)),
            failed=started & (~ok) & (state.count == 0) & ~at_floor,
            started=jnp.asarray(True), aux=aux)

    def terminate(self, fn, state: LBFGSBState, args) -> jnp.ndarray:
        lb, ub = self.bounds(state.x)
        pg_norm = jnp.max(jnp.abs(projected_gradient(state.x, state.g, lb, ub)), initial=0.0)
        failure = Status.PRECISION if _low_precision(state.x.dtype) else Status.LINE_SEARCH
        return first_status(
            (~state.started, RUNNING),
            (~all_finite(state.f, state.g), Status.NONFINITE),
            (pg_norm <= self.gtol, Status.GTOL),
            (state.small_steps >= self.ftol_iterations, Status.FTOL),
            (state.failed, failure),
            (jnp.asarray(self.maxiter <= 0) | (state.nit >= self.maxiter), Status.MAX_ITER),
            (state.nfev >= self.maxfun, Status.MAX_FEV),
        )

    def postprocess(self, fn, state: LBFGSBState, args, status) -> OptimizeResult:
        return OptimizeResult(x=state.x, fun=state.f, jac=state.g, status=status,
                              nit=state.nit, nfev=state.nfev, njev=state.nfev,
                              hess_inv=inverse_hessian_operator(state, self.maxcor),
                              extra={} if self.aux0 is None else {"aux": state.aux})

    def progress(self, state: LBFGSBState) -> Progress:
        return Progress(nit=state.nit, fun=state.f, x=state.x)


# --------------------------------------------------------------------------------------
# BFGS
# --------------------------------------------------------------------------------------


class BFGSState(eqx.Module):
    """State of a BFGS run (``n`` parameters)."""

    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    f_prev: jnp.ndarray     # objective before the last accepted step (for the first trial)
    hess_inv: jnp.ndarray   # (n, n)
    fresh: jnp.ndarray      # hess_inv is the identity (no update since the last reset)
    step_norm: jnp.ndarray  # |x_{k+1} - x_k| of the last accepted step (inf after a failure)
    nit: jnp.ndarray
    nfev: jnp.ndarray
    failed: jnp.ndarray     # a line search failed from the identity: nothing left to try


class BFGS(AbstractSolver):
    """Dense BFGS on the inverse Hessian with a strong-Wolfe line search (scipy ``'BFGS'``).

    Settings: ``gtol`` on ``norm(g, ord=norm)`` (1e-5, ``norm=inf``), ``maxiter``
    (None -> 200 n), ``xrtol`` relative step test (0: off), ``c1``/``c2`` Wolfe constants
    (1e-4, 0.9), ``maxls`` line-search evaluations (30), ``hess_inv0`` (n, n) initial inverse
    Hessian (None: identity). A failed line search first resets the inverse Hessian to the
    identity; a second failure stops with ``LINE_SEARCH`` (``PRECISION`` in float32).
    ``fn(x, args) -> (f scalar, g (n,))``.
    """

    gtol: float = 1e-5
    norm: float = float("inf")
    maxiter: Optional[int] = None
    xrtol: float = 0.0
    c1: float = 1e-4
    c2: float = 0.9
    maxls: int = 30
    hess_inv0: Any = None

    def _gnorm(self, g):
        if self.norm == float("inf"):
            return jnp.max(jnp.abs(g), initial=0.0)
        if self.norm == -float("inf"):
            return jnp.min(jnp.abs(g), initial=0.0)
        return jnp.sum(jnp.abs(g) ** self.norm) ** (1.0 / self.norm)

    def _maxiter(self, n):
        return 200 * n if self.maxiter is None else self.maxiter

    def init(self, fn, x0, args) -> BFGSState:
        f, g = fn(x0, args)
        n = x0.shape[0]
        if self.hess_inv0 is None:
            h0 = jnp.eye(n, dtype=x0.dtype)
        else:
            h0 = jnp.asarray(self.hess_inv0, x0.dtype)
            if h0.shape != (n, n):
                raise ValueError(f"hess_inv0 must have shape ({n}, {n}), got {h0.shape}")
        return BFGSState(x=x0, f=f, g=g, f_prev=f + 0.5 * jnp.linalg.norm(g), hess_inv=h0,
                         fresh=jnp.asarray(self.hess_inv0 is None),
                         step_norm=jnp.asarray(jnp.inf, x0.dtype),
                         nit=jnp.zeros((), jnp.int32), nfev=jnp.ones((), jnp.int32),
                         failed=jnp.asarray(False))

    def step(self, fn, state: BFGSState, args) -> BFGSState:
        x, g, H = state.x, state.g, state.hess_inv
        n = x.shape[0]
        dtype = x.dtype
        eye = jnp.eye(n, dtype=dtype)
        p = -H @ g
        bad = ~(jnp.vdot(g, p) < 0) | ~all_finite(p)
        H = jnp.where(bad, eye, H)
        p = jnp.where(bad, -g, p)
        dphi0 = jnp.vdot(g, p)
        # scipy's first trial step: 1.01 * 2 (f - f_prev) / phi'(0), capped at 1
        guess = 1.01 * 2.0 * (state.f - state.f_prev) / dphi0
        alpha0 = jnp.where(jnp.isfinite(guess) & (guess > 0), jnp.minimum(1.0, guess), 1.0)
        ls = scipy_wolfe12(lambda z: fn(z, args), x, state.f, g, p, alpha0.astype(dtype),
                           c1=self.c1, c2=self.c2, maxls=self.maxls)
        # f = -inf is taken (the objective is unbounded below: UNBOUNDED stops the run there)
        ok = ls.success & (ls.f <= state.f) & (all_finite(ls.f, ls.g) | (ls.f == -jnp.inf))
        s = ls.x - x
        y = ls.g - g
        sy = jnp.vdot(s, y)
        update = ok & (sy > 0) & jnp.isfinite(sy)
        rho = 1.0 / jnp.where(update, sy, 1.0)
        Hy = H @ y
        # (I - rho s y') H (I - rho y s') + rho s s', written with one matrix-vector product
        H_new = (H - rho * (jnp.outer(s, Hy) + jnp.outer(Hy, s))
                 + (rho * rho * jnp.vdot(y, Hy) + rho) * jnp.outer(s, s))
        H_new = jnp.where(update, H_new, H)
        fresh = bad | state.fresh
        # failure with a used hess_inv: reset it and try again from the same point
        H_new = jnp.where((~ok) & (~fresh), eye, H_new)
        return BFGSState(
            x=jnp.where(ok, ls.x, x), f=jnp.where(ok, ls.f, state.f), g=jnp.where(ok, ls.g, g),
            f_prev=jnp.where(ok, state.f, state.f_prev), hess_inv=H_new,
            fresh=jnp.where(ok, (~update) & fresh, True),
            step_norm=jnp.where(ok, jnp.linalg.norm(s), jnp.inf),
            nit=state.nit + ok.astype(jnp.int32), nfev=state.nfev + ls.nfev,
            failed=(~ok) & fresh)

    def terminate(self, fn, state: BFGSState, args) -> jnp.ndarray:
        n = state.x.shape[0]
        failure = Status.PRECISION if _low_precision(state.x.dtype) else Status.LINE_SEARCH
        return first_status(
            (state.f == -jnp.inf, Status.UNBOUNDED),
            (~all_finite(state.f, state.g), Status.NONFINITE),
            (self._gnorm(state.g) <= self.gtol, Status.GTOL),
            (jnp.asarray(self.xrtol > 0)
             & (state.step_norm <= self.xrtol * (self.xrtol + jnp.linalg.norm(state.x))),
             Status.XTOL),
            (state.failed, failure),
            (state.nit >= self._maxiter(n), Status.MAX_ITER),
        )

    def postprocess(self, fn, state: BFGSState, args, status) -> OptimizeResult:
        return OptimizeResult(x=state.x, fun=state.f, jac=state.g, status=status,
                              nit=state.nit, nfev=state.nfev, njev=state.nfev,
                              hess_inv=state.hess_inv)

    def progress(self, state: BFGSState) -> Progress:
        return Progress(nit=state.nit, fun=state.f, x=state.x)


__all__ = ["BFGS", "BFGSState", "LBFGSB", "LBFGSBState", "LbfgsInvHessProduct", "cauchy_point",
           "subspace_minimum",
           "inverse_hessian_operator", "projected_gradient", "resolved_ftol", "SCIPY_FTOL"]
