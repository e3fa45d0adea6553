"""minimize_scalar against scipy.optimize.minimize_scalar (same algorithms, same defaults)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

from jaxinfer.optimize import Status, minimize_scalar


# Asymmetric, non-quadratic, minimum f = 0 at x = shift: with a zero minimum value the
# minimiser is resolved far below 1e-8 (a minimum at f != 0 is only located to about
# sqrt(machine eps) in x, which would make a 1e-8 comparison a coin toss).
def wavy(x, shift=1.3):
    return jnp.exp(0.3 * x) * (x - shift) ** 2 + 0.2 * (x - shift) ** 4


def scipy_wavy(x, shift=1.3):
    return np.exp(0.3 * x) * (x - shift) ** 2 + 0.2 * (x - shift) ** 4


@pytest.mark.parametrize("method,kw,opts", [
    ("bounded", {"bounds": (0.0, 3.0)}, {}),
    ("bounded", {"bounds": (-2.0, 0.5)}, {"xatol": 1e-10}),   # minimum at the upper bound
    ("brent", {}, {}),
    ("brent", {"bracket": (2.0, 2.5)}, {"xtol": 1e-10}),
    ("brent", {"bracket": (0.5, 1.5, 2.5)}, {}),
])
def test_matches_scipy(method, kw, opts):
    res = minimize_scalar(wavy, method=method, options=opts, **kw)
    ref = so.minimize_scalar(scipy_wavy, method=method, options=opts, **kw)
    assert bool(res.success) and ref.success
    assert abs(float(res.x) - ref.x) <= 1e-8
    assert abs(float(res.fun) - ref.fun) <= 1e-12
    assert int(res.nfev) == ref.nfev


def test_golden_matches_scipy():
    """Golden section: same iterates up to rounding; near the flat minimum the last choice
    between two points with equal objective to 1e-16 may differ, so x agrees to ~1e-7."""
    res = minimize_scalar(lambda x: (x - 1.3) ** 2 + jnp.sin(3.0 * x), method="golden")
    ref = so.minimize_scalar(lambda x: (x - 1.3) ** 2 + np.sin(3.0 * x), method="golden")
    assert bool(res.success)
    assert abs(float(res.fun) - ref.fun) <= 1e-14
    assert abs(float(res.x) - ref.x) <= 1e-7
    assert int(res.nfev) == ref.nfev


def test_known_minimum_and_defaults():
    res = minimize_scalar(lambda x: (x - 0.3) ** 2, bounds=(0, 1), options={"xatol": 1e-10})
    assert int(res.status) == Status.XTOL
    assert abs(float(res.x) - 0.3) <= 1e-9
    res = minimize_scalar(lambda x: jnp.cosh(x - 2.0))
    assert abs(float(res.x) - 2.0) <= 1e-7


def test_budget_and_errors():
    res = minimize_scalar(wavy, bounds=(0.0, 3.0), options={"maxiter": 4})
    assert int(res.status) == Status.MAX_FEV and not bool(res.success)
    res = minimize_scalar(wavy, method="brent", options={"maxiter": 3})
    assert int(res.status) == Status.MAX_ITER and not bool(res.success)
    with pytest.raises(ValueError, match="Unknown option"):
        minimize_scalar(wavy, bounds=(0, 1), options={"xtol": 1e-3})
    with pytest.raises(ValueError, match="lower bound"):
        minimize_scalar(wavy, bounds=(1, 0))
    with pytest.raises(ValueError, match="bracket"):
        minimize_scalar(wavy, bracket=(0.0, 3.0, 2.5))
    with pytest.raises(ValueError, match="valid"):
        minimize_scalar(wavy, method="parabola")


def test_jit_and_vmap_over_data():
    shifts = jnp.array([0.2, 1.3, 2.4])

    def solve(s):
        return minimize_scalar(wavy, bounds=(0.0, 3.0), args=(s,), method="bounded",
                               options={"xatol": 1e-10}).x

    batched = jax.jit(jax.vmap(solve))(shifts)
    one = jax.jit(solve)
    np.testing.assert_allclose(batched, jnp.stack([one(s) for s in shifts]), atol=1e-14)
    for s, x in zip(np.asarray(shifts), np.asarray(batched)):
        ref = so.minimize_scalar(scipy_wavy, bounds=(0.0, 3.0), args=(s,), method="bounded",
                                 options={"xatol": 1e-10})
        assert abs(x - ref.x) <= 1e-8
