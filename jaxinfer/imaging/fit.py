"""Levenberg–Marquardt fits of the image model on the project's LM solver state
(:class:`jaxinfer.optimize.lm.LevenbergMarquardt`: init / step / terminate, run by
:func:`~jaxinfer.optimize._iterate.iterate`), with peri's step policies and stopping rules.

Compilation: a fit's program depends only on the image model, the array shapes and the LM
*structure* (flags such as ``use_accel``, ``eig_update``, the run type); every numeric LM
setting (damping, factors, tolerances, ``max_iter``, ``run_length``), the held/free masks and
``include_rad`` are traced (:func:`split_options`), so burn's and finish's stages share
programs.

Two pure, jitted fits:

- :func:`fit_globals`: any subset of parameters, residuals over the whole image, an exact
  structured Jacobian (:func:`globals_problem`: the spheres held while zscale is, two FFTs
  a column; peri used one finite-difference image update per parameter), damped steps from
  the normal equations' eigendecomposition.
- :func:`fit_particle_groups`: positions and radii of particle groups (``region_size=None``:
  one particle per group, what burn and finish use). Each group is fitted on its own tile
  with the exact local model change ``M0 + H((C - I)(P_g - P_g0))``. Groups whose tiles do not
  overlap form one *colour*; the groups of a colour are fitted together under ``vmap``
  (padded to a common size with 0/1 masks), colours one after another, all in one compiled
  ``lax.scan``; each colour adds its exact tile changes to the model the next one starts
  from.

Both return the new parameters and the engine's :class:`~jaxinfer.optimize.OptimizeResult`
(batched over groups for the particle fit). peri's "error" is the plain sum of squared
residuals, ``2 * result.fun``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxinfer.imaging import names as N
from jaxinfer.imaging import platonic, psf
from jaxinfer.imaging.model import (ImageModel, background_field, illumination_field,
                                    platonic_field, render, render_padded)
from jaxinfer.optimize._compile import compiler_options
from jaxinfer.optimize._iterate import iterate
from jaxinfer.optimize.linear_solve import DenseEigh, DenseSVD, NormalEquations
from jaxinfer.optimize.lm import (LeastSquaresProblem, Levenberg, LevenbergMarquardt, Marquardt,
                                  RunOne, RunTwo, Transtrum)

__all__ = ["PERI_TOLERANCES", "lm_options", "split_options", "run_lm", "global_refs",
           "blur_margin", "psf_bound", "globals_problem", "fit_globals", "group_particles",
           "plan_groups", "fit_particle_groups", "fit_joint", "joint_problem", "joint_pairs",
           "radius_bound", "MIN_RADIUS", "MAX_RADIUS", "MIN_DIST"]

# peri's LMEngine defaults (code, not docstring), SSE units
PERI_TOLERANCES = dict(paramtol=1e-6, errtol=1e-5, exptol=1e-3, fractol=1e-6)
MIN_RADIUS, MAX_RADIUS, MIN_DIST = 1e-3, 200.0, 1e-3   # peri's LMParticles clipping


def lm_options(damping=1.0, increase_damp_factor=3.0, decrease_damp_factor=8.0,
               min_eigval=1e-13, marquardt_damping=False, transtrum_damping=None,
               use_accel=False, max_accel_correction=1.0, paramtol=1e-6, errtol=1e-5,
               exptol=1e-3, fractol=1e-6, costol=None, max_iter=5, run_length=5,
               update_J_frequency=1, broyden_update=True, eig_update=False,
               eig_update_frequency=3, num_eig_dirs=8, run_type=2, **ignored):
    """peri's LMEngine keywords (and defaults) -> the LM settings used here, one flat dict.

    Keywords peri accepts that change nothing here (``eig_dl``, ``broyden_update_frequency``,
    ``max_mem``, ``decimate``, ...) are ignored: Jacobians are exact and never decimated.
    ``broyden_update`` and ``eig_update`` (peri's cheap corrections of a stale
    finite-difference J during the internal run) are accepted and not used: here J is exact
    at every iteration, and both updates cost more than they save (the eigen update is one
    JVP of the whole render per direction; with either, the engine refreshes J once more at
    the end): a burn globals fit on 12x24x24 took 3.2 CPU-s with them, 0.9 without."""
    if transtrum_damping is not None:
        damp_mode, floor = "transtrum", float(transtrum_damping)
    else:
        damp_mode, floor = ("marquardt" if marquardt_damping else "levenberg"), 1e-6
    if int(run_type) not in (1, 2):
        raise ValueError(f"run_type must be 1 or 2, got {run_type!r}")
    return dict(damping=float(np.mean(damping)), damp_mode=damp_mode, transtrum_min=floor,
                increase_damp_factor=float(increase_damp_factor),
                decrease_damp_factor=float(decrease_damp_factor), min_eigval=float(min_eigval),
                use_accel=bool(use_accel), max_accel_correction=float(max_accel_correction),
                paramtol=paramtol, errtol=errtol, exptol=exptol, fractol=fractol,
                costol=costol, max_iter=int(max_iter), run_length=int(run_length),
                update_J_frequency=int(update_J_frequency),
                broyden_update=False, eig_update=False,
                eig_update_frequency=int(eig_update_frequency),
                num_eig_dirs=int(num_eig_dirs), run_type=int(run_type))


#: settings that change the program (flags, update schedules, the step policy)
_STRUCTURAL = ("damp_mode", "use_accel", "broyden_update", "eig_update",
               "eig_update_frequency", "num_eig_dirs", "update_J_frequency", "run_type")
_COUNTS = ("max_iter", "run_length")


def split_options(options):
    """``lm_options(...)`` -> ``(structure, numbers)``: a hashable tuple of the settings that
    change the program (a static argument of the fits) and a dict of 0-d arrays of the
    numeric ones (damping, factors, tolerances, iteration limits: traced, so fits that differ
    only in numbers share one compilation). A tolerance that is None (test off) is
    structural."""
    structure = tuple((k, options[k]) for k in _STRUCTURAL) + tuple(
        (k, None) for k in sorted(options) if options[k] is None)
    numbers = {k: np.asarray(v, np.int32 if k in _COUNTS else np.float64)
               for k, v in options.items() if k not in _STRUCTURAL and v is not None}
    return structure, numbers


def _solver(structure, numbers, linear_solver=None, trial_jacobian=True):
    """The core :class:`~jaxinfer.optimize.lm.LevenbergMarquardt` from split settings (the
    numbers may be tracers)."""
    s = dict(structure)
    scale = {"levenberg": Levenberg(), "marquardt": Marquardt()}.get(s["damp_mode"])
    if scale is None:
        scale = Transtrum(numbers["transtrum_min"])
    policy = RunTwo(run_length=numbers["run_length"]) if s["run_type"] == 2 else RunOne()
    tols = {k: numbers.get(k) for k in ("paramtol", "errtol", "exptol", "fractol", "costol")}
    solver = DenseSVD() if linear_solver is None else linear_solver
    return LevenbergMarquardt(
        damping_scale=scale, linear_solver=solver, policy=policy,
        damping=numbers["damping"], increase_damp_factor=numbers["increase_damp_factor"],
        decrease_damp_factor=numbers["decrease_damp_factor"],
        min_eigval=numbers["min_eigval"], use_accel=s["use_accel"],
        max_accel_correction=numbers["max_accel_correction"],
        broyden_update=s["broyden_update"], eig_update=s["eig_update"],
        eig_update_frequency=s["eig_update_frequency"], num_eig_dirs=s["num_eig_dirs"],
        update_J_frequency=s["update_J_frequency"], xtol=None, stall_costol="auto",
        max_iter=numbers["max_iter"], trial_jacobian=trial_jacobian, **tols)


def run_lm(residuals, x0, args, structure, numbers, mask=None, lower=None, upper=None,
           jacobian=None, linear_solver=None, trial_jacobian=True, normal_equations=None):
    """One LM fit on the core solver state (init / step / terminate in one
    ``lax.while_loop``): ``residuals(x (n,), args) -> (m,)``, x0 (n,), ``jacobian(x, args) ->
    (m, n)`` or None (autodiff); ``linear_solver`` (default DenseSVD); or
    ``normal_equations(x, args, r) -> (J^T J (n, n), J^T r (n,))`` (J never formed; the
    linear solver must be ``NormalEquations``). To be called inside a trace. Returns the
    :class:`~jaxinfer.optimize.OptimizeResult` (flat ``x``)."""
    problem = LeastSquaresProblem(residuals, jacobian=jacobian, mask=mask, lower=lower,
                                  upper=upper, normal_equations=normal_equations)
    return iterate(_solver(structure, numbers, linear_solver, trial_jacobian), problem, x0,
                   args)


def require_float64(params, what):
    """The fits are validated in float64 only; refuse float32 rather than risk a wrong
    answer reported as converged."""
    if params["pos"].dtype != jnp.float64:
        raise ValueError(f"{what} needs float64 (the parameters are {params['pos'].dtype}); turn "
                         "it on before building the state: jax.config.update('jax_enable_x64', True)")


def _bounds_for(model: ImageModel, refs, dtype):
    lo, hi = [], []
    for key, index in refs:
        if key == "rad":
            lo.append(MIN_RADIUS), hi.append(MAX_RADIUS)
        elif key == "pos":
            c = index[1]
            lo.append(MIN_DIST - model.pad[c])
            hi.append(model.shape[c] + model.pad[c] - MIN_DIST)
        elif key == "psf":
            lo.append(1e-3), hi.append(np.inf)
        elif key == "zscale":
            lo.append(1e-3), hi.append(np.inf)
        else:
            lo.append(-np.inf), hi.append(np.inf)
    return jnp.asarray(lo, dtype), jnp.asarray(hi, dtype)


def global_refs(model: ImageModel):
    """References of every global parameter (zscale, ilm, bkg, offset, psf), peri's order."""
    names = model.param_names(0)
    return tuple([("zscale", ())] + [("ilm", (i,)) for i in range(len(names["ilm"]))]
                 + [("bkg", (i,)) for i in range(len(names["bkg"]))] + [("offset", ())]
                 + [("psf", (i,)) for i in range(3)])


def blur_margin(model: ImageModel, psf_values, floor=None):
    """The static margin ``w`` (3,) around the image over which the globals fit blurs, from
    the PSF values (3,): ``1.5`` times the kernel's reach plus one voxel, at most ``pad``,
    never below ``floor`` (a previous margin, so that a shrinking PSF does not recompile).
    The blur of a field on the image grown by ``w`` equals, on the image, the blur over the
    whole padded volume while the kernel's reach ``m/2 <= w`` (:func:`psf_bound`)."""
    spread = math.sqrt(-2 * math.log(model.psf_error))
    reach = np.ceil(np.ceil(np.abs(np.asarray(psf_values, float)) * spread) / 2)
    w = np.ceil(1.5 * reach).astype(int) + 1
    if floor is not None:
        w = np.maximum(w, np.asarray(floor, int))
    for axis, n in enumerate(model.shape):     # FFT-friendly sizes: factors 2, 3, 5 only
        while not _smooth(n + 2 * w[axis]):
            w[axis] += 1
    return tuple(int(v) for v in np.minimum(w, np.asarray(model.pad, int)))


def _smooth(n):
    for f in (2, 3, 5):
        while n % f == 0:
            n //= f
    return n == 1


def psf_bound(model: ImageModel, margin):
    """The largest PSF value per axis (3,) whose kernel fits the margin ``w``:
    ``ceil(value * spread)`` rounded up to even is at most ``2 w``, i.e. ``value <= 2 w /
    spread``; inf where the margin is the whole pad (the model's own circular blur)."""
    spread = math.sqrt(-2 * math.log(model.psf_error))
    return np.array([np.inf if w >= p else 2 * w / spread for w, p in zip(margin, model.pad)])


def radius_bound(model: ImageModel, half, zscale):
    """The largest radius (pixels) whose sphere a drawing cube of half widths ``half`` (3,)
    holds whole (the occupancy is zero beyond 1.6 px of the surface, the volume-matched
    radius moves by at most ``max_radius_change``, the cube sits on the rounded centre), with
    2% room for zscale to move; inf for profiles without a compact edge."""
    if model.method != "exact-gaussian-trim":
        return np.inf
    zf = 0.98 * np.array([min(float(zscale), 1.0), 1.0, 1.0])
    reach = (np.asarray(half, float) - 1) * zf - 1.6
    return max(float(np.min(reach)) / (1 + model.max_radius_change), MIN_RADIUS)


def globals_problem(model: ImageModel, scale, free, margin=None, half=None):
    """``(res, jac)`` of the globals fit in the scaled variables ``u = x / scale`` (x: every
    global, :func:`global_refs` order): ``res(u, (params, data, p_held)) -> (m,)`` and its
    exact Jacobian ``jac(u, (params, data, p_held)) -> (m, n)``; ``p_held`` is the platonic
    field of ``params`` (:func:`~jaxinfer.imaging.model.platonic_field`).

    margin : None (the whole padded volume) or :func:`blur_margin`'s ``w``: while zscale is
    held, every blur runs on the image grown by ``w`` (the 32x64x64 benchmark: 48x76x76
    instead of 80x112x112), exact while the PSF stays within :func:`psf_bound` (the fit
    bounds it so).

    Only zscale moves the spheres: while it is held (``free`` says), the model is composed
    on ``p_held`` (no sphere is drawn) and its Jacobian is built by hand: the field columns
    (illumination, offset, background) are one transform pair each with the kernel's
    transform held, the PSF columns one pair each with the field's transform held, and the
    zscale column, when zscale is fitted, one JVP of the whole render (jacfwd would push every
    column through the spheres and the kernel).

    half : None, or static cube half widths (3,): then the spheres move (the joint fit) and
    are drawn for every residual and J on the blurred region only, each on a cube of ``half``
    (exact for radii up to :func:`radius_bound`; ``p_held`` is not used); the zscale column
    is the JVP of that residual."""
    refs = global_refs(model)
    iz = refs.index(("zscale", ()))
    ipsf = np.array([i for i, r in enumerate(refs) if r[0] == "psf"])
    ifield = np.array([i for i in range(len(refs)) if i != iz and i not in ipsf])
    if margin is None:
        margin = tuple(int(p) for p in model.pad)
    # the blurred region (the image grown by the margin) and the image inside it
    crop = tuple(slice(p - w, p + n + w) for p, n, w in zip(model.pad, model.shape, margin))
    shape = tuple(n + 2 * w for n, w in zip(model.shape, margin))
    inner = tuple(slice(w, w + n) for n, w in zip(model.shape, margin))

    region = tuple((p - w, p + n + w) for p, n, w in zip(model.pad, model.shape, margin))

    def background(q):
        return background_field(model, q, region)

    def compose(q, p):      # the model on the image from the platonic field on the crop
        kernel = psf.gaussian_kernel_wrapped(q["psf"], shape, model.psf_error)
        f = illumination_field(model, q, region) * (1 - p) + q["offset"] * p
        return (psf.convolve(f, kernel) + background(q))[inner]

    def draw(q):            # the platonic field on the blurred region, cubes of ``half``
        return platonic.render_platonic(
            shape, half, q["pos"] + jnp.asarray(margin, q["pos"].dtype), q["rad"],
            q["zscale"], q.get("active"), method=model.method, alpha=model.alpha,
            exact_volume=model.exact_volume, volume_error=model.volume_error,
            max_radius_change=model.max_radius_change)

    def res(u, args):
        params, data, p_held = args
        q = N.unpack(params, refs, u * scale)
        if half is not None:
            return (data - compose(q, draw(q))).ravel()
        mdl = lax.cond(free[iz] > 0, lambda: render(model, q),
                       lambda: compose(q, p_held[crop]))
        return (data - mdl).ravel()

    def jac(u, args):
        params, data, p_held = args
        q = N.unpack(params, refs, u * scale)
        if half is not None:
            p = draw(q)
        else:
            p = lax.cond(free[iz] > 0, lambda: platonic_field(model, q), lambda: p_held)[crop]

        def field(v):
            qq = N.unpack(params, refs, u.at[ifield].set(v) * scale)
            return illumination_field(model, qq, region) * (1 - p) + qq["offset"] * p, qq

        kernel_ft = jnp.fft.rfftn(psf.gaussian_kernel_wrapped(q["psf"], shape, model.psf_error))

        def field_part(v):
            f, qq = field(v)
            out = jnp.fft.irfftn(jnp.fft.rfftn(f) * kernel_ft, s=shape)
            return (out + background(qq))[inner].ravel()

        field_ft = jnp.fft.rfftn(field(u[ifield])[0])

        def psf_part(v):
            qq = N.unpack(params, refs, u.at[ipsf].set(v) * scale)
            k_ft = jnp.fft.rfftn(psf.gaussian_kernel_wrapped(qq["psf"], shape, model.psf_error))
            return jnp.fft.irfftn(field_ft * k_ft, s=shape)[inner].ravel()

        cols = jnp.zeros((int(np.prod(model.shape)), len(refs)), u.dtype)
        cols = cols.at[:, ifield].set(jax.jacfwd(field_part)(u[ifield]))
        cols = cols.at[:, ipsf].set(jax.jacfwd(psf_part)(u[ipsf]))
        e = jnp.zeros_like(u).at[iz].set(1.0)
        zcol = lax.cond(free[iz] > 0, lambda: jax.jvp(lambda v: res(v, args), (u,), (e,))[1],
                        lambda: jnp.zeros(cols.shape[0], cols.dtype))
        return (-cols).at[:, iz].set(zcol)

    return res, jac


@functools.lru_cache(maxsize=None)
def _jitted(name):
    """The compiled fits, made on first use (when the backend is known) with the solver
    core's CPU compiler options (XLA's classic emitters: less compile time for these
    loop-heavy programs)."""
    fn, static = {"globals": (_fit_globals_impl, (0, 5, 7)),
                  "particles": (_fit_particle_groups_impl, (0, 3, 6)),
                  "augmented": (_fit_augmented_impl, (0, 7)),
                  "joint": (_fit_joint_impl, (0, 6, 8, 9))}[name]
    return jax.jit(fn, static_argnums=static, compiler_options=compiler_options())


def _fit_globals(*args):
    return _jitted("globals")(*args)


def _fit_particle_groups(*args):
    return _jitted("particles")(*args)


def _fit_augmented(*args):
    return _jitted("augmented")(*args)


def _fit_globals_impl(model, params, data, free, scale, structure, numbers, margin):
    refs = global_refs(model)
    x0 = N.pack(params, refs)
    lo, hi = _bounds_for(model, refs, x0.dtype)
    ipsf = np.array([i for i, r in enumerate(refs) if r[0] == "psf"])
    hi = hi.at[ipsf].set(jnp.asarray(psf_bound(model, margin), hi.dtype))   # blur stays exact
    res, jac = globals_problem(model, scale, free, margin)
    args = (params, data, platonic_field(model, params))
    # the normal equations' eigendecomposition, not an SVD of the (pixels, n) Jacobian: the
    # same steps here (peri solves the normal equations too) for a fraction of the work
    result = run_lm(res, x0 / scale, args, structure, numbers, mask=free,
                    lower=lo / scale, upper=hi / scale, jacobian=jac, linear_solver=DenseEigh())
    return N.unpack(params, refs, result.x * scale), result


def fit_globals(model: ImageModel, params, data, refs, damping=1.0, margin=None,
                **peri_options):
    """LM over the global parameters ``refs`` (see :mod:`~jaxinfer.imaging.names`) on the
    whole image; the other globals are held. One compilation per image model and LM
    structure: which globals are held (a 0/1 mask), the damping and every numeric setting
    are traced.

    damping : float, or one value per entry of ``refs`` (peri's damping vector: the damping
    matrix ``diag(damping)``; realised by rescaling each parameter by ``1/sqrt(damping_i)``).
    margin : the blur margin (:func:`blur_margin`; None: from the current PSF values); the
    PSF values are bounded by :func:`psf_bound` of it, so the fit's blurs stay exact.
    ``peri_options``: the other LMEngine keywords (:func:`lm_options`). Returns
    ``(params, OptimizeResult)``; ``result.x`` holds every global (scaled by the damping)."""
    require_float64(params, "fit_globals")
    all_refs = global_refs(model)
    refs = tuple(refs)
    unknown = [r for r in refs if r not in all_refs]
    if unknown:
        raise ValueError(f"fit_globals fits global parameters only; got particle refs {unknown[:4]}")
    dtype = params["pos"].dtype
    free = np.zeros(len(all_refs), bool)
    scale = np.ones(len(all_refs))
    damp = np.broadcast_to(np.asarray(damping, float), (len(refs),))
    if np.any(damp <= 0):
        raise ValueError(f"damping must be > 0, got {damp.tolist()}")
    lam = float(damp[0]) if np.all(damp == damp[0]) else 1.0
    for r, d in zip(refs, damp):
        free[all_refs.index(r)] = True
        scale[all_refs.index(r)] = np.sqrt(lam / d)
    if not free.any():
        raise ValueError("fit_globals: no parameter selected")
    structure, numbers = split_options(lm_options(damping=lam, **peri_options))
    margin = blur_margin(model, np.asarray(params["psf"]), margin)
    return _fit_globals(model, params, data, jnp.asarray(free), jnp.asarray(scale, dtype),
                        structure, numbers, margin)


# --------------------------------------------------------------------------------------------
# particle groups


def group_particles(pos, image_shape, region_size=40, shift=None):
    """peri's ``separate_particles_into_groups``: boxes of ``region_size`` tiling the image
    (shifted by half a box when ``shift``), each non-empty box a group. Particles outside the
    image are put in the nearest box. ``region_size=None``: one group per particle. Returns a
    list of int arrays."""
    pos = np.asarray(pos, float).reshape(-1, 3)
    if region_size is None:
        return [np.array([i]) for i in range(pos.shape[0])]
    rs = np.broadcast_to(np.asarray(region_size, int), (3,))
    offset = rs // 2 if shift else np.zeros(3, int)
    clipped = np.clip(pos, 1e-3, np.asarray(image_shape, float) - 1e-3)
    box = np.floor((clipped + offset) / rs).astype(int)
    keys, inverse = np.unique(box, axis=0, return_inverse=True)
    return [np.flatnonzero(inverse.ravel() == k) for k in range(len(keys))]


def _bucket(n):
    """Round up to 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (powers of two and 1.5 times them), so
    that layouts of similar size share a compilation while padding wastes at most a third."""
    n = max(int(n), 1)
    b = 1
    while b < n:
        b = b + 1 if b < 2 else (b * 3 // 2 if b & (b - 1) == 0 else b * 4 // 3)
    return b


def plan_groups(model: ImageModel, pos, psf_values, groups, region_size=40, floor=None,
                rad=None, zscale=1.0, lanes=None):
    """Static layout of a particle sweep: a common tile shape, each group's tile corner and
    the colouring of the groups (groups of one colour have disjoint tiles).

    The tile is the region box (``region_size``; None: one particle per group) plus each
    particle's reach (its drawing cube, or, for the ``exact-gaussian-trim`` profile, which is
    zero beyond 1.6 px of the surface, the smaller box that holds radii ``rad`` grown by 10%)
    and the PSF's reach (10% margin, plus one voxel for a centre that rounds the other way),
    rounded up to a multiple of 4; colours, groups per colour and particles per group are
    padded (:func:`_bucket`; empty slots: index -1). ``floor`` (a previous plan's ``key``, or
    None): the tile and the padded sizes never shrink below it, so the sweeps of one fit keep
    one layout (one compilation) while particles and the PSF move. Returns a dict of NumPy
    arrays: ``tile`` (3,), ``index`` (n_colours, G, K), ``corner`` (n_colours, G, 3), and
    ``key`` ``(tile, (n_colours, G, K), half)`` (``half``: the cube half widths drawn).
    ``lanes``: at most this many groups per colour (None: no limit)."""
    pos = np.asarray(pos, float).reshape(-1, 3)
    lanes = len(groups) if lanes is None else int(lanes)
    half = np.asarray(model.half)
    if model.method == "exact-gaussian-trim" and rad is not None and len(rad):
        surface = 1.1 * (1 + model.max_radius_change) * float(np.max(rad)) + 1.6
        reach = np.ceil(surface / np.array([min(float(zscale), 1.0), 1.0, 1.0])) + 1
        half = np.minimum(half, reach.astype(int))
    if floor is not None and len(floor) > 2:
        half = np.minimum(np.maximum(half, np.asarray(floor[2], int)), model.half)
    padded = np.asarray(model.padded_shape)
    spread = math.sqrt(-2 * math.log(model.psf_error))
    # the kernel's support is +-ceil(ceil(p) / 2) voxels, p = value * spread
    psf_half = np.ceil(np.ceil(np.abs(np.asarray(psf_values, float)) * spread * 1.1) / 2)
    psf_half = psf_half.astype(int) + 1
    rs = np.broadcast_to(np.asarray(0 if region_size is None else region_size, int), (3,))
    boxes = []
    for g in groups:
        centre = np.round(pos[g] + np.asarray(model.pad))
        boxes.append((centre.min(axis=0) - half - psf_half, centre.max(axis=0) + half + psf_half + 1))
    need = np.max([hi - lo for lo, hi in boxes], axis=0)
    tile = np.maximum(need, rs + 2 * (half + psf_half) + 1)
    tile = np.minimum(4 * np.ceil(tile / 4), padded).astype(int)
    if floor is not None:
        tile = np.maximum(tile, np.asarray(floor[0], int))
    corners = [np.clip((lo - (tile - (hi - lo)) // 2).astype(int), 0, padded - tile)
               for lo, hi in boxes]
    # greedy colouring: a group joins the first colour none of whose tiles it overlaps
    colours = []
    for gi, c in enumerate(corners):
        for col in colours:
            if len(col) < lanes and all(np.any((c >= corners[o] + tile) | (corners[o] >= c + tile)) for o in col):
                col.append(gi)
                break
        else:
            colours.append([gi])
    dims = [_bucket(len(colours)), _bucket(max(len(col) for col in colours)),
            _bucket(max(len(g) for g in groups))]
    if floor is not None:
        dims = [max(d, int(f)) for d, f in zip(dims, floor[1])]
    index = -np.ones(dims, int)
    corner = np.zeros(index.shape[:2] + (3,), int)
    for ci, col in enumerate(colours):
        for slot, gi in enumerate(col):
            index[ci, slot, :len(groups[gi])] = groups[gi]
            corner[ci, slot] = corners[gi]
    return dict(tile=tile, index=index, corner=corner,
                key=(tuple(int(t) for t in tile), tuple(int(d) for d in dims),
                     tuple(int(h) for h in half)))


def _fit_particle_groups_impl(model, params, data, geometry, index, corner, structure, numbers,
                              include_rad):
    tile, half = geometry          # static: the tile shape and each particle's cube half widths
    dtype = params["pos"].dtype
    pad = jnp.asarray(model.pad, dtype)
    padded_data = jnp.zeros(model.padded_shape, dtype).at[model.inner].set(data)
    # the inner-image indicator, built from the data (all finite, so all ones) so that XLA
    # does not spend its compile time constant-folding a full-size array
    inner_mask = jnp.zeros(model.padded_shape, dtype).at[model.inner].set(
        (data == data).astype(dtype))
    c_minus_i = params["offset"] - illumination_field(model, params)
    zscale = params["zscale"]
    kernel_ft = jnp.fft.rfftn(psf.gaussian_kernel_wrapped(params["psf"], tile, model.psf_error))
    lo_pos = jnp.asarray([MIN_DIST - p for p in model.pad], dtype)
    hi_pos = jnp.asarray([s + p - MIN_DIST for s, p in zip(model.shape, model.pad)], dtype)
    k = index.shape[-1]

    def blur(field):       # H on the tile: the tile holds each change and the PSF's reach
        return jnp.fft.irfftn(jnp.fft.rfftn(field) * kernel_ft, s=tile)

    def draw(x, active, corner):
        pos, rad = x[:3 * k].reshape(k, 3), x[3 * k:]
        return platonic.render_platonic(
            tile, half, pos + pad - corner.astype(dtype), rad, zscale,
            active, method=model.method, alpha=model.alpha, exact_volume=model.exact_volume,
            volume_error=model.volume_error, max_radius_change=model.max_radius_change)

    def fit_one(x0, active, corner, model0_padded):
        def cut(a):
            return lax.dynamic_slice(a, tuple(corner), tile)

        d_t, m0_t, cmi_t, mask_t = (cut(a) for a in (padded_data, model0_padded, c_minus_i,
                                                     inner_mask))
        p0_t = draw(x0, active, corner)

        def change(x):
            return blur(cmi_t * (draw(x, active, corner) - p0_t))

        def res(x, _):
            return ((d_t - m0_t - change(x)) * mask_t).ravel()

        def jac(x, _):
            # each particle changes only its own cube: 4 cube-sized JVPs per particle, then
            # one convolution per column (jacfwd would push every tangent through all k)
            pos, rad = x[:3 * k].reshape(k, 3), x[3 * k:]
            dp = platonic.platonic_jacobian(
                tile, half, pos + pad - corner.astype(dtype), rad, zscale, active,
                method=model.method, alpha=model.alpha, exact_volume=model.exact_volume,
                volume_error=model.volume_error, max_radius_change=model.max_radius_change)
            cols = jnp.concatenate([dp[:, :3].reshape((3 * k,) + tile), dp[:, 3]])
            cols = jax.vmap(lambda c: blur(cmi_t * c) * mask_t)(cols)
            return -cols.reshape(3 * k + k, -1).T

        # positions always, radii with include_rad; empty slots never (a traced mask)
        free = jnp.concatenate([jnp.repeat(active > 0, 3), (active > 0) & include_rad])
        lo = jnp.concatenate([jnp.tile(lo_pos, k), jnp.full((k,), MIN_RADIUS, dtype)])
        hi = jnp.concatenate([jnp.tile(hi_pos, k), jnp.full((k,), MAX_RADIUS, dtype)])
        # one group per colour (unbatched): J only at accepted points, a rejected trial
        # costs one residual evaluation; batched lanes pay both branches, so they keep the
        # fused trial (r and J together)
        result = run_lm(res, x0, 0.0, structure, numbers, mask=free, lower=lo, upper=hi,
                        jacobian=jac, trial_jacobian=index.shape[1] > 1)
        return result, change(result.x)

    def fit_colour(carry, layout):
        params, model_padded = carry
        idx, corners = layout
        active = (idx >= 0).astype(dtype)
        safe = jnp.maximum(idx, 0)
        # empty slots: a unit sphere at the tile centre, masked out of the image
        centre = corners.astype(dtype)[:, None, :] + jnp.asarray(tile, dtype) / 2 - pad
        pos0 = jnp.where(active[..., None] > 0, params["pos"][safe], centre)
        rad0 = jnp.where(active > 0, params["rad"][safe], 1.0)
        x0 = jnp.concatenate([pos0.reshape(pos0.shape[0], -1), rad0], axis=1)
        if idx.shape[0] == 1:    # one group: no vmap, so the LM's branches stay branches
            result, changes = jax.tree_util.tree_map(
                lambda a: a[None], fit_one(x0[0], active[0], corners[0], model_padded))
        else:
            result, changes = jax.vmap(fit_one, in_axes=(0, 0, 0, None))(x0, active, corners,
                                                                          model_padded)
        x = result.x
        drop = jnp.where(idx >= 0, idx, params["pos"].shape[0])   # empty slots are dropped
        pos = params["pos"].at[drop].set(x[:, :3 * k].reshape(-1, k, 3), mode="drop")
        rad = params["rad"].at[drop].set(x[:, 3 * k:], mode="drop")

        # the tiles of one colour are disjoint: each adds its exact model change, so the next
        # colour starts from the current model without a full render
        def add(g, m):
            c = tuple(corners[g])
            return lax.dynamic_update_slice(m, lax.dynamic_slice(m, c, tile) + changes[g], c)

        model_padded = lax.fori_loop(0, idx.shape[0], add, model_padded)
        stats = {key: jnp.asarray(v, jnp.int32) for key, v in
                 (("status", result.status), ("nit", result.nit), ("nfev", result.nfev))}
        stats.update({key: jnp.asarray(result.extra[key], dtype) for key in
                      ("delta_err", "delta_vals", "exp_err", "frac_err", "damping")},
                     cost=jnp.asarray(result.fun, dtype))
        return (dict(params, pos=pos, rad=rad), model_padded), stats

    def colour_step(carry, layout):
        # padding colours (no group) are skipped: outside vmap, cond runs one branch
        def skip(carry, layout):
            g = layout[0].shape[0]
            zero_i = jnp.zeros(g, jnp.int32)
            zero_f = jnp.zeros(g, dtype)
            return carry, dict(status=zero_i, nit=zero_i, nfev=zero_i, cost=zero_f,
                               delta_err=zero_f, delta_vals=zero_f, exp_err=zero_f,
                               frac_err=zero_f, damping=zero_f)

        return lax.cond(jnp.any(layout[0] >= 0), fit_colour, skip, carry, layout)

    (params, _), stats = lax.scan(colour_step, (params, render_padded(model, params)),
                                  (index, corner))
    return params, stats


def fit_particle_groups(model: ImageModel, params, data, groups, include_rad=True,
                        region_size=40, floor=None, lanes=None, **peri_options):
    """LM on the positions (and radii) of every particle group, each on its own tile.

    groups : list of int arrays (particle indices), e.g. from :func:`group_particles`.
    floor : a previous plan's ``key`` (see :func:`plan_groups`), to keep one layout.
    lanes : the most groups fitted together in one vmapped call (one colour). None: 1 on
    the CPU backend, where a vmapped batch costs the sum of its lanes and every lane runs
    as many LM trials as the slowest (a sweep of the 32x64x64 benchmark: 2.6 CPU-s one at a
    time, 4.9 with up to 4 at once), and unlimited on accelerators.
    One compilation per image model, layout and LM structure: ``include_rad`` and every
    numeric LM setting are traced. Returns ``(params, stats, plan)``: ``stats`` a dict of
    (n_colours, G) arrays (status, nit, nfev, cost, delta_err, ...; empty slots of
    ``plan['index']`` are padding)."""
    require_float64(params, "fit_particle_groups")
    groups = [np.asarray(g, int) for g in groups if len(g)]
    if not groups:
        return params, None, None
    active = np.asarray(params.get("active", np.ones(params["rad"].shape)), bool)
    if lanes is None and jax.default_backend() == "cpu":
        lanes = 1
    plan = plan_groups(model, np.asarray(params["pos"]), np.asarray(params["psf"]), groups,
                       region_size, floor, rad=np.asarray(params["rad"])[active],
                       zscale=float(params["zscale"]), lanes=lanes)
    structure, numbers = split_options(lm_options(**peri_options))
    new, stats = _fit_particle_groups(model, params, data, (plan["key"][0], plan["key"][2]),
                                      jnp.asarray(plan["index"]), jnp.asarray(plan["corner"]),
                                      structure, numbers, jnp.asarray(bool(include_rad)))
    return new, stats, plan


# --------------------------------------------------------------------------------------------
# the augmented state: globals plus radii as a Legendre polynomial in z (peri's rz_order)


def legendre_series(x, coeffs):
    """``sum_k coeffs[k] P_k(x)`` (numpy's ``legval``), by the three-term recurrence."""
    out = jnp.zeros_like(x) + coeffs[0] if coeffs.shape[0] else jnp.zeros_like(x)
    p_prev, p = jnp.ones_like(x), x
    for k in range(1, coeffs.shape[0]):
        out = out + coeffs[k] * p
        p_prev, p = p, ((2 * k + 1) * x * p - k * p_prev) / (k + 1)
    return out


def _fit_augmented_impl(model, params, data, free, scale, rad0, zs, structure, numbers):
    refs = global_refs(model)
    n_g = len(refs)
    x0 = jnp.concatenate([N.pack(params, refs) / scale, numbers["rz0"]])
    lo, hi = _bounds_for(model, refs, x0.dtype)
    inf = jnp.full(numbers["rz0"].shape, jnp.inf, x0.dtype)

    def with_x(u):
        q = N.unpack(params, refs, u[:n_g] * scale)
        return dict(q, rad=rad0 * jnp.exp(legendre_series(zs, u[n_g:])))

    def res(u, data):
        return (data - render(model, with_x(u))).ravel()

    mask = jnp.concatenate([free, jnp.ones(numbers["rz0"].shape, bool)])
    result = run_lm(res, x0, data, structure, numbers, mask=mask,
                    lower=jnp.concatenate([lo / scale, -inf]),
                    upper=jnp.concatenate([hi / scale, inf]))
    return with_x(result.x), result


def fit_augmented(model: ImageModel, params, data, refs, rz, rad0, damping=1.0, **peri_options):
    """peri's augmented-state LM: the globals ``refs`` together with ``rz`` (rz_order,), the
    coefficients of the radii's dependence on z, ``a_i = rad0_i exp(legval(zs_i, rz))`` with
    ``zs = (z_i - Z/2) / (Z/2)`` (Z: the image depth). Jacobian by forward-mode autodiff
    (peri: a finite difference for the rz columns). Returns ``(params, OptimizeResult)``;
    ``result.x`` is ``[every global (scaled by the damping), rz]``."""
    require_float64(params, "fit_augmented")
    all_refs = global_refs(model)
    free = np.zeros(len(all_refs), bool)
    for r in refs:
        free[all_refs.index(r)] = True
    rz = np.atleast_1d(np.asarray(rz, float))
    if rz.size == 0:
        raise ValueError("rz needs at least one coefficient (rz_order >= 1)")
    structure, numbers = split_options(lm_options(damping=damping, **peri_options))
    numbers["rz0"] = np.asarray(rz, np.float64)
    half_depth = model.shape[0] / 2.0
    zs = (params["pos"][:, 0] - half_depth) / half_depth
    dtype = params["pos"].dtype
    return _fit_augmented(model, params, data, jnp.asarray(free), jnp.ones(len(all_refs), dtype),
                          jnp.asarray(rad0, dtype), zs, structure, numbers)


# --------------------------------------------------------------------------------------------
# the joint fit: every global and every particle in one LM (globals dense, particles local)


def joint_problem(model: ImageModel, params, data, free_g, scale, corners, margin, geometry,
                  pairs):
    """The joint fit's least-squares problem over ``x = [globals / scale (n_g,), pos (3 N,),
    rad (N,)]``: ``(split, res, normal_equations)``.

    split(x) -> params; res(x, _) -> (m,) residuals over the image;
    normal_equations(x, _, r) -> ``(J^T J, J^T r)`` of the exact J (m, n_g + 4 N), assembled
    from the tiles without forming J: ``G^T G`` and ``G^T r`` from the globals' (m, n_g)
    columns G (as in :func:`globals_problem`), and per
    particle i with columns ``P_i`` (4, tile) (zero off the image): ``P_i P_i^T``, ``P_i
    r_i``, ``G_i^T P_i^T`` (G and r gathered on the tile), and ``P_i P_j^T`` for each pair of
    ``pairs`` ((K, 2) int, i < j: the pairs whose tiles overlap, padded with (0, 0), which
    adds nothing), P_j shifted into i's tile by the corners' offset with zero fill.

    corners : (N, 3) int tile corners in the padded volume; geometry : static ``(tile,
    half)``, the tile shape and the drawing cubes' half widths (:func:`plan_groups`)."""
    tile, half = geometry
    refs = global_refs(model)
    n_g, n = len(refs), params["pos"].shape[0]
    dtype = params["pos"].dtype
    pad = jnp.asarray(model.pad, dtype)
    active = params.get("active", jnp.ones(n, dtype)).astype(dtype)
    res_g, jac_g = globals_problem(model, scale, free_g, margin, half)
    shape = tuple(int(s) for s in model.shape)
    # which voxels of each tile lie on the image (J's rows): (N,) + tile
    inside = [(a >= 0) & (a < s) for a, s in zip(
        [jnp.arange(t)[None, :] + corners[:, i:i + 1] - model.pad[i]
         for i, t in enumerate(tile)], shape)]
    on_image = (inside[0][:, :, None, None] & inside[1][:, None, :, None]
                & inside[2][:, None, None, :]).astype(dtype)

    def split(x):
        q = N.unpack(params, refs, x[:n_g] * scale)
        return dict(q, pos=x[n_g:n_g + 3 * n].reshape(n, 3), rad=x[n_g + 3 * n:])

    def res(x, _):
        return res_g(x[:n_g], (split(x), data, None))

    def columns(x):
        """G (m, n_g) and the particles' model derivatives (N, 4) + tile (zero off the
        image; J's particle columns are their negatives)."""
        q = split(x)
        jg = jac_g(x[:n_g], (q, data, None))
        c_minus_i = q["offset"] - illumination_field(model, q)
        kernel_ft = jnp.fft.rfftn(psf.gaussian_kernel_wrapped(q["psf"], tile, model.psf_error))

        def one(c, a, act, corner, inside):
            dp = platonic.platonic_jacobian(
                tile, half, (c + pad - corner.astype(dtype))[None], a[None], q["zscale"],
                act[None], method=model.method, alpha=model.alpha,
                exact_volume=model.exact_volume, volume_error=model.volume_error,
                max_radius_change=model.max_radius_change)[0]
            cmi = lax.dynamic_slice(c_minus_i, tuple(corner), tile)
            blurred = jnp.fft.irfftn(jnp.fft.rfftn(cmi * dp, axes=(1, 2, 3)) * kernel_ft,
                                     s=tile, axes=(1, 2, 3))
            return blurred * inside

        return jg, jax.vmap(one)(q["pos"], q["rad"], active, corners, on_image)

    # x's order of the particle entries (pos of every particle, then the radii) in the
    # natural order 4 i + a (a: z, y, x, radius)
    perm = np.concatenate([(4 * np.arange(n)[:, None] + np.arange(3)).ravel(),
                           4 * np.arange(n) + 3])

    def order(block):        # (..., N, 4) -> (..., 4 N) in x's order
        return block.reshape(block.shape[:-2] + (4 * n,))[..., perm]

    def shifted(a, d):
        """``a`` (4,) + tile moved by ``-d`` (3,) with zero fill: out[t] = a[t + d]."""
        for axis, t in enumerate(tile):
            widths = [(0, 0)] * 4
            widths[axis + 1] = (t, t)
            a = lax.dynamic_slice_in_dim(jnp.pad(a, widths), t + d[axis], t, axis + 1)
        return a

    def normal_equations(x, _, r):
        jg, cols = columns(x)
        flat = cols.reshape(n, 4, -1)                                     # (N, 4, T)
        # r and G on the padded volume (zero off the image), then each tile is one slice
        widths = [(p_, p_) for p_ in model.pad]
        rg = jnp.pad(jnp.concatenate([r[:, None], jg], axis=1).T.reshape((1 + n_g,) + shape),
                     [(0, 0)] + widths)

        def on_tile(c, corner):          # (4, T) -> [P r (4,), G^T P^T (n_g, 4)]
            t = lax.dynamic_slice(rg, (0,) + tuple(corner), (1 + n_g,) + tuple(tile))
            return t.reshape(1 + n_g, -1) @ c.T

        both = -lax.map(lambda a: on_tile(*a), (flat, corners))           # (N, 1 + n_g, 4)
        pp = jnp.einsum("iat,ibt->iab", flat, flat)                       # (N, 4, 4)
        pr = both[:, 0]                                                   # (N, 4)
        gp = jnp.moveaxis(both[:, 1:], 1, 0)                              # (n_g, N, 4)

        def pair(ij):
            i, j = ij[0], ij[1]
            other = shifted(cols[j], corners[i] - corners[j]).reshape(4, -1)
            return jnp.where(i != j, flat[i] @ other.T, 0.0)

        off = lax.map(pair, pairs)                                        # (K, 4, 4)
        # the particle block: diagonal 4x4 blocks plus the overlapping pairs, both triangles
        block = jnp.zeros((n, n, 4, 4), dtype).at[jnp.arange(n), jnp.arange(n)].set(pp)
        block = block.at[pairs[:, 0], pairs[:, 1]].add(off)
        block = block.at[pairs[:, 1], pairs[:, 0]].add(jnp.swapaxes(off, 1, 2))
        full = jnp.transpose(block, (0, 2, 1, 3)).reshape(4 * n, 4 * n)[perm][:, perm]
        gp = order(gp)                                                    # (n_g, 4N)
        jtj = jnp.block([[jg.T @ jg, gp], [gp.T, full]])
        jtr = jnp.concatenate([jg.T @ r, order(pr)])
        return jtj, jtr

    return split, res, normal_equations


def joint_pairs(corners, tile, active, floor=0):
    """The pairs (i < j) of active particles (``active`` (N,) bool) whose tiles (corners
    (N, 3), shape ``tile``) overlap, padded with
    (0, 0) to a :func:`_bucket` size no smaller than ``floor`` (static shapes: positions that
    move within a plan do not recompile). Returns (K, 2) int32."""
    c = np.asarray(corners, int)
    t = np.asarray(tile, int)
    close = np.all(np.abs(c[:, None, :] - c[None, :, :]) < t, axis=-1)
    close &= np.asarray(active, bool)[:, None] & np.asarray(active, bool)[None, :]
    i, j = np.nonzero(np.triu(close, 1))
    size = max(_bucket(len(i)), int(floor))
    out = np.zeros((size, 2), np.int32)
    out[:len(i), 0], out[:len(i), 1] = i, j
    return out


def _fit_joint_impl(model, params, data, free_g, scale, corners, structure, numbers, margin,
                    geometry, include_rad, pairs, rad_max):
    refs = global_refs(model)
    n_g, n = len(refs), params["pos"].shape[0]
    dtype = params["pos"].dtype
    active = params.get("active", jnp.ones(n, dtype)).astype(dtype)
    split, res, normal_equations = joint_problem(model, params, data, free_g, scale, corners,
                                                 margin, geometry, pairs)
    x0 = jnp.concatenate([N.pack(params, refs) / scale, params["pos"].ravel(), params["rad"]])
    lo_g, hi_g = _bounds_for(model, refs, dtype)
    ipsf = np.array([i for i, r in enumerate(refs) if r[0] == "psf"])
    hi_g = hi_g.at[ipsf].set(jnp.asarray(psf_bound(model, margin), dtype))
    lo_pos = jnp.asarray([MIN_DIST - p for p in model.pad], dtype)
    hi_pos = jnp.asarray([s + p - MIN_DIST for s, p in zip(model.shape, model.pad)], dtype)
    lo = jnp.concatenate([lo_g / scale, jnp.tile(lo_pos, n), jnp.full((n,), MIN_RADIUS, dtype)])
    # every sphere stays whole on its drawing cube (a later fit plans a larger one)
    hi = jnp.concatenate([hi_g / scale, jnp.tile(hi_pos, n),
                          jnp.minimum(rad_max, MAX_RADIUS) * jnp.ones(n, dtype)])
    on = active > 0
    mask = jnp.concatenate([free_g, jnp.repeat(on, 3), on & include_rad])
    # the normal equations from the tiles (J is never formed), damped steps from their
    # eigendecomposition, J only at accepted points
    result = run_lm(res, x0, 0.0, structure, numbers, mask=mask, lower=lo, upper=hi,
                    normal_equations=normal_equations, linear_solver=NormalEquations("eigh"),
                    trial_jacobian=False)
    return split(result.x), result


def _fit_joint(*args):
    return _jitted("joint")(*args)


def fit_joint(model: ImageModel, params, data, refs, damping=1.0, margin=None, floor=None,
              include_rad=True, **peri_options):
    """One LM over the globals ``refs`` and every active particle's position (and radius)
    together, on the whole image (issue 8's joint step; peri alternates globals and particle
    groups). J is exact, (pixels, n_globals + 4 N), and never formed: the LM works on J^T J
    and J^T r assembled from the globals' columns (as in :func:`fit_globals`, blurs on the
    image plus ``margin``) and each particle's 4 columns, from its drawing cube times ``C -
    I``, blurred on its own tile (the sweep's tile: :func:`plan_groups` with one particle per
    group; it holds the cube and the PSF's reach, so the tile blur is exact), with a particle
    block only for pairs whose tiles overlap (:func:`joint_problem`): N x 4 tile transform
    pairs, no full-volume work per particle. The spheres are drawn on the plan's cubes and
    the radii bounded so that each stays whole on its cube (:func:`radius_bound`). ``damping`` as in :func:`fit_globals` for the
    globals (the particles' scale is 1). ``margin`` / ``floor``: previous margin and plan
    key (kept so the program is not recompiled as the PSF and radii move). Returns
    ``(params, OptimizeResult, margin, plan_key)``; ``result.x`` = [globals / scale, pos
    (N*3), rad (N)]."""
    require_float64(params, "fit_joint")
    inputs, structure, numbers, margin, key = _joint_inputs(model, params, refs, damping, margin,
                                                            floor, **peri_options)
    free, scale, corners, geometry, pairs = inputs
    n = params["pos"].shape[0]
    on = np.asarray(params.get("active", np.ones(n)), bool)
    rad_max = max(radius_bound(model, geometry[1], float(params["zscale"])),
                  float(np.max(np.asarray(params["rad"])[on], initial=0.0)))
    new, result = _fit_joint(model, params, data, free, scale, corners, structure, numbers,
                             margin, geometry, jnp.asarray(bool(include_rad)), pairs,
                             jnp.asarray(min(rad_max, MAX_RADIUS), params["pos"].dtype))
    return new, result, margin, key


def _joint_inputs(model, params, refs, damping, margin, floor, **peri_options):
    """fit_joint's static layout: ``((free, scale, corners, geometry, pairs), structure,
    numbers, margin, key)``; ``key`` = the plan's key + (the pair list's padded size,)."""
    all_refs = global_refs(model)
    unknown = [r for r in refs if r not in all_refs]
    if unknown:
        raise ValueError(f"fit_joint takes global refs (the particles are always fitted); got "
                         f"{unknown[:4]}")
    free = np.zeros(len(all_refs), bool)
    scale = np.ones(len(all_refs))
    damp = np.broadcast_to(np.asarray(damping, float), (len(refs),))
    lam = float(damp[0]) if np.all(damp == damp[0]) else 1.0
    for r, d in zip(refs, damp):
        free[all_refs.index(r)] = True
        scale[all_refs.index(r)] = np.sqrt(lam / d)
    structure, numbers = split_options(lm_options(damping=lam, **peri_options))
    margin = blur_margin(model, np.asarray(params["psf"]), margin)
    n = params["pos"].shape[0]
    active = np.asarray(params.get("active", np.ones(n)), bool)
    plan = plan_groups(model, np.asarray(params["pos"]), np.asarray(params["psf"]),
                       [np.array([i]) for i in range(n)], None, floor,
                       rad=np.asarray(params["rad"])[active], zscale=float(params["zscale"]),
                       lanes=1)
    corners = np.zeros((n, 3), int)
    for ci in range(plan["index"].shape[0]):
        if plan["index"][ci, 0, 0] >= 0:
            corners[plan["index"][ci, 0, 0]] = plan["corner"][ci, 0]
    pairs = joint_pairs(corners, plan["key"][0], active,
                        floor[3] if floor is not None and len(floor) > 3 else 0)
    dtype = params["pos"].dtype
    inputs = (jnp.asarray(free), jnp.asarray(scale, dtype), jnp.asarray(corners),
              (plan["key"][0], plan["key"][2]), jnp.asarray(pairs))
    return inputs, structure, numbers, margin, plan["key"] + (len(pairs),)
