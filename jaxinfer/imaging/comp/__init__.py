"""peri's components under their own names: ``comp.comp`` (GlobalScalar), ``comp.objs``
(PlatonicSpheresCollection), ``comp.ilms`` (LegendrePoly2P1D, LegendrePoly3D, Polynomial3D),
``comp.psfs`` (AnisotropicGaussianXYZ)."""

from jaxinfer.imaging.comp import comp, ilms, objs, psfs  # noqa: F401
from jaxinfer.imaging.comp.comp import Component, GlobalScalar  # noqa: F401
