"""Transitional shim: glimix-core's bracket-then-Brent search now lives in
:func:`jaxinfer.optimize.minimize_scalar` as ``method="bracket-brent"`` (one implementation,
reporting through ``Status``). This module only adapts the old call for
:mod:`jaxinfer.glmm.lmm` until that module calls ``minimize_scalar`` directly; it is then
deleted.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax.numpy as jnp

from jaxinfer.optimize.scalar import minimize_scalar


class ScalarSearchResult(NamedTuple):
    """x: minimiser; fun: f(x); nfev: evaluations; converged: Brent's test passed (bool)."""

    x: jnp.ndarray
    fun: jnp.ndarray
    nfev: jnp.ndarray
    converged: jnp.ndarray


def bracket_brent_minimize(fun: Callable[[jnp.ndarray], jnp.ndarray], lower: float,
                           upper: float, rtol: float = 1e-6, atol: float = 1e-6,
                           gfactor: float = 2.0, maxiter: int = 500,
                           dtype=None) -> ScalarSearchResult:
    """``minimize_scalar(fun, bounds=(lower, upper), method="bracket-brent", ...)`` in
    ``dtype`` (default: the default float), as the old result tuple."""
    dtype = dtype or jnp.result_type(float)
    res = minimize_scalar(fun, bounds=(jnp.asarray(lower, dtype), jnp.asarray(upper, dtype)),
                          method="bracket-brent",
                          options={"rtol": rtol, "atol": atol, "gfactor": gfactor,
                                   "maxiter": maxiter})
    return ScalarSearchResult(x=res.x, fun=res.fun, nfev=res.nfev, converged=res.success)
