"""FastScanner against glimix-core 3.1.14 outputs, explicit refits, batching and sharding."""

import os

import jax
import numpy as np
import pytest

import jaxinfer.glmm.scan

from jaxinfer.glmm import LMM, FastScanner, economic_qs

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
RTOL = 1e-6
KEYS = ("lml", "effsizes0", "effsizes0_se", "effsizes1", "effsizes1_se", "scale")


@pytest.fixture(scope="module")
def ref():
    with np.load(os.path.join(FIXTURES, "lmm_lowrank.npz")) as f:
        out = {k: f[k] for k in f.files}
    out["QS"] = economic_qs(out["K"])
    return out


@pytest.fixture(scope="module", params=["multi", "single"])
def scanner(request, ref):
    X = ref["X"] if request.param == "multi" else ref["X"][:, :1]
    lmm = LMM(ref["y"], X, ref["QS"])
    lmm.fit()
    return request.param, lmm, lmm.get_fast_scanner()


def test_null_model_matches_glimix(ref, scanner):
    tag, lmm, sc = scanner
    np.testing.assert_allclose(sc.null_lml(), ref[f"scan_{tag}_null_lml"], rtol=RTOL)
    np.testing.assert_allclose(sc.null_beta, ref[f"scan_{tag}_null_beta"], rtol=RTOL)
    np.testing.assert_allclose(sc.null_beta_se, ref[f"scan_{tag}_null_beta_se"], rtol=RTOL)
    np.testing.assert_allclose(sc.null_scale, ref[f"scan_{tag}_null_scale"], rtol=RTOL)
    # the scanner's null model is the fitted LMM (scale 1 relative to v0, v1)
    np.testing.assert_allclose(sc.null_lml(), lmm.lml(), rtol=1e-10)


def test_fast_scan_matches_glimix(ref, scanner):
    tag, _, sc = scanner
    out = sc.fast_scan(ref["M"], verbose=False)
    for key in ("lml", "effsizes0", "effsizes1", "scale"):
        np.testing.assert_allclose(out[key], ref[f"scan_{tag}_fast_{key}"], rtol=RTOL,
                                   err_msg=key)
    se0, se1 = ref[f"scan_{tag}_fast_effsizes0_se"], ref[f"scan_{tag}_fast_effsizes1_se"]
    if tag == "multi":
        # glimix-core 3.1.14 leaves the scale out of these SEs (documented difference)
        se0 = se0 * np.sqrt(out["scale"])[:, None]
        se1 = se1 * np.sqrt(out["scale"])
    np.testing.assert_allclose(out["effsizes0_se"], se0, rtol=RTOL)
    np.testing.assert_allclose(out["effsizes1_se"], se1, rtol=RTOL)


def test_set_scan_matches_glimix(ref, scanner):
    tag, _, sc = scanner
    out = sc.scan(ref["M"][:, :3])
    for key in KEYS:
        np.testing.assert_allclose(out[key], ref[f"scan_{tag}_set_{key}"], rtol=RTOL, err_msg=key)
    null = sc.scan(np.empty((len(ref["y"]), 0)))
    assert null["lml"] == pytest.approx(sc.null_lml())


def test_candidate_equals_refit_with_frozen_variances(ref):
    """Independent check: a candidate's lml is the LMM lml with that column added to X,
    δ fixed at the null value and scale refitted."""
    lmm = LMM(ref["y"], ref["X"], ref["QS"])
    lmm.fit()
    out = lmm.get_fast_scanner().fast_scan(ref["M"][:, :2])
    for j in range(2):
        alt = LMM(ref["y"], np.column_stack([ref["X"], ref["M"][:, j]]), ref["QS"])
        alt.fix("delta")
        alt.delta = lmm.delta
        alt.fit()
        np.testing.assert_allclose(out["lml"][j], alt.lml(), rtol=1e-10)
        np.testing.assert_allclose(out["effsizes1"][j], alt.beta[-1], rtol=1e-8)
        np.testing.assert_allclose(out["scale"][j] * lmm.scale, alt.scale, rtol=1e-8)


def test_batches_and_sharding_give_the_same_numbers(ref):
    assert len(jax.devices()) == 4  # conftest's fake CPU devices
    lmm = LMM(ref["y"], ref["X"], ref["QS"])
    lmm.fit()
    M = ref["M"]
    # one CPU device: the rotation in NumPy's BLAS; several: the sharded JAX program
    one = lmm.get_fast_scanner(devices=[jax.devices()[0]]).fast_scan(M)
    sharded = lmm.get_fast_scanner(batch_size=8)  # 20 candidates -> 3 blocks on 4 devices
    calls = []
    many = sharded.fast_scan(M, progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (20, 20) and len(calls) == 3
    for key in KEYS:
        np.testing.assert_allclose(many[key], one[key], rtol=1e-12, err_msg=key)
    tiny = lmm.get_fast_scanner(max_memory=1, devices=[jax.devices()[0]])  # one per block
    small = tiny.fast_scan(M[:, :3])
    np.testing.assert_allclose(small["lml"], one["lml"][:3], rtol=1e-12)


def test_direct_construction_and_zero_candidates(ref):
    QS = ref["QS"]
    sc = FastScanner(ref["y"], ref["X"], ((QS[0][0],), 0.4 * QS[1]), 0.6)
    out = sc.fast_scan(np.empty((len(ref["y"]), 0)))
    assert out["lml"].shape == (0,) and out["effsizes0"].shape == (0, 3)


def test_float32_core_close_to_float64(ref):
    import jax.numpy as jnp

    from jaxinfer.glmm.scan import scan_statistics

    scan_columns = jax.jit(jaxinfer.glmm.scan.scan_columns)  # compiled: 10x cheaper than eager
    QS = ref["QS"]
    args = (ref["y"], ref["X"], QS[0][0], 0.4 * QS[1], 0.6)
    null64 = scan_statistics(*args)
    null32 = scan_statistics(*(jnp.asarray(a, jnp.float32) for a in args))
    out64 = scan_columns(null64, jnp.asarray(ref["M"][:, :4]))
    out32 = scan_columns(null32, jnp.asarray(ref["M"][:, :4], jnp.float32))
    assert out32["lml"].dtype == jnp.float32
    np.testing.assert_allclose(out32["lml"], out64["lml"], rtol=1e-4)
    np.testing.assert_allclose(out32["effsizes1"], out64["effsizes1"], rtol=1e-2, atol=1e-3)
