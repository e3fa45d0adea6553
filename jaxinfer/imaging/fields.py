"""Smooth fields on the padded volume: peri's polynomial illumination and background.

Coordinates (peri 0.1.3): along an axis of the *padded* volume with N voxels, voxel ``k`` sits
at ``u = k / N``; Legendre fields use ``2u - 1``. Coefficients are flat vectors in peri's
parameter order:

- ``LegendrePoly2P1D(order=(nz, ny, nx))``: ``F = [sum_ij c_ij P_i(x) P_j(y)] * (1 + sum_k d_k
  P_(k+1)(z))``, parameters ``<cat>-xy-i-j`` for i < nx (outer), j < ny (inner), then
  ``<cat>-z-k`` for k < nz.
- ``LegendrePoly3D`` / ``Polynomial3D(order=(n0, n1, n2))``: ``F = sum_ijk c_ijk b_i(z) b_j(y)
  b_k(x)`` with ``b`` Legendre polynomials of ``2u - 1`` or monomials of ``u``; parameters
  ``<cat>-i-j-k`` in row-major order.
"""

from __future__ import annotations

from itertools import product

import jax.numpy as jnp
import numpy as np
from numpy.polynomial import legendre

__all__ = ["FIELD_KINDS", "field_param_names", "field_basis", "evaluate_field"]

FIELD_KINDS = ("legendre-2p1d", "legendre-3d", "polynomial-3d")


def field_param_names(kind: str, order, category: str):
    """peri's parameter names of a field, in its order."""
    order = tuple(int(o) for o in order)
    if kind == "legendre-2p1d":
        xy = [f"{category}-xy-{i}-{j}" for i, j in product(range(order[2]), range(order[1]))]
        return xy + [f"{category}-z-{k}" for k in range(order[0])]
    if kind in ("legendre-3d", "polynomial-3d"):
        return [f"{category}-{i}-{j}-{k}" for i, j, k in product(*(range(o) for o in order))]
    raise ValueError(f"unknown field kind {kind!r}; expected one of {FIELD_KINDS}")


def _axis_basis(n_voxels: int, n_terms: int, legendre_basis: bool, first: int = 0):
    u = np.arange(n_voxels) / float(n_voxels)
    out = np.empty((n_terms, n_voxels))
    for t in range(n_terms):
        if legendre_basis:
            out[t] = legendre.legval(2 * u - 1, np.eye(first + t + 1)[first + t])
        else:
            out[t] = u ** (first + t)
    return out


def field_basis(kind: str, order, padded_shape):
    """Per-axis basis matrices (NumPy, static) for :func:`evaluate_field`."""
    nz, ny, nx = (int(s) for s in padded_shape)
    o = tuple(int(v) for v in order)
    if kind == "legendre-2p1d":
        return (_axis_basis(nz, o[0], True, first=1), _axis_basis(ny, o[1], True),
                _axis_basis(nx, o[2], True))
    leg = kind == "legendre-3d"
    return (_axis_basis(nz, o[0], leg), _axis_basis(ny, o[1], leg), _axis_basis(nx, o[2], leg))


def evaluate_field(kind: str, order, basis, coeffs):
    """The field on the padded volume from flat ``coeffs`` (peri's order); ``basis`` from
    :func:`field_basis`. Returns an (nz, ny, nx) array."""
    bz, by, bx = (jnp.asarray(b, coeffs.dtype) for b in basis)
    o = tuple(int(v) for v in order)
    if kind == "legendre-2p1d":
        n_xy = o[2] * o[1]
        c_xy = coeffs[:n_xy].reshape(o[2], o[1])           # [i (x), j (y)]
        d_z = coeffs[n_xy:]
        field_xy = jnp.einsum("ij,ix,jy->yx", c_xy, bx, by)
        field_z = d_z @ bz if o[0] else jnp.zeros(bz.shape[1], coeffs.dtype)
        return field_xy[None, :, :] * (1.0 + field_z)[:, None, None]
    c = coeffs.reshape(o)
    return jnp.einsum("ijk,iz,jy,kx->zyx", c, bz, by, bx)
