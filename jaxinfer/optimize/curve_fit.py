"""``curve_fit``: scipy's curve fitting on the Levenberg–Marquardt engine, with scipy's pcov."""

from __future__ import annotations

from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.optimize.least_squares import least_squares

__all__ = ["curve_fit"]


#: Options curve_fit passes to least_squares unless overridden: geodesic acceleration and
#: a deeper damping search make the hard NIST problems (MGH17, Bennett5, Eckerle4 from
#: Start 1) converge; see docs/optimize.md.
CURVE_FIT_DEFAULTS = {"use_accel": True, "max_damping_retries": 40, "max_iter": 1000}


def _n_params_from_signature(f):
    import inspect

    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError) as err:
        raise ValueError("cannot infer the number of parameters of f; pass p0") from err
    params = list(sig.parameters.values())
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        raise ValueError("f takes *args; pass p0 to say how many parameters it has")
    if len(params) < 2:
        raise ValueError("f must be called as f(xdata, p1, p2, ...) with at least one parameter")
    return len(params) - 1


def _is_concrete(a):
    return not isinstance(a, jax.core.Tracer)


def curve_fit(f: Callable, xdata, ydata, p0=None, sigma=None, absolute_sigma: bool = False,
              bounds=(-np.inf, np.inf), jac: Optional[Callable] = None,
              full_output: bool = False, **lm_options):
    """Fit ``ydata ≈ f(xdata, *params)`` by least squares, with scipy's conventions.

    Parameters
    ----------
    f : callable ``f(xdata, p1, ..., pn) -> (m,)``
        Pure JAX model.
    xdata : array or pytree
        Predictors, passed to ``f`` untouched.
    ydata : (m,) array
        Observations; must be finite.
    p0 : (n,) array or None
        Starting point; None gives ones, with n read from ``f``'s signature.
    sigma : (m,) or (m, m) array or None
        1-D: standard deviations, the residuals are ``(f - y) / sigma``. 2-D: the covariance
        of the errors, the residuals are ``L⁻¹ (f - y)`` with ``sigma = L Lᵀ``.
    absolute_sigma : bool
        False (default): ``pcov`` is scaled by the reduced chi-square ``Σ r² / (m - n)``, as
        scipy does. True: sigma is taken as absolute and ``pcov = (JᵀJ)⁻¹``.
    bounds : (lower, upper)
        Scalars or (n,) arrays; enforced by projection (see :func:`least_squares`).
    jac : callable ``jac(xdata, p1, ..., pn) -> (m, n)`` or None
        Jacobian of ``f``; None uses autodiff.
    full_output : bool
        Also return the :class:`OptimizeResult` of the fit.
    **lm_options
        Passed to :func:`least_squares` (damping, damp_mode, use_accel, tolerances, ...).

    Returns
    -------
    popt : (n,) array
    pcov : (n, n) array
        Covariance estimate of ``popt``: ``(JᵀJ)⁻¹`` (times the reduced chi-square unless
        ``absolute_sigma``), computed from an SVD of the weighted Jacobian at ``popt``. It is
        filled with ``inf`` when J is rank-deficient (a singular value below
        ``ε · max(m, n) · s_max``), or, without ``absolute_sigma``, when m <= n.
    result : OptimizeResult, only with ``full_output=True``
        Unlike scipy, a failed fit does not raise (the function jits and vmaps): check
        ``result.success``.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    if "mask" in lm_options:
        raise ValueError("curve_fit does not take mask: fix parameters inside f instead")
    if "weights" in lm_options:
        raise ValueError("curve_fit takes sigma, not weights")
    if _is_concrete(ydata) and not np.all(np.isfinite(np.asarray(ydata, dtype=float))):
        raise ValueError("ydata contains NaN or inf")
    ydata = jnp.asarray(ydata)
    if not jnp.issubdtype(ydata.dtype, jnp.inexact):
        ydata = ydata.astype(jnp.result_type(float))
    if ydata.ndim != 1:
        ydata = jnp.ravel(ydata)
    m = ydata.shape[0]
    if m == 0:
        raise ValueError("ydata is empty")
    if p0 is None:
        p0 = jnp.ones(_n_params_from_signature(f), ydata.dtype)
    p0 = jnp.atleast_1d(jnp.asarray(p0))
    if p0.ndim != 1:
        raise ValueError(f"p0 must be 1-D, got shape {p0.shape}")
    if not jnp.issubdtype(p0.dtype, jnp.inexact):
        p0 = p0.astype(ydata.dtype)
    dtype = jnp.result_type(p0.dtype, ydata.dtype)
    p0 = p0.astype(dtype)
    ydata = ydata.astype(dtype)
    n = p0.shape[0]
    if p0 is not None and not isinstance(f, jax.custom_jvp):
        try:
            expected = _n_params_from_signature(f)
        except ValueError:
            expected = None
        if expected is not None and expected != n:
            raise ValueError(f"p0 has {n} entries but f takes {expected} parameters")
    for leaf in jax.tree_util.tree_leaves(xdata):
        arr = leaf if isinstance(leaf, jax.core.Tracer) else np.asarray(leaf)
        if _is_concrete(arr) and np.issubdtype(arr.dtype, np.number) and not np.all(np.isfinite(arr)):
            raise ValueError("xdata contains NaN or inf")
    model_shape = jax.eval_shape(lambda p: f(xdata, *p), p0).shape
    if int(np.prod(model_shape)) != m:
        raise ValueError(f"f(xdata, *p0) has shape {model_shape}, but ydata has {m} values")

    whiten = None
    if sigma is not None:
        sigma_concrete = np.asarray(sigma, dtype=float) if _is_concrete(sigma) else None
        sigma = jnp.asarray(sigma, dtype)
        if sigma.shape == (m,):
            if sigma_concrete is not None and not np.all(sigma_concrete > 0):
                raise ValueError("sigma must be positive")
            whiten = lambda v: v / sigma  # noqa: E731
            whiten_jac = lambda j: j / sigma[:, None]  # noqa: E731
        elif sigma.shape == (m, m):
            if sigma_concrete is not None:
                try:
                    np.linalg.cholesky(sigma_concrete)
                except np.linalg.LinAlgError as err:
                    raise ValueError("sigma (2-D) must be a positive-definite covariance "
                                     "matrix") from err
            chol = jnp.linalg.cholesky(sigma)
            solve = lambda v: jax.scipy.linalg.solve_triangular(chol, v, lower=True)  # noqa: E731
            whiten = solve
            whiten_jac = solve
        else:
            raise ValueError(f"sigma must have shape ({m},) or ({m}, {m}), got {sigma.shape}")

    def residuals(p):
        r = jnp.ravel(f(xdata, *p)) - ydata
        return r if whiten is None else whiten(r)

    user_jac = None
    if jac is not None:
        if not callable(jac):
            raise TypeError("jac must be callable or None")

        def user_jac(p):
            j = jnp.reshape(jnp.asarray(jac(xdata, *p), dtype), (m, n))
            return j if whiten is None else whiten_jac(j)

    lower, upper = bounds
    lower = np.broadcast_to(lower, (n,)) if _is_concrete(lower) else jnp.broadcast_to(lower, (n,))
    upper = np.broadcast_to(upper, (n,)) if _is_concrete(upper) else jnp.broadcast_to(upper, (n,))
    concrete = _is_concrete(lower) and _is_concrete(upper)
    has_bounds = not (concrete and np.all(np.isneginf(np.asarray(lower)))
                      and np.all(np.isposinf(np.asarray(upper))))
    if has_bounds and concrete and np.any(np.asarray(lower) >= np.asarray(upper)):
        raise ValueError("each lower bound must be strictly less than its upper bound")
    options = dict(CURVE_FIT_DEFAULTS)
    options.update(lm_options)
    result = least_squares(residuals, p0, jac=user_jac,
                           bounds=(lower, upper) if has_bounds else None, **options)
    popt = result.x
    pcov = _covariance(result.jac, 2 * result.fun, m, n, absolute_sigma)
    if full_output:
        return popt, pcov, result
    return popt, pcov


def _covariance(jac, sse, m, n, absolute_sigma):
    """(JᵀJ)⁻¹ from the SVD of J, inf when rank-deficient; scaled by sse/(m-n) if asked."""
    _, s, vt = jnp.linalg.svd(jac, full_matrices=False)
    eps = jnp.finfo(jac.dtype).eps
    threshold = eps * max(m, n) * s[0]
    full_rank = jnp.all(s > threshold)
    inv_s2 = jnp.where(s > threshold, 1.0 / jnp.where(s > threshold, s, 1.0) ** 2, 0.0)
    pcov = (vt.T * inv_s2) @ vt
    if not absolute_sigma:
        if m > n:
            pcov = pcov * (sse / (m - n))
        else:
            full_rank = jnp.asarray(False)
    return jnp.where(full_rank & jnp.all(jnp.isfinite(pcov)), pcov, jnp.inf)
