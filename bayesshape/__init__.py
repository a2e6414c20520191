"""bayesshape: probabilistic 3D shape reconstruction from 2D X-rays, in JAX.

Data flow: prior (``ShapeModel``, ``kernels``, ``io``) -> instance -> projection
(``XRayView``, renderers) -> likelihoods (``obs``) -> inference -> posterior.
"""

from . import datasets, io, obs, report
from .prior import (
    ShapeModel,
    augment,
    build_pca_model,
    gp_model,
    kernels,
    loo_residual_covariance,
    loo_variance_ratio,
    procrustes_align,
)
from .projection import (
    Pose,
    Topology,
    XRayView,
    beer_lambert,
    biplanar,
    carm_view,
    contour_generator,
    drr_face_groups,
    drr_footprint,
    project_points,
    read_views,
    render_drr,
    soft_silhouette,
    stack_views,
    write_views,
)
from .simulate import SimulatedXRay, simulate_xray
from .inference import infer
from .posterior import (
    Measurement,
    Posterior,
    Reliability,
    ShapeSamples,
    load_posterior,
    posterior_from_landmarks,
    save_posterior,
)
from .export import export_confidence_mesh, export_samples, write_summary

__version__ = "0.1.0"

__all__ = [
    # prior
    "ShapeModel",
    "build_pca_model",
    "procrustes_align",
    "gp_model",
    "augment",
    "loo_residual_covariance",
    "loo_variance_ratio",
    "kernels",
    "datasets",
    "io",
    # projection
    "XRayView",
    "biplanar",
    "carm_view",
    "stack_views",
    "read_views",
    "write_views",
    "Pose",
    "Topology",
    "project_points",
    "contour_generator",
    "drr_face_groups",
    "drr_footprint",
    "render_drr",
    "beer_lambert",
    "soft_silhouette",
    # likelihoods and simulation
    "obs",
    "simulate_xray",
    "SimulatedXRay",
    # inference and posterior
    "infer",
    "Posterior",
    "Reliability",
    "Measurement",
    "posterior_from_landmarks",
    "ShapeSamples",
    "save_posterior",
    "load_posterior",
    # outputs
    "export_confidence_mesh",
    "export_samples",
    "write_summary",
    "report",
    "__version__",
]
