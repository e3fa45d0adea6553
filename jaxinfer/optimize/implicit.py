"""Derivatives of a solution by the implicit function theorem, not by unrolling the solver.

If ``x*(θ)`` solves ``F(x*, θ) = 0`` (the *optimality condition*) and ``A = ∂F/∂x`` is
invertible there, then ``dx*/dθ = -A⁻¹ ∂F/∂θ``. The helpers here return the solution
unchanged in value and attach exactly that derivative, so ``jax.grad``, ``jax.jvp``,
``jax.jacfwd`` / ``jacrev``, ``jit`` and ``vmap`` all work through a solve whose loop
(a ``lax.while_loop``) cannot or should not be differentiated itself.

* :func:`implicit_root` — the general tool: ``x = implicit_root(x_star, optimality, theta)``.
* :func:`implicit_minimum` — ``x_star`` minimises ``objective(x, theta)`` (optionally inside a
  box): the condition is the gradient (or the projected gradient) and ``A`` is the Hessian.
  For least squares pass ``objective = 0.5 * sum(residuals(x, theta)**2)``; ``A`` is then
  the exact Hessian of the cost, Gauss–Newton ``JᵀJ`` plus the residual-curvature term, so
  the derivative is exact also for fits with non-zero residuals.
* :func:`implicit_least_squares` — the same for ``0.5 Σ w r(x, *args)²`` with weights, bounds
  and fixed (masked) parameters.
* :func:`implicit_fixed_point` — ``x_star = T(x_star, theta)``: the condition is
  ``T(x, θ) - x`` and ``A = ∂T/∂x - I`` (invertible when T contracts near ``x_star``).
* :func:`no_derivative` — for solutions without a derivative here: differentiating raises.
* :func:`implicit_solve` — ``solve(theta)`` is called on ``stop_gradient(theta)`` and its
  result handed to :func:`implicit_root`: the one-liner for wrapping a solver.

Typical use (the shape every front door in :mod:`jaxinfer.optimize` uses)::

    def fitted(theta):                          # differentiable in theta
        res = some_solver(lax.stop_gradient(theta))      # no tangents reach the loop
        return implicit_minimum(res.x, objective, theta)  # x* with dx*/dθ attached

Rules:

* **Everything the solution depends on goes in** ``theta`` (any pytree of arrays), or is
  closed over by ``optimality`` / ``objective``: closed-over JAX values that carry
  derivatives (tracers) are found by ``jax.closure_convert`` and differentiated too.
  Integer leaves get no derivative.
* The solve itself must not see tangents: call it on ``lax.stop_gradient(theta)`` (as
  :func:`implicit_solve` does). The returned value is ``stop_gradient(x_star)``, so any
  derivative the solver would have produced is replaced, never added.
* ``x_star`` must be a root to working precision (check the solver's ``success``): the
  derivative is that of the exact root at ``x_star``. ``A`` must be invertible there (an
  isolated root, a strict minimum); a singular ``A`` gives inf / NaN derivatives.

The linear system ``A v = b`` (forward mode) or ``Aᵀ w = u`` (reverse mode) is solved by
``linear_solver``:

* ``'dense'``: ``A`` is formed by ``jax.jacfwd`` (n forward passes) and solved by LU
  (``jnp.linalg.solve``); right for small n (the default up to ``DENSE_MAX`` = 500 unknowns).
* ``'cg'``: conjugate gradients with matrix-free products ``A v`` (one JVP each); needs a
  symmetric positive-definite ``A`` (a Hessian at a strict minimum). The default above
  ``DENSE_MAX`` for symmetric conditions.
* ``'gmres'``: matrix-free GMRES for large non-symmetric ``A`` (the default above
  ``DENSE_MAX`` otherwise).

Both directions go through ``lax.custom_linear_solve``, so reverse mode is the transpose of
forward mode and higher-order derivatives (``jax.hessian`` of a function of ``x*``) work.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

__all__ = ["implicit_root", "implicit_minimum", "implicit_least_squares", "implicit_solve",
           "implicit_fixed_point", "no_derivative", "DENSE_MAX"]

#: Largest number of unknowns for which ``linear_solver='auto'`` forms A densely.
DENSE_MAX = 500

_SOLVERS = ("auto", "dense", "cg", "gmres")


class _Settings(NamedTuple):
    linear_solver: str
    symmetric: bool
    tol: Optional[float]
    maxiter: Optional[int]


def _check_solver(linear_solver, tol, maxiter):
    if linear_solver not in _SOLVERS:
        raise ValueError(f"linear_solver must be one of {_SOLVERS}, got {linear_solver!r}")
    if tol is not None and not tol > 0:
        raise ValueError(f"tol must be a positive float or None, got {tol!r}")
    if maxiter is not None and (int(maxiter) != maxiter or maxiter < 1):
        raise ValueError(f"maxiter must be a positive integer or None, got {maxiter!r}")


def implicit_root(x_star: Any, optimality: Callable, theta: Any, *, symmetric: bool = False,
                  linear_solver: str = "auto", tol: Optional[float] = None,
                  maxiter: Optional[int] = None):
    """``x_star`` (value unchanged) with the implicit-function-theorem derivative w.r.t. ``theta``.

    Parameters
    ----------
    x_star : pytree of float arrays, n scalars in all
        A root of ``optimality(x, theta)``, computed without tangents (see the module notes).
    optimality : callable ``optimality(x, theta) -> pytree``, n scalars in all
        The condition ``F(x, θ) = 0`` that defines the solution; differentiable in both
        arguments. It may close over other JAX values (they are differentiated too).
    theta : pytree of arrays
        What the solution depends on. Integer leaves are not differentiated.
    symmetric : bool
        ``∂F/∂x`` is symmetric (F a gradient): its transpose solve reuses the forward one,
        and ``'auto'`` picks CG rather than GMRES for large n.
    linear_solver : 'auto' | 'dense' | 'cg' | 'gmres'
        See the module docstring. 'auto': dense up to :data:`DENSE_MAX` unknowns.
    tol, maxiter : float or None, int or None
        Relative residual tolerance and iteration cap of the iterative solvers (defaults:
        ``10 √ε`` of x's dtype and ``10 n``). Ignored by 'dense'.

    Returns
    -------
    pytree like ``x_star``: ``stop_gradient(x_star)`` in value, whose JVP is
    ``-A⁻¹ (∂F/∂θ · dθ)`` with ``A = ∂F/∂x`` at ``(x_star, theta)``.
    """
    if not callable(optimality):
        raise TypeError(f"optimality must be callable, got {type(optimality).__name__}")
    _check_solver(linear_solver, tol, maxiter)
    x_star = lax.stop_gradient(x_star)
    x_flat = ravel_pytree(x_star)[0]
    if x_flat.size == 0:
        raise ValueError("x_star has no entries")
    if not jnp.issubdtype(x_flat.dtype, jnp.inexact):
        raise TypeError(f"x_star must be floating point, got dtype {x_flat.dtype}")
    out = jax.eval_shape(optimality, x_star, theta)
    n_out = sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(out))
    if n_out != x_flat.size:
        raise ValueError(f"optimality(x, theta) has {n_out} entries but x_star has "
                         f"{x_flat.size}: the condition must be a square system F(x) = 0")
    converted, consts = jax.closure_convert(optimality, x_star, theta)
    settings = _Settings(linear_solver, bool(symmetric), tol, maxiter)
    return _attach(converted, settings, x_star, theta, tuple(consts))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _attach(optimality, settings, x_star, theta, consts):
    return x_star


@_attach.defjvp
def _attach_jvp(optimality, settings, primals, tangents):
    x_star, theta, consts = primals
    _, theta_dot, consts_dot = tangents
    # linearise at the attached solution itself, so that a derivative of this rule (second
    # order: jax.hessian) sees x* move with theta
    x_star = _attach(optimality, settings, x_star, theta, consts)
    x_flat, unravel = ravel_pytree(x_star)
    n = x_flat.size

    def condition_flat(y_flat, th, cs):
        return ravel_pytree(optimality(unravel(y_flat), th, *cs))[0].astype(x_flat.dtype)

    # right-hand side: ∂F/∂θ · dθ (+ the same for closed-over values), linear in the tangents
    _, rhs = jax.jvp(lambda th, cs: condition_flat(x_flat, th, cs), (theta, consts),
                     (theta_dot, consts_dot))

    def matvec(v):
        return jax.jvp(lambda y: condition_flat(y, theta, consts), (x_flat,), (v,))[1]

    kind = settings.linear_solver
    if kind == "auto":
        kind = "dense" if n <= DENSE_MAX else ("cg" if settings.symmetric else "gmres")
    eps = float(jnp.finfo(x_flat.dtype).eps)
    tol = settings.tol if settings.tol is not None else 10 * eps ** 0.5
    maxiter = settings.maxiter if settings.maxiter is not None else 10 * n

    if kind == "dense":
        a = jax.jacfwd(lambda y: condition_flat(y, theta, consts))(x_flat)

        def solve(_, b):
            return jnp.linalg.solve(a, b)

        def transpose_solve(_, b):
            return jnp.linalg.solve(a.T, b)
    elif kind == "cg":
        def solve(mv, b):
            return jax.scipy.sparse.linalg.cg(mv, b, tol=tol, maxiter=maxiter)[0]

        transpose_solve = solve
    else:
        def solve(mv, b):
            return jax.scipy.sparse.linalg.gmres(mv, b, tol=tol, maxiter=maxiter)[0]

        # custom_linear_solve hands the transpose solve the transposed map (Aᵀ products)
        transpose_solve = solve

    dx = lax.custom_linear_solve(matvec, -rhs, solve,
                                 None if settings.symmetric else transpose_solve,
                                 symmetric=settings.symmetric)
    return x_star, unravel(dx)


def implicit_minimum(x_star: Any, objective: Optional[Callable], theta: Any, *, bounds=None,
                     gradient: Optional[Callable] = None, linear_solver: str = "auto",
                     tol: Optional[float] = None, maxiter: Optional[int] = None):
    """``x_star``, a minimiser of ``objective(x, theta)``, with its derivative w.r.t. ``theta``.

    Parameters
    ----------
    x_star : pytree of float arrays, n scalars in all
        A (local) minimiser, computed without tangents.
    objective : callable ``objective(x, theta) -> scalar``, or None with ``gradient``
        Twice differentiable in ``x`` near ``x_star``. For least squares:
        ``lambda x, th: 0.5 * jnp.sum(residuals(x, th) ** 2)`` (weights included).
    theta : pytree of arrays
        What the minimiser depends on.
    bounds : (lower, upper) or None
        Box the minimiser was constrained to: arrays broadcastable to the flattened ``x``
        (n,), ±inf for none; they may themselves depend on ``theta`` (closed over) and are
        differentiated. The condition is then the projected-gradient fixed point
        ``x - clip(x - ∇f, lower, upper) = 0``: free parameters follow the Hessian, a
        parameter held at a bound follows that bound.
    gradient : callable ``gradient(x, theta) -> pytree like x`` or None
        The objective's gradient, when the user supplies it (it is differentiated once
        more for the Hessian); None: ``jax.grad`` of ``objective``.
    linear_solver, tol, maxiter
        As in :func:`implicit_root`; without bounds ``A`` (the Hessian) is symmetric, so
        large problems use CG.

    Returns
    -------
    pytree like ``x_star`` carrying ``dx*/dθ = -H⁻¹ ∂(∇f)/∂θ`` (H the Hessian at x_star).
    """
    if gradient is None and not callable(objective):
        raise TypeError(f"objective must be callable, got {type(objective).__name__}")
    if gradient is not None and not callable(gradient):
        raise TypeError(f"gradient must be callable or None, got {type(gradient).__name__}")
    x_flat, unravel = ravel_pytree(x_star)

    def grad_flat(y_flat, th):
        if gradient is not None:
            return ravel_pytree(gradient(unravel(y_flat), th))[0].astype(y_flat.dtype)
        return ravel_pytree(jax.grad(lambda y: jnp.reshape(
            objective(unravel(y), th), ()))(y_flat))[0]

    if bounds is None:
        def condition(x, th):
            return grad_flat(ravel_pytree(x)[0], th)

        return implicit_root(x_star, condition, theta, symmetric=True,
                             linear_solver=linear_solver, tol=tol, maxiter=maxiter)
    if len(bounds) != 2:
        raise ValueError("bounds must be a pair (lower, upper)")
    n = x_flat.size
    lower = jnp.broadcast_to(jnp.asarray(bounds[0], x_flat.dtype), (n,))
    upper = jnp.broadcast_to(jnp.asarray(bounds[1], x_flat.dtype), (n,))

    def projected(x, th):
        y = ravel_pytree(x)[0]
        return y - jnp.clip(y - grad_flat(y, th), lower, upper)

    return implicit_root(x_star, projected, theta, symmetric=False,
                         linear_solver=linear_solver, tol=tol, maxiter=maxiter)


def implicit_least_squares(x_star: Any, residuals: Callable, args: tuple = (), *,
                           weights=None, bounds=None, fixed=None, linear_solver: str = "auto"):
    """``x_star`` minimising ``0.5 Σ w r(x, *args)²``, with derivatives w.r.t. ``args``,
    ``weights`` and ``bounds``.

    Parameters
    ----------
    x_star : pytree, n scalars in all
        The least-squares solution (computed without tangents).
    residuals : callable ``residuals(x, *args) -> array``
    args : tuple of pytrees of arrays
        Differentiated (integer leaves excepted).
    weights : array broadcastable to the flattened residuals (m,), or None
    bounds : (lower, upper), arrays broadcastable to the flattened x (n,), or None
    fixed : (n,) bool array or None
        Parameters that were not fitted (a mask's False entries): they keep their value, so
        their derivative is zero and the others respond as in the sub-problem.

    The condition is the (projected) gradient of the cost; ``A`` is the cost's exact Hessian
    (Gauss–Newton ``JᵀWJ`` plus the residual-curvature term).
    """
    x_flat = ravel_pytree(x_star)[0]
    n = x_flat.size

    def cost(x, theta):
        a, w = theta
        r = ravel_pytree(residuals(x, *a))[0]
        return 0.5 * jnp.sum((r * r) if w is None else (w * r * r))

    if fixed is not None:
        fixed = jnp.broadcast_to(jnp.asarray(fixed, bool), (n,))
        held = lax.stop_gradient(x_flat)
        lower = jnp.full((n,), -jnp.inf, x_flat.dtype) if bounds is None else bounds[0]
        upper = jnp.full((n,), jnp.inf, x_flat.dtype) if bounds is None else bounds[1]
        lower = jnp.where(fixed, held, jnp.broadcast_to(jnp.asarray(lower, x_flat.dtype), (n,)))
        upper = jnp.where(fixed, held, jnp.broadcast_to(jnp.asarray(upper, x_flat.dtype), (n,)))
        bounds = (lower, upper)
    return implicit_minimum(x_star, cost, (tuple(args), weights), bounds=bounds,
                            linear_solver=linear_solver)


def implicit_solve(solve: Callable, optimality: Callable, theta: Any, *, has_aux: bool = False,
                   symmetric: bool = False, linear_solver: str = "auto",
                   tol: Optional[float] = None, maxiter: Optional[int] = None):
    """``solve(theta)`` run without tangents, its root differentiated implicitly.

    ``solve(theta) -> x_star`` (or ``(x_star, aux)`` with ``has_aux``; aux gets no
    derivative) is called on ``lax.stop_gradient(theta)``; ``optimality(x, theta)`` is the
    condition its root satisfies. Returns ``x`` (or ``(x, aux)``) as :func:`implicit_root`.
    """
    out = solve(lax.stop_gradient(theta))
    x_star, aux = out if has_aux else (out, None)
    x = implicit_root(x_star, optimality, theta, symmetric=symmetric,
                      linear_solver=linear_solver, tol=tol, maxiter=maxiter)
    return (x, lax.stop_gradient(aux)) if has_aux else x


def implicit_fixed_point(x_star: Any, T: Callable, theta: Any, *, linear_solver: str = "auto",
                         tol: Optional[float] = None, maxiter: Optional[int] = None):
    """``x_star`` (value unchanged) with the derivative of the fixed point ``x = T(x, θ)``.

    ``T(x, theta) -> pytree like x``; the condition is ``F(x, θ) = T(x, θ) - x``, so
    ``dx*/dθ = (I - ∂T/∂x)⁻¹ ∂T/∂θ``, which exists when the map contracts at ``x_star``
    (spectral radius of ``∂T/∂x`` below 1, as for a converged fixed-point iteration).
    Arguments as :func:`implicit_root` (the system is not symmetric in general).
    """
    if not callable(T):
        raise TypeError(f"T must be callable, got {type(T).__name__}")

    def optimality(x, th):
        return jax.tree_util.tree_map(lambda t, v: t - v, T(x, th), x)

    return implicit_root(x_star, optimality, theta, symmetric=False,
                         linear_solver=linear_solver, tol=tol, maxiter=maxiter)


def no_derivative(x: Any, reason: str):
    """``x`` unchanged, but differentiating through it raises ``NotImplementedError(reason)``.

    For solutions whose derivative is not available (e.g. a constrained solve whose KKT
    system is not implemented): better an error than a silent zero or an unrolled loop.
    """
    return _refuse(reason, x)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _refuse(reason, x):
    return x


@_refuse.defjvp
def _refuse_jvp(reason, primals, tangents):
    raise NotImplementedError(reason)
