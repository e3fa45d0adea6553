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
