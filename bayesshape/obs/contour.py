"""Silhouette contours observed in an X-ray."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.ndimage import map_coordinates
from jaxtyping import Array, Float, Int

from .._checks import as_points, as_positive
from ..projection.render import contour_weights
from ..projection.topology import Topology
from ..projection.views import XRayView
from .base import Observation, check_visible

__all__ = ["Contour", "mask_contour_points", "mask_contour_runs", "composite_weights"]

#: edges with a smaller contour weight are left out of the likelihood
_MIN_WEIGHT = 0.02
#: pixels added to the distance to an edge per unit of missing contour weight
_PENALTY = 10.0
#: an edge entering the candidate set starts this many times (H + W) pixels away
_ENTRY = 4.0
#: variance (px^2) of the error a run of mask boundary pixels shares: the true boundary crosses
#: anywhere within the pixel, uniformly
_RUN_VAR = 1.0 / 12.0


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


def mask_contour_runs(mask) -> np.ndarray:
    """Run labels ``(M,)`` (int) of the points of :func:`mask_contour_points`, in the same order.

    A run is a straight stretch of the mask's boundary: points between the same two rows
    (or columns) of pixels, side by side, with the inside on the same side. Where the
    true outline crosses a run it may lie anywhere within the pixel, so all the points of
    a run share one quantisation error (sd ``1/sqrt(12)`` px), which independent point
    noise does not describe. :class:`Contour` (``pixel_runs``) discounts them accordingly.

    Example:
        >>> m = np.zeros((6, 8), bool); m[2:4, 1:6] = True
        >>> np.bincount(mask_contour_runs(m)).tolist()   # top, bottom, left, right
        [5, 5, 2, 2]
    """
    from scipy.ndimage import label

    m = np.asarray(mask, dtype=bool)
    labels, offset = [], 0
    for axis in (0, 1):
        a, b = (m[:-1, :], m[1:, :]) if axis == 0 else (m[:, :-1], m[:, 1:])
        edge = a != b
        # runs: neighbours along the edge (across columns for row transitions), same inside side
        structure = np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0]]) if axis == 0 else np.array([[0, 1, 0]] * 3)
        out = np.zeros(edge.shape, dtype=np.int64)
        for side in (a & ~b, ~a & b):
            lab, n = label(side, structure=structure)
            out[side] = lab[side] + offset - 1
            offset += n
        labels.append(out[np.nonzero(edge)])
    return np.concatenate(labels).astype(np.int64)


def _run_structure(points, runs):
    """For points with run labels: labels ``0..R-1`` (M,), the points per run (R,), and each point's
    quantisation axis (M, 2): across the run (the minor axis of its points' spread), where its
    shared error lies; zero for single points."""
    _, lab = np.unique(np.asarray(runs), return_inverse=True)
    lab = lab.reshape(-1)
    count = np.bincount(lab).astype(np.float64)
    mean = np.stack([np.bincount(lab, weights=points[:, j]) for j in range(2)], axis=1) / count[:, None]
    d = points - mean[lab]
    sxx, syy, sxy = (np.bincount(lab, weights=d[:, 0] ** 2), np.bincount(lab, weights=d[:, 1] ** 2),
                     np.bincount(lab, weights=d[:, 0] * d[:, 1]))
    major = 0.5 * np.arctan2(2.0 * sxy, sxx - syy)  # direction of the run's extent
    axis = np.stack([-np.sin(major), np.cos(major)], axis=1)  # across it
    axis = np.where((count > 1)[:, None], axis, 0.0)
    return lab, count, axis[lab]


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


def _point_segment_vectors(q, a, b):
    """Vectors ``(M, E, 2)`` from the nearest point of each segment ``a -> b (E, 2)`` to each point ``q (M, 2)``."""
    d = b - a
    dd = jnp.sum(d * d, axis=-1)
    t = jnp.sum((q[:, None, :] - a[None]) * d[None], axis=-1) / jnp.where(dd > 0, dd, 1.0)[None, :]
    t = jnp.clip(t, 0.0, 1.0)
    return q[:, None, :] - (a[None] + t[..., None] * d[None])


def _point_segment_distance(q, a, b):
    """Distances ``(M, E)`` from points ``q (M, 2)`` to segments ``a -> b (E, 2)``."""
    r = _point_segment_vectors(q, a, b)
    return jnp.sqrt(jnp.sum(r * r, axis=-1) + 1e-12)


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

    With ``pixel_runs`` the points of a run of mask boundary pixels
    (:func:`mask_contour_runs`), which share one quantisation error of variance
    ``q^2 = 1/12`` px^2 besides their independent noise, are weighted by
    ``w = 1 / (1 + n q^2 / sigma^2)`` for a run of ``n`` points: the run then carries the
    information of its mean, ``n / (sigma^2 + n q^2)``, not ``n / sigma^2``. ``d_m^2`` is
    weighted by its point's ``w``, ``d_e^2`` by the ``w`` of the observed point nearest to the
    edge, and ``M`` becomes ``sum w`` in the normalising terms.
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
        pixel_runs: account for the quantisation errors that runs of mask pixels share (see
            above): True, for a mask (its runs are found); ``(M,)`` integer run labels, for points
            (e.g. :func:`mask_contour_runs` on the mask they were traced from); None or False
            (default): independent points.
        weight: composite-likelihood weight in (0, 1], multiplies the log-likelihood
            (default 1; :func:`bayesshape.infer` estimates it with
            :func:`composite_weights`).
    """

    renders_mesh = True

    view: XRayView
    points: Float[Array, "n_pt 2"]
    distance: Float[Array, "H W"]
    sigma: Float[Array, ""]
    topology: Topology | None
    weight: Float[Array, ""]
    point_weight: Float[Array, "n_pt"]
    run_labels: Int[Array, "n_pt"]
    run_axis: Float[Array, "n_pt 2"]
    run_count: Float[Array, "n_run"]
    run_kappa: Float[Array, "n_run"]
    weight_image: Float[Array, "H W"]
    capacity: int = eqx.field(static=True)

    def __init__(self, view: XRayView, mask_or_points, sigma: float = 1.0, *, n_points: int = 256,
                 fold_tolerant: bool = True, pixel_runs=None, weight: float = 1.0,
                 topology: Topology | None = None, capacity: int = 0, _arrays=None):
        if not isinstance(view, XRayView):
            raise ValueError(f"view: expected an XRayView, got {type(view).__name__}")
        self.view = view
        self.sigma = jnp.asarray(as_positive(sigma, "sigma (pixels)"))
        weight = float(weight)
        if not (0.0 < weight <= 1.0):
            raise ValueError(f"weight: expected a composite-likelihood weight in (0, 1], got {weight}")
        self.weight = jnp.asarray(weight)
        self.topology = topology
        self.capacity = int(capacity)
        if _arrays is not None:  # internal copy (bind)
            (self.points, self.distance, self.point_weight, self.run_labels, self.run_axis, self.run_count,
             self.run_kappa, self.weight_image) = _arrays
            return
        view.check()
        h, w = view.detector_shape
        arr = np.asarray(mask_or_points)
        if arr.ndim == 2 and arr.shape == (h, w) and (arr.dtype == bool or np.isin(arr, (0, 1)).all()):
            mask = arr.astype(bool)
            if not mask.any():
                raise ValueError("mask: the segmentation mask is empty; the shape is not visible in this view")
            if mask.all():
                raise ValueError("mask: the mask covers the whole image; there is no contour to fit")
            pts = mask_contour_points(mask)
            if pixel_runs is True:
                runs = mask_contour_runs(mask)
            elif pixel_runs is None or pixel_runs is False:
                runs = None
            else:
                raise ValueError("pixel_runs: with a mask, expected True or False (the runs are found in the mask), "
                                 f"got {type(pixel_runs).__name__}")
            if fold_tolerant:
                from scipy.ndimage import distance_transform_edt

                dist = np.maximum(distance_transform_edt(~mask) - 0.5, 0.0)
            else:
                dist = _distance_image(pts, (h, w))
        elif arr.ndim == 2 and arr.shape[1] == 2 and arr.shape != (h, w):
            pts = as_points(arr, "points", dim=2)
            dist = _distance_image(pts, (h, w))
            if pixel_runs is None or pixel_runs is False:
                runs = None
            elif pixel_runs is True:
                raise ValueError("pixel_runs=True needs a mask; for points pass their (M,) run labels "
                                 "(mask_contour_runs on the mask they come from)")
            else:
                runs = np.asarray(pixel_runs)
                if runs.shape != (pts.shape[0],) or not np.issubdtype(runs.dtype, np.integer):
                    raise ValueError(f"pixel_runs: expected ({pts.shape[0]},) integer run labels, one per point, "
                                     f"got {runs.dtype} of shape {runs.shape}")
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
            keep = order[np.linspace(0, pts.shape[0] - 1, n_points).round().astype(int)]
            pts = pts[keep]
            runs = None if runs is None else runs[keep]
        self.points = jnp.asarray(pts)
        self.distance = jnp.asarray(dist)
        if runs is None:
            self.point_weight = jnp.ones(pts.shape[0])
            self.run_labels = jnp.arange(pts.shape[0])
            self.run_axis = jnp.zeros((pts.shape[0], 2))
            self.run_count = jnp.ones(pts.shape[0])
            self.run_kappa = jnp.zeros(pts.shape[0])
            self.weight_image = jnp.ones((h, w))
        else:
            lab, count, axis = _run_structure(pts, runs)
            n_q = count * _RUN_VAR / float(self.sigma) ** 2
            pw = 1.0 / (1.0 + n_q[lab])
            self.point_weight = jnp.asarray(pw)
            self.run_labels = jnp.asarray(lab)
            self.run_axis = jnp.asarray(axis)
            self.run_count = jnp.asarray(count)
            self.run_kappa = jnp.asarray(n_q / (1.0 + n_q))
            # each pixel: the weight of the nearest observed point (for the model -> image term)
            from scipy.spatial import cKDTree

            grid = np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), axis=-1).reshape(-1, 2)
            self.weight_image = jnp.asarray(pw[cKDTree(pts).query(grid)[1]].reshape(h, w))

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
        refs = np.asarray(reference_vertices, dtype=np.float64).reshape(-1, *np.shape(reference_vertices)[-2:])
        most = 0
        for v in refs:
            w, _ = contour_weights(jnp.asarray(v), topo, self.view)
            most = max(most, int(np.asarray(w > _MIN_WEIGHT).sum()))
        cap = int(min(topo.n_edges, int(1.5 * most) + 64))
        return Contour(self.view, None, float(self.sigma), weight=float(self.weight), topology=topo, capacity=cap,
                       _arrays=self._arrays())

    def _arrays(self):
        return (self.points, self.distance, self.point_weight, self.run_labels, self.run_axis, self.run_count,
                self.run_kappa, self.weight_image)

    def with_weight(self, weight: float) -> Contour:
        """A copy whose log-likelihood is multiplied by ``weight`` (a composite-likelihood weight)."""
        return Contour(self.view, None, float(self.sigma), weight=weight, topology=self.topology,
                       capacity=self.capacity, _arrays=self._arrays())

    def _terms(self, vertices):
        """``(d_img (M,), d_model (capacity,), frac (capacity,), count, w_model (capacity,), rho (M, 2))``:
        the image -> model distances, the model -> image distances of the candidate contour edges, their
        share of the weighted contour length (``sum frac = 1``; 0 for padding), their pixel-run weights
        (those of the nearest observed points; 1 without ``pixel_runs``), and the vectors from the
        nearest model edge to each observed point, scaled to length ``d_img``."""
        if self.topology is None:
            raise ValueError("Contour: call obs.bind(model.faces, model.mean) before evaluating the likelihood")
        w_all, seg = contour_weights(vertices, self.topology, self.view)
        cand = w_all > _MIN_WEIGHT
        count = jnp.sum(cand)
        idx = jnp.nonzero(cand, size=self.capacity, fill_value=0)[0]
        valid = jnp.arange(self.capacity) < count
        s = seg[idx]
        wgt = jnp.where(valid, w_all[idx], 0.0)
        # an edge enters the candidate set at weight _MIN_WEIGHT with nothing: its share of the
        # contour length ramps up from 0 (at _MIN_WEIGHT) to its full weight (at 2 _MIN_WEIGHT), and
        # its image -> model distance comes down from beyond any distance on the detector, so that
        # neither term jumps when the set of candidate edges changes
        ramp = jnp.clip((wgt - _MIN_WEIGHT) / _MIN_WEIGHT, 0.0, 1.0)
        a, b = s[:, 0], s[:, 1]
        length = jnp.sqrt(jnp.sum((b - a) ** 2, axis=-1) + 1e-12) * wgt * ramp
        mid = 0.5 * (a + b)
        d_model = _sample(self.distance, mid)
        h, w = self.view.detector_shape
        w_model = map_coordinates(self.weight_image, [jnp.clip(mid[:, 0], 0.0, h - 1.0),
                                                      jnp.clip(mid[:, 1], 0.0, w - 1.0)], order=1, mode="nearest")
        wsum = jnp.sum(length)
        frac = length / jnp.where(wsum > 0, wsum, 1.0)
        # no penalty for true contour edges (weight >= 1/2: the two faces' cosines differ in sign),
        # growing continuously to _PENALTY as both faces turn the same way
        entry = _ENTRY * sum(self.view.detector_shape) * (1.0 - ramp)
        vec = _point_segment_vectors(self.points, a, b)
        base = jnp.sqrt(jnp.sum(vec * vec, axis=-1) + 1e-12)
        dist = base + (_PENALTY * jnp.maximum(1.0 - 2.0 * wgt, 0.0) + entry)[None, :]
        dist = jnp.where(valid[None, :], dist, jnp.inf)
        k = jnp.argmin(dist, axis=1)
        d_img = jnp.take_along_axis(dist, k[:, None], axis=1)[:, 0]
        d_img = jnp.where(jnp.isfinite(d_img), d_img, 0.0)
        near = jnp.take_along_axis(vec, k[:, None, None], axis=1)[:, 0, :]
        rho = near * (d_img / jnp.take_along_axis(base, k[:, None], axis=1)[:, 0])[:, None]
        return d_img, d_model, frac, count, w_model, rho

    def _image_residuals(self, d_img, rho):
        """Residuals whose squares sum to the image -> model term ``Q``: ``sum d^2`` for independent
        points; with pixel runs, ``sum_b [sum_i s_i^2 - kappa_b n_b mean(s)^2] + sum_i t_i^2`` for runs
        of ``n_b > 1`` points (``s``, ``t``: the components of ``rho`` along and across the run's
        quantisation axis; ``kappa_b = n_b q^2 / (sigma^2 + n_b q^2)``, the Gaussian with the run's
        shared error integrated out) and ``(1 - kappa) d^2`` for single points."""
        lab = self.run_labels
        ax = self.run_axis
        along = jnp.sum(rho * ax, axis=-1)
        across = rho[:, 0] * -ax[:, 1] + rho[:, 1] * ax[:, 0]
        n_run = self.run_count.shape[0]
        mean = jax.ops.segment_sum(along, lab, num_segments=n_run) / self.run_count
        multi = self.run_count[lab] > 1
        kap = self.run_kappa
        per_point = jnp.concatenate([
            jnp.where(multi, across, 0.0),
            jnp.where(multi, along - mean[lab], 0.0),
            jnp.where(multi, 0.0, jnp.sqrt(1.0 - kap[lab]) * d_img),
        ])
        per_run = jnp.where(self.run_count > 1, jnp.sqrt((1.0 - kap) * self.run_count) * mean, 0.0)
        return jnp.concatenate([per_point, per_run])

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
        d_img, d_model, frac, count, w_model, rho = self._terms(vertices)
        m = self.points.shape[0]
        pw = self.point_weight
        c = 0.5 * (jnp.sum(self._image_residuals(d_img, rho) ** 2) + m * jnp.sum(frac * w_model * d_model**2))
        n_eff = jnp.sum(pw)
        ll = -c / (2 * s**2) - n_eff * jnp.log(s) - 0.5 * n_eff * math.log(2 * math.pi)
        return jnp.where(count > 0, self.weight * ll, -jnp.inf)

    def whitened_residuals(self, vertices, sigma=None):
        """The ``M`` image -> model and ``capacity`` model -> image distances, scaled so that
        ``log_likelihood = -|r|^2 / 2 + const`` (weight included); the model edges' length
        shares are held fixed in the Jacobian (a Gauss-Newton approximation)."""
        s = self.sigma if sigma is None else sigma
        d_img, d_model, frac, _, w_model, rho = self._terms(vertices)
        m = self.points.shape[0]
        r_img = jnp.sqrt(0.5 * self.weight) * self._image_residuals(d_img, rho) / s
        r_model = jnp.sqrt(0.5 * m * self.weight * jax.lax.stop_gradient(frac * w_model)) * d_model / s
        return jnp.concatenate([r_img, r_model])

    def log_sigma_information(self) -> float:
        return 2.0 * float(self.weight) * float(jnp.sum(self.point_weight))

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

    For a contour with ``pixel_runs``, whose likelihood already allows for the error each
    run of mask pixels shares, ``f`` is estimated on the residuals less their run means,
    and ``s2 = mean |r|^2 / (sigma^2 + 1/12)``: only what the run model leaves out counts.

    Args:
        contours: bound :class:`Contour` observations.
        vertices: the shape each one sees, ``(n_vert, 3)`` mm (one array, or one per contour).
        block_size, seed: block size (points) and the k-means seed.
    """
    from scipy.cluster.vq import kmeans2

    if not isinstance(vertices, (list, tuple)):
        vertices = [vertices] * len(contours)
    between, dof, s2 = 0.0, 0, []
    for k, (o, v) in enumerate(zip(contours, vertices)):
        r = np.asarray(_residual_vectors(o, v), dtype=np.float64)
        pts = np.asarray(o.points, dtype=np.float64)
        if np.all(np.asarray(o.point_weight) == 1.0):
            s2.append(float(np.mean(np.sum(r * r, axis=1))) / float(o.sigma) ** 2)
        else:  # pixel runs: the misfit against the run model's per-point variance, the run means removed
            s2.append(float(np.mean(np.sum(r * r, axis=1))) / (float(o.sigma) ** 2 + _RUN_VAR))
            lab = np.asarray(o.run_labels)
            cnt = np.bincount(lab)
            run_mean = np.stack([np.bincount(lab, weights=r[:, j]) for j in range(2)], axis=1) / cnt[:, None]
            r = np.where((cnt[lab] > 1)[:, None], r - run_mean[lab], r)
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
