"""The scipy-shaped front door: argument conventions, errors, callbacks, Newton-CG."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

from jaxinfer.optimize import OptimizeWarning, minimize


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosen_start(n):
    return jnp.array([-1.2, 1.0]) if n == 2 else jnp.linspace(-1.2, 1.0, n)


A = jnp.array([[4.0, 1.0, 0.0], [1.0, 3.0, 0.5], [0.0, 0.5, 2.0]])
B = jnp.array([1.0, -2.0, 0.5])


def quad(x):
    return 0.5 * x @ A @ x - B @ x


QUAD_MIN = np.linalg.solve(np.asarray(A), np.asarray(B))


@pytest.mark.parametrize("n", [2, 10, 100])
def test_newton_cg_rosenbrock(n):
    res = minimize(rosen, rosen_start(n), method="Newton-CG", options={"xtol": 1e-10})
    assert bool(res.success), res.message
    np.testing.assert_allclose(res.x, np.ones(n), atol=1e-6)
    if n == 10:  # scipy's Newton-CG with the same autodiff derivatives and xtol
        grad = jax.jit(jax.grad(rosen))
        hvp = jax.jit(lambda x, p: jax.jvp(jax.grad(rosen), (x,), (p,))[1])
        ref = so.minimize(lambda x: float(rosen(jnp.asarray(x))), np.asarray(rosen_start(n)),
                          jac=lambda x: np.asarray(grad(jnp.asarray(x))),
                          hessp=lambda x, p: np.asarray(hvp(jnp.asarray(x), jnp.asarray(p))),
                          method="Newton-CG", options={"xtol": 1e-10})
        np.testing.assert_allclose(res.x, ref.x, atol=1e-6)


def test_newton_cg_user_hessians():
    hessp = lambda x, p: A @ p  # noqa: E731
    hess = lambda x: A  # noqa: E731
    for kw in ({"hessp": hessp}, {"hess": hess}, {}):
        res = minimize(quad, jnp.zeros(3), method="newton-cg", options={"xtol": 1e-12}, **kw)
        assert bool(res.success)
        np.testing.assert_allclose(res.x, QUAD_MIN, atol=1e-10)


def test_method_names_case_insensitive_and_unknown():
    for name in ("bfgs", "BFGS", "l-bfgs-b", "L-BFGS-B"):
        res = minimize(quad, jnp.zeros(3), method=name)
        np.testing.assert_allclose(res.x, QUAD_MIN, atol=1e-5)
    # method=None chooses as scipy does: L-BFGS-B when there are bounds
    res = minimize(quad, jnp.zeros(3), bounds=[(None, 0.0)] * 3, tol=1e-12)
    ref = minimize(quad, jnp.zeros(3), method="L-BFGS-B", bounds=[(None, 0.0)] * 3, tol=1e-12)
    np.testing.assert_allclose(res.x, ref.x, atol=1e-14)
    with pytest.raises(ValueError, match="valid methods.*L-BFGS-B"):
        minimize(quad, jnp.zeros(3), method="nelder-mead")


def test_bad_options_refused_unusable_bounds_constraints_warned():
    # scipy warns about an unknown option (here a misspelt maxcor) and ignores it
    with pytest.warns(OptimizeWarning, match="Unknown solver options: maxcorr.*'maxcor'"):
        res = minimize(quad, jnp.zeros(3), method="L-BFGS-B", options={"maxcorr": 5})
    np.testing.assert_allclose(res.x, QUAD_MIN, atol=1e-5)
    # scipy warns and ignores bounds / constraints a method cannot use
    free = minimize(quad, jnp.zeros(3), method="BFGS")
    with pytest.warns(RuntimeWarning, match="Method BFGS cannot handle bounds"):
        res = minimize(quad, jnp.zeros(3), method="BFGS", bounds=[(0, 1)] * 3)
    np.testing.assert_allclose(res.x, free.x, atol=1e-12)
    with pytest.warns(RuntimeWarning, match="cannot handle constraints"):
        minimize(quad, jnp.zeros(3), method="L-BFGS-B",
                 constraints={"type": "eq", "fun": lambda x: x[0]})
    with pytest.raises(ValueError, match="expected 3"):
        minimize(quad, jnp.zeros(3), method="L-BFGS-B", bounds=Bounds2())
    with pytest.raises(ValueError, match="An upper bound is less than the corresponding lower bound"):
        minimize(quad, jnp.zeros(3), method="L-BFGS-B", bounds=[(1, 0)] * 3)
    with pytest.raises(ValueError, match="scalar"):
        minimize(lambda x: x, jnp.zeros(3), method="BFGS")
    # disp / eps are scipy options that do nothing here: accepted
    minimize(quad, jnp.zeros(3), method="L-BFGS-B", options={"disp": True, "eps": 1e-8})


class Bounds2:
    """A Bounds-like object with the wrong length."""
    lb = np.zeros(2)
    ub = np.ones(2)


def test_jac_conventions():
    g = jax.grad(quad)
    def fun_and_grad(x):
        return quad(x), g(x)

    for kw in ({"jac": g}, {"jac": True}):
        f = fun_and_grad if kw["jac"] is True else quad
        res = minimize(f, jnp.zeros(3), method="BFGS", options={"gtol": 1e-10}, **kw)
        assert bool(res.success)
        np.testing.assert_allclose(res.x, QUAD_MIN, atol=1e-9)
        np.testing.assert_allclose(res.jac, np.zeros(3), atol=1e-9)


def test_args_and_tol():
    def f(x, a, b):
        return jnp.sum((x - a) ** 2) * b

    a = jnp.array([1.0, 2.0])
    res = minimize(f, jnp.zeros(2), args=(a, 3.0), method="L-BFGS-B", tol=1e-12)
    np.testing.assert_allclose(res.x, a, atol=1e-10)
    # tol maps to gtol for BFGS: a loose tol stops earlier than a tight one
    loose = minimize(rosen, rosen_start(2), method="BFGS", tol=1e-2)
    tight = minimize(rosen, rosen_start(2), method="BFGS", tol=1e-9)
    assert int(loose.nit) < int(tight.nit)
    assert float(jnp.max(jnp.abs(loose.jac))) <= 1e-2


def test_pytree_x0_and_pytree_bounds():
    def f(p):
        return (p["a"] - 3.0) ** 2 + jnp.sum((p["b"] + 1.0) ** 2)

    x0 = {"a": jnp.asarray(0.0), "b": jnp.zeros(2)}
    res = minimize(f, x0, method="L-BFGS-B",
                   bounds=({"a": -10.0, "b": jnp.array([-0.5, -2.0])},
                           {"a": 2.0, "b": jnp.array([5.0, 5.0])}))
    assert set(res.x) == {"a", "b"} and res.x["b"].shape == (2,)
    np.testing.assert_allclose(res.x["a"], 2.0)
    np.testing.assert_allclose(res.x["b"], [-0.5, -1.0], atol=1e-6)
    assert set(res.jac) == {"a", "b"}


def test_callback_under_jit():
    seen = []

    def cb(intermediate_result):
        seen.append(float(intermediate_result.fun))

    res = jax.jit(lambda x0: minimize(rosen, x0, method="BFGS", callback=cb))(rosen_start(2))
    jax.block_until_ready(res.x)
    jax.effects_barrier()
    assert len(seen) == int(res.nit)
    assert seen[-1] == pytest.approx(float(res.fun))
    xs = []
    minimize(quad, jnp.zeros(3), method="L-BFGS-B", callback=lambda xk: xs.append(np.array(xk)))
    jax.effects_barrier()
    assert len(xs) >= 1 and xs[-1].shape == (3,)


def test_vmap_over_x0_newton_cg():
    starts = jnp.array([[-1.2, 1.0], [0.5, -0.5], [1.5, 2.0]])
    solve = jax.jit(jax.vmap(lambda x0: minimize(rosen, x0, method="Newton-CG",
                                                 options={"xtol": 1e-10})))
    res = solve(starts)
    assert res.x.shape == (3, 2) and bool(jnp.all(res.success))
    np.testing.assert_allclose(res.x, np.ones((3, 2)), atol=1e-6)
    one = jax.jit(lambda x0: minimize(rosen, x0, method="Newton-CG",
                                      options={"xtol": 1e-10}).x)
    np.testing.assert_allclose(res.x, jnp.stack([one(s) for s in starts]), atol=1e-12)
