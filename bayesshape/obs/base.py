"""The interface every observation type implements."""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

__all__ = ["Observation", "PoseAnchor", "check_visible"]


def check_visible(view, reference_vertices, what: str) -> None:
    """Raise ``ValueError`` when no reference vertex projects inside the view's detector."""
    import jax.numpy as jnp

    refs = np.asarray(reference_vertices, dtype=np.float64).reshape(-1, 3)
    view.check_in_front(refs, f"{what}: the model's shapes")
    px = np.asarray(view.project(jnp.asarray(refs)))
    h, w = view.detector_shape
    ok = np.isfinite(px).all(1) & (px[:, 0] >= 0) & (px[:, 0] <= h - 1) & (px[:, 1] >= 0) & (px[:, 1] <= w - 1)
    if not ok.any():
        raise ValueError(
            f"{what}: the model's shape does not project into this view's {h} x {w} detector; "
            "check the view geometry, the pose and the units (mm)"
        )


class PoseAnchor(NamedTuple):
    """Where an observation says the model should sit, for the initial pose.

    Either 3D correspondences (``model_points`` ``(L, 3)`` on the model mean onto
    ``world_points`` ``(L, 3)``, mm; a similarity fit needs ``L >= 3``), or a 2D one (``view``,
    ``model_points`` ``(1, 3)`` a model point, ``pixels`` ``(1, 2)`` where it is seen in that view).
    """

    model_points: np.ndarray
    world_points: np.ndarray | None = None
    view: object | None = None
    pixels: np.ndarray | None = None


class Observation(eqx.Module):
    """Base class of every observation: data, its view (if any) and its noise model.

    :func:`bayesshape.infer` uses an observation only through the methods below, so a
    user-written subclass gets the same initial pose, unit check, composite weights and
    overflow warning as the built-in ones.

    Must implement:

    * ``log_likelihood(vertices, sigma=None) -> scalar``: jit- and grad-safe, vertices
      ``(n_vert, 3)`` mm; ``sigma`` overrides the stored noise sd (inferred noise scales);
    * ``residuals(vertices) -> (n,)``: the standardised residuals (residual / sigma) the
      likelihood is built from, for posterior-predictive checks;
    * ``n_data``: the number of scalar data the likelihood counts.

    May implement (the defaults say what happens without them):

    * ``bind(faces, reference_vertices) -> Observation``: a copy prepared for one model's mesh
      (topology, static buffer sizes sized on the ``(R, n_vert, 3)`` reference shapes). Default:
      itself (no mesh needed).
    * ``overflow(vertices) -> bool``: whether a shape needs more than a static buffer that
      ``bind`` sized (then part of the data is ignored; ``infer`` warns when the posterior
      mean overflows). Default: never.
    * ``whitened_residuals(vertices, sigma=None)`` and ``log_sigma_information()``: the
      Gauss-Newton form of the likelihood, for the Laplace approximation (without it, a
      finite-difference Hessian).
    * ``correlated_residuals`` (class flag) and ``with_weight(w)``: observations whose
      neighbouring residuals are correlated get a composite-likelihood weight at the MAP
      (:class:`~bayesshape.LikelihoodOptions`); they implement ``with_weight`` and
      ``residual_vectors``.
    * ``sampling_caveat()``: a reason NUTS may struggle with this likelihood (warned when the
      method is NUTS). Default: None.
    * ``image_view`` and ``with_view(view)``: the view an image observation belongs to, and a copy
      attributed to another view; ``infer`` uses them to test whether outlines that fit badly fit
      when their views are swapped. Default: no view.
    * ``check_units(model_mean)``: raise ``ValueError`` when the data and the model cannot
      share units (mm). Default: no check.
    * ``pose_anchor(model_mean, centroid) -> PoseAnchor | None``: where the data put the model,
      for the initial pose. Default: None (no hint).
    * ``warm_start() -> Observation | None``: a stand-in with a wider capture range for the
      first MAP fit. Default: None.

    ``renders_mesh`` is True for observations computed from a rendering of the whole
    surface (contours, DRRs): :func:`bayesshape.infer` may give them a coarse copy of the
    mesh (:class:`~bayesshape.LikelihoodOptions` ``coarse_faces``); the others always see the
    model's own vertices.
    """

    renders_mesh: ClassVar[bool] = False
    correlated_residuals: ClassVar[bool] = False

    def log_likelihood(self, vertices: Float[Array, "n_vert 3"], sigma=None) -> Float[Array, ""]:
        """Log-likelihood; ``sigma`` overrides the stored noise sd (for inferred noise scales)."""
        raise NotImplementedError(f"{type(self).__name__} must implement log_likelihood")

    def pointwise_log_likelihood(self, vertices: Float[Array, "n_vert 3"], sigma=None) -> Float[Array, " n"]:
        """The log-likelihood as a sum of terms, one per datum (a landmark, a contour point, a
        pixel), for leave-one-out cross-validation (``arviz.loo``); they sum to
        :meth:`log_likelihood`. Default: one term, the whole observation."""
        return self.log_likelihood(vertices, sigma)[None]

    def residuals(self, vertices: Float[Array, "n_vert 3"]) -> Float[Array, " n"]:
        """Standardised residuals (residual / sigma) of the data at ``vertices``."""
        raise NotImplementedError(f"{type(self).__name__} must implement residuals")

    def whitened_residuals(self, vertices: Float[Array, "n_vert 3"], sigma=None) -> Float[Array, " n"]:
        """Residuals ``r`` whose Jacobian ``J`` with respect to the vertices gives the Fisher
        information ``J^T J`` about the shape; for Gaussian noise
        ``log_likelihood = -|r|^2 / 2 + (terms free of the vertices)``."""
        raise NotImplementedError(f"{type(self).__name__} has no Gauss-Newton form")

    @classmethod
    def has_gauss_newton(cls) -> bool:
        """Whether this observation type implements :meth:`whitened_residuals`."""
        return cls.whitened_residuals is not Observation.whitened_residuals

    def log_sigma_information(self) -> float:
        """Fisher information about ``log(sigma)``; Gaussian noise: ``2 n_data``."""
        return 2.0 * self.n_data

    def bind(self, faces, reference_vertices) -> Observation:
        """A copy prepared for a model's mesh (``faces`` may be None for a point set)."""
        return self

    def overflow(self, vertices) -> bool:
        """True when ``vertices`` need more than the static buffer :meth:`bind` sized (part of the
        data is then ignored)."""
        return False

    def with_weight(self, weight: float) -> Observation:
        """A copy whose log-likelihood is multiplied by ``weight`` in (0, 1]."""
        raise NotImplementedError(f"{type(self).__name__} takes no composite-likelihood weight")

    def sampling_caveat(self) -> str | None:
        """Why gradient-based samplers (NUTS) may struggle with this likelihood, or None (the default);
        :func:`bayesshape.infer` warns with it when the method is NUTS."""
        return None

    @property
    def image_view(self):
        """The :class:`~bayesshape.XRayView` whose image these data come from, or None."""
        return None

    def with_view(self, view) -> Observation:
        """The same data attributed to another view of the same detector shape (to test a pairing)."""
        raise NotImplementedError(f"{type(self).__name__} is not tied to a view")

    def check_units(self, model_mean: np.ndarray) -> None:
        """Raise ``ValueError`` when these data and the ``(n_vert, 3)`` model mean (mm) disagree
        in scale by more than 5x (a model or data in the wrong units)."""
        return None

    def pose_anchor(self, model_mean: np.ndarray, centroid: np.ndarray) -> PoseAnchor | None:
        """Where the data put the model (for the initial pose), or None."""
        return None

    def warm_start(self) -> Observation | None:
        """An observation of the same data with a wider capture range, or None (the default).

        :func:`bayesshape.infer` first fits the MAP with these stand-ins, then with the
        observations themselves from there: a likelihood that only sees near its data
        (:class:`~bayesshape.obs.Silhouette`'s band of pixels) starts in the right basin.
        """
        return None

    @property
    def n_data(self) -> int:
        """Number of scalar data the likelihood counts."""
        raise NotImplementedError(f"{type(self).__name__} must implement n_data")


def span(points) -> float:
    """Largest coordinate extent of a point set."""
    return float(np.ptp(np.asarray(points, dtype=np.float64).reshape(-1, np.shape(points)[-1]), axis=0).max())


def check_ratio(obs_span: float, mod_span: float, message) -> None:
    """``ValueError(message(ratio))`` when observed and model extents differ by more than 5x."""
    ratio = obs_span / max(mod_span, 1e-12)
    if not 0.2 < ratio < 5.0:
        raise ValueError(message(ratio))


def replace_view(o: Observation, view) -> Observation:
    """``o`` attributed to another view of the same detector shape (``with_view`` of image observations)."""
    from ..projection.views import XRayView

    if not isinstance(view, XRayView) or view.detector_shape != o.image_view.detector_shape:
        raise ValueError(f"view: expected an XRayView of detector shape {o.image_view.detector_shape}")
    return eqx.tree_at(lambda x: x.view, o, view)


def check_outline_units(name: str, observed_pixels, view, model_mean) -> None:
    """``ValueError`` when an observed outline and the model mean's projection differ in extent by
    more than 5x (the model's units, or the view's pixel spacing, are wrong)."""
    import jax.numpy as jnp

    obs_span, mod_span = span(observed_pixels), span(view.project(jnp.asarray(model_mean)))
    check_ratio(
        obs_span,
        mod_span,
        lambda r: (
            f"{name}: the observed contour spans {obs_span:.1f} px but the model's mean shape projects to "
            f"{mod_span:.1f} px in that view (ratio {r:.3g}); check the units of the model (mm) and the "
            "view's pixel spacing (mm per pixel)"
        ),
    )
