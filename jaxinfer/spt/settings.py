"""The keyword arguments of :func:`jaxinfer.spt.infer.infer`, checked once at the edge.

:func:`settings_from_kwargs` refuses bad values (negative or non-finite sigma and priors,
unknown keywords, unknown rgrad / solver) with the value and what was expected, before any
tracing, and returns an :class:`InferSettings` (frozen) that the solvers and the plugins read.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Callable, Optional

import numpy as np

__all__ = ["InferSettings", "settings_from_kwargs", "localization_variance", "PRIOR_NAMES",
           "DEFAULT_SIGMA", "check_priors"]

DEFAULT_SIGMA = 0.03  # µm, TRamWAy's localization error when none is given
PRIOR_NAMES = ("diffusivity_prior", "drift_prior", "force_prior", "potential_prior",
               "diffusivity_time_prior", "potential_time_prior")
# keywords TRamWAy's helper accepts that change nothing here
_TRAMWAY_NO_OPS = {"worker_count", "verbose", "gradient", "grad", "superlocal", "stochastic",
                   "debug", "fulltime"}
_RGRAD = (None, "grad", "grad1", "gradn", "delta", "delta0", "delta1")
_SOLVERS = ("lbfgsb", "l-bfgs-b", "block")


@dataclasses.dataclass(frozen=True)
class InferSettings:
    """Validated options of one ``infer`` call (see :func:`jaxinfer.spt.infer.infer`)."""

    sigma2: float
    sigma_given: bool = False
    diffusivity_prior: Optional[float] = None
    drift_prior: Optional[float] = None
    force_prior: Optional[float] = None
    potential_prior: Optional[float] = None
    diffusivity_time_prior: Optional[float] = None
    potential_time_prior: Optional[float] = None
    time_prior: Any = None
    jeffreys_prior: bool = False
    min_diffusivity: Any = None
    max_iter: Optional[int] = None
    epsilon: Optional[float] = None
    selection_angle: Optional[float] = None
    compatibility: bool = False
    rgrad: Optional[str] = None
    D0: Any = None
    V0: Any = None
    options: Optional[dict] = None
    tol: Optional[float] = None
    allow_negative_potential: bool = False
    tramway_jeffreys_bug: bool = True
    exact_normalization: bool = False
    solver: str = "lbfgsb"
    export_centers: bool = False
    input_maps: Any = None
    feature: Any = None
    B_threshold: float = 10.0
    init_max_iter: int = 300
    alpha: float = 0.95
    progress: Optional[Callable] = None

    def given_priors(self) -> tuple:
        """Names of the prior keywords that are set (not None)."""
        return tuple(n for n in PRIOR_NAMES if getattr(self, n) is not None)

    def grad_kwargs(self) -> dict:
        """TRamWAy's get_grad_kwargs: eps wins; else the selection angle (0.9 default)."""
        from jaxinfer.spt.gradient import DEFAULT_SELECTION_ANGLE

        if self.epsilon is not None:
            return dict(eps=self.epsilon, selection_angle=None)
        return dict(eps=None, selection_angle=self.selection_angle or DEFAULT_SELECTION_ANGLE)


def _finite_nonnegative(name: str, value, what: str = "a finite number >= 0"):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {what}, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be {what}, got {v}")
    return v


def check_priors(**priors) -> dict:
    """Prior weights by keyword name -> floats (None kept); refuses negative / non-finite."""
    return {name: None if v is None else _finite_nonnegative(name, v)
            for name, v in priors.items()}


def localization_variance(localization_error=None, sigma=None, sigma2=None,
                          default_sigma: float = DEFAULT_SIGMA) -> float:
    """TRamWAy's ``get_localization_error``: sigma^2 (µm²) from ``localization_error`` (=
    sigma, µm), ``sigma`` (µm) or ``sigma2`` (µm²); ``default_sigma**2`` when none is given.
    Negative or non-finite values and conflicting values raise ValueError."""
    cand = []
    if localization_error is not None:
        warnings.warn("`localization_error` is read as sigma (not sigma^2), as TRamWAy; "
                      "prefer `sigma` or `sigma2`", UserWarning, stacklevel=3)
        cand.append(("localization_error",
                     _finite_nonnegative("localization_error (sigma, µm)",
                                         localization_error) ** 2))
    if sigma is not None:
        cand.append(("sigma", _finite_nonnegative("sigma (localization error, µm)", sigma) ** 2))
    if sigma2 is not None:
        cand.append(("sigma2", _finite_nonnegative("sigma2 (localization variance, µm²)",
                                                   sigma2)))
    if not cand:
        return float(default_sigma) ** 2
    for name, v in cand:
        if not np.isclose(v, cand[0][1]):
            raise ValueError(f"conflicting localization errors: {cand[0][0]} and {name} give "
                             f"sigma^2 = {cand[0][1]} and {v}")
    return cand[0][1]


def settings_from_kwargs(*, localization_error=None, sigma=None, sigma2=None,
                         grad_epsilon=None, epsilon=None, grad_selection_angle=None,
                         alpha=0.95, **kwargs) -> InferSettings:
    """Validate ``infer``'s keywords -> :class:`InferSettings` (raises before any tracing)."""
    unknown = set(kwargs) - {f.name for f in dataclasses.fields(InferSettings)} - _TRAMWAY_NO_OPS
    unknown -= {"sigma_given", "selection_angle"}
    if unknown:
        raise TypeError(f"infer() got unexpected keyword arguments {sorted(unknown)}")
    for name in _TRAMWAY_NO_OPS & set(kwargs):
        kwargs.pop(name)
    s2 = localization_variance(localization_error, sigma, sigma2)
    kwargs.update(check_priors(**{n: kwargs[n] for n in PRIOR_NAMES if n in kwargs}))
    tp = kwargs.get("time_prior")
    if tp is not None:
        for v in (tp if isinstance(tp, (tuple, list)) else (tp,)):
            if v is not None:
                _finite_nonnegative("time_prior", v)
    rgrad = kwargs.get("rgrad")
    if rgrad not in _RGRAD:
        raise ValueError(f"unknown rgrad {rgrad!r}; expected None, 'grad1', 'delta0' or "
                         "'delta1'")
    solver = str(kwargs.get("solver", "lbfgsb")).lower()
    if solver not in _SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; expected 'lbfgsb' or 'block'")
    kwargs["solver"] = "block" if solver == "block" else "lbfgsb"
    max_iter = kwargs.get("max_iter")
    if max_iter is not None and (int(max_iter) != max_iter or max_iter < 1):
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    for name in ("B_threshold",):
        if name in kwargs:
            _finite_nonnegative(name, kwargs[name])
    if not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha (credible level) must be in (0, 1), got {alpha}")
    eps = grad_epsilon if grad_epsilon is not None else epsilon
    return InferSettings(sigma2=s2, sigma_given=any(v is not None for v in
                                                    (localization_error, sigma, sigma2)),
                         epsilon=eps, selection_angle=grad_selection_angle, alpha=float(alpha),
                         **kwargs)
