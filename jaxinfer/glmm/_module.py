"""Shared machinery for covariance and mean functions: the pure core and the mutable facade.

Design
------
Every covariance / mean function exists twice:

* a **pure core**, an immutable :class:`equinox.Module` (``EyeCovModule``, ``LinearMeanModule``,
  ...) whose array fields are the parameters in glimix-core's parametrisation (``logscale``,
  ``Lu``, ``offset``, ``effsizes``, ``vecB``) plus the data it needs (``X``, ``K0``, ``G``).
  ``module.value()`` is a pure JAX function of those fields, so ``jax.grad`` / ``jit`` / ``vmap``
  work on it directly. Which parameters are held fixed is static metadata (``fixed``).
* a **facade** with glimix-core's class name (``EyeCov``, ``LinearMean``, ...): a small mutable
  Python object holding the current core in ``.module``. Setting ``cov.scale = 2.5`` replaces
  ``.module`` by an updated copy (``eqx.tree_at``). Composite facades (``SumCov``, ``SumMean``,
  ``Kron2SumCov``) hold their children's facades, so changing a child after building the sum
  is seen by the sum, as in glimix-core; their ``.module`` is assembled from the children on
  each access and assigning ``.module`` distributes the parts back to the children.

Models (GP, LMM, ...) work on the core: ``params, static = eqx.partition(core,
parameter_mask(core))`` gives the free parameters as a pytree for an optimiser; ``parameter_bounds``
gives glimix-core's box bounds in the same structure.
"""

from __future__ import annotations

from typing import Any, ClassVar, Dict, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree


class ParametricModule(eqx.Module):
    """Base of the pure cores: declares which fields are parameters and their bounds.

    Subclasses list their parameter field names in ``parameter_names`` and glimix-core's
    bounds in ``parameter_box`` (name -> (lower, upper), applied elementwise). ``fixed`` holds
    the names currently excluded from optimisation.
    """

    parameter_names: ClassVar[Tuple[str, ...]] = ()
    fixed: Tuple[str, ...] = eqx.field(static=True, default=(), kw_only=True)

    def children(self) -> Tuple["ParametricModule", ...]:
        """Sub-functions of a composite (empty for a leaf)."""
        return ()

    def child_path(self, index: int):
        """Attribute/index steps from this module to its ``index``-th child."""
        raise IndexError(f"{type(self).__name__} has no children.")

    def parameter_box(self) -> Dict[str, Tuple[Any, Any]]:
        """glimix-core's bounds for each parameter (scalars or arrays, broadcast to the field)."""
        return {}


class SumModule(ParametricModule):
    """A sum of child cores (SumCovModule, SumMeanModule). Subclasses declare the tuple field
    that holds the children (``_children_field``) and the label used in gradient keys."""

    _children_field: ClassVar[str] = ""
    _label: ClassVar[str] = ""

    def children(self):
        return tuple(getattr(self, self._children_field))

    def child_path(self, index):
        return (self._children_field, index)

    def value(self):
        """Sum of the children's values."""
        terms = self.children()
        total = terms[0].value()
        for term in terms[1:]:
            total = total + term.value()
        return total

    def gradient(self) -> dict:
        """Children's gradients keyed '<label>[i].<name>'."""
        return {f"{self._label}[{i}].{key}": g
                for i, child in enumerate(self.children())
                for key, g in child.gradient().items()}


def _is_module(x) -> bool:
    return isinstance(x, ParametricModule)


def parameter_mask(module: ParametricModule) -> Any:
    """Boolean pytree shaped like ``module``: True on the free (unfixed) parameter arrays.

    Use with ``eqx.partition(module, parameter_mask(module))``.
    """
    mask = jax.tree_util.tree_map(lambda _: False, module)
    return _fill_mask(module, mask, lambda m, name: name not in m.fixed)


def _fill_mask(module, mask, predicate):
    for name in module.parameter_names:
        mask = eqx.tree_at(lambda t, n=name: getattr(t, n), mask, predicate(module, name))
    for index, child in enumerate(module.children()):
        child_mask = _fill_mask(child, _get_child(mask, module, index), predicate)
        mask = eqx.tree_at(lambda t, i=index: _get_child(t, module, i), mask, child_mask)
    return mask


def _get_child(tree, module, index):
    path = module.child_path(index)
    node = tree
    for step in path:
        node = node[step] if isinstance(step, int) else getattr(node, step)
    return node


def parameter_bounds(module: ParametricModule) -> Tuple[Any, Any]:
    """(lower, upper) pytrees matching ``eqx.partition(module, parameter_mask(module))[0]``.

    Free parameter leaves carry glimix-core's bounds broadcast to the parameter's shape; every
    other leaf is None.
    """
    params, _ = eqx.partition(module, parameter_mask(module))
    lower = jax.tree_util.tree_map(lambda _: None, params)
    upper = lower
    lower, upper = _fill_bounds(module, lower, upper)
    return lower, upper


def _fill_bounds(module, lower, upper):
    box = module.parameter_box()
    for name in module.parameter_names:
        if name in module.fixed:
            continue
        value = getattr(module, name)
        lo, hi = box.get(name, (-jnp.inf, jnp.inf))
        lo = jnp.broadcast_to(jnp.asarray(lo, dtype=value.dtype), value.shape)
        hi = jnp.broadcast_to(jnp.asarray(hi, dtype=value.dtype), value.shape)
        lower = eqx.tree_at(lambda t, n=name: getattr(t, n), lower, lo, is_leaf=lambda x: x is None)
        upper = eqx.tree_at(lambda t, n=name: getattr(t, n), upper, hi, is_leaf=lambda x: x is None)
    for index, child in enumerate(module.children()):
        sub_lo, sub_hi = _fill_bounds(
            child, _get_child(lower, module, index), _get_child(upper, module, index)
        )
        lower = eqx.tree_at(lambda t, i=index: _get_child(t, module, i), lower, sub_lo,
                            is_leaf=lambda x: x is None)
        upper = eqx.tree_at(lambda t, i=index: _get_child(t, module, i), upper, sub_hi,
                            is_leaf=lambda x: x is None)
    return lower, upper


def jacobian_dict(module: ParametricModule, fun_name: str = "value", prefix: str = "") -> dict:
    """Derivatives of ``module.<fun_name>()`` over each parameter, by forward-mode autodiff.

    Returns glimix-core's layout: for a scalar parameter the derivative has the value's shape;
    for a vector parameter of length k the parameter axis is last, ``value.shape + (k,)``.
    Composite modules prefix their children's keys as glimix-core does.
    """
    out = {}
    for name in module.parameter_names:
        param = getattr(module, name)

        def as_function(p, name=name):
            return getattr(eqx.tree_at(lambda t: getattr(t, name), module, p), fun_name)()

        jac = jax.jacfwd(as_function)(param)
        out[prefix + name] = jac
    return out


def as_float_array(value, what: str, ndim: int | None = None) -> jnp.ndarray:
    """Convert user input to a floating JAX array, refusing non-finite entries and bad rank."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be numeric; got dtype {arr.dtype}.")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{what} must have {ndim} dimension(s); got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} has non-finite entries (NaN or inf).")
    out = jnp.asarray(arr)
    if not jnp.issubdtype(out.dtype, jnp.floating):
        out = out.astype(jnp.result_type(float))
    return out


@eqx.filter_jit
def call_method(module, name: str, *args):
    """``getattr(module, name)(*args)`` compiled once per module structure and shapes.

    The facades evaluate their cores through this: op-by-op (eager) evaluation compiles every
    primitive separately, hundreds of small XLA compilations for one ``gradient()``."""
    return getattr(module, name)(*args)


@eqx.filter_jit
def _forward_difference_error(fun, x0, args, step):
    flat, unravel = ravel_pytree(x0)

    def f(x):
        return jnp.asarray(fun(unravel(x), *args))

    f0 = f(flat)
    jac = jax.jacfwd(f)(flat).reshape(f0.shape + (flat.size,))
    shifted = jax.vmap(f)(flat + step * jnp.eye(flat.size, dtype=flat.dtype))
    fd = (jnp.moveaxis(shifted, 0, -1) - f0[..., None]) / step
    return jnp.sqrt(jnp.sum((fd - jac) ** 2))


def finite_difference_error(fun, x0, *args, step: float) -> float:
    """‖(f(x0 + step·eᵢ) − f(x0))/step − ∂f/∂xᵢ‖ summed over the entries i of the pytree
    ``x0`` (Frobenius), with ``f(x) = fun(x, *args)`` and the derivative from ``jax.jacfwd``:
    the number glimix-core's ``_check_grad`` reports.

    ``fun`` must be a pure JAX function defined once (module level): the check is compiled once
    per ``fun`` and argument shapes, the k shifted evaluations vmapped."""
    if sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(x0)) == 0:
        return 0.0
    return float(_forward_difference_error(fun, x0, args, float(step)))


def _combined_value(params, static):
    return eqx.combine(params, static).value()


def format_scalar(x) -> str:
    """A float printed to 12 significant digits (hides last-bit noise of exp(log(x)))."""
    return repr(float(f"{float(x):.12g}"))


def format_array(arr, indent: int) -> str:
    """numpy's print of an array, continuation lines indented to line up after a label."""
    text = np.array2string(np.asarray(arr))
    lines = text.split("\n")
    return "\n".join([lines[0]] + [" " * indent + line for line in lines[1:]])


class Facade:
    """Mutable, glimix-core-shaped wrapper around a pure core (see module docstring).

    Subclasses set ``self._module`` in ``__init__`` (leaf) or override the ``module`` property
    (composite). ``name`` is a free label used when printing.
    """

    name: str | None = None

    @property
    def module(self):
        """The current pure core (an ``equinox.Module``)."""
        return self._module

    @module.setter
    def module(self, new):
        if type(new) is not type(self._module):
            raise TypeError(
                f"{type(self).__name__}.module must be a {type(self._module).__name__}; "
                f"got {type(new).__name__}."
            )
        self._module = new

    def _set_param(self, name: str, value) -> None:
        old = getattr(self.module, name)
        new = jnp.asarray(value, dtype=old.dtype)
        if new.shape != old.shape:
            raise ValueError(
                f"{type(self).__name__}.{name} must have shape {old.shape}; got {new.shape}."
            )
        if not bool(jnp.all(jnp.isfinite(new))):
            raise ValueError(f"{type(self).__name__}.{name} must be finite.")
        self.module = eqx.tree_at(lambda t: getattr(t, name), self.module, new)

    def _set_fixed(self, name: str, flag: bool) -> None:
        core = self.module
        fixed = tuple(n for n in core.fixed if n != name) + ((name,) if flag else ())
        self.module = _replace_static(core, fixed=fixed)

    def value(self) -> np.ndarray:
        """The function's value (covariance matrix or mean vector) as a writable numpy array
        (glimix-core's samplers write into it); the pure core's ``module.value()`` is JAX."""
        return np.array(call_method(self.module, "value"))

    def gradient(self) -> dict:
        """Derivatives of ``value()`` over the parameters (autodiff), glimix-core's keys/layout,
        as numpy arrays."""
        return {key: np.array(val) for key, val in call_method(self.module, "gradient").items()}

    def _check_grad(self, step: float = 1.49e-08) -> float:
        """glimix-core's check: ‖forward differences of ``value()`` over the free parameters
        − the autodiff derivative‖ (≈ 0 when the gradient is right)."""
        core = self.module
        params, static = eqx.partition(core, parameter_mask(core))
        return finite_difference_error(_combined_value, params, static, step=step)

    def _header(self) -> str:
        raise NotImplementedError

    def _body(self) -> list:
        return []

    def __str__(self) -> str:
        msg = self._header()
        msg += f": {self.name if self.name is not None else type(self).__name__}"
        for line in self._body():
            msg += "\n  " + line
        return msg

    def __repr__(self) -> str:
        return self.__str__()


def _replace_static(module, **changes):
    """Copy of an equinox module with static (non-pytree) fields replaced."""
    import dataclasses

    return dataclasses.replace(module, **changes)


class SumFacade(Facade):
    """A sum of facades (SumCov, SumMean): holds the children, so changing one later changes
    the sum. Subclasses set ``_core_type`` (the sum's equinox core) and ``_children_field``
    (its field name: ``"covariances"`` or ``"means"``)."""

    _core_type: type
    _children_field: str

    def __init__(self, children):
        children = list(children)
        kind = type(self).__name__
        if not children:
            raise ValueError(f"{kind} needs at least one term.")
        for child in children:
            if not isinstance(child, Facade):
                raise TypeError(f"{kind} takes {self._children_field} objects; "
                                f"got {type(child).__name__}.")
        self._children = children

    @property
    def module(self):
        return self._core_type(**{self._children_field: tuple(c.module for c in self._children)})

    @module.setter
    def module(self, new):
        cores = getattr(new, self._children_field, ())
        if not isinstance(new, self._core_type) or len(cores) != len(self._children):
            raise TypeError(f"{type(self).__name__}.module must be a {self._core_type.__name__} "
                            f"with the same children.")
        for facade, core in zip(self._children, cores):
            facade.module = core

    def _header(self):
        return f"{type(self).__name__}({self._children_field}=...)"

    def _body(self):
        return [line for child in self._children for line in str(child).split("\n")]
