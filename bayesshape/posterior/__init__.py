"""Posterior shape distributions: summaries, uncertainty maps, reliability, closed form, files."""

from .closed_form import posterior_from_landmarks
from .posterior import Posterior
from .samples import Measurement, Reliability, ShapeSamples, load_posterior, save_posterior

__all__ = ["Posterior", "ShapeSamples", "Reliability", "Measurement", "posterior_from_landmarks",
           "save_posterior", "load_posterior"]
