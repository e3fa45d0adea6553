"""Gaussian processes with Normal (GP) and exponential-family (ExpFamGP) likelihoods.

``GP(y, mean, cov)``: ``y ~ N(m, K)`` with ``m = mean.value()`` and ``K = cov.value()`` built
from :mod:`jaxinfer.glmm.mean` / :mod:`jaxinfer.glmm.cov` objects (glimix-core's
``OffsetMean``, ``LinearMean``, ``SumMean``, ``EyeCov``, ``LinearCov``, ``GivenCov``,
``SumCov``, ...). ``ExpFamGP(y, lik, mean, cov)``: latent ``z ~ N(m, K)`` and
``yᵢ ~ p(yᵢ | zᵢ)`` for a likelihood of :mod:`jaxinfer.glmm.lik`, the marginal likelihood
approximated by expectation propagation (:mod:`jaxinfer.glmm.ep`).

Parameters are the mean's and covariance's own (glimix-core's parametrisation: ``offset``,
``effsizes``, ``logscale``, ``Lu``; fixed ones stay put) with their box bounds. ``fit``
maximises the (EP) log marginal likelihood with ``jaxinfer.optimize.minimize(method=
'L-BFGS-B')`` and autodiff gradients, stopping as glimix-core (``factr=1e5``, ``pgtol=1e-7``),
then writes the optimum back into the ``mean`` and ``cov`` objects, as glimix-core does.

The pure functions :func:`gp_log_marginal_likelihood` and :func:`expfam_gp_lml` take the cores
(``mean.module``, ``cov.module``) and jit, vmap and differentiate.
"""

from __future__ import annotations

import warnings
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxinfer.glmm._checks import FACTR_EPS, require_float64
from jaxinfer.glmm._module import finite_difference_error, parameter_bounds, parameter_mask
from jaxinfer.glmm.ep import EPOptions, EPResult, EPSites, expectation_propagation_lml
from jaxinfer.glmm.lik import Likelihood, get_likelihood

__all__ = ["GP", "ExpFamGP", "gp_log_marginal_likelihood", "expfam_gp_lml"]


def gp_log_marginal_likelihood(mean_core, cov_core, y):
    """``log N(y | m, K)`` in nats for pure mean / covariance cores (Cholesky of K)."""
    m = mean_core.value()
    K = cov_core.value()
    chol = jnp.linalg.cholesky(K)
    white = jax.scipy.linalg.solve_triangular(chol, y - m, lower=True)
    n = y.shape[0]
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))
    return -0.5 * (log_det + white @ white + n * jnp.log(2.0 * jnp.pi))


def expfam_gp_lml(mean_core, cov_core, likelihood: Likelihood, y, trials=None,
                  init_sites: Optional[EPSites] = None, options: Optional[EPOptions] = None):
    """``(lml, EPResult)``: EP log marginal likelihood, differentiable in the cores."""
    return expectation_propagation_lml(mean_core.value(), cov_core.value(), likelihood, y,
                                       trials, init_sites=init_sites, options=options)


# ----------------------------------------------------------------------------------------------
# pure objectives over (params, static) partitions of (mean_core, cov_core)


class _GPObjective(eqx.Module):
    def __call__(self, params, static, data):
        mean_core, cov_core = eqx.combine(params, static)
        return gp_log_marginal_likelihood(mean_core, cov_core, data["y"])

    def with_result(self, params, static, data):
        return self(params, static, data), None


class _ExpFamGPObjective(eqx.Module):
    likelihood: Likelihood
    max_iter: int = eqx.field(static=True, default=100)

    def with_result(self, params, static, data):
        mean_core, cov_core = eqx.combine(params, static)
        options = EPOptions(rtol=data["rtol"], atol=data["atol"], max_iter=self.max_iter,
                            damping=data["damping"])
        return expfam_gp_lml(mean_core, cov_core, self.likelihood, data["y"], data["trials"],
                             init_sites=data["init_sites"], options=options)

    def __call__(self, params, static, data):
        return self.with_result(params, static, data)[0]


@eqx.filter_jit
def _value_grad(objective, params, static, data):
    (lml, aux), grad = jax.value_and_grad(
        lambda p: objective.with_result(p, static, data), has_aux=True)(params)
    return lml, grad, aux


@eqx.filter_jit
def _fit(objective, params, static, data, lower, upper, factr, pgtol):
    from jaxinfer.optimize.minimize import minimize

    x0, unravel = ravel_pytree(params)
    lb = ravel_pytree(lower)[0]
    ub = ravel_pytree(upper)[0]

    def fun(x, data):
        return -objective(unravel(x), static, data)

    result = minimize(fun, x0, args=(data,), method="L-BFGS-B", bounds=(lb, ub),
                      options={"ftol": factr * FACTR_EPS, "gtol": pgtol, "maxiter": 15000,
                               "maxfun": 15000})
    return unravel(result.x), result


def _objective_at(params, objective, static, data):
    return objective(params, static, data)


class _GPBase:
    """Shared facade machinery: the (mean, cov) cores, their free parameters and bounds."""

    def _init_functions(self, mean, cov, n):
        for what, obj in (("mean", mean), ("cov", cov)):
            if not hasattr(obj, "module"):
                raise TypeError(f"{what} must be a jaxinfer.glmm mean/covariance object (with "
                                f".module); got {type(obj).__name__}.")
        m = np.shape(mean.value())
        k = np.shape(cov.value())
        if m != (n,):
            raise ValueError(f"mean.value() has shape {m}; expected ({n},) like the outcome.")
        if k != (n, n):
            raise ValueError(f"cov.value() has shape {k}; expected ({n}, {n}).")
        self._mean = mean
        self._cov = cov
        self.last_fit = None

    def _split(self):
        cores = (self._mean.module, self._cov.module)
        mask = (parameter_mask(cores[0]), parameter_mask(cores[1]))
        params, static = eqx.partition(cores, mask)
        return params, static

    def _bounds(self):
        lo_m, hi_m = parameter_bounds(self._mean.module)
        lo_c, hi_c = parameter_bounds(self._cov.module)
        return (lo_m, lo_c), (hi_m, hi_c)

    def _evaluate(self):
        params, static = self._split()
        return _value_grad(self._objective, params, static, self._data())

    def gradient(self):
        """Gradient of the lml as a pytree ``(mean_core, cov_core)`` of the free parameters."""
        return self._evaluate()[1]

    def _check_grad(self, step: float = 1.49e-08) -> float:
        """glimix-core's check: ‖forward differences of the lml over the free parameters of
        the mean and covariance − the autodiff gradient‖ (≈ 0 when right)."""
        self._evaluate()  # warm EP sites (ExpFamGP) for the shifted evaluations
        params, static = self._split()
        return finite_difference_error(_objective_at, params, self._objective, static,
                                       self._data(), step=step)

    def _run_fit(self, factr, pgtol):
        params, static = self._split()
        if not jax.tree_util.tree_leaves(params):
            return None
        lower, upper = self._bounds()
        new_params, result = _fit(self._objective, params, static, self._data(), lower, upper,
                                  float(factr), float(pgtol))
        mean_core, cov_core = eqx.combine(new_params, static)
        self._mean.module = mean_core
        self._cov.module = cov_core
        self.last_fit = result
        if not bool(result.success):
            warnings.warn(f"{type(self).__name__}.fit did not converge: {result.message}",
                          RuntimeWarning, stacklevel=3)
        return result

    def __str__(self):
        msg = f"{type(self).__name__}(...)\n  lml: {self.lml()}\n"
        mean_lines = "\n".join("  " + line for line in str(self._mean).split("\n"))
        cov_lines = "\n".join("  " + line for line in str(self._cov).split("\n"))
        return msg + mean_lines + "\n" + cov_lines


class GP(_GPBase):
    """Gaussian process inference via maximum likelihood (glimix-core's ``GP``).

    Parameters
    ----------
    y : (n,) array_like, outcome
    mean : a mean object (``OffsetMean``, ``LinearMean``, ``SumMean``, ...) of size n
    cov : a covariance object (``EyeCov``, ``LinearCov``, ``SumCov``, ...) of size n×n

    ``fit`` changes ``mean`` and ``cov`` in place (they are shared with the caller).
    """

    def __init__(self, y, mean, cov):
        y = np.asarray(y, dtype=float)
        if y.ndim != 1:
            raise ValueError(f"y must be a 1-D array; got shape {y.shape}.")
        if not np.all(np.isfinite(y)):
            raise ValueError("There are non-finite values in the phenotype.")
        self._y = jnp.asarray(y, jnp.result_type(float))
        self._init_functions(mean, cov, y.shape[0])
        self._objective = _GPObjective()

    def _data(self):
        return {"y": self._y}

    def value(self) -> float:
        """log N(y | m, K) in nats."""
        params, static = self._split()
        value = float(_gp_value(params, static, self._y))
        if not np.isfinite(value):
            raise RuntimeError("The covariance is not positive definite (lml is not finite).")
        return value

    def lml(self) -> float:
        """Log of the marginal likelihood, log p(y), in nats."""
        return self.value()

    def fit(self, verbose: bool = False, factr: float = 1e5, pgtol: float = 1e-7):
        """Maximise the marginal likelihood (L-BFGS-B); returns the OptimizeResult."""
        return self._run_fit(factr, pgtol)


@eqx.filter_jit
def _gp_value(params, static, y):
    mean_core, cov_core = eqx.combine(params, static)
    return gp_log_marginal_likelihood(mean_core, cov_core, y)


class ExpFamGP(_GPBase):
    """Expectation propagation for generalised Gaussian processes (glimix-core's ``ExpFamGP``).

    Parameters
    ----------
    y : (n,) array_like, outcome
    lik : likelihood name (``"bernoulli"``, ``"probit"``, ``"poisson"``), a tuple
        ``("binomial", ntrials)``, or a Likelihood instance
    mean, cov : mean and covariance objects (as :class:`GP`)
    rtol, atol, damping, max_iter : EP settings (glimix-core's defaults; undamped)

    EP is warm-started from the previous evaluation's sites, as glimix-core does.
    """

    def __init__(self, y, lik, mean, cov, rtol: float = 1.49e-05, atol: float = 1.49e-08,
                 damping: float = 0.0, max_iter: int = 100):
        likelihood, trials = get_likelihood(lik)
        y, trials = likelihood.check_outcome(y, trials)
        dtype = jnp.result_type(float)
        self._likelihood = likelihood
        self._y = jnp.asarray(y, dtype)
        self._trials = jnp.asarray(trials, dtype)
        self._init_functions(mean, cov, y.shape[0])
        if not 0.0 <= damping < 1.0:
            raise ValueError(f"damping must be in [0, 1); got {damping}.")
        self._settings = (float(rtol), float(atol), float(damping))
        self._objective = _ExpFamGPObjective(likelihood, int(max_iter))
        n = y.shape[0]
        self._sites = EPSites(jnp.zeros((n,), dtype), jnp.zeros((n,), dtype))
        self._cache_key = None
        self._cache = None

    def _data(self):
        rtol, atol, damping = self._settings
        dtype = self._y.dtype
        return {"y": self._y, "trials": self._trials, "init_sites": self._sites,
                "rtol": jnp.asarray(rtol, dtype), "atol": jnp.asarray(atol, dtype),
                "damping": jnp.asarray(damping, dtype)}

    def _evaluate(self):
        # cache on the current parameter values (the facades are mutable and shared)
        params, _ = self._split()
        key = tuple(np.asarray(leaf).tobytes() for leaf in jax.tree_util.tree_leaves(
            (self._mean.module, self._cov.module)))
        if self._cache is None or key != self._cache_key:
            lml, grad, result = super()._evaluate()
            self._cache = (lml, grad, result)
            self._cache_key = key
            if bool(result.converged):
                self._sites = result.sites
            else:
                warnings.warn(f"EP did not converge in {int(result.n_iter)} sweeps; the lml "
                              "is approximate.", RuntimeWarning, stacklevel=3)
        return self._cache

    def value(self) -> float:
        """EP log marginal likelihood in nats."""
        return float(self._evaluate()[0])

    def lml(self) -> float:
        """EP log marginal likelihood in nats."""
        return self.value()

    @property
    def ep_result(self) -> EPResult:
        """EP outcome (sites, cavities, posterior marginals) at the current parameters."""
        return self._evaluate()[2]

    @property
    def site(self) -> EPSites:
        return self.ep_result.sites

    def fit(self, verbose: bool = False, factr: float = 1e5, pgtol: float = 1e-7):
        """Maximise the EP marginal likelihood (L-BFGS-B); returns the OptimizeResult.
        Needs float64 (raises ValueError otherwise)."""
        require_float64(self._y.dtype, "ExpFamGP.fit")
        self._evaluate()
        result = self._run_fit(factr, pgtol)
        self._evaluate()
        return result
