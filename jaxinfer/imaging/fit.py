"""Levenberg–Marquardt fits of the image model on the project's LM engine
(:func:`jaxinfer.optimize.levenberg_marquardt`), with peri's step policies and stopping rules.

Two pure, jitted fits:

- :func:`fit_globals`: any subset of parameters, residuals over the whole image, Jacobian by
  forward-mode autodiff (one JVP of the render per parameter; peri used one finite-difference
  image update per parameter).
- :func:`fit_particle_groups`: positions and radii of particle groups. Each group is fitted on
  its own tile with the exact local model change ``M0 + H((C - I)(P_g - P_g0))``. Groups whose
  tiles do not overlap form one *colour*; the groups of a colour are fitted together under
  ``vmap`` (padded to a common size with 0/1 masks), colours one after another, all in one
  compiled ``lax.scan``.

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
from jaxinfer.imaging.model import ImageModel, illumination_field, render, render_padded
from jaxinfer.optimize.least_squares import levenberg_marquardt

__all__ = ["PERI_TOLERANCES", "lm_options", "global_refs", "fit_globals", "group_particles", "plan_groups",
           "fit_particle_groups", "MIN_RADIUS", "MAX_RADIUS", "MIN_DIST"]

# peri's LMEngine defaults (code, not docstring), SSE units
PERI_TOLERANCES = dict(paramtol=1e-6, errtol=1e-5, exptol=1e-3, fractol=1e-6)
MIN_RADIUS, MAX_RADIUS, MIN_DIST = 1e-3, 200.0, 1e-3   # peri's LMParticles clipping


def lm_options(damping=1.0, increase_damp_factor=3.0, decrease_damp_factor=8.0,
               min_eigval=1e-13, marquardt_damping=False, transtrum_damping=None,
               use_accel=False, max_accel_correction=1.0, paramtol=1e-6, errtol=1e-5,
               exptol=1e-3, fractol=1e-6, costol=None, max_iter=5, run_length=5,
               update_J_frequency=1, broyden_update=True, eig_update=False,
               eig_update_frequency=3, num_eig_dirs=8, run_type=2, **ignored):
    """peri's LMEngine keywords (and defaults) -> keywords of ``levenberg_marquardt``.

    Keywords peri accepts that change nothing here (``eig_dl``, ``broyden_update_frequency``,
    ``max_mem``, ``decimate``, ...) are ignored: Jacobians are exact and never decimated."""
    if transtrum_damping is not None:
        damp_mode, extra = "transtrum", dict(transtrum_min=float(transtrum_damping))
    else:
        damp_mode, extra = ("marquardt" if marquardt_damping else "levenberg"), {}
    return dict(damping=float(damping), damp_mode=damp_mode,
                increase_damp_factor=float(increase_damp_factor),
                decrease_damp_factor=float(decrease_damp_factor), min_eigval=float(min_eigval),
                use_accel=bool(use_accel), max_accel_correction=float(max_accel_correction),
                paramtol=paramtol, errtol=errtol, exptol=exptol, fractol=fractol,
                costol=costol, xtol=None, stall_costol="auto", max_iter=int(max_iter),
                run_length=int(run_length), update_J_frequency=int(update_J_frequency),
                broyden_update=bool(broyden_update), eig_update=bool(eig_update),
                eig_update_frequency=int(eig_update_frequency),
                num_eig_dirs=int(num_eig_dirs), run_type=int(run_type), **extra)


def require_float64(params, what):
    """The fits are validated in float64 only; refuse float32 rather than risk a wrong
    answer reported as converged."""
    if params["pos"].dtype != jnp.float64:
        raise ValueError(f"{what} needs float64 (the parameters are {params['pos'].dtype}); turn "
                         "it on before building the state: jax.config.update('jax_enable_x64', True)")


def _freeze(options):
    return tuple(sorted(options.items()))


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


@functools.partial(jax.jit, static_argnums=(0, 5))
def _fit_globals(model, params, data, free, scale, options):
    options = dict(options)
    refs = global_refs(model)
    x0 = N.pack(params, refs)
    lo, hi = _bounds_for(model, refs, x0.dtype)

    def res(u, params, data):
        return (data - render(model, N.unpack(params, refs, u * scale))).ravel()

    result = levenberg_marquardt(res, x0 / scale, args=(params, data), mask=free,
                           bounds=(lo / scale, hi / scale), **options)
    return N.unpack(params, refs, result.x * scale), result


def fit_globals(model: ImageModel, params, data, refs, damping=1.0, **peri_options):
    """LM over the global parameters ``refs`` (see :mod:`~jaxinfer.imaging.names`) on the
    whole image; the other globals are held (a traced 0/1 mask, so every subset of globals
    shares one compilation).

    damping : float, or one value per entry of ``refs`` (peri's damping vector: the damping
    matrix ``diag(damping)``; realised by rescaling each parameter by ``1/sqrt(damping_i)``).
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
    options = lm_options(damping=lam, **peri_options)
    return _fit_globals(model, params, data, jnp.asarray(free), jnp.asarray(scale, dtype),
                        _freeze(options))


# --------------------------------------------------------------------------------------------
# particle groups


def group_particles(pos, image_shape, region_size=40, shift=None):
    """peri's ``separate_particles_into_groups``: boxes of ``region_size`` tiling the image
    (shifted by half a box when ``shift``), each non-empty box a group. Particles outside the
    image are put in the nearest box. Returns a list of int arrays."""
    pos = np.asarray(pos, float).reshape(-1, 3)
    rs = np.broadcast_to(np.asarray(region_size, int), (3,))
    offset = rs // 2 if shift else np.zeros(3, int)
    clipped = np.clip(pos, 1e-3, np.asarray(image_shape, float) - 1e-3)
    box = np.floor((clipped + offset) / rs).astype(int)
    keys, inverse = np.unique(box, axis=0, return_inverse=True)
    return [np.flatnonzero(inverse.ravel() == k) for k in range(len(keys))]


def _bucket(n):
    """Round up to a power of two, so that layouts of similar size share a compilation."""
    return 1 << max(0, int(np.ceil(np.log2(max(int(n), 1)))))


def plan_groups(model: ImageModel, pos, psf_values, groups, region_size=40):
    """Static layout of a particle sweep: a common tile shape, each group's tile corner and
    the colouring of the groups (groups of one colour have disjoint tiles).

    The tile is the region box plus each particle's drawing cube and the PSF's reach, rounded
    up to a multiple of 8; colours, groups per colour and particles per group are padded to
    powers of two (empty slots: index -1). Returns a dict of NumPy arrays: ``tile`` (3,),
    ``index`` (n_colours, G, K), ``corner`` (n_colours, G, 3)."""
    pos = np.asarray(pos, float).reshape(-1, 3)
    half = np.asarray(model.half)
    padded = np.asarray(model.padded_shape)
    spread = math.sqrt(-2 * math.log(model.psf_error))
    psf_half = np.ceil(np.abs(np.asarray(psf_values, float)) * spread * 1.25 / 2).astype(int) + 2
    rs = np.broadcast_to(np.asarray(region_size, int), (3,))
    boxes = []
    for g in groups:
        centre = np.round(pos[g] + np.asarray(model.pad))
        boxes.append((centre.min(axis=0) - half - psf_half, centre.max(axis=0) + half + psf_half + 1))
    need = np.max([hi - lo for lo, hi in boxes], axis=0)
    tile = np.maximum(need, rs + 2 * (half + psf_half) + 1)
    tile = np.minimum(8 * np.ceil(tile / 8), padded).astype(int)
    corners = [np.clip((lo - (tile - (hi - lo)) // 2).astype(int), 0, padded - tile)
               for lo, hi in boxes]
    # greedy colouring: a group joins the first colour none of whose tiles it overlaps
    colours = []
    for gi, c in enumerate(corners):
        for col in colours:
            if all(np.any((c >= corners[o] + tile) | (corners[o] >= c + tile)) for o in col):
                col.append(gi)
                break
        else:
            colours.append([gi])
    n_groups = _bucket(max(len(col) for col in colours))
    k = _bucket(max(len(g) for g in groups))
    index = -np.ones((_bucket(len(colours)), n_groups, k), int)
    corner = np.zeros(index.shape[:2] + (3,), int)
    for ci, col in enumerate(colours):
        for slot, gi in enumerate(col):
            index[ci, slot, :len(groups[gi])] = groups[gi]
            corner[ci, slot] = corners[gi]
    return dict(tile=tile, index=index, corner=corner)


@functools.partial(jax.jit, static_argnums=(0, 3, 6, 7))
def _fit_particle_groups(model, params, data, tile, index, corner, options, include_rad):
    options = dict(options)
    tile = tuple(int(t) for t in tile)
    dtype = params["pos"].dtype
    pad = jnp.asarray(model.pad, dtype)
    padded_data = jnp.zeros(model.padded_shape, dtype).at[model.inner].set(data)
    # the inner-image indicator, built from the data (all finite, so all ones) so that XLA
    # does not spend its compile time constant-folding a full-size array
    inner_mask = jnp.zeros(model.padded_shape, dtype).at[model.inner].set(
        (data == data).astype(dtype))
    c_minus_i = params["offset"] - illumination_field(model, params)
    zscale = params["zscale"]
    kernel = psf.gaussian_kernel_wrapped(params["psf"], tile, model.psf_error)
    lo_pos = jnp.asarray([MIN_DIST - p for p in model.pad], dtype)
    hi_pos = jnp.asarray([s + p - MIN_DIST for s, p in zip(model.shape, model.pad)], dtype)

    def draw(theta, active, corner):
        return platonic.render_platonic(
            tile, model.half, theta["pos"] + pad - corner.astype(dtype), theta["rad"], zscale,
            active, method=model.method, alpha=model.alpha, exact_volume=model.exact_volume,
            volume_error=model.volume_error, max_radius_change=model.max_radius_change)

    def fit_one(theta0, active, corner, model0_padded):
        def cut(a):
            return lax.dynamic_slice(a, tuple(corner), tile)

        d_t, m0_t, cmi_t, mask_t = (cut(a) for a in (padded_data, model0_padded, c_minus_i,
                                                     inner_mask))
        p0_t = draw(theta0, active, corner)

        def res(theta, _):
            if not include_rad:
                theta = {"pos": theta["pos"], "rad": theta0["rad"]}
            change = psf.convolve(cmi_t * (draw(theta, active, corner) - p0_t), kernel)
            return ((d_t - m0_t - change) * mask_t).ravel()

        x0 = theta0 if include_rad else {"pos": theta0["pos"]}
        k = theta0["pos"].shape[0]
        lo = {"pos": jnp.broadcast_to(lo_pos, (k, 3)), "rad": jnp.full((k,), MIN_RADIUS, dtype)}
        hi = {"pos": jnp.broadcast_to(hi_pos, (k, 3)), "rad": jnp.full((k,), MAX_RADIUS, dtype)}
        if not include_rad:
            lo, hi = lo["pos"].ravel(), hi["pos"].ravel()   # flat bounds for a one-leaf x0
        result = levenberg_marquardt(res, x0, args=(0.0,), bounds=(lo, hi), **options)
        return result

    def colour_step(params, layout):
        idx, corners = layout
        active = (idx >= 0).astype(dtype)
        safe = jnp.maximum(idx, 0)
        # empty slots: a unit sphere at the tile centre, masked out of the image
        centre = corners.astype(dtype)[:, None, :] + jnp.asarray(tile, dtype) / 2 - pad
        theta0 = {"pos": jnp.where(active[..., None] > 0, params["pos"][safe], centre),
                  "rad": jnp.where(active > 0, params["rad"][safe], 1.0)}
        model0 = render_padded(model, params)
        result = jax.vmap(fit_one, in_axes=(0, 0, 0, None))(theta0, active, corners, model0)
        new_pos = jnp.where(active[..., None] > 0, result.x["pos"], theta0["pos"])
        drop = jnp.where(idx >= 0, idx, params["pos"].shape[0])   # empty slots are dropped
        pos = params["pos"].at[drop].set(new_pos, mode="drop")
        out = dict(params, pos=pos)
        if include_rad:
            new_rad = jnp.where(active > 0, result.x["rad"], theta0["rad"])
            out["rad"] = params["rad"].at[drop].set(new_rad, mode="drop")
        stats = dict(status=result.status, nit=result.nit, nfev=result.nfev,
                     cost=result.fun, delta_err=result.extra["delta_err"],
                     delta_vals=result.extra["delta_vals"], exp_err=result.extra["exp_err"],
                     frac_err=result.extra["frac_err"], damping=result.extra["damping"])
        return out, stats

    return lax.scan(colour_step, params, (index, corner))


def fit_particle_groups(model: ImageModel, params, data, groups, include_rad=True,
                        region_size=40, **peri_options):
    """LM on the positions (and radii) of every particle group, each on its own tile.

    groups : list of int arrays (particle indices), e.g. from :func:`group_particles`.
    Returns ``(params, stats, plan)``: ``stats`` a dict of (n_colours, G) arrays (status,
    nit, nfev, cost, delta_err, ...; empty slots of ``plan['index']`` are padding)."""
    require_float64(params, "fit_particle_groups")
    groups = [np.asarray(g, int) for g in groups if len(g)]
    if not groups:
        return params, None, None
    plan = plan_groups(model, np.asarray(params["pos"]), np.asarray(params["psf"]), groups,
                       region_size)
    new, stats = _fit_particle_groups(model, params, data, tuple(int(t) for t in plan["tile"]),
                                      jnp.asarray(plan["index"]), jnp.asarray(plan["corner"]),
                                      _freeze(lm_options(**peri_options)), bool(include_rad))
    return new, stats, plan
