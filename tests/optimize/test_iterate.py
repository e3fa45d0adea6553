"""The one solver shape and its driver: a tiny Newton solver written against AbstractSolver,
run by ``iterate``, by hand, under vmap, and with the progress sink."""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from jaxinfer.optimize import OptimizeResult, Status
from jaxinfer.optimize._iterate import (PROGRESS_SINK, RUNNING, AbstractSolver, Progress,
                                        first_status, iterate, progress_to)


class _NewtonState(NamedTuple):
    x: jnp.ndarray
    f: jnp.ndarray
    g: jnp.ndarray
    nit: jnp.ndarray


class _ScalarNewton(AbstractSolver):
    """Newton's method for a scalar objective ``fn(x, args)``: the smallest real solver."""

    gtol: float = 1e-12
    maxiter: int = 50

    def init(self, fn, x0, args):
        f, g = jax.value_and_grad(fn)(x0, args)
        return _NewtonState(x=x0, f=f, g=g, nit=jnp.zeros((), jnp.int32))

    def step(self, fn, state, args):
        h = jax.grad(jax.grad(fn))(state.x, args)
        x = state.x - state.g / h
        f, g = jax.value_and_grad(fn)(x, args)
        return _NewtonState(x=x, f=f, g=g, nit=state.nit + 1)

    def terminate(self, fn, state, args):
        return first_status((jnp.abs(state.g) <= self.gtol, Status.GTOL),
                            (state.nit >= self.maxiter, Status.MAX_ITER))

    def postprocess(self, fn, state, args, status):
        return OptimizeResult(x=state.x, fun=state.f, jac=state.g, status=status, nit=state.nit,
                              nfev=state.nit + 1, njev=state.nit + 1)

    def progress(self, state):
        return Progress(nit=state.nit, fun=state.f, x=state.x)


def _objective(x, a):
    # minimum of exp(x) - a x at x = log(a)
    return jnp.exp(x) - a * x


def test_iterate_reaches_closed_form_and_matches_hand_driving():
    solver = _ScalarNewton()
    res = iterate(solver, _objective, jnp.asarray(0.0), jnp.asarray(3.0))
    assert bool(res.success) and int(res.status) == Status.GTOL
    np.testing.assert_allclose(res.x, np.log(3.0), rtol=1e-11)

    state = solver.init(_objective, jnp.asarray(0.0), jnp.asarray(3.0))
    steps = 0
    while int(solver.terminate(_objective, state, jnp.asarray(3.0))) == RUNNING:
        state = solver.step(_objective, state, jnp.asarray(3.0))
        steps += 1
    assert steps == int(res.nit)
    np.testing.assert_array_equal(state.x, res.x)


def test_iterate_vmaps_and_reports_max_iter_honestly():
    a = jnp.array([0.5, 3.0, 40.0])
    res = jax.jit(jax.vmap(lambda ai: iterate(_ScalarNewton(), _objective, 0.0 * ai, ai)))(a)
    np.testing.assert_allclose(res.x, np.log(np.asarray(a)), rtol=1e-11)
    short = iterate(_ScalarNewton(maxiter=1), _objective, jnp.asarray(0.0), jnp.asarray(40.0))
    assert int(short.status) == Status.MAX_ITER and not bool(short.success)


def test_progress_sink_routes_to_the_active_callback_without_retracing():
    traces = []

    @eqx.filter_jit
    def solve(a):
        traces.append(1)
        return iterate(_ScalarNewton(), _objective, jnp.zeros_like(a), a, callback=PROGRESS_SINK)

    seen_first, seen_second = [], []
    with progress_to(seen_first.append):
        res = jax.block_until_ready(solve(jnp.asarray(3.0)))
    with progress_to(seen_second.append):
        jax.block_until_ready(solve(jnp.asarray(5.0)))
    jax.block_until_ready(solve(jnp.asarray(7.0)))  # no sink active: nothing is recorded
    assert len(traces) == 1
    assert [int(p.nit) for p in seen_first] == list(range(1, int(res.nit) + 1))
    np.testing.assert_allclose(seen_first[-1].x, np.log(3.0), rtol=1e-11)
    assert len(seen_second) > 0 and abs(float(seen_second[-1].x) - np.log(5.0)) < 1e-11


def test_result_repr_shows_values_like_scipy():
    res = iterate(_ScalarNewton(), _objective, jnp.asarray(0.0), jnp.asarray(3.0))
    text = repr(res)
    assert "success: True" in text and "message: Converged: gradient norm below gtol." in text
    x_line = [line for line in text.splitlines() if line.strip().startswith("x:")][0]
    assert abs(float(x_line.split(":")[1]) - np.log(3.0)) < 1e-9
    assert "f64[]" not in text and "f32[]" not in text
