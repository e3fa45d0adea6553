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
stay in a domain, e.g. probabilities). With ``monotone="increase"`` (``"decrease"``) it is
also used only where the objective there is no lower (higher) than at the plain step, so a
monotone map such as EM stays monotone when accelerated.

Two more channels, for maps like an EM step that know more than ``T(x)``:

* ``has_aux``: ``T`` also returns ``aux``, any pytree of arrays (e.g. an inner solver's
  status); the state carries the ``aux`` of the evaluation at the current ``x`` and the
  result reports it as ``extra["aux"]``;
* ``history`` (``history_size`` on the Module): the objective at ``x_0 .. x_nit`` in a
  fixed-size buffer (NaN after ``nit``), and with ``has_aux`` the ``aux`` of those
  evaluations stacked the same way (``extra["history"]``, ``extra["aux_history"]``).

The tolerances and ``maxiter`` of :class:`FixedPoint` may be 0-d arrays (traced: changing
them does not recompile a program that takes the solver as an argument).
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
from jaxinfer.optimize._iterate import (RUNNING, AbstractSolver, Progress, all_finite,
                                        first_status, iterate)
from jaxinfer.optimize.result import OptimizeResult, Status

__all__ = ["FixedPoint", "FixedPointState", "fixed_point", "make_fixed_point_fn"]

_ACCELERATORS = (None, "squarem")
_MONOTONE = (None, "increase", "decrease")


class FixedPointState(eqx.Module):
    """Public state of :class:`FixedPoint` (flat vectors of length n).

    x : (n,) current iterate; tx : (n,) ``T(x)``; fun : objective at ``x`` (NaN without one);
    fun_prev : objective at the previous iterate (NaN before the first step);
    nit : iterations done; nfev : evaluations of ``T``; accelerated : how many SQUAREM
    extrapolations were accepted (0 for plain iteration);
    aux : the auxiliary output of the evaluation at ``x`` (None without ``has_aux``);
    history : (history_size + 1,) objective at ``x_0 .. x_nit``, NaN beyond (None when
    history_size is 0); aux_history : ``aux`` leaves stacked the same way,
    (history_size + 1, ...) (None without ``has_aux`` or history). Once ``nit`` passes
    history_size the last slot holds the latest value. started : False only before the
    first step of a ``start_in_step`` solver (x0 not evaluated yet).
    """

    x: jnp.ndarray
    tx: jnp.ndarray
    fun: jnp.ndarray
    fun_prev: jnp.ndarray
    nit: jnp.ndarray
    nfev: jnp.ndarray
    accelerated: jnp.ndarray
    aux: Any = None
    history: Optional[jnp.ndarray] = None
    aux_history: Any = None
    started: Any = True


def _select(cond, a, b):
    return jax.tree_util.tree_map(lambda u, v: jnp.where(cond, u, v), a, b)


class FixedPoint(AbstractSolver):
    """Fixed-point iteration for ``x = T(x)`` on a flat vector (settings only).

    ``fn(x (n,), args) -> (T(x) (n,), objective(x) scalar)`` (with ``has_aux``:
    ``-> (T(x), objective(x), aux)``); pass any scalar (e.g. NaN) as the objective with
    ``use_objective=False``. Tolerances given as None take the dtype-aware defaults of the
    module docstring; they and ``maxiter`` may be 0-d arrays. ``accelerate``: None (plain)
    or ``"squarem"``; ``monotone``: None, ``"increase"`` or ``"decrease"`` (SQUAREM keeps
    an extrapolation only if the objective does not get worse than the plain step's; needs
    ``use_objective``). ``step_max`` bounds SQUAREM's extrapolation length ``|alpha|``
    (default 1e4). ``history_size``: length of the objective (and aux) trace, 0 for none.
    ``start_in_step``: ``init`` evaluates nothing and the first ``step`` evaluates ``T(x0)``
    (``nit`` stays 0; a progress callback sees it with ``nit = 0``), so a compiled loop holds
    one copy of ``T`` instead of two: for an expensive ``T`` (EM's M-step is a vmapped
    L-BFGS-B) this halves the compile; SQUAREM holds one copy either way.
    """

    xtol: Optional[float] = None
    xatol: Optional[float] = None
    ftol: Optional[float] = None
    fatol: Optional[float] = None
    maxiter: int = 1000
    use_objective: bool = eqx.field(static=True, default=False)
    accelerate: Optional[str] = eqx.field(static=True, default=None)
    step_max: float = 1e4
    has_aux: bool = eqx.field(static=True, default=False)
    history_size: int = eqx.field(static=True, default=0)
    monotone: Optional[str] = eqx.field(static=True, default=None)
    start_in_step: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if self.accelerate not in _ACCELERATORS:
            raise ValueError(f"accelerate must be None or 'squarem', got {self.accelerate!r}")
        if self.monotone not in _MONOTONE:
            raise ValueError("monotone must be None, 'increase' or 'decrease', got "
                             f"{self.monotone!r}")
        if self.monotone is not None and not self.use_objective:
            raise ValueError("monotone needs an objective (use_objective=True)")
        if (isinstance(self.history_size, bool) or not isinstance(self.history_size, int)
                or self.history_size < 0):
            raise ValueError(f"history_size must be a non-negative integer, got "
                             f"{self.history_size!r}")

    def _tolerances(self, dtype):
        root = float(np.sqrt(np.finfo(dtype).eps))
        xtol = root if self.xtol is None else self.xtol
        xatol = root if self.xatol is None else self.xatol
        ftol = (root if self.use_objective else 0.0) if self.ftol is None else self.ftol
        fatol = 0.0 if self.fatol is None else self.fatol
        return xtol, xatol, ftol, fatol

    def _evaluate(self, fn, x, args):
        """``(T(x), objective(x), aux)``; aux None without ``has_aux``."""
        out = fn(x, args)
        if self.has_aux:
            tx, f, aux = out
        else:
            (tx, f), aux = out, None
        tx = jnp.asarray(tx, x.dtype)
        f = jnp.asarray(f, x.dtype) if self.use_objective else jnp.asarray(jnp.nan, x.dtype)
        return tx, f, aux

    def init(self, fn, x0, args):
        x0 = jnp.asarray(x0)
        if self.start_in_step:
            # nothing evaluated yet: placeholders of the right shapes, the first step fills them
            _, _, aux_shape = jax.eval_shape(lambda x: self._evaluate(fn, x, args), x0)
            aux = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), aux_shape)
            tx, f, nfev = x0, jnp.asarray(jnp.nan, x0.dtype), 0
        else:
            (tx, f, aux), nfev = self._evaluate(fn, x0, args), 1
        nit = jnp.zeros((), jnp.int32)
        history = aux_history = None
        if self.history_size:
            size = self.history_size + 1
            history = jnp.full((size,), jnp.nan, x0.dtype)
            if aux is not None:
                aux_history = jax.tree_util.tree_map(
                    lambda a: jnp.zeros((size,) + jnp.shape(a), jnp.result_type(a)), aux)
            if not self.start_in_step:
                history, aux_history = self._record(history, aux_history, nit, f, aux)
        return FixedPointState(x=x0, tx=tx, fun=f, fun_prev=jnp.asarray(jnp.nan, x0.dtype),
                               nit=nit, nfev=jnp.asarray(nfev, jnp.int32),
                               accelerated=jnp.zeros((), jnp.int32), aux=aux, history=history,
                               aux_history=aux_history,
                               started=jnp.asarray(not self.start_in_step))

    def step(self, fn, state, args):
        if self.accelerate == "squarem":
            return self._squarem_step(fn, state, args)
        if not self.start_in_step:
            tx, f, aux = self._evaluate(fn, state.tx, args)
            return self._advance(state, state.tx, tx, f, aux, nfev=1, accepted=0)
        # one evaluation in the program: at x0 on the first step, at T(x) afterwards
        x = jnp.where(state.started, state.tx, state.x)
        tx, f, aux = self._evaluate(fn, x, args)
        return _select(state.started, self._advance(state, x, tx, f, aux, nfev=1, accepted=0),
                       self._start(state, tx, f, aux))

    def _start(self, state, tx, f, aux):
        """The state after the first evaluation, at ``x0`` (``start_in_step``)."""
        history, aux_history = self._record(state.history, state.aux_history, state.nit, f, aux)
        return FixedPointState(x=state.x, tx=tx, fun=f, fun_prev=state.fun_prev, nit=state.nit,
                               nfev=state.nfev + 1, accelerated=state.accelerated, aux=aux,
                               history=history, aux_history=aux_history,
                               started=jnp.asarray(True))

    def _record(self, history, aux_history, nit, f, aux):
        """Write ``f`` (and ``aux``) into slot ``min(nit, history_size)`` of the traces."""
        if self.history_size == 0:
            return None, None
        slot = jnp.minimum(nit, self.history_size)
        history = history.at[slot].set(f)
        if aux is not None:
            aux_history = jax.tree_util.tree_map(lambda h, a: h.at[slot].set(a), aux_history, aux)
        return history, aux_history

    def _advance(self, state, x, tx, f, aux, nfev, accepted):
        nit = state.nit + 1
        history, aux_history = self._record(state.history, state.aux_history, nit, f, aux)
        return FixedPointState(x=x, tx=tx, fun=f, fun_prev=state.fun, nit=nit,
                               nfev=state.nfev + nfev, accelerated=state.accelerated + accepted,
                               aux=aux, history=history, aux_history=aux_history,
                               started=state.started)

    def _squarem_step(self, fn, state, args):
        # From x0 with x1 = T(x0) in the state: x2 = T(x1); r = x1 - x0, v = x2 - 2 x1 + x0;
        # alpha = -|r| / |v| clamped to [-step_max, -1]; x' = x0 - 2 alpha r + alpha^2 v
        # (alpha = -1 gives x' = x2); then the stabilising step x_new = T(x'). The new state
        # is (x_new, T(x_new), objective(x_new)): three evaluations per iteration. Where any
        # of these is not finite (or, with ``monotone``, the objective is worse than at x1),
        # the state falls back to the plain step (x1, x2, objective(x1)), already computed.
        # The three evaluations are the stages 0, 1, 2 of one loop, so the program holds
        # one copy of T; with ``start_in_step`` the first step is stage -1 alone (T(x0)).
        x0, x1 = state.x, state.tx
        nan = jnp.asarray(jnp.nan, x0.dtype)

        def stage(i, c):
            inp, x2, f1, aux1, finite, x_new, tx_new, f_new, aux_new = c
            out, f, aux = self._evaluate(fn, inp, args)
            first, second, last = i == 0, i == 1, (i == 2) | (i == -1)
            # after stage 0 (out = x2): the extrapolated point
            r = x1 - x0
            v = out - x1 - r
            rn = jnp.sqrt(jnp.vdot(r, r))
            vn = jnp.sqrt(jnp.vdot(v, v))
            alpha = jnp.where(vn > 0, jnp.clip(-rn / jnp.where(vn > 0, vn, 1.0),
                                               -self.step_max, -1.0), -1.0)
            x_acc = x0 - 2.0 * alpha * r + alpha ** 2 * v
            finite_acc = all_finite(x_acc)
            x_acc = jnp.where(finite_acc, x_acc, out)  # keep T away from non-finite input
            # after stage 1 (out = T(x')): the point whose T is evaluated last
            finite_new = finite & all_finite(out)
            stabilised = jnp.where(finite_new, out, x2)
            return (jnp.where(first, x_acc, jnp.where(second, stabilised, inp)),
                    jnp.where(first, out, x2), jnp.where(first, f, f1), _select(first, aux, aux1),
                    jnp.where(first, finite_acc, jnp.where(second, finite_new, finite)),
                    jnp.where(second, stabilised, jnp.where(i == -1, inp, x_new)),
                    jnp.where(last, out, tx_new), jnp.where(last, f, f_new),
                    _select(last, aux, aux_new))

        carry = (jnp.where(state.started, x1, x0), x1, nan, state.aux, jnp.asarray(True), x1,
                 x1, nan, state.aux)
        if self.start_in_step:
            lo = jnp.where(state.started, 0, -1)
            hi = jnp.where(state.started, 3, 0)
        else:
            lo, hi = 0, 3
        (_, x2, f1, aux1, finite, x_new, tx_new, f_new, aux_new) = jax.lax.fori_loop(
            lo, hi, stage, carry)
        good = finite & all_finite(tx_new)
        if self.use_objective:
            good = good & all_finite(f_new)
        if self.monotone == "increase":
            good = good & (f_new >= f1)
        elif self.monotone == "decrease":
            good = good & (f_new <= f1)
        advanced = self._advance(state, jnp.where(good, x_new, x1), jnp.where(good, tx_new, x2),
                                 jnp.where(good, f_new, f1), _select(good, aux_new, aux1),
                                 nfev=3, accepted=good.astype(jnp.int32))
        if not self.start_in_step:
            return advanced
        return _select(state.started, advanced, self._start(state, tx_new, f_new, aux_new))

    def terminate(self, fn, state, args):
        xtol, xatol, ftol, fatol = self._tolerances(state.x.dtype)
        resid = jnp.abs(state.tx - state.x)
        small_step = jnp.all(resid <= xatol + xtol * jnp.abs(state.tx))
        df = jnp.abs(state.fun - state.fun_prev)
        # tolerances may be traced: the "no objective test" case is a traced condition too
        objective_test = jnp.asarray(self.use_objective) & ((jnp.asarray(ftol) > 0)
                                                             | (jnp.asarray(fatol) > 0))
        small_change = (objective_test & (state.nit >= 1)
                        & (df <= fatol + ftol * jnp.abs(state.fun)))
        status = first_status(
            (~all_finite(state.x, state.tx, state.fun if self.use_objective else 0.0),
             Status.NONFINITE),
            (small_step, Status.XTOL),
            (small_change, Status.FTOL),
            (state.nit >= self.maxiter, Status.MAX_ITER),
        )
        return jnp.where(state.started, status, RUNNING)

    def postprocess(self, fn, state, args, status):
        resid = state.tx - state.x
        extra = {"residual": resid, "residual_max": jnp.max(jnp.abs(resid), initial=0.0),
                 "fun_prev": state.fun_prev, "accelerated": state.accelerated}
        if self.has_aux:
            extra["aux"] = state.aux
        if self.history_size:
            extra["history"] = state.history
            if self.has_aux:
                extra["aux_history"] = state.aux_history
        return OptimizeResult(
            x=state.x, fun=state.fun, jac=None, status=status, nit=state.nit,
            nfev=state.nfev, njev=jnp.zeros((), jnp.int32), extra=extra)

    def progress(self, state) -> Progress:
        return Progress(nit=state.nit, fun=state.fun, x=state.x)


def make_fixed_point_fn(T: Callable, unravel: Callable, objective=None,
                        has_aux: bool = False) -> Callable:
    """Flat ``fn(x_flat, args) -> (T(x)_flat, objective(x))`` for :class:`FixedPoint` from a
    pytree map ``T(x, *args)``.

    ``objective``: None (a NaN placeholder is returned), a callable ``objective(x, *args)``,
    or True when ``T`` returns ``(T(x), objective(x))`` (the objective at the *input* ``x``,
    as an E-step computes the log-likelihood of the current parameters). ``has_aux``: ``T``
    returns ``aux`` last (``(T(x), aux)`` or ``(T(x), objective(x), aux)``) and ``fn``
    returns ``(T(x)_flat, objective(x), aux)``.
    """

    def fn(x_flat, args):
        x = unravel(x_flat)
        out, value, aux = _split_output(T(x, *args), objective, has_aux)
        if objective is None:
            value = jnp.nan
        elif objective is not True:
            value = objective(x, *args)
        tx_flat, _ = ravel_pytree(out)
        if tx_flat.shape != x_flat.shape:
            raise ValueError(f"T(x) has {tx_flat.size} entries, expected {x_flat.size}: T must "
                             "return a pytree with the structure and shapes of x0")
        value = jnp.asarray(value)
        if value.size != 1:
            raise ValueError(f"the objective must be a scalar, got shape {value.shape}")
        value = jnp.reshape(value, ()).astype(x_flat.dtype)
        if has_aux:
            return tx_flat.astype(x_flat.dtype), value, aux
        return tx_flat.astype(x_flat.dtype), value

    return fn


def _split_output(out, objective, has_aux):
    """``T``'s return value -> ``(T(x), objective or None, aux or None)``."""
    parts = 1 + (objective is True) + bool(has_aux)
    if parts == 1:
        return out, None, None
    if not (isinstance(out, tuple) and len(out) == parts):
        shape = {(True, False): "a pair (T(x), objective(x))", (False, True): "a pair (T(x), aux)",
                 (True, True): "a triple (T(x), objective(x), aux)"}[(objective is True,
                                                                         bool(has_aux))]
        flags = " and ".join(n for n, on in (("objective=True", objective is True),
                                              ("has_aux=True", has_aux)) if on)
        raise ValueError(f"with {flags}, T must return {shape}")
    return out[0], (out[1] if objective is True else None), (out[-1] if has_aux else None)


def _check_tolerance(name, value):
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{name} must be a non-negative number or None, got {value!r}")
    return float(value)


def fixed_point(T: Callable, x0, args=(), *, objective=None, xtol: Optional[float] = None,
                xatol: Optional[float] = None, ftol: Optional[float] = None,
                fatol: Optional[float] = None, maxiter: int = 1000,
                accelerate: Optional[str] = None, monotone: Optional[str] = None,
                has_aux: bool = False, history: int = 0, callback: Optional[Callable] = None
                ) -> OptimizeResult:
    """Solve ``x = T(x, *args)`` by fixed-point iteration (optionally SQUAREM-accelerated).

    Parameters
    ----------
    T : ``T(x, *args) -> pytree like x``, JAX-traceable (with ``objective=True``:
        ``-> (pytree like x, scalar objective at x)``; with ``has_aux`` a last ``aux``
        pytree of arrays as well).
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
    monotone : None, ``"increase"`` or ``"decrease"``: keep a SQUAREM extrapolation only
        where the objective is no worse than at the plain step (needs an objective).
    has_aux : ``T`` returns an auxiliary pytree last; reported as ``extra["aux"]`` (the
        evaluation at ``res.x``).
    history : keep the objective at ``x_0 .. x_nit`` (``extra["history"]``,
        ``(history + 1,)``, NaN after ``nit``) and, with ``has_aux``, the aux of those
        evaluations (``extra["aux_history"]``, leaves ``(history + 1, ...)``); 0: none.
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
    (pytree like ``x0``), "residual_max", "fun_prev", "accelerated"} and "aux", "history",
    "aux_history" where asked for.
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
    if monotone is not None and objective is None:
        raise ValueError("monotone needs an objective (objective=True or a callable)")
    if isinstance(history, bool) or not isinstance(history, numbers.Integral) or history < 0:
        raise ValueError(f"history must be a non-negative integer, got {history!r}")
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
                        accelerate=accelerate, monotone=monotone, has_aux=bool(has_aux),
                        history_size=int(history), **tolerances)
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
        return _split_output(T(x, *_join_args(arg_static, theta)), objective, has_aux)[0]

    x = implicit_fixed_point(result.x, mapping, arg_dynamic)
    return eqx.tree_at(lambda r: r.x, result, x)


def _solve(static, x0, arg_dynamic):
    from jaxinfer.optimize.minimize import _join_args
    T, objective, solver, arg_static, callback = static
    args = _join_args(arg_static, arg_dynamic)
    x0_flat, unravel = ravel_pytree(x0)
    fn = make_fixed_point_fn(T, unravel, objective, solver.has_aux)
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
