"""Coverage of the mixture's NUTS credible intervals over seeds (simulated truth).

For each seed a 400-patient cohort (2 subgroups) is drawn from a known 2-component mixture
over a 2-LNL graph (CT + MRI); ``em.sample_fixed_mixture`` (coefficients fixed by the true
assignments, flat prior on [0, 1]) samples the 8 component parameters (200 warmup + 300
draws, started at the truth), and the 95% equal-tailed intervals are checked against the
truth. Writes benchmarks/results/mixture_coverage.json.

Run: .venv/bin/python benchmarks/mixture/coverage.py [num_seeds]   (one compilation, then
about a CPU-second a seed)

The suite runs a smaller version (6 seeds of 200 patients, 100 warmup + 150 draws:
tests/mixture/test_sampling.py::test_credible_intervals_cover_the_truth_over_seeds).
"""

import json
import pathlib
import sys
import tempfile
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

from jaxinfer.mixture import LymphMixture, em, utils  # noqa: E402
from jaxinfer.mixture.simulate import COMPONENT_COL, SUBSITE_COL, draw_mixture_cohort  # noqa: E402

GRAPH = {("tumor", "T"): ["I", "II"], ("lnl", "I"): ["II"], ("lnl", "II"): []}
TRUTH = [{"TtoI_spread": 0.6, "TtoII_spread": 0.1, "ItoII_spread": 0.3, "late_p": 0.6},
         {"TtoI_spread": 0.1, "TtoII_spread": 0.5, "ItoII_spread": 0.2, "late_p": 0.4}]
COEFS = np.array([[0.8, 0.3], [0.2, 0.7]])
MODALITIES = {"CT": (0.76, 0.81), "MRI": (0.63, 0.81)}
OUT = pathlib.Path(__file__).resolve().parents[1] / "results" / "mixture_coverage.json"


def intervals(seed, folder):
    early = np.asarray(utils.binom_pmf(np.arange(11), 10, 0.3))
    table = draw_mixture_cohort(GRAPH, TRUTH, COEFS, {"a": 200, "b": 200}, MODALITIES,
                                {"early": early, "late": utils.late_binomial}, [0.6, 0.4],
                                jax.random.PRNGKey(100 + seed))
    model = LymphMixture(model_kwargs={"graph_dict": GRAPH}, num_components=2)
    model.set_distribution("early", early)
    model.set_distribution("late", utils.late_binomial)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.load_patient_data(table, split_by=SUBSITE_COL, mapping=lambda x: x)
    for name, (spec, sens) in MODALITIES.items():
        model.set_modality(name, spec, sens)
    model.set_params(**{f"{c}_{k}": v for c in range(2) for k, v in TRUTH[c].items()})
    latent = np.eye(2)[model.patient_data[COMPONENT_COL].to_numpy().astype(int)]
    _, chain = em.sample_fixed_mixture(model, steps=300, num_warmup=200, latent=latent,
                                       filename=str(pathlib.Path(folder) / f"s{seed}.ckpt"),
                                       checkpoint_every=500, seed=seed)
    return np.quantile(chain, [0.025, 0.975], axis=0)


def main(num_seeds=6):
    truth = np.array([v for c in range(2) for v in TRUTH[c].values()])
    names = [f"{c}_{k}" for c in range(2) for k in TRUTH[c]]
    rows, t0 = [], time.process_time()
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(num_seeds):
            lo, hi = intervals(seed, folder)
            rows.append({"seed": seed, "lower": lo.tolist(), "upper": hi.tolist(),
                         "covered": ((lo <= truth) & (truth <= hi)).tolist()})
    covered = np.array([r["covered"] for r in rows])
    result = {"parameters": names, "truth": truth.tolist(), "nominal": 0.95,
              "intervals": int(covered.size), "covered": int(covered.sum()),
              "coverage": float(covered.mean()),
              "per_parameter": dict(zip(names, covered.mean(axis=0).tolist())),
              "cpu_seconds": time.process_time() - t0, "seeds": rows}
    OUT.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("intervals", "covered", "coverage",
                                             "per_parameter", "cpu_seconds")}, indent=1))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
