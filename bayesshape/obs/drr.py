"""Intensity observations: a radiograph compared with the model's DRR."""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import as_positive
from ..projection.render import PIXEL_MODES, drr_face_groups, render_drr, render_drr_flagged
from ..projection.views import XRayView
from ._noise import gaussian_log_density
from .base import Observation, PoseAnchor, check_visible

__all__ = ["DRR", "drr_composite_weights"]


class DRR(Observation):
    """A radiograph in line-integral units, compared pixel by pixel with the model's DRR.

    The model image is ``mu * L`` with ``L`` the exact path length (mm) through the
    model surface (:func:`~bayesshape.render_drr`) and ``mu`` the attenuation
    coefficient (1/mm). A detected intensity ``I`` converts to line integrals with
    ``-log(I / I0)`` (:meth:`from_intensity`).

    Noise model: every pixel independent, Gaussian with sd ``sigma`` (line-integral
    units). With ``fit_scale_offset=True`` the image is compared with
    ``a * mu * L + b`` where the unknown scale ``a`` and offset ``b`` are profiled
    out (set to their least-squares values for every shape), which makes the
    likelihood insensitive to the unknown exposure and soft-tissue background.

    A model that covers none of the image gives a finite (low) log-likelihood
    without scale/offset; with ``fit_scale_offset=True`` it gives ``-inf`` (the
    scale is then undetermined).

    ``pixel`` says how the model image samples each pixel: ``"centre"`` (the ray
    through the pixel centre) or ``"area"`` (the average over the pixel's square, what a
    detector element integrates; see :func:`~bayesshape.render_drr`). ``"area"`` makes the
    log-likelihood continuously differentiable in the shape, which gradient samplers
    (NUTS) need when the shape cannot fit the image exactly; it costs several times more
    per evaluation.

    ``block_size`` (pixels) makes the pixels' errors count as correlated: where the shape cannot
    reproduce the image (anatomy outside the model) the residuals of neighbouring pixels share their
    cause, and treating every pixel as independent makes the posterior far too sharp. With a
    ``block_size``, :func:`bayesshape.infer` gives the likelihood a composite weight at the MAP
    (:func:`drr_composite_weights`; off with ``LikelihoodOptions(composite_weights=False)``); about
    1 where the residuals are pixel noise, smaller where they are not.

    Call :meth:`bind` with the model's faces before evaluating (``infer`` does).
    """

    renders_mesh = True

    view: XRayView
    image: Float[Array, "H W"]
    sigma: Float[Array, ""]
    mu: Float[Array, ""]
    #: the model's faces grouped by the window each needs (:func:`~bayesshape.projection.drr_face_groups`);
    #: None until :meth:`bind`
    face_groups: tuple | None
    footprint: tuple = eqx.field(static=True)
    fit_scale_offset: bool = eqx.field(static=True)
    pixel: str = eqx.field(static=True)
    #: the composite-likelihood weight in (0, 1] (1: every pixel independent)
    weight: Float[Array, ""]
    #: side of the square blocks of pixels whose mean residuals measure the correlation, or None
    block_size: int | None = eqx.field(static=True)

    def __init__(
        self,
        view: XRayView,
        image,
        sigma: float,
        *,
        mu: float = 1.0,
        fit_scale_offset: bool = False,
        face_groups=None,
        footprint: tuple = (),
        pixel: str = "centre",
        block_size: int | None = None,
        weight: float = 1.0,
    ):
        if not isinstance(view, XRayView):
            raise ValueError(f"view: expected an XRayView, got {type(view).__name__}")
        self.view = view.check()
        img = np.asarray(image, dtype=np.float64)
        if img.shape != tuple(view.detector_shape):
            raise ValueError(f"image: shape {img.shape} does not match the view's detector shape {view.detector_shape}")
        if not np.all(np.isfinite(img)):
            raise ValueError(f"image: {int(np.sum(~np.isfinite(img)))} pixels are NaN or infinite")
        if not fit_scale_offset and not (img > 0).any():
            raise ValueError(
                "image: every pixel is zero or negative, so no object is seen; a DRR observation needs line "
                "integrals (mu * path length, e.g. -log(I / I0) of a radiograph: DRR.from_intensity)"
            )
        if fit_scale_offset and float(np.ptp(img)) == 0.0:
            raise ValueError("image: every pixel has the same value, so no object is seen")
        self.image = jnp.asarray(img)
        self.sigma = jnp.asarray(as_positive(sigma, "sigma"))
        self.mu = jnp.asarray(as_positive(mu, "mu (1/mm)"))
        self.face_groups = None if face_groups is None else tuple(jnp.asarray(g) for g in face_groups)
        self.footprint = tuple(int(k) for k in footprint)
        if len(self.face_groups or ()) != len(self.footprint):
            raise ValueError("DRR: face_groups need one footprint each; use bind()")
        self.fit_scale_offset = bool(fit_scale_offset)
        if pixel not in PIXEL_MODES:
            raise ValueError(f"pixel: expected one of {PIXEL_MODES}, got {pixel!r}")
        self.pixel = pixel
        if block_size is not None:
            if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) or block_size < 2:
                raise ValueError(f"block_size: expected an integer >= 2 (pixels) or None, got {block_size!r}")
            block_size = int(block_size)
        self.block_size = block_size
        w = float(weight)
        if not 0.0 < w <= 1.0:
            raise ValueError(f"weight: expected a value in (0, 1], got {weight!r}")
        self.weight = jnp.asarray(w)

    @classmethod
    def from_intensity(cls, view, intensity, i0: float, sigma: float, **kw) -> DRR:
        """From detected intensities ``I`` with unattenuated intensity ``i0``: uses ``-log(I / i0)``."""
        arr = np.asarray(intensity, dtype=np.float64)
        if np.any(arr <= 0):
            raise ValueError("intensity: must be > 0 to take the logarithm (Beer-Lambert)")
        return cls(view, -np.log(arr / float(i0)), sigma, **kw)

    def bind(self, faces, reference_vertices) -> DRR:
        """Attach faces, grouped by the static window each needs: the largest over the reference
        shapes in any pose (longest edge times magnification), +50%
        (:func:`~bayesshape.projection.drr_face_groups`)."""
        if faces is None:
            raise ValueError("DRR needs a mesh model (faces); this model is a point set")
        check_visible(self.view, reference_vertices, "DRR")
        groups, fps = drr_face_groups(reference_vertices, np.asarray(faces), self.view, margin=0.5, any_pose=True)
        return DRR(
            self.view,
            self.image,
            float(self.sigma),
            mu=float(self.mu),
            fit_scale_offset=self.fit_scale_offset,
            face_groups=groups,
            footprint=fps,
            pixel=self.pixel,
            block_size=self.block_size,
            weight=float(self.weight),
        )

    def render(self, vertices):
        """The model image ``mu * L`` (before scale/offset)."""
        if self.face_groups is None:
            raise ValueError("DRR: call obs.bind(model.faces, model.mean) before evaluating the likelihood")
        return render_drr(vertices, self.face_groups, self.view, footprint=self.footprint, mu=self.mu, pixel=self.pixel)

    def _resid(self, vertices):
        if self.face_groups is None:
            raise ValueError("DRR: call obs.bind(model.faces, model.mean) before evaluating the likelihood")
        pred, too_big, behind = render_drr_flagged(
            vertices, self.face_groups, self.view, footprint=self.footprint, mu=self.mu, pixel=self.pixel
        )
        # a shape the renderer cannot image exactly (a triangle beyond the static footprint, a vertex
        # behind the source) lies outside the likelihood's support: -inf, never a wrong image
        imaged = ~(too_big | behind)
        ok = jnp.asarray(True)
        if self.fit_scale_offset:
            pm, im = jnp.mean(pred), jnp.mean(self.image)
            dp, di = pred - pm, self.image - im
            var = jnp.sum(dp * dp)
            ok = var > 1e-12
            a = jnp.sum(dp * di) / jnp.where(ok, var, 1.0)
            pred = a * dp + im
        return self.image - pred, ok & imaged, imaged

    def residuals(self, vertices):
        r, _, imaged = self._resid(vertices)
        r = eqx.error_if(
            r,
            ~imaged,
            "DRR: the shape does not fit the renderer's static footprint (or lies behind "
            "the source); bind with reference shapes closer to it",
        )
        return (r / self.sigma).reshape(-1)

    def log_likelihood(self, vertices, sigma=None):
        s = self.sigma if sigma is None else sigma
        r, ok, _ = self._resid(vertices)
        n = r.size
        ll = self.weight * gaussian_log_density(jnp.sum(r * r), n, s)
        return jnp.where(ok, ll, -jnp.inf)

    def pointwise_log_likelihood(self, vertices, sigma=None):
        """One term per pixel."""
        s = self.sigma if sigma is None else sigma
        r, ok, _ = self._resid(vertices)
        terms = self.weight * (-0.5 * (r / s) ** 2 - jnp.log(s) - 0.5 * math.log(2 * math.pi))
        return jnp.where(ok, terms.reshape(-1), -jnp.inf)

    def whitened_residuals(self, vertices, sigma=None):
        """``(image - model image) / sigma`` per pixel (the profiled residual with
        ``fit_scale_offset``): ``log_likelihood = -|r|^2 / 2 + const``."""
        s = self.sigma if sigma is None else sigma
        r, _, _ = self._resid(vertices)
        return (jnp.sqrt(self.weight) * r / s).reshape(-1)

    @property
    def correlated_residuals(self) -> bool:  # type: ignore[override]
        return self.block_size is not None

    def with_weight(self, weight: float) -> DRR:
        w = float(weight)
        if not 0.0 < w <= 1.0:
            raise ValueError(f"weight: expected a value in (0, 1], got {weight!r}")
        return eqx.tree_at(lambda o: o.weight, self, jnp.asarray(w, dtype=self.weight.dtype))

    def log_sigma_information(self) -> float:
        return 2.0 * float(self.weight) * self.n_data

    def sampling_caveat(self) -> str | None:
        if self.pixel != "centre":
            return None
        return (
            "NUTS on DRRs sampled at pixel centres: where the shape cannot reproduce the image (anatomy outside "
            "the model) the log density has creases at every pixel centre a projected edge crosses, and NUTS's "
            "step size collapses; build the observations with DRR(..., pixel='area') (docs/likelihoods.md)"
        )

    def pose_anchor(self, model_mean, centroid) -> PoseAnchor | None:
        """The model's centroid onto the intensity-weighted centroid of the image (None for an empty image)."""
        img = np.clip(np.asarray(self.image), 0, None)
        if img.sum() <= 0:
            return None
        g = np.indices(img.shape).reshape(2, -1)
        w = img.reshape(-1)
        return PoseAnchor(np.asarray(centroid)[None], view=self.view, pixels=((g * w).sum(1) / w.sum())[None])

    @property
    def n_data(self) -> int:
        return int(np.prod(self.view.detector_shape))


def drr_composite_weights(drrs, vertices) -> list[float]:
    """Composite-likelihood weights, in (0, 1], for DRR observations at a fitted shape.

    As :func:`~bayesshape.obs.composite_weights` for contours, with square blocks of
    ``block_size`` pixels: over the pixels the object covers in the data or in the model image
    (the rest are detector noise alone), the standardised residuals are averaged per block (blocks
    with at least a quarter of their pixels covered); the variance inflation of the block means over
    independent errors, pooled over the observations,
    ``f = sum_b n_b (m_b - m)^2 / var / (B - 1)``, and each observation's misfit over its covered
    pixels ``s2 = mean r^2`` give its weight ``1 / max(f * s2, 1)``.

    Args:
        drrs: bound :class:`DRR` observations with a ``block_size``.
        vertices: the shape each one sees, ``(n_vert, 3)`` mm (one array, or one per observation).
    """
    if not isinstance(vertices, (list, tuple)):
        vertices = [vertices] * len(drrs)
    between, dof, s2 = 0.0, 0, []
    for o, v in zip(drrs, vertices):
        if o.block_size is None:
            raise ValueError("drr_composite_weights: a DRR without block_size")
        r = np.asarray(_std_residuals(o, v), np.float64).reshape(o.view.detector_shape)
        pred = np.asarray(_render(o, v), np.float64)
        covered = (pred > 0) | (np.asarray(o.image) > 3.0 * float(o.sigma))
        s2.append(float(np.mean(r[covered] ** 2)) if covered.any() else 1.0)
        b, d = block_dispersion(r, covered, o.block_size)
        between, dof = between + b, dof + d
    f = between / dof if dof else 1.0
    return [float(1.0 / max(f * x, 1.0)) for x in s2]


def block_dispersion(r: np.ndarray, covered: np.ndarray, block: int) -> tuple[float, int]:
    """The between-block dispersion of standardised residuals ``r`` (an image) over the
    ``covered`` pixels: ``(sum_b n_b (m_b - m)^2 / var, B - 1)`` over the ``block`` x ``block``
    blocks with at least a quarter of their pixels covered (``m_b`` their means, ``m`` and
    ``var`` the covered pixels'). Its ratio is the variance inflation of a block mean over
    independent pixels: about 1 for independent residuals, up to the block's pixel count
    for residuals correlated over whole blocks. ``(0.0, 0)`` where fewer than two blocks count."""
    h, w = (r.shape[0] // block) * block, (r.shape[1] // block) * block
    rb = r[:h, :w].reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3).reshape(-1, block * block)
    cb = covered[:h, :w].reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3).reshape(-1, block * block)
    n_b = cb.sum(1)
    use = n_b >= max(2, block * block // 4)
    if use.sum() < 2:
        return 0.0, 0
    vals = r[covered]
    mean, var = float(vals.mean()), float(vals.var())
    if var <= 0:
        return 0.0, 0
    m_b = (rb * cb).sum(1)[use] / n_b[use]
    return float(np.sum(n_b[use] * (m_b - mean) ** 2)) / var, int(use.sum()) - 1


_std_residuals = eqx.filter_jit(lambda o, v: o.whitened_residuals(v) / jnp.sqrt(o.weight))
_render = eqx.filter_jit(lambda o, v: o.render(v))
