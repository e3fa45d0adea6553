"""lymph-model 1.3.3's binary ``Unilateral`` model, over the pure functions of ``_hmm``.

Migrate with ``from jaxinfer.mixture.lymph import Unilateral`` in place of
``from lymph.models import Unilateral``; names and argument orders are lymph's::

    model = Unilateral.binary(graph_dict, max_time=10)
    model.set_modality("CT", spec=0.76, sens=0.81)
    model.set_distribution("early", early_pmf)               # frozen (max_time + 1,) pmf
    model.set_distribution("late", utils.late_binomial)      # parametric: adds 'late_p'
    model.set_params(TtoII_spread=0.3, late_p=0.5)
    model.load_patient_data(df, side="ipsi")
    model.likelihood(log=True)

The model object only holds settings, parameters and data; every number comes from a jitted
pure function of ``(theta, ModelSpec, diagnosis matrix, T-stage index)`` (see
:attr:`Unilateral.spec`, :attr:`Unilateral.theta`, :meth:`Unilateral.data_arrays`), which a
mixture vmaps over components. Differences from lymph 1.3.3, all deliberate: a positional
0.0 in ``set_params`` is honoured (lymph keeps the old value), sublevels fill empty levels
(see ``_data``), and randomness takes a ``jax.random`` key.
"""

from __future__ import annotations

import inspect
import warnings
from collections import OrderedDict
from functools import partial
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxinfer.mixture import _data, _hmm
from jaxinfer.mixture._data import DataWarning, T_STAGE_COL, early_late_mapping

MAP_T_COL = ("_model", "#", "t_stage")


class Modality(NamedTuple):
    """A diagnostic modality: specificity and sensitivity, both in [0, 1]."""

    spec: float
    sens: float
    kind: str = "clinical"

    @property
    def confusion_matrix(self) -> np.ndarray:
        return np.array([[self.spec, 1.0 - self.spec], [1.0 - self.sens, self.sens]])


class Distribution:
    """A time prior over ``t = 0..max_time``: frozen (a pmf) or parametric
    (``func(support, **params)``, JAX-traceable; its keyword defaults are the parameters)."""

    def __init__(self, distribution, max_time: int):
        self.max_time = int(max_time)
        if callable(distribution):
            params = OrderedDict()
            for name, p in inspect.signature(distribution).parameters.items():
                if p.default is not inspect.Parameter.empty:
                    params[name] = float(p.default)
            if not params:
                raise ValueError("a parametric time prior needs keyword parameters with "
                                 "defaults, e.g. late_binomial(support, p=0.5)")
            self.func, self.params, self._frozen = distribution, params, None
        else:
            pmf = np.asarray(distribution, dtype=float)
            if pmf.ndim != 1 or len(pmf) != self.max_time + 1:
                raise ValueError(f"a frozen time prior needs max_time + 1 = {self.max_time + 1} "
                                 f"probabilities, got shape {pmf.shape}")
            if np.any(pmf < 0) or not np.isfinite(pmf).all() or pmf.sum() <= 0:
                raise ValueError("a frozen time prior must be non-negative, finite and not all 0")
            self.func, self.params, self._frozen = None, OrderedDict(), pmf / pmf.sum()

    @property
    def is_updateable(self) -> bool:
        return self.func is not None

    @property
    def support(self) -> np.ndarray:
        return np.arange(self.max_time + 1)

    @property
    def pmf(self) -> np.ndarray:
        if self._frozen is not None:
            return self._frozen
        pmf = np.asarray(self.func(self.support, **self.params), dtype=float)
        return pmf / pmf.sum()

    def get_params(self, as_dict: bool = True):
        return dict(self.params) if as_dict else list(self.params.values())

    def spec(self, t_stage: str, first_index: int) -> _hmm.DistSpec:
        if self.func is None:
            return _hmm.DistSpec(t_stage, tuple(float(v) for v in self._frozen), None, (), ())
        names = tuple(self.params)
        return _hmm.DistSpec(t_stage, None, self.func, names,
                             tuple(range(first_index, first_index + len(names))))

    def __repr__(self):
        if self.func is None:
            return f"Distribution(frozen, max_time={self.max_time})"
        return f"Distribution({getattr(self.func, '__name__', self.func)}, {dict(self.params)})"


def _check_probability(name: str, value) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"parameter {name} must be in [0, 1], got {value}")
    return value


# One compiled function per (ModelSpec, shapes): models with the same graph and priors share it.
@partial(jax.jit, static_argnums=1)
def _state_dists(theta, spec):
    return _hmm.state_dists(theta, spec)


@partial(jax.jit, static_argnums=1)
def _patient_likelihoods(theta, spec, diagnosis, t_index):
    return _hmm.patient_likelihoods(theta, spec, diagnosis, t_index)


_transition_matrix = jax.jit(_hmm.transition_matrix, static_argnums=1)
_state_evolution = jax.jit(_hmm.state_evolution, static_argnums=1)


@partial(jax.jit, static_argnums=2)
def _diagnosis_matrix(confusions, findings, num_lnls):
    return _hmm.diagnosis_matrix(confusions, findings, num_lnls)


def random_generator(key=None, seed: int = 42) -> np.random.Generator:
    """The NumPy generator the simulations draw from, seeded by a ``jax.random`` key (default
    ``PRNGKey(seed)``): host-side draws need no compilation for each new cohort size."""
    key = jax.random.PRNGKey(seed) if key is None else key
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.random.default_rng(np.asarray(key, dtype=np.uint32).ravel().tolist())


def _draw_findings(rng, evolution, times, sens, spec, num_lnls):
    """``(P, M, N)`` bool findings: state ~ ``P_t`` at each time, then each modality."""
    cdf = np.cumsum(evolution[times], axis=-1)                                     # (P, S)
    states = np.minimum((rng.uniform(size=(len(times), 1)) > cdf).sum(axis=-1),
                        cdf.shape[-1] - 1)
    x = _hmm.state_table(num_lnls)[states]                                        # (P, N)
    p_pos = np.where(x[:, None, :] == 1, sens[None, :, None], 1.0 - spec[None, :, None])
    return rng.uniform(size=p_pos.shape) < p_pos


class Unilateral:
    """Binary unilateral lymphatic-spread HMM with lymph-model 1.3.3's interface.

    graph_dict : ``{("tumor", name): [lnl, ...], ("lnl", name): [lnl, ...], ...}`` (lists:
        their order is the parameter order). max_time : latest diagnosis time (default 10).
    """

    def __init__(self, graph_dict: Mapping, tumor_state: Optional[int] = None,
                 allowed_states: Optional[Sequence[int]] = None, max_time: int = 10,
                 **_kwargs):
        if allowed_states is not None and list(allowed_states) != [0, 1]:
            raise NotImplementedError("only binary LNLs (allowed_states=[0, 1]) are implemented; "
                                      "the trinary model is not part of jaxinfer.mixture")
        if int(max_time) < 1:
            raise ValueError(f"max_time must be a positive integer, got {max_time}")
        self.graph_dict = {k: list(v) for k, v in graph_dict.items()}
        self.graph = _hmm.Graph.from_dict(graph_dict)
        self.max_time = int(max_time)
        self._spread = OrderedDict((name, 0.0) for name in self.graph.edge_names)
        self._distributions: "OrderedDict[str, Distribution]" = OrderedDict()
        self._modalities: "OrderedDict[str, Modality]" = OrderedDict()
        self._patient_data: Optional[pd.DataFrame] = None
        self._side = "ipsi"
        self._t_labels: Optional[np.ndarray] = None
        self._diag_cache: dict = {}

    @classmethod
    def binary(cls, graph_dict: Mapping, **kwargs) -> "Unilateral":
        return cls(graph_dict, allowed_states=[0, 1], **kwargs)

    @classmethod
    def trinary(cls, graph_dict: Mapping, **kwargs):
        raise NotImplementedError("the trinary model is not part of jaxinfer.mixture")

    def __repr__(self):
        return (f"Unilateral(lnls={list(self.graph.lnls)}, edges={list(self.graph.edge_names)}, "
                f"max_time={self.max_time})")

    @property
    def is_binary(self) -> bool:
        return True

    @property
    def is_trinary(self) -> bool:
        return False

    # ---------------------------------------------------------------- modalities
    def set_modality(self, name: str, spec: float, sens: float, kind: str = "clinical") -> None:
        """Add or replace modality ``name`` with specificity ``spec`` and sensitivity ``sens``
        (this argument order, as in lymph)."""
        if kind not in ("clinical", "pathological"):
            raise ValueError(f"kind must be 'clinical' or 'pathological', got {kind!r}")
        self._modalities[str(name)] = Modality(_check_probability(f"{name} spec", spec),
                                               _check_probability(f"{name} sens", sens), kind)
        self._diag_cache.clear()

    def get_modality(self, name: str) -> Modality:
        if name not in self._modalities:
            raise KeyError(f"no modality {name!r}; set: {list(self._modalities)}")
        return self._modalities[name]

    def get_all_modalities(self) -> dict:
        return dict(self._modalities)

    def del_modality(self, name: str) -> None:
        self.get_modality(name)
        del self._modalities[name]
        self._diag_cache.clear()

    def clear_modalities(self) -> None:
        self._modalities.clear()
        self._diag_cache.clear()

    def replace_all_modalities(self, modalities: Mapping) -> None:
        self.clear_modalities()
        for name, mod in modalities.items():
            self.set_modality(name, mod.spec, mod.sens, getattr(mod, "kind", "clinical"))

    # ---------------------------------------------------------------- time priors
    def set_distribution(self, t_stage: str, distribution) -> None:
        """Time prior of ``t_stage``: a ``(max_time + 1,)`` pmf, a callable
        ``f(support, p=...)`` (its keyword parameters become ``{t_stage}_{name}`` parameters),
        or a :class:`Distribution`."""
        if isinstance(distribution, Distribution):
            new = Distribution(distribution.func or distribution.pmf, self.max_time)
            new.params.update(distribution.params)
        else:
            new = Distribution(distribution, self.max_time)
        self._distributions[str(t_stage)] = new

    def get_distribution(self, t_stage: str) -> Distribution:
        if t_stage not in self._distributions:
            raise KeyError(f"no time prior for T-stage {t_stage!r}; set: {list(self._distributions)}")
        return self._distributions[t_stage]

    def get_all_distributions(self) -> dict:
        return dict(self._distributions)

    def del_distribution(self, t_stage: str) -> None:
        self.get_distribution(t_stage)
        del self._distributions[t_stage]

    def clear_distributions(self) -> None:
        self._distributions.clear()

    @property
    def t_stages(self) -> list:
        return list(self._distributions)

    def get_t_stages(self, which: str = "valid") -> list:
        """'distributions', 'data' or 'valid' (both, sorted), as in lymph."""
        dist = list(self._distributions)
        data = [] if self._t_labels is None else list(pd.unique(
            np.array([v for v in self._t_labels if v is not None], dtype=object)))
        if which == "distributions":
            return dist
        if which == "data":
            return data
        if which == "valid":
            return sorted(set(dist) & set(data))
        raise ValueError(f"which must be 'valid', 'distributions' or 'data', got {which!r}")

    # ---------------------------------------------------------------- parameters
    def get_distribution_params(self, as_dict: bool = True, as_flat: bool = True):
        params = OrderedDict()
        for t, d in self._distributions.items():
            for name, value in d.params.items():
                params[f"{t}_{name}"] = value
        return dict(params) if as_dict else list(params.values())

    def get_spread_params(self, as_dict: bool = True, as_flat: bool = True):
        params = OrderedDict((f"{e}_spread", v) for e, v in self._spread.items())
        return dict(params) if as_dict else list(params.values())

    def get_params(self, as_dict: bool = True, as_flat: bool = True):
        """Spread probabilities (tumour edges, then LNL edges), then the parametric time
        priors' parameters: a dict ``{'TtoII_spread': ..., 'late_p': ...}`` or a list."""
        params = self.get_spread_params()
        params.update(self.get_distribution_params())
        return params if as_dict else list(params.values())

    def set_spread_params(self, *args, **kwargs) -> tuple:
        return self._set_edges(tuple(self._spread), args, kwargs)

    def _set_edges(self, names, args, kwargs) -> tuple:
        """Set the spread of the edges ``names`` (positionally, then ``spread`` for all,
        then ``{edge}_spread``); all values checked before any is changed."""
        new = OrderedDict(self._spread)
        for name in names:
            if args:
                new[name] = args[0]
                args = args[1:]
            if "spread" in kwargs:
                new[name] = kwargs["spread"]
            if f"{name}_spread" in kwargs:
                new[name] = kwargs[f"{name}_spread"]
        self._spread = OrderedDict((n, _check_probability(f"{n}_spread", v)) for n, v in new.items())
        return args

    def set_distribution_params(self, *args, **kwargs) -> tuple:
        for t, d in self._distributions.items():
            new = OrderedDict(d.params)
            for name in new:
                if args:
                    new[name] = args[0]
                    args = args[1:]
                if name in kwargs:
                    new[name] = kwargs[name]
                if f"{t}_{name}" in kwargs:
                    new[name] = kwargs[f"{t}_{name}"]
            d.params = OrderedDict((n, _check_probability(f"{t}_{n}", v)) for n, v in new.items())
        return args

    def set_params(self, *args, **kwargs) -> tuple:
        """Set spread then time-prior parameters, positionally (used up in
        :meth:`get_params` order, leftovers returned) and/or by name (``TtoII_spread``,
        ``spread`` for every edge, ``late_p``, ``p`` for every prior). Values must be in
        [0, 1] (ValueError otherwise, nothing changed); unknown names are ignored as in lymph."""
        old_spread = OrderedDict(self._spread)
        old_dist = {t: OrderedDict(d.params) for t, d in self._distributions.items()}
        try:
            args = self.set_spread_params(*args, **kwargs)
            return self.set_distribution_params(*args, **kwargs)
        except ValueError:
            self._spread = old_spread
            for t, p in old_dist.items():
                self._distributions[t].params = p
            raise

    @property
    def spec(self) -> _hmm.ModelSpec:
        """The static :class:`~jaxinfer.mixture._hmm.ModelSpec` of this model."""
        dists, first = [], 0
        for t, d in self._distributions.items():
            dists.append(d.spec(t, first))
            first += len(d.params)
        return _hmm.ModelSpec(self.graph, self.max_time, tuple(dists))

    @property
    def theta(self) -> jnp.ndarray:
        """``(num_params,)`` parameter vector in :meth:`get_params` order."""
        return jnp.asarray(self.get_params(as_dict=False), dtype=jnp.result_type(float))

    def _theta_from(self, given_params) -> jnp.ndarray:
        if given_params is not None:
            if isinstance(given_params, Mapping):
                self.set_params(**given_params)
            else:
                self.set_params(*given_params)
        return self.theta

    # ---------------------------------------------------------------- data
    def load_patient_data(self, patient_data: pd.DataFrame, side: str = "ipsi",
                          mapping: Optional[Callable | Mapping] = None) -> None:
        """Load a LyProX-layout table; T-stages go through ``mapping`` (default: 0-2 early,
        3-4 late). Warns (DataWarning) about T-stages without data or time prior."""
        _data.check_table(patient_data)
        if side not in ("ipsi", "contra"):
            raise ValueError(f"side must be 'ipsi' or 'contra', got {side!r}")
        data = patient_data.drop(columns="_model", errors="ignore").reset_index(drop=True).copy()
        labels = _data.map_t_stages(data, mapping)
        data[MAP_T_COL] = labels
        self._patient_data, self._side, self._t_labels = data, side, labels
        self._diag_cache.clear()
        n_missing = int(sum(v is None for v in labels))
        if n_missing:
            warnings.warn(f"{n_missing} of {len(labels)} patients have a missing or unmapped "
                          f"T-stage in {T_STAGE_COL}; they are left out of the likelihood",
                          DataWarning, stacklevel=2)
        for t in self._distributions:
            if t not in set(labels):
                warnings.warn(f"No data for T-stage {t} found.", DataWarning, stacklevel=2)

    @property
    def patient_data(self) -> pd.DataFrame:
        if self._patient_data is None:
            raise AttributeError("No patient data loaded yet: call load_patient_data(df)")
        return self._patient_data

    def findings(self) -> np.ndarray:
        """``(P, M, N)`` int8 findings for the set modalities (1 / 0 / -1 missing)."""
        return _data.findings_array(self.patient_data, list(self._modalities), self._side,
                                    self.graph.lnls)

    def _all_diagnosis(self) -> jnp.ndarray:
        key = tuple(self._modalities.items())
        if key not in self._diag_cache:
            if not self._modalities:
                raise ValueError("no modality is set: call set_modality(name, spec, sens) first")
            confusions = jnp.asarray(np.stack([m.confusion_matrix for m in self._modalities.values()]),
                                     dtype=jnp.result_type(float))
            self._diag_cache = {key: _diagnosis_matrix(confusions, jnp.asarray(self.findings()),
                                                       self.graph.num_lnls)}
        return self._diag_cache[key]

    def data_arrays(self):
        """``(diagnosis (P, S), t_index (P,))``: the arrays the pure likelihood takes;
        ``t_index`` is -1 for patients whose T-stage has no time prior."""
        labels = self.patient_data[MAP_T_COL].to_numpy(dtype=object)
        return self._all_diagnosis(), jnp.asarray(_data.t_stage_index(labels, self.t_stages))

    def diagnosis_matrix(self, t_stage: Optional[str] = None) -> np.ndarray:
        """``(P_tau, S)``: ``P(findings | state)`` for the patients of ``t_stage`` (all if None)."""
        diag = np.asarray(self._all_diagnosis())
        if t_stage is None:
            return diag
        labels = self.patient_data[MAP_T_COL].to_numpy(dtype=object)
        return diag[labels == t_stage]

    # ---------------------------------------------------------------- the model
    def transition_matrix(self) -> np.ndarray:
        """``(S, S)`` one-step transition matrix ``A[x, x']``."""
        return np.asarray(_transition_matrix(self.theta[: self.graph.num_edges], self.graph))

    def state_dist_evo(self) -> np.ndarray:
        """``(max_time + 1, S)`` state distributions ``P_t``."""
        return np.asarray(_state_evolution(jnp.asarray(self.transition_matrix()), self.max_time))

    def state_dist(self, t_stage: str = "early", mode: str = "HMM") -> np.ndarray:
        """``(S,)`` state distribution marginalised over the time prior of ``t_stage``."""
        if mode != "HMM":
            raise NotImplementedError("only mode='HMM' is implemented")
        self.get_distribution(t_stage)  # raises a KeyError naming the set T-stages
        index = self.t_stages.index(t_stage)
        return np.asarray(_state_dists(self.theta, self.spec)[index])

    @property
    def obs_list(self) -> np.ndarray:
        """``(2**(N*M), N*M)`` every complete observation (modality-major), as lymph lists them."""
        n = self.graph.num_lnls * len(self._modalities)
        return _hmm.state_table(n)

    def observation_matrix(self) -> np.ndarray:
        """``(S, 2**(N*M))`` ``P(complete observation | state)``; materialised, so small
        models only (the likelihood never uses it)."""
        n_obs = self.graph.num_lnls * len(self._modalities)
        if n_obs > 16:
            raise ValueError(f"observation matrix would have 2**{n_obs} columns; it is only "
                             "built for N * M <= 16 (the likelihood does not need it)")
        states = _hmm.state_table(self.graph.num_lnls)
        out = np.ones((len(states), 1))
        for mod in self._modalities.values():
            c = mod.confusion_matrix
            block = np.ones((len(states), 1))
            for v in range(self.graph.num_lnls):
                block = np.einsum("si,sj->sij", block, c[states[:, v]]).reshape(len(states), -1)
            out = np.einsum("si,sj->sij", out, block).reshape(len(states), -1)
        return out

    def patient_likelihoods(self, given_params=None, log: bool = True) -> np.ndarray:
        """``(P,)`` per-patient (log-)likelihoods; NaN for patients whose T-stage has no prior."""
        theta = self._theta_from(given_params)
        diagnosis, t_index = self.data_arrays()
        lik = np.asarray(_patient_likelihoods(theta, self.spec, diagnosis, t_index))
        with np.errstate(divide="ignore"):
            return np.log(lik) if log else lik

    def likelihood(self, given_params=None, log: bool = True, t_stage: Optional[str] = None,
                   mode: str = "HMM") -> float:
        """(Log-)likelihood of the loaded data, summed over the T-stages that have a time prior
        and data (or only ``t_stage``); ``-inf`` (0) if ``given_params`` are out of [0, 1]."""
        if mode != "HMM":
            raise NotImplementedError("only mode='HMM' is implemented")
        try:
            theta = self._theta_from(given_params)
        except ValueError:
            return -np.inf if log else 0.0
        diagnosis, t_index = self.data_arrays()
        lik = np.asarray(_patient_likelihoods(theta, self.spec, diagnosis, t_index))
        labels = self.patient_data[MAP_T_COL].to_numpy(dtype=object)
        keep = np.asarray(t_index) >= 0
        if t_stage is not None:
            keep &= labels == t_stage
        with np.errstate(divide="ignore"):
            return float(np.sum(np.log(lik[keep]))) if log else float(np.prod(lik[keep]))

    # ---------------------------------------------------------------- prediction
    def _diagnosis_given_state(self, given_diagnosis: Mapping) -> np.ndarray:
        """``(S,)`` ``P(diagnosis | state)`` for ``{modality: {lnl: True/False/None}}``."""
        findings = -np.ones((1, len(self._modalities), self.graph.num_lnls), np.int8)
        for name, pattern in given_diagnosis.items():
            if name not in self._modalities:
                raise ValueError(f"diagnosis names modality {name!r}, not set on the model "
                                 f"(set: {list(self._modalities)})")
            m = list(self._modalities).index(name)
            _data.check_involvement_pattern(pattern, self.graph.lnls)
            for lnl, value in (pattern or {}).items():
                if value is not None and not (isinstance(value, float) and np.isnan(value)):
                    findings[0, m, self.graph.lnls.index(lnl)] = int(bool(value))
        confusions = jnp.asarray(np.stack([m.confusion_matrix for m in self._modalities.values()]))
        return np.asarray(_diagnosis_matrix(confusions, jnp.asarray(findings), self.graph.num_lnls))[0]

    def posterior_state_dist(self, given_params=None, given_state_dist=None,
                             given_diagnosis: Optional[Mapping] = None, t_stage: str = "early",
                             mode: str = "HMM") -> np.ndarray:
        """``(S,)`` ``P(state | diagnosis)`` (the prior state distribution if no diagnosis)."""
        if given_state_dist is None:
            self._theta_from(given_params)
            given_state_dist = self.state_dist(t_stage, mode=mode)
        given_state_dist = np.asarray(given_state_dist)
        if given_diagnosis is None:
            return given_state_dist
        joint = given_state_dist * self._diagnosis_given_state(given_diagnosis)
        return joint / np.sum(joint)

    def marginalize(self, involvement, given_state_dist=None, t_stage: str = "early",
                    mode: str = "HMM") -> float:
        """Probability of the states matching ``involvement`` ``{lnl: True/False/None}``."""
        if given_state_dist is None:
            given_state_dist = self.state_dist(t_stage, mode=mode)
        if involvement is None:
            return np.asarray(given_state_dist)
        return float(np.asarray(given_state_dist)[_hmm.match_pattern(involvement, self.graph.lnls)].sum())

    def risk(self, involvement=None, given_params=None, given_state_dist=None,
             given_diagnosis: Optional[Mapping] = None, t_stage: str = "early",
             mode: str = "HMM"):
        """Risk of ``involvement`` given a diagnosis (the posterior state distribution if
        ``involvement`` is None)."""
        post = self.posterior_state_dist(given_params, given_state_dist, given_diagnosis,
                                         t_stage, mode)
        return self.marginalize(involvement, post)

    # ---------------------------------------------------------------- simulation
    def draw_diagnosis(self, diag_times, key=None, seed: int = 42, *,
                       rng: Optional[np.random.Generator] = None) -> np.ndarray:
        """``(P, M*N)`` bool findings drawn at the given diagnosis times (modality-major);
        from ``rng`` if given, else from :func:`random_generator` of ``key`` / ``seed``."""
        rng = random_generator(key, seed) if rng is None else rng
        times = np.asarray(diag_times, dtype=np.int64)
        sens = np.array([m.sens for m in self._modalities.values()])
        spec = np.array([m.spec for m in self._modalities.values()])
        obs = _draw_findings(rng, self.state_dist_evo(), times, sens, spec, self.graph.num_lnls)
        return obs.reshape(len(times), -1)

    def draw_patients(self, num: int, stage_dist: Sequence[float], key=None, seed: int = 42,
                      **_kwargs) -> pd.DataFrame:
        """``num`` synthetic patients in the LyProX layout: T-stage ~ ``stage_dist`` (one
        probability per time prior, in :meth:`get_all_distributions` order), diagnosis time ~
        its prior, hidden state ~ ``P_t``, findings ~ the modalities. ``key``: a
        ``jax.random`` key (default ``PRNGKey(seed)``) seeding the draws
        (:func:`random_generator`)."""
        rng = random_generator(key, seed)
        labels, times = self._draw_stages_and_times(num, stage_dist, rng)
        obs = self.draw_diagnosis(times, rng=rng)
        columns = pd.MultiIndex.from_product([list(self._modalities), ["ipsi"],
                                              list(self.graph.lnls)])
        table = pd.DataFrame(obs, columns=columns)
        table[T_STAGE_COL] = labels
        return table

    def _draw_stages_and_times(self, num: int, stage_dist, rng: np.random.Generator):
        """``(T-stage labels (num,), diagnosis times (num,))``: T-stage ~ ``stage_dist``
        (renormalised), time ~ that T-stage's prior."""
        stage_dist = np.asarray(stage_dist, dtype=float)
        if len(stage_dist) != len(self._distributions):
            raise ValueError(f"stage_dist needs one probability per time prior "
                             f"{list(self._distributions)}, got {len(stage_dist)}")
        if not self._modalities:
            raise ValueError("no modality is set: call set_modality(name, spec, sens) first")
        stage_dist = stage_dist / stage_dist.sum()
        stages = rng.choice(len(stage_dist), size=int(num), p=stage_dist)
        pmfs = np.stack([d.pmf for d in self._distributions.values()])
        cdf = np.cumsum(pmfs[stages] / pmfs[stages].sum(axis=-1, keepdims=True), axis=-1)
        times = np.minimum((rng.uniform(size=(int(num), 1)) > cdf).sum(axis=-1),
                           cdf.shape[-1] - 1)
        return np.asarray(list(self._distributions), dtype=object)[stages], times


from jaxinfer.mixture.bilateral import Bilateral  # noqa: E402  (it builds on Unilateral)

__all__ = ["Unilateral", "Bilateral", "Modality", "Distribution", "MAP_T_COL", "DataWarning",
           "early_late_mapping"]
