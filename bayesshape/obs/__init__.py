"""Observations and their likelihoods.

Every observation holds its data, its view (if any) and its noise model, and gives
``log_likelihood(vertices)`` for a vertex array ``(n_vert, 3)`` in mm (jit- and
grad-safe). Mesh-based ones (``Contour``, ``Silhouette``, ``DRR``, ``SurfacePoints``) are first
bound to a model's mesh with ``obs.bind(model.faces, reference_vertices)``.

=================  ==========================================  ==================
type               data                                        noise sd (units)
=================  ==========================================  ==================
``Landmarks3D``    vertex ids and 3D points                    ``sigma`` mm
``Landmarks2D``    vertex ids and pixels in one view           ``sigma`` pixels
``SurfacePoints``  3D points on the surface, no correspondence ``sigma`` mm
``Contour``        silhouette mask or contour points           ``sigma`` pixels
``Silhouette``     segmentation mask, pixel by pixel (probit)  ``sigma`` pixels
``DRR``            radiograph in line-integral units           ``sigma`` (image)
=================  ==========================================  ==================

With an :class:`~bayesshape.prior.Assembly`, an observation sees every object (a DRR is the sum of
their path lengths); ``OnObject(observation, name)`` restricts it to one object.
"""

from .assembly import OnObject, check_label_images, label_observations
from .base import Observation, PoseAnchor
from .contour import Contour, composite_weights, mask_contour_points
from .drr import DRR, drr_composite_weights
from .landmarks import Landmarks2D, Landmarks3D, SurfacePoints
from .silhouette import Silhouette, boundary_band

__all__ = [
    "Observation",
    "PoseAnchor",
    "Landmarks3D",
    "Landmarks2D",
    "SurfacePoints",
    "Contour",
    "Silhouette",
    "DRR",
    "OnObject",
    "label_observations",
    "check_label_images",
    "mask_contour_points",
    "composite_weights",
    "drr_composite_weights",
    "boundary_band",
]
