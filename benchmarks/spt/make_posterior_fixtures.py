"""Make TRamWAy 0.7 reference fixtures for jaxinfer.spt core tests.

Run with the original installed in a separate venv (never in the project venv):

    /work/venvs/tramway/bin/python benchmarks/spt/make_posterior_fixtures.py

Writes tests/spt/fixtures/core_<name>.npz: the simulated trajectories, tramway's partition as
its inference saw it (per-translocation cell id, dr, dt, cell centres, volumes, adjacency, the
smooth-mode cell index), and tramway's own objective values (smooth D / DD / DF / DV, the
stochastic DV local posteriors summed, unsmooth D) at x0 and perturbed parameter vectors, plus
grad1 and delta0 of a random field at every cell.
"""
import os
import sys
import warnings

import numpy as np
import pandas as pd

warnings.simplefilter("ignore")

from tramway.helper import tessellate  # noqa: E402
from tramway.inference import distributed  # noqa: E402
from tramway.inference.base import smooth_infer_init  # noqa: E402
from tramway.inference.gradient import get_grad_kwargs  # noqa: E402
from tramway.inference.gradient import delta1, gradn  # noqa: E402
from tramway.inference.standard_d import d_neg_posterior1, smooth_d_neg_posterior  # noqa: E402
from tramway.inference.standard_ddrift import dd_neg_posterior1  # noqa: E402
from tramway.inference.standard_df import df_neg_posterior1  # noqa: E402
from tramway.inference.dv import dv_neg_posterior1  # noqa: E402
from tramway.inference.standard_ddrift import smooth_dd_neg_posterior  # noqa: E402
from tramway.inference.standard_df import smooth_df_neg_posterior  # noqa: E402
from tramway.inference.dv import DV, dv_neg_posterior  # noqa: E402
from tramway.inference.stochastic_dv import LocalDV, local_dv_neg_posterior  # noqa: E402
from tramway.inference.unsmooth_d import d_neg_posterior as unsmooth_d_neg_posterior  # noqa: E402
from tramway.core.chain import ChainArray  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "spt", "fixtures")


def simulate(seed=0, n_traj=300, length=12, dt=0.05, sigma=0.02):
    """Overdamped Langevin in V(x,y) = 1.5 (x^2 + y^2) (kT units), D(x,y) = 0.12 + 0.05 x."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in range(n_traj):
        r = rng.uniform(-0.9, 0.9, 2)
        for k in range(length):
            noisy = r + sigma * rng.normal(size=2)
            rows.append((n + 1, noisy[0], noisy[1], k * dt))
            D = 0.12 + 0.05 * r[0]
            gradV = 3.0 * r
            r = r - D * gradV * dt + np.sqrt(2 * D * dt) * rng.normal(size=2)
    return pd.DataFrame(rows, columns=["n", "x", "y", "t"])


def export(name, df, part, sigma=0.03):
    cells = distributed(part)
    sigma2 = sigma * sigma
    index, reverse_index, n, dt_mean, D0, min_d, D_bounds, _ = smooth_infer_init(
        cells, sigma2=sigma2
    )
    index = np.asarray(index)
    grad_kwargs = get_grad_kwargs({})
    # per-translocation arrays, as tramway's cells hold them
    cid, dr, dt, origin = [], [], [], []
    for i in cells:
        c = cells[i]
        k = len(c)
        cid.append(np.full(k, i))
        dr.append(np.asarray(c.dr))
        dt.append(np.asarray(c.dt))
        origin.append(np.asarray(c.origins[["x", "y"]]))
    cid, dr, dt, origin = map(np.concatenate, (cid, dr, dt, origin))
    distributed_ids = np.array(list(cells.keys()))
    volumes = np.array([cells[i].volume for i in distributed_ids], dtype=float)
    A = cells.adjacency.tocsr()
    centers = np.asarray(part.tessellation.cell_centers, dtype=float)
    # objectives
    m = len(index)
    rng = np.random.default_rng(1)
    out = dict(
        x=df["x"].values, y=df["y"].values, t=df["t"].values, n=df["n"].values,
        cell_id=cid, dr=dr, dt=dt, origin=origin, distributed_ids=distributed_ids,
        volumes=volumes, adj_indptr=A.indptr, adj_indices=A.indices, centers=centers,
        index=index, dt_mean=dt_mean, D_initial=D0, D_lower=np.array([b[0] for b in D_bounds]),
        sigma2=sigma2,
        point_cell=np.asarray(part.cell_index),
    )
    # V initial as inferDV computes it
    vol = np.array([cells[i].volume for i in index])
    density = n / vol
    out["V_initial"] = np.log(np.max(density)) - np.log(density)
    # random field: grad1 / delta0 at every cell of `index`
    X = rng.normal(size=m)
    g = np.full((m, 2), np.nan)
    for j, i in enumerate(index):
        gi = cells.grad(i, X, reverse_index, **grad_kwargs)
        if gi is not None:
            g[j] = gi
    cells.clear_caches()
    d0 = []
    for j, i in enumerate(index):
        d = cells.local_variation(i, X, reverse_index)
        d0.append(0.0 if d is None else float(np.sum(d * d)))
    cells.clear_caches()
    out.update(field=X, grad1=g, delta0_sq=np.array(d0))
    # other operators and neighbour selections
    for key, kw in (("grad1_angle05", dict(selection_angle=0.5)),
                    ("grad1_angle07", dict(selection_angle=0.7)),
                    ("grad1_eps", dict(eps=0.05))):
        cells.clear_caches()
        gk = np.full((m, 2), np.nan)
        for j, i in enumerate(index):
            gi = cells.grad(i, X, reverse_index, **kw)
            if gi is not None:
                gk[j] = gi
        out[key] = gk
    cells.clear_caches()
    gn = np.full((m, 2), np.nan)
    d1 = np.zeros(m)
    for j, i in enumerate(index):
        gi = gradn(cells, i, X, reverse_index)
        if gi is not None:
            gn[j] = gi
    cells.clear_caches()
    for j, i in enumerate(index):
        di = delta1(cells, i, X, reverse_index, **grad_kwargs)
        d1[j] = 0.0 if di is None else float(np.sum(di * di))
    cells.clear_caches()
    out.update(gradn=gn, delta1_sq=d1)

    D_perturbed = D0 * np.exp(0.3 * rng.normal(size=m))
    drift = 0.5 * rng.normal(size=(m, 2))
    force = 2.0 * rng.normal(size=(m, 2))
    V = out["V_initial"] + 0.3 * rng.normal(size=m)
    out.update(D_perturbed=D_perturbed, drift=drift, force=force, V_perturbed=V)
    args_common = dict(sigma2=sigma2, dt_mean=dt_mean, index=index, reverse_index=reverse_index)

    def run_d(D, dprior, jeff):
        cells.clear_caches()
        for c in cells.values():
            c.cache = None
        return smooth_d_neg_posterior(D, cells, sigma2, dprior, jeff, dt_mean, None, index,
                                      reverse_index, grad_kwargs)

    def run_dd(D, a, dprior, aprior, jeff):
        cells.clear_caches()
        dd = ChainArray("D", D.copy(), "drift", a.copy())
        return smooth_dd_neg_posterior(dd.combined, dd, cells, sigma2, dprior, aprior, jeff,
                                       dt_mean, None, index, reverse_index, grad_kwargs)

    def run_df(D, F, dprior, fprior, jeff):
        cells.clear_caches()
        dfc = ChainArray("D", D.copy(), "F", F.copy())
        return smooth_df_neg_posterior(dfc.combined, dfc, cells, sigma2, dprior, fprior, jeff,
                                       dt_mean, None, index, reverse_index, grad_kwargs)

    def run_dv(D, V, dprior, vprior, jeff):
        cells.clear_caches()
        dv = DV(D.copy(), V.copy(), dprior, vprior, 0)
        return dv_neg_posterior(dv.combined, dv, cells, sigma2, jeff, dt_mean, index,
                                reverse_index, grad_kwargs, 0.0, False, [])

    def run_sdv(D, V, dprior, vprior, jeff):
        cells.clear_caches()
        dv = LocalDV(D.copy(), V.copy(), dprior, vprior, None, None, 0)
        dv.logger = None
        x = dv.combined
        return sum(local_dv_neg_posterior(j, x, dv, cells, sigma2, 1.0 if jeff else False,
                                          dt_mean, index, reverse_index, grad_kwargs)
                   for j in range(m))

    def run_d1(D, dprior, jeff):
        cells.clear_caches()
        for c in cells.values():
            c.cache = None
        return d_neg_posterior1(D, cells, sigma2, dprior, jeff, dt_mean, None, index,
                                reverse_index, grad_kwargs)

    def run_dd1(D, a, dprior, aprior, jeff):
        cells.clear_caches()
        dd = ChainArray("D", D.copy(), "drift", a.copy())
        return dd_neg_posterior1(dd.combined, dd, cells, sigma2, dprior, aprior, jeff,
                                 dt_mean, None, index, reverse_index, grad_kwargs)

    def run_df1(D, F, dprior, fprior, jeff):
        cells.clear_caches()
        dfc = ChainArray("D", D.copy(), "F", F.copy())
        return df_neg_posterior1(dfc.combined, dfc, cells, sigma2, dprior, fprior, jeff,
                                 dt_mean, None, index, reverse_index, grad_kwargs)

    def run_dv1(D, V, dprior, vprior, jeff):
        cells.clear_caches()
        dv = DV(D.copy(), V.copy(), dprior, vprior, 0)
        return dv_neg_posterior1(dv.combined, dv, cells, sigma2, jeff, dt_mean, index,
                                 reverse_index, grad_kwargs, 0.0, False, [])

    z = np.zeros((m, 2))
    cases = []
    cases.append(("d.delta0", dict(D=D_perturbed, diffusivity_prior=10.0, jeffreys_prior=True),
                  run_d1(D_perturbed, 10.0, True)))
    cases.append(("dd.delta0", dict(D=D_perturbed, drift=drift, diffusivity_prior=10.0,
                                    drift_prior=2.0, jeffreys_prior=False),
                  run_dd1(D_perturbed, drift, 10.0, 2.0, False)))
    cases.append(("df.delta0", dict(D=D_perturbed, force=force, diffusivity_prior=10.0,
                                    force_prior=0.5, jeffreys_prior=True),
                  run_df1(D_perturbed, force, 10.0, 0.5, True)))
    cases.append(("dv.delta0", dict(D=D_perturbed, V=V, diffusivity_prior=5.0,
                                    potential_prior=2.0, jeffreys_prior=True),
                  run_dv1(D_perturbed, V, 5.0, 2.0, True)))
    for D in (D0, D_perturbed):
        for dprior, jeff in ((None, False), (10.0, False), (10.0, True)):
            cases.append(("d", dict(D=D, diffusivity_prior=dprior, jeffreys_prior=jeff),
                          run_d(D, dprior, jeff)))
        for a, aprior in ((z, None), (drift, 2.0)):
            cases.append(("dd", dict(D=D, drift=a, diffusivity_prior=10.0, drift_prior=aprior,
                                     jeffreys_prior=True),
                          run_dd(D, a, 10.0, aprior, True)))
        for F, fprior in ((z, None), (force, 0.5)):
            cases.append(("df", dict(D=D, force=F, diffusivity_prior=10.0, force_prior=fprior,
                                     jeffreys_prior=True),
                          run_df(D, F, 10.0, fprior, True)))
        for Vv in (out["V_initial"], V):
            for dprior, vprior, jeff in ((None, None, False), (10.0, 1.0, False), (5.0, 2.0, True)):
                cases.append(("dv", dict(D=D, V=Vv, diffusivity_prior=dprior,
                                         potential_prior=vprior, jeffreys_prior=jeff),
                              run_dv(D, Vv, dprior, vprior, jeff)))
                cases.append(("stochastic.dv", dict(D=D, V=Vv, diffusivity_prior=dprior,
                                                    potential_prior=vprior, jeffreys_prior=jeff),
                              run_sdv(D, Vv, dprior, vprior, jeff)))
    # unsmooth D: per-cell objective summed over all distributed cells
    for jeff in (False, True):
        tot = 0.0
        for i in distributed_ids:
            c = cells[i]
            c.cache = None
            D = float(np.mean(c.dr * c.dr) / (2 * np.mean(c.dt))) * 1.1
            tot += unsmooth_d_neg_posterior(D, c, sigma2, jeff, np.mean(c.dt), -1.0)
        cases.append(("unsmooth.d", dict(factor=1.1, jeffreys_prior=jeff), tot))
    # store cases as flat arrays
    for k, (mode, params, value) in enumerate(cases):
        out[f"case{k}_mode"] = np.array(mode)
        out[f"case{k}_value"] = np.array(value, dtype=float)
        for key, val in params.items():
            out[f"case{k}_{key}"] = np.array(np.nan if val is None else val, dtype=float)
    out["ncases"] = len(cases)
    path = os.path.join(OUT, f"core_{name}.npz")
    np.savez_compressed(path, **out)
    print(name, "cells:", len(distributed_ids), "index:", m, "translocations:", len(dt),
          "cases:", len(cases), "->", path)


def main():
    df = simulate()
    lb, ub = np.array([-1.2, -1.2]), np.array([1.2, 1.2])
    grid = tessellate(df, "grid", count_per_dim=[6, 6], lower_bound=lb, upper_bound=ub,
                      verbose=False)
    export("grid6", df, grid)
    np.random.seed(3)
    km = tessellate(df, "kmeans", avg_location_count=150, verbose=False)
    export("kmeans", df, km)


if __name__ == "__main__":
    sys.exit(main())
