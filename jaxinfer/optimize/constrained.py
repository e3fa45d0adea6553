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
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxinfer.optimize._iterate import RUNNING, all_finite, first_status
from jaxinfer.optimize.quasi_newton import LBFGSB, projected_gradient
from jaxinfer.optimize.result import Status


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


class AugLagState(NamedTuple):
    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray            # gradient of the objective at x
    lam_eq: jnp.ndarray       # (m_eq,) multipliers of h(x) = 0
    lam_ineq: jnp.ndarray     # (m_ineq,) multipliers (>= 0) of c(x) >= 0
    rho: jnp.ndarray          # penalty parameter
    measure: jnp.ndarray      # V = max(|h|, |min(c, mu/rho)|) at x
    violation: jnp.ndarray    # max(|h|, max(0, -c)) at x
    stationarity: jnp.ndarray  # max |projected gradient of the Lagrangian| at x
    nit: jnp.ndarray
    nfev: jnp.ndarray
    status: jnp.ndarray


class AugmentedLagrangian(eqx.Module):
    """PHR augmented Lagrangian with inner L-BFGS-B (see module docstring).

    Settings: ``maxiter`` outer iterations (100), ``ctol`` / ``gtol`` (None -> sqrt(eps)),
    ``ftol`` (scipy SLSQP's name; sets ctol and gtol when those are None), ``penalty``
    initial rho (10), ``inner_maxiter`` (2000) and ``maxcor`` (10) of the inner L-BFGS-B.
    """

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

    def run(self, value_and_grad: Callable, eq: Callable, ineq: Callable, x0, lb, ub,
            callback=None) -> AugLagState:
        dtype = x0.dtype
        ctol, gtol = self._tols(dtype)
        lb = jnp.broadcast_to(jnp.asarray(lb, dtype), x0.shape)
        ub = jnp.broadcast_to(jnp.asarray(ub, dtype), x0.shape)
        x0 = jnp.clip(x0, lb, ub)
        inner = LBFGSB(maxcor=self.maxcor, ftol=0.0, gtol=0.1 * gtol,
                       maxiter=self.inner_maxiter, maxfun=10 * self.inner_maxiter)

        def measures(x, lam, mu, mu_new, rho):
            h = eq(x)
            c = ineq(x)
            infeas = jnp.maximum(jnp.max(jnp.abs(h), initial=0.0),
                                 jnp.max(jnp.maximum(-c, 0.0), initial=0.0))
            V = jnp.maximum(jnp.max(jnp.abs(h), initial=0.0),
                            jnp.max(jnp.abs(jnp.minimum(c, mu / rho)), initial=0.0))
            comp = jnp.max(jnp.abs(jnp.minimum(c, mu_new)), initial=0.0)
            return infeas, V, comp

        f0, g0 = value_and_grad(x0)
        m_eq = jax.eval_shape(eq, x0).shape[0]
        m_in = jax.eval_shape(ineq, x0).shape[0]
        lam0 = jnp.zeros((m_eq,), dtype)
        mu0 = jnp.zeros((m_in,), dtype)
        rho0 = jnp.asarray(self.penalty, dtype)
        infeas0, V0, _ = measures(x0, lam0, mu0, mu0, rho0)
        state = AugLagState(
            x=x0, f=f0, g=g0, lam_eq=lam0, lam_ineq=mu0, rho=rho0, measure=V0,
            violation=infeas0, stationarity=jnp.asarray(jnp.inf, dtype),
            nit=jnp.zeros((), jnp.int32), nfev=jnp.ones((), jnp.int32),
            status=first_status((~all_finite(f0, g0), Status.NONFINITE),
                                (jnp.asarray(self.maxiter <= 0), Status.MAX_ITER)))

        def body(s):
            lam, mu, rho = s.lam_eq, s.lam_ineq, s.rho

            def aug_value_and_grad(x):
                f, gf = value_and_grad(x)
                h, h_vjp = jax.vjp(eq, x)
                c, c_vjp = jax.vjp(ineq, x)
                shifted = jnp.maximum(0.0, mu - rho * c)
                value = (f - jnp.vdot(lam, h) + 0.5 * rho * jnp.vdot(h, h)
                         + (jnp.vdot(shifted, shifted) - jnp.vdot(mu, mu)) / (2.0 * rho))
                grad = gf + h_vjp(-(lam - rho * h))[0] + c_vjp(-shifted)[0]
                return value, grad

            sub = inner.run(aug_value_and_grad, s.x, lb, ub)
            x = sub.x
            h = eq(x)
            c = ineq(x)
            lam_new = lam - rho * h
            mu_new = jnp.maximum(0.0, mu - rho * c)
            infeas, V, comp = measures(x, lam, mu, mu_new, rho)
            # gradient of the Lagrangian with the new multipliers = gradient of L_rho at x
            stationarity = jnp.max(jnp.abs(projected_gradient(x, sub.g, lb, ub)), initial=0.0)
            f, gf = value_and_grad(x)
            nit = s.nit + 1
            if callback is not None:
                callback(x, f, gf, nit)
            rho_new = jnp.where((nit > 1) & (V > 0.5 * s.measure) & (V > ctol),
                                jnp.minimum(10.0 * rho, self.max_penalty), rho)
            # stationarity relative to the objective's gradient scale (cancellation between
            # grad f and the constraint terms limits what is reachable, notably in float32)
            grad_scale = jnp.maximum(1.0, jnp.max(jnp.abs(gf), initial=0.0))
            converged = ((stationarity <= gtol * grad_scale) & (infeas <= ctol)
                         & (comp <= ctol))
            status = first_status(
                (~all_finite(f, gf, x), Status.NONFINITE),
                (converged, Status.CONSTRAINED_OK),
                ((nit >= self.maxiter) & (infeas > ctol), Status.INFEASIBLE),
                (nit >= self.maxiter, Status.MAX_ITER),
            )
            return AugLagState(x=x, f=f, g=gf, lam_eq=lam_new, lam_ineq=mu_new, rho=rho_new,
                               measure=V, violation=infeas, stationarity=stationarity, nit=nit,
                               nfev=s.nfev + sub.nfev + 1, status=status)

        return lax.while_loop(lambda s: s.status == RUNNING, body, state)
