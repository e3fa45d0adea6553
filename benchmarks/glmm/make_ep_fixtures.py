"""Reference outputs of glimix-core 3.1.14 for jaxinfer.glmm's EP GLMMs and Gaussian processes.

Run with the original installed in a separate venv (not the project's):

    python3 -m venv /work/venvs/glimix && /work/venvs/glimix/bin/pip install glimix-core==3.1.14
    /work/venvs/glimix/bin/python benchmarks/glmm/make_ep_fixtures.py

Writes tests/glmm/fixtures/ep_*.npz (inputs and outputs together) and ep_meta.json. Data are
simulated with numpy's legacy RandomState, so the inputs are reproducible too; the seed
documents' examples (GLMMExpFam binomial, GP, ExpFamGP) are rebuilt exactly as written there.
Also stores liknorm's tilted moments on a grid of typical cavities (ep_liknorm_moments.npz).
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings

import numpy as np

import glimix_core
from glimix_core.cov import EyeCov, LinearCov, SumCov
from glimix_core.ggp import ExpFamGP
from glimix_core.glmm import GLMMExpFam, GLMMNormal
from glimix_core.gp import GP
from glimix_core.lik import BernoulliProdLik
from glimix_core.link import LogitLink
from glimix_core.mean import LinearMean, OffsetMean
from glimix_core.random import GGPSampler
from liknorm import LikNormMachine
from numpy_sugar import epsilon
from numpy_sugar.linalg import economic_qs

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "glmm", "fixtures")

# a fixed, non-trivial parameter point where the EP lml is compared without any optimiser
PROBE = dict(beta=[0.2, -0.3], scale=1.5, delta=0.3)


def glmm_data(seed, lik, n=60, m=20):
    random = np.random.RandomState(seed)
    G = random.randn(n, m)
    G -= G.mean(0)
    G /= G.std(0)
    K = G @ G.T / m
    X = np.column_stack([np.ones(n), random.randn(n)])
    beta = np.array([0.3, -0.5])
    z = X @ beta + random.multivariate_normal(np.zeros(n), 0.8 * K + 0.2 * np.eye(n))
    trials = np.ones(n)
    if lik == "binomial":
        trials = random.randint(1, 30, n).astype(float)
        y = random.binomial(trials.astype(int), 1 / (1 + np.exp(-z))).astype(float)
    elif lik == "poisson":
        y = random.poisson(np.exp(z + 1.0)).astype(float)
    elif lik == "bernoulli":
        y = (random.rand(n) < 1 / (1 + np.exp(-z))).astype(float)
    elif lik == "probit":
        y = (z + random.randn(n) > 0).astype(float)
    else:
        raise ValueError(lik)
    return y, trials, X, K


def seed_binomial_data():
    """The seed document's GLMMExpFam example, verbatim."""
    random = np.random.RandomState(0)
    nsamples = 10
    X = random.randn(nsamples, 2)
    G = random.randn(nsamples, 100)
    K = np.dot(G, G.T)
    ntrials = random.randint(1, 100, nsamples)
    z = np.dot(G, random.randn(100)) / np.sqrt(100)
    successes = np.zeros(len(ntrials), int)
    for i in range(len(ntrials)):
        successes[i] = sum(z[i] + 0.2 * random.randn(ntrials[i]) > 0)
    return successes.astype(float), ntrials.astype(float), X, K


def expfam_case(y, trials, X, K, lik):
    QS = economic_qs(K)
    lik_arg = ("binomial", trials) if lik == "binomial" else lik
    out = dict(y=y, trials=trials, X=X, Q0=QS[0][0], S0=QS[1])
    glmm = GLMMExpFam(y, lik_arg, X, QS)
    out["lml_init"] = glmm.lml()
    grad = glmm.gradient()
    out["grad_init_beta"] = grad["beta"]
    out["grad_init_logscale"] = grad["logscale"]
    out["grad_init_logitdelta"] = grad["logitdelta"]
    probe = GLMMExpFam(y, lik_arg, X, QS)
    probe.beta = PROBE["beta"][: X.shape[1]]
    probe.scale = PROBE["scale"]
    if lik != "probit":
        probe.delta = PROBE["delta"]
    out["lml_probe"] = probe.lml()
    out["probe_beta"] = probe.beta
    out["probe_scale"] = probe.scale
    out["probe_delta"] = probe.delta
    start = time.perf_counter()
    glmm.fit(verbose=False)
    out["fit_seconds"] = time.perf_counter() - start
    out["lml_fit"] = glmm.lml()
    out["beta_fit"] = glmm.beta
    out["scale_fit"] = glmm.scale
    out["delta_fit"] = glmm.delta
    out["site_eta"] = glmm.site.eta.copy()
    out["site_tau"] = glmm.site.tau.copy()
    return out, QS


def normal_case(eta, tau, X, QS):
    out = dict(eta=eta, tau=tau)
    glmm = GLMMNormal(eta, tau, X, QS)
    out["lml_init"] = glmm.lml()
    grad = glmm.gradient()
    out["grad_init_beta"] = grad["beta"]
    out["grad_init_logscale"] = grad["logscale"]
    out["grad_init_logitdelta"] = grad["logitdelta"]
    glmm.fit(verbose=False)
    out["lml_fit"] = glmm.lml()
    out["beta_fit"] = glmm.beta
    out["scale_fit"] = glmm.scale
    out["delta_fit"] = glmm.delta
    return out


def seed_linear_eye_cov(random_458):
    """glimix_core.example.linear_eye_cov with the seed document's legacy RandomState(458)."""
    X = random_458.randn(10, 11)
    X -= X.mean(0)
    X /= X.std(0)
    X /= np.sqrt(X.shape[1])
    cov_left = LinearCov(X)
    cov_left.scale = 1.0
    cov_right = EyeCov(10)
    cov_right.scale = 1.0
    return SumCov([cov_left, cov_right]), X


def seed_gp_case():
    mean = OffsetMean(10)
    mean.offset = 0.5
    cov, G = seed_linear_eye_cov(np.random.RandomState(458))
    K = cov.value().copy()
    K[np.diag_indices_from(K)] += epsilon.small
    y = np.random.RandomState(94584).multivariate_normal(mean.value(), K)
    gp = GP(y, mean, cov)
    out = dict(y=y, G=G, lml_init=gp.lml())
    gp.fit(verbose=False)
    out.update(lml_fit=gp.lml(), offset=mean.offset, scale_linear=cov._covariances[0].scale,
               scale_eye=cov._covariances[1].scale)
    return out


def gp_case(seed, n=50, m=10):
    random = np.random.RandomState(seed)
    G = random.randn(n, m) / np.sqrt(m)
    X = np.column_stack([np.ones(n), random.randn(n)])
    y = X @ np.array([1.0, -0.5]) + G @ random.randn(m) * 0.8 + random.randn(n) * 0.6
    mean = LinearMean(X)
    c0 = LinearCov(G)
    c1 = EyeCov(n)
    cov = SumCov([c0, c1])
    gp = GP(y, mean, cov)
    out = dict(y=y, X=X, G=G, lml_init=gp.lml())
    grad = gp.gradient()
    out["grad_init"] = np.array([grad["GP[0].effsizes"][0], grad["GP[0].effsizes"][1],
                                 grad["GP[1].SumCov[0].logscale"],
                                 grad["GP[1].SumCov[1].logscale"]])
    gp.fit(verbose=False)
    out.update(lml_fit=gp.lml(), effsizes=mean.effsizes, scale_linear=c0.scale,
               scale_eye=c1.scale)
    return out


def expfam_gp_seed_case():
    """The seed document's ExpFamGP example (legacy RandomState(1)): it does not reproduce."""
    mean = OffsetMean(10)
    mean.offset = 0.5
    cov, G = seed_linear_eye_cov(np.random.RandomState(458))
    lik = BernoulliProdLik(LogitLink())
    y = GGPSampler(lik, mean, cov).sample(np.random.RandomState(1))
    ggp = ExpFamGP(y, "bernoulli", mean, cov)
    out = dict(y=y, G=G, lml_init=ggp.lml())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ggp.fit(verbose=False)
            out["fit_error"] = ""
        except Exception as exc:  # the original's own failure is part of the record
            out["fit_error"] = f"{type(exc).__name__}: {exc}"
    out["n_warnings"] = len(caught)
    out.update(lml_fit=ggp.lml(), offset=mean.offset, scale_linear=cov._covariances[0].scale,
               scale_eye=cov._covariances[1].scale)
    return out


def expfam_gp_case(seed, n=30, m=8):
    random = np.random.RandomState(seed)
    G = random.randn(n, m) / np.sqrt(m)
    z = 0.4 + G @ random.randn(m) + random.randn(n) * 0.5
    y = (random.rand(n) < 1 / (1 + np.exp(-z))).astype(float)
    mean = OffsetMean(n)
    c0 = LinearCov(G)
    c1 = EyeCov(n)
    cov = SumCov([c0, c1])
    ggp = ExpFamGP(y, "bernoulli", mean, cov)
    out = dict(y=y, G=G, lml_init=ggp.lml())
    c0.scale = 1.3
    c1.scale = 0.4
    mean.offset = 0.2
    out["lml_probe"] = ggp.lml()
    c0.scale = 1.0
    c1.scale = 1.0
    mean.offset = 0.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ggp.fit(verbose=False)
    out["n_warnings"] = len(caught)
    out.update(lml_fit=ggp.lml(), offset=mean.offset, scale_linear=c0.scale, scale_eye=c1.scale)
    return out


def liknorm_grid(seed=5, size=200):
    """liknorm's tilted moments on typical cavities (precision 1e-2..1e2, |mean| <= 4)."""
    random = np.random.RandomState(seed)
    out = {}
    for name in ("bernoulli", "binomial", "poisson", "probit"):
        if name in ("bernoulli", "probit"):
            y = random.randint(0, 2, size).astype(float)
            trials = np.ones(size)
        elif name == "binomial":
            trials = random.randint(1, 60, size).astype(float)
            y = np.minimum(np.floor(random.rand(size) * (trials + 1)), trials)
        else:
            y = random.poisson(random.choice([0.5, 4.0, 30.0], size)).astype(float)
            trials = np.ones(size)
        tau = 10 ** random.uniform(-2, 2, size)
        mean = random.uniform(-4, 4, size)
        eta = mean * tau
        machine = LikNormMachine(name, 1000)
        moments = {k: np.empty(size) for k in ("log_zeroth", "mean", "variance")}
        machine.moments((y, trials) if name == "binomial" else (y,), eta, tau, moments)
        machine.finish()
        out.update({f"{name}_y": y, f"{name}_trials": trials, f"{name}_eta": eta,
                    f"{name}_tau": tau})
        out.update({f"{name}_{k}": v for k, v in moments.items()})
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    meta = {"glimix_core": glimix_core.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "probe": PROBE, "cases": {}}

    cases = {"seed_binomial": (seed_binomial_data(), "binomial")}
    for seed, lik in ((11, "binomial"), (12, "poisson"), (13, "bernoulli"), (14, "probit")):
        cases[lik] = (glmm_data(seed, lik), lik)
    normal_source = None
    for name, ((y, trials, X, K), lik) in cases.items():
        out, QS = expfam_case(y, trials, X, K, lik)
        np.savez_compressed(os.path.join(OUT, f"ep_glmm_{name}.npz"), **out)
        meta["cases"][f"ep_glmm_{name}"] = {k: float(out[k]) for k in
                                            ("lml_init", "lml_fit", "scale_fit", "delta_fit",
                                             "fit_seconds")}
        print(name, meta["cases"][f"ep_glmm_{name}"])
        if name == "binomial":
            normal_source = (out["site_eta"], out["site_tau"], X, QS)

    eta, tau, X, QS = normal_source
    keep = tau > 0
    out = normal_case(eta[keep], tau[keep], X[keep], economic_qs(cases["binomial"][0][3][
        np.ix_(keep, keep)]))
    out["keep"] = keep
    np.savez_compressed(os.path.join(OUT, "ep_glmm_normal.npz"), **out)
    meta["cases"]["ep_glmm_normal"] = {k: float(out[k]) for k in ("lml_init", "lml_fit")}

    for name, fun in (("ep_gp_seed", seed_gp_case), ("ep_gp_linear", lambda: gp_case(21)),
                      ("ep_expfamgp_seed", expfam_gp_seed_case),
                      ("ep_expfamgp_bernoulli", lambda: expfam_gp_case(22))):
        out = fun()
        np.savez_compressed(os.path.join(OUT, f"{name}.npz"), **out)
        meta["cases"][name] = {k: (float(v) if np.ndim(v) == 0 and not isinstance(v, str)
                                   else (v if isinstance(v, str) else None))
                               for k, v in out.items() if k.startswith(("lml", "fit_error"))}
        print(name, meta["cases"][name])

    np.savez_compressed(os.path.join(OUT, "ep_liknorm_moments.npz"), **liknorm_grid())
    with open(os.path.join(OUT, "ep_meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
