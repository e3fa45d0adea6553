"""The confocal image model of peri 0.1.3 as one pure function of a parameter pytree.

    M = H * (I (1 - P) + C P) + B

on the volume padded by ``pad`` voxels on each side (the data is zero-padded there; only the
inner, unpadded region is compared with the data). P: platonic spheres
(:mod:`~jaxinfer.imaging.platonic`); I: a polynomial illumination field and B: a scalar or a
polynomial background (:mod:`~jaxinfer.imaging.fields`); C: the scalar ``offset``; H: peri's
anisotropic Gaussian PSF (:mod:`~jaxinfer.imaging.psf`). A 2-D image is a volume of one slice.

``ImageModel`` holds only static settings (shapes and component kinds), so it can be closed
over or passed to ``jit`` as a static argument; the parameters are a dict of arrays:

=========  ========  ================================================================
key        shape     meaning (peri's names)
=========  ========  ================================================================
active     (N,)      optional 0/1: which rows of pos / rad are particles (fixed-capacity
                     arrays, so adding or removing a particle does not recompile)
pos        (N, 3)    particle centres z, y, x in pixels of the unpadded image (sph-i-z/y/x)
rad        (N,)      particle radii in pixels (sph-i-a)
zscale     ()        z pixel size relative to x, y (zscale)
ilm        (n_ilm,)  illumination coefficients in peri's order (ilm-xy-i-j, ilm-z-k, ...)
bkg        (n_bkg,)  background: one value (bkg) or field coefficients (bkg-xy-i-j, ...)
offset     ()        C (offset)
psf        (3,)      psf-sigz, psf-sigy, psf-sigx (2 sigma, pixels)
=========  ========  ================================================================
"""

from __future__ import annotations

import functools
from typing import Optional

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.imaging import fields, platonic, psf

__all__ = ["ImageModel", "PARAM_KEYS", "render_padded", "compose_padded", "render", "residuals", "platonic_field",
           "illumination_field", "background_field"]

PARAM_KEYS = ("pos", "rad", "zscale", "ilm", "bkg", "offset", "psf")


class ImageModel(eqx.Module):
    """Static description of the image model (no arrays).

    shape : (nz, ny, nx) of the unpadded image; pad : (3,) voxels added on each side;
    ilm_kind / bkg_kind : a :data:`fields.FIELD_KINDS` entry (``bkg_kind`` may be 'scalar');
    ilm_order / bkg_order : field orders (peri's ``order=(nz, ny, nx)``); method, alpha,
    exact_volume, volume_error, max_radius_change : the sphere profile settings; half : the
    static half widths of each particle's drawing cube (:func:`platonic.tile_half_width`);
    psf_error : peri's PSF truncation level (1/255).
    """

    shape: tuple = eqx.field(static=True)
    pad: tuple = eqx.field(static=True)
    half: tuple = eqx.field(static=True)
    ilm_kind: str = eqx.field(static=True, default="legendre-2p1d")
    ilm_order: tuple = eqx.field(static=True, default=(1, 1, 1))
    bkg_kind: str = eqx.field(static=True, default="scalar")
    bkg_order: tuple = eqx.field(static=True, default=(1, 1, 1))
    method: str = eqx.field(static=True, default="exact-gaussian-trim")
    alpha: Optional[float] = eqx.field(static=True, default=None)
    exact_volume: bool = eqx.field(static=True, default=True)
    volume_error: float = eqx.field(static=True, default=1e-5)
    max_radius_change: float = eqx.field(static=True, default=1e-2)
    psf_error: float = eqx.field(static=True, default=1.0 / 255)

    @property
    def padded_shape(self):
        return tuple(int(s) + 2 * int(p) for s, p in zip(self.shape, self.pad))

    @property
    def inner(self):
        """Slices of the unpadded image inside the padded volume."""
        return tuple(slice(int(p), int(p) + int(s)) for s, p in zip(self.shape, self.pad))

    def param_names(self, n_particles: int):
        """peri's parameter names for each key, as a dict of lists."""
        names = {
            "pos": [[f"sph-{i}-{c}" for c in "zyx"] for i in range(n_particles)],
            "rad": [f"sph-{i}-a" for i in range(n_particles)],
            "zscale": "zscale",
            "ilm": fields.field_param_names(self.ilm_kind, self.ilm_order, "ilm"),
            "bkg": ["bkg"] if self.bkg_kind == "scalar" else
                   fields.field_param_names(self.bkg_kind, self.bkg_order, "bkg"),
            "offset": "offset",
            "psf": ["psf-sigz", "psf-sigy", "psf-sigx"],
        }
        return names


@functools.partial(jax.jit, static_argnums=0)
def platonic_field(model: ImageModel, params, active=None):
    """P on the padded volume. ``active`` (N,) 0/1 (default ``params.get('active')``, else all
    1) switches particles off without changing array shapes."""
    if active is None:
        active = params.get("active")
    centres = params["pos"] + jnp.asarray(model.pad, params["pos"].dtype)
    return platonic.render_platonic(
        model.padded_shape, model.half, centres, params["rad"], params["zscale"], active,
        method=model.method, alpha=model.alpha, exact_volume=model.exact_volume,
        volume_error=model.volume_error, max_radius_change=model.max_radius_change)


def _basis(kind, order, padded_shape, region):
    basis = fields.field_basis(kind, order, padded_shape)
    if region is None:
        return basis
    return tuple(b[:, lo:hi] for b, (lo, hi) in zip(basis, region))


@functools.partial(jax.jit, static_argnums=(0, 2))
def illumination_field(model: ImageModel, params, region=None):
    """I on the padded volume, or on its box ``region`` (static ((lo, hi),) * 3, padded-volume
    indices: the same values as slicing the whole field, for a fraction of the work)."""
    basis = _basis(model.ilm_kind, model.ilm_order, model.padded_shape, region)
    return fields.evaluate_field(model.ilm_kind, model.ilm_order, basis, params["ilm"])


@functools.partial(jax.jit, static_argnums=(0, 2))
def background_field(model: ImageModel, params, region=None):
    """B on the padded volume or its box ``region`` (as :func:`illumination_field`; a scalar
    for ``bkg_kind='scalar'``)."""
    if model.bkg_kind == "scalar":
        return params["bkg"][0]
    basis = _basis(model.bkg_kind, model.bkg_order, model.padded_shape, region)
    return fields.evaluate_field(model.bkg_kind, model.bkg_order, basis, params["bkg"])


@functools.partial(jax.jit, static_argnums=0)
def render_padded(model: ImageModel, params, active=None):
    """The model image M on the whole padded volume, ``model.padded_shape``."""
    return compose_padded(model, params, platonic_field(model, params, active))


def compose_padded(model: ImageModel, params, p):
    """M on the padded volume from a given platonic field ``p`` (``model.padded_shape``):
    ``H * (I (1 - p) + C p) + B``."""
    ilm = illumination_field(model, params)
    kernel = psf.gaussian_kernel_wrapped(params["psf"], model.padded_shape, model.psf_error)
    blurred = psf.convolve(ilm * (1 - p) + params["offset"] * p, kernel)
    return blurred + background_field(model, params)


@functools.partial(jax.jit, static_argnums=0)
def render(model: ImageModel, params, active=None):
    """The model image on the unpadded image, ``model.shape`` (peri's ``state.model``)."""
    return render_padded(model, params, active)[model.inner]


@functools.partial(jax.jit, static_argnums=0)
def residuals(model: ImageModel, params, data, active=None):
    """``data - model`` on the unpadded image (peri's sign convention)."""
    return data - render(model, params, active)


def default_half(max_radius, zscale, support_pad=4):
    return platonic.tile_half_width(max_radius, zscale, support_pad)


def as_params(pos, rad, zscale, ilm, bkg, offset, psf_values, dtype=None):
    """Build the parameter dict from array-likes (float64 if enabled, else float32)."""
    dtype = dtype or jnp.result_type(float)
    return {"pos": jnp.asarray(np.asarray(pos, float).reshape(-1, 3), dtype),
            "rad": jnp.asarray(np.asarray(rad, float).reshape(-1), dtype),
            "zscale": jnp.asarray(float(zscale), dtype),
            "ilm": jnp.asarray(np.asarray(ilm, float).reshape(-1), dtype),
            "bkg": jnp.asarray(np.asarray(bkg, float).reshape(-1), dtype),
            "offset": jnp.asarray(float(offset), dtype),
            "psf": jnp.asarray(np.asarray(psf_values, float).reshape(3), dtype)}
