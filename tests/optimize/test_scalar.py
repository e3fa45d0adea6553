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


@pytest.mark.parametrize("method,kw", [("brent", {}), ("golden", {}),
                                       ("bounded", {"bounds": (0.0, 3.0)})])
def test_scipy_status_message_and_types(method, kw):
    """scipy's ``status`` (bounded), ``message`` and ``success`` for a converged run and a
    run out of budget; numpy scalars and a Python bool outside a trace."""
    for opts in ({}, {"maxiter": 3}):
        res = minimize_scalar(wavy, method=method, options=opts, **kw)
        ref = so.minimize_scalar(scipy_wavy, method=method, options=opts, **kw)
        assert res.message == ref.message and res.success is ref.success, (opts, res.message)
        assert res.status == ref.get("status", 0 if ref.success else 1)
        assert isinstance(res.x, np.floating) and isinstance(res.nfev, np.integer)
        assert int(res.nfev) == ref.nfev
    if method == "bounded":   # inside a trace the fields stay arrays
        traced = jax.jit(lambda s: minimize_scalar(wavy, method=method, args=(s,), **kw).x)(1.3)
        assert isinstance(traced, jax.Array) and abs(float(traced) - 1.3) <= 1e-5  # xatol


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
    assert res.status == 0 and res.reason == Status.XTOL
    assert abs(float(res.x) - 0.3) <= 1e-9
    res = minimize_scalar(lambda x: jnp.cosh(x - 2.0))
    assert abs(float(res.x) - 2.0) <= 1e-7


def test_budget_and_errors():
    res = minimize_scalar(wavy, bounds=(0.0, 3.0), options={"maxiter": 4})
    assert res.reason == Status.MAX_FEV and res.success is False
    res = minimize_scalar(wavy, method="brent", options={"maxiter": 3})
    assert res.reason == Status.MAX_ITER and res.success is False
    # scipy warns about an option the method does not have, and ignores it
    with pytest.warns(so.OptimizeWarning, match="Unknown solver options: xtol"):
        res = minimize_scalar(wavy, bounds=(0, 1), options={"xtol": 1e-3})
    assert res.success is True
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


# ---- glimix-core's bracket-then-Brent search (brent_search 2.0.2 fixtures) -------------------

def _fixture_cases():
    import json
    import pathlib
    path = pathlib.Path(__file__).with_name("fixtures") / "bracket_brent.json"
    return json.loads(path.read_text())["cases"]


_NS = {name: getattr(jnp, name) for name in ("exp", "log", "sin", "cosh", "log1p")}


def test_bracket_brent_matches_brent_search():
    for case in _fixture_cases():
        f = lambda x, e=case["expr"]: eval(e, dict(_NS, x=x))  # noqa: E731
        opts = {"rtol": case.get("rtol", 1.4902e-08), "atol": case.get("atol", 1.4902e-08)}
        res = minimize_scalar(f, bounds=(case["a"], case["b"]), method="bracket-brent",
                              options=opts)
        assert int(res.status) == Status.XTOL, case["expr"]
        assert int(res.nfev) == case["nfev"], case["expr"]
        assert abs(float(res.x) - case["x"]) <= 1e-9 * max(1.0, abs(case["x"])), case["expr"]
        assert abs(float(res.fun) - case["fun"]) <= 1e-12 * max(1.0, abs(case["fun"]))


def test_bracket_brent_float32_budget_and_errors():
    lo, hi = jnp.asarray(-30.0, jnp.float32), jnp.asarray(30.0, jnp.float32)
    res = minimize_scalar(lambda x: (x - 3.0) ** 2 + 0.1 * jnp.sin(5 * x), bounds=(lo, hi),
                          method="bracket-brent", options={"rtol": 1e-3, "atol": 1e-3})
    assert res.x.dtype == jnp.float32 and int(res.status) == Status.XTOL
    # the float64 fixture's minimiser, to the float32 search tolerance
    assert abs(float(res.x) - _fixture_cases()[0]["x"]) <= 5e-3
    res = minimize_scalar(lambda x: (x - 3.0) ** 2, bounds=(-30.0, 30.0),
                          method="Bracket-Brent", options={"maxiter": 3})
    assert int(res.status) == Status.MAX_ITER and not bool(res.success)
    with pytest.raises(ValueError, match="needs bounds"):
        minimize_scalar(wavy, method="bracket-brent")
    with pytest.raises(ValueError, match="bracket is not used"):
        minimize_scalar(wavy, bracket=(0, 1), bounds=(0, 1), method="bracket-brent")


def test_brent_solver_by_hand_matches_front_door():
    from jaxinfer.optimize._iterate import RUNNING
    from jaxinfer.optimize.scalar import Brent

    solver = Brent()
    fn = lambda x, args: wavy(x, *args)  # noqa: E731
    init = jax.jit(lambda x0: solver.init(fn, x0, (1.3,)))
    step = jax.jit(lambda st: solver.step(fn, st, (1.3,)))
    terminate = jax.jit(lambda st: solver.terminate(fn, st, (1.3,)))
    state = init(jnp.array([-3.0, -2.5]))  # far from the minimum: the bracket must grow
    phases = []
    while int(terminate(state)) == RUNNING:
        state = step(state)
        phases.append(bool(state.bracketing))
    res = solver.postprocess(fn, state, (1.3,), terminate(state))
    nits = []
    ref = minimize_scalar(wavy, bracket=(-3.0, -2.5), args=(1.3,),
                          callback=lambda p: nits.append(int(p.nit)))
    assert int(res.status) == int(ref.reason) == Status.XTOL
    assert float(res.x) == float(ref.x) and int(res.nfev) == int(ref.nfev)
    assert abs(float(res.x) - 1.3) <= 1e-8
    # bracketing steps come first, then Brent's; the callback saw every step
    assert int(state.bracket.it) >= 1 and phases[0] and not phases[-1]
    assert phases == sorted(phases, reverse=True)
    assert len(nits) == len(phases) and nits[-1] == int(ref.nit)


def test_float32_brent_golden_bounded_converge():
    """In float32 the default tolerances rise to sqrt(eps): converged, right to that level."""
    f = lambda x: jnp.exp(0.3 * x) * (x - 1.3) ** 2 + 0.2 * (x - 1.3) ** 4 + 0.5  # noqa: E731
    zero, one = jnp.float32(0.0), jnp.float32(1.0)
    for method, kw in (("brent", {"bracket": (zero, one)}), ("golden", {"bracket": (zero, one)}),
                       ("bounded", {"bounds": (zero, jnp.float32(3.0))})):
        res = minimize_scalar(f, method=method, **kw)
        assert res.x.dtype == jnp.float32, method
        assert res.reason == Status.XTOL and res.status == 0, method
        assert abs(float(res.x) - 1.3) <= 1e-3, method
