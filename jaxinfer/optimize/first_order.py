"""First-order methods (momentum gradient descent, RMSProp, Adam) through optax, with real
convergence tests.

The update rules are those of the scipy-compatible solvers in the cheat sheet this package
replaces (there adapted from autograd), built from optax transformations:

* ``'momentum'`` (aliases ``'gd'``, ``'bgd'``): ``v <- mass v - (1 - mass) g``,
  ``x <- x + learning_rate v`` (defaults ``learning_rate=1e-3``, ``mass=0.9``);
* ``'rmsprop'``: ``s <- gamma s + (1 - gamma) g**2`` with ``s`` starting at **1**,
  ``x <- x - learning_rate g / (sqrt(s) + eps)`` (``learning_rate=0.1``, ``gamma=0.9``,
  ``eps=1e-8``);
* ``'adam'``: Kingma & Ba with bias correction, ``learning_rate=1e-3``, ``beta1=0.9``,
  ``beta2=0.999``, ``eps=1e-8``.

Unlike those solvers, which always report ``success=True``, the run stops with success only
when ``max |g| <= gtol`` (default 1e-5; the projected gradient when bounds are given) or,
if ``ftol > 0`` (default 0: off, because a small learning rate makes successive objective
values close long before convergence), when
``|f_k - f_{k+1}| <= ftol * max(|f_k|, |f_{k+1}|, 1)``. Running out of ``maxiter``
(default 1000) gives ``success=False`` with status ``MAX_ITER``. With bounds, every step is
projected onto the box.

:class:`FirstOrder` is a solver of the one shape over :class:`FirstOrderState`, run by
:func:`~jaxinfer.optimize._iterate.iterate`; the update rule is an optax
``GradientTransformation`` setting (:func:`make_transform` builds the three above), so any
optax optimiser can be driven with these stopping rules.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax.numpy as jnp
import optax

from jaxinfer.optimize._iterate import AbstractSolver, Progress, all_finite, first_status
from jaxinfer.optimize.result import OptimizeResult, Status

_HYPER = {
    "momentum": {"learning_rate": 1e-3, "mass": 0.9},
    "rmsprop": {"learning_rate": 0.1, "gamma": 0.9, "eps": 1e-8},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}


def make_transform(method: str, **hyper) -> optax.GradientTransformation:
    """The optax transformation for ``method`` with the cheat sheet's update rule."""
    h = dict(_HYPER[method])
    unknown = set(hyper) - set(h)
    if unknown:
        raise ValueError(f"unknown hyper-parameter(s) {sorted(unknown)} for {method!r}; "
                         f"accepted: {sorted(h)}")
    h.update(hyper)
    if method == "momentum":
        mass = h["mass"]
        # trace(decay=mass) of (1 - mass) g is -v; the update is lr * v
        return optax.chain(optax.scale(1.0 - mass), optax.trace(decay=mass),
                           optax.scale(-h["learning_rate"]))
    if method == "rmsprop":
        return optax.rmsprop(h["learning_rate"], decay=h["gamma"], eps=h["eps"],
                             initial_scale=1.0, eps_in_sqrt=False)
    if method == "adam":
        return optax.adam(h["learning_rate"], b1=h["beta1"], b2=h["beta2"], eps=h["eps"])
    raise ValueError(f"unknown first-order method {method!r}")


class FirstOrderState(eqx.Module):
    """Public state of :class:`FirstOrder`: iterate ``x`` (n,), objective ``f``, gradient
    ``g``, previous objective ``f_prev``, the optax state, ``nit`` / ``nfev`` counters."""

    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    f_prev: jnp.ndarray
    opt_state: Any
    nit: jnp.ndarray
    nfev: jnp.ndarray


class FirstOrder(AbstractSolver):
    """A first-order method with honest stopping rules (module docstring).

    Settings: ``transform`` (an optax ``GradientTransformation``, e.g.
    ``make_transform('adam', learning_rate=1e-2)``), ``maxiter`` (1000), ``gtol`` (1e-5, on
    ``max |projected gradient|``), ``ftol`` (0: off), ``lower`` / ``upper`` bounds ((n,)
    arrays or scalars; None for none). ``fn(x, args) -> (f scalar, g (n,))``.
    """

    transform: optax.GradientTransformation = eqx.field(static=True)
    maxiter: int = 1000
    gtol: float = 1e-5
    ftol: float = 0.0
    lower: Any = None
    upper: Any = None

    def _bounds(self, x):
        lb = -jnp.inf if self.lower is None else self.lower
        ub = jnp.inf if self.upper is None else self.upper
        return (jnp.broadcast_to(jnp.asarray(lb, x.dtype), x.shape),
                jnp.broadcast_to(jnp.asarray(ub, x.dtype), x.shape))

    def _gnorm(self, x, g):
        lb, ub = self._bounds(x)
        return jnp.max(jnp.abs(jnp.clip(x - g, lb, ub) - x))

    def init(self, fn, x0, args) -> FirstOrderState:
        lb, ub = self._bounds(x0)
        x0 = jnp.clip(x0, lb, ub)
        f, g = fn(x0, args)
        return FirstOrderState(x=x0, f=f, g=g, f_prev=f, opt_state=self.transform.init(x0),
                               nit=jnp.zeros((), jnp.int32), nfev=jnp.ones((), jnp.int32))

    def step(self, fn, state: FirstOrderState, args) -> FirstOrderState:
        lb, ub = self._bounds(state.x)
        updates, opt_state = self.transform.update(state.g, state.opt_state, state.x)
        x = jnp.clip(state.x + updates, lb, ub)
        f, g = fn(x, args)
        return FirstOrderState(x=x, f=f, g=g, f_prev=state.f, opt_state=opt_state,
                               nit=state.nit + 1, nfev=state.nfev + 1)

    def terminate(self, fn, state: FirstOrderState, args) -> jnp.ndarray:
        f, f_prev = state.f, state.f_prev
        rel = jnp.abs(f_prev - f) / jnp.maximum(jnp.maximum(jnp.abs(f_prev), jnp.abs(f)), 1.0)
        return first_status(
            (~all_finite(f, state.g), Status.NONFINITE),
            (self._gnorm(state.x, state.g) <= self.gtol, Status.GTOL),
            (jnp.asarray(self.ftol > 0) & (state.nit >= 1) & (rel <= self.ftol), Status.FTOL),
            (state.nit >= self.maxiter, Status.MAX_ITER),
        )

    def postprocess(self, fn, state: FirstOrderState, args, status) -> OptimizeResult:
        return OptimizeResult(x=state.x, fun=state.f, jac=state.g, status=status,
                              nit=state.nit, nfev=state.nfev, njev=state.nfev)

    def progress(self, state: FirstOrderState) -> Progress:
        return Progress(nit=state.nit, fun=state.f, x=state.x)
