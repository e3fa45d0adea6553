"""Economic eigendecompositions of a covariance K, the input of :class:`~jaxinfer.glmm.LMM`.

``economic_qs(K)`` returns ``((Q0, Q1), S0)``: K = Q0·diag(S0)·Q0ᵀ, with S0 the eigenvalues at
or above ``epsilon`` = sqrt(float64 machine eps) ≈ 1.49e-8 (glimix-core / numpy-sugar's
threshold) and Q1 the eigenvectors of the remaining (numerically zero) eigenvalues.
``economic_qs_linear(G)`` does the same for K = GGᵀ without forming K when G is tall.

These run at the edge, in numpy/scipy float64 (they are preprocessing, done once).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

from jaxinfer.glmm._checks import as_numpy_float

__all__ = ["economic_qs", "economic_qs_linear", "economic_qs_zeros", "QS_EPSILON"]

#: Eigenvalues below this go to Q1 (numpy-sugar's default: sqrt of float64 eps).
QS_EPSILON = float(np.sqrt(np.finfo(np.float64).eps))


def economic_qs(K, epsilon: float = QS_EPSILON):
    """Economic eigendecomposition of a symmetric positive semi-definite K (n, n).

    Returns ``((Q0, Q1), S0)``: Q0 (n, r) eigenvectors of the r eigenvalues S0 ≥ epsilon
    (ascending), Q1 (n, n - r) the rest. Raises ValueError when K is not square, not symmetric
    (relative asymmetry above 1e-8) or has an eigenvalue below -max(1, |K|)·sqrt(eps)·n.
    """
    K = as_numpy_float(K, "K", ndim=2)
    if K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be square; got shape {K.shape}.")
    scale = max(1.0, float(np.max(np.abs(K)))) if K.size else 1.0
    asym = float(np.max(np.abs(K - K.T))) if K.size else 0.0
    if asym > 1e-8 * scale:
        raise ValueError(f"K must be symmetric; max |K - Kᵀ| = {asym:.3g}.")
    S, Q = scipy.linalg.eigh((K + K.T) / 2)
    negative_floor = -QS_EPSILON * scale * max(1, K.shape[0])
    if S.size and S[0] < negative_floor:
        raise ValueError(
            f"K must be positive semi-definite; its smallest eigenvalue is {S[0]:.3g}."
        )
    ok = S >= epsilon
    return ((Q[:, ok], Q[:, ~ok]), S[ok])


def economic_qs_linear(G, return_q1: bool = True):
    """Economic eigendecomposition of K = GGᵀ for G (n, m).

    For n > m it uses the SVD of G (all m squared singular values go to S0, as numpy-sugar);
    otherwise it decomposes GGᵀ with :func:`economic_qs`. With ``return_q1=False`` and n > m,
    Q1 is None (saves the n×(n-m) block).
    """
    G = as_numpy_float(G, "G", ndim=2)
    n, m = G.shape
    if n > m:
        if return_q1:
            U, s, _ = scipy.linalg.svd(G, full_matrices=True)
            return ((U[:, :m], U[:, m:]), s ** 2)
        U, s, _ = scipy.linalg.svd(G, full_matrices=False)
        return ((U, None), s ** 2)
    return economic_qs(G @ G.T)


def economic_qs_zeros(n: int):
    """Decomposition of the n×n zero matrix: ((empty (n, 0), I), empty)."""
    return ((np.empty((n, 0)), np.eye(n)), np.empty(0))
