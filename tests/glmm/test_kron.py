"""Kron2Sum against glimix-core 3.1.14 (fixtures) and a dense Gaussian likelihood; full-rank C0."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinfer.glmm import Kron2Sum
from jaxinfer.glmm.kron import kron2sum_lml_dense

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
RTOL = 1e-6


@pytest.fixture(scope="module")
def ref():
    with np.load(os.path.join(FIXTURES, "lmm_kron.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module", params=["ml", "reml"])
def fitted(request, ref):
    model = Kron2Sum(ref["Y"], ref["A"], ref["X"], ref["G"], rank=1,
                     restricted=request.param == "reml")
    init = model.lml()
    result = model.fit()
    return request.param, model, init, result


def test_lml_matches_glimix(ref, fitted):
    tag, model, init, result = fitted
    np.testing.assert_allclose(init, ref[f"{tag}_lml_init"], rtol=1e-10)
    assert bool(result.success), result.message
    np.testing.assert_allclose(model.lml(), ref[f"{tag}_lml"], rtol=RTOL)
    # parameters are weakly identified near the optimum: the fits agree to ~1e-3
    np.testing.assert_allclose(model.C0, ref[f"{tag}_C0"], rtol=5e-3, atol=1e-3)
    np.testing.assert_allclose(model.C1, ref[f"{tag}_C1"], rtol=5e-3, atol=1e-3)
    np.testing.assert_allclose(model.B, ref[f"{tag}_B"], rtol=5e-3, atol=1e-3)


def test_lml_equals_dense_likelihood(ref, fitted):
    tag, model, _, _ = fitted
    restricted = tag == "reml"
    args = (jnp.asarray(ref["Y"]), jnp.asarray(ref["A"]), jnp.asarray(ref["X"]),
            jnp.asarray(ref["G"]))
    ours = kron2sum_lml_dense(*args, model.C0, model.C1, model.B, restricted)
    np.testing.assert_allclose(model.lml(), ours, rtol=1e-10)
    # the dense formula at glimix-core's own optimum reproduces glimix-core's lml
    theirs = kron2sum_lml_dense(*args, ref[f"{tag}_C0"], ref[f"{tag}_C1"], ref[f"{tag}_B"],
                                restricted)
    np.testing.assert_allclose(theirs, ref[f"{tag}_lml"], rtol=1e-9)
    np.testing.assert_allclose(model.covariance(),
                               np.kron(model.C0, ref["G"] @ ref["G"].T)
                               + np.kron(model.C1, np.eye(ref["G"].shape[0])), rtol=1e-8,
                               atol=1e-10)


def test_scanner_matches_glimix(ref, fitted):
    tag, model, _, _ = fitted
    sc = model.get_fast_scanner()
    np.testing.assert_allclose(sc.null_lml(), ref[f"{tag}_scan_null_lml"], rtol=RTOL)
    np.testing.assert_allclose(sc.null_scale, ref[f"{tag}_scan_null_scale"], rtol=1e-4)
    out = sc.scan(ref["A1"], ref["X1"])
    np.testing.assert_allclose(out["lml"], ref[f"{tag}_scan_lml"], rtol=RTOL)
    np.testing.assert_allclose(out["scale"], ref[f"{tag}_scan_scale"], rtol=1e-4)
    for key in ("effsizes0", "effsizes0_se", "effsizes1", "effsizes1_se"):
        np.testing.assert_allclose(out[key], ref[f"{tag}_scan_{key}"], rtol=5e-3, atol=1e-3,
                                   err_msg=key)


def test_scan_equals_dense_refit(ref):
    """Candidate lml = dense Gaussian lml with the extra design, K scaled by the fitted s."""
    model = Kron2Sum(ref["Y"], ref["A"], ref["X"], ref["G"], rank=1)
    model.fit()
    out = model.get_fast_scanner().scan(ref["A1"], ref["X1"])
    Y, A, X, G = ref["Y"], ref["A"], ref["X"], ref["G"]
    n, p = Y.shape
    K = out["scale"] * (np.kron(np.asarray(model.C0), G @ G.T)
                        + np.kron(np.asarray(model.C1), np.eye(n)))
    E = np.column_stack([np.kron(A, X), np.kron(ref["A1"], ref["X1"])])
    b = np.concatenate([out["effsizes0"].T.ravel(), out["effsizes1"].T.ravel()])
    r = Y.T.ravel() - E @ b
    dense = -0.5 * (n * p * np.log(2 * np.pi) + np.linalg.slogdet(K)[1]
                    + r @ np.linalg.solve(K, r))
    np.testing.assert_allclose(out["lml"], dense, rtol=1e-9)


def test_full_rank_C0_fits(ref):
    """rank = n_traits: glimix-core 3.1.14 raises 'Too many bad solutions' on these data."""
    assert "bad solutions" in str(ref["fullrank_error"])
    full = Kron2Sum(ref["Y"], ref["A"], ref["X"], ref["G"], rank=3)
    result = full.fit()
    assert bool(result.success), result.message
    # the full-rank model nests the rank-1 one: its maximum cannot be lower
    assert full.lml() >= float(ref["ml_lml"]) - 1e-6 * abs(float(ref["ml_lml"]))
    args = (jnp.asarray(ref["Y"]), jnp.asarray(ref["A"]), jnp.asarray(ref["X"]),
            jnp.asarray(ref["G"]))
    np.testing.assert_allclose(full.lml(), kron2sum_lml_dense(*args, full.C0, full.C1, full.B),
                               rtol=1e-10)
    # here C0 of full rank explains the data much better than rank 1 (-181.1 vs -189.1)
    assert full.lml() > float(ref["ml_lml"]) + 5
    # stationary up to the ftol stop (a second fit moves lml by < 1e-6)
    grad = full.gradient()
    assert float(jnp.max(jnp.abs(grad["C0.Lu"]))) < 1e-2
    assert float(jnp.max(jnp.abs(grad["C1.Lu"]))) < 1e-2


def test_gradient_matches_finite_differences(ref):
    model = Kron2Sum(ref["Y"], ref["A"], ref["X"], ref["G"], rank=1)
    g = model.gradient()["C1.Lu"]
    Lu = np.asarray(model.cov.C1.Lu)
    h = 1e-6
    for k in (0, 4):
        e = np.zeros_like(Lu)
        e[k] = h
        model.cov.C1.Lu = Lu + e
        up = model.lml()
        model.cov.C1.Lu = Lu - e
        down = model.lml()
        np.testing.assert_allclose(g[k], (up - down) / (2 * h), rtol=1e-5)
    model.cov.C1.Lu = Lu


def test_float32_lml_close_to_float64(ref):
    from jaxinfer.glmm.kron import kron2sum_lml, kron_statistics

    arrays = [ref[k] for k in ("Y", "A", "X", "G")]
    C0 = np.outer([1.0, 0.5, -0.2], [1.0, 0.5, -0.2]) * 0.1
    C1 = np.eye(3) + 0.1
    lml64 = kron2sum_lml(kron_statistics(*arrays), jnp.asarray(C0), jnp.asarray(C1))[0]
    data32 = kron_statistics(*(jnp.asarray(a, jnp.float32) for a in arrays))
    lml32 = kron2sum_lml(data32, jnp.asarray(C0, jnp.float32), jnp.asarray(C1, jnp.float32))[0]
    assert lml32.dtype == jnp.float32
    np.testing.assert_allclose(lml32, lml64, rtol=1e-4)
    # and the dense reference on the user's (unnormalised) G
    dense = kron2sum_lml_dense(*(jnp.asarray(a) for a in arrays), C0, C1,
                               kron2sum_lml(kron_statistics(*arrays), jnp.asarray(C0),
                                            jnp.asarray(C1))[1].reshape(3, 2).T)
    np.testing.assert_allclose(lml64, dense, rtol=1e-10)


def test_full_rank_C0_recovers_simulated_covariance():
    """Data simulated with a full-rank C0: glimix-core's rank-3 fit stays near its rank-1
    solution (identical-column start); ours reaches a much higher lml and a C0 near the truth."""
    with np.load(os.path.join(FIXTURES, "lmm_kron_fullrank.npz")) as f:
        ref = {k: f[k] for k in f.files}
    model = Kron2Sum(ref["Y"], ref["A"], ref["X"], ref["G"], rank=3)
    result = model.fit()
    assert bool(result.success), result.message
    assert model.lml() > float(ref["rank3_lml"]) + 10  # glimix-core: -696.76
    assert model.lml() > float(ref["rank1_lml"])
    np.testing.assert_allclose(model.C0, ref["C0_true"], atol=0.35)
    assert np.linalg.eigvalsh(np.asarray(model.C0)).min() > 0.1
    args = [jnp.asarray(ref[k]) for k in ("Y", "A", "X", "G")]
    np.testing.assert_allclose(model.lml(), kron2sum_lml_dense(*args, model.C0, model.C1,
                                                               model.B), rtol=1e-10)
