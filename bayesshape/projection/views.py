"""X-ray imaging geometry: cone-beam and parallel views, and standard view sets.

Conventions (see docs/geometry.md):

* World coordinates in mm. The long axis of the body is **+z**; AP views look along
  **+y** (rays travel from the anterior source to the posterior detector), lateral
  views along **+x**.
* A pixel is addressed ``(row, col)`` = ``(i, j)``; pixel centres sit at integer
  coordinates, pixel ``(0, 0)`` is the top-left one. Columns grow along the detector
  axis ``u`` (image right), rows along ``v`` (image down). The detector "up" is
  ``-v``; with the default ``up=(0, 0, 1)`` the body's head is at the top of the image.
* Looking from the source along the ray direction ``d``: ``u = d x up``, so an AP
  image shows the patient's left (+x) on the image right.
* Cone-beam: a point source at ``source``, the detector plane at distance
  ``source_to_detector`` along the central ray ``d``, which meets the detector at the
  principal point. Parallel: rays along ``d``, the detector plane through ``origin``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import is_concrete
from .dicom_geometry import cos_sin_degrees, dicom_view_parameters

__all__ = ["XRayView", "biplanar", "carm_view", "stack_views", "view_from_dicom"]


def _unit(v, name):
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        raise ValueError(f"{name}: expected a finite 3-vector, got {v}")
    n = np.linalg.norm(v)
    if n < 1e-12:
        raise ValueError(f"{name}: must not be the zero vector")
    return v / n


def _frame(direction, up):
    d = _unit(direction, "direction")
    up = _unit(up, "up")
    up_o = up - d * (up @ d)
    if np.linalg.norm(up_o) < 1e-6:
        raise ValueError(f"up {up} is parallel to the viewing direction {d}; choose another up vector")
    up_o /= np.linalg.norm(up_o)
    u = np.cross(d, up_o)
    v = -up_o
    return d, u, v


def _spacing(pixel_spacing):
    s = np.broadcast_to(np.asarray(pixel_spacing, dtype=np.float64), (2,)).copy()
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"pixel_spacing: expected positive mm per pixel (row, col), got {pixel_spacing}")
    return s


#: the most pixels a detector may have (a 16384 x 16384 image; one float32 image is 1 GiB)
MAX_PIXELS = 2**28


def _shape(detector_shape):
    try:
        h, w = detector_shape
        ok = all(float(x) == int(x) for x in (h, w))
    except (TypeError, ValueError, OverflowError):
        raise ValueError(
            f"detector_shape: expected (rows, cols) whole numbers of pixels, got {detector_shape!r}"
        ) from None
    if not ok:
        raise ValueError(f"detector_shape: expected whole numbers of pixels, got {tuple(detector_shape)!r}")
    h, w = int(h), int(w)
    if h < 2 or w < 2:
        raise ValueError(f"detector_shape: expected at least 2 x 2 pixels, got {(h, w)}")
    if h * w > MAX_PIXELS:
        raise ValueError(
            f"detector_shape: {h} x {w} = {h * w:.3g} pixels is more than bayesshape allocates for one image "
            f"({MAX_PIXELS:.3g}, e.g. 16384 x 16384); use a coarser detector"
        )
    return (h, w)


class XRayView(eqx.Module):
    """One calibrated X-ray view (cone-beam or parallel projection).

    Build with :meth:`cone_beam`, :meth:`parallel`, :func:`biplanar` or
    :func:`carm_view` rather than directly.

    Attributes:
        source: ``(3,)`` source position, mm (cone-beam; for parallel views a point far
            up-beam, used only to order depths).
        origin: ``(3,)`` world position of the centre of pixel ``(0, 0)``, mm.
        u: ``(3,)`` unit detector axis along columns.
        v: ``(3,)`` unit detector axis along rows.
        direction: ``(3,)`` unit central-ray (parallel: ray) direction, ``u x v = direction``.
        spacing: ``(2,)`` pixel spacing ``(row, col)`` at the detector, mm.
        detector_shape: ``(rows, cols)``, static.
        is_parallel: static flag.

    Example:
        >>> view = XRayView.cone_beam(1300.0, 1000.0, (256, 256), 0.5)
        >>> view.project(jnp.zeros((1, 3))).tolist()          # the isocentre -> principal point
        [[127.5, 127.5]]
    """

    source: Float[Array, 3]
    origin: Float[Array, 3]
    u: Float[Array, 3]
    v: Float[Array, 3]
    direction: Float[Array, 3]
    spacing: Float[Array, 2]
    detector_shape: tuple[int, int] = eqx.field(static=True)
    is_parallel: bool = eqx.field(static=True)

    # ----------------------------------------------------------- constructors
    @classmethod
    def cone_beam(
        cls,
        source_to_detector: float,
        source_to_isocenter: float,
        detector_shape=(256, 256),
        pixel_spacing=1.0,
        *,
        isocenter=(0.0, 0.0, 0.0),
        direction=(0.0, 1.0, 0.0),
        up=(0.0, 0.0, 1.0),
        principal_point=None,
    ) -> XRayView:
        """A point-source view.

        Args:
            source_to_detector: source to detector plane along the central ray, mm (DICOM
                DistanceSourceToDetector; the "source-to-image distance" of radiographers).
            source_to_isocenter: source to the isocentre, mm (DICOM DistanceSourceToPatient),
                ``0 < source_to_isocenter < source_to_detector``.
            detector_shape: ``(rows, cols)`` pixels.
            pixel_spacing: mm per pixel at the detector; a number or ``(row, col)``.
            isocenter: ``(3,)`` world point on the central ray, mm.
            direction: central-ray direction, source towards detector (extrinsic pose).
            up: world direction shown as image up.
            principal_point: ``(row, col)`` where the central ray meets the detector;
                default the detector centre ``((rows-1)/2, (cols-1)/2)``.
        """
        sdd = float(source_to_detector)
        sid = float(source_to_isocenter)
        if not (math.isfinite(sdd) and math.isfinite(sid)) or sid <= 0 or sdd <= sid:
            raise ValueError(
                "cone_beam: need 0 < source_to_isocenter (DistanceSourceToPatient) < source_to_detector "
                f"(DistanceSourceToDetector), mm; got source_to_isocenter={sid}, source_to_detector={sdd}"
            )
        shape = _shape(detector_shape)
        sp = _spacing(pixel_spacing)
        d, u, v = _frame(direction, up)
        iso = np.asarray(isocenter, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(iso)):
            raise ValueError(f"isocenter: expected finite mm coordinates, got {isocenter}")
        pp = (
            np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])
            if principal_point is None
            else np.asarray(principal_point, dtype=np.float64).reshape(-1)
        )
        if pp.shape != (2,) or not np.all(np.isfinite(pp)):
            raise ValueError(f"principal_point: expected finite (row, col) pixels, got {principal_point!r}")
        source = iso - sid * d
        centre = source + sdd * d
        origin = centre - pp[1] * sp[1] * u - pp[0] * sp[0] * v
        return cls._make(source, origin, u, v, d, sp, shape, False)

    @classmethod
    def parallel(
        cls, direction, up=(0.0, 0.0, 1.0), detector_shape=(256, 256), pixel_spacing=1.0, center=(0.0, 0.0, 0.0)
    ) -> XRayView:
        """An orthographic view: rays along ``direction``; ``center`` (mm) maps to the image centre."""
        shape = _shape(detector_shape)
        sp = _spacing(pixel_spacing)
        d, u, v = _frame(direction, up)
        c = np.asarray(center, dtype=np.float64).reshape(3)
        if not np.all(np.isfinite(c)):
            raise ValueError(f"center: expected finite mm coordinates, got {center}")
        origin = c - (shape[1] - 1) / 2 * sp[1] * u - (shape[0] - 1) / 2 * sp[0] * v
        source = c - 1e4 * d
        return cls._make(source, origin, u, v, d, sp, shape, True)

    @classmethod
    def from_dicom(cls, source, *, isocenter=(0.0, 0.0, 0.0), **overrides) -> XRayView:
        """The view of a DICOM radiograph (DX, CR or XA) from its geometry tags.

        Args:
            source: a ``.dcm`` path or a ``pydicom.Dataset``.
            isocenter: world point on the central ray at DistanceSourceToPatient, mm.
            overrides: ``source_to_detector``, ``source_to_isocenter``, ``pixel_spacing``,
                ``primary_angle``, ``secondary_angle``, ``up``: values for missing or wrong tags.

        The tags read and the conventions are listed in :mod:`bayesshape.projection.dicom_geometry`
        and in the user guide (Radiographs, segmentations and landmarks).
        A file whose PatientOrientation says the image is mirrored gets the view of the image
        flipped left to right, as :func:`bayesshape.io.read_radiograph` returns it.

        Raises:
            ValueError: naming each missing tag and the override that replaces it.

        Example:
            >>> view = XRayView.from_dicom("ap.dcm")                         # doctest: +SKIP
            >>> view = XRayView.from_dicom("ap.dcm", source_to_detector=1150.0)  # doctest: +SKIP
        """
        if not hasattr(source, "dir"):  # a path, not a Dataset
            import pydicom

            try:
                source = pydicom.dcmread(source, stop_before_pixels=True)
            except (OSError, pydicom.errors.InvalidDicomError) as e:
                raise ValueError(f"{source}: not a readable DICOM file ({e})") from None
        return view_from_dicom(source, isocenter=isocenter, **overrides)[0]

    @classmethod
    def _make(cls, source, origin, u, v, d, sp, shape, par):
        a = jnp.asarray
        return cls(a(source), a(origin), a(u), a(v), a(d), a(sp), shape, par)

    def __check_init__(self):
        """The view's invariants, checked whenever a view is built (not when JAX rebuilds one
        from its leaves inside ``jit`` or ``vmap``); values only where they are concrete."""
        if not (isinstance(self.detector_shape, tuple) and len(self.detector_shape) == 2):
            raise ValueError(f"detector_shape: expected a (rows, cols) tuple, got {self.detector_shape!r}")
        _shape(self.detector_shape)
        if not all(isinstance(x, int) for x in self.detector_shape):
            raise ValueError(f"detector_shape: expected whole numbers of pixels, got {self.detector_shape!r}")
        if not isinstance(self.is_parallel, bool):
            raise ValueError(f"is_parallel: expected True or False, got {self.is_parallel!r}")
        for name, n in (("source", 3), ("origin", 3), ("u", 3), ("v", 3), ("direction", 3), ("spacing", 2)):
            shape = np.shape(getattr(self, name))
            if shape[-1:] != (n,):
                raise ValueError(f"view.{name}: expected shape ({n},), got {shape}")
        if all(is_concrete(getattr(self, n)) for n in ("source", "origin", "u", "v", "direction", "spacing")):
            self.check()

    # ------------------------------------------------------------- geometry
    @property
    def source_to_detector(self) -> Float[Array, ""]:
        """Distance from the source to the detector plane along the central ray, mm."""
        return jnp.dot(self.origin - self.source, self.direction)

    def depth(self, points: Float[Array, "n 3"]) -> Float[Array, " n"]:
        """Depth of points along the central ray from the source, mm."""
        return (points - self.source[None, :]) @ self.direction

    def project(self, points: Float[Array, "n 3"]) -> Float[Array, "n 2"]:
        """World points (mm) to pixel coordinates ``(row, col)``.

        Points at or behind a cone-beam source have no image; they map to non-finite
        pixels, and the likelihoods guard against that.
        """
        if self.is_parallel:
            rel = points - self.origin[None, :]
        else:
            rel_s = points - self.source[None, :]
            lam = self.source_to_detector / (rel_s @ self.direction)
            rel = self.source[None, :] + lam[:, None] * rel_s - self.origin[None, :]
        col = rel @ self.u / self.spacing[1]
        row = rel @ self.v / self.spacing[0]
        return jnp.stack([row, col], axis=-1)

    def pixel_to_world(self, pixels: Float[Array, "n 2"]) -> Float[Array, "n 3"]:
        """Pixel coordinates ``(row, col)`` to the world point on the detector plane, mm."""
        return (
            self.origin[None, :]
            + (pixels[:, 1:2] * self.spacing[1]) * self.u[None, :]
            + (pixels[:, 0:1] * self.spacing[0]) * self.v[None, :]
        )

    def rays(self, pixels: Float[Array, "n 2"]):
        """Rays through pixel centres: ``(start (n, 3), unit direction (n, 3))``, mm."""
        p = self.pixel_to_world(pixels)
        if self.is_parallel:
            d = jnp.broadcast_to(self.direction[None, :], p.shape)
            return p - 2e4 * d, d
        d = p - self.source[None, :]
        d = d / jnp.linalg.norm(d, axis=-1, keepdims=True)
        return jnp.broadcast_to(self.source[None, :], p.shape), d

    def pixel_grid(self) -> Float[Array, "H W 2"]:
        """All pixel centres as ``(row, col)``, shape ``(H, W, 2)``."""
        h, w = self.detector_shape
        rr, cc = jnp.meshgrid(
            jnp.arange(h, dtype=self.origin.dtype), jnp.arange(w, dtype=self.origin.dtype), indexing="ij"
        )
        return jnp.stack([rr, cc], axis=-1)

    def ray_length_factor(self) -> Float[Array, "H W"]:
        """Per pixel, ray length per unit depth along the central ray (``1/cos``; 1 if parallel)."""
        h, w = self.detector_shape
        if self.is_parallel:
            return jnp.ones((h, w), dtype=self.origin.dtype)
        p = self.pixel_to_world(self.pixel_grid().reshape(-1, 2))
        d = p - self.source[None, :]
        return (jnp.linalg.norm(d, axis=-1) / (d @ self.direction)).reshape(h, w)

    def check_in_front(self, points, what: str, *, margin_mm: float = 1.0) -> None:
        """Raise ``ValueError`` when any of the ``(..., 3)`` points (mm) lies less than
        ``margin_mm`` in front of a cone-beam source (a point at or behind the source has no
        image, and one just in front of it an unbounded one). Parallel views image everything."""
        if self.is_parallel:
            return
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        depth = (pts - np.asarray(self.source, dtype=np.float64)[None, :]) @ np.asarray(self.direction, np.float64)
        bad = depth < margin_mm
        if bad.any():
            raise ValueError(
                f"{what}: {int(bad.sum())} of {len(pts)} points lie at or behind the X-ray source of this cone-beam "
                f"view (nearest depth {depth.min():.1f} mm along the central ray); the source is inside or behind "
                "the object: check the source-to-isocentre distance, the isocentre and the units (mm)"
            )

    def check(self) -> XRayView:
        """Raise ``ValueError`` if the view's arrays are not finite, its axes not an orthonormal
        frame with ``u x v = direction``, its pixels not positive, or (cone-beam) its detector not
        in front of the source. Returns the view."""
        for name in ("source", "origin", "u", "v", "direction", "spacing"):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if not np.all(np.isfinite(a)):
                raise ValueError(f"view.{name}: not finite ({a}); the camera is degenerate")
        if np.ndim(self.spacing) != 1:
            return self  # a stack of views (stack_views): checked one by one when built
        if float(np.asarray(self.spacing).min()) <= 0:
            raise ValueError(f"view.spacing: pixel spacing must be positive (mm), got {np.asarray(self.spacing)}")
        u, v, d = (np.asarray(getattr(self, n), dtype=np.float64) for n in ("u", "v", "direction"))
        gram = np.stack([u, v, d]) @ np.stack([u, v, d]).T
        if not np.allclose(gram, np.eye(3), atol=1e-5) or not np.allclose(np.cross(u, v), d, atol=1e-5):
            raise ValueError(
                "view: u, v and direction must be an orthonormal frame with u x v = direction; got "
                f"u={u}, v={v}, direction={d} (build views with XRayView.cone_beam or XRayView.parallel)"
            )
        if not self.is_parallel and float(self.source_to_detector) <= 0:
            raise ValueError("view: the detector must lie in front of the source (source_to_detector > 0 mm)")
        return self


def stack_views(views) -> XRayView:
    """Stack views of the same detector shape and projection type for ``jax.vmap``."""
    views = list(views)
    if not views:
        raise ValueError("views: expected at least one view")
    shapes = {(v.detector_shape, v.is_parallel) for v in views}
    if len(shapes) != 1:
        raise ValueError(f"views: to stack, all views need the same detector shape and projection type, got {shapes}")
    return jax.tree.map(lambda *xs: jnp.stack(xs), *views)


def biplanar(
    isocenter=(0.0, 0.0, 0.0),
    *,
    field_of_view: float = 500.0,
    detector_shape=(256, 256),
    projection: str = "parallel",
    source_to_isocenter: float = 1000.0,
    source_to_detector: float = 1300.0,
) -> tuple[XRayView, XRayView]:
    """The usual orthogonal pair (AP, lateral), EOS-like.

    Args:
        isocenter: ``(3,)`` centre of the object, mm.
        field_of_view: extent in mm (at the isocentre) covered by the larger image side.
        detector_shape: ``(rows, cols)`` pixels.
        projection: ``"parallel"`` (EOS-like slot scanner) or ``"cone"``.
        source_to_isocenter: cone-beam source to isocentre distance, mm.
        source_to_detector: cone-beam source to detector distance, mm.

    Returns:
        ``(ap, lateral)``: AP looks along +y, lateral along +x; image up is +z.
    """
    fov = float(field_of_view)
    if not math.isfinite(fov) or fov <= 0:
        raise ValueError(f"field_of_view: expected a positive size in mm, got {field_of_view}")
    shape = _shape(detector_shape)
    out = []
    for d in ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0)):
        if projection == "parallel":
            out.append(XRayView.parallel(d, (0, 0, 1), shape, fov / max(shape), center=isocenter))
        elif projection == "cone":
            mag = source_to_detector / source_to_isocenter
            out.append(
                XRayView.cone_beam(
                    source_to_detector,
                    source_to_isocenter,
                    shape,
                    fov * mag / max(shape),
                    isocenter=isocenter,
                    direction=d,
                )
            )
        else:
            raise ValueError(f"projection: expected 'parallel' or 'cone', got {projection!r}")
    return out[0], out[1]


def carm_view(
    isocenter=(0.0, 0.0, 0.0),
    *,
    lao: float = 0.0,
    cranial: float = 0.0,
    source_to_isocenter: float = 800.0,
    source_to_detector: float = 1200.0,
    detector_shape=(256, 256),
    pixel_spacing: float = 1.5,
) -> XRayView:
    """A C-arm view at the given angulation (degrees).

    Starting from the AP view (central ray along +y), the C-arm is rotated by ``lao``
    degrees about the long axis (+z; positive turns the central ray towards +x, the
    patient's left) and then by ``cranial`` degrees towards +z (positive: the central
    ray gains a +z component). RAO and caudal are the negative angles. The image up
    stays as close to +z as the angulation allows.
    """
    (ca, sa), (cc, sc) = cos_sin_degrees(lao), cos_sin_degrees(cranial)
    d = np.array([sa * cc, ca * cc, sc])
    # up: +z made orthogonal to d (for |cranial| < 90 deg this is well defined)
    up = np.array([0.0, 0.0, 1.0])
    return XRayView.cone_beam(
        source_to_detector, source_to_isocenter, detector_shape, pixel_spacing, isocenter=isocenter, direction=d, up=up
    )


def view_from_dicom(ds, *, isocenter=(0.0, 0.0, 0.0), **overrides) -> tuple[XRayView, bool]:
    """The view of a DICOM radiograph's ``pydicom.Dataset`` (or a dict of tag keywords to values),
    and whether its image must be flipped left to right to match it (see
    :mod:`bayesshape.projection.dicom_geometry` for the tags and conventions).

    Args:
        ds: the dataset.
        isocenter: the world point on the central ray at DistanceSourceToPatient, mm.
        overrides: values that replace missing or wrong tags: ``source_to_detector``,
            ``source_to_isocenter`` (mm), ``pixel_spacing`` (mm at the detector, a number or (row, col)),
            ``primary_angle``, ``secondary_angle`` (degrees), ``up`` (world direction shown as image up).

    Raises:
        ValueError: naming every missing tag, and the argument that can be given instead.
    """
    g = dicom_view_parameters(ds, **overrides)
    view = XRayView.cone_beam(
        g["source_to_detector"],
        g["source_to_isocenter"],
        g["detector_shape"],
        g["pixel_spacing"],
        isocenter=isocenter,
        direction=g["direction"],
        up=g["up"],
    )
    row = g["row_direction"]
    mirrored = row is not None and float(row @ np.asarray(view.u)) < 0
    return view, mirrored
