"""Inference: the NumPyro model, MAP, NUTS, SVI and Laplace."""

from .infer import find_map, infer, numpyro_model, reference_shapes
from .init import check_units, initial_pose

__all__ = ["infer", "find_map", "numpyro_model", "reference_shapes", "initial_pose", "check_units"]
