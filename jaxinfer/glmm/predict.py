"""Prediction at new samples from a fitted LMM (glimix-core's ``LMMPredict``).

With training outcome y (n,), prior mean m = Xβ (n,) and covariance K = v₀K₀ + v₁I (n, n),
the Gaussian conditional at new samples with covariates X* (p, c), cross-kinship k* (p, n)
(rows: new samples) and self-kinship diagonal k** (p,) is

    mean       X*β + v₀k* K⁻¹(y − m)
    variance   v₀k** + v₁ − diag(v₀k* K⁻¹ v₀k*ᵀ)

K is factorised once (Cholesky). NumPy in, NumPy out (the facade layer).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import cho_factor, cho_solve

__all__ = ["LMMPredict"]


class LMMPredict:
    """``LMMPredict(y, beta, v0, v1, mean, covariance)`` as in glimix-core.

    Parameters: y (n,); beta (c,); v0, v1 the variance components; mean (n,) = Xβ;
    covariance (n, n) = v₀K + v₁I (``LMM.mean()`` and ``LMM.covariance()``).
    """

    def __init__(self, y, beta, v0, v1, mean, covariance):
        self._y = np.asarray(y, float)
        self._beta = np.asarray(beta, float)
        self._v0 = float(v0)
        self._v1 = float(v1)
        self._mean = np.asarray(mean, float)
        covariance = np.asarray(covariance, float)
        n = self._y.shape[0]
        if covariance.shape != (n, n) or self._mean.shape != (n,):
            raise ValueError(f"mean must be ({n},) and covariance ({n}, {n}); got "
                             f"{self._mean.shape} and {covariance.shape}.")
        self._factor = cho_factor(covariance, lower=True)
        self._alpha = cho_solve(self._factor, self._y - self._mean)

    def mean_star(self, Xstar) -> np.ndarray:
        """X*β (p,)."""
        return np.asarray(Xstar, float) @ self._beta

    def variance_star(self, kss) -> np.ndarray:
        """v₀k** + v₁ (p,)."""
        return np.asarray(kss, float) * self._v0 + self._v1

    def covariance_star(self, ks) -> np.ndarray:
        """v₀k* (p, n)."""
        return np.asarray(ks, float) * self._v0

    def predictive_mean(self, Xstar, ks, kss) -> np.ndarray:
        """Conditional mean at the new samples (p,)."""
        return self.mean_star(Xstar) + self.covariance_star(ks) @ self._alpha

    def predictive_covariance(self, Xstar, ks, kss) -> np.ndarray:
        """Conditional variances at the new samples (p,) (the diagonal, as glimix-core)."""
        cross = self.covariance_star(ks)
        return self.variance_star(kss) - np.einsum("ij,ji->i", cross,
                                                   cho_solve(self._factor, cross.T))
