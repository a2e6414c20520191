"""Landmark observations: 3D points, 2D projected points, and 3D surface points."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from .._checks import as_points, as_positive
from .._geometry import points_to_surface
from ..projection.views import XRayView
from ._noise import check_df, fisher_scale, log_density, log_density_terms
from ._noise import log_sigma_information as _log_sigma_info
from .base import Observation, PoseAnchor, check_ratio, check_visible, span

__all__ = ["Landmarks3D", "Landmarks2D", "SurfacePoints"]


def _ids(ids, n):
    a = np.asarray(ids)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer) or a.size == 0:
        raise ValueError(
            f"ids: expected a non-empty 1-D integer array of vertex indices, got shape {a.shape}, dtype {a.dtype}"
        )
    if a.size != n:
        raise ValueError(f"ids: {a.size} vertex ids but {n} observed points; they must match one to one")
    if a.min() < 0:
        raise ValueError("ids: vertex indices must be >= 0")
    return jnp.asarray(a.astype(np.int32))


def _check_ids_in_range(ids, n_vertices):
    hi = int(np.asarray(ids).max())
    if hi >= n_vertices:
        raise ValueError(f"ids: vertex index {hi} is out of range for a model with {n_vertices} vertices")


class Landmarks3D(Observation):
    """3D landmarks: model vertices ``ids`` observed at ``points`` (mm).

    Noise model: every coordinate independent, Gaussian with sd ``sigma`` mm, or
    Student-t with ``df`` degrees of freedom (robust to outliers).

    Example:
        >>> obs = Landmarks3D(jnp.array([10, 200]), jnp.array([[0., 1., 2.], [3., 4., 5.]]), sigma=1.0)
    """

    ids: Int[Array, " n_lm"]
    points: Float[Array, "n_lm 3"]
    sigma: Float[Array, ""]
    df: float | None = eqx.field(static=True)

    def __init__(self, ids, points, sigma: float, df: float | None = None):
        pts = as_points(points, "points")
        self.ids = _ids(ids, pts.shape[0])
        self.points = jnp.asarray(pts)
        self.sigma = jnp.asarray(as_positive(sigma, "sigma (mm)"))
        self.df = check_df(df)

    def bind(self, faces, reference_vertices):
        _check_ids_in_range(self.ids, np.shape(reference_vertices)[-2])
        return self

    def residuals(self, vertices):
        return ((vertices[self.ids] - self.points) / self.sigma).reshape(-1)

    def log_likelihood(self, vertices, sigma=None):
        s = self.sigma if sigma is None else sigma
        return log_density(vertices[self.ids] - self.points, s, self.df)

    def pointwise_log_likelihood(self, vertices, sigma=None):
        """One term per landmark."""
        s = self.sigma if sigma is None else sigma
        return jnp.sum(log_density_terms(vertices[self.ids] - self.points, s, self.df), axis=1)

    def whitened_residuals(self, vertices, sigma=None):
        s = self.sigma if sigma is None else sigma
        return (fisher_scale(self.df) * (vertices[self.ids] - self.points) / s).reshape(-1)

    def log_sigma_information(self) -> float:
        return _log_sigma_info(self.n_data, self.df)

    def check_units(self, model_mean) -> None:
        if self.ids.shape[0] < 2:
            return
        obs_span, mod_span = span(self.points), span(np.asarray(model_mean)[np.asarray(self.ids)])
        check_ratio(
            obs_span,
            mod_span,
            lambda r: (
                f"Landmarks3D: the observed landmarks span {obs_span:.4g} but the model's landmarks span "
                f"{mod_span:.4g} (ratio {r:.3g}); model and observations must share units (mm). "
                "Metres against mm give a ratio of 1000 or 1/1000."
            ),
        )

    def pose_anchor(self, model_mean, centroid) -> PoseAnchor:
        """The model mean's landmarks onto the observed points (3D correspondences)."""
        return PoseAnchor(
            np.asarray(model_mean, dtype=np.float64)[np.asarray(self.ids)],
            world_points=np.asarray(self.points, dtype=np.float64),
        )

    @property
    def n_data(self) -> int:
        return 3 * self.ids.shape[0]


class Landmarks2D(Observation):
    """Landmarks seen in one X-ray: model vertices ``ids`` at ``pixels`` ``(row, col)``.

    Noise model: every pixel coordinate independent, Gaussian with sd ``sigma`` pixels
    (or Student-t with ``df``).
    """

    view: XRayView
    ids: Int[Array, " n_lm"]
    pixels: Float[Array, "n_lm 2"]
    sigma: Float[Array, ""]
    df: float | None = eqx.field(static=True)

    def __init__(self, view: XRayView, ids, pixels, sigma: float, df: float | None = None):
        if not isinstance(view, XRayView):
            raise ValueError(f"view: expected an XRayView, got {type(view).__name__}")
        self.view = view.check()
        px = as_points(pixels, "pixels", dim=2)
        self.ids = _ids(ids, px.shape[0])
        self.pixels = jnp.asarray(px)
        self.sigma = jnp.asarray(as_positive(sigma, "sigma (pixels)"))
        self.df = check_df(df)

    def bind(self, faces, reference_vertices):
        _check_ids_in_range(self.ids, np.shape(reference_vertices)[-2])
        check_visible(self.view, reference_vertices, "Landmarks2D")
        return self

    def residuals(self, vertices):
        return ((self.view.project(vertices[self.ids]) - self.pixels) / self.sigma).reshape(-1)

    def log_likelihood(self, vertices, sigma=None):
        s = self.sigma if sigma is None else sigma
        return log_density(self.view.project(vertices[self.ids]) - self.pixels, s, self.df)

    def pointwise_log_likelihood(self, vertices, sigma=None):
        """One term per landmark."""
        s = self.sigma if sigma is None else sigma
        return jnp.sum(log_density_terms(self.view.project(vertices[self.ids]) - self.pixels, s, self.df), axis=1)

    def whitened_residuals(self, vertices, sigma=None):
        s = self.sigma if sigma is None else sigma
        return (fisher_scale(self.df) * (self.view.project(vertices[self.ids]) - self.pixels) / s).reshape(-1)

    def log_sigma_information(self) -> float:
        return _log_sigma_info(self.n_data, self.df)

    def pose_anchor(self, model_mean, centroid) -> PoseAnchor:
        """The landmarks' centroid on the model mean onto the observed pixels' centroid."""
        p3 = np.asarray(model_mean, dtype=np.float64)[np.asarray(self.ids)].mean(0)
        return PoseAnchor(p3[None], view=self.view, pixels=np.asarray(self.pixels).mean(0)[None])

    @property
    def n_data(self) -> int:
        return 2 * self.ids.shape[0]


class SurfacePoints(Observation):
    """Partial 3D data: points (mm) that lie on the surface, at unknown correspondence.

    The residual of each point is its exact distance to the closest triangle of the
    model surface. Noise model: Gaussian (or Student-t) in that distance, sd
    ``sigma`` mm. Cost ``O(n_points x n_faces)``, evaluated in chunks of 16 points.
    """

    points: Float[Array, "n_pt 3"]
    sigma: Float[Array, ""]
    df: float | None = eqx.field(static=True)
    faces: Int[Array, "n_face 3"] | None

    def __init__(self, points, sigma: float, df: float | None = None, faces=None):
        self.points = jnp.asarray(as_points(points, "points"))
        self.sigma = jnp.asarray(as_positive(sigma, "sigma (mm)"))
        self.df = check_df(df)
        self.faces = None if faces is None else jnp.asarray(np.asarray(faces, dtype=np.int32))

    def bind(self, faces, reference_vertices):
        if faces is None:
            raise ValueError("SurfacePoints needs a mesh model (faces); this model is a point set")
        return SurfacePoints(self.points, float(self.sigma), self.df, faces)

    def distances(self, vertices):
        """Distance (mm) of every observed point to the surface."""
        if self.faces is None:
            raise ValueError("SurfacePoints: call obs.bind(model.faces, model.mean) first")
        return points_to_surface(self.points, vertices, self.faces)

    def residuals(self, vertices):
        return self.distances(vertices) / self.sigma

    def log_likelihood(self, vertices, sigma=None):
        s = self.sigma if sigma is None else sigma
        return log_density(self.distances(vertices), s, self.df)

    def pointwise_log_likelihood(self, vertices, sigma=None):
        """One term per point."""
        s = self.sigma if sigma is None else sigma
        return log_density_terms(self.distances(vertices), s, self.df)

    def whitened_residuals(self, vertices, sigma=None):
        s = self.sigma if sigma is None else sigma
        return fisher_scale(self.df) * self.distances(vertices) / s

    def log_sigma_information(self) -> float:
        return _log_sigma_info(self.n_data, self.df)

    def check_units(self, model_mean) -> None:
        obs_span, extent = span(self.points), span(model_mean)
        if obs_span > 5.0 * extent:
            raise ValueError(
                f"SurfacePoints: the observed points span {obs_span:.4g} mm but the whole model spans "
                f"{extent:.4g} mm; check the units (mm expected)"
            )

    @property
    def n_data(self) -> int:
        return self.points.shape[0]
