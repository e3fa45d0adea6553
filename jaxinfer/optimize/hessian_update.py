"""scipy's ``HessianUpdateStrategy`` objects (``hess=SR1()``, ``hess=BFGS()``) for
``minimize``.

scipy uses them to build a quasi-Newton Hessian for Newton-CG / trust methods when no exact
Hessian is given. jaxinfer has the exact Hessian-vector product from autodiff
(forward-over-reverse), which is what such a strategy approximates, so a strategy object
passed as ``hess`` selects autodiff Hessian-vector products; its settings are accepted and
unused. ``jaxinfer.optimize.BFGS`` is the BFGS *solver*; an instance of it (or of scipy's
``scipy.optimize.BFGS``) given as ``hess`` is read the same way.
"""

from __future__ import annotations

__all__ = ["HessianUpdateStrategy", "SR1", "is_update_strategy"]


class HessianUpdateStrategy:
    """Base class of quasi-Newton Hessian update strategies (scipy's interface name)."""

    def __init__(self, *args, **kwargs):
        self.args = args
        self.kwargs = kwargs

    def __repr__(self):
        return f"{type(self).__name__}()"


class SR1(HessianUpdateStrategy):
    """Symmetric rank-one update (scipy's ``SR1(min_denominator=1e-8, init_scale='auto')``)."""


def is_update_strategy(hess) -> bool:
    """Is ``hess`` a Hessian update strategy: ours, scipy's, or a ``BFGS`` solver instance?"""
    if isinstance(hess, HessianUpdateStrategy):
        return True
    from jaxinfer.optimize.quasi_newton import BFGS
    if isinstance(hess, BFGS):
        return True
    return any(c.__name__ == "HessianUpdateStrategy" for c in type(hess).__mro__)
