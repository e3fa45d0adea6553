"""Execute notebooks/spt.ipynb (the spt tour) and check its accuracy report."""

import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "spt.ipynb")


def test_spt_notebook_runs_and_recovers_the_truth(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on any failing cell
    text = ""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error"
            if output.get("name") == "stdout":
                text += output["text"]
    rmse_d = float(re.search(r"RMSE diffusivity: ([0-9.]+)", text).group(1))
    rmse_v = float(re.search(r"RMSE potential: ([0-9.]+)", text).group(1))
    assert rmse_d < 0.03   # mean D 0.2 µm²/s (noise floor ~0.015)
    assert rmse_v < 0.6    # well depth 2 kT
    assert "converged: True" in text
    assert (tmp_path / "spt_maps.png").stat().st_size > 1000
