"""The ``jaxinfer`` command line: one subcommand per subpackage, plus ``demo``.

Each subpackage that has a command line keeps it in ``jaxinfer/<sub>/cli.py`` with

* ``register(subparsers)``: adds its subcommand (``jaxinfer <sub> ...``), and
* ``demo(progress) -> str``: runs its part of ``jaxinfer demo`` on embedded data and returns
  the text to show. ``progress(message)`` reports steps as they happen.

Modules are imported lazily, so ``jaxinfer --help`` stays fast.
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
    subparsers = parser.add_subparsers(dest="command", required=True)
    demo = subparsers.add_parser("demo", help="run every subpackage on embedded example data")
    demo.add_argument("--only", help=f"comma-separated subset of {','.join(SUBPACKAGES)}")
    demo.set_defaults(handler=_run_demo)
    for name in SUBPACKAGES:
        module = _cli_module(name)
        if module is not None and hasattr(module, "register"):
            module.register(subparsers)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
