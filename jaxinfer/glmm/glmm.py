"""Generalised linear mixed models: GLMMNormal (closed form) and GLMMExpFam (EP).

Both model a latent vector ``z ~ N(Xβ, s((1-δ)K + δI))`` given the economic
eigendecomposition ``QS = ((Q0, Q1), S0)`` of ``K = Q0 diag(S0) Q0ᵀ`` (glimix-core's format;
``(Q0, S0)`` is accepted too, and ``QS=None`` means ``K = 0``). The parameters are glimix-core's:
``beta`` (c,), ``logscale = log s`` and ``logitdelta = logit δ``; ``v0 = s(1-δ)`` and
``v1 = sδ``. Box bounds as in glimix-core: ``logscale ∈ [log 0.001, log 400]``,
``logitdelta ∈ [-50, 15]``.

* :class:`GLMMNormal` (``eta``, ``tau``): heterogeneous Normal "observations" ``μ̃ = η/τ`` with
  variances ``1/τ`` (typically EP sites): ``μ̃ ~ N(Xβ, v0 K + v1 I + diag(1/τ))``.
* :class:`GLMMExpFam` (``y``, ``lik``): Bernoulli / Probit / Binomial / Poisson outcomes, the
  marginal likelihood approximated by expectation propagation (:mod:`jaxinfer.glmm.ep`).

The classes are thin mutable facades (glimix-core's names: ``fit``, ``lml``, ``beta``,
``scale``, ``delta``, ``v0``, ``v1``, ``fix``/``unfix``, ``gradient``) over pure functions
(:func:`glmm_normal_lml`, :func:`glmm_expfam_lml`, :func:`fit_glmm`) that jit, vmap and
differentiate. Fitting maximises the (EP) marginal likelihood with
``jaxinfer.optimize.minimize(method='L-BFGS-B')`` and autodiff gradients over
``(beta, logitdelta, logscale)``, with glimix-core's ``factr`` / ``pgtol`` stopping rule.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple, Optional, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.glmm.ep import (
    EPOptions,
    EPResult,
    EPSites,
    ep_posterior,
    expectation_propagation,
    expectation_propagation_lml_scaled,
    placeholder_result,
)
from jaxinfer.glmm.lik import Likelihood, get_likelihood
from jaxinfer.glmm._checks import FACTR_EPS, require_float64
from jaxinfer.glmm._module import finite_difference_error

__all__ = [
    "GLMMParams",
    "GLMMNormal",
    "GLMMExpFam",
    "glmm_covariance",
    "glmm_normal_lml",
    "glmm_expfam_lml",
    "fit_glmm",
    "LOGSCALE_BOUNDS",
    "LOGITDELTA_BOUNDS",
]

LOGSCALE_BOUNDS = (math.log(0.001), math.log(400.0))
LOGITDELTA_BOUNDS = (-50.0, 15.0)
# numpy_sugar.epsilon.small: glimix-core clips delta to [small, 1 - small]
DELTA_EPSILON = 1.4901161193847656e-08
_NAMES = ("beta", "logitdelta", "logscale")
_PUBLIC_TO_INTERNAL = {"beta": "beta", "scale": "logscale", "delta": "logitdelta",
                       "logscale": "logscale", "logitdelta": "logitdelta"}


class GLMMParams(NamedTuple):
    """glimix-core's parametrisation: ``beta`` (c,), ``logscale`` (), ``logitdelta`` ()."""

    beta: jnp.ndarray
    logscale: jnp.ndarray
    logitdelta: jnp.ndarray


def glmm_covariance(params: GLMMParams, Q0, S0):
    """``v0·Q0 diag(S0) Q0ᵀ + v1·I`` (n, n) with ``v0 = s(1-δ)``, ``v1 = sδ``."""
    return _covariance_from_kernel(params, (Q0 * S0) @ Q0.T)


def _variances(params: GLMMParams):
    """``(v0, v1) = (s(1-δ), sδ)``, scalars."""
    scale = jnp.exp(params.logscale)
    delta = jax.nn.sigmoid(params.logitdelta)
    return scale * (1.0 - delta), scale * delta


def _covariance_from_kernel(params: GLMMParams, kernel):
    """``v0·kernel + v1·I`` for a precomputed ``kernel = Q0 diag(S0) Q0ᵀ`` (n, n)."""
    v0, v1 = _variances(params)
    n = kernel.shape[0]
    return v0 * kernel + v1 * jnp.eye(n, dtype=kernel.dtype)


def glmm_normal_lml(params: GLMMParams, eta, tau, X, Q0, S0):
    """log N(η/τ | Xβ, v0 K + v1 I + diag(1/τ)) in nats (glimix-core's GLMMNormal.value)."""
    mu = eta / tau
    cov = glmm_covariance(params, Q0, S0) + jnp.diag(1.0 / tau)
    chol = jnp.linalg.cholesky(cov)
    resid = mu - X @ params.beta
    white = jax.scipy.linalg.solve_triangular(chol, resid, lower=True)
    n = mu.shape[0]
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return -0.5 * (n * jnp.log(2.0 * jnp.pi) + log_det + white @ white)


def glmm_expfam_lml(params: GLMMParams, likelihood: Likelihood, outcome, trials, X, Q0, S0,
                    init_sites: Optional[EPSites] = None,
                    options: Optional[EPOptions] = None) -> Tuple[jnp.ndarray, EPResult]:
    """``(lml, EPResult)``: EP log marginal likelihood of a GLMM, differentiable in ``params``."""
    v0, v1 = _variances(params)
    return expectation_propagation_lml_scaled(X @ params.beta, (Q0 * S0) @ Q0.T, v0, v1,
                                              likelihood, outcome, trials,
                                              init_sites=init_sites, options=options)


# ----------------------------------------------------------------------------------------------
# fitting (pure)


def _flat_free(params: GLMMParams, free: Tuple[bool, bool, bool]):
    parts = [jnp.atleast_1d(getattr(params, name)) for name, f in zip(_NAMES, free) if f]
    return jnp.concatenate(parts)


def _free_objective(x, objective, params: GLMMParams, free, data):
    """``objective`` at the free variables ``x`` (the others from ``params``)."""
    return objective(_unflat_free(x, params, free), data)


def _unflat_free(x, params: GLMMParams, free):
    values = {}
    offset = 0
    for name, f in zip(_NAMES, free):
        ref = getattr(params, name)
        if f:
            size = int(np.prod(ref.shape)) if ref.ndim else 1
            values[name] = x[offset:offset + size].reshape(ref.shape)
            offset += size
        else:
            values[name] = ref
    return GLMMParams(values["beta"], values["logscale"], values["logitdelta"])


def _bounds_list(params: GLMMParams, free, logscale_bounds):
    bounds = []
    if free[0]:
        bounds += [(None, None)] * int(params.beta.shape[0])
    if free[1]:
        bounds.append(LOGITDELTA_BOUNDS)
    if free[2]:
        bounds.append(tuple(logscale_bounds))
    return bounds


def _lazy_jit(**jit_kwargs):
    """``jax.jit`` with jaxinfer's CPU ``compiler_options`` (XLA's classic emitters: a first
    EP fit compiles in ~30 % less CPU time), made on the first call, when the backend is
    known (importing the package initialises no backend)."""

    def decorate(fn):
        jitted = []

        @functools.wraps(fn)
        def call(*args, **kwargs):
            if not jitted:
                from jaxinfer.optimize._compile import compiler_options

                jitted.append(jax.jit(fn, compiler_options=compiler_options(), **jit_kwargs))
            return jitted[0](*args, **kwargs)

        return call

    return decorate


# EP during a fit: once the last two accepted iterates' lml agree to _SETTLED_FTOL·ftol
# (relative), the sweeps run to rtol / _SETTLED_RTOL_DIVISOR (see _fit_jit). Benchmark fits
# (n = 300, evaluations / sweeps): binomial 37 / 56 -> 19 / 39, Bernoulli 45 / 90 -> 39 / 83,
# Poisson 20 / 53 unchanged; 100 / 100 made Bernoulli's slower (46 / 104), 1 / 10 left the
# binomial stall in place.
_SETTLED_FTOL = 10.0
_SETTLED_RTOL_DIVISOR = 10.0


@_lazy_jit(static_argnames=("objective", "free", "bounds", "factr", "pgtol"))
def _fit_jit(params, data, *, objective, free, bounds, factr, pgtol):
    x0 = _flat_free(params, free)
    options = {"ftol": factr * FACTR_EPS, "gtol": pgtol, "maxiter": 15000, "maxfun": 15000}
    if not isinstance(objective, _ExpFamObjective):
        from jaxinfer.optimize.minimize import minimize

        def fun(x, params, data):
            return -objective(_unflat_free(x, params, free), data)

        return minimize(fun, x0, args=(params, data), method="L-BFGS-B", bounds=list(bounds),
                        options=options)
    # EP objective: each evaluation's sweeps start from the sites of the last accepted
    # iterate (L-BFGS-B's aux channel carries its EPResult and the lml of the iterate
    # accepted before it), not from the starting point's. Once the lml has settled (the last
    # two accepted iterates within _SETTLED_FTOL·ftol, relative), EP runs to rtol /
    # _SETTLED_RTOL_DIVISOR: the gradient's error is first order in the sites' (the lml's is
    # second order), and at glimix's rtol it can exceed what L-BFGS-B's line search resolves
    # at the optimum, which then spends its trials at one point (binomial benchmark: 18
    # evaluations at the same x, f equal to the last digit).
    from jaxinfer.optimize._iterate import iterate
    from jaxinfer.optimize.quasi_newton import LBFGSB

    lower = jnp.asarray([-jnp.inf if lo is None else lo for lo, _ in bounds], x0.dtype)
    upper = jnp.asarray([jnp.inf if hi is None else hi for _, hi in bounds], x0.dtype)
    start = (objective.initial_result(params, data), jnp.asarray(jnp.inf, x0.dtype))
    solver = LBFGSB(ftol=options["ftol"], gtol=pgtol, maxiter=options["maxiter"],
                    maxfun=options["maxfun"], lower=lower, upper=upper, aux0=start)
    settled_tol = _SETTLED_FTOL * options["ftol"]

    def fn(x, args, aux):
        params, data = args
        accepted, previous_lml = aux
        accepted_lml = accepted.log_marginal_likelihood
        settled = jnp.abs(accepted_lml - previous_lml) <= settled_tol * jnp.maximum(
            jnp.abs(accepted_lml), 1.0)
        rtol = jnp.where(settled, data.rtol / _SETTLED_RTOL_DIVISOR, data.rtol)

        def negative(x):
            lml, result = objective.with_result(
                _unflat_free(x, params, free),
                data._replace(init_sites=accepted.sites, rtol=rtol))
            return -lml, result

        (value, result), grad = jax.value_and_grad(negative, has_aux=True)(x)
        usable = jnp.all(jnp.isfinite(result.sites.eta)) & jnp.all(jnp.isfinite(result.sites.tau))
        carried = jax.tree_util.tree_map(lambda new, old: jnp.where(usable, new, old), result,
                                         accepted)
        return value, grad, (carried, accepted_lml)

    return iterate(solver, fn, x0, (params, data))   # extra["aux"]: (EPResult, lml before)


def fit_glmm(objective, params: GLMMParams, data, free=(True, True, True),
             logscale_bounds=LOGSCALE_BOUNDS, factr: float = 1e5, pgtol: float = 1e-7):
    """Maximise ``objective(params, data)`` over the free parts of ``params`` by L-BFGS-B.

    ``objective`` is a hashable pure function (e.g. a module-level function); ``free`` says
    which of (beta, logitdelta, logscale) move. Stopping as scipy's ``fmin_l_bfgs_b``:
    ``ftol = factr·eps``, ``gtol = pgtol``. Returns ``(params, OptimizeResult)``.
    """
    free = tuple(bool(f) for f in free)
    if not any(free) or (free == (True, False, False) and params.beta.shape[0] == 0):
        return params, None
    bounds = tuple(_bounds_list(params, free, logscale_bounds))
    result = _fit_jit(params, data, objective=objective, free=free, bounds=bounds,
                      factr=float(factr), pgtol=float(pgtol))
    return _unflat_free(result.x, params, free), result


class _NormalData(NamedTuple):
    eta: jnp.ndarray
    tau: jnp.ndarray
    X: jnp.ndarray
    Q0: jnp.ndarray
    S0: jnp.ndarray


def _normal_objective(params, data: _NormalData):
    return glmm_normal_lml(params, data.eta, data.tau, data.X, data.Q0, data.S0)


class _ExpFamData(NamedTuple):
    outcome: jnp.ndarray
    trials: jnp.ndarray
    X: jnp.ndarray
    kernel: jnp.ndarray      # Q0 diag(S0) Q0ᵀ, (n, n), formed once per fit
    init_sites: EPSites
    rtol: jnp.ndarray
    atol: jnp.ndarray
    damping: jnp.ndarray


class _ExpFamObjective(eqx.Module):
    """Hashable pure objective: the EP lml for one likelihood (static)."""

    likelihood: Likelihood
    max_iter: int = eqx.field(static=True, default=100)

    def __call__(self, params, data: _ExpFamData):
        return self.with_result(params, data)[0]

    def initial_result(self, params, data: _ExpFamData) -> EPResult:
        """An :class:`EPResult` of zeros holding ``data.init_sites`` (the fit's first aux)."""
        return placeholder_result(data.init_sites)

    def with_result(self, params, data: _ExpFamData):
        """``(lml, EPResult)`` at ``params``."""
        options = EPOptions(rtol=data.rtol, atol=data.atol, max_iter=self.max_iter,
                            damping=data.damping)
        v0, v1 = _variances(params)
        return expectation_propagation_lml_scaled(
            data.X @ params.beta, data.kernel, v0, v1, self.likelihood, data.outcome,
            data.trials, init_sites=data.init_sites, options=options)

    def __hash__(self):
        return hash((type(self.likelihood).__name__, self.max_iter))

    def __eq__(self, other):
        return (type(other) is type(self)
                and type(other.likelihood) is type(self.likelihood)
                and other.max_iter == self.max_iter)


# ----------------------------------------------------------------------------------------------
# facades


def _economic_q0_s0(QS, n: Optional[int], dtype):
    """glimix-core's ``((Q0, Q1), S0)`` (or ``(Q0, S0)``, or None) -> (Q0, S0) arrays."""
    if QS is None:
        if n is None:
            raise ValueError("QS is None and the number of samples is unknown.")
        return jnp.zeros((n, 0), dtype), jnp.zeros((0,), dtype)
    if not isinstance(QS, (tuple, list)) or len(QS) != 2:
        raise ValueError("QS must be the economic eigendecomposition ((Q0, Q1), S0) of K.")
    Q = QS[0]
    Q0 = Q[0] if isinstance(Q, (tuple, list)) else Q
    Q0 = np.asarray(Q0, dtype=float)
    S0 = np.asarray(QS[1], dtype=float)
    if Q0.ndim != 2 or S0.ndim != 1 or Q0.shape[1] != S0.shape[0]:
        raise ValueError(f"QS: Q0 must be (n, r) and S0 (r,); got {Q0.shape} and {S0.shape}.")
    if not (np.all(np.isfinite(Q0)) and np.all(np.isfinite(S0))):
        raise ValueError("QS has non-finite values.")
    if n is not None and Q0.shape[0] != n:
        raise ValueError(f"Number of samples in outcome ({n}) and covariance "
                         f"({Q0.shape[0]}) differ.")
    return jnp.asarray(Q0, dtype), jnp.asarray(S0, dtype)


def _check_covariates(X, n, dtype):
    X = np.asarray(X, dtype=float)
    if X.ndim != 2:
        raise ValueError(f"Covariates must be a bidimensional array; got shape {X.shape}.")
    if not np.all(np.isfinite(X)):
        raise ValueError("Covariates must have finite values only.")
    if X.shape[0] != n:
        raise ValueError(f"Number of samples in outcome ({n}) and covariates "
                         f"({X.shape[0]}) differ.")
    return jnp.asarray(X, dtype)


class _GLMMBase:
    """Shared state of the facades: parameters, fixed flags, bounds, glimix-core accessors."""

    def _init_params(self, ncovariates: int, dtype):
        self._dtype = dtype
        self._params = GLMMParams(jnp.zeros((ncovariates,), dtype), jnp.asarray(0.0, dtype),
                                  jnp.asarray(0.0, dtype))
        self._fixed = set()
        self._logscale_bounds = LOGSCALE_BOUNDS
        self.last_fit = None  # OptimizeResult of the last fit()

    # parameters ---------------------------------------------------------------------------
    def _changed(self):
        """Hook: a parameter or fixed flag changed."""

    @property
    def params(self) -> GLMMParams:
        """Current parameters as a :class:`GLMMParams` pytree."""
        return self._params

    @params.setter
    def params(self, value: GLMMParams):
        beta = jnp.asarray(value.beta, self._dtype).reshape(self._params.beta.shape)
        self._params = GLMMParams(beta, jnp.asarray(value.logscale, self._dtype),
                                  jnp.asarray(value.logitdelta, self._dtype))
        self._changed()

    @property
    def beta(self) -> np.ndarray:
        """Fixed-effect sizes β, (c,)."""
        return np.asarray(self._params.beta)

    @beta.setter
    def beta(self, value):
        value = np.asarray(value, dtype=float).reshape(-1)
        if value.shape != self._params.beta.shape:
            raise ValueError(f"beta must have shape {self._params.beta.shape}; got {value.shape}.")
        self.params = self._params._replace(beta=value)

    @property
    def logscale(self) -> float:
        return float(self._params.logscale)

    @logscale.setter
    def logscale(self, value):
        self.params = self._params._replace(logscale=float(value))

    @property
    def logitdelta(self) -> float:
        return float(self._params.logitdelta)

    @logitdelta.setter
    def logitdelta(self, value):
        self.params = self._params._replace(logitdelta=float(value))

    @property
    def scale(self) -> float:
        """Overall variance s."""
        return float(np.exp(self.logscale))

    @scale.setter
    def scale(self, value):
        value = float(value)
        if not value > 0:
            raise ValueError(f"scale must be positive; got {value}.")
        lo, hi = self._logscale_bounds
        self.logscale = float(np.clip(np.log(value), lo, hi))

    @property
    def delta(self) -> float:
        """Ratio δ of the identity's variance to the total: v1 = sδ, v0 = s(1-δ)."""
        return float(1.0 / (1.0 + np.exp(-self.logitdelta)))

    @delta.setter
    def delta(self, value):
        value = float(np.clip(float(value), DELTA_EPSILON, 1.0 - DELTA_EPSILON))
        self.logitdelta = float(np.log(value / (1.0 - value)))

    @property
    def v0(self) -> float:
        """First variance, s(1 - δ)."""
        return self.scale * (1.0 - self.delta)

    @property
    def v1(self) -> float:
        """Second variance, sδ."""
        return self.scale * self.delta

    @property
    def X(self) -> np.ndarray:
        return np.asarray(self._X)

    @property
    def ncovariates(self) -> int:
        return int(self._X.shape[1])

    @property
    def nsamples(self) -> int:
        return int(self._X.shape[0])

    def fix(self, var_name: str):
        """Prevent a variable ('beta', 'scale' or 'delta') from being fitted."""
        self._fixed.add(self._internal(var_name))
        self._changed()

    def unfix(self, var_name: str):
        """Let a variable ('beta', 'scale' or 'delta') be fitted."""
        self._fixed.discard(self._internal(var_name))
        self._changed()

    def isfixed(self, var_name: str) -> bool:
        """Is 'beta', 'scale' or 'delta' (or glimix-core's internal 'logscale' /
        'logitdelta') held fixed?"""
        if var_name in _NAMES:
            return var_name in self._fixed
        return self._internal(var_name) in self._fixed

    _isfixed = isfixed  # glimix-core's (optimix) name

    def _check_grad(self, step: float = 1.49e-08) -> float:
        """glimix-core's check: ‖forward differences of the lml over the free variables
        (beta, logitdelta, logscale) − the autodiff gradient‖ (≈ 0 when right)."""
        objective, data = self._objective_and_data()
        free = self._free()
        params = self._params
        x0 = _flat_free(params, free)
        return finite_difference_error(_free_objective, x0, objective, params, free, data,
                                       step=step)

    @staticmethod
    def _internal(var_name):
        if var_name not in _PUBLIC_TO_INTERNAL:
            raise ValueError(f"Unknown variable {var_name!r}; expected 'beta', 'scale' or "
                             "'delta'.")
        return _PUBLIC_TO_INTERNAL[var_name]

    def set_variable_bounds(self, var_name: str, bounds):
        """Change the box of 'scale' (given on logscale, as in glimix-core)."""
        if self._internal(var_name) != "logscale":
            raise ValueError("Only the bounds of 'logscale' can be changed.")
        self._logscale_bounds = (float(bounds[0]), float(bounds[1]))
        self._changed()

    def _free(self):
        return tuple(name not in self._fixed for name in _NAMES)

    def mean(self) -> np.ndarray:
        """Prior mean Xβ, (n,)."""
        return np.asarray(self._X @ self._params.beta)

    def covariance(self) -> np.ndarray:
        """Prior covariance v0 K + v1 I, (n, n)."""
        return np.asarray(glmm_covariance(self._params, self._Q0, self._S0))

    def _gradient_of(self, objective, data) -> dict:
        grad = _grad_jit(objective, self._params, data)
        return {"beta": np.asarray(grad.beta), "logscale": float(grad.logscale),
                "logitdelta": float(grad.logitdelta)}

    def _run_fit(self, objective, data, factr, pgtol):
        params, result = fit_glmm(objective, self._params, data, free=self._free(),
                                  logscale_bounds=self._logscale_bounds, factr=factr,
                                  pgtol=pgtol)
        self.last_fit = result
        self.params = params
        if result is not None and not bool(result.success):
            warnings.warn(f"{type(self).__name__}.fit did not converge: {result.message}",
                          RuntimeWarning, stacklevel=3)
        return result


@functools.partial(jax.jit, static_argnames=("objective",))
def _grad_jit(objective, params, data):
    return jax.grad(objective)(params, data)


class GLMMNormal(_GLMMBase):
    """LMM with heterogeneous Normal likelihoods (glimix-core's ``GLMMNormal``).

    ``μ̃ ~ N(Xβ, v0 K + v1 I + Σ̃)`` with ``μ̃ = eta/tau`` and ``Σ̃ = diag(1/tau)``.

    Parameters
    ----------
    eta : (n,) array_like, ``μ̃ᵢ/σ̃ᵢ²``
    tau : (n,) array_like, ``1/σ̃ᵢ²`` (positive)
    X : (n, c) array_like, covariates
    QS : economic eigendecomposition ``((Q0, Q1), S0)`` of K, or None for K = 0
    """

    def __init__(self, eta, tau, X, QS=None):
        dtype = jnp.result_type(float)
        eta = np.asarray(eta, dtype=float)
        tau = np.asarray(tau, dtype=float)
        if eta.ndim != 1 or tau.shape != eta.shape:
            raise ValueError(f"eta and tau must be 1-D of the same shape; got {eta.shape} and "
                             f"{tau.shape}.")
        if not (np.all(np.isfinite(eta)) and np.all(np.isfinite(tau))):
            raise ValueError("eta and tau must be finite.")
        if np.any(tau <= 0):
            raise ValueError("tau must be positive (site precisions).")
        n = eta.shape[0]
        self._eta = jnp.asarray(eta, dtype)
        self._tau = jnp.asarray(tau, dtype)
        self._X = _check_covariates(X, n, dtype)
        self._Q0, self._S0 = _economic_q0_s0(QS, n, dtype)
        self._QS = QS
        self._init_params(self._X.shape[1], dtype)

    @property
    def eta(self) -> np.ndarray:
        return np.asarray(self._eta)

    @property
    def tau(self) -> np.ndarray:
        return np.asarray(self._tau)

    def _data(self):
        return _NormalData(self._eta, self._tau, self._X, self._Q0, self._S0)

    def value(self) -> float:
        """Log of the marginal likelihood (see :func:`glmm_normal_lml`)."""
        return float(_normal_lml_jit(self._params, self._data()))

    def lml(self) -> float:
        """Log of the marginal likelihood, log p(μ̃), in nats."""
        return self.value()

    def gradient(self) -> dict:
        """Derivatives of the lml over 'beta', 'logscale', 'logitdelta' (autodiff)."""
        return self._gradient_of(_normal_objective, self._data())

    def _objective_and_data(self):
        return _normal_objective, self._data()

    def fit(self, verbose: bool = False, factr: float = 1e5, pgtol: float = 1e-7):
        """Maximise the marginal likelihood (L-BFGS-B). Returns the OptimizeResult."""
        return self._run_fit(_normal_objective, self._data(), factr, pgtol)

    def get_fast_scanner(self):
        """FastScanner for association scans at the current variances (glimix-core's).

        The scan sees ``y = η/τ`` with covariance ``v0 K + diag(1/τ)`` plus ``v1 I``.
        """
        from jaxinfer.glmm import scan as _scan

        K = np.asarray(self._v0_k_plus_noise())
        S, Q = np.linalg.eigh(K)
        keep = S >= np.sqrt(np.finfo(float).eps)
        QS = ((Q[:, keep], Q[:, ~keep]), S[keep])
        return _scan.FastScanner(self.eta / self.tau, self.X, QS, self.v1)

    def _v0_k_plus_noise(self):
        kernel = (self._Q0 * self._S0) @ self._Q0.T
        return self.v0 * kernel + jnp.diag(1.0 / self._tau)

    def copy(self) -> "GLMMNormal":
        other = GLMMNormal(self.eta, self.tau, self.X, self._QS)
        other._params = self._params
        other._fixed = set(self._fixed)
        other._logscale_bounds = self._logscale_bounds
        return other


@jax.jit
def _normal_lml_jit(params, data):
    return _normal_objective(params, data)


class GLMMExpFam(_GLMMBase):
    """GLMM with an exponential-family likelihood, fitted by expectation propagation.

    glimix-core's ``GLMMExpFam``: latent ``z ~ N(Xβ, v0 K + v1 I)``, outcome
    ``yᵢ ~ p(yᵢ | zᵢ)`` (Bernoulli, Probit, Binomial or Poisson). For Probit, δ is fixed at
    ~0 (1.49e-8), as in glimix-core.

    Parameters
    ----------
    y : (n,) array_like, outcome (successes for Binomial)
    lik : str or tuple, e.g. ``"bernoulli"``, ``"poisson"``, ``"probit"``,
        ``("binomial", ntrials)`` (case-insensitive), or a Likelihood instance
    X : (n, c) array_like, covariates
    QS : economic eigendecomposition ``((Q0, Q1), S0)`` of K, or None for K = 0
    n_int : accepted for compatibility (liknorm's grid size); the JAX quadrature ignores it
    rtol, atol : EP stopping rule (glimix-core's defaults)
    damping : fraction of the old site parameters kept at each sweep (0: glimix-core's
        undamped EP)
    max_iter : EP sweeps before giving up (100)

    EP is warm-started from the sites of the previous evaluation, as in glimix-core; the
    fixed point does not depend on the start.
    """

    def __init__(self, y, lik, X, QS=None, n_int: int = 1000, rtol: float = 1.49e-05,
                 atol: float = 1.49e-08, damping: float = 0.0, max_iter: int = 100):
        dtype = jnp.result_type(float)
        likelihood, trials = get_likelihood(lik)
        y, trials = likelihood.check_outcome(y, trials)
        n = y.shape[0]
        self._likelihood = likelihood
        self._lik = lik
        self._y = jnp.asarray(y, dtype)
        self._trials = jnp.asarray(trials, dtype)
        self._X = _check_covariates(X, n, dtype)
        self._Q0, self._S0 = _economic_q0_s0(QS, n, dtype)
        self._QS = QS
        if not 0.0 <= damping < 1.0:
            raise ValueError(f"damping must be in [0, 1); got {damping}.")
        self._ep_settings = (float(rtol), float(atol), float(damping))
        self._objective = _ExpFamObjective(likelihood, int(max_iter))
        self._init_params(self._X.shape[1], dtype)
        self._sites = EPSites(jnp.zeros((n,), dtype), jnp.zeros((n,), dtype))
        self._ep_cache: Optional[EPResult] = None
        self._grad_cache: Optional[GLMMParams] = None
        self._kernel = (self._Q0 * self._S0) @ self._Q0.T   # (n, n), once
        if likelihood.name == "probit":
            self.delta = 0.0
            self.fix("delta")

    def _changed(self):
        self._ep_cache = None

    @property
    def likelihood(self) -> Likelihood:
        return self._likelihood

    def _objective_and_data(self):
        self._ep()  # warm sites for the evaluations
        return self._objective, self._data()

    def _data(self):
        rtol, atol, damping = self._ep_settings
        return _ExpFamData(self._y, self._trials, self._X, self._kernel, self._sites,
                           jnp.asarray(rtol, self._dtype), jnp.asarray(atol, self._dtype),
                           jnp.asarray(damping, self._dtype))

    def _ep(self) -> EPResult:
        if self._ep_cache is None:
            _, grad, result = _expfam_value_grad_jit(self._objective, self._params, self._data())
            self._keep(result, grad)
        return self._ep_cache

    def _keep(self, result: EPResult, grad):
        """Cache the EP result at the current parameters (and the lml gradient, or None)."""
        self._grad_cache = grad
        self._ep_cache = result
        if bool(result.converged):
            self._sites = result.sites
        else:
            warnings.warn(
                f"EP did not converge in {int(result.n_iter)} sweeps (last step "
                f"{float(result.last_step):.3g}); the lml is approximate.",
                RuntimeWarning, stacklevel=4)

    def value(self) -> float:
        """EP log marginal likelihood (nats)."""
        return float(self._ep().log_marginal_likelihood)

    def lml(self) -> float:
        """EP log marginal likelihood (nats)."""
        return self.value()

    def gradient(self) -> dict:
        """Gradient of the lml over 'beta', 'logscale', 'logitdelta' (autodiff at the EP
        fixed point)."""
        if self._ep_cache is None or self._grad_cache is None:
            self._ep_cache = None
            self._ep()
        grad = self._grad_cache
        return {"beta": np.asarray(grad.beta), "logscale": float(grad.logscale),
                "logitdelta": float(grad.logitdelta)}

    def fit(self, verbose: bool = False, factr: float = 1e5, pgtol: float = 1e-7):
        """Maximise the EP marginal likelihood by L-BFGS-B; returns the OptimizeResult.

        ``factr`` and ``pgtol`` as in scipy's ``fmin_l_bfgs_b`` (glimix-core's defaults).
        The first EP run starts from the current sites, every later one from the sites of
        the last accepted iterate; the EP result at the optimum comes back with the fit (no
        extra EP run). Needs float64 (raises ValueError otherwise; see
        :func:`jaxinfer.glmm._checks.require_float64`).
        """
        require_float64(self._dtype, "GLMMExpFam.fit")
        result = self._run_fit(self._objective, self._data(), factr, pgtol)
        if result is not None:
            self._keep(result.extra["aux"][0], grad=None)
        self._ep()
        return result

    @property
    def site(self) -> EPSites:
        """Current EP site natural parameters (eta, tau)."""
        return self._ep().sites

    @property
    def ep_result(self) -> EPResult:
        """Full EP outcome at the current parameters (sites, cavities, posterior, ...)."""
        return self._ep()

    def posteriori_mean(self) -> np.ndarray:
        """Mean of the EP posterior of the latent z, (n,)."""
        return np.asarray(self._ep().posterior_mean)

    def posteriori_covariance(self) -> np.ndarray:
        """Covariance of the EP posterior of z: (K⁻¹ + T̃)⁻¹ with K = v0 K + v1 I, (n, n)."""
        sites = self._ep().sites
        cov = glmm_covariance(self._params, self._Q0, self._S0)
        root = jnp.sqrt(sites.tau)
        post = ep_posterior(self._X @ self._params.beta, cov, sites)
        scaled = jax.scipy.linalg.solve_triangular(post.chol, root[:, None] * cov, lower=True)
        return np.asarray(cov - scaled.T @ scaled)

    def predictive_mean(self, Xstar, ks, kss) -> np.ndarray:
        """Latent mean at new samples (p,): X*β + v₀k* K⁻¹(μ − Xβ), with μ the EP posterior
        mean, K = v₀K₀ + v₁I; ``Xstar`` (p, c), ``ks`` (p, n) cross-kinship, ``kss`` (p,)."""
        mu = self._ep().posterior_mean
        K = glmm_covariance(self._params, self._Q0, self._S0)
        cross = self.v0 * jnp.asarray(ks, self._dtype)
        resid = jnp.linalg.solve(K, mu - self._X @ self._params.beta)
        return np.asarray(jnp.asarray(Xstar, self._dtype) @ self._params.beta + cross @ resid)

    def predictive_covariance(self, Xstar, ks, kss) -> np.ndarray:
        """Latent variances at new samples (p,), glimix-core's formula:
        v₀k** + v₁ − diag(v₀k* (K + diag(σ²))⁻¹ v₀k*ᵀ), σ² the EP posterior variances."""
        var = self._ep().posterior_variance
        K = glmm_covariance(self._params, self._Q0, self._S0)
        cross = self.v0 * jnp.asarray(ks, self._dtype)
        solved = jnp.linalg.solve(K + jnp.diag(var), cross.T)
        return np.asarray(self.v0 * jnp.asarray(kss, self._dtype) + self.v1
                          - jnp.sum(cross * solved.T, axis=1))

    def copy(self) -> "GLMMExpFam":
        rtol, atol, damping = self._ep_settings
        other = GLMMExpFam(np.asarray(self._y), (self._likelihood, np.asarray(self._trials)),
                           self.X, self._QS, rtol=rtol, atol=atol, damping=damping,
                           max_iter=self._objective.max_iter)
        other._params = self._params
        other._fixed = set(self._fixed)
        other._logscale_bounds = self._logscale_bounds
        other._sites = self._sites
        return other


@_lazy_jit(static_argnames=("objective",))
def _expfam_value_grad_jit(objective: _ExpFamObjective, params, data: _ExpFamData):
    (lml, result), grad = jax.value_and_grad(objective.with_result, has_aux=True)(params, data)
    return lml, grad, result
