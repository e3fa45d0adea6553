"""``curve_fit``: scipy's curve fitting on the Levenberg–Marquardt engine, with scipy's pcov.

Compiled once: the fit is compiled per (model function, options, array shapes) and reused
(see :mod:`jaxinfer.optimize._compile`), so a loop of fits of one ``def model`` to new data
costs one compilation. A fresh ``lambda`` per call recompiles every time.

Differentiable: ``popt`` and ``pcov`` carry derivatives with respect to ``xdata``,
``ydata``, ``sigma`` and the bounds by the implicit function theorem
(:mod:`jaxinfer.optimize.implicit`): ``jax.grad`` / ``jax.jvp`` of a function of ``popt``
solve one n x n linear system with the Hessian of the cost at ``popt``; the LM loop itself is
never differentiated. The derivative with respect to ``p0`` is zero.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinfer.optimize._compile import callback_key, is_traced, run_compiled
from jaxinfer.optimize.implicit import implicit_minimum
from jaxinfer.optimize.least_squares import least_squares

__all__ = ["curve_fit"]


#: Options curve_fit passes to least_squares unless overridden: geodesic acceleration and
#: a deeper damping search make the hard NIST problems (MGH17, Bennett5, Eckerle4 from
#: Start 1) converge; see docs/optimize.md.
CURVE_FIT_DEFAULTS = {"use_accel": True, "max_damping_retries": 40, "max_iter": 1000}

_REFUSED = {"mask": "curve_fit does not take mask: fix parameters inside f instead",
            "weights": "curve_fit takes sigma, not weights",
            "args": "curve_fit passes xdata to f; put extra data in xdata (any pytree)"}


def _n_params_from_signature(f):
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


_DYNAMIC = object()  # placeholder in the static key for an xdata leaf passed as an array


def _is_array(leaf):
    return isinstance(leaf, (jax.Array, np.ndarray, jax.core.Tracer))


def _as_host_array(a):
    """A concrete array-like as numpy (no copy for numpy input), a tracer unchanged."""
    return a if isinstance(a, (jax.core.Tracer, np.ndarray)) else np.asarray(a)


def _check_finite(name, a):
    if not isinstance(a, jax.core.Tracer):
        host = np.asarray(a)
        if np.issubdtype(host.dtype, np.number) and not np.all(np.isfinite(host)):
            raise ValueError(f"{name} contains NaN or inf")


class _FitStatic(NamedTuple):
    """Everything about a curve_fit call that is not an array: the compile-cache key."""

    f: Callable
    jac: Optional[Callable]
    x_treedef: Any
    x_static: tuple          # xdata leaves that are not arrays (_DYNAMIC where an array goes)
    sigma_kind: str          # 'none' | '1d' | '2d'
    absolute_sigma: bool
    bounded: bool
    options: tuple           # sorted (name, value) pairs for least_squares
    callback: Any            # PROGRESS_SINK / the traced user callback / None
    differentiable: bool     # inside a user's transformation: attach implicit derivatives


def curve_fit(f: Callable, xdata, ydata, p0=None, sigma=None, absolute_sigma: bool = False,
              bounds=(-np.inf, np.inf), jac: Optional[Callable] = None,
              full_output: bool = False, callback: Optional[Callable] = None, **lm_options):
    """Fit ``ydata ≈ f(xdata, *params)`` by least squares, with scipy's conventions.

    Parameters
    ----------
    f : callable ``f(xdata, p1, ..., pn) -> (m,)``
        Pure JAX model. Pass the same function object to repeated fits: the compiled fit is
        cached on it (a new ``lambda`` per call compiles anew).
    xdata : array, list of numbers, or pytree
        Predictors, passed to ``f``; array leaves are traced data (new values reuse the
        compiled fit), other leaves (numbers, strings) are fixed settings of the model.
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
    callback : callable ``callback(Progress)`` or None
        Called on the host after every LM iteration with ``Progress(nit, fun, x)`` (``fun``
        the cost ``0.5 Σ r²``, ``x`` the current parameters). Not part of the compile key:
        changing it does not recompile. Its return value is ignored.
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
    for name, message in _REFUSED.items():
        if name in lm_options:
            raise ValueError(message)
    if jac is not None and not callable(jac):
        raise TypeError("jac must be callable or None")

    ydata = _as_host_array(ydata)
    if ydata.ndim != 1:
        ydata = jnp.ravel(ydata) if isinstance(ydata, jax.core.Tracer) else ydata.ravel()
    m = ydata.shape[0]
    if m == 0:
        raise ValueError("ydata is empty")
    _check_finite("ydata", ydata)

    if p0 is None:
        p0 = np.ones(_n_params_from_signature(f))
    else:
        p0 = _as_host_array(p0)
        if p0.ndim == 0:
            p0 = p0[None]
        if p0.ndim != 1:
            raise ValueError(f"p0 must be 1-D, got shape {p0.shape}")
        if not isinstance(f, jax.custom_jvp):
            try:
                expected = _n_params_from_signature(f)
            except ValueError:
                expected = None
            if expected is not None and expected != p0.shape[0]:
                raise ValueError(f"p0 has {p0.shape[0]} entries but f takes {expected} "
                                 "parameters")
    n = p0.shape[0]

    # xdata: scipy's array_like (a list of numbers is an array), or any pytree
    if isinstance(xdata, (list, tuple)) and not hasattr(xdata, "_fields") and xdata and all(
            isinstance(v, numbers.Number) for v in xdata):
        xdata = np.asarray(xdata, dtype=float)
    x_leaves, x_treedef = jax.tree_util.tree_flatten(xdata)
    x_static, x_arrays = [], []
    for leaf in x_leaves:
        if _is_array(leaf):
            _check_finite("xdata", leaf)
            x_static.append(_DYNAMIC)
            x_arrays.append(leaf)
        else:
            x_static.append(leaf)

    sigma_kind = "none"
    if sigma is not None:
        sigma = _as_host_array(sigma)
        if sigma.shape == (m,):
            sigma_kind = "1d"
            if not isinstance(sigma, jax.core.Tracer) and not np.all(np.asarray(sigma) > 0):
                raise ValueError("sigma must be positive")
        elif sigma.shape == (m, m):
            sigma_kind = "2d"
            if not isinstance(sigma, jax.core.Tracer):
                try:
                    np.linalg.cholesky(np.asarray(sigma, dtype=float))
                except np.linalg.LinAlgError as err:
                    raise ValueError("sigma (2-D) must be a positive-definite covariance "
                                     "matrix") from err
        else:
            raise ValueError(f"sigma must have shape ({m},) or ({m}, {m}), got {sigma.shape}")

    if len(bounds) != 2:
        raise ValueError("bounds must be a pair (lower, upper)")
    lower, upper = (_as_host_array(b) for b in bounds)
    for name, b in (("lower", lower), ("upper", upper)):
        if b.ndim > 1 or (b.ndim == 1 and b.shape[0] not in (1, n)):
            raise ValueError(f"{name} bounds must be a scalar or have {n} entries (one per "
                             f"parameter), got shape {b.shape}")
    concrete = not (isinstance(lower, jax.core.Tracer) or isinstance(upper, jax.core.Tracer))
    if concrete:
        lower = np.broadcast_to(np.asarray(lower, dtype=float), (n,))
        upper = np.broadcast_to(np.asarray(upper, dtype=float), (n,))
        bounded = not (np.all(np.isneginf(lower)) and np.all(np.isposinf(upper)))
        if bounded and np.any(lower >= upper):
            raise ValueError("each lower bound must be strictly less than its upper bound")
    else:
        bounded = True
        lower = jnp.broadcast_to(lower, (n,))
        upper = jnp.broadcast_to(upper, (n,))

    options = dict(CURVE_FIT_DEFAULTS)
    options.update(lm_options)
    arrays = (tuple(x_arrays), ydata, p0, sigma, lower, upper)
    traced = is_traced(arrays)
    static = _FitStatic(f=f, jac=jac, x_treedef=x_treedef, x_static=tuple(x_static),
                        sigma_kind=sigma_kind, absolute_sigma=bool(absolute_sigma),
                        bounded=bool(bounded), options=tuple(sorted(options.items())),
                        callback=None if callback is None else callback_key(callback, traced),
                        differentiable=traced)
    popt, pcov, result = run_compiled(_fit, static, *arrays,
                                      progress=None if traced else callback)
    if full_output:
        return popt, pcov, result
    return popt, pcov


def _fit(static: _FitStatic, x_arrays, ydata, p0, sigma, lower, upper):
    """The traced fit: LM from p0, implicit derivatives of popt, and pcov at popt."""
    it = iter(x_arrays)
    xdata = jax.tree_util.tree_unflatten(
        static.x_treedef, [next(it) if leaf is _DYNAMIC else leaf for leaf in static.x_static])
    p0, ydata = jnp.asarray(p0), jnp.asarray(ydata)   # (canonical dtypes, e.g. no float64
    dtype = jnp.result_type(p0.dtype, ydata.dtype)      # without jax_enable_x64)
    if not jnp.issubdtype(dtype, jnp.inexact):
        dtype = jnp.result_type(float)
    p0 = p0.astype(dtype)
    ydata = ydata.astype(dtype)
    m, n = ydata.shape[0], p0.shape[0]
    model_shape = jax.eval_shape(lambda p: static.f(xdata, *p), p0).shape
    if int(np.prod(model_shape)) != m:
        raise ValueError(f"f(xdata, *p0) has shape {model_shape}, but ydata has {m} values")
    if static.sigma_kind == "none":
        whiten = whiten_jac = None
    else:
        sigma = jnp.asarray(sigma, dtype)
        if static.sigma_kind == "1d":
            whiten = lambda v, s: v / s  # noqa: E731
            whiten_jac = lambda j, s: j / s[:, None]  # noqa: E731
        else:
            sigma = jnp.linalg.cholesky(sigma)  # sigma = L Lᵀ; residuals L⁻¹ (f - y)

            def whiten(v, chol):
                return jax.scipy.linalg.solve_triangular(chol, v, lower=True)

            whiten_jac = whiten
    data = (xdata, ydata, sigma if whiten is not None else None)

    def residuals(p, d):
        xd, y, s = d
        r = jnp.ravel(static.f(xd, *p)).astype(dtype) - y
        return r if whiten is None else whiten(r, s)

    user_jac = None
    if static.jac is not None:
        def user_jac(p, d):
            xd, _, s = d
            j = jnp.reshape(jnp.asarray(static.jac(xd, *p), dtype), (m, n))
            return j if whiten_jac is None else whiten_jac(j, s)

    lower = jnp.asarray(lower, dtype)
    upper = jnp.asarray(upper, dtype)
    options = dict(static.options)
    if static.callback is not None:
        options["callback"] = static.callback
    frozen = lax.stop_gradient(data)
    result = least_squares(residuals, lax.stop_gradient(p0), args=(frozen,), jac=user_jac,
                           bounds=(lax.stop_gradient(lower), lax.stop_gradient(upper))
                           if static.bounded else None, **options)
    popt = result.x
    if static.differentiable or result.jac is None:
        # inside a user's transformation: popt(data) by the implicit function theorem, and
        # pcov from the Jacobian at that popt, so both carry derivatives
        popt = implicit_minimum(popt, lambda p, d: 0.5 * jnp.sum(residuals(p, d) ** 2), data,
                                bounds=(lower, upper) if static.bounded else None)
        jac_at = (user_jac or jax.jacfwd(residuals))(popt, data)
        r_at = residuals(popt, data)
        sse = jnp.dot(r_at, r_at)
    else:
        jac_at, sse = result.jac, 2 * result.fun
    pcov = _covariance(jac_at, sse, m, n, static.absolute_sigma)
    return popt, pcov, result


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
