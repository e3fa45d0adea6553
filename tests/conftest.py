"""Suite-wide settings: float64 everywhere, and dtype-aware tolerances."""

import os

# Four CPU devices for the sharding tests. (XLA's classic CPU emitters for every jit of the
# suite, tried for ~25% less compile CPU, made an xdist worker segfault inside XLA's compiler in
# 2 of 3 fresh-clone runs, both in spt programs late in the run: left off; the front doors
# still pass them per program through jaxinfer.optimize._compile.compiler_options.)
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# in-process CLI tests must not turn the persistent compilation cache on for the whole session
os.environ.setdefault("JAXINFER_NO_COMPILATION_CACHE", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402


def tolerance(dtype, rtol64: float = 1e-10, rtol32: float = 1e-4) -> float:
    """Relative tolerance suited to ``dtype``: tight in float64, loose in float32."""
    return rtol64 if jnp.dtype(dtype) == jnp.float64 else rtol32


@pytest.fixture
def tol():
    """The :func:`tolerance` helper as a fixture: ``tol(x.dtype)``."""
    return tolerance
