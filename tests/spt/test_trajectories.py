"""Loading and validation of trajectory tables, and translocations."""

import warnings

import numpy as np
import pandas as pd
import pytest

from jaxinfer.spt.trajectories import (
    TrajectoryReport,
    TrajectoryWarning,
    load_trajectories,
    translocations,
)


def simulate(n_traj=6, length=5, dim=2, seed=0, dt=0.05):
    rng = np.random.default_rng(seed)
    rows = []
    for n in range(1, n_traj + 1):
        pos = rng.uniform(-1, 1, size=dim)
        t0 = rng.uniform(0, 1)
        for k in range(length + n % 3):  # lengths vary
            rows.append([n, *pos, t0 + k * dt])
            pos = pos + rng.normal(scale=0.1, size=dim)
    names = ["n", "x", "y", "z", "t"] if dim == 3 else ["n", "x", "y", "t"]
    return pd.DataFrame(rows, columns=names)


@pytest.fixture(scope="module")
def sim():
    return simulate()


def reference_translocations(df):
    """Loop implementation, independent of the vectorised one."""
    xyz = [c for c in ("x", "y", "z") if c in df.columns]
    out = []
    for n, g in df.groupby("n", sort=False):
        g = g.sort_values("t")
        for a, b in zip(g.itertuples(index=False), list(g.itertuples(index=False))[1:]):
            a, b = a._asdict(), b._asdict()
            out.append([n] + [a[c] for c in xyz] + [a["t"]] + [b[c] - a[c] for c in xyz]
                       + [b["t"] - a["t"]])
    return pd.DataFrame(out, columns=["n", *xyz, "t", *("d" + c for c in xyz), "dt"])


@pytest.mark.parametrize("sep", [",", "\t", " "])
def test_round_trip_with_header(tmp_path, sim, sep):
    path = tmp_path / "traj.txt"
    sim.to_csv(path, sep=sep, index=False, float_format="%.17g")
    df = load_trajectories(path)
    pd.testing.assert_frame_equal(df, sim.astype({"n": np.int64}), check_exact=True)
    assert isinstance(df.attrs["report"], TrajectoryReport)
    assert df.attrs["report"].n_rows_read == len(sim)


def test_headerless_tramway_layout(tmp_path, sim):
    path = tmp_path / "traj.txt"
    sim.to_csv(path, sep="\t", index=False, header=False, float_format="%.17g")
    df = load_trajectories(path)
    assert list(df.columns) == ["n", "x", "y", "t"]
    np.testing.assert_array_equal(df.to_numpy(), sim.to_numpy())


def test_headerless_3d_five_columns(tmp_path):
    sim3 = simulate(dim=3, seed=1)
    path = tmp_path / "traj3.txt"
    sim3.to_csv(path, sep=" ", index=False, header=False, float_format="%.17g")
    df = load_trajectories(path)
    assert list(df.columns) == ["n", "x", "y", "z", "t"]
    tr = translocations(df)
    pd.testing.assert_frame_equal(tr, reference_translocations(sim3), check_dtype=False)


def test_translocations_match_loop(sim):
    tr, report = translocations(sim, return_report=True)
    ref = reference_translocations(sim)
    pd.testing.assert_frame_equal(tr, ref, check_dtype=False)
    assert list(tr.columns) == ["n", "x", "y", "t", "dx", "dy", "dt"]
    assert report.n_translocations == len(sim) - sim["n"].nunique()
    assert (tr["dt"] > 0).all()


def test_missing_column():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['t'\]"):
        load_trajectories(pd.DataFrame({"n": [1, 1], "x": [0.0, 1.0], "y": [0.0, 1.0]}))


def test_nan_and_inf_rejected_or_dropped(sim):
    bad = sim.copy()
    bad.loc[3, "x"] = np.nan
    bad.loc[7, "t"] = np.inf
    with pytest.raises(ValueError, match=r"column 'x' has NaN.*0-based: 3"):
        load_trajectories(bad)
    with pytest.warns(TrajectoryWarning, match="2 invalid rows dropped"):
        df, report = load_trajectories(bad, drop_invalid=True, return_report=True)
    assert report.invalid_rows == (3, 7)
    assert report.n_invalid_rows_dropped == 2
    assert len(df) == len(sim) - 2


def test_non_numeric_in_file(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("n,x,y,t\n1,0.0,0.0,0.0\n1,abc,0.1,0.1\n1,0.2,0.2,0.2\n")
    with pytest.raises(ValueError, match=r"column 'x' has non-numeric values.*0-based: 1"):
        load_trajectories(path)


def test_non_monotonic_time_names_trajectory(sim):
    bad = sim.copy()
    rows = bad.index[bad["n"] == 4]
    bad.loc[rows[2], "t"] = bad.loc[rows[0], "t"] - 1.0
    with pytest.raises(ValueError, match=r"trajectory id\(s\) 4 .*sort=True"):
        load_trajectories(bad)
    # sorting by time fixes a shuffled trajectory but repeated times still fail
    shuffled = sim.iloc[::-1].reset_index(drop=True)
    df = load_trajectories(shuffled, sort=True)
    assert (df.groupby("n")["t"].diff().dropna() > 0).all()
    rep = sim.copy()
    rep.loc[rows[1], "t"] = rep.loc[rows[0], "t"]
    with pytest.raises(ValueError, match="repeated time"):
        load_trajectories(rep, sort=True)


def test_single_point_trajectories_dropped_and_reported(sim):
    extra = pd.DataFrame({"n": [100, 101], "x": [0.0, 1.0], "y": [0.0, 1.0], "t": [0.0, 0.0]})
    data = pd.concat([sim, extra], ignore_index=True)
    with pytest.warns(TrajectoryWarning, match=r"2 single-point trajectories dropped \(ids: 100, 101\)"):
        df = load_trajectories(data)
    assert df.attrs["report"].single_point_trajectories == (100, 101)
    assert set(df["n"]) == set(sim["n"])
    with pytest.raises(ValueError, match="every trajectory has a single point"):
        load_trajectories(extra)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("\n\n")
    with pytest.raises(ValueError, match="is empty"):
        load_trajectories(path)
    path.write_text("n x y t\n")
    with pytest.raises(ValueError, match="header but no data rows"):
        load_trajectories(path)


def test_wrong_number_of_columns(tmp_path):
    path = tmp_path / "six.txt"
    path.write_text("1 0 0 0 0 0\n1 1 1 1 1 1\n")
    with pytest.raises(ValueError, match="no header and 6 columns"):
        load_trajectories(path)
    path.write_text("1 0 0 0\n1 1 1\n")
    with pytest.raises(ValueError, match="expected 4 columns.*data rows 1 have 3 columns"):
        load_trajectories(path)


def test_fractional_trajectory_id_and_bad_type(tmp_path):
    with pytest.raises(ValueError, match="must be integers"):
        load_trajectories(pd.DataFrame({"n": [1.5, 1.5], "x": [0, 1], "y": [0, 1], "t": [0, 1]}))
    with pytest.raises(TypeError, match="DataFrame or a path"):
        load_trajectories(np.zeros((3, 4)))
    with pytest.raises(FileNotFoundError):
        load_trajectories(tmp_path / "nope.txt")


def test_interleaved_trajectories_are_grouped(sim):
    # rows of different trajectories interleaved: grouped stably, times still checked
    inter = sim.sample(frac=1.0, random_state=0).sort_values("t", kind="stable")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = load_trajectories(inter.reset_index(drop=True))
    pd.testing.assert_frame_equal(
        translocations(df).sort_values(["n", "t"]).reset_index(drop=True),
        reference_translocations(sim).sort_values(["n", "t"]).reset_index(drop=True),
        check_dtype=False)
