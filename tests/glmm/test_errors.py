"""Bad input is refused at the edge with messages naming the problem."""

import numpy as np
import pytest

from jaxinfer.glmm import LMM, FastScanner, Kron2Sum, economic_qs, economic_qs_linear


@pytest.fixture(scope="module")
def data():
    random = np.random.RandomState(0)
    G = random.randn(10, 4)
    return random.randn(10), np.ones((10, 1)), G, economic_qs_linear(G)


def test_lengths_must_match(data):
    y, X, G, QS = data
    with pytest.raises(ValueError, match="rows but y has 10"):
        LMM(y, X[:9], QS)
    with pytest.raises(ValueError, match="Q0 has 10 rows but y has 9"):
        LMM(y[:9], X[:9], QS)


def test_non_finite_entries(data):
    y, X, G, QS = data
    bad = y.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        LMM(bad, X, QS)
    Xbad = X.copy()
    Xbad[0, 0] = np.inf
    with pytest.raises(ValueError, match="X .*non-finite"):
        LMM(y, Xbad, QS)
    with pytest.raises(TypeError, match="numeric"):
        LMM(np.array(["a"] * 10), X, QS)


def test_K_must_be_square_symmetric_psd():
    with pytest.raises(ValueError, match="square"):
        economic_qs(np.ones((3, 4)))
    with pytest.raises(ValueError, match="symmetric"):
        economic_qs(np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive semi-definite"):
        economic_qs(np.array([[1.0, 2.0], [2.0, 1.0]]))
    Q, S = economic_qs(np.zeros((3, 3)))[0], economic_qs(np.zeros((3, 3)))[1]
    assert Q[0].shape == (3, 0) and Q[1].shape == (3, 3) and S.shape == (0,)


def test_QS_structure(data):
    y, X, G, QS = data
    with pytest.raises(ValueError, match="QS must be"):
        LMM(y, X, (QS[0][0], QS[1]))
    with pytest.raises(ValueError, match="S0 has"):
        LMM(y, X, ((QS[0][0],), QS[1][:-1]))
    with pytest.raises(ValueError, match="negative eigenvalues"):
        LMM(y, X, ((QS[0][0],), -QS[1]))
    with pytest.raises(ValueError, match="Q1 must be"):
        LMM(y, X, ((QS[0][0], QS[0][0]), QS[1]))


def test_parameter_names_and_values(data):
    y, X, G, QS = data
    lmm = LMM(y, X, QS)
    with pytest.raises(ValueError, match="'delta', 'beta' or 'scale'"):
        lmm.fix("logistic")
    with pytest.raises(ValueError, match="positive"):
        lmm.scale = -1.0
    with pytest.raises(ValueError, match="beta must have 1"):
        lmm.beta = [1.0, 2.0]


def test_scanner_inputs(data):
    y, X, G, QS = data
    with pytest.raises(ValueError, match="non-negative"):
        FastScanner(y, X, QS, -1.0)
    sc = FastScanner(y, X, QS, 1.0)
    with pytest.raises(ValueError, match="rows but y has 10"):
        sc.fast_scan(np.ones((9, 2)))
    with pytest.raises(ValueError, match="non-finite"):
        sc.scan(np.full((10, 1), np.nan))


def test_kron2sum_inputs(data):
    y, X, G, QS = data
    Y = np.column_stack([y, y[::-1]])
    with pytest.raises(ValueError, match="rank must be between 1"):
        Kron2Sum(Y, np.eye(2), X, G, rank=3)
    with pytest.raises(ValueError, match="one row per trait"):
        Kron2Sum(Y, np.eye(3), X, G)
    with pytest.raises(ValueError, match="G has 9 rows"):
        Kron2Sum(Y, np.eye(2), X, G[:9])
    with pytest.raises(ValueError, match="full column rank"):
        Kron2Sum(Y, np.eye(2), np.column_stack([X, X]), G)
