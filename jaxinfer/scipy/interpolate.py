"""``scipy.interpolate.interp1d`` in JAX.

Kinds: ``'linear'`` (= ``'slinear'``), ``'cubic'`` (the not-a-knot cubic spline scipy builds
with ``make_interp_spline(k=3)``; slopes from one tridiagonal solve), ``'nearest'``
(half-way points round down, as scipy's), ``'nearest-up'``, ``'previous'``, ``'next'`` and
``'zero'`` (= ``'previous'``). ``'quadratic'`` is not implemented.

The interpolant is an equinox module (a pytree): it passes through ``jit``, and its call is
differentiable with respect to ``x_new``, ``y`` and ``x``. Out-of-range points follow
scipy: ``bounds_error`` (default: True unless ``fill_value="extrapolate"``) raises a
ValueError when ``x_new`` is concrete; inside a trace it cannot raise, so out-of-range
points give NaN. ``fill_value`` is a scalar (default NaN), a ``(below, above)`` pair or
``"extrapolate"`` (the end pieces continued).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["interp1d"]

_KINDS = {"linear": "linear", "slinear": "linear", "cubic": "cubic", "nearest": "nearest",
          "nearest-up": "nearest-up", "previous": "previous", "zero": "previous",
          "next": "next"}


def _not_a_knot_slopes(x, y):
    """Slopes s_i of the not-a-knot cubic spline through (x_i, y_i); y is (n, k), n >= 4."""
    h = jnp.diff(x)                                       # [n-1]
    delta = jnp.diff(y, axis=0) / h[:, None]              # [n-1, k]
    hl, hr = h[:-1], h[1:]                                # h_{i-1}, h_i for interior i
    d = jnp.concatenate([h[1:2], 2.0 * (hl + hr), h[-2:-1]])
    du = jnp.concatenate([(h[0] + h[1])[None], hl, jnp.zeros(1, x.dtype)])
    dl = jnp.concatenate([jnp.zeros(1, x.dtype), hr, (h[-1] + h[-2])[None]])
    first = (((h[0] + 2.0 * (h[0] + h[1])) * h[1] * delta[0] + h[0] ** 2 * delta[1])
             / (h[0] + h[1]))
    last = ((h[-1] ** 2 * delta[-2] + (2.0 * (h[-2] + h[-1]) + h[-1]) * h[-2] * delta[-1])
            / (h[-2] + h[-1]))
    inner = 3.0 * (hr[:, None] * delta[:-1] + hl[:, None] * delta[1:])
    b = jnp.concatenate([first[None], inner, last[None]], axis=0)
    return jax.lax.linalg.tridiagonal_solve(dl, d, du, b)


class interp1d(eqx.Module):
    """``interp1d(x, y, kind='linear', axis=-1, copy=True, bounds_error=None,
    fill_value=nan, assume_sorted=False)``; call it on ``x_new`` (any shape).

    ``x`` is ``(n,)``; ``y`` has length ``n`` along ``axis``. The result has shape
    ``y.shape[:axis] + x_new.shape + y.shape[axis+1:]``, as in scipy.
    """

    x: Any
    y: Any
    _y: Any              # y with the interpolation axis first, flattened: (n, k)
    _slopes: Any         # cubic only: (n, k)
    _below: Any
    _above: Any
    kind: str = eqx.field(static=True)
    axis: int = eqx.field(static=True)
    bounds_error: bool = eqx.field(static=True)
    extrapolate: bool = eqx.field(static=True)

    def __init__(self, x, y, kind="linear", axis=-1, copy=True, bounds_error=None,
                 fill_value=np.nan, assume_sorted=False):
        if kind not in _KINDS:
            hint = (" (not implemented here; use 'linear' or 'cubic')" if kind in
                    ("quadratic", 2) else "")
            raise NotImplementedError(f"interp1d: kind={kind!r} is not supported{hint}; "
                                      f"expected one of {sorted(_KINDS)}")
        x = jnp.asarray(x)
        y = jnp.asarray(y)
        dtype = jnp.result_type(x.dtype, y.dtype, float)
        x, y = x.astype(dtype), y.astype(dtype)
        if x.ndim != 1:
            raise ValueError(f"interp1d: x must be 1-D, got shape {x.shape}")
        axis = int(axis) % max(y.ndim, 1)
        if y.ndim == 0 or y.shape[axis] != x.shape[0]:
            raise ValueError(f"interp1d: x and y arrays must be equal in length along the "
                             f"interpolation axis: x has {x.shape[0]}, y has shape {y.shape}"
                             f" (axis={axis})")
        kind = _KINDS[kind]
        n_min = 4 if kind == "cubic" else (2 if kind == "linear" else 1)
        if x.shape[0] < n_min:
            raise ValueError(f"interp1d: kind={kind!r} needs at least {n_min} points, got "
                             f"{x.shape[0]}")
        y_first = jnp.moveaxis(y, axis, 0)
        if not assume_sorted:
            order = jnp.argsort(x)
            x, y_first = x[order], y_first[order]
            y = jnp.moveaxis(y_first, 0, axis)
        if not isinstance(x, jax.core.Tracer) and kind == "cubic" and np.any(np.diff(x) == 0):
            raise ValueError("interp1d: x must not have duplicates for kind='cubic'")
        self.x, self.y = x, y
        self._y = y_first.reshape(x.shape[0], -1)
        self._slopes = _not_a_knot_slopes(x, self._y) if kind == "cubic" else None
        self.kind, self.axis = kind, axis
        self.extrapolate = isinstance(fill_value, str) and fill_value == "extrapolate"
        if isinstance(fill_value, str) and not self.extrapolate:
            raise ValueError(f"interp1d: fill_value must be a number, a (below, above) pair "
                             f"or 'extrapolate', got {fill_value!r}")
        self.bounds_error = (not self.extrapolate) if bounds_error is None else bool(bounds_error)
        if self.extrapolate and self.bounds_error:
            raise ValueError("interp1d: cannot extrapolate and raise at the same time "
                             "(fill_value='extrapolate' with bounds_error=True)")
        rest = y_first.shape[1:]
        if self.extrapolate:
            below = above = jnp.zeros(rest, dtype)
        elif isinstance(fill_value, tuple) and len(fill_value) == 2:
            below, above = fill_value
        else:
            below = above = fill_value
        self._below = jnp.broadcast_to(jnp.asarray(below, dtype), rest).reshape(-1)
        self._above = jnp.broadcast_to(jnp.asarray(above, dtype), rest).reshape(-1)

    def __call__(self, x_new):
        x_new = jnp.asarray(x_new, self.x.dtype)
        x, y, n = self.x, self._y, self.x.shape[0]
        if self.bounds_error and not isinstance(x_new, jax.core.Tracer):
            lo, hi = np.min(np.asarray(x_new), initial=np.inf), np.max(np.asarray(x_new),
                                                                       initial=-np.inf)
            if lo < float(x[0]):
                raise ValueError(f"A value ({lo}) in x_new is below the interpolation range's "
                                 f"minimum value ({float(x[0])}).")
            if hi > float(x[-1]):
                raise ValueError(f"A value ({hi}) in x_new is above the interpolation range's "
                                 f"maximum value ({float(x[-1])}).")
        return self._evaluate(x_new)

    @eqx.filter_jit
    def _evaluate(self, x_new):
        """The interpolant at x_new (one compiled program per interpolant layout and shape)."""
        x, y, n = self.x, self._y, self.x.shape[0]
        xf = x_new.reshape(-1)
        if self.kind in ("linear", "cubic"):
            i = jnp.clip(jnp.searchsorted(x, xf, side="left") - 1, 0, n - 2)
            h = x[i + 1] - x[i]
            dx = (xf - x[i])[:, None]
            delta = (y[i + 1] - y[i]) / h[:, None]
            if self.kind == "linear":
                out = y[i] + delta * dx
            else:
                s0, s1 = self._slopes[i], self._slopes[i + 1]
                c2 = (3.0 * delta - 2.0 * s0 - s1) / h[:, None]
                c3 = (s0 + s1 - 2.0 * delta) / h[:, None] ** 2
                out = y[i] + dx * (s0 + dx * (c2 + dx * c3))
        else:
            if self.kind in ("nearest", "nearest-up"):
                mids = 0.5 * (x[1:] + x[:-1])
                side = "left" if self.kind == "nearest" else "right"
                i = jnp.searchsorted(mids, xf, side=side)
            elif self.kind == "previous":
                i = jnp.searchsorted(x, xf, side="right") - 1
            else:
                i = jnp.searchsorted(x, xf, side="left")
            out = y[jnp.clip(i, 0, n - 1)]
        if not self.extrapolate:
            below = (xf < x[0])[:, None]
            above = (xf > x[-1])[:, None]
            if self.bounds_error:  # only reached inside a trace
                out = jnp.where(below | above, jnp.nan, out)
            else:
                out = jnp.where(below, self._below, jnp.where(above, self._above, out))
        rest = jnp.moveaxis(self.y, self.axis, 0).shape[1:]
        out = out.reshape(x_new.shape + rest)
        # scipy's layout: the new points take the place of the interpolation axis
        k = x_new.ndim
        return jnp.moveaxis(out, tuple(range(k)), tuple(range(self.axis, self.axis + k)))
