"""bayesshape: probabilistic 3D shape reconstruction from 2D X-rays, in JAX."""

from . import datasets, io
from .prior import (
    ShapeModel,
    augment,
    build_pca_model,
    gp_model,
    kernels,
    procrustes_align,
)

__version__ = "0.1.0"

__all__ = [
    "ShapeModel",
    "build_pca_model",
    "procrustes_align",
    "gp_model",
    "augment",
    "kernels",
    "datasets",
    "io",
    "__version__",
]
