"""Equality / inequality constrained minimisation with box bounds: an augmented Lagrangian.

``minimize(..., method='SLSQP', constraints=..., bounds=...)`` lands here. The name SLSQP is
accepted for scipy compatibility, but the algorithm is **not** sequential quadratic
programming: it is the Powell–Hestenes–Rockafellar augmented Lagrangian (as in ALGENCAN,
Birgin & Martínez 2014), whose bound-constrained subproblems are solved by this package's
L-BFGS-B. For ``h(x) = 0`` (``'eq'``) and ``c(x) >= 0`` (``'ineq'``) and ``lb <= x <= ub``::

    L_rho(x; lam, mu) = f(x) - lam.h + rho/2 |h|^2
                        + 1/(2 rho) sum(max(0, mu - rho c)^2 - mu^2)

Outer iteration k: ``x <- argmin_{lb<=x<=ub} L_rho`` (warm-started L-BFGS-B),
``lam <- lam - rho h(x)``, ``mu <- max(0, mu - rho c(x))``; ``rho <- 10 rho`` when the
infeasibility/complementarity measure ``V = max(|h|, |min(c, mu/rho)|)`` did not halve.

Convergence (status ``CONSTRAINED_OK``): the projected gradient of the Lagrangian
``grad f - J_h' lam - J_c' mu`` is below ``gtol * max(1, max|grad f|)``,
``max(|h|, max(0, -c))`` below ``ctol``
and complementarity ``max |min(c, mu)|`` below ``ctol``. Defaults: ``gtol = ctol =
sqrt(machine epsilon)`` (1.5e-8 in float64); scipy's SLSQP ``ftol`` option, when given,
sets both (unless they are given too). Running out of outer iterations gives
``INFEASIBLE`` when the constraints are still violated by more than ``ctol``, else
``MAX_ITER``.

:class:`AugmentedLagrangian` is a solver of the one shape (one outer iteration per ``step``)
over :class:`AugLagState`; each step runs the inner bound-constrained solve with
:func:`~jaxinfer.optimize._iterate.iterate` on :class:`~jaxinfer.optimize.quasi_newton.LBFGSB`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxinfer.optimize._iterate import AbstractSolver, Progress, all_finite, first_status, iterate
from jaxinfer.optimize.quasi_newton import LBFGSB, projected_gradient
from jaxinfer.optimize.result import OptimizeResult, Status


def _with_user_jacobian(c_flat: Callable, jac_flat: Callable) -> Callable:
    """``c_flat`` whose derivative is the user's Jacobian ``jac_flat(x) -> (m, n)``."""

    @jax.custom_jvp
    def c(x):
        return c_flat(x)

    @c.defjvp
    def c_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return c(x), jac_flat(x) @ t

    return c


def build_constraints(specs, con_args, x0_flat, unravel):
    """Constraint specs -> ``(eq, ineq)`` flat functions ``x (n,) -> (m,)``.

    ``specs``: tuple of ``(kind, fun, jac)`` (see
    :func:`jaxinfer.optimize.minimize.split_constraints`), ``con_args`` the matching
    argument tuples. ``fun(x, *args)`` returns a scalar or 1-D array; the optional
    ``jac(x, *args)`` must be JAX-traceable and return an (m, n) array over the flattened
    parameters (or, for a scalar constraint, a gradient pytree like ``x``).
    """
    n = x0_flat.shape[0]
    dtype = x0_flat.dtype
    parts = {"eq": [], "ineq": []}
    for i, ((kind, fun, jac), cargs) in enumerate(zip(specs, con_args)):

        def c_flat(x, fun=fun, cargs=cargs):
            return jnp.atleast_1d(jnp.asarray(fun(unravel(x), *cargs))).reshape(-1).astype(dtype)

        try:
            m = jax.eval_shape(c_flat, x0_flat).shape[0]
        except Exception as err:  # report which constraint failed to trace
            raise ValueError(f"constraint {i} ('{kind}') could not be evaluated on x0 with "
                             f"JAX (use jax.numpy inside it): {err}") from err
        if jac is not None:

            def jac_flat(x, jac=jac, cargs=cargs, m=m):
                J = jac(unravel(x), *cargs)
                if hasattr(J, "shape"):
                    J = jnp.asarray(J, dtype)
                else:
                    J = ravel_pytree(J)[0].astype(dtype)
                return jnp.reshape(J, (m, n))

            try:
                jax.eval_shape(jac_flat, x0_flat)
            except Exception as err:
                raise ValueError(
                    f"constraint {i}: 'jac' must be JAX-traceable and return an ({m}, {n}) "
                    f"array (use jax.numpy, not numpy), or omit it to use autodiff: {err}"
                ) from err
            c_flat = _with_user_jacobian(c_flat, jac_flat)
        parts[kind].append(c_flat)

    def stack(funcs):
        if not funcs:
            return lambda x: jnp.zeros((0,), dtype)
        return lambda x: jnp.concatenate([c(x) for c in funcs])

    return stack(parts["eq"]), stack(parts["ineq"])


class AugLagState(eqx.Module):
    """Public state of :class:`AugmentedLagrangian` (flat vectors of length n).

    x, f, g : iterate, objective, objective gradient; lam_eq (m_eq,), lam_ineq (m_ineq,
    >= 0) : multipliers; rho : penalty; measure : ``V = max(|h|, |min(c, mu/rho)|)``;
    violation : ``max(|h|, max(0, -c))``; stationarity : ``max |projected gradient of the
    Lagrangian|``; complementarity : ``max |min(c, mu)|``; nit, nfev : outer iterations and
    objective evaluations (inner ones included).
    """

    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    lam_eq: jnp.ndarray
    lam_ineq: jnp.ndarray
    rho: jnp.ndarray
    measure: jnp.ndarray
    violation: jnp.ndarray
    stationarity: jnp.ndarray
    complementarity: jnp.ndarray
    nit: jnp.ndarray
    nfev: jnp.ndarray


class AugmentedLagrangian(AbstractSolver):
    """PHR augmented Lagrangian with inner L-BFGS-B (see module docstring).

    Settings: ``eq`` / ``ineq`` constraint functions ``x (n,) -> (m,)`` (see
    :func:`build_constraints`; None for none), ``lower`` / ``upper`` bounds ((n,) or
    scalars, None for none), ``maxiter`` outer iterations (100), ``ctol`` / ``gtol`` (None ->
    sqrt(eps)), ``ftol`` (scipy SLSQP's name; sets ctol and gtol when those are None),
    ``penalty`` initial rho (10), ``inner_maxiter`` (2000) and ``maxcor`` (10) of the inner
    L-BFGS-B, ``max_penalty`` (1e10). ``fn(x, args) -> (f scalar, g (n,))``.
    """

    eq: Optional[Callable] = eqx.field(static=True, default=None)
    ineq: Optional[Callable] = eqx.field(static=True, default=None)
    lower: Any = None
    upper: Any = None
    maxiter: int = 100
    ctol: Optional[float] = None
    gtol: Optional[float] = None
    ftol: Optional[float] = None
    penalty: float = 10.0
    inner_maxiter: int = 2000
    maxcor: int = 10
    max_penalty: float = 1e10

    def _tols(self, dtype):
        default = float(np.sqrt(np.finfo(dtype).eps))
        base = default if self.ftol is None else float(self.ftol)
        ctol = base if self.ctol is None else float(self.ctol)
        gtol = base if self.gtol is None else float(self.gtol)
        return ctol, gtol

    def _bounds(self, x):
        lb = -jnp.inf if self.lower is None else self.lower
        ub = jnp.inf if self.upper is None else self.upper
        return (jnp.broadcast_to(jnp.asarray(lb, x.dtype), x.shape),
                jnp.broadcast_to(jnp.asarray(ub, x.dtype), x.shape))

    def _constraints(self, x):
        none = jnp.zeros((0,), x.dtype)
        h = none if self.eq is None else self.eq(x)
        c = none if self.ineq is None else self.ineq(x)
        return h, c

    def _measures(self, x, mu, mu_new, rho):
        h, c = self._constraints(x)
        infeas = jnp.maximum(jnp.max(jnp.abs(h), initial=0.0),
                             jnp.max(jnp.maximum(-c, 0.0), initial=0.0))
        V = jnp.maximum(jnp.max(jnp.abs(h), initial=0.0),
                        jnp.max(jnp.abs(jnp.minimum(c, mu / rho)), initial=0.0))
        comp = jnp.max(jnp.abs(jnp.minimum(c, mu_new)), initial=0.0)
        return infeas, V, comp

    def init(self, fn, x0, args) -> AugLagState:
        dtype = x0.dtype
        lb, ub = self._bounds(x0)
        x0 = jnp.clip(x0, lb, ub)
        f0, g0 = fn(x0, args)
        h0, c0 = jax.eval_shape(self._constraints, x0)
        lam0 = jnp.zeros(h0.shape, dtype)
        mu0 = jnp.zeros(c0.shape, dtype)
        rho0 = jnp.asarray(self.penalty, dtype)
        infeas0, V0, comp0 = self._measures(x0, mu0, mu0, rho0)
        return AugLagState(x=x0, f=f0, g=g0, lam_eq=lam0, lam_ineq=mu0, rho=rho0, measure=V0,
                           violation=infeas0, stationarity=jnp.asarray(jnp.inf, dtype),
                           complementarity=comp0, nit=jnp.zeros((), jnp.int32),
                           nfev=jnp.ones((), jnp.int32))

    def step(self, fn, s: AugLagState, args) -> AugLagState:
        ctol, gtol = self._tols(s.x.dtype)
        lb, ub = self._bounds(s.x)
        lam, mu, rho = s.lam_eq, s.lam_ineq, s.rho
        eq = (lambda x: jnp.zeros((0,), x.dtype)) if self.eq is None else self.eq
        ineq = (lambda x: jnp.zeros((0,), x.dtype)) if self.ineq is None else self.ineq

        def augmented(x, args):
            f, gf = fn(x, args)
            h, h_vjp = jax.vjp(eq, x)
            c, c_vjp = jax.vjp(ineq, x)
            shifted = jnp.maximum(0.0, mu - rho * c)
            value = (f - jnp.vdot(lam, h) + 0.5 * rho * jnp.vdot(h, h)
                     + (jnp.vdot(shifted, shifted) - jnp.vdot(mu, mu)) / (2.0 * rho))
            grad = gf + h_vjp(-(lam - rho * h))[0] + c_vjp(-shifted)[0]
            return value, grad

        # inner ftol at the dtype's eps: with ftol 0 a subproblem at its rounding floor keeps
        # taking strictly decreasing rounding-size steps until maxfun (20,000 evaluations on
        # HS71 under jit); the outer loop checks stationarity itself
        inner = LBFGSB(maxcor=self.maxcor, ftol=float(np.finfo(s.x.dtype).eps),
                       gtol=0.1 * gtol, maxiter=self.inner_maxiter,
                       maxfun=10 * self.inner_maxiter, lower=lb, upper=ub)
        sub = iterate(inner, augmented, s.x, args)
        x = sub.x
        h, c = self._constraints(x)
        lam_new = lam - rho * h
        mu_new = jnp.maximum(0.0, mu - rho * c)
        infeas, V, comp = self._measures(x, mu, mu_new, rho)
        # gradient of the Lagrangian with the new multipliers = gradient of L_rho at x
        stationarity = jnp.max(jnp.abs(projected_gradient(x, sub.jac, lb, ub)), initial=0.0)
        f, gf = fn(x, args)
        nit = s.nit + 1
        rho_new = jnp.where((nit > 1) & (V > 0.5 * s.measure) & (V > ctol),
                            jnp.minimum(10.0 * rho, self.max_penalty), rho)
        return AugLagState(x=x, f=f, g=gf, lam_eq=lam_new, lam_ineq=mu_new, rho=rho_new,
                           measure=V, violation=infeas, stationarity=stationarity,
                           complementarity=comp, nit=nit, nfev=s.nfev + sub.nfev + 1)

    def terminate(self, fn, s: AugLagState, args) -> jnp.ndarray:
        ctol, gtol = self._tols(s.x.dtype)
        # stationarity relative to the objective's gradient scale (cancellation between
        # grad f and the constraint terms limits what is reachable, notably in float32)
        grad_scale = jnp.maximum(1.0, jnp.max(jnp.abs(s.g), initial=0.0))
        converged = ((s.stationarity <= gtol * grad_scale) & (s.violation <= ctol)
                     & (s.complementarity <= ctol))
        return first_status(
            (~all_finite(s.f, s.g, s.x), Status.NONFINITE),
            (converged, Status.CONSTRAINED_OK),
            ((s.nit >= self.maxiter) & (s.violation > ctol), Status.INFEASIBLE),
            (s.nit >= self.maxiter, Status.MAX_ITER),
        )

    def postprocess(self, fn, s: AugLagState, args, status) -> OptimizeResult:
        return OptimizeResult(
            x=s.x, fun=s.f, jac=s.g, status=status, nit=s.nit, nfev=s.nfev, njev=s.nfev,
            extra={"multipliers_eq": s.lam_eq, "multipliers_ineq": s.lam_ineq,
                   "constraint_violation": s.violation,
                   "lagrangian_gradient_norm": s.stationarity, "penalty": s.rho})

    def progress(self, s: AugLagState) -> Progress:
        return Progress(nit=s.nit, fun=s.f, x=s.x)
