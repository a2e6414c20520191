"""Projection: imaging geometry, pose, mesh topology and renderers."""

from .pose import Pose, RigidPose, SimilarityPose, as_pose_prior, rotation_matrix, transform_points
from .render import (
    beer_lambert,
    contour_generator,
    contour_weights,
    drr_face_groups,
    drr_footprint,
    face_facing,
    project_points,
    render_drr,
    render_drr_flagged,
    soft_silhouette,
)
from .topology import Topology
from .views import XRayView, biplanar, carm_view, stack_views

__all__ = [
    "XRayView",
    "biplanar",
    "carm_view",
    "stack_views",
    "Pose",
    "RigidPose",
    "SimilarityPose",
    "as_pose_prior",
    "rotation_matrix",
    "transform_points",
    "Topology",
    "project_points",
    "face_facing",
    "contour_generator",
    "contour_weights",
    "drr_footprint",
    "drr_face_groups",
    "render_drr",
    "render_drr_flagged",
    "beer_lambert",
    "soft_silhouette",
]
