"""peri's optimisers under their own names: ``opt.optimize`` and ``opt.addsubtract``."""

from jaxinfer.imaging.opt import addsubtract, optimize  # noqa: F401
