"""Least-squares solves of the small symmetric systems that association scans build.

A candidate that is all zeros, constant (a monomorphic SNP: a multiple of the intercept),
equal to a covariate or to another candidate makes the normal-equations matrix ``EᵀBE``
singular. glimix-core answers with least squares (numpy-sugar's ``rsolve``: ``lstsq`` with
``rcond = sqrt(eps)``) and standard errors from ``pinv(A + 1e-12·I)``; so do these helpers,
written for the symmetric positive semi-definite matrices at hand (one ``eigh``), batched
under ``vmap``:

* :func:`min_norm_solve` — the minimum-norm least-squares solution (eigenvalues below
  ``rcond·λ_max`` dropped): a zero candidate gets effect 0, a duplicated column shares the
  effect equally, the likelihood stays finite;
* :func:`ridge_inverse_diagonal` — ``diag((A + ridge·I)⁻¹)``: a direction the data cannot
  identify gets a huge (``~1/ridge``) variance rather than 0 or NaN;
* :func:`two_by_two_inverse_diagonal` — glimix-core's rule for the 2×2 systems of a
  one-covariate ``fast_scan`` (its ``hinv``): the inverse when the condition number is at most
  1e7, else the pseudo-inverse (singular values below 1e-15 of the largest dropped), so a zero
  candidate gets standard error 0 and a copy of the intercept shares it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def solve_rcond(dtype) -> float:
    """Relative eigenvalue cut-off: glimix-core's sqrt(eps64) = 1.5e-8 in float64; in float32
    100·eps32 = 1.2e-5, above its rounding of an exactly singular matrix."""
    if np.dtype(dtype) == np.float64:
        return float(np.sqrt(np.finfo(np.float64).eps))
    return float(100 * np.finfo(dtype).eps)


def ridge(dtype, scale) -> jnp.ndarray:
    """Ridge for :func:`ridge_inverse_diagonal`: glimix-core's 1e-12, raised in float32 to
    ``10·eps·scale`` (``scale`` the largest eigenvalue) so it is not lost in rounding."""
    return jnp.maximum(1e-12, 10 * float(np.finfo(dtype).eps) * scale)


def min_norm_solve(A, b):
    """Minimum-norm x minimising ‖Ax - b‖ for symmetric PSD A (m, m), b (m,).

    Returns ``(x, deficient)``: ``deficient`` is True when an eigenvalue was dropped (the
    system was singular to ``solve_rcond``).
    """
    lam, V = jnp.linalg.eigh(A)
    top = jnp.max(jnp.abs(lam))
    keep = jnp.abs(lam) > solve_rcond(A.dtype) * top
    inv = jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)
    x = V @ (inv * (V.T @ b))
    return x, ~jnp.all(keep)


def ridge_inverse_diagonal(A):
    """diag((A + ridge·I)⁻¹) (m,) for symmetric PSD A (m, m), via one eigh."""
    lam, V = jnp.linalg.eigh(A)
    lam = lam + ridge(A.dtype, jnp.max(jnp.abs(lam)))
    return jnp.sum(V * V / lam[None, :], axis=1)


def two_by_two_inverse_diagonal(A):
    """diag(A⁻¹) for symmetric PSD A (2, 2) by glimix-core's ``hinv`` rule: the inverse when
    cond(A) ≤ 1e7, else the pseudo-inverse with cut-off 1e-15·λ_max, raised to 32·eps·λ_max
    for eigh's rounding (float32: 1/(100·eps) and 100·eps)."""
    f64 = np.dtype(A.dtype) == np.float64
    max_cond = 1e7 if f64 else 1.0 / (100 * float(np.finfo(A.dtype).eps))
    # glimix-core's closed-form 2×2 SVD gives an exact 0 for a singular matrix; eigh leaves a
    # few eps·λ_max of rounding, so the cut-off is at least 32·eps (7e-15 in float64)
    cutoff = max(1e-15, 32 * float(np.finfo(A.dtype).eps)) if f64 else 100 * float(
        np.finfo(A.dtype).eps)
    lam, V = jnp.linalg.eigh(A)
    size = jnp.abs(lam)
    top = jnp.max(size)
    ill = top > max_cond * jnp.min(size)
    keep = jnp.where(ill, size > cutoff * top, True) & (size > 0)
    inv = jnp.where(keep, 1.0 / jnp.where(keep, lam, 1.0), 0.0)
    return jnp.sum(V * V * inv[None, :], axis=1)

