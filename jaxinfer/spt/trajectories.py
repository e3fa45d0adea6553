"""Trajectory tables: loading, validation and translocations.

This is the edge of :mod:`jaxinfer.spt`: files and DataFrames come in here, are checked, and
leave as clean float64 tables. Everything downstream (tessellation, cells, posteriors) may
assume what this module guarantees:

* columns ``n`` (trajectory id, int64), ``x``, ``y`` [, ``z``] (coordinates, e.g. µm) and
  ``t`` (time, e.g. s), all finite;
* the rows of a trajectory are contiguous and its times strictly increase;
* every trajectory has at least two points (single points give no translocation).

Nothing is dropped silently. Rows or trajectories that are removed are counted in a
:class:`TrajectoryReport`, which is attached to the returned table as
``df.attrs["report"]`` (and returned as a second value with ``return_report=True``), and a
:class:`TrajectoryWarning` is issued whenever something was dropped.

File layout (as TRamWAy's ``load_xyt``): text with one point per row, columns separated by
commas, tabs or spaces. A first line containing letters (other than the ``e``/``E`` of
floating-point exponents) is a header naming the columns. Without a header, 4 columns are
read as ``n, x, y, t`` and 5 as ``n, x, y, z, t``; other counts need ``columns=``.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import warnings
from typing import Optional, Sequence, Union

import numpy as np
import pandas as pd

__all__ = [
    "TrajectoryReport",
    "TrajectoryWarning",
    "load_trajectories",
    "translocations",
    "coordinate_columns",
]

_HEADER_PATTERN = re.compile(r"[a-df-zA-DF-Z_]")
_DEFAULT_COLUMNS = {4: ["n", "x", "y", "t"], 5: ["n", "x", "y", "z", "t"]}


class TrajectoryWarning(UserWarning):
    """Issued when rows or trajectories were dropped while loading (see the report)."""


@dataclasses.dataclass(frozen=True)
class TrajectoryReport:
    """What loading did to the input.

    Attributes
    ----------
    n_rows_read : int
        Data rows in the input (header excluded).
    invalid_rows : tuple of int
        Positions (0-based data rows, in input order) dropped because a required value was
        missing, non-numeric, NaN or infinite (only with ``drop_invalid=True``).
    single_point_trajectories : tuple of int
        Ids of trajectories dropped because they had a single (valid) point.
    n_rows_kept : int
        Rows in the returned table.
    n_translocations : int or None
        Set by :func:`translocations`: rows of the translocation table.
    """

    n_rows_read: int
    invalid_rows: tuple = ()
    single_point_trajectories: tuple = ()
    n_rows_kept: int = 0
    n_translocations: Optional[int] = None

    @property
    def n_invalid_rows_dropped(self) -> int:
        return len(self.invalid_rows)

    @property
    def n_single_point_trajectories_dropped(self) -> int:
        return len(self.single_point_trajectories)

    def summary(self) -> str:
        parts = [f"{self.n_rows_read} rows read, {self.n_rows_kept} kept"]
        if self.invalid_rows:
            parts.append(f"{len(self.invalid_rows)} invalid rows dropped "
                         f"(first: {_preview(self.invalid_rows)})")
        if self.single_point_trajectories:
            parts.append(f"{len(self.single_point_trajectories)} single-point trajectories "
                         f"dropped (ids: {_preview(self.single_point_trajectories)})")
        if self.n_translocations is not None:
            parts.append(f"{self.n_translocations} translocations")
        return "; ".join(parts)


def _preview(items, k: int = 5) -> str:
    items = list(items)
    text = ", ".join(str(i) for i in items[:k])
    return text + (", ..." if len(items) > k else "")


def coordinate_columns(df: pd.DataFrame) -> list:
    """Spatial coordinate columns of a trajectory table: ``['x', 'y']`` or ``['x', 'y', 'z']``."""
    return ["x", "y", "z"] if "z" in df.columns else ["x", "y"]


# --------------------------------------------------------------------------- reading files


def _read_text(path: str, columns: Optional[Sequence[str]], header: Optional[bool],
               sep: Optional[str]) -> pd.DataFrame:
    if not os.path.exists(path):
        raise FileNotFoundError(f"trajectory file not found: {path!r}")
    with open(path, "r") as fd:
        lines = [line for line in fd.read().splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"trajectory file {path!r} is empty: expected rows with columns "
                         f"n, x, y[, z], t")
    first = lines[0]
    custom_sep = sep is not None
    if sep is None:
        sep = "," if "," in first else r"\s+"
    if custom_sep:
        splitter = re.compile(sep).split
    elif sep == ",":
        splitter = lambda line: line.split(",")  # noqa: E731
    else:
        splitter = str.split
    if header is None:
        header = bool(_HEADER_PATTERN.search(first))
    if header:
        names = [c.strip() for c in splitter(first.strip())]
        if columns is not None:
            names = list(columns)
        body = lines[1:]
        if not body:
            raise ValueError(f"trajectory file {path!r} has a header but no data rows")
    else:
        body = lines
    counts = np.fromiter((len(splitter(line.strip())) for line in body), dtype=np.int64,
                         count=len(body))
    if not header:
        if columns is not None:
            names = list(columns)
        else:
            ncols = int(counts[0])
            if ncols not in _DEFAULT_COLUMNS:
                raise ValueError(
                    f"trajectory file {path!r} has no header and {ncols} columns: expected 4 "
                    f"(n, x, y, t) or 5 (n, x, y, z, t); pass columns=[...] to name them")
            names = _DEFAULT_COLUMNS[ncols]
    bad = np.flatnonzero(counts != len(names))
    if bad.size:
        raise ValueError(
            f"trajectory file {path!r}: expected {len(names)} columns ({', '.join(names)}) but "
            f"data rows {_preview(bad.tolist())} have {_preview(counts[bad].tolist())} columns "
            f"(data rows are 0-based, header excluded)")
    # every row has the right field count: let pandas' C parser convert the values
    # (non-numeric fields leave the column as strings, reported by the validation)
    return pd.read_csv(io.StringIO("\n".join(line.strip() for line in body)), sep=sep,
                       header=None, names=names, engine="c" if not custom_sep else "python",
                       keep_default_na=True)


# --------------------------------------------------------------------------- validation


def load_trajectories(
    source: Union[str, os.PathLike, pd.DataFrame],
    columns: Optional[Sequence[str]] = None,
    *,
    header: Optional[bool] = None,
    sep: Optional[str] = None,
    drop_invalid: bool = False,
    sort: bool = False,
    frame_interval: Optional[float] = None,
    return_report: bool = False,
):
    """Load and validate single-particle trajectories.

    Parameters
    ----------
    source : str, path or pandas.DataFrame
        A table with columns ``n, x, y[, z], t`` or a text file (CSV, TSV or whitespace
        separated) with or without a header line (see the module docstring).
    columns : sequence of str, optional
        Names for the file's columns (or renames a DataFrame's columns positionally).
    header : bool, optional
        Force header detection on (True) or off (False); default: auto-detect.
    sep : str, optional
        Column separator regex for files; default: ``,`` if the first line has a comma,
        else whitespace.
    drop_invalid : bool
        If False (default), a missing, non-numeric, NaN or infinite value in a required
        column raises ``ValueError`` naming the column and rows. If True, such rows are
        dropped and counted in the report (a :class:`TrajectoryWarning` is issued).
    sort : bool
        If False (default), the times of each trajectory must strictly increase in input
        order (``ValueError`` naming the trajectory otherwise). If True, points are sorted by
        time within each trajectory first; repeated times in a trajectory still raise.
    frame_interval : float, optional
        Seconds per frame, for trackpy-style tables (columns ``particle``, ``frame``, ``x``,
        ``y`` [, ``z``]): ``n`` = ``particle``, ``t`` = ``frame * frame_interval``. Required
        for such tables (they carry no time), refused for tables that have ``t``.
    return_report : bool
        Also return the :class:`TrajectoryReport`.

    Trajectory ids may be numbers, strings or categories (e.g. ``"traj1"``): non-numeric ids
    are numbered 0, 1, ... in order of first appearance, and the original labels are kept in
    ``df.attrs["trajectory_labels"]`` (label of id k at position k).

    Returns
    -------
    pandas.DataFrame
        Columns ``n`` (int64), ``x``, ``y``[, ``z``], ``t`` (float64), the rows of each
        trajectory contiguous (trajectories in order of first appearance) with increasing
        time, a fresh RangeIndex, and ``attrs["report"]`` set. Extra input columns are
        dropped. Single-point trajectories are dropped (counted in the report, warned).
        With ``return_report=True``: ``(df, report)``.
    """
    if isinstance(source, pd.DataFrame):
        raw = source.copy()
        if columns is not None:
            if len(columns) != raw.shape[1]:
                raise ValueError(f"columns= has {len(columns)} names but the DataFrame has "
                                 f"{raw.shape[1]} columns")
            raw.columns = list(columns)
        raw.columns = [str(c).strip() for c in raw.columns]
        what = "DataFrame"
    elif isinstance(source, (str, os.PathLike)):
        raw = _read_text(os.fspath(source), columns, header, sep)
        what = f"file {os.fspath(source)!r}"
    else:
        raise TypeError(f"source must be a pandas.DataFrame or a path to a text file, got "
                        f"{type(source).__name__}")

    raw = _from_trackpy(raw, what, frame_interval)
    raw, labels = _numbered_ids(raw)
    df, report = _validate(raw, what, drop_invalid=drop_invalid, sort=sort)
    if labels is not None:
        df.attrs["trajectory_labels"] = labels
    return (df, report) if return_report else df


def _from_trackpy(raw: pd.DataFrame, what: str, frame_interval) -> pd.DataFrame:
    """trackpy's ``particle, frame, x, y`` layout -> ``n, x, y, t`` (t = frame * interval)."""
    trackpy = "particle" in raw.columns and "frame" in raw.columns
    if frame_interval is not None:
        try:
            interval = float(frame_interval)
        except (TypeError, ValueError):
            raise TypeError(f"frame_interval must be a number of seconds per frame, got "
                            f"{frame_interval!r}") from None
        if not np.isfinite(interval) or interval <= 0:
            raise ValueError(f"frame_interval must be a finite number of seconds > 0, got "
                             f"{interval}")
        if not trackpy:
            raise ValueError(f"{what}: frame_interval is for trackpy-style tables with columns "
                             f"'particle' and 'frame'; found {list(raw.columns)}")
    if not trackpy or ("n" in raw.columns and "t" in raw.columns and frame_interval is None):
        return raw
    if frame_interval is None:
        raise ValueError(f"{what} is a trackpy-style table (columns 'particle', 'frame') with "
                         f"no time column: pass frame_interval=<seconds per frame> (CLI "
                         f"--frame-interval)")
    frames = pd.to_numeric(raw["frame"], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(frames) | (frames != np.round(frames)))
    if bad.size:
        raise ValueError(f"{what}: column 'frame' must hold integer frame numbers; data rows "
                         f"{_preview(bad.tolist())} hold {_preview(raw['frame'].iloc[bad].tolist())}")
    out = raw.drop(columns=[c for c in ("n", "t") if c in raw.columns])
    out = out.rename(columns={"particle": "n"})
    out["t"] = frames * interval
    return out


def _numbered_ids(raw: pd.DataFrame):
    """Non-numeric trajectory ids (strings, categories) -> 0, 1, ... by first appearance."""
    if "n" not in raw.columns:
        return raw, None
    column = raw["n"]
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return raw, None
    if not isinstance(column.dtype, pd.CategoricalDtype):
        numeric = pd.to_numeric(column, errors="coerce")
        if numeric.notna().all():  # numbers read as text
            return raw, None
    present = column.notna().to_numpy()
    codes, labels = pd.factorize(column.astype(object).where(present, None), sort=False)
    out = raw.copy()
    out["n"] = np.where(codes >= 0, codes, np.nan)  # missing ids stay invalid
    return out, np.asarray(labels, dtype=object)


def _validate(raw: pd.DataFrame, what: str, *, drop_invalid: bool, sort: bool):
    if raw.shape[0] == 0:
        raise ValueError(f"{what} has no rows: expected points with columns n, x, y[, z], t")
    missing = [c for c in ("n", "x", "y", "t") if c not in raw.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}: expected n, x, y[, z], t; "
                         f"found {list(raw.columns)}")
    if raw.columns.duplicated().any():
        raise ValueError(f"{what} has duplicated column names: {list(raw.columns)}")
    cols = ["n"] + (["x", "y", "z"] if "z" in raw.columns else ["x", "y"]) + ["t"]
    n_read = int(raw.shape[0])

    values = {}
    invalid = np.zeros(n_read, dtype=bool)
    problems = []
    for c in cols:
        column = raw[c]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            numeric = column.to_numpy(dtype=np.float64)
            non_numeric = np.zeros(n_read, dtype=bool)
        else:
            numeric = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64)
            present = column.notna().to_numpy() & ~column.astype(str).str.strip().isin(
                ["", "nan", "NaN", "NA", "None"]).to_numpy()
            non_numeric = present & np.isnan(numeric)
        nonfinite = ~np.isfinite(numeric) & ~non_numeric
        for label, mask in (("non-numeric", non_numeric), ("NaN/missing or infinite", nonfinite)):
            if mask.any():
                rows = np.flatnonzero(mask)
                problems.append(f"column {c!r} has {label} values in {rows.size} data row(s) "
                                f"(0-based: {_preview(rows.tolist())})")
        invalid |= non_numeric | nonfinite
        values[c] = numeric
    if problems and not drop_invalid:
        raise ValueError(f"{what}: " + "; ".join(problems)
                         + ". Fix the data or pass drop_invalid=True to drop these rows.")

    n = values["n"]
    fractional = np.isfinite(n) & (n != np.round(n))
    if fractional.any():
        rows = np.flatnonzero(fractional)
        raise ValueError(f"{what}: trajectory ids in column 'n' must be integers; data rows "
                         f"{_preview(rows.tolist())} hold {_preview(n[rows].tolist())}")

    keep = ~invalid
    positions = np.flatnonzero(keep)
    df = pd.DataFrame({c: values[c][keep] for c in cols})
    if df.shape[0] == 0:
        raise ValueError(f"{what}: no valid rows left after dropping {int(invalid.sum())} "
                         f"invalid rows")
    df["n"] = df["n"].astype(np.int64)

    # group the rows of each trajectory (stable: keeps input order inside a trajectory)
    first_seen = pd.unique(df["n"].to_numpy())
    rank = pd.Series(np.arange(first_seen.size), index=first_seen)
    order_key = rank.loc[df["n"].to_numpy()].to_numpy()
    if sort:
        order = np.lexsort((df["t"].to_numpy(), order_key))
    else:
        order = np.argsort(order_key, kind="stable")
    df = df.iloc[order].reset_index(drop=True)
    positions = positions[order]

    nn = df["n"].to_numpy()
    tt = df["t"].to_numpy()
    same = nn[1:] == nn[:-1]
    dt = np.diff(tt)
    bad = same & (dt <= 0)
    if bad.any():
        idx = np.flatnonzero(bad)
        trajectories = pd.unique(nn[idx + 1])
        k = idx[0]
        kind = "repeated" if dt[k] == 0 else "decreasing"
        raise ValueError(
            f"{what}: time must strictly increase within a trajectory; trajectory id(s) "
            f"{_preview(trajectories.tolist())} violate this (first: trajectory {nn[k + 1]}, "
            f"{kind} time {tt[k]!r} -> {tt[k + 1]!r} at data rows {positions[k]} and "
            f"{positions[k + 1]})" + ("" if kind == "repeated" else
                                      "; pass sort=True to sort points by time"))

    sizes = df.groupby("n", sort=False)["n"].transform("size").to_numpy()
    single = sizes == 1
    single_ids = tuple(int(i) for i in nn[single])
    if single.any():
        df = df.loc[~single].reset_index(drop=True)
    if df.shape[0] == 0:
        raise ValueError(f"{what}: every trajectory has a single point; no translocation "
                         f"can be formed")

    report = TrajectoryReport(
        n_rows_read=n_read,
        invalid_rows=tuple(int(i) for i in np.flatnonzero(invalid)),
        single_point_trajectories=single_ids,
        n_rows_kept=int(df.shape[0]),
    )
    if report.invalid_rows or report.single_point_trajectories:
        warnings.warn(f"{what}: {report.summary()}", TrajectoryWarning, stacklevel=3)
    df.attrs["report"] = report
    return df, report


# --------------------------------------------------------------------------- translocations


def translocations(df: pd.DataFrame, *, return_report: bool = False):
    """One row per translocation between consecutive points of a trajectory.

    Parameters
    ----------
    df : pandas.DataFrame
        Trajectories with columns ``n, x, y[, z], t`` (validated with
        :func:`load_trajectories` first if not already: invalid values raise, single-point
        trajectories are dropped with a warning).
    return_report : bool
        Also return the :class:`TrajectoryReport` (with ``n_translocations`` set).

    Returns
    -------
    pandas.DataFrame
        Columns ``n``, ``x``, ``y``[, ``z``], ``t`` (the ORIGIN point of the translocation),
        ``dx``, ``dy``[, ``dz``] (displacement, same units as x) and ``dt`` (> 0, time
        units). ``attrs["report"]`` holds the report.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"translocations expects a pandas.DataFrame, got {type(df).__name__}")
    clean, report = _validate(df, "DataFrame", drop_invalid=False, sort=False)
    xyz = coordinate_columns(clean)
    nn = clean["n"].to_numpy()
    pair = nn[1:] == nn[:-1]
    origin = clean.iloc[:-1][pair]
    destination = clean.iloc[1:][pair]
    out = origin[["n"] + xyz + ["t"]].reset_index(drop=True)
    for c in xyz + ["t"]:
        out["d" + c] = destination[c].to_numpy() - origin[c].to_numpy()
    report = dataclasses.replace(report, n_translocations=int(out.shape[0]))
    out.attrs["report"] = report
    return (out, report) if return_report else out
