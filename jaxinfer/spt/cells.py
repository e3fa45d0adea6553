"""The :class:`Cells` pytree: translocations grouped by cell, padded to static shapes.

Built once at the edge (numpy) by :func:`distributed` (TRamWAy's
``tramway.inference.distributed``) from a :class:`~jaxinfer.spt.tessellation.Partition`, or by
:func:`cells_from_arrays` from raw arrays. Everything downstream (posteriors, gradients,
solvers) is pure JAX over these arrays, so a problem compiles once per (ncells, max_count).
"""

from __future__ import annotations

from typing import Optional, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Cells", "DurationGroups", "distributed", "cells_from_arrays", "space_time_cells",
           "time_variation_stencil"]


def host_array(a, dtype=None):
    """A host (numpy) array as a jax Array. ``jnp.asarray`` of a numpy array compiles and
    runs one small XLA program per shape and dtype (``jit(stage)``, ~0.02 CPU-s each, a dozen
    in a first ``infer`` call); ``device_put`` copies without one."""
    return jax.device_put(np.asarray(a) if dtype is None else np.asarray(a, dtype))


def _host_or_traced(*arrays):
    """``(xp, arrays)``: numpy and the arrays as numpy arrays when all are concrete (host-side
    set-up: no XLA program per eager op, which cost ~1 CPU-s of a first ``infer`` call),
    else jax.numpy and the arrays unchanged (inside a trace)."""
    if any(isinstance(a, jax.core.Tracer) for a in arrays):
        return jnp, arrays
    return np, tuple(np.asarray(a) for a in arrays)


class DurationGroups(eqx.Module):
    """Each cell's translocations grouped by their duration: the sufficient statistics
    of the likelihood of a displacement ``dr_k ~ N(dt_k v_i, 2 (D_i dt_k + sigma2) I)``.

    Durations equal to a relative :data:`DURATION_RTOL` (the rounding of ``t_{k+1} - t_k``)
    share a group, so with one frame interval a cell holds one group per multiple of the
    interval and the smooth posteriors cost O(ncells x groups) instead of
    O(ncells x max_count).

    dt : [ncells, G] durations (s; the group's mean; 1 on padded slots); count : [ncells, G] translocations per
    group (0 on padded slots); sum_dr : [ncells, G, dim] sum of the displacements (µm);
    sum_dr2 : [ncells, G] sum of their squared norms (µm²).
    """

    dt: jnp.ndarray
    count: jnp.ndarray
    sum_dr: jnp.ndarray
    sum_dr2: jnp.ndarray

    @classmethod
    def of_padded(cls, dr, dt, mask) -> "DurationGroups":
        """One group per translocation slot (traceable; for cells built without groups)."""
        dr = jnp.where(mask[..., None], dr, 0.0)
        return cls(jnp.where(mask, dt, 1.0), mask.astype(dr.dtype), dr,
                   jnp.sum(dr * dr, axis=-1))

    def __getitem__(self, rows) -> "DurationGroups":
        return DurationGroups(self.dt[rows], self.count[rows], self.sum_dr[rows],
                              self.sum_dr2[rows])


#: durations within this relative width share a group: the rounding of t_{k+1} - t_k spreads
#: one frame interval over a few ulps of the time stamps (relative ~1e-15 - 1e-12), and each
#: such value made a group of its own (6 per cell on the benchmark data, all of them 0.05 s
#: to 4e-15). A group's duration is its exact mean, so every translocation's term moves by at
#: most ~1e-10 of itself: the objective by <= ~1e-10 relative, far below any solver tolerance.
DURATION_RTOL = 1e-10


def _duration_groups(cell_pos, dr, dt, m, dtype) -> DurationGroups:
    """Group translocations (cell position ``cell_pos`` [n], ``dr`` [n, dim], ``dt`` [n]) by
    cell and duration (equal to :data:`DURATION_RTOL`: bins of that relative width in
    log dt); numpy, float64 sums."""
    dt_bin = np.floor(np.log(dt) / DURATION_RTOL).astype(np.int64)
    order = np.lexsort((dt_bin, cell_pos))
    c, b, t, d = cell_pos[order], dt_bin[order], dt[order], dr[order]
    new_cell = np.r_[True, c[1:] != c[:-1]]
    new_group = new_cell | np.r_[True, b[1:] != b[:-1]]
    gid = np.cumsum(new_group) - 1
    slot = gid - np.maximum.accumulate(np.where(new_cell, gid, 0))
    G = int(slot.max()) + 1
    flat = c * G + slot
    dim = dr.shape[1]
    count = np.bincount(flat, minlength=m * G).reshape(m, G).astype(float)
    sum_dr = np.stack([np.bincount(flat, d[:, k], minlength=m * G) for k in range(dim)],
                      axis=-1).reshape(m, G, dim)
    sum_dr2 = np.bincount(flat, np.sum(d * d, axis=1), minlength=m * G).reshape(m, G)
    sum_dt = np.bincount(flat, t, minlength=m * G)
    gdt = np.where(count.ravel() > 0, sum_dt / np.maximum(count.ravel(), 1), 1.0)
    f = lambda a: host_array(a, dtype)  # noqa: E731
    return DurationGroups(f(gdt.reshape(m, G)), f(count), f(sum_dr), f(sum_dr2))


class Cells(eqx.Module):
    """Translocations per cell (padded) and the cell geometry.

    Attributes
    ----------
    dr : [ncells, max_count, dim]  displacements (length units); 0 on padded slots
    dt : [ncells, max_count]  durations (time units); 1 on padded slots
    mask : [ncells, max_count] bool, True for real translocations
    counts : [ncells] int, number of translocations per cell
    centers : [ncells, dim] cell centres
    volumes : [ncells] cell areas (2D) / volumes (3D)
    neighbours : [ncells, max_degree] int, padded with the cell's own position
    neighbour_mask : [ncells, max_degree] bool
    cell_ids : [ncells] int, cell labels in the tessellation (the maps' index)
    time_neighbours, time_neighbour_mask : [ncells, T] (space-time cells only, else None):
        the same spatial cell in the adjacent time windows
    time_centers : [ncells] window mid-times (space-time cells only, else None)
    groups : :class:`DurationGroups` of the translocations (None: one group per slot, see
        :attr:`duration_groups`)
    """

    dr: jnp.ndarray
    dt: jnp.ndarray
    mask: jnp.ndarray
    counts: jnp.ndarray
    centers: jnp.ndarray
    volumes: jnp.ndarray
    neighbours: jnp.ndarray
    neighbour_mask: jnp.ndarray
    cell_ids: jnp.ndarray
    time_neighbours: Optional[jnp.ndarray] = None
    time_neighbour_mask: Optional[jnp.ndarray] = None
    time_centers: Optional[jnp.ndarray] = None
    groups: Optional[DurationGroups] = None

    @property
    def duration_groups(self) -> DurationGroups:
        """The likelihood's sufficient statistics: :attr:`groups`, or one group per padded
        slot when the cells were built without them (e.g. resampled in JAX)."""
        if self.groups is not None:
            return self.groups
        return DurationGroups.of_padded(self.dr, self.dt, self.mask)

    @property
    def ncells(self) -> int:
        return int(self.dt.shape[0])

    @property
    def dim(self) -> int:
        return int(self.dr.shape[-1])

    @property
    def dt_mean(self):
        """[ncells] mean translocation duration per cell."""
        xp, (dt, mask, counts) = _host_or_traced(self.dt, self.mask, self.counts)
        return (xp.sum(xp.where(mask, dt, 0.0), axis=1) / counts).astype(dt.dtype)

    @property
    def dt_max(self):
        """[ncells] longest translocation duration per cell."""
        xp, (dt, mask) = _host_or_traced(self.dt, self.mask)
        return xp.max(xp.where(mask, dt, -xp.inf), axis=1)

    @property
    def degree(self):
        xp, (nm,) = _host_or_traced(self.neighbour_mask)
        return xp.sum(nm, axis=1)

    def neighbour_lists(self) -> list:
        """Neighbours of each cell as a list of int arrays (positions, not labels)."""
        nb = np.asarray(self.neighbours)
        nm = np.asarray(self.neighbour_mask)
        return [nb[i][nm[i]] for i in range(nb.shape[0])]

    def initial_diffusivity(self):
        """TRamWAy's start: mean(dr**2 over all components) / (2 * mean dt) per cell."""
        xp, (dr, mask, counts) = _host_or_traced(self.dr, self.mask, self.counts)
        dr2 = xp.sum(xp.where(mask[..., None], dr * dr, 0.0), axis=(1, 2))
        return (dr2 / (counts * self.dim) / (2.0 * self.dt_mean)).astype(dr.dtype)

    def subset(self, keep) -> "Cells":
        """Cells at positions where ``keep`` ([ncells] bool) is True; neighbour lists are
        restricted to the kept cells (TRamWAy's ``index`` / ``reverse_index`` logic)."""
        keep = np.asarray(keep, dtype=bool)
        pos = np.full(keep.shape[0], -1)
        pos[keep] = np.arange(int(keep.sum()))
        lists = [pos[n] for n, k in zip(self.neighbour_lists(), keep) if k]
        lists = [n[n >= 0] for n in lists]
        nb, nm = _pad_neighbours(lists)
        sel = np.nonzero(keep)[0]
        tn = tm = tc = None
        if self.time_neighbours is not None:
            tl = [pos[n] for n, k in zip(self.time_neighbour_lists(), keep) if k]
            tn, tm = _pad_neighbours([n[n >= 0] for n in tl])
            tn, tm, tc = host_array(tn), host_array(tm), self.time_centers[sel]
        take = lambda a: host_array(np.asarray(a)[sel])  # noqa: E731  (host gathers)
        groups = None if self.groups is None else jax.tree_util.tree_map(take, self.groups)
        return Cells(take(self.dr), take(self.dt), take(self.mask), take(self.counts),
                     take(self.centers), take(self.volumes), host_array(nb), host_array(nm),
                     take(self.cell_ids), tn, tm, tc, groups)

    def time_neighbour_lists(self) -> list:
        """Time neighbours of each cell (positions), space-time cells only."""
        if self.time_neighbours is None:
            raise ValueError("these cells have no time structure (see space_time_cells)")
        nb = np.asarray(self.time_neighbours)
        nm = np.asarray(self.time_neighbour_mask)
        return [nb[i][nm[i]] for i in range(nb.shape[0])]

    def with_neighbours_only(self) -> "Cells":
        """Drop cells without any (non-empty) neighbour, as TRamWAy's smooth modes do."""
        return self.subset(np.asarray(self.degree) > 0)


def _pad_neighbours(lists):
    m = len(lists)
    B = max([len(n) for n in lists] + [1])
    nb = np.tile(np.arange(m)[:, None], (1, B))
    nm = np.zeros((m, B), dtype=bool)
    for i, n in enumerate(lists):
        nb[i, :len(n)] = n
        nm[i, :len(n)] = True
    return nb, nm


def cells_from_arrays(cell_index, dr, dt, centers, volumes, adjacency: Sequence,
                      cell_ids: Optional[Sequence[int]] = None, dtype=None) -> Cells:
    """Group translocations by cell.

    Parameters
    ----------
    cell_index : [ntranslocations] int, cell label of each translocation (negative: unused)
    dr : [ntranslocations, dim] displacements
    dt : [ntranslocations] durations (> 0)
    centers : [nlabels, dim] centres of all cells of the tessellation
    volumes : [nlabels] areas/volumes of all cells
    adjacency : sequence of int arrays, neighbours (labels) of every label
    cell_ids : labels to keep, in this order (default: every label with >= 1 translocation)
    dtype : float dtype of the arrays (default: jnp float default)

    Cells without translocations are dropped and removed from the neighbour lists
    (TRamWAy's ``distributed`` + ``simplified_adjacency``).
    """
    cell_index = np.asarray(cell_index).astype(np.int64)
    dr = np.asarray(dr, dtype=float)
    dt = np.asarray(dt, dtype=float)
    if dr.ndim != 2 or dr.shape[0] != cell_index.shape[0] or dt.shape != cell_index.shape:
        raise ValueError(f"inconsistent shapes: cell_index {cell_index.shape}, dr {dr.shape}, "
                         f"dt {dt.shape}; expected [n], [n, dim], [n]")
    if not np.all(np.isfinite(dr)) or not np.all(np.isfinite(dt)):
        raise ValueError("dr and dt must be finite")
    if np.any(dt <= 0):
        raise ValueError("translocation durations dt must be > 0")
    centers = np.asarray(centers, dtype=float)
    volumes = np.asarray(volumes, dtype=float)
    nlabels = centers.shape[0]
    valid = cell_index >= 0
    counts_all = np.bincount(cell_index[valid], minlength=nlabels)
    if cell_ids is None:
        cell_ids = np.nonzero(counts_all > 0)[0]
    cell_ids = np.asarray(cell_ids, dtype=np.int64)
    if cell_ids.size == 0:
        raise ValueError("no cell holds any translocation")
    if np.any(counts_all[cell_ids] == 0):
        raise ValueError("cell_ids contains cells without translocations")
    pos = np.full(nlabels, -1)
    pos[cell_ids] = np.arange(cell_ids.size)
    m = cell_ids.size
    counts = counts_all[cell_ids]
    K = int(counts.max())
    dim = dr.shape[1]
    DR = np.zeros((m, K, dim))
    DT = np.ones((m, K))
    MASK = np.zeros((m, K), dtype=bool)
    p = pos[np.where(valid, cell_index, 0)]
    use = valid & (p >= 0)
    order = np.argsort(p[use], kind="stable")
    rows = np.nonzero(use)[0][order]
    cp = p[rows]
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    slot = np.arange(rows.size) - starts[cp]
    DR[cp, slot] = dr[rows]
    DT[cp, slot] = dt[rows]
    MASK[cp, slot] = True
    lists = []
    for c in cell_ids:
        n = pos[np.asarray(adjacency[c], dtype=np.int64)]
        lists.append(np.unique(n[n >= 0]))
    nb, nm = _pad_neighbours(lists)
    f = lambda a: host_array(a, dtype)  # noqa: E731
    groups = _duration_groups(cp, dr[rows], dt[rows], m, dtype)
    return Cells(f(DR), f(DT), host_array(MASK), host_array(counts), f(centers[cell_ids]),
                 f(volumes[cell_ids]), host_array(nb), host_array(nm), host_array(cell_ids),
                 groups=groups)


def distributed(partition, dtype=None) -> Cells:
    """Cells of a :class:`~jaxinfer.spt.tessellation.Partition` (``tramway.inference.distributed``).

    Translocations go to the cell of their origin; cells without translocations are dropped
    (and disconnected); cells with translocations but no non-empty neighbour are kept here and
    dropped by the smooth modes (:meth:`Cells.with_neighbours_only`)."""
    tr = partition.translocations
    cols = partition.space_cols
    dr = tr[["d" + c for c in cols]].to_numpy(float)
    dt = tr["dt"].to_numpy(float)
    tess = partition.tessellation
    return cells_from_arrays(partition.cell_index, dr, dt, tess.centers, tess.volumes,
                             tess.adjacency, dtype=dtype)


def space_time_cells(partition, window_duration: float, window_shift: Optional[float] = None,
                     dtype=None) -> Cells:
    """Space-time cells: every spatial cell of ``partition`` split into time windows.

    Window w covers [t0 + w*shift, t0 + w*shift + duration) with t0 the earliest origin time
    (``shift`` defaults to ``duration``: non-overlapping windows; with overlap a translocation
    belongs to every window containing its origin time, as TRamWAy's sliding window). Space
    neighbours are the spatial neighbours within the same window; time neighbours the same
    spatial cell in windows w-1 and w+1 (TRamWAy's ``DynamicCells``); ``time_centers`` are
    the window mid-times. Labels: ``w * nspace + space_label``.
    """
    if not window_duration > 0:
        raise ValueError(f"window_duration must be > 0, got {window_duration}")
    shift = window_duration if window_shift is None else float(window_shift)
    if not shift > 0:
        raise ValueError(f"window_shift must be > 0, got {window_shift}")
    tr = partition.translocations
    cols = partition.space_cols
    t = tr["t"].to_numpy(float)
    t0 = t.min()
    nwin = int(np.floor((t.max() - t0) / shift)) + 1
    tess = partition.tessellation
    ns = tess.number_of_cells
    rows, labels = [], []
    for w in range(nwin):
        lo = t0 + w * shift
        inside = (t >= lo) & (t < lo + window_duration) & (partition.cell_index >= 0)
        idx = np.nonzero(inside)[0]
        rows.append(idx)
        labels.append(w * ns + partition.cell_index[idx])
    rows = np.concatenate(rows)
    labels = np.concatenate(labels)
    dr = tr[["d" + c for c in cols]].to_numpy(float)[rows]
    dt = tr["dt"].to_numpy(float)[rows]
    centers = np.tile(tess.centers, (nwin, 1))
    volumes = np.tile(tess.volumes, nwin)
    adjacency = [w * ns + np.asarray(tess.adjacency[c]) for w in range(nwin) for c in range(ns)]
    cells = cells_from_arrays(labels, dr, dt, centers, volumes, adjacency, dtype=dtype)
    ids = np.asarray(cells.cell_ids)
    pos = {int(c): k for k, c in enumerate(ids)}
    tlists = []
    for c in ids:
        w, s = divmod(int(c), ns)
        tlists.append(np.array([pos[q] for q in ((w - 1) * ns + s, (w + 1) * ns + s) if q in pos],
                               dtype=np.int64))
    tn, tm = _pad_neighbours(tlists)
    tc = t0 + (ids // ns) * shift + window_duration / 2
    f = lambda a: host_array(a, dtype)  # noqa: E731
    return dataclasses_replace(cells, time_neighbours=host_array(tn),
                               time_neighbour_mask=host_array(tm), time_centers=f(tc))


def dataclasses_replace(cells: Cells, **changes) -> Cells:
    fields = dict(dr=cells.dr, dt=cells.dt, mask=cells.mask, counts=cells.counts,
                  centers=cells.centers, volumes=cells.volumes, neighbours=cells.neighbours,
                  neighbour_mask=cells.neighbour_mask, cell_ids=cells.cell_ids,
                  time_neighbours=cells.time_neighbours,
                  time_neighbour_mask=cells.time_neighbour_mask, time_centers=cells.time_centers,
                  groups=cells.groups)
    fields.update(changes)
    return Cells(**fields)


def time_variation_stencil(cells: Cells):
    """TRamWAy's ``DynamicCells.time_variation``: per cell [(X_i - mean X_before) / (t_i -
    mean t_before), (X_i - mean X_after) / (t_i - mean t_after)], 0 for a missing side."""
    from jaxinfer.spt.gradient import Stencil

    tc = np.asarray(cells.time_centers, dtype=float)
    lists = cells.time_neighbour_lists()
    nb, nm = _pad_neighbours(lists)
    m, B = nb.shape
    sw = np.zeros((m, 2))
    nw = np.zeros((m, 2, B))
    defined = np.zeros((m, 2), dtype=bool)
    for i, n in enumerate(lists):
        tt = tc[n]
        for s, side in enumerate((tt < tc[i], tt > tc[i])):
            if side.any():
                inv = 1.0 / (tc[i] - tt[side].mean())
                sw[i, s] = inv
                nw[i, s, :len(n)][side] = -inv / side.sum()
                defined[i, s] = True
    return Stencil(host_array(sw), host_array(nw), host_array(nb, np.int32), host_array(defined))
