"""Registration of raw surfaces: a deformable model of a reference fitted to each target, with the
posterior of the correspondence, and shape models built from raw segmentations."""

from .build import SurfaceModel, build_model_from_surfaces
from .register import Registration, RegistrationInfo, RegistrationOptions, register

__all__ = [
    "register",
    "Registration",
    "RegistrationOptions",
    "RegistrationInfo",
    "build_model_from_surfaces",
    "SurfaceModel",
]
