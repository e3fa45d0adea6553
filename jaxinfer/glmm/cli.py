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
``degenerate``     the candidate made ``[X g]`` rank deficient (all zero, constant, equal to
                   a covariate): solved by least squares as glimix-core, effect 0 / LRT 0
=================  ==========================================================================

With ``--bfile PREFIX`` (PLINK .bed/.bim/.fam, through bed-reader) the candidates are the SNPs
of the .bed, streamed in blocks under ``--max-mem``; phenotype (and covariate) rows are matched
to the .fam's sample ids (IID); the kinship is the GRM of the same file unless ``--kinship``,
``--grm`` or ``--grm-bfile`` says otherwise; rows gain ``snp``, ``chrom``, ``pos`` and
``n_missing`` (missing calls, mean-imputed).

Progress and a summary (null fit, heritability, top hits) go to stderr; the table goes to
``--out`` (or stdout with ``--out -``). Errors in the inputs exit with status 2 and one line
naming the file and the problem. ``--plot IMAGE`` writes a Manhattan and a QQ plot of the
p-values (:mod:`jaxinfer.glmm.plot`; needs matplotlib).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import pandas as pd

__all__ = ["register", "demo", "run_scan", "ScanSummary", "SCAN_COLUMNS"]

SCAN_COLUMNS = ("candidate", "lml", "effect_size", "effect_size_se", "scale", "lrt", "pvalue",
                "degenerate")
PLINK_COLUMNS = ("snp", "chrom", "pos", "n_missing")
PLOT_INSTALL = 'pip install "jaxinfer[plot]"'


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
        n_degenerate: candidates that made ``[X g]`` rank deficient (zero, constant,
            equal to a covariate).
    """

    null_lml: float
    v0: float
    v1: float
    heritability: float
    beta: np.ndarray
    fit_seconds: float
    scan_seconds: float
    warnings: tuple[str, ...] = ()
    n_degenerate: int = 0


def _enable_float64() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)


def _fit_null(y, covariates, kinship, restricted, batch_size, qs=None):
    """Null LMM and its scanner; the kinship as an (n, n) matrix or, ``kinship=None``, as its
    economic decomposition ``qs``."""
    from jaxinfer.glmm.lmm import LMM
    from jaxinfer.glmm.qs import economic_qs

    start = time.perf_counter()
    if qs is None:
        qs = economic_qs(np.asarray(kinship, dtype=float))
    lmm = LMM(y, covariates, qs, restricted=restricted)
    lmm.fit(verbose=False)
    scanner = lmm.get_fast_scanner(batch_size=batch_size) if batch_size else lmm.get_fast_scanner()
    return lmm, scanner, time.perf_counter() - start


def _scan_table(result: dict, null_lml: float, first: int = 0) -> pd.DataFrame:
    from scipy.stats import chi2

    lml = np.asarray(result["lml"], float)
    lrt = np.maximum(2.0 * (lml - null_lml), 0.0)
    return pd.DataFrame(
        {
            "candidate": first + np.arange(lml.size),
            "lml": lml,
            "effect_size": np.asarray(result["effsizes1"], float),
            "effect_size_se": np.asarray(result["effsizes1_se"], float),
            "scale": np.asarray(result["scale"], float),
            "lrt": lrt,
            "pvalue": chi2.sf(lrt, 1),
            "degenerate": np.asarray(result["degenerate"], bool),
        }
    )


def _summary(lmm, kinship_diag_mean, null_lml, fit_seconds, scan_seconds, n_degenerate):
    v0, v1 = lmm.v0, lmm.v1
    genetic = v0 * kinship_diag_mean
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
    return ScanSummary(null_lml, v0, v1, heritability, np.asarray(lmm.beta), fit_seconds,
                       scan_seconds, tuple(warnings), int(n_degenerate))


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
    lmm, scanner, fit_seconds = _fit_null(y, covariates, kinship, restricted, batch_size)
    null_lml = scanner.null_lml()
    start = time.perf_counter()
    result = scanner.fast_scan(np.asarray(candidates, dtype=float), progress=progress)
    scan_seconds = time.perf_counter() - start
    table = _scan_table(result, null_lml)
    summary = _summary(lmm, float(np.mean(np.diag(np.asarray(kinship, float)))), null_lml,
                       fit_seconds, scan_seconds, table["degenerate"].sum())
    return table, summary


def run_plink_scan(
    plink,
    samples,
    y,
    covariates,
    kinship,
    *,
    qs=None,
    restricted: bool = False,
    max_memory: int = 512 * 2**20,
    progress: Optional[Callable[[int, int], None]] = None,
) -> tuple[pd.DataFrame, ScanSummary]:
    """:func:`run_scan` over every SNP of a PLINK file, read in blocks of bounded memory.

    Args:
        plink: :class:`jaxinfer.glmm.plink.PlinkFile`.
        samples: ``(n,)`` row indices into the .fam of the phenotype's samples, in ``y``'s order.
        y, covariates, kinship: as in :func:`run_scan`, rows in ``samples``' order;
            ``kinship=None`` with ``qs = ((Q0,), S0)`` its economic decomposition instead
            (:func:`jaxinfer.glmm.plink.grm_qs_from_plink`).
        max_memory: bytes for one SNP block (reading, imputing and scanning it).

    Every block has the same number of SNPs (the last one padded), so the scan compiles once;
    the next block is read while the current one is scanned.

    Returns:
        ``(table, summary)`` with :data:`PLINK_COLUMNS` + :data:`SCAN_COLUMNS`.
    """
    from jaxinfer.glmm.plink import block_size_for

    m = plink.n_snps
    size = block_size_for(len(samples), m, max_memory)
    lmm, scanner, fit_seconds = _fit_null(y, covariates, kinship, restricted, size, qs=qs)
    null_lml = scanner.null_lml()
    start = time.perf_counter()
    tables = []
    for first, stop, G, n_missing in plink.blocks(samples, size):
        block = _scan_table(scanner.fast_scan(G), null_lml, first)
        block.insert(0, "n_missing", n_missing)
        tables.append(block)
        if progress is not None:
            progress(stop, m)
    table = pd.concat(tables, ignore_index=True)
    table.insert(0, "pos", plink.bp_position)
    table.insert(0, "chrom", plink.chromosome)
    table.insert(0, "snp", plink.sid)
    table = table[list(PLINK_COLUMNS + SCAN_COLUMNS)]
    # mean diag K = trace K / n = ΣS0 / n for orthonormal Q0
    diag_mean = (float(np.sum(qs[1])) / len(samples) if kinship is None
                 else float(np.mean(np.diag(np.asarray(kinship, float)))))
    summary = _summary(lmm, diag_mean, null_lml, fit_seconds, time.perf_counter() - start,
                       table["degenerate"].sum())
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


def _degenerate_note(summary: ScanSummary) -> Optional[str]:
    if not summary.n_degenerate:
        return None
    return (f"{summary.n_degenerate} candidate(s) degenerate (all zero, constant/monomorphic or "
            "equal to a covariate): solved by least squares, effect 0 or shared, LRT 0; flagged "
            "in the 'degenerate' column")


def _plink_inputs(args):
    """(plink, samples, y, X, K, QS, notes, max_memory) for ``--bfile``; K is None when the GRM
    comes as its decomposition QS (fewer GRM SNPs than samples); ValueError on bad input."""
    from jaxinfer.glmm import io
    from jaxinfer.glmm.plink import grm_from_plink, grm_qs_from_plink, open_plink, parse_memory

    notes = []
    max_memory = parse_memory(args.max_mem)
    plink = open_plink(args.bfile)
    ph = io.read_phenotype(args.pheno, args.pheno_column, id_column=args.id_column)
    n = ph.values.size
    if ph.ids is None:
        if n != plink.n_samples:
            raise ValueError(
                f"{args.pheno}: {n} rows without sample ids, but {plink.prefix}.fam has "
                f"{plink.n_samples} samples; add a first column of sample ids (the .fam's IID)")
        keep = np.arange(n)
        samples = np.arange(n)
        notes.append("phenotype rows taken in .fam order (no sample ids in the phenotype file)")
    else:
        position = {iid: i for i, iid in enumerate(plink.iid)}
        ids = [str(v) for v in ph.ids]
        keep = np.array([i for i, v in enumerate(ids) if v in position], dtype=int)
        if keep.size < 2:
            raise ValueError(
                f"{args.pheno}: {keep.size} of {n} sample ids found in {plink.prefix}.fam "
                f"(IIDs like {list(plink.iid[:3])}); need at least 2")
        samples = np.array([position[ids[i]] for i in keep], dtype=int)
        if keep.size < n:
            notes.append(f"{n - keep.size} phenotype sample(s) not in the .fam: dropped")
        if plink.n_samples > keep.size:
            notes.append(f"{plink.n_samples - keep.size} .fam sample(s) without a phenotype: "
                         "left out")
    y = ph.values[keep]
    if args.covariates is None:
        X = np.ones((keep.size, 1))
        notes.append("no covariates given: using an intercept only")
    else:
        cov = io.read_covariates(args.covariates, id_column=args.id_column)
        if cov.values.shape[0] != n:
            raise ValueError(f"{args.covariates}: {cov.values.shape[0]} rows, but the phenotype "
                             f"{args.pheno} has {n} samples")
        values, reordered = io._align(ph.ids, cov.ids, cov.values, args.covariates)
        X = values[keep]
        if cov.intercept_added:
            notes.append("added an intercept column to the covariates (no constant column found)")
        if reordered:
            notes.append("covariate rows reordered to match the phenotype's sample ids")
    if args.kinship is not None:
        K = io.read_kinship(args.kinship)
    elif args.grm is not None:
        K = io.grm_from_genotypes(args.grm)
    else:
        source = plink if args.grm_bfile is None else open_plink(args.grm_bfile)
        if source is plink:
            grm_samples = samples
        else:
            where = {iid: i for i, iid in enumerate(source.iid)}
            lost = [plink.iid[i] for i in samples if plink.iid[i] not in where]
            if lost:
                raise ValueError(f"{source.prefix}.fam: {len(lost)} scanned sample(s) missing "
                                 f"from the GRM file, e.g. {lost[:3]}")
            grm_samples = np.array([where[plink.iid[i]] for i in samples], dtype=int)
        notes.append(f"kinship = GRM of the {source.n_snps} SNPs of {source.prefix}.bed")
        if source.n_snps < keep.size:
            qs = grm_qs_from_plink(source, grm_samples)
            notes.append(f"GRM of rank <= {source.n_snps} < {keep.size} samples: decomposed "
                         "from the SNPs (thin SVD), low-rank scan")
            return plink, samples, y, X, None, qs, notes, max_memory
        K = grm_from_plink(source, grm_samples, max_memory=max_memory)
    if K.shape[0] != keep.size:
        raise ValueError(f"kinship is {K.shape[0]}×{K.shape[1]}, but {keep.size} samples are "
                         "scanned (a kinship file must be in the phenotype's sample order)")
    return plink, samples, y, X, K, None, notes, max_memory


def _run_plink_command(args) -> int:
    _stderr(f"glmm scan: reading {args.bfile} (PLINK)")
    try:
        plink, samples, y, X, K, qs, notes, max_memory = _plink_inputs(args)
    except (ValueError, OSError) as err:
        _stderr(f"jaxinfer glmm scan: error: {err}")
        return 2
    for note in notes:
        _stderr(f"  note: {note}")
    _stderr(f"  {y.size} samples, {X.shape[1]} covariate column(s), {plink.n_snps} SNPs")
    try:
        table, summary = run_plink_scan(plink, samples, y, X, K, qs=qs,
                                        restricted=args.restricted,
                                        max_memory=max_memory,
                                        progress=_scan_progress("SNPs"))
    except ValueError as err:
        _stderr(f"jaxinfer glmm scan: error: {err}")
        return 2
    imputed = int(table["n_missing"].sum())
    if imputed:
        _stderr(f"  note: {imputed} missing genotype call(s) in "
                f"{int((table['n_missing'] > 0).sum())} SNP(s) mean-imputed (column n_missing)")
    return _report(args, table, summary)


def _report(args, table, summary) -> int:
    m = len(table)
    _stderr(
        f"  null model: lml {summary.null_lml:.4f}, v0 {summary.v0:.4g}, v1 {summary.v1:.4g}, "
        f"heritability {summary.heritability:.3f}, beta {np.array2string(summary.beta, precision=4)} "
        f"({summary.fit_seconds:.2f} s)"
    )
    for warning in summary.warnings:
        _stderr(f"  warning: {warning}")
    note = _degenerate_note(summary)
    if note:
        _stderr(f"  note: {note}")
    _stderr(f"  scan: {m} candidates in {summary.scan_seconds:.2f} s; smallest p-values:")
    _stderr(_top_hits_text(table, min(5, m)))
    if args.out == "-":
        table.to_csv(sys.stdout, index=False, float_format="%.10g")
    else:
        table.to_csv(args.out, index=False, float_format="%.10g")
        _stderr(f"glmm scan: wrote {m} rows to {args.out}")
    if args.plot:
        from jaxinfer.glmm.plot import save_scan_plots

        save_scan_plots(args.plot, table)
        _stderr(f"glmm scan: Manhattan and QQ plots written to {args.plot}")
    return 0


def _run_scan_command(args) -> int:
    from jaxinfer.glmm import io

    _enable_float64()
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        _stderr(f"jaxinfer glmm scan: error: --plot needs matplotlib, which is not installed: "
                f"{PLOT_INSTALL} (or leave out --plot)")
        return 2
    if args.bfile is not None:
        return _run_plink_command(args)
    if args.candidates is None or (args.kinship is None) == (args.grm is None):
        _stderr("jaxinfer glmm scan: error: without --bfile, give --candidates and exactly one "
                "of --kinship / --grm")
        return 2
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
    return _report(args, table, summary)


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
    source = scan.add_mutually_exclusive_group()
    source.add_argument("--kinship", help="n×n kinship matrix (.npy or CSV)")
    source.add_argument("--grm", help="n×p genotype matrix (.npy or CSV) to build the GRM K = ZZᵀ/p from")
    source.add_argument("--grm-bfile", help="with --bfile: PLINK prefix whose SNPs give the GRM "
                                            "(default: the --bfile itself)")
    scan.add_argument("--candidates", help="n×m candidate matrix (.npy or CSV), one candidate per column")
    scan.add_argument("--bfile", help="PLINK .bed/.bim/.fam prefix: scan its SNPs (samples matched "
                                      "to the phenotype's ids by the .fam's IID)")
    scan.add_argument("--max-mem", default="512M", help="with --bfile: memory for one SNP block "
                                                       "(e.g. 256M, 2G; default 512M)")
    scan.add_argument("--out", default="-", help="output CSV (default '-': stdout)")
    scan.add_argument("--restricted", action="store_true", help="fit the null variance components by REML")
    scan.add_argument("--batch-size", type=int, default=None, help="candidates per compiled block")
    scan.add_argument("--plot", default=None, metavar="IMAGE",
                      help="Manhattan and QQ plots of the p-values, PNG/PDF/SVG "
                           f"(needs matplotlib: {PLOT_INSTALL})")
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
