"""Synthetic cohorts drawn from a known mixture (for tests, benchmarks and the demo)."""

from __future__ import annotations

from typing import Mapping, Sequence

import jax
import numpy as np
import pandas as pd

from jaxinfer.mixture.lymph import Unilateral

SUBSITE_COL = ("tumor", "1", "subsite")
COMPONENT_COL = ("_truth", "#", "component")


def draw_mixture_cohort(graph_dict: Mapping, component_params: Sequence[Mapping], coefs,
                        subgroup_sizes: Mapping, modalities: Mapping, distributions: Mapping,
                        stage_dist: Sequence[float], key, max_time: int = 10) -> pd.DataFrame:
    """Patients in the LyProX layout from a mixture with known truth.

    component_params : one ``Unilateral.set_params`` dict per component (K of them);
    coefs : ``(K, G)`` mixture coefficients (columns sum to 1), G = len(subgroup_sizes);
    subgroup_sizes : ``{label: number of patients}``, in the column order of ``coefs``;
    modalities : ``{name: (spec, sens)}``; distributions : ``{t_stage: pmf or callable}``;
    stage_dist : probability of each T-stage (``distributions`` order); key : a
    ``jax.random`` key. The subgroup label is in ``("tumor", "1", "subsite")`` and the
    drawn component in ``("_truth", "#", "component")``.
    """
    coefs = np.asarray(coefs, dtype=float)
    if coefs.shape != (len(component_params), len(subgroup_sizes)):
        raise ValueError(f"coefs must have shape (components, subgroups) = "
                         f"{(len(component_params), len(subgroup_sizes))}, got {coefs.shape}")
    models = []
    for params in component_params:
        model = Unilateral.binary(graph_dict, max_time=max_time)
        for name, (spec, sens) in modalities.items():
            model.set_modality(name, spec, sens)
        for t, d in distributions.items():
            model.set_distribution(t, d)
        model.set_params(**params)
        models.append(model)
    tables = []
    keys = jax.random.split(key, 2 * len(subgroup_sizes))
    for g, (label, size) in enumerate(subgroup_sizes.items()):
        assign = np.asarray(jax.random.choice(keys[2 * g], len(models), (int(size),),
                                              p=coefs[:, g]))
        sub_keys = jax.random.split(keys[2 * g + 1], len(models))
        for c, model in enumerate(models):
            n = int(np.sum(assign == c))
            if n == 0:
                continue
            table = model.draw_patients(n, stage_dist, key=sub_keys[c])
            table[SUBSITE_COL] = label
            table[COMPONENT_COL] = c
            tables.append(table)
    return pd.concat(tables, ignore_index=True)


__all__ = ["draw_mixture_cohort", "SUBSITE_COL", "COMPONENT_COL"]
