"""NIST StRD nonlinear regression: all 27 data sets from Start 1 and Start 2 (54 fits), and
from two starts per data set drawn at random between Start 1 and Start 2 (54 more fits, in the
same vmapped calls, so they cost no extra compilation).

Accuracy is the number of significant digits that agree with the certified parameters AND
the certified standard deviations (minimum log relative error). scipy.optimize.curve_fit
(method 'lm', default settings) is run on the same starts in the same test run, and we must
do at least as well.
"""

import numpy as np
import pytest

from jaxinfer.optimize import nist

# Fits that do not reach 6 digits (and must then not claim anything false):
#  - Lanczos1: residuals ~1e-13, so the certified standard deviations cannot be reproduced in
#    double precision (scipy gets the same ~3 digits); the parameters themselves agree.
#  - BoxBOD and MGH10 from Start 1: the start lies on a plateau / far along a curved valley;
#    MINPACK fails these too.
HARD = {("Lanczos1", 0), ("Lanczos1", 1), ("BoxBOD", 0), ("MGH10", 0)}


@pytest.fixture(scope="module")
def problems():
    return nist.load_all()


RANDOM_SEED = 0


@pytest.fixture(scope="module")
def all_fits(problems):
    return nist.fit_all(list(problems.values()), random=2, seed=RANDOM_SEED)


@pytest.fixture(scope="module")
def ours(all_fits):
    return {key: rec for key, rec in all_fits.items() if key[1] in (0, 1)}


@pytest.fixture(scope="module")
def random_fits(all_fits):
    return {key: rec for key, rec in all_fits.items() if key[1] >= 2}


@pytest.fixture(scope="module")
def theirs(problems):
    return {(name, k): nist.fit_scipy(prob, k) for name, prob in problems.items() for k in (0, 1)}


def test_parser_reproduces_certified_residual_sum_of_squares(problems):
    assert len(problems) == 27
    for name, prob in problems.items():
        r = prob.y - np.asarray(prob.model(prob.x, prob.certified_params))
        rss = float(r @ r)
        # Lanczos1's certified RSS (1.4e-25) is below the rounding of its data
        if name != "Lanczos1":
            assert rss == pytest.approx(prob.certified_rss, rel=1e-6), name
        assert prob.dof == prob.y.size - prob.n_params


def test_at_least_as_many_accurate_fits_as_scipy(ours, theirs):
    ours_ok = sum(rec["digits"] >= 6 for rec in ours.values())
    scipy_ok = sum(rec["digits"] >= 6 for rec in theirs.values())
    assert len(ours) == 54
    assert ours_ok >= scipy_ok, (ours_ok, scipy_ok)
    assert ours_ok >= 50
    # and more digits in total: certified values have 11
    assert sum(r["digits"] for r in ours.values()) >= sum(r["digits"] for r in theirs.values())


@pytest.mark.parametrize("name", nist.NAMES)
def test_each_problem(name, ours, problems):
    for k in (0, 1):
        rec = ours[(name, k)]
        if (name, k) in HARD:
            # an honest report: either wrong-and-failed, or right parameters
            assert (not rec["success"]) or rec["param_digits"] >= 6, (name, k, rec)
            continue
        assert rec["success"], (name, k, rec["status"])
        assert rec["digits"] >= 6, (name, k, rec["digits"])
        assert rec["param_digits"] >= 6, (name, k, rec["param_digits"])


def test_no_fit_claims_success_at_a_wrong_answer(ours):
    for key, rec in ours.items():
        if rec["success"]:
            assert rec["param_digits"] >= 6, (key, rec)


def test_random_starts_between_start_1_and_start_2(random_fits, problems):
    assert len(random_fits) == 54
    for (name, k), rec in random_fits.items():
        start = nist.random_starts(problems[name], 2, RANDOM_SEED)[k - 2]
        low = np.minimum(*problems[name].starts)
        high = np.maximum(*problems[name].starts)
        assert np.all((start >= low) & (start <= high)), name
    accurate = sum(rec["digits"] >= 6 for rec in random_fits.values())
    assert accurate >= 49, accurate
    for key, rec in random_fits.items():
        if rec["success"]:
            assert rec["param_digits"] >= 6, (key, rec)
