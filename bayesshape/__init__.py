"""bayesshape: probabilistic 3D shape reconstruction from 2D X-rays, in JAX.

The data flow one way, and the subpackages show it: ``prior`` (shape models) ->
``projection`` (views, poses, renderers) -> ``obs`` (likelihoods) -> ``posterior`` (samples
and their summaries) -> ``inference`` (which builds posteriors) -> ``io``, ``export``,
``report`` and ``cli``. This namespace holds what a user calls; the plumbing stays importable
from the subpackages.
"""

from . import datasets, export, inference, io, obs, posterior, prior, projection, registration, report
from ._version import __version__
from .export import export_confidence_mesh
from .inference import NUTS, SVI, Importance, Laplace, LikelihoodOptions, infer, infer_batch, posterior_from_landmarks
from .io import load_posterior, read_views, save_posterior, write_views
from .posterior import Posterior
from .prior import ShapeModel, add_model_error, augment, build_pca_model, gp_model, kernels, loo_residual_covariance
from .projection import RigidPose, SimilarityPose, XRayView, biplanar, carm_view
from .registration import build_model_from_surfaces, register
from .simulate import simulate_xray

__all__ = [
    # shape models
    "ShapeModel",
    "build_pca_model",
    "gp_model",
    "augment",
    "add_model_error",
    "kernels",
    "loo_residual_covariance",
    # imaging
    "XRayView",
    "biplanar",
    "carm_view",
    "read_views",
    "write_views",
    "simulate_xray",
    # observations
    "obs",
    # inference
    "infer",
    "infer_batch",
    "NUTS",
    "SVI",
    "Laplace",
    "Importance",
    "RigidPose",
    "SimilarityPose",
    "LikelihoodOptions",
    "posterior_from_landmarks",
    # raw surfaces
    "register",
    "build_model_from_surfaces",
    # posterior and outputs
    "Posterior",
    "save_posterior",
    "load_posterior",
    "export_confidence_mesh",
    # subpackages
    "datasets",
    "prior",
    "projection",
    "posterior",
    "inference",
    "registration",
    "io",
    "export",
    "report",
    "__version__",
]
