"""``jaxinfer glmm scan`` end to end on tiny files, checked against a direct numpy/scipy GLS."""

import numpy as np
import pandas as pd
import pytest
import scipy.optimize
import scipy.stats

from jaxinfer import cli
from jaxinfer.glmm import simulate as sim
from jaxinfer.glmm.cli import SCAN_COLUMNS

N, P, M = 40, 80, 6


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("scan")
    cohort = sim.simulate_cohort(1, N, P, heritability=0.5, n_causal=2, causal_fraction=0.6, n_covariates=2,
                                 covariate_effects=[0.5, 1.0], family_size=2)
    ph = cohort.phenotype
    # Kinship standardised with the population allele frequencies: full rank, so the ML null fit
    # has an interior optimum (an in-sample-centred GRM has the intercept in its null space,
    # which lets the ML lml grow without bound as delta -> 0).
    z = sim.standardize_genotypes(cohort.genotypes, cohort.genotypes.frequencies[0])
    kinship = z @ z.T / P
    ids = [f"ind{i}" for i in range(N)]
    pd.DataFrame({"iid": ids, "trait": ph.y}).to_csv(root / "y.csv", index=False)
    pd.DataFrame({"iid": ids, "age": ph.covariates[:, 1]}).to_csv(root / "x.csv", index=False)
    np.save(root / "k.npy", kinship)
    np.save(root / "grm.npy", cohort.kinship)
    np.save(root / "geno.npy", cohort.genotypes.genotypes)
    candidates = cohort.genotypes.genotypes[:, :M].astype(float)
    candidates[:, 0] = cohort.genotypes.genotypes[:, ph.causal[0]]
    np.save(root / "g.npy", candidates)
    return root, ph.y, ph.covariates, kinship, candidates


def _reference_scan(y, X, K, G):
    """ML null fit over delta (scipy bounded search), then GLS per candidate with
    V = v0 K + v1 I frozen and the scale s profiled: lml, effect, se, scale."""
    n = len(y)
    s_eig, q = np.linalg.eigh(K)

    def null_neg_lml(delta):
        d = (1 - delta) * s_eig + delta
        qx, qy = q.T @ X, q.T @ y
        beta = np.linalg.solve(qx.T @ (qx / d[:, None]), qx.T @ (qy / d))
        r = qy - qx @ beta
        scale = (r**2 / d).sum() / n
        return 0.5 * (n * np.log(2 * np.pi * scale) + np.log(d).sum() + n), scale

    res = scipy.optimize.minimize_scalar(lambda t: null_neg_lml(t)[0], bounds=(1e-9, 1 - 1e-9),
                                         method="bounded", options={"xatol": 1e-10})
    delta = res.x
    scale0 = null_neg_lml(delta)[1]
    V = scale0 * ((1 - delta) * K + delta * np.eye(n))
    Vinv = np.linalg.inv(V)
    logdetV = np.linalg.slogdet(V)[1]

    def gls(E):
        A = E.T @ Vinv @ E
        b = np.linalg.solve(A, E.T @ Vinv @ y)
        r = y - E @ b
        s = r @ Vinv @ r / n
        lml = -0.5 * (n * np.log(2 * np.pi * s) + logdetV + n)
        se = np.sqrt(s * np.diag(np.linalg.inv(A)))
        return lml, b[-1], se[-1], s

    null_lml = gls(X)[0]
    rows = [gls(np.column_stack([X, G[:, j]])) for j in range(G.shape[1])]
    return null_lml, np.array(rows), 1 - delta


def test_scan_matches_direct_gls(files, capsys):
    root, y, X, K, G = files
    out = root / "scan.csv"
    rc = cli.main(["glmm", "scan", "--pheno", str(root / "y.csv"), "--covariates", str(root / "x.csv"),
                   "--kinship", str(root / "k.npy"), "--candidates", str(root / "g.npy"), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "added an intercept" in err and "scan [" in err and f"{M}/{M}" in err
    table = pd.read_csv(out)
    assert tuple(table.columns) == SCAN_COLUMNS
    np.testing.assert_array_equal(table["candidate"], np.arange(M))
    null_lml, ref, h2 = _reference_scan(y, X, K, G)
    np.testing.assert_allclose(table["lml"], ref[:, 0], rtol=1e-6)
    np.testing.assert_allclose(table["effect_size"], ref[:, 1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(table["effect_size_se"], ref[:, 2], rtol=1e-4)
    np.testing.assert_allclose(table["scale"], ref[:, 3], rtol=1e-4)
    lrt = np.maximum(2 * (ref[:, 0] - null_lml), 0)
    np.testing.assert_allclose(table["lrt"], lrt, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(table["pvalue"], scipy.stats.chi2.sf(lrt, 1), rtol=1e-3, atol=1e-10)
    # The causal SNP placed in column 0 is the strongest association.
    assert table["pvalue"].idxmin() == 0


def test_grm_option_equals_kinship_file(files, capsys):
    root, *_ = files
    common = ["glmm", "scan", "--pheno", str(root / "y.csv"), "--candidates", str(root / "g.npy")]
    assert cli.main(common + ["--kinship", str(root / "grm.npy"), "--out", str(root / "a.csv")]) == 0
    pytest.importorskip("matplotlib")
    plot = root / "scan.png"
    assert cli.main(common + ["--grm", str(root / "geno.npy"), "--out", str(root / "b.csv"),
                              "--plot", str(plot)]) == 0
    err = capsys.readouterr().err
    assert "intercept only" in err and "GRM" in err
    assert f"Manhattan and QQ plots written to {plot}" in err
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    a, b = pd.read_csv(root / "a.csv"), pd.read_csv(root / "b.csv")
    np.testing.assert_allclose(a.to_numpy(dtype=float), b.to_numpy(dtype=float), rtol=1e-8, atol=1e-10)


def test_bad_input_exits_with_a_message(files, capsys, tmp_path):
    root, *_ = files
    np.save(tmp_path / "short.npy", np.zeros((N - 3, 2)))
    rc = cli.main(["glmm", "scan", "--pheno", str(root / "y.csv"), "--kinship", str(root / "k.npy"),
                   "--candidates", str(tmp_path / "short.npy"), "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"short.npy: candidates have {N - 3} rows, but the phenotype has {N} samples" in err
    assert not (tmp_path / "o.csv").exists()
    # --kinship and --grm are exclusive (argparse refuses with exit status 2).
    with pytest.raises(SystemExit) as info:
        cli.main(["glmm", "scan", "--pheno", "y.csv", "--kinship", "k.npy", "--grm", "g.npy", "--candidates", "c.npy"])
    assert info.value.code == 2


def test_demo_reports_heritability_and_causal_hits():
    from jaxinfer.glmm.cli import demo

    steps = []
    text = demo(steps.append)
    assert len(steps) == 2
    assert "heritability: estimated" in text and "vs simulated 0.6" in text
    estimate = float(text.split("heritability: estimated ")[1].split()[0])
    assert abs(estimate - 0.6) < 0.15
    # The first row of the top-hit table is a causal SNP.
    first_hit = text.split("causal\n")[1].splitlines()[0]
    assert first_hit.rstrip().endswith("yes")


def test_monomorphic_candidate_is_reported_not_nan(files, capsys, tmp_path):
    root, y, X, K, G = files
    G2 = np.column_stack([G[:, :2], np.full(N, 2.0), np.zeros(N)])  # monomorphic, all-zero
    np.save(tmp_path / "g2.npy", G2)
    rc = cli.main(["glmm", "scan", "--pheno", str(root / "y.csv"), "--kinship", str(root / "k.npy"),
                   "--candidates", str(tmp_path / "g2.npy"), "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "2 candidate(s) degenerate" in err
    table = pd.read_csv(tmp_path / "o.csv")
    np.testing.assert_array_equal(table["degenerate"], [False, False, True, True])
    assert np.all(np.isfinite(table[["lml", "effect_size", "effect_size_se", "lrt", "pvalue"]]))
    # nothing added to the intercept-only null model: LRT 0, p = 1, zero effect for zeros
    np.testing.assert_allclose(table["lrt"][2:], 0, atol=1e-8)
    np.testing.assert_allclose(table["pvalue"][2:], 1, atol=1e-6)
    assert table["effect_size"][3] == 0


def test_plot_without_matplotlib_fails_before_any_work(monkeypatch, capsys, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    rc = cli.main(["glmm", "scan", "--pheno", "missing.csv", "--kinship", "k.npy",
                   "--candidates", "g.npy", "--plot", str(tmp_path / "p.png")])
    err = capsys.readouterr().err
    assert rc == 2
    assert 'needs matplotlib, which is not installed: pip install "jaxinfer[plot]"' in err
    assert "reading inputs" not in err and not (tmp_path / "p.png").exists()


def test_qq_points_and_figure_axes():
    pytest.importorskip("matplotlib")
    from jaxinfer.glmm.plot import plot_manhattan, plot_qq, qq_points, scan_figure

    p = np.array([0.5, 1e-3, 0.2, np.nan, 0.9])
    expected, observed = qq_points(p)
    # uniform order statistics (i - 0.5)/m against the sorted p-values, NaN left out
    np.testing.assert_allclose(expected, -np.log10([0.875, 0.625, 0.375, 0.125]))
    np.testing.assert_allclose(observed, -np.log10([0.9, 0.5, 0.2, 1e-3]))
    table = pd.DataFrame({"snp": ["a", "b", "c", "d"], "chrom": ["1", "1", "2", "2"],
                          "pos": [100, 200, 50, 80], "pvalue": [0.5, 1e-9, 0.2, 0.9]})
    ax = plot_manhattan(table)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2"]
    heights = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
    np.testing.assert_allclose(np.sort(heights), np.sort(-np.log10(table["pvalue"])))
    lam = np.median(scipy.stats.chi2.isf(table["pvalue"], 1)) / scipy.stats.chi2.ppf(0.5, 1)
    assert plot_qq(table).get_title() == f"QQ (λ_GC = {lam:.3f})"
    assert len(scan_figure(table).axes) == 2
    with pytest.raises(ValueError, match="no 'pvalue' column"):
        plot_qq(table.drop(columns="pvalue"))
