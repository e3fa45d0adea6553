"""Execute notebooks/spt.ipynb (the spt tour) and check its accuracy report."""

import re

from tests._notebooks import run_notebook


def test_spt_notebook_runs_and_recovers_the_truth(tmp_path):
    _, text = run_notebook("spt.ipynb", tmp_path)
    rmse_d = float(re.search(r"RMSE diffusivity: ([0-9.]+)", text).group(1))
    rmse_v = float(re.search(r"RMSE potential: ([0-9.]+)", text).group(1))
    assert rmse_d < 0.03   # mean D 0.2 µm²/s (noise floor ~0.015)
    assert rmse_v < 0.6    # well depth 2 kT
    assert "converged: True" in text
    assert (tmp_path / "spt_maps.png").stat().st_size > 1000
