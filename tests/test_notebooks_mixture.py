"""Execute notebooks/mixture.ipynb (EM, NUTS and a risk on the USZ cohort) and check its
numbers: EM converges, every 95% interval of a mixture coefficient contains the coefficient
EM found (the posterior is centred on the fit), and the risk is a probability."""

import re

from tests._notebooks import run_notebook


def test_mixture_notebook_runs_and_its_intervals_hold_the_em_fit(tmp_path):
    _, text = run_notebook("mixture.ipynb", tmp_path)
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
