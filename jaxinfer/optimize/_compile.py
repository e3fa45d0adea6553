"""The one compile cache of the front doors (``curve_fit``, ``least_squares``, ``minimize``).

A front door splits its call into

* ``static``: a hashable key (usually a NamedTuple) of everything that is not an array: the
  user's function objects, the pytree structure of the inputs, the solver settings;
* ``arrays``: pytrees of arrays (data, starting point, bounds, weights), which are traced;

and runs its solve with :func:`run_compiled`. The solve is ``jax.jit``-compiled once per
``(fn, static, shapes and dtypes of arrays)``, as in equinox's ``filter_jit``: the same model
function fitted again to new data of the same shapes reuses the compiled program, with only
the cost of a jit dispatch.

What recompiles (by design, as with ``jax.jit``):

* **a new function object**: ``curve_fit(lambda x, a, b: ..., ...)`` inside a loop makes a
  fresh lambda per call, and every call compiles anew. Define the model once (``def model``)
  and pass the same object.
* new array shapes or dtypes, or different settings (every option is part of ``static``).

What does not: new values of the arrays, new values of a solver's numeric settings (damping,
factors, tolerances, iteration limits: 0-d arrays in the settings Module, split off by
:func:`split_settings` and traced), and a different progress callback. Callbacks are
kept out of the key: the compiled program calls the fixed :data:`PROGRESS_SINK`, which
forwards to whatever :func:`~jaxinfer.optimize._iterate.progress_to` routes it to for the
duration of the call (use :func:`callback_key` to put a sink of the right signature in
``static``).

Inside a user's ``jit`` / ``vmap`` / ``grad`` (any array argument is a tracer) the solve is
simply inlined into the user's trace (no nested cache: the user's own transformation caches
it), and the user's callback is used directly.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional

import equinox as eqx
import jax

from jaxinfer.optimize._iterate import PROGRESS_SINK, progress_to

__all__ = ["is_traced", "compiled", "run_compiled", "callback_key", "trace_count",
           "compiler_options", "CPU_COMPILER_OPTIONS", "split_settings", "join_settings"]


def is_traced(*trees) -> bool:
    """True when any leaf of ``trees`` is a JAX tracer (we are inside jit / vmap / grad)."""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(trees))


#: XLA options for the solver programs on CPU. XLA's newer CPU fusion emitters spend ~45%
#: more compile time on these loop-heavy programs of small ops (3-parameter curve_fit:
#: 2.5 -> 1.6 CPU-seconds to compile) for no measurable run-time gain; the classic
#: emitters are used instead. Ignored on other backends.
CPU_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}


def compiler_options() -> dict:
    """The ``compiler_options`` the front doors pass to ``jax.jit`` on the default backend."""
    return dict(CPU_COMPILER_OPTIONS) if jax.default_backend() == "cpu" else {}


class _Compiled:
    """``fn(static, *arrays)`` compiled once per static key and array shapes."""

    def __init__(self, fn: Callable):
        self.fn = fn
        self.traces = 0  # how many times jit traced fn (one per compilation)
        self._jitted = None

    def _jit(self):
        fn = self.fn

        def traced(static, *arrays):
            self.traces += 1
            return fn(static, *arrays)

        traced.__name__ = getattr(fn, "__name__", "solve")
        traced.__qualname__ = getattr(fn, "__qualname__", traced.__name__)
        # made on first use, when the backend is known
        return jax.jit(traced, static_argnums=0, compiler_options=compiler_options())

    def __call__(self, static, *arrays):
        if is_traced(arrays):
            return self.fn(static, *arrays)
        try:
            hash(static)
        except TypeError as err:
            raise TypeError(f"{self.fn.__name__}: the settings of this call are not hashable "
                            f"({err}); pass array-valued settings as arrays") from err
        if self._jitted is None:
            self._jitted = self._jit()
        return self._jitted(static, *arrays)


def split_settings(settings):
    """``(static, dynamic)`` of a settings Module (a solver): ``static`` (hashable, for the
    compile key) holds the structure, the flags and the variant objects; ``dynamic`` (pass
    it with the arrays) holds the numeric settings, which are 0-d arrays and so traced: fits
    that differ only in a damping, a factor, a tolerance or an iteration limit share one
    program. Whether a test is on (a value) or off (None) is structure and stays in the key.
    """
    dynamic, static = eqx.partition(settings, eqx.is_array)
    return static, dynamic


def join_settings(static, dynamic):
    """The settings Module back from :func:`split_settings`' two halves (inside the trace)."""
    return eqx.combine(dynamic, static)


_REGISTRY: dict = {}


def compiled(fn: Callable) -> _Compiled:
    """The compile cache of ``fn(static, *arrays)`` (one per function object, made on first use).

    Calling it with untraced arrays runs the cached ``jax.jit(fn, static_argnums=0)``;
    with traced arrays it calls ``fn`` directly. ``static`` must be hashable (its ``==``
    decides cache hits: functions compare by identity, floats by value).
    """
    cache = _REGISTRY.get(fn)
    if cache is None:
        cache = _REGISTRY[fn] = _Compiled(fn)
    return cache


def trace_count(fn: Callable) -> int:
    """How many times the compile cache of ``fn`` has traced it (0 if never used)."""
    cache = _REGISTRY.get(fn)
    return 0 if cache is None else cache.traces


def run_compiled(fn: Callable, static, *arrays, progress: Optional[Callable] = None):
    """``compiled(fn)(static, *arrays)`` with ``PROGRESS_SINK`` routed to ``progress``.

    When ``progress`` is given the call blocks until the results are ready, so every
    callback has fired before it returns. ``static`` should hold :func:`callback_key`'s
    sink, not ``progress`` itself.
    """
    if progress is None:
        return compiled(fn)(static, *arrays)
    with progress_to(progress):
        return jax.block_until_ready(compiled(fn)(static, *arrays))


# Sinks with the two calling conventions of scipy callbacks; each forwards its one argument
# (a Progress, an IntermediateResult or xk, whatever the solver hands it) to PROGRESS_SINK.
def _forward_intermediate_result(intermediate_result):
    PROGRESS_SINK(intermediate_result)


def _forward_xk(xk):
    PROGRESS_SINK(xk)


def callback_key(callback: Optional[Callable], traced: bool) -> Any:
    """What to store in a front door's ``static`` for the user's ``callback``.

    Traced (inside the user's jit): the callback itself (the user's trace owns it). Else a
    fixed sink with the same calling convention (scipy's: a single parameter named
    ``intermediate_result`` receives the result object, anything else receives ``xk``), so
    changing the callback does not recompile. None stays None.
    """
    if callback is None or traced:
        return callback
    if not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    try:
        params = list(inspect.signature(callback).parameters)
    except (TypeError, ValueError):
        params = []
    return _forward_intermediate_result if params == ["intermediate_result"] else _forward_xk
