"""Platonic spheres: the particle field P of peri's image model, in pure JAX.

Geometry (peri 0.1.3, ``objs.PlatonicSpheresCollection``): voxel centres sit at the integer
indices of the padded volume; a particle at ``pos`` (z, y, x, in pixels of the unpadded image)
sits at ``pos + pad`` there. The signed distance of a voxel ``r`` to the surface is

    d = (r - p - 1e-8) * (zscale, 1, 1),   dr = |(d - a d/|d|) / (zscale, 1, 1)| * sign(|d| - a)

and the voxel's occupancy is an edge profile t(dr). The default profile, ``exact-gaussian-trim``
(alpha = 0.27595), is the convolution of a ball with a Gaussian, trimmed to |dr| <= 1.6:

    t = 1/2 (1 + erf(-dr / (alpha sqrt 2))) - sqrt(1/2pi) alpha / (dr + a + 1e-10) exp(-dr^2 / 2 alpha^2)

With ``exact_volume`` the radius a' used in the profile is moved (at most 10 times,
a' += (V - sum t) / (4 pi a'^2)) until the summed occupancy equals V = 4/3 pi a^3 / zscale to a
relative ``volume_error``, stopping early once |a' - a| / a exceeds ``max_radius_change``. The
loop stops as soon as its test is met; derivatives do not go through it: a' is differentiated
as the root of sum t(a') = V (a custom JVP), two occupancy JVPs instead of one per iteration.

Each particle is drawn on a cube of static size ``2 * half + 1`` around its rounded centre and
scattered into the volume (voxels outside the volume are dropped); the profile is exactly zero
outside peri's own drawing tile, so the result does not depend on ``half`` as long as it covers
that tile (``tile_half_width``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.special import erf

__all__ = ["PROFILES", "DEFAULT_ALPHA", "profile", "signed_surface_distance", "tile_half_width",
           "draw_particle", "render_platonic", "platonic_jacobian"]

MAX_VOLUME_ITERATIONS = 10

# peri's default widths of each edge profile
DEFAULT_ALPHA = {
    "bool": 0.0, "lerp": 0.4539, "logistic": 6.5, "triangle": 0.6618,
    "constrained-cubic": 0.8499, "exact-gaussian": 0.27595, "exact-gaussian-trim": 0.27595,
}
PROFILES = tuple(DEFAULT_ALPHA)


def profile(method: str, dr, a, alpha):
    """Occupancy t(dr) of a voxel at signed surface distance ``dr`` (pixels) of a sphere of
    radius ``a``; ``method`` is one of :data:`PROFILES`."""
    if method == "exact-gaussian-trim":
        cut = 1.6
        inside = jnp.abs(dr) <= cut
        safe = jnp.where(inside, dr, 0.0)
        t = -safe / (alpha * math.sqrt(2.0))
        denom = safe + a + 1e-10
        denom = jnp.where(denom == 0, 1e-10, denom)
        q = 0.5 * (1 + erf(t)) - math.sqrt(0.5 / math.pi) * (alpha / denom) * jnp.exp(-t * t)
        return jnp.where(inside, q, jnp.where(dr > cut, 0.0, 1.0))
    if method == "exact-gaussian":
        s2 = alpha * math.sqrt(2.0)
        term1 = 0.5 * (erf((dr + 2 * a) / s2) + erf(-dr / s2))
        term2 = math.sqrt(0.5 / math.pi) * (alpha / (dr + a + 1e-10)) * (
            jnp.exp(-0.5 * dr ** 2 / alpha ** 2) - jnp.exp(-0.5 * (dr + 2 * a) ** 2 / alpha ** 2))
        return term1 - term2
    if method == "bool":
        return (dr < 0).astype(jnp.result_type(dr))
    if method == "lerp":
        return 1 - jnp.clip((dr + alpha) / (2 * alpha), 0, 1)
    if method == "logistic":
        return 1.0 / (1.0 + jnp.exp(alpha * dr))
    if method == "triangle":
        p0 = (dr + alpha) ** 2 / (2 * alpha ** 2) * (dr < 0) * (dr > -alpha)
        p1 = 1.0 * (dr > 0) - (alpha - dr) ** 2 / (2 * alpha ** 2) * (dr > 0) * (dr < alpha)
        return 1 - jnp.clip(p0 + p1, 0, 1)
    if method == "constrained-cubic":
        sqrt3 = math.sqrt(3.0)
        b = a * 0.5 / sqrt3 * (1 - 0.6 * sqrt3 * alpha) / (0.15 + a * a)
        rs = jnp.clip(dr, -0.5 * sqrt3, 0.5 * sqrt3)
        hi, lo = rs + 0.5 * sqrt3, rs - 0.5 * sqrt3
        return alpha * lo * hi * rs + b * lo * hi - lo / sqrt3
    raise ValueError(f"unknown sphere profile {method!r}; expected one of {PROFILES}")


def signed_surface_distance(coords, centre, radius, zscale):
    """``coords`` (..., 3) voxel centres, ``centre`` (3,), scalar ``radius``, ``zscale``:
    signed distance to the sphere surface along the ray from the centre, in pixels."""
    scale = jnp.stack([zscale, jnp.ones_like(zscale), jnp.ones_like(zscale)])
    d = (coords - centre - 1e-8) * scale
    n = jnp.sqrt(jnp.sum(d * d, axis=-1))
    dhat = d / n[..., None]
    o = jnp.sqrt(jnp.sum(((d - radius * dhat) / scale) ** 2, axis=-1))
    return o * jnp.sign(n - radius)


def tile_half_width(max_radius: float, zscale: float, support_pad: int = 4, margin: float = 1.25):
    """Static half widths (z, y, x) of the drawing cube for radii up to ``margin * max_radius``.

    peri's drawing tile is ``round(p) +- round((1/zscale, 1, 1) * ceil(a) + support_pad)``."""
    a = math.ceil(margin * max(float(max_radius), 1.0))
    return (int(round(a / min(float(zscale), 1.0) + support_pad)), a + support_pad, a + support_pad)


def _occupancy(method, alpha, grid, inside, centre, radius, zscale):
    return profile(method, signed_surface_distance(grid, centre, radius, zscale), radius,
                   alpha) * inside


def _volume_radius(method, alpha, volume_error, max_radius_change, grid, inside, centre,
                   radius, zscale):
    """peri's exact-volume iteration: ``a' += (V - sum t) / (4 pi a'^2)`` from ``a' = a``
    until the summed occupancy is within ``volume_error`` (relative) of ``V = 4/3 pi a^3 /
    zscale``, at most :data:`MAX_VOLUME_ITERATIONS` times, stopping (and keeping the last
    ``a'``) once a step would move ``a'`` more than ``max_radius_change`` relative from ``a``.
    A while loop: it stops as soon as the test is met. Returns ``(a', capped, t)``."""
    goal = 4.0 / 3.0 * math.pi * radius ** 3 / zscale
    safe_goal = jnp.where(goal == 0, 1.0, goal)
    safe_radius = jnp.where(radius == 0, 1.0, radius)

    def occ(a):
        return _occupancy(method, alpha, grid, inside, centre, a, zscale)

    def close(t):
        return jnp.abs(goal - jnp.abs(jnp.sum(t))) / safe_goal < volume_error

    def going(carry):
        _, _, _, done, it = carry
        return ~done & (it < MAX_VOLUME_ITERATIONS)

    def body(carry):
        a_eff, t, _, _, it = carry
        a_new = a_eff + (goal - jnp.abs(jnp.sum(t))) / (4 * math.pi * a_eff ** 2)
        capped = jnp.abs(a_new - radius) / jnp.abs(safe_radius) > max_radius_change
        t_new = occ(jnp.where(capped, a_eff, a_new))
        return (jnp.where(capped, a_eff, a_new), jnp.where(capped, t, t_new), capped,
                capped | close(t_new), it + 1)

    t0 = occ(radius)
    a_eff, t, capped, _, _ = lax.while_loop(
        going, body, (radius, t0, jnp.asarray(False), close(t0), jnp.asarray(0)))
    return a_eff, capped, t


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _exact_volume_occupancy(method, alpha, volume_error, max_radius_change, grid, inside,
                            centre, radius, zscale):
    return _volume_radius(method, alpha, volume_error, max_radius_change, grid, inside,
                          centre, radius, zscale)[2]


@_exact_volume_occupancy.defjvp
def _exact_volume_occupancy_jvp(method, alpha, volume_error, max_radius_change, primals,
                                tangents):
    """Derivatives of the volume-matched occupancy without differentiating the iteration:
    ``a'`` solves ``sum t(a') = V`` (implicit function theorem), or, where the iteration was
    capped, moves with ``a`` in proportion."""
    grid, inside, centre, radius, zscale = primals
    _, _, d_centre, d_radius, d_zscale = tangents
    a_eff, capped, _ = _volume_radius(method, alpha, volume_error, max_radius_change, grid,
                                      inside, centre, radius, zscale)

    def occ(c, a, z):
        return _occupancy(method, alpha, grid, inside, c, a, z)

    t, dt_geom = jax.jvp(lambda c, z: occ(c, a_eff, z), (centre, zscale), (d_centre, d_zscale))
    _, dt_da = jax.jvp(lambda a: occ(centre, a, zscale), (a_eff,), (jnp.ones_like(a_eff),))
    goal = 4.0 / 3.0 * math.pi * radius ** 3 / zscale
    d_goal = 4.0 * math.pi * radius ** 2 / zscale * d_radius - goal / zscale * d_zscale
    slope = jnp.sum(dt_da)
    safe_slope = jnp.where(slope == 0, 1.0, slope)
    safe_radius = jnp.where(radius == 0, 1.0, radius)
    d_a = jnp.where(capped | (slope == 0), a_eff / safe_radius * d_radius,
                    (d_goal - jnp.sum(dt_geom)) / safe_slope)
    return t, dt_geom + dt_da * d_a


def draw_particle(padded_shape, half, centre, radius, zscale, *, method, alpha, exact_volume,
                  volume_error, max_radius_change):
    """Occupancy of one particle on its drawing cube.

    Returns ``(index, t)``: ``index`` the int (3,) padded-volume index of the cube's corner,
    ``t`` the (2hz+1, 2hy+1, 2hx+1) occupancy (zero on voxels outside the volume).
    ``centre`` is in padded-volume coordinates. With ``exact_volume`` the radius in the
    profile is peri's volume-matched one (:func:`_volume_radius`), differentiated
    implicitly."""
    half = np.asarray(half)
    corner = lax.stop_gradient(jnp.round(centre)).astype(jnp.int32) - half
    axes = [corner[i] + jnp.arange(2 * half[i] + 1) for i in range(3)]
    inside = ((axes[0] >= 0) & (axes[0] < padded_shape[0]))[:, None, None] & \
             ((axes[1] >= 0) & (axes[1] < padded_shape[1]))[None, :, None] & \
             ((axes[2] >= 0) & (axes[2] < padded_shape[2]))[None, None, :]
    dtype = jnp.result_type(centre)
    grid = jnp.stack(jnp.meshgrid(*[ax.astype(dtype) for ax in axes], indexing="ij"), axis=-1)
    inside = inside.astype(dtype)
    if exact_volume:
        t = _exact_volume_occupancy(method, alpha, float(volume_error),
                                    float(max_radius_change), grid, inside, centre, radius,
                                    zscale)
    else:
        t = _occupancy(method, alpha, grid, inside, centre, radius, zscale)
    return corner, jnp.where(radius == 0, 0.0, t)


def render_platonic(padded_shape, half, centres, radii, zscale, active=None, *,
                    method="exact-gaussian-trim", alpha=None, exact_volume=True,
                    volume_error=1e-5, max_radius_change=1e-2):
    """The platonic field P on the padded volume.

    centres : (N, 3) particle centres in padded-volume pixels (z, y, x); radii : (N,) pixels;
    zscale : scalar; active : (N,) 0/1 weights (None: all 1). Returns ``padded_shape`` array."""
    padded_shape = tuple(int(s) for s in padded_shape)
    alpha = DEFAULT_ALPHA[method] if alpha is None else alpha
    dtype = jnp.result_type(centres, radii, zscale, float)
    if centres.shape[0] == 0:
        return jnp.zeros(padded_shape, dtype)

    def one(c, a):
        return draw_particle(padded_shape, half, c, a, zscale, method=method, alpha=alpha,
                             exact_volume=exact_volume, volume_error=volume_error,
                             max_radius_change=max_radius_change)

    corners, tiles = jax.vmap(one)(centres, radii)
    if active is not None:
        tiles = tiles * active[:, None, None, None]
    zi, yi, xi = _cube_indices(padded_shape, half, corners)
    return jnp.zeros(padded_shape, dtype).at[zi, yi, xi].add(tiles, mode="drop")


def _cube_indices(padded_shape, half, corners):
    """Index arrays (N, c, 1, 1), (N, 1, c, 1), (N, 1, 1, c) of each particle's drawing cube in
    the volume; indices outside point one past the end, where ``mode='drop'`` discards them."""
    idx = []
    for i in range(3):
        ax = corners[:, i:i + 1] + jnp.arange(2 * int(half[i]) + 1)[None, :]
        idx.append(jnp.where((ax >= 0) & (ax < padded_shape[i]), ax, padded_shape[i]))
    return idx[0][:, :, None, None], idx[1][:, None, :, None], idx[2][:, None, None, :]


def platonic_jacobian(padded_shape, half, centres, radii, zscale, active=None, *,
                      method="exact-gaussian-trim", alpha=None, exact_volume=True,
                      volume_error=1e-5, max_radius_change=1e-2):
    """Derivatives of :func:`render_platonic` with respect to each particle's own parameters,
    by forward-mode autodiff on that particle's drawing cube only (a particle moves only its
    own cube, so this costs 4 cube-sized JVPs per particle, not one volume-sized JVP per
    parameter).

    Returns ``(N, 4) + padded_shape``: ``[..., :3, ...]`` dP/d(z, y, x) of the centre,
    ``[..., 3, ...]`` dP/da (times ``active``)."""
    padded_shape = tuple(int(s) for s in padded_shape)
    alpha = DEFAULT_ALPHA[method] if alpha is None else alpha
    dtype = jnp.result_type(centres, radii, zscale, float)

    def one(c, a):
        def cube(v):
            return draw_particle(padded_shape, half, v[:3], v[3], zscale, method=method,
                                 alpha=alpha, exact_volume=exact_volume,
                                 volume_error=volume_error,
                                 max_radius_change=max_radius_change)[1]

        v = jnp.concatenate([c, a[None]])
        corner = lax.stop_gradient(jnp.round(c)).astype(jnp.int32) - np.asarray(half)
        eye = jnp.eye(4, dtype=dtype)
        tangents = jax.vmap(lambda e: jax.jvp(cube, (v,), (e,))[1])(eye)
        return corner, tangents

    corners, tangents = jax.vmap(one)(centres, radii)        # (N, 3), (N, 4, cz, cy, cx)
    if active is not None:
        tangents = tangents * active[:, None, None, None, None]
    zi, yi, xi = _cube_indices(padded_shape, half, corners)

    def place(z, y, x, t):
        return jnp.zeros((4,) + padded_shape, dtype).at[:, z, y, x].set(t, mode="drop")

    return jax.vmap(place)(zi, yi, xi, tangents)
