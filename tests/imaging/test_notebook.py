"""Execute notebooks/imaging.ipynb (synthesize, fit with finish, compare with the truth and the
Cramér–Rao bound) and check its numbers: the fit explains the data as well as the truth does
and the position error is near the bound."""

import re

from tests._notebooks import run_notebook


def test_imaging_notebook_fits_near_the_bound(tmp_path):
    _, text = run_notebook("imaging.ipynb", tmp_path, timeout=900)
    start, error = map(float, re.search(r"error ([0-9.]+) -> ([0-9.]+)", text).groups())
    true_error = float(re.search(r"error at the truth ([0-9.]+)", text).group(1))
    rmse, crb = map(float, re.search(r"position RMSE ([0-9.]+) px, Cramer-Rao bound ([0-9.]+)",
                                     text).groups())
    assert error < 0.5 * start
    assert error <= 1.02 * true_error
    assert rmse <= 2.5 * crb
