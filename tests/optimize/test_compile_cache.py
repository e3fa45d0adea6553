"""The front doors compile once per (function, settings, shapes): new data of the same shapes
reuses the program, a callback is not part of the key, and under a user's jit the solve is
inlined. Answers are checked against scipy and closed forms; compilations are counted by
traces, never by timing."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from jaxinfer.optimize._compile import trace_count
from jaxinfer.optimize.curve_fit import curve_fit
from jaxinfer.optimize.minimize import minimize

# the modules (the package exports functions of the same names)
curve_fit_module = importlib.import_module("jaxinfer.optimize.curve_fit")
minimize_module = importlib.import_module("jaxinfer.optimize.minimize")

X = np.linspace(0.0, 3.0, 20)
P0 = np.array([1.0, 1.0, 0.0])


def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def decay_np(x, a, b, c):
    return a * np.exp(-b * x) + c


def data(seed):
    rng = np.random.default_rng(seed)
    truth = np.array([2.0 + rng.random(), 0.8 + rng.random(), 0.3 * rng.random()])
    return decay_np(X, *truth) + 0.01 * rng.normal(size=X.size)


def traces():
    return trace_count(curve_fit_module._fit)


def test_same_model_new_data_compiles_once_and_matches_scipy():
    before = traces()
    for seed in range(4):
        y = data(seed)
        popt, pcov = curve_fit(decay, X, y, p0=P0)
        ref, ref_cov = scipy.optimize.curve_fit(decay_np, X, y, p0=P0, xtol=1e-14, ftol=1e-14)
        np.testing.assert_allclose(popt, ref, rtol=1e-7)
        np.testing.assert_allclose(pcov, ref_cov, rtol=1e-5)
    assert traces() - before == 1
    # numpy, list and jax inputs of the same shapes and dtypes share the compilation
    y = data(7)
    ref = curve_fit(decay, X, y, p0=P0)[0]
    np.testing.assert_allclose(curve_fit(decay, list(X), list(y), p0=list(P0))[0], ref,
                               rtol=1e-12)
    np.testing.assert_allclose(curve_fit(decay, jnp.asarray(X), jnp.asarray(y), p0=P0)[0], ref,
                               rtol=1e-12)
    assert traces() - before == 1


def test_a_fresh_lambda_recompiles():
    y = data(1)
    before = traces()
    popt, _ = curve_fit(lambda x, a, b, c: a * jnp.exp(-b * x) + c, X, y, p0=P0)
    assert traces() - before == 1
    np.testing.assert_allclose(popt, curve_fit(decay, X, y, p0=P0)[0], rtol=1e-10)


def test_inside_a_user_jit_the_fit_is_inlined():
    ys = np.stack([data(2), data(3)])
    before = traces()
    popts = jax.jit(jax.vmap(lambda y: curve_fit(decay, X, y, p0=jnp.asarray(P0))[0]))(ys)
    assert traces() == before    # the user's jit owns the compilation
    for popt, y in zip(popts, ys):
        ref, _ = scipy.optimize.curve_fit(decay_np, X, y, p0=P0, xtol=1e-14, ftol=1e-14)
        np.testing.assert_allclose(popt, ref, rtol=1e-7)


def test_curve_fit_callback_fires_every_iteration_without_recompiling():
    y = data(4)
    # compile with a callback once (full_output is static: it adds MINPACK's fjac/qtf)
    curve_fit(decay, X, y, p0=P0, full_output=True, callback=lambda p: None)
    before = traces()
    seen_a, seen_b = [], []
    res_a = curve_fit(decay, X, y, p0=P0, full_output=True, callback=seen_a.append)[2]["result"]
    res_b = curve_fit(decay, X, data(5), p0=P0, full_output=True,
                      callback=lambda p: seen_b.append(p))[2]["result"]
    assert traces() == before
    for seen, res in ((seen_a, res_a), (seen_b, res_b)):
        # one report per step of the solver loop (LM: per trial step, several per iteration)
        nits = [int(p.nit) for p in seen]
        assert len(seen) >= int(res.nit) and nits == sorted(nits) and nits[-1] == int(res.nit)
        # the last report is the final state
        np.testing.assert_allclose(seen[-1].fun, res.fun, rtol=1e-12)
        np.testing.assert_allclose(seen[-1].x, res.x, rtol=1e-12)


def rosen(x, a):
    return jnp.sum(a * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def test_minimize_reuses_its_compilation_and_callbacks_do_not_enter_the_key():
    count = lambda: trace_count(minimize_module._solve)  # noqa: E731
    x0 = jnp.array([-1.2, 1.0, 0.5])
    minimize(rosen, x0, args=(jnp.asarray(100.0),), method="BFGS")
    before = count()
    for a in (50.0, 150.0):
        res = minimize(rosen, x0, args=(jnp.asarray(a),), method="BFGS")
        np.testing.assert_allclose(res.x, np.ones(3), atol=1e-5)   # the minimum is (1, 1, 1)
    assert count() == before
    first, second = [], []
    minimize(rosen, x0, args=(jnp.asarray(100.0),), method="BFGS", callback=first.append)
    after_first = count()
    res = minimize(rosen, x0, args=(jnp.asarray(100.0),), method="BFGS",
                   callback=lambda xk: second.append(np.asarray(xk)))
    assert count() == after_first    # a different callback of the same convention: no trace
    assert len(first) == len(second) == int(res.nit)
    np.testing.assert_allclose(second[-1], res.x, rtol=1e-12)


def test_numeric_settings_are_data_and_share_the_program():
    # damping, factors, tolerances and iteration limits are traced: one compile for all values
    y = data(6)
    ref, _ = scipy.optimize.curve_fit(decay_np, X, y, p0=P0, xtol=1e-14, ftol=1e-14)
    curve_fit(decay, X, y, p0=P0)
    before = traces()
    for options in ({"damping": 1e-1, "increase_damp_factor": 2.0},
                    {"damping": 1.0, "decrease_damp_factor": 5.0, "max_iter": 300,
                     "max_damping_retries": 10, "run_length": 2}):
        popt, _ = curve_fit(decay, X, y, p0=P0, **options)
        np.testing.assert_allclose(popt, ref, rtol=1e-7)
    assert traces() == before
    # the traced values are the ones used: one iteration of two trials without an internal
    # run is too few (MAX_ITER raises)
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        curve_fit(decay, X, y, p0=P0, max_iter=1, run_length=0)
    assert traces() == before


def test_unhashable_settings_are_refused_with_a_message():
    def with_note(x, a, b, c):
        return decay(x[0], a, b, c)

    with pytest.raises(TypeError, match="not hashable"):
        curve_fit(with_note, (X, bytearray(b"note")), data(6), p0=P0)


def test_a_first_call_inside_jit_does_not_make_later_eager_calls_run_op_by_op():
    """The settings memo is filled by whichever call comes first. Filled inside a user's jit
    it once held tracers, so every later eager call looked traced and ran op by op (~6 s per
    fit, a new XLA program per primitive: the suite's map-count crash)."""
    options = {"xtol": 1e-13}      # a key no other test of this module uses
    y = data(11)
    inside = jax.jit(lambda y: curve_fit(decay, X, y, p0=P0, **options)[0])(jnp.asarray(y))
    memo = [v for k, v in curve_fit_module._SETTINGS.items() if ("xtol", 1e-13) in k[0]]
    assert memo and not any(isinstance(leaf, jax.core.Tracer)
                            for leaf in jax.tree_util.tree_leaves(memo))
    before = traces()
    eager = curve_fit(decay, X, y, p0=P0, **options)[0]
    curve_fit(decay, X, data(12), p0=P0, **options)
    assert traces() - before == 1     # compiled once, then reused: not op by op
    ref = scipy.optimize.curve_fit(decay_np, X, y, p0=P0, xtol=1e-14, ftol=1e-14)[0]
    np.testing.assert_allclose(eager, ref, rtol=1e-7)
    np.testing.assert_allclose(inside, eager, rtol=1e-12)
