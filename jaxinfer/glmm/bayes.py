"""Bayesian LMM and GLMM with NumPyro: posterior distributions instead of ML point estimates.

Same model and parametrisation as :class:`jaxinfer.glmm.LMM` / ``GLMMExpFam`` (glimix-core):

    LMM:   y ~ N(Xβ, s((1-δ)K + δI))
    GLMM:  z ~ N(Xβ, s((1-δ)K + δI)),  y_i | z_i ~ Bernoulli(sigmoid z_i),
           Binomial(n_i, sigmoid z_i) or Poisson(exp z_i)

with priors (defaults in :class:`Priors`) β ~ N(0, 10²) per coefficient, s ~ HalfCauchy(5),
δ ~ Beta(1, 1), any of which can be replaced by another NumPyro distribution or fixed to a
value (``fixed={"delta": 0.3}``).

Computation
-----------
* The LMM likelihood uses the economic eigendecomposition ``((Q0, Q1), S0)`` of K (the ``QS``
  that ``LMM`` takes), reduced once to the sufficient statistics of
  :func:`jaxinfer.glmm.lmm.lmm_statistics`; with ``D0 = (1-δ)S0 + δ`` and r the rank of K,

      log p(y | β, s, δ) = -½[n log 2πs + Σ log D0 + (n-r) log δ
                              + (‖D0^{-½}Q0ᵀ(y-Xβ)‖² + ‖(I-Q0Q0ᵀ)(y-Xβ)‖²/δ)/s],

  O(r·c) per evaluation, so NUTS costs little more than the ML fit.
* The GLMM samples the latent field in non-centred form,
  ``z = Xβ + sqrt(s(1-δ)) Q0 (sqrt(S0) ⊙ a) + sqrt(sδ) e`` with ``a ~ N(0, I_r)``,
  ``e ~ N(0, I_n)``, which is exactly ``N(Xβ, s((1-δ)K + δI))`` and samples well with NUTS.

:func:`sample_lmm` / :func:`sample_glmm` run NUTS with an explicit ``jax.random`` key on the shared
driver :func:`jaxinfer.sampling.run_nuts` (chains vectorised, one compilation per model and
shapes, optional checkpoints and progress) and return a :class:`BayesResult` (posterior draws,
a summary table with mean, sd, quantiles, effective sample size and split R-hat, the number of
divergent transitions).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pandas as pd
from numpyro.diagnostics import summary as _numpyro_summary

from jaxinfer.glmm._checks import check_covariates, check_outcome, check_qs
from jaxinfer.glmm.lmm import LMMData, lmm_statistics
from jaxinfer.sampling import SamplingRun, run_nuts

__all__ = [
    "Priors",
    "BayesResult",
    "lmm_log_likelihood",
    "lmm_model",
    "glmm_model",
    "sample_lmm",
    "sample_glmm",
    "gaussian_beta_posterior",
]

_LOG2PI = float(np.log(2 * np.pi))
_PARAMETERS = ("beta", "scale", "delta")
_LIKELIHOODS = ("bernoulli", "binomial", "poisson")


@dataclasses.dataclass(frozen=True)
class Priors:
    """Prior distributions (NumPyro) of the LMM / GLMM parameters.

    Attributes:
        beta: prior of each fixed effect (broadcast to ``(c,)``); default ``Normal(0, 10)``.
        scale: prior of the total scale ``s`` (positive); default ``HalfCauchy(5)``.
        delta: prior of ``δ`` in (0, 1); default ``Beta(1, 1)`` (uniform).
    """

    beta: Any = None
    scale: Any = None
    delta: Any = None

    def resolved(self) -> "Priors":
        return Priors(
            beta=dist.Normal(0.0, 10.0) if self.beta is None else self.beta,
            scale=dist.HalfCauchy(5.0) if self.scale is None else self.scale,
            delta=dist.Beta(1.0, 1.0) if self.delta is None else self.delta,
        )


@dataclasses.dataclass
class BayesResult:
    """Posterior draws and their summary.

    Attributes:
        samples: dict name -> array ``(num_chains * num_samples, ...)`` for ``beta`` (c,),
            ``scale``, ``delta``, ``v0 = s(1-δ)``, ``v1 = sδ`` and, for a GLMM, the latent
            ``z`` (n,) when ``keep_latent`` was set.
        summary: DataFrame indexed by parameter (``beta[0]``, ..., ``scale``, ``delta``, ``v0``,
            ``v1``) with columns mean, sd, q05, median, q95, n_eff, r_hat.
        divergences: number of divergent NUTS transitions (should be 0).
        run: the driver's :class:`~jaxinfer.sampling.SamplingRun` (draws per chain, NUTS
            statistics, ``run.to_inference_data()`` for ArviZ).
    """

    samples: dict
    summary: pd.DataFrame
    divergences: int
    run: SamplingRun

    def posterior_mean(self, name: str) -> np.ndarray:
        """Posterior mean of one parameter (``"beta"``, ``"scale"``, ``"delta"``, ...)."""
        return np.asarray(self.samples[name]).mean(axis=0)


def _check_fixed(fixed: Optional[dict], c: int) -> dict:
    fixed = dict(fixed or {})
    unknown = sorted(set(fixed) - set(_PARAMETERS))
    if unknown:
        raise ValueError(f"fixed: unknown parameter(s) {unknown}; expected some of {list(_PARAMETERS)}")
    if "delta" in fixed and not 0.0 < float(fixed["delta"]) < 1.0:
        raise ValueError(f"fixed['delta']: expected a value in (0, 1), got {fixed['delta']}")
    if "scale" in fixed and not float(fixed["scale"]) > 0.0:
        raise ValueError(f"fixed['scale']: expected a positive value, got {fixed['scale']}")
    if "beta" in fixed:
        beta = np.asarray(fixed["beta"], float).reshape(-1)
        if beta.shape[0] != c:
            raise ValueError(f"fixed['beta']: expected {c} values (one per covariate), got {beta.shape[0]}")
        fixed["beta"] = beta
    return fixed


def _parameters(priors: Priors, fixed: dict, c: int, dtype):
    """Sample (or take fixed) β, s, δ inside a NumPyro model."""
    if "beta" in fixed:
        beta = jnp.asarray(fixed["beta"], dtype)
    else:
        beta = numpyro.sample("beta", priors.beta.expand([c]).to_event(1))
    scale = jnp.asarray(fixed["scale"], dtype) if "scale" in fixed else numpyro.sample("scale", priors.scale)
    delta = jnp.asarray(fixed["delta"], dtype) if "delta" in fixed else numpyro.sample("delta", priors.delta)
    numpyro.deterministic("v0", scale * (1 - delta))
    numpyro.deterministic("v1", scale * delta)
    return beta, scale, delta


def lmm_log_likelihood(data: LMMData, beta, scale, delta):
    """``log N(y | Xβ, s((1-δ)K + δI))`` from the sufficient statistics of ``lmm_statistics``.

    Args:
        data: :class:`~jaxinfer.glmm.lmm.LMMData` (S0 (r,), Q0ᵀy, Q0ᵀX and the parts of y, X
            orthogonal to Q0).
        beta: ``(c,)`` fixed effects; scale: ``s > 0``; delta: ``δ`` in (0, 1).

    Returns:
        Scalar log-likelihood (pure, differentiable, jit/vmap-able).
    """
    n = data.nsamples
    rank = data.S0.shape[0]
    D0 = (1 - delta) * data.S0 + delta
    r0 = data.Qty - data.QtX @ beta
    quad0 = jnp.sum(r0 * r0 / D0)
    quad1 = data.yy1 - 2 * beta @ data.Xy1 + beta @ data.XX1 @ beta
    logdet = jnp.sum(jnp.log(D0)) + (n - rank) * jnp.log(delta)
    return -0.5 * (n * (_LOG2PI + jnp.log(scale)) + logdet + (quad0 + quad1 / delta) / scale)


# One op for NumPyro's initialisation, which runs the model eagerly (op by op, each
# primitive compiled on its own); inlined into the compiled NUTS chunk.
_lmm_log_likelihood = jax.jit(lmm_log_likelihood)


def lmm_model(data: LMMData, priors: Priors = Priors(), fixed: Optional[dict] = None):
    """NumPyro model of the LMM (sites ``beta``, ``scale``, ``delta``; deterministic v0, v1)."""
    priors = priors.resolved()
    fixed = fixed or {}
    beta, scale, delta = _parameters(priors, fixed, data.QtX.shape[1], data.Qty.dtype)
    numpyro.factor("y", _lmm_log_likelihood(data, beta, scale, delta))


def glmm_model(y, trials, X, Q0, S0, likelihood: str, priors: Priors = Priors(), fixed: Optional[dict] = None):
    """NumPyro model of the GLMM with a non-centred latent field (see the module docstring).

    Args:
        y: ``(n,)`` outcomes; trials: ``(n,)`` binomial trials (ignored otherwise);
        X: ``(n, c)``; Q0: ``(n, r)``; S0: ``(r,)`` (from ``economic_qs``); likelihood: one of
        ``"bernoulli"``, ``"binomial"``, ``"poisson"``.
    """
    priors = priors.resolved()
    fixed = fixed or {}
    n, r = Q0.shape
    beta, scale, delta = _parameters(priors, fixed, X.shape[1], X.dtype)
    a = numpyro.sample("a", dist.Normal(jnp.zeros(r, X.dtype), 1.0).to_event(1))
    e = numpyro.sample("e", dist.Normal(jnp.zeros(n, X.dtype), 1.0).to_event(1))
    z = X @ beta + jnp.sqrt(scale * (1 - delta)) * (Q0 @ (jnp.sqrt(S0) * a)) + jnp.sqrt(scale * delta) * e
    numpyro.deterministic("z", z)
    if likelihood == "bernoulli":
        numpyro.sample("y", dist.Bernoulli(logits=z).to_event(1), obs=y)
    elif likelihood == "binomial":
        numpyro.sample("y", dist.Binomial(total_count=trials, logits=z).to_event(1), obs=y)
    else:
        numpyro.sample("y", dist.Poisson(jnp.exp(z)).to_event(1), obs=y)


def _summary_frame(samples: dict, num_chains: int, names) -> pd.DataFrame:
    rows = {}
    for name in names:
        if name not in samples:
            continue
        draws = np.asarray(samples[name])
        grouped = draws.reshape((num_chains, -1) + draws.shape[1:])
        stats = _numpyro_summary({name: grouped}, prob=0.9, group_by_chain=True)[name]
        flat = draws.reshape(draws.shape[0], -1)
        size = flat.shape[1]
        for j in range(size):
            label = name if draws.ndim == 1 else f"{name}[{j}]"
            pick = (lambda v: float(np.ravel(v)[j]))
            rows[label] = {
                "mean": pick(stats["mean"]), "sd": pick(stats["std"]),
                "q05": float(np.quantile(flat[:, j], 0.05)), "median": pick(stats["median"]),
                "q95": float(np.quantile(flat[:, j], 0.95)),
                "n_eff": pick(stats["n_eff"]), "r_hat": pick(stats["r_hat"]),
            }
    return pd.DataFrame.from_dict(rows, orient="index")


def _hashable(fixed: dict) -> tuple:
    """``fixed`` as a hashable tuple (the model is bound with it, and the driver caches the
    compiled chain per bound model)."""
    return tuple(sorted((k, tuple(np.ravel(v).tolist()) if k == "beta" else float(v))
                        for k, v in fixed.items()))


def _run(model: Callable, key, num_warmup, num_samples, num_chains, target_accept, progress,
         args: tuple, priors, fixed, checkpoint=None, **static):
    if not isinstance(key, jax.Array):
        raise TypeError(f"key: expected a jax.random key, got {type(key).__name__}")
    for value, name in ((num_warmup, "num_warmup"), (num_samples, "num_samples"), (num_chains, "num_chains")):
        if not isinstance(value, (int, np.integer)) or value < (0 if name == "num_warmup" else 1):
            raise ValueError(f"{name}: expected a {'non-negative' if name == 'num_warmup' else 'positive'} integer, got {value!r}")
    fn = functools.partial(_positional, model, priors=priors, fixed_items=_hashable(fixed),
                           **static)
    run = run_nuts(fn, args, key=key, num_warmup=int(num_warmup), num_samples=int(num_samples),
                   num_chains=int(num_chains), target_accept_prob=float(target_accept),
                   checkpoint=checkpoint, progress=progress)
    samples = {k: run.flat(k) for k in run.samples}
    divergences = int(np.asarray(run.stats["diverging"]).sum())
    return run, samples, divergences


def _positional(model, *args, priors, fixed_items, **static):
    # the driver passes the arrays positionally; the models take them by name
    names = {lmm_model: ("data",), glmm_model: ("y", "trials", "X", "Q0", "S0")}[model]
    fixed = {k: (np.asarray(v) if k == "beta" else v) for k, v in fixed_items}
    return model(**dict(zip(names, args)), priors=priors, fixed=fixed, **static)


def _prepare(y, X, QS):
    y = check_outcome(y)
    X = check_covariates(X, y.shape[0])
    Q0, S0 = check_qs(QS, y.shape[0])
    dtype = jnp.result_type(float)
    return y, X, Q0, S0, dtype


def sample_lmm(
    key,
    y,
    X,
    QS,
    *,
    priors: Priors = Priors(),
    fixed: Optional[dict] = None,
    num_warmup: int = 500,
    num_samples: int = 1000,
    num_chains: int = 1,
    target_accept: float = 0.8,
    progress: Optional[Callable] = None,
    checkpoint: Optional[str] = None,
) -> BayesResult:
    """NUTS posterior of the LMM ``y ~ N(Xβ, s((1-δ)K + δI))``.

    Args:
        key: ``jax.random`` key.
        y: ``(n,)`` outcome; X: ``(n, c)`` covariates; QS: ``economic_qs(K)``.
        priors: :class:`Priors`; fixed: parameters held at given values, e.g.
            ``{"delta": 0.4, "scale": 1.2}``.
        num_warmup, num_samples, num_chains: NUTS settings (chains run vectorised).
        progress: ``progress(jaxinfer.sampling.SamplingProgress)`` after every chunk;
        checkpoint: file the driver writes after every 100 steps (resume with
            :func:`jaxinfer.sampling.continue_sampling`).

    Returns:
        :class:`BayesResult` with draws of ``beta``, ``scale``, ``delta``, ``v0``, ``v1``.
    """
    y, X, Q0, S0, dtype = _prepare(y, X, QS)
    fixed = _check_fixed(fixed, X.shape[1])
    data = lmm_statistics(jnp.asarray(y, dtype), jnp.asarray(X, dtype), jnp.asarray(Q0, dtype),
                          jnp.asarray(S0, dtype))
    run, samples, divergences = _run(lmm_model, key, num_warmup, num_samples, num_chains, target_accept,
                                     progress, (data,), priors, fixed, checkpoint)
    summary = _summary_frame(samples, num_chains, ("beta", "scale", "delta", "v0", "v1"))
    return BayesResult(samples, summary, divergences, run)


def sample_glmm(
    key,
    y,
    lik,
    X,
    QS,
    *,
    priors: Priors = Priors(),
    fixed: Optional[dict] = None,
    num_warmup: int = 500,
    num_samples: int = 1000,
    num_chains: int = 1,
    target_accept: float = 0.9,
    keep_latent: bool = False,
    progress: Optional[Callable] = None,
    checkpoint: Optional[str] = None,
) -> BayesResult:
    """NUTS posterior of a Bernoulli / binomial / Poisson GLMM (latent field sampled jointly).

    Args:
        key: ``jax.random`` key.
        y: ``(n,)`` outcomes (0/1, successes, or counts).
        lik: glimix-core style likelihood: ``"bernoulli"``, ``("poisson",)``,
            ``("binomial", ntrials)``.
        X: ``(n, c)`` covariates; QS: ``economic_qs(K)``.
        keep_latent: also return the draws of the latent ``z`` (n,) (and of ``a``, ``e``).

    Returns:
        :class:`BayesResult` with draws of ``beta``, ``scale``, ``delta``, ``v0``, ``v1``.
    """
    y, X, Q0, S0, dtype = _prepare(y, X, QS)
    name = lik if isinstance(lik, str) else lik[0]
    name = str(name).lower()
    if name not in _LIKELIHOODS:
        raise ValueError(f"lik: expected one of {_LIKELIHOODS} (binomial as ('binomial', ntrials)), got {name!r}")
    n = y.shape[0]
    trials = np.ones(n)
    if name == "binomial":
        if isinstance(lik, str) or len(lik) < 2:
            raise ValueError("lik: the binomial likelihood needs its trials: ('binomial', ntrials)")
        trials = np.asarray(lik[1], float).reshape(-1)
        if trials.shape[0] != n or np.any(trials < 1) or np.any(trials != np.round(trials)):
            raise ValueError(f"ntrials: expected {n} positive integers, got {trials.shape[0]} values")
        if np.any(y > trials):
            raise ValueError("y: binomial successes exceed ntrials for some samples")
    if np.any(y < 0) or np.any(y != np.round(y)):
        raise ValueError(f"y: a {name} outcome must be non-negative integers")
    if name == "bernoulli" and np.any(y > 1):
        raise ValueError("y: a Bernoulli outcome must be 0 or 1")
    fixed = _check_fixed(fixed, X.shape[1])
    as_j = lambda a: jnp.asarray(a, dtype)  # noqa: E731
    run, samples, divergences = _run(
        glmm_model, key, num_warmup, num_samples, num_chains, target_accept, progress,
        (as_j(y), as_j(trials), as_j(X), as_j(Q0), as_j(S0)), priors, fixed, checkpoint,
        likelihood=name,
    )
    if not keep_latent:
        for latent in ("a", "e", "z"):
            samples.pop(latent, None)
    summary = _summary_frame(samples, num_chains, ("beta", "scale", "delta", "v0", "v1"))
    return BayesResult(samples, summary, divergences, run)


def gaussian_beta_posterior(y, X, K, scale: float, delta: float, prior_sd: float):
    """Exact posterior of β when s and δ are known and β ~ N(0, prior_sd² I) (conjugate).

    ``V = s((1-δ)K + δI)``; posterior covariance ``(XᵀV⁻¹X + I/prior_sd²)⁻¹`` and mean
    ``cov · XᵀV⁻¹y``. Dense O(n³) NumPy, meant as a reference.

    Returns:
        ``(mean (c,), covariance (c, c))``.
    """
    y = np.asarray(y, float)
    X = np.asarray(X, float)
    K = np.asarray(K, float)
    V = scale * ((1 - delta) * K + delta * np.eye(y.shape[0]))
    VinvX = np.linalg.solve(V, X)
    precision = X.T @ VinvX + np.eye(X.shape[1]) / prior_sd**2
    cov = np.linalg.inv(precision)
    return cov @ (VinvX.T @ y), cov
