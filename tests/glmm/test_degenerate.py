"""Degenerate candidates (zero, constant, equal to a covariate, duplicated, an exact fit)
against glimix-core 3.1.14's outputs (benchmarks/glmm/make_degenerate_fixtures.py)."""

import os

import numpy as np
import pytest

from jaxinfer.glmm import FastScanner, GLMMNormal, Kron2Sum, economic_qs

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
RTOL = 1e-6


@pytest.fixture(scope="module")
def ref():
    with np.load(os.path.join(FIXTURES, "degenerate.npz")) as f:
        d = {k: f[k] for k in f.files}
    d["QS"] = economic_qs(d["K"])
    return d


def scanner(ref, tag):
    (Q0, Q1), S0 = ref["QS"]
    return FastScanner(ref[f"{tag}_y"], ref[f"{tag}_X"], ((Q0, Q1), ref[f"{tag}_v0"] * S0),
                       float(ref[f"{tag}_v1"]), devices=None)


# columns of M: ordinary, zero, intercept, 2·intercept (monomorphic), last covariate,
# duplicate of the ordinary one, y itself (exact fit)
DEGENERATE = np.array([False, True, True, True, True, False, False])


@pytest.mark.parametrize("tag", ["c1", "c2"])
def test_fast_scan_degenerate_columns_match_glimix(ref, tag):
    sc = scanner(ref, tag)
    np.testing.assert_allclose(sc.null_lml(), ref[f"{tag}_null_lml"], rtol=1e-10)
    out = sc.fast_scan(ref[f"{tag}_M"])
    for key in ("lml", "scale"):
        assert np.all(np.isfinite(out[key]))
        np.testing.assert_allclose(out[key], ref[f"{tag}_fast_{key}"], rtol=RTOL)
    # a candidate that adds nothing leaves the null model: lml equal to the null lml
    np.testing.assert_allclose(out["lml"][DEGENERATE], ref[f"{tag}_null_lml"], rtol=1e-10)
    # least-squares (minimum-norm) effects: 0 for the zero column, shared for a copy
    np.testing.assert_allclose(out["effsizes1"], ref[f"{tag}_fast_effsizes1"], rtol=RTOL,
                               atol=1e-10)
    np.testing.assert_allclose(out["effsizes0"], ref[f"{tag}_fast_effsizes0"], rtol=RTOL,
                               atol=1e-10)
    assert out["effsizes1"][1] == pytest.approx(0, abs=1e-14)
    np.testing.assert_array_equal(out["degenerate"], DEGENERATE)
    # standard errors: finite, never NaN, and glimix-core's. With one covariate glimix-core
    # takes a 2×2 pseudo-inverse (0 for the zero column, a shared value for a copy of the
    # intercept); with more, a 1e-12 ridge (huge values for unidentified effects).
    se = out["effsizes1_se"]
    assert np.all(np.isfinite(se))
    theirs = ref[f"{tag}_fast_effsizes1_se"]
    exact_fit = np.arange(7) == 6  # scale ~ 1e-17: SEs are rounding
    if tag == "c1":
        assert se[1] == 0.0
        np.testing.assert_allclose(se[~exact_fit], theirs[~exact_fit], rtol=1e-5)
        np.testing.assert_allclose(out["effsizes0_se"][~exact_fit],
                                   ref["c1_fast_effsizes0_se"][~exact_fit], rtol=1e-5)
    else:
        assert np.all(se[DEGENERATE] > 1e4)
        theirs = theirs * np.sqrt(out["scale"])  # glimix-core leaves sqrt(scale) out here
        ok = ~DEGENERATE & ~exact_fit
        np.testing.assert_allclose(se[ok], theirs[ok], rtol=1e-5)


@pytest.mark.parametrize("tag", ["c1", "c2"])
@pytest.mark.parametrize("name", ["dup", "zero", "intercept"])
def test_scan_of_singular_sets_matches_glimix(ref, tag, name):
    out = scanner(ref, tag).scan(ref[f"{tag}_set_{name}_M"])
    assert out["degenerate"]
    for key in ("lml", "scale"):
        np.testing.assert_allclose(out[key], ref[f"{tag}_set_{name}_{key}"], rtol=RTOL)
    for key in ("effsizes0", "effsizes1"):
        np.testing.assert_allclose(out[key], ref[f"{tag}_set_{name}_{key}"], rtol=RTOL,
                                   atol=1e-10)
    # the ridge (1e-12) standard errors: glimix-core's for identified entries; the ~1e6 ones
    # of unidentified directions are 1/(1e-12 + rounding of a zero eigenvalue ~1e-14): to 5%
    for key in ("effsizes0_se", "effsizes1_se"):
        theirs = ref[f"{tag}_set_{name}_{key}"]
        big = theirs > 1e4
        assert np.any(big) or key == "effsizes0_se"
        np.testing.assert_allclose(out[key][~big], theirs[~big], rtol=1e-6)
        np.testing.assert_allclose(out[key][big], theirs[big], rtol=5e-2)


def test_glmm_normal_scanner_degenerate_columns(ref):
    (Q0, Q1), S0 = ref["QS"]
    glmm = GLMMNormal(ref["normal_eta"], ref["normal_tau"], ref["normal_X"], ((Q0, Q1), S0))
    glmm.beta = ref["normal_beta"]
    glmm.scale = float(ref["normal_scale"])
    glmm.delta = float(ref["normal_delta"])
    out = glmm.get_fast_scanner().fast_scan(ref["normal_M"])
    np.testing.assert_array_equal(out["degenerate"], [False, True, True])
    for key in ("lml", "scale"):
        np.testing.assert_allclose(out[key], ref[f"normal_fast_{key}"], rtol=1e-5)
    np.testing.assert_allclose(out["effsizes1"], ref["normal_fast_effsizes1"], rtol=1e-5,
                               atol=1e-10)


def test_kron_scanner_degenerate_candidates(ref):
    Y, X, G = ref["kron_Y"], ref["kron_X"], ref["kron_G"]
    kron = Kron2Sum(Y, np.eye(2), X, G, rank=1)
    kron.fit()
    np.testing.assert_allclose(kron.lml(), ref["kron_null_lml"], rtol=1e-6)
    sc = kron.get_fast_scanner()
    for name in ("zero", "covariate", "ordinary"):
        out = sc.scan(np.eye(2), ref[f"kron_{name}_X1"])
        assert np.isfinite(out["lml"])
        np.testing.assert_allclose(out["lml"], ref[f"kron_{name}_lml"], rtol=1e-6)
        # the variances come from each side's own fit (agreeing to ~1e-4): effects to 1e-3
        np.testing.assert_allclose(out["effsizes1"], ref[f"kron_{name}_effsizes1"], rtol=1e-3,
                                   atol=1e-3)
    assert np.all(sc.scan(np.eye(2), ref["kron_zero_X1"])["effsizes1"] == pytest.approx(0))
