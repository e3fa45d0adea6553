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

import gc  # noqa: E402

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


# Every compiled XLA CPU program keeps ~3 memory mappings until it is freed, and JAX keeps every
# program it compiled. A test process of this suite compiles thousands: without a release its
# map count passed the kernel's vm.max_map_count (65530) late in the run, and XLA's compiler
# then segfaulted on a failed mmap (an xdist worker lost in 4 of 5 fresh-clone CI runs). So,
# between test modules, once the count is past a fraction of the limit, drop JAX's caches
# (later modules recompile what they use); a single test far past it clears too.
def _map_limit() -> int:
    try:
        with open("/proc/sys/vm/max_map_count") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def _map_count() -> int:
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


MAP_LIMIT = _map_limit()


def _release_compiled_programs(fraction: float) -> None:
    if MAP_LIMIT and _map_count() > fraction * MAP_LIMIT:
        jax.clear_caches()
        gc.collect()


@pytest.fixture(autouse=True, scope="module")
def _release_programs_between_modules():
    yield
    _release_compiled_programs(0.35)


@pytest.fixture(autouse=True)
def _release_programs_in_long_modules():
    yield
    # one test was seen to add ~11,000 maps on its own (46.7k -> 57.9k in a full run)
    _release_compiled_programs(0.5)
