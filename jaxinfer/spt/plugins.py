"""The analysis modes (TRamWAy's plugins of the same names): ``density``, ``d.conj_prior``,
``snr``, ``bayes_factor`` and ``gradient``; and :func:`group_by_sign`.

Each takes ``(cells, settings, infer_map)``: the cells, the validated
:class:`~jaxinfer.spt.settings.InferSettings`, and ``infer_map(cells, mode, settings) ->
Maps`` to infer a diffusivity map when the input maps do not carry one.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxinfer.spt.gradient import grad1_stencil
from jaxinfer.spt.maps import Maps, counts_of, maps_frame
from jaxinfer.spt.modes import space_axes

__all__ = ["density", "conj_prior", "snr", "bayes_factor", "gradient", "group_by_sign",
           "gradient_of"]


def _maps(columns, cells, settings, mode, params=None, result=None):
    df = maps_frame(columns, cells, settings.export_centers)
    return Maps(df, mode, result, dict(sigma2=settings.sigma2, **(params or {})),
                counts_of(cells, df.index))


def density(cells, settings, infer_map):
    """Translocations per unit area (volume in 3D); NaN where the area is not finite."""
    vol = np.asarray(cells.volumes, dtype=float)
    dens = np.asarray(cells.counts, float) / np.where(np.isfinite(vol) & (vol > 0), vol, np.nan)
    return _maps({"density": dens}, cells, settings, "density")


def gradient_of(cells, values, grad_kw):
    """grad1 of a per-cell scalar field [ncells] -> [ncells, dim]; cells where ``values`` is NaN
    are left out of the neighbourhoods (TRamWAy's ``reverse_index``) and get NaN, as do
    components with no neighbour on either side."""
    values = np.asarray(values, dtype=float)
    out = np.full((cells.ncells, cells.dim), np.nan)
    keep = np.isfinite(values)
    if not keep.any():
        return out
    sub = cells if keep.all() else cells.subset(keep)
    st = grad1_stencil(np.asarray(sub.centers, dtype=float), sub.neighbour_lists(), **grad_kw)
    out[keep] = np.asarray(st.apply(jnp.asarray(values[keep]), na=jnp.nan), dtype=float)
    return out


def _snr_columns(cells, stats, D, dt, grad_kw):
    """TRamWAy's SNR extensions (``add_snr_extensions``): n, V_prior, V, zeta_total,
    zeta_spurious = grad1(D) dt / sqrt(V) (NaN where n < 2 or the gradient is undefined)."""
    cols = {"n": np.asarray(stats["n"], dtype=float),
            "V_prior": np.asarray(stats["V_prior"], dtype=float),
            "V": np.asarray(stats["V"], dtype=float)}
    zt = np.where((cols["n"] > 1)[:, None], np.asarray(stats["zeta_total"], dtype=float), np.nan)
    zs = gradient_of(cells, D, grad_kw) * dt / np.asarray(stats["sd"], dtype=float)[:, None]
    for d, c in enumerate(space_axes(cells.dim)):
        cols[f"zeta_total {c}"] = zt[:, d]
    for d, c in enumerate(space_axes(cells.dim)):
        cols[f"zeta_spurious {c}"] = zs[:, d]
    return cols


def _require_sigma(settings, mode):
    if not settings.sigma_given:
        raise ValueError(f"{mode} needs sigma or sigma2 (the localization error; CLI --sigma); "
                         "TRamWAy has no default here")


def conj_prior(cells, settings, infer_map):
    """Conjugate-prior D MAP, its credible interval and the SNR extensions (TRamWAy's
    columns: n, V_prior, V, zeta_total *, zeta_spurious *, diffusivity, ci low, ci high)."""
    from jaxinfer.spt import conjugate

    _require_sigma(settings, "d.conj_prior")
    est = conjugate.d_conj_prior(cells.dr, cells.dt, cells.mask, sigma2=settings.sigma2,
                                 alpha=settings.alpha)
    D = np.asarray(est["diffusivity"], dtype=float)
    cols = _snr_columns(cells, est, D, float(est["dt"]), settings.grad_kwargs())
    cols["diffusivity"] = D
    cols["ci low"] = np.asarray(est["ci_low"], dtype=float)
    cols["ci high"] = np.asarray(est["ci_high"], dtype=float)
    return _maps(cols, cells, settings, "d.conj_prior", dict(alpha=settings.alpha))


def _input_frame(input_maps, mode):
    if input_maps is None:
        return None
    if isinstance(input_maps, Maps):
        return input_maps.maps
    if isinstance(input_maps, pd.DataFrame):
        return input_maps
    raise TypeError(f"{mode}: input_maps must be a Maps or a DataFrame indexed by cell label, "
                    f"got {type(input_maps).__name__}")


def _diffusivity_map(cells, frame, settings, infer_map, mode):
    """(cells, D [ncells], frame restricted to cells): D read from the input maps (cells with
    a non-empty neighbour, as TRamWAy's infer_snr) or inferred with mode 'd' (the smooth D
    when a diffusivity prior is given), with the same settings."""
    if frame is not None:
        if "diffusivity" not in frame.columns:
            raise ValueError(f"{mode}: input_maps has no 'diffusivity' column (columns: "
                             f"{list(frame.columns)})")
        cells = cells.with_neighbours_only()
        present = np.isin(np.asarray(cells.cell_ids), frame.index.values)
        if not present.any():
            raise ValueError(f"{mode}: no cell label of input_maps matches the cells")
        cells = cells.subset(present)
        sub = frame.reindex(np.asarray(cells.cell_ids))
        return cells, sub["diffusivity"].to_numpy(dtype=float), sub
    d_settings = dataclasses.replace(settings, input_maps=None, export_centers=False)
    dmaps = infer_map(cells, "d", d_settings)
    if settings.diffusivity_prior:
        cells = cells.with_neighbours_only()
    sub = dmaps.maps.reindex(np.asarray(cells.cell_ids))
    return cells, sub["diffusivity"].to_numpy(dtype=float), sub


def _common_dt(cells, mode):
    dt = np.asarray(cells.dt, dtype=float)[np.asarray(cells.mask)]
    med = float(np.median(dt))
    if not np.allclose(dt, med):
        raise ValueError(f"{mode} needs identical translocation durations (dt), got values "
                         f"from {dt.min()} to {dt.max()}")
    return med


def snr(cells, settings, infer_map):
    """TRamWAy's ``snr`` mode: diffusivity (input or inferred) + ``add_snr_extensions``."""
    from jaxinfer.spt.conjugate import jump_statistics

    frame = _input_frame(settings.input_maps, "snr")
    cells, D, sub = _diffusivity_map(cells, frame, settings, infer_map, "snr")
    dt = _common_dt(cells, "snr")
    grad_kw = settings.grad_kwargs()
    cols = _snr_columns(cells, jump_statistics(cells.dr, cells.mask), D, dt, grad_kw)
    keep = [c for c in sub.columns if c not in cols and c not in space_axes(cells.dim)]
    columns = {c: sub[c].to_numpy() for c in keep}
    columns.update(cols)
    return _maps(columns, cells, settings, "snr", dict(dt=dt, **grad_kw))


def bayes_factor(cells, settings, infer_map):
    """TRamWAy's ``bayes_factor`` mode: lg_B, force, min_n per cell from the SNR variables,
    then regions of equal sign of lg_B (groups), their summed lg_B and thresholded force."""
    from jaxinfer.spt import bayes_factors as bf

    _require_sigma(settings, "bayes_factor")
    frame = _input_frame(settings.input_maps, "bayes_factor")
    dim, axes, s2 = cells.dim, space_axes(cells.dim), settings.sigma2
    grad_kw = settings.grad_kwargs()
    snr_cols = ["n", "V", "V_prior"] + [f"{v} {a}" for v in ("zeta_total", "zeta_spurious")
                                         for a in axes]
    if frame is not None and all(c in frame.columns for c in snr_cols):
        # the SNR variables are given (e.g. the output of mode 'snr' or 'd.conj_prior')
        sub = frame.reindex(np.asarray(cells.cell_ids))
        lg_b, force, min_n = bf.calculate_bayes_factors(
            sub[[f"zeta_total {a}" for a in axes]].to_numpy(float),
            sub[[f"zeta_spurious {a}" for a in axes]].to_numpy(float),
            sub["n"].to_numpy(float), sub["V"].to_numpy(float),
            sub["V_prior"].to_numpy(float), s2, dim=dim, B_threshold=settings.B_threshold)
    else:
        cells, D, _ = _diffusivity_map(cells, frame, settings, infer_map, "bayes_factor")
        _common_dt(cells, "bayes_factor")
        out = bf.bayes_factors_for_cells(cells.dr, cells.dt, cells.mask,
                                         gradient_of(cells, D, grad_kw), sigma2=s2,
                                         B_threshold=settings.B_threshold)
        lg_b, force, min_n = out["lg_B"], out["force"], out["min_n"]
    lg_b = np.asarray(lg_b, dtype=float)
    force = np.where(np.isnan(lg_b), np.nan, np.asarray(force, dtype=float))
    min_n = np.where(np.isnan(lg_b), np.nan, np.asarray(min_n, dtype=float))
    groups, group_lg_b, group_forces = group_by_sign(lg_b, cells.neighbour_lists(),
                                                     settings.B_threshold)
    cols = {"lg_B": lg_b, "force": force, "min_n": min_n, "groups": groups,
            "group_lg_B": group_lg_b, "group_forces": group_forces}
    return _maps(cols, cells, settings, "bayes_factor",
                 dict(B_threshold=settings.B_threshold, **grad_kw))


def group_by_sign(lg_B, neighbours, B_threshold=10):
    """Connected regions of cells whose log10 Bayes factors have the same sign.

    Parameters
    ----------
    lg_B : [ncells] log10 Bayes factors (NaN: no group)
    neighbours : sequence of int arrays, neighbours of each cell (positions)
    B_threshold : evidence threshold on B

    Returns
    -------
    groups [ncells] (float labels 0, 1, ... in order of discovery; NaN where lg_B is NaN),
    group_lg_B [ncells] (sum of lg_B over the cell's group), group_forces [ncells]
    (1 / -1 / 0: the group's summed lg_B is >= log10 B_threshold / <= -log10 B_threshold /
    neither; 0 for ungrouped cells).

    TRamWAy's ``group_by_sign`` additionally permutes the labels at random and leaves the last
    group's ``group_lg_B`` at NaN (its loop stops one group short); here every group is summed
    and labels are deterministic.
    """
    lg_B = np.asarray(lg_B, dtype=float)
    m = lg_B.shape[0]
    sign = np.sign(lg_B)
    groups = np.full(m, np.nan)
    label = 0
    for i in range(m):
        if not np.isnan(groups[i]) or np.isnan(sign[i]):
            continue
        stack = [i]
        groups[i] = label
        while stack:
            j = stack.pop()
            for k in neighbours[j]:
                if np.isnan(groups[k]) and sign[k] == sign[j]:
                    groups[k] = label
                    stack.append(k)
        label += 1
    group_lg_b = np.full(m, np.nan)
    for g in range(label):
        sel = groups == g
        group_lg_b[sel] = lg_B[sel].sum()
    thr = np.log10(B_threshold)
    with np.errstate(invalid="ignore"):
        group_forces = (group_lg_b >= thr).astype(float) - (group_lg_b <= -thr).astype(float)
    return groups, group_lg_b, group_forces


def gradient(cells, settings, infer_map):
    """TRamWAy's ``gradient`` mode: grad1 of map feature(s) at the cells that carry them."""
    frame = _input_frame(settings.input_maps, "gradient")
    if frame is None:
        raise ValueError("gradient mode needs input_maps (the maps whose feature is derived)")
    feature = settings.feature
    if not feature:
        raise ValueError("gradient mode needs feature= (a column of input_maps, or several "
                         "as a comma-separated string or a list)")
    if isinstance(feature, str):
        feature = [f.strip() for f in feature.split(",")]
    missing = [f for f in feature if f not in frame.columns]
    if missing:
        raise ValueError(f"gradient: input_maps has no column {missing}; columns are "
                         f"{list(frame.columns)}")
    present = np.isin(np.asarray(cells.cell_ids), frame.index.values)
    if not present.any():
        raise ValueError("gradient: no cell label of input_maps matches the cells")
    cells = cells.subset(present) if not present.all() else cells
    sub = frame.reindex(np.asarray(cells.cell_ids))
    grad_kw = settings.grad_kwargs()
    cols = {}
    defined = np.zeros(cells.ncells, dtype=bool)
    for f in feature:
        g = gradient_of(cells, sub[f].to_numpy(dtype=float), grad_kw)
        defined |= ~np.all(np.isnan(g), axis=1)
        for d, c in enumerate(space_axes(cells.dim)):
            cols[f"{f} {c}"] = g[:, d]
    maps = _maps(cols, cells, settings, "gradient", dict(feature=feature, **grad_kw))
    maps.maps = maps.maps[defined]
    maps.counts = maps.counts[defined]
    return maps

