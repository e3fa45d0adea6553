"""Bad input refused at the edge (value and what was expected), sparse data warned or
refused, string / categorical trajectory ids, trackpy-style frames; the registry of modes
drives infer, sampling and the CLI."""

import jax
import numpy as np
import pandas as pd
import pytest

from jaxinfer.spt import cli, modes, sampling
from jaxinfer.spt.cells import cells_from_arrays
from jaxinfer.spt.infer import SparseCellsWarning, infer
from jaxinfer.spt.tessellation import tessellate
from jaxinfer.spt.trajectories import load_trajectories, translocations


def _walks(n_traj=10, length=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for n in range(n_traj):
        p = rng.uniform(0, 1, 2)
        for k in range(length + (n == 0)):
            rows.append([n, *p, k * 0.05])
            p = p + rng.normal(0, 0.05, 2)
    return pd.DataFrame(rows, columns=["n", "x", "y", "t"])


@pytest.fixture(scope="module")
def three_cells():
    """Three cells on a line, 30 / 50 / 80 translocations, dt = 0.05 s."""
    rng = np.random.default_rng(0)
    n = np.array([30, 50, 80])
    cid = np.repeat([0, 1, 2], n)
    dr = rng.normal(scale=0.1, size=(n.sum(), 2))
    return cells_from_arrays(cid, dr, np.full(n.sum(), 0.05), np.array([[0., 0], [1, 0], [2, 0]]),
                             np.ones(3), [np.array([1]), np.array([0, 2]), np.array([1])])


@pytest.mark.parametrize("kwargs, match", [
    (dict(sigma=-0.02), r"sigma .* >= 0, got -0.02"),
    (dict(sigma=float("nan")), r"sigma .* got nan"),
    (dict(sigma2=-1e-4), r"sigma2 .* got -0.0001"),
    (dict(diffusivity_prior=-1.0), r"diffusivity_prior must be a finite number >= 0, got -1.0"),
    (dict(potential_prior=float("inf")), r"potential_prior .* got inf"),
    (dict(force_prior=float("nan")), r"force_prior .* got nan"),
    (dict(rgrad="laplace"), r"unknown rgrad 'laplace'"),
    (dict(max_iter=0), r"max_iter must be a positive integer"),
])
def test_bad_values_are_refused_before_any_work(three_cells, kwargs, match):
    with pytest.raises(ValueError, match=match):
        infer(three_cells, "dv", **kwargs)


def test_sampling_refuses_negative_sigma_and_priors(three_cells):
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"sigma .* got -0.1"):
        sampling.sample(three_cells, "d", key=key, sigma=-0.1)
    with pytest.raises(ValueError, match=r"diffusivity_prior .* got -2.0"):
        sampling.sample(three_cells, "d", key=key, diffusivity_prior=-2.0)


def test_more_cells_than_data_is_refused_not_converged():
    part = tessellate(_walks(), "grid", count_per_dim=[100, 100])  # 51 points, 41 jumps
    occupied = int(np.sum(np.bincount(part.cell_index[part.cell_index >= 0]) > 0))
    for mode, priors in (("d", {}), ("dv", dict(diffusivity_prior=1.0, potential_prior=1.0))):
        with pytest.raises(ValueError, match=rf"41 translocations in {occupied} occupied cells"
                                             r".*--cells"):
            infer(part, mode, sigma=0.02, **priors)


def test_single_translocation_cells_warn_with_counts():
    rng = np.random.default_rng(1)
    cid = np.r_[np.zeros(40, int), np.ones(1, int), np.full(39, 2)]
    cells = cells_from_arrays(cid, rng.normal(0, 0.1, (80, 2)), np.full(80, 0.05),
                              np.array([[0., 0], [1, 0], [2, 0]]), np.ones(3),
                              [np.array([1]), np.array([0, 2]), np.array([1])])
    with pytest.warns(SparseCellsWarning, match=r"1 of 3 cells hold a single translocation "
                                                r"\(cell labels \[1\]\)"):
        maps = infer(cells, "d", sigma=0.0)
    np.testing.assert_array_equal(maps.counts.to_numpy(), [40, 1, 39])
    # the lone jump's own closed form: D = |dr|^2 / (4 dt)
    dr = np.asarray(cells.dr)[1, 0]
    assert maps.maps["diffusivity"].iloc[1] == pytest.approx(dr @ dr / 0.2, rel=1e-6)


def test_min_location_count_warns_with_counts():
    df = _walks(n_traj=30, length=6, seed=2)
    full = tessellate(df, "grid", count_per_dim=[3, 3], lower_bound=[-0.2, -0.2],
                      upper_bound=[1.2, 1.2])
    small = (full.location_count > 0) & (full.location_count < 15)
    assert small.any()
    with pytest.warns(UserWarning, match=rf"min_location_count=15: {int(small.sum())} of "
                                         rf"{int((full.location_count > 0).sum())} occupied"):
        part = tessellate(df, "grid", count_per_dim=[3, 3], lower_bound=[-0.2, -0.2],
                          upper_bound=[1.2, 1.2], min_location_count=15)
    assert np.all(part.cell_index[small[full.cell_index]] == -1)


def test_string_and_categorical_trajectory_ids():
    df = _walks(n_traj=4)
    labelled = df.assign(n=df["n"].map(lambda k: f"traj{k + 1}"))
    for ids in (labelled, labelled.astype({"n": "category"})):
        out = load_trajectories(ids)
        np.testing.assert_array_equal(out["n"], df["n"])  # numbered by first appearance
        assert list(out.attrs["trajectory_labels"]) == ["traj1", "traj2", "traj3", "traj4"]
        pd.testing.assert_frame_equal(translocations(out)[["dx", "dy", "dt"]],
                                      translocations(df)[["dx", "dy", "dt"]])
    with pytest.raises(ValueError, match=r"column 'n' has NaN/missing"):
        load_trajectories(labelled.assign(n=labelled["n"].where(labelled.index != 3)))


def test_trackpy_frames_with_frame_interval():
    df = _walks(n_traj=4)
    frames = df.assign(particle=df["n"] + 10, frame=np.round(df["t"] / 0.05).astype(int))
    # trackpy's order: frame by frame, particles interleaved
    trackpy = frames[["frame", "particle", "x", "y"]].sort_values("frame", kind="stable")
    out = load_trajectories(trackpy, frame_interval=0.05)
    ref = translocations(df)
    got = translocations(out)
    np.testing.assert_array_equal(got["n"], ref["n"] + 10)
    np.testing.assert_allclose(got[["dx", "dy"]], ref[["dx", "dy"]], rtol=0, atol=0)
    np.testing.assert_allclose(got["dt"], ref["dt"], rtol=1e-12)
    with pytest.raises(ValueError, match=r"trackpy-style .*frame_interval"):
        load_trajectories(trackpy)
    with pytest.raises(ValueError, match=r"frame_interval must be a finite number of seconds"):
        load_trajectories(trackpy, frame_interval=-1)
    with pytest.raises(ValueError, match=r"column 'frame' must hold integer"):
        load_trajectories(trackpy.assign(frame=trackpy["frame"] + 0.5), frame_interval=0.05)


def test_registry_is_the_one_table():
    # every name the CLI, the sampler and infer accept resolves in the registry
    names = set(modes.MODES)
    assert set(cli.cli_modes()) <= names and set(sampling.SAMPLING_MODES) <= names
    assert "gradient" not in cli.cli_modes()  # needs an earlier map
    assert {"degraded.dd", "degraded.df", "stochastic.dv"} <= set(cli.cli_modes())
    for name in sampling.SAMPLING_MODES:
        assert sampling.sampling_mode(name).samplable
    assert modes.REGISTRY["dv"].columns(2) == ["diffusivity", "potential", "force x", "force y"]
    assert modes.resolve("d", ("diffusivity_prior",)).name == "smooth.d"
    assert modes.resolve("d").name == modes.resolve("degraded.d").name == "unsmooth.d"
    with pytest.raises(ValueError, match="unknown mode 'dx'"):
        modes.resolve("dx")


def test_degraded_dd_runs_in_infer_as_per_cell_dd(three_cells):
    # sigma = 0, one dt: per-cell drift = mean(dr) / dt (closed form)
    maps = infer(three_cells, "degraded.dd", sigma2=0.0)
    assert list(maps.maps.columns) == modes.REGISTRY["unsmooth.dd"].columns(2)
    dr, mask = np.asarray(three_cells.dr), np.asarray(three_cells.mask)
    drift = np.array([dr[i][mask[i]].mean(0) / 0.05 for i in range(3)])
    np.testing.assert_allclose(maps.maps[["drift x", "drift y"]].values, drift, rtol=1e-5)
    assert maps.success


def test_cli_plot_without_matplotlib_fails_before_any_work(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    out = tmp_path / "maps.csv"
    code = cli.main(["infer", str(tmp_path / "does-not-exist.txt"), "--plot", "m.png",
                     "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and 'pip install "jaxinfer[plot]"' in err
    assert "not found" not in err and not out.exists()  # refused before reading the file


def test_cli_errors_name_cli_options(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    pd.DataFrame(dict(particle=[1, 1, 1], frame=[0, 1, 2], x=[0., .1, .2],
                      y=[0., 0., .1])).to_csv(bad, index=False)
    assert cli.main(["infer", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "--frame-interval SECONDS" in err and "frame_interval=" not in err
    unsorted = tmp_path / "unsorted.csv"
    pd.DataFrame(dict(n=[1, 1, 1], x=[0., .1, .2], y=[0., 0., .1],
                      t=[0., .1, .05])).to_csv(unsorted, index=False)
    assert cli.main(["infer", str(unsorted)]) == 2
    err = capsys.readouterr().err
    assert "--sort" in err and "sort=True" not in err


def test_cli_help_has_units_and_defaults_without_none_noise(capsys):
    with pytest.raises(SystemExit):
        cli.main(["infer", "--help"])
    text = capsys.readouterr().out
    assert "(default: None)" not in text
    for expected in ("µm", "(default: 400)", "(default: 0.03", "stochastic.dv:", "--frame-interval"):
        assert expected in text, expected

