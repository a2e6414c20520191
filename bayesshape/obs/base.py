"""The interface every observation type implements."""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
from jaxtyping import Array, Float

__all__ = ["Observation", "check_visible"]


def check_visible(view, reference_vertices, what: str) -> None:
    """Raise ``ValueError`` when no reference vertex projects inside the view's detector."""
    import jax.numpy as jnp
    import numpy as np

    refs = np.asarray(reference_vertices, dtype=np.float64).reshape(-1, 3)
    px = np.asarray(view.project(jnp.asarray(refs)))
    h, w = view.detector_shape
    ok = np.isfinite(px).all(1) & (px[:, 0] >= 0) & (px[:, 0] <= h - 1) & (px[:, 1] >= 0) & (px[:, 1] <= w - 1)
    if not ok.any():
        raise ValueError(
            f"{what}: the model's shape does not project into this view's {h} x {w} detector; "
            "check the view geometry, the pose and the units (mm)"
        )


class Observation(eqx.Module):
    """Base class: data, its view (if any) and its noise model.

    Subclasses implement:

    * ``log_likelihood(vertices) -> scalar``: jit- and grad-safe, vertices ``(n_vert, 3)`` mm;
    * ``residuals(vertices) -> array``: the standardised residuals (residual / sigma)
      the likelihood is built from, for posterior-predictive checks;
    * ``bind(faces, reference_vertices)``: a copy prepared for one model's mesh
      (topology, static sizes); observations that need no mesh return themselves.

    and may implement, for the Gauss-Newton Laplace approximation
    (``infer(method="laplace")``; without them it falls back to a finite-difference Hessian):

    * ``whitened_residuals(vertices, sigma=None) -> array``: residuals ``r`` whose
      Jacobian ``J`` (with respect to the vertices) gives the Fisher information
      ``J^T J`` of the data about the shape; for Gaussian noise
      ``log_likelihood = -|r|^2 / 2 + (terms free of the vertices)``;
    * ``log_sigma_information() -> float``: the Fisher information about ``log(sigma)``
      (for inferred noise scales); ``2 n_data`` for Gaussian noise;
    * ``warm_start() -> Observation | None``: a stand-in with a wider capture range for the
      first MAP fit (default None).

    ``renders_mesh`` is True for observations computed from a rendering of the whole
    surface (contours, DRRs): :func:`bayesshape.infer` may give them a coarse copy of the
    mesh (``likelihood_faces``); the others always see the model's own vertices.
    """

    renders_mesh: ClassVar[bool] = False

    def log_likelihood(self, vertices: Float[Array, "n_vert 3"], sigma=None) -> Float[Array, ""]:
        """Log-likelihood; ``sigma`` overrides the stored noise sd (for inferred noise scales)."""
        raise NotImplementedError

    def residuals(self, vertices: Float[Array, "n_vert 3"]) -> Float[Array, " n"]:
        raise NotImplementedError

    def whitened_residuals(self, vertices: Float[Array, "n_vert 3"], sigma=None) -> Float[Array, " n"]:
        """Residuals whose Jacobian gives the Fisher information about the shape (see above)."""
        raise NotImplementedError

    def log_sigma_information(self) -> float:
        """Fisher information about ``log(sigma)``; Gaussian noise: ``2 n_data``."""
        return 2.0 * self.n_data

    def bind(self, faces, reference_vertices) -> Observation:
        return self

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
        raise NotImplementedError
