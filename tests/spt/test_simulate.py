"""Simulation of trajectories against closed forms (free diffusion, constant force)."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaxinfer.spt import simulate as sim


def _translocations(df):
    same = df["n"].to_numpy()[1:] == df["n"].to_numpy()[:-1]
    d = {c: np.diff(df[c].to_numpy())[same] for c in ("x", "y", "t")}
    origin = df[["x", "y"]].to_numpy()[:-1][same]
    return d, origin


def test_layout_and_lengths():
    df = sim.simulate_trajectories(jax.random.PRNGKey(0), 0.1, n_trajectories=200,
                                   mean_length=6, min_length=3, max_length=12, dt=0.05)
    assert list(df.columns) == ["n", "x", "y", "t"]
    assert df["n"].dtype == np.int64
    sizes = df.groupby("n").size()
    assert sizes.min() >= 3 and sizes.max() <= 12
    assert abs(sizes.mean() - 6) < 1.0
    # times start at 0 and step by dt inside each trajectory
    d, _ = _translocations(df)
    np.testing.assert_allclose(d["t"], 0.05)
    assert (df.groupby("n")["t"].first() == 0).all()
    # reflecting box keeps everything inside
    assert df[["x", "y"]].abs().to_numpy().max() <= 1.0
    # same key, same data; other key, other data
    again = sim.simulate_trajectories(jax.random.PRNGKey(0), 0.1, n_trajectories=200,
                                      mean_length=6, min_length=3, max_length=12, dt=0.05)
    pd.testing.assert_frame_equal(df, again)
    other = sim.simulate_trajectories(jax.random.PRNGKey(1), 0.1, n_trajectories=200,
                                      mean_length=6, min_length=3, max_length=12, dt=0.05)
    assert not np.allclose(df["x"].to_numpy()[:50], other["x"].to_numpy()[:50])


def test_free_diffusion_msd_with_noise():
    """E|dr|² = 2 dim (D dt + sigma²) per axis pair; mean displacement 0."""
    D, dt, sigma = 0.25, 0.02, 0.03
    df = sim.simulate_trajectories(jax.random.PRNGKey(1), D, n_trajectories=4000,
                                   mean_length=5, min_length=5, dt=dt, sigma=sigma,
                                   lower_bound=(-100, -100), upper_bound=(100, 100))
    d, _ = _translocations(df)
    n = d["x"].size
    msd = np.mean(d["x"] ** 2 + d["y"] ** 2)
    expected = 4 * (D * dt + sigma**2)
    # consecutive translocations share a noise term, so be a little generous: 4 std errors of
    # the iid case, times 1.5
    assert abs(msd - expected) < 6 * expected / np.sqrt(n / 2)
    assert abs(np.mean(d["x"])) < 6 * np.sqrt(expected / 2 / n)


def test_constant_force_drift_and_variance():
    """V = -f.r gives mean displacement D f dt and variance 2 D dt per axis."""
    D, dt = 0.2, 0.05
    f = np.array([3.0, -1.5])
    potential = sim.linear(0.0, -f)
    df = sim.simulate_trajectories(jax.random.PRNGKey(2), D, potential, n_trajectories=3000,
                                   mean_length=6, min_length=6, dt=dt, substeps=2,
                                   lower_bound=(-100, -100), upper_bound=(100, 100))
    d, _ = _translocations(df)
    n = d["x"].size
    dr = np.stack([d["x"], d["y"]], axis=1)
    se = np.sqrt(2 * D * dt / n)
    np.testing.assert_allclose(dr.mean(axis=0), D * f * dt, atol=5 * se)
    np.testing.assert_allclose(dr.var(axis=0), 2 * D * dt, rtol=5 * np.sqrt(2 / n))


def test_space_dependent_diffusivity_and_reflection():
    """Linear D: local MSD follows D(x); reflection keeps the box."""
    diffusivity = sim.linear(0.2, (0.1, 0.0))
    dt = 0.01
    df = sim.simulate_trajectories(jax.random.PRNGKey(3), diffusivity, n_trajectories=3000,
                                   mean_length=8, dt=dt, substeps=4)
    assert df[["x", "y"]].abs().to_numpy().max() <= 1.0
    d, origin = _translocations(df)
    inner = np.abs(origin).max(axis=1) < 0.8  # away from the walls
    left, right = inner & (origin[:, 0] < -0.3), inner & (origin[:, 0] > 0.3)
    for mask in (left, right):
        x0 = origin[mask, 0].mean()
        msd = np.mean(d["x"][mask] ** 2 + d["y"][mask] ** 2)
        expected = 4 * (0.2 + 0.1 * x0) * dt
        assert abs(msd / expected - 1) < 0.06


def test_truth_at_and_map_errors():
    diffusivity, potential = sim.demo_fields()
    centers = np.array([[0.2, -0.1], [0.6, -0.1], [-1.0, 0.5]])
    truth = sim.truth_at(centers, diffusivity, potential)
    np.testing.assert_allclose(truth["diffusivity"], 0.2 + 0.1 * centers[:, 0], rtol=1e-12)
    # force = -grad V for the Gaussian well, computed by hand
    d = centers - np.array([0.2, -0.1])
    V = -2.0 * np.exp(-np.sum(d**2, axis=1) / (2 * 0.4**2))
    F = V[:, None] * d / 0.4**2
    np.testing.assert_allclose(truth["potential"], V, rtol=1e-12)
    np.testing.assert_allclose(truth[["force x", "force y"]], F, atol=1e-12)
    np.testing.assert_allclose(truth["drift x"], truth["diffusivity"] * truth["force x"])
    # potential errors ignore a constant offset; diffusivity errors do not
    maps = truth.copy()
    maps["potential"] += 5.0
    maps["diffusivity"] += 0.01
    errors = sim.map_errors(maps, truth)
    assert errors["potential"] < 1e-12 and errors["force"] < 1e-12
    assert errors["diffusivity"] == pytest.approx(0.01)


def test_bad_input_is_refused():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="min_length"):
        sim.simulate_trajectories(key, 0.1, min_length=1)
    with pytest.raises(ValueError, match="upper_bound"):
        sim.simulate_trajectories(key, 0.1, lower_bound=(0, 0), upper_bound=(1, -1))
    with pytest.raises(ValueError, match="diffusivity"):
        sim.simulate_trajectories(key, -0.1)
    with pytest.raises(ValueError, match="convention"):
        sim.simulate_trajectories(key, 0.1, convention="stratonovich")


def test_float32_simulation():
    df = sim.simulate_trajectories(jax.random.PRNGKey(4), 0.1, sim.gaussian_well(1.0, 0.3),
                                   n_trajectories=50, dtype=jnp.float32)
    assert np.isfinite(df[["x", "y"]].to_numpy()).all()


def test_crop_to_window_splits_trajectories():
    df = pd.DataFrame({"n": [1, 1, 1, 1, 1, 2, 2, 3],
                       "x": [0.1, 0.2, 1.5, 0.3, 0.4, 0.5, 0.6, 2.0],
                       "y": [0.0] * 8, "t": [0, 1, 2, 3, 4, 0, 1, 0.0]})
    strict = sim.crop_to_window(df, (0, -1), (1, 1), keep_exit_points=False)
    # trajectory 1 splits around its excursion; trajectory 3 lies outside
    assert strict["n"].tolist() == [1, 1, 2, 2, 3, 3]
    assert strict["x"].tolist() == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    # by default the exit point ends its piece (translocations starting inside are all kept)
    out = sim.crop_to_window(df, (0, -1), (1, 1))
    assert out["n"].tolist() == [1, 1, 1, 2, 2, 3, 3]
    assert out["x"].tolist() == [0.1, 0.2, 1.5, 0.3, 0.4, 0.5, 0.6]
    # every translocation starts inside and none spans an excursion
    big = sim.simulate_trajectories(jax.random.PRNGKey(8), 0.5, n_trajectories=100,
                                    lower_bound=(-2, -2), upper_bound=(2, 2))
    for keep in (True, False):
        cropped = sim.crop_to_window(big, (-1, -1), (1, 1), keep_exit_points=keep)
        d, origin = _translocations(cropped)
        assert np.abs(origin).max() <= 1
        np.testing.assert_allclose(d["t"], 0.02)
        if not keep:
            assert cropped[["x", "y"]].abs().to_numpy().max() <= 1
