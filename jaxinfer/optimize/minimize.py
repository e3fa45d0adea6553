"""``minimize``: the scipy-shaped front door to the jaxinfer solvers.

>>> res = minimize(fun, x0, method="L-BFGS-B", bounds=[(0, None)] * 3,
...                options={"maxiter": 500, "ftol": 1e-10})

Differences from :func:`scipy.optimize.minimize`, on purpose:

* ``x0`` may be any pytree; ``res.x`` and ``res.jac`` have its structure. A plain list or
  tuple of numbers is turned into a 1-D array (as scipy does).
* Gradients come from autodiff when ``jac`` is None (scipy: finite differences). The
  finite-difference options ``eps`` and ``finite_diff_rel_step`` are accepted and ignored,
  as are ``disp``, ``iprint`` and ``return_all``.
* ``success`` is only ever true when a convergence test passed (see ``res.status``).
* Everything jits and vmaps: the call traces into one ``lax.while_loop``.
* ``callback(intermediate_result)`` (or ``callback(xk)``) is called once per iteration
  on the host (``jax.pure_callback``); raising ``StopIteration`` in it stops the run
  (status 99, as scipy); its return value is ignored.
* As in scipy, bounds, constraints or Hessians given to a method that does not use them
  warn (``RuntimeWarning``) and are ignored; unknown options warn an ``OptimizeWarning``.
* ``'SLSQP'`` is sequential quadratic programming (:mod:`jaxinfer.optimize.sqp`: damped
  BFGS, interior-point QP subproblems, L1 merit line search); ``'auglag'`` is an augmented
  Lagrangian with an inner L-BFGS-B (:mod:`jaxinfer.optimize.constrained`).
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from typing import Any, Callable, NamedTuple, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxinfer.optimize._iterate import PROGRESS_SINK, RUNNING, AbstractSolver, iterate
from jaxinfer.optimize._compile import callback_key, is_traced, run_compiled
from jaxinfer.optimize._pytree import flatten_objective
from jaxinfer.optimize.implicit import implicit_minimum, no_derivative
from jaxinfer.optimize.constraints import (Bounds, LinearConstraint, NonlinearConstraint,
                                           constraint_any, standardize_constraints)
from jaxinfer.optimize.hessian_update import is_update_strategy
from jaxinfer.optimize.least_squares import _dense, _HostJac
from jaxinfer.optimize.result import (OptimizeResult, OptimizeWarning, Status,
                                      convention_code, register_convention, to_host)


# canonical name -> accepted spellings (lower case)
_ALIASES = {
    "bfgs": ("bfgs",),
    "l-bfgs-b": ("l-bfgs-b", "lbfgsb", "l_bfgs_b"),
    "newton-cg": ("newton-cg", "newtoncg", "newton_cg"),
    "momentum": ("momentum", "gd", "bgd", "sgd"),
    "rmsprop": ("rmsprop",),
    "adam": ("adam",),
    "slsqp": ("slsqp",),
    "auglag": ("auglag", "augmented-lagrangian", "augmented_lagrangian"),
}
_CANONICAL = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}
METHODS = tuple(_ALIASES)

# Options that exist in scipy for finite differences or printing: accepted, no effect.
_IGNORED = {"disp", "iprint", "eps", "finite_diff_rel_step", "return_all", "workers"}

_OPTIONS = {
    "bfgs": {"gtol": 1e-5, "norm": float("inf"), "maxiter": None, "xrtol": 0.0,
             "c1": 1e-4, "c2": 0.9, "hess_inv0": None, "maxls": 30},
    # ftol None: scipy's 2.2e-9, raised to eps(dtype) in float32 (quasi_newton.resolved_ftol)
    "l-bfgs-b": {"maxcor": 10, "ftol": None, "gtol": 1e-5,
                 "maxiter": 15000, "maxfun": 15000, "maxls": 20},
    "newton-cg": {"xtol": 1e-5, "gtol": 0.0, "maxiter": None, "c1": 1e-4, "c2": 0.9,
                  "cg_maxiter": None, "maxls": 30},
    "momentum": {"learning_rate": 1e-3, "mass": 0.9, "maxiter": 1000, "gtol": 1e-5,
                 "ftol": 0.0},
    "rmsprop": {"learning_rate": 0.1, "gamma": 0.9, "eps": 1e-8, "maxiter": 1000,
                "gtol": 1e-5, "ftol": 0.0},
    "adam": {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
             "maxiter": 1000, "gtol": 1e-5, "ftol": 0.0},
    "slsqp": {"maxiter": 100, "ctol": None, "gtol": None, "ftol": None, "maxls": 10,
              "qp_maxiter": 100},
    "auglag": {"maxiter": 100, "ctol": None, "gtol": None, "ftol": None, "penalty": 10.0,
              "inner_maxiter": 2000, "maxcor": 10},
}
# the option that scipy's ``tol`` argument sets, per method
_TOL_OPTIONS = {
    "bfgs": ("gtol",),
    "l-bfgs-b": ("ftol", "gtol"),
    "newton-cg": ("xtol",),
    "momentum": ("gtol",),
    "rmsprop": ("gtol",),
    "adam": ("gtol",),
    "slsqp": ("gtol", "ctol"),
    "auglag": ("gtol", "ctol"),
}
_HONOURS_BOUNDS = {"l-bfgs-b", "momentum", "rmsprop", "adam", "slsqp", "auglag"}
_CONSTRAINED = {"slsqp", "auglag"}


def canonical_method(method) -> str:
    """Case-insensitive method name -> canonical name; ValueError listing the valid ones."""
    if not isinstance(method, str):
        raise TypeError(f"method must be a string, got {type(method).__name__}; "
                        f"valid methods: {', '.join(_valid_names())}")
    key = method.strip().lower()
    if key not in _CANONICAL:
        raise ValueError(f"Unknown method {method!r}; valid methods (case-insensitive): "
                         f"{', '.join(_valid_names())}")
    return _CANONICAL[key]


def _valid_names():
    return ["BFGS", "L-BFGS-B", "Newton-CG", "momentum (gd, bgd)", "rmsprop", "adam",
            "SLSQP", "auglag (augmented Lagrangian)"]


def _resolve_options(method: str, options: Optional[dict], tol) -> dict:
    defaults = _OPTIONS[method]
    options = {} if options is None else dict(options)
    if not isinstance(options, dict):
        raise TypeError("options must be a dict or None")
    unknown = [k for k in options if k not in defaults and k not in _IGNORED]
    if unknown:  # scipy warns and ignores them
        warnings.warn(f"Unknown solver options: {', '.join(map(str, unknown))} (method "
                      f"{method!r} accepts {sorted(defaults)} and, with no effect, "
                      f"{sorted(_IGNORED)})", OptimizeWarning, stacklevel=3)
        options = {k: v for k, v in options.items() if k not in unknown}
    resolved = dict(defaults)
    if tol is not None:
        if not (isinstance(tol, numbers.Real) and tol >= 0):
            raise ValueError(f"tol must be a non-negative number, got {tol!r}")
        for name in _TOL_OPTIONS[method]:
            resolved[name] = float(tol)
    for k, v in options.items():
        if k in _IGNORED:
            continue
        if k == "eps" and method not in ("rmsprop", "adam"):
            continue
        resolved[k] = v
    return resolved


def _prepare_x0(x0):
    if isinstance(x0, (list, tuple)) and not hasattr(x0, "_fields") and all(
            isinstance(v, numbers.Number) or (np.ndim(v) == 0 and hasattr(v, "dtype"))
            for v in x0):
        return jnp.asarray(x0)
    if isinstance(x0, numbers.Number) or (isinstance(x0, np.ndarray) and x0.ndim == 0):
        return jnp.atleast_1d(jnp.asarray(x0))  # scipy: np.atleast_1d(x0)
    return x0


def _objective(fun: Callable, x0, args: tuple, jac):
    """Flat ``value_and_grad`` plus the plumbing, honouring scipy's ``jac`` conventions."""
    flat_fun, x0_flat, unravel = flatten_objective(fun, x0, args)
    dtype = x0_flat.dtype

    def as_scalar(f):
        f = jnp.asarray(f)
        if f.size != 1:
            raise ValueError(f"fun must return a scalar, got shape {f.shape}")
        return jnp.reshape(f, ()).astype(dtype)

    def ravel_like_x(g):
        g_flat = ravel_pytree(g)[0]
        if g_flat.shape != x0_flat.shape:
            raise ValueError(f"the gradient has {g_flat.shape[0] if g_flat.ndim else 1} "
                             f"entries, expected {x0_flat.shape[0]} (one per parameter)")
        return g_flat.astype(dtype)

    if jac is None or jac is False:
        def value_and_grad(x):
            return jax.value_and_grad(lambda z: as_scalar(flat_fun(z)))(x)
    elif jac is True:
        def value_and_grad(x):
            f, g = flat_fun(x)
            return as_scalar(f), ravel_like_x(g)
    elif callable(jac):
        def value_and_grad(x):
            tree = unravel(x)
            return as_scalar(fun(tree, *args)), ravel_like_x(jac(tree, *args))
    elif isinstance(jac, str):
        raise ValueError(f"jac={jac!r}: accepted strings are {sorted(FD_STRINGS)} (they "
                         "select autodiff); or pass None, True or a callable")
    else:
        raise TypeError(f"jac must be None, True or a callable, got {type(jac).__name__}")
    return value_and_grad, x0_flat, unravel, args


def _to_flat_bound(value, x0_tree, x0_flat, fill, name):
    """One side of the bounds -> flat (n,) array: None, scalar, array or pytree like x0."""
    n = x0_flat.shape[0]
    dtype = x0_flat.dtype
    if value is None:
        return jnp.full((n,), fill, dtype)
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields") and all(
            v is None or np.ndim(v) == 0 for v in value):
        value = jnp.asarray([fill if v is None else v for v in value], dtype)
    if np.ndim(value) == 0 and not isinstance(value, dict):
        return jnp.full((n,), jnp.asarray(value, dtype))
    is_array = isinstance(value, (np.ndarray, jnp.ndarray))
    if not is_array and (jax.tree_util.tree_structure(value)
                         == jax.tree_util.tree_structure(x0_tree)):
        value = jax.tree_util.tree_map(
            lambda v, ref: jnp.broadcast_to(jnp.asarray(fill if v is None else v, dtype),
                                            jnp.shape(ref)), value, x0_tree,
            is_leaf=lambda v: v is None)
        flat = ravel_pytree(value)[0]
    else:
        flat = jnp.asarray(value, dtype).reshape(-1)
    if flat.shape != (n,):
        raise ValueError("The number of bounds is not compatible with the length of `x0`: "
                         f"bounds {name} has {flat.shape[0]} entries, expected {n} (one per "
                         "parameter of x0) or a scalar")
    return flat


def parse_bounds(bounds, x0_tree, x0_flat):
    """scipy-style bounds -> ``(lb, ub)`` flat arrays (n,), or None for no bounds.

    Accepted: a sequence of ``n`` pairs ``(lo, hi)`` with None for unbounded (scipy);
    :class:`Bounds` / ``scipy.optimize.Bounds`` (``lb``, ``ub`` scalars, arrays or pytrees
    like ``x0``); a pair ``(lb, ub)`` of arrays or pytrees like ``x0``.
    """
    if bounds is None:
        return None
    n = x0_flat.shape[0]
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):
        lb_raw, ub_raw = bounds.lb, bounds.ub
    elif isinstance(bounds, (list, tuple)) and len(bounds) == n and all(
            isinstance(b, (list, tuple, np.ndarray)) and len(b) == 2
            and all(v is None or np.size(v) == 1 for v in b) for b in bounds):
        def scalar(v, fill):  # None -> fill; 1-element arrays count as scalars (scipy)
            if v is None:
                return fill
            return v if np.ndim(v) == 0 else jnp.reshape(jnp.asarray(v), ())
        lb_raw = [scalar(b[0], -np.inf) for b in bounds]
        ub_raw = [scalar(b[1], np.inf) for b in bounds]
        lb = jnp.asarray(np.asarray(lb_raw, dtype=float) if all(
            isinstance(v, numbers.Number) for v in lb_raw) else jnp.stack(
            [jnp.asarray(v) for v in lb_raw]), x0_flat.dtype)
        ub = jnp.asarray(np.asarray(ub_raw, dtype=float) if all(
            isinstance(v, numbers.Number) for v in ub_raw) else jnp.stack(
            [jnp.asarray(v) for v in ub_raw]), x0_flat.dtype)
        return _check_order(lb, ub)
    elif isinstance(bounds, (list, tuple)) and len(bounds) == 2:
        lb_raw, ub_raw = bounds
    else:
        raise ValueError(
            f"bounds must be a sequence of {n} (lo, hi) pairs (None = unbounded), a Bounds(lb, "
            f"ub) object, or a pair (lb, ub) of arrays / pytrees like x0; got {bounds!r}")
    lb = _to_flat_bound(lb_raw, x0_tree, x0_flat, -np.inf, "lb")
    ub = _to_flat_bound(ub_raw, x0_tree, x0_flat, np.inf, "ub")
    return _check_order(lb, ub)


def _check_order(lb, ub):
    if not isinstance(lb, jax.core.Tracer) and not isinstance(ub, jax.core.Tracer):
        bad = np.nonzero(np.asarray(lb) > np.asarray(ub))[0]
        if bad.size:
            raise ValueError("An upper bound is less than the corresponding lower bound: "
                             f"at flat index {int(bad[0])}, ub = {float(ub[bad[0]])} < "
                             f"lb = {float(lb[bad[0]])}")
    return lb, ub


#: ``jac`` / ``hess`` strings scipy uses for finite differences; here they select autodiff.
FD_STRINGS = frozenset({"2-point", "3-point", "cs"})

# scipy's ``status`` codes and messages per method (jaxinfer Status -> scipy's code).
_SUCCESS = "Optimization terminated successfully."
_PR_LOSS = "Desired error not necessarily achieved due to precision loss."
_MAXITER = "Maximum number of iterations has been exceeded."
_NAN = "NaN result encountered."
_CALLBACK = "`callback` raised `StopIteration`."
_TABLES = {
    "bfgs": (
        "scipy-bfgs",
        {Status.GTOL: 0, Status.XTOL: 0, Status.FTOL: 0, Status.MAX_ITER: 1,
         Status.LINE_SEARCH: 2, Status.PRECISION: 2, Status.NONFINITE: 3,
         Status.UNBOUNDED: 2, Status.CALLBACK: 99}, 2,
        {Status.GTOL: _SUCCESS, Status.XTOL: _SUCCESS, Status.FTOL: _SUCCESS,
         Status.MAX_ITER: _MAXITER, Status.LINE_SEARCH: _PR_LOSS, Status.NONFINITE: _NAN,
         Status.UNBOUNDED: _PR_LOSS, Status.CALLBACK: _CALLBACK}),
    "l-bfgs-b": (
        "scipy-l-bfgs-b",
        {Status.GTOL: 0, Status.FTOL: 0, Status.MAX_ITER: 1, Status.MAX_FEV: 1,
         Status.CALLBACK: 99}, 2,
        {Status.GTOL: "CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL",
         Status.FTOL: "CONVERGENCE: RELATIVE REDUCTION OF F <= FACTR*EPSMCH",
         Status.MAX_ITER: "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT",
         Status.MAX_FEV: "STOP: TOTAL NO. OF F,G EVALUATIONS EXCEEDS LIMIT",
         Status.LINE_SEARCH: "ABNORMAL: ",
         Status.NONFINITE: "ABNORMAL: a non-finite objective or gradient was encountered.",
         Status.CALLBACK: _CALLBACK}),
    "newton-cg": (
        "scipy-newton-cg",
        {Status.GTOL: 0, Status.XTOL: 0, Status.MAX_ITER: 1, Status.LINE_SEARCH: 2,
         Status.PRECISION: 2, Status.NONFINITE: 3, Status.CALLBACK: 99}, 2,
        {Status.GTOL: _SUCCESS, Status.XTOL: _SUCCESS, Status.MAX_ITER: "Warning: " + _MAXITER,
         Status.LINE_SEARCH: "Warning: " + _PR_LOSS, Status.NONFINITE: _NAN,
         Status.CALLBACK: _CALLBACK}),
    "slsqp": (
        "scipy-slsqp",
        {Status.CONSTRAINED_OK: 0, Status.GTOL: 0, Status.FTOL: 0, Status.XTOL: 0,
         Status.INFEASIBLE: 4, Status.LINE_SEARCH: 8, Status.MAX_ITER: 9,
         Status.CALLBACK: 99}, 8,
        {Status.CONSTRAINED_OK: "Optimization terminated successfully",
         Status.GTOL: "Optimization terminated successfully",
         Status.FTOL: "Optimization terminated successfully",
         Status.XTOL: "Optimization terminated successfully",
         Status.INFEASIBLE: "Inequality constraints incompatible",
         Status.LINE_SEARCH: "Positive directional derivative for linesearch",
         Status.MAX_ITER: "Iteration limit reached", Status.CALLBACK: _CALLBACK}),
}

# scipy's convention name, its codes, its default code, its messages, per method
# a run below float64 that stops for lack of precision also says how to get float64
_FLOAT64_HINT = " (float64 may be needed: jax.config.update(\"jax_enable_x64\", True))"
_CONVENTION = {m: register_convention(*table) for m, table in _TABLES.items()}
_CONVENTION_LOW = {m: register_convention(
    table[0] + "-low-precision", table[1], table[2],
    {**table[3], **{s: table[3].get(s, "") + _FLOAT64_HINT
                    for s in (Status.LINE_SEARCH, Status.PRECISION) if s in table[3]}})
    for m, table in _TABLES.items()}


def _convention(method: str, dtype):
    """scipy's convention for ``method`` (None: jaxinfer's own codes); below float64 the
    precision-loss messages also say how to enable float64."""
    if method not in _CONVENTION:
        return None
    return (_CONVENTION if jnp.finfo(dtype).bits >= 64 else _CONVENTION_LOW)[method]


def minimize(fun: Callable, x0, args=(), method=None, jac=None, hess=None,
             hessp=None, bounds=None, constraints=(), tol=None, callback=None,
             options: Optional[dict] = None) -> OptimizeResult:
    """Minimise a scalar function of a pytree, with scipy's call signature.

    Parameters
    ----------
    fun : ``fun(x, *args) -> scalar``, a JAX-traceable function of a pytree ``x``.
    x0 : pytree of float arrays (a number or a list of numbers becomes a 1-D array).
    args : extra arguments passed to ``fun`` (and ``jac``, ``hess``, ``hessp``).
    method : 'BFGS', 'L-BFGS-B', 'Newton-CG', 'momentum' ('gd', 'bgd'), 'rmsprop', 'adam',
        'SLSQP' (sequential quadratic programming), 'auglag' (augmented Lagrangian);
        case-insensitive; or a callable, called as scipy does:
        ``method(fun, x0, args=, jac=, hess=, hessp=, bounds=, constraints=, callback=,
        **options)``. None (default) picks as scipy does: 'SLSQP' with constraints, else
        'L-BFGS-B' with bounds, else 'BFGS'.
    jac : None / False (autodiff), a callable ``jac(x, *args) -> gradient pytree``, True
        when ``fun`` returns ``(f, gradient)``, or one of scipy's finite-difference strings
        '2-point', '3-point', 'cs', which select autodiff here.
    hess, hessp : Newton-CG only: ``hess(x, *args) -> (n, n)`` matrix over the flattened
        parameters, or ``hessp(x, p, *args) -> pytree``; None, a finite-difference string
        or a ``HessianUpdateStrategy`` (``SR1()``, ``BFGS()``): autodiff Hessian-vector
        products (forward-over-reverse). Other methods warn and ignore them (scipy).
    bounds : see :func:`parse_bounds` (scipy's ``Bounds`` or ``(min, max)`` pairs); for
        'L-BFGS-B', 'SLSQP', 'auglag' and the first-order methods (projected steps). Other
        methods warn and ignore them (scipy).
    constraints : 'SLSQP' / 'auglag': dicts ``{'type': 'eq' | 'ineq', 'fun': c(x, *args),
        'jac': optional, 'args': optional}`` (``c(x) == 0`` / ``c(x) >= 0``),
        :class:`LinearConstraint` / :class:`NonlinearConstraint` objects (ours or scipy's),
        or a sequence of them.
    tol : sets the method's main tolerance(s), as in scipy: BFGS ``gtol``; L-BFGS-B
        ``ftol`` and ``gtol``; Newton-CG ``xtol``; first-order ``gtol``; SLSQP ``gtol`` and
        ``ctol``; options given explicitly win.
    callback : ``callback(intermediate_result)`` (a parameter of that name only: it gets an
        :class:`OptimizeResult` with ``x``, ``fun``, ``jac``, ``nit``) or ``callback(xk)``,
        after every iteration, on the host. Raising ``StopIteration`` stops the run (status
        99, "`callback` raised `StopIteration`.", as scipy); the return value is ignored.
    options : dict of method options (scipy's names; see ``docs/optimize.md``).
        Unknown names warn an ``OptimizeWarning`` and are ignored (scipy).

    Returns
    -------
    OptimizeResult with ``x`` and ``jac`` shaped like ``x0``, ``fun``, ``status`` (scipy's
    code for BFGS / L-BFGS-B / Newton-CG / SLSQP; ``res.reason`` holds jaxinfer's
    :class:`Status`), ``success`` (only from a passed convergence test), ``message``,
    ``nit``, ``nfev``, ``njev`` and ``hess_inv``: an (n, n) array for BFGS, an
    :class:`LbfgsInvHessProduct` operator (``res.hess_inv(v)``, ``sk``, ``yk``,
    ``todense()``) for L-BFGS-B, over the flattened parameters. Outside a trace the fields
    are numpy scalars and arrays (and ``success`` a ``bool``); inside jit / vmap arrays.
    """
    if callable(method):
        return method(fun, x0, args=args, jac=jac, hess=hess, hessp=hessp, bounds=bounds,
                      constraints=constraints, callback=callback, **(options or {}))
    if method is None:
        method = ("SLSQP" if constraint_any(constraints)
                  else ("L-BFGS-B" if bounds is not None else "BFGS"))
    name = canonical_method(method)
    opts = _resolve_options(name, options, tol)
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    # scipy warns and ignores what a method does not use
    if hess is not None and name != "newton-cg":
        warnings.warn(f"Method {method} does not use Hessian information (hess).",
                      RuntimeWarning, stacklevel=2)
        hess = None
    if hessp is not None and name != "newton-cg":
        warnings.warn(f"Method {method} does not use Hessian-vector product information "
                      "(hessp).", RuntimeWarning, stacklevel=2)
        hessp = None
    if constraint_any(constraints) and name not in _CONSTRAINED:
        warnings.warn(f"Method {method} cannot handle constraints.", RuntimeWarning,
                      stacklevel=2)
        constraints = ()
    if bounds is not None and name not in _HONOURS_BOUNDS:
        warnings.warn(f"Method {method} cannot handle bounds.", RuntimeWarning, stacklevel=2)
        bounds = None
    if isinstance(jac, str) and jac in FD_STRINGS:
        jac = None
    if isinstance(hess, str) and hess in FD_STRINGS or is_update_strategy(hess):
        hess = None
    x0 = _prepare_x0(x0)
    if not isinstance(args, tuple):
        args = (args,)
    x0_flat = ravel_pytree(jax.tree_util.tree_map(_as_float, x0))[0]
    if x0_flat.ndim != 1 or x0_flat.shape[0] == 0:
        raise ValueError("x0 must contain at least one parameter")
    if callable(hess) and not is_traced(x0_flat, args):
        hess = _traceable_hessian(hess, x0, args, x0_flat.shape[0])
    box = parse_bounds(bounds, x0, x0_flat)
    constraints = standardize_constraints(constraints, x0_flat)
    if name in _FIXES_EQUAL_BOUNDS and box is not None and _all_fixed(*box):
        return _fixed_by_bounds(fun, x0, box[0], args, constraints)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if name in ("bfgs", "newton-cg") and not 0 < opts["c1"] < opts["c2"] < 1:
        raise ValueError("'c1' and 'c2' do not satisfy '0 < c1 < c2 < 1'.")
    if name == "bfgs" and opts["hess_inv0"] is not None:
        opts["hess_inv0"] = _check_hess_inv0(opts["hess_inv0"], x0_flat.shape[0])
    con_specs, con_args = split_constraints(constraints)
    if not is_traced(x0_flat, args, con_args):
        con_specs = _traceable_constraint_jacs(con_specs, con_args, x0)
    n = x0_flat.shape[0]
    if box is None:
        lb = jnp.full((n,), -jnp.inf, x0_flat.dtype)
        ub = jnp.full((n,), jnp.inf, x0_flat.dtype)
    else:
        lb, ub = box
    arg_static, arg_dynamic = _split_args(args)
    con_static, con_dynamic = zip(*[_split_args(a) for a in con_args]) if con_args else ((), ())
    dynamic = (x0, arg_dynamic, tuple(con_dynamic), lb, ub)
    # one compile cache for every front door (jaxinfer.optimize._compile): the user's
    # callback is kept out of the key, and inside a user's jit / vmap / grad the solve is
    # inlined, run on stop_gradient inputs, and x* gets implicit derivatives w.r.t. args and
    # bounds (the loop is never differentiated)
    traced = is_traced(dynamic)
    if callback is None or callback is PROGRESS_SINK:
        cb_key, progress = callback, None
    else:
        host = _UserCallback(callback, ravel_pytree(jax.tree_util.tree_map(_as_float, x0))[1])
        cb_key, progress = (host, None) if traced else (_SINK, host)
    static = _Static(name, tuple(sorted(opts.items(), key=lambda kv: kv[0])), fun, jac, hess,
                     hessp, cb_key, con_specs, arg_static, tuple(con_static))
    inputs = jax.lax.stop_gradient(dynamic) if traced else dynamic
    try:
        hash(static)
    except TypeError:  # e.g. an array-valued option: run without the compilation cache
        result = _solve(static, *inputs)
    else:
        result = run_compiled(_solve, static, *inputs, progress=progress)
    if not traced:
        result = _host_result(result)
        if (options or {}).get("disp") and name in ("bfgs", "newton-cg") and not result.success:
            # scipy's disp=True reports a failed run as an OptimizeWarning (gh-1953)
            warnings.warn(result.message, OptimizeWarning, stacklevel=2)
        return result
    if name in _CONSTRAINED:
        return eqx.tree_at(lambda r: r.x, result, no_derivative(
            result.x, "minimize: derivatives of a constrained (SLSQP) solution are not "
            "implemented; differentiate an unconstrained or bound-constrained problem"))

    def objective(x, theta):
        return fun(x, *_join_args(arg_static, theta))

    gradient = None
    if jac is True:
        gradient = lambda x, theta: objective(x, theta)[1]  # noqa: E731
    elif callable(jac):
        gradient = lambda x, theta: jac(x, *_join_args(arg_static, theta))  # noqa: E731
    x = implicit_minimum(result.x, None if gradient is not None else objective, arg_dynamic,
                         gradient=gradient, bounds=None if box is None else (lb, ub))
    return eqx.tree_at(lambda r: r.x, result, x)


# scipy removes variables fixed by equal bounds for these methods; when all are fixed it
# evaluates ``fun`` once at the bounds and reports these messages (status 0)
_FIXES_EQUAL_BOUNDS = {"l-bfgs-b", "slsqp"}
_FIXED = "All independent variables were fixed by bounds"
_FIXED_CONVENTION = register_convention(
    "scipy-fixed-by-bounds", {}, 0,
    {Status.XTOL: _FIXED + ".",
     Status.CONSTRAINED_OK: _FIXED + " at values that satisfy the constraints.",
     Status.INFEASIBLE: _FIXED + ", but the independent variables do not satisfy the "
                                 "constraints exactly (see res.maxcv)."})


def _all_fixed(lb, ub) -> bool:
    if is_traced(lb, ub):
        return False
    return bool(np.all(np.asarray(lb) == np.asarray(ub)))


def _fixed_by_bounds(fun, x0, lb_flat, args, constraints) -> OptimizeResult:
    """scipy's result when every variable is fixed by ``lb == ub``: ``x = lb``, one
    evaluation of ``fun``, ``success`` unless a constraint is violated at ``x`` (``maxcv``,
    the largest violation: ``|c(x)|`` for equalities, ``max(0, -c(x))`` for inequalities)."""
    unravel = ravel_pytree(jax.tree_util.tree_map(_as_float, x0))[1]
    x = unravel(lb_flat)
    fval = jnp.reshape(jnp.asarray(fun(x, *args)), ())
    specs, con_args = split_constraints(constraints)
    maxcv = 0.0
    for (kind, cfun, _), cargs in zip(specs, con_args):
        c = np.atleast_1d(np.asarray(cfun(x, *cargs), dtype=float))
        v = np.abs(c) if kind == "eq" else np.maximum(-c, 0.0)
        maxcv = max(maxcv, float(np.max(v, initial=0.0)))
    reason = (Status.XTOL if not specs else
              Status.CONSTRAINED_OK if maxcv == 0.0 else Status.INFEASIBLE)
    return to_host(OptimizeResult(
        x=x, fun=fval, jac=None, status=jnp.int32(0), nit=jnp.int32(0), nfev=jnp.int32(1),
        njev=jnp.int32(0), extra={"maxcv": jnp.asarray(maxcv)}, reason=jnp.int32(int(reason)),
        convention=_FIXED_CONVENTION))


class _HostHessian(NamedTuple):
    """A ``hess`` JAX cannot trace (it returns a scipy sparse matrix, or is numpy code),
    called on the host through ``pure_callback`` and densified to (n, n)."""

    hess: Callable
    n: int

    def __call__(self, x, *args):
        spec = jax.ShapeDtypeStruct((self.n, self.n), ravel_pytree(x)[0].dtype)
        return jax.pure_callback(_HostJac(self.hess, "hess", self.n), spec, x, args, {})


def _traceable_hessian(hess, x0, args, n):
    """``hess`` itself when JAX can trace it, else a :class:`_HostHessian`."""
    try:
        jax.eval_shape(lambda z: hess(z, *args), jax.tree_util.tree_map(_as_float, x0))
        return hess
    except Exception as err:   # noqa: BLE001 - not traceable: try it on the host
        try:
            _dense(hess(np.asarray(ravel_pytree(x0)[0], float), *args), n, float)
        except Exception:
            raise err from None
        return _HostHessian(hess, n)


class _HostConstraintJac(NamedTuple):
    """A constraint ``jac`` JAX cannot trace (numpy code, ``.tolist()``, sparse matrices),
    called on the host through ``pure_callback`` and densified to ``shape`` (m, n)."""

    jac: Callable
    shape: tuple

    def __call__(self, x, *args):
        dtype = ravel_pytree(x)[0].dtype

        def host(xh, ah):
            xh, ah = jax.tree_util.tree_map(np.asarray, (xh, ah))
            return np.reshape(_dense(self.jac(xh, *ah), self.shape[1], dtype), self.shape)

        return jax.pure_callback(host, jax.ShapeDtypeStruct(self.shape, dtype), x, args,
                                 vmap_method="sequential")


def _traceable_constraint_jacs(specs, con_args, x0):
    """Constraint specs with each ``jac`` JAX cannot trace (but that runs on numpy arrays at
    ``x0``) replaced by a :class:`_HostConstraintJac`; others unchanged."""
    x0 = jax.tree_util.tree_map(_as_float, x0)
    n = ravel_pytree(x0)[0].shape[0]
    out = []
    for (kind, cfun, cjac), cargs in zip(specs, con_args):
        if cjac is not None:
            try:
                jax.eval_shape(lambda z, cjac=cjac, cargs=cargs: cjac(z, *cargs), x0)
            except Exception as err:   # noqa: BLE001 - not traceable: try it on the host
                try:
                    m = int(np.prod(jax.eval_shape(lambda z: jnp.asarray(cfun(z, *cargs)),
                                                   x0).shape, dtype=int))
                    host = to_host(x0)
                    J0 = _dense(cjac(host, *to_host(cargs)), n, float)
                except Exception:
                    raise err from None
                if np.size(J0) == m * n:
                    cjac = _HostConstraintJac(cjac, (m, n))
        out.append((kind, cfun, cjac))
    return tuple(out)


def _check_hess_inv0(h0, n):
    """scipy's check of BFGS' ``hess_inv0``: (n, n), symmetric positive definite."""
    if is_traced(h0):
        return h0
    h = np.asarray(h0, dtype=float)
    if h.shape != (n, n):
        raise ValueError(f"'hess_inv0' must have shape ({n}, {n}), got {h.shape}")
    if not np.all(np.linalg.eigvalsh(0.5 * (h + h.T)) > 0):
        raise ValueError("'hess_inv0' matrix isn't positive definite.")
    return tuple(map(tuple, h.tolist()))  # hashable: part of the compile-cache key


def _host_result(result: OptimizeResult) -> OptimizeResult:
    """A result outside a trace: numpy fields (scipy's types), L-BFGS-B's operator trimmed
    to its stored pairs."""
    from jaxinfer.optimize.quasi_newton import LbfgsInvHessProduct

    result = to_host(result)
    if isinstance(result.hess_inv, LbfgsInvHessProduct):
        result = eqx.tree_at(lambda r: r.hess_inv, result, result.hess_inv.trimmed())
    return result


def _as_float(leaf):
    leaf = jnp.asarray(leaf)
    if not jnp.issubdtype(leaf.dtype, jnp.inexact):
        leaf = leaf.astype(jnp.result_type(float))
    return leaf


class _Static(NamedTuple):
    """Everything about a call that is not an array: the key of the compilation cache."""

    method: str
    options: tuple
    fun: Any
    jac: Any
    hess: Any
    hessp: Any
    callback: Any
    con_specs: tuple
    arg_static: tuple
    con_static: tuple


_DYNAMIC = object()  # placeholder for an argument passed to the compiled solver as an array


def _split_args(args: tuple):
    """Top-level ``args`` entries made only of arrays are traced (dynamic); other entries
    (Python numbers, strings, objects) stay static, as they would be in plain Python."""
    static, dynamic = [], []
    for a in args:
        leaves = jax.tree_util.tree_leaves(a)
        if leaves and all(isinstance(v, (jax.Array, np.ndarray)) for v in leaves):
            static.append(_DYNAMIC)
            dynamic.append(a)
        else:
            static.append(a)
    return tuple(static), tuple(dynamic)


def _join_args(static: tuple, dynamic: tuple) -> tuple:
    it = iter(dynamic)
    return tuple(next(it) if a is _DYNAMIC else a for a in static)


def split_constraints(constraints):
    """Validate scipy constraint dicts -> ``(specs, args)``: ``specs`` a tuple of
    ``(kind, fun, jac)`` with kind 'eq' / 'ineq', ``args`` a tuple of argument tuples."""
    specs, all_args = [], []
    for i, con in enumerate(constraints):
        if not isinstance(con, dict):
            raise TypeError(f"constraint {i} must be a dict with 'type' and 'fun', got "
                            f"{type(con).__name__}")
        unknown = set(con) - {"type", "fun", "jac", "args"}
        if unknown:
            raise ValueError(f"constraint {i} has unknown key(s) {sorted(unknown)}; accepted: "
                             "'type', 'fun', 'jac', 'args'")
        kind = str(con.get("type", "")).lower()
        if kind not in ("eq", "ineq"):
            raise ValueError(f"constraint {i}: 'type' must be 'eq' or 'ineq', got "
                             f"{con.get('type')!r}")
        cfun = con.get("fun")
        if not callable(cfun):
            raise ValueError(f"constraint {i}: 'fun' must be callable")
        cjac = con.get("jac")
        if cjac is False:
            cjac = None
        if cjac is not None and not callable(cjac):
            raise ValueError(f"constraint {i}: 'jac' must be callable or omitted (autodiff); "
                             "finite-difference strategies are not used")
        cargs = con.get("args", ())
        if not isinstance(cargs, tuple):
            cargs = tuple(cargs) if isinstance(cargs, list) else (cargs,)
        specs.append((kind, cfun, cjac))
        all_args.append(cargs)
    return tuple(specs), tuple(all_args)




def _solve(static: _Static, x0, arg_dynamic, con_dynamic, lb, ub) -> OptimizeResult:
    name = static.method
    opts = dict(static.options)
    args = _join_args(static.arg_static, arg_dynamic)
    fun, hess, hessp = static.fun, static.hess, static.hessp
    value_and_grad, x0_flat, unravel, args = _objective(fun, x0, args, static.jac)
    lb = jnp.asarray(lb, x0_flat.dtype)
    ub = jnp.asarray(ub, x0_flat.dtype)

    if name in ("l-bfgs-b", "bfgs"):
        solver = _quasi_newton_solver(name, opts, lb, ub)
    elif name == "newton-cg":
        from jaxinfer.optimize.newton import NewtonCG, make_hvp
        solver = NewtonCG(xtol=opts["xtol"], gtol=opts["gtol"],
                          maxiter=None if opts["maxiter"] is None else int(opts["maxiter"]),
                          c1=opts["c1"], c2=opts["c2"], maxls=int(opts["maxls"]),
                          cg_maxiter=None if opts["cg_maxiter"] is None
                          else int(opts["cg_maxiter"]),
                          linearize=make_hvp(fun, args, unravel, x0_flat, hess, hessp))
    elif name in ("momentum", "rmsprop", "adam"):
        from jaxinfer.optimize.first_order import FirstOrder, make_transform
        hyper = {k: float(v) for k, v in opts.items() if k not in ("maxiter", "gtol", "ftol")}
        solver = FirstOrder(transform=make_transform(name, **hyper),
                            maxiter=int(opts["maxiter"]), gtol=opts["gtol"], ftol=opts["ftol"],
                            lower=lb, upper=ub)
    elif name in _CONSTRAINED:
        from jaxinfer.optimize.constrained import AugmentedLagrangian, build_constraints
        from jaxinfer.optimize.sqp import SQP
        con_args = tuple(_join_args(s, d) for s, d in zip(static.con_static, con_dynamic))
        eq, ineq = build_constraints(static.con_specs, con_args, x0_flat, unravel)
        if name == "slsqp":
            solver = SQP(eq=eq, ineq=ineq, lower=lb, upper=ub, maxiter=int(opts["maxiter"]),
                         ctol=opts["ctol"], gtol=opts["gtol"], ftol=opts["ftol"],
                         maxls=int(opts["maxls"]), qp_maxiter=int(opts["qp_maxiter"]))
        else:
            solver = AugmentedLagrangian(
                eq=eq, ineq=ineq, lower=lb, upper=ub,
                maxiter=int(opts["maxiter"]), ctol=opts["ctol"], gtol=opts["gtol"],
                ftol=opts["ftol"], penalty=float(opts["penalty"]),
                inner_maxiter=int(opts["inner_maxiter"]), maxcor=int(opts["maxcor"]))
    else:  # pragma: no cover
        raise AssertionError(name)
    callback = static.callback
    if callback is None or callback is PROGRESS_SINK:
        res = iterate(solver, lambda x, a: value_and_grad(x), x0_flat, (), callback=callback)
    else:
        host = _host_via_sink if callback is _SINK else callback
        res = iterate(_Halting(solver, host), lambda x, a: value_and_grad(x), x0_flat, ())
    res = _unravel_result(res, unravel)
    conv = _convention(name, x0_flat.dtype)  # None: jaxinfer's codes (first-order, auglag)
    status = res.status if conv is None else convention_code(conv, res.status)
    extra = res.extra
    if name == "slsqp":  # scipy's field: equality multipliers, then inequality ones
        extra = {**extra, "multipliers": jnp.concatenate(
            [extra["multipliers_eq"], extra["multipliers_ineq"]])}
    return OptimizeResult(x=res.x, fun=res.fun, jac=res.jac,
                          status=status, nit=res.nit,
                          nfev=res.nfev, njev=res.njev, hess_inv=res.hess_inv, extra=extra,
                          reason=res.status, convention=conv)


# --------------------------------------------------------------------------------------
# callbacks: scipy's conventions, and StopIteration stopping the compiled loop
# --------------------------------------------------------------------------------------

_STOP = [False]  # set by the host callback of the running call when it raised StopIteration


class _UserCallback:
    """The user's callback on the host: ``(x_flat, fun, g_flat, nit, new) -> stop``.

    scipy's calling rule: a callable whose only parameter is ``intermediate_result`` gets an
    :class:`OptimizeResult` (``x``, ``fun``, ``jac``, ``nit``), any other gets ``xk``. It
    is called once per new iteration; ``StopIteration`` asks the loop to stop.
    """

    def __init__(self, user, unravel):
        self.user = user
        self.unravel = unravel
        try:
            params = set(inspect.signature(user).parameters)
        except (TypeError, ValueError):
            params = set()
        self.wants_result = params == {"intermediate_result"}

    def __call__(self, payload):
        x, f, g, nit, new = payload
        _STOP[0] = False
        if not bool(new):
            return False
        x_tree = to_host(self.unravel(jnp.asarray(x)))
        try:
            if self.wants_result:
                jac = None if np.size(g) == 0 else to_host(self.unravel(jnp.asarray(g)))
                self.user(intermediate_result=OptimizeResult(
                    x=x_tree, fun=np.asarray(f)[()], jac=jac, status=None,
                    nit=int(np.asarray(nit)), nfev=None, njev=None))
            else:
                self.user(x_tree)
        except StopIteration:
            _STOP[0] = True
        return _STOP[0]


class _SinkMarker:
    def __repr__(self):
        return "callback routed through PROGRESS_SINK"


_SINK = _SinkMarker()  # in the compile key instead of the user's callback (no recompiles)


def _host_via_sink(payload):
    """Fixed host function of compiled solves: forwards to the call's :class:`_UserCallback`
    (routed by ``run_compiled(progress=...)``) and returns whether it asked to stop."""
    _STOP[0] = False
    PROGRESS_SINK(payload)
    return _STOP[0]


class _HaltingState(eqx.Module):
    inner: Any
    stop: jnp.ndarray


class _Halting(AbstractSolver):
    """``inner`` with a host callback after each iteration that can stop the run
    (``Status.CALLBACK``, reported by scipy's conventions as status 99)."""

    inner: AbstractSolver
    host: Any = eqx.field(static=True)

    def init(self, fn, x0, args):
        return _HaltingState(self.inner.init(fn, x0, args), jnp.asarray(False))

    def step(self, fn, state, args):
        before = self.inner.progress(state.inner).nit
        inner = self.inner.step(fn, state.inner, args)
        p = self.inner.progress(inner)
        g = getattr(inner, "g", None)
        g = jnp.zeros((0,), p.x.dtype) if g is None else g
        new = jnp.asarray(p.nit) > jnp.asarray(before)
        host = self.host

        def call(x, f, g, nit, new):
            return np.bool_(host((x, f, g, nit, new)))

        stop = jax.pure_callback(call, jax.ShapeDtypeStruct((), jnp.bool_), p.x, p.fun, g,
                                 p.nit, new, vmap_method="sequential")
        return _HaltingState(inner, stop)

    def terminate(self, fn, state, args):
        status = self.inner.terminate(fn, state.inner, args)
        return jnp.where(state.stop, jnp.int32(int(Status.CALLBACK)), status)

    def postprocess(self, fn, state, args, status):
        return self.inner.postprocess(fn, state.inner, args, status)

    def progress(self, state):
        return self.inner.progress(state.inner)


def _quasi_newton_solver(name: str, opts: dict, lb, ub):
    """The BFGS / L-BFGS-B solver module for resolved scipy-style options."""
    from jaxinfer.optimize.quasi_newton import BFGS, LBFGSB

    if name == "l-bfgs-b":
        return LBFGSB(maxcor=int(opts["maxcor"]), ftol=opts["ftol"], gtol=opts["gtol"],
                      maxiter=int(opts["maxiter"]), maxfun=int(opts["maxfun"]),
                      maxls=int(opts["maxls"]), lower=lb, upper=ub)
    return BFGS(gtol=opts["gtol"], norm=float(opts["norm"]),
                maxiter=None if opts["maxiter"] is None else int(opts["maxiter"]),
                xrtol=opts["xrtol"], c1=opts["c1"], c2=opts["c2"], maxls=int(opts["maxls"]),
                hess_inv0=opts["hess_inv0"])




def _unravel_result(res: OptimizeResult, unravel) -> OptimizeResult:
    """A flat solver result with ``x`` and ``jac`` given ``x0``'s pytree structure."""
    return OptimizeResult(x=unravel(res.x), fun=res.fun, jac=unravel(res.jac), status=res.status,
                          nit=res.nit, nfev=res.nfev, njev=res.njev, hess_inv=res.hess_inv,
                          extra=res.extra)
