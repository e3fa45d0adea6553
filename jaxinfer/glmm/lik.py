"""Exponential-family likelihoods for expectation propagation (liknorm's set, as in glimix-core).

Each likelihood is a stateless, final :class:`equinox.Module` describing ``p(y | z)`` for one
observation given its latent value ``z`` (the linear predictor, on the link scale):

=============  ==============================  ==================================================
name           outcome ``y``                   ``log p(y | z)``
=============  ==============================  ==================================================
``Bernoulli``  0 or 1                          ``y z - log(1 + e^z)``  (logit link)
``Probit``     0 or 1                          ``log Φ((2y - 1) z)``   (probit link)
``Binomial``   successes ``k`` of ``n`` trials  ``log C(n, k) + k z - n log(1 + e^z)``
``Poisson``    counts ``k >= 0``                ``k z - e^z - log k!``  (log link)
=============  ==============================  ==================================================

The densities are normalised exactly as liknorm normalises them, so the zeroth tilted moment
(``log ∫ p(y|z) N(z | μ, 1/τ) dz``) and hence the EP marginal likelihood agree with
glimix-core's. Tilted moments are computed by :func:`jaxinfer.glmm._moments.tilted_moments`
(a JAX quadrature), except for ``Probit`` whose moments are closed form.

Names are case-insensitive in :func:`get_likelihood` (``"bernoulli"``, ``"probit"``,
``"binomial"``, ``"poisson"``), matching glimix-core's ``lik`` tuples such as
``("binomial", ntrials)``.
"""

from __future__ import annotations

import warnings
from typing import ClassVar, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import gammaln, log_ndtr

__all__ = [
    "Likelihood",
    "Bernoulli",
    "Probit",
    "Binomial",
    "Poisson",
    "get_likelihood",
    "LIKELIHOODS",
]

# glimix-core clips Poisson counts above this value (with a warning) before fitting.
POISSON_MAX_COUNT = 25000


def _log_sigmoid(z):
    return -jax.nn.softplus(-z)


def _logistic_derivatives(k, z, n):
    """``k z - n softplus(z)`` and its first two derivatives."""
    p = jax.nn.sigmoid(z)
    value = k * z - n * jax.nn.softplus(z)
    return value, k - n * p, -n * p * jax.nn.sigmoid(-z)


class Likelihood(eqx.Module):
    """Base of the likelihoods: ``log_density`` plus the facts the quadrature needs.

    Subclasses are final and hold no data: outcomes and trial counts are passed in, so one
    likelihood object serves every data set and the methods vmap over sites.
    """

    name: ClassVar[str] = ""
    #: True when the likelihood needs a number of trials per observation (Binomial).
    needs_trials: ClassVar[bool] = False
    #: Point on the latent axis where ``log p(y|z)`` bends (0 for logit / log links); the
    #: quadrature refines its mesh there. Its complex singularities sit near this point.
    feature_point: ClassVar[float] = 0.0

    def log_density(self, outcome, latent, trials=None):
        """``log p(y | z)`` elementwise. Shapes broadcast; ``trials`` is ignored unless needed."""
        return self.log_normaliser(outcome, trials) + self.log_kernel(outcome, latent, trials)

    def log_kernel(self, outcome, latent, trials=None):
        """The ``z``-dependent part of ``log p(y | z)`` (what the quadrature integrates)."""
        raise NotImplementedError

    def log_normaliser(self, outcome, trials=None):
        """The ``z``-free part of ``log p(y | z)`` (e.g. ``log C(n, k)``, ``-log k!``)."""
        return jnp.zeros_like(outcome)

    def kernel_derivatives(self, outcome, latent, trials=None):
        """``(l, l', l'')`` of :meth:`log_kernel` in ``z`` (closed forms, elementwise)."""
        raise NotImplementedError

    def mode_bracket(self, outcome, trials, cavity_mean, cavity_precision):
        """``(lo, hi)`` arrays bracketing the mode of ``p(y|z) N(z | μ, 1/τ)`` (elementwise)."""
        raise NotImplementedError

    def moments(self, outcome, trials, cavity_eta, cavity_tau):
        """Tilted moments ``(log_zeroth, mean, variance)`` of ``p(y|z) N(z | η/τ, 1/τ)``.

        ``cavity_eta`` and ``cavity_tau`` are the cavity's natural parameters (shape ``(n,)``);
        ``cavity_tau`` is floored at ``2·sqrt(eps_float64)`` as liknorm does.
        """
        from jaxinfer.glmm._moments import tilted_moments

        return tilted_moments(self, outcome, trials, cavity_eta, cavity_tau)

    def check_outcome(self, outcome, trials=None) -> Tuple[np.ndarray, np.ndarray]:
        """Validate user input at the edge; returns float64 numpy ``(outcome, trials)``."""
        y = np.asarray(outcome, dtype=float)
        if y.ndim != 1:
            raise ValueError(f"{self.name} outcome must be a 1-D array; got shape {y.shape}.")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{self.name} outcome has non-finite entries.")
        return y, np.ones_like(y)

    def sample(self, key, latent, trials=None):
        """Draw outcomes given latent values (for simulations and tests)."""
        raise NotImplementedError


class _Logistic(Likelihood):
    """Shared code of Bernoulli and Binomial: ``k z - n·softplus(z) (+ log C(n, k))``."""

    def mode_bracket(self, outcome, trials, cavity_mean, cavity_precision):
        k, n, mu, tau = outcome, trials, cavity_mean, cavity_precision
        inner = (k > 0) & (k < n)
        kk = jnp.clip(k, 0.5, n - 0.5)
        target = jnp.log(kk) - jnp.log(n - kk)  # logit(k/n): where the likelihood peaks
        # All successes: the score n·σ(-z) ≤ n e^{-z} pushes the mode right of μ but not past
        # max(μ + 1, log(n / τ)); no success is the mirror image.
        far = jnp.log(n / tau)
        lo = jnp.where(inner, jnp.minimum(mu, target),
                       jnp.where(k >= n, mu, jnp.minimum(mu - 1.0, -far)))
        hi = jnp.where(inner, jnp.maximum(mu, target),
                       jnp.where(k >= n, jnp.maximum(mu + 1.0, far), mu))
        return lo, hi


class Bernoulli(_Logistic):
    """Bernoulli outcome with logit link: ``p(y=1 | z) = 1 / (1 + e^{-z})``."""

    name: ClassVar[str] = "bernoulli"

    def log_kernel(self, outcome, latent, trials=None):
        sign = 2.0 * outcome - 1.0
        return _log_sigmoid(sign * latent)

    def kernel_derivatives(self, outcome, latent, trials=None):
        return _logistic_derivatives(outcome, latent, 1.0)

    def check_outcome(self, outcome, trials=None):
        y, n = super().check_outcome(outcome)
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("Bernoulli outcome must contain only 0 and 1.")
        return y, n

    def sample(self, key, latent, trials=None):
        return jax.random.bernoulli(key, jax.nn.sigmoid(latent)).astype(jnp.result_type(latent))


class Binomial(_Logistic):
    """``k`` successes out of ``n`` trials with logit link (``n`` given per observation)."""

    name: ClassVar[str] = "binomial"
    needs_trials: ClassVar[bool] = True

    def log_kernel(self, outcome, latent, trials=None):
        return outcome * latent - trials * jax.nn.softplus(latent)

    def log_normaliser(self, outcome, trials=None):
        k, n = outcome, trials
        return gammaln(n + 1.0) - gammaln(k + 1.0) - gammaln(n - k + 1.0)

    def kernel_derivatives(self, outcome, latent, trials=None):
        return _logistic_derivatives(outcome, latent, trials)

    def check_outcome(self, outcome, trials=None):
        y, _ = super().check_outcome(outcome)
        if trials is None:
            raise ValueError("Binomial likelihood needs the number of trials: "
                             "lik=('binomial', ntrials).")
        n = np.asarray(trials, dtype=float)
        if n.shape != y.shape:
            raise ValueError(f"Binomial trials must have the outcome's shape {y.shape}; "
                             f"got {n.shape}.")
        if not np.all(np.isfinite(n)) or np.any(n < 1) or np.any(n != np.round(n)):
            raise ValueError("Binomial trials must be positive integers.")
        if np.any(y < 0) or np.any(y > n) or np.any(y != np.round(y)):
            raise ValueError("Binomial outcome must be integers between 0 and the trials.")
        return y, n

    def sample(self, key, latent, trials=None):
        return jax.random.binomial(key, trials, jax.nn.sigmoid(latent)).astype(
            jnp.result_type(latent))


class Probit(Likelihood):
    """Bernoulli outcome with probit link: ``p(y=1 | z) = Φ(z)``. Moments in closed form."""

    name: ClassVar[str] = "probit"

    def log_kernel(self, outcome, latent, trials=None):
        return log_ndtr((2.0 * outcome - 1.0) * latent)

    def kernel_derivatives(self, outcome, latent, trials=None):
        sign = 2.0 * outcome - 1.0
        arg = sign * latent
        value = log_ndtr(arg)
        hazard = jnp.exp(-0.5 * arg * arg - 0.5 * jnp.log(2.0 * jnp.pi) - value)  # φ/Φ
        return value, sign * hazard, -hazard * (hazard + arg)

    def mode_bracket(self, outcome, trials, cavity_mean, cavity_precision):
        # Only used by the generic quadrature (the moments are closed form). The score
        # s·φ/Φ(s z) has the sign of s and is below 1 + |z|; between μ and the mode |z| ≤ |μ|,
        # so the mode lies within (1 + |μ|)/τ of μ on the side of s (padded for safety).
        mu, tau = cavity_mean, cavity_precision
        sign = 2.0 * outcome - 1.0
        reach = (jnp.abs(mu) + 2.0) / tau + jnp.abs(mu) + 2.0
        lo = jnp.where(sign > 0, mu, mu - reach)
        hi = jnp.where(sign > 0, mu + reach, mu)
        return lo, hi

    def moments(self, outcome, trials, cavity_eta, cavity_tau):
        from jaxinfer.glmm._moments import clamp_cavity_precision

        tau = clamp_cavity_precision(cavity_tau)
        eta = cavity_eta
        sign = 2.0 * outcome - 1.0
        # Z = Φ(c), c = s μ / sqrt(1 + σ²)
        ratio = jnp.sqrt(tau / (tau + 1.0))
        c = sign * (eta / tau) * ratio
        log_zeroth = log_ndtr(c)
        # φ(c)/Φ(c) computed in logs (stable far in the lower tail)
        hazard = jnp.exp(-0.5 * c * c - 0.5 * jnp.log(2.0 * jnp.pi) - log_zeroth)
        variance = (1.0 - hazard * (hazard + c) / (tau + 1.0)) / tau
        mean = eta / tau + sign * hazard / (jnp.sqrt(tau) * jnp.sqrt(tau + 1.0))
        eps = jnp.finfo(jnp.result_type(variance)).eps
        return log_zeroth, mean, jnp.maximum(variance, eps)

    def check_outcome(self, outcome, trials=None):
        y, n = super().check_outcome(outcome)
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("Probit outcome must contain only 0 and 1.")
        return y, n

    def sample(self, key, latent, trials=None):
        return jax.random.bernoulli(key, jax.scipy.stats.norm.cdf(latent)).astype(
            jnp.result_type(latent))


class Poisson(Likelihood):
    """Counts with log link: ``p(k | z) = e^{k z - e^z} / k!``."""

    name: ClassVar[str] = "poisson"

    def log_kernel(self, outcome, latent, trials=None):
        return outcome * latent - jnp.exp(latent)

    def log_normaliser(self, outcome, trials=None):
        return -gammaln(outcome + 1.0)

    def kernel_derivatives(self, outcome, latent, trials=None):
        rate = jnp.exp(latent)
        return outcome * latent - rate, outcome - rate, -rate

    def mode_bracket(self, outcome, trials, cavity_mean, cavity_precision):
        k, mu, tau = outcome, cavity_mean, cavity_precision
        positive = k > 0
        target = jnp.log(jnp.where(positive, k, 1.0))  # where k z - e^z peaks
        # k = 0: the mode solves e^z = τ(μ - z), so μ - z = W(e^μ/τ) ≤ log(1 + e^μ/τ).
        zero_lo = mu - jax.nn.softplus(mu - jnp.log(tau))
        lo = jnp.where(positive, jnp.minimum(mu, target), zero_lo)
        hi = jnp.where(positive, jnp.maximum(mu, target), mu)
        return lo, hi

    def check_outcome(self, outcome, trials=None):
        y, n = super().check_outcome(outcome)
        if np.any(y < 0) or np.any(y != np.round(y)):
            raise ValueError("Poisson outcome must be non-negative integers.")
        if np.any(y > POISSON_MAX_COUNT):
            warnings.warn(f"Poisson counts above {POISSON_MAX_COUNT} are clipped to "
                          f"{POISSON_MAX_COUNT}, as glimix-core does.", RuntimeWarning,
                          stacklevel=3)
            y = np.clip(y, 0, POISSON_MAX_COUNT)
        return y, n

    def sample(self, key, latent, trials=None):
        return jax.random.poisson(key, jnp.exp(latent)).astype(jnp.result_type(latent))


LIKELIHOODS = {
    "bernoulli": Bernoulli,
    "probit": Probit,
    "binomial": Binomial,
    "poisson": Poisson,
}


def get_likelihood(lik) -> Tuple[Likelihood, object]:
    """Resolve glimix-core's ``lik`` argument to ``(likelihood, trials_or_None)``.

    Accepts a name (``"Bernoulli"``, case-insensitive), a tuple ``("binomial", ntrials)``,
    or a :class:`Likelihood` instance (optionally in a tuple with the trials).
    """
    trials = None
    if isinstance(lik, (tuple, list)):
        if len(lik) == 0:
            raise ValueError("lik must name a likelihood, e.g. 'bernoulli' or ('binomial', n).")
        if len(lik) > 2:
            raise ValueError(f"lik must have at most two items (name, trials); got {len(lik)}.")
        if len(lik) == 2:
            trials = lik[1]
        lik = lik[0]
    if isinstance(lik, Likelihood):
        likelihood = lik
    elif isinstance(lik, str):
        key = lik.strip().lower()
        if key not in LIKELIHOODS:
            raise ValueError(f"Unknown likelihood {lik!r}; expected one of "
                             f"{sorted(LIKELIHOODS)} (case-insensitive).")
        likelihood = LIKELIHOODS[key]()
    else:
        raise TypeError(f"lik must be a string, a Likelihood or a tuple; got {type(lik).__name__}.")
    if likelihood.needs_trials and trials is None:
        raise ValueError(f"{likelihood.name} likelihood needs trials: lik=('{likelihood.name}', n).")
    return likelihood, trials
