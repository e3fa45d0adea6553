"""Moments of tilted distributions ``p(y|z) N(z | μ, 1/τ)`` by a JAX quadrature.

glimix-core delegates this to the C library liknorm (1000 uniform sub-intervals with a local
quadratic model of the log-partition). Here it is plain JAX, vectorised over sites:

1. **Mode.** The tilted log-density ``f(z) = l(z) - τ(z - μ)²/2`` (``l = log p(y|z)``) is
   concave for every likelihood in :mod:`jaxinfer.glmm.lik`. Its mode is found by Newton's
   method safeguarded by bisection inside a bracket each likelihood supplies
   (``mode_bracket``), with closed-form ``l'`` and ``l''``.
2. **Gauss–Hermite first.** A rule of 80 nodes centred at the mode with the Laplace width
   ``1/sqrt(-f''(m))`` is exact for a Gaussian tilted density and converges fast when the
   density is close to one (the sites of an ordinary GLMM fit). It is checked against a
   40-node rule: where every site's two results agree to 1e-7 (log Z, mean in units of the
   sd, relative variance; ``100·eps`` below float64), the 80-node result is used. Over
   ~6,600 random and stored cavities the accepted results were within 1e-10 of the panels
   below (which match ``scipy.integrate.quad`` to ~1e-14), mostly within 1e-13.
3. **Otherwise, graded panels for every site** (one ``lax.cond``: wide cavities, cavities
   that disagree with the outcome). Cover: ``f`` falls at least as fast as the Gaussian
   ``τ(z - m)²/2`` away from the mode ``m``, so ``[m - d_L, m + d_R]`` with
   ``f(m ± d) ≤ f(m) - 40`` holds all but ``~e^-40`` of the mass. ``d`` is the first rung of
   a geometric ladder (factor √2) of offsets, scaled by the local width, where that holds
   (found by bisection on the rungs, 7 evaluations per side); capped by the Gaussian bound
   ``sqrt(80/τ)``. The cover is cut at the mode and at the likelihood's bend
   (``feature_point``: z = 0 for the logit / log links, whose complex singularities sit at
   ``±iπ``). Each of the three pieces is split in two halves whose panels grow geometrically
   away from the piece's ends (scale ``1/sqrt(-f''(m))`` at the mode, 1 at the bend, the
   piece's length at the cover's ends), so panels are short where the integrand has
   structure and long in smooth tails: 6 halves × 8 panels × 8 Gauss–Legendre nodes = 384
   points per site (16 panels per half changed the moments by < 1e-14 on the benchmark
   cavities and took 1.7x as long).

``log Z``, mean and variance come from one weighted pass (variance about the mean). The mesh
is built under ``stop_gradient``: derivatives of the moments with respect to ``(η, τ)`` are
the quadrature of the derivative integrands on a fixed mesh, which is what the EP
marginal-likelihood gradient needs (the ``lax.cond`` differentiates branch by branch).
Cost per site: 120 points when the Hermite rule is taken (~1 ms for 300 sites against 4.6 ms
for the panels alone, one thread), 504 when it is not.

Accuracy: ~1e-14 relative against ``scipy.integrate.quad`` over wide ranges of cavities;
agreement with liknorm is ~1e-9 on typical sites and limited by liknorm elsewhere (its own
error reaches 1e-4..1 for very wide cavities; see tests/glmm/test_lik.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# liknorm floors the cavity precision at 2·sqrt(DBL_EPSILON) before integrating.
CAVITY_PRECISION_FLOOR = 2.0 * float(np.sqrt(np.finfo(np.float64).eps))
_COVER_DROP = 40.0   # log-density drop that defines the integration cover (e^-40 ≈ 4e-18)
_N_PANELS = 8        # panels per half piece
_N_NODES = 8         # Gauss–Legendre nodes per panel
_LADDER = np.sqrt(2.0) ** np.arange(-24, 72)  # cover offsets / local width: 1e-4 .. 1e11
_BISECTIONS = int(np.ceil(np.log2(len(_LADDER) + 1)))  # 7: enough to single out a rung
_MODE_ITERS = 100
_HERMITE = (40, 80)    # Gauss–Hermite sizes: the check and the rule used
_HERMITE_TOL = 1e-7    # their largest gap (log Z, mean / sd, relative variance) to use the rule


def clamp_cavity_precision(tau):
    """liknorm's floor on the cavity precision: ``max(τ, 2·sqrt(eps_float64))``."""
    return jnp.maximum(tau, jnp.asarray(CAVITY_PRECISION_FLOOR, jnp.result_type(tau)))


@functools.lru_cache(maxsize=None)
def _unit_rule():
    """Gauss–Legendre rule on [-1, 1] for one panel, laid out for all panels of a half."""
    nodes, weights = np.polynomial.legendre.leggauss(_N_NODES)
    return nodes, weights


def _find_mode(derivs, lo, hi, x0):
    """Newton–bisection (rtsafe) for the root of f' in [lo, hi], vectorised; f concave."""
    dtype = x0.dtype
    rtol = jnp.asarray(8 * jnp.finfo(dtype).eps, dtype)
    tiny = jnp.asarray(jnp.finfo(dtype).tiny, dtype)

    def cond(state):
        i, _, _, _, done = state
        return (i < _MODE_ITERS) & ~jnp.all(done)

    def body(state):
        i, x, lo, hi, done = state
        _, g, h = derivs(x)
        lo = jnp.where(g > 0, x, lo)   # f' decreasing: the root is right of x when f' > 0
        hi = jnp.where(g > 0, hi, x)
        newton = x - g / jnp.minimum(h, -tiny)
        inside = (newton > lo) & (newton < hi)
        x_new = jnp.where(inside, newton, 0.5 * (lo + hi))
        x_new = jnp.where(g == 0, x, x_new)   # exactly at the root: stay
        small = rtol * (1.0 + jnp.abs(x_new))
        now_done = (jnp.abs(x_new - x) <= small) | (hi - lo <= small) | (g == 0)
        return i + 1, jnp.where(done, x, x_new), lo, hi, done | now_done

    x0 = jnp.clip(x0, lo, hi)
    _, x, _, _, _ = jax.lax.while_loop(cond, body, (0, x0, lo, hi, jnp.zeros(x0.shape, bool)))
    return x


def _laplace(likelihood, outcome, trials, mu, tau):
    """Mode ``m`` of each tilted log-density ``f``, ``f(m)`` and the Laplace width
    ``1/sqrt(-f''(m))`` (floored by the cavity's ``1/sqrt(τ)``), each ``(n,)``."""

    def derivs(z):
        value, grad, hess = likelihood.kernel_derivatives(outcome, z, trials)
        d = z - mu
        return value - 0.5 * tau * d * d, grad - tau * d, hess - tau

    lo, hi = likelihood.mode_bracket(outcome, trials, mu, tau)
    mode = _find_mode(derivs, lo, hi, mu)
    f_mode, _, curvature = derivs(mode)
    width = 1.0 / jnp.sqrt(jnp.maximum(-curvature, tau))
    return mode, f_mode, width


@functools.lru_cache(maxsize=None)
def _hermite_rule(size):
    """Gauss–Hermite rule for the weight ``e^{-t²/2}``: nodes ``t`` and ``log w + t²/2`` (the
    log-weights of the plain integral ``∫ g(t) dt``), in float64 numpy."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(size)
    return nodes, np.log(weights) + 0.5 * nodes * nodes


def hermite_mesh(mode, width, size):
    """Nodes and log-weights ``(n, size)`` of a Gauss–Hermite rule centred at each mode with
    the Laplace width: exact for a Gaussian tilted density, and fast to converge when the
    tilted density is close to one."""
    dtype = mode.dtype
    unit_nodes, unit_log_weights = (jnp.asarray(v, dtype) for v in _hermite_rule(size))
    nodes = mode[:, None] + width[:, None] * unit_nodes
    log_weights = jnp.log(width)[:, None] + unit_log_weights
    return nodes, log_weights


def panel_mesh(likelihood, outcome, trials, mu, tau, mode, f_mode, width):
    """Nodes and log-weights ``(n, 384)`` of the graded composite Gauss–Legendre rule covering
    each tilted density's mass (steps 2 and 3 of the module docstring)."""
    dtype = mu.dtype
    cap = jnp.sqrt(2.0 * _COVER_DROP / tau)
    # cover: first ladder rung on each side where f has dropped by _COVER_DROP. f is concave
    # with its maximum at the mode, so "dropped" is monotone along the ladder: bisection on
    # the rung index (both sides at once) finds it in log2(len(ladder) + 1) evaluations.
    ladder = jnp.asarray(_LADDER, dtype)
    signs = jnp.asarray([-1.0, 1.0], dtype)[:, None]                          # (2, 1)

    def offset(index):                                                      # (2, n) rungs
        return jnp.minimum(width[None, :] * ladder[jnp.clip(index, 0, len(_LADDER) - 1)],
                           cap[None, :])

    def bisect(_, bracket):
        lo, hi = bracket
        mid = (lo + hi) // 2
        points = mode[None, :] + signs * offset(mid)
        values = (likelihood.log_kernel(outcome[None, :], points, trials[None, :])
                  - 0.5 * tau[None, :] * (points - mu[None, :]) ** 2)
        below = ~(values > f_mode[None, :] - _COVER_DROP)   # NaN / -inf count as below
        open_ = hi - lo > 1
        return jnp.where(open_ & ~below, mid, lo), jnp.where(open_ & below, mid, hi)

    lo = jnp.full((2, mode.shape[0]), -1)          # rung known not to have dropped (-1: mode)
    hi = jnp.full((2, mode.shape[0]), len(_LADDER))  # rung known to have dropped (L: the cap)
    # a loop, not unrolled: one copy of the step in the compiled program
    lo, hi = jax.lax.fori_loop(0, _BISECTIONS, bisect, (lo, hi))
    reach = jnp.where(hi < len(_LADDER), offset(hi), cap[None, :])
    left, right = mode - reach[0], mode + reach[1]

    # three pieces [left, a], [a, b], [b, right] with a, b = sorted(mode, bend)
    bend = jnp.clip(jnp.asarray(likelihood.feature_point, dtype), left, right)
    mode_first = mode <= bend
    a = jnp.minimum(mode, bend)
    b = jnp.maximum(mode, bend)
    scale_a = jnp.where(mode_first, width, 1.0)
    scale_b = jnp.where(mode_first, 1.0, width)
    span = jnp.maximum(right - left, width)   # "no feature here": nearly uniform panels
    ends = jnp.stack([left, a, a, b, b, right], axis=1)                          # (n, 6)
    scales = jnp.stack([span, scale_a, scale_a, scale_b, scale_b, span], axis=1)
    # six halves, each graded from its outer end towards its piece's middle
    starts = ends
    middles = jnp.repeat(0.5 * (ends[:, 0::2] + ends[:, 1::2]), 2, axis=1)
    length = jnp.abs(middles - starts)
    direction = jnp.sign(middles - starts)
    scales = jnp.maximum(scales, jnp.finfo(dtype).tiny)
    rate = jnp.log1p(length / scales) / _N_PANELS
    k = jnp.arange(_N_PANELS + 1, dtype=dtype)
    dist = scales[..., None] * jnp.expm1(rate[..., None] * k)                   # (n, 6, P+1)
    dist = dist.at[..., -1].set(length)
    edges = starts[..., None] + direction[..., None] * dist
    centre = 0.5 * (edges[..., 1:] + edges[..., :-1])                           # (n, 6, P)
    half = 0.5 * jnp.abs(edges[..., 1:] - edges[..., :-1])
    unit_nodes, unit_weights = (jnp.asarray(v, dtype) for v in _unit_rule())
    nodes = centre[..., None] + half[..., None] * unit_nodes                    # (n, 6, P, Q)
    weights = half[..., None] * unit_weights
    n = mu.shape[0]
    log_weights = jnp.where(weights > 0, jnp.log(jnp.where(weights > 0, weights, 1.0)),
                            -jnp.inf)
    return nodes.reshape(n, -1), log_weights.reshape(n, -1)


def tilted_moments(likelihood, outcome, trials, cavity_eta, cavity_tau):
    """``(log_zeroth, mean, variance)`` of ``p(y_i|z) N(z | η_i/τ_i, 1/τ_i)`` for each site.

    Parameters
    ----------
    likelihood : Likelihood
        One of :mod:`jaxinfer.glmm.lik`'s likelihoods.
    outcome, trials : (n,) arrays
        Observations and trials (trials ignored except for Binomial).
    cavity_eta, cavity_tau : (n,) arrays
        Cavity natural parameters (precision-times-mean and precision). The precision is
        floored at ``2·sqrt(eps_float64)`` as in liknorm.

    Returns
    -------
    log_zeroth : (n,) ``log ∫ p(y|z) N(z | μ, 1/τ) dz`` (normalised density, as liknorm)
    mean, variance : (n,) first two moments of the tilted distribution.
    """
    return tilted_moments_and_rule(likelihood, outcome, trials, cavity_eta, cavity_tau)[0]


def tilted_moments_and_rule(likelihood, outcome, trials, cavity_eta, cavity_tau):
    """:func:`tilted_moments` and whether the Gauss–Hermite rule was used (a bool array:
    True when every site's two Hermite results agreed, False when the panels ran)."""
    dtype = jnp.result_type(cavity_eta, cavity_tau, jnp.float32)
    cavity_eta = jnp.asarray(cavity_eta, dtype)
    tau = clamp_cavity_precision(jnp.asarray(cavity_tau, dtype))
    outcome = jnp.asarray(outcome, dtype)
    trials = jnp.asarray(trials, dtype)
    mu = cavity_eta / tau

    mode, f_mode, width = jax.lax.stop_gradient(_laplace(
        likelihood, outcome, trials, jax.lax.stop_gradient(mu), jax.lax.stop_gradient(tau)))

    def integrate(mesh):
        """Moments on a fixed mesh ``(nodes, log_weights)``, differentiable in ``(mu, tau)``."""
        nodes, log_weights = jax.lax.stop_gradient(mesh)
        values = (likelihood.log_kernel(outcome[:, None], nodes, trials[:, None])
                  - 0.5 * tau[:, None] * (nodes - mu[:, None]) ** 2 + log_weights)
        shift = jax.lax.stop_gradient(jnp.max(values, axis=1))
        shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
        mass = jnp.exp(values - shift[:, None])
        total = jnp.sum(mass, axis=1)
        log_zeroth = (jnp.log(total) + shift + 0.5 * jnp.log(tau / (2.0 * jnp.pi))
                      + likelihood.log_normaliser(outcome, trials))
        prob = mass / total[:, None]
        centred = nodes - mode[:, None]
        mean_offset = jnp.sum(prob * centred, axis=1)
        variance = jnp.sum(prob * (centred - mean_offset[:, None]) ** 2, axis=1)
        return log_zeroth, mode + mean_offset, variance

    # Gauss–Hermite with _HERMITE[1] nodes, checked against _HERMITE[0]: where every site's
    # two rules agree to `tol`, the larger one is accurate far beyond it (module docstring);
    # otherwise (wide cavities, cavity and outcome in disagreement) the panels for every site.
    small = jax.lax.stop_gradient(integrate(hermite_mesh(mode, width, _HERMITE[0])))
    large = integrate(hermite_mesh(mode, width, _HERMITE[1]))
    eps = jnp.finfo(dtype).eps
    tol = jnp.maximum(jnp.asarray(_HERMITE_TOL, dtype), 100.0 * eps)
    gap = jax.lax.stop_gradient(jnp.maximum(jnp.maximum(
        jnp.abs(small[0] - large[0]), jnp.abs(small[1] - large[1]) / jnp.sqrt(large[2])),
        jnp.abs(small[2] / large[2] - 1.0)))
    agree = jnp.all(gap <= tol)   # False when any gap is NaN

    def panels(_):
        return integrate(panel_mesh(likelihood, outcome, trials, jax.lax.stop_gradient(mu),
                                    jax.lax.stop_gradient(tau), mode, f_mode, width))

    log_zeroth, mean, variance = jax.lax.cond(agree, lambda _: large, panels, None)
    return (log_zeroth, mean, jnp.maximum(variance, eps)), agree
