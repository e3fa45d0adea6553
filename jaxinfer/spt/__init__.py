"""Single-particle tracking maps: a JAX rewrite of TRamWAy 0.7's inference.

    import jax; jax.config.update("jax_enable_x64", True)  # optimised maps need float64
    from jaxinfer.spt import load_trajectories, tessellate, distributed, infer
    df = load_trajectories("trajectories.txt")            # n, x, y[, z], t
    part = tessellate(df, "grid", count_per_dim=[20, 20])  # or "kmeans", "hexagon"
    maps = infer(part, "dv", sigma=0.02, diffusivity_prior=100., potential_prior=10.)
    maps.maps  # diffusivity, potential, force x, force y (indexed by cell)

Submodules: :mod:`~jaxinfer.spt.tessellation`, :mod:`~jaxinfer.spt.cells`,
:mod:`~jaxinfer.spt.gradient`, :mod:`~jaxinfer.spt.posteriors`, :mod:`~jaxinfer.spt.infer`,
:mod:`~jaxinfer.spt.modes` (the one registry of modes), and trajectories, conjugate,
bayes_factors, sampling, simulate, plot, cli.
"""

from jaxinfer.spt.cells import (Cells, cells_from_arrays, distributed, space_time_cells,
                                time_variation_stencil)
from jaxinfer.spt.gradient import (Stencil, delta0_stencil, delta1_stencil, grad1_stencil,
                                   grad_sum, gradn_stencil)
from jaxinfer.spt.infer import (MODES, Maps, SparseCellsWarning, group_by_sign, infer,
                                localization_variance)
from jaxinfer.spt.modes import REGISTRY
from jaxinfer.spt.posteriors import (d_neg_posterior, dd_neg_posterior, df_neg_posterior,
                                     dv_neg_posterior, local_dv_neg_posteriors,
                                     stochastic_dv_neg_posterior, unsmooth_d_neg_posterior)
from jaxinfer.spt.sampling import sample
from jaxinfer.spt.tessellation import Partition, Tessellation, tessellate
from jaxinfer.spt.trajectories import load_trajectories, translocations

__all__ = [
    "Cells", "cells_from_arrays", "distributed", "space_time_cells", "time_variation_stencil",
    "Stencil", "grad1_stencil", "gradn_stencil", "delta0_stencil", "delta1_stencil", "grad_sum",
    "MODES", "REGISTRY", "Maps", "SparseCellsWarning", "infer", "localization_variance", "group_by_sign",
    "d_neg_posterior", "dd_neg_posterior", "df_neg_posterior", "dv_neg_posterior",
    "local_dv_neg_posteriors", "stochastic_dv_neg_posterior", "unsmooth_d_neg_posterior",
    "Partition", "Tessellation", "tessellate",
    "load_trajectories", "translocations", "sample",
]

