"""Sequential quadratic programming (SLSQP-style) for equality / inequality constraints and
box bounds, pure JAX with static shapes (jit and vmap friendly).

Problem (flat ``x`` of length n)::

    min f(x)   s.t.   h(x) = 0 (m_eq),   c(x) >= 0 (m_in),   lb <= x <= ub

Each iteration, at ``x`` with gradient ``g``, Jacobians ``E = dh/dx`` (m_eq, n) and
``G = dc/dx`` (m_in, n) (autodiff, ``jax.jacfwd``) and a positive definite approximation
``B`` (n, n) of the Hessian of the Lagrangian, solves the quadratic programme::

    min_d  g.d + 1/2 d'Bd   s.t.   E d + h = 0,   G d + c >= 0,   lb <= x + d <= ub

(bounds enter as 2n inequality rows; an infinite bound is a zero row that never binds) with a
primal-dual interior-point method (Mehrotra predictor-corrector, dense KKT solve, at most
``qp_maxiter`` iterations: fixed shapes, so it compiles once). The step ``x + alpha d`` is
chosen by backtracking on the L1 merit function ``f + sum rho_i |h_i| + sum rho_j max(0, -c_j)``
with Powell's per-constraint weights ``rho <- max(|lam|, (rho + |lam|) / 2)`` (as in Kraft's
SLSQP, 1988). ``B`` is updated by BFGS on the change of the Lagrangian gradient, with Powell's
damping (``s'y >= 0.2 s'Bs``) so it stays positive definite.

Convergence (status ``CONSTRAINED_OK``) is a KKT test at the current ``x`` with the
multipliers of the QP that led there (at ``x0``: zero multipliers): ``max |g - E'lam - G'mu - bound multipliers| <= gtol * max(1, max|g|)``,
violation ``max(|h|, max(0, -c)) <= ctol`` and complementarity ``max |mu_j c_j| <= ctol``.
Defaults: ``gtol = sqrt(eps)`` (1.5e-8 in float64), ``ctol = 10 eps**0.75`` (1.8e-11 in
float64, 6.4e-5 in float32). scipy's ``ftol`` (its ``acc``), when given, sets ``gtol``.
A QP that the interior point cannot solve (inconsistent linearised constraints) stops the run:
``INFEASIBLE`` when the constraints are violated by more than ``ctol``, else ``LINE_SEARCH``.
Iterates always satisfy the bounds (``x0`` is clipped into them).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg  # noqa: F401  (lu_factor / lu_solve)
import numpy as np
from jax import lax

from jaxinfer.optimize._iterate import AbstractSolver, Progress, all_finite, first_status
from jaxinfer.optimize.result import OptimizeResult, Status


# --------------------------------------------------------------------------------------------
# The QP subproblem: primal-dual interior point on fixed shapes


class QPSolution(eqx.Module):
    """Solution of ``min g.d + 1/2 d'Bd  s.t.  E d + h = 0, G d + c >= 0``.

    d (n,) : step; y (m_eq,) : equality multipliers; z (m_in,) >= 0 : inequality
    multipliers; converged : bool, residuals below tolerance; nit : iterations used;
    residual : max KKT residual relative to the data scale; gap : mean complementarity s.z.
    """

    d: jnp.ndarray
    y: jnp.ndarray
    z: jnp.ndarray
    converged: jnp.ndarray
    nit: jnp.ndarray
    residual: jnp.ndarray
    gap: jnp.ndarray
    active: Any = None   # (m_in,) bool: rows the step ends on exactly (see refine_active_set)


def solve_qp(B, g, E, h, G, c, *, maxiter: int = 100, tol: Optional[float] = None) -> QPSolution:
    """Convex QP by a Mehrotra predictor-corrector interior point (dense, static shapes).

    B (n, n) positive definite; g (n,); E (m_eq, n), h (m_eq,); G (m_in, n), c (m_in,) with
    finite entries. Stops when the scaled KKT residuals and the complementarity gap are below
    ``tol`` (default ``100 eps``) or after ``maxiter`` iterations (``converged`` False).
    """
    n, me, mi = g.shape[0], h.shape[0], c.shape[0]
    dtype = g.dtype
    eps = float(np.finfo(dtype).eps)
    tol = 100.0 * eps if tol is None else float(tol)
    reg = jnp.asarray(eps ** 0.75, dtype)  # keeps the KKT matrix regular for dependent rows
    scale = 1.0 + jnp.maximum(jnp.max(jnp.abs(g), initial=0.0),
                              jnp.maximum(jnp.max(jnp.abs(h), initial=0.0),
                                          jnp.max(jnp.abs(c), initial=0.0)))
    mdiv = max(mi, 1)

    def residuals(d, y, s, z):
        r_d = B @ d + g - E.T @ y - G.T @ z
        r_e = E @ d + h
        r_i = G @ d - s + c
        return r_d, r_e, r_i

    def newton(s, z, r_d, r_e, r_i, r_c):
        D = z / s
        K11 = B + (G.T * D) @ G
        K = jnp.block([[K11, -E.T], [-E, -reg * jnp.eye(me, dtype=dtype)]])
        rhs = jnp.concatenate([-r_d - G.T @ ((r_c + z * r_i) / s), r_e])
        sol = jnp.linalg.solve(K, rhs)
        dd, dy = sol[:n], sol[n:]
        ds = G @ dd + r_i
        dz = -(r_c + z * ds) / s
        return dd, dy, ds, dz

    def max_step(v, dv):
        ratio = jnp.where(dv < 0, -v / jnp.where(dv < 0, dv, -1.0), jnp.inf)
        return jnp.minimum(1.0, jnp.min(ratio, initial=jnp.inf))

    def measure(d, y, s, z):
        r_d, r_e, r_i = residuals(d, y, s, z)
        res = jnp.maximum(jnp.max(jnp.abs(r_d), initial=0.0),
                          jnp.maximum(jnp.max(jnp.abs(r_e), initial=0.0),
                                      jnp.max(jnp.abs(r_i), initial=0.0)))
        return res / scale, jnp.vdot(s, z) / mdiv

    def cond(carry):
        d, y, s, z, k = carry
        res, mu = measure(d, y, s, z)
        done = (res <= tol) & (mu <= tol * scale)
        return (~done) & (k < maxiter) & all_finite(d, y, s, z)

    def body(carry):
        d, y, s, z, k = carry
        r_d, r_e, r_i = residuals(d, y, s, z)
        mu = jnp.vdot(s, z) / mdiv
        # predictor (affine scaling)
        dd, dy, ds, dz = newton(s, z, r_d, r_e, r_i, s * z)
        a = jnp.minimum(max_step(s, ds), max_step(z, dz))
        mu_aff = jnp.vdot(s + a * ds, z + a * dz) / mdiv
        sigma = jnp.clip((mu_aff / jnp.maximum(mu, jnp.finfo(dtype).tiny)) ** 3, 0.0, 1.0)
        # corrector
        r_c = s * z + ds * dz - sigma * mu
        dd, dy, ds, dz = newton(s, z, r_d, r_e, r_i, r_c)
        a = jnp.minimum(max_step(s, ds), max_step(z, dz))
        a = jnp.minimum(1.0, 0.995 * a)
        new = (d + a * dd, y + a * dy, s + a * ds, z + a * dz)
        # at the rounding floor the Newton system degenerates (s -> 0): keep the last finite
        # iterate and stop
        ok = all_finite(*new) & jnp.all(new[2] > 0)
        new = tuple(jnp.where(ok, v, v0) for v, v0 in zip(new, (d, y, s, z)))
        return (*new, jnp.where(ok, k + 1, maxiter))

    d0 = jnp.zeros((n,), dtype)
    s0 = jnp.maximum(c, 1.0)
    z0 = jnp.ones((mi,), dtype)
    y0 = jnp.zeros((me,), dtype)
    d, y, s, z, k = lax.while_loop(cond, body, (d0, y0, s0, z0, jnp.zeros((), jnp.int32)))
    res, mu = measure(d, y, s, z)
    converged = (res <= tol) & (mu <= tol * scale) & all_finite(d, y, s, z)
    # looser acceptance: the interior point stalls a little above 100 eps on badly scaled
    # problems; a KKT point to sqrt(eps) is still a descent direction for the merit function
    converged = converged | ((res <= np.sqrt(eps)) & (mu <= np.sqrt(eps) * scale)
                             & all_finite(d, y, s, z))
    return QPSolution(d=d, y=y, z=jnp.maximum(z, 0.0), converged=converged, nit=k,
                       residual=res, gap=mu, active=jnp.zeros((mi,), bool))


def refine_active_set(B, g, E, h, G, c, sol: QPSolution) -> QPSolution:
    """The interior point's solution made exact on its active set (a crossover).

    The interior point stops ~sqrt(tol) inside a row whose multiplier is zero at the
    solution (degenerate), and ~tol / z inside the others. The rows it leaves active are
    taken as equalities and the equality-constrained QP is solved by one KKT system, so the
    step lands exactly on them. Two active sets are tried: slack ``s_i <= max(z_i, 10
    sqrt(tol))`` (degenerate rows counted active), then ``s_i <= z_i``. The first that is a
    KKT point of the QP (equalities met, active multipliers >= -sqrt(eps), inactive rows
    feasible to 100 eps, all relative to the data scale) is kept; if neither is, ``sol`` is
    returned unchanged. ``active`` marks the rows the returned step ends on. Shapes as
    :func:`solve_qp` (``tol`` its default, 100 eps).
    """
    n, me, mi = g.shape[0], h.shape[0], c.shape[0]
    dtype = g.dtype
    eps = float(np.finfo(dtype).eps)
    reg = eps ** 0.75
    scale = 1.0 + jnp.maximum(jnp.max(jnp.abs(g), initial=0.0),
                              jnp.maximum(jnp.max(jnp.abs(h), initial=0.0),
                                          jnp.max(jnp.abs(c), initial=0.0)))
    s_ip = G @ sol.d + c

    def on(active):
        a = active.astype(dtype)
        K = jnp.block([
            [B, -E.T, -(G.T * a)],
            [E, jnp.zeros((me, me), dtype), jnp.zeros((me, mi), dtype)],
            [G * a[:, None], jnp.zeros((mi, me), dtype), jnp.diag(1.0 - a)]])
        rhs = jnp.concatenate([-g, -h, -a * c])
        # regularised for dependent active rows, then one step of iterative refinement on
        # the exact system so that the active rows hold to rounding
        lu = jax.scipy.linalg.lu_factor(K - reg * jnp.diag(jnp.concatenate(
            [jnp.zeros((n,), dtype), jnp.ones((me,), dtype), a])))
        sol_k = jax.scipy.linalg.lu_solve(lu, rhs)
        sol_k = sol_k + jax.scipy.linalg.lu_solve(lu, rhs - K @ sol_k)
        d, y, z = sol_k[:n], sol_k[n:n + me], sol_k[n + me:]
        ok = (all_finite(d, y, z) & sol.converged
              & (jnp.max(jnp.abs(E @ d + h), initial=0.0) <= 100.0 * eps * scale)
              & jnp.all(jnp.where(active, z >= -np.sqrt(eps) * scale,
                                  G @ d + c >= -100.0 * eps * scale)))
        return d, y, jnp.maximum(z, 0.0) * a, ok

    wide = (s_ip <= sol.z) | (s_ip <= 10.0 * np.sqrt(100.0 * eps) * jnp.sqrt(scale))
    narrow = s_ip <= sol.z
    d1, y1, z1, ok1 = on(wide)
    d2, y2, z2, ok2 = on(narrow)

    def pick(v1, v2, v0):
        return jnp.where(ok1, v1, jnp.where(ok2, v2, v0))

    return QPSolution(d=pick(d1, d2, sol.d), y=pick(y1, y2, sol.y), z=pick(z1, z2, sol.z),
                      converged=sol.converged, nit=sol.nit, residual=sol.residual,
                      gap=sol.gap, active=pick(wide, narrow, jnp.zeros_like(wide)))


def solve_qp_elastic(B, g, E, h, G, c, *, maxiter: int = 100) -> QPSolution:
    """The QP of :func:`solve_qp`, relaxed where its linearised constraints are inconsistent.

    Solves ``min g.d + 1/2 d'Bd + 1/2 rho xi^2`` over ``(d, xi)``, ``0 <= xi <= 1``, s.t.
    ``E d + (1 - xi) h = 0`` and ``G_i d + (1 - xi) c_i >= 0`` for the violated rows
    (``c_i < 0``; the others unrelaxed), ``rho = 1e6 max(1, |g|, |B|)``: with ``xi = 1``
    the step keeps the linearised constraints' values and only reduces the objective, so
    some relaxation is always feasible (Powell's remedy, as in Kraft's SLSQP). Returns the
    solution for ``d`` with the multipliers of the original rows.
    """
    n, me, mi = g.shape[0], h.shape[0], c.shape[0]
    dtype = g.dtype
    rho = 1e6 * jnp.maximum(1.0, jnp.maximum(jnp.max(jnp.abs(g), initial=0.0),
                                             jnp.max(jnp.abs(B), initial=0.0)))
    B_e = jnp.block([[B, jnp.zeros((n, 1), dtype)], [jnp.zeros((1, n), dtype), rho[None, None]]])
    g_e = jnp.concatenate([g, jnp.zeros((1,), dtype)])
    E_e = jnp.concatenate([E, -h[:, None]], axis=1)
    relax = jnp.where(c < 0, -c, 0.0)[:, None]
    unit = jnp.concatenate([jnp.zeros((2, n), dtype), jnp.array([[1.0], [-1.0]], dtype)], 1)
    G_e = jnp.concatenate([jnp.concatenate([G, relax], axis=1), unit])
    c_e = jnp.concatenate([c, jnp.array([0.0, 1.0], dtype)])
    sol = solve_qp(B_e, g_e, E_e, h, G_e, c_e, maxiter=maxiter)
    return QPSolution(d=sol.d[:n], y=sol.y, z=sol.z[:mi], converged=sol.converged,
                      nit=sol.nit, residual=sol.residual, gap=sol.gap,
                      active=jnp.zeros((mi,), bool))


# --------------------------------------------------------------------------------------------
# The SQP solver


class SQPState(eqx.Module):
    """Public state of :class:`SQP` (n parameters, m_eq equalities, m_in inequalities).

    x, f, g : iterate (within the bounds), objective, its gradient (n,); h (m_eq,), c (m_in,)
    : constraint values; E (m_eq, n), G (m_in, n) : their Jacobians; B (n, n) : damped-BFGS
    Lagrangian Hessian; d (n,) : the last step taken; lam_eq (m_eq,), lam_ineq (m_in,),
    lam_lower, lam_upper (n,) : multipliers of the last QP (>= 0 for inequalities and bounds;
    zero at the start), the estimates the KKT test at ``x`` uses; rho_eq, rho_ineq : merit
    weights; qp_ok : the last QP was solved (True at the start); violation,
    stationarity, complementarity : the KKT measures at ``x``; nit, nfev : iterations and
    objective evaluations; qp_nit : interior-point iterations in total.
    """

    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    h: jnp.ndarray
    c: jnp.ndarray
    E: jnp.ndarray
    G: jnp.ndarray
    B: jnp.ndarray
    d: jnp.ndarray
    lam_eq: jnp.ndarray
    lam_ineq: jnp.ndarray
    lam_lower: jnp.ndarray
    lam_upper: jnp.ndarray
    rho_eq: jnp.ndarray
    rho_ineq: jnp.ndarray
    qp_ok: jnp.ndarray
    violation: jnp.ndarray
    stationarity: jnp.ndarray
    complementarity: jnp.ndarray
    nit: jnp.ndarray
    nfev: jnp.ndarray
    qp_nit: jnp.ndarray


class SQP(AbstractSolver):
    """SLSQP-style SQP (see module docstring). ``fn(x, args) -> (f scalar, g (n,))``.

    Settings: ``eq`` / ``ineq`` constraint functions ``x (n,) -> (m,)`` (None for none; see
    :func:`jaxinfer.optimize.constrained.build_constraints`), ``lower`` / ``upper`` bounds
    ((n,) or scalars, +-inf or None for none), ``maxiter`` (100), ``ctol`` / ``gtol`` (None ->
    defaults above), ``ftol`` (scipy's name, sets ``gtol`` when that is None), ``maxls``
    backtracking steps of the merit line search (10), ``qp_maxiter`` (100).
    """

    eq: Optional[Callable] = eqx.field(static=True, default=None)
    ineq: Optional[Callable] = eqx.field(static=True, default=None)
    lower: Any = None
    upper: Any = None
    maxiter: int = 100
    ctol: Optional[float] = None
    gtol: Optional[float] = None
    ftol: Optional[float] = None
    maxls: int = 10
    qp_maxiter: int = 100

    def _tols(self, dtype):
        eps = float(np.finfo(dtype).eps)
        ctol = 10.0 * eps ** 0.75 if self.ctol is None else float(self.ctol)
        if self.gtol is not None:
            gtol = float(self.gtol)
        else:
            gtol = float(np.sqrt(eps)) if self.ftol is None else float(self.ftol)
        return ctol, gtol

    def _bounds(self, x):
        lb = -jnp.inf if self.lower is None else self.lower
        ub = jnp.inf if self.upper is None else self.upper
        return (jnp.broadcast_to(jnp.asarray(lb, x.dtype), x.shape),
                jnp.broadcast_to(jnp.asarray(ub, x.dtype), x.shape))

    def _con(self, x):
        none = jnp.zeros((0,), x.dtype)
        h = none if self.eq is None else self.eq(x)
        c = none if self.ineq is None else self.ineq(x)
        return h, c

    def _evaluate(self, fn, x, args):
        f, g = fn(x, args)
        h, c = self._con(x)
        E, G = jax.jacfwd(self._con)(x)
        return f, g, h, c, E, G

    def _qp(self, x, g, h, c, E, G, B):
        """QP at x with bound rows appended; multipliers split back."""
        n = x.shape[0]
        lb, ub = self._bounds(x)
        eye = jnp.eye(n, dtype=x.dtype)
        has_lb, has_ub = jnp.isfinite(lb), jnp.isfinite(ub)
        G_all = jnp.concatenate([G, eye * has_lb[:, None], -eye * has_ub[:, None]])
        c_all = jnp.concatenate([c, jnp.where(has_lb, x - jnp.where(has_lb, lb, 0.0), 1.0),
                                 jnp.where(has_ub, jnp.where(has_ub, ub, 0.0) - x, 1.0)])
        sol = solve_qp(B, g, E, h, G_all, c_all, maxiter=self.qp_maxiter)
        # inconsistent linearisation: the relaxed (elastic) QP instead
        sol = lax.cond(sol.converged, lambda: sol, lambda: solve_qp_elastic(
            B, g, E, h, G_all, c_all, maxiter=self.qp_maxiter))
        sol = refine_active_set(B, g, E, h, G_all, c_all, sol)
        m = c.shape[0]
        z = sol.z
        return sol, z[:m], z[m:m + n] * has_lb, z[m + n:] * has_ub

    def _kkt(self, x, g, h, c, E, G, lam_eq, lam_in, lam_lo, lam_up):
        lb, ub = self._bounds(x)
        grad_l = g - E.T @ lam_eq - G.T @ lam_in - lam_lo + lam_up
        stationarity = jnp.max(jnp.abs(grad_l), initial=0.0)
        violation = jnp.maximum(jnp.max(jnp.abs(h), initial=0.0),
                                jnp.max(jnp.maximum(-c, 0.0), initial=0.0))
        gap_lo = jnp.where(jnp.isfinite(lb), x - lb, 0.0)
        gap_up = jnp.where(jnp.isfinite(ub), ub - x, 0.0)
        comp = jnp.maximum(jnp.max(jnp.abs(lam_in * c), initial=0.0),
                           jnp.maximum(jnp.max(jnp.abs(lam_lo * gap_lo), initial=0.0),
                                       jnp.max(jnp.abs(lam_up * gap_up), initial=0.0)))
        return violation, stationarity, comp

    def _state(self, x, f, g, h, c, E, G, B, d, lam, rho_eq, rho_in, qp_ok, nit, nfev, qp_nit):
        lam_eq, lam_in, lam_lo, lam_up = lam
        violation, stationarity, comp = self._kkt(x, g, h, c, E, G, lam_eq, lam_in, lam_lo,
                                                  lam_up)
        return SQPState(x=x, f=f, g=g, h=h, c=c, E=E, G=G, B=B, d=d, lam_eq=lam_eq,
                        lam_ineq=lam_in, lam_lower=lam_lo, lam_upper=lam_up, rho_eq=rho_eq,
                        rho_ineq=rho_in, qp_ok=qp_ok, violation=violation,
                        stationarity=stationarity, complementarity=comp, nit=nit, nfev=nfev,
                        qp_nit=qp_nit)

    def init(self, fn, x0, args) -> SQPState:
        lb, ub = self._bounds(x0)
        x0 = jnp.clip(x0, lb, ub)
        f, g, h, c, E, G = self._evaluate(fn, x0, args)
        B = jnp.eye(x0.shape[0], dtype=x0.dtype)
        zero = jnp.zeros((), jnp.int32)
        lam = (jnp.zeros_like(h), jnp.zeros_like(c), jnp.zeros_like(x0), jnp.zeros_like(x0))
        return self._state(x0, f, g, h, c, E, G, B, jnp.zeros_like(x0), lam, jnp.zeros_like(h),
                           jnp.zeros_like(c), jnp.asarray(True), zero, jnp.ones((), jnp.int32),
                           zero)

    def step(self, fn, s: SQPState, args) -> SQPState:
        lb, ub = self._bounds(s.x)
        sol, lam_in, lam_lo, lam_up = self._qp(s.x, s.g, s.h, s.c, s.E, s.G, s.B)
        # an unsolved QP gives no trustworthy direction: stay put (terminate reports it)
        d = jnp.where(sol.converged, sol.d, 0.0)
        lam_eq = sol.y
        rho_eq = jnp.maximum(jnp.abs(lam_eq), 0.5 * (s.rho_eq + jnp.abs(lam_eq)))
        rho_in = jnp.maximum(lam_in, 0.5 * (s.rho_ineq + lam_in))

        def merit(f, h, c):
            return (f + jnp.vdot(rho_eq, jnp.abs(h)) + jnp.vdot(rho_in, jnp.maximum(-c, 0.0)))

        phi0 = merit(s.f, s.h, s.c)
        slope = jnp.minimum(jnp.vdot(s.g, d) - jnp.vdot(rho_eq, jnp.abs(s.h))
                            - jnp.vdot(rho_in, jnp.maximum(-s.c, 0.0)), 0.0)

        noise = 100.0 * jnp.finfo(s.x.dtype).eps * (1.0 + jnp.abs(phi0))

        def trial(alpha):
            x = jnp.clip(s.x + alpha * d, lb, ub)
            f, gx = fn(x, args)
            h, c = self._con(x)
            # a point where the gradient is not finite (sqrt at a bound it lands on) is
            # refused like a non-finite value: the search backs off from it
            return jnp.where(all_finite(gx), merit(f, h, c), jnp.inf)

        def ls_cond(carry):
            alpha, phi, k = carry
            # Armijo on the merit, with slack for rounding in evaluating it: close to the
            # solution the predicted decrease is below the merit's rounding error
            ok = jnp.isfinite(phi) & (phi <= phi0 + 0.1 * alpha * slope + noise)
            return (~ok) & (k < self.maxls)

        def ls_body(carry):
            alpha, phi, k = carry
            # minimiser of the quadratic through phi0, slope and phi(alpha), kept in
            # [0.1 alpha, 0.5 alpha] (Kraft's safeguard)
            denom = 2.0 * (phi - phi0 - alpha * slope)
            quad = jnp.where(jnp.isfinite(phi) & (denom > 0), -slope * alpha ** 2 / denom,
                             0.1 * alpha)
            alpha = jnp.clip(quad, 0.1 * alpha, 0.5 * alpha)
            return alpha, trial(alpha), k + 1

        one = jnp.ones((), s.x.dtype)
        alpha, _, k = lax.while_loop(ls_cond, ls_body, (one, trial(one), jnp.zeros((), jnp.int32)))
        x = jnp.clip(s.x + alpha * d, lb, ub)
        # a full step ends exactly on the bounds the QP's active set holds
        n = x.shape[0]
        m = s.c.shape[0]
        full = (alpha == 1.0) & sol.converged
        x = jnp.where(full & sol.active[m:m + n], lb, x)
        x = jnp.where(full & sol.active[m + n:], ub, x)
        f, g, h, c, E, G = self._evaluate(fn, x, args)

        # damped BFGS on the Lagrangian gradient (multipliers of the QP just solved; the
        # linear bound rows add no curvature)
        def grad_lagrangian(g, E, G):
            return g - E.T @ lam_eq - G.T @ lam_in

        step = x - s.x
        y = grad_lagrangian(g, E, G) - grad_lagrangian(s.g, s.E, s.G)
        Bs = s.B @ step
        sBs = jnp.vdot(step, Bs)
        sy = jnp.vdot(step, y)
        theta = jnp.where(sy >= 0.2 * sBs, 1.0, 0.8 * sBs / jnp.where(sBs - sy > 0, sBs - sy, 1.0))
        y = theta * y + (1.0 - theta) * Bs
        sy = jnp.vdot(step, y)
        tiny = jnp.finfo(s.x.dtype).tiny
        update = (sBs > tiny) & (sy > tiny) & all_finite(y)
        B_new = s.B - jnp.outer(Bs, Bs) / jnp.where(update, sBs, 1.0) \
            + jnp.outer(y, y) / jnp.where(update, sy, 1.0)
        B = jnp.where(update, 0.5 * (B_new + B_new.T), s.B)
        # KKT test at the new point with the QP's multipliers (any multipliers of the right
        # signs that satisfy it certify a KKT point; these converge to the optimal ones)
        return self._state(x, f, g, h, c, E, G, B, x - s.x, (lam_eq, lam_in, lam_lo, lam_up),
                           rho_eq, rho_in, sol.converged, s.nit + 1, s.nfev + k + 2,
                           s.qp_nit + sol.nit)

    def terminate(self, fn, s: SQPState, args) -> jnp.ndarray:
        ctol, gtol = self._tols(s.x.dtype)
        grad_scale = jnp.maximum(1.0, jnp.max(jnp.abs(s.g), initial=0.0))
        converged = ((s.stationarity <= gtol * grad_scale) & (s.violation <= ctol)
                     & (s.complementarity <= ctol * grad_scale))
        infeasible = s.violation > ctol
        return first_status(
            (~all_finite(s.f, s.g, s.x), Status.NONFINITE),
            (converged, Status.CONSTRAINED_OK),
            (~s.qp_ok & infeasible, Status.INFEASIBLE),
            (~s.qp_ok, Status.LINE_SEARCH),
            ((s.nit >= self.maxiter) & infeasible, Status.INFEASIBLE),
            (s.nit >= self.maxiter, Status.MAX_ITER),
        )

    def postprocess(self, fn, s: SQPState, args, status) -> OptimizeResult:
        return OptimizeResult(
            x=s.x, fun=s.f, jac=s.g, status=status, nit=s.nit, nfev=s.nfev, njev=s.nit + 1,
            extra={"multipliers_eq": s.lam_eq, "multipliers_ineq": s.lam_ineq,
                   "multipliers_lower": s.lam_lower, "multipliers_upper": s.lam_upper,
                   "constraint_violation": s.violation,
                   "lagrangian_gradient_norm": s.stationarity,
                   "complementarity": s.complementarity, "qp_nit": s.qp_nit})

    def progress(self, s: SQPState) -> Progress:
        return Progress(nit=s.nit, fun=s.f, x=s.x)


__all__ = ["SQP", "SQPState", "QPSolution", "solve_qp", "solve_qp_elastic", "refine_active_set"]
