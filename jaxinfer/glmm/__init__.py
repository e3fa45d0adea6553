"""Mixed models and Gaussian processes (a JAX rewrite of glimix-core).

Covariance functions (:mod:`jaxinfer.glmm.cov`) and mean functions (:mod:`jaxinfer.glmm.mean`)
come as pure equinox cores (``EyeCovModule``...) and glimix-core-shaped mutable facades
(``EyeCov``...).
"""

from jaxinfer.glmm.cov import (
    EyeCov,
    FreeFormCov,
    GivenCov,
    Kron2SumCov,
    LinearCov,
    LRFreeFormCov,
    SumCov,
)
from jaxinfer.glmm.mean import KronMean, LinearMean, OffsetMean, SumMean
from jaxinfer.glmm._module import parameter_bounds, parameter_mask

__all__ = [
    "EyeCov", "FreeFormCov", "GivenCov", "Kron2SumCov", "LinearCov", "LRFreeFormCov", "SumCov",
    "KronMean", "LinearMean", "OffsetMean", "SumMean", "parameter_bounds", "parameter_mask",
]
