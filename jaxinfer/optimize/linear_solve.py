"""The damped linear solves of Levenberg–Marquardt, and normal equations in bounded memory.

Every LM step solves ``(JᵀJ + λ diag(d²)) δ = -Jᵀ r`` for one or more dampings ``λ``. Here
that is done on the *scaled* problem ``A = J · diag(free / d)`` (``free`` is 1 for parameters
that may move, 0 for masked ones and ones held at a bound), where the system reads
``(AᵀA + λ I) y = -Aᵀ r`` and ``δ = y · free / d``. A linear solver turns a linearisation into
a *factor* once per Jacobian; a factor answers every damped solve and the statistics the
termination tests need:

``DenseSVD`` (default)
    thin SVD ``A = U diag(s) Vᵀ`` of the (m, n) matrix: accurate on ill-conditioned problems
    (it never squares the condition number); one-sided Jacobi for n <= 8 (:func:`thin_svd`).
``DenseEigh``
    eigendecomposition of the (n, n) Gram matrix ``AᵀA``: cheaper than a batched SVD for tiny n
    under ``vmap``, but directions with ``s < √ε s_max`` are lost.
``NormalEquations(method='cholesky' | 'eigh', max_mem=None)``
    works on ``JᵀJ`` and ``Jᵀr`` only. 'cholesky' factors ``AᵀA + λ I`` for each λ (unrolled
    into scalar operations for n <= 8, so a batch of tiny fits under ``vmap`` is not turned
    into a batched LU); 'eigh' diagonalises ``AᵀA`` once. With ``max_mem`` (bytes), ``JᵀJ`` and
    ``Jᵀr`` are accumulated without ever holding the (m, n) Jacobian:

    * if the residual function offers ``chunk(x, args, start, size) -> (size,)`` (rows
      ``start .. start+size`` of the residual vector), over row chunks with ``jacfwd`` inside
      ``lax.scan``: memory ~ ``size · n`` numbers, the fastest form when rows are independent
      (data points, pixels of an unconvolved model);
    * otherwise over blocks of k parameter columns inside ``lax.map``: ``J E_k`` by forward
      mode, then ``Jᵀ (J E_k)`` by one stored reverse-mode pullback; memory ~ the residual
      function's intermediates plus ``2 k m`` numbers (an image model with FFTs: this form).

Shapes: m residuals, n parameters (flat). All functions are pure and vmap-able.
"""

from __future__ import annotations

from typing import Callable, Optional

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["DenseSVD", "DenseEigh", "NormalEquations", "SpectralFactor", "CholeskyFactor",
           "normal_equations_by_rows", "normal_equations_by_columns", "cholesky_solve",
           "thin_svd", "small_qr", "rarely", "vdot", "jt_vec", "j_vec",
           "small_sum", "small_max", "small_norm", "msum", "gram_sums",
           "triangular_from_gram", "small_square_svd"]

SMALL_N = 8  # up to this size the Cholesky factorisation is unrolled into scalar operations


# --------------------------------------------------------------------------------------------
# products that stay elementwise under vmap
#
# Under ``vmap`` a ``jnp.dot`` of two vectors, or a small matrix-vector product, becomes a
# batched ``dot_general`` that XLA on CPU runs as thousands of tiny matrix products, several
# times slower than the same multiply-and-sum written elementwise. For n <= SMALL_N columns
# the products below are written as multiply-and-reduce; larger n keeps BLAS.


def small_sum(a, axis=-1):
    """``jnp.sum(a, axis)``, unrolled into additions where that axis has <= SMALL_N entries:
    under ``vmap`` XLA on CPU runs a reduction over a tiny axis as a library call that costs
    several times the elementwise form (and the form fuses with its neighbours)."""
    k = a.shape[axis]
    if k > SMALL_N or k == 0:
        return jnp.sum(a, axis=axis)
    out = lax.index_in_dim(a, 0, axis, keepdims=False)
    for i in range(1, k):
        out = out + lax.index_in_dim(a, i, axis, keepdims=False)
    return out


def small_max(a):
    """``jnp.max`` of a (k,) vector, unrolled for k <= SMALL_N (see :func:`small_sum`)."""
    if a.shape[0] > SMALL_N:
        return jnp.max(a)
    out = a[0]
    for i in range(1, a.shape[0]):
        out = jnp.maximum(out, a[i])
    return out


def small_norm(v):
    """The Euclidean norm of a (k,) vector (unrolled for k <= SMALL_N, see :func:`small_sum`)."""
    return jnp.sqrt(small_sum(v * v)) if v.shape[0] <= SMALL_N else jnp.linalg.norm(v)


def vdot(u, v):
    """``u · v`` of two (k,) vectors (elementwise multiply and sum)."""
    return small_sum(u * v)


def jt_vec(jac, r):
    """``Jᵀ r`` (n,) of an (m, n) J and (m,) r."""
    if jac.shape[1] > SMALL_N:
        return jac.T @ r
    return small_sum(jac * r[:, None], axis=0)


def j_vec(jac, v):
    """``J v`` (m,) of an (m, n) J and (n,) v."""
    if jac.shape[1] > SMALL_N:
        return jac @ v
    return small_sum(jac * v[None, :], axis=1)


@jax.custom_jvp
def _msum(terms):
    zeros = tuple(jnp.zeros((), t.dtype) for t in terms)
    return lax.reduce(tuple(terms), zeros,
                      lambda a, b: tuple(u + v for u, v in zip(a, b)), (terms[0].ndim - 1,))


@_msum.defjvp
def _msum_jvp(primals, tangents):
    (terms,), (dterms,) = primals, tangents
    return _msum(terms), tuple(jnp.sum(t, axis=-1) for t in dterms)


def msum(terms):
    """The sums over the last axis of several arrays of one shape, as ONE variadic reduce.

    ``terms``: a sequence of same-shape, same-dtype arrays (k, ..., m) -> a list of their sums
    over m. XLA on CPU emits each separate ``jnp.sum`` as its own pass over the data, and
    fuses the producers (an ``exp`` of the model, say) into every one of them: under ``vmap``
    the ten sums of a 3-parameter Gram matrix then cost ~3.5x one pass. One variadic reduce
    computes the producers once and reads the data once. Differentiable (its tangent is the
    plain sums of the tangents)."""
    return list(_msum(tuple(terms)))


def gram_sums(cols, r):
    """``(JᵀJ, Jᵀr, r·r)`` of J given by its n <= SMALL_N columns ``cols`` (a list of (m,)
    arrays) in one pass (:func:`msum`): the Gram matrix as nested lists of n x n scalars,
    Jᵀr as a list of n scalars, r·r a scalar."""
    n = len(cols)
    pairs = [(i, j) for i in range(n) for j in range(i + 1)]
    sums = msum([cols[i] * r for i in range(n)] + [cols[i] * cols[j] for i, j in pairs]
                + [r * r])
    gram = [[None] * n for _ in range(n)]
    for (i, j), value in zip(pairs, sums[n:]):
        gram[i][j] = gram[j][i] = value
    return gram, sums[:n], sums[-1]


# --------------------------------------------------------------------------------------------
# factors


class SpectralFactor(eqx.Module):
    """``AᵀA = V diag(s²) Vᵀ`` with ``utr = Uᵀ r``; ``u`` (m, k) is kept by the dense solvers.

    scale (n,) d; free (n,) 0/1; s (k,) descending; v (n, k); utr (k,); u (m, k) or None;
    g (n,) the unscaled gradient ``Jᵀ r``; col_norms (n,) ``|J_j|``.
    """

    scale: jnp.ndarray
    free: jnp.ndarray
    s: jnp.ndarray
    v: jnp.ndarray
    utr: jnp.ndarray
    u: Optional[jnp.ndarray]
    g: jnp.ndarray
    col_norms: jnp.ndarray

    def structural(self):
        """Directions that exist: s > 0 and not one of the zeroed (masked / held) columns.

        Zeroed columns have singular values that are zero only up to rounding, so the
        smallest ``#zeroed`` are dropped by count."""
        held = small_sum(1.0 - self.free)
        k = self.s.shape[0]
        return (self.s > 0) & (jnp.arange(k) < k - held)

    def _filtered(self, coeffs, damping, min_eigval):
        s2 = self.s * self.s
        denom = s2 + damping
        keep = (denom > min_eigval * (s2[0] + damping)) & self.structural()
        filt = jnp.where(keep, self.s / jnp.where(keep, denom, 1.0), 0.0)
        return -j_vec(self.v, filt * coeffs) / self.scale * self.free

    def solve(self, damping, min_eigval):
        """δ = -(JᵀJ + λ D)⁺ Jᵀ r (unscaled, (n,)); an rcond-like cut at min_eigval."""
        return self._filtered(self.utr, damping, min_eigval)

    def solve_for(self, damping, min_eigval, b, jt_b):
        """δ = -(JᵀJ + λ D)⁺ Jᵀ b for another right-hand side b (m,); ``jt_b = Jᵀ b`` (n,)."""
        if self.u is not None:
            coeffs = jt_vec(self.u, b)
        else:
            h = (self.free / self.scale) * jt_b
            safe = jnp.where(self.s > 0, self.s, 1.0)
            coeffs = jnp.where(self.s > 0, jt_vec(self.v, h) / safe, 0.0)
        return self._filtered(coeffs, damping, min_eigval)

    def with_residuals(self, r, g):
        """The same J, new residuals r (m,) with unscaled gradient g = Jᵀ r (n,)."""
        if self.u is not None:
            utr = jt_vec(self.u, r)
        else:
            h = (self.free / self.scale) * g
            safe = jnp.where(self.s > 0, self.s, 1.0)
            utr = jnp.where(self.s > 0, jt_vec(self.v, h) / safe, 0.0)
        return eqx.tree_at(lambda f: (f.utr, f.g), self, (utr, g))

    def projected_norm(self):
        """``|P_J r|``: the residuals' component in J's column space (free subspace)."""
        return small_norm(jnp.where(self.structural(), self.utr, 0.0))

    def gauss_newton(self, min_eigval, rnorm):
        """(norm of the scaled Gauss-Newton step, residual norm along dropped directions)."""
        exists = self.structural()
        keep = (self.s * self.s > min_eigval * self.s[0] * self.s[0]) & exists
        gn = jnp.where(keep, self.utr / jnp.where(keep, self.s, 1.0), 0.0)
        dropped = small_norm(jnp.where(~keep & exists, self.utr, 0.0))
        return small_norm(gn), dropped

    def scaled_gram_quadratic(self, y):
        """``|A y|²`` for a scaled step y (n,)."""
        return small_sum((self.s * jt_vec(self.v, y)) ** 2)


class CholeskyFactor(eqx.Module):
    """Normal equations solved by Cholesky for each damping: gram (n, n) = ``AᵀA`` (masked),
    g (n,) the unscaled ``Jᵀ r``, scale, free, col_norms as in :class:`SpectralFactor`."""

    scale: jnp.ndarray
    free: jnp.ndarray
    gram: jnp.ndarray
    g: jnp.ndarray
    col_norms: jnp.ndarray

    def _solve_scaled(self, h, damping, min_eigval):
        diag = jnp.diagonal(self.gram)
        # a floor on the damping plays the part of the spectral solvers' rcond cut
        shift = damping + min_eigval * small_max(diag) + jnp.finfo(self.gram.dtype).tiny
        mat = self.gram + shift * jnp.eye(self.gram.shape[0], dtype=self.gram.dtype)
        return -cholesky_solve(mat, h)

    def solve(self, damping, min_eigval):
        h = (self.free / self.scale) * self.g
        return self._solve_scaled(h, damping, min_eigval) / self.scale * self.free

    def solve_for(self, damping, min_eigval, b, jt_b):
        h = (self.free / self.scale) * jt_b
        return self._solve_scaled(h, damping, min_eigval) / self.scale * self.free

    def with_residuals(self, r, g):
        return eqx.tree_at(lambda f: f.g, self, g)

    def projected_norm(self):
        h = (self.free / self.scale) * self.g
        y = self._solve_scaled(h, 0.0, 1e-13)
        return jnp.sqrt(jnp.maximum(-vdot(h, y), 0.0))

    def gauss_newton(self, min_eigval, rnorm):
        h = (self.free / self.scale) * self.g
        y = self._solve_scaled(h, 0.0, min_eigval)
        return small_norm(y), jnp.zeros((), h.dtype)

    def scaled_gram_quadratic(self, y):
        return vdot(y, j_vec(self.gram, y))


# --------------------------------------------------------------------------------------------
# small-n Cholesky


def cholesky_solve(mat, b):
    """Solve ``mat x = b`` for a symmetric positive-definite (n, n) ``mat``.

    For n <= 8 the factorisation and both triangular solves are unrolled into scalar
    operations (under ``vmap`` they stay elementwise instead of becoming a batched LAPACK
    call); larger n uses ``jnp.linalg.cholesky``. A matrix that is not positive definite gives
    non-finite values, which LM rejects as a failed trial.
    """
    n = mat.shape[0]
    if n > SMALL_N:
        chol = jnp.linalg.cholesky(mat)
        z = jax.scipy.linalg.solve_triangular(chol, b, lower=True)
        return jax.scipy.linalg.solve_triangular(chol.T, z, lower=False)
    low = [[None] * n for _ in range(n)]
    for j in range(n):
        acc = mat[j, j]
        for k in range(j):
            acc = acc - low[j][k] * low[j][k]
        ljj = jnp.sqrt(acc)
        low[j][j] = ljj
        for i in range(j + 1, n):
            acc = mat[i, j]
            for k in range(j):
                acc = acc - low[i][k] * low[j][k]
            low[i][j] = acc / ljj
    z = [None] * n
    for i in range(n):
        acc = b[i]
        for k in range(i):
            acc = acc - low[i][k] * z[k]
        z[i] = acc / low[i][i]
    x = [None] * n
    for i in reversed(range(n)):
        acc = z[i]
        for k in range(i + 1, n):
            acc = acc - low[k][i] * x[k]
        x[i] = acc / low[i][i]
    return jnp.stack(x)


# --------------------------------------------------------------------------------------------
# normal equations in bounded memory


def normal_equations_by_rows(chunk: Callable, x, args, m: int, rows: int):
    """``(JᵀJ (n, n), Jᵀr (n,))`` accumulated over row chunks of the residual vector.

    ``chunk(x, args, start, size) -> (size,)`` gives residual rows ``start .. start+size``
    (``start + size <= m`` always holds: the last chunk is shifted back and its rows that
    were already counted are masked out). ``rows`` is the chunk size.
    """
    rows = int(min(max(rows, 1), m))
    n_chunks = -(-m // rows)
    n = x.shape[0]

    def body(carry, i):
        gram, grad = carry
        nominal = i * rows
        start = jnp.minimum(nominal, m - rows)

        def f(z):
            r = chunk(z, args, start, rows)
            return r, r

        jac_c, r_c = jax.jacfwd(f, has_aux=True)(x)
        valid = (start + jnp.arange(rows)) >= nominal
        r_c = jnp.where(valid, r_c, 0.0)
        jac_c = jnp.where(valid[:, None], jac_c, 0.0)
        return (gram + jac_c.T @ jac_c, grad + jac_c.T @ r_c), None

    zero = (jnp.zeros((n, n), x.dtype), jnp.zeros((n,), x.dtype))
    (gram, grad), _ = lax.scan(body, zero, jnp.arange(n_chunks))
    return gram, grad


def normal_equations_by_columns(f: Callable, x, block: int):
    """``(JᵀJ, Jᵀr, r)`` for ``f(x) -> (m,)`` over blocks of ``block`` parameter columns.

    Each block computes ``J E`` (m, block) by forward mode and ``Jᵀ (J E)`` by the stored
    reverse-mode pullback; the (m, n) Jacobian is never formed.
    """
    n = x.shape[0]
    block = int(min(max(block, 1), n))
    n_blocks = -(-n // block)
    r, pullback = jax.vjp(f, x)
    basis = jnp.eye(n_blocks * block, n, dtype=x.dtype)

    def one_block(b):
        tangents = lax.dynamic_slice_in_dim(basis, b * block, block, axis=0)   # (block, n)
        cols = jax.vmap(lambda v: jax.jvp(f, (x,), (v,))[1])(tangents)         # (block, m)
        return jax.vmap(lambda c: pullback(c)[0])(cols)                        # (block, n)

    gram = lax.map(one_block, jnp.arange(n_blocks)).reshape(n_blocks * block, n)[:n]
    grad = pullback(r)[0]
    return 0.5 * (gram + gram.T), grad, r


def rows_for_memory(max_mem: float, n: int, itemsize: int) -> int:
    """Row-chunk size whose (rows, n) Jacobian chunk and its jacfwd workspace fit max_mem."""
    return max(1, int(max_mem // (4 * n * itemsize)))


def columns_for_memory(max_mem: float, m: int, itemsize: int) -> int:
    """Column-block size whose two (m, block) buffers fit max_mem."""
    return max(1, int(max_mem // (4 * m * itemsize)))


# --------------------------------------------------------------------------------------------
# the linear solvers (settings only)


class AbstractLinearSolver(eqx.Module):
    """How LM turns a Jacobian into a factor. ``dense`` solvers keep the (m, n) J in the state."""

    def dense(self) -> bool:
        return True

    def factor_dense(self, jac, r, scale, free):  # pragma: no cover - abstract
        raise NotImplementedError

    def factor_gram(self, gram, g, scale, free):
        """``(partial, ill)``: the start of the factor of an n <= SMALL_N Jacobian from its
        unscaled Gram matrix ``gram`` (nested lists of n x n scalars) and gradient
        ``g = Jᵀr`` (a list of n scalars), as LM's fused path computes them at every trial
        (:func:`gram_sums`: one pass over the residuals, nothing of size m kept). ``ill``
        (bool): the Gram matrix is too ill-conditioned for this solver, which wants
        :meth:`refine` with the columns. LM refines and finishes (:meth:`finish`) only the
        point it keeps; the factor is never reused with other residuals (no
        ``with_residuals``)."""
        raise NotImplementedError(f"{type(self).__name__} has no small-n factor")

    def refine(self, partial, cols, r):
        """``partial`` (from :meth:`factor_gram`) recomputed from J's columns ``cols`` (n, m)
        and the residuals r (m,), where the Gram matrix was too ill-conditioned."""
        return partial

    def finish(self, partial):
        """The factor from :meth:`factor_gram`'s (refined) ``partial``."""
        return partial


def _spectral_from_gram(gram_scaled, g, scale, free, col_norms, u_from=None):
    evals, evecs = jnp.linalg.eigh(gram_scaled)
    evals, v = evals[::-1], evecs[:, ::-1]
    s = jnp.sqrt(jnp.maximum(evals, 0.0))
    safe = jnp.where(s > 0, s, 1.0)
    inv_s = jnp.where(s > 0, 1.0 / safe, 0.0)
    if u_from is not None:
        scaled, r = u_from
        u = (scaled @ v) * inv_s
        utr = u.T @ r
    else:
        u = None
        utr = (v.T @ ((free / scale) * g)) * inv_s
    return SpectralFactor(scale=scale, free=free, s=s, v=v, utr=utr, u=u, g=g,
                          col_norms=col_norms)


def _jacobi_rotation(alpha, beta, gamma, tiny):
    """Hestenes-Jacobi rotation (c, s) that makes two columns with squared norms ``alpha``,
    ``beta`` and inner product ``gamma`` orthogonal, and their off-orthogonality
    ``|gamma| / sqrt(alpha beta)``; no rotation (c = 1, s = 0) where ``|gamma| <= tiny``."""
    off = jnp.abs(gamma) / jnp.maximum(jnp.sqrt(alpha * beta), tiny)
    rotate = jnp.abs(gamma) > tiny
    zeta = (beta - alpha) / (2 * jnp.where(rotate, gamma, 1.0))
    t = jnp.sign(zeta) / (jnp.abs(zeta) + jnp.sqrt(1 + zeta * zeta))
    t = jnp.where(rotate & (zeta != 0), t, jnp.where(rotate, 1.0, 0.0))
    c = 1 / jnp.sqrt(1 + t * t)
    return c, c * t, off


def thin_svd(a):
    """Thin SVD ``a = u diag(s) vᵀ`` of an (m, n) matrix: (u (m, k), s (k,) descending, v (n, k)).

    For n <= 8 and m >= n, one-sided (Hestenes) Jacobi: pairs of columns are rotated until
    they are orthogonal to working precision (at most 30 sweeps), the column norms are then
    the singular values. Every operation is elementwise or a length-m dot, so under ``vmap`` a
    batch of tiny fits stays vectorised instead of becoming a batched LAPACK call (about 10x
    faster than ``jnp.linalg.svd`` for 2,000 (50, 3) matrices on CPU); Jacobi is at least as
    accurate as LAPACK's SVD on ill-conditioned matrices. Otherwise ``jnp.linalg.svd``.
    """
    m, n = a.shape
    if n > SMALL_N or m < n:
        u, s, vt = jnp.linalg.svd(a, full_matrices=False)
        return u, s, vt.T
    eps = jnp.finfo(a.dtype).eps
    tiny = jnp.finfo(a.dtype).tiny
    pairs = [(p, q) for p in range(n) for q in range(p + 1, n)]

    def sweep(carry):
        cols, vcols, _, it = carry
        cols, vcols = list(cols), list(vcols)
        off = jnp.zeros((), a.dtype)
        for p, q in pairs:
            c, sn, off_pq = _jacobi_rotation(vdot(cols[p], cols[p]), vdot(cols[q], cols[q]),
                                             vdot(cols[p], cols[q]), tiny)
            off = jnp.maximum(off, off_pq)
            cols[p], cols[q] = c * cols[p] - sn * cols[q], sn * cols[p] + c * cols[q]
            vcols[p], vcols[q] = c * vcols[p] - sn * vcols[q], sn * vcols[p] + c * vcols[q]
        return tuple(cols), tuple(vcols), off, it + 1

    def going(carry):
        return (carry[2] > eps) & (carry[3] < 30)

    eye = jnp.eye(n, dtype=a.dtype)
    init = (tuple(a[:, j] for j in range(n)), tuple(eye[:, j] for j in range(n)),
            jnp.asarray(jnp.inf, a.dtype), jnp.zeros((), jnp.int32))
    cols, vcols, _, _ = lax.while_loop(going, sweep, init)
    w = jnp.stack(cols, axis=1)
    v = jnp.stack(vcols, axis=1)
    s = jnp.sqrt(jnp.sum(w * w, axis=0))
    order = jnp.argsort(-s)
    s, w, v = s[order], w[:, order], v[:, order]
    u = w / jnp.where(s > 0, s, 1.0)
    return u, s, v


def small_qr(cols, r):
    """``A = Q R`` by modified Gram-Schmidt on the columns of ``[A r]``: (R (n, n) upper
    triangular, ``z = Qᵀ r`` (n,)), for A given by its n <= SMALL_N columns ``cols`` (n, m),
    m >= n.

    MGS applied to the augmented matrix gives R and Qᵀr backward-stably (Björck), so
    ``R`` has the singular values of ``A`` to working precision however ill-conditioned it
    is; Q itself is not formed. A zero column gives a zero row of R. Every operation is an
    elementwise product or a length-m sum (vectorised under ``vmap``).
    """
    n = cols.shape[0]
    cols = [cols[j] for j in range(n)]
    rows = [[jnp.zeros((), cols[0].dtype)] * n for _ in range(n)]
    z = []
    for k in range(n):
        norm = jnp.sqrt(vdot(cols[k], cols[k]))
        q = cols[k] / jnp.where(norm > 0, norm, 1.0)
        rows[k][k] = norm
        for j in range(k + 1, n):
            rows[k][j] = vdot(q, cols[j])
            cols[j] = cols[j] - rows[k][j] * q
        z.append(vdot(q, r))
        r = r - z[k] * q
    return jnp.stack([jnp.stack(row) for row in rows]), jnp.stack(z)


def triangular_from_gram(gram, h, accurate_below: float):
    """(R (n, n) upper triangular with ``RᵀR = AᵀA``, ``z = R⁻ᵀ Aᵀ r`` (n,), ill), i.e. what
    :func:`small_qr` gives, from the Gram matrix ``gram`` (nested lists of n x n scalars,
    n <= SMALL_N) and ``h = Aᵀ r`` (a list of n scalars).

    The Cholesky factor is unrolled into elementwise operations. That squares the condition
    number: ``ill`` is True where a pivot falls below ``accurate_below`` times the largest
    diagonal entry (``cond² ≳ 1 / accurate_below``) or is not finite; there R and z should
    be recomputed by :func:`small_qr` from the columns. Zero columns (masked or held
    parameters) give zero rows of R.
    """
    n = len(h)
    dtype = h[0].dtype
    top = small_max(jnp.stack([gram[j][j] for j in range(n)]))
    low = [[jnp.zeros((), dtype)] * n for _ in range(n)]
    ill = ~jnp.isfinite(top)
    for j in range(n):
        acc = gram[j][j] - sum((low[j][k] * low[j][k] for k in range(j)), jnp.zeros((), dtype))
        ill = ill | ((gram[j][j] > 0) & ~(acc > accurate_below * top))
        pivot = jnp.sqrt(jnp.maximum(acc, 0.0))
        safe = jnp.where(pivot > 0, pivot, 1.0)
        low[j][j] = pivot
        for i in range(j + 1, n):
            acc_ij = gram[i][j] - sum((low[i][k] * low[j][k] for k in range(j)),
                                      jnp.zeros((), dtype))
            low[i][j] = jnp.where(pivot > 0, acc_ij / safe, 0.0)
    z = []
    for i in range(n):
        acc = h[i] - sum((low[i][k] * z[k] for k in range(i)), jnp.zeros((), dtype))
        z.append(jnp.where(low[i][i] > 0, acc / jnp.where(low[i][i] > 0, low[i][i], 1.0), 0.0))
    rmat = jnp.stack([jnp.stack([low[j][i] for j in range(n)]) for i in range(n)])
    return rmat, jnp.stack(z), ill


def small_square_svd(rmat, z):
    """(s (n,) descending, v (n, n), ``Uᵀ z`` (n,)) of the SVD ``rmat = U diag(s) Vᵀ`` of a
    square n <= SMALL_N matrix, by one-sided (Hestenes) Jacobi as :func:`thin_svd`, written on
    lists of scalars: every operation is elementwise, so under ``vmap`` a batch of tiny fits
    stays one vectorised loop (no batched dot products, no sort: an odd-even transposition
    network orders the singular values)."""
    n = rmat.shape[0]
    dtype = rmat.dtype
    eps = jnp.finfo(dtype).eps
    tiny = jnp.finfo(dtype).tiny
    pairs = [(p, q) for p in range(n) for q in range(p + 1, n)]

    def dot(a, b):
        return sum((u * v for u, v in zip(a[1:], b[1:])), a[0] * b[0])

    def sweep(carry):
        cols, vcols, _, it = carry
        cols, vcols = [list(c) for c in cols], [list(c) for c in vcols]
        off = jnp.zeros((), dtype)
        for p, q in pairs:
            c, sn, off_pq = _jacobi_rotation(dot(cols[p], cols[p]), dot(cols[q], cols[q]),
                                             dot(cols[p], cols[q]), tiny)
            off = jnp.maximum(off, off_pq)
            for vecs in (cols, vcols):
                a, b = vecs[p], vecs[q]
                vecs[p] = [c * u - sn * w for u, w in zip(a, b)]
                vecs[q] = [sn * u + c * w for u, w in zip(a, b)]
        return tuple(map(tuple, cols)), tuple(map(tuple, vcols)), off, it + 1

    def going(carry):
        return (carry[2] > eps) & (carry[3] < 30)

    one, zero = jnp.ones((), dtype), jnp.zeros((), dtype)
    init = (tuple(tuple(rmat[i, j] for i in range(n)) for j in range(n)),
            tuple(tuple(one if i == j else zero for i in range(n)) for j in range(n)),
            jnp.asarray(jnp.inf, dtype), jnp.zeros((), jnp.int32))
    cols, vcols, _, _ = lax.while_loop(going, sweep, init)
    zs = [z[i] for i in range(n)]
    s = [jnp.sqrt(dot(c, c)) for c in cols]
    utr = [jnp.where(sj > 0, dot(c, zs) / jnp.where(sj > 0, sj, 1.0), 0.0)
           for sj, c in zip(s, cols)]
    vcols = [list(c) for c in vcols]
    for rnd in range(n):
        for i in range(rnd % 2, n - 1, 2):
            swap = s[i] < s[i + 1]
            for vals in (s, utr, vcols):
                a, b = vals[i], vals[i + 1]
                if isinstance(a, list):
                    vals[i] = [jnp.where(swap, w, u) for u, w in zip(a, b)]
                    vals[i + 1] = [jnp.where(swap, u, w) for u, w in zip(a, b)]
                else:
                    vals[i], vals[i + 1] = jnp.where(swap, b, a), jnp.where(swap, a, b)
    v = jnp.stack([jnp.stack(c) for c in vcols], axis=1)
    return jnp.stack(s), v, jnp.stack(utr)


def rarely(pred, fn: Callable, operands: tuple, default):
    """``fn(*operands)`` where ``pred`` holds, else ``default`` (a pytree like ``fn``'s
    output), as a ``while_loop`` that runs zero times or once.

    Unbatched it acts as a ``cond``. Under ``vmap`` a ``cond`` becomes a ``select`` that pays
    for ``fn`` in every lane at every call; this loop runs only if some lane of the batch has
    ``pred``, so a branch that few lanes take (an ill-conditioned fallback) costs nothing in
    the common case. The operands pass through a select on the loop counter, so XLA cannot
    hoist ``fn`` out of the loop as loop-invariant (which would run it unconditionally)."""

    def body(carry):
        _, trip, _ = carry
        first = trip == 0
        ops = jax.tree_util.tree_map(lambda v: jnp.where(first, v, jnp.zeros_like(v)), operands)
        return jnp.asarray(False), trip + 1, fn(*ops)

    return lax.while_loop(lambda c: c[0], body, (jnp.asarray(pred), jnp.zeros((), jnp.int32),
                                                default))[2]


class DenseSVD(AbstractLinearSolver):
    """Thin SVD of the scaled (m, n) Jacobian (default; accurate on ill-conditioned fits);
    see :func:`thin_svd` for the small-n path."""

    def factor_dense(self, jac, r, scale, free):
        scaled = jac * (free / scale)
        u, s, v = thin_svd(scaled)
        return SpectralFactor(scale=scale, free=free, s=s, v=v, utr=u.T @ r, u=u,
                              g=jac.T @ r, col_norms=_column_norms(jac))

    def factor_gram(self, gram, g, scale, free):
        """For n <= SMALL_N from the unscaled Gram matrix ``gram`` and gradient ``g``
        (:meth:`AbstractLinearSolver.factor_gram`): R and ``Qᵀr`` of the scaled ``A = QR``
        (:func:`triangular_from_gram`; ill where ``cond(A)² >= 1/√ε``: :meth:`refine` then
        redoes R by MGS on the columns); :meth:`finish` takes the n x n Jacobi SVD of R
        (:func:`small_square_svd`); U (m, n) is not formed (``u=None``). The same singular
        values and ``Uᵀr`` as :meth:`factor_dense` for a fraction of the work."""
        eps = float(jnp.finfo(g[0].dtype).eps)
        w = free / scale
        rmat, z, ill = triangular_from_gram(_scaled_gram(gram, w),
                                            [w[i] * g[i] for i in range(len(g))], eps ** 0.5)
        return _Triangular(scale=scale, free=free, rmat=rmat, z=z, g=jnp.stack(g),
                           col_norms=_gram_norms(gram)), ill

    def refine(self, partial, cols, r):
        return eqx.tree_at(lambda f: (f.rmat, f.z), partial,
                           small_qr(cols * (partial.free / partial.scale)[:, None], r))

    def finish(self, partial):
        s, v, utr = small_square_svd(partial.rmat, partial.z)
        return SpectralFactor(scale=partial.scale, free=partial.free, s=s, v=v, utr=utr, u=None,
                              g=partial.g, col_norms=partial.col_norms)


class _Triangular(eqx.Module):
    """DenseSVD's partial small-n factor: R (n, n) and z = Qᵀr of the scaled J = QR, with
    scale, free, g and col_norms as in :class:`SpectralFactor`."""

    scale: jnp.ndarray
    free: jnp.ndarray
    rmat: jnp.ndarray
    z: jnp.ndarray
    g: jnp.ndarray
    col_norms: jnp.ndarray


class DenseEigh(AbstractLinearSolver):
    """Eigendecomposition of the scaled (n, n) Gram matrix, J kept (squares the condition)."""

    def factor_dense(self, jac, r, scale, free):
        scaled = jac * (free / scale)
        return _spectral_from_gram(scaled.T @ scaled, jac.T @ r, scale, free,
                                   _column_norms(jac), u_from=(scaled, r))

    def factor_gram(self, gram, g, scale, free):
        gram_s = jnp.stack([jnp.stack(row) for row in _scaled_gram(gram, free / scale)])
        return (_spectral_from_gram(gram_s, jnp.stack(g), scale, free, _gram_norms(gram)),
                jnp.asarray(False))


class NormalEquations(AbstractLinearSolver):
    """Work on ``JᵀJ`` and ``Jᵀr``: ``method`` 'cholesky' (per-damping Cholesky, unrolled for
    n <= 8) or 'eigh'; ``max_mem`` (bytes) or None. With ``max_mem`` the Jacobian is never
    formed (see the module docstring); without, J is formed by autodiff and kept (Broyden and
    eigen updates then work)."""

    method: str = eqx.field(default="cholesky", static=True)
    max_mem: Optional[float] = eqx.field(default=None, static=True)

    def __check_init__(self):
        if self.method not in ("cholesky", "eigh"):
            raise ValueError(f"NormalEquations.method must be 'cholesky' or 'eigh', got "
                             f"{self.method!r}")
        if self.max_mem is not None and not self.max_mem > 0:
            raise ValueError(f"max_mem must be a positive number of bytes or None, got "
                             f"{self.max_mem!r}")

    def dense(self) -> bool:
        return self.max_mem is None

    def factor_normal(self, jtj, jtr, scale, free):
        col_norms = jnp.sqrt(jnp.maximum(jnp.diagonal(jtj), 0.0))
        w = free / scale
        gram = jtj * jnp.outer(w, w)
        if self.method == "eigh":
            return _spectral_from_gram(gram, jtr, scale, free, col_norms)
        return CholeskyFactor(scale=scale, free=free, gram=gram, g=jtr, col_norms=col_norms)

    def factor_dense(self, jac, r, scale, free):
        return self.factor_normal(jac.T @ jac, jac.T @ r, scale, free)

    def factor_gram(self, gram, g, scale, free):
        jtj = jnp.stack([jnp.stack(row) for row in gram])
        return self.factor_normal(jtj, jnp.stack(g), scale, free), jnp.asarray(False)


def _column_norms(jac):
    return jnp.sqrt(jnp.sum(jac * jac, axis=0))


def _scaled_gram(gram, w):
    n = len(gram)
    return [[gram[i][j] * (w[i] * w[j]) for j in range(n)] for i in range(n)]


def _gram_norms(gram):
    return jnp.sqrt(jnp.maximum(jnp.stack([gram[j][j] for j in range(len(gram))]), 0.0))
