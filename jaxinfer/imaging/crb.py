"""Fisher information and Cramér–Rao bounds of the image model, by forward-mode autodiff.

For Gaussian pixel noise of standard deviation ``sigma`` the Fisher information of the
parameters θ is ``F = Jᵀ J / sigma²`` with ``J = ∂M/∂θ`` over the unpadded image, and the
Cramér–Rao bound of θ_i is ``sqrt((F⁻¹)_ii)`` (peri's ``state.crb``; peri built J by finite
differences). Particle columns are structured: a particle moves only its own drawing cube, so
its 4 columns are 4 JVPs on that cube, one product with ``C - I`` and one blur each (one
particle at a time); the other columns are JVPs of the whole render, a few at a time.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.imaging import names as N
from jaxinfer.imaging import platonic, psf
from jaxinfer.imaging.model import illumination_field, render

__all__ = ["fisher_information", "crb"]


def _particle_columns(model, params, index):
    """dM/d(z, y, x, a) of the particles ``index`` (k,), inner image raveled: (k, 4, m)."""
    dtype = params["pos"].dtype
    pad = jnp.asarray(model.pad, dtype)
    c_minus_i = params["offset"] - illumination_field(model, params)
    kernel_ft = jnp.fft.rfftn(psf.gaussian_kernel_wrapped(params["psf"], model.padded_shape,
                                                          model.psf_error))
    active = params.get("active")

    def one(i):
        dp = platonic.platonic_jacobian(
            model.padded_shape, model.half, params["pos"][i][None] + pad, params["rad"][i][None],
            params["zscale"], None if active is None else active[i][None], method=model.method,
            alpha=model.alpha, exact_volume=model.exact_volume, volume_error=model.volume_error,
            max_radius_change=model.max_radius_change)[0]

        def blur(c):
            out = jnp.fft.irfftn(jnp.fft.rfftn(c_minus_i * c) * kernel_ft, s=model.padded_shape)
            return out[model.inner].ravel()

        return jax.vmap(blur)(dp)

    return jax.lax.map(one, index)


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _jtj(model, params, refs, chunk):
    particle = [i for i, (key, _) in enumerate(refs) if key in ("pos", "rad")]
    other = [i for i in range(len(refs)) if i not in particle]
    rows = []
    if particle:
        owners = sorted({refs[i][1][0] for i in particle})
        cols = _particle_columns(model, params, jnp.asarray(owners)).reshape(4 * len(owners), -1)
        where = [4 * owners.index(refs[i][1][0]) + (3 if refs[i][0] == "rad" else refs[i][1][1])
                 for i in particle]
        rows.append(cols[np.asarray(where)])
    if other:
        sub = tuple(refs[i] for i in other)
        x0 = N.pack(params, sub)
        n = x0.shape[0]

        def f(x):
            return render(model, N.unpack(params, sub, x)).ravel()

        def columns(tangents):                       # (chunk, n) -> (chunk, m)
            return jax.vmap(lambda t: jax.jvp(f, (x0,), (t,))[1])(tangents)

        n_chunks = -(-n // chunk)
        eye = jnp.eye(n_chunks * chunk, n, dtype=x0.dtype).reshape(n_chunks, chunk, n)
        rows.append(jax.lax.map(columns, eye).reshape(n_chunks * chunk, -1)[:n])
    jt = jnp.concatenate(rows)                       # (n, m), particle rows first
    order = np.argsort(np.asarray(particle + other))
    jt = jt[order]
    return jt @ jt.T


def fisher_information(model, params, refs, sigma=1.0, chunk=8):
    """``Jᵀ J / sigma²`` for the parameters ``refs`` ((key, index) pairs), (n, n)."""
    return _jtj(model, params, tuple(refs), int(chunk)) / sigma ** 2


def crb(model, params, refs, sigma, chunk=8):
    """Cramér–Rao bounds (n,) of the parameters ``refs`` for pixel noise ``sigma``.

    Raises if the Fisher matrix is singular (a parameter the image does not constrain)."""
    fisher = fisher_information(model, params, refs, 1.0, chunk)
    cov = jnp.linalg.inv(fisher)
    diag = jnp.diag(cov)
    return jnp.sqrt(diag) * sigma
