"""peri's parameter names ('sph-3-x', 'ilm-xy-1-0', 'psf-sigz', 'bkg', 'offset', 'zscale')
and where each lives in the parameter dict of :mod:`jaxinfer.imaging.model`.

A *reference* is ``(key, index)``: ``params[key][index]`` is the value. ``pack`` / ``unpack``
move a tuple of references to and from a flat vector inside ``jit``.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
import numpy as np

__all__ = ["all_names", "resolve", "pack", "unpack", "particle_refs", "GLOBAL_KEYS"]

GLOBAL_KEYS = ("zscale", "ilm", "bkg", "offset", "psf")
_SPHERE = re.compile(r"^sph-(\d+)-([zyxa])$")


def all_names(model, n_particles: int):
    """Every parameter name in peri's order: particles (z, y, x, a each), zscale, ilm, bkg,
    offset, psf."""
    names = model.param_names(n_particles)
    out = []
    for i in range(n_particles):
        out += names["pos"][i] + [names["rad"][i]]
    out.append("zscale")
    out += names["ilm"] + names["bkg"] + ["offset"] + names["psf"]
    return out


def resolve(model, n_particles: int, name: str):
    """The reference ``(key, index)`` of one peri parameter name; KeyError names the expected
    forms when it is unknown."""
    m = _SPHERE.match(name)
    if m:
        i, c = int(m.group(1)), m.group(2)
        if i >= n_particles:
            raise KeyError(f"parameter {name!r}: particle {i} does not exist "
                           f"(the state has {n_particles} particles, 'sph-0-*' ... "
                           f"'sph-{n_particles - 1}-*')")
        return ("rad", (i,)) if c == "a" else ("pos", (i, "zyx".index(c)))
    if name in ("zscale", "offset"):
        return (name, ())
    names = model.param_names(n_particles)
    for key in ("ilm", "bkg", "psf"):
        if name in names[key]:
            return (key, (names[key].index(name),))
    raise KeyError(f"unknown parameter name {name!r}; expected 'sph-<i>-<z|y|x|a>', 'zscale', "
                   f"'offset', one of {names['psf']}, the illumination's {names['ilm'][:4]}..., "
                   f"or the background's {names['bkg'][:4]}")


def resolve_all(model, n_particles, names):
    if isinstance(names, str):
        names = [names]
    return tuple(resolve(model, n_particles, n) for n in names)


def particle_refs(indices, include_rad=True):
    refs = []
    for i in indices:
        refs += [("pos", (int(i), c)) for c in range(3)]
        if include_rad:
            refs.append(("rad", (int(i),)))
    return tuple(refs)


def _grouped(refs):
    by_key = {}
    for slot, (key, index) in enumerate(refs):
        by_key.setdefault(key, []).append((slot, index))
    return by_key


def pack(params, refs):
    """Flat vector of ``params[key][index]`` for each reference (traceable)."""
    if not refs:
        return jnp.zeros(0, params["offset"].dtype)
    out = [None] * len(refs)
    for key, items in _grouped(refs).items():
        arr = params[key]
        if arr.ndim == 0:
            vals = jnp.broadcast_to(arr, (len(items),))
        else:
            idx = tuple(np.array([it[1][d] for it in items]) for d in range(arr.ndim))
            vals = arr[idx]
        for j, (slot, _) in enumerate(items):
            out[slot] = vals[j]
    return jnp.stack(out)


def unpack(params, refs, x):
    """A new params dict with ``params[key][index] = x[slot]`` for each reference."""
    new = dict(params)
    for key, items in _grouped(refs).items():
        slots = np.array([it[0] for it in items])
        arr = params[key]
        if arr.ndim == 0:
            new[key] = x[slots[-1]].astype(arr.dtype)
        else:
            idx = tuple(np.array([it[1][d] for it in items]) for d in range(arr.ndim))
            new[key] = arr.at[idx].set(x[slots].astype(arr.dtype))
    return new
