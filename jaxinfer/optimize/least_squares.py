"""Levenberg–Marquardt least squares (peri's ``LMEngine``, in pure JAX) and ``curve_fit``.

The engine minimises ``cost(x) = 0.5 * sum(weights * r(x)**2)`` over a pytree ``x`` with every
option of peri's LM engine (after Transtrum & Sethna 2012): Levenberg, Marquardt and
Transtrum damping, geodesic acceleration, Broyden and eigen-direction updates of the
Jacobian, peri's ``run_1`` / ``run_2`` step policies with an internal run that reuses J, and
peri's termination tests. It adds MINPACK's diagonal scaling (the default), relative step and
gradient tests, box bounds and parameter masks, and it runs as one ``lax.while_loop``, so it
``jit``s and ``vmap``s over many independent problems.

How a step is computed
----------------------
With ``d`` the damping-scale vector (1 for Levenberg, column norms of J for Marquardt / MINPACK),
the scaled Jacobian ``J / d`` is factored once by a thin SVD ``U diag(s) Vᵀ``. Every trial step
for any damping ``λ`` is then ``δ = -(1/d) · V diag(s/(s²+λ)) Uᵀ r``: the exact solution of
``(JᵀJ + λ diag(d²)) δ = -Jᵀ r`` without forming ``JᵀJ`` (whose condition number is the
square of J's). Directions with ``s² + λ <= min_eigval · (s_max² + λ)`` are dropped, as peri's
``lstsq(rcond=min_eigval)`` does. Retrying with another damping costs one residual
evaluation, no refactorisation.

Units of the statistics
-----------------------
``OptimizeResult.fun`` is the cost ``0.5 * sum(w r²)`` (scipy's convention). peri's "error" is
the plain sum of squares, ``SSE = 2 * fun``; ``errtol`` and ``exptol`` and the statistics
``delta_err`` / ``exp_err`` in ``extra`` are in SSE units, as in peri.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxinfer.optimize._pytree import _as_float
from jaxinfer.optimize.result import OptimizeResult, Status

__all__ = ["least_squares"]

_DAMP_MODES = ("levenberg", "marquardt", "transtrum", "minpack")
_RUNNING = -1
_STALL_RETRIES = 4  # damping retries left to a stalled fit (see least_squares.hopeless)


class _Factor(NamedTuple):
    """SVD of the scaled Jacobian and what a trial step needs from it."""

    scale: jnp.ndarray      # (n,) d: damping metric is diag(d**2)
    u: jnp.ndarray          # (m, k) left singular vectors of J / d
    s: jnp.ndarray          # (k,) singular values, descending
    v: jnp.ndarray          # (n, k) right singular vectors
    utr: jnp.ndarray        # (k,) Uᵀ r at the current point
    free: jnp.ndarray       # (n,) 1 for free parameters, 0 for those held at a bound


class _State(NamedTuple):
    x: jnp.ndarray          # (n,) free parameters, flat
    r: jnp.ndarray          # (m,) weighted residuals at x
    cost: jnp.ndarray       # 0.5 * r·r
    jac: jnp.ndarray        # (m, n) Jacobian (exact or Broyden/eigen-updated)
    fac: _Factor
    damping: jnp.ndarray
    iteration: jnp.ndarray
    nfev: jnp.ndarray
    njev: jnp.ndarray
    njvp: jnp.ndarray
    partial_updates: jnp.ndarray  # accepted steps since the last full Jacobian
    status: jnp.ndarray
    delta_vals: jnp.ndarray       # max |Δx| over the last iteration
    delta_err: jnp.ndarray        # SSE decrease over the last iteration
    exp_err: jnp.ndarray          # expected SSE decrease of the last accepted step
    frac_err: jnp.ndarray         # delta_err / SSE at the iteration's start
    step_norm: jnp.ndarray        # ||d·Δx|| over the last iteration
    accepted_steps: jnp.ndarray
    rejected_steps: jnp.ndarray
    accel_rejections: jnp.ndarray


# --------------------------------------------------------------------------------------------
# small linear-algebra helpers


def _column_norms(jac):
    return jnp.sqrt(jnp.sum(jac * jac, axis=0))


def _damping_scale(jac, prev_scale, damp_mode, transtrum_min):
    """d with damping metric diag(d²): Levenberg 1, Marquardt |J_j|, Transtrum / MINPACK."""
    norms = _column_norms(jac)
    if damp_mode == "levenberg":
        return jnp.ones_like(norms)
    if damp_mode == "marquardt":
        scale = norms
    elif damp_mode == "transtrum":
        scale = jnp.sqrt(jnp.maximum(norms * norms, transtrum_min))
    else:  # minpack: running maximum of the column norms (Moré 1978)
        scale = jnp.maximum(prev_scale, norms)
    return jnp.where(scale > 0, scale, 1.0)


def _factor(jac, r, prev_scale, damp_mode, transtrum_min, free=None, linear_solver="svd"):
    """``free`` (n,) 0/1: columns of parameters held at a bound are zeroed, so their step is 0."""
    scale = _damping_scale(jac, prev_scale, damp_mode, transtrum_min)
    scaled = jac / scale if free is None else jac * (free / scale)
    if linear_solver == "eigh":
        # eigendecomposition of the small n x n Gram matrix (J/d)ᵀ(J/d) = V diag(s²) Vᵀ and
        # U = (J/d) V / s: much cheaper than a batched SVD for tiny n under vmap, but it
        # squares the condition number (directions with s < √ε s_max are lost)
        gram = scaled.T @ scaled
        evals, evecs = jnp.linalg.eigh(gram)
        evals, v = evals[::-1], evecs[:, ::-1]
        s = jnp.sqrt(jnp.maximum(evals, 0.0))
        u = (scaled @ v) * jnp.where(s > 0, 1.0 / jnp.where(s > 0, s, 1.0), 0.0)
    else:
        u, s, vt = jnp.linalg.svd(scaled, full_matrices=False)
        v = vt.T
    free = jnp.ones_like(scale) if free is None else free
    return _Factor(scale=scale, u=u, s=s, v=v, utr=u.T @ r, free=free)


def _eigen_update(jac, jvp, num_dirs: int):
    """Replace J's action on the ``num_dirs`` stiffest eigenvectors of JᵀJ by the exact one.

    ``jvp(v) -> (m,)`` is the exact directional derivative. The eigenvectors are the columns
    of V in ``JᵀJ = V Λ Vᵀ`` (peri used rows of V). They are orthonormal, so
    ``J + (J_true E - J E) Eᵀ`` agrees with the exact Jacobian on span(E) and with the old J on
    its orthogonal complement.
    """
    _, evecs = jnp.linalg.eigh(jac.T @ jac)
    dirs = evecs[:, ::-1][:, :num_dirs]                       # largest eigenvalues first
    true_cols = jax.vmap(jvp, out_axes=1)(dirs.T)             # (m, num_dirs)
    return jac + (true_cols - jac @ dirs) @ dirs.T


def _structural(fac: _Factor):
    """Singular directions that exist: s > 0 and not one of the zeroed (held) columns.

    Columns of parameters held at a bound are zeroed before the SVD; their singular values
    are zero only up to rounding, so the smallest ``#held`` of them are dropped by count.
    """
    held = jnp.sum(1.0 - fac.free)
    return (fac.s > 0) & (jnp.arange(fac.s.shape[0]) < fac.s.shape[0] - held)


def _damped_solve(fac: _Factor, utb, damping, min_eigval):
    """-(JᵀJ + λ diag(d²))⁺ Jᵀ b given Uᵀ b; rcond-like cut at min_eigval."""
    s2 = fac.s * fac.s
    denom = s2 + damping
    keep = (denom > min_eigval * (s2[0] + damping)) & _structural(fac)
    filt = jnp.where(keep, fac.s / jnp.where(keep, denom, 1.0), 0.0)
    return -(fac.v @ (filt * utb)) / fac.scale * fac.free


# --------------------------------------------------------------------------------------------
# the engine


def _validate_options(damp_mode, run_type, increase_damp_factor, decrease_damp_factor,
                      max_damping_retries, run_length, update_J_frequency,
                      eig_update_frequency, num_eig_dirs):
    if damp_mode not in _DAMP_MODES:
        raise ValueError(f"damp_mode must be one of {_DAMP_MODES}, got {damp_mode!r}")
    if run_type not in (1, 2):
        raise ValueError(f"run_type must be 1 (peri's do_run_1) or 2 (do_run_2), got {run_type!r}")
    if not increase_damp_factor > 1:
        raise ValueError(f"increase_damp_factor must be > 1, got {increase_damp_factor}")
    if not decrease_damp_factor > 1:
        raise ValueError(f"decrease_damp_factor must be > 1, got {decrease_damp_factor}")
    for name, value, low in (("max_damping_retries", max_damping_retries, 0),
                             ("run_length", run_length, 0),
                             ("update_J_frequency", update_J_frequency, 1),
                             ("eig_update_frequency", eig_update_frequency, 1),
                             ("num_eig_dirs", num_eig_dirs, 1)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _flat_mask(mask, x0_tree, n_total):
    if mask is None:
        return None
    try:
        leaves = jax.tree_util.tree_leaves(mask)
        flat = np.concatenate([np.ravel(np.asarray(leaf)) for leaf in leaves]) if leaves else np.zeros(0)
    except jax.errors.TracerArrayConversionError as err:  # pragma: no cover - message only
        raise TypeError("mask must be a concrete (non-traced) boolean array or pytree: it "
                        "selects which parameters are fitted, which fixes array shapes") from err
    if flat.shape != (n_total,):
        raise ValueError(f"mask must have one entry per parameter ({n_total}), got {flat.size}")
    if flat.dtype != bool:
        raise TypeError(f"mask must be boolean, got dtype {flat.dtype}")
    if not flat.any():
        raise ValueError("mask selects no parameter to fit")
    return flat


def _flat_bound(bound, x0_tree, x_flat, default):
    if bound is None:
        return jnp.full_like(x_flat, default)
    if jax.tree_util.tree_structure(bound) == jax.tree_util.tree_structure(x0_tree) and \
            jax.tree_util.tree_structure(x0_tree).num_leaves > 1:
        flat = ravel_pytree(jax.tree_util.tree_map(
            lambda b, x: jnp.broadcast_to(jnp.asarray(b, x_flat.dtype), jnp.shape(x)),
            bound, x0_tree))[0]
        return flat
    b = jnp.asarray(bound, x_flat.dtype)
    if b.ndim == 0:
        return jnp.full_like(x_flat, b)
    b = jnp.ravel(b)
    if b.shape != x_flat.shape:
        raise ValueError(f"bounds must be scalars, a pytree like x0, or flat arrays of "
                         f"length {x_flat.size}; got shape {b.shape}")
    return b


def least_squares(residuals: Callable, x0: Any, args: tuple = (), *, jac: Optional[Callable] = None,
                  weights=None, bounds=None, mask=None,
                  damping: float = 1e-3, damp_mode: str = "minpack",
                  increase_damp_factor: float = 3.0, decrease_damp_factor: float = 8.0,
                  min_eigval: float = 1e-13, transtrum_min: float = 1e-6,
                  use_accel: bool = False, max_accel_correction: float = 1.0,
                  broyden_update: bool = False, eig_update: bool = False,
                  eig_update_frequency: int = 3, num_eig_dirs: int = 8,
                  update_J_frequency: int = 1, run_type: int = 2, run_length: int = 5,
                  max_damping_retries: int = 15,
                  paramtol: Optional[float] = None, errtol: Optional[float] = None,
                  exptol: Optional[float] = None, fractol: Any = None,
                  costol: Optional[float] = None, xtol: Any = "auto",
                  gtol: Optional[float] = None,
                  stall_costol: Any = "auto",
                  max_iter: int = 200, linear_solver: str = "svd") -> OptimizeResult:
    """Minimise ``0.5 * sum(weights * residuals(x, *args)**2)`` by Levenberg–Marquardt.

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
    mask : bool array or pytree like ``x0``, concrete (not traced), or None
        Which parameters to fit (peri's sub-block); the others stay at ``x0``. The Jacobian is
        only computed for the fitted block.
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
        rejected and λ increased.
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
    linear_solver : 'svd' | 'eigh'
        How the scaled Jacobian is factored once per Jacobian. 'svd' (default): thin SVD of
        the (m, n) matrix, accurate on ill-conditioned problems (the NIST results rely on it).
        'eigh': eigendecomposition of the (n, n) matrix ``(J/d)ᵀ(J/d)``, about 4x cheaper
        per factorisation for tiny n under ``vmap`` on CPU, but it squares the condition
        number, so directions with singular values below ~√ε · s_max are lost. Use it for
        many small, well-conditioned fits.
    max_iter : int
        Maximum number of iterations (peri's ``max_iter``; one iteration = one Jacobian
        plus its retries and internal run). Exhaustion gives ``Status.MAX_ITER`` and
        ``success=False``.

    Returns
    -------
    OptimizeResult
        ``x`` (pytree like x0), ``fun`` (cost ``0.5 Σ w r²``), ``jac`` (exact weighted
        Jacobian (m, n_free) at ``x``), ``status``/``success``/``message``, ``nit``
        (iterations), ``nfev`` (residual evaluations), ``njev`` (full Jacobians), and
        ``extra``: peri's termination statistics ``delta_vals``, ``delta_err``, ``exp_err``,
        ``frac_err``, ``num_iter``, ``model_cosine``, ``damping``, plus ``grad_cosine``,
        ``num_jvp``, ``accepted_steps``, ``rejected_steps``, ``accel_rejections``,
        ``residuals`` (weighted, flat) and ``cost``.
    """
    _validate_options(damp_mode, run_type, increase_damp_factor, decrease_damp_factor,
                      max_damping_retries, run_length, update_J_frequency,
                      eig_update_frequency, num_eig_dirs)
    if not callable(residuals):
        raise TypeError(f"residuals must be callable, got {type(residuals).__name__}")
    if not isinstance(args, tuple):
        args = (args,)
    x0_tree = jax.tree_util.tree_map(_as_float, x0)
    x0_flat, unravel = ravel_pytree(x0_tree)
    if x0_flat.size == 0:
        raise ValueError("x0 has no parameters")
    dtype = x0_flat.dtype
    n_total = x0_flat.size
    free_mask = _flat_mask(mask, x0_tree, n_total)
    free_idx = None if free_mask is None else np.flatnonzero(free_mask)

    lower = upper = None
    if bounds is not None:
        if len(bounds) != 2:
            raise ValueError("bounds must be a pair (lower, upper)")
        lower = _flat_bound(bounds[0], x0_tree, x0_flat, -jnp.inf)
        upper = _flat_bound(bounds[1], x0_tree, x0_flat, jnp.inf)
        x0_flat = jnp.clip(x0_flat, lower, upper)

    def full_from_free(z):
        return z if free_idx is None else x0_flat.at[free_idx].set(z)

    def free_from_full(x):
        return x if free_idx is None else x[free_idx]

    out0 = jax.eval_shape(lambda x: residuals(unravel(x), *args), x0_flat)
    m = sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(out0))
    sqrt_w = None
    if weights is not None:
        w = jnp.asarray(weights, dtype)
        try:
            w = jnp.broadcast_to(w, (m,)) if w.ndim <= 1 else jnp.ravel(
                jnp.broadcast_to(w, jax.tree_util.tree_leaves(out0)[0].shape))
        except ValueError as err:
            raise ValueError(f"weights of shape {w.shape} do not broadcast to the {m} residuals") from err
        sqrt_w = jnp.sqrt(w)

    def fun(z):
        r = ravel_pytree(residuals(unravel(full_from_free(z)), *args))[0].astype(dtype)
        return r if sqrt_w is None else sqrt_w * r

    z0 = free_from_full(x0_flat)
    n = z0.size
    if lower is not None:
        lo, hi = free_from_full(lower), free_from_full(upper)

        def project(z):
            return jnp.clip(z, lo, hi)
    else:
        def project(z):
            return z

    if jac is None:
        autodiff = jax.jacfwd if m >= n else jax.jacrev

        def full_jac(z):
            return autodiff(fun)(z)
    else:
        if not callable(jac):
            raise TypeError("jac must be callable or None")

        def full_jac(z):
            j = jnp.asarray(jac(unravel(full_from_free(z)), *args), dtype)
            j = jnp.reshape(j, (m, n_total))
            if free_idx is not None:
                j = j[:, free_idx]
            return j if sqrt_w is None else sqrt_w[:, None] * j

    eps = float(jnp.finfo(dtype).eps)
    if linear_solver not in ("svd", "eigh"):
        raise ValueError(f"linear_solver must be 'svd' or 'eigh', got {linear_solver!r}")
    solver = linear_solver

    def _auto(value, auto_value):
        if isinstance(value, str):
            if value != "auto":
                raise ValueError(f"tolerances are floats, None or 'auto'; got {value!r}")
            return auto_value
        return value

    fractol_v = _auto(fractol, 64 * eps)
    xtol_v = _auto(xtol, 10 * eps ** 0.75)
    gtol_v = _auto(gtol, None)
    costol_v = _auto(costol, None)
    stall_costol_v = _auto(stall_costol, 100 * eps ** 0.5)
    tiny = float(jnp.finfo(dtype).tiny)
    inc = float(increase_damp_factor)
    dec = float(decrease_damp_factor)
    n_eig = min(int(num_eig_dirs), n)
    approx_jacobian = broyden_update or eig_update or update_J_frequency > 1

    def free_columns(z, jac_, r):
        """1 for parameters free to move, 0 for those at a bound the gradient pushes against.

        Steps are computed in the free subspace (an active-set projected LM step), then
        clipped onto the box; the set is refreshed whenever J is refactored.
        """
        if lower is None:
            return None
        g = jac_.T @ r
        held = ((z <= lo) & (g > 0)) | ((z >= hi) & (g < 0))
        return jnp.where(held, 0.0, 1.0).astype(dtype)

    def second_directional(z, direction):
        inner = lambda y: jax.jvp(fun, (y,), (direction,))[1]  # noqa: E731
        return jax.jvp(inner, (z,), (direction,))[1]

    # ---- one trial step -------------------------------------------------------------------
    class _Trial(NamedTuple):
        x: jnp.ndarray
        r: jnp.ndarray
        cost: jnp.ndarray
        step: jnp.ndarray
        predicted: jnp.ndarray    # predicted cost decrease (linear model)
        accel_bad: jnp.ndarray

    def trial(st: _State, lam) -> _Trial:
        fac = st.fac
        step = _damped_solve(fac, fac.utr, lam, min_eigval)
        accel_bad = jnp.asarray(False)
        if use_accel:
            rpp = second_directional(st.x, step)
            corr = 0.5 * _damped_solve(fac, fac.u.T @ rpp, lam, min_eigval)
            ratio = jnp.linalg.norm(fac.scale * corr) / jnp.maximum(
                jnp.linalg.norm(fac.scale * step), tiny)
            accel_bad = ~(ratio <= max_accel_correction)
            step = step + jnp.where(accel_bad, 0.0, corr)
        z_new = project(st.x + step)
        step = z_new - st.x
        r_new = fun(z_new)  # (the accel correction's nested JVP is counted in num_jvp)
        cost_new = 0.5 * jnp.dot(r_new, r_new)
        cost_new = jnp.where(jnp.isfinite(cost_new) & ~accel_bad, cost_new, jnp.inf)
        lin = st.r + st.jac @ step
        predicted = st.cost - 0.5 * jnp.dot(lin, lin)
        return _Trial(z_new, r_new, cost_new, step, predicted, accel_bad)

    def partial_update(st: _State, t: _Trial):
        """Broyden / eigen updates of J after an accepted step; refactor."""
        jac_new = st.jac
        njvp = st.njvp
        count = st.partial_updates + 1
        if broyden_update:
            ss = jnp.dot(t.step, t.step)
            upd = jnp.outer(t.r - st.r - jac_new @ t.step, t.step) / jnp.maximum(ss, tiny)
            jac_new = jnp.where(ss > 0, jac_new + upd, jac_new)
        if eig_update:
            def do_eig(j):
                return _eigen_update(j, lambda v: jax.jvp(fun, (t.x,), (v,))[1], n_eig)
            due = (count % eig_update_frequency) == 0
            jac_new = lax.cond(due, do_eig, lambda j: j, jac_new)
            njvp = njvp + jnp.where(due, n_eig, 0)
        fac = _factor(jac_new, t.r, st.fac.scale, damp_mode, transtrum_min,
                      free_columns(t.x, jac_new, t.r), solver)
        return jac_new, fac, njvp, count

    def accept(st: _State, t: _Trial, lam) -> _State:
        if broyden_update or eig_update:
            jac_new, fac, njvp, count = partial_update(st, t)
        else:
            jac_new, fac, njvp, count = (st.jac, st.fac._replace(utr=st.fac.u.T @ t.r), st.njvp,
                                         st.partial_updates + 1)
        return st._replace(x=t.x, r=t.r, cost=t.cost, jac=jac_new, fac=fac, njvp=njvp,
                           partial_updates=count, damping=lam, exp_err=2 * t.predicted,
                           accepted_steps=st.accepted_steps + 1)

    def select(flag, a, b):
        return jax.tree_util.tree_map(lambda u, v: jnp.where(flag, u, v), a, b)

    def count_trial(st: _State, t: _Trial, good, nfev=1) -> _State:
        return st._replace(nfev=st.nfev + nfev, njvp=st.njvp + (nfev if use_accel else 0),
                           accel_rejections=st.accel_rejections + jnp.sum(t.accel_bad.astype(jnp.int32)),
                           rejected_steps=st.rejected_steps + jnp.where(good, 0, 1))

    # ---- one iteration (peri's do_run_1 / do_run_2 call) --------------------------------------
    def iteration(st: _State) -> _State:
        start = st
        lam = st.damping
        # first attempt: run 2 tries λ and λ/dec (batched: one evaluation site) and keeps the
        # better one; run 1 tries λ and decreases it after a success.
        if run_type == 2:
            lams = jnp.stack([lam, lam / dec])
            both = jax.vmap(lambda l: trial(st, l))(lams)
            pick = (both.cost[1] < both.cost[0]).astype(jnp.int32)
            best = jax.tree_util.tree_map(lambda a: a[pick], both)
            lam_best = lams[pick]
            ok = best.cost <= st.cost
            st = count_trial(st, both, ok, nfev=2)
        else:
            best = trial(st, lam)
            lam_best = lam / dec
            ok = best.cost <= st.cost
            st = count_trial(st, best, ok)
        st = select(ok, accept(st, best, lam_best), st)

        # A step is accepted when it does not increase the cost: at the last digits the cost
        # cannot resolve the remaining Gauss-Newton correction, which is still worth taking.

        # then one loop: retries with increasing damping until a step is accepted, followed
        # (run 2) by the internal run: up to run_length more steps on the same J and damping,
        # stopping at the first one that does not decrease the cost.
        internal = run_length if run_type == 2 else 0

        def hopeless(s, tries):
            """Stop retrying early when the Gauss-Newton step could lower the cost by at most a
            fraction stall_costol² (then the stall test ends the fit as COSTOL anyway): after
            _STALL_RETRIES retries, which are enough to find a rounding-level step that leaves
            the cost unchanged, more damping only proves that nothing decreases the cost.
            This matters under vmap, where every lane waits for the slowest: without it a
            converged lane spends max_damping_retries residual evaluations on that proof.
            Only trusted on an exact J."""
            if stall_costol_v is None:
                return jnp.asarray(False)
            exact = (s.partial_updates == 0) if approx_jacobian else jnp.asarray(True)
            return exact & (tries >= _STALL_RETRIES) & (model_cosine(s) < stall_costol_v)

        def inner_cond(carry):
            return carry[5]

        def inner_body(carry):
            s, accepted, lam_try, tries, run_steps, _ = carry
            retrying = ~accepted
            lam_t = jnp.where(retrying, lam_try * inc, s.damping)
            t = trial(s, lam_t)
            good = t.cost <= s.cost
            lam_keep = lam_t / dec if run_type == 1 else lam_t
            s = count_trial(s, t, good | ~retrying)
            s = select(good, accept(s, t, lam_keep), s)
            tries = tries + retrying.astype(tries.dtype)
            run_steps = run_steps + (~retrying).astype(run_steps.dtype)
            go_retry = (~good & (tries < max_damping_retries) & ~hopeless(s, tries)) | (good & (internal > 0))
            go_run = good & (run_steps < internal)
            go = jnp.where(retrying, go_retry, go_run)
            return s, accepted | good, jnp.where(retrying, lam_t, lam_try), tries, run_steps, go

        go0 = (~ok & (max_damping_retries > 0) & ~hopeless(st, 0)) | (ok & (internal > 0))
        st, accepted, lam_retry, _, _, _ = lax.while_loop(
            inner_cond, inner_body, (st, ok, lam, jnp.asarray(0), jnp.asarray(0), go0))

        # fresh Jacobian for the next iteration (or keep the updated one)
        it = start.iteration + 1
        st = st._replace(iteration=it, damping=jnp.where(accepted, st.damping, lam_retry))
        if update_J_frequency == 1:
            st = refresh(st)
        else:
            due = ((it % update_J_frequency) == 0) & accepted
            st = lax.cond(due, refresh, lambda s_: s_, st)

        # termination statistics over the whole iteration
        dx = st.x - start.x
        sse0 = 2 * start.cost
        delta_err = sse0 - 2 * st.cost
        step_norm = jnp.linalg.norm(st.fac.scale * dx)
        st = st._replace(delta_vals=jnp.max(jnp.abs(dx)), delta_err=delta_err,
                         frac_err=delta_err / jnp.maximum(sse0, tiny), step_norm=step_norm)
        status = _check(st, accepted, jacobian_tests=True)
        if update_J_frequency > 1 or broyden_update or eig_update:
            # a test on an approximate J is not trusted: refresh J and test again
            # (and a failure to decrease the cost on an approximate J is retried on the exact
            # one rather than reported)
            status_without_j = _check(st, accepted, jacobian_tests=False)
            stale = st.partial_updates > 0
            recheck = ((status != status_without_j) | ~accepted) & stale
            fresh = lax.cond(recheck, refresh, lambda s_: s_, st)
            status = jnp.where(recheck, _check(fresh, accepted, jacobian_tests=True,
                                               damping_failure=False), status)
            st = fresh
        return st._replace(status=status)

    def refresh(st: _State) -> _State:
        """Exact Jacobian at st.x and its factorisation."""
        new_jac = full_jac(st.x)
        fac = _factor(new_jac, st.r, st.fac.scale, damp_mode, transtrum_min,
                      free_columns(st.x, new_jac, st.r), solver)
        return st._replace(jac=new_jac, fac=fac, njev=st.njev + 1,
                           partial_updates=jnp.zeros_like(st.partial_updates))

    def blocked(st: _State, g):
        """Parameters held at a bound by the gradient (the projected gradient is zero)."""
        if lower is None:
            return jnp.zeros_like(g, dtype=bool)
        return ((st.x <= lo) & (g > 0)) | ((st.x >= hi) & (g < 0))

    def grad_cosine(st: _State):
        g = st.jac.T @ st.r
        denom = _column_norms(st.jac) * jnp.linalg.norm(st.r)
        cos = jnp.where(denom > 0, jnp.abs(g) / jnp.where(denom > 0, denom, 1.0), 0.0)
        return jnp.max(jnp.where(blocked(st, g), 0.0, cos))

    def model_cosine(st: _State):
        # all directions with a nonzero singular value: a tiny but nonzero column of J
        # (a parameter on a plateau) is still a direction the residuals can move along
        proj = jnp.linalg.norm(jnp.where(_structural(st.fac), st.fac.utr, 0.0))
        # (with bounds, J's held columns are zeroed in the factor: the free-subspace cosine)
        return proj / jnp.maximum(jnp.linalg.norm(st.r), tiny)

    def gauss_newton_small(st: _State, accepted):
        """Is the undamped (Gauss-Newton) step from x below xtol, relative, in the d-norm?

        Near a minimum LM converges like Gauss-Newton, so the GN step estimates the distance
        to the minimum: this test stops when x is known to ~xtol relative precision.
        """
        fac = st.fac
        exists = _structural(fac)
        keep = (fac.s * fac.s > min_eigval * fac.s[0] * fac.s[0]) & exists
        gn = jnp.where(keep, fac.utr / jnp.where(keep, fac.s, 1.0), 0.0)
        gn_norm = jnp.linalg.norm(gn)   # with bounds: the step in the free subspace
        # directions dropped by min_eigval must not carry residual: a parameter on a plateau
        # (a nearly zero column of J, e.g. exp(-b x) with b huge) is not converged
        dropped = jnp.linalg.norm(jnp.where(~keep & exists, fac.utr, 0.0))
        plateau = dropped > 100 * eps ** 0.5 * jnp.linalg.norm(st.r)
        return (gn_norm <= xtol_v * (jnp.linalg.norm(fac.scale * st.x) + xtol_v)) & ~plateau

    def _check(st: _State, accepted, jacobian_tests=True, damping_failure=True):
        status = jnp.asarray(_RUNNING)
        # later assignments take precedence: list from weakest to strongest evidence
        if exptol is not None:
            status = jnp.where(accepted & (st.exp_err < exptol), int(Status.EXPTOL), status)
        if errtol is not None:
            status = jnp.where(accepted & (st.delta_err < errtol), int(Status.ERRTOL), status)
        if fractol_v is not None:
            rel_pred = st.exp_err / jnp.maximum(2 * st.cost, tiny)
            status = jnp.where(accepted & (st.frac_err < fractol_v) & (rel_pred < fractol_v),
                               int(Status.FRACTOL), status)
        if paramtol is not None:
            status = jnp.where(accepted & (st.delta_vals < paramtol), int(Status.XTOL), status)
        if xtol_v is not None and jacobian_tests:
            status = jnp.where(gauss_newton_small(st, accepted), int(Status.XTOL), status)
        if costol_v is not None and jacobian_tests:
            status = jnp.where(model_cosine(st) < costol_v, int(Status.COSTOL), status)
        if gtol_v is not None and jacobian_tests:
            status = jnp.where(grad_cosine(st) <= gtol_v, int(Status.GTOL), status)
        status = jnp.where(st.cost <= tiny, int(Status.ZERO_RESIDUAL), status)
        if stall_costol_v is not None and jacobian_tests:
            # no damping decreased the cost: at a minimum to working precision if the
            # Gauss-Newton step could reduce the cost by at most a fraction stall_costol²
            stalled = ~accepted | (st.delta_err <= 0)
            status = jnp.where((status == _RUNNING) & stalled
                               & (model_cosine(st) < stall_costol_v), int(Status.COSTOL), status)
        if damping_failure:
            # no step decreased the cost (strictly, over the whole iteration): stop rather
            # than drift along a plateau of equal cost
            no_progress = ~accepted | (st.delta_err <= 0)
            status = jnp.where((status == _RUNNING) & no_progress, int(Status.DAMPING), status)
        status = jnp.where((status == _RUNNING) & ~jnp.isfinite(st.cost), int(Status.NONFINITE),
                           status)
        status = jnp.where((status == _RUNNING) & (st.iteration >= max_iter), int(Status.MAX_ITER),
                           status)
        return status

    # ---- initial state ---------------------------------------------------------------------
    r0 = fun(z0)
    cost0 = 0.5 * jnp.dot(r0, r0)
    jac0 = full_jac(z0)
    fac0 = _factor(jac0, r0, jnp.zeros((n,), dtype), damp_mode, transtrum_min,
                   free_columns(z0, jac0, r0), solver)
    zero = jnp.zeros((), dtype)
    izero = jnp.asarray(0)
    state = _State(x=z0, r=r0, cost=cost0, jac=jac0, fac=fac0,
                   damping=jnp.asarray(damping, dtype), iteration=izero, nfev=jnp.asarray(1),
                   njev=jnp.asarray(1), njvp=izero, partial_updates=izero,
                   status=jnp.asarray(_RUNNING), delta_vals=zero, delta_err=zero,
                   exp_err=zero, frac_err=zero, step_norm=zero, accepted_steps=izero,
                   rejected_steps=izero, accel_rejections=izero)
    init_status = jnp.where(~jnp.isfinite(cost0) | ~jnp.all(jnp.isfinite(jac0)),
                            int(Status.NONFINITE), _RUNNING)
    init_status = jnp.where(cost0 <= tiny, int(Status.ZERO_RESIDUAL), init_status)
    if gtol_v is not None:
        init_status = jnp.where((init_status == _RUNNING) & (grad_cosine(state) <= gtol_v),
                                int(Status.GTOL), init_status)
    if xtol_v is not None:
        init_status = jnp.where((init_status == _RUNNING) & gauss_newton_small(state, False),
                                int(Status.XTOL), init_status)
    init_status = jnp.where((init_status == _RUNNING) & (max_iter <= 0), int(Status.MAX_ITER),
                            init_status)
    state = state._replace(status=init_status)

    state = lax.while_loop(lambda s: s.status == _RUNNING, iteration, state)

    final_jac = state.jac
    njev = state.njev
    if approx_jacobian:
        final_jac = full_jac(state.x)
        njev = njev + 1
    x_out = unravel(full_from_free(state.x))
    extra = {
        "delta_vals": state.delta_vals,
        "delta_err": state.delta_err,
        "exp_err": state.exp_err,
        "frac_err": state.frac_err,
        "num_iter": state.iteration,
        "model_cosine": model_cosine(state),
        "grad_cosine": grad_cosine(state._replace(jac=final_jac)),
        "damping": state.damping,
        "num_jvp": state.njvp,
        "accepted_steps": state.accepted_steps,
        "rejected_steps": state.rejected_steps,
        "accel_rejections": state.accel_rejections,
        "residuals": state.r,
        "cost": state.cost,
    }
    return OptimizeResult(x=x_out, fun=state.cost, jac=final_jac, status=state.status,
                          nit=state.iteration, nfev=state.nfev, njev=njev, extra=extra)
