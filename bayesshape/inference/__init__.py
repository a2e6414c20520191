"""Inference: the NumPyro model, MAP, NUTS, SVI, Laplace and importance sampling."""

from .infer import find_map, infer, numpyro_model, reference_shapes, refine_map
from .importance import importance_sample, pareto_khat
from .init import check_units, initial_pose

__all__ = ["infer", "find_map", "refine_map", "importance_sample", "pareto_khat", "numpyro_model", "reference_shapes", "initial_pose", "check_units"]
