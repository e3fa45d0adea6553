"""Spatial operators of TRamWAy 0.7 as precomputed linear stencils.

Every operator TRamWAy evaluates cell by cell (``grad1``, ``gradn``, ``delta0``, ``delta1``)
is linear in the field X. We compute its weights once, at the edge (numpy), into a
:class:`Stencil`; applying it to a whole field is then one gather and one weighted sum, which
jits, vmaps and differentiates:

    out[i, c] = self_weight[i, c] * X[i] + sum_k neighbour_weight[i, c, k] * X[neighbours[i, k]]

``c`` runs over the spatial dimensions for ``grad1`` / ``gradn``, over (below, above) x
dimensions for ``delta1`` and over neighbour slots for ``delta0``. Components TRamWAy leaves
undefined (``grad1`` along an axis with no neighbour on either side: NaN there) have
``defined[i, c] = False``; :meth:`Stencil.apply` returns 0 there unless ``na`` is given.

``grad_sum`` (TRamWAy's ``Distributed.grad_sum``) weights the sum of squared components by
the cell area/volume: ``A_i * sum_c out[i, c]**2``.
"""

from __future__ import annotations

import math
from typing import Optional

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from jaxinfer.spt.cells import _host_or_traced, host_array

__all__ = ["Stencil", "grad1_stencil", "gradn_stencil", "delta0_stencil", "delta1_stencil",
           "neighbours_per_axis", "grad_sum", "DEFAULT_SELECTION_ANGLE"]

DEFAULT_SELECTION_ANGLE = 0.9  # tramway.inference.gradient.get_grad_kwargs default


class Stencil(eqx.Module):
    """Linear local operator on a per-cell field.

    Attributes
    ----------
    self_weight : [ncells, C]
    neighbour_weight : [ncells, C, B]  (0 on padded slots)
    neighbours : [ncells, B] int  (padded slots point at the cell itself)
    defined : [ncells, C] bool
    """

    self_weight: jnp.ndarray
    neighbour_weight: jnp.ndarray
    neighbours: jnp.ndarray
    defined: jnp.ndarray

    def apply(self, X, na: Optional[float] = None):
        """X [ncells] -> [ncells, C]; undefined components are 0 (or ``na``). Concrete
        arrays are computed with numpy (no XLA program for an eager call)."""
        xp, (X, sw, nw, nbi, defined) = _host_or_traced(
            X, self.self_weight, self.neighbour_weight, self.neighbours, self.defined)
        nb = X[nbi]  # [m, B]
        out = sw * X[:, None] + xp.einsum("mcb,mb->mc", nw, nb)
        if na is not None:
            out = xp.where(defined, out, na)
        return out

    __call__ = apply

    def apply_at(self, X, rows, na: Optional[float] = None):
        """The operator's rows ``rows`` ([R] int) only: X [ncells] -> [R, C]."""
        X = jnp.asarray(X)
        nb = X[self.neighbours[rows]]
        out = self.self_weight[rows] * X[rows][:, None] + jnp.einsum(
            "rcb,rb->rc", self.neighbour_weight[rows], nb)
        if na is not None:
            out = jnp.where(self.defined[rows], out, na)
        return out

    def matrix(self) -> np.ndarray:
        """Dense [ncells * C, ncells] matrix of the operator (for tests and inspection)."""
        sw = np.asarray(self.self_weight)
        nw = np.asarray(self.neighbour_weight)
        nb = np.asarray(self.neighbours)
        m, C = sw.shape
        M = np.zeros((m, C, m))
        for i in range(m):
            M[i, :, i] += sw[i]
            for k in range(nb.shape[1]):
                M[i, :, nb[i, k]] += nw[i, :, k]
        return M.reshape(m * C, m)


def grad_sum(components, volumes):
    """TRamWAy's ``grad_sum``: ``volumes[i] * sum_c components[i, c]**2`` -> [ncells]."""
    return volumes * jnp.sum(components * components, axis=-1)


def _padded(neighbours):
    m = len(neighbours)
    B = max([len(n) for n in neighbours] + [1])
    idx = np.tile(np.arange(m)[:, None], (1, B))
    mask = np.zeros((m, B), dtype=bool)
    for i, n in enumerate(neighbours):
        idx[i, :len(n)] = n
        mask[i, :len(n)] = True
    return idx, mask


def neighbours_per_axis(center, neighbour_centers, eps=None, selection_angle=None):
    """TRamWAy's neighbour selection: boolean (below, above), each [dim, nneighbours].

    ``selection_angle`` (default policy of get_grad_kwargs: 0.9) selects neighbours within the
    hypercone of top angle ``selection_angle * pi`` around -e_d / +e_d. ``eps`` selects those
    at projected distance > eps. With neither (or ``selection_angle=0.5`` in 2D): each
    neighbour is assigned to the axis of its largest |projection| (InferenceMAP)."""
    centers = np.asarray(neighbour_centers, float)
    center = np.asarray(center, float)
    valid = np.ones((1, centers.shape[0]), dtype=bool)
    below, above = _sides(center[None], centers[None], valid, eps, selection_angle)
    return below[0], above[0]


def _sides(centers, X, valid, eps, selection_angle):
    """:func:`neighbours_per_axis` for every cell at once: centres [m, dim], neighbour
    centres X [m, B, dim], valid [m, B] -> (below, above), each [m, dim, B] bool."""
    m, B, dim = X.shape
    proj = X - centers[:, None, :]  # [m, B, dim]
    if eps is None:
        if selection_angle is None or (selection_angle == 0.5 and dim == 2):
            assigned = np.argmax(np.abs(proj), axis=-1)  # [m, B]
            dist = np.take_along_axis(proj, assigned[..., None], axis=-1)[..., 0]
            on_axis = assigned[:, None, :] == np.arange(dim)[None, :, None]  # [m, dim, B]
            below = on_axis & (dist < 0)[:, None, :]
            above = on_axis & (dist > 0)[:, None, :]
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                unit = proj / np.sqrt(np.sum(proj * proj, axis=-1, keepdims=True))
                angle = np.moveaxis(1.0 - 2.0 * np.arccos(unit) / math.pi, -1, 1)  # [m, dim, B]
            below = angle < selection_angle - 1.0
            above = 1.0 - selection_angle < angle
    else:
        Xd = np.moveaxis(X, -1, 1)  # [m, dim, B]
        below = Xd < centers[:, :, None] - eps
        above = centers[:, :, None] + eps < Xd
    return below & valid[:, None, :], above & valid[:, None, :]


def _side_means(centers, Xd, side):
    """Count [m, dim] and mean position [m, dim] (NaN where empty) of the neighbours on
    ``side`` [m, dim, B] along each axis; ``Xd`` [m, dim, B] neighbour coordinates."""
    count = side.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count > 0, np.sum(np.where(side, Xd, 0.0), axis=-1) / count, np.nan)
    return count, mean


def _padded_geometry(centers, neighbours):
    centers = np.asarray(centers, float)
    nb, nmask = _padded(neighbours)
    Xd = np.moveaxis(centers[nb], -1, 1)  # [m, dim, B]
    return centers, nb, nmask, Xd


def grad1_stencil(centers, neighbours, eps=None, selection_angle=DEFAULT_SELECTION_ANGLE) -> Stencil:
    """TRamWAy's ``grad1``: per axis, derivative at x_i of the parabola through the mean
    neighbour position/value below, (x_i, X_i) and the mean above; one-sided difference
    (X_i - mean X_side) / (x_i - mean x_side) when a side is empty; undefined when both are.

    Parameters
    ----------
    centers : [ncells, dim] cell centres
    neighbours : sequence of int arrays, neighbours of each cell (indices into centers)
    eps, selection_angle : neighbour selection (see :func:`neighbours_per_axis`)
    """
    centers, nb, nmask, Xd = _padded_geometry(centers, neighbours)
    below, above = _sides(centers, np.moveaxis(Xd, 1, -1), nmask, eps, selection_angle)
    nu, xu = _side_means(centers, Xd, below)
    nv, xv = _side_means(centers, Xd, above)
    x0 = centers
    both = (nu > 0) & (nv > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # both sides: derivative at x0 of the Lagrange interpolant through (x0, xu, xv)
        w0 = 1.0 / (x0 - xu) + 1.0 / (x0 - xv)
        wu = (x0 - xv) / ((xu - x0) * (xu - xv)) / nu
        wv = (x0 - xu) / ((xv - x0) * (xv - xu)) / nv
        # one side: (X_i - mean X_side) / (x_i - mean x_side)
        inv_u = 1.0 / (x0 - xu)
        inv_v = 1.0 / (x0 - xv)
    only_u = (nu > 0) & ~both
    only_v = (nv > 0) & ~both
    sw = np.where(both, w0, np.where(only_u, inv_u, np.where(only_v, inv_v, 0.0)))
    cu = np.where(both, wu, np.where(only_u, -inv_u / np.maximum(nu, 1), 0.0))
    cv = np.where(both, wv, np.where(only_v, -inv_v / np.maximum(nv, 1), 0.0))
    nw = np.where(above, cv[..., None], np.where(below, cu[..., None], 0.0))
    defined = (nu > 0) | (nv > 0)
    return Stencil(host_array(sw), host_array(nw), host_array(nb, np.int32), host_array(defined))


def delta0_stencil(centers, neighbours) -> Stencil:
    """TRamWAy's ``delta0``: (X_j - X_i) / ||x_j - x_i|| / sqrt(|N_i|) for each neighbour j.
    Components are the neighbour slots (padded slots have zero weight)."""
    centers, nb, nmask, Xd = _padded_geometry(centers, neighbours)
    B = nb.shape[1]
    d = np.sqrt(np.sum((Xd - centers[:, :, None]) ** 2, axis=1))  # [m, B]
    k = nmask.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(nmask, 1.0 / d / np.sqrt(np.maximum(k, 1).astype(float)), 0.0)
    nw = np.zeros(nb.shape + (B,))
    nw[:, np.arange(B), np.arange(B)] = w
    return Stencil(host_array(-w), host_array(nw), host_array(nb, np.int32), host_array(nmask))


def delta1_stencil(centers, neighbours, eps=None, selection_angle=DEFAULT_SELECTION_ANGLE) -> Stencil:
    """TRamWAy's ``delta1``: per axis, (X_i - mean X_below)/(x_i - mean x_below) and the same
    above, 0 for an empty side. Components ordered [below_0, above_0, below_1, above_1, ...]
    (only their squared sum matters to the priors)."""
    centers, nb, nmask, Xd = _padded_geometry(centers, neighbours)
    m, dim = centers.shape
    sides = _sides(centers, np.moveaxis(Xd, 1, -1), nmask, eps, selection_angle)
    sw = np.zeros((m, dim, 2))
    nw = np.zeros((m, dim, 2, nb.shape[1]))
    defined = np.zeros((m, dim, 2), dtype=bool)
    for s, side in enumerate(sides):
        count, mean = _side_means(centers, Xd, side)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.where(count > 0, 1.0 / (centers - mean), 0.0)
        sw[:, :, s] = inv
        nw[:, :, s] = np.where(side, (-inv / np.maximum(count, 1))[..., None], 0.0)
        defined[:, :, s] = count > 0
    return Stencil(host_array(sw.reshape(m, 2 * dim)), host_array(nw.reshape(m, 2 * dim, -1)),
                   host_array(nb, np.int32), host_array(defined.reshape(m, 2 * dim)))


def gradn_stencil(centers, neighbours, tramway_indexing: bool = False) -> Stencil:
    """TRamWAy's ``gradn``: least-squares full quadratic through the cell (repeated once per
    neighbour, as TRamWAy does) and its neighbours, differentiated at the cell centre.

    TRamWAy 0.7's ``_poly2_deriv_eval`` walks the non-zero entries of the derivative pattern
    with a counter that indexes the coefficient vector, so it multiplies the wrong
    coefficients (e.g. in 2D, d/dx uses the y*y coefficient instead of the x one).
    ``tramway_indexing=True`` reproduces that (for comparison only; TRamWAy's inference never
    calls ``gradn``); the default is the correct derivative."""
    centers = np.asarray(centers, float)
    m, dim = centers.shape
    nb, nmask = _padded(neighbours)
    B = nb.shape[1]
    sw = np.zeros((m, dim))
    nw = np.zeros((m, dim, B))
    defined = np.zeros((m, dim), dtype=bool)

    def design(P):
        quad = [P[:, u] * P[:, v] for v in range(dim) for u in range(dim)]
        return np.column_stack(quad + [P, np.ones((P.shape[0], 1))])

    for i in range(m):
        k = int(nmask[i].sum())
        if k == 0:
            continue
        x0 = centers[i]
        P = np.vstack([np.tile(x0, (k, 1)), centers[nb[i, :k]]])
        pinv = np.linalg.pinv(design(P))  # [nparams, 2k]
        # derivative of the polynomial at x0 as a linear functional of the coefficients
        E = np.zeros((dim, pinv.shape[0]))
        for d in range(dim):
            # (coefficient factor, column) of every entry of the derivative pattern
            entries = []
            col = 0
            for v in range(dim):
                for u in range(dim):
                    entries.append(((x0[v] if u == d else 0.0) + (x0[u] if v == d else 0.0),
                                    (u == d) or (v == d), col))
                    col += 1
            for u in range(dim):
                entries.append((1.0 if u == d else 0.0, u == d, dim * dim + u))
            entries.append((0.0, False, dim * dim + dim))
            slot = 0
            for value, nonzero, column in entries:
                if tramway_indexing:
                    if nonzero:
                        E[d, slot] += value
                        slot += 1
                else:
                    E[d, column] += value
        W = E @ pinv  # [dim, 2k]
        sw[i] = W[:, :k].sum(axis=1)
        nw[i, :, :k] = W[:, k:]
        defined[i] = True
    return Stencil(host_array(sw), host_array(nw), host_array(nb, np.int32), host_array(defined))
