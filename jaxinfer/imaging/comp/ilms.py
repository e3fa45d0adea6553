"""Polynomial illumination (and background) fields (peri's ``comp.ilms``)."""

from __future__ import annotations

from jaxinfer.imaging.comp.comp import Component
from jaxinfer.imaging.fields import field_param_names

__all__ = ["LegendrePoly2P1D", "LegendrePoly3D", "Polynomial3D"]


class _Field(Component):
    kind = None

    def __init__(self, order=(1, 1, 1), tileinfo=None, constval=None, category="ilm",
                 shape=None, float_precision=None):
        order = tuple(int(o) for o in order)
        if len(order) != 3 or min(order) < 0:
            raise ValueError(f"order must be three non-negative ints (z, y, x), got {order}")
        if tileinfo is not None:
            raise NotImplementedError("tileinfo is not supported")
        self.order = order
        names = field_param_names(self.kind, order, category)
        if not names:
            raise ValueError(f"order {order} gives a field without parameters")
        values = [0.0] * len(names)
        if constval:
            values[0] = float(constval)
        super().__init__(names, values, category=category)


class LegendrePoly2P1D(_Field):
    """``[sum_ij c_ij P_i(x) P_j(y)] * (1 + sum_k d_k P_(k+1)(z))``; order = (nz, ny, nx)."""

    kind = "legendre-2p1d"

    def __init__(self, order=(1, 1, 1), **kwargs):
        if "operation" in kwargs and kwargs.pop("operation") != "*":
            raise NotImplementedError("only operation='*' is supported")
        super().__init__(order=order, **kwargs)


class LegendrePoly3D(_Field):
    """``sum_ijk c_ijk P_i(z) P_j(y) P_k(x)``."""

    kind = "legendre-3d"


class Polynomial3D(_Field):
    """``sum_ijk c_ijk z^i y^j x^k`` on coordinates scaled to [0, 1)."""

    kind = "polynomial-3d"
