"""``jaxinfer mixture fit`` end to end on the small lymixture cohort (same shapes as the EM
tests, so the compiled EM is shared)."""

import io
import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from jaxinfer.cli import main
from jaxinfer.mixture.cli import build_mixture

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def test_fit_command_writes_a_consistent_fit(tmp_path, capsys):
    fx = json.loads((FIXTURES / "lymixture_small.json").read_text())
    csv = tmp_path / "patients.csv"
    table = pd.read_csv(io.StringIO(fx["csv"]), header=[0, 1, 2])
    table.to_csv(csv, index=False)
    out = tmp_path / "fit.json"
    code = main(["mixture", "fit", str(csv), "--components", "2", "--split-by", "subsite",
                 "--maxiter", "100", "--atol", "0.01", "--modality", "CT:0.76:0.81",
                 "--modality", "MRI:0.63:0.86",
                 "--out", str(out)])
    fit = json.loads(out.read_text())
    assert code == 0 and fit["success"]
    assert "log-likelihood" in capsys.readouterr().out
    # the reported log-likelihood is the mixture's at the reported parameters
    model = build_mixture(pd.read_csv(csv, header=[0, 1, 2]), ["I", "II", "III", "IV"], 2,
                          ("tumor", "1", "subsite"), {"CT": (0.76, 0.81), "MRI": (0.63, 0.86)})
    model.set_params(**fit["params"])
    assert model.incomplete_data_likelihood() == pytest.approx(fit["loglik"], rel=1e-10)
    history = np.asarray(fit["history"])
    assert len(history) == fit["nit"] + 1 and np.all(np.diff(history) > -1e-8)
    assert fit["loglik"] > history[0]


def test_fit_command_refuses_an_unknown_split_column(tmp_path):
    fx = json.loads((FIXTURES / "lymixture_small.json").read_text())
    csv = tmp_path / "patients.csv"
    pd.read_csv(io.StringIO(fx["csv"]), header=[0, 1, 2]).to_csv(csv, index=False)
    with pytest.raises(SystemExit, match="no_such_column"):
        main(["mixture", "fit", str(csv), "--split-by", "no_such_column"])
