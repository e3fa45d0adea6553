"""Make TRamWAy 0.7 reference fixtures for jaxinfer.spt.infer's `d.conj_prior`, `snr`,
`bayes_factor` and `gradient` modes.

Run with the original installed in a separate venv (never in the project venv):

    /work/venvs/tramway/bin/python benchmarks/spt/make_mode_fixtures.py

Uses the 6x6-grid data of make_posterior_fixtures.py (same simulation, same tessellation) and
writes tests/spt/fixtures/modes_grid6.npz holding, per mode, TRamWAy's output map (index,
column names, values):

- ``conj``: ``infer(part, 'd.conj_prior', sigma=0.03)``
- ``snr``: ``infer_snr(distributed(part), sigma=0.03)`` (D from the per-cell 'd' mode, then the SNR
  extensions n, V, V_prior, zeta_total, zeta_spurious)
- ``bf``: TRamWAy's ``bayes_factor`` plugin (``_bayes_factor``) run on cells carrying the
  ``snr`` map's variables (as ``infer(cells, 'bayes_factor', input_maps=snr)`` does), sigma 0.03:
  lg_B, force, min_n, groups (labels randomly permuted by TRamWAy), group_lg_B, group_forces
- ``grad``: TRamWAy's ``gradient_map`` of the ``snr`` map's diffusivity.
"""
import os
import sys
import warnings

import numpy as np

warnings.simplefilter("ignore")
sys.path.insert(0, os.path.dirname(__file__))

from make_posterior_fixtures import simulate  # noqa: E402
from tramway.helper import infer, tessellate  # noqa: E402
from tramway.inference import distributed  # noqa: E402
from tramway.inference.bayes_factors import _bayes_factor  # noqa: E402
from tramway.inference.gradient import gradient_map  # noqa: E402
from tramway.inference.snr import infer_snr  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "spt", "fixtures")
SIGMA = 0.03


def pack(prefix, df):
    return {f"{prefix}_index": df.index.values.astype(int),
            f"{prefix}_columns": np.array(list(df.columns)),
            f"{prefix}_values": df.values.astype(float)}


class _Attrs:
    pass


class _Cells:
    """The part of tramway's Distributed that _bayes_factor / gradient_map use, with cells
    carrying map variables as attributes (what tramway.helper's overload_cells does)."""

    def __init__(self, cells, maps):
        self._d = cells
        self.adjacency = cells.adjacency
        self.space_cols = cells.space_cols
        self.cells = {}
        for i in cells:
            c = _Attrs()
            for col in ("n", "V", "V_prior", "diffusivity"):
                if i in maps.index and col in maps:
                    setattr(c, col, maps.loc[i, col])
            for v in ("zeta_total", "zeta_spurious"):
                cols = [f"{v} {a}" for a in cells.space_cols]
                if i in maps.index and all(k in maps for k in cols):
                    setattr(c, v, maps.loc[i, cols].values.astype(float))
            self.cells[i] = c

    def __iter__(self):
        return iter(self.cells)

    def __getitem__(self, i):
        return self.cells[i]

    def keys(self):
        return self.cells.keys()

    def get_localization_error(self, kwargs):
        return self._d.get_localization_error(kwargs)

    def grad(self, i, X, reverse_index, **kw):
        return self._d.grad(i, X, reverse_index, **kw)


def main():
    df = simulate()
    lb, ub = np.array([-1.2, -1.2]), np.array([1.2, 1.2])
    part = tessellate(df, "grid", count_per_dim=[6, 6], lower_bound=lb, upper_bound=ub,
                      verbose=False)
    out = {"sigma": SIGMA}
    conj = infer(part, "d.conj_prior", sigma=SIGMA, verbose=False)
    out.update(pack("conj", conj.maps))
    # tramway.helper.infer(part, 'snr') crashes in 0.7 (infer_snr returns a Maps that the
    # helper wraps again: "TypeError: DataFrame expected"); call the plugin function directly
    snr = infer_snr(distributed(part), sigma=SIGMA, verbose=False)
    snr_df = snr.maps if hasattr(snr, "maps") else snr
    out.update(pack("snr", snr_df))
    cells = distributed(part)
    fake = _Cells(cells, snr_df)
    np.random.seed(0)
    _bayes_factor(fake, sigma=SIGMA, verbose=False)
    cols = ["lg_B", "force", "min_n", "groups", "group_lg_B", "group_forces"]
    idx = np.array(sorted(fake.keys()))
    vals = np.array([[float(np.asarray(getattr(fake[i], c, np.nan)).squeeze()) for c in cols]
                     for i in idx])
    out.update({"bf_index": idx, "bf_columns": np.array(cols), "bf_values": vals})
    g = gradient_map(fake, feature="diffusivity")
    out.update(pack("grad", g))
    path = os.path.join(OUT, "modes_grid6.npz")
    np.savez(path, **out)
    for k in ("conj", "snr", "bf", "grad"):
        print(k, list(out[f"{k}_columns"]), out[f"{k}_values"].shape)
    print("->", path)


if __name__ == "__main__":
    main()
