"""Make TRamWAy 0.7 reference fixtures for the spt periphery (conjugate prior, Bayes factors).

Run with the original installed in a separate venv (never in the project venv):

    /work/venvs/tramway/bin/python benchmarks/spt/make_periph_fixtures.py

Writes
  tests/spt/fixtures/periph_conj_prior.npz : simulated 2D trajectories on a 4x4 grid,
      tramway's per-translocation cell ids, dr, dt, and the output of tramway's
      ``d.conj_prior`` plugin (n, V, V_prior, zeta_total, diffusivity, ci low/high) for
      sigma = 0.02 and sigma2 = 0 (alpha = 0.95 and 0.68).
  tests/spt/fixtures/periph_bayes.npz : inputs (zeta_t, zeta_sp, n, V, V_pi, loc_error) and
      tramway's lg_B, force, min_n (``_calculate_one_bayes_factor`` / ``calculate_minimal_n``),
      and get_D_posterior / get_MAP_D / get_D_confidence_interval values (dim 1, 2, 3).
"""
import os
import warnings

import numpy as np
import pandas as pd

warnings.simplefilter("ignore")

from tramway.helper import tessellate  # noqa: E402
from tramway.inference import distributed  # noqa: E402
from tramway.inference.d_conj_prior import infer_d_conj_prior  # noqa: E402
from tramway.inference.bayes_factors.calculate_bayes_factors import (  # noqa: E402
    _calculate_one_bayes_factor, calculate_minimal_n)
from tramway.inference.bayes_factors.get_D_posterior import (  # noqa: E402
    get_D_posterior, get_MAP_D, get_D_confidence_interval)

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "spt", "fixtures")


def simulate(seed=0, n_traj=150, length=10, dt=0.05, sigma=0.02):
    """Brownian motion with drift toward the origin, D(x) = 0.1 + 0.04 x, noisy positions."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in range(n_traj):
        r = rng.uniform(-0.9, 0.9, 2)
        for k in range(length):
            noisy = r + sigma * rng.normal(size=2)
            rows.append((n + 1, noisy[0], noisy[1], k * dt))
            D = 0.1 + 0.04 * r[0]
            r = r - D * 2.0 * r * dt + np.sqrt(2 * D * dt) * rng.normal(size=2)
    return pd.DataFrame(rows, columns=["n", "x", "y", "t"])


def conj_prior_fixture():
    df = simulate()
    part = tessellate(df, "grid", count_per_dim=[4, 4], lower_bound=np.array([-1.5, -1.5]),
                      upper_bound=np.array([1.5, 1.5]))
    cells = distributed(part)
    cid, dr, dt = [], [], []
    for i in cells:
        c = cells[i]
        cid.append(np.full(len(c), i))
        dr.append(np.asarray(c.dr))
        dt.append(np.asarray(c.dt))
    out = dict(cell_id=np.concatenate(cid), dr=np.concatenate(dr), dt=np.concatenate(dt))
    for tag, kw in (("s002_a95", dict(sigma=0.02, alpha=0.95)),
                    ("s0_a95", dict(sigma2=0.0, alpha=0.95)),
                    ("s002_a68", dict(sigma=0.02, alpha=0.68))):
        maps = infer_d_conj_prior(distributed(part), trust=True, return_zeta_spurious=False, **kw)
        out[f"{tag}_index"] = maps.index.values
        for col in ("n", "V", "V_prior", "zeta_total x", "zeta_total y", "diffusivity",
                    "ci low", "ci high"):
            out[f"{tag}_{col.replace(' ', '_')}"] = maps[col].values.astype(float)
    return out


def bayes_fixture():
    rng = np.random.default_rng(3)
    rows = []
    # a spread of cells: weak / strong total force, spurious force aligned or not, small n
    cases = [
        ([0.05, -0.02], [0.03, 0.01], 30, 0.02, 0.025, 0.0004),
        ([0.4, 0.1], [0.02, 0.0], 40, 0.03, 0.02, 0.0004),
        ([0.3, 0.2], [0.6, 0.4], 25, 0.02, 0.02, 0.0004),
        ([0.1, 0.0], [0.2, 0.0], 80, 0.02, 0.02, 0.0),
        ([0.8, -0.5], [0.1, 0.3], 15, 0.05, 0.03, 0.0),
        ([0.02, 0.01], [0.0, 0.0], 50, 0.02, 0.02, 0.0004),
    ]
    for _ in range(6):
        cases.append((list(rng.normal(scale=0.3, size=2)), list(rng.normal(scale=0.3, size=2)),
                      int(rng.integers(5, 120)), float(rng.uniform(0.01, 0.05)),
                      float(rng.uniform(0.01, 0.05)), float(rng.choice([0.0, 0.0004, 0.0009]))))
    zt, zs, ns, Vs, Vps, les, lgB, force, min_n = [], [], [], [], [], [], [], [], []
    for z_t, z_s, n, V, Vp, le in cases:
        z_t, z_s = np.array(z_t), np.array(z_s)
        b, f, m = _calculate_one_bayes_factor(z_t, z_s, n, V, Vp, le, 2, B_threshold=10,
                                              bl_need_min_n=True)
        zt.append(z_t); zs.append(z_s); ns.append(n); Vs.append(V); Vps.append(Vp)
        les.append(le); lgB.append(b); force.append(f); min_n.append(m)
    out = dict(zeta_t=np.array(zt), zeta_sp=np.array(zs), n=np.array(ns, dtype=float),
               V=np.array(Vs), V_pi=np.array(Vps), loc_error=np.array(les),
               lg_B=np.array(lgB, dtype=float), force=np.array(force, dtype=float),
               min_n=np.array(min_n, dtype=float))
    # D posterior
    post_rows, d_grid, post_vals, maps, cis = [], [], [], [], []
    pcases = [(1, 30, [0.2], 0.02, 0.03, 0.05, 0.0004),
              (2, 30, [0.2, -0.1], 0.02, 0.03, 0.05, 0.0004),
              (2, 12, [0.0, 0.5], 0.04, 0.02, 0.02, 0.0),
              (3, 50, [0.1, 0.1, -0.3], 0.06, 0.05, 0.05, 0.0009),
              (2, 200, [0.05, 0.0], 0.02, 0.02, 0.05, 0.0004)]
    for dim, n, z, V, Vp, dt, s2 in pcases:
        post = get_D_posterior(n, np.array(z), V, Vp, dt, s2, dim)
        mapd = get_MAP_D(n, np.array(z), V, Vp, dt, s2, dim)
        m2, ci = get_D_confidence_interval(0.95, n, np.array(z), V, Vp, dt, s2, dim)
        grid = mapd * np.array([0.3, 0.6, 0.9, 1.0, 1.1, 1.5, 2.5])
        grid = grid[grid > s2 / dt]
        grid = np.pad(grid, (0, 7 - grid.size), constant_values=np.nan)
        post_vals.append([post(d) if np.isfinite(d) else np.nan for d in grid])
        d_grid.append(grid)
        maps.append(mapd)
        cis.append(ci)
        post_rows.append([dim, n, V, Vp, dt, s2] + list(z) + [0.0] * (3 - dim))
    out.update(post_params=np.array(post_rows), post_D=np.array(d_grid),
               post_values=np.array(post_vals), post_map=np.array(maps), post_ci=np.array(cis))
    return out


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    np.savez(os.path.join(OUT, "periph_conj_prior.npz"), **conj_prior_fixture())
    np.savez(os.path.join(OUT, "periph_bayes.npz"), **bayes_fixture())
    print("wrote", OUT)
