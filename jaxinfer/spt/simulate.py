"""Simulated single-particle trajectories in a known diffusivity and potential field.

The model is TRamWAy's DV model (k_B T = 1 units): overdamped Langevin dynamics

    dr = D(r) F(r) dt + sqrt(2 D(r) dt) xi,      F = -grad V,

integrated with the Euler–Maruyama scheme in the Itô convention, the convention in which
TRamWAy's likelihood is written (mean displacement ``mu = -D dt grad V``, no ``grad D`` term).
With ``convention="isothermal"`` the spurious-drift term ``grad D dt`` is added, which makes
the Boltzmann distribution ``exp(-V)`` stationary (a choice of the physicist, not of the
inference).

Fields are plain JAX functions of one position ``r`` (shape ``(dim,)``, µm) returning a scalar:
``diffusivity(r)`` in µm²/s and ``potential(r)`` in k_B T. Forces and drifts come from
``jax.grad``. Ready-made fields: :func:`constant`, :func:`linear`, :func:`gaussian_well`,
:func:`demo_fields`.

All randomness is explicit: every simulation takes a ``jax.random`` key.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

__all__ = [
    "Field",
    "constant",
    "linear",
    "gaussian_well",
    "demo_fields",
    "simulate_trajectories",
    "crop_to_window",
    "truth_at",
    "map_errors",
]

Field = Callable[[jnp.ndarray], jnp.ndarray]
"""A scalar field: position ``r`` of shape ``(dim,)`` -> scalar."""

ArrayLike = Union[float, Sequence[float], np.ndarray, jnp.ndarray]


# --------------------------------------------------------------------------- ready-made fields


def constant(value: float) -> Field:
    """A constant field ``f(r) = value``."""

    def field(r):
        return jnp.asarray(value, dtype=jnp.result_type(r)) + 0.0 * r[0]

    return field


def linear(offset: float, gradient: ArrayLike) -> Field:
    """An affine field ``f(r) = offset + gradient . r``.

    For a diffusivity, ``offset`` is D at the origin (µm²/s) and ``gradient`` its slope
    (µm/s, shape ``(dim,)``); keep D positive over the simulated domain. For a potential,
    ``V = -f . r`` is a constant force ``f``: pass ``linear(0.0, -f)``.
    """
    gradient = jnp.asarray(gradient)

    def field(r):
        return offset + jnp.dot(gradient.astype(jnp.result_type(r)), r)

    return field


def gaussian_well(depth: float, width: float, center: ArrayLike = (0.0, 0.0)) -> Field:
    """Potential well ``V(r) = -depth * exp(-|r - center|² / (2 width²))`` (k_B T).

    ``depth`` > 0 is the well depth in k_B T, ``width`` its standard deviation (µm).
    The force ``-grad V`` points to the centre, with peak magnitude
    ``depth / width * exp(-1/2)`` at distance ``width``.
    """
    center = jnp.asarray(center)

    def field(r):
        d = r - center.astype(jnp.result_type(r))
        return -depth * jnp.exp(-jnp.dot(d, d) / (2.0 * width**2))

    return field


def demo_fields():
    """The fields of the embedded demo data set, on the square ``[-1, 1]²`` µm.

    Returns ``(diffusivity, potential)``: D rises linearly from 0.1 µm²/s at x = -1 to
    0.3 µm²/s at x = 1; V is a Gaussian well of depth 2 k_B T and width 0.4 µm centred at
    (0.2, -0.1) µm.
    """
    return linear(0.2, (0.1, 0.0)), gaussian_well(2.0, 0.4, (0.2, -0.1))


# --------------------------------------------------------------------------- simulation


def _fold(x, lower, upper):
    """Reflect coordinates into ``[lower, upper]`` (any number of bounces)."""
    width = upper - lower
    y = jnp.mod(x - lower, 2.0 * width)
    return lower + jnp.where(y > width, 2.0 * width - y, y)


def _drift_and_diffusivity(diffusivity: Field, potential: Optional[Field], convention: str):
    """Per-position function ``r -> (drift velocity (dim,), D)``."""

    def local(r):
        D = diffusivity(r)
        drift = jnp.zeros_like(r)
        if potential is not None:
            drift = drift - D * jax.grad(potential)(r)
        if convention == "isothermal":
            drift = drift + jax.grad(diffusivity)(r)
        return drift, D

    return local


def _simulate_paths(key, starts, n_steps, dt, substeps, local, lower, upper, reflect):
    """Positions of every particle at ``n_steps + 1`` recorded times: ``(n, n_steps+1, dim)``."""
    h = dt / substeps
    batched = jax.vmap(local)

    def substep(r, noise):
        drift, D = batched(r)
        D = jnp.maximum(D, 0.0)
        r = r + drift * h + jnp.sqrt(2.0 * D * h)[:, None] * noise
        if reflect:
            r = _fold(r, lower, upper)
        return r, None

    def step(r, step_key):
        noise = jax.random.normal(step_key, (substeps,) + r.shape, dtype=r.dtype)
        r, _ = jax.lax.scan(substep, r, noise)
        return r, r

    keys = jax.random.split(key, n_steps)
    _, path = jax.lax.scan(step, starts, keys)
    return jnp.concatenate([starts[None], path], axis=0).transpose(1, 0, 2)


def simulate_trajectories(
    key: jax.Array,
    diffusivity: Union[Field, float],
    potential: Optional[Field] = None,
    *,
    n_trajectories: int = 1000,
    mean_length: float = 10.0,
    min_length: int = 2,
    max_length: Optional[int] = None,
    dt: float = 0.02,
    lower_bound: ArrayLike = (-1.0, -1.0),
    upper_bound: ArrayLike = (1.0, 1.0),
    reflect: bool = True,
    sigma: float = 0.0,
    starts: Optional[np.ndarray] = None,
    substeps: int = 1,
    convention: str = "ito",
    dtype=None,
) -> pd.DataFrame:
    """Simulate overdamped Langevin trajectories in a known D and V field.

    Parameters
    ----------
    key : jax.Array
        ``jax.random`` key; the same key gives the same trajectories.
    diffusivity : callable or float
        ``D(r)`` in µm²/s (a float means constant D). Negative values are clipped to 0.
    potential : callable, optional
        ``V(r)`` in k_B T; the drift velocity is ``-D grad V``. None: free diffusion.
    n_trajectories : int
        Number of trajectories.
    mean_length, min_length, max_length : float, int, int
        Trajectory lengths (points, not translocations) are ``min_length`` plus a geometric
        number with mean ``mean_length - min_length``, capped at ``max_length`` (default
        ``4 * mean_length``). ``mean_length == min_length`` gives fixed lengths.
    dt : float
        Time between recorded points (s).
    lower_bound, upper_bound : array-like of shape (dim,)
        The box (µm). Start points are drawn uniformly in it unless ``starts`` is given.
    reflect : bool
        Reflect particles at the box walls (otherwise they may leave it).
    sigma : float
        Localization error (µm): i.i.d. Gaussian noise of this standard deviation added to
        every recorded coordinate (not to the dynamics).
    starts : array of shape (n_trajectories, dim), optional
        Start points instead of uniform ones.
    substeps : int
        Euler–Maruyama steps per recorded interval (``dt / substeps`` each); more substeps
        integrate spatially varying fields more accurately.
    convention : {"ito", "isothermal"}
        "ito": drift ``-D grad V`` (TRamWAy's model). "isothermal": plus ``grad D``.
    dtype : optional
        Floating dtype of the simulation (default: JAX's default float).

    Returns
    -------
    pandas.DataFrame
        Columns ``n`` (int64, 1-based trajectory id), ``x``, ``y`` [, ``z``] (µm) and ``t``
        (s, from 0 for every trajectory), trajectories contiguous, times increasing.
        ``attrs["simulation"]`` records the parameters.
    """
    lower = np.asarray(lower_bound, dtype=np.float64).ravel()
    upper = np.asarray(upper_bound, dtype=np.float64).ravel()
    if lower.shape != upper.shape or lower.size not in (1, 2, 3):
        raise ValueError(f"lower_bound and upper_bound must both have shape (dim,) with dim in "
                         f"1..3, got {lower.shape} and {upper.shape}")
    if not np.all(upper > lower):
        raise ValueError(f"upper_bound {upper.tolist()} must exceed lower_bound {lower.tolist()} "
                         f"in every dimension")
    dim = lower.size
    if int(n_trajectories) < 1:
        raise ValueError(f"n_trajectories must be >= 1, got {n_trajectories}")
    if int(min_length) < 2:
        raise ValueError(f"min_length must be >= 2 (a trajectory needs two points to give a "
                         f"translocation), got {min_length}")
    if mean_length < min_length:
        raise ValueError(f"mean_length ({mean_length}) must be >= min_length ({min_length})")
    if max_length is None:
        max_length = max(int(min_length), int(np.ceil(4 * mean_length)))
    if int(max_length) < int(min_length):
        raise ValueError(f"max_length ({max_length}) must be >= min_length ({min_length})")
    if not dt > 0:
        raise ValueError(f"dt must be > 0 (s), got {dt}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 (µm), got {sigma}")
    if int(substeps) < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    if convention not in ("ito", "isothermal"):
        raise ValueError(f"convention must be 'ito' or 'isothermal', got {convention!r}")
    if not callable(diffusivity):
        if not float(diffusivity) > 0:
            raise ValueError(f"a constant diffusivity must be > 0 (µm²/s), got {diffusivity}")
        diffusivity = constant(float(diffusivity))
    if potential is not None and not callable(potential):
        raise TypeError(f"potential must be a callable V(r) or None, got {type(potential).__name__}")

    dtype = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
    n_trajectories, min_length, max_length = int(n_trajectories), int(min_length), int(max_length)
    key_start, key_length, key_path, key_noise = jax.random.split(key, 4)
    lo, hi = jnp.asarray(lower, dtype), jnp.asarray(upper, dtype)

    if starts is None:
        starts_arr = jax.random.uniform(key_start, (n_trajectories, dim), dtype, lo, hi)
    else:
        starts_arr = jnp.asarray(starts, dtype)
        if starts_arr.shape != (n_trajectories, dim):
            raise ValueError(f"starts must have shape (n_trajectories, dim) = "
                             f"{(n_trajectories, dim)}, got {starts_arr.shape}")

    extra_mean = float(mean_length) - min_length
    if extra_mean > 0:
        p = 1.0 / (1.0 + extra_mean)  # geometric on {0, 1, ...} with mean extra_mean
        extra = jax.random.geometric(key_length, p, (n_trajectories,)) - 1
        lengths = np.minimum(np.asarray(extra) + min_length, max_length)
    else:
        lengths = np.full(n_trajectories, min_length)
    n_steps = int(lengths.max()) - 1

    local = _drift_and_diffusivity(diffusivity, potential, convention)
    simulate = jax.jit(_simulate_paths, static_argnums=(2, 4, 5, 8))
    paths = simulate(key_path, starts_arr, n_steps, jnp.asarray(dt, dtype), int(substeps), local,
                     lo, hi, bool(reflect))
    if sigma > 0:
        paths = paths + sigma * jax.random.normal(key_noise, paths.shape, dtype)
    paths = np.asarray(paths, dtype=np.float64)

    keep = np.arange(n_steps + 1)[None, :] < lengths[:, None]
    ids = np.broadcast_to(np.arange(1, n_trajectories + 1)[:, None], keep.shape)[keep]
    times = np.broadcast_to(np.arange(n_steps + 1)[None, :] * float(dt), keep.shape)[keep]
    columns = {"n": ids.astype(np.int64)}
    for d, name in enumerate("xyz"[:dim]):
        columns[name] = paths[..., d][keep]
    columns["t"] = times
    df = pd.DataFrame(columns)
    df.attrs["simulation"] = dict(
        n_trajectories=n_trajectories, mean_length=float(mean_length), min_length=min_length,
        max_length=max_length, dt=float(dt), lower_bound=lower.tolist(),
        upper_bound=upper.tolist(), reflect=bool(reflect), sigma=float(sigma),
        substeps=int(substeps), convention=convention)
    return df


def crop_to_window(df: pd.DataFrame, lower_bound: ArrayLike, upper_bound: ArrayLike,
                   min_length: int = 2, keep_exit_points: bool = True) -> pd.DataFrame:
    """Keep the trajectory pieces that start inside a window ``[lower_bound, upper_bound]``.

    A trajectory is split where it leaves the window (each piece gets a new id), so no
    translocation jumps across an unseen excursion. With ``keep_exit_points`` (default) the
    first point outside ends its piece: every translocation whose ORIGIN is inside is kept,
    whatever its length, so cells near the window's edge are not biased towards short jumps
    (dropping exits would bias D down there). Translocations are assigned to the cell of their
    origin, so the exit points only end translocations. With ``keep_exit_points=False`` only
    points inside are kept (a strict field of view). Pieces shorter than ``min_length``
    points are dropped. Simulating in a larger reflecting box and cropping avoids the wall
    artefacts a reflecting box leaves in the border cells (reflected jumps are shortened).

    Returns a new DataFrame ``n, x, y[, z], t`` with ids renumbered from 1.
    """
    lower = np.asarray(lower_bound, dtype=np.float64).ravel()
    upper = np.asarray(upper_bound, dtype=np.float64).ravel()
    cols = [c for c in ("x", "y", "z") if c in df.columns]
    if lower.size != len(cols) or upper.size != len(cols):
        raise ValueError(f"the window needs {len(cols)} bounds per corner (columns {cols}), got "
                         f"{lower.size} and {upper.size}")
    xyz = df[cols].to_numpy(dtype=np.float64)
    inside = np.all((xyz >= lower) & (xyz <= upper), axis=1)
    n = df["n"].to_numpy()
    same = np.zeros(len(df), dtype=bool)
    same[1:] = n[1:] == n[:-1]
    keep = inside.copy()
    if keep_exit_points:
        keep[1:] |= same[1:] & inside[:-1]
    new_piece = np.ones(len(df), dtype=bool)
    new_piece[1:] = ~same[1:] | ~inside[:-1]
    piece = np.cumsum(new_piece)
    kept = df.loc[keep].copy()
    kept["n"] = piece[keep]
    sizes = kept.groupby("n")["n"].transform("size")
    kept = kept.loc[sizes >= min_length]
    kept["n"] = pd.factorize(kept["n"])[0].astype(np.int64) + 1
    kept = kept.reset_index(drop=True)
    kept.attrs = dict(df.attrs)
    kept.attrs["window"] = dict(lower_bound=lower.tolist(), upper_bound=upper.tolist())
    return kept


# --------------------------------------------------------------------------- ground truth


def truth_at(centers: ArrayLike, diffusivity: Union[Field, float],
             potential: Optional[Field] = None) -> pd.DataFrame:
    """Evaluate the true fields at cell centres.

    Parameters
    ----------
    centers : array of shape (n_cells, dim)
        Positions (µm), e.g. cell centres of a tessellation.
    diffusivity, potential : callables (as in :func:`simulate_trajectories`)

    Returns
    -------
    pandas.DataFrame
        One row per centre, TRamWAy column names: ``diffusivity`` (µm²/s) and, with a
        potential, ``potential`` (k_B T), ``force x``, ``force y`` [, ``force z``]
        (k_B T/µm, ``-grad V``) and ``drift x``, ``drift y`` [...] (µm/s, ``D F``).
    """
    centers = jnp.atleast_2d(jnp.asarray(centers))
    dim = centers.shape[1]
    if not callable(diffusivity):
        diffusivity = constant(float(diffusivity))
    D = np.asarray(jax.vmap(diffusivity)(centers))
    out = {"diffusivity": D}
    if potential is not None:
        V = np.asarray(jax.vmap(potential)(centers))
        F = -np.asarray(jax.vmap(jax.grad(potential))(centers))
        out["potential"] = V
        for d, name in enumerate("xyz"[:dim]):
            out[f"force {name}"] = F[:, d]
        for d, name in enumerate("xyz"[:dim]):
            out[f"drift {name}"] = D * F[:, d]
    return pd.DataFrame(out)


def map_errors(maps: pd.DataFrame, truth: pd.DataFrame, weights: Optional[ArrayLike] = None) -> dict:
    """Root-mean-square errors of inferred maps against the truth, per feature.

    ``maps`` and ``truth`` are aligned by row position (same cells, same order). Only
    columns present in both and finite in ``maps`` count. The potential is defined up to a
    constant, so both potentials are centred (weighted mean removed) before comparing.

    Parameters
    ----------
    maps, truth : pandas.DataFrame with TRamWAy column names
    weights : array of shape (n_cells,), optional
        Per-cell weights (e.g. translocation counts); default uniform.

    Returns
    -------
    dict
        ``{"diffusivity": rmse, "potential": rmse, "force": rmse of the vector, ...}`` for the
        features available; ``"force"`` and ``"drift"`` combine the components.
    """
    if len(maps) != len(truth):
        raise ValueError(f"maps has {len(maps)} rows but truth has {len(truth)}: they must "
                         f"describe the same cells in the same order")
    w = np.ones(len(maps)) if weights is None else np.asarray(weights, dtype=np.float64)
    errors = {}
    features = {}
    for column in truth.columns:
        if column in maps.columns:
            features.setdefault(column.split(" ")[0], []).append(column)
    for feature, columns in features.items():
        estimate = maps[columns].to_numpy(dtype=np.float64)
        reference = truth[columns].to_numpy(dtype=np.float64)
        ok = np.all(np.isfinite(estimate), axis=1) & (w > 0)
        if not ok.any():
            continue
        e, r, ww = estimate[ok], reference[ok], w[ok]
        if feature == "potential":
            e = e - np.average(e, axis=0, weights=ww)
            r = r - np.average(r, axis=0, weights=ww)
        errors[feature] = float(np.sqrt(np.average(np.sum((e - r) ** 2, axis=1), weights=ww)))
    return errors
