"""LevenbergMarquardt as a steppable solver: hand driving, traced masks, chunked normal equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinfer.optimize._iterate import RUNNING, Status, iterate
from jaxinfer.optimize.least_squares import levenberg_marquardt
from jaxinfer.optimize.linear_solve import NormalEquations, cholesky_solve
from jaxinfer.optimize.lm import (LeastSquaresProblem, LevenbergMarquardt, RunOne,
                                  Transtrum)

RNG = np.random.default_rng(7)
X = np.linspace(0.0, 4.0, 30)
P_TRUE = np.array([2.5, 1.3, 0.5])
Y = P_TRUE[0] * np.exp(-P_TRUE[1] * X) + P_TRUE[2] + 0.01 * RNG.normal(size=X.size)
P0 = np.array([1.0, 1.0, 0.0])


def exp_residuals(p, x, y):
    return p[0] * jnp.exp(-p[1] * x) + p[2] - y


def test_driving_by_hand_matches_least_squares_one_trial_per_step():
    solver = LevenbergMarquardt()
    problem = LeastSquaresProblem(lambda p, a: exp_residuals(p, *a))
    args = (jnp.asarray(X), jnp.asarray(Y))
    state = solver.init(problem, jnp.asarray(P0), args)   # eager: init only sets up
    step = jax.jit(lambda s: solver.step(problem, s, args))
    steps = 0
    while int(solver.terminate(problem, state, args)) == RUNNING:
        nfev = int(state.nfev)
        state = step(state)
        steps += 1
        assert int(state.nfev) == nfev + 1          # exactly one residual evaluation per step
        assert steps < 500
    mine = solver.postprocess(problem, state, args, solver.terminate(problem, state, args))
    # the front door runs the same solver in iterate()'s while_loop: the same path
    front = levenberg_marquardt(exp_residuals, jnp.asarray(P0), args=(X, Y))
    assert bool(mine.success) and bool(front.success), (mine.message, front.message)
    np.testing.assert_allclose(mine.x, front.x, rtol=1e-10)
    assert int(mine.nfev) == steps   # small n: the first step (phase START) evaluates x0
    # and the answer is the least-squares minimum: the gradient Jᵀr vanishes
    jac = jax.jacfwd(exp_residuals)(mine.x, X, Y)
    grad = jac.T @ exp_residuals(mine.x, X, Y)
    assert float(jnp.max(jnp.abs(grad))) < 1e-10
    assert int(front.nfev) == steps and int(front.nit) == int(mine.nit)


def test_jacobian_only_at_accepted_points_gives_the_same_fit():
    # trial_jacobian=False: a rejected trial costs one residual evaluation, J is evaluated
    # once per iteration at the accepted point (for models whose J is expensive)
    problem = LeastSquaresProblem(lambda p, a: exp_residuals(p, *a))
    args = (jnp.asarray(X), jnp.asarray(Y))
    fused = levenberg_marquardt(exp_residuals, jnp.asarray(P0), args=(X, Y))  # (compiled above)
    lean = iterate(LevenbergMarquardt(trial_jacobian=False), problem, jnp.asarray(P0), args)
    assert bool(fused.success) and bool(lean.success), (fused.message, lean.message)
    np.testing.assert_allclose(lean.x, fused.x, rtol=1e-9)
    assert int(fused.njev) == int(fused.nfev)          # fused: J with every trial
    assert int(lean.njev) <= int(lean.nit) + 1 < int(lean.nfev)
    np.testing.assert_allclose(lean.jac, jax.jacfwd(exp_residuals)(lean.x, X, Y), rtol=1e-12)


A_LIN = RNG.normal(size=(12, 4))
B_LIN = RNG.normal(size=12)


def test_sixty_four_masks_share_one_trace():
    traces = {"solve": 0, "residuals": 0}

    def residuals(x, a, b):
        traces["residuals"] += 1
        return a @ x - b

    x0 = jnp.array([0.0, 0.7, 0.0, -0.3])

    @jax.jit
    @jax.vmap
    def solve(mask):
        traces["solve"] += 1
        return levenberg_marquardt(residuals, x0, args=(A_LIN, B_LIN), mask=mask).x

    masks = RNG.random((2, 64, 4)) < 0.6
    masks[..., 0] = True                       # every lane fits at least one parameter
    first = solve(jnp.asarray(masks[0]))
    residual_traces = traces["residuals"]
    second = solve(jnp.asarray(masks[1]))
    assert traces["solve"] == 1                     # one trace for 128 different masks
    assert traces["residuals"] == residual_traces  # the second batch did not retrace
    for batch, xs in ((masks[0], first), (masks[1], second)):
        for mask, x in zip(batch, np.asarray(xs)):
            rhs = B_LIN - A_LIN[:, ~mask] @ np.asarray(x0)[~mask]
            expected = np.linalg.lstsq(A_LIN[:, mask], rhs, rcond=None)[0]
            np.testing.assert_allclose(x[mask], expected, rtol=1e-9, atol=1e-12)
            np.testing.assert_array_equal(x[~mask], np.asarray(x0)[~mask])


def test_numeric_settings_are_traced_one_program_for_all_values():
    # what peri's staged fits need: stages that differ only in damping, factors, tolerances,
    # iteration limits or run length share one compiled program
    traces = []

    def residuals(x, a, b):
        traces.append(1)
        return a @ x - b

    expected = np.linalg.lstsq(A_LIN, B_LIN, rcond=None)[0]
    levenberg_marquardt(residuals, jnp.zeros(4), args=(A_LIN, B_LIN))
    n_traces = len(traces)
    for options in ({"damping": 1.0, "increase_damp_factor": 2.0},
                    {"decrease_damp_factor": 4.0, "max_iter": 50, "max_damping_retries": 3,
                     "run_length": 1,
                     "min_eigval": 1e-14, "max_accel_correction": 0.5}):
        res = levenberg_marquardt(residuals, jnp.zeros(4), args=(A_LIN, B_LIN), **options)
        assert bool(res.success), res.message
        np.testing.assert_allclose(res.x, expected, rtol=1e-10)
    assert len(traces) == n_traces
    # the traced limit is the one in force: no iteration allowed
    res = levenberg_marquardt(residuals, jnp.zeros(4), args=(A_LIN, B_LIN), max_iter=0)
    assert int(res.status) == int(Status.MAX_ITER) and len(traces) == n_traces
    np.testing.assert_array_equal(res.x, np.zeros(4))


def test_plain_first_restarts_only_the_lanes_that_fail():
    # max_iter=4: from near the optimum the plain run (run 1, no acceleration) converges;
    # from (1, 1, 0) it fails with MAX_ITER and restarts from x0 with run 2 and
    # acceleration: that lane is then the standalone run-2 fit
    problem = LeastSquaresProblem(lambda p, a: exp_residuals(p, *a))
    args = (jnp.asarray(X), jnp.asarray(Y))
    starts = jnp.stack([jnp.asarray(P_TRUE + 0.01), jnp.asarray(P0)])

    def run(solver):
        return jax.jit(jax.vmap(lambda x0: iterate(solver, problem, x0, args)))(starts)

    both = run(LevenbergMarquardt(use_accel=True, plain_first=True, max_iter=4))
    robust = run(LevenbergMarquardt(use_accel=True, max_iter=4))
    np.testing.assert_array_equal(both.extra["restarted"], [False, True])
    assert bool(both.success[0]) and bool(both.success[1]) and bool(robust.success[1])
    np.testing.assert_allclose(both.x[1], robust.x[1], rtol=1e-12)
    assert int(both.nit[1]) == int(robust.nit[1])
    assert int(both.nfev[1]) > int(robust.nfev[1]) + 4     # the failed plain run's 4+
    assert int(both.nit[0]) <= 4 and int(both.extra["num_jvp"][0]) == 0   # never accelerated
    # both answers are the least-squares minimum (the gradient vanishes)
    for x in both.x:
        jac = jax.jacfwd(exp_residuals)(x, X, Y)
        assert float(jnp.max(jnp.abs(jac.T @ exp_residuals(x, X, Y)))) < 1e-10


# ---- chunked normal equations ---------------------------------------------------------------

N_COEF = 30                                    # a cubic B-spline of 30 coefficients
T_BIG = np.linspace(0.0, 1.0, 20_000)
KNOTS = np.linspace(0.0, 1.0, N_COEF)
TRUTH = 0.5 * np.sin(6 * np.pi * KNOTS) + 0.1 * RNG.normal(size=N_COEF)
START = TRUTH + 0.05 * RNG.normal(size=N_COEF)


def spline(coef, t):
    """Uniform cubic B-spline with len(coef) coefficients on [0, 1], at t (m,)."""
    u = jnp.clip(t, 0.0, 1.0) * (coef.shape[0] - 3)
    idx = jnp.clip(jnp.floor(u).astype(jnp.int32), 0, coef.shape[0] - 4)
    f = u - idx
    w = jnp.stack([(1 - f) ** 3 / 6, (3 * f ** 3 - 6 * f ** 2 + 4) / 6,
                   (-3 * f ** 3 + 3 * f ** 2 + 3 * f + 1) / 6, f ** 3 / 6], axis=1)
    return jnp.sum(w * coef[idx[:, None] + jnp.arange(4)], axis=1)


Y_BIG = np.exp(np.asarray(spline(jnp.asarray(TRUTH), T_BIG))) + 0.01 * RNG.normal(size=T_BIG.size)


def spline_residuals(p, t, y):
    return jnp.exp(spline(p, t)) - y


def spline_chunk(p, t, y, *, start, size):
    t_c = jax.lax.dynamic_slice_in_dim(jnp.asarray(t), start, size)
    y_c = jax.lax.dynamic_slice_in_dim(jnp.asarray(y), start, size)
    return jnp.exp(spline(p, t_c)) - y_c


@pytest.fixture(scope="module")
def dense_spline():
    return levenberg_marquardt(spline_residuals, jnp.asarray(START), args=(T_BIG, Y_BIG))


@pytest.mark.parametrize("by", ["rows", "columns"])
def test_chunked_normal_equations_match_the_dense_svd_path(by, dense_spline):
    kwargs = dict(linear_solver="cholesky", max_mem=1e6)   # J itself would be 4.8 MB
    if by == "rows":
        kwargs["residual_chunk"] = spline_chunk
    res = levenberg_marquardt(spline_residuals, jnp.asarray(START), args=(T_BIG, Y_BIG), **kwargs)
    assert bool(dense_spline.success) and bool(res.success), (dense_spline.message, res.message)
    assert res.jac is None
    np.testing.assert_allclose(res.x, dense_spline.x, rtol=1e-8,
                               atol=1e-8 * float(jnp.max(jnp.abs(dense_spline.x))))
    np.testing.assert_allclose(res.fun, dense_spline.fun, rtol=1e-10)
    # the gradient the chunked path accumulated is Jᵀr of the dense Jacobian
    jac = dense_spline.jac
    np.testing.assert_allclose(res.extra["gradient"], jac.T @ dense_spline.extra["residuals"],
                               atol=1e-8 * float(jnp.linalg.norm(jac)))


def test_normal_equation_pieces_match_the_dense_jacobian():
    from jaxinfer.optimize.linear_solve import (normal_equations_by_columns,
                                                normal_equations_by_rows)

    x = jnp.asarray(START)
    jac = jax.jacfwd(spline_residuals)(x, T_BIG[:997], Y_BIG[:997])
    r = spline_residuals(x, T_BIG[:997], Y_BIG[:997])
    chunk = lambda p, a, start, size: spline_chunk(p, *a, start=start, size=size)  # noqa: E731
    by_rows = normal_equations_by_rows(chunk, x, (T_BIG[:997], Y_BIG[:997]), 997, rows=100)
    by_cols = normal_equations_by_columns(lambda p: spline_residuals(p, T_BIG[:997], Y_BIG[:997]),
                                          x, block=7)
    for gram, grad in (by_rows, by_cols[:2]):
        np.testing.assert_allclose(gram, jac.T @ jac, rtol=1e-12, atol=1e-10)
        np.testing.assert_allclose(grad, jac.T @ r, rtol=1e-12, atol=1e-10)


def exp_normal_equations(p, a, r):
    """The normal-equations hook for exp_residuals: (JᵀJ, Jᵀr) from jacfwd (independent of
    LM's own Jacobian code)."""
    jac = jax.jacfwd(exp_residuals)(p, *a)
    return jac.T @ jac, jac.T @ r


def test_normal_equations_hook_matches_dense_and_chunked_paths():
    args = (jnp.asarray(X), jnp.asarray(Y))
    dense = levenberg_marquardt(exp_residuals, jnp.asarray(P0), args=(X, Y))   # fused SVD path
    chunked = levenberg_marquardt(exp_residuals, jnp.asarray(P0), args=(X, Y),
                                  linear_solver="cholesky", max_mem=1e3)      # by columns
    problem = LeastSquaresProblem(lambda p, a: exp_residuals(p, *a),
                                  normal_equations=exp_normal_equations)
    solver = LevenbergMarquardt(linear_solver=NormalEquations("cholesky"))
    hook = jax.jit(lambda x0: iterate(solver, problem, x0, args))(jnp.asarray(P0))
    for res in (dense, chunked, hook):
        assert bool(res.success), res.message
    assert hook.jac is None and chunked.jac is None
    # the least-squares minimum of the data (its gradient vanishes): all three find it
    np.testing.assert_allclose(hook.x, dense.x, rtol=1e-9)
    np.testing.assert_allclose(hook.fun, dense.fun, rtol=1e-12)
    np.testing.assert_allclose(hook.x, chunked.x, rtol=1e-10)
    np.testing.assert_allclose(hook.fun, chunked.fun, rtol=1e-13)
    jac = jax.jacfwd(exp_residuals)(hook.x, X, Y)
    np.testing.assert_allclose(hook.extra["gradient"], jac.T @ exp_residuals(hook.x, X, Y),
                               atol=1e-12)


def test_normal_equations_hook_refuses_a_dense_solver_and_bad_shapes():
    args = (jnp.asarray(X), jnp.asarray(Y))
    problem = LeastSquaresProblem(lambda p, a: exp_residuals(p, *a),
                                  normal_equations=exp_normal_equations)
    with pytest.raises(ValueError, match="normal_equations.*DenseSVD"):
        iterate(LevenbergMarquardt(), problem, jnp.asarray(P0), args)
    with pytest.raises(ValueError, match="broyden_update"):
        iterate(LevenbergMarquardt(linear_solver=NormalEquations(), broyden_update=True),
                problem, jnp.asarray(P0), args)
    bad = LeastSquaresProblem(lambda p, a: exp_residuals(p, *a),
                              normal_equations=lambda p, a, r: (jnp.eye(2), jnp.zeros(3)))
    with pytest.raises(ValueError, match=r"JᵀJ of shape \(3, 3\)"):
        iterate(LevenbergMarquardt(linear_solver=NormalEquations()), bad, jnp.asarray(P0), args)


@pytest.mark.parametrize("n", [3, 12])
def test_cholesky_solve_matches_numpy(n):
    a = RNG.normal(size=(n + 5, n))
    mat, b = a.T @ a + 0.1 * np.eye(n), RNG.normal(size=n)
    np.testing.assert_allclose(cholesky_solve(jnp.asarray(mat), jnp.asarray(b)),
                               np.linalg.solve(mat, b), rtol=1e-10)


# ---- options as objects, float32, refusals ---------------------------------------------------


def test_solver_objects_and_float32_cholesky():
    solver = LevenbergMarquardt(damping_scale=Transtrum(1e-6), policy=RunOne(),
                                linear_solver=NormalEquations("cholesky"), damping=1.0)
    problem = LeastSquaresProblem(lambda p, a: exp_residuals(p, *a))
    ref = levenberg_marquardt(exp_residuals, jnp.asarray(P0), args=(X, Y))
    res = jax.jit(lambda x0: iterate(solver, problem, x0, (X, Y)))(jnp.asarray(P0))
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.x, ref.x, rtol=1e-8)
    args32 = (jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32))
    res32 = jax.jit(lambda x0: iterate(solver, problem, x0, args32))(jnp.asarray(P0, jnp.float32))
    assert res32.x.dtype == jnp.float32
    assert bool(res32.success), res32.message
    np.testing.assert_allclose(res32.x, ref.x, rtol=1e-3)


def test_refusals_name_the_problem():
    with pytest.raises(ValueError, match="NormalEquations"):
        LevenbergMarquardt(linear_solver=NormalEquations("cholesky", 1e6), broyden_update=True)
    with pytest.raises(ValueError, match="max_mem needs"):
        levenberg_marquardt(exp_residuals, jnp.asarray(P0), args=(X, Y), max_mem=1e6)
    with pytest.raises(ValueError, match="residual_chunk"):
        levenberg_marquardt(exp_residuals, jnp.asarray(P0), args=(X, Y), residual_chunk=spline_chunk)
    with pytest.raises(ValueError, match="method"):
        NormalEquations("lu")


def test_progress_callback_sees_every_step_without_recompiling():
    traces = []

    def residuals(x, a, b):
        traces.append(1)
        return a @ x - b

    seen_a, seen_b = [], []
    res = levenberg_marquardt(residuals, jnp.zeros(4), args=(A_LIN, B_LIN), callback=seen_a.append)
    n_traces = len(traces)
    again = levenberg_marquardt(residuals, jnp.zeros(4), args=(A_LIN, B_LIN), callback=seen_b.append)
    assert len(traces) == n_traces                      # a new callback is not a new compile
    # one Progress per trial step; small n: the first step (START) evaluates x0
    assert len(seen_a) == len(seen_b) == int(res.nfev)
    np.testing.assert_allclose(seen_a[-1].x, res.x, rtol=1e-12)
    np.testing.assert_allclose(seen_a[-1].fun, res.fun, rtol=1e-12)
    np.testing.assert_allclose(again.x, np.linalg.lstsq(A_LIN, B_LIN, rcond=None)[0], rtol=1e-10)
