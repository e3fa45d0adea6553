"""Sampling efficiency: NumPyro NUTS (jaxinfer) vs emcee, effective samples per second.

    .venv/bin/python benchmarks/mixture/bench_sampling.py [--emcee-path /tmp/H6/emcee]

lymixture's own emcee samplers crash (its module RNG is a Generator, the code calls
``randn``), so emcee runs here on the same target as NUTS: the incomplete-data
log-likelihood of em.sample_fixed_mixture (coefficients fixed to the mean EM
responsibilities, flat prior on [0, 1]^d, -inf outside), as one jitted JAX function
vmapped over the walkers (emcee's ``vectorize=True``), i.e. emcee at its fastest on our
likelihood. Cohort: bench_em.py's (500 patients, 4 LNLs, 2 components, 4 subgroups, CT +
MRI, 20% missing); both samplers start at the EM optimum. Defaults: NUTS 200 warmup + 400 draws; emcee 32 walkers x 3000 steps,
half burn-in. ESS is ArviZ's bulk ESS (emcee:
its walkers as chains, after the burn-in), reported as the minimum and median over the 16
parameters; times are warm (after one compiling run) wall seconds of the sampling only.
emcee 3 is pure Python + NumPy: ``pip install --target DIR emcee`` and pass DIR if it is
not installed. Writes benchmarks/results/mixture_sampling.json.
"""

import argparse
import json
import pathlib
import sys
import tempfile
import time
import warnings

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_em import build, cohort  # noqa: E402

from jaxinfer.mixture import _core, em  # noqa: E402

OUT = pathlib.Path(__file__).resolve().parents[1] / "results" / "mixture_sampling.json"


def ess_summary(idata):
    import arviz as az
    ess = az.ess(idata, method="bulk")
    values = np.array([float(ess[v]) for v in ess.data_vars])
    return {"min": float(values.min()), "median": float(np.median(values))}


def nuts(model, warmup, draws, folder):
    kwargs = dict(steps=draws, num_warmup=warmup, checkpoint_every=warmup + draws, seed=1)
    t0 = time.perf_counter()
    em.sample_fixed_mixture(model, filename=f"{folder}/a.ckpt", **kwargs)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    idata, chain = em.sample_fixed_mixture(model, filename=f"{folder}/b.ckpt", **kwargs)
    seconds = time.perf_counter() - t0
    ess = ess_summary(idata)
    return {"warmup": warmup, "draws": draws, "seconds": seconds, "first_call_seconds": first,
            "ess": ess, "ess_per_second": {k: v / seconds for k, v in ess.items()}}


def run_emcee(model, walkers_per_dim, steps, burn):
    import arviz as az
    import emcee

    thetas, coefs, data = model.arrays()
    k, d = thetas.shape

    @jax.jit
    def log_prob(flat):                      # (walkers, k * d) -> (walkers,)
        def one(x):
            inside = jnp.all((x > 0) & (x < 1))
            ll = _core.incomplete_loglik(jnp.clip(x, 1e-12, 1 - 1e-12).reshape(k, d), coefs,
                                         model.spec, data)
            return jnp.where(inside, ll, -jnp.inf)
        return jax.vmap(one)(flat)

    ndim = k * d
    walkers = walkers_per_dim * ndim
    rng = np.random.default_rng(0)
    start = np.clip(np.asarray(thetas).reshape(-1) + 1e-3 * rng.standard_normal((walkers, ndim)),
                    1e-4, 1 - 1e-4)
    fn = lambda x: np.asarray(log_prob(jnp.asarray(x)))  # noqa: E731
    fn(start)  # compile
    np.random.seed(1)  # emcee draws its moves from NumPy's global RandomState
    sampler = emcee.EnsembleSampler(walkers, ndim, fn, vectorize=True)
    t0 = time.perf_counter()
    sampler.run_mcmc(start, steps, progress=False)
    seconds = time.perf_counter() - t0
    chain = sampler.get_chain(discard=burn)                       # (steps - burn, walkers, ndim)
    idata = az.from_dict(posterior={f"p{j}": np.swapaxes(chain[..., j], 0, 1)
                                    for j in range(ndim)})
    ess = ess_summary(idata)
    return {"walkers": walkers, "steps": steps, "burn_in": burn, "seconds": seconds,
            "acceptance": float(np.mean(sampler.acceptance_fraction)), "ess": ess,
            "ess_per_second": {k: v / seconds for k, v in ess.items()}}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--emcee-path", default="/tmp/H6/emcee")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--draws", type=int, default=400)
    parser.add_argument("--emcee-steps", type=int, default=3000)
    args = parser.parse_args()
    sys.path.append(args.emcee_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build(cohort())
    rng = np.random.default_rng(7)
    model.set_params(**{n: float(rng.uniform(0.05, 0.95)) for n in model.get_params()})
    fit = em.fit(model, atol=1e-3, maxiter=500)
    model.set_resps(em.expectation(model))
    theirs = run_emcee(model, 2, args.emcee_steps, args.emcee_steps // 2)
    print("emcee", theirs, flush=True)
    with tempfile.TemporaryDirectory() as folder:
        ours = nuts(model, args.warmup, args.draws, folder)
    import emcee
    result = {"cohort": "bench_em.py's: 500 patients, 4 LNLs, 2 components, 4 subgroups",
              "em_loglik": float(fit.extra["loglik"]), "nuts": ours,
              "emcee": {**theirs, "version": emcee.__version__},
              "ratio_min_ess_per_second": ours["ess_per_second"]["min"]
              / theirs["ess_per_second"]["min"],
              "ratio_median_ess_per_second": ours["ess_per_second"]["median"]
              / theirs["ess_per_second"]["median"]}
    OUT.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
