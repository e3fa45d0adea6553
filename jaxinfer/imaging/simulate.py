"""Synthetic confocal images with known truth, and perturbed starting states (for tests,
benchmarks and the demo)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.imaging import model as M
from jaxinfer.imaging.fields import field_param_names

__all__ = ["random_positions", "synthetic_image", "perturbed_start"]


def random_positions(key, shape, n_particles, radius, min_gap=0.5, max_tries=20000):
    """``n_particles`` centres (z, y, x) inside ``shape`` with surfaces at least ``min_gap``
    pixels apart (rejection sampling; z distances in pixels). Returns (n, 3) NumPy."""
    seed = int(jax.random.randint(key, (), 0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    lo = np.array([0.0, 0.0, 0.0]) + 0.5
    hi = np.asarray(shape, float) - 0.5
    out = []
    for _ in range(max_tries):
        p = rng.uniform(lo, hi)
        if all(np.linalg.norm(p - q) >= 2 * radius + min_gap for q in out):
            out.append(p)
            if len(out) == n_particles:
                return np.array(out)
    raise ValueError(f"could not place {n_particles} particles of radius {radius} in {shape}; "
                     "use a bigger image or fewer particles")


def synthetic_image(key, shape=(32, 64, 64), n_particles=30, radius=5.0, radius_spread=0.3,
                    noise=0.05, pad=24, ilm_order=(3, 3, 3), psf_values=(2.4, 1.6, 1.6),
                    zscale=1.0, dtype=None):
    """A noisy image from the model with known parameters.

    Returns ``(image (shape) NumPy, truth params dict, ImageModel)``. The illumination is
    Legendre 2+1D of ``ilm_order`` (mean 1, gentle gradients); background and offset 0."""
    k_pos, k_rad, k_noise, k_ilm = jax.random.split(key, 4)
    pos = random_positions(k_pos, shape, n_particles, radius + radius_spread)
    rad = radius + radius_spread * np.asarray(jax.random.uniform(k_rad, (n_particles,),
                                                                 minval=-1, maxval=1))
    n_ilm = len(field_param_names("legendre-2p1d", ilm_order, "ilm"))
    ilm = 0.03 * np.asarray(jax.random.normal(k_ilm, (n_ilm,)))
    ilm[0] = 1.0
    mdl = M.ImageModel(shape=tuple(shape), pad=(pad,) * 3 if np.ndim(pad) == 0 else tuple(pad),
                       half=M.default_half(1.25 * (radius + radius_spread), 0.8 * min(zscale, 1.0)),
                       ilm_order=tuple(ilm_order))
    truth = M.as_params(pos, rad, zscale, ilm, [0.0], 0.0, psf_values, dtype=dtype)
    clean = M.render(mdl, truth)
    image = clean + noise * jax.random.normal(k_noise, clean.shape, clean.dtype)
    return np.asarray(image), truth, mdl


def perturbed_start(key, truth, image, shift=0.5, psf_factor=1.2):
    """peri's benchmark start: positions and radii moved by up to ``shift`` pixels (uniform),
    a flat illumination at the 90th percentile of the data, bkg = offset = 0, and the PSF
    ``psf_factor`` too wide."""
    k1, k2 = jax.random.split(key)
    pos = np.asarray(truth["pos"]) + shift * np.asarray(
        jax.random.uniform(k1, truth["pos"].shape, minval=-1, maxval=1))
    rad = np.asarray(truth["rad"]) + shift * np.asarray(
        jax.random.uniform(k2, truth["rad"].shape, minval=-1, maxval=1))
    ilm = np.zeros(truth["ilm"].shape)
    ilm[0] = float(np.percentile(image, 90))
    return dict(pos=pos, rad=rad, zscale=float(truth["zscale"]), ilm=ilm,
                bkg=np.zeros(truth["bkg"].shape), offset=0.0,
                psf=np.asarray(truth["psf"]) * psf_factor)
