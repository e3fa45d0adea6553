"""Multi-trait LMM vec(Y) ~ N((A ⊗ X)vec(B), C₀ ⊗ GGᵀ + C₁ ⊗ I) (glimix-core's ``Kron2Sum``).

Shapes: Y (n, p) traits in columns, A (p, q) trait design, X (n, c) covariates, B (c, q),
G (n, m); vec is column-major, so vec(Y) lists trait 0's samples first.

How the likelihood is computed (all differentiable, no eigendecomposition of a parameter):
rotate the samples with the SVD G = U·diag(σ)·Vᵀ (done once). In the rotated basis the
covariance is block diagonal over samples, Σᵢ = σᵢ²·C₀ + C₁ (p×p) for the r = min(n, m)
columns of U, and C₁ for the n - r directions orthogonal to U (handled through the
precomputed residual products YᵀRY, XᵀRY, XᵀRX with R = I - UUᵀ). So with batched p×p
Cholesky factors:

    log|K|   = Σᵢ log|Σᵢ| + (n - r)·log|C₁|
    yᵀK⁻¹y   = Σᵢ ỹᵢᵀΣᵢ⁻¹ỹᵢ + tr(C₁⁻¹YᵀRY)
    MᵀK⁻¹M   = Σᵢ (AᵀΣᵢ⁻¹A) ⊗ x̃ᵢx̃ᵢᵀ + (AᵀC₁⁻¹A) ⊗ XᵀRX          (= H)

This is the same K⁻¹ = LᵀDL identity glimix-core documents, written per sample; it does not
differentiate through eigh of C₀-dependent matrices (which breaks when C₀ is low rank and
has repeated zero eigenvalues), so full-rank C₀ (rank = p) fits reliably with L-BFGS-B.

Likelihood (glimix-core / LaMotte 2007), β = vec(B) = H⁻¹MᵀK⁻¹y:
2·lml = -df·log 2π - log|K| - (y - Mβ)ᵀK⁻¹(y - Mβ) [+ log|MᵀM| - log|H| if restricted],
df = n·p (- c·q if restricted).

As glimix-core, G is divided internally by g = max(min G, max G) and the reported C₀ is the
internal one divided by g²; parameters start at glimix-core's defaults (C₀ = 𝟏𝟏ᵀ at rank 1,
C₁ = LLᵀ + εI with L lower-triangular ones), except that for rank > 1 C₀'s factor starts as
lower-triangular ones instead of all ones: identical columns are a symmetric saddle that
keeps C₀ at rank 1 under any gradient method.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.scipy.linalg import cho_solve

from jaxinfer.glmm._checks import as_numpy_float
from jaxinfer.glmm._lstsq import min_norm_solve
from jaxinfer.glmm._module import finite_difference_error, parameter_bounds, parameter_mask
from jaxinfer.glmm.cov import Kron2SumCov, Kron2SumCovModule
from jaxinfer.glmm.mean import unvec, vec

__all__ = ["Kron2Sum", "KronData", "KronTerms", "KronFastScanner", "kron_statistics",
           "kron_terms", "kron2sum_lml", "kron2sum_lml_dense"]

_LOG2PI = float(np.log(2 * np.pi))
_TINY = float(np.finfo(np.float64).eps)
_SMALL = float(np.sqrt(np.finfo(np.float64).eps))


class KronData(eqx.Module):
    """Parameter-free precomputations for Kron2Sum (a pytree).

    U (n, r) left singular vectors of G; Sx (r,) squared singular values; Yr (r, p) = UᵀY;
    Xr (r, c) = UᵀX; A (p, q); YRY (p, p), XRY (c, p), XRX (c, c) residual products
    (R = I - UUᵀ); XtX (c, c).
    """

    U: jnp.ndarray
    Sx: jnp.ndarray
    Yr: jnp.ndarray
    Xr: jnp.ndarray
    A: jnp.ndarray
    YRY: jnp.ndarray
    XRY: jnp.ndarray
    XRX: jnp.ndarray
    XtX: jnp.ndarray
    nsamples: int = eqx.field(static=True)


def kron_statistics(Y, A, X, G) -> KronData:
    """Rotate Y (n, p) and X (n, c) by the left singular vectors of G (n, m)."""
    Y, A, X, G = map(jnp.asarray, (Y, A, X, G))
    n = Y.shape[0]
    U, s, _ = jnp.linalg.svd(G, full_matrices=False)
    Yr = U.T @ Y
    Xr = U.T @ X
    if U.shape[1] < n:
        rY = Y - U @ Yr
        rX = X - U @ Xr
        YRY, XRY, XRX = rY.T @ rY, rX.T @ rY, rX.T @ rX
    else:
        p, c = Y.shape[1], X.shape[1]
        YRY = jnp.zeros((p, p), Y.dtype)
        XRY = jnp.zeros((c, p), Y.dtype)
        XRX = jnp.zeros((c, c), Y.dtype)
    return KronData(U=U, Sx=s ** 2, Yr=Yr, Xr=Xr, A=A, YRY=YRY, XRY=XRY, XRX=XRX, XtX=X.T @ X,
                    nsamples=int(n))


class KronTerms(NamedTuple):
    """Quantities at given C₀, C₁: log|K|, yᵀK⁻¹y, H = MᵀK⁻¹M, MᵀK⁻¹y, per-sample Σᵢ⁻¹
    (r, p, p) and C₁⁻¹ (p, p)."""

    logdetK: jnp.ndarray
    yKy: jnp.ndarray
    H: jnp.ndarray
    MKy: jnp.ndarray
    Sigma_inv: jnp.ndarray
    W: jnp.ndarray


def _gram(Sigma_inv, W, A1, X1r, A2, X2r, X1RX2):
    """Σᵢ (A₁ᵀΣᵢ⁻¹A₂) ⊗ x₁ᵢx₂ᵢᵀ + (A₁ᵀWA₂) ⊗ X₁ᵀRX₂, in vec order (q₁c₁, q₂c₂)."""
    T = jnp.einsum("ta,its,sb->iab", A1, Sigma_inv, A2)
    G = jnp.einsum("iab,ij,ik->ajbk", T, X1r, X2r)
    G = G + jnp.einsum("ab,jk->ajbk", A1.T @ W @ A2, X1RX2)
    q1, c1, q2, c2 = G.shape
    return G.reshape(q1 * c1, q2 * c2)


def _cross(Sigma_inv, W, A1, X1r, Yr, X1RY):
    """Σᵢ (A₁ᵀΣᵢ⁻¹ỹᵢ) ⊗ x₁ᵢ + vec(X₁ᵀRY·W·A₁), in vec order (q₁c₁,)."""
    v = jnp.einsum("ta,its,is,ij->aj", A1, Sigma_inv, Yr, X1r)
    v = v + (X1RY @ W @ A1).T
    return v.reshape(-1)


def kron_terms(data: KronData, C0, C1) -> KronTerms:
    """log|K|, yᵀK⁻¹y, H and MᵀK⁻¹y for K = C₀ ⊗ GGᵀ + C₁ ⊗ I (C₀, C₁ (p, p) matrices)."""
    n = data.nsamples
    r, p = data.Yr.shape
    Sigma = data.Sx[:, None, None] * C0[None] + C1[None]
    chol = jnp.linalg.cholesky(Sigma)
    eye = jnp.broadcast_to(jnp.eye(p, dtype=C1.dtype), (r, p, p))
    Sigma_inv = jax.vmap(lambda L, I: cho_solve((L, True), I))(chol, eye)
    chol1 = jnp.linalg.cholesky(C1)
    W = cho_solve((chol1, True), jnp.eye(p, dtype=C1.dtype))
    logdetK = 2 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2))) + (n - r) * 2 * jnp.sum(
        jnp.log(jnp.diagonal(chol1)))
    yKy = jnp.einsum("it,its,is->", data.Yr, Sigma_inv, data.Yr) + jnp.sum(W * data.YRY)
    H = _gram(Sigma_inv, W, data.A, data.Xr, data.A, data.Xr, data.XRX)
    MKy = _cross(Sigma_inv, W, data.A, data.Xr, data.Yr, data.XRY)
    return KronTerms(logdetK=logdetK, yKy=yKy, H=H, MKy=MKy, Sigma_inv=Sigma_inv, W=W)


def kron2sum_lml(data: KronData, C0, C1, restricted: bool = False, beta=None):
    """Log marginal likelihood and the optimal β = vec(B) (or the given one).

    Returns (lml, beta, terms). Differentiable in C₀, C₁ and the data.
    """
    t = kron_terms(data, C0, C1)
    n, p = data.nsamples, data.Yr.shape[1]
    q = data.A.shape[1]
    c = data.Xr.shape[1]
    if beta is None:
        beta = jnp.linalg.solve(t.H, t.MKy)
    quad = t.yKy - 2 * beta @ t.MKy + beta @ t.H @ beta
    df = n * p - (c * q if restricted else 0)
    lml = -df * _LOG2PI - t.logdetK - quad
    if restricted:
        logdet_MM = c * jnp.linalg.slogdet(data.A.T @ data.A)[1] + q * jnp.linalg.slogdet(
            data.XtX)[1]
        lml = lml + logdet_MM - jnp.linalg.slogdet(t.H)[1]
    return lml / 2, beta, t


def kron2sum_lml_dense(Y, A, X, G, C0, C1, B, restricted: bool = False):
    """Direct dense evaluation of the same likelihood (O((np)³); for checks)."""
    n, p = Y.shape
    K = jnp.kron(C0, G @ G.T) + jnp.kron(C1, jnp.eye(n, dtype=Y.dtype))
    M = jnp.kron(A, X)
    y = vec(Y)
    r = y - M @ vec(B)
    L = jnp.linalg.cholesky(K)
    z = jax.scipy.linalg.solve_triangular(L, r, lower=True)
    logdetK = 2 * jnp.sum(jnp.log(jnp.diagonal(L)))
    df = n * p - (M.shape[1] if restricted else 0)
    lml = -df * _LOG2PI - logdetK - z @ z
    if restricted:
        KiM = jax.scipy.linalg.cho_solve((L, True), M)
        lml = lml + jnp.linalg.slogdet(M.T @ M)[1] - jnp.linalg.slogdet(M.T @ KiM)[1]
    return lml / 2


def _negative_lml(params, static, data, restricted):
    core = eqx.combine(params, static)
    return -kron2sum_lml(data, core.C0.value(), core.C1.value(), restricted)[0]


class Kron2Sum:
    """glimix-core's ``Kron2Sum(Y, A, X, G, rank=1, restricted=False)``.

    Y (n, p) outcomes; A (p, q) trait design; X (n, c) covariates; G (n, m) with
    K = C₀ ⊗ GGᵀ + C₁ ⊗ I; ``rank`` of C₀ (1..p; p gives a full-rank C₀).
    """

    def __init__(self, Y, A, X, G, rank: int = 1, restricted: bool = False):
        Y = as_numpy_float(Y, "Y (outcomes)", ndim=2)
        A = as_numpy_float(A, "A (trait design)", ndim=2)
        X = as_numpy_float(X, "X (covariates)", ndim=(1, 2))
        G = as_numpy_float(G, "G", ndim=(1, 2))
        if X.ndim == 1:
            X = X[:, None]
        if G.ndim == 1:
            G = G[:, None]
        n, p = Y.shape
        if X.shape[0] != n:
            raise ValueError(f"X has {X.shape[0]} rows but Y has {n} samples; must be equal.")
        if G.shape[0] != n:
            raise ValueError(f"G has {G.shape[0]} rows but Y has {n} samples; must be equal.")
        if A.shape[0] != p:
            raise ValueError(f"A must have one row per trait ({p}); got shape {A.shape}.")
        rank = int(rank)
        if not 1 <= rank <= p:
            raise ValueError(f"rank must be between 1 and the number of traits {p}; got {rank}.")
        if np.linalg.matrix_rank(np.kron(A, X)) < A.shape[1] * X.shape[1]:
            raise ValueError("A ⊗ X must have full column rank (check X and A for collinearity).")
        yrank = int(np.linalg.matrix_rank(Y))
        if yrank < p:
            warnings.warn(f"Y is not full column rank: rank(Y)={yrank} < {p} traits. "
                          "Convergence might be problematic.", UserWarning, stacklevel=2)
        nparams = A.shape[1] * X.shape[1] + p * rank + p * (p + 1) // 2
        if nparams > Y.size:
            warnings.warn(f"The number of parameters ({nparams}: B, C₀, C₁) is larger than "
                          f"the outcome size ({Y.size}). Convergence is expected to be "
                          "problematic.", UserWarning, stacklevel=2)
        self._G_norm = float(max(G.min(), G.max()))
        if self._G_norm == 0:
            raise ValueError("G is all zeros.")
        self._Y = jnp.asarray(Y)
        self._A = jnp.asarray(A)
        self._X = jnp.asarray(X)
        Gn = jnp.asarray(G / self._G_norm)
        self._cov = Kron2SumCov(Gn, p, rank)
        # Start C₀ = LLᵀ with L[i, j] = 1 for i ≥ j: all ones at rank 1 (glimix-core's start),
        # lower-triangular ones for rank > 1. glimix-core's all-ones L for rank > 1 has
        # identical columns, a symmetric saddle that gradient methods cannot leave (C₀ stays
        # rank 1).
        self._cov.C0.L = np.tril(np.ones((p, rank)))
        self._restricted = bool(restricted)
        self._data = jax.jit(kron_statistics)(self._Y, self._A, self._X, Gn)
        self._name = "Kron2Sum"
        # plain attributes, not properties: glimix-core's interface check lists the public
        # properties, and these are jaxinfer's additions
        self.cov = self._cov  #: the covariance facade (G divided by g = max(min G, max G))
        self.data = self._data  #: pure-core precomputations (rotated by G's singular vectors)
        self.fit_result = None  #: the OptimizeResult of the last :meth:`fit`

    # -- state ----------------------------------------------------------------------------------
    def _evaluate(self):
        core = self._cov.module
        return kron2sum_lml(self._data, core.C0.value(), core.C1.value(), self._restricted)

    @property
    def C0(self):
        """C₀ (p, p) on the scale of the user's G."""
        return self._cov.C0.value() / self._G_norm ** 2

    @property
    def C1(self):
        """C₁ (p, p)."""
        return self._cov.C1.value()

    @property
    def B(self):
        """Optimal fixed effects B (c, q) at the current C₀, C₁."""
        return unvec(self._evaluate()[1], (self._X.shape[1], self._A.shape[1]))

    @property
    def beta(self):
        """vec(B)."""
        return self._evaluate()[1]

    @property
    def beta_covariance(self):
        """(MᵀK⁻¹M)⁻¹."""
        return jnp.linalg.inv(self._evaluate()[2].H)

    @property
    def A(self):
        return self._A

    @property
    def X(self):
        return self._X

    @property
    def M(self):
        """A ⊗ X."""
        return jnp.kron(self._A, self._X)

    @property
    def nsamples(self) -> int:
        return int(self._Y.shape[0])

    @property
    def ntraits(self) -> int:
        return int(self._Y.shape[1])

    @property
    def ncovariates(self) -> int:
        return int(self._X.shape[1])

    @property
    def name(self) -> str:
        """A free label (glimix-core's ``name``), "Kron2Sum" by default."""
        return self._name

    @name.setter
    def name(self, value):
        self._name = str(value)

    def mean(self):
        """(A ⊗ X)vec(B) (n·p,)."""
        return self.M @ self.beta

    def covariance(self):
        """Dense K = C₀ ⊗ GGᵀ + C₁ ⊗ I (n·p, n·p)."""
        return self._cov.value()

    def lml(self) -> float:
        """Log (restricted) marginal likelihood at the current C₀, C₁ with optimal B."""
        return float(self._evaluate()[0])

    def value(self) -> float:
        return self.lml()

    def _check_grad(self, step: float = 1e-07) -> float:
        """glimix-core's check: ‖forward differences of the lml over C₀'s and C₁'s free
        parameters − the autodiff gradient‖ (≈ 0 when right)."""
        core = self._cov.module
        params, static = eqx.partition(core, parameter_mask(core))
        return finite_difference_error(_negative_lml, params, static, self._data,
                                       self._restricted, step=step)

    def gradient(self) -> dict:
        """{'C0.Lu', 'C1.Lu'}: derivatives of lml over the parameters (autodiff)."""
        core = self._cov.module
        g = jax.grad(lambda m: kron2sum_lml(self._data, m.C0.value(), m.C1.value(),
                                            self._restricted)[0])(core)
        return {"C0.Lu": g.C0.Lu, "C1.Lu": g.C1.Lu}

    def fit(self, verbose: bool = False, maxiter: int = 2000, gtol: float = 1e-7,
            ftol: float = 2.220446049250313e-09):
        """Maximise lml over C₀ and C₁ (L-BFGS-B with autodiff gradients; B profiled).

        Starts from the current parameters (glimix-core's defaults on a new model). Returns
        the :class:`~jaxinfer.optimize.OptimizeResult` (also in :attr:`fit_result`); raises
        nothing on non-convergence: check ``result.success``. ``verbose`` is ignored.
        """
        core = self._cov.module
        mask = parameter_mask(core)
        params, static = eqx.partition(core, mask)
        lower, upper = parameter_bounds(core)
        result = _fit_kron_jit(params, static, self._data, lower, upper, self._restricted,
                               maxiter, gtol, ftol)
        self._cov.module = eqx.combine(result.x, static)
        self.fit_result = result
        return result

    def get_fast_scanner(self) -> "KronFastScanner":
        """:class:`KronFastScanner` with C₀, C₁ frozen at their current values."""
        core = self._cov.module
        return KronFastScanner(self._data, core.C0.value(), core.C1.value(), self._Y, self._X)

    def __repr__(self):
        return (f"Kron2Sum(nsamples={self.nsamples}, ntraits={self.ntraits}, "
                f"ncovariates={self.ncovariates}, restricted={self._restricted}): "
                f"lml={self.lml():.6g}")


@eqx.filter_jit
def _fit_kron_jit(params, static, data, lower, upper, restricted, maxiter, gtol, ftol):
    """L-BFGS-B over the free covariance parameters (B profiled out), in one compiled loop."""
    from jaxinfer.optimize import minimize
    from jaxinfer.optimize.minimize import Bounds

    return minimize(_negative_lml, params, args=(static, data, restricted), method="L-BFGS-B",
                    bounds=Bounds(ravel_pytree(lower)[0], ravel_pytree(upper)[0]),
                    options={"maxiter": maxiter, "gtol": gtol, "ftol": ftol})


class KronFastScanner:
    """Scans with K frozen (glimix-core's ``KronFastScanner``): each candidate adds
    A₁ ⊗ X₁ to the mean; effect sizes by generalised least squares, then a free overall
    scale s = (yᵀK⁻¹y - βᵀEᵀK⁻¹y)/(n·p) and lml = -½(n·p·log 2π + log|K| + n·p·log s + n·p).
    Build it with :meth:`Kron2Sum.get_fast_scanner`.
    """

    def __init__(self, data: KronData, C0, C1, Y, X):
        self._data = data
        self._terms = jax.jit(kron_terms)(data, C0, C1)
        self._Y = Y
        self._X = X
        self._n, self._p = Y.shape
        self._c = data.Xr.shape[1]
        self._q = data.A.shape[1]
        self._null_cache = None

    def _null(self):
        if self._null_cache is None:
            t = self._terms
            beta = jnp.linalg.solve(t.H, t.MKy)
            npn = self._n * self._p
            scale = (t.yKy - beta @ t.MKy) / npn
            self._null_cache = dict(beta=beta, scale=scale, lml=self._lml(scale),
                                    cov=scale * jnp.linalg.pinv(t.H))
        return self._null_cache

    def _lml(self, scale):
        npn = self._n * self._p
        static = -npn * _LOG2PI - self._terms.logdetK
        return static / 2 - npn * jnp.log(jnp.maximum(scale, _SMALL)) / 2 - npn / 2

    def null_lml(self) -> float:
        """lml of the null model (scale free, K frozen)."""
        return float(self._null()["lml"])

    @property
    def null_beta(self):
        """vec(B) of the null model (c·q,)."""
        return self._null()["beta"]

    @property
    def null_beta_covariance(self):
        """s·H⁻¹."""
        return self._null()["cov"]

    @property
    def null_beta_se(self):
        """sqrt(diag(s·H⁻¹))."""
        return jnp.sqrt(jnp.diagonal(self._null()["cov"]))

    @property
    def null_scale(self) -> float:
        """s of the null model."""
        return float(self._null()["scale"])

    def scan(self, A1, X1) -> dict:
        """Add A₁ (p, q₁) ⊗ X₁ (n, k) to the null mean.

        Returns lml (float), effsizes0 (c, q), effsizes0_se (c, q), effsizes1 (k, q₁),
        effsizes1_se (k, q₁), scale (float). A₁ with no column gives the null model.
        """
        A1 = as_numpy_float(A1, "A1", ndim=2)
        X1 = as_numpy_float(X1, "X1", ndim=(1, 2))
        if X1.ndim == 1:
            X1 = X1[:, None]
        if A1.shape[0] != self._p:
            raise ValueError(f"A1 must have {self._p} rows (traits); got shape {A1.shape}.")
        if X1.shape[0] != self._n:
            raise ValueError(f"X1 must have {self._n} rows (samples); got shape {X1.shape}.")
        c, q = self._c, self._q
        if A1.shape[1] == 0:
            null = self._null()
            return dict(lml=float(null["lml"]), effsizes0=np.asarray(unvec(null["beta"], (c, q))),
                        effsizes0_se=np.asarray(unvec(self.null_beta_se, (c, q))),
                        effsizes1=np.empty((0,)), effsizes1_se=np.empty((0,)),
                        scale=float(null["scale"]))
        beta, scale, se = _scan_kron_jit(self._terms, self._data, jnp.asarray(A1),
                                         jnp.asarray(X1), self._Y, self._X, self._n * self._p)
        cq = c * q
        shape1 = (X1.shape[1], A1.shape[1])
        return dict(lml=float(self._lml(scale)), effsizes0=np.asarray(unvec(beta[:cq], (c, q))),
                    effsizes0_se=np.asarray(unvec(se[:cq], (c, q))),
                    effsizes1=np.asarray(unvec(beta[cq:], shape1)),
                    effsizes1_se=np.asarray(unvec(se[cq:], shape1)), scale=float(scale))


@partial(jax.jit, static_argnames=("npn",))
def _scan_kron_jit(terms: KronTerms, data: KronData, A1, X1, Y, X, npn):
    X1r = data.U.T @ X1
    rX1 = X1 - data.U @ X1r
    W = terms.W
    H01 = _gram(terms.Sigma_inv, W, data.A, data.Xr, A1, X1r, (rX1.T @ X).T)
    H11 = _gram(terms.Sigma_inv, W, A1, X1r, A1, X1r, rX1.T @ rX1)
    left = jnp.block([[terms.H, H01], [H01.T, H11]])
    right = jnp.concatenate([terms.MKy, _cross(terms.Sigma_inv, W, A1, X1r, data.Yr, rX1.T @ Y)])
    beta, _ = min_norm_solve(left, right)  # least squares: finite for degenerate X1
    scale = jnp.maximum((terms.yKy - beta @ right) / npn, _TINY)
    se = jnp.sqrt(jnp.maximum(scale * jnp.diagonal(jnp.linalg.pinv(left)), _TINY))
    return beta, scale, se
