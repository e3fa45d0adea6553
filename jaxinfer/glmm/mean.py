"""Mean functions in glimix-core's parametrisation: pure equinox cores plus mutable facades.

* ``OffsetMean(n)``: m = θ·𝟏, parameter ``offset`` (bounds ±200, default 0).
* ``LinearMean(X)``: m = Xα, parameter ``effsizes`` (bounds ±200, default 0).
* ``SumMean([f0, f1, ...])``: m = f₀ + f₁ + ⋯.
* ``KronMean(A, X)``: m = (A ⊗ X) vec(B), B (c, p), parameter ``vecB`` = vec(B) column-major.

See :mod:`jaxinfer.glmm._module` for the core/facade design.
"""

from __future__ import annotations

from typing import ClassVar, Tuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from jaxinfer.glmm._module import (
    Facade,
    SumFacade,
    SumModule,
    ParametricModule,
    as_float_array,
    format_array,
    format_scalar,
    jacobian_dict,
    parameter_bounds,
    parameter_mask,
)

__all__ = [
    "OffsetMean", "LinearMean", "SumMean", "KronMean",
    "OffsetMeanModule", "LinearMeanModule", "SumMeanModule", "KronMeanModule",
    "parameter_mask", "parameter_bounds", "vec", "unvec",
]

_EFFECT_BOUNDS = (-200.0, 200.0)


def vec(B):
    """Column-major vectorisation: (c, p) -> (c·p,), column after column."""
    return jnp.asarray(B).T.reshape(-1)


def unvec(v, shape):
    """Inverse of :func:`vec` for a (c, p) ``shape``."""
    c, p = shape
    return jnp.asarray(v).reshape(p, c).T


class OffsetMeanModule(ParametricModule):
    """m = θ·𝟏 of length n; parameter ``offset`` (scalar)."""

    parameter_names: ClassVar[Tuple[str, ...]] = ("offset",)
    offset: jnp.ndarray
    n: int = eqx.field(static=True, default=1)

    def value(self):
        """(n,) vector θ·𝟏."""
        return jnp.full((self.n,), 1.0, dtype=self.offset.dtype) * self.offset

    def parameter_box(self):
        return {"offset": _EFFECT_BOUNDS}

    def gradient(self) -> dict:
        """{'offset': 𝟏} by autodiff."""
        return jacobian_dict(self)


class LinearMeanModule(ParametricModule):
    """m = Xα for a given (n, m) X; parameter ``effsizes`` (m,)."""

    parameter_names: ClassVar[Tuple[str, ...]] = ("effsizes",)
    effsizes: jnp.ndarray
    X: jnp.ndarray

    def value(self):
        """(n,) vector Xα."""
        return self.X @ self.effsizes

    def parameter_box(self):
        return {"effsizes": _EFFECT_BOUNDS}

    def gradient(self) -> dict:
        """{'effsizes': X} by autodiff, shape (n, m)."""
        return jacobian_dict(self)


class SumMeanModule(SumModule):
    """m = f₀ + f₁ + ⋯ for a tuple of mean cores."""

    _children_field: ClassVar[str] = "means"
    _label: ClassVar[str] = "SumMean"
    means: Tuple[ParametricModule, ...]


class KronMeanModule(ParametricModule):
    """m = (A ⊗ X) vec(B); A (p, p), X (n, c); parameter ``vecB`` (c·p,)."""

    parameter_names: ClassVar[Tuple[str, ...]] = ("vecB",)
    vecB: jnp.ndarray
    A: jnp.ndarray
    X: jnp.ndarray

    @property
    def B(self):
        """(c, p) effect sizes."""
        return unvec(self.vecB, (self.X.shape[1], self.A.shape[1]))

    @property
    def AX(self):
        """A ⊗ X, (n·p, c·p)."""
        return jnp.kron(self.A, self.X)

    def value(self):
        """(n·p,) vector vec(X B Aᵀ) (= (A ⊗ X) vec(B), without forming the Kronecker)."""
        return vec(self.X @ self.B @ self.A.T)

    def gradient(self) -> dict:
        """{'vecB': A ⊗ X} by autodiff."""
        return jacobian_dict(self)


def _float_dtype():
    return jnp.result_type(float)


class OffsetMean(Facade):
    """Offset mean θ·𝟏 of length n (glimix-core ``OffsetMean``)."""

    def __init__(self, n: int):
        if int(n) < 1:
            raise ValueError(f"OffsetMean n must be a positive integer; got {n}.")
        self._module = OffsetMeanModule(offset=jnp.zeros((), _float_dtype()), n=int(n))

    @property
    def offset(self) -> float:
        """θ."""
        return float(self.module.offset)

    @offset.setter
    def offset(self, value):
        self._set_param("offset", float(value))

    def fix_offset(self):
        """Hold θ fixed during optimisation."""
        self._set_fixed("offset", True)

    def unfix_offset(self):
        """Let θ be optimised."""
        self._set_fixed("offset", False)

    def _header(self):
        return "OffsetMean()"

    def _body(self):
        return [f"offset: {format_scalar(self.offset)}"]


class LinearMean(Facade):
    """Linear mean Xα (glimix-core ``LinearMean``); X is (n, m)."""

    def __init__(self, X):
        X = as_float_array(X, "X", ndim=2)
        self._module = LinearMeanModule(effsizes=jnp.zeros(X.shape[1], X.dtype), X=X)

    @property
    def X(self):
        """(n, m) covariates."""
        return self.module.X

    @property
    def effsizes(self):
        """α, (m,)."""
        return self.module.effsizes

    @effsizes.setter
    def effsizes(self, value):
        self._set_param("effsizes", np.asarray(value, dtype=float).ravel())

    def fix(self):
        """Hold α fixed."""
        self._set_fixed("effsizes", True)

    def unfix(self):
        """Let α be optimised."""
        self._set_fixed("effsizes", False)

    def _header(self):
        return f"LinearMean(m={self.module.X.shape[1]})"

    def _body(self):
        return ["effsizes: " + format_array(self.effsizes, 12)]


class SumMean(SumFacade):
    """Sum of mean facades f₀ + f₁ + ⋯ (glimix-core ``SumMean``); children stay live."""

    _core_type = SumMeanModule
    _children_field = "means"

    @property
    def means(self):
        """The children facades."""
        return list(self._children)


class KronMean(Facade):
    """Kronecker mean (A ⊗ X) vec(B) (glimix-core ``KronMean``); A (p, p), X (n, c)."""

    def __init__(self, A, X):
        A = as_float_array(A, "A", ndim=2)
        X = as_float_array(X, "X", ndim=2)
        vecB = jnp.zeros(X.shape[1] * A.shape[1], X.dtype)
        self._module = KronMeanModule(vecB=vecB, A=A, X=X)

    @property
    def A(self):
        """(p, p) trait design."""
        return self.module.A

    @property
    def X(self):
        """(n, c) sample design."""
        return self.module.X

    @property
    def AX(self):
        """A ⊗ X."""
        return self.module.AX

    @property
    def B(self):
        """(c, p) effect sizes."""
        return self.module.B

    @B.setter
    def B(self, value):
        # glimix-core stores vec(B) (column-major) of whatever shape it is given, so a (p, c)
        # array is accepted too; only the number of entries must match c·p.
        B = np.asarray(value, dtype=float)
        size = self.module.X.shape[1] * self.module.A.shape[1]
        if B.size != size:
            raise ValueError(f"KronMean.B must have c·p = {size} entries (shape "
                             f"{(self.module.X.shape[1], self.module.A.shape[1])}); "
                             f"got shape {B.shape}.")
        self._set_param("vecB", np.reshape(B, -1, order="F"))

    @property
    def nparams(self) -> int:
        """c·p."""
        return int(self.module.vecB.shape[0])

    def _header(self):
        return "KronMean(A=..., X=...)"

    def _body(self):
        return ["B: " + format_array(self.B, 5)]
