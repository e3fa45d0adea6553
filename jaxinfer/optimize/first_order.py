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
"""

from __future__ import annotations

from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import optax
from jax import lax

from jaxinfer.optimize._iterate import RUNNING, all_finite, first_status
from jaxinfer.optimize.result import Status

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


class FirstOrderState(NamedTuple):
    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    f_prev: jnp.ndarray
    opt_state: Any
    nit: jnp.ndarray
    nfev: jnp.ndarray
    status: jnp.ndarray


class FirstOrder(eqx.Module):
    """Settings of a first-order run: ``method`` in {'momentum', 'rmsprop', 'adam'},
    ``hyper`` (sorted tuple of ``(name, value)``), ``maxiter``, ``gtol``, ``ftol``."""

    method: str = eqx.field(static=True)
    hyper: tuple = eqx.field(static=True, default=())
    maxiter: int = eqx.field(static=True, default=1000)
    gtol: float = eqx.field(static=True, default=1e-5)
    ftol: float = eqx.field(static=True, default=0.0)

    def _gnorm(self, x, g, lb, ub):
        return jnp.max(jnp.abs(jnp.clip(x - g, lb, ub) - x))

    def run(self, value_and_grad, x0, lb, ub, callback=None) -> FirstOrderState:
        tx = make_transform(self.method, **dict(self.hyper))
        x0 = jnp.clip(x0, lb, ub)
        f, g = value_and_grad(x0)
        status = first_status(
            (~all_finite(f, g), Status.NONFINITE),
            (self._gnorm(x0, g, lb, ub) <= self.gtol, Status.GTOL),
            (jnp.asarray(self.maxiter <= 0), Status.MAX_ITER),
        )
        state = FirstOrderState(x=x0, f=f, g=g, f_prev=f, opt_state=tx.init(x0),
                                nit=jnp.zeros((), jnp.int32), nfev=jnp.ones((), jnp.int32),
                                status=status)

        def body(s):
            updates, opt_state = tx.update(s.g, s.opt_state, s.x)
            x = jnp.clip(s.x + updates, lb, ub)
            f, g = value_and_grad(x)
            nit = s.nit + 1
            if callback is not None:
                callback(x, f, g, nit)
            rel = jnp.abs(s.f - f) / jnp.maximum(jnp.maximum(jnp.abs(s.f), jnp.abs(f)), 1.0)
            status = first_status(
                (~all_finite(f, g), Status.NONFINITE),
                (self._gnorm(x, g, lb, ub) <= self.gtol, Status.GTOL),
                (jnp.asarray(self.ftol > 0) & (rel <= self.ftol), Status.FTOL),
                (nit >= self.maxiter, Status.MAX_ITER),
            )
            return FirstOrderState(x=x, f=f, g=g, f_prev=s.f, opt_state=opt_state, nit=nit,
                                   nfev=s.nfev + 1, status=status)

        return lax.while_loop(lambda s: s.status == RUNNING, body, state)
