"""peri's image-formation models (``peri.models``): only the confocal one."""

from __future__ import annotations

__all__ = ["ConfocalImageModel"]


class ConfocalImageModel:
    """``M = H(I (1 - P) + C P) + B`` (see :mod:`jaxinfer.imaging.model`)."""

    categories = ("obj", "ilm", "bkg", "offset", "psf")

    def check_inputs(self, comps):
        cats = [c.category for c in comps]
        missing = [c for c in self.categories if c not in cats]
        extra = [c for c in cats if c not in self.categories]
        dup = sorted({c for c in cats if cats.count(c) > 1})
        if missing or extra or dup:
            raise ValueError(f"ConfocalImageModel needs exactly one component of each category "
                             f"{self.categories}; missing {missing}, unknown {extra}, repeated {dup}")

    def __repr__(self):
        return "ConfocalImageModel: H(I*(1-P)+C*P) + B"
