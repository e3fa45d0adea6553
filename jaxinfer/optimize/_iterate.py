"""Plumbing shared by the ``minimize`` solvers: per-iteration callbacks and status tests.

Every solver here works on a flat 1-D parameter vector and a function
``value_and_grad(x_flat) -> (f, g_flat)``; :mod:`jaxinfer.optimize.minimize` builds those from
the user's pytree objective.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

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


__all__ = ["RUNNING", "IntermediateResult", "make_callback", "first_status", "all_finite", "Status"]
