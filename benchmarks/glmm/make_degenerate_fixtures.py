"""glimix-core 3.1.14's answers for degenerate candidates (tests/glmm/test_degenerate.py).

Real genotype files are full of monomorphic SNPs (a constant column: a multiple of the
intercept), all-zero columns, exact duplicates of a covariate, and the odd candidate that
fits the trait exactly. glimix-core solves such systems by least squares (numpy-sugar's
``rsolve``: ``lstsq`` with ``rcond = sqrt(eps)``; for one covariate a Householder 2x2 solve)
and gives finite numbers; this script records them.

Run in a separate venv holding the original (not the project's):

    python3 -m venv /tmp/glimix-venv && /tmp/glimix-venv/bin/pip install glimix-core==3.1.14
    /tmp/glimix-venv/bin/python benchmarks/glmm/make_degenerate_fixtures.py

Writes tests/glmm/fixtures/degenerate.npz (inputs and outputs together).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

import glimix_core
from glimix_core.glmm import GLMMNormal
from glimix_core.lmm import LMM, FastScanner, Kron2Sum
from numpy_sugar.linalg import economic_qs

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "glmm", "fixtures")
SCAN_KEYS = ("lml", "effsizes0", "effsizes0_se", "effsizes1", "effsizes1_se", "scale")


def standardised(random, n, m):
    G = random.binomial(2, random.uniform(0.1, 0.5, m), size=(n, m)).astype(float)
    return (G - G.mean(0)) / G.std(0)


def main():
    random = np.random.RandomState(5)
    n = 40
    G = standardised(random, n, 30)
    K = G @ G.T / G.shape[1]
    QS = economic_qs(K)
    out = dict(K=K, glimix_core_version=glimix_core.__version__)
    g = standardised(random, n, 1)[:, 0]
    for ncov in (1, 2):
        X = np.column_stack([np.ones(n)] + [random.randn(n) for _ in range(ncov - 1)])
        y = X @ random.randn(ncov) + 0.5 * g + G @ random.randn(30) * 0.1 + random.randn(n)
        lmm = LMM(y, X, QS)
        lmm.fit(verbose=False)
        v0, v1 = lmm.v0, lmm.v1
        scanner = FastScanner(y, X, ((QS[0][0], QS[0][1]), v0 * QS[1]), v1)
        # candidates: ordinary, zero, the intercept, a monomorphic SNP (2·1), the last
        # covariate, a duplicate of the ordinary one, and y itself (an exact fit)
        M = np.column_stack([g, np.zeros(n), np.ones(n), 2 * np.ones(n), X[:, -1], g, y])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fast = scanner.fast_scan(M, verbose=False)
            sets = {"dup": np.column_stack([g, g]), "zero": np.column_stack([g, np.zeros(n)]),
                    "intercept": np.column_stack([g, np.ones(n)])}
            scans = {name: scanner.scan(S) for name, S in sets.items()}
        tag = f"c{ncov}"
        out.update({f"{tag}_y": y, f"{tag}_X": X, f"{tag}_M": M, f"{tag}_v0": v0,
                    f"{tag}_v1": v1, f"{tag}_null_lml": scanner.null_lml()})
        for key in SCAN_KEYS:
            out[f"{tag}_fast_{key}"] = np.asarray(fast[key])
        for name, res in scans.items():
            out[f"{tag}_set_{name}_M"] = sets[name]
            for key in SCAN_KEYS:
                out[f"{tag}_set_{name}_{key}"] = np.asarray(res[key])

    # GLMMNormal's scanner on a zero and a constant candidate
    X = np.column_stack([np.ones(n), random.randn(n)])
    eta = random.randn(n)
    tau = random.uniform(0.5, 2.0, n)
    glmm = GLMMNormal(eta, tau, X, QS)
    glmm.fit(verbose=False)
    M = np.column_stack([g, np.zeros(n), 2 * np.ones(n)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fast = glmm.get_fast_scanner().fast_scan(M, verbose=False)
    out.update(normal_eta=eta, normal_tau=tau, normal_X=X, normal_M=M,
               normal_beta=glmm.beta, normal_scale=glmm.scale, normal_delta=glmm.delta)
    for key in SCAN_KEYS:
        out[f"normal_fast_{key}"] = np.asarray(fast[key])

    # Kron2Sum's scanner: zero candidate, a candidate equal to the covariate
    p = 2
    Xk = np.column_stack([np.ones(n), random.randn(n)])
    Y = Xk @ random.randn(2, p) + G @ random.randn(30, p) * 0.2 + random.randn(n, p)
    A = np.eye(p)
    kron = Kron2Sum(Y, A, Xk, G, rank=1, restricted=False)
    kron.fit(verbose=False)
    kscan = kron.get_fast_scanner()
    A1 = np.eye(p)
    out.update(kron_Y=Y, kron_X=Xk, kron_G=G, kron_C0=kron.C0, kron_C1=kron.C1,
               kron_B=kron.B, kron_null_lml=kscan.null_lml())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, X1 in {"zero": np.zeros((n, 1)), "covariate": Xk[:, [1]],
                         "ordinary": g[:, None]}.items():
            res = kscan.scan(A1, X1)
            out[f"kron_{name}_X1"] = X1
            for key in ("lml", "effsizes0", "effsizes1", "scale"):
                out[f"kron_{name}_{key}"] = np.asarray(res[key])
    np.savez(os.path.join(OUT, "degenerate.npz"), **out)
    print("wrote", os.path.join(OUT, "degenerate.npz"))


if __name__ == "__main__":
    main()
