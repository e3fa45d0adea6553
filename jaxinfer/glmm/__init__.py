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
from jaxinfer.glmm.predict import LMMPredict
from jaxinfer.glmm.scan import FastScanner
from jaxinfer.glmm.kron import Kron2Sum, KronFastScanner, kron2sum_lml
from jaxinfer.glmm._module import parameter_bounds, parameter_mask

from jaxinfer.glmm.lik import Bernoulli, Binomial, Poisson, Probit, get_likelihood
from jaxinfer.glmm.ep import (
    EPOptions,
    EPResult,
    EPSites,
    ep_log_marginal_likelihood,
    expectation_propagation,
    expectation_propagation_lml,
)
from jaxinfer.glmm.glmm import (
    GLMMExpFam,
    GLMMNormal,
    GLMMParams,
    fit_glmm,
    glmm_covariance,
    glmm_expfam_lml,
    glmm_normal_lml,
)
from jaxinfer.glmm.gp import GP, ExpFamGP, expfam_gp_lml, gp_log_marginal_likelihood

__all__ = [
    "EyeCov", "FreeFormCov", "GivenCov", "Kron2SumCov", "LinearCov", "LRFreeFormCov", "SumCov",
    "KronMean", "LinearMean", "OffsetMean", "SumMean", "parameter_bounds", "parameter_mask",
    "economic_qs", "economic_qs_linear", "economic_qs_zeros", "LMM", "LMMPredict", "fit_lmm", "lmm_profile",
    "lmm_statistics", "FastScanner", "Kron2Sum", "KronFastScanner", "kron2sum_lml",
    "Bernoulli", "Binomial", "Poisson", "Probit", "get_likelihood",
    "EPOptions", "EPResult", "EPSites", "ep_log_marginal_likelihood", "expectation_propagation",
    "expectation_propagation_lml",
    "GLMMExpFam", "GLMMNormal", "GLMMParams", "fit_glmm", "glmm_covariance", "glmm_expfam_lml",
    "glmm_normal_lml", "GP", "ExpFamGP", "expfam_gp_lml", "gp_log_marginal_likelihood",
]
