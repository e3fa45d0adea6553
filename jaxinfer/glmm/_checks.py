"""Input validation at the edge of jaxinfer.glmm: clear errors before any tracing."""

from __future__ import annotations

import numpy as np


def as_numpy_float(value, what: str, ndim: int | tuple | None = None) -> np.ndarray:
    """``value`` as a float numpy array; refuse non-numeric, non-finite or wrong-rank input.

    ``ndim`` may be an int or a tuple of allowed ranks.
    """
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{what} could not be converted to an array: {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be numeric; got dtype {arr.dtype}.")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            raise ValueError(
                f"{what} must have {' or '.join(map(str, allowed))} dimension(s); "
                f"got shape {arr.shape}."
            )
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{what} has {bad} non-finite entries (NaN or inf); all must be finite.")
    return arr.astype(np.float64) if arr.dtype.kind != "f" else arr


def check_outcome(y) -> np.ndarray:
    """Outcome vector y (n,) or (n, 1): finite, non-empty."""
    y = as_numpy_float(y, "y (outcome)", ndim=(1, 2))
    if y.ndim == 2:
        if y.shape[1] != 1:
            raise ValueError(f"y (outcome) must be a vector of length n; got shape {y.shape}.")
        y = y[:, 0]
    if y.shape[0] == 0:
        raise ValueError("y (outcome) is empty.")
    return y


def check_covariates(X, n: int, what: str = "X (covariates)") -> np.ndarray:
    """Covariates (n, c) (a vector is read as one column); sample size must match n."""
    X = as_numpy_float(X, what, ndim=(1, 2))
    if X.ndim == 1:
        X = X[:, None]
    if X.shape[0] != n:
        raise ValueError(
            f"{what} has {X.shape[0]} rows but y has {n} samples; they must be equal."
        )
    return X


def check_qs(QS, n: int):
    """Economic eigendecomposition ``((Q0, Q1), S0)`` (or ``((Q0,), S0)``) of an n×n K.

    Returns (Q0 (n, r), S0 (r,)) as numpy float arrays.
    """
    if not (isinstance(QS, (tuple, list)) and len(QS) == 2 and isinstance(QS[0], (tuple, list))
            and len(QS[0]) in (1, 2)):
        raise ValueError(
            "QS must be ((Q0, Q1), S0) or ((Q0,), S0) as returned by economic_qs; "
            f"got {type(QS).__name__} of a different structure."
        )
    Q0 = as_numpy_float(QS[0][0], "QS Q0", ndim=2)
    S0 = as_numpy_float(QS[1], "QS S0", ndim=1)
    if Q0.shape[0] != n:
        raise ValueError(
            f"QS Q0 has {Q0.shape[0]} rows but y has {n} samples; they must be equal."
        )
    if Q0.shape[1] != S0.shape[0]:
        raise ValueError(
            f"QS Q0 has {Q0.shape[1]} columns but S0 has {S0.shape[0]} eigenvalues; "
            "they must be equal."
        )
    if np.any(S0 < 0):
        raise ValueError("QS S0 has negative eigenvalues; K must be positive semi-definite.")
    if len(QS[0]) == 2 and QS[0][1] is not None:
        Q1 = np.asarray(QS[0][1])
        if Q1.ndim != 2 or Q1.shape[0] != n or Q1.shape[1] + Q0.shape[1] != n:
            raise ValueError(
                f"QS Q1 must be ({n}, {n - Q0.shape[1]}) so that [Q0 Q1] is square; "
                f"got shape {Q1.shape}."
            )
    return Q0, S0


# scipy's fmin_l_bfgs_b multiplies ``factr`` by float64's machine epsilon whatever the data's
# dtype; glimix-core's factr = 1e5 therefore means ftol = 2.2e-11 (with float32's epsilon it
# would be 1.2e-2, which stops EP fits after two iterations, reported as converged)
FACTR_EPS = float(np.finfo(np.float64).eps)


def require_float64(dtype, what: str) -> None:
    """Refuse a fit that is not accurate in ``dtype`` (anything but float64), before tracing.

    EP-based fits (GLMMExpFam, ExpFamGP) stall in float32 on flat likelihood surfaces
    (Bernoulli traits, δ near a bound) at parameters far from the float64 optimum, so they
    refuse rather than report a wrong answer as converged.
    """
    if np.dtype(dtype) != np.float64:
        raise ValueError(
            f"{what} needs float64 (its arrays are {np.dtype(dtype).name}): in float32 the "
            "expectation-propagation likelihood is too noisy for L-BFGS-B to reach the "
            "optimum. Turn float64 on before creating any array: "
            "jax.config.update(\"jax_enable_x64\", True).")
