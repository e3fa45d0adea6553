"""Pytree <-> flat-vector plumbing shared by the solvers.

Solvers work on a flat 1-D vector internally; users give any pytree of arrays.
"""

from __future__ import annotations

from typing import Callable, Tuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree


def flatten_objective(fun: Callable, x0, args: tuple = ()) -> Tuple[Callable, jnp.ndarray, Callable]:
    """Turn ``fun(x_tree, *args)`` into ``flat_fun(x_flat)``.

    Returns ``(flat_fun, x0_flat, unravel)`` where ``unravel(x_flat)`` rebuilds the pytree.
    Integer leaves of ``x0`` are promoted to the default float dtype.
    """
    x0 = jax.tree_util.tree_map(_as_float, x0)
    x0_flat, unravel = ravel_pytree(x0)

    def flat_fun(x_flat):
        return fun(unravel(x_flat), *args)

    return flat_fun, x0_flat, unravel


def _as_float(leaf):
    leaf = jnp.asarray(leaf)
    if not jnp.issubdtype(leaf.dtype, jnp.inexact):
        leaf = leaf.astype(jnp.result_type(float))
    return leaf
