"""peri's AnisotropicGaussianXYZ point-spread function, applied by FFT over the padded volume.

Parametrisation (peri 0.1.3): the parameter values ``(psf-sigz, psf-sigy, psf-sigx)`` are
*twice* the Gaussian widths. Along each axis the kernel lives on an even grid of
``m = ceil(p) + ceil(p) % 2`` samples with offsets ``-m/2 ... m/2 - 1`` (one more on the
negative side) and ``p = value * sqrt(-2 ln error)`` (``error = 1/255``: ``p = 3.33 value``);
samples with ``|offset| > p`` are zero. The kernel is normalised to sum 1 and applied as a
circular convolution over the whole padded volume.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

__all__ = ["gaussian_kernel_wrapped", "convolve"]


def _wrapped_offsets(n: int):
    k = np.arange(n)
    return ((k + n // 2) % n) - n // 2


def gaussian_kernel_wrapped(values, padded_shape, error: float = 1.0 / 255):
    """The normalised kernel on the padded grid, centred at index 0 (FFT layout).

    values : (3,) peri's (sigz, sigy, sigx) = 2 sigma, pixels. Returns ``padded_shape``."""
    spread = math.sqrt(-2.0 * math.log(error))
    factors = []
    for axis, n in enumerate(padded_shape):
        off = jnp.asarray(_wrapped_offsets(int(n)), values.dtype)
        v = values[axis]
        p = jnp.abs(v) * spread
        m = jnp.ceil(p)
        m = m + jnp.mod(m, 2)
        keep = (off >= -m / 2) & (off <= m / 2 - 1) & (jnp.abs(off) <= p)
        factors.append(jnp.where(keep, jnp.exp(-0.5 * (off / (v / 2)) ** 2), 0.0))
    kernel = factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None, :]
    return kernel / (jnp.sum(kernel) + 1e-15)


def convolve(field, kernel):
    """Circular convolution of two real arrays of the same shape."""
    shape = field.shape
    return jnp.fft.irfftn(jnp.fft.rfftn(field) * jnp.fft.rfftn(kernel), s=shape)
