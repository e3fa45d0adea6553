"""Synthetic cohorts drawn from a known mixture (for tests, benchmarks and the demo)."""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

import jax
import numpy as np
import pandas as pd

from jaxinfer.mixture.lymph import Unilateral, random_generator

SUBSITE_COL = ("tumor", "1", "subsite")
COMPONENT_COL = ("_truth", "#", "component")


def draw_mixture_cohort(graph_dict: Mapping, component_params: Sequence[Mapping], coefs,
                        subgroup_sizes: Mapping, modalities: Mapping, distributions: Mapping,
                        stage_dist: Sequence[float], key, max_time: int = 10,
                        model_cls=Unilateral,
                        model_kwargs: Optional[Mapping] = None) -> pd.DataFrame:
    """Patients in the LyProX layout from a mixture with known truth.

    component_params : one ``set_params`` dict per component (K of them);
    coefs : ``(K, G)`` mixture coefficients (columns sum to 1), G = len(subgroup_sizes);
    subgroup_sizes : ``{label: number of patients}``, in the column order of ``coefs``;
    modalities : ``{name: (spec, sens)}``; distributions : ``{t_stage: pmf or callable}``;
    stage_dist : probability of each T-stage (``distributions`` order); key : a
    ``jax.random`` key. The subgroup label is in ``("tumor", "1", "subsite")`` and the
    drawn component in ``("_truth", "#", "component")``. model_cls : Unilateral (default,
    built as ``Unilateral(graph_dict, max_time=max_time)``) or Bilateral (built as
    ``Bilateral(graph_dict, **model_kwargs)``, findings on both sides).
    """
    coefs = np.asarray(coefs, dtype=float)
    if coefs.shape != (len(component_params), len(subgroup_sizes)):
        raise ValueError(f"coefs must have shape (components, subgroups) = "
                         f"{(len(component_params), len(subgroup_sizes))}, got {coefs.shape}")
    models = []
    for params in component_params:
        kwargs = {"max_time": max_time} if model_kwargs is None else dict(model_kwargs)
        model = model_cls(graph_dict, **kwargs)
        for name, (spec, sens) in modalities.items():
            model.set_modality(name, spec, sens)
        for t, d in distributions.items():
            model.set_distribution(t, d)
        model.set_params(**params)
        models.append(model)
    # every component draws a full-size cohort and each patient's row is taken from the
    # component it is assigned to
    sizes = [int(n) for n in subgroup_sizes.values()]
    k_assign, k_draw = jax.random.split(key)
    rng = random_generator(k_assign)
    assign = np.concatenate([rng.choice(len(models), size=n, p=coefs[:, g])
                             for g, n in enumerate(sizes)])
    draws = [model.draw_patients(len(assign), stage_dist, key=k)
             for model, k in zip(models, jax.random.split(k_draw, len(models)))]
    table = draws[0].copy()
    for col in table.columns:
        values = table[col].to_numpy()
        for c in range(1, len(models)):
            values = np.where(assign == c, draws[c][col].to_numpy(), values)
        table[col] = values
    table[SUBSITE_COL] = np.repeat(list(subgroup_sizes), sizes)
    table[COMPONENT_COL] = assign
    return table


__all__ = ["draw_mixture_cohort", "SUBSITE_COL", "COMPONENT_COL"]
