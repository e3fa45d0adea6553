"""notebooks/glmm.ipynb runs top to bottom and finds what was simulated."""

import json

import pytest

from tests._notebooks import NOTEBOOKS, run_notebook

pytest.importorskip("matplotlib")


def test_glmm_notebook_executes_and_finds_the_causal_snp():
    nb, _ = run_notebook("glmm.ipynb", NOTEBOOKS, timeout=300)
    last = nb.cells[-1]
    text = "".join(out.get("text", "") for out in last.outputs if out.get("output_type") == "stream")
    summary = json.loads(text.strip().splitlines()[-1])
    # Simulated truth: h2 = 0.5, four causal SNPs.
    assert abs(summary["h2_ml"] - summary["h2_true"]) < 0.15
    assert abs(summary["h2_reml"] - summary["h2_true"]) < 0.15
    assert summary["top_hit_is_causal"]
    assert summary["causal_found"] >= 1 and summary["false_positives"] <= 1
    # Calibrated null p-values and the scanner equal to an LMM with the SNP as a covariate.
    assert 0.85 < summary["lambda_gc"] < 1.2
    assert summary["scanner_vs_lmm_lml"] < 1e-6
    # NUTS posterior of h2: no divergences, and it covers the ML estimate and the truth.
    low, high = summary["h2_interval"]
    assert summary["divergences"] == 0
    assert low < summary["h2_ml"] < high and low < summary["h2_true"] < high
