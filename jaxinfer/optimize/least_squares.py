"""``least_squares``: the front door of the Levenberg–Marquardt solver.

It maps the user's call (a pytree ``x0``, ``residuals(x, *args)``, peri's and scipy's option
strings) onto a :class:`~jaxinfer.optimize.lm.LevenbergMarquardt` (settings) and a
:class:`~jaxinfer.optimize.lm.LeastSquaresProblem` (residuals, mask, bounds) and runs it with
the one driver :func:`~jaxinfer.optimize._iterate.iterate`. The algorithm, its phases and
its statistics are documented in :mod:`jaxinfer.optimize.lm`; the linear algebra in
:mod:`jaxinfer.optimize.linear_solve`.

Compile boundary (for caching and implicit differentiation): :func:`_least_squares_solve`
``(static, x0_flat, args, mask, lower, upper, weights, callback)`` where ``static`` (a
:class:`LeastSquaresStatic`, hashable: the user's callables, the pytree structure of x0 and
the solver settings) is the only non-array argument, and every other argument is an array or
a pytree of arrays (traced). ``jax.jit(_least_squares_solve, static_argnums=(0, 7))`` compiles
once per ``static`` and array shapes.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable, NamedTuple, Optional, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.sparse.linalg
from jax import lax
from jax.experimental import io_callback
from jax.flatten_util import ravel_pytree

from jaxinfer.optimize._compile import is_traced, run_compiled
from jaxinfer.optimize._iterate import (PROGRESS_SINK, RUNNING, AbstractSolver, Progress,
                                        iterate, progress_to)
from jaxinfer.optimize._pytree import _as_float
from jaxinfer.optimize.implicit import implicit_least_squares
from jaxinfer.optimize.linear_solve import (AbstractLinearSolver, DenseEigh, DenseSVD,
                                            NormalEquations)
from jaxinfer.optimize.lm import (LeastSquaresProblem, Levenberg, LevenbergMarquardt,
                                  Marquardt, Minpack, RunOne, RunTwo, Transtrum)
from jaxinfer.optimize.losses import check_loss, rho, robust_residuals, scale_for_loss
from jaxinfer.optimize.result import OptimizeResult, Status, status_message
from jaxinfer.optimize.trf import (TrustRegionStatic, active_constraints, strictly_feasible,
                                   trust_region_solve)

__all__ = ["least_squares", "levenberg_marquardt"]

_DAMP_MODES = ("levenberg", "marquardt", "transtrum", "minpack")
_LINEAR_SOLVERS = ("svd", "eigh", "cholesky")


class LeastSquaresStatic(NamedTuple):
    """Everything about a least_squares call that is not an array (hashable).

    residuals, jac, residual_chunk : the user's callables (or None). treedef, shapes,
    dtypes : the structure of ``x0``. m : number of residuals. solver : the settings.
    """

    residuals: Callable
    jac: Optional[Callable]
    residual_chunk: Optional[Callable]
    treedef: Any
    shapes: Tuple[tuple, ...]
    dtypes: Tuple[Any, ...]
    m: int
    solver: LevenbergMarquardt


def _unravel(static: LeastSquaresStatic, flat):
    leaves, start = [], 0
    for shape, dtype in zip(static.shapes, static.dtypes):
        size = int(np.prod(shape, dtype=int))
        leaves.append(jnp.reshape(flat[start:start + size], shape).astype(dtype))
        start += size
    return jax.tree_util.tree_unflatten(static.treedef, leaves)


def _least_squares_solve(static: LeastSquaresStatic, x0_flat, args, mask, lower, upper,
                         weights, callback=None) -> OptimizeResult:
    """The traced core of :func:`least_squares`.

    x0_flat (n,) float; args: tuple of the user's extra arguments (pytrees of arrays);
    mask (n,) bool; lower, upper (n,) float (±inf for none); weights (m,) float (w, not √w);
    callback: ``callback(Progress)`` or None (pass ``PROGRESS_SINK`` when compiling).
    Returns the OptimizeResult with ``x`` unravelled to x0's pytree.
    """
    dtype = x0_flat.dtype
    sqrt_w = jnp.sqrt(weights.astype(dtype))

    def residuals(z, a):
        r = ravel_pytree(static.residuals(_unravel(static, z), *a))[0].astype(dtype)
        return sqrt_w * r

    jacobian = None
    if static.jac is not None:
        def jacobian(z, a):
            j = jnp.reshape(jnp.asarray(static.jac(_unravel(static, z), *a), dtype),
                            (static.m, z.shape[0]))
            return sqrt_w[:, None] * j

    chunk = None
    if static.residual_chunk is not None:
        def chunk(z, a, start, size):
            r = jnp.ravel(static.residual_chunk(_unravel(static, z), *a, start=start,
                                                size=size)).astype(dtype)
            return lax.dynamic_slice_in_dim(sqrt_w, start, size) * r

    problem = LeastSquaresProblem(residuals, jacobian=jacobian, chunk=chunk, mask=mask,
                                  lower=lower, upper=upper)
    result = iterate(static.solver, problem, x0_flat, args, callback=callback)
    return OptimizeResult(x=_unravel(static, result.x), fun=result.fun, jac=result.jac,
                          status=result.status, nit=result.nit, nfev=result.nfev,
                          njev=result.njev, hess_inv=None, extra=result.extra)


#: the compiled core: arrays traced, everything else (callables, settings, structure) static,
#: so the same residual function with new arrays of the same shapes reuses the compilation
_compiled_solve = eqx.filter_jit(_least_squares_solve)


# --------------------------------------------------------------------------------------------
# the edge: validation and mapping of option strings onto objects


def _is_traced(a):
    return isinstance(a, jax.core.Tracer)


def _flat_mask(mask, x0_tree, n):
    if mask is None:
        return jnp.ones((n,), bool)
    leaves = jax.tree_util.tree_leaves(mask)
    if not leaves:
        raise ValueError(f"mask must be a bool array of length {n} or a pytree like x0, got "
                         "an empty pytree")
    if any(_is_traced(leaf) for leaf in leaves):
        flat = jnp.concatenate([jnp.ravel(jnp.asarray(leaf)) for leaf in leaves])
        if flat.shape != (n,):
            raise ValueError(f"mask must have one entry per parameter ({n}), got {flat.size}")
        if flat.dtype != bool and not jnp.issubdtype(flat.dtype, jnp.integer):
            raise TypeError(f"mask must be boolean (or 0/1 integers), got dtype {flat.dtype}")
        return flat.astype(bool)
    flat = np.concatenate([np.ravel(np.asarray(leaf)) for leaf in leaves])
    if flat.shape != (n,):
        raise ValueError(f"mask must have one entry per parameter ({n}), got {flat.size}")
    if flat.dtype != bool:
        if np.issubdtype(flat.dtype, np.integer) and np.all((flat == 0) | (flat == 1)):
            flat = flat.astype(bool)
        else:
            raise TypeError(f"mask must be boolean (or 0/1 integers), got dtype {flat.dtype}")
    if not flat.any():
        raise ValueError("mask selects no parameter to fit")
    return jnp.asarray(flat)


def _flat_bound(bound, x0_tree, x_flat, default):
    if bound is None:
        return jnp.full_like(x_flat, default)
    structure = jax.tree_util.tree_structure(x0_tree)
    if jax.tree_util.tree_structure(bound) == structure and structure.num_leaves > 1:
        return ravel_pytree(jax.tree_util.tree_map(
            lambda b, x: jnp.broadcast_to(jnp.asarray(b, x_flat.dtype), jnp.shape(x)),
            bound, x0_tree))[0]
    b = jnp.asarray(bound, x_flat.dtype)
    if b.ndim == 0:
        return jnp.full_like(x_flat, b)
    b = jnp.ravel(b)
    if b.shape != x_flat.shape:
        raise ValueError(f"bounds must be scalars, a pytree like x0, or flat arrays of "
                         f"length {x_flat.size}; got shape {b.shape}")
    return b


def _damping_scale(damp_mode, transtrum_min):
    if damp_mode not in _DAMP_MODES:
        raise ValueError(f"damp_mode must be one of {_DAMP_MODES}, got {damp_mode!r}")
    return {"levenberg": Levenberg(), "marquardt": Marquardt(),
            "transtrum": Transtrum(float(transtrum_min)), "minpack": Minpack()}[damp_mode]


def _linear_solver(linear_solver, max_mem):
    if isinstance(linear_solver, AbstractLinearSolver):
        if max_mem is not None:
            raise ValueError("max_mem goes into the linear-solver object "
                             "(NormalEquations(max_mem=...)), not next to it")
        return linear_solver
    if linear_solver not in _LINEAR_SOLVERS:
        raise ValueError(f"linear_solver must be one of {_LINEAR_SOLVERS} or a linear-solver "
                         f"object, got {linear_solver!r}")
    if max_mem is not None and linear_solver != "cholesky":
        raise ValueError(f"max_mem needs linear_solver='cholesky' (normal equations), got "
                         f"linear_solver={linear_solver!r}")
    if linear_solver == "svd":
        return DenseSVD()
    if linear_solver == "eigh":
        return DenseEigh()
    return NormalEquations("cholesky", None if max_mem is None else float(max_mem))


def _policy(run_type, run_length):
    if run_type not in (1, 2):
        raise ValueError(f"run_type must be 1 (peri's do_run_1) or 2 (do_run_2), got {run_type!r}")
    if int(run_length) != run_length or run_length < 0:
        raise ValueError(f"run_length must be an integer >= 0, got {run_length!r}")
    return RunOne() if run_type == 1 else RunTwo(int(run_length))


def _lm_solver(*, damp_mode, transtrum_min, linear_solver, max_mem, run_type, run_length,
               damping, increase_damp_factor, decrease_damp_factor, min_eigval,
               max_accel_correction, use_accel, broyden_update, eig_update,
               **settings) -> LevenbergMarquardt:
    """The LevenbergMarquardt settings object from levenberg_marquardt's keywords."""
    return LevenbergMarquardt(
        damping_scale=_damping_scale(damp_mode, transtrum_min),
        linear_solver=_linear_solver(linear_solver, max_mem),
        policy=_policy(run_type, run_length), damping=float(damping),
        increase_damp_factor=float(increase_damp_factor),
        decrease_damp_factor=float(decrease_damp_factor), min_eigval=float(min_eigval),
        use_accel=bool(use_accel), max_accel_correction=float(max_accel_correction),
        broyden_update=bool(broyden_update), eig_update=bool(eig_update), **settings)


def levenberg_marquardt(residuals: Callable, x0: Any, args: tuple = (), *, jac: Optional[Callable] = None,
                  weights=None, bounds=None, mask=None,
                  damping: float = 1e-3, damp_mode: str = "minpack",
                  increase_damp_factor: float = 3.0, decrease_damp_factor: float = 8.0,
                  min_eigval: float = 1e-13, transtrum_min: float = 1e-6,
                  use_accel: bool = False, max_accel_correction: float = 0.1875,
                  plain_first: bool = False,
                  broyden_update: bool = False, eig_update: bool = False,
                  eig_update_frequency: int = 3, num_eig_dirs: int = 8,
                  update_J_frequency: int = 1, run_type: int = 2, run_length: int = 5,
                  max_damping_retries: int = 15,
                  paramtol: Optional[float] = None, errtol: Optional[float] = None,
                  exptol: Optional[float] = None, fractol: Any = None,
                  costol: Optional[float] = None, xtol: Any = "auto",
                  gtol: Optional[float] = None,
                  stall_costol: Any = "auto",
                  max_iter: int = 200, max_nfev: Optional[int] = None,
                  linear_solver: Any = "svd",
                  max_mem: Optional[float] = None, residual_chunk: Optional[Callable] = None,
                  callback: Optional[Callable] = None) -> OptimizeResult:
    """Minimise ``0.5 * sum(weights * residuals(x, *args)**2)`` by Levenberg–Marquardt.

    jaxinfer's own interface to the LM engine (peri's options, pytree ``x0``, masks, weights),
    returning the generic :class:`OptimizeResult` (``fun`` = the cost, ``status`` a
    :class:`Status`). :func:`least_squares` is scipy's interface on top of it.

    Parameters
    ----------
    residuals : callable ``residuals(x, *args) -> array`` (any shape, m entries in all)
        Pure JAX function of the parameter pytree ``x``.
    x0 : pytree of arrays, n scalars in all
        Starting point; integer leaves are promoted to float. With ``bounds`` it is projected
        onto the box.
    args : tuple
        Extra arguments passed to ``residuals`` and ``jac``.
    jac : callable ``jac(x, *args) -> (m, n)`` or None
        Jacobian of the raveled residuals with respect to the raveled ``x``. ``None`` uses
        autodiff: ``jax.jacfwd`` when m >= n, ``jax.jacrev`` otherwise.
    weights : array broadcastable to the residuals, or None
        Statistical weights ``w >= 0`` (``1/σ²``): the cost is ``0.5 Σ w r²``.
    bounds : (lower, upper) or None
        Box bounds, each a scalar, a flat array of length n or a pytree like ``x0``; ±inf for
        none. Bounds are enforced by projection: every trial point is clipped onto the box and
        the predicted reduction is computed for the clipped step (a projected LM step).
    mask : bool array or pytree like ``x0`` (traced or concrete), or None
        Which parameters to fit (peri's sub-block); the others stay at ``x0``. The mask is
        data, not a setting: every mask of a given shape shares one compilation (a vmapped
        batch may carry one mask per lane). The Jacobian is computed for all n parameters.
    damping : float
        Initial damping λ. Relative to the scale ``d²`` (for Levenberg: absolute, in units of
        JᵀJ). peri's default is 1; ours is 1e-3 (Nielsen's τ for scaled problems).
    damp_mode : 'minpack' | 'levenberg' | 'marquardt' | 'transtrum'
        Damping metric ``diag(d²)``: identity (Levenberg, peri's default), ``diag(JᵀJ)``
        (Marquardt), ``max(diag(JᵀJ), transtrum_min)`` (peri's ``transtrum_damping``), or
        MINPACK's running maximum of ``diag(JᵀJ)`` over the iterations (our default: scale
        invariant and robust on badly scaled problems).
    increase_damp_factor, decrease_damp_factor : float
        λ is multiplied by the first after a rejected step and divided by the second after an
        accepted one (peri: 3 and 8). Use factors without common powers.
    min_eigval : float
        Singular directions of the damped normal matrix below ``min_eigval`` times its largest
        eigenvalue are dropped (peri's ``rcond``).
    transtrum_min : float
        Floor on ``diag(JᵀJ)`` for ``damp_mode='transtrum'``.
    use_accel : bool
        Add the geodesic-acceleration correction (Transtrum & Sethna 2012)
        ``c = -½ (JᵀJ + λD)⁻¹ Jᵀ r''[δ, δ]``, with the second directional derivative from
        nested forward-mode JVPs. A step whose correction is larger than
        ``max_accel_correction`` times the step (in the scaled norm ``|d·c| / |d·δ|``) is
        rejected and λ increased. The default 0.1875 is Transtrum & Sethna's
        acceptance rule ``2|a|/|v| <= 0.75`` (the correction is ``c = a/2``); peri uses 1.
    plain_first : bool
        First run plain LM (``run_type=1``, no acceleration: MINPACK's algorithm, one trial
        per iteration), and restart a fit that fails from ``x0`` with ``run_type`` /
        ``use_accel``. For n <= 8 parameters with exact Jacobians (otherwise ignored); under
        ``vmap`` the easy fits then pay for neither run 2 nor the acceleration.
        ``curve_fit``'s default (with ``use_accel=True``).
    broyden_update : bool
        After every accepted step that is followed by another step on the same Jacobian,
        apply the rank-1 Broyden update ``J += (Δr - J δ) δᵀ / |δ|²``. peri's default is on;
        ours is off, because autodiff Jacobians are cheap and exact. Useful with
        ``update_J_frequency > 1`` or long internal runs.
    eig_update, eig_update_frequency, num_eig_dirs : bool, int, int
        Every ``eig_update_frequency`` partial updates, re-evaluate J exactly (one JVP each)
        along the ``num_eig_dirs`` stiffest eigenvectors of JᵀJ, i.e. the columns of V of
        ``JᵀJ = V Λ Vᵀ``. (peri takes rows of V, which are not eigenvectors.)
    update_J_frequency : int
        Compute the full Jacobian every this many iterations (1: every iteration).
    run_type : 1 or 2
        peri's step policies. 1 (``do_run_1``): one step per iteration with λ; on failure
        increase λ and retry. 2 (``do_run_2``, default): try λ and λ/decrease_damp_factor,
        keep the better (and that λ); on failure increase λ and retry; then an internal run of
        up to ``run_length`` more steps on the same Jacobian and λ (with Broyden / eigen
        updates when enabled), stopping at the first step that does not decrease the cost.
    max_damping_retries : int
        Rejected-step retries per iteration before giving up (status ``DAMPING``).
    paramtol, errtol, exptol, fractol, costol, xtol, gtol, stall_costol : float, None, 'auto'
        Convergence tests, checked after every iteration (None switches a test off). The
        J-based ones (xtol, costol, gtol, stall_costol) use an exact Jacobian: when J is a
        Broyden / eigen / stale approximation and one of them passes, J is recomputed and
        the test repeated.

        * ``xtol`` (default 'auto' = ``10 ε^(3/4)``: 1.9e-11 in float64, 6.4e-5 in float32):
          the Gauss-Newton step from x is below ``xtol (|d·x| + xtol)`` in the d-norm. Near a
          minimum LM converges like Gauss-Newton, so this says x is known to ~xtol relative
          precision. It does not fire while the residuals have a component
          (> 100 √ε |r|) along a direction dropped by ``min_eigval`` (a plateau). -> XTOL
        * ``stall_costol`` (default 'auto' = ``100 √ε``): when an iteration makes no strict
          progress (no damping decreases the cost), the fit is declared converged if the model
          cosine ``|P_J r| / |r|`` is below it: the Gauss-Newton step could then reduce the
          cost by at most a fraction ``stall_costol²`` (2e-12 in float64), i.e. nothing is
          left to gain at this precision. Otherwise the status is ``DAMPING``. -> COSTOL
        * ``paramtol``: max |Δx| over the iteration < paramtol (peri; absolute) -> XTOL
        * ``errtol``: SSE decrease over the iteration < errtol (peri; absolute) -> ERRTOL
        * ``fractol``: SSE decrease / SSE < fractol and the predicted relative decrease of
          the last step < fractol (peri checks the first only) -> FRACTOL
        * ``exptol``: expected SSE decrease of the last step < exptol (peri; absolute) -> EXPTOL
        * ``costol``: model cosine ``|P_J r| / |r|`` < costol (peri) -> COSTOL
        * ``gtol``: max_j |J_jᵀ r| / (|J_j| |r|) <= gtol (MINPACK) -> GTOL

        and a zero cost gives ZERO_RESIDUAL. peri's defaults (paramtol 1e-6, errtol 1e-5,
        exptol 1e-3, fractol 1e-6) are absolute and stop generic problems early, so they are
        off by default; pass them explicitly to reproduce peri. Steps that leave the cost
        unchanged (to the last bit) are accepted, so the last Gauss-Newton correction that the
        cost can no longer resolve is still taken.
    linear_solver : 'svd' | 'eigh' | 'cholesky' | a linear-solver object
        How the scaled Jacobian is factored (see :mod:`jaxinfer.optimize.linear_solve`).
        'svd' (default, ``DenseSVD()``): thin SVD of the (m, n) matrix, accurate on
        ill-conditioned problems (the NIST results rely on it). 'eigh' (``DenseEigh()``):
        eigendecomposition of the (n, n) matrix ``(J/d)ᵀ(J/d)``, cheaper for tiny n under
        ``vmap``, but it squares the condition number, so directions with singular values
        below ~√ε · s_max are lost. 'cholesky' (``NormalEquations('cholesky')``): a Cholesky
        factorisation of the damped normal equations per trial, unrolled for n <= 8: the
        fastest for many small, well-conditioned fits (same caveat as 'eigh').
    max_mem : float or None
        Bytes: with ``linear_solver='cholesky'`` (or a ``NormalEquations`` object), JᵀJ and
        Jᵀr are accumulated in chunks under this bound and the (m, n) Jacobian is never
        formed (``result.jac`` is then None and ``extra['gradient']`` holds Jᵀr). Broyden and
        eigen updates need the dense J and are refused.
    residual_chunk : callable ``residual_chunk(x, *args, start, size) -> (size,)`` or None
        Rows ``start .. start+size`` of the (flattened) residual vector, for ``max_mem``:
        JᵀJ is then accumulated over row chunks with ``jacfwd`` (fast when rows are
        independent). Without it, over blocks of parameter columns (forward mode for
        ``J E``, one reverse-mode pullback for ``Jᵀ(J E)``).
    callback : callable ``callback(Progress)`` or None
        Called on the host after every trial step with ``Progress(nit, fun, x)`` (x flat).
    max_iter : int
        Maximum number of iterations (peri's ``max_iter``; one iteration = one Jacobian
        plus its retries and internal run). Exhaustion gives ``Status.MAX_ITER`` and
        ``success=False``.
    max_nfev : int or None
        Budget of residual evaluations (scipy's ``max_nfev``): the fit stops with
        ``Status.MAX_FEV`` once ``nfev`` reaches it. None: no budget.

    Returns
    -------
    OptimizeResult
        ``x`` (pytree like x0), ``fun`` (cost ``0.5 Σ w r²``), ``jac`` (exact weighted
        Jacobian (m, n) at ``x``, all n parameters; None with ``max_mem``), ``status``/``success``/``message``, ``nit``
        (iterations), ``nfev`` (residual evaluations), ``njev`` (full Jacobians), and
        ``extra``: peri's termination statistics ``delta_vals``, ``delta_err``, ``exp_err``,
        ``frac_err``, ``num_iter``, ``model_cosine``, ``damping``, plus ``grad_cosine``,
        ``num_jvp``, ``accepted_steps``, ``rejected_steps``, ``accel_rejections``,
        ``residuals`` (weighted, flat), ``cost`` and ``gradient`` (Jᵀr, (n,)).
    """
    if not callable(residuals):
        raise TypeError(f"residuals must be callable, got {type(residuals).__name__}")
    if jac is not None and not callable(jac):
        raise TypeError("jac must be callable or None")
    if residual_chunk is not None and not callable(residual_chunk):
        raise TypeError("residual_chunk must be callable or None")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    solver = _lm_solver(
        damping=damping, damp_mode=damp_mode, increase_damp_factor=increase_damp_factor,
        decrease_damp_factor=decrease_damp_factor, min_eigval=min_eigval,
        transtrum_min=transtrum_min, use_accel=use_accel, plain_first=bool(plain_first),
        max_accel_correction=max_accel_correction, broyden_update=broyden_update,
        eig_update=eig_update, eig_update_frequency=eig_update_frequency,
        num_eig_dirs=num_eig_dirs, update_J_frequency=update_J_frequency, run_type=run_type,
        run_length=run_length, max_damping_retries=max_damping_retries, paramtol=paramtol,
        errtol=errtol, exptol=exptol, fractol=fractol, costol=costol, xtol=xtol, gtol=gtol,
        stall_costol=stall_costol, max_iter=max_iter, linear_solver=linear_solver,
        max_mem=max_mem)
    if residual_chunk is not None and solver.linear_solver.dense():
        raise ValueError("residual_chunk is used only by the chunked normal equations: pass "
                         "max_mem with linear_solver='cholesky'")
    if max_nfev is not None:
        if int(max_nfev) != max_nfev or max_nfev <= 0:
            raise ValueError(f"max_nfev must be None or a positive integer, got {max_nfev!r}")
        solver = _ScipyDriver(solver, int(max_nfev))
    if not isinstance(args, tuple):
        args = (args,)
    x0_tree = jax.tree_util.tree_map(_as_float, x0)
    x0_flat, _ = ravel_pytree(x0_tree)
    n = x0_flat.size
    if n == 0:
        raise ValueError("x0 has no parameters")
    leaves, treedef = jax.tree_util.tree_flatten(x0_tree)
    flat_mask = _flat_mask(mask, x0_tree, n)
    if bounds is not None and len(bounds) != 2:
        raise ValueError("bounds must be a pair (lower, upper)")
    lower = _flat_bound(None if bounds is None else bounds[0], x0_tree, x0_flat, -jnp.inf)
    upper = _flat_bound(None if bounds is None else bounds[1], x0_tree, x0_flat, jnp.inf)

    out0 = jax.eval_shape(residuals, x0_tree, *args)
    out_leaves = jax.tree_util.tree_leaves(out0)
    m = sum(int(np.prod(leaf.shape, dtype=int)) for leaf in out_leaves)
    if m == 0:
        raise ValueError("residuals(x0, *args) returned no values")
    if weights is None:
        w = jnp.ones((m,), x0_flat.dtype)
    else:
        w = jnp.asarray(weights, x0_flat.dtype)
        try:
            w = jnp.broadcast_to(w, (m,)) if w.ndim <= 1 else jnp.ravel(
                jnp.broadcast_to(w, out_leaves[0].shape))
        except ValueError as err:
            raise ValueError(f"weights of shape {w.shape} do not broadcast to the {m} "
                             "residuals") from err
    static = LeastSquaresStatic(residuals=residuals, jac=jac, residual_chunk=residual_chunk,
                                treedef=treedef, shapes=tuple(tuple(leaf.shape) for leaf in leaves),
                                dtypes=tuple(leaf.dtype for leaf in leaves), m=m, solver=solver)
    arrays = (x0_flat, args, flat_mask, lower, upper, w)
    if any(_is_traced(leaf) for leaf in jax.tree_util.tree_leaves(arrays)):
        # inside the caller's trace (the callback is compiled into the caller's program): solve
        # without tangents, then x* gets implicit derivatives w.r.t. args, weights and bounds
        result = _least_squares_solve(static, *lax.stop_gradient(arrays), callback)
        return eqx.tree_at(lambda r: r.x, result, implicit_least_squares(
            result.x, residuals, args, weights=w, bounds=(lower, upper), fixed=~flat_mask))
    if callback is None:
        return _compiled_solve(static, *arrays, callback)
    with progress_to(callback):   # the user's callable stays out of the compile key
        return jax.block_until_ready(_compiled_solve(static, *arrays, PROGRESS_SINK))



# --------------------------------------------------------------------------------------------
# scipy's interface: least_squares(fun, x0, jac='2-point', bounds=..., method='trf', ...)

_METHODS = ("trf", "dogbox", "lm")
_JAC_STRINGS = ("2-point", "3-point", "cs")
#: scipy's tr_options (lsmr's keywords, plus trf's 'regularize'): accepted, no effect here
_TR_OPTIONS = ("damp", "atol", "btol", "conlim", "maxiter", "show", "regularize")
#: levenberg_marquardt's keywords that least_squares spells the scipy way (or sets itself)
_LM_TAKEN = ("args", "jac", "bounds", "callback", "xtol", "gtol", "residual_chunk", "max_mem",
             "max_nfev")

TERMINATION_MESSAGES = {
    -2: "Stopped because `callback` function raised `StopIteration` or returned `True`",
    -1: "Improper input parameters status returned from `leastsq`",
    0: "The maximum number of function evaluations is exceeded.",
    1: "`gtol` termination condition is satisfied.",
    2: "`ftol` termination condition is satisfied.",
    3: "`xtol` termination condition is satisfied.",
    4: "Both `ftol` and `xtol` termination conditions are satisfied.",
}

#: jaxinfer Status -> scipy's status. A zero residual has a zero gradient (gtol); the LM
#: stall test (nothing left to gain at working precision) and peri's cost tests are
#: cost-reduction tests (ftol). Failures without a scipy code are 0 with their own message.
_TO_SCIPY = {Status.GTOL: 1, Status.ZERO_RESIDUAL: 1, Status.FTOL: 2, Status.FRACTOL: 2,
             Status.ERRTOL: 2, Status.EXPTOL: 2, Status.COSTOL: 2, Status.XTOL: 3,
             Status.CALLBACK: -2}
_SCIPY_TABLE = np.zeros(max(int(s) for s in Status) + 1, np.int32)
for _status, _code in _TO_SCIPY.items():
    _SCIPY_TABLE[int(_status)] = _code


class LeastSquaresResult(eqx.Module):
    """scipy's ``least_squares`` result (a pytree: it passes through jit and vmap).

    x (n,): solution. cost: ``½ Σ ρ(f²)`` (linear loss: ``½ Σ f²``). fun (m,): residuals at x
    (with ``weights``: ``√w f``). jac (m, n): Jacobian at x, modified by the loss as scipy does
    (``JᵀJ`` is the Gauss–Newton Hessian). grad (n,): gradient of the cost. optimality:
    ``max |grad|`` (bounded: scaled by the distance to the bound it points at, scipy's
    first-order measure). active_mask (n,) int: -1 / 1 at a lower / upper bound, 0 free.
    nfev, njev: residual and Jacobian evaluations (``njev`` None for method 'lm', as scipy).
    status: scipy's code (-2 .. 4); ``success`` is ``status > 0``. nit: LM iterations.
    reason: the jaxinfer :class:`Status`. extra: the LM statistics (see
    :func:`levenberg_marquardt`). Outside a trace every field is a numpy array or a Python
    scalar; inside jit / vmap they are arrays and ``message`` is None.
    """

    x: Any
    cost: Any
    fun: Any
    jac: Any
    grad: Any
    optimality: Any
    active_mask: Any
    nfev: Any
    njev: Any
    status: Any
    nit: Any
    reason: Any
    extra: dict = eqx.field(default_factory=dict)

    @property
    def success(self):
        return self.status > 0

    @property
    def message(self):
        if _is_traced(self.status) or np.ndim(self.status) != 0:
            return None
        own = Status(int(self.reason))
        if int(self.status) == 0 and own != Status.MAX_FEV:
            return str(status_message(own))
        return TERMINATION_MESSAGES[int(self.status)]

    def keys(self):
        return ("x", "cost", "fun", "jac", "grad", "optimality", "active_mask", "nfev", "njev",
                "status", "message", "success", "nit")

    def __getitem__(self, key):  # scipy-style res["x"]
        return getattr(self, key)

    def __repr__(self):
        if _is_traced(self.status):
            return eqx.tree_pformat(self)
        width = max(len(k) for k in self.keys())
        lines = []
        for key in self.keys():
            text = np.array2string(np.asarray(self[key]), precision=6, threshold=20) \
                if isinstance(self[key], np.ndarray) else str(self[key])
            lines.append(f"{key:>{width}}: " + text.replace("\n", "\n" + " " * (width + 2)))
        return "\n".join(lines)

    __str__ = __repr__


def _host(value):
    """A concrete array as numpy, 0-d as a Python scalar (scipy's result fields)."""
    if value is None:
        return None
    arr = np.asarray(value)
    return arr.item() if arr.ndim == 0 else arr


class _Residuals(NamedTuple):
    """``r̃(u) = robust(fun(u · x_scale, *args, **kwargs))``: the residuals LM sees."""

    fun: Callable
    loss: Any

    def __call__(self, u, user_args, user_kwargs, x_scale, f_scale):
        f = jnp.ravel(jnp.asarray(self.fun(u * x_scale, *user_args, **user_kwargs)))
        return robust_residuals(self.loss, f.astype(u.dtype), f_scale)


class _Jacobian(NamedTuple):
    """``∂r̃/∂u`` from the user's ``jac(x, *args, **kwargs) -> (m, n)``."""

    fun: Callable
    jac: Callable
    loss: Any
    m: int

    def __call__(self, u, user_args, user_kwargs, x_scale, f_scale):
        x = u * x_scale
        j = jnp.reshape(jnp.asarray(self.jac(x, *user_args, **user_kwargs), u.dtype),
                        (self.m, u.shape[0]))
        if self.loss != "linear":
            f = jnp.ravel(jnp.asarray(self.fun(x, *user_args, **user_kwargs))).astype(u.dtype)
            d = jax.jvp(lambda v: robust_residuals(self.loss, v, f_scale), (f,),
                        (jnp.ones_like(f),))[1]   # elementwise: the diagonal of ∂r̃/∂f
            j = d[:, None] * j
        return j * x_scale[None, :]


class _StopSink(NamedTuple):
    """The loop's host callback ``(nit, cost, u, new_iteration) -> stop``: forwards each
    finished iteration to ``forward(Progress)`` and returns the stop flag ``flag[0]``."""

    forward: Callable
    flag: Optional[list]

    def __call__(self, nit, cost, u, new_iteration):
        if bool(new_iteration):
            self.forward(Progress(nit=nit, fun=cost, x=u))
        flag = _STOP if self.flag is None else self.flag
        return np.asarray(flag[0])


#: set by the routed user callback (StopIteration / True), read back by the compiled loop
_STOP = [False]
#: the fixed host callback compiled into least_squares' program (outside the compile key)
_STOP_SINK = _StopSink(PROGRESS_SINK, None)


class _ScipyDriver(AbstractSolver):
    """LM plus scipy's stops: an evaluation budget (``max_nfev``) and a callback that may stop
    the run (``StopIteration`` or ``True``), read back into the loop by ``io_callback``."""

    inner: LevenbergMarquardt
    max_nfev: Optional[int] = eqx.field(default=None, static=True)
    host: Optional[Callable] = eqx.field(default=None, static=True)

    def init(self, fn, x0, args):
        return self.inner.init(fn, x0, args), jnp.asarray(False)

    def step(self, fn, state, args):
        st, stop = state
        new = self.inner.step(fn, st, args)
        if self.host is not None:
            stop = io_callback(self.host, jax.ShapeDtypeStruct((), jnp.bool_), new.iteration,
                               new.cost, new.x, new.iteration != st.iteration)
        return new, stop

    def terminate(self, fn, state, args):
        st, stop = state
        status = self.inner.terminate(fn, st, args)
        if self.max_nfev is not None:
            status = jnp.where((status == RUNNING) & (st.nfev >= self.max_nfev),
                               jnp.int32(int(Status.MAX_FEV)), status)
        return jnp.where((status == RUNNING) & stop, jnp.int32(int(Status.CALLBACK)), status)

    def postprocess(self, fn, state, args, status):
        return self.inner.postprocess(fn, state[0], args, status)

    def progress(self, state):
        return self.inner.progress(state[0])


class ScipyStatic(NamedTuple):
    """The compile key of :func:`least_squares`: everything that is not an array."""

    lm: LeastSquaresStatic
    fun: Callable
    jac: Optional[Callable]
    loss: Any
    method: str
    bounded: bool
    differentiable: bool


def _scipy_solve(static: ScipyStatic, u0, user_args, user_kwargs, x_scale, f_scale, mask,
                 lower, upper, weights):
    """The traced core of :func:`least_squares`: LM on ``u = x / x_scale``, then scipy's fields
    at the solution. Returns a :class:`LeastSquaresResult` of arrays."""
    args = (user_args, user_kwargs, x_scale, f_scale)
    lo_u, hi_u = lower / x_scale, upper / x_scale
    res = _least_squares_solve(static.lm, u0, args, mask, lo_u, hi_u, weights)
    u = res.x
    if static.differentiable:
        u = implicit_least_squares(u, static.lm.residuals, args, weights=weights,
                                   bounds=(lo_u, hi_u), fixed=~mask)
    x = u * x_scale
    dtype = u.dtype
    sqrt_w = jnp.sqrt(weights)
    if static.loss == "linear" and res.jac is not None and not static.differentiable:
        f, jac = res.extra["residuals"], res.jac / x_scale[None, :]
    else:
        def raw(z):
            out = jnp.ravel(jnp.asarray(static.fun(z, *user_args, **user_kwargs)))
            return sqrt_w * out.astype(dtype)

        f = raw(x)
        if static.jac is not None:
            jac = sqrt_w[:, None] * jnp.reshape(jnp.asarray(
                static.jac(x, *user_args, **user_kwargs), dtype), (static.lm.m, x.shape[0]))
        else:
            jac = (jax.jacfwd if static.lm.m >= x.shape[0] else jax.jacrev)(raw)(x)
    jac, grad = scale_for_loss(static.loss, f, jac, f_scale)
    cost = 0.5 * jnp.sum(rho(static.loss, f, f_scale)[0])
    if static.bounded:
        active = active_constraints(x, lower, upper)
        v = jnp.where((grad < 0) & jnp.isfinite(upper), upper - x,
                      jnp.where((grad > 0) & jnp.isfinite(lower), x - lower, 1.0))
        optimality = jnp.max(jnp.abs(grad * v))
    else:
        active = jnp.zeros(x.shape, jnp.int32)
        optimality = jnp.max(jnp.abs(grad))
    status = jnp.asarray(_SCIPY_TABLE)[res.status]
    return LeastSquaresResult(
        x=x, cost=cost, fun=f, jac=jac, grad=grad, optimality=optimality, active_mask=active,
        nfev=res.nfev, njev=None if static.method == "lm" else res.njev, status=status,
        nit=res.nit, reason=res.status, extra=res.extra)


_compiled_scipy_solve = eqx.filter_jit(_scipy_solve)
#: levenberg_marquardt's defaults for the settings least_squares passes through
_LM_DEFAULTS = {name: p.default for name, p in
                inspect.signature(levenberg_marquardt).parameters.items()
                if p.kind == p.KEYWORD_ONLY and name not in ("jac", "weights", "bounds", "mask",
                                                              "residual_chunk", "callback",
                                                              "max_nfev")}


def _callback_host(callback, x_scale, flag):
    """The user's scipy callback on the host: ``callback(intermediate_result)`` when its one
    parameter is named so, else ``callback(x)``; ``StopIteration`` or a True return sets
    ``flag[0]`` (the loop then stops)."""
    try:
        params = list(inspect.signature(callback).parameters)
    except (TypeError, ValueError):
        params = []
    wants_result = params == ["intermediate_result"]

    def host(progress):
        if flag[0]:
            return
        x = np.asarray(progress.x) * x_scale
        try:
            if wants_result:
                out = callback(scipy.optimize.OptimizeResult(
                    x=x, cost=float(progress.fun), nit=int(progress.nit)))
            else:
                out = callback(x)
        except StopIteration:
            out = True
        if out is True:
            flag[0] = True

    return host


def _scipy_bounds(bounds, n):
    if hasattr(bounds, "lb") and hasattr(bounds, "ub"):   # scipy's or jaxinfer's Bounds
        bounds = (bounds.lb, bounds.ub)
    elif len(bounds) != 2:
        raise ValueError("`bounds` must contain 2 elements.")
    out = []
    for b, default in zip(bounds, (-np.inf, np.inf)):
        b = np.asarray(default if b is None else b, dtype=float)
        out.append(np.full(n, float(b)) if b.ndim == 0 else b)
    lower, upper = out
    if lower.shape != (n,) or upper.shape != (n,):
        raise ValueError("Inconsistent shapes between bounds and `x0`.")
    if np.any(lower >= upper):
        raise ValueError("Each lower bound must be strictly less than each upper bound.")
    return lower, upper


def _check_tolerances(ftol, xtol, gtol, method, eps):
    tols = [0.0 if t is None else float(t) for t in (ftol, xtol, gtol)]
    if method == "lm" and any(t < eps for t in tols):
        raise ValueError(f"All tolerances must be higher than machine epsilon ({eps:.2e}) for "
                         "method 'lm'.")
    if all(t < eps for t in tols):
        raise ValueError(f"At least one of the tolerances must be higher than machine epsilon "
                         f"({eps:.2e}).")
    return [t if t >= eps else None for t in tols]


def _check_x_scale(x_scale, n, method):
    if x_scale is None or (isinstance(x_scale, str) and x_scale == "jac"):
        return None
    try:
        scale = np.asarray(x_scale, dtype=float)
        valid = bool(np.all(np.isfinite(scale)) and np.all(scale > 0))
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise ValueError("`x_scale` must be 'jac' or array_like with positive numbers.")
    scale = np.full(n, float(scale)) if scale.ndim == 0 else scale
    if scale.shape != (n,):
        raise ValueError("Inconsistent shapes between `x_scale` and `x0`.")
    return scale


class _HostJac(NamedTuple):
    """A Jacobian that JAX cannot trace (a scipy sparse matrix, a ``LinearOperator``, numpy
    code), called on the host with numpy arrays and densified: ``(x, args, kwargs) -> (m, n)``."""

    jac: Callable
    kind: str
    n: int

    def __call__(self, x, args, kwargs):
        to_np = lambda t: jax.tree_util.tree_map(np.asarray, t)  # noqa: E731
        return _dense(self.jac(np.asarray(x), *to_np(args), **to_np(kwargs)), self.n,
                      np.asarray(x).dtype)


def _dense(J, n, dtype):
    if scipy.sparse.issparse(J):
        return np.asarray(J.toarray(), dtype)
    if isinstance(J, scipy.sparse.linalg.LinearOperator):
        return np.asarray(J.matmat(np.eye(n, dtype=dtype)), dtype)
    return np.asarray(J, dtype)


def _probe_jac(jac, x0, args, kwargs, m, n, traced):
    """Check the user's ``jac`` and tell how to call it: ``(None, 'dense')`` when JAX can
    trace it, else ``(_HostJac, kind)`` with kind 'sparse', 'operator' or 'dense' (from its
    value at x0, computed on the host)."""
    try:
        shape = jax.eval_shape(lambda z: jac(z, *args, **kwargs), x0).shape
        host = None
    except Exception as err:   # noqa: BLE001 - not traceable: try it on the host
        if traced:
            raise
        try:
            J0 = jac(np.asarray(x0), *args, **kwargs)
        except Exception:
            raise err from None
        shape = getattr(J0, "shape", None)
        kind = "sparse" if scipy.sparse.issparse(J0) else "operator" if isinstance(
            J0, scipy.sparse.linalg.LinearOperator) else "dense"
        host = (_HostJac(jac, kind, n), kind)
    if shape is None or len(shape) > 2 or int(np.prod(shape, dtype=int)) != m * n or \
            (len(shape) == 2 and tuple(shape) != (m, n)):
        raise ValueError(f"The return value of `jac` has wrong shape: expected {(m, n)}, "
                         f"actual {shape}.")
    return host if host is not None else (None, "dense")


#: scipy status of 'trf' / 'dogbox' -> jaxinfer Status (the ``reason`` field)
_TR_REASON = {0: Status.MAX_FEV, 1: Status.GTOL, 2: Status.FTOL, 3: Status.XTOL,
              4: Status.FTOL, -2: Status.CALLBACK}
_TR_REASON_TABLE = np.array([int(_TR_REASON.get(k, Status.MAX_FEV)) for k in range(-2, 5)],
                            np.int32)


def _trust_region_core(key, x0, args, kwargs, lower, upper, x_scale, f_scale, ftol, xtol,
                       gtol, max_nfev):
    """'trf' / 'dogbox' and scipy's result. ``key = (TrustRegionStatic, differentiable)``;
    differentiable: x gets implicit derivatives w.r.t. args, kwargs, f_scale and the bounds."""
    static, differentiable = key
    out = trust_region_solve(static, *lax.stop_gradient(
        (x0, args, kwargs, lower, upper, x_scale, f_scale, ftol, xtol, gtol)), max_nfev)
    x = out["x"]
    if differentiable:
        def robust(z, a, k, fs):
            f = jnp.ravel(jnp.asarray(static.fun(z, *a, **k))).astype(z.dtype)
            return robust_residuals(static.loss, f, fs)

        x = implicit_least_squares(x, robust, (args, kwargs, f_scale), bounds=(lower, upper))
    out["x"] = x
    status = out.pop("status")
    reason = jnp.asarray(_TR_REASON_TABLE)[status + 2]
    return LeastSquaresResult(status=status, reason=reason, **out)


def _trust_region(fun, x0, jac, host_jac, lower, upper, method, ftol, xtol, gtol, x_scale,
                  loss, f_scale, max_nfev, args, kwargs, callback, traced, sparse_jac):
    """least_squares' 'trf' and 'dogbox' (checked inputs; :mod:`jaxinfer.optimize.trf`)."""
    n, dtype = x0.shape[0], x0.dtype
    jac_scale = isinstance(x_scale, str) and x_scale == "jac"
    scale = np.ones(n) if x_scale is None or jac_scale else _check_x_scale(x_scale, n, method)
    if method == "trf" and not traced:
        with np.errstate(invalid="ignore"):   # infinite bounds
            x0 = strictly_feasible(np.asarray(x0), np.asarray(lower, dtype),
                                   np.asarray(upper, dtype), xp=np).astype(dtype)
    host = None
    if callback is not None:
        host = _STOP_SINK if not traced else _StopSink(_callback_host(
            callback, np.ones(n), [False]), None)
    m = int(np.prod(jax.eval_shape(lambda z: fun(z, *args, **kwargs), x0).shape, dtype=int))
    static = TrustRegionStatic(fun=fun, jac=jac, host_jac=host_jac, loss=loss, method=method,
                               jac_scale=jac_scale, m=m, sink=host,
                               bounded=method == "dogbox" or bool(
                                   np.any(np.isfinite(lower)) or np.any(np.isfinite(upper))))
    as_dtype = lambda v: jnp.asarray(0.0 if v is None else v, dtype)  # noqa: E731
    arrays = (jnp.asarray(x0, dtype), args, kwargs, jnp.asarray(lower, dtype),
              jnp.asarray(upper, dtype), jnp.asarray(scale, dtype), as_dtype(f_scale),
              as_dtype(ftol), as_dtype(xtol), as_dtype(gtol),
              jnp.asarray(100 * n if max_nfev is None else int(max_nfev), jnp.int32))
    traced = traced or is_traced(arrays)
    if traced:
        return _trust_region_core((static, True), *arrays)
    _STOP[0] = False
    result = run_compiled(_trust_region_core, (static, False), *arrays, progress=None if
                          callback is None else _callback_host(callback, np.ones(n), _STOP))
    _STOP[0] = False
    result = jax.tree_util.tree_map(_host, result)
    if not np.all(np.isfinite(result.fun)) and result.nit == 0:
        raise ValueError("Residuals are not finite in the initial point.")
    if sparse_jac:
        result = eqx.tree_at(lambda r: r.jac, result, scipy.sparse.csr_array(result.jac))
    return result


def least_squares(fun: Callable, x0, jac: Any = "2-point", bounds=(-np.inf, np.inf),
                  method: str = "trf", ftol: Optional[float] = 1e-8,
                  xtol: Optional[float] = 1e-8, gtol: Optional[float] = 1e-8, x_scale=None,
                  loss: Any = "linear", f_scale: float = 1.0, diff_step=None,
                  tr_solver: Optional[str] = None, tr_options: Optional[dict] = None,
                  jac_sparsity=None, max_nfev: Optional[int] = None, verbose: int = 0,
                  args: tuple = (), kwargs: Optional[dict] = None,
                  callback: Optional[Callable] = None, workers=None,
                  **lm_options) -> LeastSquaresResult:
    """scipy's ``least_squares`` on jaxinfer's Levenberg–Marquardt (pure JAX, compiled once).

    Minimises ``½ Σ ρ((fun(x, *args, **kwargs) / f_scale)²) f_scale²`` subject to
    ``lb <= x <= ub``, with scipy's signature, checks, error messages and result fields
    (:class:`LeastSquaresResult`). ``fun`` (and a callable ``jac``) must be JAX-traceable
    (``jnp``, not ``np``): they are compiled, once per function object, settings and shapes.

    What maps 1:1: ``fun``, ``x0`` (1-D real), ``args``, ``kwargs``, ``bounds`` (a pair or a
    ``Bounds`` object), ``loss`` (the five names or a callable ``z -> (3, m)``), ``f_scale``,
    ``max_nfev`` (an evaluation budget; status 0), ``callback`` (``callback(x)`` or
    ``callback(intermediate_result)``; ``StopIteration`` or True stops: status -2), every
    input check and message, ``method='lm'`` refusing bounds, robust losses, sparse input,
    ``callback`` (warned and ignored) and m < n.

    What differs:

    * ``method``: 'trf', 'dogbox' and 'lm' all run the same bounded LM (projected steps);
      iterates and ``nfev`` differ from scipy's, the solution does not.
    * ``jac``: '2-point', '3-point' and 'cs' (and None) mean autodiff, exact to rounding;
      ``diff_step``, ``tr_solver``, ``tr_options``, ``jac_sparsity``, ``workers`` are
      checked and have no effect (dense autodiff Jacobians).
    * ``ftol`` is LM's relative cost decrease test (peri's ``fractol``), ``xtol`` the
      Gauss–Newton step test relative to |x| (stricter than scipy's step test), ``gtol``
      MINPACK's gradient cosine. Besides these, LM stops when no damping decreases the cost
      and the model cosine shows nothing is left to gain (status 2).
    * ``x_scale``: None (default) and 'jac' use LM's MINPACK scaling (the running maximum of
      J's column norms, scale invariant); an array reparametrises ``x = x_scale · u`` with
      Levenberg damping (scipy's spherical trust region in scaled variables).
    * ``verbose`` prints nothing (library code does not print).
    * ``nfev`` counts residual evaluations (Jacobians are autodiff: ``njev``); a callback
      fires once per LM iteration.

    Beyond scipy: peri's LM options (``damping``, ``damp_mode``, ``use_accel``, ``mask``,
    ``weights``, ``max_iter``, ``linear_solver``, ... see :func:`levenberg_marquardt`).
    Under ``jit`` / ``vmap`` / ``grad`` the call is inlined into the caller's trace, ``x``
    carries implicit derivatives w.r.t. ``args`` / ``kwargs``, nothing raises after tracing
    and ``message`` is None (read ``status``).
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {type(fun).__name__}")
    if method not in _METHODS:
        raise ValueError("`method` must be 'trf', 'dogbox' or 'lm'.")
    if jac is not None and not callable(jac) and jac not in _JAC_STRINGS:
        raise ValueError("`jac` must be '2-point', '3-point', 'cs' or callable.")
    user_jac = jac if callable(jac) else None
    if tr_solver not in (None, "exact", "lsmr"):
        raise ValueError("`tr_solver` must be None, 'exact' or 'lsmr'.")
    unknown_tr = sorted(set(tr_options or {}) - set(_TR_OPTIONS))
    if unknown_tr:
        raise TypeError(f"tr_options got unexpected keyword(s) {unknown_tr}; scipy's are "
                        f"{_TR_OPTIONS}")
    check_loss(loss)
    if method == "lm" and loss != "linear":
        raise ValueError("method='lm' supports only 'linear' loss function.")
    if verbose not in (0, 1, 2):
        raise ValueError("`verbose` must be in [0, 1, 2].")
    if max_nfev is not None and max_nfev <= 0:
        raise ValueError("`max_nfev` must be None or positive integer.")
    if method == "lm" and jac_sparsity is not None:
        raise ValueError("method='lm' does not support `jac_sparsity`.")
    for name in lm_options:
        if name in _LM_TAKEN or name not in inspect.signature(levenberg_marquardt).parameters:
            raise TypeError(f"least_squares() got an unexpected keyword argument {name!r}")
    if lm_options and method != "lm":
        raise TypeError(f"least_squares(method={method!r}) got jaxinfer LM option(s) "
                        f"{sorted(lm_options)}: they go with method='lm' or "
                        "levenberg_marquardt")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    if method == "lm" and callback is not None:
        warnings.warn("Callback function specified, but not supported with `lm` method.",
                      stacklevel=2)
        callback = None
    if not isinstance(args, tuple):
        args = (args,)
    kwargs = {} if kwargs is None else dict(kwargs)

    traced = _is_traced(x0)
    if not traced:
        if np.iscomplexobj(x0):
            raise ValueError("`x0` must be real.")
        x0 = np.atleast_1d(np.asarray(x0))
        if not np.issubdtype(x0.dtype, np.floating):
            x0 = x0.astype(jnp.result_type(float))
    elif x0.ndim == 0:
        x0 = x0[None]
    if x0.ndim > 1:
        raise ValueError("`x0` must have at most 1 dimension.")
    dtype = x0.dtype
    n = x0.shape[0]
    ftol, xtol, gtol = _check_tolerances(ftol, xtol, gtol, method, float(np.finfo(float).eps))
    scale = _check_x_scale(x_scale, n, method)
    lower, upper = _scipy_bounds(bounds, n)
    bounded = bool(np.any(np.isfinite(lower)) or np.any(np.isfinite(upper)))
    if method == "lm" and bounded:
        raise ValueError("Method 'lm' doesn't support bounds.")
    if not traced and not np.all((x0 >= lower) & (x0 <= upper)):
        raise ValueError("Initial guess is outside of provided bounds")

    out = jax.eval_shape(lambda z: fun(z, *args, **kwargs), x0)
    if not hasattr(out, "shape") or len(out.shape) > 1:
        raise ValueError(f"`fun` must return at most 1-d array_like. f0.shape: "
                         f"{getattr(out, 'shape', None)}")
    m = int(np.prod(out.shape, dtype=int))
    if m == 0:
        raise ValueError("`fun` returned no residuals")
    if method == "lm" and m < n:
        raise ValueError("Method 'lm' doesn't work when the number of residuals is less than "
                         "the number of variables.")
    host_jac, jac_kind = None, "dense"
    if user_jac is not None:
        host_jac, jac_kind = _probe_jac(user_jac, x0, args, kwargs, m, n, traced)
    if jac_kind != "dense" or host_jac is not None:
        if method == "lm":
            raise ValueError("method='lm' works only with dense Jacobian matrices.")
    if jac_kind != "dense" and tr_solver == "exact":
        raise ValueError("tr_solver='exact' works only with dense Jacobian matrices.")
    if jac_kind == "operator" and isinstance(x_scale, str) and x_scale == "jac":
        raise ValueError("x_scale='jac' can't be used when `jac` returns LinearOperator.")
    if jac_sparsity is not None and np.shape(np.atleast_2d(np.asarray(
            jac_sparsity.toarray() if hasattr(jac_sparsity, "toarray") else jac_sparsity))) \
            != (m, n):
        raise ValueError("`jac_sparsity` has wrong shape.")
    if jac_sparsity is not None and user_jac is None and tr_solver == "exact":
        raise ValueError("tr_solver='exact' is incompatible with `jac_sparsity`.")
    if method != "lm":
        return _trust_region(fun, x0, user_jac, host_jac, lower, upper, method, ftol, xtol,
                             gtol, x_scale, loss, f_scale, max_nfev, args, kwargs, callback,
                             traced, sparse_jac=jac_kind == "sparse" or (
                                 jac_sparsity is not None and user_jac is None))
    if loss != "linear" and lm_options.get("weights") is not None:
        raise ValueError("weights work with loss='linear' only (a robust loss reweights "
                         "the residuals itself)")

    options = dict(lm_options)
    weights = options.pop("weights", None)
    mask = options.pop("mask", None)
    if scale is not None:
        options.setdefault("damp_mode", "levenberg")
    options.setdefault("fractol", ftol)
    solver = _lm_solver(**{**_LM_DEFAULTS, **options, "xtol": xtol, "gtol": gtol})
    host = None
    if callback is not None:   # compiled: the fixed sink (routed below); traced: the callable
        host = _STOP_SINK if not traced else _StopSink(_callback_host(
            callback, np.ones(n) if scale is None else scale, [False]), None)
    driver = _ScipyDriver(solver, None if max_nfev is None else int(max_nfev), host)
    residuals = _Residuals(fun, loss)
    jac_fn = None if user_jac is None else _Jacobian(fun, user_jac, loss, m)
    lm_static = LeastSquaresStatic(residuals=residuals, jac=jac_fn, residual_chunk=None,
                                   treedef=jax.tree_util.tree_structure(x0), shapes=((n,),),
                                   dtypes=(dtype,), m=m, solver=driver)
    x_scale_arr = jnp.ones((n,), dtype) if scale is None else jnp.asarray(scale, dtype)
    w = jnp.ones((m,), dtype) if weights is None else jnp.broadcast_to(
        jnp.ravel(jnp.asarray(weights, dtype)), (m,))
    arrays = (x0 / x_scale_arr, args, kwargs, x_scale_arr, jnp.asarray(f_scale, dtype),
              _flat_mask(mask, x0, n), jnp.asarray(lower, dtype), jnp.asarray(upper, dtype), w)
    traced = traced or is_traced(arrays)
    static = ScipyStatic(lm=lm_static, fun=fun, jac=user_jac, loss=loss, method=method,
                         bounded=bounded, differentiable=traced)
    if traced:
        return _scipy_solve(static, *arrays)
    if callback is None:
        result = _compiled_scipy_solve(static, *arrays)
    else:
        _STOP[0] = False
        with progress_to(_callback_host(callback, np.asarray(x_scale_arr), _STOP)):
            result = jax.block_until_ready(_compiled_scipy_solve(static, *arrays))
        _STOP[0] = False
    result = jax.tree_util.tree_map(_host, result)
    if not np.all(np.isfinite(result.fun)) and result.nit == 0:
        raise ValueError("Residuals are not finite in the initial point.")
    return result
