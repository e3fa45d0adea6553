"""The binary lymphatic-spread hidden Markov model as pure JAX functions.

The model is lymph-model 1.3.3's binary ``Unilateral``: ``N`` lymph node levels (LNLs), each
healthy (0) or involved (1); ``S = 2**N`` hidden states ordered like
``itertools.product([0, 1], repeat=N)`` (the first LNL is the most significant bit). Spread
comes from the tumour along tumour edges (probability ``b_v`` per time step) and between LNLs
along directed LNL edges (``t_uv``, only from an involved parent). Involved LNLs stay involved.
The hidden state starts all healthy and evolves ``P_t = P_{t-1} A`` for ``t = 1..max_time``;
a time prior per T-stage marginalises over the diagnosis time.

Everything here is a function of arrays and a static :class:`Graph`, so it jits, vmaps over
parameter sets (mixture components) and differentiates.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from math import comb
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


@dataclass(frozen=True)
class Graph:
    """The directed graph of a unilateral network (static, hashable).

    lnls : LNL names in graph-dict order.
    tumor_edges : ``(tumor_name, lnl_index)`` per tumour edge, in graph-dict order.
    lnl_edges : ``(parent_index, child_index)`` per LNL edge, in graph-dict order.
    """

    lnls: tuple
    tumor_edges: tuple
    lnl_edges: tuple

    @classmethod
    def from_dict(cls, graph_dict: Mapping) -> "Graph":
        """Build from lymph's ``{("tumor", "T"): [...], ("lnl", "II"): [...], ...}``."""
        if not isinstance(graph_dict, Mapping) or not graph_dict:
            raise TypeError("graph_dict must be a non-empty dict like {('tumor', 'T'): ['II'], "
                            "('lnl', 'II'): []}")
        lnls, tumors = [], []
        for key in graph_dict:
            if not (isinstance(key, tuple) and len(key) == 2 and key[0] in ("tumor", "lnl")):
                raise ValueError(f"graph_dict key {key!r} must be ('tumor', name) or ('lnl', name)")
            (tumors if key[0] == "tumor" else lnls).append(str(key[1]))
        if not tumors:
            raise ValueError("graph_dict needs at least one ('tumor', name) node")
        if not lnls:
            raise ValueError("graph_dict needs at least one ('lnl', name) node")
        if len(set(lnls)) != len(lnls):
            raise ValueError(f"duplicate LNL names in graph_dict: {lnls}")
        index = {name: i for i, name in enumerate(lnls)}
        tumor_edges, lnl_edges = [], []
        for (kind, name), targets in graph_dict.items():
            if isinstance(targets, (set, frozenset)):
                raise TypeError(f"edges of {(kind, name)!r} must be a list (a set has no order)")
            for target in targets:
                if target not in index:
                    raise ValueError(f"edge {name}->{target}: {target!r} is not an LNL of the "
                                     f"graph (LNLs: {lnls})")
                if kind == "tumor":
                    tumor_edges.append((str(name), index[target]))
                else:
                    if target == name:
                        raise ValueError(f"self-loop on LNL {name!r} is not allowed")
                    lnl_edges.append((index[name], index[target]))
        return cls(tuple(lnls), tuple(tumor_edges), tuple(lnl_edges))

    @property
    def num_lnls(self) -> int:
        return len(self.lnls)

    @property
    def num_states(self) -> int:
        return 2 ** len(self.lnls)

    @property
    def edge_names(self) -> tuple:
        """``('TtoII', ..., 'IItoIII', ...)``: tumour edges first, then LNL edges."""
        tumor = tuple(f"{t}to{self.lnls[v]}" for t, v in self.tumor_edges)
        lnl = tuple(f"{self.lnls[u]}to{self.lnls[v]}" for u, v in self.lnl_edges)
        return tumor + lnl

    @property
    def num_edges(self) -> int:
        return len(self.tumor_edges) + len(self.lnl_edges)


def state_table(num_lnls: int) -> np.ndarray:
    """``(2**N, N)`` int array of hidden states in ``itertools.product([0, 1])`` order."""
    return np.array(list(itertools.product([0, 1], repeat=num_lnls)), dtype=np.int32)


def transition_matrix(spread, graph: Graph):
    """``A (S, S)``: ``A[x, x'] = P(x' | x)`` for one time step.

    spread : ``(num_edges,)`` probabilities in ``graph.edge_names`` order.
    For a healthy LNL v, ``P(stay healthy | x) = prod_{tumour edges} (1 - b) *
    prod_{LNL edges u->v} (1 - t_uv)**x_u`` (parents' current state); involved LNLs stay
    involved.
    """
    states = jnp.asarray(state_table(graph.num_lnls), spread.dtype)    # (S, N)
    n_tumor = len(graph.tumor_edges)
    stay = jnp.ones_like(states)                                        # q_v(x), (S, N)
    for e, (_, v) in enumerate(graph.tumor_edges):
        stay = stay.at[:, v].multiply(1.0 - spread[e])
    for e, (u, v) in enumerate(graph.lnl_edges):
        # (1 - t)**x_u with x_u in {0, 1} is 1 - t * x_u
        stay = stay.at[:, v].multiply(1.0 - spread[n_tumor + e] * states[:, u])
    p_involved = states + (1.0 - states) * (1.0 - stay)                 # P(x'_v = 1 | x)
    new = states[None, :, :]                                            # x' along axis 1
    factors = new * p_involved[:, None, :] + (1.0 - new) * (1.0 - p_involved[:, None, :])
    return jnp.prod(factors, axis=-1)


def state_evolution(transition, max_time: int):
    """``(max_time + 1, S)``: ``P_0 = e_0`` (all healthy) and ``P_t = P_{t-1} A``."""
    start = jnp.zeros(transition.shape[0], transition.dtype).at[0].set(1.0)

    def step(p, _):
        p_next = p @ transition
        return p_next, p_next

    _, later = lax.scan(step, start, None, length=max_time)
    return jnp.concatenate([start[None], later], axis=0)


def binomial_pmf(n: int, p):
    """``Binom(k; n, p)`` for ``k = 0..n`` ((n + 1,) array), differentiable at p = 0 and 1.

    Powers are cumulative products, so there is no ``0 * log 0`` or ``0**-1`` in the
    gradient at the ends of [0, 1].
    """
    p = jnp.asarray(p)
    ones = jnp.ones((1,), p.dtype)
    p_pow = jnp.cumprod(jnp.concatenate([ones, jnp.full((n,), p)]))        # p**k
    q_pow = jnp.cumprod(jnp.concatenate([ones, jnp.full((n,), 1.0 - p)]))  # q**k
    coef = jnp.asarray([comb(n, k) for k in range(n + 1)], p.dtype)
    return coef * p_pow * q_pow[::-1]


def confusion_matrix(spec, sens):
    """``(2, 2)`` ``[[spec, 1 - spec], [1 - sens, sens]]``: rows true state, columns observed."""
    spec = jnp.asarray(spec)
    sens = jnp.asarray(sens)
    return jnp.stack([jnp.stack([spec, 1.0 - spec]), jnp.stack([1.0 - sens, sens])])


def lnl_observation_factors(confusions, findings):
    """``(P, N, 2)``: ``prod_m C_m[x_v, z_pmv]`` for x_v = 0, 1; a missing finding gives 1.

    confusions : ``(M, 2, 2)`` per modality; findings : ``(P, M, N)`` int, 0 / 1 observed,
    -1 missing.
    """
    findings = jnp.asarray(findings)
    observed = findings >= 0
    z = jnp.clip(findings, 0, 1)
    # C_m[x, z] for x = 0 and x = 1: (P, M, N, 2)
    per_x = jnp.stack([confusions[jnp.arange(confusions.shape[0])[None, :, None], x, z]
                       for x in (0, 1)], axis=-1)
    per_x = jnp.where(observed[..., None], per_x, 1.0)
    return jnp.prod(per_x, axis=1)


def diagnosis_matrix(confusions, findings, num_lnls: int):
    """``(P, S)``: ``P(findings_p | hidden state x)``, never materialising 2**(N*M) columns."""
    factors = lnl_observation_factors(confusions, findings)            # (P, N, 2)
    states = state_table(num_lnls)                                      # (S, N)
    picked = factors[:, np.arange(num_lnls)[None, :], states]          # (P, S, N)
    return jnp.prod(picked, axis=-1)


def time_priors(theta, dists: tuple, max_time: int, offset: int):
    """``(num_t_stages, max_time + 1)`` normalised time priors.

    dists : static tuple of :class:`DistSpec`; parametric ones read their parameters from
    ``theta[offset + index]``.
    """
    support = np.arange(max_time + 1)  # concrete, as lymph passes it
    rows = []
    for d in dists:
        if d.frozen is not None:
            pmf = jnp.asarray(d.frozen, theta.dtype)
        else:
            kwargs = {name: theta[offset + i] for name, i in zip(d.param_names, d.param_index)}
            pmf = jnp.asarray(d.func(support, **kwargs), theta.dtype)
        rows.append(pmf / jnp.sum(pmf))
    return jnp.stack(rows)


@dataclass(frozen=True)
class DistSpec:
    """One T-stage's time prior (static): ``frozen`` pmf tuple, or ``func(support, **params)``
    with its parameter names and their positions among the distribution parameters."""

    t_stage: str
    frozen: tuple | None
    func: object | None
    param_names: tuple
    param_index: tuple


@dataclass(frozen=True)
class ModelSpec:
    """Everything static about a unilateral model: graph, max_time and the time priors.

    A parameter vector ``theta`` holds the spread probabilities (``graph.edge_names`` order)
    followed by the parametric time priors' parameters (``dist_param_names`` order), i.e.
    lymph's ``get_params(as_dict=False)`` order.
    """

    graph: Graph
    max_time: int
    dists: tuple

    @property
    def t_stages(self) -> tuple:
        return tuple(d.t_stage for d in self.dists)

    @property
    def dist_param_names(self) -> tuple:
        names = []
        for d in self.dists:
            if d.frozen is None:
                names += [f"{d.t_stage}_{p}" for p in d.param_names]
        return tuple(names)

    @property
    def param_names(self) -> tuple:
        return tuple(f"{e}_spread" for e in self.graph.edge_names) + self.dist_param_names

    @property
    def num_params(self) -> int:
        return len(self.param_names)

    def likelihoods(self, theta, diagnosis, t_index):
        """``(P,)`` per-patient likelihoods (:func:`patient_likelihoods`); the interface a
        mixture component's spec offers (``bilateral.BilateralSpec`` has the same)."""
        return patient_likelihoods(theta, self, diagnosis, t_index)


def state_dists(theta, spec: ModelSpec):
    """``(num_t_stages, S)``: ``pi_tau = sum_t p_tau(t) P_t`` for each T-stage of ``spec``.

    theta : ``(spec.num_params,)``.
    """
    theta = jnp.asarray(theta)
    if not spec.dists:
        raise ValueError("no time prior is set: call set_distribution(t_stage, pmf) first")
    spread = theta[: spec.graph.num_edges]
    evolution = state_evolution(transition_matrix(spread, spec.graph), spec.max_time)
    priors = time_priors(theta, spec.dists, spec.max_time, spec.graph.num_edges)
    return priors @ evolution


def patient_likelihoods(theta, spec: ModelSpec, diagnosis, t_index):
    """``(P,)`` per-patient likelihoods ``pi_{tau_p} . Delta_p``.

    diagnosis : ``(P, S)`` from :func:`diagnosis_matrix`; t_index : ``(P,)`` index into
    ``spec.t_stages`` (patients with -1, a T-stage without a time prior, get NaN).
    """
    dists = state_dists(theta, spec)                                    # (T, S)
    t_index = jnp.asarray(t_index)
    rows = dists[jnp.clip(t_index, 0, None)]
    lik = jnp.sum(rows * diagnosis, axis=-1)
    return jnp.where(t_index >= 0, lik, jnp.nan)


def match_pattern(pattern: Mapping | Sequence | None, lnls: Sequence[str]) -> np.ndarray:
    """``(S,)`` bool: which hidden states match an involvement pattern (None = either)."""
    states = state_table(len(lnls))
    keep = np.ones(len(states), bool)
    if pattern is None:
        return keep
    if not isinstance(pattern, Mapping):
        pattern = dict(zip(lnls, pattern))
    for lnl, value in pattern.items():
        if lnl not in lnls:
            raise ValueError(f"involvement names LNL {lnl!r}, not in the graph (LNLs: {list(lnls)})")
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        keep &= states[:, list(lnls).index(lnl)] == int(bool(value))
    return keep


__all__ = ["Graph", "DistSpec", "ModelSpec", "state_table", "transition_matrix",
           "state_evolution", "binomial_pmf", "confusion_matrix", "lnl_observation_factors",
           "diagnosis_matrix", "time_priors", "state_dists", "patient_likelihoods",
           "match_pattern"]
