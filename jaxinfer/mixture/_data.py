"""Patient tables in lymph's LyProX / lyDATA layout -> arrays.

The table has a three-level column header ``(modality, side, lnl)`` holding True / False /
NaN, plus ``("patient", "#", ...)`` and ``("tumor", "1", ...)`` columns; the T-stage is in
``("tumor", "1", "t_stage")``. Every top-level header other than ``patient``, ``tumor`` and
the model's own ``_model`` / ``_mixture`` is a modality.

Sublevels: lyDATA files report sublevels (``Ia``, ``Ib``) where a graph names the level
(``I``), often with the level column empty. lymph-model 1.3.3 then treats the level as unknown
for every patient. Here an empty level entry is filled from its sublevels as the lydata
package does: involved if any sublevel is involved, healthy if all sublevels are healthy,
unknown otherwise; a :class:`DataWarning` says how many entries were filled.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Callable, Mapping, Optional

import numpy as np
import pandas as pd

T_STAGE_COL = ("tumor", "1", "t_stage")
NON_MODALITY = ("patient", "tumor", "_model", "_mixture")


class DataWarning(UserWarning):
    """Something about the patient data the user should know (filled or unusable entries)."""


def early_late_mapping(t_stage) -> Optional[str]:
    """lymph's default mapping: T0-T2 -> ``'early'``, T3-T4 -> ``'late'``; labels that are not
    numbers are kept as they are; a missing or out-of-range T-stage maps to None."""
    if t_stage is None or (isinstance(t_stage, float) and np.isnan(t_stage)):
        return None
    try:
        value = int(t_stage)
    except (TypeError, ValueError):
        return str(t_stage)
    if 0 <= value <= 2:
        return "early"
    if 3 <= value <= 4:
        return "late"
    return None


def check_table(patient_data) -> None:
    if not isinstance(patient_data, pd.DataFrame):
        raise TypeError(f"patient data must be a pandas DataFrame, got {type(patient_data).__name__}")
    if not isinstance(patient_data.columns, pd.MultiIndex) or patient_data.columns.nlevels != 3:
        raise ValueError("patient data must have a three-level column header (modality, side, "
                         "lnl), as in LyProX / lyDATA files: read them with "
                         "pd.read_csv(path, header=[0, 1, 2])")
    if T_STAGE_COL not in patient_data.columns:
        raise ValueError(f"patient data has no T-stage column {T_STAGE_COL}")


def data_modalities(patient_data: pd.DataFrame) -> list:
    """Top-level headers that are modalities, in column order."""
    seen = []
    for top in patient_data.columns.get_level_values(0):
        if top not in NON_MODALITY and top not in seen:
            seen.append(top)
    return seen


def _sublevels(columns, lnl: str) -> list:
    pattern = re.compile(rf"^{re.escape(lnl)}[a-z]$")
    return [c for c in columns if isinstance(c, str) and pattern.match(c)]


def _as_involvement(column: pd.Series) -> np.ndarray:
    """True / False / NaN (also 1 / 0, 'True' / 'False') -> float array 1 / 0 / NaN."""
    def convert(v):
        if v is None or (isinstance(v, float) and np.isnan(v)):
            return np.nan
        if isinstance(v, str):
            low = v.strip().lower()
            if low in ("true", "1", "1.0"):
                return 1.0
            if low in ("false", "0", "0.0"):
                return 0.0
            if low in ("", "nan", "none"):
                return np.nan
            raise ValueError(f"involvement entry {v!r} in column {column.name} is not "
                             "True / False / empty")
        if isinstance(v, (bool, np.bool_, int, np.integer, float, np.floating)):
            if float(v) not in (0.0, 1.0):
                raise ValueError(f"involvement entry {v!r} in column {column.name} is not "
                                 "True / False / empty")
            return float(v)
        raise ValueError(f"involvement entry {v!r} in column {column.name} is not True / False")
    return np.array([convert(v) for v in column.to_numpy(dtype=object)], dtype=float)


def involvement(patient_data: pd.DataFrame, modality: str, side: str, lnls) -> tuple:
    """``(P, N)`` float 1 / 0 / NaN for one modality and side, and the number of entries filled
    from sublevels. A level absent from the table (no column, no sublevels) is all unknown."""
    if (modality, side) not in patient_data.columns.droplevel(2):
        sides = sorted({s for m, s, _ in patient_data.columns if m == modality})
        raise ValueError(f"modality {modality!r} has no side {side!r} in the data (sides "
                         f"found: {sides})")
    block = patient_data[modality][side]
    out = np.full((len(patient_data), len(lnls)), np.nan)
    filled = 0
    for j, lnl in enumerate(lnls):
        level = _as_involvement(block[lnl]) if lnl in block.columns else out[:, j]
        subs = _sublevels(block.columns, lnl)
        if subs:
            sub = np.stack([_as_involvement(block[s]) for s in subs], axis=1)
            any_true = np.any(sub == 1.0, axis=1)
            all_false = np.all(sub == 0.0, axis=1)
            combined = np.where(any_true, 1.0, np.where(all_false, 0.0, np.nan))
            fill = np.isnan(level) & ~np.isnan(combined)
            filled += int(fill.sum())
            level = np.where(fill, combined, level)
        out[:, j] = level
    return out, filled


def findings_array(patient_data: pd.DataFrame, modalities, side: str, lnls) -> np.ndarray:
    """``(P, M, N)`` int8 findings (1 involved, 0 healthy, -1 missing) for ``modalities``.

    Raises if a modality is not in the data; warns once with the number of entries filled
    from sublevels.
    """
    available = data_modalities(patient_data)
    missing = [m for m in modalities if m not in available]
    if missing:
        raise ValueError(f"modality(ies) {missing} set on the model are not in the patient data "
                         f"(modalities found: {available})")
    arrays, total = [], 0
    for m in modalities:
        arr, filled = involvement(patient_data, m, side, lnls)
        arrays.append(arr)
        total += filled
    if total:
        warnings.warn(f"{total} empty level entries were filled from their sublevels (e.g. I "
                      "from Ia / Ib: involved if any sublevel is, healthy if all are)",
                      DataWarning, stacklevel=3)
    stacked = np.stack(arrays, axis=1) if arrays else np.zeros((len(patient_data), 0, len(lnls)))
    return np.where(np.isnan(stacked), -1, stacked).astype(np.int8)


def map_t_stages(patient_data: pd.DataFrame, mapping: Optional[Callable | Mapping]) -> np.ndarray:
    """Object array of T-stage labels (None where the T-stage is missing or unmapped)."""
    if mapping is None:
        mapping = early_late_mapping
    raw = patient_data[T_STAGE_COL].to_numpy(dtype=object)
    if isinstance(mapping, Mapping):
        return np.array([mapping.get(v, None) for v in raw], dtype=object)
    if not callable(mapping):
        raise TypeError("mapping must be a dict or a callable from the reported T-stage to a label")
    return np.array([mapping(v) for v in raw], dtype=object)


def t_stage_index(labels: np.ndarray, t_stages) -> np.ndarray:
    """``(P,)`` int32 index of each label in ``t_stages``; -1 where it has no time prior."""
    position = {t: i for i, t in enumerate(t_stages)}
    return np.array([position.get(v, -1) for v in labels], dtype=np.int32)


def unusable_message(labels: np.ndarray, t_stages) -> Optional[str]:
    """A sentence counting patients whose T-stage has no time prior (None if all usable)."""
    bad = [v for v in labels if v not in set(t_stages)]
    if not bad:
        return None
    counts = pd.Series([str(v) for v in bad]).value_counts().to_dict()
    return (f"{len(bad)} of {len(labels)} patients have a T-stage without a time prior and are "
            f"left out of the likelihood: {counts} (time priors set for {list(t_stages)})")


def check_involvement_pattern(pattern: Any, lnls) -> None:
    if pattern is not None and isinstance(pattern, Mapping):
        unknown = [k for k in pattern if k not in lnls]
        if unknown:
            raise ValueError(f"LNL(s) {unknown} are not in the graph (LNLs: {list(lnls)})")


__all__ = ["T_STAGE_COL", "DataWarning", "early_late_mapping", "check_table",
           "data_modalities", "involvement", "findings_array", "map_t_stages",
           "t_stage_index", "unusable_message"]
