"""scipy's legacy function interfaces (``fmin_bfgs``, ``fmin_ncg``, ``fmin_l_bfgs_b``,
``fmin_slsqp``) as thin wrappers of :func:`~jaxinfer.optimize.minimize`, returning what
scipy returns, and scipy's Rosenbrock test functions in ``jax.numpy``.

Differences from scipy: derivatives not given are taken by autodiff (``epsilon`` /
``approx_grad`` select autodiff too), ``disp`` / ``iprint`` print nothing, and the call
counts are those of the compiled solver (evaluations of ``fun`` and its gradient together).
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from jaxinfer.optimize.minimize import minimize

__all__ = ["fmin_bfgs", "fmin_ncg", "fmin_l_bfgs_b", "fmin_slsqp", "rosen", "rosen_der",
           "rosen_hess", "rosen_hess_prod"]

_EPS64 = float(np.finfo(np.float64).eps)


def fmin_bfgs(f, x0, fprime=None, args=(), gtol=1e-5, norm=np.inf, epsilon=None,
              maxiter=None, full_output=0, disp=1, retall=0, callback=None, xrtol=0,
              c1=1e-4, c2=0.9, hess_inv0=None):
    """scipy's ``fmin_bfgs``: ``xopt``, or with ``full_output`` ``(xopt, fopt, gopt, Bopt,
    func_calls, grad_calls, warnflag)``; ``retall`` appends ``[xopt]`` (the iterates are
    not kept by the compiled loop)."""
    opts = {"gtol": gtol, "norm": norm, "maxiter": maxiter, "xrtol": xrtol, "c1": c1,
            "c2": c2, "hess_inv0": hess_inv0}
    res = minimize(f, x0, args=args, method="BFGS", jac=fprime, callback=callback,
                   options=opts)
    out = (res.x, res.fun, res.jac, res.hess_inv, res.nfev, res.njev, res.status)
    return _legacy(res, out, full_output, retall)


def fmin_ncg(f, x0, fprime, fhess_p=None, fhess=None, args=(), avextol=1e-5, epsilon=None,
             maxiter=None, full_output=0, disp=1, retall=0, callback=None, c1=1e-4, c2=0.9):
    """scipy's ``fmin_ncg``: ``xopt``, or ``(xopt, fopt, fcalls, gcalls, hcalls, warnflag)``
    (``hcalls``: Hessian(-vector) evaluations, here the CG iterations' products)."""
    res = minimize(f, x0, args=args, method="Newton-CG", jac=fprime, hess=fhess,
                   hessp=fhess_p, callback=callback,
                   options={"xtol": avextol, "maxiter": maxiter, "c1": c1, "c2": c2})
    hcalls = res.extra.get("nhev", res.njev) if isinstance(res.extra, dict) else res.njev
    out = (res.x, res.fun, res.nfev, res.njev, hcalls, res.status)
    return _legacy(res, out, full_output, retall)


def fmin_l_bfgs_b(func, x0, fprime=None, args=(), approx_grad=0, bounds=None, m=10,
                  factr=1e7, pgtol=1e-5, epsilon=1e-8, iprint=None, maxfun=15000,
                  maxiter=15000, disp=None, callback=None, maxls=20):
    """scipy's ``fmin_l_bfgs_b``: ``(x, f, d)`` with ``d = {'grad', 'task', 'funcalls',
    'nit', 'warnflag'}``. Without ``fprime`` and ``approx_grad``, ``func`` returns
    ``(f, g)`` (scipy); with ``approx_grad`` the gradient is autodiff's."""
    jac = fprime
    if fprime is None:
        jac = None if approx_grad else True
    res = minimize(func, x0, args=args, method="L-BFGS-B", jac=jac, bounds=bounds,
                   callback=callback,
                   options={"maxcor": m, "ftol": factr * _EPS64 if factr else 0.0,
                            "gtol": pgtol, "maxfun": maxfun, "maxiter": maxiter,
                            "maxls": maxls})
    d = {"grad": res.jac, "task": res.message, "funcalls": res.nfev, "nit": res.nit,
         "warnflag": res.status}
    return res.x, res.fun, d


def fmin_slsqp(func, x0, eqcons=(), f_eqcons=None, ieqcons=(), f_ieqcons=None, bounds=(),
               fprime=None, fprime_eqcons=None, fprime_ieqcons=None, args=(), iter=100,
               acc=1.0e-6, iprint=1, disp=None, full_output=0, epsilon=None, callback=None):
    """scipy's ``fmin_slsqp``: ``x``, or ``(x, fx, its, imode, smode)``. ``eqcons`` /
    ``ieqcons`` are lists of scalar functions ``c(x, *args)``, ``f_eqcons`` /
    ``f_ieqcons`` one vector function each (they win over the lists, as in scipy);
    ``== 0`` and ``>= 0`` respectively. ``bounds``: ``(min, max)`` pairs."""
    cons = []
    if f_eqcons is not None:
        cons.append({"type": "eq", "fun": f_eqcons, "jac": fprime_eqcons, "args": args})
    else:
        cons += [{"type": "eq", "fun": c, "args": args} for c in eqcons]
    if f_ieqcons is not None:
        cons.append({"type": "ineq", "fun": f_ieqcons, "jac": fprime_ieqcons, "args": args})
    else:
        cons += [{"type": "ineq", "fun": c, "args": args} for c in ieqcons]
    cons = [{k: v for k, v in c.items() if v is not None} for c in cons]
    res = minimize(func, x0, args=args, method="SLSQP", jac=fprime,
                   bounds=bounds if bounds is not None and len(bounds) else None,
                   constraints=cons, callback=callback,
                   options={"maxiter": iter, "ftol": acc})
    if full_output:
        return res.x, res.fun, res.nit, res.status, res.message
    return res.x


def _legacy(res, out, full_output, retall):
    if full_output:
        return out + ([res.x],) if retall else out
    return (res.x, [res.x]) if retall else res.x


def rosen(x):
    """The Rosenbrock function ``sum(100 (x[1:] - x[:-1]**2)**2 + (1 - x[:-1])**2)``."""
    x = jnp.asarray(x)
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2, axis=0)


def rosen_der(x):
    """Gradient of :func:`rosen` (closed form), shape like ``x``."""
    x = jnp.asarray(x)
    xm, xm_m1, xm_p1 = x[1:-1], x[:-2], x[2:]
    mid = 200 * (xm - xm_m1 ** 2) - 400 * (xm_p1 - xm ** 2) * xm - 2 * (1 - xm)
    first = -400 * x[0] * (x[1] - x[0] ** 2) - 2 * (1 - x[0])
    last = 200 * (x[-1] - x[-2] ** 2)
    return jnp.concatenate([first[None], mid, last[None]])


def rosen_hess(x):
    """Hessian of :func:`rosen` (closed form), (n, n)."""
    x = jnp.asarray(x)
    off = -400 * x[:-1]
    diag = jnp.zeros_like(x)
    diag = diag.at[0].set(1200 * x[0] ** 2 - 400 * x[1] + 2)
    diag = diag.at[-1].set(200.0)
    diag = diag.at[1:-1].set(202 + 1200 * x[1:-1] ** 2 - 400 * x[2:])
    return jnp.diag(diag) + jnp.diag(off, 1) + jnp.diag(off, -1)


def rosen_hess_prod(x, p):
    """``rosen_hess(x) @ p`` without forming the matrix, shape like ``x``."""
    x = jnp.asarray(x)
    p = jnp.asarray(p)
    hp = jnp.zeros_like(x * p)
    hp = hp.at[0].set((1200 * x[0] ** 2 - 400 * x[1] + 2) * p[0] - 400 * x[0] * p[1])
    hp = hp.at[1:-1].set(-400 * x[:-2] * p[:-2]
                         + (202 + 1200 * x[1:-1] ** 2 - 400 * x[2:]) * p[1:-1]
                         - 400 * x[1:-1] * p[2:])
    hp = hp.at[-1].set(-400 * x[-2] * p[-2] + 200 * p[-1])
    return hp
