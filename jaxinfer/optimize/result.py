"""The result every jaxinfer solver returns, and the table of termination reasons.

A solver never claims success on its own: it reports an integer ``status`` and
``success`` is looked up from it. Only statuses that correspond to a passed convergence
test count as success; running out of iterations or evaluations, a failed line search or a
non-finite value are failures.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple, Optional

import equinox as eqx
from scipy.optimize import OptimizeWarning  # one warning class for scipy users and ours
import jax
import jax.numpy as jnp
import numpy as np


class Status(enum.IntEnum):
    """Why a solver stopped. Values are stable: they are stored in results and tests."""

    # convergence tests (success)
    GTOL = 0          # gradient (or projected gradient) norm below gtol
    FTOL = 1          # relative decrease of the objective below ftol
    XTOL = 2          # step below xtol / paramtol
    ERRTOL = 3        # absolute decrease of the cost below errtol (LM)
    EXPTOL = 4        # expected decrease of the cost below exptol (LM)
    FRACTOL = 5       # fractional decrease of the cost below fractol (LM)
    COSTOL = 6        # model cosine below costol (LM, Transtrum & Sethna)
    CONSTRAINED_OK = 7  # KKT conditions satisfied to tolerance (constrained solvers)
    ZERO_RESIDUAL = 8   # cost is zero to machine precision (least squares)
    # failures
    MAX_ITER = 20     # iteration budget exhausted before any convergence test passed
    MAX_FEV = 21      # function-evaluation budget exhausted
    LINE_SEARCH = 22  # line search could not find an acceptable step
    NONFINITE = 23    # objective or gradient became NaN / inf
    INFEASIBLE = 24   # constraints could not be satisfied
    DAMPING = 25      # LM: no damping value produced a decrease (all retries failed)
    CALLBACK = 26     # stopped by the user's callback (not a convergence test)
    PRECISION = 27    # no further decrease at the dtype's rounding level (float32): use float64
    UNBOUNDED = 28    # the objective reached -inf: the problem is unbounded below


_MESSAGES = {
    Status.GTOL: "Converged: gradient norm below gtol.",
    Status.FTOL: "Converged: relative change of the objective below ftol.",
    Status.XTOL: "Converged: step size below xtol.",
    Status.ERRTOL: "Converged: absolute reduction of the cost below errtol.",
    Status.EXPTOL: "Converged: expected reduction of the cost below exptol.",
    Status.FRACTOL: "Converged: fractional reduction of the cost below fractol.",
    Status.COSTOL: "Converged: model cosine below costol.",
    Status.CONSTRAINED_OK: "Converged: optimality and feasibility conditions satisfied.",
    Status.ZERO_RESIDUAL: "Converged: the residuals are zero.",
    Status.MAX_ITER: "Not converged: maximum number of iterations reached.",
    Status.MAX_FEV: "Not converged: maximum number of function evaluations reached.",
    Status.LINE_SEARCH: "Not converged: the line search found no acceptable step.",
    Status.NONFINITE: "Not converged: a non-finite objective or gradient was encountered.",
    Status.INFEASIBLE: "Not converged: the constraints could not be satisfied.",
    Status.DAMPING: "Not converged: no damping value decreased the cost.",
    Status.CALLBACK: "Stopped by the callback before convergence.",
    Status.UNBOUNDED: "Not converged: the objective reached -inf (unbounded below).",
    Status.PRECISION: ("Not converged: the objective no longer decreases at its dtype's rounding "
                       "level; float64 is needed: jax.config.update(\"jax_enable_x64\", True)."),
}

SUCCESS_CODES = tuple(int(s) for s in Status if s < 20)


def is_success(status: jnp.ndarray) -> jnp.ndarray:
    """``status`` (int array, any shape) -> bool array: did a convergence test pass?"""
    return jnp.asarray(status) < 20


def status_message(status) -> Any:
    """Human-readable message for a status code (a str, or an array of str for a batch)."""
    arr = np.asarray(status)
    if arr.ndim == 0:
        return _MESSAGES.get(Status(int(arr)), f"Unknown status {int(arr)}.")
    return np.vectorize(lambda s: _MESSAGES.get(Status(int(s)), f"Unknown status {int(s)}."))(arr)


class Convention(NamedTuple):
    """How a front door reports ``status`` and ``message`` (e.g. scipy's per-method codes).

    ``codes`` maps a :class:`Status` to the front door's integer code, ``default_code`` is
    used for statuses not listed; ``messages`` maps a :class:`Status` to the front door's
    message (statuses not listed use jaxinfer's own). Register with
    :func:`register_convention`; results carry the convention's name, never the table.
    """

    codes: dict
    default_code: int
    messages: dict


_CONVENTIONS: dict = {}


def register_convention(name: str, codes: dict, default_code: int, messages: dict) -> str:
    """Register a reporting convention under ``name`` (returns ``name``)."""
    _CONVENTIONS[name] = Convention(dict(codes), int(default_code), dict(messages))
    return name


def convention_code(name: str, reason) -> jnp.ndarray:
    """The convention's integer code for jaxinfer ``reason`` codes (traceable, any shape)."""
    conv = _CONVENTIONS[name]
    reason = jnp.asarray(reason, jnp.int32)
    code = jnp.full(reason.shape, conv.default_code, jnp.int32)
    for status, value in conv.codes.items():
        code = jnp.where(reason == int(status), jnp.int32(value), code)
    return code


def _message(name: Optional[str], reason: int) -> str:
    if name is not None:
        text = _CONVENTIONS[name].messages.get(int(reason))
        if text is not None:
            return text
    try:
        return _MESSAGES.get(Status(int(reason)), f"Unknown status {int(reason)}.")
    except ValueError:
        return f"Unknown status {int(reason)}."


def _concrete(value):
    """A 0-d boolean -> Python ``bool``, other non-traced arrays -> numpy; tracers unchanged."""
    if isinstance(value, jax.core.Tracer):
        return value
    arr = np.asarray(value)
    return bool(arr) if arr.ndim == 0 else arr


class OptimizeResult(eqx.Module):
    """Outcome of a solver: a pytree, so it passes through ``jit`` and stacks under ``vmap``.

    Attributes
    ----------
    x : pytree shaped like ``x0``
        The solution.
    fun : scalar array
        Objective at ``x`` (for least squares: the cost ``0.5 * sum(r**2)``).
    jac : pytree shaped like ``x0``, or array
        Gradient of the objective at ``x`` (least squares: the Jacobian of the residuals).
    status : int array
        A :class:`Status` code, or, where ``convention`` is set (scipy-shaped front doors),
        that convention's code (e.g. scipy's per-method ``status``); then ``reason`` holds
        the :class:`Status`.
    nit, nfev, njev : int arrays
        Iterations, objective evaluations, gradient / Jacobian evaluations.
    hess_inv : array, operator or None
        Inverse-Hessian approximation where the method has one.
    extra : dict
        Solver-specific diagnostics (e.g. LM damping, termination statistics).
    reason : int array or None
        The :class:`Status` behind ``status`` when a convention is used (else None).
    convention : str or None (static)
        Name of the reporting convention (:func:`register_convention`), None for jaxinfer's.

    ``success`` and ``message`` are derived from the :class:`Status` (``reason`` if set,
    else ``status``), never set by hand. Outside a trace ``success`` is a Python ``bool``
    (an array of them for a batch of results).
    """

    x: Any
    fun: Any
    jac: Any
    status: Any
    nit: Any
    nfev: Any
    njev: Any
    hess_inv: Optional[Any] = None
    extra: dict = eqx.field(default_factory=dict)
    reason: Optional[Any] = None
    convention: Optional[str] = eqx.field(static=True, default=None)

    @property
    def _status(self):
        return self.status if self.reason is None else self.reason

    @property
    def success(self):
        return _concrete(is_success(self._status))

    @property
    def message(self):
        arr = self._status
        if isinstance(arr, jax.core.Tracer):
            raise TypeError("OptimizeResult.message needs concrete values (outside jit); "
                            "inside a trace use .status / .success")
        arr = np.asarray(arr)
        if arr.ndim == 0:
            return _message(self.convention, int(arr))
        return np.vectorize(lambda s: _message(self.convention, int(s)))(arr)

    @property
    def grad(self):
        return self.jac

    def __getattr__(self, name):
        """scipy-style attribute access to a method's own counters kept in ``extra``
        (e.g. Newton-CG's ``res.nhev``)."""
        if name.startswith("_") or name == "extra":
            raise AttributeError(name)
        extra = self.__dict__.get("extra")
        if isinstance(extra, dict) and name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    _KEYS = ("x", "fun", "jac", "status", "success", "message", "nit", "nfev", "njev",
             "hess_inv")

    def keys(self):
        """scipy-style (dict) access: the names of the fields that are set."""
        return [k for k in self._KEYS if getattr(self, k) is not None] + list(self.extra)

    def __getitem__(self, key):  # scipy-style res["x"]
        if key in self.extra and key not in self._KEYS:
            return self.extra[key]
        try:
            return getattr(self, key)
        except AttributeError:
            raise KeyError(key) from None

    def __contains__(self, key):
        return key in self.keys()

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __repr__(self):
        """scipy's layout with values (``message``, ``success``, ``status``, ``fun``, ``x``,
        ...); inside a trace, where there are no values, equinox's shape summary."""
        leaves = jax.tree_util.tree_leaves(self)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return eqx.tree_pformat(self)
        fields = {"fun": self.fun, "x": self.x, "nit": self.nit, "jac": self.jac,
                  "nfev": self.nfev, "njev": self.njev}
        if self._status is not None:
            fields = {"message": self.message, "success": np.asarray(self.success),
                      "status": np.asarray(self.status), **fields}
        fields = {k: v for k, v in fields.items() if v is not None}
        if self.hess_inv is not None:
            fields["hess_inv"] = self.hess_inv
        fields.update(self.extra)
        width = max(len(k) for k in fields)
        lines = []
        for key, value in fields.items():
            text = _format_value(value)
            pad = " " * (width + 2)
            lines.append(f"{key:>{width}}: " + text.replace("\n", "\n" + pad))
        return "\n".join(lines)

    __str__ = __repr__


def to_host(tree):
    """Every array leaf of ``tree`` as numpy: 0-d leaves as numpy scalars (``np.float64``,
    ``np.int32``, ...), others as ``np.ndarray``. For results returned outside a trace, so
    that they behave like scipy's (``assert_equal(5, res.nit)``, in-place numpy code)."""
    def leaf(v):
        if isinstance(v, jax.Array):
            arr = np.asarray(v)
            return arr[()] if arr.ndim == 0 else arr
        return v
    return jax.tree_util.tree_map(leaf, tree)


def _format_value(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (np.ndarray, jnp.ndarray)) or np.isscalar(value):
        arr = np.asarray(value)
        if arr.ndim == 0:
            return str(arr.item())
        return np.array2string(arr, precision=6, threshold=20)
    leaves, treedef = jax.tree_util.tree_flatten(value)
    if leaves and all(isinstance(leaf, (np.ndarray, jnp.ndarray, float, int)) for leaf in leaves):
        if treedef.num_leaves == 1 and treedef.num_nodes == 1:
            return _format_value(leaves[0])
        return repr(jax.tree_util.tree_map(np.asarray, value))
    return repr(value)
