"""Shape priors: the ShapeModel distribution, PCA building, kernels and GP models."""

from . import kernels
from .assembly import Assembly, PosturePrior, without_rigid_motion
from .build import build_pca_model, procrustes_align, similarity_transform
from .coarsen import coarsen_mesh
from .evaluation import ModelEvaluation, evaluate_model
from .gp import augment, gp_model, low_rank_kernel
from .model import ShapeModel
from .model_error import ModelError, add_model_error, fit_model_error, scale_model_error
from .residual import best_fit, loo_residual_covariance, loo_variance_ratio

__all__ = [
    "ShapeModel",
    "Assembly",
    "PosturePrior",
    "without_rigid_motion",
    "build_pca_model",
    "procrustes_align",
    "similarity_transform",
    "gp_model",
    "augment",
    "low_rank_kernel",
    "kernels",
    "ModelError",
    "fit_model_error",
    "add_model_error",
    "scale_model_error",
    "loo_residual_covariance",
    "loo_variance_ratio",
    "best_fit",
    "coarsen_mesh",
    "ModelEvaluation",
    "evaluate_model",
]
