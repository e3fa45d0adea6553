"""infer() modes d.conj_prior (full TRamWAy output), snr, bayes_factor, gradient and
semi.stochastic.dv, against TRamWAy 0.7 outputs on the 6x6-grid fixture
(benchmarks/spt/make_mode_fixtures.py) or against independent computations."""

import numpy as np
import pandas as pd
import pytest

from jaxinfer.spt import infer

from ._core_fixtures import FIXTURES, load, tramway_cells


@pytest.fixture(scope="module")
def grid_cells():
    return tramway_cells(load("grid6"))


@pytest.fixture(scope="module")
def ref():
    f = np.load(f"{FIXTURES}/modes_grid6.npz")
    out = {}
    for k in ("conj", "snr", "bf", "grad"):
        out[k] = pd.DataFrame(f[f"{k}_values"], index=f[f"{k}_index"],
                              columns=[str(c) for c in f[f"{k}_columns"]])
    return out


def _compare(ours, theirs, rtol, atol=0.0, columns=None):
    columns = list(theirs.columns) if columns is None else columns
    ours = ours.reindex(theirs.index)
    for c in columns:
        np.testing.assert_allclose(ours[c].values, theirs[c].values, rtol=rtol, atol=atol,
                                   err_msg=c, equal_nan=True)


def test_conj_prior_columns_and_values_match_tramway(grid_cells, ref):
    maps = infer(grid_cells, "d.conj_prior", sigma=0.03)
    assert list(maps.maps.columns) == list(ref["conj"].columns)  # incl. "ci low" / "ci high"
    assert set(maps.maps.index) == set(ref["conj"].index)
    _compare(maps.maps, ref["conj"], rtol=1e-8)


def test_snr_from_input_diffusivity_matches_tramway(grid_cells, ref):
    snr = ref["snr"]
    maps = infer(grid_cells, "snr", sigma=0.03, input_maps=snr[["diffusivity"]])
    assert list(maps.maps.columns) == list(snr.columns)
    _compare(maps.maps, snr, rtol=1e-9)


def test_snr_inferring_diffusivity_matches_tramway(grid_cells, ref):
    # D from the per-cell 'd' mode (ours: exact gradients, tramway: finite differences), then
    # zeta_spurious = grad1(D) dt / sd amplifies the solvers' small differences in D
    maps = infer(grid_cells, "snr", sigma=0.03)
    _compare(maps.maps, ref["snr"], rtol=1e-5, columns=["diffusivity"])
    _compare(maps.maps, ref["snr"], rtol=1e-9, columns=["n", "V", "V_prior", "zeta_total x",
                                                         "zeta_total y"])
    _compare(maps.maps, ref["snr"], rtol=2e-3, atol=1e-9,
             columns=["zeta_spurious x", "zeta_spurious y"])


def test_gradient_mode_matches_tramway_and_is_linear(grid_cells, ref):
    snr = ref["snr"]
    g = infer(grid_cells, "gradient", input_maps=snr, feature="diffusivity").maps
    assert list(g.columns) == ["diffusivity x", "diffusivity y"]
    _compare(g, ref["grad"], rtol=1e-10, atol=1e-14)
    # several features at once (TRamWAy returns only the first: its join result is dropped)
    two = snr.assign(twice=2 * snr["diffusivity"] + 1.0)
    g2 = infer(grid_cells, "gradient", input_maps=two, feature="diffusivity, twice").maps
    np.testing.assert_allclose(g2[["twice x", "twice y"]].values, 2 * g.values, rtol=1e-12)
    with pytest.raises(ValueError, match="feature"):
        infer(grid_cells, "gradient", input_maps=snr)
    with pytest.raises(ValueError, match="no column"):
        infer(grid_cells, "gradient", input_maps=snr, feature="potential")


def _same_partition(a, b):
    """Group labels a and b define the same partition (TRamWAy permutes labels at random)."""
    pairs = {(x, y) for x, y in zip(a, b) if not (np.isnan(x) and np.isnan(y))}
    return (len({x for x, _ in pairs}) == len(pairs) == len({y for _, y in pairs})
            and np.array_equal(np.isnan(a), np.isnan(b)))


def test_bayes_factor_matches_tramway(grid_cells, ref):
    bf = ref["bf"]
    ours = infer(grid_cells, "bayes_factor", sigma=0.03, input_maps=ref["snr"]).maps
    assert list(ours.columns) == list(bf.columns)
    ours = ours.reindex(bf.index)
    np.testing.assert_allclose(ours["lg_B"], bf["lg_B"], rtol=1e-6)
    np.testing.assert_array_equal(ours["force"], bf["force"])
    # min_n: integer search on a quadrature-evaluated B; off by one near the threshold
    np.testing.assert_allclose(ours["min_n"], bf["min_n"], atol=1.0)
    assert _same_partition(ours["groups"].values, bf["groups"].values)
    # TRamWAy leaves its last-found group unsummed (NaN); every other group agrees
    has = ~np.isnan(bf["group_lg_B"].values)
    assert has.sum() > len(bf) // 2
    np.testing.assert_allclose(ours["group_lg_B"].values[has], bf["group_lg_B"].values[has],
                               rtol=1e-6)
    np.testing.assert_array_equal(ours["group_forces"].values[has],
                                  bf["group_forces"].values[has])
    # from the cells alone (D inferred, SNR via bayes_factors_for_cells): same decisions
    alone = infer(grid_cells, "bayes_factor", sigma=0.03).maps.reindex(bf.index)
    np.testing.assert_allclose(alone["lg_B"], bf["lg_B"], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="sigma"):
        infer(grid_cells, "bayes_factor")


def test_group_by_sign_on_a_chain():
    from jaxinfer.spt.infer import group_by_sign

    lg = np.array([0.5, 0.7, -0.2, np.nan, 2.0, -0.1])
    chain = [np.array([1]), np.array([0, 2]), np.array([1, 3]), np.array([2, 4]),
             np.array([3, 5]), np.array([4])]
    groups, glb, gf = group_by_sign(lg, chain, B_threshold=10)
    np.testing.assert_array_equal(groups, [0, 0, 1, np.nan, 2, 3])
    np.testing.assert_allclose(glb, [1.2, 1.2, -0.2, np.nan, 2.0, -0.1])
    np.testing.assert_array_equal(gf, [1, 1, 0, 0, 1, 0])


def test_semi_stochastic_dv_reaches_the_stochastic_dv_optimum(grid_cells):
    # TRamWAy's semi.stochastic.dv = stochastic.dv's objective, minimised by a stochastic
    # (block) stage then a full fine-tuning; the optimum must be stochastic.dv's
    kw = dict(sigma=0.03, diffusivity_prior=1.0, potential_prior=1.0,
              options=dict(ftol=1e-13, gtol=1e-7))
    full = infer(grid_cells, "stochastic.dv", **kw)
    semi = infer(grid_cells, "semi.stochastic.dv", init_max_iter=5, **kw)
    assert full.success and semi.success
    first = semi.parameters["init_result"].x
    assert first["diffusivity"].shape == first["potential"].shape == (grid_cells.ncells,)
    assert float(semi.result.fun) == pytest.approx(float(full.result.fun), rel=1e-9)
    np.testing.assert_allclose(semi.maps["diffusivity"], full.maps["diffusivity"], rtol=1e-4)
    # V is defined up to a constant (the objective sees only its differences; V >= 0 bound)
    v_semi, v_full = semi.maps["potential"].values, full.maps["potential"].values
    np.testing.assert_allclose(v_semi - v_semi.mean(), v_full - v_full.mean(), atol=1e-3)
    assert list(semi.maps.columns) == list(full.maps.columns)
