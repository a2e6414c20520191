"""Projection: imaging geometry, pose, mesh topology and renderers."""

from .pose import Pose, rotation_matrix
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
from .views_file import read_views, view_from_dict, view_to_dict, write_views

__all__ = [
    "XRayView",
    "biplanar",
    "carm_view",
    "stack_views",
    "read_views",
    "write_views",
    "view_to_dict",
    "view_from_dict",
    "Pose",
    "rotation_matrix",
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
