"""Robust loss functions of scipy's ``least_squares`` (``loss=``, ``f_scale=``), in JAX.

scipy's convention: with ``z = (f / f_scale)²`` a loss is ``ρ(z)`` with ``ρ(0) = 0`` and
``ρ'(0) = 1``; the cost is ``C = ½ f_scale² Σ ρ(z_i)``. A callable loss is
``loss(z (m,)) -> (3, m)`` holding ``ρ, ρ', ρ''`` (only ``ρ`` is used for the fit; all three
for the returned ``jac``). Written here from the formulas in scipy's documentation:

=========  =========================  ==================  =======================
loss       ρ(z)                       ρ'(z)               ρ''(z)
=========  =========================  ==================  =======================
linear     z                          1                   0
soft_l1    2 (√(1+z) - 1)             (1+z)^-½            -½ (1+z)^-3/2
huber      z if z <= 1 else 2√z - 1   1 or z^-½           0 or -½ z^-3/2
cauchy     log(1+z)                   1/(1+z)             -1/(1+z)²
arctan     arctan(z)                  1/(1+z²)            -2z/(1+z²)²
=========  =========================  ==================  =======================

The LM solver minimises ``½ Σ r̃²`` with the *robust residuals*
``r̃ = f · √(f_scale² ρ(z) / f²)`` (:func:`robust_residuals`), whose squares sum to the same
cost, so the minimiser is scipy's. scipy's trust-region methods instead rescale f and J every
iteration (an IRLS-like step); the iterates differ, the optimum does not.
"""

from __future__ import annotations

from typing import Callable, Union

import jax.numpy as jnp

__all__ = ["LOSSES", "check_loss", "rho", "robust_residuals", "scale_for_loss"]


def _soft_l1(z):
    t = 1 + z
    return jnp.stack([2 * (jnp.sqrt(t) - 1), t ** -0.5, -0.5 * t ** -1.5])


def _huber(z):
    inlier = z <= 1
    safe = jnp.where(inlier, 1.0, z)
    return jnp.stack([jnp.where(inlier, z, 2 * jnp.sqrt(safe) - 1),
                      jnp.where(inlier, 1.0, safe ** -0.5),
                      jnp.where(inlier, 0.0, -0.5 * safe ** -1.5)])


def _cauchy(z):
    t = 1 + z
    return jnp.stack([jnp.log1p(z), 1 / t, -1 / t ** 2])


def _arctan(z):
    t = 1 + z ** 2
    return jnp.stack([jnp.arctan(z), 1 / t, -2 * z / t ** 2])


def _linear(z):
    return jnp.stack([z, jnp.ones_like(z), jnp.zeros_like(z)])


#: scipy's implemented losses by name: ``z (m,) -> (3, m)``
LOSSES = {"linear": _linear, "soft_l1": _soft_l1, "huber": _huber, "cauchy": _cauchy,
          "arctan": _arctan}


def check_loss(loss: Union[str, Callable]):
    """Refuse an unknown loss with scipy's message (before any tracing)."""
    if not callable(loss) and loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {LOSSES.keys()} or a callable.")


def rho(loss: Union[str, Callable], f, f_scale):
    """``(3, m)``: ``f_scale² ρ(z)``, ``ρ'(z)``, ``ρ''(z) / f_scale²`` at ``z = (f/f_scale)²``
    (scipy's scaled ρ: the cost is ``½ Σ row 0``)."""
    z = (f / f_scale) ** 2
    out = jnp.asarray((loss if callable(loss) else LOSSES[loss])(z), f.dtype)
    if out.shape != (3,) + f.shape:
        raise ValueError("The return value of `loss` callable has wrong shape.")
    return jnp.stack([out[0] * f_scale ** 2, out[1], out[2] / f_scale ** 2])


def robust_residuals(loss: Union[str, Callable], f, f_scale):
    """``r̃ = f √(ρ̃ / f²)`` with ``ρ̃ = f_scale² ρ(z)``: ``½ Σ r̃²`` is scipy's robust cost.

    Smooth at ``f = 0`` (where ``ρ̃ / f² -> ρ'(0) = 1``), so autodiff gives its Jacobian."""
    if loss == "linear":
        return f
    z = (f / f_scale) ** 2
    nonzero = z > 0
    safe_z = jnp.where(nonzero, z, 1.0)
    rho0 = jnp.asarray((loss if callable(loss) else LOSSES[loss])(safe_z), f.dtype)[0]
    ratio = jnp.where(nonzero, rho0 / safe_z, 1.0)
    return f * jnp.sqrt(jnp.maximum(ratio, 0.0))


def scale_for_loss(loss: Union[str, Callable], f, jac, f_scale):
    """scipy's loss-modified Jacobian and gradient: ``(J·√max(ρ' + 2ρ''f², ε), Jᵀ(ρ' f))``,
    ``f`` (m,), ``jac`` (m, n); ``ε`` the dtype's machine epsilon."""
    r = rho(loss, f, f_scale)
    grad = jac.T @ (r[1] * f)
    if loss == "linear":
        return jac, grad
    j_scale = r[1] + 2 * r[2] * f ** 2
    j_scale = jnp.sqrt(jnp.maximum(j_scale, jnp.finfo(f.dtype).eps))
    return jac * j_scale[:, None], grad
