"""``Maps``: what :func:`jaxinfer.spt.infer.infer` returns (TRamWAy's ``Maps``)."""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
import pandas as pd

from jaxinfer.spt.modes import space_axes

__all__ = ["Maps", "maps_frame"]


@dataclasses.dataclass
class Maps:
    """Inferred maps.

    Attributes
    ----------
    maps : DataFrame indexed by cell label; columns among ``diffusivity`` (µm²/s),
        ``drift x``, ... (µm/s), ``force x``, ... (kT/µm), ``potential`` (kT), ``density``.
    mode : the mode that produced them.
    result : OptimizeResult (batched over cells for per-cell modes; ``x`` a dict of named
        parameters) or None for closed forms.
    parameters : the settings in effect (sigma2, priors, bounds, options, ...).
    counts : Series indexed like ``maps``: the translocations behind each cell's values.
    """

    maps: pd.DataFrame
    mode: str
    result: Any = None
    parameters: dict = dataclasses.field(default_factory=dict)
    counts: Optional[pd.Series] = None

    @property
    def features(self) -> list:
        out = []
        for c in self.maps.columns:
            base = c.rsplit(" ", 1)[0] if c.endswith((" x", " y", " z")) else c
            if base not in out:
                out.append(base)
        return out

    variables = features

    def __getitem__(self, feature):
        cols = [c for c in self.maps.columns if c == feature or c.startswith(feature + " ")]
        if not cols:
            raise KeyError(f"no feature {feature!r} in maps with columns {list(self.maps.columns)}")
        return self.maps[cols]

    def __contains__(self, feature):
        return feature in self.features

    @property
    def success(self) -> bool:
        """Did the solver(s) pass a convergence test (every cell, for per-cell modes)?"""
        if self.result is None:
            return True
        return bool(np.all(np.asarray(self.result.success)))


def maps_frame(columns: dict, cells, export_centers: bool) -> pd.DataFrame:
    """A maps DataFrame indexed by ``cells.cell_ids`` (centre columns x, y[, z] appended
    when ``export_centers``)."""
    index = np.asarray(cells.cell_ids)
    df = pd.DataFrame(columns, index=index)
    if export_centers:
        c = np.asarray(cells.centers, dtype=float)
        pos = pd.Index(index).get_indexer(df.index)
        for d, name in enumerate(space_axes(cells.dim)):
            df[name] = c[pos, d]
    return df


def counts_of(cells, index) -> pd.Series:
    """Translocations per cell label, aligned on ``index``."""
    s = pd.Series(np.asarray(cells.counts, dtype=np.int64), index=np.asarray(cells.cell_ids),
                  name="translocations")
    return s.reindex(index)
