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
from jaxinfer.glmm.qs import economic_qs, economic_qs_linear, economic_qs_zeros
from jaxinfer.glmm.lmm import LMM, fit_lmm, lmm_profile, lmm_statistics
from jaxinfer.glmm.scan import FastScanner
from jaxinfer.glmm.kron import Kron2Sum, KronFastScanner, kron2sum_lml
from jaxinfer.glmm._module import parameter_bounds, parameter_mask

__all__ = [
    "EyeCov", "FreeFormCov", "GivenCov", "Kron2SumCov", "LinearCov", "LRFreeFormCov", "SumCov",
    "KronMean", "LinearMean", "OffsetMean", "SumMean", "parameter_bounds", "parameter_mask",
    "economic_qs", "economic_qs_linear", "economic_qs_zeros", "LMM", "fit_lmm", "lmm_profile",
    "lmm_statistics", "FastScanner", "Kron2Sum", "KronFastScanner", "kron2sum_lml",
]

# The GLMM / GP classes live in modules owned by the EP work; import them on first access so
# that ``import jaxinfer.glmm`` stays light and independent of them.
_LAZY = {
    "GLMMNormal": "jaxinfer.glmm.glmm",
    "GLMMExpFam": "jaxinfer.glmm.glmm",
    "GP": "jaxinfer.glmm.gp",
    "ExpFamGP": "jaxinfer.glmm.gp",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jaxinfer.glmm' has no attribute {name!r}")
