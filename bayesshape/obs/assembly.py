"""Observations of one object of an assembly (:class:`~bayesshape.prior.Assembly`).

An observation given to :func:`bayesshape.infer` with an assembly sees the whole assembly: a DRR
is the sum of every object's path lengths, a mask or contour is the outline of their union, and
landmark ids index the combined vertex array. :class:`OnObject` restricts an observation to one
object: its mesh alone is rendered and its vertex ids are the object's own.
:func:`label_observations` makes them from label images (one label per object).
"""

from __future__ import annotations

import equinox as eqx
import numpy as np

from .base import Observation

__all__ = ["OnObject", "label_observations", "check_label_images"]


class OnObject(Observation):
    """An observation of the object ``name`` of an assembly alone.

    Args:
        observation: any observation (landmarks with the object's own vertex ids, a contour or a
            mask of that object alone, e.g. one label of a label image).
        name: the object's name in the assembly.

    Example:
        >>> lm = bs.obs.Landmarks3D([0, 10, 20], points, sigma=1.0)           # doctest: +SKIP
        >>> post = bs.infer(spine, [drr_ap, drr_lat, bs.obs.OnObject(lm, "L3")])  # doctest: +SKIP
    """

    observation: Observation
    name: str = eqx.field(static=True)
    #: the object's rows in the combined vertex array, set by :meth:`locate` (``infer`` does)
    rows: tuple[int, int] | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if not isinstance(self.observation, Observation):
            raise ValueError(f"observation: expected a bayesshape observation, got {type(self.observation).__name__}")
        if isinstance(self.observation, OnObject):
            raise ValueError("observation: already restricted to an object")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name: expected an object name, got {self.name!r}")

    def locate(self, start: int, stop: int) -> OnObject:
        """A copy that reads rows ``start:stop`` of the combined vertices."""
        return OnObject(self.observation, self.name, (int(start), int(stop)))

    def _rows(self, vertices):
        if self.rows is None:
            raise ValueError(f"OnObject({self.name!r}): not located in an assembly (infer does that)")
        return vertices[self.rows[0] : self.rows[1]]

    def _wrap(self, inner: Observation) -> OnObject:
        return OnObject(inner, self.name, self.rows)

    # the observation contract, forwarded to the object's rows
    def bind(self, faces, reference_vertices) -> OnObject:
        return self._wrap(self.observation.bind(faces, reference_vertices))

    def log_likelihood(self, vertices, sigma=None):
        return self.observation.log_likelihood(self._rows(vertices), sigma)

    def pointwise_log_likelihood(self, vertices, sigma=None):
        return self.observation.pointwise_log_likelihood(self._rows(vertices), sigma)

    def residuals(self, vertices):
        return self.observation.residuals(self._rows(vertices))

    def whitened_residuals(self, vertices, sigma=None):
        return self.observation.whitened_residuals(self._rows(vertices), sigma)

    def has_gauss_newton(self) -> bool:  # type: ignore[override]
        return self.observation.has_gauss_newton()

    def log_sigma_information(self) -> float:
        return self.observation.log_sigma_information()

    def overflow(self, vertices) -> bool:
        return self.observation.overflow(self._rows(vertices))

    @property
    def correlated_residuals(self) -> bool:  # type: ignore[override]
        return self.observation.correlated_residuals

    @property
    def renders_mesh(self) -> bool:  # type: ignore[override]
        return self.observation.renders_mesh

    def with_weight(self, weight: float) -> OnObject:
        return self._wrap(self.observation.with_weight(weight))

    def residual_vectors(self, vertices):
        return self.observation.residual_vectors(self._rows(vertices))

    def sampling_caveat(self) -> str | None:
        return self.observation.sampling_caveat()

    def check_units(self, model_mean: np.ndarray) -> None:
        self.observation.check_units(self._rows(model_mean))

    def pose_anchor(self, model_mean, centroid):
        return self.observation.pose_anchor(self._rows(model_mean), centroid)

    def warm_start(self) -> OnObject | None:
        w = self.observation.warm_start()
        return None if w is None else self._wrap(w)

    @property
    def sigma(self):
        return self.observation.sigma

    @property
    def n_data(self) -> int:
        return self.observation.n_data


def check_label_images(views, label_images, names, labels=None) -> dict[str, int]:
    """Check label images against an assembly's objects; return ``{name: label}``.

    ``ValueError`` naming the view and the labels when an image is not an integer image of its
    view's detector shape, holds a label that is no object's, or when an object's label appears in
    no view."""
    names = tuple(getattr(names, "names", names))
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"objects: expected the assembly (or its object names), got {names!r}")
    labels = {n: i + 1 for i, n in enumerate(names)} if labels is None else dict(labels)
    unknown = sorted(set(labels) - set(names))
    if unknown:
        raise ValueError(f"labels: {unknown} are not objects of the assembly (objects: {', '.join(names)})")
    missing = [n for n in names if n not in labels]
    if missing:
        raise ValueError(f"labels: no label value for the object(s) {missing}; give one per object")
    values = list(labels.values())
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 for v in values):
        raise ValueError(f"labels: expected positive integer label values (0 is the background), got {labels}")
    if len(set(values)) != len(values):
        raise ValueError(f"labels: two objects share a label value: {labels}")
    views, images = list(views), list(label_images)
    if len(views) != len(images):
        raise ValueError(f"label_images: {len(images)} images for {len(views)} views; expected one per view")
    legend = ", ".join(f"{n}={v}" for n, v in labels.items())
    seen: set[int] = set()
    for i, (view, img) in enumerate(zip(views, images)):
        arr = np.asarray(img)
        if arr.shape != tuple(view.detector_shape):
            raise ValueError(
                f"label image of view {i}: shape {arr.shape}, expected the view's detector shape "
                f"{tuple(view.detector_shape)}"
            )
        if arr.dtype.kind not in "iub" and not (
            arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
        ):
            raise ValueError(f"label image of view {i}: expected integer labels, got dtype {arr.dtype}")
        present = {int(v) for v in np.unique(arr)} - {0}
        stray = sorted(present - set(values))
        if stray:
            raise ValueError(
                f"label image of view {i}: label(s) {stray} match no object (objects: {legend}; 0 is the "
                "background); relabel the image, or give each object's label value (labels= in Python, "
                "--label-values on the command line)"
            )
        seen |= present
    absent = [f"{n} (label {v})" for n, v in labels.items() if v not in seen]
    if absent:
        raise ValueError(
            f"label images: object(s) {', '.join(absent)} appear in no view; every object of the assembly "
            f"needs pixels in at least one label image (objects: {legend})"
        )
    return labels


def label_observations(
    views, label_images, objects, *, kind: str = "silhouette", sigma: float | None = None, labels=None
) -> list[OnObject]:
    """Per-object observations from label images (one per view: 0 the background, each object its
    own label), for :func:`bayesshape.infer` with an assembly.

    Each object seen in a view gets a :class:`~bayesshape.obs.Silhouette` (``kind="silhouette"``) or
    a :class:`~bayesshape.obs.Contour` (``kind="contour"``) of its label alone, wrapped in
    :class:`OnObject`. Where two objects overlap in a projection a label image shows one of them,
    so the pixels of other objects are left out of an object's silhouette (they may hide it), and
    its contour keeps only the outline points next to the background.

    Args:
        views: one :class:`~bayesshape.XRayView` per image.
        label_images: ``(H, W)`` integer images.
        objects: the :class:`~bayesshape.prior.Assembly` (or its object names, in order).
        kind: ``"silhouette"`` or ``"contour"``.
        sigma: px; default 0.5 (silhouette) or 1 (contour).
        labels: ``{name: label value}``; default object ``i`` has label ``i + 1``.

    Raises:
        ValueError: an image with a label that is no object's, an object in no image, images that
            are not integer or not of their view's shape (see :func:`check_label_images`).

    Example:
        >>> obs = bs.obs.label_observations(views, [ap_labels, lat_labels], spine)  # doctest: +SKIP
        >>> post = bs.infer(spine, obs, bs.Laplace(), bs.RigidPose())                # doctest: +SKIP
    """
    from scipy.ndimage import distance_transform_edt

    from .contour import Contour, mask_contour_points
    from .silhouette import Silhouette

    if kind not in ("silhouette", "contour"):
        raise ValueError(f"kind: expected 'silhouette' or 'contour', got {kind!r}")
    labels = check_label_images(views, label_images, objects, labels)
    out = []
    for view, img in zip(views, label_images):
        arr = np.asarray(img).astype(np.int64)
        for name, value in labels.items():
            mask = arr == value
            if not mask.any():
                continue
            other = (arr != value) & (arr != 0)
            if kind == "silhouette":
                obs: Observation = Silhouette(view, mask, 0.5 if sigma is None else sigma, ignore=other)
            else:
                pts = mask_contour_points(mask)
                if other.any():  # outline points within 1.5 px of another object's pixels are not its own
                    near = distance_transform_edt(~other) <= 1.5
                    r = np.clip(np.round(pts[:, 0]).astype(int), 0, arr.shape[0] - 1)
                    c = np.clip(np.round(pts[:, 1]).astype(int), 0, arr.shape[1] - 1)
                    pts = pts[~near[r, c]]
                if pts.shape[0] < 3:
                    continue
                obs = Contour(view, pts, 1.0 if sigma is None else sigma)
            out.append(OnObject(obs, name))
    return out
