"""jaxinfer.imaging: peri 0.1.3's particle-image reconstruction in JAX.

A peri script runs by changing ``peri`` to ``jaxinfer.imaging`` in its imports::

    from jaxinfer.imaging import states, util, models
    from jaxinfer.imaging.comp import objs, ilms, psfs, comp
    from jaxinfer.imaging.opt import optimize as opt, addsubtract

Underneath: :class:`~jaxinfer.imaging.model.ImageModel` (static settings), a dict of parameter
arrays and the pure, jitted :func:`~jaxinfer.imaging.model.render`.
"""

from jaxinfer.imaging import comp, fields, models, names, opt, platonic, psf, states, util  # noqa: F401
from jaxinfer.imaging.crb import crb, fisher_information
from jaxinfer.imaging.fit import fit_globals, fit_particle_groups, group_particles
from jaxinfer.imaging.model import ImageModel, render, render_padded, residuals

__all__ = ["states", "util", "models", "comp", "opt", "ImageModel", "render", "render_padded",
           "residuals", "crb", "fisher_information", "fit_globals", "fit_particle_groups",
           "group_particles"]
