"""scipy's bounds and constraint classes, and their translation into ``minimize``'s
constraint dicts.

``Bounds(lb, ub)``, ``LinearConstraint(A, lb, ub)`` and ``NonlinearConstraint(fun, lb, ub,
jac)`` have scipy's signatures and meaning (``lb <= x <= ub``, ``lb <= A x <= ub``,
``lb <= fun(x) <= ub``; ``lb == ub`` is an equality; infinite sides are dropped).
``scipy.optimize``'s own objects are accepted too (anything with the same attributes), so
code written for scipy runs unchanged. ``keep_feasible`` is accepted and has no effect
(scipy's SLSQP ignores it as well). ``finite_diff_*`` / ``hess`` arguments of
``NonlinearConstraint`` are accepted and unused: derivatives come from autodiff unless a
callable ``jac`` is given.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax.numpy as jnp
import numpy as np

__all__ = ["Bounds", "LinearConstraint", "NonlinearConstraint", "standardize_constraints"]


class Bounds:
    """Box bounds ``lb <= x <= ub`` (scipy's ``Bounds(lb=-inf, ub=inf, keep_feasible=False)``).

    ``lb`` and ``ub`` are scalars, arrays shaped like a flat ``x0``, or pytrees shaped like
    ``x0``; ``-inf`` / ``inf`` (or None) mean unbounded.
    """

    def __init__(self, lb=-np.inf, ub=np.inf, keep_feasible=False):
        self.lb = lb
        self.ub = ub
        self.keep_feasible = keep_feasible

    def __iter__(self):  # ``lb, ub = bounds`` (the old NamedTuple form)
        return iter((self.lb, self.ub))

    def __repr__(self):
        return f"Bounds({self.lb!r}, {self.ub!r})"


class LinearConstraint:
    """``lb <= A @ x <= ub`` for a flat ``x`` (n,); ``A`` (m, n) or (n,)."""

    def __init__(self, A, lb=-np.inf, ub=np.inf, keep_feasible=False):
        self.A = A
        self.lb = lb
        self.ub = ub
        self.keep_feasible = keep_feasible


class NonlinearConstraint:
    """``lb <= fun(x) <= ub``; ``fun(x) -> scalar or (m,)`` (JAX-traceable); ``jac`` a
    callable ``jac(x) -> (m, n)`` or a scipy finite-difference string (autodiff is used)."""

    def __init__(self, fun, lb, ub, jac="2-point", hess=None, keep_feasible=False,
                 finite_diff_rel_step=None, finite_diff_jac_sparsity=None):
        self.fun = fun
        self.lb = lb
        self.ub = ub
        self.jac = jac
        self.hess = hess
        self.keep_feasible = keep_feasible


def _linear_part(x, A, offset):
    """``A x - offset`` (rows already selected and signed)."""
    return A @ jnp.reshape(x, (-1,)) - offset


class _NonlinearPart(NamedTuple):
    """``sign * (fun(x)[rows] - offset)``: one side of a NonlinearConstraint (hashable, so
    the same constraint object compiles once)."""

    fun: Callable
    rows: tuple
    sign: float

    def __call__(self, x, offset):
        c = jnp.atleast_1d(jnp.asarray(self.fun(x))).reshape(-1)
        return self.sign * (c[np.asarray(self.rows, dtype=int)] - offset)


class _NonlinearPartJac(NamedTuple):
    jac: Callable
    rows: tuple
    sign: float

    def __call__(self, x, offset):
        J = jnp.asarray(self.jac(x))
        J = J.reshape(-1, J.shape[-1]) if J.ndim else J.reshape(1, 1)
        return self.sign * J[np.asarray(self.rows, dtype=int)]


def _sides(lb, ub, m):
    lb = np.broadcast_to(np.asarray(lb, dtype=float), (m,))
    ub = np.broadcast_to(np.asarray(ub, dtype=float), (m,))
    if np.any(lb > ub):
        i = int(np.nonzero(lb > ub)[0][0])
        raise ValueError(f"constraint lower bound exceeds its upper bound at row {i} "
                         f"({lb[i]} > {ub[i]})")
    eq = np.nonzero(lb == ub)[0]
    lo = np.nonzero(np.isfinite(lb) & (lb < ub))[0]
    hi = np.nonzero(np.isfinite(ub) & (lb < ub))[0]
    return lb, ub, eq, lo, hi


def _is_linear(con) -> bool:
    return all(hasattr(con, a) for a in ("A", "lb", "ub")) and not isinstance(con, dict)


def _is_nonlinear(con) -> bool:
    return (all(hasattr(con, a) for a in ("fun", "lb", "ub")) and not isinstance(con, dict)
            and not _is_linear(con))


def standardize_constraints(constraints, x0_flat) -> tuple:
    """scipy-style constraints -> a tuple of dicts ``{'type', 'fun', 'jac', 'args'}``.

    ``constraints``: a dict, a (Linear|Nonlinear)Constraint (ours or scipy's), or a sequence
    of them. Each object side becomes ``c(x) >= 0`` or ``c(x) == 0`` dicts; dicts pass
    through. ``lb``/``ub`` must be concrete (they define which rows are equalities).
    """
    if constraints is None:
        return ()
    if isinstance(constraints, dict) or _is_linear(constraints) or _is_nonlinear(constraints):
        constraints = (constraints,)
    out = []
    n = int(np.shape(x0_flat)[0])
    dtype = jnp.asarray(x0_flat).dtype
    for i, con in enumerate(constraints):
        if isinstance(con, dict):
            out.append(con)
        elif _is_linear(con):
            A = np.asarray(con.A.toarray() if hasattr(con.A, "toarray") else con.A, dtype=float)
            A = np.atleast_2d(A)
            if A.shape[1] != n:
                raise ValueError(f"LinearConstraint {i}: A has {A.shape[1]} columns, expected "
                                 f"{n} (one per parameter)")
            lb, ub, eq, lo, hi = _sides(con.lb, con.ub, A.shape[0])
            for kind, rows, Am, off in (("eq", eq, A[eq], lb[eq]), ("ineq", lo, A[lo], lb[lo]),
                                        ("ineq", hi, -A[hi], -ub[hi])):
                if rows.size:
                    out.append({"type": kind, "fun": _linear_part,
                                "args": (jnp.asarray(Am, dtype), jnp.asarray(off, dtype))})
        elif _is_nonlinear(con):
            import jax

            def flat(x, fun=con.fun):
                return jnp.atleast_1d(jnp.asarray(fun(x))).reshape(-1)

            m = int(jax.eval_shape(flat, jnp.asarray(x0_flat)).shape[0])
            lb, ub, eq, lo, hi = _sides(con.lb, con.ub, m)
            jac = con.jac if callable(con.jac) else None
            for kind, rows, sign, off in (("eq", eq, 1.0, lb[eq]), ("ineq", lo, 1.0, lb[lo]),
                                          ("ineq", hi, -1.0, ub[hi])):
                if rows.size:
                    rows_t = tuple(int(r) for r in rows)
                    spec = {"type": kind, "fun": _NonlinearPart(con.fun, rows_t, sign),
                            "args": (jnp.asarray(off, dtype),)}
                    if jac is not None:
                        spec["jac"] = _NonlinearPartJac(jac, rows_t, sign)
                    out.append(spec)
        else:
            raise TypeError(f"constraint {i} must be a dict, a LinearConstraint or a "
                            f"NonlinearConstraint, got {type(con).__name__}")
    return tuple(out)


def constraint_any(constraints: Any) -> bool:
    """Are there any constraints (scipy's ``np.any(constraints)`` without the numpy)?"""
    if constraints is None:
        return False
    if isinstance(constraints, dict) or _is_linear(constraints) or _is_nonlinear(constraints):
        return True
    return len(constraints) > 0
