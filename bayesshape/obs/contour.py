"""Silhouette contours observed in an X-ray."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates
from jaxtyping import Array, Float

from .._checks import as_points, as_positive
from ..projection.render import contour_weights
from ..projection.topology import Topology
from ..projection.views import XRayView
from ._noise import gaussian_log_density
from .base import Observation, PoseAnchor, check_outline_units, check_visible, replace_view

__all__ = ["Contour", "mask_contour_points", "composite_weights"]

#: edges with a smaller contour weight are left out of the likelihood
_MIN_WEIGHT = 0.02
#: pixels added to the distance to an edge per unit of missing contour weight
_PENALTY = 10.0
#: an edge entering the candidate set starts this many times (H + W) pixels away
_ENTRY = 4.0


def mask_contour_points(mask) -> np.ndarray:
    """Sub-pixel contour of a binary mask: the midpoints between every pair of
    4-neighbouring pixels of which one is inside and one outside, ``(M, 2)``
    ``(row, col)``. Edges along the image border are not contour (the object may
    continue outside the detector)."""
    m = np.asarray(mask, dtype=bool)
    pts = []
    dv = m[1:, :] != m[:-1, :]
    r, c = np.nonzero(dv)
    pts.append(np.stack([r + 0.5, c], axis=1))
    dh = m[:, 1:] != m[:, :-1]
    r, c = np.nonzero(dh)
    pts.append(np.stack([r, c + 0.5], axis=1))
    return np.concatenate(pts, axis=0).astype(np.float64)


def _distance_image(points, shape):
    from scipy.spatial import cKDTree

    h, w = shape
    grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), axis=-1).reshape(-1, 2)
    d, _ = cKDTree(points).query(grid)
    return d.reshape(h, w)


def _sample(img, pts):
    """Bilinear interpolation of ``img`` at ``(row, col)`` points; outside the image,
    the border value plus the distance to the border."""
    h, w = img.shape
    r = jnp.clip(pts[:, 0], 0.0, h - 1.0)
    c = jnp.clip(pts[:, 1], 0.0, w - 1.0)
    inner = map_coordinates(img, [r, c], order=1, mode="nearest")
    out2 = (pts[:, 0] - r) ** 2 + (pts[:, 1] - c) ** 2
    out = jnp.where(out2 > 0, jnp.sqrt(jnp.where(out2 > 0, out2, 1.0)), 0.0)
    return inner + out


def _segment_components(q, a, b):
    """Row and column components of the vectors from the nearest point of segments ``a -> b`` to points
    ``q``, all ``(..., 2)`` (broadcast). Computed on separate row and column arrays: on the CPU, XLA
    vectorises these elementwise ops over the broadcast axes, where a trailing axis of 2 costs it ~30x."""
    qy, qx, ay, ax = q[..., 0], q[..., 1], a[..., 0], a[..., 1]
    dy, dx = b[..., 0] - ay, b[..., 1] - ax
    dd = dy * dy + dx * dx
    t = jnp.clip(((qy - ay) * dy + (qx - ax) * dx) / jnp.where(dd > 0, dd, 1.0), 0.0, 1.0)
    return qy - (ay + t * dy), qx - (ax + t * dx)


def _segment_vectors(q, a, b):
    """Vectors from the nearest point of segments ``a -> b`` to points ``q``, all ``(..., 2)`` (broadcast)."""
    return jnp.stack(_segment_components(q, a, b), axis=-1)


def _point_segment_vectors(q, a, b):
    """Vectors ``(M, E, 2)`` from the nearest point of each segment ``a -> b (E, 2)`` to each point ``q (M, 2)``."""
    return _segment_vectors(q[:, None, :], a[None], b[None])


def _segment_distance(q, a, b):
    """Distances from points ``q`` to segments ``a -> b``, all ``(..., 2)`` (broadcast), smoothed at 0."""
    ry, rx = _segment_components(q, a, b)
    return jnp.sqrt(ry * ry + rx * rx + 1e-12)


def _point_segment_distance(q, a, b):
    """Distances ``(M, E)`` from points ``q (M, 2)`` to segments ``a -> b (E, 2)``."""
    return _segment_distance(q[:, None, :], a[None], b[None])


def checked_view_sigma_weight(view, sigma, weight):
    """``(view, sigma, weight)`` of an image observation, checked: an :class:`XRayView`, a positive
    ``sigma`` (pixels) and a likelihood weight in (0, 1] (the last two as scalar arrays)."""
    if not isinstance(view, XRayView):
        raise ValueError(f"view: expected an XRayView, got {type(view).__name__}")
    weight = float(weight)
    if not (0.0 < weight <= 1.0):
        raise ValueError(f"weight: expected a likelihood weight in (0, 1], got {weight}")
    return view, jnp.asarray(as_positive(sigma, "sigma (pixels)")), jnp.asarray(weight)


def candidate_edges(vertices, topology: Topology, view: XRayView, capacity: int):
    """The projected mesh edges that may be on the occluding contour, padded to a static ``capacity``.

    Returns ``(a, b, wgt, ramp, valid, count)``: end points ``(capacity, 2)`` ``(row, col)`` px, contour
    weights (:func:`~bayesshape.projection.contour_weights`, 0 for padding), the entry ramp from 0 at
    the cut-off ``_MIN_WEIGHT`` to 1 at twice it, the padding mask and the number of candidates.
    An edge enters the candidate set with nothing: its share of the contour ramps up from 0 and its
    distance to an image point comes down from beyond any distance on the detector, so that neither
    jumps when the set of candidate edges changes.
    """
    w_all, seg = contour_weights(vertices, topology, view)
    cand = w_all > _MIN_WEIGHT
    count = jnp.sum(cand)
    idx = jnp.nonzero(cand, size=capacity, fill_value=0)[0]
    valid = jnp.arange(capacity) < count
    s = seg[idx]
    wgt = jnp.where(valid, w_all[idx], 0.0)
    ramp = jnp.clip((wgt - _MIN_WEIGHT) / _MIN_WEIGHT, 0.0, 1.0)
    return s[:, 0], s[:, 1], wgt, ramp, valid, count


def nearest_edge_distance(points, edges, detector_shape) -> Float[Array, " n_pt"]:
    """Distance (px) from each point ``(M, 2)`` to the nearest candidate edge of :func:`candidate_edges`,
    plus ``_PENALTY * max(0, 1 - 2 w)`` for an edge of contour weight ``w`` (nothing for true contour
    edges, whose two faces turn opposite ways) and the entry distance of a just-entered edge; 0 when
    there is no candidate. Every point is compared with every candidate edge: ``M x capacity``
    distances, without derivatives; then only the distance to the nearest edge is differentiated."""
    a, b, wgt, ramp, valid = edges
    extra = _PENALTY * jnp.maximum(1.0 - 2.0 * wgt, 0.0) + _ENTRY * sum(detector_shape) * (1.0 - ramp)
    # the nearest edge is found without derivatives (the (M, capacity) distances are the cost), then the
    # distance to it alone is differentiated: the same value and gradient as the minimum's, a.e.
    sg = jax.lax.stop_gradient
    score = jnp.where(valid, sg(extra), jnp.inf)
    k = jnp.argmin(_point_segment_distance(points, sg(a), sg(b)) + score[None, :], axis=1)
    d = _segment_distance(points, a[k], b[k])
    return jnp.where(jnp.any(valid), d + extra[k], 0.0)


def edge_capacity(topology: Topology, view: XRayView, reference_vertices) -> int:
    """Static capacity for candidate contour edges: 1.5x the most seen on the reference shapes
    ``(n_vert, 3)`` or ``(n_ref, n_vert, 3)`` mm, plus 64, at most the number of edges."""
    refs = np.asarray(reference_vertices, dtype=np.float64).reshape(-1, *np.shape(reference_vertices)[-2:])
    most = 0
    for v in refs:
        w, _ = contour_weights(jnp.asarray(v), topology, view)
        most = max(most, int(np.asarray(w > _MIN_WEIGHT).sum()))
    return int(min(topology.n_edges, int(1.5 * most) + 64))


class Contour(Observation):
    """A silhouette outline in one view, from a segmentation mask or contour points.

    Likelihood: the symmetric chamfer between the observed contour and the projected
    occluding contour of the model (its contour-generator edges, weighted smoothly by
    :func:`~bayesshape.projection.contour_weights`, so that the likelihood has no jumps
    when an edge enters or leaves the contour):

    * image -> model: for each of ``M`` observed contour points, the distance (px)
      to the nearest projected model contour edge (plus ``10 px * max(0, 1 - 2 w)`` for
      an edge of contour weight ``w``: nothing for true contour edges, ``w >= 1/2``;
      an edge whose weight is just above the 0.02 cut-off starts far away and comes
      down within the next 0.02 of weight, so it never makes the minimum jump);
    * model -> image: for each model contour edge (midpoint, weighted by its
      projected length), the distance to the observed outline read from a
      precomputed distance image (bilinear interpolation), weighted by projected length
      times contour weight (ramped up from 0 at the cut-off, likewise). With
      ``fold_tolerant=True`` (default, masks only) this is the distance to the
      observed *region*, zero inside it, so contour-generator edges that fold
      inside the silhouette (interior occluding contours, invisible in a mask)
      are not penalised;
    * ``C = (mean_m d_m^2 + mean_e d_e^2) / 2``,
      ``log L = -M C / (2 sigma^2) - M log(sigma) - M/2 log(2 pi)``,

    i.e. ``M`` independent Gaussian perpendicular errors of sd ``sigma`` pixels.
    A view in which the model shows no contour at all has ``log L = -inf``
    (documented; no NaN).

    Call :meth:`bind` with the model's faces before evaluating (``infer`` does).

    Args:
        view: the :class:`XRayView`.
        mask_or_points: ``(H, W)`` boolean mask matching the view's detector, or
            ``(M, 2)`` contour points ``(row, col)``.
        sigma: contour noise sd, pixels.
        n_points: observed points used for the image -> model term (evenly thinned);
            they count as the ``M`` independent data of the likelihood.
        fold_tolerant: see above.
        weight: composite-likelihood weight in (0, 1], multiplies the log-likelihood
            (default 1; :func:`bayesshape.infer` estimates it with
            :func:`composite_weights`).
    """

    renders_mesh = True
    correlated_residuals = True

    view: XRayView
    points: Float[Array, "n_pt 2"]
    distance: Float[Array, "H W"]
    sigma: Float[Array, ""]
    topology: Topology | None
    weight: Float[Array, ""]
    capacity: int = eqx.field(static=True)

    def __init__(
        self,
        view: XRayView,
        mask_or_points,
        sigma: float = 1.0,
        *,
        n_points: int = 256,
        fold_tolerant: bool = True,
        weight: float = 1.0,
        topology: Topology | None = None,
        capacity: int = 0,
        _arrays=None,
    ):
        self.view, self.sigma, self.weight = checked_view_sigma_weight(view, sigma, weight)
        self.topology = topology
        self.capacity = int(capacity)
        if _arrays is not None:  # internal copy (bind)
            self.points, self.distance = _arrays
            return
        view.check()
        h, w = view.detector_shape
        arr = np.asarray(mask_or_points)
        if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
            raise ValueError(
                f"mask_or_points: {int(np.sum(~np.isfinite(arr)))} values are NaN or infinite; expected a boolean "
                f"(or 0/1) mask of the view's detector shape {(h, w)} or finite contour points (M, 2)"
            )
        if arr.ndim == 2 and arr.shape == (h, w) and (arr.dtype == bool or np.isin(arr, (0, 1)).all()):
            mask = arr.astype(bool)
            if not mask.any():
                raise ValueError("mask: the segmentation mask is empty; the shape is not visible in this view")
            if mask.all():
                raise ValueError("mask: the mask covers the whole image; there is no contour to fit")
            pts = mask_contour_points(mask)
            if fold_tolerant:
                from scipy.ndimage import distance_transform_edt

                dist = np.maximum(distance_transform_edt(~mask) - 0.5, 0.0)
            else:
                dist = _distance_image(pts, (h, w))
        elif arr.ndim == 2 and arr.shape[1] == 2 and arr.shape != (h, w):
            if (arr.dtype == bool or arr.dtype.kind in "iu") and np.isin(arr, (0, 1)).all():
                raise ValueError(
                    f"mask_or_points: a {arr.shape} array of 0s and 1s looks like a mask, but the view's detector is "
                    f"{h} x {w}; pass a mask of the detector's shape, or contour points as (row, col) pixel coordinates"
                )
            pts = as_points(arr, "points", dim=2)
            off = (pts[:, 0] < -1) | (pts[:, 0] > h) | (pts[:, 1] < -1) | (pts[:, 1] > w)
            if off.any():
                raise ValueError(
                    f"points: {int(off.sum())} of {len(pts)} contour points lie off the view's {h} x {w} detector "
                    f"(rows {pts[:, 0].min():.1f} to {pts[:, 0].max():.1f}, cols {pts[:, 1].min():.1f} to "
                    f"{pts[:, 1].max():.1f}); contour points are (row, col) pixel coordinates of this view"
                )
            dist = _distance_image(pts, (h, w))
        else:
            raise ValueError(
                f"mask_or_points: expected a boolean mask of the view's detector shape {(h, w)} or contour "
                f"points of shape (M, 2), got shape {arr.shape}"
            )
        n_points = int(n_points)
        if n_points < 1:
            raise ValueError(f"n_points: expected a positive count, got {n_points}")
        if pts.shape[0] > n_points:
            order = np.lexsort((pts[:, 1], pts[:, 0]))
            pts = pts[order][np.linspace(0, pts.shape[0] - 1, n_points).round().astype(int)]
        self.points = jnp.asarray(pts)
        self.distance = jnp.asarray(dist)

    def bind(self, faces, reference_vertices) -> Contour:
        """Attach the mesh topology and a static capacity for contour edges.

        The capacity is 1.5x the largest number of contour edges seen on the reference
        shapes plus 64 (at most the number of edges); the cost of the likelihood grows
        with it. A shape with more contour edges than that keeps the first ones only;
        :meth:`overflow` tells, and :func:`bayesshape.infer` warns when it happens at
        the posterior mean.
        """
        if faces is None:
            raise ValueError("Contour needs a mesh model (faces); this model is a point set")
        check_visible(self.view, reference_vertices, "Contour")
        topo = Topology.from_faces(faces, np.shape(reference_vertices)[-2])
        cap = edge_capacity(topo, self.view, reference_vertices)
        return Contour(
            self.view,
            None,
            float(self.sigma),
            weight=float(self.weight),
            topology=topo,
            capacity=cap,
            _arrays=(self.points, self.distance),
        )

    def with_weight(self, weight: float) -> Contour:
        """A copy whose log-likelihood is multiplied by ``weight`` (a composite-likelihood weight)."""
        _, _, w = checked_view_sigma_weight(self.view, float(self.sigma), weight)
        return eqx.tree_at(lambda o: o.weight, self, w)

    @property
    def image_view(self) -> XRayView:
        return self.view

    def with_view(self, view: XRayView):
        return replace_view(self, view)

    def check_units(self, model_mean) -> None:
        check_outline_units("Contour", self.points, self.view, model_mean)

    def pose_anchor(self, model_mean, centroid) -> PoseAnchor:
        """The model's centroid onto the centroid of the observed region (of the points, for a contour
        given as points)."""
        d = np.asarray(self.distance)
        inside = d <= 0
        if inside.any() and not inside.all():
            q = np.argwhere(inside).mean(0)
        else:
            q = np.asarray(self.points).mean(0)
        return PoseAnchor(np.asarray(centroid)[None], view=self.view, pixels=np.asarray(q)[None])

    def _terms(self, vertices):
        """``(d_img (M,), d_model (capacity,), frac (capacity,), count)``: the image -> model
        distances, the model -> image distances of the candidate contour edges and their
        share of the weighted contour length (``sum frac = 1``; 0 for padding)."""
        if self.topology is None:
            raise ValueError("Contour: call obs.bind(model.faces, model.mean) before evaluating the likelihood")
        a, b, wgt, ramp, valid, count = candidate_edges(vertices, self.topology, self.view, self.capacity)
        length = jnp.sqrt(jnp.sum((b - a) ** 2, axis=-1) + 1e-12) * wgt * ramp
        d_model = _sample(self.distance, 0.5 * (a + b))
        wsum = jnp.sum(length)
        frac = length / jnp.where(wsum > 0, wsum, 1.0)
        d_img = nearest_edge_distance(self.points, (a, b, wgt, ramp, valid), self.view.detector_shape)
        return d_img, d_model, frac, count

    def residual_vectors(self, vertices) -> Float[Array, "n_pt 2"]:
        """``(M, 2)`` pixel vectors from the nearest point of the model's projected contour (edges
        of contour weight >= 1/2) to each observed point; their direction carries the sign of
        the error, so neighbouring points with a common error (pixel quantisation of a mask,
        segmentation bias) give similar vectors."""
        if self.topology is None:
            raise ValueError("Contour: call obs.bind(model.faces, model.mean) before evaluating the likelihood")
        w_all, seg = contour_weights(vertices, self.topology, self.view)
        idx = jnp.nonzero(w_all > 0.5, size=self.capacity, fill_value=0)[0]
        valid = jnp.arange(self.capacity) < jnp.sum(w_all > 0.5)
        r = _point_segment_vectors(self.points, seg[idx, 0], seg[idx, 1])
        dist = jnp.where(valid[None, :], jnp.sum(r * r, axis=-1), jnp.inf)
        k = jnp.argmin(dist, axis=1)
        return jnp.take_along_axis(r, k[:, None, None], axis=1)[:, 0, :]

    def overflow(self, vertices) -> bool:
        """True when the shape has more contour edges in this view than the capacity."""
        return bool(_edge_count(self, vertices) > self.capacity)

    def residuals(self, vertices):
        """Standardised image -> model distances of the observed contour points."""
        d_img = self._terms(vertices)[0]
        return d_img / self.sigma

    def log_likelihood(self, vertices, sigma=None):
        s = self.sigma if sigma is None else sigma
        d_img, d_model, frac, count = self._terms(vertices)
        m = self.points.shape[0]
        c = 0.5 * (jnp.mean(d_img**2) + jnp.sum(frac * d_model**2))
        ll = gaussian_log_density(m * c, m, s)
        return jnp.where(count > 0, self.weight * ll, -jnp.inf)

    def pointwise_log_likelihood(self, vertices, sigma=None):
        """One term per observed contour point: its own image -> model distance, and an equal share
        of the model -> image term."""
        s = self.sigma if sigma is None else sigma
        d_img, d_model, frac, count = self._terms(vertices)
        shared = 0.5 * jnp.sum(frac * d_model**2)
        terms = -0.5 * (0.5 * d_img**2 + shared) / s**2 - jnp.log(s) - 0.5 * math.log(2 * math.pi)
        return jnp.where(count > 0, self.weight * terms, -jnp.inf)

    def whitened_residuals(self, vertices, sigma=None):
        """The ``M`` image -> model and ``capacity`` model -> image distances, scaled so that
        ``log_likelihood = -|r|^2 / 2 + const`` (weight included); the model edges' length
        shares are held fixed in the Jacobian (a Gauss-Newton approximation)."""
        s = self.sigma if sigma is None else sigma
        d_img, d_model, frac, _ = self._terms(vertices)
        m = self.points.shape[0]
        r_img = jnp.sqrt(0.5 * self.weight) * d_img / s
        r_model = jnp.sqrt(0.5 * m * self.weight * jax.lax.stop_gradient(frac)) * d_model / s
        return jnp.concatenate([r_img, r_model])

    def log_sigma_information(self) -> float:
        return 2.0 * float(self.weight) * self.n_data

    @property
    def n_data(self) -> int:
        return self.points.shape[0]


def composite_weights(contours, vertices, *, block_size: int = 16, seed: int = 0) -> list[float]:
    """Composite-likelihood weights, in (0, 1], for contour observations at a fitted shape.

    The contour likelihood counts its ``M`` observed points as independent; the errors of
    neighbouring points are not (a mask's contour is quantised to half pixels along runs
    of pixels; a segmentation errs smoothly), so the likelihood is too sharp and credible
    regions too small. At the fitted shape (the MAP), each contour's residual vectors
    (:meth:`Contour.residual_vectors`) are grouped into spatial blocks of about
    ``block_size`` points (k-means on the observed points). The variance inflation of the
    block means over independent errors, pooled over the contours,
    ``f = sum_b n_b |m_b - m|^2 / sum_c (B_c - 1) var_c``, and each contour's misfit
    ``s2 = mean |r|^2 / sigma^2`` give its weight ``1 / max(f * s2, 1)``: the magnitude
    adjustment of a composite likelihood (the sandwich variance of a mean of correlated
    errors, with the noise scale estimated at the fit). A weight never sharpens the
    nominal likelihood. With 16-point blocks and two 256-point contours, ``f`` has a
    sampling sd of about 25% for independent errors.

    Args:
        contours: bound :class:`Contour` observations.
        vertices: the shape each one sees, ``(n_vert, 3)`` mm (one array, or one per contour).
        block_size: block size (points).
        seed: the k-means seed.
    """
    from scipy.cluster.vq import kmeans2

    if not isinstance(vertices, (list, tuple)):
        vertices = [vertices] * len(contours)
    between, dof, s2 = 0.0, 0, []
    for k, (o, v) in enumerate(zip(contours, vertices)):
        r = np.asarray(_residual_vectors(o, v), dtype=np.float64)
        pts = np.asarray(o.points, dtype=np.float64)
        s2.append(float(np.mean(np.sum(r * r, axis=1))) / float(o.sigma) ** 2)
        m = pts.shape[0]
        if m < 2 * block_size:
            continue
        _, label = kmeans2(pts, m // int(block_size), seed=seed + k, minit="++")
        mean = r.mean(0)
        var = float(np.mean(np.sum((r - mean) ** 2, axis=1)))
        n_b = np.bincount(label)
        used = n_b > 0
        if var <= 0 or used.sum() < 2:
            continue
        sums = np.stack([np.bincount(label, weights=r[:, j]) for j in range(2)], axis=1)[used]
        m_b = sums / n_b[used, None]
        between += float(np.sum(n_b[used] * np.sum((m_b - mean) ** 2, axis=1))) / var
        dof += int(used.sum()) - 1
    f = between / dof if dof else 1.0
    return [float(1.0 / max(f * x, 1.0)) for x in s2]


# for concrete callers (the fit's weights, the overflow check): compiled once per contour shape
_residual_vectors = eqx.filter_jit(lambda o, v: o.residual_vectors(v))
_edge_count = eqx.filter_jit(lambda o, v: jnp.sum(contour_weights(v, o.topology, o.view)[0] > _MIN_WEIGHT))
