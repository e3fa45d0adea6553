"""The ``jaxinfer`` command line: one subcommand per subpackage, plus ``demo``.

Each subpackage that has a command line keeps it in ``jaxinfer/<sub>/cli.py`` with

* ``register(subparsers)``: adds its subcommand (``jaxinfer <sub> ...``), and
* ``demo(progress) -> str``: runs its part of ``jaxinfer demo`` on embedded data and returns
  the text to show. ``progress(message)`` reports steps as they happen.

Modules are imported lazily, so ``jaxinfer --help`` stays fast.

JAX's persistent compilation cache (:mod:`jaxinfer.compilation_cache`) is on by default, so a
second run of a command does not compile again; ``--no-compilation-cache`` or
``JAXINFER_NO_COMPILATION_CACHE=1`` switches it off, ``--compilation-cache DIR`` moves it.
Long solves report through :class:`ProgressBar`, a one-line text bar on stderr.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

# Order matters: the demo runs the parts in this order.
SUBPACKAGES = ("optimize", "spt", "glmm", "imaging", "mixture")


def _cli_module(name: str):
    try:
        return importlib.import_module(f"jaxinfer.{name}.cli")
    except ModuleNotFoundError as err:
        if err.name == f"jaxinfer.{name}.cli":
            return None
        raise


def _progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


class ProgressBar:
    """A one-line text progress bar on stderr, no dependency.

    ``bar.start(label, items=1)`` begins the next ``items`` of ``total`` (e.g. one batch of
    fits); ``bar(progress)`` is a solver's per-iteration callback (``Progress(nit, fun, x)``,
    also under ``vmap``, where it fires once per lane) and shows the iteration count and
    objective of the current item; ``bar.close()`` ends the line. On a terminal the line is
    redrawn in place (at most every ``min_interval`` seconds); otherwise one line is
    written per item when it starts, so logs stay short.
    """

    def __init__(self, total: int, title: str = "", stream=None, width: int = 20,
                 min_interval: float = 0.1):
        if int(total) != total or total < 1:
            raise ValueError(f"total must be a positive integer, got {total!r}")
        self.total = int(total)
        self.title = title
        self.stream = sys.stderr if stream is None else stream
        self.width = int(width)
        self.min_interval = float(min_interval)
        self.done = 0
        self.label = ""
        self.nit = 0
        self.fun = None
        self.calls = 0          # per-iteration callbacks received
        self._items = 0
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def start(self, label: str, items: int = 1) -> None:
        """Mark the previous item done and begin the next ``items`` under ``label``."""
        self.done = min(self.total, self.done + self._items)
        self._items = int(items)
        self.label, self.nit, self.fun = label, 0, None
        if self._tty:
            self._draw(force=True)
        else:
            print(f"  .. [{self.done + self._items}/{self.total}] {label}", file=self.stream,
                  flush=True)

    def __call__(self, progress) -> None:
        import numpy as np

        self.calls += 1
        self.nit = max(self.nit, int(np.max(np.asarray(progress.nit))))
        self.fun = float(np.min(np.asarray(progress.fun)))
        if self._tty:
            self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        filled = int(round(self.width * self.done / self.total))
        bar = "#" * filled + "." * (self.width - filled)
        info = f" iteration {self.nit}" + ("" if self.fun is None else f", cost {self.fun:.6g}")
        line = f"  {self.title} [{bar}] {self.done}/{self.total} {self.label}{info}"
        self.stream.write("\r" + line[:150].ljust(150))
        self.stream.flush()

    def close(self) -> None:
        """Mark everything done and end the line."""
        self.done, self._items = self.total, 0
        if self._tty:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()


def _run_demo(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    wanted = args.only.split(",") if args.only else list(SUBPACKAGES)
    unknown = sorted(set(wanted) - set(SUBPACKAGES))
    if unknown:
        raise SystemExit(f"jaxinfer demo: unknown part(s) {unknown}; expected some of {list(SUBPACKAGES)}")
    for name in wanted:
        module = _cli_module(name)
        if module is None or not hasattr(module, "demo"):
            continue
        print(f"== {name} ==", flush=True)
        start = time.perf_counter()
        print(module.demo(_progress), flush=True)
        print(f"({name}: {time.perf_counter() - start:.1f} s)\n", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxinfer", description=__doc__.splitlines()[0])
    parser.add_argument("--no-compilation-cache", action="store_true",
                        help="do not use the persistent compilation cache (also: "
                             "JAXINFER_NO_COMPILATION_CACHE=1)")
    parser.add_argument("--compilation-cache", metavar="DIR", default=None,
                        help="directory of the persistent compilation cache (default "
                             "~/.cache/jaxinfer/jax)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    demo = subparsers.add_parser("demo", help="run every subpackage on embedded example data")
    demo.add_argument("--only", help=f"comma-separated subset of {','.join(SUBPACKAGES)}")
    demo.set_defaults(handler=_run_demo)
    for name in SUBPACKAGES:
        module = _cli_module(name)
        if module is not None and hasattr(module, "register"):
            module.register(subparsers)
    return parser


def _setup_compilation_cache(args) -> None:
    from jaxinfer import compilation_cache

    if args.no_compilation_cache or compilation_cache.opted_out():
        return
    try:
        compilation_cache.enable(args.compilation_cache)
    except OSError as err:  # an unwritable cache must not stop the command
        print(f"jaxinfer: persistent compilation cache off: {err}", file=sys.stderr)


def _setup_xla_flags() -> None:
    """The solvers' CPU compile option (see jaxinfer.optimize._compile.CPU_COMPILER_OPTIONS)
    for every program of the command, including those jitted outside the front doors; only
    before JAX has started its backend, and never overriding a user's XLA_FLAGS choice."""
    import os

    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_use_fusion_emitters" not in flags and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_use_fusion_emitters=false").strip()


def main(argv=None) -> int:
    _setup_xla_flags()
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_compilation_cache(args)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
