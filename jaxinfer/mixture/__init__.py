"""Mixtures of lymphatic-spread models (lymixture 0.0.2 and lymph-model 1.3.3, in JAX).

``from jaxinfer.mixture import LymphMixture, em, utils`` replaces
``from lymixture import LymphMixture, em, utils``; ``from jaxinfer.mixture.lymph import
Unilateral`` replaces ``from lymph.models import Unilateral``.
"""

from jaxinfer.mixture import lymph, utils  # noqa: F401
from jaxinfer.mixture.models import LymphMixture  # noqa: F401
from jaxinfer.mixture import em  # noqa: F401  (after models: em uses LymphMixture)

__all__ = ["LymphMixture", "em", "lymph", "utils"]
