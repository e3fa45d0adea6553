"""Reference outputs of glimix-core 3.1.14 for jaxinfer.glmm's LMM, FastScanner and Kron2Sum.

Run with the original installed in a separate venv (not the project's):

    python3 -m venv /work/venvs/glimix && /work/venvs/glimix/bin/pip install glimix-core==3.1.14
    /work/venvs/glimix/bin/python benchmarks/glmm/make_lmm_fixtures.py

Writes tests/glmm/fixtures/lmm_*.npz (inputs and outputs together) and lmm_meta.json.
Data are simulated with numpy's legacy RandomState so the inputs are reproducible too.
"""

from __future__ import annotations

import json
import os
import platform
import warnings

import numpy as np

import glimix_core
from glimix_core.lmm import LMM, Kron2Sum
from numpy_sugar.linalg import economic_qs

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "glmm", "fixtures")

SCAN_KEYS = ("lml", "effsizes0", "effsizes0_se", "effsizes1", "effsizes1_se", "scale")


def genotypes(random, n, m):
    """Standardised 0/1/2 genotypes with minor-allele frequencies in [0.1, 0.5]."""
    maf = random.uniform(0.1, 0.5, m)
    G = random.binomial(2, maf, size=(n, m)).astype(float)
    G -= G.mean(0)
    sd = G.std(0)
    sd[sd == 0] = 1
    return G / sd


def lmm_case(name, seed, n, m, ncov, ncand):
    random = RandomState = np.random.RandomState(seed)
    G = genotypes(RandomState, n, m)
    K = G @ G.T / m
    X = np.column_stack([np.ones(n)] + [random.randn(n) for _ in range(ncov - 1)])
    beta_true = random.randn(ncov)
    y = X @ beta_true + G @ random.randn(m) * np.sqrt(0.5 / m) + random.randn(n) * np.sqrt(0.5)
    M = genotypes(random, n, ncand)
    QS = economic_qs(K)
    out = dict(y=y, X=X, K=K, M=M, G=G)
    for restricted in (False, True):
        tag = "reml" if restricted else "ml"
        lmm = LMM(y, X, QS, restricted=restricted)
        out[f"{tag}_lml_init"] = lmm.lml()
        lmm.fit(verbose=False)
        out[f"{tag}_lml"] = lmm.lml()
        out[f"{tag}_beta"] = lmm.beta
        out[f"{tag}_beta_covariance"] = lmm.beta_covariance
        out[f"{tag}_scale"] = lmm.scale
        out[f"{tag}_delta"] = lmm.delta
        out[f"{tag}_v0"] = lmm.v0
        out[f"{tag}_v1"] = lmm.v1
        # delta and scale fixed
        lmm = LMM(y, X, QS, restricted=restricted)
        lmm.fix("delta")
        lmm.fix("scale")
        lmm.delta = 0.3
        lmm.scale = 1.5
        lmm.fit(verbose=False)
        out[f"{tag}_fixed_lml"] = lmm.lml()
        out[f"{tag}_fixed_beta"] = lmm.beta
        out[f"{tag}_fixed_beta_covariance"] = lmm.beta_covariance
        # then delta free again, scale still fixed
        lmm.unfix("delta")
        lmm.fit(verbose=False)
        out[f"{tag}_scalefixed_lml"] = lmm.lml()
        out[f"{tag}_scalefixed_delta"] = lmm.delta
        # beta fixed, delta and scale free
        lmm = LMM(y, X, QS, restricted=restricted)
        lmm.beta = beta_true
        lmm.fix("beta")
        lmm.fit(verbose=False)
        out[f"{tag}_betafixed_lml"] = lmm.lml()
        out[f"{tag}_betafixed_delta"] = lmm.delta
        out[f"{tag}_betafixed_scale"] = lmm.scale

    # association scan from the ML fit, with all covariates and with the intercept only
    for xtag, Xs in (("multi", X), ("single", X[:, :1])):
        lmm = LMM(y, Xs, QS)
        lmm.fit(verbose=False)
        scanner = lmm.get_fast_scanner()
        out[f"scan_{xtag}_null_lml"] = scanner.null_lml()
        out[f"scan_{xtag}_null_beta"] = scanner.null_beta
        out[f"scan_{xtag}_null_beta_se"] = scanner.null_beta_se
        out[f"scan_{xtag}_null_scale"] = scanner.null_scale
        res = scanner.fast_scan(M, verbose=False)
        for key in SCAN_KEYS:
            out[f"scan_{xtag}_fast_{key}"] = res[key]
        res = scanner.scan(M[:, :3])
        for key in SCAN_KEYS:
            out[f"scan_{xtag}_set_{key}"] = res[key]
    np.savez(os.path.join(OUT, f"lmm_{name}.npz"), **out)
    return {k: float(v) for k, v in out.items() if np.ndim(v) == 0}


def kron_case(name, seed):
    random = np.random.RandomState(seed)
    n, p, c, m = 40, 3, 2, 8
    G = random.randn(n, m)
    X = np.column_stack([np.ones(n), random.randn(n)])
    A = np.eye(p)
    Y = X @ random.randn(c, p) + G @ random.randn(m, p) * 0.3 + random.randn(n, p)
    X1 = random.randn(n, 2)
    A1 = random.randn(p, 2)
    out = dict(Y=Y, X=X, A=A, G=G, X1=X1, A1=A1)
    for restricted in (False, True):
        tag = "reml" if restricted else "ml"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = Kron2Sum(Y, A, X, G, rank=1, restricted=restricted)
            out[f"{tag}_lml_init"] = model.lml()
            model.fit(verbose=False)
        out[f"{tag}_lml"] = model.lml()
        out[f"{tag}_C0"] = model.C0
        out[f"{tag}_C1"] = model.C1
        out[f"{tag}_B"] = model.B
        scanner = model.get_fast_scanner()
        out[f"{tag}_scan_null_lml"] = scanner.null_lml()
        out[f"{tag}_scan_null_scale"] = scanner.null_scale
        res = scanner.scan(A1, X1)
        for key in SCAN_KEYS:
            out[f"{tag}_scan_{key}"] = res[key]
    # full-rank C0 (rank = p): record whether the original manages
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = Kron2Sum(Y, A, X, G, rank=p)
            model.fit(verbose=False)
        out["fullrank_lml"] = model.lml()
        out["fullrank_error"] = ""
    except Exception as exc:  # glimix-core can raise 'Too many bad solutions'
        out["fullrank_lml"] = np.nan
        out["fullrank_error"] = str(exc)
    np.savez(os.path.join(OUT, f"lmm_{name}.npz"), **out)
    return {"fullrank_error": out["fullrank_error"], "ml_lml": float(out["ml_lml"])}


def kron_fullrank_case(name, seed):
    """Three traits with a full-rank genetic covariance C0: rank-1 and rank-3 fits."""
    random = np.random.RandomState(seed)
    n, p, m = 150, 3, 30
    G = random.randn(n, m) / np.sqrt(m)
    L0 = np.array([[1.0, 0, 0], [0.6, 0.8, 0], [-0.3, 0.4, 0.7]])
    C0 = L0 @ L0.T
    C1 = np.diag([0.5, 0.8, 0.6]) + 0.1
    K = np.kron(C0, G @ G.T) + np.kron(C1, np.eye(n))
    X = np.ones((n, 1))
    A = np.eye(p)
    y = np.linalg.cholesky(K) @ random.randn(n * p) + np.kron(A, X) @ np.array([1.0, -1, 0.5])
    Y = y.reshape(p, n).T
    out = dict(Y=Y, X=X, A=A, G=G, C0_true=C0, C1_true=C1)
    for rank in (1, 3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = Kron2Sum(Y, A, X, G, rank=rank)
                model.fit(verbose=False)
            out[f"rank{rank}_lml"] = model.lml()
            out[f"rank{rank}_C0"] = model.C0
            out[f"rank{rank}_error"] = ""
        except Exception as exc:
            out[f"rank{rank}_lml"] = np.nan
            out[f"rank{rank}_error"] = str(exc)
    np.savez(os.path.join(OUT, f"lmm_{name}.npz"), **out)
    return {k: str(v) for k, v in out.items() if np.ndim(v) == 0}


def main():
    os.makedirs(OUT, exist_ok=True)
    meta = {
        "glimix_core": glimix_core.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cases": {},
    }
    # K of rank 40 < n = 80: both Q0 and Q1 present
    meta["cases"]["lowrank"] = lmm_case("lowrank", 0, n=80, m=40, ncov=3, ncand=20)
    # K of full rank (m > n): no Q1
    meta["cases"]["fullrank"] = lmm_case("fullrank", 1, n=50, m=120, ncov=2, ncand=12)
    meta["cases"]["kron"] = kron_case("kron", 0)
    meta["cases"]["kron_fullrank"] = kron_fullrank_case("kron_fullrank", 5)
    with open(os.path.join(OUT, "lmm_meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1, default=str)
    print(json.dumps(meta, indent=1, default=str)[:2000])


if __name__ == "__main__":
    main()
