"""peri's ``ImageState``: a thin mutable facade over the pure model.

Underneath there are three things: the static :class:`~jaxinfer.imaging.model.ImageModel`,
the parameter dict (arrays) and the data array. ``state.model`` is
``render(image_model, params)``, jitted; ``update`` replaces values by peri's parameter names.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from jaxinfer.imaging import names as N
from jaxinfer.imaging import util
from jaxinfer.imaging.comp.comp import GlobalScalar
from jaxinfer.imaging.comp.ilms import _Field
from jaxinfer.imaging.comp.objs import PlatonicSpheresCollection
from jaxinfer.imaging.comp.psfs import AnisotropicGaussianXYZ
from jaxinfer.imaging.crb import crb as _crb, fisher_information as _fisher
from jaxinfer.imaging.model import ImageModel, render
from jaxinfer.imaging.models import ConfocalImageModel
from jaxinfer.imaging.platonic import tile_half_width

__all__ = ["ImageState", "save", "load"]


def _delistify(values, params):
    return values[0] if isinstance(params, str) else values


class ImageState:
    """A confocal image and the model that explains it (peri's ``states.ImageState``).

    image : array (2-D or 3-D), ``util.Image``, ``util.RawImage`` or ``util.NullImage``
        (a NullImage makes the state's own model the data).
    comps : list of components, one per category 'obj', 'ilm', 'bkg', 'offset', 'psf'.
    mdl : ``models.ConfocalImageModel()``; sigma : pixel noise (loglikelihood, thresholds,
    CRB); pad : voxels of zero padding on each side (int or 3 ints).
    """

    def __init__(self, image, comps, mdl=None, sigma=0.04, priors=None, pad=24,
                 model_as_data=False):
        if priors:
            raise NotImplementedError("priors are not supported")
        mdl = mdl or ConfocalImageModel()
        if not isinstance(mdl, ConfocalImageModel):
            raise NotImplementedError(f"only ConfocalImageModel is supported, got {mdl!r}")
        mdl.check_inputs(comps)
        self.mdl = mdl
        self.comps = list(comps)
        self.sigma = float(sigma)
        pad = np.broadcast_to(np.asarray(pad, int), (3,))
        if np.any(pad < 0):
            raise ValueError(f"pad must be >= 0, got {pad.tolist()}")
        self.pad = pad
        if not isinstance(image, util.Image):
            image = util.Image(image)
        self.image = image
        data = image.get_image()
        self._shape = tuple(int(s) for s in data.shape)
        obj, ilm, bkg, psf = (self.get(c) for c in ("obj", "ilm", "bkg", "psf"))
        if not isinstance(obj, PlatonicSpheresCollection):
            raise NotImplementedError("the 'obj' component must be a PlatonicSpheresCollection")
        if not isinstance(ilm, _Field):
            raise NotImplementedError("the 'ilm' component must be LegendrePoly2P1D, LegendrePoly3D or Polynomial3D")
        if not isinstance(psf, AnisotropicGaussianXYZ):
            raise NotImplementedError("the 'psf' component must be AnisotropicGaussianXYZ")
        if not isinstance(bkg, (GlobalScalar, _Field)):
            raise NotImplementedError("the 'bkg' component must be a GlobalScalar or a polynomial field")
        self._settings = dict(
            ilm_kind=ilm.kind, ilm_order=ilm.order,
            bkg_kind="scalar" if isinstance(bkg, GlobalScalar) else bkg.kind,
            bkg_order=(1, 1, 1) if isinstance(bkg, GlobalScalar) else bkg.order,
            method=obj.method, alpha=obj.alpha, exact_volume=obj.exact_volume,
            volume_error=obj.volume_error, max_radius_change=obj.max_radius_change,
            psf_error=psf.error)
        self._support_pad = obj.support_pad
        self._covered_radius = 0.0
        dtype = jnp.result_type(float)
        self._n = int(obj.pos.shape[0])
        self._params = {
            **self._with_capacity(obj.pos.reshape(-1, 3), obj.rad, dtype),
            "zscale": jnp.asarray(obj.zscale, dtype), "ilm": jnp.asarray(ilm.values, dtype),
            "bkg": jnp.asarray(bkg.values, dtype),
            "offset": jnp.asarray(self.get("offset").values[0], dtype),
            "psf": jnp.asarray(psf.values, dtype)}
        self._check_particles(np.asarray(obj.pos), np.asarray(obj.rad))
        self._rebuild_model()
        self.model_as_data = bool(model_as_data) or isinstance(image, util.NullImage)
        self._data = jnp.asarray(data, dtype)
        self._cache = None
        if self.model_as_data:
            self.model_to_data(self.sigma if model_as_data else 0.0)

    # ---- the pure core underneath --------------------------------------------------------
    @property
    def image_model(self) -> ImageModel:
        """The static model description (for the pure functions of jaxinfer.imaging)."""
        return self._image_model

    @property
    def param_tree(self):
        """The parameter dict (arrays) that ``render(image_model, param_tree)`` draws."""
        return dict(self._params)

    @property
    def data_array(self):
        """The data as a JAX array (unpadded)."""
        return self._data

    def _with_capacity(self, pos, rad, dtype):
        """pos / rad in arrays of a capacity (a multiple of 8 with room to grow) plus the 0/1
        ``active`` rows, so that adding or removing particles keeps array shapes."""
        pos = np.asarray(pos, float).reshape(-1, 3)
        rad = np.asarray(rad, float).reshape(-1)
        n = pos.shape[0]
        cap = getattr(self, "_capacity", 0)
        if n > cap or cap == 0:
            cap = 8 * (n // 8 + 1)
            self._capacity = cap
        filler = np.asarray(self._shape, float) / 2
        full_pos = np.tile(filler, (cap, 1))
        full_pos[:n] = pos
        full_rad = np.ones(cap)
        full_rad[:n] = rad
        return {"pos": jnp.asarray(full_pos, dtype), "rad": jnp.asarray(full_rad, dtype),
                "active": jnp.asarray(np.arange(cap) < n, dtype)}

    def set_param_tree(self, params):
        """Replace all parameters at once (a dict like ``param_tree``; without an ``active``
        entry, every row of ``pos`` / ``rad`` is a particle)."""
        params = dict(params)
        if "active" in params:
            n = int(round(float(np.sum(np.asarray(params["active"])))))
            if not np.all(np.asarray(params["active"])[:n] == 1):
                raise ValueError("params['active'] must mark the first N rows as particles")
        else:
            n = int(np.asarray(params["pos"]).reshape(-1, 3).shape[0])
        pos = np.asarray(params["pos"]).reshape(-1, 3)[:n]
        rad = np.asarray(params["rad"]).reshape(-1)[:n]
        self._check_particles(pos, rad)
        dtype = self._params["pos"].dtype
        if "active" not in params or np.asarray(params["pos"]).shape[0] != getattr(self, "_capacity", -1):
            params.update(self._with_capacity(pos, rad, dtype))
        self._n = n
        self._params = {k: jnp.asarray(v) for k, v in params.items()}
        if float(np.max(rad, initial=0.0)) > self._covered_radius or \
                float(params["zscale"]) < self._covered_zscale:
            self._rebuild_model()
        self._invalidate()

    def _rebuild_model(self):
        rad = np.asarray(self._params["rad"])[:self._n]
        zscale = float(self._params["zscale"])
        max_rad = float(np.max(rad, initial=1.0))
        # cover radii up to 1.25x today's largest (and zscale down to 0.8x) before recompiling
        half = tile_half_width(max_rad, 0.8 * min(zscale, 1.0), self._support_pad)
        self._covered_radius = 1.25 * max_rad
        self._covered_zscale = 0.8 * min(zscale, 1.0)
        self._image_model = ImageModel(shape=self._shape, pad=tuple(int(p) for p in self.pad),
                                       half=half, **self._settings)

    def _check_particles(self, pos, rad):
        if np.any(~np.isfinite(pos)) or np.any(~np.isfinite(rad)):
            raise ValueError("particle positions and radii must be finite")
        if np.any(rad <= 0):
            bad = np.flatnonzero(rad <= 0)
            raise ValueError(f"particle radii must be > 0 pixels; particle(s) {bad.tolist()[:10]} "
                             f"have radii {rad[bad].tolist()[:10]}")
        lo = -self.pad.astype(float)
        hi = np.asarray(self._shape, float) + self.pad
        out = np.any((pos < lo) | (pos > hi), axis=1) if pos.size else np.zeros(0, bool)
        if out.any():
            i = int(np.flatnonzero(out)[0])
            raise ValueError(f"{int(out.sum())} particle(s) lie outside the padded image "
                             f"(z, y, x within {lo.tolist()} .. {hi.tolist()}); particle {i} "
                             f"is at {pos[i].tolist()}")

    def _invalidate(self):
        self._cache = None
        self._sync_components()

    def _sync_components(self):
        p = self._params
        obj = self.get("obj")
        obj.pos = self.obj_get_positions()
        obj.rad = self.obj_get_radii()
        obj.zscale = float(p["zscale"])
        for cat in ("ilm", "bkg", "psf"):
            c = self.get(cat)
            c._values = [float(v) for v in np.asarray(p[cat]).ravel()]
        self.get("offset")._values = [float(p["offset"])]

    def _model_array(self):
        if self._cache is None:
            self._cache = render(self._image_model, self._params)
        return self._cache

    # ---- peri's state API -----------------------------------------------------------------
    def get(self, name):
        """The component of category ``name`` ('obj', 'ilm', 'bkg', 'offset', 'psf')."""
        for c in self.comps:
            if c.category == name:
                return c
        return None

    @property
    def N(self):
        return self._n

    @property
    def params(self):
        """All parameter names, in peri's order."""
        return N.all_names(self._image_model, self.N)

    @property
    def values(self):
        return self.get_values(self.params)

    @property
    def param_dict(self):
        return dict(zip(self.params, self.values))

    def _refs(self, params):
        return N.resolve_all(self._image_model, self.N, params)

    def get_values(self, params):
        """Values of one name (a float) or a list of names (a list)."""
        refs = self._refs(params)
        vals = np.asarray(N.pack(self._params, refs)).tolist()
        return _delistify(vals, params)

    def set_values(self, params, values):
        """Set values by name (no checks beyond the names; see ``update``)."""
        if isinstance(params, str):
            params, values = [params], [values]
        params, values = list(params), np.atleast_1d(np.asarray(values, float))
        if len(params) != values.size:
            raise ValueError(f"{len(params)} names but {values.size} values")
        refs = self._refs(params)
        new = N.unpack(self._params, refs, jnp.asarray(values, self._params["pos"].dtype))
        self.set_param_tree(new)

    def update(self, params, values):
        """Set parameters by name and re-render (peri's ``state.update``)."""
        self.set_values(params, values)
        return True

    def push_update(self, params, values):
        self._stack = getattr(self, "_stack", []) + [(list(np.atleast_1d(params)), self.get_values(list(np.atleast_1d(params))))]
        self.update(params, values)

    def pop_update(self):
        params, values = self._stack.pop()
        self.update(params, values)

    @property
    def data(self):
        return np.asarray(self._data)

    @property
    def model(self):
        """The model image (unpadded), as NumPy."""
        return np.asarray(self._model_array())

    @property
    def residuals(self):
        """``data - model`` (unpadded)."""
        return np.asarray(self._data - self._model_array())

    @property
    def error(self):
        """Sum of squared residuals."""
        r = self._data - self._model_array()
        return float(jnp.sum(r * r))

    @property
    def loglikelihood(self):
        n = int(np.prod(self._shape))
        return -0.5 * self.error / self.sigma ** 2 - np.log(np.sqrt(2 * np.pi) * self.sigma) * n

    @property
    def logposterior(self):
        return self.loglikelihood

    def update_sigma(self, sigma):
        self.sigma = float(sigma)

    def model_to_data(self, sigma=0.0, key=None):
        """Replace the data by the model plus Gaussian noise of ``sigma`` (``key``: a
        ``jax.random`` key; default key 0)."""
        key = jax.random.PRNGKey(0) if key is None else key
        m = self._model_array()
        self._data = m + sigma * jax.random.normal(key, m.shape, m.dtype)

    def set_image(self, image):
        if not isinstance(image, util.Image):
            image = util.Image(image)
        data = image.get_image()
        if tuple(data.shape) != self._shape:
            raise ValueError(f"new image shape {data.shape} != the state's {self._shape}")
        self.image = image
        self._data = jnp.asarray(data, self._params["pos"].dtype)

    # particles
    def obj_get_positions(self):
        return np.array(self._params["pos"][:self._n], float)

    def obj_get_radii(self):
        return np.array(self._params["rad"][:self._n], float)

    def obj_closest_particle(self, x):
        return int(np.argmin(np.sum((self.obj_get_positions() - np.asarray(x)) ** 2, axis=1)))

    def obj_add_particle(self, pos, rad):
        """Add particles (pos (n, 3) or (3,), rad (n,) or scalar); returns their indices."""
        pos = np.atleast_2d(np.asarray(pos, float))
        rad = np.broadcast_to(np.asarray(rad, float), (pos.shape[0],))
        n0 = self.N
        new = {k: v for k, v in self._params.items() if k != "active"}
        new["pos"] = np.concatenate([self.obj_get_positions(), pos])
        new["rad"] = np.concatenate([self.obj_get_radii(), rad])
        self.set_param_tree(new)
        return np.arange(n0, n0 + pos.shape[0])

    def obj_remove_particle(self, inds):
        """Remove particles by index; returns their (positions, radii)."""
        inds = np.atleast_1d(np.asarray(inds, int))
        pos, rad = self.obj_get_positions(), self.obj_get_radii()
        keep = np.setdiff1d(np.arange(self.N), inds)
        new = {k: v for k, v in self._params.items() if k != "active"}
        new["pos"], new["rad"] = pos[keep], rad[keep]
        self.set_param_tree(new)
        return pos[inds], rad[inds]

    def param_particle(self, ind):
        return [f"sph-{i}-{c}" for i in np.atleast_1d(ind) for c in "zyxa"]

    def param_particle_pos(self, ind):
        return [f"sph-{i}-{c}" for i in np.atleast_1d(ind) for c in "zyx"]

    def param_particle_rad(self, ind):
        return [f"sph-{i}-a" for i in np.atleast_1d(ind)]

    def param_positions(self):
        return self.param_particle_pos(np.arange(self.N))

    def param_radii(self):
        return self.param_particle_rad(np.arange(self.N))

    def globals(self):
        return [p for p in self.params if not p.startswith("sph-")]

    # statistics
    def fisherinformation(self, params=None):
        """``Jᵀ J`` of the model for ``params`` (names; default all), autodiff."""
        params = self.params if params is None else params
        return np.asarray(_fisher(self._image_model, self._params, self._refs(params)))

    def crb(self, params=None):
        """Cramér–Rao bounds of ``params`` (names; default all) for noise ``sigma``."""
        params = self.params if params is None else params
        return np.asarray(_crb(self._image_model, self._params, self._refs(params), self.sigma))

    def __repr__(self):
        return (f"ImageState [shape={self._shape} pad={self.pad.tolist()} N={self.N} "
                f"E={self.error:.6g}]")


def save(state, filename=None, desc="", extra=None):
    """Not supported: jaxinfer does not pickle states (save ``state.param_dict`` instead)."""
    raise NotImplementedError("states.save is not supported; store state.param_dict (e.g. as JSON)")


def load(filename):
    raise NotImplementedError("states.load is not supported")
