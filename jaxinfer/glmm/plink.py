"""PLINK 1 binary genotypes (.bed/.bim/.fam) for scans, read in SNP blocks with bed-reader.

bed-reader (the ``plink`` extra: ``pip install jaxinfer[plink]``) is the maintained, fast
reader behind FaST-LMM and PySnpTools: it reads any subset of samples × SNPs of a .bed
straight into a NumPy array (missing calls as NaN) without loading the file, which is what a
scan with bounded memory needs. Everything here is NumPy at the edge of the package.

* :class:`PlinkFile` — the sample ids (.fam), SNP ids / chromosomes / positions (.bim) and a
  reader of column blocks, ``read(samples, start, stop)`` -> ``(n, stop - start)`` float64
  allele counts with missing calls mean-imputed per SNP, plus the count of imputed calls
  (read as int8, 5x faster than bed-reader's float32 output); ``blocks(samples, size)``
  iterates over equal blocks, reading the next one in a background thread while the caller
  works on the current one.
* :func:`block_size_for` — SNPs per block for a memory bound (balanced: equal blocks).
* :func:`grm_from_plink` — ``K = ZZᵀ/p`` of the standardised SNPs, accumulated block by block
  (monomorphic SNPs contribute nothing but count in ``p``, as
  :func:`jaxinfer.glmm.simulate.genetic_relatedness_matrix`).
* :func:`grm_qs_from_plink` — the same K as an economic eigendecomposition ``((Q0,), S0)``
  from the thin SVD of ``Z/sqrt(p)`` (n, p): for p < n it is rank ≤ p, so the scan's rotation
  costs n·p per SNP instead of n² (FaST-LMM's low-rank path does the same).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from jaxinfer.glmm.qs import QS_EPSILON
from jaxinfer.glmm.simulate import standardize_genotypes

__all__ = ["PlinkFile", "open_plink", "block_size_for", "parse_memory", "grm_from_plink",
           "grm_qs_from_plink"]

_MISSING_INT8 = -127  # bed-reader's missing call in int8 output


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
    """SNPs per block so that a block's copies stay under ``max_memory`` bytes; at least 1.

    Counted per SNP: 7 float64 columns of ``n_samples`` (the block imputed in float64, the next
    block being read, the padded device copy, its rotation Q0ᵀG and two temporaries of that
    size). The blocks are balanced: ``ceil(n_snps / blocks)`` SNPs each, so the last one needs
    little padding to the common compiled shape.
    """
    per_snp = 7 * 8 * max(int(n_samples), 1)
    size = int(max(1, min(int(n_snps), max_memory // per_snp)))
    blocks = -(-int(n_snps) // size) if n_snps > 0 else 1
    return int(max(1, -(-int(n_snps) // blocks)))


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
        raw = self._bed.read(index=index, dtype="int8", order="F")
        G = raw.astype(np.float64)
        missing = raw == _MISSING_INT8
        n_missing = missing.sum(axis=0)
        if n_missing.any():
            cols = np.flatnonzero(n_missing)
            sub = np.where(missing[:, cols], 0.0, G[:, cols])
            present = G.shape[0] - n_missing[cols]
            means = np.where(present > 0, sub.sum(axis=0) / np.maximum(present, 1), 0.0)
            G[:, cols] = np.where(missing[:, cols], means[None, :], sub)
        return G, n_missing

    def blocks(self, samples: Optional[np.ndarray], size: int, prefetch: bool = True):
        """Yield ``(start, stop, G, n_missing)`` for SNPs in blocks of ``size`` (the last may
        be shorter), as :meth:`read`. With ``prefetch`` the next block is read in one
        background thread (bed-reader and BLAS release the GIL) while the caller works."""
        starts = list(range(0, self.n_snps, max(int(size), 1)))
        spans = [(a, min(a + size, self.n_snps)) for a in starts]
        if not prefetch or len(spans) < 2:
            for a, b in spans:
                yield (a, b, *self.read(samples, a, b))
            return
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(self.read, samples, *spans[0])
            for i, (a, b) in enumerate(spans):
                G, n_missing = pending.result()
                if i + 1 < len(spans):
                    pending = pool.submit(self.read, samples, *spans[i + 1])
                yield a, b, G, n_missing


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
    K = np.zeros((n, n))
    for _, stop, G, _ in plink.blocks(samples, block_size_for(n, m, max_memory)):
        Z = standardize_genotypes(G)
        K += Z @ Z.T  # numpy's A @ A.T is one symmetric rank-k update (syrk)
        if progress is not None:
            progress(stop, m)
    K /= m
    return (K + K.T) / 2


def grm_qs_from_plink(plink: PlinkFile, samples: Optional[np.ndarray] = None, *,
                      epsilon: float = QS_EPSILON):
    """The GRM of :func:`grm_from_plink` as ``((Q0,), S0)``, K = Q0·diag(S0)·Q0ᵀ, without
    forming K: the thin SVD ``Z/sqrt(p) = U·diag(s)·Vᵀ`` of the standardised SNPs (n, p) held
    in memory (8·n·p bytes), Q0 = U and S0 = s² for the s² ≥ ``epsilon`` (as
    :func:`jaxinfer.glmm.qs.economic_qs`), ascending. Meant for p < n: Q0 is (n, ≤ p)."""
    import scipy.linalg

    G, _ = plink.read(samples, 0, plink.n_snps)
    Z = standardize_genotypes(G) / np.sqrt(plink.n_snps)
    del G
    U, s, _ = scipy.linalg.svd(Z, full_matrices=False, overwrite_a=True, check_finite=False)
    S = s ** 2
    keep = np.flatnonzero(S >= epsilon)[::-1]
    return ((np.ascontiguousarray(U[:, keep]),), S[keep])
