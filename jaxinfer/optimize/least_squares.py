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

from typing import Any, Callable, NamedTuple, Optional, Tuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxinfer.optimize._iterate import PROGRESS_SINK, iterate, progress_to
from jaxinfer.optimize._pytree import _as_float
from jaxinfer.optimize.implicit import implicit_least_squares
from jaxinfer.optimize.linear_solve import (AbstractLinearSolver, DenseEigh, DenseSVD,
                                            NormalEquations)
from jaxinfer.optimize.lm import (LeastSquaresProblem, Levenberg, LevenbergMarquardt,
                                  Marquardt, Minpack, RunOne, RunTwo, Transtrum)
from jaxinfer.optimize.result import OptimizeResult

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


def levenberg_marquardt(residuals: Callable, x0: Any, args: tuple = (), *, jac: Optional[Callable] = None,
                  weights=None, bounds=None, mask=None,
                  damping: float = 1e-3, damp_mode: str = "minpack",
                  increase_damp_factor: float = 3.0, decrease_damp_factor: float = 8.0,
                  min_eigval: float = 1e-13, transtrum_min: float = 1e-6,
                  use_accel: bool = False, max_accel_correction: float = 0.1875,
                  broyden_update: bool = False, eig_update: bool = False,
                  eig_update_frequency: int = 3, num_eig_dirs: int = 8,
                  update_J_frequency: int = 1, run_type: int = 2, run_length: int = 5,
                  max_damping_retries: int = 15,
                  paramtol: Optional[float] = None, errtol: Optional[float] = None,
                  exptol: Optional[float] = None, fractol: Any = None,
                  costol: Optional[float] = None, xtol: Any = "auto",
                  gtol: Optional[float] = None,
                  stall_costol: Any = "auto",
                  max_iter: int = 200, linear_solver: Any = "svd",
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
    solver = LevenbergMarquardt(
        damping_scale=_damping_scale(damp_mode, transtrum_min),
        linear_solver=_linear_solver(linear_solver, max_mem),
        policy=_policy(run_type, run_length), damping=float(damping),
        increase_damp_factor=float(increase_damp_factor),
        decrease_damp_factor=float(decrease_damp_factor), min_eigval=float(min_eigval),
        use_accel=bool(use_accel), max_accel_correction=float(max_accel_correction),
        broyden_update=bool(broyden_update), eig_update=bool(eig_update),
        eig_update_frequency=eig_update_frequency, num_eig_dirs=num_eig_dirs,
        update_J_frequency=update_J_frequency, max_damping_retries=max_damping_retries,
        paramtol=paramtol, errtol=errtol, exptol=exptol, fractol=fractol, costol=costol,
        xtol=xtol, gtol=gtol, stall_costol=stall_costol, max_iter=max_iter)
    if residual_chunk is not None and solver.linear_solver.dense():
        raise ValueError("residual_chunk is used only by the chunked normal equations: pass "
                         "max_mem with linear_solver='cholesky'")
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


#: transitional: least_squares becomes scipy's interface; callers of the peri-style
#: interface use levenberg_marquardt
least_squares = levenberg_marquardt
