"""Suite-wide settings: float64 everywhere, and dtype-aware tolerances."""

import os

# Four CPU devices for the sharding tests. The classic CPU emitters, as the front doors already
# use for their solver programs (jaxinfer.optimize._compile.CPU_COMPILER_OPTIONS), for every
# jit of the suite: the newer fusion emitters cost ~25% more compile CPU on these small-op
# programs (tests/mixture/test_lymph.py + test_fixed_point.py + glmm/test_cov.py: 32.5 -> 24.4
# CPU-s) and the suite is compile-bound.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=4 --xla_cpu_use_fusion_emitters=false")
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
