"""Fisher information and Cramér–Rao bounds of the image model, by forward-mode autodiff.

For Gaussian pixel noise of standard deviation ``sigma`` the Fisher information of the
parameters θ is ``F = Jᵀ J / sigma²`` with ``J = ∂M/∂θ`` over the unpadded image, and the
Cramér–Rao bound of θ_i is ``sqrt((F⁻¹)_ii)`` (peri's ``state.crb``; peri built J by finite
differences). J is built a few columns at a time, so memory stays at ``chunk`` renders.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from jaxinfer.imaging import names as N
from jaxinfer.imaging.model import render

__all__ = ["fisher_information", "crb"]


@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _jtj(model, params, refs, chunk):
    x0 = N.pack(params, refs)
    n = x0.shape[0]

    def f(x):
        return render(model, N.unpack(params, refs, x)).ravel()

    def columns(tangents):                       # (chunk, n) -> (chunk, m)
        return jax.vmap(lambda t: jax.jvp(f, (x0,), (t,))[1])(tangents)

    n_chunks = -(-n // chunk)
    eye = jnp.eye(n_chunks * chunk, n, dtype=x0.dtype).reshape(n_chunks, chunk, n)
    jt = jax.lax.map(columns, eye).reshape(n_chunks * chunk, -1)[:n]   # (n, m)
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
