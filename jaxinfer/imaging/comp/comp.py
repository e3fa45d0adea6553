"""Component base and ``GlobalScalar`` (peri's ``comp.comp``).

Components only describe a part of the model and hold its starting values; the
``ImageState`` owns the values once it is built and writes them back after every update."""

from __future__ import annotations

__all__ = ["Component", "GlobalScalar"]


class Component:
    """A named set of parameters of one model category ('obj', 'ilm', 'bkg', 'offset', 'psf')."""

    category = None

    def __init__(self, params, values, category=None):
        if len(params) != len(values):
            raise ValueError(f"{len(params)} parameter names but {len(values)} values")
        self._params = list(params)
        self._values = [float(v) for v in values]
        if category is not None:
            self.category = category

    @property
    def params(self):
        return list(self._params)

    @property
    def values(self):
        return list(self._values)

    @property
    def param_dict(self):
        return dict(zip(self._params, self._values))

    def get_values(self, params):
        d = self.param_dict
        if isinstance(params, str):
            return d[params]
        return [d[p] for p in params]

    def set_values(self, params, values):
        if isinstance(params, str):
            params, values = [params], [values]
        for p, v in zip(params, values):
            if p not in self._params:
                raise KeyError(f"{type(self).__name__} has no parameter {p!r}; it has {self._params}")
            self._values[self._params.index(p)] = float(v)

    def __repr__(self):
        return f"{type(self).__name__} {self.param_dict}"


class GlobalScalar(Component):
    """One scalar parameter ``name`` (e.g. 'bkg' or 'offset'), its own category."""

    def __init__(self, name, value, shape=None):
        super().__init__([name], [value], category=name)
        self.name = name

    def get(self):
        return self._values[0]
