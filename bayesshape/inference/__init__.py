"""Inference: the NumPyro model, MAP, NUTS, SVI and Laplace."""

from .infer import find_map, infer, numpyro_model, reference_shapes, refine_map
from .init import check_units, initial_pose

__all__ = ["infer", "find_map", "refine_map", "numpyro_model", "reference_shapes", "initial_pose", "check_units"]
