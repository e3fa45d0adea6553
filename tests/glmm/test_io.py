"""Reading phenotypes, covariates, kinship and candidates: values round-trip, bad input is refused."""

import numpy as np
import pandas as pd
import pytest

from jaxinfer.glmm import io
from jaxinfer.glmm.simulate import genetic_relatedness_matrix, simulate_genotypes


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_phenotype_formats(tmp_path, rng):
    y = rng.standard_normal(6)
    # One named column.
    pd.DataFrame({"height": y}).to_csv(tmp_path / "a.csv", index=False)
    ph = io.read_phenotype(tmp_path / "a.csv")
    np.testing.assert_array_equal(ph.values, y)
    assert ph.name == "height" and ph.ids is None
    # Bare numbers, no header: the first value is data, not a column name.
    np.savetxt(tmp_path / "b.csv", y, delimiter=",", fmt="%.17g")
    np.testing.assert_array_equal(io.read_phenotype(tmp_path / "b.csv").values, y)
    # Ids in a text first column, several traits: pick one by name.
    ids = [f"s{i}" for i in range(6)]
    pd.DataFrame({"sample": ids, "t1": y, "t2": 2 * y}).to_csv(tmp_path / "c.csv", index=False)
    ph = io.read_phenotype(tmp_path / "c.csv", "t2")
    np.testing.assert_array_equal(ph.values, 2 * y)
    assert list(ph.ids) == ids
    with pytest.raises(ValueError, match="2 numeric columns"):
        io.read_phenotype(tmp_path / "c.csv")
    with pytest.raises(ValueError, match="no column 't3'"):
        io.read_phenotype(tmp_path / "c.csv", "t3")
    # Numeric ids named like ids are ids, not a trait.
    pd.DataFrame({"id": range(6), "t": y}).to_csv(tmp_path / "d.csv", index=False)
    ph = io.read_phenotype(tmp_path / "d.csv")
    assert ph.name == "t" and list(ph.ids) == [str(i) for i in range(6)]


def test_phenotype_errors(tmp_path):
    pd.DataFrame({"y": [1.0, np.nan, 3.0]}).to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(ValueError, match=r"non-finite value\(s\).*row\(s\) \[1\]"):
        io.read_phenotype(tmp_path / "nan.csv")
    pd.DataFrame({"y": ["1", "two", "3"]}).to_csv(tmp_path / "txt.csv", index=False)
    with pytest.raises(ValueError, match="not numeric"):
        io.read_phenotype(tmp_path / "txt.csv", id_column=None, column="y")
    with pytest.raises(ValueError, match="file not found"):
        io.read_phenotype(tmp_path / "missing.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match="empty"):
        io.read_phenotype(tmp_path / "empty.csv")
    pd.DataFrame({"id": ["a", "a"], "y": [1.0, 2.0]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match="duplicated sample ids"):
        io.read_phenotype(tmp_path / "dup.csv")


def test_covariates_intercept_rule(tmp_path, rng):
    x = rng.standard_normal((5, 2))
    pd.DataFrame(x, columns=["age", "sex"]).to_csv(tmp_path / "x.csv", index=False)
    cov = io.read_covariates(tmp_path / "x.csv")
    assert cov.intercept_added and cov.names == ["intercept", "age", "sex"]
    np.testing.assert_array_equal(cov.values, np.column_stack([np.ones(5), x]))
    # An existing constant column is the intercept: nothing added.
    pd.DataFrame({"one": np.ones(5), "age": x[:, 0]}).to_csv(tmp_path / "x1.csv", index=False)
    cov = io.read_covariates(tmp_path / "x1.csv")
    assert not cov.intercept_added and cov.values.shape == (5, 2)
    # Linearly dependent columns are refused.
    pd.DataFrame({"a": x[:, 0], "b": 2 * x[:, 0]}).to_csv(tmp_path / "dep.csv", index=False)
    with pytest.raises(ValueError, match="linearly dependent"):
        io.read_covariates(tmp_path / "dep.csv")


def test_kinship_checks(tmp_path, rng):
    g = simulate_genotypes(1, 8, 40).genotypes
    k = genetic_relatedness_matrix(g)
    np.save(tmp_path / "k.npy", k)
    np.testing.assert_allclose(io.read_kinship(tmp_path / "k.npy"), k, rtol=0, atol=0)
    np.savetxt(tmp_path / "k.csv", k, delimiter=",", fmt="%.17g")
    np.testing.assert_allclose(io.read_kinship(tmp_path / "k.csv"), k, rtol=1e-15)
    # A GRM of rank < n (fewer SNPs than samples) is semi-definite and accepted.
    low = genetic_relatedness_matrix(simulate_genotypes(2, 8, 3).genotypes)
    assert np.linalg.matrix_rank(low) < 8
    io.check_kinship(low)
    with pytest.raises(ValueError, match="square"):
        io.check_kinship(k[:, :5])
    asym = k.copy()
    asym[0, 1] += 0.1
    with pytest.raises(ValueError, match="symmetric"):
        io.check_kinship(asym)
    indefinite = k - 2 * np.eye(8)
    with pytest.raises(ValueError, match=r"positive semi-definite; its smallest eigenvalue is -"):
        io.check_kinship(indefinite)
    bad = k.copy()
    bad[2, 2] = np.inf
    with pytest.raises(ValueError, match="non-finite"):
        io.check_kinship(bad)
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        io.read_kinship(tmp_path / "cube.npy")


def test_grm_from_genotype_files(tmp_path):
    g = simulate_genotypes(3, 10, 25).genotypes.astype(np.int64)
    g[:, 0] = 2
    np.save(tmp_path / "g.npy", g)
    np.savetxt(tmp_path / "g.csv", g, delimiter=",", fmt="%d")
    # Independent formula: standardise with in-sample frequencies, then ZZ'/p; a monomorphic
    # SNP contributes nothing but still counts in p.
    g[:, 0] = 2
    f = g.mean(axis=0) / 2
    poly = (f > 0) & (f < 1)
    z = (g[:, poly] - 2 * f[poly]) / np.sqrt(2 * f[poly] * (1 - f[poly]))
    expected = z @ z.T / g.shape[1]
    np.testing.assert_allclose(io.grm_from_genotypes(tmp_path / "g.npy"), expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(io.grm_from_genotypes(tmp_path / "g.csv"), expected, rtol=1e-12, atol=1e-14)
    g_nan = g.astype(float)
    g_nan[4, 7] = np.nan
    np.save(tmp_path / "gnan.npy", g_nan)
    with pytest.raises(ValueError, match=r"gnan.npy: genotypes has 1 non-finite.*row\(s\) \[4\]"):
        io.grm_from_genotypes(tmp_path / "gnan.npy")


def test_load_scan_inputs_cross_checks(tmp_path, rng):
    n = 7
    ids = [f"s{i}" for i in range(n)]
    y = rng.standard_normal(n)
    x = rng.standard_normal((n, 1))
    g = simulate_genotypes(4, n, 30).genotypes
    k = genetic_relatedness_matrix(g)
    cand = rng.standard_normal((n, 4))
    pd.DataFrame({"sample": ids, "y": y}).to_csv(tmp_path / "y.csv", index=False)
    order = rng.permutation(n)
    pd.DataFrame({"sample": np.array(ids)[order], "age": x[order, 0]}).to_csv(tmp_path / "x.csv", index=False)
    np.save(tmp_path / "k.npy", k)
    np.save(tmp_path / "g.npy", g)
    np.save(tmp_path / "c.npy", cand)
    inputs = io.load_scan_inputs(tmp_path / "y.csv", covariates=tmp_path / "x.csv", kinship=tmp_path / "k.npy",
                                 candidates=tmp_path / "c.npy")
    # Covariate rows were matched back to the phenotype's ids.
    np.testing.assert_array_equal(inputs.covariates, np.column_stack([np.ones(n), x]))
    assert any("intercept" in note for note in inputs.notes)
    assert any("reordered" in note for note in inputs.notes)
    via_grm = io.load_scan_inputs(tmp_path / "y.csv", grm=tmp_path / "g.npy", candidates=tmp_path / "c.npy")
    np.testing.assert_allclose(via_grm.kinship, k, rtol=1e-12)
    np.testing.assert_array_equal(via_grm.covariates, np.ones((n, 1)))

    np.save(tmp_path / "c_short.npy", cand[:-1])
    with pytest.raises(ValueError, match="candidates have 6 rows, but the phenotype has 7"):
        io.load_scan_inputs(tmp_path / "y.csv", kinship=tmp_path / "k.npy", candidates=tmp_path / "c_short.npy")
    np.save(tmp_path / "k_big.npy", genetic_relatedness_matrix(simulate_genotypes(5, n + 1, 30).genotypes))
    with pytest.raises(ValueError, match="kinship is 8×8, but the phenotype has 7"):
        io.load_scan_inputs(tmp_path / "y.csv", kinship=tmp_path / "k_big.npy", candidates=tmp_path / "c.npy")
    with pytest.raises(ValueError, match="exactly one of kinship"):
        io.load_scan_inputs(tmp_path / "y.csv", kinship=tmp_path / "k.npy", grm=tmp_path / "g.npy",
                            candidates=tmp_path / "c.npy")
    pd.DataFrame({"sample": ids[:-1] + ["zz"], "age": x[:, 0]}).to_csv(tmp_path / "x_bad.csv", index=False)
    with pytest.raises(ValueError, match="sample ids differ"):
        io.load_scan_inputs(tmp_path / "y.csv", covariates=tmp_path / "x_bad.csv", kinship=tmp_path / "k.npy",
                            candidates=tmp_path / "c.npy")
