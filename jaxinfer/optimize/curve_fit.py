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
import warnings
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from scipy.optimize import OptimizeWarning

from jaxinfer.optimize._compile import (callback_key, is_traced, join_settings, run_compiled,
                                        split_settings)
from jaxinfer.optimize._iterate import iterate
from jaxinfer.optimize.implicit import implicit_minimum
from jaxinfer.optimize.least_squares import (_SCIPY_TABLE, _lm_solver, _ScipyDriver,
                                             levenberg_marquardt)
from jaxinfer.optimize.linear_solve import SMALL_N, small_qr, small_square_svd, small_sum
from jaxinfer.optimize.lm import LeastSquaresProblem
from jaxinfer.optimize.losses import check_loss, rho, robust_residuals, scale_for_loss
from jaxinfer.optimize.result import Status, _message

__all__ = ["curve_fit", "OptimizeWarning"]


#: Options curve_fit passes to least_squares unless overridden: every fit first runs plain
#: LM (MINPACK's algorithm: one trial per iteration, no acceleration), and only a fit that
#: fails restarts from p0 with peri's run 2 and geodesic acceleration (``plain_first``);
#: those, with a deeper damping search, make the hard NIST problems (MGH17, Bennett5,
#: Eckerle4 from Start 1) converge, and a batch of easy fits pays for neither; see
#: docs/optimize.md.
CURVE_FIT_DEFAULTS = {"use_accel": True, "plain_first": True, "max_damping_retries": 40,
                      "max_iter": 1000}

_REFUSED = {"mask": "curve_fit does not take mask: fix parameters inside f instead",
            "weights": "curve_fit takes sigma, not weights",
            "args": "curve_fit passes xdata to f; put extra data in xdata (any pytree)"}


_DYNAMIC = object()  # placeholder in the static key for an xdata leaf passed as an array


def _is_array(leaf):
    return isinstance(leaf, (jax.Array, np.ndarray, jax.core.Tracer))


def _as_host_array(a):
    """A concrete array-like as numpy (no copy for numpy input), a tracer unchanged."""
    return a if isinstance(a, (jax.core.Tracer, np.ndarray)) else np.asarray(a)


class _FitStatic(NamedTuple):
    """Everything about a curve_fit call that is not an array: the compile-cache key."""

    f: Callable
    jac: Optional[Callable]
    x_treedef: Any
    x_static: tuple          # xdata leaves that are not arrays (_DYNAMIC where an array goes)
    sigma_kind: str          # 'none' | '1d' | '2d'
    absolute_sigma: bool
    bounded: bool
    method: str              # 'lm' | 'trf' | 'dogbox' (pcov rule, ier convention)
    full_output: bool        # also fjac / ipvt / qtf
    solver: Any              # _Hashed(the LM settings' static half); numbers traced
    loss: tuple              # (loss name, f_scale)
    callback: Any            # PROGRESS_SINK / the traced user callback / None
    differentiable: bool     # inside a user's transformation: attach implicit derivatives
    packed: bool = False     # eager, no full_output: one array (popt, pcov, ier, status) back


def _refuse_nonfinite(name, a):
    host = np.asarray(a)
    if host.dtype.kind in "fc" and np.isfinite(np.add.reduce(host, axis=None)):
        return   # a finite sum has finite terms (an overflowing sum is checked entry by entry)
    if np.issubdtype(host.dtype, np.number) and not np.all(np.isfinite(host)):
        raise ValueError(f"{name} must not contain infs or NaNs (pass check_finite=False with "
                         "nan_policy='omit' to drop NaN points)")


def _is_open(bounds) -> bool:
    """True for bounds given as two Python / numpy scalars -inf and +inf (the default)."""
    lo, hi = bounds
    return (isinstance(lo, (float, int, np.floating)) and isinstance(hi, (float, int, np.floating))
            and lo == -np.inf and hi == np.inf)


_OPEN_BOXES: dict = {}   # n -> read-only (-inf (n,), +inf (n,))


def _open_box(n):
    box = _OPEN_BOXES.get(n)
    if box is None:
        box = tuple(np.full(n, v) for v in (-np.inf, np.inf))
        for b in box:
            b.flags.writeable = False
        _OPEN_BOXES[n] = box
    return box


def _initial_p0(lower, upper):
    """scipy's default start: ones, moved into the box (midpoint, or 1 inside a one-sided
    bound)."""
    p0 = np.ones_like(lower)
    lo, hi = np.isfinite(lower), np.isfinite(upper)
    p0[lo & hi] = 0.5 * (lower[lo & hi] + upper[lo & hi])
    p0[lo & ~hi] = lower[lo & ~hi] + 1
    p0[~lo & hi] = upper[~lo & hi] - 1
    return p0


def _omit_nan(xdata, ydata, sigma):
    """scipy's ``nan_policy='omit'``: drop points where ydata or xdata (any entry along the
    leading axes, data along the last) is NaN, with their rows / columns of sigma."""
    has_nan = np.isnan(ydata)
    if isinstance(xdata, np.ndarray) and xdata.ndim >= 1:
        x_nan = np.isnan(xdata)
        has_nan = has_nan | x_nan.any(axis=tuple(range(x_nan.ndim - 1)))
        xdata = xdata[..., ~has_nan]
    ydata = ydata[~has_nan]
    if sigma is not None:
        sigma = np.asarray(sigma)
        if sigma.ndim == 1:
            sigma = sigma[~has_nan]
        elif sigma.ndim == 2:
            sigma = sigma[~has_nan][:, ~has_nan]
    return xdata, ydata, sigma


_SIGNATURES: dict = {}   # model function -> _n_required's answer (a loop asks it each call)


def _n_required(f):
    """(required, total) positional parameters of f after xdata, or None if unknown."""
    try:
        return _SIGNATURES[f]
    except (KeyError, TypeError):
        pass
    counts = _count_parameters(f)
    try:
        if len(_SIGNATURES) >= 256:
            _SIGNATURES.clear()
        _SIGNATURES[f] = counts
    except TypeError:   # an unhashable callable: asked anew each time
        pass
    return counts


def _count_parameters(f):
    try:
        params = list(inspect.signature(f).parameters.values())[1:]
    except (TypeError, ValueError, IndexError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in params):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return sum(p.default is p.empty for p in positional), len(positional)


#: scipy keywords of leastsq / least_squares that curve_fit accepts and that have no effect
#: here (finite-difference steps, trust-region internals, printing)
_NO_EFFECT = ("epsfcn", "factor", "diag", "col_deriv", "diff_step", "x_scale", "tr_solver",
              "tr_options", "jac_sparsity", "verbose", "workers")


def curve_fit(f: Callable, xdata, ydata, p0=None, sigma=None, absolute_sigma: bool = False,
              check_finite: Optional[bool] = None, bounds=(-np.inf, np.inf),
              method: Optional[str] = None, jac: Any = None, *, full_output: bool = False,
              nan_policy: Optional[str] = None, callback: Optional[Callable] = None,
              **kwargs):
    """Fit ``ydata ≈ f(xdata, *params)`` by least squares: scipy's ``curve_fit``, on LM.

    Parameters (scipy's, with these notes)
    ----------
    f : callable ``f(xdata, p1, ..., pn) -> (m,)``
        Pure JAX model (``jnp``). Pass the same function object to repeated fits: the
        compiled fit is cached on it (a new ``lambda`` per call compiles anew).
    xdata : array, list, None or pytree
        Predictors, passed to ``f``; lists / tuples of numbers become a float array (as in
        scipy), other pytrees are passed as they are: array leaves are traced data (new values
        reuse the compiled fit), other leaves fixed settings of the model.
    ydata : (m,) array (or a scalar broadcast to f's output)
    p0 : (n,) array or None
        Starting point; None gives ones (n read from ``f``'s signature), moved into the bounds
        as scipy does. A p0 outside the bounds is refused.
    sigma : scalar, (m,) or (m, m) array or None
        Scalar / 1-D: standard deviations, residuals ``(f - y) / sigma``. 2-D: the covariance
        of the errors, residuals ``L⁻¹ (f - y)`` with ``sigma = L Lᵀ``.
    absolute_sigma : bool
        False: ``pcov`` is scaled by ``Σ r² / (m - n)``; True: ``pcov = (JᵀJ)⁻¹``.
    check_finite : bool or None
        Refuse NaN / inf in xdata and ydata (default: True unless ``nan_policy`` is given).
    bounds : (lower, upper) or a ``Bounds`` object
        Scalars or (n,) arrays; enforced by projection (see :func:`levenberg_marquardt`).
    method : None | 'lm' | 'trf' | 'dogbox'
        All three run jaxinfer's LM; None is 'lm' without bounds and 'trf' with them (scipy's
        rule), and 'lm' refuses bounds as scipy does. With 'trf' / 'dogbox', ``pcov`` is the
        pseudo-inverse of JᵀJ (scipy's rule); with 'lm' it is inf when J is rank-deficient.
    jac : callable ``jac(xdata, p1, ..., pn) -> (m, n)``, '2-point' | '3-point' | 'cs' | None
        A callable is used (whitened with sigma); the strings and None mean autodiff.
    full_output : bool
        Return ``(popt, pcov, infodict, mesg, ier)`` as scipy: ``infodict`` holds ``nfev``,
        ``fvec`` (whitened residuals at popt), for 'lm' also ``fjac`` (R of the QR of the
        whitened Jacobian, (n, n), unpivoted), ``ipvt`` (1..n) and ``qtf`` (Qᵀ fvec), and,
        beyond scipy, ``result``: the :class:`OptimizeResult` of the LM run. ``ier`` is
        MINPACK's code for 'lm' (1-4 success, 5 evaluation budget, 0 other failures) and
        least_squares' status for 'trf' / 'dogbox'.
    nan_policy : None | 'raise' | 'omit'
        scipy's: 'raise' refuses NaN, 'omit' drops the points (outside a trace only).
    callback : callable ``callback(Progress)`` or None
        jaxinfer's progress callback (not scipy's): called on the host after every LM trial
        step with ``Progress(nit, fun, x)``. Not part of the compile key.
    **kwargs
        ``maxfev`` / ``max_nfev`` (a budget of residual evaluations), ``ftol`` / ``xtol`` /
        ``gtol`` (LM's relative cost-decrease, Gauss–Newton-step and gradient-cosine tests;
        without them curve_fit uses LM's tighter defaults), ``loss`` / ``f_scale`` (robust
        losses, 'trf' / 'dogbox'), peri's LM options (damping, damp_mode, use_accel, ...;
        by default ``plain_first=True``: plain LM first, a failed fit restarts with run 2
        and geodesic acceleration, see :data:`CURVE_FIT_DEFAULTS`). ``epsfcn``, ``factor``, ``diag``, ``diff_step``, ``x_scale``, ``tr_solver``, ... are
        accepted and have no effect (autodiff Jacobians, LM's own scaling).

    Returns
    -------
    popt (n,), pcov (n, n), and with ``full_output`` also ``infodict``, ``mesg``, ``ier``.
        ``pcov`` is filled with inf (and an ``OptimizeWarning`` is issued) when it cannot be
        estimated. A failed fit raises ``RuntimeError("Optimal parameters not found: ...")``.

    Inside ``jit`` / ``vmap`` / ``grad`` nothing raises or warns after tracing (the values are
    not known there): check ``ier`` (or ``infodict["result"].success``) from
    ``full_output=True``; ``mesg`` is then None. ``popt`` and ``pcov`` carry implicit
    derivatives with respect to xdata, ydata, sigma and the bounds.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    if "args" in kwargs:
        raise ValueError("'args' is not a supported keyword argument.")
    for name, message in _REFUSED.items():
        if name in kwargs:
            raise ValueError(message)
    if jac is not None and not callable(jac) and jac not in ("2-point", "3-point", "cs"):
        raise ValueError("`jac` must be '2-point', '3-point', 'cs' or callable.")
    user_jac = jac if callable(jac) else None
    if nan_policy == "propagate":
        raise ValueError("`nan_policy='propagate'` is not supported by this function.")
    if nan_policy not in (None, "raise", "omit"):
        raise ValueError("nan_policy must be one of {None, 'raise', 'omit'}")
    if check_finite is None:
        check_finite = nan_policy is None

    # p0 and the bounds
    bounded = None
    if p0 is None:
        counts = _n_required(f)
        if counts is None or counts[1] < 1:
            raise ValueError("Unable to determine number of fit parameters.")
        n = counts[1]
    else:
        p0 = _as_host_array(p0)
        if p0.ndim == 0:
            p0 = p0[None]
        if p0.ndim != 1:
            raise ValueError(f"p0 must be 1-D, got shape {p0.shape}")
        n = p0.shape[0]
        counts = None if isinstance(f, jax.custom_jvp) else _n_required(f)
        if counts is not None and not counts[0] <= n <= counts[1]:
            raise ValueError(f"p0 has {n} entries but f takes {counts[1]} parameters")
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        bounds = (bounds.lb, bounds.ub)
    if len(bounds) != 2:
        raise ValueError("bounds must be a pair (lower, upper)")
    if _is_open(bounds):   # the default: no per-call broadcasting and checks
        lower, upper = _open_box(n)
        concrete, bounded = True, False
    else:
        lower, upper = (_as_host_array(b) for b in bounds)
        for name, b in (("lower", lower), ("upper", upper)):
            if b.ndim > 1 or (b.ndim == 1 and b.shape[0] not in (1, n)):
                raise ValueError(f"{name} bounds must be a scalar or have {n} entries (one "
                                 f"per parameter), got shape {b.shape}")
        concrete = not (isinstance(lower, jax.core.Tracer) or isinstance(upper, jax.core.Tracer))
    if concrete and bounded is None:
        lower = np.array(np.broadcast_to(np.asarray(lower, dtype=float), (n,)))
        upper = np.array(np.broadcast_to(np.asarray(upper, dtype=float), (n,)))
        bounded = not (np.all(np.isneginf(lower)) and np.all(np.isposinf(upper)))
        if bounded and np.any(lower >= upper):
            raise ValueError("Each lower bound must be strictly less than each upper bound.")
    elif not concrete:
        bounded = True
        lower = jnp.broadcast_to(lower, (n,))
        upper = jnp.broadcast_to(upper, (n,))
    if p0 is None:
        p0 = _initial_p0(lower, upper) if concrete else np.ones(n)
    elif concrete and bounded and not isinstance(p0, jax.core.Tracer) and not np.all(
            (np.asarray(p0) >= lower) & (np.asarray(p0) <= upper)):
        raise ValueError("Initial guess is outside of provided bounds")
    if method is None:
        method = "trf" if bounded else "lm"
    if method not in ("lm", "trf", "dogbox"):
        raise ValueError("`method` must be 'trf', 'dogbox' or 'lm'.")
    if method == "lm" and bounded:
        raise ValueError("Method 'lm' only works for unconstrained problems. Use 'trf' or "
                         "'dogbox' instead.")

    # the data
    ydata = _as_host_array(ydata)
    if not isinstance(ydata, jax.core.Tracer):
        if check_finite:
            _refuse_nonfinite("ydata", ydata)
        if not np.issubdtype(ydata.dtype, np.floating):
            ydata = ydata.astype(float)
    if isinstance(xdata, (list, tuple)) and not hasattr(xdata, "_fields"):
        try:
            xdata = np.asarray(xdata, dtype=float)
        except (ValueError, TypeError):
            pass   # a pytree of differently shaped arrays: passed to f as it is
    if isinstance(xdata, np.ndarray) and check_finite:
        _refuse_nonfinite("xdata", xdata)
    if ydata.size == 0:
        raise ValueError("`ydata` must not be empty!")
    if nan_policy is not None and not check_finite:
        if is_traced(xdata, ydata):
            raise ValueError("nan_policy needs concrete data (outside jit / vmap): inside a "
                             "trace give NaN points sigma=inf instead")
        has_nan = bool(np.isnan(ydata).any()) or (isinstance(xdata, np.ndarray) and np.issubdtype(
            xdata.dtype, np.floating) and bool(np.isnan(xdata).any()))
        if has_nan and nan_policy == "raise":
            raise ValueError("The input contains nan values")
        if has_nan:
            xdata, ydata, sigma = _omit_nan(xdata, ydata, sigma)
            if ydata.size == 0:
                raise ValueError("`ydata` must not be empty!")
    if ydata.ndim != 1:
        ydata = jnp.ravel(ydata) if isinstance(ydata, jax.core.Tracer) else ydata.ravel()
    x_leaves, x_treedef = jax.tree_util.tree_flatten(xdata)
    x_static, x_arrays = [], []
    for leaf in x_leaves:
        if _is_array(leaf):
            x_static.append(_DYNAMIC)
            x_arrays.append(leaf)
        else:
            x_static.append(leaf)
    m = ydata.shape[0]
    if m == 1:   # a scalar ydata is broadcast to f's output, as in scipy
        m = int(np.prod(jax.eval_shape(lambda x, p: f(x, *p), xdata, jnp.asarray(p0)).shape,
                        dtype=int))
        ydata = jnp.broadcast_to(ydata, (m,)) if isinstance(ydata, jax.core.Tracer) else \
            np.broadcast_to(ydata, (m,))
    if method == "lm" and n > m:
        raise TypeError(f"The number of func parameters={n} must not exceed the number of "
                        f"data points={m}")

    sigma_kind = "none"
    if sigma is not None:
        sigma = _as_host_array(sigma)
        if sigma.size == 1 and sigma.ndim <= 1:
            sigma_kind = "1d"
            sigma = jnp.broadcast_to(jnp.reshape(sigma, ()), (m,)) if isinstance(
                sigma, jax.core.Tracer) else np.full(m, float(np.ravel(sigma)[0]))
        elif sigma.shape == (m,):
            sigma_kind = "1d"
        elif sigma.shape == (m, m):
            sigma_kind = "2d"
            if not isinstance(sigma, jax.core.Tracer):
                try:
                    np.linalg.cholesky(np.asarray(sigma, dtype=float))
                except np.linalg.LinAlgError as err:
                    raise ValueError("`sigma` must be positive definite.") from err
        else:
            raise ValueError("`sigma` has incorrect shape.")
        if sigma_kind == "1d" and not isinstance(sigma, jax.core.Tracer) and not np.all(
                np.asarray(sigma) > 0):
            raise ValueError("sigma must be positive")

    options = _lm_options(kwargs, method)
    loss = options.pop("loss", ("linear", 1.0))
    solver_static, settings = _settings(options)
    arrays = (tuple(x_arrays), ydata, p0, sigma, lower, upper)
    traced = is_traced(arrays)
    static = _FitStatic(f=f, jac=user_jac, x_treedef=x_treedef, x_static=tuple(x_static),
                        sigma_kind=sigma_kind, absolute_sigma=bool(absolute_sigma),
                        bounded=bool(bounded), method=method, full_output=bool(full_output),
                        solver=solver_static, loss=loss,
                        callback=None if callback is None else callback_key(callback, traced),
                        differentiable=traced, packed=not (traced or full_output))
    out = run_compiled(_fit, static, settings, *arrays, progress=None if traced else callback)
    if static.packed:
        return _unpack(np.asarray(out), n, method, static)
    popt, pcov, info = out
    ier = info.pop("ier")
    if traced:
        mesg = None
    else:
        result = info["result"]
        ier = int(ier)
        mesg = str(result.message)
        popt, pcov = np.asarray(popt), np.asarray(pcov)
        _check_outcome(ier, mesg, method, pcov)
        info = {k: (v if k == "result" else np.asarray(v)) for k, v in info.items()}
        info["nfev"] = int(info["nfev"])
    if full_output:
        return popt, pcov, info, mesg, ier
    return popt, pcov


def _check_outcome(ier, mesg, method, pcov, stacklevel=3):
    """Raise scipy's RuntimeError for a failed fit; warn when pcov could not be estimated
    (``stacklevel``: the user's frame, seen from here)."""
    ok = ier in (1, 2, 3, 4) if method == "lm" else ier > 0
    if not ok:
        raise RuntimeError("Optimal parameters not found: " + mesg)
    if not np.all(np.isfinite(pcov)):
        warnings.warn("Covariance of the parameters could not be estimated",
                      category=OptimizeWarning, stacklevel=stacklevel)


#: the result's reporting convention per compile key (read at trace time; a host-side
#: packed result carries only the status code)
_CONVENTIONS: dict = {}


def _unpack(packed, n, method, static):
    """``(popt (n,), pcov (n, n))`` from the packed host array ``[popt, pcov, ier, status]``
    of an eager call (one device-to-host transfer instead of one per output)."""
    popt, pcov = packed[:n], packed[n:n + n * n].reshape(n, n)
    ier, code = int(packed[-2]), int(packed[-1])
    _check_outcome(ier, _message(_CONVENTIONS.get(static), code), method, pcov, stacklevel=4)
    return popt, pcov


#: levenberg_marquardt's settings a curve_fit caller may pass through (with their defaults)
_LM_DEFAULTS = {name: p.default for name, p in
                inspect.signature(levenberg_marquardt).parameters.items()
                if name not in ("residuals", "x0", "args", "jac", "bounds", "weights", "mask",
                                "callback", "residual_chunk")}
_LM_KEYWORDS = frozenset(_LM_DEFAULTS)


_SETTINGS: dict = {}   # options -> (static, dynamic) halves of the LM settings


class _Hashed:
    """A settings Module in the compile key with its hash computed once: hashing an equinox
    Module walks all its fields, and the key is hashed on every call of a fitting loop."""

    __slots__ = ("value", "_hash")

    def __init__(self, value):
        self.value = value
        self._hash = hash(value)

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return self is other or (isinstance(other, _Hashed) and self._hash == other._hash
                                 and self.value == other.value)


def _settings(options):
    """``split_settings(_solver(options))`` as ``(_Hashed((static half, treedef of the
    numeric half)), numeric leaves)``, memoised (a loop of fits with the same options pays for
    building the settings once); the numeric leaves are on the device already."""
    try:
        key = (tuple(sorted(options.items())), bool(jax.config.jax_enable_x64))
        parts = _SETTINGS.get(key)
    except TypeError:   # an unhashable option value: build it each time
        key, parts = None, None
    if parts is None:
        static, dynamic = split_settings(_solver(options))
        leaves, treedef = jax.tree_util.tree_flatten(dynamic)
        # concrete arrays even when the first call is inside the user's jit / vmap / grad:
        # a tracer memoised here would make every later eager call look traced and run op
        # by op (seconds per fit, a new XLA program per primitive). The numeric half goes
        # to the program as a tuple of its leaves: jit flattens a tuple of arrays in C++,
        # an equinox Module through Python on every call.
        with jax.ensure_compile_time_eval():
            parts = _Hashed((static, treedef)), tuple(jnp.asarray(v) for v in leaves)
        if key is not None:
            if len(_SETTINGS) >= 256:
                _SETTINGS.clear()
            _SETTINGS[key] = parts
    return parts


def _solver(options):
    """The LM settings Module (concrete, outside the trace) for levenberg_marquardt-style
    ``options``; ``max_nfev`` wraps it in least_squares' evaluation budget."""
    options = {**_LM_DEFAULTS, **options}
    budget = options.pop("max_nfev")
    solver = _lm_solver(**options)
    if budget is not None:
        if int(budget) != budget or budget <= 0:
            raise ValueError(f"maxfev / max_nfev must be a positive integer, got {budget!r}")
        solver = _ScipyDriver(solver, int(budget))
    return solver


def _lm_options(kwargs, method):
    """curve_fit's keywords -> levenberg_marquardt's (CURVE_FIT_DEFAULTS unless overridden)."""
    options = dict(CURVE_FIT_DEFAULTS)
    kwargs = dict(kwargs)
    budget = kwargs.pop("max_nfev", None)
    maxfev = kwargs.pop("maxfev", None)
    budget = maxfev if budget is None else budget
    if budget is not None:
        options["max_nfev"] = int(budget)
    for name in _NO_EFFECT:
        kwargs.pop(name, None)
    loss = kwargs.pop("loss", "linear")
    f_scale = kwargs.pop("f_scale", 1.0)
    check_loss(loss)
    if method == "lm" and loss != "linear":
        raise ValueError("method='lm' supports only 'linear' loss function.")
    if loss != "linear":
        options["loss"] = (loss, float(f_scale))
    for scipy_name, ours in (("ftol", "fractol"), ("xtol", "xtol"), ("gtol", "gtol")):
        if scipy_name in kwargs:
            tol = kwargs.pop(scipy_name)
            options[ours] = None if tol is None or tol <= 0 else float(tol)
    for name in kwargs:
        if name not in _LM_KEYWORDS:
            raise TypeError(f"curve_fit() got an unexpected keyword argument {name!r}")
    options.update(kwargs)
    return options


#: jaxinfer Status -> MINPACK's info (leastsq's ier): 1 cost reduction (ftol), 2 step
#: (xtol), 4 gradient (gtol), 5 evaluation budget, 0 failures MINPACK has no code for
_TO_MINPACK = {Status.FTOL: 1, Status.FRACTOL: 1, Status.ERRTOL: 1, Status.EXPTOL: 1,
               Status.COSTOL: 1, Status.XTOL: 2, Status.GTOL: 4, Status.ZERO_RESIDUAL: 4,
               Status.MAX_FEV: 5, Status.MAX_ITER: 5}
_MINPACK_TABLE = np.zeros(max(int(v) for v in Status) + 1, np.int32)
for _status, _code in _TO_MINPACK.items():
    _MINPACK_TABLE[int(_status)] = _code


def _fit(static: _FitStatic, settings, x_arrays, ydata, p0, sigma, lower, upper):
    """The traced fit: LM from p0, implicit derivatives of popt, pcov and scipy's infodict.
    ``settings``: the leaves of the numeric half of the LM settings (:func:`_settings`), traced."""
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
    loss, f_scale = static.loss

    def plain(p, d):
        xd, y, s = d
        r = jnp.ravel(static.f(xd, *p)).astype(dtype) - y
        return r if whiten is None else whiten(r, s)

    def residuals(p, d):
        return robust_residuals(loss, plain(p, d), f_scale)

    user_jac = None
    if static.jac is not None:
        def user_jac(p, d):
            xd, _, s = d
            j = jnp.reshape(jnp.asarray(static.jac(xd, *p), dtype), (m, n))
            return j if whiten_jac is None else whiten_jac(j, s)

    lm_jac = user_jac
    if user_jac is not None and loss != "linear":
        def lm_jac(p, d):
            f = plain(p, d)
            scale = jax.jvp(lambda v: robust_residuals(loss, v, f_scale), (f,),
                            (jnp.ones_like(f),))[1]
            return scale[:, None] * user_jac(p, d)

    lower = jnp.asarray(lower, dtype)
    upper = jnp.asarray(upper, dtype)
    frozen = lax.stop_gradient(data)
    problem = LeastSquaresProblem(
        residuals, jacobian=lm_jac, lower=lax.stop_gradient(lower) if static.bounded else None,
        upper=lax.stop_gradient(upper) if static.bounded else None)
    solver_static, settings_treedef = static.solver.value
    solver = join_settings(solver_static, jax.tree_util.tree_unflatten(settings_treedef,
                                                                       settings))
    result = iterate(solver, problem,
                     lax.stop_gradient(p0), frozen, callback=static.callback)
    popt = result.x
    if static.differentiable or result.jac is None or loss != "linear":
        # inside a user's transformation: popt(data) by the implicit function theorem, and
        # pcov from the Jacobian at that popt, so both carry derivatives
        if static.differentiable:
            popt = implicit_minimum(popt, lambda p, d: 0.5 * jnp.sum(residuals(p, d) ** 2),
                                    data, bounds=(lower, upper) if static.bounded else None)
        fvec = plain(popt, data)
        jac_at = (user_jac or jax.jacfwd(plain))(popt, data)
        jac_at, _ = scale_for_loss(loss, fvec, jac_at, f_scale)
        sse = jnp.sum(rho(loss, fvec, f_scale)[0])
    else:
        fvec, jac_at, sse = result.extra["residuals"], result.jac, 2 * result.fun
    pcov, (r_factor, qtf) = _covariance(jac_at, fvec, sse, m, n, static.absolute_sigma,
                                        static.method != "lm")
    table = _MINPACK_TABLE if static.method == "lm" else _SCIPY_TABLE
    ier = jnp.asarray(table)[result.status]
    if static.packed:
        _CONVENTIONS[static] = result.convention
        code = result.status if result.reason is None else result.reason
        return jnp.concatenate([popt, jnp.ravel(pcov),
                                jnp.stack([ier, code]).astype(popt.dtype)])
    info = {"nfev": result.nfev, "fvec": fvec, "ier": ier, "result": result}
    if static.method == "lm" and static.full_output:
        info.update(fjac=r_factor, ipvt=jnp.arange(1, n + 1), qtf=qtf)
    return popt, pcov, info


def _covariance(jac, fvec, sse, m, n, absolute_sigma, pseudo_inverse=False):
    """``((JᵀJ)⁻¹ scaled by sse/(m-n) unless absolute_sigma, (R, Qᵀ fvec)))`` from J = QR.

    Singular values of J below ``ε · max(m, n) · s_max`` are dropped (``pseudo_inverse``,
    scipy's 'trf' rule) or make pcov inf ('lm': MINPACK finds J singular); inf too when
    m <= n and the scale cannot be estimated. For n <= SMALL_N (m >= n) every step is
    elementwise under ``vmap`` (a batched LAPACK SVD of 10,000 (50, 3) Jacobians costs as
    much as the fits; unbatched, a LAPACK call on 3 x 3 costs more than the Jacobi sweeps):
    R by modified Gram-Schmidt, the Jacobi SVD of R (:func:`small_square_svd`; its singular
    values decide the rank; no derivative flows through them), and at full rank
    ``pcov = R⁻¹ R⁻ᵀ``, which carries derivatives; a rank-deficient 'trf' pcov (the
    pseudo-inverse) carries none."""
    eps = jnp.finfo(jac.dtype).eps
    if n <= SMALL_N and m >= n:
        r_factor, qtf = small_qr(jac.T, fvec)
        s, v, _ = small_square_svd(lax.stop_gradient(r_factor), lax.stop_gradient(qtf))
        threshold = eps * max(m, n) * s[0]
        full_rank = jnp.all(s > threshold)
        inv_s2 = jnp.where(s > threshold, 1.0 / jnp.where(s > threshold, s, 1.0) ** 2, 0.0)
        pinv = small_sum(v[:, None, :] * v[None, :, :] * inv_s2, axis=-1)
        r_inv = _triangular_inverse(jnp.where(full_rank, r_factor, jnp.eye(n, dtype=jac.dtype)))
        pcov = jnp.where(full_rank, small_sum(r_inv[:, None, :] * r_inv[None, :, :], axis=-1),
                         pinv)
    else:
        q, r_factor = jnp.linalg.qr(jac)
        qtf = q.T @ fvec
        _, s, vt = jnp.linalg.svd(jac, full_matrices=False)
        threshold = eps * max(m, n) * s[0]
        full_rank = jnp.all(s > threshold)
        inv_s2 = jnp.where(s > threshold, 1.0 / jnp.where(s > threshold, s, 1.0) ** 2, 0.0)
        pcov = (vt.T * inv_s2) @ vt
    if pseudo_inverse:
        full_rank = jnp.asarray(True)
    if not absolute_sigma:
        if m > n:
            pcov = pcov * (sse / (m - n))
        else:
            full_rank = jnp.asarray(False)
    return jnp.where(full_rank & jnp.all(jnp.isfinite(pcov)), pcov, jnp.inf), (r_factor, qtf)


def _triangular_inverse(r):
    """R⁻¹ (n, n) of an upper-triangular (n, n) R with non-zero diagonal, by back
    substitution unrolled into elementwise operations (n <= SMALL_N)."""
    n = r.shape[0]
    inv = [[jnp.zeros((), r.dtype)] * n for _ in range(n)]
    for j in range(n):              # column j of R⁻¹: R x = e_j
        for i in reversed(range(j + 1)):
            acc = (1.0 if i == j else 0.0) - sum(
                (r[i, k] * inv[k][j] for k in range(i + 1, j + 1)), jnp.zeros((), r.dtype))
            inv[i][j] = acc / r[i, i]
    return jnp.stack([jnp.stack(row) for row in inv])
