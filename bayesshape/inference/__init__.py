"""Inference: the method configurations, the driver, the MAP fit, the Laplace approximation,
NUTS, SVI, importance sampling, the closed form for 3D landmarks, and the diagnostics records."""

from .batch import infer_batch
from .closed_form import posterior_from_landmarks
from .config import NUTS, SVI, Importance, Laplace, LikelihoodOptions, as_method
from .diagnostics import (
    ClosedFormInfo,
    Diagnostics,
    ImportanceInfo,
    LaplaceInfo,
    MapInfo,
    NUTSInfo,
    SVIInfo,
    ess_bulk_tail,
    sampler_warnings,
)
from .importance import importance_sample, pareto_khat
from .infer import build_problem, infer, reference_shapes
from .init import check_units, initial_pose
from .laplace import laplace_covariance
from .map import find_map, refine_map
from .nuts import numpyro_model, run_nuts
from .svi import run_svi

__all__ = [
    "infer",
    "infer_batch",
    "NUTS",
    "SVI",
    "Laplace",
    "Importance",
    "LikelihoodOptions",
    "as_method",
    "Diagnostics",
    "MapInfo",
    "LaplaceInfo",
    "ImportanceInfo",
    "SVIInfo",
    "NUTSInfo",
    "ClosedFormInfo",
    "sampler_warnings",
    "ess_bulk_tail",
    "posterior_from_landmarks",
    "build_problem",
    "find_map",
    "refine_map",
    "laplace_covariance",
    "importance_sample",
    "pareto_khat",
    "run_svi",
    "run_nuts",
    "numpyro_model",
    "reference_shapes",
    "initial_pose",
    "check_units",
]
