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
        """X [ncells] -> [ncells, C]; undefined components are 0 (or ``na``)."""
        X = jnp.asarray(X)
        nb = X[self.neighbours]  # [m, B]
        out = self.self_weight * X[:, None] + jnp.einsum("mcb,mb->mc", self.neighbour_weight, nb)
        if na is not None:
            out = jnp.where(self.defined, out, na)
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
    dim = center.shape[0]
    below = np.zeros((dim, centers.shape[0]), dtype=bool)
    above = np.zeros_like(below)
    if centers.shape[0] == 0:
        return below, above
    proj = centers - center[None, :]
    if eps is None:
        if selection_angle is None or (selection_angle == 0.5 and dim == 2):
            assigned = np.argmax(np.abs(proj), axis=1)
            dist = proj[np.arange(proj.shape[0]), assigned]
            for j in range(dim):
                below[j, (assigned == j) & (dist < 0)] = True
                above[j, (assigned == j) & (dist > 0)] = True
        else:
            proj = proj / np.sqrt(np.sum(proj * proj, axis=1, keepdims=True))
            angle = 1.0 - 2.0 * np.arccos(proj) / math.pi
            for j in range(dim):
                below[j, angle[:, j] < selection_angle - 1.0] = True
                above[j, 1.0 - selection_angle < angle[:, j]] = True
    else:
        for j in range(dim):
            below[j, centers[:, j] < center[j] - eps] = True
            above[j, center[j] + eps < centers[:, j]] = True
    return below, above


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
    centers = np.asarray(centers, float)
    m, dim = centers.shape
    nb, nmask = _padded(neighbours)
    B = nb.shape[1]
    sw = np.zeros((m, dim))
    nw = np.zeros((m, dim, B))
    defined = np.zeros((m, dim), dtype=bool)
    for i in range(m):
        k = int(nmask[i].sum())
        if k == 0:
            continue
        X = centers[nb[i, :k]]
        below, above = neighbours_per_axis(centers[i], X, eps, selection_angle)
        for j in range(dim):
            u, v = below[j], above[j]
            x0 = centers[i, j]
            if not u.any() and not v.any():
                continue
            defined[i, j] = True
            if u.any() and v.any():
                xu, xv = X[u, j].mean(), X[v, j].mean()
                # derivative at x0 of the Lagrange interpolant through (x0, xu, xv)
                w0 = 1.0 / (x0 - xu) + 1.0 / (x0 - xv)
                wu = (x0 - xv) / ((xu - x0) * (xu - xv))
                wv = (x0 - xu) / ((xv - x0) * (xv - xu))
                sw[i, j] = w0
                nw[i, j, :k][u] = wu / u.sum()
                nw[i, j, :k][v] = wv / v.sum()
            else:
                side = u if u.any() else v
                inv = 1.0 / (x0 - X[side, j].mean())
                sw[i, j] = inv
                nw[i, j, :k][side] = -inv / side.sum()
    return Stencil(jnp.asarray(sw), jnp.asarray(nw), jnp.asarray(nb), jnp.asarray(defined))


def delta0_stencil(centers, neighbours) -> Stencil:
    """TRamWAy's ``delta0``: (X_j - X_i) / ||x_j - x_i|| / sqrt(|N_i|) for each neighbour j.
    Components are the neighbour slots (padded slots have zero weight)."""
    centers = np.asarray(centers, float)
    m = centers.shape[0]
    nb, nmask = _padded(neighbours)
    B = nb.shape[1]
    sw = np.zeros((m, B))
    nw = np.zeros((m, B, B))
    for i in range(m):
        k = int(nmask[i].sum())
        if k == 0:
            continue
        d = np.sqrt(np.sum((centers[nb[i, :k]] - centers[i]) ** 2, axis=1))
        w = 1.0 / d / np.sqrt(float(k))
        sw[i, :k] = -w
        nw[i, np.arange(k), np.arange(k)] = w
    return Stencil(jnp.asarray(sw), jnp.asarray(nw), jnp.asarray(nb), jnp.asarray(nmask))


def delta1_stencil(centers, neighbours, eps=None, selection_angle=DEFAULT_SELECTION_ANGLE) -> Stencil:
    """TRamWAy's ``delta1``: per axis, (X_i - mean X_below)/(x_i - mean x_below) and the same
    above, 0 for an empty side. Components ordered [below_0, above_0, below_1, above_1, ...]
    (only their squared sum matters to the priors)."""
    centers = np.asarray(centers, float)
    m, dim = centers.shape
    nb, nmask = _padded(neighbours)
    B = nb.shape[1]
    sw = np.zeros((m, 2 * dim))
    nw = np.zeros((m, 2 * dim, B))
    defined = np.zeros((m, 2 * dim), dtype=bool)
    for i in range(m):
        k = int(nmask[i].sum())
        if k == 0:
            continue
        X = centers[nb[i, :k]]
        below, above = neighbours_per_axis(centers[i], X, eps, selection_angle)
        for j in range(dim):
            for s, side in enumerate((below[j], above[j])):
                if side.any():
                    c = 2 * j + s
                    inv = 1.0 / (centers[i, j] - X[side, j].mean())
                    sw[i, c] = inv
                    nw[i, c, :k][side] = -inv / side.sum()
                    defined[i, c] = True
    return Stencil(jnp.asarray(sw), jnp.asarray(nw), jnp.asarray(nb), jnp.asarray(defined))


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
    return Stencil(jnp.asarray(sw), jnp.asarray(nw), jnp.asarray(nb), jnp.asarray(defined))
