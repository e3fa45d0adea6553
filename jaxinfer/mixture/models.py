"""``LymphMixture``: lymixture 0.0.2's mixture of unilateral lymph models.

``K`` components (each a :class:`~jaxinfer.mixture.lymph.Unilateral` holding parameters) and
subgroups (one per label of the split column, sorted; each a ``Unilateral`` holding its
patients). Patients are ordered subgroup by subgroup everywhere. Mixture coefficients form a
``K x G`` table renormalised over components on every get and set (entries <= 1e-8 become 0).
Parameter names: ``{c}_{edge}_spread``, ``{c}_late_p`` (per component unless
``universal_p``, then one shared ``late_p`` at the end), ``{c}_{subgroup}_coef``.

Every number is computed by the pure functions of :mod:`jaxinfer.mixture._core`;
:meth:`LymphMixture.arrays` gives ``(thetas, coefs, MixtureData)`` for them.
"""

from __future__ import annotations

import warnings
from functools import partial
from typing import Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from jaxinfer.mixture import _core, _data, utils
from jaxinfer.mixture._data import DataWarning
from jaxinfer.mixture.lymph import MAP_T_COL, Bilateral, Unilateral

RESP_COLS = ("_mixture", "responsibility")
T_STAGE_COL = MAP_T_COL


@partial(jax.jit, static_argnums=1)
def _component_likelihoods(thetas, spec, data):
    return _core.component_likelihoods(thetas, spec, data)


class LymphMixture:
    """Mixture of ``num_components`` unilateral HMMs with subgroup-specific coefficients.

    model_cls : :class:`Unilateral` (the only model lymixture mixes) or :class:`Bilateral`
    (beyond lymixture: parameters ``{c}_ipsi_TtoII_spread``, ``{c}_ItoII_spread``, ...
    as Bilateral names them; data with ipsi- and contralateral findings);
    model_kwargs : its constructor arguments (``graph_dict``, ``max_time`` or
    ``uni_kwargs``, ``is_symmetric``, ...).
    """

    def __init__(self, model_cls=Unilateral, model_kwargs: Optional[dict] = None,
                 num_components: int = 2, *, universal_p: bool = False):
        if model_kwargs is None:
            model_kwargs = {"graph_dict": {("tumor", "T"): ["II", "III"], ("lnl", "II"): ["III"],
                                           ("lnl", "III"): []}}
        if not (isinstance(model_cls, type) and issubclass(model_cls, (Unilateral, Bilateral))):
            raise NotImplementedError("LymphMixture mixes Unilateral or Bilateral models "
                                      "(jaxinfer.mixture.lymph.Unilateral / Bilateral), got "
                                      f"{model_cls!r}")
        if int(num_components) < 2:
            raise ValueError(f"a mixture needs at least 2 components, got {num_components}")
        self._model_cls, self._model_kwargs = model_cls, dict(model_kwargs)
        self.universal_p = bool(universal_p)
        self.components = [model_cls(**self._model_kwargs) for _ in range(int(num_components))]
        self.subgroups: dict = {}
        self._modalities: dict = {}
        self._coefs: Optional[np.ndarray] = None
        self._resps: Optional[np.ndarray] = None
        self._data_cache = None

    def __repr__(self):
        return (f"LymphMixture({len(self.components)} components, subgroups="
                f"{list(self.subgroups)}, params={len(self.get_params())})")

    # ------------------------------------------------------------ time priors, modalities
    def set_distribution(self, t_stage: str, distribution) -> None:
        """Set the time prior of ``t_stage`` on every component (and subgroup)."""
        for model in self.components + list(self.subgroups.values()):
            model.set_distribution(t_stage, distribution)
        self._data_cache = None

    def get_distribution(self, t_stage: str):
        return self.components[0].get_distribution(t_stage)

    def get_all_distributions(self) -> dict:
        return self.components[0].get_all_distributions()

    @property
    def t_stages(self) -> list:
        return self.components[0].t_stages

    def set_modality(self, name: str, spec: float, sens: float, kind: str = "clinical") -> None:
        """Set a modality on every subgroup (lymixture: after ``load_patient_data``)."""
        if not self.subgroups:
            raise RuntimeError("load_patient_data(...) before set_modality: modalities live on "
                               "the subgroups, which the data defines")
        self._modalities[name] = (spec, sens, kind)
        for model in list(self.subgroups.values()) + self.components:
            model.set_modality(name, spec, sens, kind)
        self._data_cache = None

    def get_all_modalities(self) -> dict:
        return next(iter(self.subgroups.values())).get_all_modalities() if self.subgroups else {}

    # ------------------------------------------------------------ data
    def load_patient_data(self, patient_data: pd.DataFrame, split_by: tuple, **kwargs) -> None:
        """Split ``patient_data`` by the column ``split_by`` (a three-level header, e.g.
        ``("tumor", "1", "subsite")``) into subgroups (sorted labels) and load each;
        ``kwargs`` go to :meth:`Unilateral.load_patient_data` (``side``, ``mapping``).
        Rows with an empty split column are reported and left out."""
        _data.check_table(patient_data)
        split_by = tuple(split_by)
        if split_by not in patient_data.columns:
            raise ValueError(f"split column {split_by} is not in the patient data")
        missing = patient_data[split_by].isna()
        if missing.any():
            warnings.warn(f"{int(missing.sum())} of {len(patient_data)} patients have no value in "
                          f"{split_by}; they are left out", DataWarning, stacklevel=2)
        self.subgroups = {}
        for label, group in patient_data[~missing].groupby(split_by, sort=True):
            label = label[0] if isinstance(label, tuple) and len(label) == 1 else label
            model = self._model_cls(**self._model_kwargs)
            for t, d in self.get_all_distributions().items():
                model.set_distribution(t, d)
            for name, (spec, sens, kind) in self._modalities.items():
                model.set_modality(name, spec, sens, kind)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DataWarning)
                model.load_patient_data(group, **kwargs)
            self.subgroups[label] = model
        self._coefs = np.full((len(self.components), len(self.subgroups)), np.nan)
        self._resps = np.full((self.num_patients, len(self.components)), np.nan)
        self._data_cache = None
        labels = np.concatenate([m.patient_data[MAP_T_COL].to_numpy(dtype=object)
                                 for m in self.subgroups.values()])
        message = _data.unusable_message(labels, self.t_stages) if self.t_stages else None
        if message:
            warnings.warn(message, DataWarning, stacklevel=2)

    @property
    def num_patients(self) -> int:
        return sum(len(m.patient_data) for m in self.subgroups.values())

    @property
    def patient_data(self) -> pd.DataFrame:
        """All subgroups' patients concatenated, with ``("_mixture", "responsibility", c)``."""
        table = pd.concat([m.patient_data for m in self.subgroups.values()], ignore_index=True)
        for c in range(len(self.components)):
            table[(*RESP_COLS, c)] = self._resps[:, c]
        return table

    def mixture_data(self) -> _core.MixtureData:
        """The :class:`~jaxinfer.mixture._core.MixtureData` of the loaded patients."""
        if not self.subgroups:
            raise RuntimeError("no patient data: call load_patient_data(df, split_by=...) first")
        if self._data_cache is None:
            t_stages = self.t_stages
            diag, t_index, group = [], [], []
            for g, model in enumerate(self.subgroups.values()):
                d = model._all_diagnosis()
                labels = model.patient_data[MAP_T_COL].to_numpy(dtype=object)
                diag.append(d)
                t_index.append(_data.t_stage_index(labels, t_stages))
                group.append(np.full(len(labels), g, np.int32))
            self._data_cache = _core.MixtureData(jnp.concatenate(diag),
                                                 jnp.asarray(np.concatenate(t_index)),
                                                 jnp.asarray(np.concatenate(group)))
        return self._data_cache

    @property
    def spec(self):
        return self.components[0].spec

    def arrays(self):
        """``(thetas (K, d), coefs (K, G), MixtureData)`` for the pure functions."""
        thetas = jnp.stack([c.theta for c in self.components])
        return thetas, jnp.asarray(self.get_mixture_coefs().to_numpy()), self.mixture_data()

    # ------------------------------------------------------------ mixture coefficients
    def get_mixture_coefs(self, component: Optional[int] = None, subgroup=None, *,
                          norm: bool = True):
        """The ``K x G`` coefficient table (DataFrame), a column, a row or one value."""
        if self._coefs is None:
            self._coefs = np.full((len(self.components), len(self.subgroups)), np.nan)
        if norm:
            self.normalize_mixture_coefs()
        table = pd.DataFrame(self._coefs, index=range(len(self.components)),
                             columns=list(self.subgroups))
        component = slice(None) if component is None else component
        subgroup = slice(None) if subgroup is None else subgroup
        return table.loc[component, subgroup]

    def set_mixture_coefs(self, new_mixture_coefs, component: Optional[int] = None,
                          subgroup=None) -> None:
        """Assign coefficients (all, one component, one subgroup, or one entry); not
        normalised until the next get."""
        if self._coefs is None:
            self._coefs = np.full((len(self.components), len(self.subgroups)), np.nan)
        if isinstance(new_mixture_coefs, pd.DataFrame):
            new_mixture_coefs = new_mixture_coefs.to_numpy()
        rows = slice(None) if component is None else component
        cols = slice(None) if subgroup is None else list(self.subgroups).index(subgroup)
        self._coefs[rows, cols] = new_mixture_coefs

    def normalize_mixture_coefs(self) -> None:
        if self._coefs is not None and not np.isnan(self._coefs).all():
            self._coefs = utils.normalize(self._coefs, axis=0)

    def infer_mixture_coefs(self, new_resps=None) -> pd.DataFrame:
        """Closed-form M-step for the coefficients from the (given or stored)
        responsibilities: ``(K, G)`` DataFrame."""
        if new_resps is not None:
            self.set_resps(new_resps)
        data = self.mixture_data()
        coefs = _core.infer_coefs(jnp.asarray(self.get_resps().to_numpy()), data,
                                  len(self.subgroups))
        return pd.DataFrame(np.asarray(coefs), columns=list(self.subgroups))

    # ------------------------------------------------------------ parameters
    def get_params(self, *, as_dict: bool = True, as_flat: bool = True):
        """``{c}_{edge}_spread``, ``{c}_late_p``, ``{c}_{subgroup}_coef`` per component (then
        the shared time-prior parameters if ``universal_p``)."""
        params = {}
        for c, comp in enumerate(self.components):
            own = comp.get_spread_params() if self.universal_p else comp.get_params()
            params.update({f"{c}_{k}": v for k, v in own.items()})
            for label in self.subgroups:
                params[f"{c}_{label}_coef"] = float(self.get_mixture_coefs(c, label))
        if self.universal_p:
            params.update(self.components[0].get_distribution_params())
        return params if as_dict else list(params.values())

    def set_params(self, *args, **kwargs) -> tuple:
        """Positional values are used up in :meth:`get_params` order; names as there, or
        global (``spread``, ``late_p``, ...) for every component. Coefficients are
        renormalised afterwards. Returns the unused positional values."""
        prefixes = {str(c) for c in range(len(self.components))}
        global_kwargs = {k: v for k, v in kwargs.items() if k.split("_", 1)[0] not in prefixes}
        for c, comp in enumerate(self.components):
            own = dict(global_kwargs)
            own.update({k[len(str(c)) + 1:]: v for k, v in kwargs.items()
                        if k.split("_", 1)[0] == str(c)})
            args = comp.set_spread_params(*args, **own)
            if not self.universal_p:
                args = comp.set_distribution_params(*args, **own)
            for label in self.subgroups:
                value = own.get(f"{label}_coef", args[0] if args else None)
                args = args[1:] if args else args
                if value is not None:
                    self.set_mixture_coefs(float(value), component=c, subgroup=label)
        if self.universal_p:
            shared = args
            for comp in self.components:
                args = comp.set_distribution_params(*shared, **global_kwargs)
        self.normalize_mixture_coefs()
        return args

    # ------------------------------------------------------------ responsibilities
    def get_resps(self, patient: Optional[int] = None, subgroup=None,
                  component: Optional[int] = None, t_stage: Optional[str] = None, *,
                  norm: bool = True):
        """``(P, K)`` responsibility table (DataFrame) or a slice of it."""
        resps = np.array(self._resps, dtype=float)
        if norm and not np.isnan(resps).all():
            resps = utils.normalize(resps, axis=1)
        table = pd.DataFrame(resps, columns=range(len(self.components)))
        rows = np.ones(len(table), bool)
        if subgroup is not None:
            rows &= self._group_rows(subgroup)
        if t_stage is not None:
            rows &= self._t_stage_rows(t_stage)
        table = table[rows].reset_index(drop=True) if subgroup is not None else table[rows]
        if patient is not None:
            table = table.iloc[patient]
        return table if component is None else table[component]

    def set_resps(self, new_resps, patient: Optional[int] = None, subgroup=None,
                  component: Optional[int] = None) -> None:
        """Assign responsibilities ``(P, K)`` (or for one subgroup / patient / component)."""
        if isinstance(new_resps, pd.DataFrame):
            new_resps = new_resps.to_numpy()
        new_resps = np.asarray(new_resps, dtype=float)
        rows = np.arange(self.num_patients)
        if subgroup is not None:
            rows = rows[self._group_rows(subgroup)]
        if patient is not None:
            rows = rows[[patient]]
        cols = np.arange(len(self.components)) if component is None else np.array([component])
        values = new_resps.reshape(-1, len(cols)) if new_resps.size > 1 else new_resps
        self._resps[np.ix_(rows, cols)] = np.broadcast_to(values, (len(rows), len(cols)))

    def _group_rows(self, subgroup) -> np.ndarray:
        if subgroup not in self.subgroups:
            raise KeyError(f"no subgroup {subgroup!r}; subgroups: {list(self.subgroups)}")
        g = list(self.subgroups).index(subgroup)
        return np.asarray(self.mixture_data().group) == g

    def _t_stage_rows(self, t_stage) -> np.ndarray:
        labels = np.concatenate([m.patient_data[MAP_T_COL].to_numpy(dtype=object)
                                 for m in self.subgroups.values()])
        return labels == t_stage

    # ------------------------------------------------------------ likelihoods
    def patient_component_likelihoods(self, t_stage: Optional[str] = None, subgroup=None,
                                      component: Optional[int] = None, *, log: bool = True):
        """``(P, K)`` (log-)likelihood of each patient under each component (rows: patients
        of ``subgroup`` / ``t_stage`` if given; 1-D if ``component`` is given)."""
        thetas, _, data = self.arrays()
        lik = np.asarray(_component_likelihoods(thetas, self.spec, data))
        lik = lik[self._rows(t_stage, subgroup)]
        if component is not None:
            lik = lik[:, component]
        with np.errstate(divide="ignore"):
            return np.log(lik) if log else lik

    def _rows(self, t_stage, subgroup) -> np.ndarray:
        rows = np.asarray(self.mixture_data().valid).copy()
        if subgroup is not None:
            rows &= self._group_rows(subgroup)
        if t_stage is not None:
            rows &= self._t_stage_rows(t_stage)
        return rows

    def repeat_mixture_coefs(self, t_stage: Optional[str] = None, subgroup=None, *,
                             log: bool = False) -> np.ndarray:
        """``(P, K)`` each patient's subgroup coefficients (rows as in
        :meth:`patient_component_likelihoods`)."""
        coefs = self.get_mixture_coefs().to_numpy().T[np.asarray(self.mixture_data().group)]
        coefs = coefs[self._rows(t_stage, subgroup)]
        with np.errstate(divide="ignore"):
            return np.log(coefs) if log else coefs

    def patient_mixture_likelihoods(self, t_stage: Optional[str] = None, subgroup=None,
                                    component: Optional[int] = None, *, log: bool = True,
                                    marginalize: bool = False):
        """``coefs * L`` per patient and component (summed over components if
        ``marginalize``), in log space if ``log``."""
        llh = self.patient_component_likelihoods(t_stage, subgroup, log=log)
        coefs = self.repeat_mixture_coefs(t_stage, subgroup, log=log)
        joint = coefs + llh if log else coefs * llh
        if component is not None:
            joint = joint[:, component]
            return joint
        if marginalize:
            return np.logaddexp.reduce(joint, axis=1) if log else joint.sum(axis=1)
        return joint

    def incomplete_data_likelihood(self, t_stage: Optional[str] = None, subgroup=None,
                                   component: Optional[int] = None, *, log: bool = True) -> float:
        llhs = self.patient_mixture_likelihoods(t_stage, subgroup, component, log=log,
                                                marginalize=True)
        return float(np.sum(llhs)) if log else float(np.prod(llhs))

    def complete_data_likelihood(self, t_stage: Optional[str] = None, subgroup=None,
                                 component: Optional[int] = None, *, log: bool = True) -> float:
        """``sum r (log coefs + log L)`` with ``0 * (-inf) = 0`` (NaN responsibilities refused)."""
        llhs = self.patient_mixture_likelihoods(t_stage, subgroup, component, log=log)
        resps = self.get_resps().to_numpy()[self._rows(t_stage, subgroup)]
        if component is not None:
            resps = resps[:, component]
        if np.isnan(resps).any():
            raise ValueError("responsibilities contain NaN: set them with set_resps(...) or "
                             "em.expectation(...) first")
        if log:
            with np.errstate(invalid="ignore"):
                terms = resps * llhs
            return float(np.sum(np.where(np.isnan(terms), 0.0, terms)))
        return float(np.prod(llhs ** resps))

    def likelihood(self, given_params=None, given_resps=None, *, log: bool = True,
                   use_complete: bool = True) -> float:
        """Complete (with the stored or ``given_resps``) or incomplete data (log-)likelihood;
        ``-inf`` for parameters outside [0, 1]."""
        try:
            if isinstance(given_params, Mapping):
                self.set_params(**given_params)
            elif given_params is not None:
                self.set_params(*given_params)
        except ValueError:
            return -np.inf if log else 0.0
        if use_complete:
            if given_resps is not None:
                self.set_resps(given_resps)
            return self.complete_data_likelihood(log=log)
        return self.incomplete_data_likelihood(log=log)

    # ------------------------------------------------------------ prediction
    def state_dist(self, t_stage: str = "early", subgroup=None) -> np.ndarray:
        """``(S,)`` for ``subgroup`` (coefficient-weighted components), else ``(G, S)``;
        ``(S, S)`` / ``(G, S, S)`` (ipsi x contra) for Bilateral components."""
        comp = np.stack([c.state_dist(t_stage) for c in self.components])   # (K, S...)
        coefs = self.get_mixture_coefs()
        if subgroup is not None:
            return np.tensordot(coefs[subgroup].to_numpy(), comp, axes=1)
        return np.tensordot(coefs.to_numpy().T, comp, axes=1)

    def posterior_state_dist(self, subgroup=None, given_params=None, given_state_dist=None,
                             given_diagnosis=None, t_stage: str = "early") -> np.ndarray:
        if given_state_dist is None:
            if isinstance(given_params, Mapping):
                self.set_params(**given_params)
            elif given_params is not None:
                self.set_params(*given_params)
            given_state_dist = self.state_dist(t_stage, subgroup)
        if given_diagnosis is None:
            return given_state_dist
        model = self.subgroups[subgroup] if subgroup is not None else self.components[0]
        given_state = model._diagnosis_given_state(given_diagnosis)      # (S,) or (S, S)
        joint = np.asarray(given_state_dist) * given_state
        axes = tuple(range(joint.ndim - given_state.ndim, joint.ndim))
        return joint / joint.sum(axis=axes, keepdims=True)

    def risk(self, subgroup, involvement, given_params=None, given_state_dist=None,
             given_diagnosis=None, t_stage: str = "early"):
        """Risk of ``involvement`` for a patient of ``subgroup`` given a diagnosis."""
        post = self.posterior_state_dist(subgroup, given_params, given_state_dist,
                                         given_diagnosis, t_stage)
        return self.components[0].marginalize(involvement, post)


__all__ = ["LymphMixture", "RESP_COLS", "T_STAGE_COL"]
