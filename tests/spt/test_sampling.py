"""NUTS sampling of maps against 1D quadrature of the exact posterior, and vmap vs loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate

from jaxinfer.spt import sampling
from jaxinfer.spt.cells import cells_from_arrays

SIGMA = 0.02
D_TRUE = np.array([0.05, 0.1, 0.2, 0.1])


@pytest.fixture(scope="module")
def cells():
    """4 cells on a 2x2 grid (8-connected), ~25 translocations each, known D per cell."""
    rng = np.random.default_rng(7)
    counts = np.array([20, 25, 30, 22])
    centers = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    cell_index = np.repeat(np.arange(4), counts)
    dt = rng.choice([0.04, 0.05], size=cell_index.size)
    dr = (rng.normal(size=(cell_index.size, 2)) * np.sqrt(2 * D_TRUE[cell_index] * dt)[:, None]
          + rng.normal(size=(cell_index.size, 2)) * SIGMA * np.sqrt(2))
    adjacency = [np.array([j for j in range(4) if j != i]) for i in range(4)]
    return cells_from_arrays(cell_index, dr, dt, centers, np.full(4, 0.25), adjacency)


def _quadrature_mean(cells, i):
    """Posterior mean of D_i under a flat prior on D > 0: int D e^{-L} / int e^{-L}."""
    m = np.asarray(cells.mask[i])
    dr2 = np.sum(np.asarray(cells.dr[i])[m] ** 2, axis=1)
    dt = np.asarray(cells.dt[i])[m]

    def nll(D):
        s = D * dt + SIGMA**2
        return np.sum(np.log(4 * s) + dr2 / (4 * s))

    grid = np.linspace(1e-4, 1.0, 4001)
    mode = grid[np.argmin([nll(d) for d in grid])]
    ref = nll(mode)
    density = lambda D: np.exp(ref - nll(D))  # noqa: E731
    z, _ = integrate.quad(density, 0, 2.0, points=[mode], limit=200)
    first, _ = integrate.quad(lambda D: D * density(D), 0, 2.0, points=[mode], limit=200)
    second, _ = integrate.quad(lambda D: D * D * density(D), 0, 2.0, points=[mode], limit=200)
    mean = first / z
    return mean, np.sqrt(second / z - mean**2)


@pytest.fixture(scope="module")
def d_samples(cells):
    return sampling.sample(cells, "d", key=jax.random.PRNGKey(0), num_samples=1500,
                           num_warmup=500, sigma=SIGMA)


def test_d_mode_posterior_mean_matches_quadrature(cells, d_samples):
    maps = d_samples.maps
    assert list(maps.index) == [0, 1, 2, 3]
    assert d_samples.diagnostics["divergences"] == 0
    for i in range(4):
        mean, sd = _quadrature_mean(cells, i)
        # Monte Carlo error with an effective sample size of at least ~300
        assert abs(maps["diffusivity"].iloc[i] - mean) < 4 * sd / np.sqrt(300), i
        assert maps["diffusivity sd"].iloc[i] == pytest.approx(sd, rel=0.15)
        assert maps["diffusivity lower"].iloc[i] < mean < maps["diffusivity upper"].iloc[i]
    # the truth is covered by the 95% intervals for this seed
    assert np.all((maps["diffusivity lower"] < D_TRUE) & (D_TRUE < maps["diffusivity upper"]))


def test_batch_equals_loop(cells):
    replicates = sampling.bootstrap_cells(cells, jax.random.PRNGKey(3), 2)
    assert replicates.dr.shape == (2,) + cells.dr.shape
    # resampling stays inside each cell's own translocations
    for b in range(2):
        for i in range(4):
            m = np.asarray(cells.mask[i])
            original = {tuple(np.round(r, 12)) for r in np.asarray(cells.dr[i])[m]}
            assert {tuple(np.round(r, 12)) for r in np.asarray(replicates.dr[b, i])[m]} <= original
    options = dict(num_samples=60, num_warmup=60, sigma=SIGMA, diffusivity_prior=1.0)
    key = jax.random.PRNGKey(11)
    batch = sampling.sample_batch(replicates, "d", key=key, **options)
    keys = jax.random.split(key, 2)
    for b in (1,):  # the second lane: its key and data are not the first's by accident
        single_cells = type(cells)(
            dr=replicates.dr[b], dt=replicates.dt[b], mask=cells.mask, counts=cells.counts,
            centers=cells.centers, volumes=cells.volumes, neighbours=cells.neighbours,
            neighbour_mask=cells.neighbour_mask, cell_ids=cells.cell_ids)
        single = sampling.sample(single_cells, "d", key=keys[b], **options)
        np.testing.assert_allclose(batch.samples["diffusivity"][b],
                                   single.samples["diffusivity"], rtol=1e-6)
        np.testing.assert_allclose(batch.maps[b]["diffusivity"], single.maps["diffusivity"],
                                   rtol=1e-6)


def test_dv_mode_runs_and_centres_potential(cells):
    result = sampling.sample(cells, "dv", key=jax.random.PRNGKey(1), num_samples=100,
                             num_warmup=100, sigma=SIGMA, diffusivity_prior=1.0,
                             potential_prior=1.0)
    assert set(["diffusivity", "potential", "potential lower", "potential upper"]) <= set(
        result.maps.columns)
    np.testing.assert_allclose(result.samples["potential"].mean(axis=1), 0.0, atol=1e-10)
    assert np.all(result.samples["diffusivity"] > 0)


def test_bad_mode_is_refused(cells):
    with pytest.raises(ValueError, match="sampling mode"):
        sampling.sample(cells, "stochastic.dv", key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="not both"):
        sampling.sample(cells, "d", key=jax.random.PRNGKey(0), sigma=0.1, sigma2=0.01)
