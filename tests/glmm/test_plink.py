"""``jaxinfer glmm scan --bfile``: a tiny PLINK file written with bed-reader, read back in SNP
blocks; checked against the in-memory scan of the same (imputed, re-ordered) arrays."""

import numpy as np
import pandas as pd
import pytest

from jaxinfer import cli
from jaxinfer.glmm import simulate as sim
from jaxinfer.glmm.cli import PLINK_COLUMNS, SCAN_COLUMNS, run_scan
from jaxinfer.glmm.plink import block_size_for, open_plink, parse_memory

bed_reader = pytest.importorskip("bed_reader")

N, P = 36, 30


@pytest.fixture(scope="module")
def bfile(tmp_path_factory):
    root = tmp_path_factory.mktemp("plink")
    cohort = sim.simulate_cohort(4, N, P, heritability=0.5, n_causal=2, family_size=2)
    G = cohort.genotypes.genotypes.astype(np.float32)
    G[:, 5] = 0.0                       # monomorphic SNP
    G[[1, 7, 20], 3] = np.nan           # missing calls
    G[4, 11] = np.nan
    iid = np.array([f"s{i}" for i in range(N)])
    bed_reader.to_bed(str(root / "toy.bed"), G, properties={
        "iid": iid, "fid": iid, "sid": [f"rs{j}" for j in range(P)],
        "chromosome": ["1"] * 15 + ["2"] * 15, "bp_position": 1000 + 10 * np.arange(P)})
    # phenotype in another order, one sample unknown to the .fam, one .fam sample without trait
    order = np.random.default_rng(0).permutation(N - 1)
    pd.DataFrame({"iid": list(iid[order]) + ["stranger"],
                  "trait": list(cohort.phenotype.y[order]) + [0.0]}).to_csv(root / "y.csv",
                                                                            index=False)
    return root, G, order, cohort.phenotype.y


def test_reader_imputes_and_counts_missing(bfile):
    root, G, *_ = bfile
    plink = open_plink(root / "toy")
    assert plink.n_samples == N and plink.n_snps == P
    assert plink.sid[3] == "rs3" and plink.chromosome[20] == "2" and plink.bp_position[2] == 1020
    rows = np.array([1, 0, 7, 9, 12])
    block, n_missing = plink.read(rows, 2, 6)
    np.testing.assert_array_equal(n_missing, [0, 2, 0, 0])
    # imputed with the mean over the samples read (those scanned)
    mean3 = np.mean(G[[0, 9, 12], 3].astype(float))
    np.testing.assert_allclose(block[:, 1], [mean3, G[0, 3], mean3, G[9, 3], G[12, 3]])
    np.testing.assert_array_equal(block[:, 0], G[rows, 2])
    assert parse_memory("4K") == 4096 and parse_memory("2G") == 2 * 2**30
    # 7 float64 columns per SNP: 4096 // (56·36) = 2 SNPs; 100 SNPs in blocks of <= 30 are
    # balanced to 4 blocks of 25
    assert block_size_for(N, P, 4096) == 2
    assert block_size_for(10, 100, 56 * 10 * 30) == 25


def _reference(root, G, order, y):
    """The in-memory path on arrays built by hand: phenotype order, imputed SNPs, their GRM."""
    Gi = G[order].astype(float)
    for j in range(P):
        col = Gi[:, j]
        col[np.isnan(col)] = np.nanmean(col)
    K = sim.genetic_relatedness_matrix(Gi)
    return run_scan(y[order], np.ones((N - 1, 1)), K, Gi)


def test_bfile_scan_streams_blocks_and_matches_in_memory_scan(bfile, capsys):
    root, G, order, y = bfile
    common = ["glmm", "scan", "--pheno", str(root / "y.csv"), "--bfile", str(root / "toy")]
    assert cli.main(common + ["--out", str(root / "one.csv")]) == 0
    err_one = capsys.readouterr().err
    assert cli.main(common + ["--max-mem", "4K", "--out", str(root / "blocks.csv")]) == 0
    err = capsys.readouterr().err
    assert "1 phenotype sample(s) not in the .fam" in err
    assert "1 .fam sample(s) without a phenotype" in err
    assert "1 candidate(s) degenerate" in err
    assert "4 missing genotype call(s) in 2 SNP(s)" in err
    # 30 GRM SNPs < 35 samples: the GRM enters as the thin SVD of the SNPs (low rank); the
    # reference below decomposes the dense K
    assert "low-rank scan" in err
    assert f"{P}/{P} SNPs" in err and f"{P}/{P} SNPs" in err_one
    one, blocks = pd.read_csv(root / "one.csv"), pd.read_csv(root / "blocks.csv")
    assert tuple(one.columns) == PLINK_COLUMNS + SCAN_COLUMNS
    pd.testing.assert_frame_equal(one, blocks, rtol=1e-10)
    assert list(one["snp"][:2]) == ["rs0", "rs1"] and one["chrom"][29] == 2
    np.testing.assert_array_equal(one["pos"], 1000 + 10 * np.arange(P))
    assert one["degenerate"][5] and one["degenerate"].sum() == 1
    table, summary = _reference(root, G, order, y)
    for key in ("lml", "effect_size", "effect_size_se", "lrt"):
        np.testing.assert_allclose(one[key], table[key], rtol=1e-8, atol=1e-10)
    assert summary.n_degenerate == 1
