"""Manhattan and QQ plots of an association scan (``jaxinfer glmm scan --plot``).

matplotlib is imported lazily (``pip install "jaxinfer[plot]"``), so ``import jaxinfer.glmm``
works without it. Figures are :class:`matplotlib.figure.Figure` objects (no pyplot state, no
GUI backend). The input is the scan table the CLI writes: a ``pvalue`` column, and for PLINK
scans ``chrom`` / ``pos`` (else candidates are placed by their index).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["qq_points", "plot_manhattan", "plot_qq", "scan_figure", "save_scan_plots"]

# genome-wide significance line of the Manhattan plot
GENOME_WIDE = 5e-8


def _pvalues(table: pd.DataFrame) -> np.ndarray:
    if "pvalue" not in table:
        raise ValueError(f"the scan table has no 'pvalue' column; got {list(table.columns)}")
    p = np.asarray(table["pvalue"], dtype=float)
    return np.clip(p, np.finfo(float).tiny, 1.0)


def qq_points(pvalues) -> tuple:
    """``(expected, observed)`` −log10 p-values of a QQ plot, both (m,), ascending.

    Expected values are the uniform order statistics ``(i − 0.5)/m``; NaN p-values are left
    out."""
    p = np.asarray(pvalues, dtype=float)
    p = np.sort(p[np.isfinite(p)])
    m = p.size
    expected = -np.log10((np.arange(1, m + 1) - 0.5) / m)
    observed = -np.log10(np.clip(p, np.finfo(float).tiny, 1.0))
    return expected[::-1], observed[::-1]


def _positions(table: pd.DataFrame):
    """x positions, chromosome of each row (or None), and chromosome tick centres."""
    if "chrom" not in table or "pos" not in table:
        x = np.asarray(table["candidate"] if "candidate" in table else np.arange(len(table)),
                       dtype=float)
        return x, None, []
    chrom = table["chrom"].astype(str).to_numpy()
    pos = np.asarray(table["pos"], dtype=float)
    order = pd.unique(chrom)
    x = np.empty(len(table))
    offset, ticks = 0.0, []
    for name in order:
        rows = chrom == name
        start = pos[rows].min()
        x[rows] = offset + pos[rows] - start
        span = max(pos[rows].max() - start, 1.0)
        ticks.append((offset + span / 2.0, name))
        offset += span * 1.02 + 1.0
    return x, chrom, ticks


def plot_manhattan(table: pd.DataFrame, ax=None, threshold: float = GENOME_WIDE):
    """−log10 p against genome position (chromosomes alternate colours); returns the Axes."""
    ax = _new_axes() if ax is None else ax
    logp = -np.log10(_pvalues(table))
    x, chrom, ticks = _positions(table)
    if chrom is None:
        ax.scatter(x, logp, s=4, color="tab:blue")
        ax.set_xlabel("candidate")
    else:
        for k, (_, name) in enumerate(ticks):
            rows = chrom == name
            ax.scatter(x[rows], logp[rows], s=4, color=("tab:blue", "tab:gray")[k % 2])
        ax.set_xticks([t for t, _ in ticks], [n for _, n in ticks])
        ax.set_xlabel("chromosome")
    ax.axhline(-np.log10(threshold), color="tab:red", lw=0.8, ls="--")
    ax.set_ylabel("−log10 p")
    ax.set_title("Manhattan")
    return ax


def plot_qq(table: pd.DataFrame, ax=None):
    """Observed against expected −log10 p, with the identity line and λ_GC; returns the Axes."""
    from scipy import stats

    ax = _new_axes() if ax is None else ax
    p = _pvalues(table)
    expected, observed = qq_points(p)
    ax.scatter(expected, observed, s=4, color="tab:blue")
    top = max(float(expected.max(initial=1.0)), 1.0)
    ax.plot([0, top], [0, top], color="tab:red", lw=0.8)
    lam = float(np.median(stats.chi2.isf(p, 1)) / stats.chi2.ppf(0.5, 1)) if p.size else np.nan
    ax.set_xlabel("expected −log10 p")
    ax.set_ylabel("observed −log10 p")
    ax.set_title(f"QQ (λ_GC = {lam:.3f})")
    return ax


def scan_figure(table: pd.DataFrame, threshold: float = GENOME_WIDE):
    """One figure: Manhattan plot (left) and QQ plot (right)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=(2.2, 1))
    plot_manhattan(table, ax=left, threshold=threshold)
    plot_qq(table, ax=right)
    return fig


def save_scan_plots(path: str, table: pd.DataFrame, dpi: int = 120) -> str:
    """Save :func:`scan_figure` (PNG, PDF or SVG from the extension); returns ``path``."""
    scan_figure(table).savefig(path, dpi=dpi)
    return path


def _new_axes():
    from matplotlib.figure import Figure

    return Figure(figsize=(5, 4), layout="constrained").add_subplot()
