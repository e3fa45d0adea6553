"""Tessellations and cell building against TRamWAy 0.7's partitions (fixtures) and geometry."""

import numpy as np
import pandas as pd
import pytest

from jaxinfer.spt.cells import cells_from_arrays, distributed
from jaxinfer.spt.tessellation import (grid_tessellation, hexagon_tessellation, tessellate,
                                       voronoi_tessellation)

from ._core_fixtures import load, trajectories

KWARGS = {
    "grid6": dict(method="grid", count_per_dim=[6, 6], lower_bound=[-1.2, -1.2],
                  upper_bound=[1.2, 1.2]),
    "kmeans": dict(method="kmeans", avg_location_count=150),
}


@pytest.fixture(scope="module", params=sorted(KWARGS))
def case(request):
    f = load(request.param)
    part = tessellate(trajectories(f), **KWARGS[request.param])
    return f, part


def test_partition_matches_tramway(case):
    f, part = case
    tess = part.tessellation
    np.testing.assert_allclose(tess.centers, f["centers"], rtol=1e-12, atol=1e-12)
    locations = np.c_[f["x"], f["y"]]
    np.testing.assert_array_equal(tess.assign(locations), f["point_cell"])
    cells = distributed(part)
    np.testing.assert_array_equal(np.asarray(cells.cell_ids), f["distributed_ids"])
    np.testing.assert_allclose(cells.volumes, f["volumes"], rtol=1e-12)
    counts = np.bincount(np.searchsorted(f["distributed_ids"], f["cell_id"]))
    np.testing.assert_array_equal(np.asarray(cells.counts), counts)
    ip, ix = f["adj_indptr"], f["adj_indices"]
    ids = f["distributed_ids"]
    for k, c in enumerate(ids):
        ours = np.sort(ids[cells.neighbour_lists()[k]])
        np.testing.assert_array_equal(ours, np.sort(ix[ip[c]:ip[c + 1]]))
    # the per-cell translocations are TRamWAy's (same multiset of squared lengths per cell)
    dr2 = np.sum(np.asarray(cells.dr) ** 2, axis=-1)
    for k, c in enumerate(ids[:5]):
        ours = np.sort(dr2[k][np.asarray(cells.mask[k])])
        ref = np.sort(np.sum(f["dr"][f["cell_id"] == c] ** 2, axis=1))
        np.testing.assert_allclose(ours, ref, rtol=1e-12)


def test_grid_geometry_2d_3d():
    t = grid_tessellation([0, 0], [2, 1], [4, 2])
    np.testing.assert_allclose(t.volumes, 0.25)
    np.testing.assert_allclose(t.centers[:3], [[0.25, 0.25], [0.25, 0.75], [0.75, 0.25]])
    assert [len(a) for a in t.adjacency] == [3, 3, 5, 5, 5, 5, 3, 3]  # 8-connected
    t3 = grid_tessellation([0, 0, 0], [1, 1, 1], [3, 3, 3])
    np.testing.assert_allclose(t3.volumes.sum(), 1.0)
    assert len(t3.adjacency[13]) == 18  # faces + edges, no corners (TRamWAy's diagonal_adjacency)
    with pytest.raises(ValueError, match="count_per_dim"):
        grid_tessellation([0, 0], [1, 1], [0, 2])


def test_hexagons_tile_the_plane():
    side = 0.2
    t = hexagon_tessellation([0, 0], [2, 2], side)
    np.testing.assert_allclose(t.volumes, 1.5 * np.sqrt(3) * side ** 2)
    for i, nb in enumerate(t.adjacency):
        d = np.linalg.norm(t.centers[nb] - t.centers[i], axis=1)
        np.testing.assert_allclose(d, np.sqrt(3) * side, rtol=1e-12)
    assert max(len(a) for a in t.adjacency) == 6
    # nearest-centre cells are the hexagons: a point at distance < side*sqrt(3)/2 from a centre
    # belongs to it
    rng = np.random.default_rng(0)
    k = rng.integers(len(t.centers), size=200)
    ang = rng.uniform(0, 2 * np.pi, 200)
    rad = rng.uniform(0, side * np.sqrt(3) / 2 * 0.999, 200)
    p = t.centers[k] + np.c_[rad * np.cos(ang), rad * np.sin(ang)]
    np.testing.assert_array_equal(t.assign(p), k)


def test_voronoi_clipped_areas_sum_to_hull():
    from scipy.spatial import ConvexHull

    rng = np.random.default_rng(1)
    pts = rng.uniform(-1, 1, size=(400, 2))
    centers = rng.uniform(-0.8, 0.8, size=(15, 2))
    raw = voronoi_tessellation(centers)
    clipped = voronoi_tessellation(centers, clip_to_hull=pts)
    assert clipped.volumes.sum() == pytest.approx(ConvexHull(pts).volume, rel=1e-9)
    assert np.nansum(raw.volumes) > clipped.volumes.sum()  # border cells are huge unclipped


def test_min_location_count_and_translocation_input():
    rng = np.random.default_rng(2)
    n = 300
    tr = pd.DataFrame(dict(n=np.arange(n), x=rng.uniform(0, 1, n) ** 3, y=rng.uniform(0, 1, n),
                           t=np.zeros(n), dx=rng.normal(0, .05, n), dy=rng.normal(0, .05, n),
                           dt=np.full(n, 0.1)))
    with pytest.warns(UserWarning, match="min_location_count=40: 2 of 4 occupied cells"):
        part = tessellate(tr, "grid", count_per_dim=[4, 1], lower_bound=[0, 0],
                          upper_bound=[1, 1], min_location_count=40)
    counts = part.location_count
    small = counts < 40
    assert small.any() and not small.all()
    assert np.all(part.cell_index[small[np.maximum(part.cell_index, 0)]] == -1)
    cells = distributed(part)
    np.testing.assert_array_equal(np.asarray(cells.cell_ids), np.nonzero(~small)[0])
    # empty cells are removed from neighbour lists, and neighbourless cells from smooth sets
    c = cells_from_arrays(np.array([0, 0, 2]), np.zeros((3, 2)) + .1, np.ones(3),
                          np.array([[0., 0], [1, 0], [2, 0]]), np.ones(3),
                          [np.array([1]), np.array([0, 2]), np.array([1])])
    assert c.ncells == 2 and c.neighbour_lists()[0].size == 0
    assert c.with_neighbours_only().ncells == 0
    with pytest.raises(ValueError, match="dt"):
        cells_from_arrays(np.array([0]), np.zeros((1, 2)), np.array([-1.0]), np.zeros((1, 2)),
                          np.ones(1), [np.array([], int)])
    with pytest.raises(ValueError, match="unknown tessellation method"):
        tessellate(tr, "gwr")
    with pytest.raises(TypeError):
        tessellate(np.zeros((3, 3)))
