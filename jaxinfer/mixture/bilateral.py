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

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxinfer.mixture import _hmm
from jaxinfer.mixture._data import T_STAGE_COL
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


@dataclass(frozen=True)
class BilateralSpec:
    """Everything static about a Bilateral model, for the mixture's pure functions
    (:mod:`jaxinfer.mixture._core`): the per-side :class:`~jaxinfer.mixture._hmm.ModelSpec`
    ``uni``, the Bilateral parameter names (``get_params`` order) and, per side, the position
    in that vector of each of ``uni.param_names`` (symmetric parameters appear in both)."""

    uni: _hmm.ModelSpec
    param_names: tuple
    ipsi_index: tuple
    contra_index: tuple

    @property
    def num_params(self) -> int:
        return len(self.param_names)

    @property
    def t_stages(self) -> tuple:
        return self.uni.t_stages

    def side_thetas(self, theta):
        """``(theta_ipsi, theta_contra)``, each ``(uni.num_params,)``, from ``(num_params,)``."""
        theta = jnp.asarray(theta)
        return theta[np.asarray(self.ipsi_index)], theta[np.asarray(self.contra_index)]

    def likelihoods(self, theta, diagnosis, t_index):
        """``(P,)`` per-patient likelihoods; diagnosis ``(P, 2, S)`` (ipsi, contra)."""
        theta_i, theta_c = self.side_thetas(theta)
        return bilateral_likelihoods(theta_i, theta_c, self.uni, diagnosis[:, 0],
                                     diagnosis[:, 1], t_index)


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

    def get_all_distributions(self) -> dict:
        return self.ipsi.get_all_distributions()

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
        args = self.set_spread_params(*args, **kwargs)
        return self.set_distribution_params(*args, **kwargs)

    def set_spread_params(self, *args, **kwargs) -> tuple:
        """The spread parameters alone (positionally in ``get_spread_params`` order, or by
        name); returns the unused positional values."""
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
        return args

    def set_distribution_params(self, *args, **kwargs) -> tuple:
        """The shared time-prior parameters (``late_p``); returns the unused values."""
        shared = {k: v for k, v in kwargs.items() if not k.startswith(("ipsi_", "contra_"))}
        args = self.ipsi.set_distribution_params(*args, **shared)
        for t, d in self.ipsi._distributions.items():
            self.contra._distributions[t].params = OrderedDict(d.params)
        return args

    @property
    def spec(self) -> BilateralSpec:
        """The static :class:`BilateralSpec` of this model."""
        names = tuple(self.get_params())
        uni = self.ipsi.spec

        def index(side):
            return tuple(names.index(f"{side}_{n}") if f"{side}_{n}" in names
                         else names.index(n) for n in uni.param_names)

        return BilateralSpec(uni, names, index("ipsi"), index("contra"))

    @property
    def theta(self) -> jnp.ndarray:
        """``(num_params,)`` parameter vector in :meth:`get_params` order."""
        return jnp.asarray(self.get_params(as_dict=False), dtype=jnp.result_type(float))

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

    @property
    def patient_data(self) -> pd.DataFrame:
        return self.ipsi.patient_data

    def _all_diagnosis(self) -> jnp.ndarray:
        """``(P, 2, S)``: each side's ``P(findings | state)``."""
        return jnp.stack([self.ipsi._all_diagnosis(), self.contra._all_diagnosis()], axis=1)

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

    # ------------------------------------------------------------ prediction
    def _diagnosis_given_state(self, given_diagnosis: Optional[Mapping]) -> np.ndarray:
        """``(S, S)`` ``P(diagnosis_ipsi | x_ipsi) P(diagnosis_contra | x_contra)`` for
        ``{"ipsi": {modality: {lnl: ...}}, "contra": {...}}``; a side not given warns (as
        lymph) and contributes 1."""
        given_diagnosis = {} if given_diagnosis is None else given_diagnosis
        unknown = set(given_diagnosis) - {"ipsi", "contra"}
        if unknown:
            raise ValueError(f"given_diagnosis: unknown side(s) {sorted(unknown)}; expected "
                             "'ipsi' and/or 'contra'")
        per_side = []
        for side in ("ipsi", "contra"):
            if side not in given_diagnosis:
                warnings.warn(f"No diagnosis given for {side}lateral side.", stacklevel=3)
            per_side.append(getattr(self, side)._diagnosis_given_state(
                given_diagnosis.get(side) or {}))
        return np.outer(*per_side)

    def posterior_state_dist(self, given_params=None, given_state_dist=None,
                             given_diagnosis: Optional[Mapping] = None, t_stage: str = "early",
                             mode: str = "HMM") -> np.ndarray:
        """``(S, S)`` ``P(x_ipsi, x_contra | diagnosis)``; ``given_state_dist`` (a joint
        ``(S, S)``) replaces the model's, and then ``given_params`` / ``t_stage`` are ignored."""
        if given_state_dist is None:
            self._thetas(given_params)
            given_state_dist = self.state_dist(t_stage, mode=mode)
        joint = np.asarray(given_state_dist) * self._diagnosis_given_state(given_diagnosis)
        return joint / np.sum(joint)

    def marginalize(self, involvement: Optional[Mapping], given_state_dist=None,
                    t_stage: str = "early", mode: str = "HMM"):
        """Probability of ``{"ipsi": {lnl: True/False/None}, "contra": {...}}`` under
        ``given_state_dist`` ``(S, S)`` (default: :meth:`state_dist` of ``t_stage``); the
        distribution itself if ``involvement`` is None."""
        if given_state_dist is None:
            given_state_dist = self.state_dist(t_stage, mode=mode)
        if involvement is None:
            return np.asarray(given_state_dist)
        unknown = set(involvement) - {"ipsi", "contra"}
        if unknown:
            raise ValueError(f"involvement: unknown side(s) {sorted(unknown)}; expected "
                             "'ipsi' and/or 'contra'")
        lnls = self.ipsi.graph.lnls
        enc = [_hmm.match_pattern(involvement.get(side) or None, lnls).astype(float)
               for side in ("ipsi", "contra")]
        return float(enc[0] @ np.asarray(given_state_dist) @ enc[1])

    def risk(self, involvement: Optional[Mapping] = None, given_params=None,
             given_state_dist=None, given_diagnosis: Optional[Mapping] = None,
             t_stage: str = "early", mode: str = "HMM"):
        """Risk of ``involvement`` (per side, see :meth:`marginalize`) given a diagnosis
        (per side); the posterior joint ``(S, S)`` if ``involvement`` is None."""
        post = self.posterior_state_dist(given_params, given_state_dist, given_diagnosis,
                                         t_stage, mode)
        return self.marginalize(involvement, post)

    # ------------------------------------------------------------ simulation
    def draw_patients(self, num: int, stage_dist: Sequence[float], key=None, seed: int = 42,
                      **_kwargs) -> pd.DataFrame:
        """``num`` synthetic patients in lymph's Bilateral layout (columns ``(modality, side,
        lnl)`` sorted as lymph sorts them, then ``("tumor", "1", "t_stage")``): T-stage ~
        ``stage_dist``, one diagnosis time per patient from its prior, shared by both sides;
        each side's state ~ its ``P_t``; findings ~ the modalities. ``key``: a
        ``jax.random`` key (default ``PRNGKey(seed)``) seeding the draws."""
        from jaxinfer.mixture.lymph import random_generator

        rng = random_generator(key, seed)
        labels, times = self.ipsi._draw_stages_and_times(num, stage_dist, rng)
        obs = np.concatenate([self.ipsi.draw_diagnosis(times, rng=rng),
                              self.contra.draw_diagnosis(times, rng=rng)], axis=1)
        columns = pd.MultiIndex.from_product([["ipsi", "contra"],
                                              list(self.get_all_modalities()),
                                              list(self.ipsi.graph.lnls)])
        table = pd.DataFrame(obs, columns=columns)
        table = table.reorder_levels([1, 0, 2], axis="columns").sort_index(axis="columns",
                                                                           level=0)
        table[T_STAGE_COL] = labels
        return table


__all__ = ["Bilateral", "BilateralSpec", "bilateral_likelihoods", "joint_state_dists"]
