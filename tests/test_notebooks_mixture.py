"""Execute notebooks/mixture.ipynb (EM, NUTS and a risk on the USZ cohort) and check its
numbers: EM converges, every 95% interval of a mixture coefficient contains the coefficient
EM found (the posterior is centred on the fit), and the risk is a probability."""

import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "notebooks", "mixture.ipynb")


def test_mixture_notebook_runs_and_its_intervals_hold_the_em_fit(tmp_path):
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
    assert "EM: Converged" in text
    em_coefs = {(int(c), s): float(v) for c, s, v in
                re.findall(r"EM coefficient (\d), (C\d\d): ([0-9.]+)", text)}
    intervals = re.findall(r"component (\d), (C\d\d): ([0-9.]+) \[([0-9.]+), ([0-9.]+)\]", text)
    assert len(intervals) == 6 and len(em_coefs) == 6
    for c, s, mean, lo, hi in intervals:
        assert float(lo) <= em_coefs[(int(c), s)] <= float(hi), (c, s)
    risk = float(re.search(r"III not: ([0-9.]+)", text).group(1))
    assert 0.0 < risk < 1.0
    assert (tmp_path / "mixture_coefs.png").stat().st_size > 1000
