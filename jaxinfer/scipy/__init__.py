"""scipy-shaped front doors in JAX: change ``scipy`` to ``jaxinfer.scipy`` in an import.

Submodules mirror scipy's: ``optimize`` (jaxinfer.optimize), ``integrate`` (quad, dblquad,
odeint), ``interpolate`` (interp1d), ``fft``, ``stats`` (binom, binomtest, beta, skewnorm,
rv_continuous), ``differentiate`` (derivative, jacobian, hessian) and ``misc`` (the old
``derivative(func, x0, dx, n)``). Everything is a pure JAX function: it jits, vmaps and
differentiates. docs/scipy_migration.md lists what maps 1:1 and what differs. Submodules
load on first use, as scipy's do.
"""

import importlib

__all__ = ["differentiate", "fft", "integrate", "interpolate", "misc", "optimize", "stats"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"jaxinfer.scipy.{name}")
    raise AttributeError(f"module 'jaxinfer.scipy' has no attribute {name!r}")
