"""Posterior shape distributions: samples, summaries, uncertainty maps and reliability flags."""

from . import morphometry, posture
from .posterior import Posterior
from .samples import Measurement, Reliability, ShapeSamples, verdict_sentence

__all__ = ["Posterior", "ShapeSamples", "Reliability", "Measurement", "verdict_sentence", "posture", "morphometry"]
