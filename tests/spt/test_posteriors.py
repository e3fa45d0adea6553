"""Negative log-posteriors against TRamWAy 0.7's own objective functions (fixtures made by
benchmarks/spt/make_posterior_fixtures.py), finite differences, float32 and time priors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinfer.spt import posteriors as P
from jaxinfer.spt.cells import time_variation_stencil
from jaxinfer.spt.gradient import delta0_stencil, grad1_stencil

from ._core_fixtures import NAMES, cases, load, tramway_cells


@functools.lru_cache(maxsize=None)
def _problem(name):
    f = load(name)
    all_cells = tramway_cells(f)
    cells = all_cells.with_neighbours_only()
    lists = cells.neighbour_lists()
    return dict(f=f, all_cells=all_cells, cells=cells,
                grad=grad1_stencil(cells.centers, lists),
                delta=delta0_stencil(cells.centers, lists), s2=float(f["sigma2"]))


@pytest.fixture(scope="module", params=NAMES)
def problem(request):
    return _problem(request.param)


# fixture mode name -> registry entry (jaxinfer.spt.modes, the one table of modes)
_REGISTRY_NAME = {"d": "smooth.d", "dd": "smooth.dd", "df": "smooth.df", "dv": "dv",
                  "stochastic.dv": "stochastic.dv", "unsmooth.d": "unsmooth.d"}
_FIXTURE_KEY = {"diffusivity": "D", "drift": "drift", "force": "force", "potential": "V"}


def _ours(mode, p, pr):
    """The registry's posterior of ``mode`` at the fixture's parameters."""
    from jaxinfer.spt.modes import PER_CELL, REGISTRY, CellProblem, Problem

    cells, s2 = pr["cells"], pr["s2"]
    reg = pr["grad"]
    if mode.endswith(".delta0"):  # TRamWAy's *_neg_posterior1: priors on delta0
        mode, reg = mode[:-len(".delta0")], pr["delta"]
    entry = REGISTRY[_REGISTRY_NAME[mode]]
    jf = bool(p["jeffreys_prior"])
    if entry.kind == PER_CELL:
        ac = pr["all_cells"]
        cell_problems = CellProblem.of_cells(ac, s2, 1.0, jf)
        D = p["factor"] * ac.initial_diffusivity()
        return _jitted(jax.vmap(entry.posterior), ("vmap", entry.name))(
            {"diffusivity": D[:, None]}, cell_problems).sum()

    def lam(k):
        return jnp.asarray(0.0 if p.get(k) is None else p[k])

    priors = {k: lam(f"{k}_prior") for k in ("diffusivity", "drift", "force", "potential",
                                              "diffusivity_time", "potential_time")}
    problem = Problem(cells=cells, grad=pr["grad"], regularizer=reg, sigma2=jnp.asarray(s2),
                      priors=priors, normalization=jnp.asarray(1.0), offset=jnp.asarray(0.0),
                      delta=pr["delta"], jeffreys=jf)
    params = {name: jnp.asarray(p[_FIXTURE_KEY[name]]) for name in entry.parameters}
    return _jitted(entry.posterior, entry.name)(params, problem)


_JITTED = {}


def _jitted(fun, key):
    """One compiled program per mode (op-by-op evaluation compiled every primitive apart)."""
    return _JITTED.setdefault(key, jax.jit(fun))


def test_objectives_match_tramway(problem):
    seen = set()
    for mode, params, value in cases(problem["f"]):
        ours = float(_ours(mode, params, problem))
        assert ours == pytest.approx(value, rel=1e-10), (mode, params.keys())
        seen.add(mode)
    assert seen == {"d", "dd", "df", "dv", "stochastic.dv", "unsmooth.d", "d.delta0",
                    "dd.delta0", "df.delta0", "dv.delta0"}


def test_initial_values_match_tramway(problem):
    f, cells = problem["f"], problem["cells"]
    np.testing.assert_allclose(cells.dt_mean, f["dt_mean"], rtol=1e-12)
    np.testing.assert_allclose(cells.initial_diffusivity(), f["D_initial"], rtol=1e-12)
    from jaxinfer.spt.infer import _initial_potential, _lower_diffusivity

    np.testing.assert_allclose(_lower_diffusivity(cells, problem["s2"], None), f["D_lower"],
                               rtol=1e-12)
    np.testing.assert_allclose(_initial_potential(cells, None), f["V_initial"], rtol=1e-10,
                               atol=1e-12)


def test_autodiff_gradients_match_finite_differences():
    problem = _problem("grid6")
    cells, g, d0, s2 = problem["cells"], problem["grad"], problem["delta"], problem["s2"]
    m = cells.ncells
    rng = np.random.default_rng(0)
    D = jnp.asarray(problem["f"]["D_initial"] * np.exp(0.2 * rng.normal(size=m)))
    V = jnp.asarray(problem["f"]["V_initial"])
    a = jnp.asarray(0.3 * rng.normal(size=(m, 2)))
    funs = {
        "d": lambda x: P.d_neg_posterior(x[:m], cells, g, s2, 5.0, True),
        "dd": lambda x: P.dd_neg_posterior(x[:m], x[m:].reshape(m, 2), cells, g, s2, 5.0, 1.0, True),
        "df": lambda x: P.df_neg_posterior(x[:m], x[m:].reshape(m, 2), cells, g, s2, 5.0, 1.0, True),
        "dv": lambda x: P.dv_neg_posterior(x[:m], x[m:], cells, g, s2, 5.0, 1.0, True),
        "sdv": lambda x: P.stochastic_dv_neg_posterior(x[:m], x[m:], cells, g, d0, s2,
                                                       diffusivity_prior=5.0, potential_prior=1.0,
                                                       jeffreys_prior=True),
    }
    xs = {"d": D, "dd": jnp.r_[D, a.ravel()], "df": jnp.r_[D, a.ravel()], "dv": jnp.r_[D, V],
          "sdv": jnp.r_[D, V]}
    for name, fun in funs.items():
        x = xs[name]
        gr = np.asarray(jax.jit(jax.grad(fun))(x))
        idx = rng.choice(x.shape[0], size=6, replace=False)
        h = 1e-6 * np.maximum(1.0, np.abs(np.asarray(x)[idx]))
        E = np.zeros((6, x.shape[0]))
        E[np.arange(6), idx] = h
        vals = jax.jit(jax.vmap(fun))(jnp.r_[x + E, x - E])
        fd = (np.asarray(vals[:6]) - np.asarray(vals[6:])) / (2 * h)
        np.testing.assert_allclose(gr[idx], fd, rtol=1e-5, atol=1e-4, err_msg=name)


def test_float32_close_to_float64():
    problem = _problem("kmeans")
    cells, g, s2 = problem["cells"], problem["grad"], problem["s2"]
    f = problem["f"]
    c32 = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a, cells)
    g32 = jax.tree_util.tree_map(
        lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a, g)
    v64 = P.dv_neg_posterior(f["D_initial"], f["V_initial"], cells, g, s2, 5.0, 1.0, True)
    v32 = P.dv_neg_posterior(jnp.asarray(f["D_initial"], jnp.float32),
                             jnp.asarray(f["V_initial"], jnp.float32), c32, g32,
                             jnp.float32(s2), 5.0, 1.0, True)
    assert v32.dtype == jnp.float32
    assert float(v32) == pytest.approx(float(v64), rel=1e-4)


def test_dv_skips_cells_with_undefined_gradient_and_ridge_quirk():
    """TRamWAy's DV drops cells whose grad V is undefined; DD's drift prior is a ridge penalty
    scaled by the total area (closed forms on a 3-cell column)."""
    from jaxinfer.spt.cells import cells_from_arrays

    centers = np.array([[0.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    rng = np.random.default_rng(3)
    dr = rng.normal(scale=0.1, size=(9, 2))
    cells = cells_from_arrays(np.repeat([0, 1, 2], 3), dr, np.full(9, 0.05), centers,
                              np.array([1.0, 2.0, 3.0]), [np.array([1]), np.array([0, 2]), np.array([1])])
    g = grad1_stencil(cells.centers, cells.neighbour_lists())
    D = jnp.array([0.1, 0.2, 0.3])
    V = jnp.array([0.0, 1.0, 3.0])
    # every cell has an undefined x component: DV keeps only the Jeffreys term
    assert float(P.dv_neg_posterior(D, V, cells, g, 1e-3, 1.0, 1.0, False)) == 0.0
    a = jnp.asarray(rng.normal(size=(3, 2)))
    base = P.dd_neg_posterior(D, a, cells, g, 1e-3, 0.0, 0.0)
    with_ridge = P.dd_neg_posterior(D, a, cells, g, 1e-3, 0.0, 2.0)
    assert float(with_ridge - base) == pytest.approx(2.0 * 6.0 * float(jnp.sum(a * a)), rel=1e-12)
    # the Jeffreys precedence bug of stochastic DV: 2 log(D<dt>+s2) - log D per cell
    d0 = delta0_stencil(cells.centers, cells.neighbour_lists())
    kw = dict(diffusivity_prior=0.0, potential_prior=0.0)
    plain = P.local_dv_neg_posteriors(D, V, cells, g, d0, 1e-3, **kw)
    bug = P.local_dv_neg_posteriors(D, V, cells, g, d0, 1e-3, jeffreys_prior=True, **kw)
    fixed = P.local_dv_neg_posteriors(D, V, cells, g, d0, 1e-3, jeffreys_prior=True,
                                      tramway_jeffreys_bug=False, **kw)
    lg = np.log(np.asarray(D) * 0.05 + 1e-3)
    np.testing.assert_allclose(bug - plain, 2 * lg - np.log(D), rtol=1e-12)
    np.testing.assert_allclose(fixed - plain, 2 * (lg - np.log(D)), rtol=1e-12)


def test_time_prior_on_space_time_cells():
    import pandas as pd

    from jaxinfer.spt.cells import space_time_cells
    from jaxinfer.spt.tessellation import tessellate

    rng = np.random.default_rng(4)
    n = 600
    tr = pd.DataFrame(dict(n=np.arange(n), x=rng.uniform(0, 1, n), y=rng.uniform(0, 1, n),
                           t=rng.uniform(0, 3, n), dx=rng.normal(0, .1, n), dy=rng.normal(0, .1, n),
                           dt=np.full(n, 0.05)))
    part = tessellate(tr, "grid", count_per_dim=[2, 2], lower_bound=[0, 0], upper_bound=[1, 1])
    cells = space_time_cells(part, window_duration=1.0)
    assert cells.ncells == 12 and int(np.sum(cells.counts)) == n
    ids = np.asarray(cells.cell_ids)
    tn = cells.time_neighbour_lists()
    for k, c in enumerate(ids):
        w, s = divmod(int(c), 4)
        assert sorted(ids[tn[k]].tolist()) == [q * 4 + s for q in (w - 1, w + 1) if 0 <= q < 3]
        # spatial neighbours stay in the same window
        assert all(int(q) // 4 == w for q in ids[cells.neighbour_lists()[k]])
    T = time_variation_stencil(cells)
    X = rng.normal(size=12)
    out = np.asarray(T.apply(X))
    tc = np.asarray(cells.time_centers)
    for k in range(12):
        for side, sel in enumerate((tc[tn[k]] < tc[k], tc[tn[k]] > tc[k])):
            nb = tn[k][sel]
            exp = 0.0 if nb.size == 0 else (X[k] - X[nb].mean()) / (tc[k] - tc[nb].mean())
            assert out[k, side] == pytest.approx(exp, rel=1e-12, abs=1e-14)
    g = grad1_stencil(cells.centers, cells.neighbour_lists())
    d0 = delta0_stencil(cells.centers, cells.neighbour_lists())
    D, V = jnp.full(12, 0.1) * (1 + 0.1 * jnp.arange(12)), jnp.zeros(12)
    base = P.stochastic_dv_neg_posterior(D, V, cells, g, d0, 1e-3)
    with_t = P.stochastic_dv_neg_posterior(D, V, cells, g, d0, 1e-3, time=T,
                                           diffusivity_time_prior=3.0)
    assert float(with_t - base) == pytest.approx(3.0 * float(np.sum(np.asarray(T.apply(D)) ** 2)),
                                                 rel=1e-12)


def test_exact_normalization_in_3d():
    """TRamWAy's likelihood normalisation is exact in 2D only: in 3D its per-cell optimum
    (sigma = 0) is sum r^2 / (4 n dt), 1.5x the MLE sum r^2 / (6 n dt) that weight dim/2 gives."""
    from jaxinfer.spt.cells import cells_from_arrays

    rng = np.random.default_rng(5)
    n = np.array([40, 60])
    cid = np.repeat([0, 1], n)
    dr = rng.normal(scale=np.sqrt(2 * 0.1 * 0.05), size=(n.sum(), 3))
    cells = cells_from_arrays(cid, dr, np.full(n.sum(), 0.05), np.zeros((2, 3)), np.ones(2),
                              [np.array([1]), np.array([0])])
    s = np.array([np.sum(dr[cid == k] ** 2) for k in range(2)])

    def grad_at(D, w):
        return jax.grad(lambda d: jnp.sum(P.unsmooth_d_neg_posterior(d, cells, 0.0,
                                                                     normalization=w)))(D)

    np.testing.assert_allclose(grad_at(jnp.asarray(s / (4 * n * 0.05)), 1.0), 0.0, atol=1e-8)
    np.testing.assert_allclose(grad_at(jnp.asarray(s / (6 * n * 0.05)), 1.5), 0.0, atol=1e-8)


def test_duration_groups_give_the_per_translocation_likelihood():
    """The grouped sufficient statistics equal the term-by-term sum over translocations
    (cells without groups, one group per slot) with mixed durations and a drift."""
    import equinox as eqx

    from jaxinfer.spt.cells import cells_from_arrays

    rng = np.random.default_rng(3)
    n, m = 600, 12
    dt = rng.choice([0.05, 0.1, 0.1 + 1e-17, 0.15], n)  # equal durations share a group
    cells = cells_from_arrays(rng.integers(0, m, n), rng.normal(0, 0.3, (n, 2)), dt,
                              rng.uniform(0, 1, (m, 2)), np.ones(m), [np.arange(m)] * m)
    assert cells.groups.dt.shape[1] <= 4 < cells.dt.shape[1]
    padded = eqx.tree_at(lambda c: c.groups, cells, None, is_leaf=lambda x: x is None)
    assert padded.groups is None
    D = jnp.asarray(rng.uniform(0.05, 0.5, m))
    v = jnp.asarray(rng.normal(0, 2, (m, 2)))
    for velocity in (None, v):
        grouped = P.cell_neg_log_likelihood(D, cells, 0.02**2, velocity)
        direct = P.cell_neg_log_likelihood(D, padded, 0.02**2, velocity)
        np.testing.assert_allclose(grouped, direct, rtol=1e-12)
    # and the gradient (what the solvers see)
    g1 = jax.grad(lambda d: jnp.sum(P.cell_neg_log_likelihood(d, cells, 4e-4, v)))(D)
    g2 = jax.grad(lambda d: jnp.sum(P.cell_neg_log_likelihood(d, padded, 4e-4, v)))(D)
    np.testing.assert_allclose(g1, g2, rtol=1e-10)
