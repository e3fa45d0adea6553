"""The one solver shape (``AbstractSolver``), its driver (``iterate``), the progress
convention, and the status helpers every solver shares.

Every solver here works on a flat 1-D parameter vector and a function
``value_and_grad(x_flat) -> (f, g_flat)``; :mod:`jaxinfer.optimize.minimize` builds those from
the user's pytree objective.
"""

from __future__ import annotations

import abc
import contextlib
import inspect
from typing import Any, Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from jaxinfer.optimize.result import Status

RUNNING = -1  # status value while a solver loop is still going


class IntermediateResult(NamedTuple):
    """What a ``callback(intermediate_result)`` receives each iteration (host NumPy values).

    x : pytree like ``x0``; fun : objective; jac : gradient pytree; nit : iterations done.
    """

    x: Any
    fun: Any
    jac: Any
    nit: Any

    def __getitem__(self, key):  # scipy-style access, intermediate_result["x"]
        if isinstance(key, str):
            return getattr(self, key)
        return tuple.__getitem__(self, key)


def make_callback(user_callback: Optional[Callable], unravel: Callable) -> Optional[Callable]:
    """Wrap a user callback into ``cb(x_flat, f, g_flat, nit)`` that works under ``jit``.

    Like scipy, a callback whose only parameter is named ``intermediate_result`` receives an
    :class:`IntermediateResult`; any other callback receives ``xk`` (the pytree). The return
    value is ignored: under ``jit`` the host cannot stop the compiled loop, so returning
    ``True`` does not stop the solver (use ``maxiter`` instead). Under ``vmap`` it fires for
    every batch member on every pass of the batched loop, converged members included.
    """
    if user_callback is None:
        return None
    if not callable(user_callback):
        raise TypeError(f"callback must be callable or None, got {type(user_callback).__name__}")
    try:
        params = list(inspect.signature(user_callback).parameters)
    except (TypeError, ValueError):
        params = []
    wants_result = params == ["intermediate_result"]

    def host(x_tree, f, g_tree, nit):
        if wants_result:
            user_callback(IntermediateResult(x=x_tree, fun=f, jac=g_tree, nit=nit))
        else:
            user_callback(x_tree)

    def cb(x_flat, f, g_flat, nit):
        jax.debug.callback(host, unravel(x_flat), f, unravel(g_flat), nit)

    return cb


def first_status(*pairs):
    """``first_status((cond1, Status.A), (cond2, Status.B), ...)``: the first true condition's
    status code, else ``RUNNING``. Conditions are boolean scalars (traced)."""
    status = jnp.asarray(RUNNING, jnp.int32)
    for cond, code in reversed(pairs):
        status = jnp.where(cond, jnp.int32(int(code)), status)
    return status


def all_finite(*arrays):
    ok = jnp.asarray(True)
    for a in arrays:
        ok = ok & jnp.all(jnp.isfinite(a))
    return ok


# --------------------------------------------------------------------------------------------
# The one solver shape and its driver
#
# A solver is a final ``eqx.Module`` holding only settings. Its state is another Module (or
# NamedTuple) that the user may inspect. Four pure methods:
#
#   init(fn, x0, args)        -> state        evaluate at the start, set up counters
#   step(fn, state, args)     -> state        one iteration (for LM: one trial step)
#   terminate(fn, state, args)-> int32        a Status code, RUNNING (-1) while going on
#   postprocess(fn, state, args, status) -> OptimizeResult
#   progress(state)           -> Progress     what the per-iteration callback sees
#
# ``fn`` is whatever the solver family works on (a flat residual function for least squares,
# a flat ``value_and_grad`` for minimisers, ...); ``args`` is a pytree of arrays passed to it.
# ``iterate`` is the only while-loop driver; front doors (least_squares, minimize, ...) build
# ``fn`` and a solver from the user's call and hand both to it. Driving a solver by hand is
# the same four calls in Python:  st = s.init(fn, x0, args); st = s.step(fn, st, args); ...


class Progress(NamedTuple):
    """What a progress callback receives after every iteration (host NumPy values).

    nit : iterations done; fun : objective (least squares: cost 0.5 sum r^2); x : iterate
    (flat vector, or the pytree where the front door unravels it).
    """

    nit: Any
    fun: Any
    x: Any


class AbstractSolver(eqx.Module):
    """Base of every iterative solver: settings only; see the module comment for the shape."""

    @abc.abstractmethod
    def init(self, fn, x0, args):
        ...

    @abc.abstractmethod
    def step(self, fn, state, args):
        ...

    @abc.abstractmethod
    def terminate(self, fn, state, args):
        ...

    @abc.abstractmethod
    def postprocess(self, fn, state, args, status):
        ...

    @abc.abstractmethod
    def progress(self, state) -> Progress:
        ...


# The progress sink: front doors compile with ``callback=PROGRESS_SINK`` (a fixed object, so
# the user's callable is not part of the compile-cache key) and run the compiled solve inside
# ``with progress_to(user_callback):``. Code that calls ``iterate`` under its own jit passes
# its callable directly.
# The route is one process-wide slot, not a ContextVar: XLA runs host callbacks of larger
# programs on its own threads, where a ContextVar set by the caller reads as unset (the
# progress was silently dropped). Nested progress_to blocks stack.
class _Route:
    def __init__(self):
        self._stack = [None]

    def get(self):
        return self._stack[-1]

    def set(self, callback):
        self._stack.append(callback)
        return len(self._stack) - 1

    def reset(self, token):
        del self._stack[token:]


_sink = _Route()


class _ProgressSink:
    def __repr__(self):
        return "PROGRESS_SINK"

    def __call__(self, progress: Progress):
        target = _sink.get()
        if target is not None:
            target(progress)


PROGRESS_SINK = _ProgressSink()


@contextlib.contextmanager
def progress_to(callback: Optional[Callable]):
    """Route ``PROGRESS_SINK`` to ``callback(Progress)`` while the block runs; the block must
    block until its results are ready (``jax.block_until_ready``) so no callback fires late."""
    token = _sink.set(callback)
    try:
        yield
    finally:
        _sink.reset(token)


def iterate(solver: AbstractSolver, fn, x0, args=(), *, callback: Optional[Callable] = None):
    """Run ``solver`` from ``x0`` to termination in one ``lax.while_loop``.

    ``callback(Progress)`` (optional) fires on the host after every step, through
    ``jax.debug.callback``; its return value is ignored. Under ``vmap`` the loop runs until
    every lane has terminated; lanes that are done are carried unchanged.
    Returns ``solver.postprocess(fn, state, args, status)``, an :class:`OptimizeResult`.
    """
    state = solver.init(fn, x0, args)

    def cond(state):
        return solver.terminate(fn, state, args) == RUNNING

    def body(state):
        state = solver.step(fn, state, args)
        if callback is not None:
            jax.debug.callback(callback, solver.progress(state))
        return state

    state = lax.while_loop(cond, body, state)
    return solver.postprocess(fn, state, args, solver.terminate(fn, state, args))


__all__ = ["RUNNING", "IntermediateResult", "make_callback", "first_status", "all_finite", "Status",
           "Progress", "AbstractSolver", "PROGRESS_SINK", "progress_to", "iterate"]
