"""Regenerate jaxinfer/data/spt_demo.txt (+ spt_demo.json): simulated trajectories in the
known fields of :func:`jaxinfer.spt.simulate.demo_fields`.

    .venv/bin/python benchmarks/spt/make_demo_data.py
"""

import json
import os

import jax

jax.config.update("jax_enable_x64", True)

from jaxinfer.spt import simulate as sim  # noqa: E402

SEED = 20240601
PARAMS = dict(n_trajectories=4600, mean_length=10, min_length=2, max_length=40, dt=0.05,
              lower_bound=[-1.6, -1.6], upper_bound=[1.6, 1.6], reflect=True, sigma=0.02,
              substeps=5, convention="ito")
# the field of view: trajectories are cropped to it (split where they leave it), so that the
# reflecting walls of the simulation box leave no artefact in the data
WINDOW = dict(lower_bound=[-1.0, -1.0], upper_bound=[1.0, 1.0])


def main():
    root = os.path.join(os.path.dirname(__file__), "..", "..", "jaxinfer", "data")
    diffusivity, potential = sim.demo_fields()
    df = sim.simulate_trajectories(jax.random.PRNGKey(SEED), diffusivity, potential, **PARAMS)
    df = sim.crop_to_window(df, **WINDOW)
    path = os.path.join(root, "spt_demo.txt")
    with open(path, "w") as fd:
        for n, x, y, t in df[["n", "x", "y", "t"]].itertuples(index=False):
            fd.write(f"{n}\t{x:.3f}\t{y:.3f}\t{t:.2f}\n")
    meta = dict(
        description="Simulated overdamped Langevin trajectories (TRamWAy headerless layout: "
                    "n x y t; µm, s) for `jaxinfer demo`.",
        generator="benchmarks/spt/make_demo_data.py",
        function="jaxinfer.spt.simulate.simulate_trajectories",
        key=f"jax.random.PRNGKey({SEED})", x64=True,
        diffusivity="0.2 + 0.1 x  (µm²/s)",
        potential="-2 exp(-|r - (0.2, -0.1)|² / (2 * 0.4²))  (k_B T)",
        fields="jaxinfer.spt.simulate.demo_fields()",
        rows=int(len(df)), trajectories=int(df["n"].nunique()),
        translocations=int(len(df) - df["n"].nunique()),
        parameters=PARAMS, crop_to_window=WINDOW)
    with open(os.path.join(root, "spt_demo.json"), "w") as fd:
        json.dump(meta, fd, indent=2, ensure_ascii=False)
    print(f"wrote {path}: {len(df)} rows, {os.path.getsize(path) / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
