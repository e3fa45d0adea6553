"""Linear mixed model on the economic eigendecomposition of K (glimix-core's ``LMM``).

Model: y ~ N(Xβ, s((1-δ)K + δI)), v₀ = s(1-δ), v₁ = sδ. With K = Q₀S₀Q₀ᵀ (economic; Q₁ spans
the null space) and D = diag((1-δ)S₀ + δ, δI), ((1-δ)K + δI)⁻¹ = QD⁻¹Qᵀ =: B.

Pure core (jit / vmap / grad):

* :func:`lmm_statistics` (y, X, Q0, S0) -> :class:`LMMData`, the few projections every
  likelihood evaluation needs (Q₀ᵀy, Q₀ᵀX and the Q₁-part inner products, computed from
  explicit residuals y - Q₀Q₀ᵀy for accuracy). O(n·r·c) once.
* :func:`lmm_profile` (data, δ, β?, s?) -> :class:`LMMProfile` with the closed forms
  β = (XᵀBX)⁻¹XᵀBy, s = (y-Xβ)ᵀB(y-Xβ)/df (df = n, or n - rank X when restricted) and the
  log marginal likelihood. O(r·c²) per call.
* :func:`fit_lmm` maximises over δ like glimix-core: bracketing from logit(δ) = 0 then
  Brent's method on logit(δ) ∈ [-log(max float64), +log(max float64)], rtol = atol = 1e-6
  (sqrt(eps) in float32), then a polish to the root of the lml's autodiff derivative.

Facade: :class:`LMM` with glimix-core's names (fit, lml, beta, beta_covariance, scale, delta,
v0, v1, mean, covariance, fix/unfix, get_fast_scanner).

The restricted likelihood follows glimix-core: lml_ML(df) + ½(log|XᵀX| - log|XᵀBX/s|) where
the ML part uses df = n - c in the 2π and quadratic terms and n in the log s term.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.glmm._checks import check_covariates, check_outcome, check_qs
from jaxinfer.glmm._stationary import polish_minimum
from jaxinfer.glmm.qs import economic_qs_zeros
from jaxinfer.optimize.result import Status, is_success, status_message
from jaxinfer.optimize.scalar import minimize_scalar

__all__ = ["LMM", "LMMData", "LMMProfile", "LMMFit", "lmm_statistics", "lmm_profile",
           "fit_lmm", "lmm_lml_dense"]

_LOG2PI = float(np.log(2 * np.pi))
_LOGMAX = float(np.log(np.finfo(np.float64).max))
_EPS = float(np.finfo(np.float64).eps)          # glimix-core's epsilon.tiny
_SMALL = float(np.sqrt(np.finfo(np.float64).eps))  # glimix-core's epsilon.small


class LMMData(eqx.Module):
    """Sufficient statistics of (y, X, K) for the LMM likelihood (a pytree).

    Shapes: S0 (r,), Qty (r,), QtX (r, c), yy1 (), Xy1 (c,), XX1 (c, c), XtX (c, c), where
    the "1" quantities are inner products of the parts of y and X orthogonal to Q₀.
    ``nsamples`` and ``rank`` (of X, for restricted df) are static.
    """

    S0: jnp.ndarray
    Qty: jnp.ndarray
    QtX: jnp.ndarray
    yy1: jnp.ndarray
    Xy1: jnp.ndarray
    XX1: jnp.ndarray
    XtX: jnp.ndarray
    nsamples: int = eqx.field(static=True)
    xrank: int = eqx.field(static=True)


def lmm_statistics(y, X, Q0, S0, xrank: Optional[int] = None) -> LMMData:
    """Projections of y (n,) and X (n, c) on Q0 (n, r) and on its orthogonal complement.

    Differentiable in y, X, Q0 and S0. ``xrank`` defaults to c (X of full column rank).
    """
    y = jnp.asarray(y)
    X = jnp.asarray(X)
    Q0 = jnp.asarray(Q0)
    Qty = Q0.T @ y
    QtX = Q0.T @ X
    if Q0.shape[1] < Q0.shape[0]:
        ry = y - Q0 @ Qty
        rX = X - Q0 @ QtX
        yy1 = ry @ ry
        Xy1 = rX.T @ ry
        XX1 = rX.T @ rX
    else:  # Q0 square: no null space
        yy1 = jnp.zeros((), y.dtype)
        Xy1 = jnp.zeros(X.shape[1], y.dtype)
        XX1 = jnp.zeros((X.shape[1], X.shape[1]), y.dtype)
    return LMMData(S0=jnp.asarray(S0), Qty=Qty, QtX=QtX, yy1=yy1, Xy1=Xy1, XX1=XX1,
                   XtX=X.T @ X, nsamples=int(y.shape[0]),
                   xrank=int(X.shape[1] if xrank is None else xrank))


class LMMProfile(NamedTuple):
    """Likelihood at one δ: lml, beta (c,), scale, and XᵀBX (c, c) (= s·beta_covariance⁻¹)."""

    lml: jnp.ndarray
    beta: jnp.ndarray
    scale: jnp.ndarray
    XtBX: jnp.ndarray


def _b_products(data: LMMData, delta):
    """yᵀBy, XᵀBy, XᵀBX and log|D| for B = ((1-δ)K + δI)⁻¹."""
    D0 = (1 - delta) * data.S0 + delta
    w = data.Qty / D0
    yBy = data.Qty @ w
    XBy = data.QtX.T @ w
    XBX = data.QtX.T @ (data.QtX / D0[:, None])
    rankdef = data.nsamples - data.S0.shape[0]
    # glimix-core drops the null-space part when δ ≤ sqrt(eps)
    inv_delta = jnp.where(delta > _SMALL, 1.0 / delta, 0.0)
    yBy = yBy + data.yy1 * inv_delta
    XBy = XBy + data.Xy1 * inv_delta
    XBX = XBX + data.XX1 * inv_delta
    logdetD = jnp.sum(jnp.log(D0)) + rankdef * jnp.log(delta)
    return yBy, XBy, XBX, logdetD


def lmm_profile(data: LMMData, delta, beta=None, scale=None, restricted: bool = False
                ) -> LMMProfile:
    """Log marginal likelihood at δ, with β and s optimal (None) or given.

    Returns :class:`LMMProfile`. With β None, β = (XᵀBX)⁻¹XᵀBy; with s None,
    s = max((y-Xβ)ᵀB(y-Xβ)/df, sqrt(eps)). Pure; differentiable in everything.
    """
    delta = jnp.asarray(delta)
    yBy, XBy, XBX, logdetD = _b_products(data, delta)
    n = data.nsamples
    df = n - data.xrank if restricted else n
    if beta is None:
        beta = jnp.linalg.solve(XBX, XBy) if XBX.shape[0] else jnp.zeros(0, yBy.dtype)
    quad = yBy - 2 * XBy @ beta + beta @ XBX @ beta
    if scale is None:
        scale = jnp.maximum(quad / df, _SMALL)
    scale = jnp.asarray(scale, yBy.dtype)
    lml = -df * _LOG2PI - n * jnp.log(scale) - logdetD - quad / scale
    lml = lml / 2
    if restricted and data.XtX.shape[0]:
        lml = lml + (jnp.linalg.slogdet(data.XtX)[1] - jnp.linalg.slogdet(XBX / scale)[1]) / 2
    return LMMProfile(lml=lml, beta=beta, scale=scale, XtBX=XBX)


_lmm_profile_jit = jax.jit(lmm_profile, static_argnames="restricted")


def _delta_from_logit(x):
    d = jax.nn.sigmoid(x)
    return jnp.clip(d, _EPS, 1 - _EPS)


class LMMFit(NamedTuple):
    """Result of :func:`fit_lmm` (a pytree; stacks under vmap).

    delta, beta (c,), scale, lml: the fit; nfev: objective + derivative evaluations;
    status: a :class:`~jaxinfer.optimize.Status` code (``XTOL`` when δ converged, ``MAX_ITER``
    when a search ran out of iterations, ``NONFINITE`` when the lml is not finite).
    """

    delta: jnp.ndarray
    beta: jnp.ndarray
    scale: jnp.ndarray
    lml: jnp.ndarray
    nfev: jnp.ndarray
    status: jnp.ndarray

    @property
    def success(self) -> jnp.ndarray:
        """Bool array: a convergence test passed (derived from :attr:`status`)."""
        return is_success(self.status)

    @property
    def converged(self) -> jnp.ndarray:
        """Same as :attr:`success` (glimix-style name)."""
        return self.success

    @property
    def message(self):
        """Why the fit stopped (str, or an array of str for a batch)."""
        return status_message(self.status)


def delta_search_tolerance(dtype) -> float:
    """Tolerance of the value search on logit(δ): glimix-core's 1e-6, or sqrt(eps) when the
    dtype cannot resolve that (float32: 3.5e-4; the derivative polish then refines)."""
    return max(1e-6, float(np.sqrt(np.finfo(dtype).eps)))


@partial(jax.jit, static_argnames=("restricted", "fit_delta", "fit_beta", "fit_scale"))
def fit_lmm(data: LMMData, delta=0.5, beta=None, scale=1.0, *, restricted: bool = False,
            fit_delta: bool = True, fit_beta: bool = True, fit_scale: bool = True) -> LMMFit:
    """Maximum-likelihood fit of δ, then closed-form β and s.

    δ is found as glimix-core does (bracketing from logit δ = 0, then Brent on logit δ,
    tolerance 1e-6 in float64 / sqrt(eps) in float32); in float32 it is then polished to the
    root of the autodiff derivative of the lml (:mod:`jaxinfer.glmm._stationary`), to
    ``1e-2·sqrt(eps)`` in logit δ. The polish is what makes float32 fits agree with float64
    ones: the lml's rounding noise hides its maximum within ~1e-2 in logit δ, its derivative
    does not. float64 keeps glimix-core's answer (same search, same δ to ~1e-12).
    Parameters not fitted keep the given values (``delta``, ``beta`` (c,), ``scale``).
    jit-compiled; vmap over a batch of ``LMMData`` (e.g. many traits) works.
    """
    dtype = data.Qty.dtype
    c = data.QtX.shape[1]
    beta_in = jnp.zeros(c, dtype) if beta is None else jnp.asarray(beta, dtype)
    b_arg = None if fit_beta else beta_in
    s_arg = None if fit_scale else scale

    if fit_delta:
        def objective(x):
            return -lmm_profile(data, _delta_from_logit(x), b_arg, s_arg, restricted).lml

        tol = delta_search_tolerance(dtype)
        found = minimize_scalar(objective, bounds=(jnp.asarray(-_LOGMAX, dtype),
                                                   jnp.asarray(_LOGMAX, dtype)),
                                method="bracket-brent", options={"rtol": tol, "atol": tol})
        if tol > 1e-6:
            # float32: Brent's tolerance sqrt(eps) is coarser than glimix-core's 1e-6; polish
            # only where δ and 1 - δ exceed sqrt(eps): closer to a bound the derivative is
            # ~e^{-|x|}, all rounding, and the value search's answer (on the bound) stands
            edge = float(np.log(1 / np.sqrt(np.finfo(dtype).eps)))
            interior = jnp.abs(found.x) < edge
            polish = polish_minimum(objective, jnp.clip(found.x, -edge, edge), -edge, edge,
                                    width=16 * tol * (1 + jnp.abs(found.x)),
                                    xtol=1e-2 * float(np.sqrt(np.finfo(dtype).eps)))
            polished = interior & polish.polished
            x = jnp.where(polished, polish.x, found.x)
            nfev = found.nfev + polish.nfev
            # converged: Brent's test passed and, where a derivative root was bracketed, it
            # was refined to tolerance (an optimum on a bound of δ has no root to refine)
            ok = found.success & (polish.converged | ~polished)
        else:
            # float64: glimix-core's search as it is (its δ to ~1e-12, so β, its covariance
            # and the scale are glimix-core's numbers too, not just within its tolerance)
            x, nfev, ok = found.x, found.nfev, found.success
        delta = _delta_from_logit(x)
    else:
        delta = jnp.asarray(delta, dtype)
        nfev, ok = jnp.zeros((), jnp.int32), jnp.ones((), bool)
    prof = lmm_profile(data, delta, b_arg, s_arg, restricted)
    status = jnp.where(~jnp.isfinite(prof.lml), int(Status.NONFINITE),
                       jnp.where(ok, int(Status.XTOL), int(Status.MAX_ITER))).astype(jnp.int32)
    return LMMFit(delta=delta, beta=prof.beta, scale=prof.scale, lml=prof.lml, nfev=nfev,
                  status=status)


def lmm_lml_dense(y, X, K, beta, v0, v1):
    """Direct log N(y | Xβ, v₀K + v₁I) with a dense Cholesky (for checks; O(n³))."""
    n = y.shape[0]
    C = v0 * K + v1 * jnp.eye(n, dtype=K.dtype)
    L = jnp.linalg.cholesky(C)
    r = jax.scipy.linalg.solve_triangular(L, y - X @ beta, lower=True)
    return -0.5 * (n * _LOG2PI + 2 * jnp.sum(jnp.log(jnp.diagonal(L))) + r @ r)


# ---------------------------------------------------------------------------------------------
# facade
# ---------------------------------------------------------------------------------------------


class LMM:
    """Fast LMM by maximum likelihood (glimix-core ``LMM(y, X, QS=None, restricted=False)``).

    Parameters
    ----------
    y : (n,) outcome.
    X : (n, c) covariates (a vector is one column); may be rank deficient (handled through its
        SVD as glimix-core does; beta is then the minimum-norm solution).
    QS : ``((Q0, Q1), S0)`` from :func:`~jaxinfer.glmm.economic_qs` (or ``((Q0,), S0)``);
        None means K = 0 (then δ is fixed at 1).
    restricted : REML instead of ML.

    Arrays are stored as JAX arrays in the default float dtype (float32 unless x64 is on).
    """

    def __init__(self, y, X, QS=None, restricted: bool = False):
        y = check_outcome(y)
        X = check_covariates(X, y.shape[0])
        n = y.shape[0]
        no_k = QS is None
        if no_k:
            QS = economic_qs_zeros(n)
        Q0, S0 = check_qs(QS, n)
        U, s, Vt = np.linalg.svd(X, full_matrices=False)
        keep = s >= _SMALL
        self._full_rank = bool(np.all(keep))
        self._X = jnp.asarray(X)
        self._Vt = jnp.asarray(Vt[keep])
        Xcore = X if self._full_rank else U[:, keep] * s[keep]
        self._y = jnp.asarray(y)
        self._Q0 = jnp.asarray(Q0)
        self._S0 = jnp.asarray(S0)
        self._restricted = bool(restricted)
        self._data = jax.jit(lmm_statistics, static_argnames="xrank")(
            self._y, jnp.asarray(Xcore), self._Q0, self._S0, xrank=int(keep.sum()))
        dtype = self._data.Qty.dtype
        self._tbeta = jnp.zeros(Xcore.shape[1], dtype)  # in the core basis of X
        self._scale = jnp.asarray(1.0, dtype)
        self._fixed = {"delta": no_k, "beta": False, "scale": False}
        self._delta = jnp.asarray(1 - _EPS if no_k else 0.5, dtype)
        self._name = "LMM"
        # plain attributes, not properties: glimix-core's interface check lists the public
        # properties, and these two are jaxinfer's additions
        self.data: LMMData = self._data  #: the sufficient statistics (pure core input)
        self.fit_result: Optional[LMMFit] = None  #: diagnostics of the last :meth:`fit`

    # -- parameters ---------------------------------------------------------------------------
    @property
    def delta(self) -> float:
        """δ, the weight of I in (1-δ)K + δI."""
        return float(self._delta)

    @delta.setter
    def delta(self, value):
        value = min(max(float(value), _EPS), 1 - _EPS)
        self._delta = jnp.asarray(value, self._data.Qty.dtype)

    @property
    def scale(self) -> float:
        """Scale s."""
        return float(self._scale)

    @scale.setter
    def scale(self, value):
        value = float(value)
        if not np.isfinite(value) or value <= 0:
            raise ValueError(f"scale must be a positive finite number; got {value}.")
        self._scale = jnp.asarray(value, self._data.Qty.dtype)

    @property
    def beta(self):
        """Fixed-effect sizes β (c,) (minimum-norm when X is rank deficient)."""
        if self._full_rank:
            return self._tbeta
        return self._Vt.T @ self._tbeta

    @beta.setter
    def beta(self, value):
        value = jnp.asarray(np.asarray(value, dtype=float).ravel(), self._data.Qty.dtype)
        if value.shape[0] != self._X.shape[1]:
            raise ValueError(f"beta must have {self._X.shape[1]} entries; got {value.shape[0]}.")
        self._tbeta = value if self._full_rank else self._Vt @ value

    @property
    def v0(self) -> float:
        """s(1-δ)."""
        return self.scale * (1 - self.delta)

    @property
    def v1(self) -> float:
        """sδ."""
        return self.scale * self.delta

    @property
    def X(self):
        """(n, c) covariates."""
        return self._X

    @property
    def nsamples(self) -> int:
        """n."""
        return int(self._y.shape[0])

    @property
    def ncovariates(self) -> int:
        """c."""
        return int(self._X.shape[1])

    @property
    def name(self) -> str:
        """A free label (glimix-core's ``name``), "LMM" by default."""
        return self._name

    @name.setter
    def name(self, value):
        self._name = str(value)

    def fix(self, param: str):
        """Hold 'delta', 'beta' or 'scale' at its current value in :meth:`fit`."""
        self._fixed[self._check_param(param)] = True

    def unfix(self, param: str):
        """Let 'delta', 'beta' or 'scale' be fitted."""
        self._fixed[self._check_param(param)] = False

    @staticmethod
    def _check_param(param):
        if param not in ("delta", "beta", "scale"):
            raise ValueError(f"param must be 'delta', 'beta' or 'scale'; got {param!r}.")
        return param

    # -- fitting ------------------------------------------------------------------------------
    def fit(self, verbose: bool = False):
        """Maximise the marginal likelihood over the free parameters (``verbose`` is ignored:
        library code does not print; see :attr:`fit_result` for diagnostics)."""
        result = fit_lmm(self._data, self._delta, self._tbeta, self._scale,
                         restricted=self._restricted, fit_delta=not self._fixed["delta"],
                         fit_beta=not self._fixed["beta"], fit_scale=not self._fixed["scale"])
        self._delta = result.delta
        self._tbeta = result.beta
        self._scale = result.scale
        self.fit_result = result
        return self

    def _profile(self) -> LMMProfile:
        return _lmm_profile_jit(self._data, self._delta, self._tbeta, self._scale,
                                restricted=self._restricted)

    def lml(self) -> float:
        """Log marginal likelihood at the current δ, β, s."""
        return float(self._profile().lml)

    def value(self) -> float:
        """Same as :meth:`lml`."""
        return self.lml()

    @property
    def beta_covariance(self):
        """s·(XᵀBX)⁻¹ (c, c), B = ((1-δ)K + δI)⁻¹."""
        XBX = self._profile().XtBX
        cov = jnp.linalg.inv(XBX) * self._scale
        if self._full_rank:
            return cov
        return self._Vt.T @ cov @ self._Vt

    def mean(self):
        """Xβ (n,)."""
        return self._X @ self.beta

    def covariance(self):
        """v₀K + v₁I (n, n), K rebuilt from Q0 and S0."""
        K = (self._Q0 * self._S0) @ self._Q0.T
        return self.v0 * K + self.v1 * jnp.eye(self.nsamples, dtype=K.dtype)

    def get_fast_scanner(self, **options):
        """:class:`~jaxinfer.glmm.FastScanner` with v₀ = s(1-δ) and v₁ = sδ frozen."""
        from jaxinfer.glmm.scan import FastScanner

        return FastScanner(self._y, self._X, ((self._Q0,), self.v0 * self._S0), self.v1,
                           **options)

    def gradient(self):
        """Not provided (as glimix-core); use ``jax.grad`` on :func:`lmm_profile`."""
        raise NotImplementedError("Use jax.grad on jaxinfer.glmm.lmm.lmm_profile.")

    def __repr__(self):
        return (f"LMM(nsamples={self.nsamples}, ncovariates={self.ncovariates}, "
                f"restricted={self._restricted}): delta={self.delta:.6g}, "
                f"scale={self.scale:.6g}, lml={self.lml():.6g}")
