"""``jaxinfer glmm ...``: association scans from files, and the glmm part of ``jaxinfer demo``.

    jaxinfer glmm scan --pheno y.csv --covariates X.csv --kinship K.npy \\
        --candidates G.npy --out scan.csv
    jaxinfer glmm scan --pheno y.csv --grm genotypes.npy --candidates G.npy --out scan.csv

What it does: reads and checks the files (:mod:`jaxinfer.glmm.io`), decomposes the kinship
``K = Q S Qᵀ`` (economic form), fits the null LMM ``y ~ N(Xβ, v₀K + v₁I)`` by maximum
likelihood (``--restricted`` for REML), then tests every candidate column ``g`` in
``y ~ N(Xβ + gα, s(v₀K + v₁I))`` with ``v₀, v₁`` frozen at the null fit (glimix-core's
``FastScanner``; ``s`` and the effect sizes are re-estimated per candidate by maximum
likelihood).

Output CSV, one row per candidate (column of the candidate matrix):

=================  ==========================================================================
``candidate``      0-based column index in the candidate matrix
``lml``            log marginal likelihood of the model with that candidate
``effect_size``    ``α``, the candidate's fixed effect (in the units of y per unit of g)
``effect_size_se`` its standard error ``sqrt(s·[(EᵀV⁻¹E)⁻¹]_αα)``, ``E = [X g]``
``scale``          ``s``, the per-candidate scale of ``v₀K + v₁I``
``lrt``            likelihood-ratio statistic ``2(lml - lml_null)`` (floored at 0)
``pvalue``         ``P(χ²₁ > lrt)``: chi-square with 1 degree of freedom against the null lml
=================  ==========================================================================

Progress and a summary (null fit, heritability, top hits) go to stderr; the table goes to
``--out`` (or stdout with ``--out -``). Errors in the inputs exit with status 2 and one line
naming the file and the problem.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pandas as pd

__all__ = ["register", "demo", "run_scan", "ScanSummary", "SCAN_COLUMNS"]

SCAN_COLUMNS = ("candidate", "lml", "effect_size", "effect_size_se", "scale", "lrt", "pvalue")


@dataclass
class ScanSummary:
    """What the null fit and the scan found.

    Attributes:
        null_lml: log marginal likelihood of the null model (the scanner's, i.e. at ``s`` fitted
            with ``v₀, v₁`` frozen: equal to the LMM's ML lml).
        v0, v1: variance components of the null fit (``v₀K + v₁I``).
        heritability: ``v₀·mean(diag K) / (v₀·mean(diag K) + v₁)``, the share of the
            random-effect variance due to ``K``.
        beta: ``(c,)`` null fixed effects.
        fit_seconds, scan_seconds: wall times of the null fit (decomposition included) and of
            the scan.
        warnings: remarks on the fit, e.g. ``δ`` at a bound of ``(0, 1)``.
    """

    null_lml: float
    v0: float
    v1: float
    heritability: float
    beta: np.ndarray
    fit_seconds: float
    scan_seconds: float
    warnings: tuple[str, ...] = ()


def _enable_float64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def run_scan(
    y,
    covariates,
    kinship,
    candidates,
    *,
    restricted: bool = False,
    batch_size: Optional[int] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> tuple[pd.DataFrame, ScanSummary]:
    """Null LMM fit plus a per-candidate scan, as a table.

    Args:
        y: ``(n,)`` phenotype.
        covariates: ``(n, c)`` design matrix (include the intercept yourself).
        kinship: ``(n, n)`` kinship / GRM.
        candidates: ``(n, m)`` one candidate per column.
        restricted: fit the null variance components by REML instead of ML (the per-candidate
            statistics are ML either way, as in glimix-core).
        batch_size: candidates per compiled block (default: from a memory bound).
        progress: ``progress(done, total)`` after each block of candidates.

    Returns:
        ``(table, summary)``: a DataFrame with :data:`SCAN_COLUMNS` and a :class:`ScanSummary`.
    """
    from scipy.stats import chi2

    from jaxinfer.glmm.lmm import LMM
    from jaxinfer.glmm.qs import economic_qs

    kinship = np.asarray(kinship, dtype=float)
    start = time.perf_counter()
    lmm = LMM(y, covariates, economic_qs(kinship), restricted=restricted)
    lmm.fit(verbose=False)
    scanner = lmm.get_fast_scanner(batch_size=batch_size) if batch_size else lmm.get_fast_scanner()
    null_lml = scanner.null_lml()
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    result = scanner.fast_scan(np.asarray(candidates, dtype=float), progress=progress)
    scan_seconds = time.perf_counter() - start
    lml = np.asarray(result["lml"], float)
    lrt = np.maximum(2.0 * (lml - null_lml), 0.0)
    table = pd.DataFrame(
        {
            "candidate": np.arange(lml.size),
            "lml": lml,
            "effect_size": np.asarray(result["effsizes1"], float),
            "effect_size_se": np.asarray(result["effsizes1_se"], float),
            "scale": np.asarray(result["scale"], float),
            "lrt": lrt,
            "pvalue": chi2.sf(lrt, 1),
        }
    )
    v0, v1 = lmm.v0, lmm.v1
    mean_diag = float(np.mean(np.diag(kinship)))
    genetic = v0 * mean_diag
    heritability = genetic / (genetic + v1) if genetic + v1 > 0 else float("nan")
    warnings = []
    if lmm.delta < 1e-6:
        warnings.append(
            f"delta = {lmm.delta:.3g} is at its lower bound (all random variance on K): the ML "
            "likelihood may be unbounded there, e.g. when an in-sample-centred GRM has the intercept "
            "in its null space; treat the variance components (and the scan) with care"
        )
    elif lmm.delta > 1 - 1e-6:
        warnings.append(f"delta = {lmm.delta:.6g} is at its upper bound: no variance attributed to K")
    summary = ScanSummary(null_lml, v0, v1, heritability, np.asarray(lmm.beta), fit_seconds, scan_seconds,
                          tuple(warnings))
    return table, summary


# --------------------------------------------------------------------------- command line


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _scan_progress(total_hint: str = "candidates"):
    state = {"last": -1.0}

    def callback(done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - state["last"] < 0.5:
            return
        state["last"] = now
        width = 30
        filled = int(width * done / max(total, 1))
        print(f"\r  scan [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {total_hint}",
              end="\n" if done >= total else "", file=sys.stderr, flush=True)

    return callback


def _top_hits_text(table: pd.DataFrame, top: int = 5, causal=None) -> str:
    best = table.nsmallest(top, "pvalue")
    lines = [f"  {'candidate':>9} {'effect':>9} {'se':>8} {'LRT':>8} {'p-value':>10}" + ("  causal" if causal is not None else "")]
    causal_set = set(int(c) for c in causal) if causal is not None else None
    for row in best.itertuples(index=False):
        mark = ""
        if causal_set is not None:
            mark = "  yes" if int(row.candidate) in causal_set else "  -"
        lines.append(
            f"  {int(row.candidate):>9d} {row.effect_size:>9.4f} {row.effect_size_se:>8.4f} "
            f"{row.lrt:>8.2f} {row.pvalue:>10.3g}{mark}"
        )
    return "\n".join(lines)


def _run_scan_command(args) -> int:
    from jaxinfer.glmm import io

    _enable_float64()
    try:
        _stderr("glmm scan: reading inputs")
        inputs = io.load_scan_inputs(
            args.pheno, kinship=args.kinship, grm=args.grm, covariates=args.covariates,
            candidates=args.candidates, pheno_column=args.pheno_column, id_column=args.id_column,
        )
    except (ValueError, OSError) as err:
        _stderr(f"jaxinfer glmm scan: error: {err}")
        return 2
    for note in inputs.notes:
        _stderr(f"  note: {note}")
    n, c = inputs.covariates.shape
    m = inputs.candidates.shape[1]
    _stderr(f"  {n} samples, {c} covariate column(s) {list(inputs.covariate_names)}, {m} candidates")
    _stderr("glmm scan: fitting the null model" + (" (REML)" if args.restricted else " (ML)"))
    try:
        table, summary = run_scan(
            inputs.y, inputs.covariates, inputs.kinship, inputs.candidates,
            restricted=args.restricted, batch_size=args.batch_size, progress=_scan_progress(),
        )
    except ValueError as err:
        _stderr(f"jaxinfer glmm scan: error: {err}")
        return 2
    _stderr(
        f"  null model: lml {summary.null_lml:.4f}, v0 {summary.v0:.4g}, v1 {summary.v1:.4g}, "
        f"heritability {summary.heritability:.3f}, beta {np.array2string(summary.beta, precision=4)} "
        f"({summary.fit_seconds:.2f} s)"
    )
    for warning in summary.warnings:
        _stderr(f"  warning: {warning}")
    _stderr(f"  scan: {m} candidates in {summary.scan_seconds:.2f} s; smallest p-values:")
    _stderr(_top_hits_text(table, min(5, m)))
    if args.out == "-":
        table.to_csv(sys.stdout, index=False, float_format="%.10g")
    else:
        table.to_csv(args.out, index=False, float_format="%.10g")
        _stderr(f"glmm scan: wrote {m} rows to {args.out}")
    return 0


def register(subparsers) -> None:
    """Add ``jaxinfer glmm scan`` to the top-level parser's subparsers."""
    glmm = subparsers.add_parser(
        "glmm", help="linear mixed models: association scans (glimix-core)",
        description="Linear mixed models (a JAX rewrite of glimix-core).",
    )
    commands = glmm.add_subparsers(dest="glmm_command", required=True)
    scan = commands.add_parser(
        "scan",
        help="LMM association scan: one test per candidate column",
        description=(
            "Fit the null LMM y ~ N(Xβ, v0·K + v1·I) once, then test each candidate column g in "
            "y ~ N(Xβ + gα, s(v0·K + v1·I)) with v0, v1 frozen (glimix-core's FastScanner)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "output columns: candidate, lml, effect_size, effect_size_se, scale, lrt, pvalue "
            "(lrt = 2(lml - null lml), pvalue from chi-square with 1 d.o.f.)"
        ),
    )
    scan.add_argument("--pheno", required=True, help="phenotype CSV (one numeric column, or use --pheno-column)")
    scan.add_argument("--pheno-column", help="name of the trait column when the CSV has several")
    scan.add_argument("--id-column", help="name of the sample-id column in the CSVs (default: a first text column)")
    scan.add_argument("--covariates", help="covariates CSV; an intercept is added unless a constant column exists "
                                           "(default: intercept only)")
    source = scan.add_mutually_exclusive_group(required=True)
    source.add_argument("--kinship", help="n×n kinship matrix (.npy or CSV)")
    source.add_argument("--grm", help="n×p genotype matrix (.npy or CSV) to build the GRM K = ZZᵀ/p from")
    scan.add_argument("--candidates", required=True, help="n×m candidate matrix (.npy or CSV), one candidate per column")
    scan.add_argument("--out", default="-", help="output CSV (default '-': stdout)")
    scan.add_argument("--restricted", action="store_true", help="fit the null variance components by REML")
    scan.add_argument("--batch-size", type=int, default=None, help="candidates per compiled block")
    scan.set_defaults(handler=_run_scan_command)


# --------------------------------------------------------------------------- demo


def demo(progress: Callable[[str], None]) -> str:
    """Simulate a cohort, estimate its heritability, scan its SNPs; return a text summary."""
    from jaxinfer.glmm import simulate as sim

    _enable_float64()
    n, p, h2, n_causal = 600, 2000, 0.6, 3
    progress(f"simulating {n} individuals × {p} SNPs (h² = {h2}, {n_causal} causal SNPs)")
    start = time.perf_counter()
    cohort = sim.simulate_cohort(
        20261122, n, p, heritability=h2, n_causal=n_causal, causal_fraction=0.5, n_covariates=2,
        covariate_effects=[1.0, 0.5], family_size=2,
    )
    ph = cohort.phenotype
    simulate_seconds = time.perf_counter() - start
    progress("fitting the null LMM and scanning every SNP")
    table, summary = run_scan(ph.y, ph.covariates, cohort.kinship, cohort.genotypes.genotypes)
    realised = float(np.var(ph.causal_part + ph.polygenic) / np.var(ph.y - ph.fixed))
    causal = [int(c) for c in ph.causal]
    ranks = table["pvalue"].rank(method="min").astype(int)
    causal_ranks = ", ".join(f"SNP {c}: rank {ranks[c]} (p = {table['pvalue'][c]:.2g})" for c in causal)
    threshold = 0.05 / p
    n_significant = int((table["pvalue"] < threshold).sum())
    hits_causal = int((table.loc[table["pvalue"] < threshold, "candidate"].isin(causal)).sum())
    lines = [
        f"cohort: {n} individuals in sibling pairs, {p} SNPs, 2 covariates (simulated in {simulate_seconds:.2f} s)",
        f"heritability: estimated {summary.heritability:.3f} vs simulated {h2} (realised {realised:.3f}); "
        f"null lml {summary.null_lml:.2f}; beta {np.array2string(summary.beta, precision=3)} vs [1. 0.5]",
        f"null LMM fit (eigendecomposition included): {summary.fit_seconds:.2f} s; "
        f"scan of {p} SNPs: {summary.scan_seconds:.2f} s",
        f"top hits (causal SNPs: {causal}):",
        _top_hits_text(table, 5, causal),
        f"causal SNPs in the scan: {causal_ranks}",
        f"Bonferroni (p < {threshold:.1e}): {n_significant} significant SNP(s), {hits_causal} of them causal",
    ]
    return "\n".join(lines)
