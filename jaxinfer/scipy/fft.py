"""``scipy.fft`` on ``jnp.fft``: same names and arguments; ``overwrite_x``, ``workers`` and
``plan`` are accepted and ignored (XLA chooses). ``fftfreq``/``rfftfreq`` need a static
``n``. Precision follows the input: float32 input gives complex64, float64 complex128.
scipy has no ``fftfreq2``: use ``fftfreq`` once per axis (``fftfreq(img.shape[0], d)``).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

__all__ = ["fft", "ifft", "fft2", "ifft2", "fftn", "ifftn", "rfft", "irfft", "rfft2", "irfft2",
           "rfftn", "irfftn", "hfft", "ihfft", "fftfreq", "rfftfreq", "fftshift", "ifftshift"]


def _wrap(jfun):
    @functools.wraps(jfun)
    def wrapped(x, *args, overwrite_x=False, workers=None, plan=None, **kwargs):
        if plan is not None:
            raise NotImplementedError("jaxinfer.scipy.fft: plan is not supported (pass None)")
        return jfun(x, *args, **kwargs)
    wrapped.__doc__ = (f"scipy.fft.{jfun.__name__} on jnp.fft.{jfun.__name__}; overwrite_x "
                       f"and workers are ignored.")
    return wrapped


fft = _wrap(jnp.fft.fft)
ifft = _wrap(jnp.fft.ifft)
fft2 = _wrap(jnp.fft.fft2)
ifft2 = _wrap(jnp.fft.ifft2)
fftn = _wrap(jnp.fft.fftn)
ifftn = _wrap(jnp.fft.ifftn)
rfft = _wrap(jnp.fft.rfft)
irfft = _wrap(jnp.fft.irfft)
rfft2 = _wrap(jnp.fft.rfft2)
irfft2 = _wrap(jnp.fft.irfft2)
rfftn = _wrap(jnp.fft.rfftn)
irfftn = _wrap(jnp.fft.irfftn)
hfft = _wrap(jnp.fft.hfft)
ihfft = _wrap(jnp.fft.ihfft)
fftshift = jnp.fft.fftshift
ifftshift = jnp.fft.ifftshift


def fftfreq(n: int, d=1.0, *, xp=None, device=None):
    """Sample frequencies ``[0, 1, ..., n/2-1, -n/2, ..., -1] / (d n)`` (``n`` static)."""
    return jnp.fft.fftfreq(int(n), d)


def rfftfreq(n: int, d=1.0, *, xp=None, device=None):
    """Non-negative sample frequencies ``[0, 1, ..., n//2] / (d n)`` (``n`` static)."""
    return jnp.fft.rfftfreq(int(n), d)
