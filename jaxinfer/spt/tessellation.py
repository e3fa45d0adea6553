"""Partitions of space into cells: regular grid, hexagons, k-means / Voronoi.

This is the edge of the package (numpy / scipy, no tracing). A tessellation gives cell
centres, cell areas (2D) or volumes (3D), and an adjacency list; a :class:`Partition` adds the
assignment of the data to the cells. :func:`jaxinfer.spt.cells.distributed` turns a partition
into the padded :class:`~jaxinfer.spt.cells.Cells` pytree the posteriors work on.

Conventions follow TRamWAy 0.7 (``tramway.helper.tessellate``):

* ``grid``: ``count_per_dim`` cells per axis between ``lower_bound`` and ``upper_bound``
  (default: the data's bounding box); points are assigned to the nearest cell centre (points
  outside the box go to the nearest border cell, as in TRamWAy); cell areas are exact; cells
  are adjacent when they share a face or an edge (8-connected in 2D, 18-connected in 3D:
  TRamWAy's ``diagonal_adjacency``).
* ``kmeans``: initial centres on a regular grid sized by ``avg_location_count``, refined
  by ``scipy.cluster.vq.kmeans`` on all locations (as TRamWAy); Voronoi cells by nearest
  centre; adjacency = Voronoi ridges, minus edges longer (squared) than ``prune`` times the
  median squared edge length; cell areas exactly as TRamWAy computes them, unbounded border
  cells included (the convex hull of their finite Voronoi vertices and their centre, which
  can be huge). ``clip_to_hull=True`` instead intersects every Voronoi cell with the convex
  hull of the data (the well-posed option; TRamWAy has no equivalent).
* ``hexagon``: a hexagonal lattice (2D) with flat-topped hexagons of side ``hexagon_side``
  (or sized by ``avg_location_count``); 6-connected; exact areas.

Translocations are assigned to the cell of their ORIGIN point (TRamWAy's default).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

__all__ = ["Tessellation", "Partition", "tessellate", "grid_tessellation",
           "voronoi_tessellation", "hexagon_tessellation", "kmeans_centers"]


@dataclasses.dataclass(frozen=True)
class Tessellation:
    """A partition of space into cells.

    Attributes
    ----------
    centers : ndarray [ncells, dim]
        Cell centres (length units).
    volumes : ndarray [ncells]
        Cell areas (2D) / volumes (3D), squared / cubed length units.
    adjacency : list of ndarray
        ``adjacency[i]`` = sorted indices of the cells adjacent to cell ``i``.
    method : str
        ``"grid"``, ``"hexagon"`` or ``"kmeans"`` / ``"voronoi"``.
    params : dict
        Parameters the tessellation was made with (bounds, counts, ...).
    """

    centers: np.ndarray
    volumes: np.ndarray
    adjacency: tuple
    method: str
    params: dict = dataclasses.field(default_factory=dict)

    @property
    def number_of_cells(self) -> int:
        return int(self.centers.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centers.shape[1])

    def assign(self, points: np.ndarray) -> np.ndarray:
        """Nearest-centre cell index of each point ([npoints, dim] -> [npoints] int).

        Ties go to the lowest cell index (as ``argmin`` in TRamWAy). Large problems query a
        k-d tree for the two nearest centres and settle near-ties with the exact rule."""
        points = np.asarray(points, dtype=float)
        if points.ndim != 2 or points.shape[1] != self.dim:
            raise ValueError(f"points must have shape [n, {self.dim}], got {points.shape}")
        if points.shape[0] * self.number_of_cells <= (1 << 22) or self.number_of_cells < 2:
            return self._assign_dense(points)
        from scipy.spatial import cKDTree

        d, idx = cKDTree(self.centers).query(points, k=2)
        scale = np.sum(points**2, axis=1) + np.max(np.sum(self.centers**2, axis=1)) + 1.0
        near_tie = (d[:, 1] ** 2 - d[:, 0] ** 2) <= 1e-9 * scale
        out = idx[:, 0].astype(np.int64)
        if near_tie.any():
            out[near_tie] = self._assign_dense(points[near_tie])
        return out

    def _assign_dense(self, points: np.ndarray) -> np.ndarray:
        out = np.empty(points.shape[0], dtype=np.int64)
        c2 = np.sum(self.centers**2, axis=1)
        block = max(1, min(65536, (1 << 22) // max(1, self.number_of_cells)))  # <= 32 MB
        for s in range(0, points.shape[0], block):
            p = points[s:s + block]
            d2 = np.sum(p**2, axis=1, keepdims=True) - 2 * p @ self.centers.T + c2
            out[s:s + block] = np.argmin(d2, axis=1)
        return out


@dataclasses.dataclass(frozen=True)
class Partition:
    """A tessellation plus the data assigned to it (TRamWAy's ``Partition`` / ``CellStats``).

    Attributes
    ----------
    tessellation : Tessellation
    translocations : DataFrame
        Columns ``n, x, y[, z], t, dx, dy[, dz], dt`` (origin point + displacement).
    cell_index : ndarray [ntranslocations] int
        Cell of each translocation's origin; ``-1`` for translocations dropped by
        ``min_location_count``.
    location_count : ndarray [ncells] int
        Number of locations (all trajectory points when trajectories were given,
        translocation origins otherwise) per cell, before filtering.
    """

    tessellation: Tessellation
    translocations: pd.DataFrame
    cell_index: np.ndarray
    location_count: np.ndarray

    @property
    def space_cols(self) -> list:
        return [c for c in ("x", "y", "z") if c in self.translocations.columns]


# --------------------------------------------------------------------------- grid


def _neighbours_grid(shape: Sequence[int]) -> tuple:
    """Cells sharing a face or an edge (L_inf distance 1, at most 2 coordinates differ)."""
    dim = len(shape)
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, dim)
    flat = np.ravel_multi_index(idx.T, shape)
    order = np.argsort(flat)
    idx = idx[order]
    offsets = [np.array(o) for o in np.ndindex(*([3] * dim))]
    offsets = [o - 1 for o in offsets]
    offsets = [o for o in offsets if 0 < np.sum(o != 0) <= 2]
    nbrs = []
    for ijk in idx:
        out = []
        for o in offsets:
            q = ijk + o
            if np.all(q >= 0) and np.all(q < np.asarray(shape)):
                out.append(int(np.ravel_multi_index(tuple(q), shape)))
        nbrs.append(np.array(sorted(out), dtype=np.int64))
    return tuple(nbrs)


def grid_tessellation(lower_bound, upper_bound, count_per_dim) -> Tessellation:
    """Regular grid: ``count_per_dim[d]`` cells along axis d between the bounds.

    Cell ``i`` has multi-index ``np.unravel_index(i, count_per_dim)`` (C order, first axis
    slowest), as TRamWAy's ``RegularMesh``."""
    lower = np.asarray(lower_bound, dtype=float)
    upper = np.asarray(upper_bound, dtype=float)
    counts = np.asarray(count_per_dim).astype(int)
    if lower.shape != upper.shape or lower.shape != counts.shape or lower.ndim != 1:
        raise ValueError("lower_bound, upper_bound and count_per_dim must be 1D with one "
                         f"entry per dimension, got {lower.shape}, {upper.shape}, {counts.shape}")
    if np.any(counts < 1):
        raise ValueError(f"count_per_dim must be >= 1, got {counts}")
    if np.any(upper <= lower):
        raise ValueError(f"upper_bound must exceed lower_bound, got {lower} / {upper}")
    edges = [np.linspace(lo, hi, int(c) + 1) for lo, hi, c in zip(lower, upper, counts)]
    mids = [(e[:-1] + e[1:]) / 2 for e in edges]
    cs = np.meshgrid(*mids, indexing="ij")
    centers = np.column_stack([c.ravel() for c in cs])
    widths = np.meshgrid(*[np.diff(e) for e in edges], indexing="ij")
    volumes = np.prod(np.stack([w.ravel() for w in widths], -1), axis=1)
    return Tessellation(centers, volumes, _neighbours_grid(tuple(counts)), "grid",
                        dict(lower_bound=lower, upper_bound=upper, count_per_dim=counts))


# --------------------------------------------------------------------------- voronoi


def _polygon_area_fan(center, vertices_xy, edges):
    area = 0.0
    u = center
    for j, k in edges:
        v, w = vertices_xy[j], vertices_xy[k]
        area += 0.5 * abs((v[0] - u[0]) * (w[1] - u[1]) - (w[0] - u[0]) * (v[1] - u[1]))
    return area


def voronoi_tessellation(centers, prune: Optional[float] = 2.5, clip_to_hull=None,
                         method: str = "voronoi") -> Tessellation:
    """Voronoi cells of given centres (2D or 3D).

    Parameters
    ----------
    centers : array [ncells, dim]
    prune : float or None
        Drop adjacency edges whose squared length exceeds ``prune`` times the median
        squared edge length (TRamWAy's k-means default 2.5). None keeps all ridges.
    clip_to_hull : array [npoints, dim] or None
        If given, cell areas are those of the Voronoi cells intersected with the convex hull
        of these points (2D only) instead of TRamWAy's convention for unbounded cells.
    """
    from scipy import spatial

    centers = np.asarray(centers, dtype=float)
    m, dim = centers.shape
    vor = spatial.Voronoi(centers)
    verts = vor.vertices
    # cell volumes, TRamWAy's way
    ridge_pairs = []
    for r in vor.ridge_vertices:
        r = np.asarray(r)
        pairs = np.c_[r, np.roll(r, 1)]
        ridge_pairs.append(pairs[np.all(pairs >= 0, axis=1)])
    ij = np.concatenate(ridge_pairs) if ridge_pairs else np.zeros((0, 2), int)
    vadj = [set() for _ in range(len(verts))]
    for a, b in ij:
        vadj[a].add(b)
        vadj[b].add(a)
    volumes = np.full(m, np.nan)
    for i in range(m):
        r = vor.point_region[i]
        js_list = [v for v in vor.regions[r] if v >= 0]
        u = centers[i]
        if dim != 2:
            pts = verts[js_list]
            if pts.shape[0] > pts.shape[1]:
                try:
                    volumes[i] = spatial.ConvexHull(pts).volume
                except Exception:  # degenerate: leave NaN as TRamWAy
                    pass
            continue
        js = set(js_list)
        simplices = []
        while js:
            j = js.pop()
            for k in vadj[j]:
                if k in js:
                    simplices.append((j, k))
        if len(simplices) != len(js_list):
            pts = np.r_[verts[js_list], u[None, :]]
            if pts.shape[0] > pts.shape[1]:
                try:
                    volumes[i] = spatial.ConvexHull(pts).volume
                except Exception:
                    pass
            continue
        volumes[i] = _polygon_area_fan(u, verts, simplices)
    if clip_to_hull is not None:
        volumes = _clipped_voronoi_areas(centers, vor, np.asarray(clip_to_hull, float))
    # adjacency from ridges, with pruning
    rp = vor.ridge_points
    rp = rp[np.all(rp >= 0, axis=1)]
    if prune and rp.shape[0]:
        d2 = np.sum((centers[rp[:, 0]] - centers[rp[:, 1]]) ** 2, axis=1)
        rp = rp[d2 <= prune * np.median(d2)]
    nb = [set() for _ in range(m)]
    for a, b in rp:
        nb[a].add(int(b))
        nb[b].add(int(a))
    adjacency = tuple(np.array(sorted(s), dtype=np.int64) for s in nb)
    return Tessellation(centers, volumes, adjacency, method,
                        dict(prune=prune, clipped=clip_to_hull is not None))


def _clip_polygon(poly, hull_eqs):
    """Sutherland-Hodgman clipping of a convex polygon by half-planes a.x + b <= 0."""
    for a0, a1, b in hull_eqs:
        if len(poly) == 0:
            break
        out = []
        for k in range(len(poly)):
            p, q = poly[k], poly[(k + 1) % len(poly)]
            fp, fq = a0 * p[0] + a1 * p[1] + b, a0 * q[0] + a1 * q[1] + b
            if fp <= 0:
                out.append(p)
            if (fp < 0 < fq) or (fq < 0 < fp):
                t = fp / (fp - fq)
                out.append(p + t * (q - p))
        poly = out
    return poly


def _clipped_voronoi_areas(centers, vor, points):
    from scipy import spatial

    if centers.shape[1] != 2:
        raise ValueError("clip_to_hull is implemented for 2D tessellations only")
    hull = spatial.ConvexHull(points)
    eqs = hull.equations  # a.x + b <= 0 inside
    # a far box so that unbounded regions become bounded polygons before clipping
    span = np.ptp(np.r_[points, centers], axis=0).max() * 10 + 1.0
    lo = np.min(np.r_[points, centers], axis=0) - span
    hi = np.max(np.r_[points, centers], axis=0) + span
    areas = np.zeros(len(centers))
    for i in range(len(centers)):
        # Voronoi cell of i = intersection of half-planes closer to i than to any j
        poly = [np.array([lo[0], lo[1]]), np.array([hi[0], lo[1]]),
                np.array([hi[0], hi[1]]), np.array([lo[0], hi[1]])]
        halfplanes = []
        for j in range(len(centers)):
            if j == i:
                continue
            a = centers[j] - centers[i]
            b = -0.5 * (np.dot(centers[j], centers[j]) - np.dot(centers[i], centers[i]))
            halfplanes.append((a[0], a[1], b))
        poly = _clip_polygon(poly, halfplanes + [tuple(e) for e in eqs])
        if len(poly) >= 3:
            P = np.array(poly)
            areas[i] = 0.5 * abs(np.dot(P[:, 0], np.roll(P[:, 1], -1))
                                 - np.dot(P[:, 1], np.roll(P[:, 0], -1)))
    return areas


def kmeans_centers(points, initial_centers, tol: float = 1e-6) -> np.ndarray:
    """k-means refinement of ``initial_centers`` on ``points`` (scipy's ``vq.kmeans``, as
    TRamWAy; deterministic given the initial centres; clusters that become empty are
    dropped by scipy)."""
    from scipy.cluster.vq import kmeans

    centers, _ = kmeans(np.asarray(points, float), np.asarray(initial_centers, float),
                        thresh=tol)
    return centers


# --------------------------------------------------------------------------- hexagons


def hexagon_tessellation(lower_bound, upper_bound, side: float) -> Tessellation:
    """Flat-topped hexagons of side ``side`` covering the box (2D); 6-connected."""
    lower = np.asarray(lower_bound, float)
    upper = np.asarray(upper_bound, float)
    if lower.shape != (2,):
        raise ValueError("hexagonal tessellations are 2D only")
    if not side > 0:
        raise ValueError(f"hexagon side must be > 0, got {side}")
    dx = 1.5 * side
    dy = math.sqrt(3.0) * side
    ncol = int(math.ceil((upper[0] - lower[0]) / dx)) + 1
    nrow = int(math.ceil((upper[1] - lower[1]) / dy)) + 1
    centers, keys = [], {}
    for c in range(ncol):
        for r in range(nrow):
            x = lower[0] + c * dx
            y = lower[1] + r * dy + (dy / 2 if c % 2 else 0.0)
            keys[(c, r)] = len(centers)
            centers.append((x, y))
    centers = np.array(centers)
    area = 1.5 * math.sqrt(3.0) * side**2
    adjacency = []
    for (c, r), i in keys.items():
        if c % 2:
            cand = [(c, r - 1), (c, r + 1), (c - 1, r), (c - 1, r + 1), (c + 1, r), (c + 1, r + 1)]
        else:
            cand = [(c, r - 1), (c, r + 1), (c - 1, r - 1), (c - 1, r), (c + 1, r - 1), (c + 1, r)]
        adjacency.append(np.array(sorted(keys[k] for k in cand if k in keys), dtype=np.int64))
    return Tessellation(centers, np.full(len(centers), area), tuple(adjacency), "hexagon",
                        dict(lower_bound=lower, upper_bound=upper, side=side))


# --------------------------------------------------------------------------- front door


def _as_translocations(data) -> tuple:
    """-> (translocation frame, location coordinates used for counts and k-means)."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError("tessellate expects a pandas.DataFrame of trajectories (n, x, y[, z], t) "
                        f"or translocations (..., dx, dy[, dz], dt), got {type(data).__name__}")
    cols = [c for c in ("x", "y", "z") if c in data.columns]
    if len(cols) < 1:
        raise ValueError(f"no coordinate columns x, y[, z] in {list(data.columns)}")
    if all("d" + c in data.columns for c in cols) and "dt" in data.columns:
        tr = data
        locations = data[cols].to_numpy(float)
    else:
        from jaxinfer.spt.trajectories import translocations as make_translocations

        tr = make_translocations(data)
        locations = data[cols].to_numpy(float)
    return tr, locations


def tessellate(data, method: str = "grid", *, count_per_dim=None, lower_bound=None,
               upper_bound=None, step: Optional[float] = None,
               avg_location_count: Optional[int] = None, min_location_count: Optional[int] = None,
               cell_centers=None, prune: Optional[float] = 2.5, clip_to_hull: bool = False,
               hexagon_side: Optional[float] = None, ref_distance: Optional[float] = None,
               rel_min_distance: float = 0.8) -> Partition:
    """Tessellate space and assign translocations to cells by origin (``tramway.helper.tessellate``).

    Parameters
    ----------
    data : DataFrame
        Trajectories (``n, x, y[, z], t``; translocations are made with
        :func:`jaxinfer.spt.trajectories.translocations`) or translocations (``n, x, y[, z],
        t, dx, dy[, dz], dt``).
    method : ``"grid"``, ``"hexagon"``, ``"kmeans"`` or ``"voronoi"`` (the latter needs
        ``cell_centers``).
    count_per_dim : sequence of int, grid cells per axis. Otherwise the grid step is ``step``,
        or derived from ``avg_location_count`` as TRamWAy (side = (box volume / (n_points /
        avg_location_count))^(1/dim), at least ``rel_min_distance * ref_distance``).
    lower_bound, upper_bound : arrays [dim], grid / hexagon box (default: data bounding box).
    avg_location_count : int, average number of locations per cell (k-means, and grids or
        hexagons without explicit size). TRamWAy's default: 4 * min_location_count = 80.
    min_location_count : int or None
        Cells with fewer locations are removed from the partition (their translocations get
        cell index -1), as TRamWAy's ``min_location_count`` at partition time. Default None:
        no filtering (TRamWAy filters only when ``knn``/``radius`` are used).
    cell_centers : array [ncells, dim], for ``method="voronoi"``.
    prune : float, k-means / Voronoi adjacency pruning factor (TRamWAy: 2.5).
    clip_to_hull : bool, Voronoi areas clipped to the data's convex hull (2D).
    hexagon_side : float, side length of hexagons.
    ref_distance : float, reference distance (default: mean translocation length).

    Returns
    -------
    Partition
    """
    tr, locations = _as_translocations(data)
    cols = [c for c in ("x", "y", "z") if c in tr.columns]
    dim = len(cols)
    origins = tr[cols].to_numpy(float)
    if origins.shape[0] == 0:
        raise ValueError("no translocation found in the data")
    n_pts = locations.shape[0]
    if ref_distance is None:
        dr = tr[["d" + c for c in cols]].to_numpy(float)
        ref_distance = float(np.nanmean(np.sqrt(np.sum(dr * dr, axis=1))))
    min_distance = rel_min_distance * ref_distance if rel_min_distance else None
    lo = locations.min(axis=0) if lower_bound is None else np.asarray(lower_bound, float)
    hi = locations.max(axis=0) if upper_bound is None else np.asarray(upper_bound, float)
    if lo.shape != (dim,) or hi.shape != (dim,):
        raise ValueError(f"lower_bound / upper_bound must have {dim} entries")
    avg = 80 if avg_location_count is None else avg_location_count
    if avg_location_count is None and min_location_count:
        avg = 4 * min_location_count

    def auto_increment():
        n_cells = n_pts / float(avg)
        inc = math.exp(math.log(float(np.prod(hi - lo)) / n_cells) / dim)
        if min_distance is not None:
            inc = max(inc, min_distance)
        return inc

    method = method.lower()
    if method in ("grid", "regular"):
        if count_per_dim is None:
            inc = step if step is not None else auto_increment()
            count_per_dim = np.maximum(1, np.round((hi - lo) / inc)).astype(int)
        count_per_dim = np.broadcast_to(np.asarray(count_per_dim, int), (dim,))
        tess = grid_tessellation(lo, hi, count_per_dim)
    elif method == "hexagon":
        side = hexagon_side
        if side is None:
            side = step if step is not None else auto_increment() / math.sqrt(1.5 * math.sqrt(3))
        tess = hexagon_tessellation(lo, hi, side)
    elif method in ("kmeans", "voronoi"):
        if method == "voronoi" or cell_centers is not None:
            if cell_centers is None:
                raise ValueError("method='voronoi' needs cell_centers [ncells, dim]")
            centers = np.asarray(cell_centers, float)
        else:
            # TRamWAy: initial centres on the regular grid sized by avg_location_count
            # over the locations' bounding box, then scipy k-means
            blo, bhi = locations.min(axis=0), locations.max(axis=0)
            n_cells = n_pts / float(avg)
            inc = math.exp(math.log(float(np.prod(bhi - blo)) / n_cells) / dim)
            if min_distance is not None:
                inc = max(inc, min_distance)
            counts = np.round((bhi - blo) / inc).astype(int)
            init = grid_tessellation(blo, bhi, np.maximum(counts, 1)).centers
            centers = kmeans_centers(locations, init)
        tess = voronoi_tessellation(centers, prune=prune,
                                    clip_to_hull=locations if clip_to_hull else None,
                                    method=method)
    else:
        raise ValueError(f"unknown tessellation method {method!r}; expected 'grid', "
                         "'hexagon', 'kmeans' or 'voronoi'")
    cell_index = tess.assign(origins)
    location_count = np.bincount(tess.assign(locations), minlength=tess.number_of_cells)
    if min_location_count:
        small = location_count < min_location_count
        occupied = location_count > 0
        dropped = small & occupied
        if dropped.any():
            lost = int(np.sum(small[cell_index]))
            warnings.warn(
                f"min_location_count={min_location_count}: {int(dropped.sum())} of "
                f"{int(occupied.sum())} occupied cells hold fewer locations and are left out "
                f"(with their {lost} of {cell_index.size} translocations); counts of those "
                f"cells: {_preview_counts(location_count[dropped])}", UserWarning, stacklevel=2)
        cell_index = np.where(small[cell_index], -1, cell_index)
    return Partition(tess, tr.reset_index(drop=True), cell_index, location_count)


def _preview_counts(counts, k: int = 10) -> str:
    counts = [int(c) for c in counts]
    return ", ".join(map(str, counts[:k])) + (", ..." if len(counts) > k else "")
