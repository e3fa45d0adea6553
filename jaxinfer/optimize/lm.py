"""Levenberg–Marquardt as one steppable solver: ``LevenbergMarquardt`` (settings), ``LMState``.

Every option of peri's LM engine (after Transtrum & Sethna 2012) plus MINPACK's scaling,
relative step / gradient tests, box bounds and masks, written as a state machine of which
each ``step`` makes exactly ONE trial step (one residual evaluation):

====================  ==========================================================================
phase                 trial damping
====================  ==========================================================================
``FIRST``             λ (run 1: the iteration's only first trial; run 2: the first of two)
``SECOND``            λ / decrease (run 2 only): the better of the two is kept, with its λ
``RETRY``             λ_try · increase, after a rejected step, up to ``max_damping_retries``
``RUN``               the current λ on the same J (run 2's internal run, with Broyden / eigen
                      updates), up to ``run_length`` steps, ending at the first that fails
====================  ==========================================================================

When a phase ends the iteration, the same ``step`` refreshes J (every ``update_J_frequency``
iterations), computes peri's termination statistics and sets ``status``. Branches are
``lax.cond`` (real branches unbatched; selects under ``vmap``), so lanes of a vmapped batch
advance in lockstep through one ``lax.while_loop`` (:func:`jaxinfer.optimize._iterate.iterate`)
and a lane that has terminated is frozen.

Small dense problems (n <= 8 parameters, exact J every iteration: the usual curve_fit) take
the *fused* path (``LevenbergMarquardt._fused``): each trial point is evaluated together with
its Jacobian (one ``jax.linearize``), so an accepted step carries the exact J and its factor
with it and the iteration's refresh has nothing left to do; run 2's internal run then steps
on the J of the point it reached. Under ``vmap`` every lane pays every branch at every step,
so this path keeps the step body to one evaluation, one small factorisation (Gram matrix,
Cholesky and an n x n Jacobi SVD; MGS where the Gram matrix would lose accuracy, see
:func:`jaxinfer.optimize.linear_solve.small_triangular`) and selects.

Driving it by hand::

    lm = LevenbergMarquardt()
    problem = LeastSquaresProblem(residuals)          # residuals(x, args) -> (m,)
    state = lm.init(problem, x0, args)
    while lm.terminate(problem, state, args) == RUNNING:
        state = lm.step(problem, state, args)
    result = lm.postprocess(problem, state, args, lm.terminate(problem, state, args))

Units: ``cost = 0.5 Σ r²`` (the residuals are already weighted); peri's "error" is the sum of
squares ``SSE = 2 cost``; ``errtol``, ``exptol``, ``delta_err`` and ``exp_err`` are in SSE
units, as in peri.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinfer.optimize._iterate import RUNNING, AbstractSolver, Progress
from jaxinfer.optimize.linear_solve import (SMALL_N, AbstractLinearSolver, DenseEigh,
                                            DenseSVD, NormalEquations, columns_for_memory,
                                            gram_sums, j_vec, jt_vec, msum, small_max,
                                            small_norm,
                                            normal_equations_by_columns,
                                            normal_equations_by_rows, rarely, rows_for_memory,
                                            vdot)
from jaxinfer.optimize.result import OptimizeResult, Status

__all__ = ["LevenbergMarquardt", "LMState", "LeastSquaresProblem", "Levenberg", "Marquardt",
           "Transtrum", "Minpack", "RunOne", "RunTwo", "FIRST", "SECOND", "RETRY", "RUN", "START",
           "eigen_update"]

FIRST, SECOND, RETRY, RUN, START = 0, 1, 2, 3, 4
STALL_RETRIES = 1  # damping retries left to a stalled fit (see LevenbergMarquardt._hopeless)


# --------------------------------------------------------------------------------------------
# the problem: residuals plus their feasible set (data, traced)


class LeastSquaresProblem(eqx.Module):
    """What LM minimises: ``0.5 Σ residuals(x, args)²`` over flat ``x`` (n,) in a box.

    residuals : ``(x (n,), args) -> (m,)`` (already weighted).
    jacobian : ``(x, args) -> (m, n)`` or None (autodiff: jacfwd if m >= n, else jacrev).
    chunk : ``(x, args, start, size) -> (size,)`` residual rows ``start..start+size``, or None;
        used by ``NormalEquations(max_mem=...)`` to accumulate JᵀJ over row chunks.
    normal_equations : ``(x (n,), args, r (m,)) -> (JᵀJ (n, n), Jᵀr (n,))`` at x with its
        residuals r, or None: LM then never forms J (a model that knows its normal equations,
        e.g. an image model summing per-tile products). It needs a linear solver with
        ``factor_normal`` (``NormalEquations``, 'cholesky' or 'eigh', with or without
        ``max_mem``, which is then unused); a dense solver (``DenseSVD``, ``DenseEigh``) and
        the Broyden / eigen updates are refused with a ValueError. As on the chunked path,
        J is None in the state and in the result, Jᵀb products use the vjp of ``residuals``
        and geodesic acceleration its jvp.
    mask : (n,) bool / 0-1 array or None: which parameters move (data: any mask of a shape
        shares one compile). lower, upper : (n,) arrays or None (±inf).
    """

    residuals: Callable = eqx.field(static=True)
    jacobian: Optional[Callable] = eqx.field(default=None, static=True)
    chunk: Optional[Callable] = eqx.field(default=None, static=True)
    normal_equations: Optional[Callable] = eqx.field(default=None, static=True)
    mask: Any = None
    lower: Any = None
    upper: Any = None


def _as_problem(fn) -> LeastSquaresProblem:
    return fn if isinstance(fn, LeastSquaresProblem) else LeastSquaresProblem(fn)


# --------------------------------------------------------------------------------------------
# numeric settings: data, not part of a compile key


def _concrete(value) -> bool:
    return not isinstance(value, jax.core.Tracer)


def _as_real(value):
    """A numeric setting as a 0-d float64 numpy array: ``eqx.filter_jit`` and the front doors'
    compile cache then trace it instead of keying on it. None and strings ('auto') stay as
    they are (structural), tracers too."""
    if value is None or isinstance(value, str) or not _concrete(value):
        return value
    return np.asarray(value, dtype=np.float64)


def _as_count(value):
    """An integer setting as a 0-d int32 numpy array (traced like :func:`_as_real`)."""
    if not _concrete(value):
        return value
    arr = np.asarray(value)
    if arr.ndim == 0 and arr.dtype.kind in "iuf" and np.isfinite(arr) and float(arr) == int(arr):
        return np.asarray(min(int(arr), 2 ** 31 - 1), dtype=np.int32)
    return arr   # refused with its name by _check_count


def _real_field(default):
    return eqx.field(default=default, converter=_as_real)


def _count_field(default):
    return eqx.field(default=default, converter=_as_count)


def _check_scalar(name, value):
    if isinstance(value, str) or value is None:
        return
    if jnp.ndim(value) != 0:
        raise ValueError(f"{name} must be a scalar, got shape {jnp.shape(value)}")


def _check_count(name, value, low):
    if not _concrete(value):
        return
    arr = np.asarray(value)
    if arr.ndim != 0 or arr.dtype.kind not in "iu" or int(arr) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


#: the float settings of LevenbergMarquardt (traced; see _as_real)
_REAL_SETTINGS = ("damping", "increase_damp_factor", "retry_escalation",
                  "decrease_damp_factor", "min_eigval", "max_accel_correction", "paramtol",
                  "errtol", "exptol", "fractol", "costol", "xtol", "gtol", "stall_costol")


# --------------------------------------------------------------------------------------------
# small variants: damping scale and step policy


class _DampingScale(eqx.Module):
    """d with damping metric diag(d²), from the column norms of J and the previous d."""

    def __call__(self, col_norms, prev_scale):
        scale = self.raw(col_norms, prev_scale)
        return jnp.where(scale > 0, scale, 1.0)


class Levenberg(_DampingScale):
    """Identity metric (peri's default)."""

    def raw(self, col_norms, prev_scale):
        return jnp.ones_like(col_norms)


class Marquardt(_DampingScale):
    """``diag(JᵀJ)`` (peri's ``marquardt_damping``)."""

    def raw(self, col_norms, prev_scale):
        return col_norms


class Transtrum(_DampingScale):
    """``max(diag(JᵀJ), floor)`` (peri's ``transtrum_damping``)."""

    floor: Any = _real_field(1e-6)

    def raw(self, col_norms, prev_scale):
        return jnp.sqrt(jnp.maximum(col_norms * col_norms,
                                    jnp.asarray(self.floor, col_norms.dtype)))


class Minpack(_DampingScale):
    """Running maximum of the column norms over the iterations (Moré 1978; our default)."""

    def raw(self, col_norms, prev_scale):
        return jnp.maximum(prev_scale, col_norms)


class RunOne(eqx.Module):
    """peri's ``do_run_1``: one trial with λ; after success λ /= decrease; retries on failure."""

    run_length = 0
    two_trials = False


class RunTwo(eqx.Module):
    """peri's ``do_run_2``: trials with λ and λ/decrease, keep the better (and its λ); retries;
    then an internal run of up to ``run_length`` steps on the same J."""

    run_length: Any = _count_field(5)     # traced: any run length shares one program
    two_trials = True


# --------------------------------------------------------------------------------------------
# the state


class Trial(eqx.Module):
    """One evaluated trial point: x (n,), r (m,) (None on the fused path), cost, step (n,),
    predicted cost decrease; factor: on the fused path (see ``LevenbergMarquardt``) the linear
    solver's partial factor of the exact J at x, which came with the evaluation, else None;
    ill: that factor is to be refined if the point is kept (fused path), else None."""

    x: jnp.ndarray
    r: Optional[jnp.ndarray]
    cost: jnp.ndarray
    step: jnp.ndarray
    predicted: jnp.ndarray
    accel_bad: jnp.ndarray
    factor: Any = None
    ill: Optional[jnp.ndarray] = None


class LMState(eqx.Module):
    """The public LM state (flat vectors; m residuals, n parameters).

    x, r, cost : iterate, weighted residuals, ``0.5 r·r``. jac : (m, n) Jacobian (exact or
    Broyden / eigen-updated). On the fused path (n <= 8) r and jac are None: the state holds
    nothing of size m (under ``vmap`` every select of an m-sized leaf is paid by every lane
    at every step); None too for ``NormalEquations(max_mem=...)``. ``postprocess`` gives J
    (m, n) and the residuals in both cases. factor : the
    linear solver's factor of J at x (``SpectralFactor`` / ``CholeskyFactor``; holds the
    gradient ``Jᵀr`` and the column norms). damping : λ. phase : FIRST / SECOND / RETRY / RUN.
    lam_try, tries, run_steps, accepted : bookkeeping of the current iteration. candidate :
    run 2's first trial while the second is made. x_start, cost_start : at the iteration's
    start. iteration, nfev, njev, njvp, partial_updates : counters. status : RUNNING (-1) or a
    Status code. delta_vals, delta_err, exp_err, frac_err, step_norm : peri's statistics of
    the last iteration. accepted_steps, rejected_steps, accel_rejections : step counters.
    robust, x_init : with ``plain_first`` (else None): whether this lane runs the configured
    policy and acceleration (after a restart), and the start x0 it restarts from.
    """

    x: jnp.ndarray
    r: Optional[jnp.ndarray]
    cost: jnp.ndarray
    jac: Optional[jnp.ndarray]
    factor: Any
    damping: jnp.ndarray
    phase: jnp.ndarray
    lam_try: jnp.ndarray
    tries: jnp.ndarray
    run_steps: jnp.ndarray
    accepted: jnp.ndarray
    candidate: Optional[Trial]
    x_start: jnp.ndarray
    cost_start: jnp.ndarray
    iteration: jnp.ndarray
    nfev: jnp.ndarray
    njev: jnp.ndarray
    njvp: jnp.ndarray
    partial_updates: jnp.ndarray
    status: jnp.ndarray
    delta_vals: jnp.ndarray
    delta_err: jnp.ndarray
    exp_err: jnp.ndarray
    frac_err: jnp.ndarray
    step_norm: jnp.ndarray
    accepted_steps: jnp.ndarray
    rejected_steps: jnp.ndarray
    accel_rejections: jnp.ndarray
    robust: Optional[jnp.ndarray] = None
    x_init: Optional[jnp.ndarray] = None


def _select(flag, a, b):
    return jax.tree_util.tree_map(lambda u, v: jnp.where(flag, u, v), a, b)


def eigen_update(jac, jvp, num_dirs: int):
    """Replace J's action on the ``num_dirs`` stiffest eigenvectors of JᵀJ by the exact one.

    ``jvp(v) -> (m,)`` is the exact directional derivative. The eigenvectors are the columns
    of V in ``JᵀJ = V Λ Vᵀ`` (peri used rows of V, which are not eigenvectors). They are
    orthonormal, so ``J + (J_true E - J E) Eᵀ`` agrees with the exact Jacobian on span(E) and
    with the old J on its orthogonal complement.
    """
    _, evecs = jnp.linalg.eigh(jac.T @ jac)
    dirs = evecs[:, ::-1][:, :num_dirs]
    true_cols = jax.vmap(jvp, out_axes=1)(dirs.T)
    return jac + (true_cols - jac @ dirs) @ dirs.T


def _auto(value, auto_value):
    if isinstance(value, str):
        if value != "auto":
            raise ValueError(f"tolerances are floats, None or 'auto'; got {value!r}")
        return auto_value
    return value


# --------------------------------------------------------------------------------------------
# the solver


class LevenbergMarquardt(AbstractSolver):
    """Levenberg–Marquardt settings (see :func:`jaxinfer.optimize.least_squares` for each).

    damping_scale : Levenberg() | Marquardt() | Transtrum(floor) | Minpack() (default).
    retry_escalation : the k-th consecutive retry of an iteration (k = 0, 1, ...) multiplies
    λ by ``increase_damp_factor · retry_escalation**k``; 1 is peri's constant factor, 2
    Nielsen's (1999) rule: a start whose Gauss-Newton step is far too long then reaches a
    working λ in about half the retries. None (default): 2 on the fused path (small fits,
    where under ``vmap`` every lane waits for the slowest one's retries), 1 otherwise.
    linear_solver : DenseSVD() (default) | DenseEigh() | NormalEquations(method, max_mem).
    policy : RunTwo(run_length) (default) | RunOne().
    trial_jacobian : True (default): for n <= 8 every trial point is evaluated with its
    Jacobian (the fused path: one pass gives r, J and the factor, best when J costs about as
    much as r, as for curve_fit's models, and under ``vmap``); False: J only at accepted
    points (one residual evaluation per rejected trial), for models whose J costs many
    residual evaluations (an image model's JVPs) and that run unbatched.
    plain_first : False (default) | True: every fit first runs plain LM (peri's run 1: one
    trial per iteration, no geodesic acceleration; MINPACK's algorithm), and a fit that
    fails (a status >= 20 other than CALLBACK) restarts from x0 with ``policy`` and
    ``use_accel``; nfev / njev / njvp count both runs, nit the last one,
    ``extra['restarted']`` says which. Under ``vmap`` the acceleration is computed only
    while some lane runs restarted (:func:`jaxinfer.optimize.linear_solve.rarely`), so a
    batch of easy fits pays for neither the second trial nor the acceleration. Fused path
    only (n <= 8, exact J); elsewhere the configured policy runs from the start.
    Tolerances are floats, None (test off) or 'auto' (dtype-aware: xtol ``10 ε^¾``,
    fractol ``64 ε``, stall_costol ``100 √ε``).
    """

    damping_scale: _DampingScale = Minpack()
    linear_solver: AbstractLinearSolver = DenseSVD()
    policy: Union[RunOne, RunTwo] = RunTwo()
    # numeric settings are data (0-d arrays, traced): fits that differ only in them share one
    # compiled program; None (a test off), 'auto' and the flags below are structural
    damping: Any = _real_field(1e-3)
    increase_damp_factor: Any = _real_field(3.0)
    retry_escalation: Any = _real_field(None)
    decrease_damp_factor: Any = _real_field(8.0)
    min_eigval: Any = _real_field(1e-13)
    use_accel: bool = eqx.field(default=False, static=True)
    plain_first: bool = eqx.field(default=False, static=True)
    trial_jacobian: bool = eqx.field(default=True, static=True)
    max_accel_correction: Any = _real_field(0.1875)
    broyden_update: bool = eqx.field(default=False, static=True)
    eig_update: bool = eqx.field(default=False, static=True)
    eig_update_frequency: int = eqx.field(default=3, static=True)
    num_eig_dirs: int = eqx.field(default=8, static=True)
    update_J_frequency: int = eqx.field(default=1, static=True)
    max_damping_retries: Any = _count_field(15)
    paramtol: Any = _real_field(None)
    errtol: Any = _real_field(None)
    exptol: Any = _real_field(None)
    fractol: Any = _real_field(None)
    costol: Any = _real_field(None)
    xtol: Any = _real_field("auto")
    gtol: Any = _real_field(None)
    stall_costol: Any = _real_field("auto")
    max_iter: Any = _count_field(200)

    def __check_init__(self):
        for name in _REAL_SETTINGS:
            _check_scalar(name, getattr(self, name))
        for name, low in (("max_damping_retries", 0), ("max_iter", 0)):
            _check_count(name, getattr(self, name), low)
        _check_count("run_length", self.policy.run_length, 0)
        for name, value, low in (("update_J_frequency", self.update_J_frequency, 1),
                                 ("eig_update_frequency", self.eig_update_frequency, 1),
                                 ("num_eig_dirs", self.num_eig_dirs, 1)):
            if int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, low, strict in (("increase_damp_factor", 1, True),
                                  ("decrease_damp_factor", 1, True),
                                  ("retry_escalation", 1, False)):
            value = getattr(self, name)
            if _concrete(value) and value is not None and not (
                    value > low if strict else value >= low):
                raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got "
                                 f"{float(value)}")
        if not self.linear_solver.dense() and (self.broyden_update or self.eig_update):
            raise ValueError("broyden_update and eig_update change the (m, n) Jacobian, which "
                             "NormalEquations(max_mem=...) never forms; use a dense linear "
                             "solver or switch the updates off")
        for name in ("fractol", "costol", "xtol", "gtol", "stall_costol"):
            _auto(getattr(self, name), None)

    # ---- settings resolved by dtype ------------------------------------------------------
    def _tols(self, dtype):
        """The numeric settings in the fit's dtype ('auto' resolved, None kept: test off)."""
        eps = float(jnp.finfo(dtype).eps)

        def cast(value):
            return None if value is None else jnp.asarray(value, dtype)

        return dict(fractol=cast(_auto(self.fractol, 64 * eps)),
                    xtol=cast(_auto(self.xtol, 10 * eps ** 0.75)),
                    gtol=cast(_auto(self.gtol, None)), costol=cast(_auto(self.costol, None)),
                    stall=cast(_auto(self.stall_costol, 100 * eps ** 0.5)),
                    paramtol=cast(self.paramtol), errtol=cast(self.errtol),
                    exptol=cast(self.exptol), min_eigval=cast(self.min_eigval),
                    max_accel=cast(self.max_accel_correction),
                    tiny=float(jnp.finfo(dtype).tiny), eps=eps)

    @property
    def _approx_jacobian(self):
        return self.broyden_update or self.eig_update or self.update_J_frequency > 1

    def _fused(self, prob: LeastSquaresProblem, n: int) -> bool:
        """Static: the fused path for small dense problems (n <= SMALL_N, exact J every
        iteration). Every trial point is evaluated together with its Jacobian and reduced to
        the Gram matrix, gradient and cost in one pass (:meth:`_evaluate`), so an accepted
        step brings the exact J's factor with it and no separate refresh follows; nothing of
        size m is kept in the state. Under ``vmap`` a refresh that only some lanes need
        is paid by all lanes at every step, so this is what makes a batch of tiny fits cheap.
        Larger problems evaluate J only once per iteration (a rejected trial then costs one
        residual evaluation, not a Jacobian)."""
        return (self.trial_jacobian and self._stores_jacobian(prob) and not self._approx_jacobian
                and n <= SMALL_N)

    def _plain(self, prob: LeastSquaresProblem, n: int) -> bool:
        """Static: ``plain_first`` applies (the fused path)."""
        return self.plain_first and self._fused(prob, n)

    def _stores_jacobian(self, prob: LeastSquaresProblem) -> bool:
        """Static: J (m, n) is formed (a dense solver, no ``normal_equations`` hook)."""
        return self.linear_solver.dense() and prob.normal_equations is None

    def check_problem(self, prob: LeastSquaresProblem) -> None:
        """Refuse a problem these settings cannot solve (before anything is traced)."""
        if prob.normal_equations is None:
            return
        if not callable(prob.normal_equations):
            raise TypeError("normal_equations must be callable (x, args, r) -> (JᵀJ, Jᵀr) or "
                            "None")
        if not hasattr(self.linear_solver, "factor_normal"):
            raise ValueError(
                f"normal_equations gives JᵀJ and Jᵀr, which the dense linear solver "
                f"{type(self.linear_solver).__name__} cannot use (it factors J itself): use "
                f"linear_solver=NormalEquations('cholesky') or NormalEquations('eigh')")
        if self.broyden_update or self.eig_update:
            raise ValueError("broyden_update and eig_update change the (m, n) Jacobian, which "
                             "a problem with normal_equations never forms; switch them off")

    # ---- the problem's pieces --------------------------------------------------------------
    @staticmethod
    def _bounds(prob: LeastSquaresProblem, x):
        lo = jnp.full_like(x, -jnp.inf) if prob.lower is None else jnp.asarray(prob.lower, x.dtype)
        hi = jnp.full_like(x, jnp.inf) if prob.upper is None else jnp.asarray(prob.upper, x.dtype)
        return lo, hi

    @staticmethod
    def _mask(prob: LeastSquaresProblem, x):
        if prob.mask is None:
            return jnp.ones_like(x)
        return jnp.asarray(prob.mask).astype(x.dtype)

    @staticmethod
    def _fun(prob, x, args):
        return jnp.ravel(prob.residuals(x, args)).astype(x.dtype)

    def _value_and_jacobian(self, prob, x, args, m):
        """(r (m,), J (m, n)) at x from one evaluation: n <= SMALL_N by ``jax.linearize`` and
        one tangent per parameter (unrolled: under ``vmap`` ``jacfwd``'s batched tangents
        cost ~2x more); else jacfwd if m >= n, jacrev otherwise."""
        n = x.shape[0]
        fun = lambda z: self._fun(prob, z, args)  # noqa: E731
        if prob.jacobian is not None:
            return fun(x), jnp.reshape(jnp.asarray(prob.jacobian(x, args), x.dtype), (m, n))
        if n <= SMALL_N:
            r, cols = self._residuals_and_columns(prob, x, args)
            return r, jnp.stack(cols, axis=1)

        def with_aux(z):
            r = fun(z)
            return r, r

        jac, r = (jax.jacfwd if m >= n else jax.jacrev)(with_aux, has_aux=True)(x)
        return r, jac

    def _jacobian(self, prob, x, args, m):
        return self._value_and_jacobian(prob, x, args, m)[1]

    def _residuals_and_columns(self, prob, x, args):
        """(r (m,), J's columns: a list of n (m,) arrays) at x, n <= SMALL_N: ``jax.linearize``
        and one tangent per parameter (unrolled: under ``vmap`` ``jacfwd``'s batched tangents
        cost ~2x more)."""
        if prob.jacobian is not None:
            r = self._fun(prob, x, args)
            jac = jnp.reshape(jnp.asarray(prob.jacobian(x, args), x.dtype), (r.shape[0], -1))
            return r, [jac[:, k] for k in range(x.shape[0])]
        r, lin = jax.linearize(lambda z: self._fun(prob, z, args), x)
        eye = jnp.eye(x.shape[0], dtype=x.dtype)
        return r, [lin(eye[k]) for k in range(x.shape[0])]

    def _evaluate(self, prob, x, args, prev_scale):
        """The fused path's evaluation at x: (cost, the linear solver's factor of the exact J
        at x, ill), from one pass over the residuals (:func:`gram_sums`: r, J's columns and
        their n(n+3)/2 + 1 sums in one variadic reduce; nothing of size m survives it).
        ``ill``: the factor wants :meth:`_refined` if the point is kept."""
        r, cols = self._residuals_and_columns(prob, x, args)
        gram, g, rr = gram_sums(cols, r)
        scale = self.damping_scale(jnp.sqrt(jnp.maximum(
            jnp.stack([gram[k][k] for k in range(len(g))]), 0.0)), prev_scale)
        partial, ill = self.linear_solver.factor_gram(gram, g, scale,
                                                      self._free(prob, x, jnp.stack(g)))
        return 0.5 * rr, partial, ill

    def _kept_factor(self, prob, args, tr: Trial, keep):
        """The factor of trial ``tr`` (fused path: ``tr.factor`` is the linear solver's partial
        factor): refined from J's columns where ``keep`` and the Gram matrix was too
        ill-conditioned (:meth:`AbstractLinearSolver.refine`; under ``vmap`` the columns are
        evaluated again only when some lane keeps such a point), then finished. Only the
        point kept is finished: the program holds one copy of the factorisation."""
        def refine(x, partial):
            r, cols = self._residuals_and_columns(prob, x, args)
            return self.linear_solver.refine(partial, jnp.stack(cols), r)

        return self.linear_solver.finish(
            rarely(keep & tr.ill, refine, (tr.x, tr.factor), tr.factor))

    def _free(self, prob, x, g):
        """1 for parameters free to move: in the mask and not held at a bound by the gradient
        (an active-set projected step, refreshed with every factorisation)."""
        lo, hi = self._bounds(prob, x)
        held = ((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))
        return jnp.where(held, 0.0, self._mask(prob, x))

    def _linearise(self, prob, x, args, r, prev_scale):
        """(jac or None, factor) at x with residuals r."""
        solver = self.linear_solver
        n = x.shape[0]
        if prob.normal_equations is not None:
            jtj, jtr = prob.normal_equations(x, args, r)
            jtj, jtr = jnp.asarray(jtj, x.dtype), jnp.asarray(jtr, x.dtype)
            if jtj.shape != (n, n) or jtr.shape != (n,):
                raise ValueError(f"normal_equations must return JᵀJ of shape {(n, n)} and Jᵀr "
                                 f"of shape {(n,)}, got {jtj.shape} and {jtr.shape}")
        elif solver.dense():
            jac = self._jacobian(prob, x, args, r.shape[0])
            return jac, self._factor_dense(prob, x, jac, r, prev_scale)
        elif prob.chunk is not None:
            rows = rows_for_memory(solver.max_mem, n, jnp.dtype(x.dtype).itemsize)
            jtj, jtr = normal_equations_by_rows(prob.chunk, x, args, r.shape[0], rows)
        else:
            block = columns_for_memory(solver.max_mem, r.shape[0], jnp.dtype(x.dtype).itemsize)
            jtj, jtr, _ = normal_equations_by_columns(lambda z: self._fun(prob, z, args), x,
                                                      block)
        col_norms = jnp.sqrt(jnp.maximum(jnp.diagonal(jtj), 0.0))
        scale = self.damping_scale(col_norms, prev_scale)
        free = self._free(prob, x, jtr)
        return None, solver.factor_normal(jtj, jtr, scale, free)

    def _factor_dense(self, prob, x, jac, r, prev_scale):
        """The linear solver's factor of the (m, n) J at x with residuals r."""
        g = jt_vec(jac, r)
        scale = self.damping_scale(jnp.sqrt(jnp.sum(jac * jac, axis=0)), prev_scale)
        return self.linear_solver.factor_dense(jac, r, scale, self._free(prob, x, g))

    def _jt(self, prob, st: LMState, args, b):
        """Jᵀ b (n,) with the state's J (the exact J at x when J is not stored)."""
        if st.jac is not None:
            return jt_vec(st.jac, b)
        _, pullback = jax.vjp(lambda z: self._fun(prob, z, args), st.x)
        return pullback(b)[0]

    # ---- statistics --------------------------------------------------------------------------
    @staticmethod
    def _rnorm(st: LMState):
        """|r| (from the cost where the state holds no residuals: the fused path)."""
        return jnp.sqrt(2 * st.cost) if st.r is None else small_norm(st.r)

    def _model_cosine(self, st: LMState, tiny):
        return st.factor.projected_norm() / jnp.maximum(self._rnorm(st), tiny)

    def _grad_cosine(self, prob, st: LMState):
        g, norms = st.factor.g, st.factor.col_norms
        denom = norms * self._rnorm(st)
        cos = jnp.where(denom > 0, jnp.abs(g) / jnp.where(denom > 0, denom, 1.0), 0.0)
        lo, hi = self._bounds(prob, st.x)
        blocked = ((st.x <= lo) & (g > 0)) | ((st.x >= hi) & (g < 0))
        cos = jnp.where(blocked | (self._mask(prob, st.x) == 0), 0.0, cos)
        return small_max(cos)

    def _gauss_newton_small(self, prob, st: LMState, t):
        """Is the undamped (Gauss-Newton) step from x below xtol, relative, in the d-norm?
        Not while residuals lie along directions dropped by min_eigval (a plateau)."""
        rnorm = self._rnorm(st)
        gn_norm, dropped = st.factor.gauss_newton(t["min_eigval"], rnorm)
        plateau = dropped > 100 * t["eps"] ** 0.5 * rnorm
        xnorm = small_norm(st.factor.scale * st.x * self._mask(prob, st.x))
        return (gn_norm <= t["xtol"] * (xnorm + t["xtol"])) & ~plateau

    def _check(self, prob, st: LMState, accepted, t, jacobian_tests=True, damping_failure=True):
        status = jnp.asarray(RUNNING, jnp.int32)

        def put(cond, code, status):
            return jnp.where(cond, jnp.int32(int(code)), status)

        # later assignments take precedence: from weakest to strongest evidence
        if t["exptol"] is not None:
            status = put(accepted & (st.exp_err < t["exptol"]), Status.EXPTOL, status)
        if t["errtol"] is not None:
            status = put(accepted & (st.delta_err < t["errtol"]), Status.ERRTOL, status)
        if t["fractol"] is not None:
            rel_pred = st.exp_err / jnp.maximum(2 * st.cost, t["tiny"])
            status = put(accepted & (st.frac_err < t["fractol"]) & (rel_pred < t["fractol"]),
                         Status.FRACTOL, status)
        if t["paramtol"] is not None:
            status = put(accepted & (st.delta_vals < t["paramtol"]), Status.XTOL, status)
        if t["xtol"] is not None and jacobian_tests:
            status = put(self._gauss_newton_small(prob, st, t), Status.XTOL, status)
        if t["costol"] is not None and jacobian_tests:
            status = put(self._model_cosine(st, t["tiny"]) < t["costol"], Status.COSTOL, status)
        if t["gtol"] is not None and jacobian_tests:
            status = put(self._grad_cosine(prob, st) <= t["gtol"], Status.GTOL, status)
        status = put(st.cost <= t["tiny"], Status.ZERO_RESIDUAL, status)
        stalled = ~accepted | (st.delta_err <= 0)
        if t["stall"] is not None and jacobian_tests:
            # no damping decreased the cost: at a minimum to working precision if the
            # Gauss-Newton step could reduce the cost by at most a fraction stall_costol²
            status = put((status == RUNNING) & stalled
                         & (self._model_cosine(st, t["tiny"]) < t["stall"]), Status.COSTOL, status)
        if damping_failure:
            status = put((status == RUNNING) & stalled, Status.DAMPING, status)
        status = put((status == RUNNING) & ~jnp.isfinite(st.cost), Status.NONFINITE, status)
        status = put((status == RUNNING) & (st.iteration >= self.max_iter), Status.MAX_ITER,
                     status)
        return status

    def _hopeless(self, st: LMState, tries, t):
        """Stop retrying a stalled fit after STALL_RETRIES: when the Gauss-Newton step could
        lower the cost by at most a fraction stall_costol² (the stall test then ends the fit as
        COSTOL anyway), more damping only proves that nothing decreases the cost. Under vmap
        every lane waits for the slowest, so this matters. Only trusted on an exact J."""
        if t["stall"] is None:
            return jnp.asarray(False)
        exact = (st.partial_updates == 0) if self._approx_jacobian else jnp.asarray(True)
        return exact & (tries >= STALL_RETRIES) & (self._model_cosine(st, t["tiny"]) < t["stall"])

    # ---- one trial -------------------------------------------------------------------------
    def _trial(self, prob, st: LMState, args, lam, t, start=None) -> Trial:
        """The trial point for damping ``lam``; where ``start`` (phase START), x itself."""
        lo, hi = self._bounds(prob, st.x)
        fac = st.factor
        fused = self._fused(prob, st.x.shape[0])
        step = fac.solve(lam, t["min_eigval"])
        accel_bad = jnp.asarray(False)
        if self.use_accel:
            def accel(x, step, fac, lam):
                """(the geodesic correction or 0 where refused, refused)"""
                fun = lambda z: self._fun(prob, z, args)  # noqa: E731
                inner = lambda y: jax.jvp(fun, (y,), (step,))[1]  # noqa: E731
                rpp = jax.jvp(inner, (x,), (step,))[1]
                if fused:   # Jᵀ r'' from J's columns at x, in one reduce with r''
                    jt_rpp = jnp.stack(msum([c * rpp for c in
                                             self._residuals_and_columns(prob, x, args)[1]]))
                else:
                    jt_rpp = self._jt(prob, st, args, rpp)
                corr = 0.5 * fac.solve_for(lam, t["min_eigval"], rpp, jt_rpp)
                ratio = small_norm(fac.scale * corr) / jnp.maximum(
                    small_norm(fac.scale * step), t["tiny"])
                bad = ~(ratio <= t["max_accel"])
                return jnp.where(bad, 0.0, corr), bad

            if self._plain(prob, st.x.shape[0]):   # only lanes that restarted accelerate
                corr, accel_bad = rarely(st.robust, accel, (st.x, step, fac, lam),
                                         (jnp.zeros_like(step), jnp.asarray(False)))
            else:
                corr, accel_bad = accel(st.x, step, fac, lam)
            step = step + corr
        if start is not None:
            step = jnp.where(start, 0.0, step)
            accel_bad = accel_bad & ~start
        x_new = jnp.clip(st.x + step, lo, hi)
        step = x_new - st.x
        factor_new = r_new = ill = None
        if fused:
            cost_new, factor_new, ill = self._evaluate(prob, x_new, args, fac.scale)
        else:
            r_new = self._fun(prob, x_new, args)
            cost_new = 0.5 * vdot(r_new, r_new)
        # a trial whose acceleration was refused is the plain LM step (evaluated all the
        # same): it stands or falls on its own cost
        cost_new = jnp.where(jnp.isfinite(cost_new), cost_new, jnp.inf)
        if st.jac is not None:
            lin = st.r + j_vec(st.jac, step)
            predicted = st.cost - 0.5 * vdot(lin, lin)
        else:
            y = step * fac.scale * fac.free
            predicted = -(vdot(step, fac.g) + 0.5 * fac.scaled_gram_quadratic(y))
        return Trial(x_new, r_new, cost_new, step, predicted, accel_bad, factor_new, ill)

    def _accept(self, prob, st: LMState, args, tr: Trial, lam, need_g=None) -> LMState:
        """The state at the kept trial ``tr`` with damping ``lam``; ``need_g`` (traced bool or
        None: always): where J is not stored, whether the gradient at the new point is
        wanted (else the old one is kept, to be replaced by the iteration's refresh)."""
        count = st.partial_updates + 1
        njvp = st.njvp
        if tr.factor is not None:   # fused: the trial brought the factor of its exact J
            jac, factor = None, tr.factor
            count = jnp.zeros_like(count)
        elif self.broyden_update or self.eig_update:
            jac = st.jac
            if self.broyden_update:
                ss = jnp.dot(tr.step, tr.step)
                upd = jnp.outer(tr.r - st.r - jac @ tr.step, tr.step) / jnp.maximum(
                    ss, jnp.finfo(ss.dtype).tiny)
                jac = jnp.where(ss > 0, jac + upd, jac)
            if self.eig_update:
                n_eig = min(int(self.num_eig_dirs), st.x.shape[0])
                fun = lambda z: self._fun(prob, z, args)  # noqa: E731

                def do_eig(j):
                    return eigen_update(j, lambda v: jax.jvp(fun, (tr.x,), (v,))[1], n_eig)

                due = (count % self.eig_update_frequency) == 0
                jac = lax.cond(due, do_eig, lambda j: j, jac)
                njvp = njvp + jnp.where(due, n_eig, 0)
            factor = self._factor_dense(prob, tr.x, jac, tr.r, st.factor.scale)
        else:
            jac = st.jac
            if jac is not None:
                g = jt_vec(jac, tr.r)
            else:   # J not stored: the exact gradient at the new point, JᵀJ reused
                def vjp_g():
                    return jax.vjp(lambda z: self._fun(prob, z, args), tr.x)[1](tr.r)[0]

                g = vjp_g() if need_g is None else lax.cond(need_g, vjp_g,
                                                            lambda: st.factor.g)
            factor = st.factor.with_residuals(tr.r, g)
        return eqx.tree_at(
            lambda s: (s.x, s.r, s.cost, s.jac, s.factor, s.njvp, s.partial_updates, s.damping,
                       s.exp_err, s.accepted_steps),
            st, (tr.x, tr.r, tr.cost, jac, factor, njvp, count, lam, 2 * tr.predicted,
                 st.accepted_steps + 1), is_leaf=lambda v: v is None)

    def _refresh(self, prob, st: LMState, args) -> LMState:
        """Exact J at x and its factor."""
        jac, factor = self._linearise(prob, st.x, args, st.r, st.factor.scale)
        return eqx.tree_at(lambda s: (s.jac, s.factor, s.njev, s.partial_updates), st,
                           (jac, factor, st.njev + 1, jnp.zeros_like(st.partial_updates)),
                           is_leaf=lambda v: v is None)

    def _end_iteration(self, prob, st: LMState, args) -> LMState:
        t = self._tols(st.x.dtype)
        it = st.iteration + 1
        accepted = st.accepted
        st = eqx.tree_at(lambda s: (s.iteration, s.damping), st,
                         (it, jnp.where(accepted, st.damping, st.lam_try)))
        if self._fused(prob, st.x.shape[0]):
            pass                    # J is the exact one at x already (it came with the step)
        elif self.update_J_frequency == 1:
            st = self._refresh(prob, st, args)
        else:
            due = ((it % self.update_J_frequency) == 0) & accepted
            st = lax.cond(due, lambda s: self._refresh(prob, s, args), lambda s: s, st)
        dx = st.x - st.x_start
        sse0 = 2 * st.cost_start
        delta_err = sse0 - 2 * st.cost
        st = eqx.tree_at(
            lambda s: (s.delta_vals, s.delta_err, s.frac_err, s.step_norm), st,
            (small_max(jnp.abs(dx)), delta_err, delta_err / jnp.maximum(sse0, t["tiny"]),
             small_norm(st.factor.scale * dx)))
        status = self._check(prob, st, accepted, t)
        if self._approx_jacobian:
            # a test passed on an approximate J is not trusted: refresh J and test again (and a
            # failure to decrease the cost on an approximate J is retried on the exact one)
            without_j = self._check(prob, st, accepted, t, jacobian_tests=False)
            recheck = ((status != without_j) | ~accepted) & (st.partial_updates > 0)
            st = lax.cond(recheck, lambda s: self._refresh(prob, s, args), lambda s: s, st)
            status = jnp.where(recheck, self._check(prob, st, accepted, t, damping_failure=False),
                               status)
        zero = jnp.zeros_like(st.tries)
        return eqx.tree_at(
            lambda s: (s.status, s.phase, s.tries, s.run_steps, s.accepted, s.x_start,
                       s.cost_start, s.lam_try),
            st, (status, jnp.full_like(st.phase, FIRST), zero, zero, jnp.asarray(False),
                 st.x, st.cost, st.damping))

    def _branch(self, n, pred, fn, st: LMState) -> LMState:
        """``fn(st)`` where ``pred``, else ``st``: a ``lax.cond`` (a real branch unbatched, a
        select under ``vmap``). With nothing of size m in the fused path's state the select is
        cheap, and the separate branches compile faster than one select of both sides."""
        return lax.cond(pred, fn, lambda s: s, st)

    # ---- the solver shape ------------------------------------------------------------------
    def init(self, fn, x0, args) -> LMState:
        prob = _as_problem(fn)
        self.check_problem(prob)
        x0 = jnp.asarray(x0)
        if x0.ndim != 1 or not jnp.issubdtype(x0.dtype, jnp.inexact):
            raise ValueError(f"LevenbergMarquardt works on a flat float vector x0, got shape "
                             f"{x0.shape} and dtype {x0.dtype}")
        t = self._tols(x0.dtype)
        lo, hi = self._bounds(prob, x0)
        x = jnp.clip(x0, lo, hi)
        n = x.shape[0]
        fused = self._fused(prob, n)
        if fused:
            # x0 is evaluated by the first step (phase START), the same code as every other
            # trial: the program holds one copy of the evaluation and the factorisation
            r = jac = None
            cost, partial, _ = jax.tree_util.tree_map(
                lambda a: jnp.zeros(a.shape, a.dtype),
                jax.eval_shape(lambda: self._evaluate(prob, x, args, jnp.zeros_like(x))))
            factor = jax.tree_util.tree_map(
                lambda a: jnp.zeros(a.shape, a.dtype),
                jax.eval_shape(lambda: self.linear_solver.finish(partial)))
        else:
            r = self._fun(prob, x, args)
            jac, factor = self._linearise(prob, x, args, r, jnp.zeros((n,), x.dtype))
            cost = 0.5 * vdot(r, r)
        izero = jnp.zeros((), jnp.int32)
        zero = jnp.zeros((), x.dtype)
        lam = jnp.asarray(self.damping, x.dtype)
        candidate = None
        if self.policy.two_trials:
            candidate = Trial(x, r, jnp.asarray(jnp.inf, x.dtype), jnp.zeros_like(x), zero,
                              jnp.asarray(False), partial if fused else None,
                              jnp.asarray(False) if fused else None)
        evaluated = jnp.zeros((), jnp.int32) if fused else jnp.ones((), jnp.int32)
        plain = self._plain(prob, n)
        st = LMState(x=x, r=r, cost=cost, jac=jac, factor=factor, damping=lam,
                     phase=jnp.asarray(START if fused else FIRST, jnp.int32), lam_try=lam,
                     tries=izero, run_steps=izero, accepted=jnp.asarray(False),
                     candidate=candidate, x_start=x, cost_start=cost, iteration=izero,
                     nfev=evaluated, njev=evaluated, njvp=izero,
                     partial_updates=izero, status=jnp.asarray(RUNNING, jnp.int32),
                     delta_vals=zero, delta_err=zero, exp_err=zero, frac_err=zero,
                     step_norm=zero, accepted_steps=izero, rejected_steps=izero,
                     accel_rejections=izero,
                     robust=jnp.asarray(False) if plain else None,
                     x_init=x if plain else None)
        if fused:
            return st
        return eqx.tree_at(lambda s: s.status, st, self._initial_status(prob, st, t))

    def _initial_status(self, prob, st: LMState, t):
        """Status at x0 (once x0 is evaluated and factored): NONFINITE, ZERO_RESIDUAL, GTOL,
        XTOL, MAX_ITER (max_iter <= 0) or RUNNING."""
        finite = (jnp.isfinite(st.cost) & jnp.all(jnp.isfinite(st.factor.g))
                  & jnp.all(jnp.isfinite(st.factor.col_norms)))
        if st.jac is not None:
            finite = finite & jnp.all(jnp.isfinite(st.jac))
        status = jnp.where(~finite, int(Status.NONFINITE), RUNNING)
        status = jnp.where(st.cost <= t["tiny"], int(Status.ZERO_RESIDUAL), status)
        if t["gtol"] is not None:
            status = jnp.where((status == RUNNING) & (self._grad_cosine(prob, st) <= t["gtol"]),
                               int(Status.GTOL), status)
        if t["xtol"] is not None:
            status = jnp.where((status == RUNNING) & self._gauss_newton_small(prob, st, t),
                               int(Status.XTOL), status)
        status = jnp.where((status == RUNNING) & (self.max_iter <= 0), int(Status.MAX_ITER),
                           status)
        return status.astype(jnp.int32)

    def _started(self, prob, st: LMState, accepted: LMState, t) -> LMState:
        """After phase START: ``accepted`` holds x0's residuals, J and factor (the zero-step
        trial, taken unconditionally); the counters of a step are undone and the initial
        status set. The first iteration follows."""
        started = eqx.tree_at(
            lambda s: (s.damping, s.exp_err, s.accepted_steps, s.njvp, s.phase, s.x_start,
                       s.cost_start),
            accepted, (st.damping, st.exp_err, st.accepted_steps, st.njvp,
                       jnp.asarray(FIRST, jnp.int32), accepted.x, accepted.cost))
        return eqx.tree_at(lambda s: s.status, started,
                           self._initial_status(prob, started, t))

    def step(self, fn, st: LMState, args) -> LMState:
        prob = _as_problem(fn)
        t = self._tols(st.x.dtype)
        dtype = st.x.dtype
        inc = jnp.asarray(self.increase_damp_factor, dtype)
        dec = jnp.asarray(self.decrease_damp_factor, dtype)
        esc = self.retry_escalation
        if esc is None:
            esc = 2.0 if self._fused(prob, st.x.shape[0]) else 1.0
        esc = jnp.asarray(esc, dtype)
        two = self.policy.two_trials
        internal = self.policy.run_length
        phase = st.phase
        is_first, is_second = phase == FIRST, phase == SECOND
        is_retry, is_run = phase == RETRY, phase == RUN

        lam = jnp.where(is_second, st.damping / dec,
                        jnp.where(is_retry, st.lam_try * inc * esc ** st.tries, st.damping))
        fused = self._fused(prob, st.x.shape[0])
        is_start = (phase == START) if fused else None
        tr = self._trial(prob, st, args, lam, t, start=is_start)

        plain = self._plain(prob, st.x.shape[0])
        if two and plain:
            # plain_first: run 2 only in the lanes that restarted, run 1 in the others
            two_l = st.robust
            pick_new = tr.cost < st.candidate.cost
            best = _select(two_l & is_second & ~pick_new, st.candidate, tr)
            lam_first = jnp.where(two_l, jnp.where(pick_new, lam, st.damping), lam / dec)
            resolving = jnp.where(two_l, is_second, is_first)
            waiting = two_l & is_first
            internal = jnp.where(two_l, internal, jnp.zeros_like(internal))
            lam_keep = jnp.where(resolving, lam_first,
                                 jnp.where(is_retry & ~two_l, lam / dec, lam))
        elif two:
            pick_new = tr.cost < st.candidate.cost
            best = _select(is_second & ~pick_new, st.candidate, tr)
            lam_first = jnp.where(pick_new, lam, st.damping)
            resolving = is_second
            waiting = is_first           # run 2's first trial: keep it, try the second
            lam_keep = jnp.where(resolving, lam_first, lam)
        else:
            best = tr
            lam_first = lam / dec
            resolving = is_first
            waiting = jnp.asarray(False)
            lam_keep = jnp.where(resolving, lam_first, jnp.where(is_retry, lam / dec, lam))
        if fused:
            # the fused path's internal run steps on a fresh exact J each time: a success
            # whose cost fell by at least 3/4 of the predicted decrease (the quadratic model
            # is trusted there, as in MINPACK's trust-region rule) lowers λ instead of
            # keeping it; on a poorly modelled step (non-zero residual, overshooting
            # Gauss-Newton steps) λ stays
            trusted = (st.cost - tr.cost) >= 0.75 * tr.predicted
            lam_keep = jnp.where(is_run & trusted, lam / dec, lam_keep)
        # at the rounding floor the cost cannot tell a step that lowers it by less than its
        # own rounding from one that raises it by as much: there the model (which predicts a
        # decrease) decides, so the last Gauss-Newton step to the minimum is not refused by
        # the luck of a summation order (the xtol test then ends the fit)
        good = (best.cost <= st.cost) | ((best.predicted > 0) & (
            best.cost - st.cost <= 4 * t["eps"] * st.cost))

        counted = eqx.tree_at(
            lambda s: (s.nfev, s.njev, s.njvp, s.accel_rejections, s.rejected_steps), st,
            (st.nfev + 1, st.njev + (1 if fused else 0),
             st.njvp + ((st.robust.astype(jnp.int32) if plain else 1) if self.use_accel
                        else 0),
             st.accel_rejections + tr.accel_bad.astype(jnp.int32),
             st.rejected_steps + ((resolving | is_retry) & ~good).astype(jnp.int32)))
        if two:
            counted = eqx.tree_at(lambda s: s.candidate, counted,
                                  _select(waiting, tr, st.candidate))
        take = good & ~waiting
        if fused:
            take = take | is_start
            best = eqx.tree_at(lambda b: b.factor, best, self._kept_factor(prob, args, best, take))
        tries = st.tries + is_retry.astype(st.tries.dtype)
        run_steps = st.run_steps + is_run.astype(st.run_steps.dtype)
        go_run = good & jnp.where(is_run, run_steps < internal, internal > 0)
        # J not stored (normal equations by chunks or by the problem's hook), J refreshed at
        # every iteration's end: the new point's gradient (a vjp) is needed only if an
        # internal-run step follows on the same JᵀJ; otherwise the refresh replaces it
        need_g = (go_run if (not fused and st.jac is None and self.update_J_frequency == 1)
                  else None)
        new = self._branch(st.x.shape[0], take,
                           lambda s: self._accept(prob, s, args, best, lam_keep, need_g),
                           counted)
        evaluated = new

        accepted = jnp.where(resolving, good, st.accepted | (good & ~waiting))
        retry_ok = (jnp.where(resolving, self.max_damping_retries > 0,
                              tries < self.max_damping_retries) & ~self._hopeless(new, tries, t))
        go_retry = ~good & retry_ok & (resolving | is_retry)
        if fused and t["xtol"] is not None:
            # the fused path has the exact J at every accepted point: an internal run stops
            # as soon as the Gauss-Newton step there passes the xtol test (the iteration's
            # end then reports XTOL) instead of stepping on at the rounding floor
            go_run = go_run & ~(take & self._gauss_newton_small(prob, new, t))
        go = waiting | go_retry | go_run
        next_phase = jnp.where(waiting, SECOND, jnp.where(go_retry, RETRY, RUN)).astype(jnp.int32)
        lam_try = jnp.where(resolving, st.damping, jnp.where(is_retry, lam, st.lam_try))
        new = eqx.tree_at(lambda s: (s.phase, s.tries, s.run_steps, s.accepted, s.lam_try), new,
                          (next_phase, tries, run_steps, accepted, lam_try))
        new = self._branch(st.x.shape[0], ~go, lambda s: self._end_iteration(prob, s, args),
                           new)
        if fused:
            new = _select(is_start, self._started(prob, st, evaluated, t), new)
        if plain:
            new = self._restart_failed(prob, new, args)
        return new

    def _restart_failed(self, prob, st: LMState, args) -> LMState:
        """plain_first: a lane whose plain run failed starts again from x0 with the
        configured policy and acceleration. Only what the START phase reads is reset (the
        rest it overwrites; counters carry over): under ``vmap`` a select of the whole
        state at every step would cost more."""
        failed = ((st.status >= 20) & (st.status != int(Status.CALLBACK))) & ~st.robust
        lam = jnp.asarray(self.damping, st.x.dtype)
        zero = jnp.zeros_like(st.tries)
        fresh = (st.x_init, jnp.asarray(START, jnp.int32), jnp.asarray(RUNNING, jnp.int32),
                 jnp.asarray(True), lam, lam, zero, zero, jnp.asarray(False), zero,
                 jnp.zeros_like(st.factor.scale))   # the damping scale's running max too
        fields = lambda s: (s.x, s.phase, s.status, s.robust, s.damping, s.lam_try,  # noqa: E731
                            s.tries, s.run_steps, s.accepted, s.iteration, s.factor.scale)
        return eqx.tree_at(fields, st, _select(failed, fresh, fields(st)))

    def terminate(self, fn, state: LMState, args):
        return state.status

    def postprocess(self, fn, st: LMState, args, status) -> OptimizeResult:
        prob = _as_problem(fn)
        t = self._tols(st.x.dtype)
        final = st
        njev = st.njev
        if self._approx_jacobian:
            final = self._refresh(prob, st, args)
            njev = final.njev
        extra = {
            "delta_vals": st.delta_vals, "delta_err": st.delta_err, "exp_err": st.exp_err,
            "frac_err": st.frac_err, "num_iter": st.iteration,
            "model_cosine": self._model_cosine(st, t["tiny"]),
            "grad_cosine": self._grad_cosine(prob, final), "damping": st.damping,
            "num_jvp": st.njvp, "accepted_steps": st.accepted_steps,
            "rejected_steps": st.rejected_steps, "accel_rejections": st.accel_rejections,
            "residuals": st.r, "cost": st.cost, "gradient": final.factor.g,
        }
        if st.robust is not None:
            extra["restarted"] = st.robust
        jac = final.jac
        if self._fused(prob, st.x.shape[0]):   # nothing of size m in the state: J and r again at x
            residuals, cols = self._residuals_and_columns(prob, st.x, args)
            jac = jnp.stack(cols, axis=1)
            extra["residuals"] = residuals
        return OptimizeResult(x=st.x, fun=st.cost, jac=jac, status=status,
                              nit=st.iteration, nfev=st.nfev, njev=njev, extra=extra)

    def progress(self, state: LMState) -> Progress:
        return Progress(nit=state.iteration, fun=state.cost, x=state.x)
