"""Execute notebooks/imaging.ipynb (synthesize, fit with finish, compare with the truth and the
Cramér–Rao bound) and check its numbers: the fit explains the data as well as the truth does
and the position error is near the bound."""

import os
import re

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "..", "notebooks", "imaging.ipynb")


def test_imaging_notebook_fits_near_the_bound(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on any failing cell
    text = "".join(o["text"] for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []) if o.get("name") == "stdout")
    start, error = map(float, re.search(r"error ([0-9.]+) -> ([0-9.]+)", text).groups())
    true_error = float(re.search(r"error at the truth ([0-9.]+)", text).group(1))
    rmse, crb = map(float, re.search(r"position RMSE ([0-9.]+) px, Cramer-Rao bound ([0-9.]+)",
                                     text).groups())
    assert error < 0.5 * start
    assert error <= 1.02 * true_error
    assert rmse <= 2.5 * crb
