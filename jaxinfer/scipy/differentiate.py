"""``scipy.differentiate`` (``derivative``, ``jacobian``, ``hessian``) by autodiff.

scipy 1.17 estimates derivatives by finite differences with adaptive steps and returns a
result object with ``df`` (the estimate), ``error``, ``success``, ``status``, ``nit`` and
``nfev``. Here ``df`` is the exact derivative from ``jax.jvp`` / ``jax.jacfwd`` /
``jax.hessian``, so ``error`` is 0, ``nit`` and ``nfev`` are 0 and 1, and the step options
(``tolerances``, ``order``, ``initial_step``, ``step_factor``, ``step_direction``,
``maxiter``) are accepted and ignored. :func:`misc_derivative` keeps the shape of the old
``scipy.misc.derivative(func, x0, dx, n)`` (removed from scipy in 1.12), also exported as
``jaxinfer.scipy.misc.derivative``.
"""

from __future__ import annotations

from typing import Callable

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["derivative", "jacobian", "hessian", "misc_derivative", "DerivativeResult"]


class DerivativeResult(eqx.Module):
    """scipy.differentiate's result fields (a pytree: it passes through jit and vmap)."""

    df: Any
    error: Any
    success: Any
    status: Any
    nit: Any
    nfev: Any
    x: Any

    @property
    def ddf(self):
        """The Hessian (scipy.differentiate.hessian's field name); same array as ``df``."""
        return self.df


def _result(x, df):
    shape = jnp.shape(df)
    return DerivativeResult(df=df, error=jnp.zeros(shape, df.dtype),
                          success=jnp.ones(shape, bool), status=jnp.zeros(shape, jnp.int32),
                          nit=jnp.zeros(shape, jnp.int32), nfev=jnp.ones(shape, jnp.int32),
                          x=x)


def _float(x):
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(jnp.result_type(float))


def derivative(f: Callable, x, *, args=(), tolerances=None, maxiter=10, order=8,
               initial_step=0.5, step_factor=2.0, step_direction=0, preserve_shape=False,
               callback=None):
    """Elementwise first derivative of ``f(x, *args)`` at ``x`` (any shape).

    As in scipy, ``f`` must be elementwise: output element ``i`` depends on ``x[i]`` only
    (and on ``args``, which broadcast with ``x``). Returns a result with
    ``df`` (shape of ``f(x)``), ``error`` (zeros), ``success``, ``status``, ``nit``,
    ``nfev`` and ``x`` (a :class:`DerivativeResult`). Higher derivatives: nest ``jax.grad`` / call :func:`hessian`, or
    :func:`misc_derivative` with ``n``.
    """
    if callback is not None:
        raise NotImplementedError("derivative: callback is not supported (there are no "
                                  "iterations: the derivative is exact)")
    x = _float(x)
    if not isinstance(args, tuple):
        args = (args,)
    _, df = jax.jvp(lambda v: f(v, *args), (x,), (jnp.ones_like(x),))
    return _result(x, df)


def jacobian(f: Callable, x, *, tolerances=None, maxiter=10, order=8, initial_step=0.5,
             step_factor=2.0, step_direction=0):
    """Jacobian of ``f`` at ``x`` with scipy's layout: ``x`` is ``(m, ...)``, ``f(x)`` is
    ``(k, ...)``, ``df`` is ``(k, m, ...)`` (trailing axes are a batch of points, as in
    scipy). ``f`` must accept a batch with the variables on the first axis."""
    x = _float(x)
    m = x.shape[0] if x.ndim else 1
    batch = x.shape[1:]
    xb = x.reshape(m, -1).T                                        # [B, m]
    single = lambda v: f(v.reshape((m,) + (1,) * len(batch))).reshape(-1)  # noqa: E731
    jb = jax.vmap(jax.jacfwd(single))(xb)                          # [B, k, m]
    df = jnp.moveaxis(jb, 0, -1).reshape(jb.shape[1:] + batch)
    if x.ndim == 0:
        df = df[..., 0]
    return _result(x, df)


def hessian(f: Callable, x, *, tolerances=None, maxiter=10, order=8, initial_step=0.5,
            step_factor=2.0):
    """Hessian of scalar ``f`` at ``x`` (``(m, ...)``): ``ddf`` (scipy's name) is ``(m, m, ...)``."""
    x = _float(x)
    m = x.shape[0]
    batch = x.shape[1:]
    xb = x.reshape(m, -1).T
    single = lambda v: jnp.reshape(f(v.reshape((m,) + (1,) * len(batch))), ())  # noqa: E731
    hb = jax.vmap(jax.hessian(single))(xb)                         # [B, m, m]
    return _result(x, jnp.moveaxis(hb, 0, -1).reshape((m, m) + batch))


def misc_derivative(func: Callable, x0, dx=1.0, n=1, args=(), order=3):
    """The n-th derivative of ``func(x, *args)`` at scalar (or elementwise array) ``x0``.

    The old ``scipy.misc.derivative`` shape; ``dx`` and ``order`` (its finite-difference
    step and stencil) are accepted and ignored: the derivative is exact, by autodiff.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"misc_derivative: n must be a non-negative int, got {n!r}")
    if not isinstance(args, tuple):
        args = (args,)
    g = lambda v: func(v, *args)  # noqa: E731
    for _ in range(n):
        g = _elementwise_grad(g)
    return g(_float(x0))


def _elementwise_grad(g):
    return lambda v: jax.jvp(g, (v,), (jnp.ones_like(v),))[1]
