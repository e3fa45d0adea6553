"""Plots of inferred maps: cells coloured by value, forces as arrows.

matplotlib is imported lazily (``pip install jaxinfer[plot]``), so ``import jaxinfer.spt``
does not need it. Given the partition (or its tessellation) as ``cells``, every cell is drawn
as itself (:func:`tessellation_polygons`): a grid's squares, a hexagonal tessellation's
hexagons, and for k-means / Voronoi partitions the Voronoi cell of its centre among *all* the
tessellation's centres, clipped to the box; cells without data are left blank. Given only
centres, cells are the Voronoi polygons of those centres (:func:`cell_polygons`).

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot state, no GUI backend), so
the functions are safe in scripts, servers and tests.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

__all__ = ["cell_centers", "cell_polygons", "grid_squares", "hexagons", "tessellation_polygons",
           "plot_map", "plot_force", "plot_maps", "save_maps"]


def cell_centers(cells) -> np.ndarray:
    """Cell centres ``(n_cells, 2)`` from an array, a Cells-like object or a Maps-like object.

    Accepted: an array of shape ``(n_cells, 2)``; an object with a ``centers`` (or ``center``)
    attribute; an object with ``cells`` holding one of these; a DataFrame with columns
    ``center x`` and ``center y`` (or ``x`` and ``y``).
    """
    if isinstance(cells, pd.DataFrame):
        for cx, cy in (("center x", "center y"), ("x", "y")):
            if cx in cells.columns and cy in cells.columns:
                return cells[[cx, cy]].to_numpy(dtype=np.float64)
        raise ValueError(f"a DataFrame of cells needs columns 'center x', 'center y' (or 'x', "
                         f"'y'); found {list(cells.columns)}")
    for name in ("centers", "center", "cell_centers"):
        value = getattr(cells, name, None)
        if value is not None and not callable(value):
            return cell_centers(np.asarray(value))
    inner = getattr(cells, "cells", None)
    if inner is not None and inner is not cells:
        return cell_centers(inner)
    arr = np.asarray(cells, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"cell centres must have shape (n_cells, 2) (2D maps only), got "
                         f"{arr.shape}")
    return arr


def cell_polygons(centers: np.ndarray, bounds: Optional[Sequence[float]] = None) -> list:
    """Voronoi polygons of ``centers`` (n, 2), clipped to ``bounds = (xmin, ymin, xmax, ymax)``.

    The polygons are exact Voronoi cells: every centre is mirrored across the four sides of
    the box so that every region is bounded, then polygons are clipped to the box.
    Returns a list of ``(k_i, 2)`` vertex arrays, one per centre.
    """
    from scipy.spatial import Voronoi

    centers = np.asarray(centers, dtype=np.float64)
    if bounds is None:
        bounds = _default_bounds(centers)
    xmin, ymin, xmax, ymax = bounds
    if len(centers) == 1:
        return [np.array([[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax]])]
    mirrored = [centers,
                np.c_[2 * xmin - centers[:, 0], centers[:, 1]],
                np.c_[2 * xmax - centers[:, 0], centers[:, 1]],
                np.c_[centers[:, 0], 2 * ymin - centers[:, 1]],
                np.c_[centers[:, 0], 2 * ymax - centers[:, 1]]]
    vor = Voronoi(np.concatenate(mirrored))
    polygons = []
    for i in range(len(centers)):
        region = vor.regions[vor.point_region[i]]
        if -1 in region or not region:  # cannot happen with mirroring, except degenerate input
            polygons.append(np.empty((0, 2)))
            continue
        poly = vor.vertices[region]
        poly[:, 0] = np.clip(poly[:, 0], xmin, xmax)
        poly[:, 1] = np.clip(poly[:, 1], ymin, ymax)
        polygons.append(poly)
    return polygons


def grid_squares(centers: np.ndarray, step) -> list:
    """The cells of a regular grid as squares (rectangles) of side ``step`` (scalar or one
    per axis, µm) centred on ``centers`` (n, 2): each occupied cell drawn as itself, however
    many of its neighbours are empty (Voronoi polygons of the occupied centres would spread
    over the empty ones)."""
    centers = np.asarray(centers, dtype=np.float64)
    half = 0.5 * np.broadcast_to(np.asarray(step, dtype=np.float64), (2,))
    corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    return [c + corners for c in centers]


def hexagons(centers: np.ndarray, side: float) -> list:
    """Flat-topped regular hexagons of side ``side`` (µm) centred on ``centers`` (n, 2), the
    cells of :func:`jaxinfer.spt.tessellation.hexagon_tessellation`."""
    angles = np.deg2rad(np.arange(0, 360, 60))
    corners = float(side) * np.c_[np.cos(angles), np.sin(angles)]
    return [c + corners for c in np.asarray(centers, dtype=np.float64)]


def tessellation_polygons(tessellation, cell_ids, bounds: Optional[Sequence[float]] = None):
    """The outlines of cells ``cell_ids`` (labels) of a 2D tessellation, each drawn as itself.

    grid: its squares (rectangles of the grid step); hexagon: its hexagons; kmeans / voronoi:
    the Voronoi cell of the centre among all the tessellation's centres (empty cells
    included, so a cell never spreads over its empty neighbours), clipped to ``bounds``
    (default: the centres' box plus half a spacing). Returns ``(polygons, bounds)``:
    a list of (k, 2) vertex arrays and the (xmin, ymin, xmax, ymax) box they fill.
    """
    tess = getattr(tessellation, "tessellation", tessellation)
    if tess.dim != 2:
        raise ValueError(f"cell outlines are drawn for 2D tessellations only, got dim {tess.dim}")
    ids = np.asarray(cell_ids, dtype=np.int64)
    if ids.size and (ids.min() < 0 or ids.max() >= tess.number_of_cells):
        raise ValueError(f"cell labels must be in [0, {tess.number_of_cells}), got "
                         f"{ids.min()}..{ids.max()}")
    centers = tess.centers[ids]
    if tess.method == "grid":
        lo, hi = tess.params["lower_bound"], tess.params["upper_bound"]
        step = (hi - lo) / np.asarray(tess.params["count_per_dim"], float)
        polygons = grid_squares(centers, step)
        box = (lo[0], lo[1], hi[0], hi[1])
    elif tess.method == "hexagon":
        polygons = hexagons(centers, tess.params["side"])
        box = None
    else:
        box = bounds if bounds is not None else _default_bounds(tess.centers)
        polygons = [cell_polygons(tess.centers, box)[i] for i in ids]
    if bounds is None:
        if box is None:
            pts = np.concatenate(polygons) if polygons else np.zeros((1, 2))
            box = (*pts.min(axis=0), *pts.max(axis=0))
        bounds = box
    return polygons, tuple(float(b) for b in bounds)


def _tessellation_of(cells):
    """The Tessellation of a Partition / Tessellation, else None (centres given)."""
    tess = getattr(cells, "tessellation", cells)
    ok = hasattr(tess, "centers") and hasattr(tess, "method") and hasattr(tess, "params")
    return tess if ok else None


def _centers(maps, cells) -> np.ndarray:
    tess = _tessellation_of(cells)
    if tess is None:
        return cell_centers(cells)
    return tess.centers[_table(maps).index.to_numpy()]


def _geometry(maps, cells, bounds, polygons):
    """(centres, bounds, polygons) of the maps' cells: from the partition / tessellation when
    ``cells`` is one (the maps' index holds the cell labels), else from the centres."""
    tess = _tessellation_of(cells)
    centers = _centers(maps, cells)
    if tess is not None and polygons is None:
        polygons, bounds = tessellation_polygons(tess, _table(maps).index.to_numpy(), bounds)
    return centers, bounds if bounds is not None else _default_bounds(centers), polygons


def _default_bounds(centers):
    lo, hi = centers.min(axis=0), centers.max(axis=0)
    if len(centers) > 1:
        # half the typical spacing beyond the outermost centres
        from scipy.spatial import cKDTree

        d, _ = cKDTree(centers).query(centers, k=2)
        pad = 0.5 * float(np.median(d[:, 1]))
    else:
        pad = 0.5
    return (lo[0] - pad, lo[1] - pad, hi[0] + pad, hi[1] + pad)


def _values(maps, column):
    if isinstance(maps, pd.DataFrame):
        table = maps
    else:
        table = getattr(maps, "maps", None)
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"maps must be a DataFrame or have a .maps DataFrame, got "
                            f"{type(maps).__name__}")
    if column not in table.columns:
        raise ValueError(f"no column {column!r} in the maps; available: {list(table.columns)}")
    return table[column].to_numpy(dtype=np.float64)


def _table(maps):
    return maps if isinstance(maps, pd.DataFrame) else maps.maps


def plot_map(maps, column: str, cells, *, ax=None, bounds=None, cmap: str = "viridis",
             vmin=None, vmax=None, title: Optional[str] = None, colorbar: bool = True,
             unit: Optional[str] = None, polygons: Optional[list] = None):
    """Draw one scalar map: every cell's polygon filled with its value.

    Parameters
    ----------
    maps : DataFrame or Maps-like (``.maps``)
        One row per cell, in the order of ``cells``.
    column : str
        Column to draw, e.g. ``"diffusivity"`` or ``"potential"``.
    cells : Partition or Tessellation (the maps' index holds the cell labels: every cell is
        drawn as itself, :func:`tessellation_polygons`), or cell centres (n_cells, 2) /
        Cells-like (:func:`cell_centers`; cells drawn as the Voronoi polygons of the centres).
    ax : matplotlib Axes, optional
        Where to draw; a new figure is made otherwise.
    bounds : (xmin, ymin, xmax, ymax), optional
        Clipping box; default: the tessellation's box, or the centres' bounding box plus half
        a cell.
    cmap, vmin, vmax, title, colorbar, unit
        Usual matplotlib options; ``unit`` goes to the colour bar label.
    polygons : list of (k, 2) arrays, optional
        The cells' outlines (e.g. :func:`grid_squares` for a grid); default: Voronoi
        polygons of the centres (:func:`cell_polygons`). Cells not in ``maps`` (empty cells)
        are left blank; cells whose value is NaN are hatched grey.

    Returns
    -------
    matplotlib Axes
    """
    from matplotlib.collections import PolyCollection

    values = _values(maps, column)
    centers, bounds, polygons = _geometry(maps, cells, bounds, polygons)
    if len(values) != len(centers):
        raise ValueError(f"maps has {len(values)} rows but there are {len(centers)} cell "
                         f"centres: they must match")
    ax = ax if ax is not None else _new_axes()
    if polygons is None:
        polygons = cell_polygons(centers, bounds)
    elif len(polygons) != len(centers):
        raise ValueError(f"{len(polygons)} polygons for {len(centers)} cells: they must match")
    finite = np.isfinite(values)
    collection = PolyCollection([p for p, ok in zip(polygons, finite) if ok], cmap=cmap,
                                edgecolors="face", linewidths=0.2)
    collection.set_array(values[finite])
    collection.set_clim(vmin if vmin is not None else np.nanmin(values[finite]) if finite.any() else 0,
                        vmax if vmax is not None else np.nanmax(values[finite]) if finite.any() else 1)
    ax.add_collection(collection)
    if (~finite).any():
        missing = PolyCollection([p for p, ok in zip(polygons, finite) if not ok],
                                 facecolors="lightgrey", edgecolors="grey", hatch="//",
                                 linewidths=0.2)
        ax.add_collection(missing)
    ax.set_xlim(bounds[0], bounds[2])
    ax.set_ylim(bounds[1], bounds[3])
    ax.set_aspect("equal")
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_title(title if title is not None else column)
    if colorbar:
        bar = ax.figure.colorbar(collection, ax=ax, shrink=0.85)
        if unit:
            bar.set_label(unit)
    return ax


def plot_force(maps, cells, *, column: str = "force", ax=None, scale=None,
               color: str = "black", title: Optional[str] = None, key: bool = True):
    """Draw a vector map (``"force"`` or ``"drift"``) as arrows at the cell centres.

    ``maps`` must have ``"<column> x"`` and ``"<column> y"``. Cells with non-finite vectors
    are skipped. ``scale`` is matplotlib's quiver scale (default: automatic). ``key`` adds an
    arrow of a round length near the median with its value and unit (the scale key).
    """
    table = _table(maps)
    cols = [f"{column} x", f"{column} y"]
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"no column(s) {missing} in the maps; available: {list(table.columns)}")
    vectors = table[cols].to_numpy(dtype=np.float64)
    centers = _centers(maps, cells)
    if len(vectors) != len(centers):
        raise ValueError(f"maps has {len(vectors)} rows but there are {len(centers)} cell "
                         f"centres: they must match")
    ok = np.all(np.isfinite(vectors), axis=1)
    ax = ax if ax is not None else _new_axes()
    arrows = ax.quiver(centers[ok, 0], centers[ok, 1], vectors[ok, 0], vectors[ok, 1],
                       color=color, scale=scale, angles="xy", width=0.004)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    if key and ok.any():
        length = arrow_key_length(np.hypot(vectors[ok, 0], vectors[ok, 1]))
        # between the axes and its title (plot_maps pads the titles to make room)
        ax.quiverkey(arrows, 0.97, 1.025, length, f"{length:g} {_UNITS.get(column, '')}",
                     labelpos="W", coordinates="axes", color="black",
                     fontproperties={"size": "small"})
    ax.set_aspect("equal")
    if title is not None:
        ax.set_title(title)
    return ax


_UNITS = {"diffusivity": "µm²/s", "potential": "$k_B T$", "force": "$k_B T$/µm",
          "drift": "µm/s"}


def arrow_key_length(magnitudes) -> float:
    """A round length (1, 2 or 5 x 10^k) at or below the median of ``magnitudes`` (> 0)."""
    m = float(np.median(np.asarray(magnitudes, dtype=float)))
    if not np.isfinite(m) or m <= 0:
        return 1.0
    exponent = np.floor(np.log10(m))
    for mantissa in (5.0, 2.0, 1.0):
        if mantissa * 10 ** exponent <= m:
            return float(mantissa * 10 ** exponent)
    return float(10 ** exponent)


def plot_maps(maps, cells, *, features: Optional[Sequence[str]] = None, truth=None,
              bounds=None, figsize_per_panel=(4.2, 3.6), polygons: Optional[list] = None):
    """A figure with one panel per feature (and a second row with the truth if given).

    Scalar features (``diffusivity``, ``potential``, ...) are coloured cells; vector
    features (``force``, ``drift``) are arrows drawn over the potential panel when there is
    one, otherwise on their own panel. ``cells``: the partition (cells drawn as themselves)
    or the centres; ``polygons``: cell outlines (see :func:`plot_map`). ``truth`` rows are in
    the order of ``maps``. Returns a :class:`matplotlib.figure.Figure`.
    """
    from matplotlib.figure import Figure

    table = _table(maps)
    cells, bounds, polygons = _geometry(table, cells, bounds, polygons)
    if features is None:
        features = []
        for c in table.columns:
            name = c.split(" ")[0]
            if name not in features and name in ("diffusivity", "potential", "force", "drift"):
                features.append(name)
        if not features:
            features = [c for c in table.columns if np.issubdtype(table[c].dtype, np.number)][:3]
    scalar = [f for f in features if f in table.columns]
    vector = [f for f in features if f not in table.columns and f"{f} x" in table.columns]
    arrows_on = "potential" if "potential" in scalar else None
    panels = scalar + ([] if arrows_on else vector)
    rows = [("", table)] + ([("true ", _table(truth))] if truth is not None else [])
    fig = Figure(figsize=(figsize_per_panel[0] * len(panels), figsize_per_panel[1] * len(rows)),
                 layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), len(panels), squeeze=False))
    for r, (prefix, tab) in enumerate(rows):
        for c, feature in enumerate(panels):
            ax = axes[r, c]
            if feature in scalar:
                plot_map(tab, feature, cells, ax=ax, bounds=bounds, title=prefix + feature,
                         unit=_UNITS.get(feature), polygons=polygons,
                         cmap="viridis" if feature != "potential" else "magma")
                if feature == arrows_on and vector and f"{vector[0]} x" in tab.columns:
                    # one vector field over the potential: the force if inferred
                    plot_force(tab, cells, column=vector[0], ax=ax, color="white")
                    ax.set_title(prefix + feature + " + " + vector[0], pad=14)
            else:
                plot_force(tab, cells, column=feature, ax=ax)
                ax.set_title(prefix + feature, pad=14)
                ax.set_xlim(bounds[0], bounds[2])
                ax.set_ylim(bounds[1], bounds[3])
    return fig


def save_maps(path: str, maps, cells, *, dpi: int = 120, **kwargs) -> str:
    """Draw :func:`plot_maps` and save it (PNG, PDF or SVG from the extension); returns path."""
    fig = plot_maps(maps, cells, **kwargs)
    fig.savefig(path, dpi=dpi)
    return path


def _new_axes():
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 4), layout="constrained")
    return fig.add_subplot()
