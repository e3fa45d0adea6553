"""PLINK 1 binary genotypes (.bed/.bim/.fam) for scans, read in SNP blocks with bed-reader.

bed-reader (the ``plink`` extra: ``pip install jaxinfer[plink]``) is the maintained, fast
reader behind FaST-LMM and PySnpTools: it reads any subset of samples × SNPs of a .bed
straight into a NumPy array (missing calls as NaN) without loading the file, which is what a
scan with bounded memory needs. Everything here is NumPy at the edge of the package.

* :class:`PlinkFile` — the sample ids (.fam), SNP ids / chromosomes / positions (.bim) and a
  reader of column blocks, ``read(samples, start, stop)`` -> ``(n, stop - start)`` float64
  allele counts with missing calls mean-imputed per SNP, plus the count of imputed calls.
* :func:`block_size_for` — SNPs per block for a memory bound.
* :func:`grm_from_plink` — ``K = ZZᵀ/p`` of the standardised SNPs, accumulated block by block
  (monomorphic SNPs contribute nothing but count in ``p``, as
  :func:`jaxinfer.glmm.simulate.genetic_relatedness_matrix`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from jaxinfer.glmm.simulate import standardize_genotypes

__all__ = ["PlinkFile", "open_plink", "block_size_for", "parse_memory", "grm_from_plink"]


def _bed_reader():
    try:
        import bed_reader
    except ImportError:  # pragma: no cover - the plink extra is part of the test extra
        raise ImportError("reading PLINK files needs bed-reader: pip install 'jaxinfer[plink]'"
                          ) from None
    return bed_reader


def parse_memory(text) -> int:
    """Bytes from ``'512M'``, ``'2G'``, ``'100000'`` (K/M/G/T, binary multiples)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)[bB]?\s*", str(text))
    if not match:
        raise ValueError(f"--max-mem must be a size like 512M or 2G; got {text!r}")
    factor = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}[match.group(2).lower()]
    value = int(float(match.group(1)) * factor)
    if value <= 0:
        raise ValueError(f"--max-mem must be positive; got {text!r}")
    return value


def block_size_for(n_samples: int, n_snps: int, max_memory: int) -> int:
    """SNPs per block so that a block's copies (read in float32, imputed float64, standardised,
    on the device: ~4 float64 copies) stay under ``max_memory`` bytes; at least 1."""
    per_snp = 4 * 8 * max(int(n_samples), 1)
    return int(max(1, min(int(n_snps), max_memory // per_snp)))


@dataclass
class PlinkFile:
    """An opened .bed with its .fam / .bim metadata (see the module docstring).

    Attributes: ``prefix``; ``iid`` (n,) and ``fid`` (n,) sample ids; ``sid`` (m,) SNP ids;
    ``chromosome`` (m,) str; ``bp_position`` (m,) int.
    """

    prefix: str
    iid: np.ndarray
    fid: np.ndarray
    sid: np.ndarray
    chromosome: np.ndarray
    bp_position: np.ndarray
    _bed: object

    @property
    def n_samples(self) -> int:
        return int(self.iid.shape[0])

    @property
    def n_snps(self) -> int:
        return int(self.sid.shape[0])

    def read(self, samples: Optional[np.ndarray], start: int, stop: int):
        """Allele counts of SNPs ``start:stop`` for the sample rows ``samples`` (None: all).

        Returns ``(G, n_missing)``: G (len(samples), stop - start) float64 with each missing
        call replaced by its SNP's mean over the present calls (0 when a SNP has no calls), and
        n_missing (stop - start,) int, the imputed calls per SNP.
        """
        index = (slice(None) if samples is None else np.asarray(samples), np.s_[start:stop])
        G = np.asarray(self._bed.read(index=index, dtype="float32", order="F"), np.float64)
        missing = np.isnan(G)
        n_missing = missing.sum(axis=0)
        if n_missing.any():
            present = (~missing).sum(axis=0)
            means = np.where(present > 0, np.nansum(G, axis=0) / np.maximum(present, 1), 0.0)
            G = np.where(missing, means[None, :], G)
        return G, n_missing


def open_plink(prefix) -> PlinkFile:
    """Open ``PREFIX.bed`` / ``.bim`` / ``.fam`` (``prefix`` may end in ``.bed``)."""
    prefix = str(prefix)
    if prefix.endswith(".bed"):
        prefix = prefix[:-4]
    for ext in (".bed", ".bim", ".fam"):
        if not os.path.exists(prefix + ext):
            raise ValueError(f"{prefix}{ext}: no such file (--bfile {prefix} needs .bed, .bim "
                             "and .fam)")
    bed = _bed_reader().open_bed(prefix + ".bed")
    return PlinkFile(prefix=prefix, iid=np.asarray(bed.iid).astype(str),
                     fid=np.asarray(bed.fid).astype(str), sid=np.asarray(bed.sid).astype(str),
                     chromosome=np.asarray(bed.chromosome).astype(str),
                     bp_position=np.asarray(bed.bp_position).astype(np.int64), _bed=bed)


def grm_from_plink(plink: PlinkFile, samples: Optional[np.ndarray] = None, *,
                   max_memory: int = 512 * 2**20,
                   progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """GRM (n, n) of the standardised SNPs of ``plink`` over the rows ``samples``, streamed.

    Each SNP is centred and scaled by its in-sample frequency ``f`` (sqrt(2f(1-f))), after
    mean imputation; ``K = Σ_blocks Z Zᵀ / m``.
    """
    n = plink.n_samples if samples is None else len(samples)
    m = plink.n_snps
    size = block_size_for(n, m, max_memory)
    K = np.zeros((n, n))
    for start in range(0, m, size):
        stop = min(start + size, m)
        G, _ = plink.read(samples, start, stop)
        Z = standardize_genotypes(G)
        K += Z @ Z.T
        if progress is not None:
            progress(stop, m)
    K /= m
    return (K + K.T) / 2
