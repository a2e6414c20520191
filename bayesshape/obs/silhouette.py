"""A segmentation mask observed pixel by pixel: the probit silhouette likelihood."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr
from jaxtyping import Array, Bool, Float

from ..projection.render import drr_footprint, render_drr_flagged
from ..projection.topology import Topology
from ..projection.views import XRayView
from .base import Observation, PoseAnchor, check_outline_units, check_visible, replace_view
from .contour import (
    Contour,
    _edge_count,
    candidate_edges,
    checked_view_sigma_weight,
    edge_capacity,
    mask_contour_points,
    nearest_edge_distance,
)

__all__ = ["Silhouette", "boundary_band"]


def boundary_band(mask, band: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """The pixels of a binary mask within ``band`` px of a pixel of the other label.

    Returns ``(pixels (n_px, 2) (row, col), inside (n_px,) bool)``. The image border is not
    a boundary (the object may continue outside the detector).
    """
    from scipy.ndimage import distance_transform_edt

    m = np.asarray(mask, dtype=bool)
    d_in = distance_transform_edt(m)  # inside pixels: distance to the nearest outside pixel centre
    d_out = distance_transform_edt(~m)  # outside pixels: distance to the nearest inside pixel centre
    sel = np.where(m, d_in, d_out) <= float(band)
    r, c = np.nonzero(sel)
    return np.stack([r, c], axis=1).astype(np.float64), m[r, c]


def _fisher(u):
    """Fisher information about ``u`` of one probit label ``P(inside) = Phi(u)``: ``phi^2 / (Phi (1 - Phi))``,
    computed from log-probabilities (finite for any ``u``)."""
    log_phi = -0.5 * u * u - 0.5 * math.log(2 * math.pi)
    return jnp.exp(2 * log_phi - log_ndtr(u) - log_ndtr(-u))


class Silhouette(Observation):
    """A binary segmentation mask in one view, each pixel near its boundary a datum.

    Likelihood (a probit model of the mask): pixel ``p`` is labelled inside with probability
    ``Phi(s_p / sigma)``, independently, where ``s_p`` is the signed distance (px) from the
    pixel centre to the model's projected silhouette outline, positive inside. Equivalently
    the outline is observed with Gaussian error of sd ``sigma`` px at every pixel centre.
    ``log L = weight * sum_p log Phi(y_p s_p / sigma)``, ``y_p = +1`` inside, ``-1`` outside,
    over the pixels within ``band`` px of the mask's boundary.

    Unlike :class:`Contour` (points on the mask's outline, each a Gaussian datum), this is the
    likelihood of the mask itself: it knows that a boundary between two pixels only says that
    the outline passes between their centres, so it does not read the half-pixel steps of a
    rasterised outline as shape.

    * ``|s_p|``: the distance to the nearest projected contour-generator edge
      (:func:`~bayesshape.obs.contour.candidate_edges`, with the same smooth weights and
      penalties as :class:`Contour`, so the likelihood has no jumps when an edge enters);
    * the sign: whether the ray through the pixel centre meets the mesh (its rendered path
      length is positive, the rule that rasterises the masks of :func:`bayesshape.simulate_xray`).

    Pixels farther than ``band`` from the boundary are left out: their labels are certain for any
    shape whose outline stays within the band, so they carry no information near the posterior;
    a shape with a part far outside the band (a poor start) is pulled back only through the band.
    Inside the silhouette, an interior fold of the contour generator (an occluding contour inside
    the outline) counts as outline: pixels labelled inside within ``sigma`` of a fold lose up to
    ``log 2`` each.

    Call :meth:`bind` with the model's faces before evaluating (``infer`` does).

    Args:
        view: the :class:`XRayView`.
        mask: ``(H, W)`` boolean segmentation matching the view's detector.
        sigma: sd (px) of the outline's error at a pixel centre; 0.5 px by default, the
            half-pixel of a careful segmentation. A noise-free rasterised mask has none: on
            such masks of in-model shapes, sigma 0.5 gave conservative vertex balls (74/89/94/97%
            at 50/80/90/95%) and 0.3 less so (68/87/92/95%; docs/experiments.md).
        band: pixels within this distance (px) of a pixel of the other label are used.
        weight: a likelihood weight in (0, 1] (tempering; default 1).
        ignore: optional ``(H, W)`` boolean: pixels outside the mask whose label is unknown (in a
            label image, those of another object, which may hide this one); they are left out.

    Example:
        >>> sim = bs.simulate_xray(shape, bs.biplanar(detector_shape=(128, 128)), seed=0)  # doctest: +SKIP
        >>> obs = [bs.obs.Silhouette(v, m, sigma=0.5) for v, m in zip(sim.views, sim.masks)]  # doctest: +SKIP
        >>> post = bs.infer(model, obs, method="laplace", pose="rigid")                  # doctest: +SKIP
    """

    renders_mesh = True

    view: XRayView
    mask: Bool[Array, "H W"]
    outline: Float[Array, "n_out 2"]
    pixels: Float[Array, "n_px 2"]
    labels: Float[Array, " n_px"]
    sigma: Float[Array, ""]
    weight: Float[Array, ""]
    topology: Topology | None
    capacity: int = eqx.field(static=True)
    footprint: int = eqx.field(static=True)
    band: float = eqx.field(static=True)

    def __init__(
        self,
        view: XRayView,
        mask,
        sigma: float = 0.5,
        *,
        band: float = 2.0,
        weight: float = 1.0,
        ignore=None,
        topology: Topology | None = None,
        capacity: int = 0,
        footprint: int = 0,
        _arrays=None,
    ):
        self.view, self.sigma, self.weight = checked_view_sigma_weight(view, sigma, weight)
        self.topology = topology
        self.capacity = int(capacity)
        self.footprint = int(footprint)
        band = float(band)
        if not (math.isfinite(band) and band >= 1.0):
            raise ValueError(
                f"band: expected a distance of at least 1 px (the pixels next to the boundary), got {band}"
            )
        self.band = band
        if _arrays is not None:  # internal copy (bind, with_weight)
            self.mask, self.outline, self.pixels, self.labels = _arrays
            return
        view.check()
        h, w = view.detector_shape
        arr = np.asarray(mask)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise ValueError(
                f"mask: {int(np.sum(~np.isfinite(arr)))} pixels are NaN or infinite; expected a boolean (or 0/1) mask"
            )
        if arr.shape != (h, w) or not (arr.dtype == bool or np.isin(arr, (0, 1)).all()):
            raise ValueError(
                f"mask: expected a boolean (or 0/1) mask of the view's detector shape {(h, w)}, "
                f"got shape {arr.shape} and dtype {arr.dtype}"
            )
        m = arr.astype(bool)
        if not m.any():
            raise ValueError("mask: the segmentation mask is empty; the shape is not visible in this view")
        if m.all():
            raise ValueError("mask: the mask covers the whole image; there is no silhouette boundary to fit")
        self.mask = jnp.asarray(m)
        self.outline = jnp.asarray(mask_contour_points(m))
        pix, inside = boundary_band(m, band)
        if ignore is not None:
            ign = np.asarray(ignore)
            if ign.shape != (h, w) or not (ign.dtype == bool or np.isin(ign, (0, 1)).all()):
                raise ValueError(
                    f"ignore: expected a boolean (or 0/1) array of the view's detector shape {(h, w)}, "
                    f"got shape {ign.shape} and dtype {ign.dtype}"
                )
            ign = ign.astype(bool)
            if (ign & m).any():
                raise ValueError(
                    f"ignore: {int((ign & m).sum())} ignored pixels lie inside the mask; only pixels outside it "
                    "can be unknown (e.g. those of another object that may hide this one)"
                )
            keep = ~ign[pix[:, 0].astype(int), pix[:, 1].astype(int)]
            pix, inside = pix[keep], inside[keep]
        self.pixels = jnp.asarray(pix)
        self.labels = jnp.asarray(np.where(inside, 1.0, -1.0))

    def bind(self, faces, reference_vertices) -> Silhouette:
        """Attach the mesh topology, a static capacity for contour edges (as :meth:`Contour.bind`)
        and a static render window (:func:`~bayesshape.projection.drr_footprint` over any pose of
        the reference shapes, with 50% head room)."""
        if faces is None:
            raise ValueError("Silhouette needs a mesh model (faces); this model is a point set")
        check_visible(self.view, reference_vertices, "Silhouette")
        topo = Topology.from_faces(faces, np.shape(reference_vertices)[-2])
        refs = np.asarray(reference_vertices, dtype=np.float64).reshape(-1, *np.shape(reference_vertices)[-2:])
        fp = max(drr_footprint(v, np.asarray(faces), self.view, margin=0.5, any_pose=True) for v in refs)
        return Silhouette(
            self.view,
            None,
            float(self.sigma),
            band=self.band,
            weight=float(self.weight),
            topology=topo,
            capacity=edge_capacity(topo, self.view, refs),
            footprint=fp,
            _arrays=(self.mask, self.outline, self.pixels, self.labels),
        )

    def with_weight(self, weight: float) -> Silhouette:
        """A copy whose log-likelihood is multiplied by ``weight``."""
        _, _, w = checked_view_sigma_weight(self.view, float(self.sigma), weight)
        return eqx.tree_at(lambda o: o.weight, self, w)

    def overflow(self, vertices) -> bool:
        """True when the shape has more contour edges in this view than the capacity (the extra
        edges are ignored by the signed distance)."""
        return bool(_edge_count(self, vertices) > self.capacity)

    @property
    def image_view(self) -> XRayView:
        return self.view

    def with_view(self, view: XRayView):
        return replace_view(self, view)

    def check_units(self, model_mean) -> None:
        check_outline_units("Silhouette", self.pixels, self.view, model_mean)

    def pose_anchor(self, model_mean, centroid) -> PoseAnchor:
        """The model's centroid onto the centroid of the mask."""
        q = np.argwhere(np.asarray(self.mask)).mean(0)
        return PoseAnchor(np.asarray(centroid)[None], view=self.view, pixels=q[None])

    def warm_start(self) -> Contour:
        """The chamfer :class:`Contour` of the same mask (sigma at least 0.5 px), whose model-to-image
        term reaches any distance: :func:`bayesshape.infer` fits the MAP with it first. The band
        alone can trap the fit in a local optimum (docs/likelihoods.md, *Capture range*)."""
        return Contour(self.view, np.asarray(self.mask), max(float(self.sigma), 0.5))

    def signed_distance(self, vertices: Float[Array, "n_vert 3"]) -> tuple[Float[Array, " n_px"], Array]:
        """``(s (n_px,), ok)``: the signed distance (px, positive inside) of every band pixel's centre
        to the projected outline, and whether the shape could be rendered (False: a triangle beyond
        the static footprint, a vertex behind the source, or no contour at all in this view)."""
        if self.topology is None:
            raise ValueError("Silhouette: call obs.bind(model.faces, model.mean) before evaluating the likelihood")
        a, b, wgt, ramp, valid, count = candidate_edges(vertices, self.topology, self.view, self.capacity)
        d = nearest_edge_distance(self.pixels, (a, b, wgt, ramp, valid), self.view.detector_shape)
        # which side: the coverage of the pixel centre, a step of the shape (no gradient; s is
        # continuous across it because the outline passes through the centre there, d = 0)
        img, too_big, behind = render_drr_flagged(
            jax.lax.stop_gradient(vertices), self.topology.faces, self.view, footprint=self.footprint
        )
        r = self.pixels[:, 0].astype(jnp.int32)
        c = self.pixels[:, 1].astype(jnp.int32)
        covered = img[r, c] > 0
        s = jnp.where(covered, d, -d)
        return s, (count > 0) & ~too_big & ~behind

    def log_likelihood(self, vertices, sigma=None):
        sg = self.sigma if sigma is None else sigma
        s, ok = self.signed_distance(vertices)
        ll = jnp.sum(log_ndtr(self.labels * s / sg))
        return jnp.where(ok, self.weight * ll, -jnp.inf)

    def pointwise_log_likelihood(self, vertices, sigma=None):
        """One term per pixel of the band around the outline."""
        sg = self.sigma if sigma is None else sigma
        s, ok = self.signed_distance(vertices)
        return jnp.where(ok, self.weight * log_ndtr(self.labels * s / sg), -jnp.inf)

    def residuals(self, vertices):
        """Distances (px) from the mask's outline points (:func:`~bayesshape.obs.mask_contour_points`,
        midpoints between inside and outside neighbours) to the model's projected outline, over
        ``sqrt(sigma^2 + 1/12)``: the outline's error at a pixel centre plus the half-pixel quantisation of
        a midpoint. Their mean square is the misfit of the reliability check, on the scale of
        :class:`Contour`'s: 0.13 to 0.33 for noise-free masks of in-model truths at ``sigma = 0.5``, 0.75 to
        0.98 for masks drawn from the probit model with sd 0.5 px, large for a shape the model cannot
        explain. (Residuals of the labels themselves would be diluted by the band's many certain pixels.)"""
        if self.topology is None:
            raise ValueError("Silhouette: call obs.bind(model.faces, model.mean) before evaluating the likelihood")
        edges = candidate_edges(vertices, self.topology, self.view, self.capacity)
        d = nearest_edge_distance(self.outline, edges[:5], self.view.detector_shape)
        r = d / jnp.sqrt(self.sigma**2 + 1.0 / 12.0)
        return eqx.error_if(r, edges[5] == 0, "Silhouette: the shape has no contour in this view")

    def whitened_residuals(self, vertices, sigma=None):
        """``sqrt(weight * F_p) * s_p / sigma`` with ``F_p`` the Fisher information of pixel ``p``'s label
        about ``s_p / sigma`` (held fixed): their Jacobian gives the expected (Fisher) information of the
        mask about the shape. Not residuals of a Gaussian: the log-likelihood is not ``-|r|^2 / 2``."""
        sg = self.sigma if sigma is None else sigma
        s, _ = self.signed_distance(vertices)
        u = s / sg
        return jnp.sqrt(self.weight * jax.lax.stop_gradient(_fisher(u))) * u

    def log_sigma_information(self) -> float:
        """Fisher information about ``log(sigma)``, for pixel centres spread evenly across the outline
        (``n_px / (2 band)`` of them per px of outline): ``n_px * sigma * I / (2 band)`` with
        ``I = int u^2 F(u) du`` (about 2.2)."""
        return float(self.weight) * _LOG_SIGMA_INFO * self.n_data * float(self.sigma) / (2.0 * self.band)

    @property
    def n_data(self) -> int:
        return self.pixels.shape[0]


def _log_sigma_info_constant() -> float:
    from scipy.special import log_ndtr as log_ndtr_np

    u = np.linspace(-12.0, 12.0, 24001)
    f = np.exp(-u * u - math.log(2 * math.pi) - log_ndtr_np(u) - log_ndtr_np(-u))
    return float(np.sum(u * u * f) * (u[1] - u[0]))


_LOG_SIGMA_INFO = _log_sigma_info_constant()
