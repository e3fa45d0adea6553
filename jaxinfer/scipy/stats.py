"""The parts of ``scipy.stats`` that seed 003 uses, in JAX: ``binom``, ``binomtest``, ``beta``,
``skewnorm`` and an ``rv_continuous`` base for custom distributions.

Closed forms come from ``jax.scipy.special`` (``betainc``, ``ndtr``, ``owens_t``) and
``jax.scipy.stats``; samples from ``jax.random``. What has no closed form is computed:

* ``ppf`` of a continuous distribution: a root of ``logit(cdf) = logit(q)`` (both tails
  keep their digits) in a variable mapped onto the real line from the support, by Newton
  steps (derivative by ``jax.jvp``) safeguarded by bisection, in a ``lax.while_loop``.
  Its derivative comes from the implicit function theorem (``dx/dq = 1/pdf``, and through
  the shape parameters where the cdf is differentiable in them: not for ``beta``, whose
  ``betainc`` has no derivative in ``a``, ``b`` in JAX).
* for a custom :class:`rv_continuous` that defines only ``_pdf``: ``cdf`` by
  :func:`jaxinfer.scipy.integrate.quad` from the lower end of the support, moments by
  ``quad`` of ``(x - mean)^k pdf``, samples by ``ppf`` of uniforms (scipy's generic route).
* ``binom.ppf``: bisection on the integers for the smallest ``k`` with ``cdf(k) >= q``.

Random numbers: ``rvs(..., size=, random_state=)`` takes an int seed, a
``jax.random`` key, or a numpy Generator/RandomState (a seed is drawn from it); ``key=``
is an alias. Without either, a seed is drawn from numpy's global generator (as scipy
draws from it), which is not reproducible inside ``jit``: pass a key there. Samples follow
the same law as scipy's, not the same stream.

Invalid shape parameters give NaN, as in scipy. Everything jits and vmaps.
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special as jsp
from jax.scipy import stats as jst

from jaxinfer.scipy.integrate import quad

__all__ = ["rv_continuous", "rv_frozen", "beta", "skewnorm", "binom", "binomtest",
           "BinomTestResult", "ConfidenceInterval"]


# ----------------------------------------------------------------------------- helpers

def _key(random_state, key, default_seed=None):
    """A jax PRNG key from ``key`` / ``random_state`` (int, key, numpy generator) or numpy."""
    rs = key if key is not None else random_state
    if rs is None:
        rs = default_seed
    if rs is None:
        rs = np.random.randint(0, 2 ** 31 - 1)
    if isinstance(rs, (np.random.Generator,)):
        rs = int(rs.integers(0, 2 ** 31 - 1))
    elif isinstance(rs, np.random.RandomState):
        rs = int(rs.randint(0, 2 ** 31 - 1))
    if isinstance(rs, (int, np.integer)):
        return jax.random.key(int(rs))
    if isinstance(rs, jax.Array) and jnp.issubdtype(rs.dtype, jax.dtypes.prng_key):
        return rs
    if isinstance(rs, (jax.Array, np.ndarray)) and rs.dtype == np.uint32 and rs.shape == (2,):
        return jax.random.wrap_key_data(jnp.asarray(rs))  # a raw jax.random.PRNGKey
    raise TypeError(f"random_state must be an int seed, a jax.random key or a numpy "
                    f"Generator/RandomState, got {type(rs).__name__}")


def _float(*xs):
    dtype = jnp.result_type(*[jnp.asarray(x).dtype for x in xs], float)
    return tuple(jnp.asarray(x, dtype) for x in xs)


def _size(size, shape):
    if size is None:
        return tuple(shape)
    return (int(size),) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)


def _quad(f, a, b):
    """∫_a^b f to ~50 ulp (the generic cdf and moments: tighter than quad's default 1.5e-8)."""
    dtype = jnp.result_type(float)
    tol = 50 * float(jnp.finfo(dtype).eps)
    return quad(f, a, b, epsabs=tol, epsrel=tol)[0]


def _map_support(a, b):
    """Map y ∈ ℝ onto the support: returns (x(y), b - x(y) or None, y-bracket)."""
    if math.isfinite(a) and math.isfinite(b):
        return (lambda y: a + (b - a) * jax.nn.sigmoid(y),
                lambda y: (b - a) * jax.nn.sigmoid(-y), (-750.0, 750.0))
    if math.isfinite(a):
        return (lambda y: a + jnp.exp(y)), None, (-750.0, 700.0)
    if math.isfinite(b):
        return (lambda y: b - jnp.exp(-y)), (lambda y: jnp.exp(-y)), (-700.0, 750.0)
    return (lambda y: y), None, (-1e6, 1e6)


def _newton_bisect(F, target, lo, hi, maxiter=200):
    """Root of increasing F(y) = target on [lo, hi]: Newton steps kept inside the bracket."""
    dtype = jnp.result_type(target)
    eps = jnp.finfo(dtype).eps

    def value_and_slope(y):
        return jax.jvp(F, (y,), (jnp.ones_like(y),))

    def cond(s):
        y, lo, hi, step, it = s
        return (it < maxiter) & (jnp.abs(step) > 4 * eps * (1.0 + jnp.abs(y))) & (hi > lo)

    def body(s):
        y, lo, hi, _, it = s
        f, df = value_and_slope(y)
        r = f - target
        lo = jnp.where(r < 0, y, lo)
        hi = jnp.where(r > 0, y, hi)
        hi = jnp.where(r == 0, y, hi)
        lo = jnp.where(r == 0, y, lo)
        newton = y - r / df
        ok = jnp.isfinite(newton) & (newton > lo) & (newton < hi) & jnp.isfinite(r)
        # bisect in a scale-aware way when the bracket spans orders of magnitude
        mid = jnp.where((lo < -1) & (hi > 1), 0.0, 0.5 * (lo + hi))
        y_new = jnp.where(ok, newton, mid)
        return y_new, lo, hi, y_new - y, it + 1

    y0 = jnp.clip(jnp.zeros_like(target), lo, hi)
    init = (y0, jnp.full_like(target, lo), jnp.full_like(target, hi), jnp.ones_like(target),
            jnp.asarray(0))
    return jax.lax.while_loop(cond, body, init)[0]


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _ppf_solve(dist, q, *args):
    """Standardised ppf of ``dist`` at scalar ``q`` (0 < q < 1) by root finding."""
    x_of_y, to_b, (lo, hi) = _map_support(dist.a, dist.b)

    def F(y):  # logit(cdf(x(y))): increasing in y, digits kept in both tails
        x = x_of_y(y)
        c, s = dist._cdf_sf(x, to_b(y) if to_b is not None else None, *args)
        return jnp.log(c) - jnp.log(s)

    target = jnp.log(q) - jnp.log1p(-q)
    return x_of_y(_newton_bisect(F, target, lo, hi))


def _ppf_solve_jvp(dist, primals, tangents):
    # cdf(x(q, θ), θ) = q  =>  dx = (dq − ∂cdf/∂θ · dθ) / pdf(x); only the inputs that carry
    # a tangent are differentiated (beta's cdf has no derivative in its shapes)
    q, *args = primals
    dq, *dargs = tangents
    x = _ppf_solve(dist, q, *args)
    zero = jax.custom_derivatives.SymbolicZero
    live = [i for i, t in enumerate(dargs) if not isinstance(t, zero)]
    rhs = jnp.zeros_like(x) if isinstance(dq, zero) else dq
    if live:
        def cdf_of(*sub):
            full = list(args)
            for i, v in zip(live, sub):
                full[i] = v
            return dist._cdf(x, *full)
        _, dc = jax.jvp(cdf_of, tuple(args[i] for i in live), tuple(dargs[i] for i in live))
        rhs = rhs - dc
    return x, rhs / dist._pdf(x, *args)


_ppf_solve.defjvp(_ppf_solve_jvp, symbolic_zeros=True)


class _Summaries:
    """Methods every distribution derives from ``stats`` and ``ppf`` (and freezing)."""

    def __call__(self, *args, **kwds):
        return rv_frozen(self, *args, **kwds)

    freeze = __call__

    def isf(self, q, *args, **kwds):
        return self.ppf(1.0 - jnp.asarray(q), *args, **kwds)

    def mean(self, *args, **kwds):
        return self.stats(*args, moments="m", **kwds)

    def var(self, *args, **kwds):
        return self.stats(*args, moments="v", **kwds)

    def std(self, *args, **kwds):
        return jnp.sqrt(self.var(*args, **kwds))

    def median(self, *args, **kwds):
        return self.ppf(0.5, *args, **kwds)

    def interval(self, confidence, *args, **kwds):
        c = jnp.asarray(confidence)
        return (self.ppf((1.0 - c) / 2, *args, **kwds), self.ppf((1.0 + c) / 2, *args, **kwds))


def _parse_shapes(names, args, kwds, method, extras):
    """Split scipy-style ``(*shapes, *extras)`` positional/keyword arguments."""
    args, kwds = list(args), dict(kwds)
    shapes = []
    for name in names:
        if args:
            shapes.append(args.pop(0))
        elif name in kwds:
            shapes.append(kwds.pop(name))
        else:
            raise TypeError(f"{method}() missing the shape parameter {name!r} "
                            f"(shapes: {', '.join(names) or 'none'})")
    rest = [args.pop(0) if args else kwds.pop(name, default) for name, default in extras]
    if args or kwds:
        raise TypeError(f"{method}() got unexpected arguments {args or ''} "
                        f"{list(kwds) or ''}".strip())
    return shapes, rest


# ----------------------------------------------------------------------------- continuous

class rv_continuous(_Summaries):
    """Base of continuous distributions, as scipy's: subclass and define ``_pdf(self, x,
    *shapes)`` (and optionally ``_cdf``, ``_sf``, ``_ppf``, ``_stats``, ``_rvs``,
    ``_argcheck``); instantiate with the support ``a``, ``b``.

    Public methods take ``(x, *shapes, loc=0, scale=1)`` (``loc``/``scale`` may also follow
    the shapes positionally): ``pdf``, ``logpdf``, ``cdf``, ``sf``, ``ppf``, ``isf``,
    ``rvs(*shapes, size=, random_state=, key=)``, ``stats(*shapes, moments='mv')``,
    ``mean``, ``var``, ``std``, ``median``, ``interval(confidence, *shapes)``,
    ``moment(order, *shapes)``, ``support``; calling the instance freezes it. The shape
    names come from ``shapes="a1, a2"`` or the signature of ``_pdf``. What is not given is
    computed by quadrature (``cdf``, moments) and root finding (``ppf``, hence ``rvs``).
    """

    def __init__(self, momtype=1, a=None, b=None, xtol=1e-14, badvalue=None, name=None,
                 longname=None, shapes=None, seed=None):
        self.a = -math.inf if a is None else float(a)
        self.b = math.inf if b is None else float(b)
        if not self.a < self.b:
            raise ValueError(f"rv_continuous: the support needs a < b, got a={self.a}, "
                             f"b={self.b}")
        self.name = name
        self._seed = seed
        if shapes is not None:
            self.shapes = [s.strip() for s in shapes.split(",") if s.strip()]
        else:
            for meth in ("_pdf", "_cdf"):
                if getattr(type(self), meth) is not getattr(rv_continuous, meth):
                    params = list(inspect.signature(getattr(self, meth)).parameters.values())
                    if any(p.kind == p.VAR_POSITIONAL for p in params):
                        raise TypeError(f"rv_continuous: {meth} takes *args: name the shape "
                                        f"parameters with shapes='a, b'")
                    self.shapes = [p.name for p in params[1:]]
                    break
            else:
                raise TypeError("rv_continuous: define _pdf (or _cdf) in the subclass")
        self.numargs = len(self.shapes)

    # -- methods a subclass may override (standardised: loc=0, scale=1) --
    def _pdf(self, x, *args):
        return jax.grad(lambda t: self._cdf(t, *args))(x)

    def _logpdf(self, x, *args):
        return jnp.log(self._pdf(x, *args))

    def _cdf(self, x, *args):
        return _quad(lambda t: self._pdf(t, *args), self.a, x)

    def _sf(self, x, *args):
        return 1.0 - self._cdf(x, *args)

    def _cdf_sf(self, x, x_to_b, *args):
        """(cdf, sf) at x; ``x_to_b`` is ``b - x`` computed accurately (finite b) or None."""
        return self._cdf(x, *args), self._sf(x, *args)

    def _ppf(self, q, *args):
        return _ppf_solve(self, q, *args)

    def _argcheck(self, *args):
        return functools.reduce(jnp.logical_and, [jnp.asarray(a) > 0 for a in args],
                                jnp.asarray(True))

    def _rvs(self, key, shape, dtype, *args):
        u = jax.random.uniform(key, shape, dtype, minval=jnp.finfo(dtype).tiny)
        return self._elementwise("_ppf")(u, *args)

    def _munp(self, n, *args):
        return _quad(lambda t: t ** n * self._pdf(t, *args), self.a, self.b)

    def _stats(self, *args):
        mean = _quad(lambda t: t * self._pdf(t, *args), self.a, self.b)
        central = [_quad(lambda t, k=k: (t - mean) ** k * self._pdf(t, *args), self.a, self.b)
                   for k in (2, 3, 4)]
        m2, m3, m4 = central
        return mean, m2, m3 / m2 ** 1.5, m4 / m2 ** 2 - 3.0

    # -- plumbing --
    def _elementwise(self, name):
        """``self.<name>`` broadcast elementwise, compiled once per distribution, method,
        shape and dtype (calls in a Python loop reuse the program)."""
        return functools.partial(_apply, self, name)

    def _parse(self, args, kwds, method):
        shapes, (loc, scale) = _parse_shapes(self.shapes, args, kwds, method,
                                             (("loc", 0.0), ("scale", 1.0)))
        return shapes, loc, scale

    def _prepare(self, first, args, kwds, method):
        shapes, loc, scale = self._parse(args, kwds, method)
        vals = _float(first, loc, scale, *shapes)
        first, loc, scale, shapes = vals[0], vals[1], vals[2], list(vals[3:])
        good = self._argcheck(*shapes) & (scale > 0)
        return first, loc, scale, shapes, good

    def _clip(self, z):
        """z clipped into the support (infinite ends: the dtype's largest finite value)."""
        big = float(jnp.finfo(z.dtype).max)
        return jnp.clip(z, _finite_or(self.a, -big), _finite_or(self.b, big))

    def pdf(self, x, *args, **kwds):
        x, loc, scale, shapes, good = self._prepare(x, args, kwds, "pdf")
        z = (x - loc) / scale
        inside = (z >= self.a) & (z <= self.b)
        zc = self._clip(z)
        out = jnp.where(inside, self._elementwise("_pdf")(zc, *shapes), 0.0) / scale
        return jnp.where(good, out, jnp.nan)

    def logpdf(self, x, *args, **kwds):
        x, loc, scale, shapes, good = self._prepare(x, args, kwds, "logpdf")
        z = (x - loc) / scale
        inside = (z >= self.a) & (z <= self.b)
        zc = self._clip(z)
        out = jnp.where(inside, self._elementwise("_logpdf")(zc, *shapes), -jnp.inf)
        return jnp.where(good, out - jnp.log(scale), jnp.nan)

    def cdf(self, x, *args, **kwds):
        x, loc, scale, shapes, good = self._prepare(x, args, kwds, "cdf")
        z = (x - loc) / scale
        zc = self._clip(z)
        out = self._elementwise("_cdf")(zc, *shapes)
        out = jnp.where(z <= self.a, 0.0, jnp.where(z >= self.b, 1.0, out))
        return jnp.where(good, out, jnp.nan)

    def sf(self, x, *args, **kwds):
        x, loc, scale, shapes, good = self._prepare(x, args, kwds, "sf")
        z = (x - loc) / scale
        zc = self._clip(z)
        out = self._elementwise("_sf")(zc, *shapes)
        out = jnp.where(z <= self.a, 1.0, jnp.where(z >= self.b, 0.0, out))
        return jnp.where(good, out, jnp.nan)

    def ppf(self, q, *args, **kwds):
        q, loc, scale, shapes, good = self._prepare(q, args, kwds, "ppf")
        inner = (q > 0) & (q < 1)
        qs = jnp.where(inner, q, 0.5)
        z = self._elementwise("_ppf")(qs, *shapes)
        z = jnp.where(q == 0, self.a, jnp.where(q == 1, self.b, z))
        ok = good & (q >= 0) & (q <= 1)
        return jnp.where(ok, loc + scale * z, jnp.nan)


    def rvs(self, *args, size=None, random_state=None, key=None, **kwds):
        shapes, loc, scale = self._parse(args, kwds, "rvs")
        vals = _float(loc, scale, *shapes)
        loc, scale, shapes = vals[0], vals[1], list(vals[2:])
        shape = _size(size, jnp.broadcast_shapes(*[jnp.shape(v) for v in vals]))
        k = _key(random_state, key, self._seed)
        z = self._rvs(k, shape, loc.dtype, *shapes)  # shapes broadcast against `shape`
        good = self._argcheck(*shapes) & (scale > 0)
        return jnp.where(good, loc + scale * z, jnp.nan)

    def stats(self, *args, moments="mv", **kwds):
        shapes, loc, scale = self._parse(args, kwds, "stats")
        vals = _float(loc, scale, *shapes)
        loc, scale, shapes = vals[0], vals[1], list(vals[2:])
        good = self._argcheck(*shapes) & (scale > 0)
        if shapes:
            mean, var, skew, kurt = self._stats_broadcast(*shapes)
        else:
            mean, var, skew, kurt = tuple(_stats0(self))
        out = {"m": loc + scale * mean, "v": scale ** 2 * var, "s": skew, "k": kurt}
        res = tuple(jnp.where(good, out[c], jnp.nan) for c in moments)
        return res[0] if len(res) == 1 else res

    def _stats_stacked(self, *shapes):
        return jnp.stack([jnp.asarray(v) for v in self._stats(*shapes)])

    def _stats_broadcast(self, *shapes):
        out = _apply_signature(self, "_stats_stacked", ",".join(["()"] * len(shapes)) + "->(k)",
                               *shapes)
        return tuple(out[..., i] for i in range(4))


    def moment(self, order, *args, **kwds):
        """Non-central moment E[X^order] (order a static int)."""
        shapes, loc, scale = self._parse(args, kwds, "moment")
        vals = _float(loc, scale, *shapes)
        loc, scale, shapes = vals[0], vals[1], list(vals[2:])
        n = int(order)
        raw = [jnp.ones_like(loc)] + [jnp.vectorize(lambda *s, k=k: self._munp(k, *s))(*shapes)
                                      if shapes else self._munp(k) for k in range(1, n + 1)]
        total = sum(math.comb(n, k) * loc ** (n - k) * scale ** k * raw[k] for k in range(n + 1))
        return jnp.where(self._argcheck(*shapes) & (scale > 0), total, jnp.nan)

    def support(self, *args, **kwds):
        shapes, loc, scale = self._parse(args, kwds, "support")
        return (jnp.asarray(loc + scale * self.a), jnp.asarray(loc + scale * self.b))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _apply(dist, name, *arrays):
    return jnp.vectorize(getattr(dist, name))(*arrays)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _apply_signature(dist, name, signature, *arrays):
    return jnp.vectorize(getattr(dist, name), signature=signature)(*arrays)


@functools.partial(jax.jit, static_argnums=(0,))
def _stats0(dist):
    return dist._stats_stacked()


def _finite_or(v, default):
    return v if math.isfinite(v) else default


class rv_frozen:
    """A distribution with its shapes, ``loc`` and ``scale`` fixed (``beta(2.5, 3.1)``)."""

    _NO_LEADING = ("rvs", "stats", "mean", "var", "std", "median", "support", "entropy")

    def __init__(self, dist, *args, **kwds):
        self.dist = dist
        self.args = args
        self.kwds = kwds
        dist._parse(args, dict(kwds), "freeze")  # validates now, not at first use

    def __getattr__(self, name):
        meth = getattr(self.dist, name)
        if not callable(meth) or name.startswith("_"):
            return meth
        if name in self._NO_LEADING:
            return lambda **kw: meth(*self.args, **self.kwds, **kw)
        return lambda first, **kw: meth(first, *self.args, **self.kwds, **kw)


class beta_gen(rv_continuous):
    """Beta(a, b) on [0, 1]: betainc for the cdf/sf, moments in closed form."""

    def _pdf(self, x, a, b):
        return jst.beta.pdf(x, a, b)

    def _logpdf(self, x, a, b):
        return jst.beta.logpdf(x, a, b)

    def _cdf(self, x, a, b):
        return jsp.betainc(a, b, x)

    def _sf(self, x, a, b):
        return jsp.betainc(b, a, 1.0 - x)

    def _cdf_sf(self, x, x_to_b, a, b):
        return jsp.betainc(a, b, x), jsp.betainc(b, a, x_to_b)

    def _stats(self, a, b):
        s = a + b
        mean = a / s
        var = a * b / (s ** 2 * (s + 1.0))
        skew = 2.0 * (b - a) * jnp.sqrt(s + 1.0) / ((s + 2.0) * jnp.sqrt(a * b))
        kurt = 6.0 * ((a - b) ** 2 * (s + 1.0) - a * b * (s + 2.0)) / (
            a * b * (s + 2.0) * (s + 3.0))
        return mean, var, skew, kurt

    def _munp(self, n, a, b):
        return jnp.exp(jsp.gammaln(a + n) + jsp.gammaln(a + b) - jsp.gammaln(a)
                       - jsp.gammaln(a + b + n))

    def _rvs(self, key, shape, dtype, a, b):
        return jax.random.beta(key, a, b, shape, dtype)


class skewnorm_gen(rv_continuous):
    """Skew-normal with shape ``a``: pdf 2 φ(x) Φ(a x), cdf Φ(x) − 2 T(x, a) (Owen's T)."""

    def _argcheck(self, a):
        return jnp.isfinite(a)

    def _pdf(self, x, a):
        return 2.0 * jst.norm.pdf(x) * jsp.ndtr(a * x)

    def _logpdf(self, x, a):
        return math.log(2.0) + jst.norm.logpdf(x) + jsp.log_ndtr(a * x)

    def _cdf(self, x, a):
        return jnp.clip(jsp.ndtr(x) - 2.0 * jsp.owens_t(x, a), 0.0, 1.0)

    def _sf(self, x, a):  # -X is skew-normal with shape -a
        return self._cdf(-x, -a)

    def _cdf_sf(self, x, x_to_b, a):
        return self._cdf(x, a), self._sf(x, a)

    def _stats(self, a):
        d = a / jnp.sqrt(1.0 + a * a)
        mean = d * math.sqrt(2.0 / math.pi)
        var = 1.0 - mean ** 2
        skew = 0.5 * (4.0 - math.pi) * mean ** 3 / var ** 1.5
        kurt = 2.0 * (math.pi - 3.0) * mean ** 4 / var ** 2
        return mean, var, skew, kurt

    def _rvs(self, key, shape, dtype, a):
        k0, k1 = jax.random.split(key)
        u0 = jax.random.normal(k0, shape, dtype)
        v = jax.random.normal(k1, shape, dtype)
        d = a / jnp.sqrt(1.0 + a * a)
        u1 = d * u0 + v * jnp.sqrt(1.0 - d * d)
        return jnp.where(u0 >= 0, u1, -u1)


beta = beta_gen(a=0.0, b=1.0, name="beta")
skewnorm = skewnorm_gen(name="skewnorm")


# ----------------------------------------------------------------------------- binomial

def _int_search(pred, lo, hi):
    """Smallest integer k in (lo, hi] with pred(k) true, pred monotone false→true, pred(hi)
    assumed true. lo, hi are float arrays of integers."""
    def cond(s):
        return jnp.any(s[1] - s[0] > 1)

    def body(s):
        lo, hi = s
        mid = jnp.floor(0.5 * (lo + hi))
        active = hi - lo > 1
        p = pred(mid)
        return (jnp.where(active & ~p, mid, lo), jnp.where(active & p, mid, hi))

    return jax.lax.while_loop(cond, body, (lo, hi))[1]


class binom_gen(_Summaries):
    """Binomial(n, p): ``pmf``, ``logpmf``, ``cdf``, ``sf``, ``ppf``, ``isf``, ``rvs``,
    ``stats``, ``mean``, ``var``, ``std``, ``median``, ``interval``; ``binom(n, p)``
    freezes. Arguments ``(k, n, p, loc=0)``."""

    shapes = ["n", "p"]
    numargs = 2

    def _parse(self, args, kwds, method):
        shapes, (loc,) = _parse_shapes(self.shapes, args, kwds, f"binom.{method}",
                                       (("loc", 0.0),))
        return shapes, loc, None

    def _prep(self, first, args, kwds, method):
        (n, p), loc, _ = self._parse(args, kwds, method)
        first, n, p, loc = _float(first, n, p, loc)
        good = (n >= 0) & (n == jnp.floor(n)) & (p >= 0) & (p <= 1)
        return first - loc, n, p, loc, good

    def pmf(self, k, *args, **kwds):
        k, n, p, _, good = self._prep(k, args, kwds, "pmf")
        return jnp.where(good, jst.binom.pmf(k, n, p), jnp.nan)

    def logpmf(self, k, *args, **kwds):
        k, n, p, _, good = self._prep(k, args, kwds, "logpmf")
        return jnp.where(good, jst.binom.logpmf(k, n, p), jnp.nan)

    @staticmethod
    def _cdf(k, n, p):
        k = jnp.floor(k)
        kc = jnp.clip(k, 0.0, jnp.maximum(n - 1.0, 0.0))
        inner = jsp.betainc(jnp.maximum(n - kc, 1e-300), kc + 1.0, 1.0 - p)
        return jnp.where(k < 0, 0.0, jnp.where(k >= n, 1.0, inner))

    @staticmethod
    def _sf(k, n, p):
        k = jnp.floor(k)
        kc = jnp.clip(k, 0.0, jnp.maximum(n - 1.0, 0.0))
        inner = jsp.betainc(kc + 1.0, jnp.maximum(n - kc, 1e-300), p)
        return jnp.where(k < 0, 1.0, jnp.where(k >= n, 0.0, inner))

    def cdf(self, k, *args, **kwds):
        k, n, p, _, good = self._prep(k, args, kwds, "cdf")
        return jnp.where(good, self._cdf(k, n, p), jnp.nan)

    def sf(self, k, *args, **kwds):
        k, n, p, _, good = self._prep(k, args, kwds, "sf")
        return jnp.where(good, self._sf(k, n, p), jnp.nan)

    def ppf(self, q, *args, **kwds):
        """Smallest k with cdf(k) >= q (q = 0 gives -1, as scipy's)."""
        (n, p), loc, _ = self._parse(args, kwds, "ppf")
        q, n, p, loc = _float(q, n, p, loc)
        return _binom_ppf(q, n, p) + loc


    def rvs(self, *args, size=None, random_state=None, key=None, **kwds):
        (n, p), loc, _ = self._parse(args, kwds, "rvs")
        n, p, loc = _float(n, p, loc)
        shape = _size(size, jnp.broadcast_shapes(jnp.shape(n), jnp.shape(p), jnp.shape(loc)))
        draws = jax.random.binomial(_key(random_state, key), n, p, shape, n.dtype)
        return draws + loc

    def stats(self, *args, moments="mv", **kwds):
        (n, p), loc, _ = self._parse(args, kwds, "stats")
        n, p, loc = _float(n, p, loc)
        q = 1.0 - p
        npq = n * p * q
        out = {"m": n * p + loc, "v": npq, "s": (q - p) / jnp.sqrt(npq),
               "k": (1.0 - 6.0 * p * q) / npq}
        res = tuple(out[c] for c in moments)
        return res[0] if len(res) == 1 else res


    def support(self, *args, **kwds):
        (n, p), loc, _ = self._parse(args, kwds, "support")
        return (jnp.asarray(loc), jnp.asarray(n) + loc)


binom = binom_gen()


@jax.jit
def _binom_ppf(q, n, p):
    q, n, p = jnp.broadcast_arrays(q, n, p)
    good = (n >= 0) & (n == jnp.floor(n)) & (p >= 0) & (p <= 1) & (q >= 0) & (q <= 1)
    k = _int_search(lambda k: binom_gen._cdf(k, n, p) >= q, jnp.full_like(q, -1.0),
                    jnp.where(good, n, 0.0))
    return jnp.where(good, jnp.where(q == 0, -1.0, k), jnp.nan)


class ConfidenceInterval(NamedTuple):
    low: jnp.ndarray
    high: jnp.ndarray


class BinomTestResult:
    """``binomtest``'s result: ``k``, ``n``, ``alternative``, ``statistic`` (= k/n),
    ``proportion_estimate``, ``pvalue`` and :meth:`proportion_ci`."""

    def __init__(self, k, n, p, alternative, pvalue):
        self.k, self.n, self.alternative = k, n, alternative
        self._p = p
        self.statistic = self.proportion_estimate = k / n
        self.pvalue = pvalue

    def __repr__(self):
        return (f"BinomTestResult(k={self.k}, n={self.n}, alternative={self.alternative!r}, "
                f"statistic={self.statistic}, pvalue={self.pvalue})")

    def proportion_ci(self, confidence_level=0.95, method="exact"):
        """Confidence interval for the success probability: ``method`` 'exact'
        (Clopper–Pearson: beta quantiles), 'wilson' or 'wilsoncc'."""
        k, n = _float(self.k, self.n)
        cl = jnp.asarray(confidence_level, k.dtype)
        alt = self.alternative
        if method == "exact":
            alpha = (1.0 - cl) / 2 if alt == "two-sided" else 1.0 - cl
            low = beta.ppf(alpha, jnp.maximum(k, 1.0), n - k + 1.0)
            high = beta.ppf(1.0 - alpha, k + 1.0, jnp.maximum(n - k, 1.0))
            low = jnp.where(k == 0, 0.0, low)
            high = jnp.where(k == n, 1.0, high)
        elif method in ("wilson", "wilsoncc"):
            z = jsp.ndtri(0.5 + 0.5 * cl) if alt == "two-sided" else jsp.ndtri(cl)
            p = k / n
            denom = 2.0 * (n + z ** 2)
            if method == "wilson":
                center = (2.0 * n * p + z ** 2) / denom
                d = z * jnp.sqrt(z ** 2 + 4.0 * n * p * (1.0 - p)) / denom
                low, high = center - d, center + d
            else:
                low = (2.0 * n * p + z ** 2 - 1.0 - z * jnp.sqrt(
                    z ** 2 - 2.0 - 1.0 / n + 4.0 * p * (n * (1.0 - p) + 1.0))) / denom
                high = (2.0 * n * p + z ** 2 + 1.0 + z * jnp.sqrt(
                    z ** 2 + 2.0 - 1.0 / n + 4.0 * p * (n * (1.0 - p) - 1.0))) / denom
                low = jnp.where(p == 0, 0.0, jnp.maximum(low, 0.0))
                high = jnp.where(p == 1, 1.0, jnp.minimum(high, 1.0))
        else:
            raise ValueError(f"proportion_ci: method must be 'exact', 'wilson' or "
                             f"'wilsoncc', got {method!r}")
        if alt == "less":
            low = jnp.zeros_like(low)
        elif alt == "greater":
            high = jnp.ones_like(high)
        return ConfidenceInterval(low, high)


def binomtest(k, n, p=0.5, alternative="two-sided"):
    """Exact test that the success probability is ``p`` (``k`` successes in ``n``).

    Two-sided p-value as scipy's: outcomes no more likely than ``k`` (relative slack
    1e-7) on both sides, found by bisection on the other side of the mode.
    """
    if alternative not in ("two-sided", "less", "greater"):
        raise ValueError(f"binomtest: alternative must be 'two-sided', 'less' or 'greater', "
                         f"got {alternative!r}")
    if not isinstance(k, jax.core.Tracer) and not isinstance(n, jax.core.Tracer):
        if not (0 <= int(k) <= int(n)) or int(n) < 1 or int(k) != k or int(n) != n:
            raise ValueError(f"binomtest: need integers 0 <= k <= n, n >= 1; got k={k}, n={n}")
    kf, nf, pf = _float(k, n, p)
    return BinomTestResult(k, n, p, alternative, _binom_pvalue(kf, nf, pf, alternative))


@functools.partial(jax.jit, static_argnums=(3,))
def _binom_pvalue(kf, nf, pf, alternative):
    if alternative == "less":
        pval = binom._cdf(kf, nf, pf)
    elif alternative == "greater":
        pval = binom._sf(kf - 1.0, nf, pf)
    else:
        d = jst.binom.pmf(kf, nf, pf) * (1.0 + 1e-7)
        mean = nf * pf
        # k below the mean: the other tail starts at the first ix >= ceil(np) with pmf <= d
        ix_hi = _int_search(lambda i: (i > nf) | (jst.binom.pmf(i, nf, pf) <= d),
                            jnp.ceil(mean) - 1.0, nf + 1.0)
        below = binom._cdf(kf, nf, pf) + binom._sf(ix_hi - 1.0, nf, pf)
        # k above the mean: the last ix <= floor(np) with pmf <= d (searched as the first
        # index, counted from the left, where pmf exceeds d)
        top = jnp.floor(mean)
        ix_lo = _int_search(lambda i: (i > top) | (jst.binom.pmf(i, nf, pf) > d), -1.0,
                            top + 1.0) - 1.0
        above = binom._cdf(ix_lo, nf, pf) + binom._sf(kf - 1.0, nf, pf)
        pval = jnp.where(kf == mean, 1.0, jnp.where(kf < mean, below, above))
        pval = jnp.minimum(pval, 1.0)
    return pval

