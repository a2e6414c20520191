"""Simulated X-rays of a known mesh: the input for tests, the demo and the experiments."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np

from ._checks import as_faces, as_points, as_seed
from ._geometry import closed_surface_problems
from .obs import DRR, Contour, Landmarks2D, Silhouette, label_observations, mask_contour_points
from .projection.render import PIXEL_MODES, drr_footprint, render_drr
from .projection.views import XRayView

__all__ = ["simulate_xray", "SimulatedXRay"]


@dataclasses.dataclass(frozen=True)
class SimulatedXRay:
    """Per-view simulated data (lists with one entry per view).

    Attributes:
        views: the :class:`XRayView` s.
        drr: line-integral images ``mu * L`` with noise, ``(H, W)`` each.
        clean_drr: the same without noise.
        masks: boolean silhouettes ``(H, W)``.
        contours: sub-pixel contour points ``(M, 2)`` ``(row, col)`` (with jitter).
        landmark_ids: vertex ids of the landmarks, or None.
        landmarks: projected landmark pixels ``(L, 2)`` with noise, or None.
        noise, contour_jitter, landmark_sigma, mu: the settings used.
        labels: with ``object_ids``, label images ``(H, W)`` (``uint16``): 0 the background, ``k + 1``
            where object ``k`` has the longest path (the one a segmentation would show); else None.
    """

    views: tuple
    drr: tuple
    clean_drr: tuple
    masks: tuple
    contours: tuple
    landmark_ids: np.ndarray | None
    landmarks: tuple | None
    noise: float
    contour_jitter: float
    landmark_sigma: float
    mu: float
    pixel: str = "centre"
    labels: tuple | None = None

    def observations(self, kind: str, sigma: float | None = None, **kwargs) -> list:
        """Ready-made observation objects, one per view.

        Args:
            kind: ``"contour"`` (from the masks), ``"silhouette"`` (the masks, pixel by pixel),
                ``"drr"`` (the noisy images), ``"landmarks"`` (projected landmarks), or
                ``"label-silhouette"`` / ``"label-contour"``: per object, from the label images of
                an assembly (:func:`bayesshape.obs.label_observations`; pass ``objects=`` the
                assembly or its names).
            sigma: noise sd; defaults: contour ``max(1, contour_jitter)`` px, silhouette 0.5 px,
                DRR the simulated noise sd (at least 1e-3), landmarks ``max(0.5, landmark_sigma)`` px.
            **kwargs: passed to the observation class (e.g. ``fit_scale_offset=True``). DRR
                observations sample pixels as the images were simulated (``pixel``) unless told.
        """
        if kind in ("label-silhouette", "label-contour"):
            if self.labels is None:
                raise ValueError(f"observations({kind!r}): simulate_xray was called without object_ids")
            if "objects" not in kwargs:
                raise ValueError(f"observations({kind!r}): pass objects= the assembly (or its object names)")
            return label_observations(
                self.views, self.labels, kwargs.pop("objects"), kind=kind.split("-")[1], sigma=sigma, **kwargs
            )
        if kind == "contour":
            s = max(1.0, self.contour_jitter) if sigma is None else sigma
            if self.contour_jitter > 0:
                return [Contour(v, c, s, **kwargs) for v, c in zip(self.views, self.contours)]
            return [Contour(v, m, s, **kwargs) for v, m in zip(self.views, self.masks)]
        if kind == "silhouette":
            return [Silhouette(v, m, 0.5 if sigma is None else sigma, **kwargs) for v, m in zip(self.views, self.masks)]
        if kind == "drr":
            s = max(self.noise_sd, 1e-3) if sigma is None else sigma
            kwargs.setdefault("pixel", self.pixel)
            return [DRR(v, img, s, mu=self.mu, **kwargs) for v, img in zip(self.views, self.drr)]
        if kind == "landmarks":
            if self.landmarks is None:
                raise ValueError("observations('landmarks'): simulate_xray was called without landmark_ids")
            s = max(0.5, self.landmark_sigma) if sigma is None else sigma
            return [Landmarks2D(v, self.landmark_ids, p, s, **kwargs) for v, p in zip(self.views, self.landmarks)]
        raise ValueError(
            "kind: expected 'contour', 'silhouette', 'drr', 'landmarks', 'label-silhouette' or 'label-contour', "
            f"got {kind!r}"
        )

    @property
    def noise_sd(self) -> float:
        """Absolute sd of the DRR pixel noise (line-integral units)."""
        return self.noise * max(float(np.max(d)) for d in self.clean_drr)


def simulate_xray(
    mesh,
    views,
    *,
    seed: int = 0,
    noise: float = 0.01,
    contour_jitter: float = 0.0,
    landmark_ids=None,
    landmark_sigma: float = 0.0,
    mu: float = 0.05,
    pixel: str = "centre",
    object_ids=None,
) -> SimulatedXRay:
    """Simulate X-ray images of a mesh.

    Args:
        mesh: a watertight trimesh mesh or ``(vertices, faces)`` (mm).
        views: one :class:`XRayView` or a sequence of them.
        seed: seed for every random draw.
        noise: DRR pixel noise sd as a fraction of the image maximum (0 for none).
        contour_jitter: sd (pixels) of Gaussian jitter added to contour points.
        landmark_ids: vertex ids to project as landmarks (optional).
        landmark_sigma: sd (pixels) of the landmark noise.
        mu: attenuation coefficient, 1/mm (images are ``mu * path length``).
        pixel: ``"centre"`` (path length through each pixel centre) or ``"area"`` (averaged
            over each pixel's square, as a detector element integrates); see :func:`render_drr`.
            Masks and contours always come from the pixel centres.
        object_ids: ``(n_vertices,)`` the object of each vertex (``0 .. K-1``) of a mesh of several
            closed objects (an assembly); adds label images (:attr:`SimulatedXRay.labels`).

    Example:
        >>> ap, lat = bs.biplanar(field_of_view=480)
        >>> sim = bs.simulate_xray(bs.datasets.make_shape(), [ap, lat], seed=1)
        >>> obs = sim.observations("contour")
    """
    if hasattr(mesh, "vertices"):
        verts = as_points(mesh.vertices, "mesh.vertices")
        faces = as_faces(mesh.faces, verts.shape[0], "mesh.faces")
    else:
        try:
            v, f = mesh
        except (TypeError, ValueError):
            raise ValueError("mesh: expected a trimesh mesh or a (vertices, faces) pair") from None
        verts = as_points(v, "vertices")
        faces = as_faces(f, verts.shape[0])
    if isinstance(views, XRayView):
        views = [views]
    views = tuple(views)
    if not views or not all(isinstance(v, XRayView) for v in views):
        raise ValueError("views: expected one or more XRayView objects")
    for name, val in (("noise", noise), ("contour_jitter", contour_jitter), ("landmark_sigma", landmark_sigma)):
        if not np.isfinite(val) or val < 0:
            raise ValueError(f"{name}: expected a value >= 0, got {val}")
    if pixel not in PIXEL_MODES:
        raise ValueError(f"pixel: expected one of {PIXEL_MODES}, got {pixel!r}")
    problems = closed_surface_problems(faces, verts.shape[0])
    if problems:
        raise ValueError(
            "mesh: a DRR needs a closed, consistently oriented surface, and this one is not: "
            + "; ".join(problems)
            + " (repair it, e.g. trimesh's fill_holes and fix_normals, or a watertight remesh)"
        )
    face_object = None
    if object_ids is not None:
        ids = np.asarray(object_ids)
        if ids.shape != (verts.shape[0],) or ids.dtype.kind not in "iu" or ids.min() < 0:
            raise ValueError(
                f"object_ids: expected one non-negative integer object index per vertex ({verts.shape[0]},), "
                f"got shape {ids.shape} and dtype {ids.dtype}"
            )
        face_object = ids[faces[:, 0]]
        if not (ids[faces] == face_object[:, None]).all():
            raise ValueError("object_ids: a face joins vertices of two objects; each object must be a closed surface")
    rng = np.random.default_rng(as_seed(seed))
    for i, view in enumerate(views):
        view.check()
        view.check_in_front(verts, f"mesh in view {i}")
    vj, fj = jnp.asarray(verts), jnp.asarray(faces)
    clean, noisy, masks, contours, lms, label_images = [], [], [], [], [], []
    for view in views:
        k = drr_footprint(vj, fj, view)
        h, w = view.detector_shape
        if k > 2 * max(h, w):
            raise ValueError(
                f"simulate_xray: a triangle projects {k} pixels wide on a {h} x {w} detector; the source is "
                "too close to the mesh (check the source-to-isocentre distance and the units, mm)"
            )
        length = np.asarray(render_drr(vj, fj, view, footprint=k))
        if not (length > 0).any():
            raise ValueError("simulate_xray: the mesh is not visible in one of the views (empty DRR)")
        img = mu * (length if pixel == "centre" else np.asarray(render_drr(vj, fj, view, footprint=k, pixel="area")))
        clean.append(img)
        noisy.append(img + noise * img.max() * rng.standard_normal(img.shape))
        mask = length > 0
        masks.append(mask)
        if face_object is not None:
            per = np.stack(
                [
                    np.asarray(render_drr(vj, jnp.asarray(faces[face_object == obj]), view, footprint=k))
                    if (face_object == obj).any()
                    else np.zeros((h, w))
                    for obj in range(int(face_object.max()) + 1)
                ]
            )
            label_images.append(np.where(per.max(0) > 0, per.argmax(0) + 1, 0).astype(np.uint16))
        pts = mask_contour_points(mask)
        if contour_jitter > 0:
            pts = pts + contour_jitter * rng.standard_normal(pts.shape)
        contours.append(pts)
        if landmark_ids is not None:
            ids = np.asarray(landmark_ids, dtype=np.int64)
            px = np.asarray(view.project(vj[ids]))
            lms.append(px + landmark_sigma * rng.standard_normal(px.shape))
    return SimulatedXRay(
        views=views,
        drr=tuple(noisy),
        clean_drr=tuple(clean),
        masks=tuple(masks),
        contours=tuple(contours),
        landmark_ids=None if landmark_ids is None else np.asarray(landmark_ids, dtype=np.int64),
        landmarks=None if landmark_ids is None else tuple(lms),
        noise=float(noise),
        contour_jitter=float(contour_jitter),
        landmark_sigma=float(landmark_sigma),
        mu=float(mu),
        pixel=pixel,
        labels=tuple(label_images) if face_object is not None else None,
    )
