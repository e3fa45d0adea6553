"""The result every jaxinfer solver returns, and the table of termination reasons.

A solver never claims success on its own: it reports an integer ``status`` and
``success`` is looked up from it. Only statuses that correspond to a passed convergence
test count as success; running out of iterations or evaluations, a failed line search or a
non-finite value are failures.
"""

from __future__ import annotations

import enum
from typing import Any, Optional

import equinox as eqx
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


_MESSAGES = {
    Status.GTOL: "Converged: gradient norm below gtol.",
    Status.FTOL: "Converged: relative reduction of the objective below ftol.",
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
        A :class:`Status` code.
    nit, nfev, njev : int arrays
        Iterations, objective evaluations, gradient / Jacobian evaluations.
    hess_inv : array or None
        Inverse-Hessian approximation where the method has one.
    extra : dict
        Solver-specific diagnostics (e.g. LM damping, termination statistics).

    ``success`` and ``message`` are derived from ``status``, never set by hand.
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

    @property
    def success(self):
        return is_success(self.status)

    @property
    def message(self):
        return status_message(self.status)

    @property
    def grad(self):
        return self.jac

    def __getitem__(self, key):  # scipy-style res["x"]
        return getattr(self, key)

    def __repr__(self):
        """scipy's layout with values (``message``, ``success``, ``status``, ``fun``, ``x``,
        ...); inside a trace, where there are no values, equinox's shape summary."""
        leaves = jax.tree_util.tree_leaves(self)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return eqx.tree_pformat(self)
        fields = {"message": self.message, "success": np.asarray(self.success),
                  "status": np.asarray(self.status), "fun": self.fun, "x": self.x,
                  "nit": self.nit, "jac": self.jac, "nfev": self.nfev, "njev": self.njev}
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
