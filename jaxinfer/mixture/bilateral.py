"""lymph-model 1.3.3's binary ``Bilateral`` model: ipsi- and contralateral networks that share
the diagnosis time and its prior.

Each side is a :class:`~jaxinfer.mixture.lymph.Unilateral` (``model.ipsi``,
``model.contra``). With ``P^s_t`` the state distribution of side ``s`` at time ``t``
(``(max_time + 1, S)``), ``p_tau(t)`` the time prior of T-stage ``tau`` and ``D^s`` the
per-side diagnosis matrices ``(P, S)``, patient ``i`` has likelihood

    L_i = sum_t p_tau(t) (D^ipsi_i . P^ipsi_t) (D^contra_i . P^contra_t),

the joint state distribution is ``P^ipsi^T diag(p_tau) P^contra`` ``(S, S)`` (lymph's
``state_dist``), and nothing of size ``S^2`` enters the likelihood.

Parameters follow lymph: ``is_symmetric = {"tumor_spread": False, "lnl_spread": True}`` by
default; a symmetric group has one set of names (``TtoII_spread``), an asymmetric one
``ipsi_...`` / ``contra_...``; ``get_params`` orders them tumour spread (ipsi, contra), LNL
spread (ipsi, contra), then the shared time-prior parameters (``late_p``).
``set_params`` takes ``ipsi_`` / ``contra_`` prefixed names for one side and unprefixed
names for both, positionally in ``get_params`` order.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxinfer.mixture import _hmm
from jaxinfer.mixture.lymph import MAP_T_COL, Unilateral


def bilateral_likelihoods(theta_ipsi, theta_contra, spec: _hmm.ModelSpec, diag_ipsi,
                          diag_contra, t_index):
    """``(P,)`` per-patient likelihoods (NaN where ``t_index`` is -1).

    theta_ipsi / theta_contra : ``(spec.num_params,)`` per-side Unilateral parameter
    vectors (the time prior is read from ``theta_ipsi``); diag_* : ``(P, S)``.
    """
    e = spec.graph.num_edges
    evo_i = _hmm.state_evolution(_hmm.transition_matrix(theta_ipsi[:e], spec.graph), spec.max_time)
    evo_c = _hmm.state_evolution(_hmm.transition_matrix(theta_contra[:e], spec.graph),
                                 spec.max_time)
    priors = _hmm.time_priors(theta_ipsi, spec.dists, spec.max_time, e)      # (T, t)
    t_index = jnp.asarray(t_index)
    rows = priors[jnp.clip(t_index, 0, None)]                               # (P, t)
    lik = jnp.sum(rows * (diag_ipsi @ evo_i.T) * (diag_contra @ evo_c.T), axis=-1)
    return jnp.where(t_index >= 0, lik, jnp.nan)


def joint_state_dists(theta_ipsi, theta_contra, spec: _hmm.ModelSpec):
    """``(num_t_stages, S, S)``: ``P^ipsi^T diag(p_tau) P^contra`` per T-stage."""
    e = spec.graph.num_edges
    evo_i = _hmm.state_evolution(_hmm.transition_matrix(theta_ipsi[:e], spec.graph), spec.max_time)
    evo_c = _hmm.state_evolution(_hmm.transition_matrix(theta_contra[:e], spec.graph),
                                 spec.max_time)
    priors = _hmm.time_priors(theta_ipsi, spec.dists, spec.max_time, e)
    return jnp.einsum("ts,kt,tu->ksu", evo_i, priors, evo_c)


_likelihoods = jax.jit(bilateral_likelihoods, static_argnums=2)
_joint = jax.jit(joint_state_dists, static_argnums=2)


def _split(kwargs: Mapping):
    """lymph's rule: ``ipsi_x`` / ``contra_x`` go to one side, other names to both."""
    shared = {k: v for k, v in kwargs.items() if not k.startswith(("ipsi_", "contra_"))}
    ipsi = {**shared, **{k[5:]: v for k, v in kwargs.items() if k.startswith("ipsi_")}}
    contra = {**shared, **{k[7:]: v for k, v in kwargs.items() if k.startswith("contra_")}}
    return ipsi, contra


class Bilateral:
    """Binary bilateral lymphatic-spread HMM with lymph-model 1.3.3's interface.

    graph_dict : as :class:`Unilateral` (both sides); is_symmetric : ``{"tumor_spread":
    bool, "lnl_spread": bool}`` (defaults False, True); uni_kwargs : passed to both sides
    (e.g. ``max_time``); ipsi_kwargs / contra_kwargs : per side (may override the graph).
    """

    def __init__(self, graph_dict: Mapping, is_symmetric: Optional[Mapping] = None,
                 uni_kwargs: Optional[Mapping] = None, ipsi_kwargs: Optional[Mapping] = None,
                 contra_kwargs: Optional[Mapping] = None, **_kwargs):
        uni = dict(uni_kwargs or {})
        self.ipsi = Unilateral(**{"graph_dict": graph_dict, **uni, **dict(ipsi_kwargs or {})})
        self.contra = Unilateral(**{"graph_dict": graph_dict, **uni,
                                    **dict(contra_kwargs or {})})
        if (self.ipsi.graph, self.ipsi.max_time) != (self.contra.graph, self.contra.max_time):
            raise NotImplementedError("both sides need the same graph and max_time here "
                                      "(lymph allows different graphs per side)")
        unknown = set(is_symmetric or {}) - {"tumor_spread", "lnl_spread"}
        if unknown:
            raise ValueError(f"is_symmetric: unknown key(s) {sorted(unknown)}; expected "
                             "'tumor_spread' and/or 'lnl_spread'")
        self.is_symmetric = {"tumor_spread": False, "lnl_spread": True, **dict(is_symmetric or {})}

    @classmethod
    def binary(cls, graph_dict: Mapping, **kwargs) -> "Bilateral":
        return cls(graph_dict, **kwargs)

    def __repr__(self):
        return (f"Bilateral(lnls={list(self.ipsi.graph.lnls)}, is_symmetric={self.is_symmetric}, "
                f"max_time={self.ipsi.max_time})")

    # ------------------------------------------------------------ shared settings
    def set_modality(self, name: str, spec: float, sens: float, kind: str = "clinical") -> None:
        """The same modality (lymph's argument order: specificity first) on both sides."""
        self.ipsi.set_modality(name, spec, sens, kind)
        self.contra.set_modality(name, spec, sens, kind)

    def get_all_modalities(self) -> dict:
        return self.ipsi.get_all_modalities()

    def set_distribution(self, t_stage: str, distribution) -> None:
        """The shared time prior of ``t_stage`` (a pmf or a callable, as Unilateral)."""
        self.ipsi.set_distribution(t_stage, distribution)
        self.contra.set_distribution(t_stage, distribution)

    def get_distribution(self, t_stage: str):
        return self.ipsi.get_distribution(t_stage)

    @property
    def t_stages(self) -> list:
        return self.ipsi.t_stages

    # ------------------------------------------------------------ parameters
    def _edge_names(self):
        names = self.ipsi.graph.edge_names
        n = len(self.ipsi.graph.tumor_edges)
        return {"tumor_spread": names[:n], "lnl_spread": names[n:]}

    def get_spread_params(self, as_dict: bool = True, as_flat: bool = True):
        params = OrderedDict()
        groups = self._edge_names()
        sym_t, sym_l = self.is_symmetric["tumor_spread"], self.is_symmetric["lnl_spread"]
        spread = {"ipsi": self.ipsi._spread, "contra": self.contra._spread}
        # lymph's order: with both groups asymmetric, all ipsi then all contra; otherwise
        # the tumour group (per side unless symmetric), then the LNL group
        if not sym_t and not sym_l:
            order = [(side, groups["tumor_spread"] + groups["lnl_spread"])
                     for side in ("ipsi", "contra")]
        else:
            order = []
            for group in ("tumor_spread", "lnl_spread"):
                if self.is_symmetric[group]:
                    order.append((None, groups[group]))
                else:
                    order += [("ipsi", groups[group]), ("contra", groups[group])]
        for side, names in order:
            for name in names:
                key = f"{name}_spread" if side is None else f"{side}_{name}_spread"
                params[key] = spread[side or "ipsi"][name]
        return dict(params) if as_dict else list(params.values())

    def get_distribution_params(self, as_dict: bool = True, as_flat: bool = True):
        return self.ipsi.get_distribution_params(as_dict=as_dict)

    def get_params(self, as_dict: bool = True, as_flat: bool = True):
        """Spread parameters (see the module docstring for names and order), then the shared
        time-prior parameters."""
        params = self.get_spread_params()
        params.update(self.get_distribution_params())
        return params if as_dict else list(params.values())

    def set_params(self, *args, **kwargs) -> tuple:
        """Set parameters positionally (``get_params`` order; leftovers returned) and/or by
        name; values outside [0, 1] raise ValueError and change nothing."""
        saved = [(OrderedDict(s._spread), {t: OrderedDict(d.params)
                                           for t, d in s._distributions.items()})
                 for s in (self.ipsi, self.contra)]
        try:
            return self._set_params(args, kwargs)
        except ValueError:
            for side, (spread, dists) in zip((self.ipsi, self.contra), saved):
                side._spread = spread
                for t, p in dists.items():
                    side._distributions[t].params = p
            raise

    def _set_params(self, args, kwargs):
        kw_i, kw_c = _split(kwargs)
        groups = self._edge_names()
        sym_t, sym_l = self.is_symmetric["tumor_spread"], self.is_symmetric["lnl_spread"]
        if not sym_t and not sym_l:
            both = groups["tumor_spread"] + groups["lnl_spread"]
            args = self.ipsi._set_edges(both, args, kw_i)
            args = self.contra._set_edges(both, args, kw_c)
        else:
            for group in ("tumor_spread", "lnl_spread"):
                args = self.ipsi._set_edges(groups[group], args, kw_i)
                if self.is_symmetric[group]:
                    for name in groups[group]:
                        self.contra._spread[name] = self.ipsi._spread[name]
                else:
                    args = self.contra._set_edges(groups[group], args, kw_c)
        shared = {k: v for k, v in kwargs.items() if not k.startswith(("ipsi_", "contra_"))}
        args = self.ipsi.set_distribution_params(*args, **shared)
        for t, d in self.ipsi._distributions.items():
            self.contra._distributions[t].params = OrderedDict(d.params)
        return args

    def _thetas(self, given_params=None):
        if given_params is not None:
            if isinstance(given_params, Mapping):
                self.set_params(**given_params)
            else:
                self.set_params(*given_params)
        return self.ipsi.theta, self.contra.theta

    # ------------------------------------------------------------ data and model
    def load_patient_data(self, patient_data: pd.DataFrame,
                          mapping: Optional[Callable | Mapping] = None) -> None:
        """Load a LyProX-layout table: the ``ipsi`` columns into ``model.ipsi``, the
        ``contra`` columns into ``model.contra`` (one T-stage per patient)."""
        self.ipsi.load_patient_data(patient_data, "ipsi", mapping)
        self.contra.load_patient_data(patient_data, "contra", mapping)

    def state_dist(self, t_stage: str = "early", mode: str = "HMM") -> np.ndarray:
        """``(S, S)`` joint distribution of (ipsi state, contra state) marginalised over the
        time prior of ``t_stage``."""
        if mode != "HMM":
            raise NotImplementedError("only mode='HMM' is implemented")
        self.get_distribution(t_stage)  # raises a KeyError naming the set T-stages
        theta_i, theta_c = self._thetas()
        return np.asarray(_joint(theta_i, theta_c, self.ipsi.spec)[self.t_stages.index(t_stage)])

    def _all_likelihoods(self, given_params=None) -> np.ndarray:
        theta_i, theta_c = self._thetas(given_params)
        diag_i, t_index = self.ipsi.data_arrays()
        diag_c, _ = self.contra.data_arrays()
        return np.asarray(_likelihoods(theta_i, theta_c, self.ipsi.spec, diag_i, diag_c, t_index))

    def patient_likelihoods(self, t_stage: Optional[str] = None, mode: str = "HMM") -> np.ndarray:
        """Per-patient likelihoods (not logs, as lymph) of the patients of ``t_stage`` (all
        patients if None; NaN for those whose T-stage has no time prior)."""
        if mode != "HMM":
            raise NotImplementedError("only mode='HMM' is implemented")
        lik = self._all_likelihoods()
        if t_stage is None:
            return lik
        labels = self.ipsi.patient_data[MAP_T_COL].to_numpy(dtype=object)
        return lik[labels == t_stage]

    def likelihood(self, given_params=None, log: bool = True, t_stage: Optional[str] = None,
                   mode: str = "HMM") -> float:
        """(Log-)likelihood of the loaded data over the T-stages with a time prior (or only
        ``t_stage``); ``-inf`` (0) if ``given_params`` are out of [0, 1]."""
        if mode != "HMM":
            raise NotImplementedError("only mode='HMM' is implemented")
        try:
            lik = self._all_likelihoods(given_params)
        except ValueError:
            return -np.inf if log else 0.0
        labels = self.ipsi.patient_data[MAP_T_COL].to_numpy(dtype=object)
        keep = np.isin(labels, self.t_stages if t_stage is None else [t_stage])
        with np.errstate(divide="ignore"):
            return float(np.sum(np.log(lik[keep]))) if log else float(np.prod(lik[keep]))


__all__ = ["Bilateral", "bilateral_likelihoods", "joint_state_dists"]
