"""Helpers shared by the spt core tests: load TRamWAy 0.7 fixtures (see
benchmarks/spt/make_posterior_fixtures.py) and rebuild Cells as TRamWAy saw them."""

import os

import numpy as np
import pandas as pd

from jaxinfer.spt.cells import cells_from_arrays

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
NAMES = ("grid6", "kmeans")


def load(name):
    f = np.load(os.path.join(FIXTURES, f"core_{name}.npz"))
    return {k: f[k] for k in f.files}


def trajectories(f):
    return pd.DataFrame(dict(n=f["n"], x=f["x"], y=f["y"], t=f["t"]))


def tramway_cells(f):
    """All distributed (non-empty) cells, from the arrays TRamWAy's cells held."""
    nl = f["centers"].shape[0]
    vol = np.full(nl, np.nan)
    vol[f["distributed_ids"]] = f["volumes"]
    ip, ix = f["adj_indptr"], f["adj_indices"]
    adj = [ix[ip[i]:ip[i + 1]] for i in range(nl)]
    return cells_from_arrays(f["cell_id"], f["dr"], f["dt"], f["centers"], vol, adj)


def cases(f):
    out = []
    for k in range(int(f["ncases"])):
        d = {key[len(f"case{k}_"):]: f[key] for key in f if key.startswith(f"case{k}_")}
        mode = str(d.pop("mode"))
        value = float(d.pop("value"))
        params = {}
        for key, v in d.items():
            if v.ndim == 0:
                v = float(v)
                params[key] = None if np.isnan(v) else v
            else:
                params[key] = v
        out.append((mode, params, value))
    return out
