"""Posterior shape distributions: summaries, uncertainty maps, reliability, closed form."""

from .closed_form import posterior_from_landmarks
from .posterior import Measurement, Posterior, Reliability

__all__ = ["Posterior", "Reliability", "Measurement", "posterior_from_landmarks"]
