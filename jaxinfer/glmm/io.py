"""Files in, arrays out: phenotypes, covariates, kinship, candidates and genotypes for ``glmm``.

Formats
-------
* **Phenotype CSV**: one numeric column, or several with ``column=`` naming the trait. A first
  column holding text (or the column named by ``id_column``) is read as sample ids. A file of
  bare numbers without a header is accepted too.
* **Covariates CSV**: numeric columns (sample ids as for the phenotype). An intercept column of
  ones is **added unless a constant non-zero column is already present**; the result says which
  (:attr:`CovariateData.intercept_added`). When both files carry sample ids, covariate rows are
  matched to the phenotype's ids (same set required, any order).
* **Kinship**: ``.npy`` (or CSV) ``n × n`` matrix, finite, symmetric and positive semi-definite.
* **Candidates**: ``.npy`` (or CSV) ``n × m`` matrix, one column per candidate (a vector is one
  candidate).
* **Genotypes** (for a GRM): ``.npy`` or CSV ``n × p`` matrix; the GRM is
  ``K = Z Zᵀ / p`` of the standardised columns (see
  :func:`jaxinfer.glmm.simulate.genetic_relatedness_matrix`).

Every reader refuses bad input with a :class:`ValueError` naming the file, what is wrong and
what was expected: mismatched numbers of samples, non-finite values, non-square, asymmetric or
indefinite kinship matrices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from jaxinfer.glmm.simulate import genetic_relatedness_matrix

__all__ = [
    "PhenotypeData",
    "CovariateData",
    "ScanInputs",
    "read_phenotype",
    "read_covariates",
    "read_matrix",
    "read_kinship",
    "read_candidates",
    "grm_from_genotypes",
    "check_kinship",
    "load_scan_inputs",
]

_ID_NAMES = {"id", "ids", "sample", "samples", "sample_id", "sample_ids", "iid", "fid", "individual"}


@dataclass
class PhenotypeData:
    """A trait read from a file.

    Attributes:
        values: ``(n,)`` float64 trait values.
        name: column name.
        ids: ``(n,)`` sample ids as strings, or ``None`` when the file had none.
    """

    values: np.ndarray
    name: str
    ids: np.ndarray | None = None


@dataclass
class CovariateData:
    """Covariates read from a file.

    Attributes:
        values: ``(n, c)`` float64 design matrix (the intercept, if added, is the first column).
        names: column names (``"intercept"`` for the added column).
        intercept_added: whether a column of ones was added.
        ids: sample ids as strings, or ``None``.
    """

    values: np.ndarray
    names: list[str]
    intercept_added: bool
    ids: np.ndarray | None = None


@dataclass
class ScanInputs:
    """Everything an association scan needs, checked for consistency (n samples throughout).

    Attributes:
        y: ``(n,)`` phenotype.
        covariates: ``(n, c)`` design matrix.
        kinship: ``(n, n)`` kinship / GRM.
        candidates: ``(n, m)`` candidate matrix.
        notes: human-readable remarks about what was done (intercept added, rows reordered...).
    """

    y: np.ndarray
    covariates: np.ndarray
    kinship: np.ndarray
    candidates: np.ndarray
    notes: list[str]
    phenotype_name: str = "y"
    covariate_names: tuple[str, ...] = ()


def _label(path) -> str:
    return os.fspath(path)


def _looks_numeric(text) -> bool:
    try:
        float(str(text))
    except ValueError:
        return False
    return True


def _read_table(path, id_column=None) -> tuple[pd.DataFrame, np.ndarray | None]:
    """Read a CSV into a numeric DataFrame plus optional ids. Headerless files get 0..k names."""
    label = _label(path)
    if not os.path.exists(path):
        raise ValueError(f"{label}: file not found")
    try:
        frame = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{label}: the file is empty; expected a CSV table") from None
    if len(frame.columns) and all(_looks_numeric(c) for c in frame.columns):
        frame = pd.read_csv(path, header=None)  # bare numbers, no header line
        frame.columns = [str(c) for c in frame.columns]
    if frame.shape[0] == 0:
        raise ValueError(f"{label}: no data rows")
    ids = None
    if id_column is not None:
        if id_column not in frame.columns:
            raise ValueError(f"{label}: no id column {id_column!r}; columns are {list(frame.columns)}")
        ids = frame.pop(id_column)
    else:
        first = frame.columns[0]
        looks_like_ids = not pd.api.types.is_numeric_dtype(frame[first]) or str(first).strip().lower() in _ID_NAMES
        if frame.shape[1] > 1 and looks_like_ids:
            ids = frame.pop(first)
    if ids is not None:
        ids = ids.astype(str).to_numpy()
        dup = pd.Series(ids).duplicated()
        if dup.any():
            raise ValueError(f"{label}: duplicated sample ids, e.g. {ids[dup.to_numpy()][0]!r}")
    for name in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[name]):
            bad = frame[name][pd.to_numeric(frame[name], errors="coerce").isna()].iloc[0]
            raise ValueError(f"{label}: column {name!r} is not numeric (e.g. value {bad!r})")
    return frame, ids


def _check_finite(values: np.ndarray, label: str, what: str) -> None:
    finite = np.isfinite(values)
    if not finite.all():
        rows = np.unique(np.nonzero(~finite)[0])
        raise ValueError(
            f"{label}: {what} has {int((~finite).sum())} non-finite value(s) (NaN/inf/empty) "
            f"in row(s) {rows[:5].tolist()}{'...' if rows.size > 5 else ''}; all values must be finite "
            "(remove or impute those samples)"
        )


def read_phenotype(path, column: str | None = None, *, id_column: str | None = None) -> PhenotypeData:
    """Read a trait from a CSV file.

    Args:
        path: CSV file.
        column: name of the trait column; needed only when there are several numeric columns.
        id_column: name of a sample-id column; by default a first, non-numeric column (or one
            named like ``id``/``sample``) is taken as ids.

    Returns:
        :class:`PhenotypeData` with ``(n,)`` float64 values.
    """
    label = _label(path)
    frame, ids = _read_table(path, id_column)
    if column is not None:
        if column not in frame.columns:
            raise ValueError(f"{label}: no column {column!r}; numeric columns are {list(frame.columns)}")
        name = column
    elif frame.shape[1] == 1:
        name = frame.columns[0]
    else:
        raise ValueError(
            f"{label}: {frame.shape[1]} numeric columns {list(frame.columns)}; expected one, or "
            "name the trait with column= (CLI: --pheno-column)"
        )
    values = frame[name].to_numpy(dtype=np.float64)
    _check_finite(values[:, None], label, f"phenotype column {name!r}")
    if values.size < 2:
        raise ValueError(f"{label}: expected at least 2 samples, got {values.size}")
    return PhenotypeData(values, str(name), ids)


def read_covariates(path, *, id_column: str | None = None, intercept: bool = True) -> CovariateData:
    """Read covariates from a CSV file, adding an intercept unless one is present.

    Args:
        path: CSV file of numeric columns (plus optional sample ids).
        id_column: sample-id column (default: a first non-numeric column, as for phenotypes).
        intercept: add a leading column of ones unless a constant non-zero column exists.

    Returns:
        :class:`CovariateData`; ``intercept_added`` tells whether a column was added.
    """
    label = _label(path)
    frame, ids = _read_table(path, id_column)
    values = frame.to_numpy(dtype=np.float64)
    names = [str(c) for c in frame.columns]
    _check_finite(values, label, "covariates")
    added = False
    if intercept:
        constant = (np.ptp(values, axis=0) == 0) & (values[0] != 0) if values.shape[1] else np.zeros(0, bool)
        if not constant.any():
            values = np.column_stack([np.ones(values.shape[0]), values])
            names = ["intercept"] + names
            added = True
    if values.shape[1] and np.linalg.matrix_rank(values) < values.shape[1]:
        raise ValueError(
            f"{label}: covariate columns {names} are linearly dependent (rank "
            f"{np.linalg.matrix_rank(values)} < {values.shape[1]}); drop the redundant ones"
        )
    return CovariateData(values, names, added, ids)


def read_matrix(path, what: str = "matrix") -> np.ndarray:
    """Read a numeric matrix from ``.npy`` or CSV (header optional) as float64.

    A 1-D array is returned as is; anything else but 2-D is refused.
    """
    label = _label(path)
    if not os.path.exists(path):
        raise ValueError(f"{label}: file not found")
    if str(path).endswith(".npy"):
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"{label}: could not read {what} as a .npy array ({err})") from None
    else:
        frame, _ = _read_table(path)
        array = frame.to_numpy()
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{label}: {what} must be numeric, got dtype {array.dtype}")
    array = np.asarray(array, dtype=np.float64)
    if array.ndim not in (1, 2):
        raise ValueError(f"{label}: {what} must be 1-D or 2-D, got shape {array.shape}")
    _check_finite(array.reshape(array.shape[0], -1), label, what)
    return array


def check_kinship(kinship, label: str = "kinship") -> np.ndarray:
    """Refuse a kinship matrix that is not square, symmetric, finite and positive semi-definite.

    Symmetry is checked to ``1e-8·max|K|``; positive semi-definiteness by a Cholesky
    factorisation of ``K + 1e-8·max(mean diag K, 1)·I`` (an eigenvalue-level tolerance), and on
    failure the smallest eigenvalue is reported.

    Returns:
        ``(n, n)`` float64, exactly symmetrised.
    """
    k = np.asarray(kinship, dtype=np.float64)
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"{label}: kinship must be a square n×n matrix, got shape {k.shape}")
    _check_finite(k, label, "kinship")
    scale = max(float(np.abs(k).max()), 1e-300)
    asym = float(np.abs(k - k.T).max())
    if asym > 1e-8 * scale:
        raise ValueError(f"{label}: kinship must be symmetric; max |K - Kᵀ| = {asym:.3g}")
    k = (k + k.T) / 2.0
    jitter = 1e-8 * max(float(np.mean(np.diag(k))), 1.0)
    try:
        np.linalg.cholesky(k + jitter * np.eye(k.shape[0]))
    except np.linalg.LinAlgError:
        smallest = float(np.linalg.eigvalsh(k)[0])
        raise ValueError(
            f"{label}: kinship must be positive semi-definite; its smallest eigenvalue is "
            f"{smallest:.3g}"
        ) from None
    return k


def read_kinship(path) -> np.ndarray:
    """Read and check an ``n × n`` kinship matrix (``.npy`` or CSV); see :func:`check_kinship`."""
    return check_kinship(read_matrix(path, "kinship"), _label(path))


def read_candidates(path) -> np.ndarray:
    """Read an ``n × m`` candidate matrix (one column per candidate); a vector is one column."""
    array = read_matrix(path, "candidates")
    return array[:, None] if array.ndim == 1 else array


def grm_from_genotypes(path_or_array) -> np.ndarray:
    """GRM ``K = Z Zᵀ / p`` from an ``n × p`` genotype matrix (file or array).

    Columns are standardised with their in-sample allele frequencies; monomorphic columns
    contribute nothing (but still count in ``p``).
    """
    if isinstance(path_or_array, (str, os.PathLike)):
        g = read_matrix(path_or_array, "genotypes")
        label = _label(path_or_array)
    else:
        g = np.asarray(path_or_array, dtype=np.float64)
        label = "genotypes"
        _check_finite(g.reshape(g.shape[0], -1) if g.ndim else g.reshape(1, 1), label, "genotypes")
    if g.ndim != 2:
        raise ValueError(f"{label}: genotypes must be an n×p matrix, got shape {g.shape}")
    return genetic_relatedness_matrix(g)


def _align(ids_target, ids_other, values, label_other) -> tuple[np.ndarray, bool]:
    """Reorder ``values`` rows (ids ``ids_other``) to ``ids_target``; same set required."""
    if ids_target is None or ids_other is None:
        return values, False
    if np.array_equal(ids_target, ids_other):
        return values, False
    position = {v: i for i, v in enumerate(ids_other)}
    missing = [v for v in ids_target if v not in position]
    extra = sorted(set(ids_other) - set(ids_target))
    if missing or extra:
        raise ValueError(
            f"{label_other}: sample ids differ from the phenotype's: missing {missing[:5]}, "
            f"extra {extra[:5]}"
        )
    return values[[position[v] for v in ids_target]], True


def load_scan_inputs(
    pheno,
    *,
    kinship=None,
    grm=None,
    covariates=None,
    candidates,
    pheno_column: str | None = None,
    id_column: str | None = None,
) -> ScanInputs:
    """Read and cross-check the files of an association scan.

    Exactly one of ``kinship`` (an ``n × n`` matrix file) or ``grm`` (an ``n × p`` genotype
    file turned into a GRM) must be given. Without ``covariates`` the design is an intercept.
    Every matrix must have the phenotype's ``n`` rows.
    """
    if (kinship is None) == (grm is None):
        raise ValueError("give exactly one of kinship (--kinship K.npy) or grm (--grm genotypes.npy)")
    notes: list[str] = []
    ph = read_phenotype(pheno, pheno_column, id_column=id_column)
    n = ph.values.size
    if covariates is None:
        x = np.ones((n, 1))
        names: tuple[str, ...] = ("intercept",)
        notes.append("no covariates given: using an intercept only")
    else:
        cov = read_covariates(covariates, id_column=id_column)
        if cov.values.shape[0] != n:
            raise ValueError(
                f"{_label(covariates)}: {cov.values.shape[0]} rows, but the phenotype "
                f"{_label(pheno)} has {n} samples"
            )
        x, reordered = _align(ph.ids, cov.ids, cov.values, _label(covariates))
        names = tuple(cov.names)
        if cov.intercept_added:
            notes.append("added an intercept column to the covariates (no constant column found)")
        if reordered:
            notes.append("covariate rows reordered to match the phenotype's sample ids")
    if kinship is not None:
        k = read_kinship(kinship)
        k_label = _label(kinship)
    else:
        k = grm_from_genotypes(grm)
        k_label = _label(grm)
        notes.append(f"kinship = GRM of the {k_label} genotypes")
    if k.shape[0] != n:
        raise ValueError(f"{k_label}: kinship is {k.shape[0]}×{k.shape[1]}, but the phenotype has {n} samples")
    g = read_candidates(candidates)
    if g.shape[0] != n:
        raise ValueError(
            f"{_label(candidates)}: candidates have {g.shape[0]} rows, but the phenotype has {n} "
            "samples (expected an n×m matrix, one column per candidate)"
        )
    return ScanInputs(ph.values, x, k, g, notes, ph.name, names)
