"""``PlatonicSpheresCollection`` (peri's ``comp.objs``): spheres with positions (z, y, x) and
radii in pixels of the unpadded image, and the global ``zscale``."""

from __future__ import annotations

import numpy as np

from jaxinfer.imaging.comp.comp import Component
from jaxinfer.imaging.platonic import PROFILES

__all__ = ["PlatonicSpheresCollection"]


class PlatonicSpheresCollection(Component):
    """Spheres drawn with an edge profile (``method``; peri's default 'exact-gaussian-fast'
    needs scipy.weave and falls back in peri itself to 'exact-gaussian-trim', which is what
    is drawn here) and, with ``exact_volume``, the exact-volume radius correction.

    pos : (N, 3) pixels (z, y, x); rad : (N,) or scalar, pixels, > 0."""

    category = "obj"

    def __init__(self, pos, rad, shape=None, zscale=1.0, support_pad=4,
                 method="exact-gaussian-fast", alpha=None, user_method=None,
                 exact_volume=True, volume_error=1e-5, max_radius_change=1e-2,
                 param_prefix="sph", grouping="particle", category="obj",
                 float_precision=np.float64):
        pos = np.asarray(pos, float)
        if pos.ndim != 2 or pos.shape[1] != 3:
            raise ValueError(f"pos must be an (N, 3) array of z, y, x positions, got shape {pos.shape}")
        rad = np.broadcast_to(np.asarray(rad, float), (pos.shape[0],)).copy() \
            if np.ndim(rad) == 0 else np.asarray(rad, float).copy()
        if rad.shape != (pos.shape[0],):
            raise ValueError(f"rad must have one radius per particle ({pos.shape[0]}), got shape {rad.shape}")
        if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(rad))):
            raise ValueError("particle positions and radii must be finite")
        if np.any(rad <= 0):
            bad = np.flatnonzero(rad <= 0)
            raise ValueError(f"particle radii must be > 0 pixels; particle(s) {bad.tolist()[:10]} "
                             f"have {rad[bad].tolist()[:10]}")
        if user_method is not None or method == "user-defined":
            raise NotImplementedError("user-defined sphere profiles are not supported")
        if method == "exact-gaussian-fast":
            method = "exact-gaussian-trim"
        if method not in PROFILES:
            raise ValueError(f"unknown sphere method {method!r}; expected one of "
                             f"{PROFILES + ('exact-gaussian-fast',)}")
        if grouping != "particle" or param_prefix != "sph":
            raise NotImplementedError("only grouping='particle' and param_prefix='sph' are supported")
        self.pos = pos.copy()
        self.rad = rad
        self.zscale = float(zscale)
        self.support_pad = int(support_pad)
        self.method = method
        self.alpha = alpha
        self.exact_volume = bool(exact_volume)
        self.volume_error = float(volume_error)
        self.max_radius_change = float(max_radius_change)
        self.category = category

    @property
    def N(self):
        return self.pos.shape[0]

    @property
    def params(self):
        out = []
        for i in range(self.N):
            out += [f"sph-{i}-{c}" for c in "zyxa"]
        return out + ["zscale"]

    @property
    def values(self):
        out = []
        for p, a in zip(self.pos, self.rad):
            out += [*p.tolist(), float(a)]
        return out + [self.zscale]

    def get_positions(self):
        return self.pos.copy()

    def get_radii(self):
        return self.rad.copy()

    def __repr__(self):
        return f"PlatonicSpheresCollection N={self.N}"
