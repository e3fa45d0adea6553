"""Covariance functions in glimix-core's parametrisation, as pure equinox cores plus facades.

Each covariance exists as a pure core (``EyeCovModule`` ...: ``value()``, ``logdet()``,
``gradient()``, usable under ``jax.grad``/``jit``/``vmap``) and as a mutable facade with
glimix-core's name and properties (``EyeCov(dim).scale = 2.5``). See
:mod:`jaxinfer.glmm._module` for the design.

Parametrisations (as glimix-core 3.1.14):

* ``EyeCov``, ``GivenCov``, ``LinearCov``: ``logscale`` with scale = exp(logscale), bounds
  (-20, 10), default scale 1.
* ``FreeFormCov(d)``: K = LLᵀ + εI, ε = 1000·sqrt(float64 eps) ≈ 1.49e-5; parameter ``Lu`` of
  length d(d+1)/2 = [strictly-lower entries of L in row-major order, log of the diagonal];
  default L = lower-triangular ones; bounds (-inf, inf) off-diagonal, (log ε, 11) on the
  log-diagonal.
* ``LRFreeFormCov(n, m)``: K = LLᵀ, L n×m, ``Lu = L.ravel()``, default ones.
* ``Kron2SumCov(G, dim, rank)``: K = C₀ ⊗ GGᵀ + C₁ ⊗ I with C₀ an ``LRFreeFormCov(dim, rank)``
  and C₁ a ``FreeFormCov(dim)``; vec is column-major (index = trait·n + sample).
"""

from __future__ import annotations

from typing import ClassVar, Dict, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.glmm._module import (
    Facade,
    SumFacade,
    SumModule,
    ParametricModule,
    as_float_array,
    call_method,
    format_array,
    format_scalar,
    jacobian_dict,
    parameter_bounds,
    parameter_mask,
)

__all__ = [
    "EyeCov", "FreeFormCov", "GivenCov", "LinearCov", "SumCov", "LRFreeFormCov", "Kron2SumCov",
    "EyeCovModule", "FreeFormCovModule", "GivenCovModule", "LinearCovModule", "SumCovModule",
    "LRFreeFormCovModule", "Kron2SumCovModule", "parameter_mask", "parameter_bounds",
    "FREEFORM_EPSILON",
]

#: ε in FreeFormCov's K = LLᵀ + εI (glimix-core: 1000 · sqrt(float64 machine epsilon)).
FREEFORM_EPSILON = float(np.sqrt(np.finfo(np.float64).eps) * 1000)
_LOGSCALE_BOUNDS = (-20.0, 10.0)
_TINY = float(np.finfo(np.float64).eps)  # glimix-core clips a set scale at this value


def _tril_split(dim: int):
    rows, cols = np.tril_indices(dim, k=-1)
    return rows, cols


# --------------------------------------------------------------------------------------------
# pure cores
# --------------------------------------------------------------------------------------------


class _ScaledCovModule(ParametricModule):
    parameter_names: ClassVar[Tuple[str, ...]] = ("logscale",)

    @property
    def scale(self):
        """s = exp(logscale)."""
        return jnp.exp(self.logscale)

    def parameter_box(self):
        return {"logscale": _LOGSCALE_BOUNDS}

    def gradient(self) -> dict:
        """{'logscale': ∂K/∂log s} (= K), by autodiff."""
        return jacobian_dict(self)

    def logdet(self):
        """log|K| by Cholesky (dense)."""
        return _dense_logdet(self.value())


class EyeCovModule(_ScaledCovModule):
    """K = s·I of size ``dim``; parameter ``logscale`` (scalar)."""

    logscale: jnp.ndarray
    dim: int = eqx.field(static=True, default=1)

    def value(self):
        """(dim, dim) matrix s·I."""
        return self.scale * jnp.eye(self.dim, dtype=self.logscale.dtype)

    def logdet(self):
        """log|sI| = dim·log s."""
        return self.dim * self.logscale


class GivenCovModule(_ScaledCovModule):
    """K = s·K₀ for a given (n, n) matrix K₀; parameter ``logscale``."""

    logscale: jnp.ndarray
    K0: jnp.ndarray

    def value(self):
        """(n, n) matrix s·K₀."""
        return self.scale * self.K0


class LinearCovModule(_ScaledCovModule):
    """K = s·XXᵀ for a given (n, r) matrix X; parameter ``logscale``."""

    logscale: jnp.ndarray
    X: jnp.ndarray

    def value(self):
        """(n, n) matrix s·XXᵀ."""
        return self.scale * (self.X @ self.X.T)


class FreeFormCovModule(ParametricModule):
    """K = LLᵀ + εI, L lower-triangular (dim, dim), parameter ``Lu`` (d(d+1)/2,).

    ``Lu`` = [L's strictly-lower entries (row-major), log of L's diagonal].
    """

    parameter_names: ClassVar[Tuple[str, ...]] = ("Lu",)
    Lu: jnp.ndarray
    dim: int = eqx.field(static=True, default=1)
    epsilon: float = eqx.field(static=True, default=FREEFORM_EPSILON)

    @property
    def L(self):
        """(dim, dim) lower-triangular Cholesky-like factor."""
        d = self.dim
        rows, cols = _tril_split(d)
        m = len(rows)
        L = jnp.zeros((d, d), dtype=self.Lu.dtype)
        L = L.at[rows, cols].set(self.Lu[:m])
        idx = np.arange(d)
        return L.at[idx, idx].set(jnp.exp(self.Lu[m:]))

    def value(self):
        """(dim, dim) matrix LLᵀ + εI."""
        L = self.L
        return L @ L.T + self.epsilon * jnp.eye(self.dim, dtype=L.dtype)

    def logdet(self):
        """log|LLᵀ + εI| (Cholesky)."""
        return _dense_logdet(self.value())

    def eigh(self):
        """Eigenvalues (ascending) and eigenvectors of K."""
        return jnp.linalg.eigh(self.value())

    def parameter_box(self):
        d = self.dim
        m = d * (d - 1) // 2
        lo = np.concatenate([np.full(m, -np.inf), np.full(d, np.log(self.epsilon))])
        hi = np.concatenate([np.full(m, np.inf), np.full(d, 11.0)])
        return {"Lu": (lo, hi)}

    def gradient(self) -> dict:
        """{'Lu': ∂K/∂Lu}, shape (d, d, d(d+1)/2), by autodiff."""
        return jacobian_dict(self)


class LRFreeFormCovModule(ParametricModule):
    """K = LLᵀ for a free (n, m) matrix L; parameter ``Lu = L.ravel()`` (n·m,)."""

    parameter_names: ClassVar[Tuple[str, ...]] = ("Lu",)
    Lu: jnp.ndarray
    n: int = eqx.field(static=True, default=1)
    m: int = eqx.field(static=True, default=1)

    @property
    def L(self):
        """(n, m) factor."""
        return self.Lu.reshape(self.n, self.m)

    def value(self):
        """(n, n) matrix LLᵀ (rank ≤ m)."""
        L = self.L
        return L @ L.T

    def logdet(self):
        """log|LLᵀ| (−inf when rank-deficient)."""
        return jnp.linalg.slogdet(self.value())[1]

    def gradient(self) -> dict:
        """{'Lu': ∂K/∂Lu}, shape (n, n, n·m), by autodiff."""
        return jacobian_dict(self)


class SumCovModule(SumModule):
    """K = K₀ + K₁ + ⋯ for a tuple of covariance cores."""

    _children_field: ClassVar[str] = "covariances"
    _label: ClassVar[str] = "SumCov"
    covariances: Tuple[ParametricModule, ...]

    def logdet(self):
        """log|K| (dense Cholesky)."""
        return _dense_logdet(self.value())


class Kron2SumCovModule(ParametricModule):
    """K = C₀ ⊗ GGᵀ + C₁ ⊗ I (size n·p), C₀ low rank (``LRFreeFormCovModule``), C₁ full
    rank (``FreeFormCovModule``); vec is column-major (index = trait·n + sample)."""

    C0: LRFreeFormCovModule
    C1: FreeFormCovModule
    G: jnp.ndarray

    def children(self):
        return (self.C0, self.C1)

    def child_path(self, index):
        return (("C0",), ("C1",))[index]

    def value(self):
        """(n·p, n·p) dense covariance."""
        n = self.G.shape[0]
        GG = self.G @ self.G.T
        return jnp.kron(self.C0.value(), GG) + jnp.kron(
            self.C1.value(), jnp.eye(n, dtype=GG.dtype)
        )

    def _whitening(self):
        """Lₕ (p×p), the eigenvalues Sₕ of Cₕ = S₁^-½U₁ᵀC₀U₁S₁^-½, and S₁."""
        S1, U1 = jnp.linalg.eigh(self.C1.value())
        W = U1 / jnp.sqrt(S1)  # U₁S₁^-½
        Ch = W.T @ self.C0.value() @ W
        Sh, Uh = jnp.linalg.eigh(Ch)
        return Uh.T @ W.T, Sh, S1

    def _sample_eigen(self):
        """Eigenvalues Sₓ (n,) and eigenvectors Uₓ of GGᵀ via the SVD of G."""
        n, r = self.G.shape
        U, s, _ = jnp.linalg.svd(self.G, full_matrices=True)
        Sx = jnp.zeros(n, dtype=self.G.dtype).at[: min(n, r)].set(s[: min(n, r)] ** 2)
        return Sx, U

    def logdet(self):
        """log|K| = n·log|C₁| + Σ log(Sₕ⊗Sₓ + 1)."""
        n = self.G.shape[0]
        _, Sh, S1 = self._whitening()
        Sx, _ = self._sample_eigen()
        return n * jnp.sum(jnp.log(S1)) + jnp.sum(jnp.log1p(jnp.outer(Sh, Sx)))

    def solve(self, v):
        """K⁻¹v for v of shape (n·p,) or (n·p, k), via K⁻¹ = LᵀDL, L = Lₕ ⊗ Lₓ."""
        n = self.G.shape[0]
        Lh, Sh, _ = self._whitening()
        Sx, Ux = self._sample_eigen()
        p = Lh.shape[0]
        vv = v.reshape((p, n) + v.shape[1:])  # row t holds trait t (column-major vec)
        # (Lₕ ⊗ Lₓ) vec(V) with V (n, p): Lₓ V Lₕᵀ; in (p, n) layout: Lₕ · Vt · Lₓᵀ
        t = jnp.einsum("ab,bn...->an...", Lh, vv)
        t = jnp.einsum("mn,an...->am...", Ux.T, t)
        D = 1.0 / (jnp.outer(Sh, Sx) + 1.0)
        t = t * D.reshape(D.shape + (1,) * (v.ndim - 1))
        t = jnp.einsum("nm,am...->an...", Ux, t)
        t = jnp.einsum("ba,bn...->an...", Lh, t)
        return t.reshape(v.shape)

    def gradient(self) -> dict:
        """{'C0.Lu': ∂K/∂C₀.Lu, 'C1.Lu': ∂K/∂C₁.Lu}, parameter axis last, by autodiff."""

        def with_C0(Lu):
            return eqx.tree_at(lambda t: t.C0.Lu, self, Lu).value()

        def with_C1(Lu):
            return eqx.tree_at(lambda t: t.C1.Lu, self, Lu).value()

        return {"C0.Lu": jax.jacfwd(with_C0)(self.C0.Lu),
                "C1.Lu": jax.jacfwd(with_C1)(self.C1.Lu)}


@eqx.filter_jit
def _logdet_gradient(params, static):
    return jax.grad(lambda p: eqx.combine(p, static).logdet())(params)


def _dense_logdet(K):
    chol = jnp.linalg.cholesky(K)
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol)))


# --------------------------------------------------------------------------------------------
# facades
# --------------------------------------------------------------------------------------------


def _float_dtype():
    return jnp.result_type(float)


class _ScaledCov(Facade):
    @property
    def scale(self):
        """Scale s (float). Setting clips at float64 eps as glimix-core does."""
        return float(self.module.scale)

    @scale.setter
    def scale(self, value):
        value = max(float(value), _TINY)
        self._set_param("logscale", np.log(value))

    def fix(self):
        """Hold s fixed during optimisation."""
        self._set_fixed("logscale", True)

    def unfix(self):
        """Let s be optimised."""
        self._set_fixed("logscale", False)

    def logdet(self):
        """log|K|."""
        return float(call_method(self.module, "logdet"))

    def _body(self):
        return [f"scale: {format_scalar(self.scale)}"]


class EyeCov(_ScaledCov):
    """Identity covariance K = s·I of size ``dim`` (glimix-core ``EyeCov``)."""

    def __init__(self, dim: int):
        if int(dim) < 1:
            raise ValueError(f"EyeCov dim must be a positive integer; got {dim}.")
        self._module = EyeCovModule(logscale=jnp.zeros((), _float_dtype()), dim=int(dim))

    @property
    def dim(self) -> int:
        """Matrix dimension d."""
        return self.module.dim

    def _header(self):
        return f"EyeCov(dim={self.dim})"


class GivenCov(_ScaledCov):
    """Given covariance K = s·K₀ (glimix-core ``GivenCov``); K₀ is (n, n)."""

    def __init__(self, K0):
        K0 = as_float_array(K0, "K0", ndim=2)
        if K0.shape[0] != K0.shape[1]:
            raise ValueError(f"K0 must be square; got shape {K0.shape}.")
        asym = float(jnp.max(jnp.abs(K0 - K0.T)))
        if not asym < np.sqrt(np.finfo(np.float64).eps):  # numpy-sugar's check_symmetry
            raise ValueError(f"The provided covariance-matrix is not symmetric: max |K0 - K0ᵀ| "
                             f"= {asym:.3g}, expected below sqrt(eps) = 1.49e-08.")
        self._module = GivenCovModule(logscale=jnp.zeros((), K0.dtype), K0=K0)

    def _header(self):
        return "GivenCov(K0=...)"


class LinearCov(_ScaledCov):
    """Linear covariance K = s·XXᵀ for an (n, r) matrix X (glimix-core ``LinearCov``)."""

    def __init__(self, X):
        X = as_float_array(X, "X", ndim=2)
        self._module = LinearCovModule(logscale=jnp.zeros((), X.dtype), X=X)

    @property
    def X(self):
        """The (n, r) matrix X."""
        return self.module.X

    def _header(self):
        return "LinearCov()"


class FreeFormCov(Facade):
    """General positive-definite K = LLᵀ + εI (glimix-core ``FreeFormCov``)."""

    def __init__(self, dim: int):
        dim = int(dim)
        if dim < 1:
            raise ValueError(f"FreeFormCov dim must be a positive integer; got {dim}.")
        m = dim * (dim - 1) // 2
        Lu = jnp.concatenate([jnp.ones(m), jnp.zeros(dim)]).astype(_float_dtype())
        self._module = FreeFormCovModule(Lu=Lu, dim=dim)

    @property
    def L(self):
        """(d, d) lower-triangular L."""
        return self.module.L

    @L.setter
    def L(self, value):
        L = np.asarray(value, dtype=float)
        d = self.module.dim
        if L.shape != (d, d):
            raise ValueError(f"FreeFormCov.L must have shape {(d, d)}; got {L.shape}.")
        diag = np.diag(L)
        if np.any(diag <= 0):
            raise ValueError("FreeFormCov.L must have a positive diagonal (it is log-parametrised).")
        rows, cols = _tril_split(d)
        self._set_param("Lu", np.concatenate([L[rows, cols], np.log(diag)]))

    @property
    def Lu(self):
        """Flat parameters [strictly-lower entries of L, log diag L]."""
        return self.module.Lu

    @Lu.setter
    def Lu(self, value):
        self._set_param("Lu", value)

    @property
    def nparams(self) -> int:
        """Number of parameters d(d+1)/2."""
        return int(self.module.Lu.shape[0])

    @property
    def shape(self):
        """(d, d)."""
        return (self.module.dim, self.module.dim)

    def logdet(self):
        """log|K|."""
        return float(call_method(self.module, "logdet"))

    def eigh(self):
        """(S ascending, U) of K."""
        return call_method(self.module, "eigh")

    def fix(self):
        """Hold L fixed."""
        self._set_fixed("Lu", True)

    def unfix(self):
        """Let L be optimised."""
        self._set_fixed("Lu", False)

    def _header(self):
        return f"FreeFormCov(dim={self.module.dim})"

    def _body(self):
        return ["L: " + format_array(self.L, 5)]


class LRFreeFormCov(Facade):
    """Low-rank positive semi-definite K = LLᵀ, L (n, m) (glimix-core ``LRFreeFormCov``)."""

    def __init__(self, n: int, m: int):
        n, m = int(n), int(m)
        if n < 1 or m < 1 or m > n:
            raise ValueError(f"LRFreeFormCov needs 1 <= m <= n; got n={n}, m={m}.")
        self._module = LRFreeFormCovModule(Lu=jnp.ones(n * m, _float_dtype()), n=n, m=m)

    @property
    def L(self):
        """(n, m) matrix L."""
        return self.module.L

    @L.setter
    def L(self, value):
        self._set_param("Lu", np.asarray(value, dtype=float).ravel())

    @property
    def Lu(self):
        """L.ravel()."""
        return self.module.Lu

    @Lu.setter
    def Lu(self, value):
        self._set_param("Lu", value)

    @property
    def nparams(self) -> int:
        """n·m."""
        return self.module.n * self.module.m

    @property
    def shape(self):
        """(n, n)."""
        return (self.module.n, self.module.n)

    def fix(self):
        """Hold L fixed."""
        self._set_fixed("Lu", True)

    def unfix(self):
        """Let L be optimised."""
        self._set_fixed("Lu", False)

    def _header(self):
        return f"LRFreeFormCov(n={self.module.n}, m={self.module.m})"

    def _body(self):
        return ["L: " + format_array(self.L, 5)]


class SumCov(SumFacade):
    """Sum of covariance facades K = K₀ + K₁ + ⋯ (glimix-core ``SumCov``).

    Holds the children facades: changing a child later changes the sum.
    """

    _core_type = SumCovModule
    _children_field = "covariances"

    @property
    def covariances(self):
        """The children facades."""
        return list(self._children)

    def logdet(self):
        """log|K|."""
        return float(call_method(self.module, "logdet"))


class Kron2SumCov(Facade):
    """K = C₀ ⊗ GGᵀ + C₁ ⊗ I (glimix-core ``Kron2SumCov(G, dim, rank)``).

    ``C0`` is an :class:`LRFreeFormCov` (dim, rank) and ``C1`` a :class:`FreeFormCov` (dim).
    """

    def __init__(self, G, dim: int, rank: int):
        G = as_float_array(np.atleast_2d(np.asarray(G, dtype=float)), "G", ndim=2)
        self._G = G
        self._C0 = LRFreeFormCov(dim, rank)
        self._C0.name = "C₀"
        self._C1 = FreeFormCov(dim)
        self._C1.name = "C₁"

    @property
    def G(self):
        """(n, m) matrix G."""
        return self._G

    @property
    def C0(self) -> LRFreeFormCov:
        """C₀ (positive semi-definite, low rank)."""
        return self._C0

    @property
    def C1(self) -> FreeFormCov:
        """C₁ (positive definite)."""
        return self._C1

    @property
    def nparams(self) -> int:
        """Parameters of C₀ plus those of C₁."""
        return self._C0.nparams + self._C1.nparams

    @property
    def module(self):
        return Kron2SumCovModule(C0=self._C0.module, C1=self._C1.module, G=self._G)

    @module.setter
    def module(self, new):
        if not isinstance(new, Kron2SumCovModule):
            raise TypeError("Kron2SumCov.module must be a Kron2SumCovModule.")
        self._C0.module = new.C0
        self._C1.module = new.C1
        self._G = new.G

    def logdet(self):
        """log|K| = n·log|C₁| + Σ log(Sₕ⊗Sₓ + 1)."""
        return float(call_method(self.module, "logdet"))

    def solve(self, v):
        """K⁻¹v."""
        return np.array(call_method(self.module, "solve", jnp.asarray(v)))

    # glimix-core's factorisation K = L⁻¹(Sₕ⊗Sₓ + I)L⁻ᵀ, L = Lₕ⊗Lₓ, as dense numpy helpers

    @property
    def Lx(self) -> np.ndarray:
        """Lₓ = Uᵀ (n, n), U the left singular vectors of G."""
        U = np.linalg.svd(np.asarray(self._G, float), full_matrices=True)[0]
        return U.T

    @property
    def Lh(self) -> np.ndarray:
        """Lₕ = (U₁S₁^{-½}Uₕ)ᵀ (p, p): C₁ = U₁S₁U₁ᵀ, Uₕ the eigenvectors of
        S₁^{-½}U₁ᵀC₀U₁S₁^{-½}; then LₕC₁Lₕᵀ = I and LₕC₀Lₕᵀ = Sₕ."""
        S1, U1 = np.linalg.eigh(self._C1.value())
        U1S1 = U1 / np.sqrt(S1)
        Uh = np.linalg.eigh(U1S1.T @ self._C0.value() @ U1S1)[1]
        return (U1S1 @ Uh).T

    def logdet_gradient(self) -> dict:
        """∂log|K| over 'C0.Lu' and 'C1.Lu' (autodiff)."""
        params, static = eqx.partition(self.module, parameter_mask(self.module))
        g = _logdet_gradient(params, static)
        return {"C0.Lu": np.array(g.C0.Lu), "C1.Lu": np.array(g.C1.Lu)}

    def gradient_dot(self, v) -> dict:
        """∂K·v for v (n·p,) -> (n·p, k), or v (n·p, m) -> (m, n·p, k), per parameter set."""
        v = np.asarray(v, float)
        grads = self.gradient()
        spec = "abi,b->ai" if v.ndim == 1 else "abi,bj->jai"
        return {key: np.einsum(spec, grads[key], v) for key in ("C0.Lu", "C1.Lu")}

    def LdKL_dot(self, v) -> dict:
        """L(∂K)Lᵀv, L = Lₕ⊗Lₓ: v (n·p,) -> (n·p, k), or v (n·p, m) -> (n·p, m, k)."""
        v = np.asarray(v, float)
        L = np.kron(self.Lh, self.Lx)
        grads = self.gradient()
        Lv = L.T @ v
        spec = "ab,bci,c->ai" if v.ndim == 1 else "ab,bci,cj->aji"
        return {key: np.einsum(spec, L, grads[key], Lv) for key in ("C0.Lu", "C1.Lu")}

    def _header(self):
        d = self._C1.module.dim
        return f"Kron2SumCov(G=..., dim={d}, rank={self._C0.module.m})"

    def _body(self):
        lines = []
        for c in (self._C0, self._C1):
            lines.extend(str(c).split("\n"))
        return lines
