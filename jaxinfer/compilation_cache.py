"""JAX's persistent compilation cache, in one call: a second run of a program does not compile.

>>> import jaxinfer.compilation_cache
>>> jaxinfer.compilation_cache.enable()          # ~/.cache/jaxinfer/jax

Compiled XLA programs are written to a directory and read back by later processes that
compile the same program (same function, shapes, dtypes, flags, JAX version and device), so
the compile time of jaxinfer's solvers (seconds each) is paid once per machine. The
``jaxinfer`` command line turns it on by default; set ``JAXINFER_NO_COMPILATION_CACHE=1`` or
pass ``--no-compilation-cache`` to switch it off.

JAX's own thresholds skip programs that compile in under a second; :func:`enable` lowers
them to zero so the many small programs of a session are cached too.

Not cached (JAX's rule): programs with host callbacks, such as a solve compiled with a
per-iteration progress callback, because the callback is baked into the program. The
front doors compile without one when no callback is given.

The cache is trusted code: do not point it at a directory others can write to.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["enable", "disable", "default_path", "entry_count", "OPT_OUT_ENV"]

#: Environment variable that switches the command line's cache off when set to 1 / true.
OPT_OUT_ENV = "JAXINFER_NO_COMPILATION_CACHE"


def default_path() -> Path:
    """``$XDG_CACHE_HOME/jaxinfer/jax``, i.e. ``~/.cache/jaxinfer/jax`` by default."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxinfer" / "jax"


def enable(path: Optional[Union[str, os.PathLike]] = None) -> Path:
    """Turn on JAX's persistent compilation cache in ``path`` (default :func:`default_path`).

    Creates the directory, points ``jax_compilation_cache_dir`` at it, and caches every
    program however quick to compile (``jax_persistent_cache_min_compile_time_secs = 0``,
    no minimum entry size). Safe to call more than once and after programs were already
    compiled (later compilations use the new directory). Returns the directory.
    """
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    directory = Path(default_path() if path is None else path).expanduser()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the compilation cache directory {directory}: {err}") from err
    if not os.access(directory, os.W_OK):
        raise PermissionError(f"the compilation cache directory {directory} is not writable")
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    jax_cache.reset_cache()  # re-read the directory at the next compilation
    return directory


def disable() -> None:
    """Stop reading and writing the persistent cache in this process (files are kept)."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    jax.config.update("jax_compilation_cache_dir", None)
    jax_cache.reset_cache()


def entry_count(path: Optional[Union[str, os.PathLike]] = None) -> int:
    """Number of cached programs (files) under ``path`` (default :func:`default_path`)."""
    directory = Path(default_path() if path is None else path).expanduser()
    if not directory.is_dir():
        return 0
    return sum(1 for p in directory.rglob("*") if p.is_file() and not p.name.endswith("-atime"))


def opted_out() -> bool:
    """True when ``JAXINFER_NO_COMPILATION_CACHE`` is set to 1 / true / yes."""
    return os.environ.get(OPT_OUT_ENV, "").strip().lower() in ("1", "true", "yes", "on")
