"""Fixed-point iteration ``x = T(x, *args)``, optionally accelerated (SQUAREM), with an
optional monitored objective: the engine under EM.

>>> res = fixed_point(lambda x: jnp.cos(x), 1.0)             # res.x ~ 0.739085
>>> res = fixed_point(em_step, params0, args=(data,), objective=log_likelihood, ftol=1e-8)

Two ways to use it:

* :func:`fixed_point`, the front door: ``x0`` any pytree of float arrays, ``T`` returns a
  pytree of the same structure, compiled once per (``T``, settings, shapes) and reused;
* :class:`FixedPoint`, the solver Module, for hand-driving or composing inside your own jit:
  ``init / step / terminate / postprocess`` over a flat vector and
  ``fn(x_flat, args) -> (T(x)_flat, objective(x))`` (see :func:`make_fixed_point_fn`), run by
  :func:`jaxinfer.optimize._iterate.iterate`.

One iteration (``step``) maps the current point ``x_k`` to ``x_{k+1} = T(x_k)`` (plain), or,
with ``accelerate="squarem"``, to one SQUAREM extrapolation (Varadhan & Roland 2008, step
length S3, with the stabilising step: three evaluations of ``T`` per iteration, far fewer
evaluations in total on slowly contracting maps). The state always holds
``x``, ``T(x)`` and the objective at ``x`` from a single evaluation, so the reported ``x``,
``fun`` and residual belong to the same point.

Stopping (checked after every iteration, first match wins):

* ``NONFINITE``: ``x``, ``T(x)`` or the objective is NaN / inf;
* ``XTOL``: every component satisfies ``|T(x) - x| <= xatol + xtol * |T(x)|`` (the step the
  next plain iteration would take; ``np.isclose``-style, elementwise);
* ``FTOL`` (only with an objective): ``|l_k - l_{k-1}| <= fatol + ftol * |l_k|`` between the
  objective at consecutive iterates (lymixture's quickstart stops EM on
  ``np.isclose(l_old, l_new, rtol=1e-4)``: ``ftol=1e-4, fatol=1e-8``);
* ``MAX_ITER``: ``maxiter`` iterations without the above (a failure: ``success=False``).

Defaults are dtype-aware: ``xtol = xatol = sqrt(eps)`` of the parameters' dtype (1.5e-8 in
float64, 3.5e-4 in float32) and, with an objective, ``ftol = sqrt(eps)``, ``fatol = 0``.
Pass ``ftol=0, fatol=0`` to use the objective only as a report. A slowly contracting map
(rate ``c`` close to 1) is still ``|T(x) - x| / (1 - c)`` away from its fixed point when the
step test passes: tighten ``xtol`` or accelerate.

The objective is monitored, not optimised: its direction does not matter (EM's
log-likelihood rises, a negative log-likelihood falls). SQUAREM's extrapolated point is
used only when ``T`` and the objective are finite there; otherwise the iteration falls back
to the two plain steps it already computed (the classic safeguard for parameters that must
stay in a domain, e.g. probabilities).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxinfer.optimize._compile import callback_key, is_traced, run_compiled
from jaxinfer.optimize._iterate import AbstractSolver, Progress, all_finite, first_status, iterate
from jaxinfer.optimize.result import OptimizeResult, Status

__all__ = ["FixedPoint", "FixedPointState", "fixed_point", "make_fixed_point_fn"]

_ACCELERATORS = (None, "squarem")


class FixedPointState(eqx.Module):
    """Public state of :class:`FixedPoint` (flat vectors of length n).

    x : (n,) current iterate; tx : (n,) ``T(x)``; fun : objective at ``x`` (NaN without one);
    fun_prev : objective at the previous iterate (NaN before the first step);
    nit : iterations done; nfev : evaluations of ``T``; accelerated : how many SQUAREM
    extrapolations were accepted (0 for plain iteration).
    """

    x: jnp.ndarray
    tx: jnp.ndarray
    fun: jnp.ndarray
    fun_prev: jnp.ndarray
    nit: jnp.ndarray
    nfev: jnp.ndarray
    accelerated: jnp.ndarray


class FixedPoint(AbstractSolver):
    """Fixed-point iteration for ``x = T(x)`` on a flat vector (settings only).

    ``fn(x (n,), args) -> (T(x) (n,), objective(x) scalar)``; pass any scalar (e.g. NaN) as the
    objective with ``use_objective=False``. Tolerances given as None take the dtype-aware
    defaults of the module docstring. ``accelerate``: None (plain) or ``"squarem"``.
    ``step_max`` bounds SQUAREM's extrapolation length ``|alpha|`` (default 1e4).
    """

    xtol: Optional[float] = None
    xatol: Optional[float] = None
    ftol: Optional[float] = None
    fatol: Optional[float] = None
    maxiter: int = 1000
    use_objective: bool = eqx.field(static=True, default=False)
    accelerate: Optional[str] = eqx.field(static=True, default=None)
    step_max: float = 1e4

    def __check_init__(self):
        if self.accelerate not in _ACCELERATORS:
            raise ValueError(f"accelerate must be None or 'squarem', got {self.accelerate!r}")

    def _tolerances(self, dtype):
        root = float(np.sqrt(np.finfo(dtype).eps))
        xtol = root if self.xtol is None else self.xtol
        xatol = root if self.xatol is None else self.xatol
        ftol = (root if self.use_objective else 0.0) if self.ftol is None else self.ftol
        fatol = 0.0 if self.fatol is None else self.fatol
        return xtol, xatol, ftol, fatol

    def _evaluate(self, fn, x, args):
        tx, f = fn(x, args)
        tx = jnp.asarray(tx, x.dtype)
        f = jnp.asarray(f, x.dtype) if self.use_objective else jnp.asarray(jnp.nan, x.dtype)
        return tx, f

    def init(self, fn, x0, args):
        x0 = jnp.asarray(x0)
        tx, f = self._evaluate(fn, x0, args)
        return FixedPointState(x=x0, tx=tx, fun=f, fun_prev=jnp.asarray(jnp.nan, x0.dtype),
                               nit=jnp.zeros((), jnp.int32), nfev=jnp.ones((), jnp.int32),
                               accelerated=jnp.zeros((), jnp.int32))

    def step(self, fn, state, args):
        if self.accelerate == "squarem":
            return self._squarem_step(fn, state, args)
        tx, f = self._evaluate(fn, state.tx, args)
        return FixedPointState(x=state.tx, tx=tx, fun=f, fun_prev=state.fun, nit=state.nit + 1,
                               nfev=state.nfev + 1, accelerated=state.accelerated)

    def _squarem_step(self, fn, state, args):
        # From x0 with x1 = T(x0) in the state: x2 = T(x1); r = x1 - x0, v = x2 - 2 x1 + x0;
        # alpha = -|r| / |v| clamped to [-step_max, -1]; x' = x0 - 2 alpha r + alpha^2 v
        # (alpha = -1 gives x' = x2); then the stabilising step x_new = T(x'). The new state
        # is (x_new, T(x_new), objective(x_new)): three evaluations per iteration. Where any
        # of these is not finite, the state falls back to the plain step (x1, x2,
        # objective(x1)), already computed.
        x0, x1 = state.x, state.tx
        x2, f1 = self._evaluate(fn, x1, args)
        r = x1 - x0
        v = x2 - x1 - r
        rn = jnp.sqrt(jnp.vdot(r, r))
        vn = jnp.sqrt(jnp.vdot(v, v))
        alpha = jnp.where(vn > 0, jnp.clip(-rn / jnp.where(vn > 0, vn, 1.0),
                                           -self.step_max, -1.0), -1.0)
        x_acc = x0 - 2.0 * alpha * r + alpha ** 2 * v
        finite = all_finite(x_acc)
        x_acc = jnp.where(finite, x_acc, x2)  # keep T away from non-finite input
        x_new, _ = self._evaluate(fn, x_acc, args)
        finite = finite & all_finite(x_new)
        x_new = jnp.where(finite, x_new, x2)
        tx_new, f_new = self._evaluate(fn, x_new, args)
        good = finite & all_finite(tx_new)
        if self.use_objective:
            good = good & all_finite(f_new)
        return FixedPointState(
            x=jnp.where(good, x_new, x1), tx=jnp.where(good, tx_new, x2),
            fun=jnp.where(good, f_new, f1), fun_prev=state.fun, nit=state.nit + 1,
            nfev=state.nfev + 3, accelerated=state.accelerated + good.astype(jnp.int32))

    def terminate(self, fn, state, args):
        xtol, xatol, ftol, fatol = self._tolerances(state.x.dtype)
        resid = jnp.abs(state.tx - state.x)
        small_step = jnp.all(resid <= xatol + xtol * jnp.abs(state.tx))
        df = jnp.abs(state.fun - state.fun_prev)
        objective_test = self.use_objective and (ftol > 0 or fatol > 0)
        small_change = (jnp.asarray(objective_test) & (state.nit >= 1)
                        & (df <= fatol + ftol * jnp.abs(state.fun)))
        return first_status(
            (~all_finite(state.x, state.tx, state.fun if self.use_objective else 0.0),
             Status.NONFINITE),
            (small_step, Status.XTOL),
            (small_change, Status.FTOL),
            (state.nit >= self.maxiter, Status.MAX_ITER),
        )

    def postprocess(self, fn, state, args, status):
        resid = state.tx - state.x
        return OptimizeResult(
            x=state.x, fun=state.fun, jac=None, status=status, nit=state.nit,
            nfev=state.nfev, njev=jnp.zeros((), jnp.int32),
            extra={"residual": resid, "residual_max": jnp.max(jnp.abs(resid), initial=0.0),
                   "fun_prev": state.fun_prev, "accelerated": state.accelerated})

    def progress(self, state) -> Progress:
        return Progress(nit=state.nit, fun=state.fun, x=state.x)


def make_fixed_point_fn(T: Callable, unravel: Callable, objective=None) -> Callable:
    """Flat ``fn(x_flat, args) -> (T(x)_flat, objective(x))`` for :class:`FixedPoint` from a
    pytree map ``T(x, *args)``.

    ``objective``: None (a NaN placeholder is returned), a callable ``objective(x, *args)``,
    or True when ``T`` returns ``(T(x), objective(x))`` (the objective at the *input* ``x``,
    as an E-step computes the log-likelihood of the current parameters).
    """

    def fn(x_flat, args):
        x = unravel(x_flat)
        out = T(x, *args)
        if objective is True:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise ValueError("with objective=True, T must return a pair (T(x), objective(x))")
            out, value = out
        elif objective is None:
            value = jnp.nan
        else:
            value = objective(x, *args)
        tx_flat, _ = ravel_pytree(out)
        if tx_flat.shape != x_flat.shape:
            raise ValueError(f"T(x) has {tx_flat.size} entries, expected {x_flat.size}: T must "
                             "return a pytree with the structure and shapes of x0")
        value = jnp.asarray(value)
        if value.size != 1:
            raise ValueError(f"the objective must be a scalar, got shape {value.shape}")
        return tx_flat.astype(x_flat.dtype), jnp.reshape(value, ()).astype(x_flat.dtype)

    return fn


def _check_tolerance(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number or None, got {value!r}")
    return float(value)


def fixed_point(T: Callable, x0, args=(), *, objective=None, xtol: Optional[float] = None,
                xatol: Optional[float] = None, ftol: Optional[float] = None,
                fatol: Optional[float] = None, maxiter: int = 1000,
                accelerate: Optional[str] = None, callback: Optional[Callable] = None
                ) -> OptimizeResult:
    """Solve ``x = T(x, *args)`` by fixed-point iteration (optionally SQUAREM-accelerated).

    Parameters
    ----------
    T : ``T(x, *args) -> pytree like x``, JAX-traceable (with ``objective=True``:
        ``-> (pytree like x, scalar objective at x)``).
    x0 : pytree of float arrays, the starting point (integers are promoted to floats).
    args : extra arguments of ``T`` (and ``objective``); arrays are traced, other values are
        static (a new Python number recompiles).
    objective : None, a callable ``objective(x, *args) -> scalar`` (e.g. EM's
        log-likelihood), or True (``T`` returns it). Monitored for the ``ftol`` test and
        reported as ``res.fun``; never optimised.
    xtol, xatol : relative / absolute step tolerance, elementwise on ``|T(x) - x|``
        (default ``sqrt(eps)`` of the dtype).
    ftol, fatol : relative / absolute tolerance on the change of the objective between
        iterates (defaults ``sqrt(eps)`` and 0 with an objective; no test without one).
    maxiter : iterations (SQUAREM: 3 evaluations of ``T`` each); reaching it is a failure.
    accelerate : None (plain iteration) or ``"squarem"``.
    callback : ``callback(Progress(nit, fun, x))`` after every iteration on the host, ``x``
        a pytree like ``x0`` (NumPy); its return value is ignored. Not part of the compile
        key (one compile per ``T``, settings and shapes; inlined under your own ``jit`` /
        ``vmap``, where the callback is used directly).

    Differentiable: under ``jax.grad`` / ``jvp`` / ``jacfwd`` (and inside ``jit`` / ``vmap``)
    ``res.x`` carries the implicit derivative w.r.t. the array ``args``,
    ``dx*/dargs = (I - dT/dx)^-1 dT/dargs`` at the returned point
    (:func:`jaxinfer.optimize.implicit.implicit_fixed_point`); converge tightly (``xtol``)
    for an accurate derivative. ``x0`` gets none (the fixed point does not depend on it).

    Returns
    -------
    OptimizeResult: ``x`` (pytree like ``x0``), ``fun`` (objective at ``x``, NaN without
    one), ``status`` (XTOL, FTOL, MAX_ITER or NONFINITE; ``success`` from it), ``nit``,
    ``nfev`` (evaluations of ``T``), ``jac`` None, ``extra`` = {"residual": ``T(x) - x``
    (pytree like ``x0``), "residual_max", "fun_prev", "accelerated"}.
    """
    if not callable(T):
        raise TypeError(f"T must be callable, got {type(T).__name__}")
    if not (objective is None or objective is True or callable(objective)):
        raise TypeError("objective must be None, True (T returns (T(x), objective)) or a "
                        f"callable objective(x, *args), got {type(objective).__name__}")
    tolerances = {name: _check_tolerance(name, value) for name, value in
                  (("xtol", xtol), ("xatol", xatol), ("ftol", ftol), ("fatol", fatol))}
    if isinstance(maxiter, bool) or not isinstance(maxiter, numbers.Integral) or maxiter < 0:
        raise ValueError(f"maxiter must be a non-negative integer, got {maxiter!r}")
    if accelerate not in _ACCELERATORS:
        raise ValueError(f"accelerate must be None or 'squarem', got {accelerate!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if not isinstance(args, tuple):
        args = (args,)
    x0 = jax.tree_util.tree_map(_as_float, x0)
    leaves = jax.tree_util.tree_leaves(x0)
    if not leaves or sum(np.size(v) for v in leaves) == 0:
        raise ValueError("x0 must contain at least one number")

    from jaxinfer.optimize.minimize import _split_args
    arg_static, arg_dynamic = _split_args(args)
    solver = FixedPoint(maxiter=int(maxiter), use_objective=objective is not None,
                        accelerate=accelerate, **tolerances)
    traced = is_traced((x0, arg_dynamic))
    static = (T, objective, solver, arg_static, callback_key(callback, traced))
    if not traced:
        return run_compiled(_solve, static, x0, arg_dynamic, progress=callback)
    # inside a user's jit / vmap / grad: the loop runs on stop_gradient inputs and x* gets
    # the implicit derivative (I - dT/dx)^-1 dT/dargs (the loop is never differentiated)
    from jaxinfer.optimize.implicit import implicit_fixed_point
    from jaxinfer.optimize.minimize import _join_args
    result = run_compiled(_solve, static, *jax.lax.stop_gradient((x0, arg_dynamic)))

    def mapping(x, theta):
        out = T(x, *_join_args(arg_static, theta))
        return out[0] if objective is True else out

    x = implicit_fixed_point(result.x, mapping, arg_dynamic)
    return eqx.tree_at(lambda r: r.x, result, x)


def _solve(static, x0, arg_dynamic):
    from jaxinfer.optimize.minimize import _join_args
    T, objective, solver, arg_static, callback = static
    args = _join_args(arg_static, arg_dynamic)
    x0_flat, unravel = ravel_pytree(x0)
    fn = make_fixed_point_fn(T, unravel, objective)
    progress = None if callback is None else _tree_progress(callback, x0)
    res = iterate(solver, fn, x0_flat, args, callback=progress)
    extra = dict(res.extra)
    extra["residual"] = unravel(extra["residual"])
    return OptimizeResult(x=unravel(res.x), fun=res.fun, jac=None, status=res.status,
                          nit=res.nit, nfev=res.nfev, njev=res.njev, extra=extra)


def _tree_progress(callback, x0):
    """Host-side adapter: ``Progress`` with a flat ``x`` -> ``Progress`` with a NumPy pytree."""
    leaves, treedef = jax.tree_util.tree_flatten(x0)
    shapes = [np.shape(v) for v in leaves]
    splits = np.cumsum([int(np.prod(s)) for s in shapes])[:-1]

    def host(progress: Progress):
        flat = np.asarray(progress.x)
        parts = [p.reshape(s) for p, s in zip(np.split(flat, splits), shapes)]
        callback(Progress(nit=progress.nit, fun=progress.fun,
                          x=jax.tree_util.tree_unflatten(treedef, parts)))

    return host


def _as_float(leaf):
    leaf = jnp.asarray(leaf)
    if not jnp.issubdtype(leaf.dtype, jnp.inexact):
        leaf = leaf.astype(jnp.result_type(float))
    return leaf
