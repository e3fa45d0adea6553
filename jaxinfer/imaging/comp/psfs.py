"""Point-spread functions (peri's ``comp.psfs``)."""

from __future__ import annotations

from jaxinfer.imaging.comp.comp import Component

__all__ = ["AnisotropicGaussianXYZ"]


class AnisotropicGaussianXYZ(Component):
    """Gaussian PSF; ``sigmas = (psf-sigz, psf-sigy, psf-sigx)`` are 2 sigma, in pixels."""

    category = "psf"

    def __init__(self, sigmas=(2.0, 0.5, 1.0), error=1.0 / 255, shape=None):
        sigmas = [float(s) for s in sigmas]
        if len(sigmas) != 3 or min(sigmas) <= 0:
            raise ValueError(f"sigmas must be three positive widths (z, y, x), got {sigmas}")
        self.error = float(error)
        super().__init__(["psf-sigz", "psf-sigy", "psf-sigx"], sigmas, category="psf")
