"""``jaxinfer spt infer`` end to end on a tiny file, the demo, and the plot helpers."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest

from jaxinfer import cli as top_cli
from jaxinfer.spt import cli, plot
from jaxinfer.spt import simulate as sim

SIGMA = 0.02
DT = 0.05


@pytest.fixture(scope="module")
def trajectory_file(tmp_path_factory):
    """Free diffusion D = 0.1 in [0, 1]², 600 short trajectories, TRamWAy headerless layout."""
    df = sim.simulate_trajectories(jax.random.PRNGKey(5), 0.1, n_trajectories=600,
                                   mean_length=8, dt=DT, sigma=SIGMA, lower_bound=(-0.5, -0.5),
                                   upper_bound=(1.5, 1.5))
    df = sim.crop_to_window(df, (0, 0), (1, 1))
    path = tmp_path_factory.mktemp("spt") / "tiny.txt"
    df.to_csv(path, sep="\t", header=False, index=False)
    return str(path), df


def test_infer_d_mode_end_to_end(trajectory_file, tmp_path, capsys):
    path, df = trajectory_file
    out, png, summary = tmp_path / "maps.csv", tmp_path / "maps.png", tmp_path / "run.json"
    code = top_cli.main(["spt", "infer", path, "--tessellation", "grid", "--cells", "16",
                         "--lower-bound", "0", "0", "--upper-bound", "1", "1", "--mode", "d",
                         "--sigma", str(SIGMA), "--out", str(out), "--plot", str(png),
                         "--summary-json", str(summary)])
    assert code == 0
    err = capsys.readouterr().err
    assert "16 cells" in err and "maps written" in err
    maps = pd.read_csv(out)
    assert list(maps.columns[:4]) == ["cell", "center x", "center y", "translocations"]
    assert len(maps) == 16
    # per-cell D without prior, constant dt: closed form D = mean|dr|²/(4 dt) - sigma²/dt
    tr = df.copy()
    same = tr["n"].to_numpy()[1:] == tr["n"].to_numpy()[:-1]
    x0 = tr[["x", "y"]].to_numpy()[:-1][same]
    dr = np.diff(tr[["x", "y"]].to_numpy(), axis=0)[same]
    cell = np.minimum((x0[:, 0] * 4).astype(int), 3) * 4 + np.minimum((x0[:, 1] * 4).astype(int), 3)
    for _, row in maps.iterrows():
        k = cell == row["cell"]
        assert k.sum() == row["translocations"]
        expected = np.mean(np.sum(dr[k] ** 2, axis=1)) / (4 * DT) - SIGMA**2 / DT
        assert row["diffusivity"] == pytest.approx(expected, rel=1e-5)
        assert abs(row["center x"] - (row["cell"] // 4 + 0.5) / 4) < 1e-12
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    record = json.loads(summary.read_text())
    assert record["converged"] is True and record["cells"] == 16


def test_infer_dv_mode_with_priors_matches_library(trajectory_file, tmp_path, capsys):
    path, df = trajectory_file
    out, summary = tmp_path / "dv.csv", tmp_path / "dv.json"
    code = cli.main(["infer", path, "--cells", "16", "--mode", "dv", "--sigma", str(SIGMA),
                     "--diffusivity-prior", "10", "--potential-prior", "1", "--progress",
                     "--out", str(out), "--summary-json", str(summary)])
    assert code == 0
    # progress lines count up to the result's own iteration count, said once at the end
    nit = json.loads(summary.read_text())["nit"]
    err = capsys.readouterr().err
    seen = [int(line.split("iteration ")[1].split(",")[0].split(" ")[0])
            for line in err.splitlines() if "dv: iteration" in line]
    assert seen[0] == 1 and seen == sorted(seen) and seen[-1] == nit
    assert f"iteration {nit} (final)" in err and f"converged after {nit} iterations" in err
    maps = pd.read_csv(out)
    assert {"diffusivity", "potential", "force x", "force y"} <= set(maps.columns)
    from jaxinfer.spt.infer import infer
    from jaxinfer.spt.tessellation import tessellate
    from jaxinfer.spt.trajectories import load_trajectories

    part = tessellate(load_trajectories(path), "grid", count_per_dim=[4, 4])
    direct = infer(part, "dv", sigma=SIGMA, diffusivity_prior=10.0, potential_prior=1.0,
                   progress=lambda intermediate_result: None)  # the CLI's program
    np.testing.assert_allclose(maps["diffusivity"], direct.maps["diffusivity"], rtol=1e-6)
    np.testing.assert_allclose(maps["potential"], direct.maps["potential"], rtol=1e-6,
                               atol=1e-8)


def test_malformed_file_fails_clearly(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("1\t0.1\t0.2\t0.0\n1\t0.2\toops\t0.05\n1\t0.3\t0.3\t0.10\n")
    result = subprocess.run([sys.executable, "-m", "jaxinfer.cli", "spt", "infer", str(bad),
                             "--cells", "4"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "JAX_PLATFORMS": "cpu"})
    assert result.returncode != 0
    assert "error" in result.stderr and "'y'" in result.stderr and "non-numeric" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_file_and_bad_options(tmp_path, capsys):
    assert cli.main(["infer", str(tmp_path / "nope.txt")]) != 0
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["infer", "x.txt", "--mode", "nonsense"])
    with pytest.raises(SystemExit):
        cli.main(["infer", "x.txt", "--sigma", "-1"])


def test_demo_reports_accuracy():
    lines = []
    text = cli.demo(lines.append)
    assert "100 cells" in text and "converged" in text
    assert lines  # progress was reported
    rmse_d = float(text.split("RMSE vs truth: diffusivity ")[1].split(" ")[0])
    rmse_v = float(text.split("potential ")[-1].split(" ")[0])
    assert rmse_d < 0.03  # mean D is 0.2 µm²/s; the noise floor is ~0.015 with ~170 per cell
    assert rmse_v < 0.6   # the well is 2 kT deep


def test_cell_polygons_of_a_grid_are_its_squares():
    xs = (np.arange(5) + 0.5) / 5
    X, Y = np.meshgrid(xs, xs)
    centers = np.c_[X.ravel(), Y.ravel()]
    polygons = plot.cell_polygons(centers, (0, 0, 1, 1))

    def area(p):
        x, y = p[:, 0], p[:, 1]
        return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))

    np.testing.assert_allclose([area(p) for p in polygons], 0.04, rtol=1e-9)
    # Voronoi cells of random centres tile the box
    rng = np.random.default_rng(0)
    random_centers = rng.uniform(0, 1, (40, 2))
    total = sum(area(p) for p in plot.cell_polygons(random_centers, (0, 0, 1, 1)))
    assert total == pytest.approx(1.0, rel=1e-9)
    with pytest.raises(ValueError, match="no column"):
        plot.plot_map(pd.DataFrame({"a": np.ones(25)}), "diffusivity", centers)


def test_plot_units_arrow_key_and_grid_squares():
    pytest.importorskip("matplotlib")
    xs = (np.arange(3) + 0.5) / 3
    X, Y = np.meshgrid(xs, xs)
    centers = np.c_[X.ravel(), Y.ravel()][[0, 1, 2, 4, 8]]  # 4 of 9 grid cells empty
    table = pd.DataFrame({"potential": [0.0, 1, 2, 3, 4], "force x": [1.0, 2, 3, 8, 9],
                          "force y": [0.0, 0, 0, 0, 0]})
    squares = plot.grid_squares(centers, 1 / 3)
    np.testing.assert_allclose([np.ptp(s, axis=0) for s in squares], 1 / 3)  # the cells themselves
    fig = plot.plot_maps(table, centers, bounds=(0, 0, 1, 1), polygons=squares)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "x (µm)" and ax.get_ylabel() == "y (µm)"
    assert fig.axes[1].get_ylabel() == "$k_B T$"  # colour bar in math text
    keys = [t.get_text() for t in ax.texts] + [
        c.text.get_text() for c in ax.artists if hasattr(c, "text")]
    assert "2 $k_B T$/µm" in keys  # the 1-2-5 length at or below the median |F| = 3


def _area(p):
    x, y = p[:, 0], p[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def test_hexagon_and_kmeans_cells_are_drawn_as_themselves():
    from jaxinfer.spt.tessellation import hexagon_tessellation, voronoi_tessellation

    hexes = hexagon_tessellation((0, 0), (1, 1), side=0.1)
    ids = np.array([0, 3, 17, 40])
    polygons, bounds = plot.tessellation_polygons(hexes, ids)
    # each cell is the tessellation's hexagon: its area, its centre, six sides of 0.1
    np.testing.assert_allclose([_area(p) for p in polygons], hexes.volumes[ids], rtol=1e-12)
    np.testing.assert_allclose([p.mean(axis=0) for p in polygons], hexes.centers[ids], atol=1e-12)
    np.testing.assert_allclose(np.hypot(*np.diff(np.r_[polygons[0], polygons[0][:1]], axis=0).T),
                               0.1, rtol=1e-12)
    assert bounds[0] <= np.min(np.concatenate(polygons)[:, 0])
    # k-means / Voronoi: a cell next to empty cells keeps its own Voronoi cell among ALL the
    # centres; the Voronoi polygons of the occupied centres alone would cover the empty ones
    rng = np.random.default_rng(1)
    vor = voronoi_tessellation(rng.uniform(0, 1, (30, 2)))
    box = (0, 0, 1, 1)
    occupied = np.arange(0, 30, 3)
    polygons, _ = plot.tessellation_polygons(vor, occupied, box)
    own = plot.cell_polygons(vor.centers, box)
    np.testing.assert_allclose([_area(p) for p in polygons], [_area(own[i]) for i in occupied],
                               rtol=1e-12)
    spread = plot.cell_polygons(vor.centers[occupied], box)
    assert sum(_area(p) for p in polygons) < 0.6 * sum(_area(p) for p in spread)  # == 1


def test_plot_maps_of_a_partition_draws_its_cells():
    pytest.importorskip("matplotlib")
    from jaxinfer.spt.tessellation import tessellate

    df = pd.DataFrame(dict(n=np.repeat(np.arange(40), 3), t=np.tile([0.0, 0.05, 0.1], 40),
                           x=np.random.default_rng(2).uniform(0, 1, 120),
                           y=np.random.default_rng(3).uniform(0, 1, 120)))
    part = tessellate(df, "hexagon", avg_location_count=12, lower_bound=[0, 0],
                      upper_bound=[1, 1])
    ids = np.unique(part.cell_index[part.cell_index >= 0])[:5]
    table = pd.DataFrame({"diffusivity": np.arange(5.0)}, index=ids)
    fig = plot.plot_maps(table, part)
    drawn = fig.axes[0].collections[0].get_paths()
    side = part.tessellation.params["side"]
    np.testing.assert_allclose([_area(p.vertices[:6]) for p in drawn],
                               1.5 * np.sqrt(3) * side**2, rtol=1e-9)
