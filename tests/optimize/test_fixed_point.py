"""fixed_point / FixedPoint against closed forms, numpy and scipy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

from jaxinfer.optimize import Status
from jaxinfer.optimize._iterate import RUNNING, iterate
from jaxinfer.optimize.fixed_point import FixedPoint, fixed_point, make_fixed_point_fn

DOTTIE = so.brentq(lambda x: np.cos(x) - x, 0.0, 1.0, xtol=1e-15)  # x = cos(x)


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
def test_cosine_fixed_point(dtype, tol):
    res = fixed_point(jnp.cos, jnp.asarray(1.0, dtype))
    assert res.x.dtype == dtype
    assert int(res.status) == Status.XTOL and bool(res.success)
    # |T(x) - x| <= sqrt(eps) and the map contracts with |T'| = sin(x*) ~ 0.67
    eps = float(jnp.finfo(dtype).eps)
    assert abs(float(res.x) - DOTTIE) <= 10 * np.sqrt(eps) * DOTTIE
    assert abs(float(res.x) - DOTTIE) <= tol(dtype, 1e-7, 2e-3)
    assert float(res.extra["residual_max"]) <= 2 * np.sqrt(eps)


# a slow linear contraction on a pytree: x = M x + c with spectral radius 0.97
_rng = np.random.default_rng(0)
_Q, _ = np.linalg.qr(_rng.normal(size=(5, 5)))
_M = _Q @ np.diag([0.97, 0.9, 0.5, -0.3, 0.1]) @ _Q.T
_C = _rng.normal(size=5)
_X_STAR = np.linalg.solve(np.eye(5) - _M, _C)


def _linear_map(x, M, c):
    v = jnp.concatenate([x["a"], x["b"]])
    w = M @ v + c
    return {"a": w[:2], "b": w[2:]}


@pytest.fixture(scope="module")
def linear_runs():
    x0 = {"a": jnp.zeros(2), "b": jnp.zeros(3)}
    args = (jnp.asarray(_M), jnp.asarray(_C))
    plain = fixed_point(_linear_map, x0, args, xtol=1e-12, xatol=1e-12, maxiter=5000)
    fast = fixed_point(_linear_map, x0, args, xtol=1e-12, xatol=1e-12, maxiter=5000,
                       accelerate="squarem")
    return plain, fast


def test_linear_contraction_matches_solve(linear_runs):
    plain, fast = linear_runs
    for res in (plain, fast):
        assert int(res.status) == Status.XTOL
        x = np.concatenate([np.asarray(res.x["a"]), np.asarray(res.x["b"])])
        # residual 1e-12 with contraction 0.97: error <= 1e-12 / 0.03 (+ scale)
        np.testing.assert_allclose(x, _X_STAR, rtol=0, atol=1e-9)
        r = np.concatenate([np.asarray(res.extra["residual"]["a"]),
                            np.asarray(res.extra["residual"]["b"])])
        np.testing.assert_allclose(r, _M @ x + _C - x, atol=1e-14)


def test_squarem_same_point_fewer_evaluations(linear_runs):
    plain, fast = linear_runs
    # plain iteration needs ~log(1e-12)/log(0.97) ~ 900 steps
    assert int(plain.nit) > 700 and int(plain.nfev) == int(plain.nit) + 1
    assert int(fast.nfev) * 3 < int(plain.nfev)
    assert int(fast.extra["accelerated"]) > 0


def test_maxiter_is_a_failure_and_nonfinite_is_reported():
    res = fixed_point(jnp.cos, 1.0, maxiter=5)
    assert int(res.status) == Status.MAX_ITER and not bool(res.success)
    assert int(res.nit) == 5
    assert abs(float(res.x) - np.cos(np.cos(np.cos(np.cos(np.cos(1.0)))))) <= 1e-15
    res = fixed_point(lambda x: 3.0 * x + 1.0, 1.0, maxiter=10_000)
    assert int(res.status) == Status.NONFINITE and not bool(res.success)


# ---- EM for a two-component 1-D Gaussian mixture -------------------------------------------

def _gmm_data():
    rng = np.random.default_rng(1)
    return np.concatenate([rng.normal(-1.0, 0.6, 150), rng.normal(1.5, 1.0, 250)])


def _log_components(p, y):
    w = jnp.stack([p["logit"], -p["logit"]])
    logw = jax.nn.log_sigmoid(w)
    mu, var = p["mu"], p["var"]
    return logw - 0.5 * jnp.log(2 * jnp.pi * var) - 0.5 * (y[:, None] - mu) ** 2 / var


def _em_step(p, y):
    """One EM step; also returns the log-likelihood at the input parameters."""
    lc = _log_components(p, y)
    ll = jax.scipy.special.logsumexp(lc, axis=1)
    r = jnp.exp(lc - ll[:, None])
    nk = r.sum(0)
    mu = (r * y[:, None]).sum(0) / nk
    var = (r * (y[:, None] - mu) ** 2).sum(0) / nk
    w = nk / y.shape[0]
    return {"logit": jnp.log(w[0]) - jnp.log(w[1]), "mu": mu, "var": var}, ll.sum()


def _scipy_gmm_mle(y, start):
    def nll(t):
        logit, m1, m2, lv1, lv2 = t
        w = 1 / (1 + np.exp(-logit))
        d = lambda m, lv: np.exp(-0.5 * (y - m) ** 2 / np.exp(lv)) / np.sqrt(  # noqa: E731
            2 * np.pi * np.exp(lv))
        return -np.sum(np.log(w * d(m1, lv1) + (1 - w) * d(m2, lv2)))
    return so.minimize(nll, start, method="BFGS", options={"gtol": 1e-7})


def test_em_gaussian_mixture_matches_scipy_mle():
    y = jnp.asarray(_gmm_data())
    p0 = {"logit": jnp.asarray(0.0), "mu": jnp.array([-0.5, 0.5]), "var": jnp.array([1.0, 1.0])}
    seen = []
    res = fixed_point(_em_step, p0, args=(y,), objective=True, ftol=1e-13, xtol=0.0,
                      xatol=0.0, maxiter=2000, callback=lambda pr: seen.append(float(pr.fun)))
    assert int(res.status) == Status.FTOL and bool(res.success)
    # EM never decreases the log-likelihood
    assert np.all(np.diff(seen) >= -1e-9)
    assert len(seen) == int(res.nit)
    p = res.x
    start = [float(p0["logit"]), -0.5, 0.5, 0.0, 0.0]
    ref = _scipy_gmm_mle(np.asarray(y), start)
    assert np.max(np.abs(ref.jac)) <= 1e-3  # finite-difference BFGS: stationary to ~1e-4
    assert abs(float(res.fun) + ref.fun) <= 1e-8 * abs(ref.fun)
    ours = np.array([float(p["logit"]), *np.asarray(p["mu"]), *np.log(np.asarray(p["var"]))])
    np.testing.assert_allclose(ours, ref.x, atol=1e-4)
    # the objective is the log-likelihood at res.x exactly
    ll = float(jax.scipy.special.logsumexp(_log_components(p, y), axis=1).sum())
    assert abs(float(res.fun) - ll) <= 1e-10 * abs(ll)


def test_em_with_separate_objective_and_squarem_agree():
    y = jnp.asarray(_gmm_data())
    p0 = {"logit": jnp.asarray(0.0), "mu": jnp.array([-0.5, 0.5]), "var": jnp.array([1.0, 1.0])}

    def step(p, y):
        return _em_step(p, y)[0]

    def loglik(p, y):
        return jax.scipy.special.logsumexp(_log_components(p, y), axis=1).sum()

    kw = dict(args=(y,), objective=loglik, xtol=1e-10, xatol=1e-10, ftol=0.0, maxiter=2000)
    plain = fixed_point(step, p0, **kw)
    fast = fixed_point(step, p0, accelerate="squarem", **kw)
    assert int(plain.status) == int(fast.status) == Status.XTOL
    for k in ("mu", "var"):
        np.testing.assert_allclose(fast.x[k], plain.x[k], rtol=1e-7)
    assert abs(float(fast.fun) - float(plain.fun)) <= 1e-9 * abs(float(plain.fun))
    assert int(fast.nfev) < int(plain.nfev)


# ---- the solver Module: by hand, under jit and vmap, compiled once --------------------------

def test_hand_driven_solver_matches_front_door():
    solver = FixedPoint(xtol=1e-12, xatol=1e-12, maxiter=500)
    fn = make_fixed_point_fn(lambda x, a: jnp.cos(a * x), lambda v: v[0])
    x0 = jnp.array([1.0])
    state = solver.init(fn, x0, (0.9,))
    k = 0
    while int(solver.terminate(fn, state, (0.9,))) == RUNNING:
        state = solver.step(fn, state, (0.9,))
        k += 1
    status = solver.terminate(fn, state, (0.9,))
    ref = fixed_point(lambda x, a: jnp.cos(a * x), 1.0, args=(0.9,), xtol=1e-12, xatol=1e-12,
                      maxiter=500)
    assert int(status) == int(ref.status) == Status.XTOL
    assert k == int(ref.nit) == int(state.nit)
    assert float(state.x[0]) == pytest.approx(float(ref.x), abs=1e-15)
    root = so.brentq(lambda x: np.cos(0.9 * x) - x, 0.0, 2.0, xtol=1e-15)
    assert abs(float(ref.x) - root) <= 1e-11


def test_vmap_of_iterate_equals_loop():
    solver = FixedPoint(xtol=1e-12, xatol=1e-12, maxiter=500)
    fn = make_fixed_point_fn(lambda x, a: jnp.cos(a * x), lambda v: v[0])
    scales = jnp.array([0.5, 0.9, 1.2])
    batched = jax.jit(jax.vmap(lambda a: iterate(solver, fn, jnp.array([1.0]), (a,))))(scales)
    for i, a in enumerate(np.asarray(scales)):
        root = so.brentq(lambda x: np.cos(a * x) - x, 0.0, 2.0, xtol=1e-15)
        assert abs(float(batched.x[i, 0]) - root) <= 1e-10
        assert int(batched.status[i]) == Status.XTOL


def test_same_shapes_do_not_recompile():
    traces = []

    def T(x, c):
        traces.append(1)
        return 0.5 * x + c

    counts = []
    for c in (1.0, 2.0, 3.0):
        res = fixed_point(T, jnp.zeros(3), args=(jnp.full(3, c),))
        np.testing.assert_allclose(res.x, 2 * c, rtol=1e-7)
        counts.append(len(traces))
    assert counts[0] >= 1 and counts[2] == counts[0]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="accelerate"):
        fixed_point(jnp.cos, 1.0, accelerate="anderson")
    with pytest.raises(ValueError, match="xtol"):
        fixed_point(jnp.cos, 1.0, xtol=-1.0)
    with pytest.raises(ValueError, match="maxiter"):
        fixed_point(jnp.cos, 1.0, maxiter=2.5)
    with pytest.raises(TypeError, match="objective"):
        fixed_point(jnp.cos, 1.0, objective="loglik")
    with pytest.raises(ValueError, match="structure and shapes"):
        fixed_point(lambda x: jnp.concatenate([x, x]), jnp.zeros(2))
    with pytest.raises(ValueError, match="pair"):
        fixed_point(jnp.cos, 1.0, objective=True)
    with pytest.raises(ValueError, match="triple"):
        fixed_point(lambda x: (jnp.cos(x), x), 1.0, objective=True, has_aux=True)
    with pytest.raises(ValueError, match="monotone needs an objective"):
        fixed_point(jnp.cos, 1.0, accelerate="squarem", monotone="increase")
    with pytest.raises(ValueError, match="history"):
        fixed_point(jnp.cos, 1.0, history=-1)


def test_implicit_gradient_of_a_fixed_point_matches_central_differences():
    # x = 0.5 tanh(A x + theta) + 0.1 x^2 * s: a contraction in x; d(sum x*^2)/d(theta, s)
    # by the implicit function theorem against central differences of re-solves
    A = jnp.array([[0.3, -0.2, 0.1], [0.1, 0.4, -0.3], [-0.2, 0.1, 0.2]])

    def T(x, theta, s):
        return 0.5 * jnp.tanh(A @ x + theta) + 0.1 * s * x ** 2

    def solve(theta, s):
        return fixed_point(T, jnp.zeros(3), args=(theta, s), xtol=1e-14, xatol=1e-14).x

    loss = jax.jit(lambda theta, s: jnp.sum(solve(theta, s) ** 2 + solve(theta, s)))
    theta, s = jnp.array([0.4, -0.7, 1.1]), jnp.asarray(0.8)
    g_theta, g_s = jax.jit(jax.grad(loss, argnums=(0, 1)))(theta, s)
    h = 1e-5
    fd = np.array([(loss(theta.at[i].add(h), s) - loss(theta.at[i].add(-h), s)) / (2 * h)
                   for i in range(3)])
    np.testing.assert_allclose(g_theta, fd, rtol=1e-5)
    np.testing.assert_allclose(g_s, (loss(theta, s + h) - loss(theta, s - h)) / (2 * h), rtol=1e-5)
    # the value is the fixed point itself, also under jit
    x = jax.jit(solve)(theta, s)
    np.testing.assert_allclose(T(x, theta, s), x, atol=1e-12)


# ---- the channels EM needs: aux, history, traced tolerances, monotone SQUAREM ----------------

def _em_step_aux(p, y):
    """The EM step with the component sizes n_k at the input parameters as aux."""
    lc = _log_components(p, y)
    r = jnp.exp(lc - jax.scipy.special.logsumexp(lc, axis=1)[:, None])
    new, ll = _em_step(p, y)
    return new, ll, {"nk": r.sum(0), "step": jnp.asarray(1, jnp.int32)}


def test_aux_history_and_monotone_squarem_on_em():
    y = jnp.asarray(_gmm_data())
    p0 = {"logit": jnp.asarray(0.0), "mu": jnp.array([-0.5, 0.5]), "var": jnp.array([1.0, 1.0])}
    res = fixed_point(_em_step_aux, p0, args=(y,), objective=True, has_aux=True, history=300,
                      ftol=1e-13, xtol=0.0, xatol=0.0, maxiter=300, accelerate="squarem",
                      monotone="increase")
    nit = int(res.nit)
    assert int(res.status) == Status.FTOL and 0 < nit < 300
    assert int(res.extra["accelerated"]) > 0
    # the same maximum as scipy's direct MLE (test_em_gaussian_mixture_matches_scipy_mle)
    ref = _scipy_gmm_mle(np.asarray(y), [0.0, -0.5, 0.5, 0.0, 0.0])
    assert abs(float(res.fun) + ref.fun) <= 1e-8 * abs(ref.fun)
    # history: the objective at x_0 .. x_nit, monotone although extrapolated; NaN after
    history = np.asarray(res.extra["history"])
    assert history.shape == (301,) and np.all(np.isnan(history[nit + 1:]))
    assert history[0] == pytest.approx(float(_em_step(p0, y)[1]), rel=1e-14)
    assert history[nit] == float(res.fun) and history[nit - 1] == float(res.extra["fun_prev"])
    assert np.all(np.diff(history[: nit + 1]) >= -1e-12 * np.abs(history[1: nit + 1]))
    # aux is that of the evaluation at res.x: n_k there, recomputed in closed form
    lc = _log_components(res.x, y)
    nk = np.exp(lc - jax.scipy.special.logsumexp(lc, axis=1)[:, None]).sum(0)
    np.testing.assert_allclose(res.extra["aux"]["nk"], nk, rtol=1e-12)
    aux_h = res.extra["aux_history"]
    assert aux_h["nk"].shape == (301, 2) and aux_h["step"].dtype == jnp.int32
    np.testing.assert_array_equal(aux_h["nk"][nit], res.extra["aux"]["nk"])
    np.testing.assert_array_equal(aux_h["step"], (np.arange(301) <= nit).astype(np.int32))
    np.testing.assert_allclose(np.sum(aux_h["nk"][: nit + 1], axis=1), y.shape[0], rtol=1e-12)


def test_traced_tolerances_share_one_program():
    # FixedPoint's tolerances and maxiter as 0-d arrays: one trace for any values
    traces = []

    def T(x, a):
        return jnp.cos(a * x), jnp.sum(x ** 2)

    fn = make_fixed_point_fn(T, lambda v: v, objective=True)

    @jax.jit
    def run(ftol, maxiter):
        traces.append(1)
        solver = FixedPoint(xtol=0.0, xatol=0.0, ftol=ftol, fatol=0.0, maxiter=maxiter,
                            use_objective=True, history_size=50)
        return iterate(solver, fn, jnp.array([1.0]), (0.9,))

    loose, tight, capped = (run(jnp.asarray(f), jnp.asarray(m, jnp.int32))
                            for f, m in ((1e-3, 100), (1e-10, 100), (0.0, 4)))
    assert len(traces) == 1
    root = so.brentq(lambda x: np.cos(0.9 * x) - x, 0.0, 2.0, xtol=1e-15)
    assert int(loose.status) == int(tight.status) == Status.FTOL
    assert int(loose.nit) < int(tight.nit)
    assert abs(float(tight.x[0]) - root) <= 1e-6
    assert int(capped.status) == Status.MAX_ITER and int(capped.nit) == 4
    np.testing.assert_allclose(capped.extra["history"][:5],
                               [x ** 2 for x in _cos_iterates(1.0, 0.9, 5)], rtol=1e-14)
    with pytest.raises(ValueError, match="monotone needs an objective"):
        FixedPoint(accelerate="squarem", monotone="increase")


def _cos_iterates(x, a, n):
    out = [x]
    for _ in range(n - 1):
        out.append(np.cos(a * out[-1]))
    return out


@pytest.mark.parametrize("accelerate", [None, "squarem"])
def test_start_in_step_gives_the_same_run(accelerate):
    # the evaluation at x0 moved into the first step: same iterates, counts and history
    fn = make_fixed_point_fn(lambda x, a: (jnp.cos(a * x), jnp.sum(x ** 2)), lambda v: v,
                             objective=True)
    runs = []
    for lazy in (False, True):
        solver = FixedPoint(xtol=1e-12, xatol=1e-12, ftol=0.0, maxiter=200, use_objective=True,
                            accelerate=accelerate, history_size=200, start_in_step=lazy)
        seen = []
        res = jax.jit(lambda: iterate(solver, fn, jnp.array([1.0]), (0.9,),
                                      callback=lambda p: seen.append(int(p.nit))))()
        jax.block_until_ready(res)
        runs.append((res, seen))
    (eager, seen_eager), (lazy, seen_lazy) = runs
    assert int(eager.status) == int(lazy.status) == Status.XTOL
    assert int(eager.nit) == int(lazy.nit) and int(eager.nfev) == int(lazy.nfev)
    assert float(lazy.x[0]) == float(eager.x[0])
    np.testing.assert_array_equal(lazy.extra["history"], eager.extra["history"])
    assert seen_lazy == [0] + seen_eager
