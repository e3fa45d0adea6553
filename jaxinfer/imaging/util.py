"""peri's image containers (``peri.util.Image`` / ``RawImage`` / ``NullImage`` / ``Tile``).

Images are validated at the edge: 2-D (y, x) images become one-slice volumes (1, y, x); any
other rank, and non-finite pixels, are refused with an error naming the problem.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["Tile", "Image", "RawImage", "NullImage", "load_image_file", "as_volume"]


def as_volume(image, what="image"):
    """Validate an image array: float64 (z, y, x); 2-D images get a z axis of length 1."""
    arr = np.asarray(image)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{what} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise ValueError(f"{what} must be 2-D (y, x) or 3-D (z, y, x); got a {arr.ndim}-D array "
                         f"of shape {arr.shape} (a movie or stack of frames: pass one frame, or "
                         "use jaxinfer.imaging.fit_frames)")
    if min(arr.shape) == 0:
        raise ValueError(f"{what} is empty: shape {arr.shape}")
    arr = arr.astype(np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{what} has {int(bad.sum())} non-finite pixel(s) (NaN or inf), the "
                         f"first at (z, y, x) = {first}; replace or crop them first")
    return arr


class Tile:
    """A box ``[left, right)`` of voxels (z, y, x); ``slicer`` indexes an array with it."""

    def __init__(self, left, right=None):
        left = np.atleast_1d(np.asarray(left, int))
        if right is None:
            left, right = np.zeros_like(left), left
        self.l = np.broadcast_to(left, (3,)).copy()
        self.r = np.broadcast_to(np.atleast_1d(np.asarray(right, int)), (3,)).copy()

    @property
    def shape(self):
        return self.r - self.l

    @property
    def slicer(self):
        return tuple(slice(int(a), int(b)) for a, b in zip(self.l, self.r))

    def __repr__(self):
        return f"Tile({self.l.tolist()}, {self.r.tolist()})"


def load_image_file(filename):
    """An array from ``.npy`` or a TIFF stack (``.tif`` / ``.tiff``, through tifffile)."""
    ext = os.path.splitext(str(filename))[1].lower()
    if ext == ".npy":
        return np.load(filename)
    if ext in (".tif", ".tiff"):
        try:
            import tifffile
        except ImportError as err:  # pragma: no cover - depends on the install
            raise ImportError("reading TIFF needs tifffile: pip install 'jaxinfer[imaging]'") from err
        return tifffile.imread(filename)
    raise ValueError(f"unsupported image file {filename!r}: expected .npy, .tif or .tiff")


class Image:
    """An image held in memory; ``tile`` (a :class:`Tile` or tuple of slices) selects a part."""

    def __init__(self, image, tile=None, filters=None):
        if filters:
            raise NotImplementedError("Fourier filters of peri's Image are not supported")
        self.image = as_volume(image)
        self.tile = tile if tile is not None else Tile(self.image.shape)
        self.filters = []

    def get_image(self):
        slicer = self.tile.slicer if isinstance(self.tile, Tile) else tuple(self.tile)
        return as_volume(self.image[slicer])

    def get_padded_image(self, pad, padval=0):
        pad = np.broadcast_to(np.asarray(pad, int), (3,))
        return np.pad(self.get_image(), [(p, p) for p in pad], mode="constant",
                      constant_values=padval)

    def __repr__(self):
        return f"{type(self).__name__} <{self.get_image().shape}>"


class RawImage(Image):
    """An image read from disk (.npy or TIFF) and scaled as peri does:
    ``(raw - lo) / (hi - lo)`` with ``exposure = (lo, hi)`` (default (0, 255)); ``invert``
    flips it about its mid-range."""

    def __init__(self, filename, tile=None, invert=False, exposure=None,
                 float_precision=np.float64):
        self.filename = str(filename)
        self.invert = invert
        self.exposure = exposure
        self.float_precision = float_precision
        super().__init__(self.load_image(), tile=tile)

    def load_image(self):
        raw = as_volume(load_image_file(self.filename), what=f"image file {self.filename!r}")
        lo, hi = (float(v) for v in (self.exposure or (0.0, 255.0)))
        if hi == lo:
            raise ValueError(f"exposure must have max > min, got {(lo, hi)}")
        out = (raw - lo) / (hi - lo)
        if self.invert:
            out = -out + (out.max() + out.min())
        return out.astype(self.float_precision)

    def get_scale(self):
        raw = as_volume(load_image_file(self.filename))
        return float(raw.min()), float(raw.max())

    def set_scale(self, exposure):
        self.exposure = exposure
        self.image = as_volume(self.load_image())


class NullImage(Image):
    """A stand-in image (zeros of ``shape``, or ``image``): the state then treats its own
    model as the data (peri's ``model_as_data``)."""

    def __init__(self, image=None, shape=None):
        if image is not None:
            super().__init__(image)
        elif shape is not None:
            super().__init__(np.zeros(shape))
        else:
            raise ValueError("NullImage needs image= or shape=")
        self.shape = self.image.shape
