"""infer(): optima against scipy on the same objective, closed forms, honest statuses, and
recovery of known D / V from simulated overdamped Langevin trajectories."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import scipy.optimize

from jaxinfer.spt import posteriors as P
from jaxinfer.spt.cells import cells_from_arrays, distributed
from jaxinfer.spt.gradient import grad1_stencil
from jaxinfer.spt.infer import infer, localization_variance
from jaxinfer.spt.tessellation import tessellate

from ._core_fixtures import load, tramway_cells


@pytest.fixture(scope="module")
def grid_cells():
    return tramway_cells(load("grid6"))


def test_smooth_d_optimum_matches_scipy(grid_cells):
    maps = infer(grid_cells, "d", sigma=0.03, diffusivity_prior=20.0,
                 options={"ftol": 1e-15, "gtol": 1e-6})
    assert maps.success and list(maps.maps.columns) == ["diffusivity"]
    cells = grid_cells.with_neighbours_only()
    g = grad1_stencil(cells.centers, cells.neighbour_lists())
    vg = jax.jit(jax.value_and_grad(lambda D: P.d_neg_posterior(D, cells, g, 9e-4, 20.0)))
    lb = (1e-16 - 9e-4) / np.asarray(cells.dt_max)
    ref = scipy.optimize.minimize(lambda x: tuple(np.asarray(v, float) for v in vg(x)),
                                  np.asarray(cells.initial_diffusivity()), jac=True,
                                  method="L-BFGS-B", bounds=[(b, None) for b in lb],
                                  options={"ftol": 1e-14, "gtol": 1e-10, "maxiter": 1000})
    assert float(maps.result.fun) == pytest.approx(ref.fun, rel=1e-11)
    np.testing.assert_allclose(maps.maps["diffusivity"].values, ref.x, rtol=1e-4)
    np.testing.assert_array_equal(maps.maps.index.values, np.asarray(cells.cell_ids))


def test_unsmooth_d_closed_form_and_modes_dispatch():
    # sigma = 0 and a common dt: argmin_D of n log(4 pi D dt) + sum r^2 / (4 D dt)
    rng = np.random.default_rng(0)
    n = np.array([30, 50, 80])
    cid = np.repeat([0, 1, 2], n)
    dr = rng.normal(scale=0.1, size=(n.sum(), 2)) * np.repeat([1.0, 1.5, 2.0], n)[:, None]
    cells = cells_from_arrays(cid, dr, np.full(n.sum(), 0.05), np.array([[0., 0], [1, 0], [2, 0]]),
                              np.ones(3), [np.array([1]), np.array([0, 2]), np.array([1])])
    expected = np.array([np.sum(dr[cid == k] ** 2) / (4 * n[k] * 0.05) for k in range(3)])
    for mode in ("d", "degraded.d", "unsmooth.d"):
        maps = infer(cells, mode, sigma2=0.0)
        np.testing.assert_allclose(maps.maps["diffusivity"].values, expected, rtol=1e-6)
        assert maps.success and np.asarray(maps.result.success).shape == (3,)
    # DD without priors: per-cell drift = mean(dr) / dt (sigma = 0)
    maps = infer(cells, "dd", sigma2=0.0)
    drift = np.array([dr[cid == k].mean(0) / 0.05 for k in range(3)])
    np.testing.assert_allclose(maps.maps[["drift x", "drift y"]].values, drift, rtol=1e-5)
    # density: translocations per unit area
    dens = infer(cells, "density").maps["density"].values
    np.testing.assert_allclose(dens, n / 1.0)


def test_dv_outputs_status_and_errors(grid_cells):
    calls = []
    maps = infer(grid_cells, "dv", sigma=0.03, diffusivity_prior=10.0, potential_prior=1.0,
                 max_iter=3, progress=lambda intermediate_result: calls.append(
                     intermediate_result))
    # three iterations do not converge: reported honestly
    assert not maps.success and int(maps.result.nit) == 3
    assert "ITERATIONS" in maps.result.message.upper()
    # one progress call per iteration, with the named parameters and their gradient
    assert [int(r.nit) for r in calls] == [1, 2, 3]
    last = calls[-1]
    np.testing.assert_array_equal(last.x["potential"], maps.result.x["potential"])
    assert set(last.jac) == {"diffusivity", "potential"}
    mp = maps.maps
    assert list(mp.columns) == ["diffusivity", "potential", "force x", "force y"]
    assert mp["potential"].min() >= 0.0
    cells = grid_cells.with_neighbours_only()
    g = grad1_stencil(cells.centers, cells.neighbour_lists())
    np.testing.assert_allclose(mp[["force x", "force y"]].values,
                               -np.asarray(g.apply(jnp.asarray(mp["potential"].values))),
                               rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="unknown mode"):
        infer(grid_cells, "dx")
    with pytest.raises(TypeError, match="unexpected"):
        infer(grid_cells, "d", diffusivity_priorr=1.0)
    with pytest.raises(ValueError, match="conflicting"):
        localization_variance(sigma=0.1, sigma2=0.02)
    assert localization_variance() == pytest.approx(9e-4)
    bad = cells_from_arrays(np.array([0, 0, 1, 1]), np.full((4, 2), 0.1), np.ones(4),
                            np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([1.0, np.nan]),
                            [np.array([1]), np.array([0])])
    with pytest.raises(ValueError, match="area"):
        infer(bad, "d", diffusivity_prior=1.0)


def test_conj_prior_dispatch(grid_cells):
    pytest.importorskip("jaxinfer.spt.conjugate")
    maps = infer(grid_cells, "d.conj_prior", sigma=0.03)
    d = maps.maps["diffusivity"].values
    assert d.shape == (grid_cells.ncells,) and np.all(np.isfinite(d)) and np.all(d > 0)
    with pytest.raises(ValueError, match="sigma"):
        infer(grid_cells, "d.conj_prior")


@pytest.fixture(scope="module")
def simulated():
    from jaxinfer.spt.simulate import simulate_trajectories, truth_at

    def D(r):
        return 0.1 + 0.04 * r[0]

    def V(r):
        return 2.5 * (r[0] ** 2 + r[1] ** 2)

    df = simulate_trajectories(jax.random.PRNGKey(0), D, V, n_trajectories=2000, mean_length=11,
                               min_length=11, dt=0.05, sigma=0.02, lower_bound=(-1, -1),
                               upper_bound=(1, 1), substeps=4, reflect=False)
    part = tessellate(df, "grid", count_per_dim=[6, 6], lower_bound=[-1, -1], upper_bound=[1, 1])
    cells = distributed(part)
    return part, cells, truth_at(np.asarray(cells.centers), D, V)


@pytest.mark.parametrize("mode", ["dv", "stochastic.dv"])
def test_recovers_known_diffusivity_and_force(simulated, mode):
    part, cells, truth = simulated
    maps = infer(part, mode, sigma=0.02, diffusivity_prior=1.0, potential_prior=1.0)
    assert maps.success
    mp = maps.maps.loc[np.asarray(cells.cell_ids)]
    rmse_D = np.sqrt(np.mean((mp["diffusivity"].values - truth["diffusivity"].values) ** 2))
    F, Ft = mp[["force x", "force y"]].values, truth[["force x", "force y"]].values
    rmse_F = np.sqrt(np.mean((F - Ft) ** 2))
    print(f"{mode}: D RMSE {rmse_D:.4f} um2/s (D ~ 0.1), F RMSE {rmse_F:.3f} "
          f"(F rms {np.sqrt(np.mean(Ft ** 2)):.3f})")
    assert rmse_D < 0.1 * truth["diffusivity"].mean()
    assert rmse_F < 0.35 * np.sqrt(np.mean(Ft ** 2))
    if mode == "stochastic.dv":
        v = mp["potential"].values - mp["potential"].mean()
        vt = truth["potential"].values - truth["potential"].mean()
        assert np.sqrt(np.mean((v - vt) ** 2)) < 0.5 * vt.std()


def test_stochastic_dv_time_prior_on_space_time_cells():
    from jaxinfer.spt.cells import space_time_cells

    rng = np.random.default_rng(4)
    n = 1500
    tr = pd.DataFrame(dict(n=np.arange(n), x=rng.uniform(0, 1, n), y=rng.uniform(0, 1, n),
                           t=rng.uniform(0, 3, n), dx=rng.normal(0, .07, n),
                           dy=rng.normal(0, .07, n), dt=np.full(n, 0.05)))
    part = tessellate(tr, "grid", count_per_dim=[2, 2], lower_bound=[0, 0], upper_bound=[1, 1])
    cells = space_time_cells(part, window_duration=1.0)
    # the no-time-prior map at tight tolerances is also the reference of the block solver
    # below (one program per problem structure and options; the stiff 1e7 prior keeps the
    # defaults)
    tight = dict(ftol=1e-13, gtol=1e-7)
    kw = dict(sigma=0.0, diffusivity_prior=0.01, potential_prior=0.01)
    spread, maps_of = {}, {}
    for tp in (None, 1e7):
        maps = maps_of[tp] = infer(cells, "stochastic.dv", diffusivity_time_prior=tp,
                                   options=tight if tp is None else None, **kw)
        assert maps.success
        # rows: windows, columns: spatial cells (labels w * 4 + s)
        D = maps.maps["diffusivity"].values.reshape(3, 4)
        spread[tp] = D.std(axis=0).mean()
    assert spread[1e7] < 0.1 * spread[None]
    # the block-coordinate solver (TRamWAy's sparse BFGS counterpart) reaches the same optimum
    full = maps_of[None]
    block = infer(cells, "stochastic.dv", solver="block", options=tight, **kw)
    assert block.success and full.success
    assert float(block.result.fun) == pytest.approx(float(full.result.fun), rel=1e-9)
    np.testing.assert_allclose(block.maps["diffusivity"], full.maps["diffusivity"], rtol=1e-4)
    with pytest.raises(ValueError, match="space-time"):
        infer(distributed(part), "stochastic.dv", potential_prior=1.0, diffusivity_time_prior=1.0)


def test_float32_closed_form_equals_float64_and_solved_modes_refuse(grid_cells):
    f32 = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a,
        grid_cells)
    m32 = infer(f32, "d.conj_prior", sigma=0.03)
    m64 = infer(grid_cells, "d.conj_prior", sigma=0.03)
    for column in ("diffusivity", "ci low", "ci high"):
        np.testing.assert_allclose(m32.maps[column], m64.maps[column], rtol=1e-3)
    # optimised modes: float32 rounding of the summed objective moves the optimum -> refused
    for mode, priors in (("d", {}), ("d", dict(diffusivity_prior=20.0)),
                         ("dv", dict(diffusivity_prior=20.0, potential_prior=1.0))):
        with pytest.raises(ValueError, match=r"needs float64.*jax_enable_x64"):
            infer(f32, mode, sigma=0.03, **priors)


def test_smooth_dd_default_settings_reach_the_scipy_optimum(grid_cells):
    # infer's defaults (ftol 1e-10) against scipy's L-BFGS-B driven to convergence on the very
    # same problem (smooth_setup: objective, start, bounds)
    from jax.flatten_util import ravel_pytree

    from jaxinfer.spt.infer import smooth_setup

    kw = dict(sigma=0.03, diffusivity_prior=20.0, drift_prior=1.0)
    maps = infer(grid_cells, "dd", **kw)
    setup = smooth_setup(grid_cells, "dd", **kw)
    x0, unravel = ravel_pytree(setup.x0)
    vg = jax.jit(jax.value_and_grad(lambda x: setup.mode.posterior(unravel(x), setup.problem)))
    lower = np.asarray(ravel_pytree(setup.lower)[0])
    ref = scipy.optimize.minimize(lambda x: tuple(np.asarray(v, float) for v in vg(x)),
                                  np.asarray(x0), jac=True, method="L-BFGS-B",
                                  bounds=[(b if np.isfinite(b) else None, None) for b in lower],
                                  options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000,
                                           "maxcor": 30})
    assert maps.success and ref.success
    ours = float(setup.mode.posterior(maps.result.x, setup.problem))
    assert ours == pytest.approx(ref.fun, rel=1e-7)
    D_ref = np.asarray(unravel(jnp.asarray(ref.x))["diffusivity"])
    assert np.median(np.abs(maps.maps["diffusivity"].values / D_ref - 1)) < 1e-3
