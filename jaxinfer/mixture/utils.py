"""Small helpers with lymixture 0.0.2's names: time priors, normalisation, hardening."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxinfer.mixture._hmm import binomial_pmf


def binom_pmf(k, n: int, p):
    """``Binom(k; n, p)`` for an array ``k`` of integers in ``0..n`` (JAX-traceable in ``p``).

    Raises ValueError for a concrete ``p`` outside [0, 1], as lymixture does.
    """
    try:
        p_value = float(p)
    except Exception:  # traced: no check possible here, the caller bounds p
        p_value = None
    if p_value is not None and not 0.0 <= p_value <= 1.0:
        raise ValueError(f"binomial probability must be in [0, 1], got {p_value}")
    return binomial_pmf(int(n), p)[jnp.asarray(k, dtype=jnp.int32)]


def late_binomial(support, p=0.5):
    """The parametric late-T time prior: ``Binom(t; n=support[-1], p)`` over ``support``."""
    support = np.asarray(support)
    return binom_pmf(support, int(support[-1]), p)


def normalize(values, axis: int, **isclose_kwargs):
    """Normalise ``values`` to sum to 1 along ``axis``; entries ``np.isclose`` to 0 (atol
    1e-8 by default) become exactly 0 and the rest is renormalised (lymixture's rule)."""
    values = np.asarray(values, dtype=float)
    normalized = values / np.sum(values, axis=axis, keepdims=True)
    normalized = np.where(np.isclose(normalized, 0.0, **isclose_kwargs), 0.0, normalized)
    return normalized / np.sum(normalized, axis=axis, keepdims=True)


def harden(values, axis: int) -> np.ndarray:
    """One-hot encoding of the argmax along ``axis`` (int array, same shape)."""
    values = np.asarray(values)
    idx = np.argmax(values, axis=axis)
    one_hot = np.eye(values.shape[axis], dtype=int)[idx]
    return np.moveaxis(one_hot, -1, axis)


__all__ = ["binom_pmf", "late_binomial", "normalize", "harden"]
