"""Initial pose from the observations, and checks that the data can inform the model."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from ..obs import DRR, Contour, Landmarks2D, Landmarks3D, Silhouette, SurfacePoints
from ..prior.build import similarity_transform
from ..prior.model import ShapeModel

__all__ = ["initial_pose", "check_units"]


def _mean_centroid(model: ShapeModel) -> np.ndarray:
    mean = np.asarray(model.mean, dtype=np.float64)
    if model.faces is None:
        return mean.mean(0)
    tri = mean[np.asarray(model.faces)]
    vol = np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0
    if abs(vol.sum()) < 1e-9:
        return mean.mean(0)
    return (vol[:, None] * tri.sum(1) / 4.0).sum(0) / vol.sum()


def _observed_2d(o) -> np.ndarray | None:
    """The observed pixel ``(row, col)`` where the model's centroid should project, or None."""
    if isinstance(o, Contour):
        d = np.asarray(o.distance)
        inside = d <= 0
        if inside.any() and not inside.all():
            r, c = np.nonzero(inside)
            return np.array([r.mean(), c.mean()])
        return np.asarray(o.points).mean(0)
    if isinstance(o, Silhouette):
        return np.argwhere(np.asarray(o.mask)).mean(0)
    if isinstance(o, DRR):
        img = np.clip(np.asarray(o.image), 0, None)
        if img.sum() <= 0:
            return None
        g = np.indices(img.shape).reshape(2, -1)
        w = img.reshape(-1)
        return (g * w).sum(1) / w.sum()
    return None


def initial_pose(model: ShapeModel, observations, pose: str | None):
    """Initial ``(rotvec, translation, log_scale)`` mapping the model frame to the world.

    * 3D landmarks (>= 3): the similarity (or rigid) transform of the model mean's
      landmarks onto the observed points (Umeyama).
    * otherwise 2D data: the translation that brings the model's centroid onto the
      observed silhouette / intensity centroids in every view (damped Gauss-Newton;
      directions no view constrains stay at zero). Rotation starts at the identity.
    """
    c = _mean_centroid(model)
    zero = (np.zeros(3), np.zeros(3), 0.0)
    if pose is None:
        return zero
    lm3 = [o for o in observations if isinstance(o, Landmarks3D)]
    if lm3:
        ids = np.concatenate([np.asarray(o.ids) for o in lm3])
        pts = np.concatenate([np.asarray(o.points) for o in lm3])
        if len(ids) >= 3:
            src = np.asarray(model.mean, dtype=np.float64)[ids]
            s, rot, t = similarity_transform(src, pts, scale=(pose == "similarity"))
            from scipy.spatial.transform import Rotation

            rv = Rotation.from_matrix(rot).as_rotvec()
            # world = s R (x - c) + c + T  =>  T = s R c + t - c
            trans = s * rot @ c + t - c
            return rv, trans, float(np.log(s))
    pairs = []
    for o in observations:
        if isinstance(o, Landmarks2D):
            p3 = np.asarray(model.mean, dtype=np.float64)[np.asarray(o.ids)].mean(0)
            pairs.append((o.view, p3, np.asarray(o.pixels).mean(0)))
            continue
        q = _observed_2d(o)
        if q is not None:
            pairs.append((o.view, c, q))
    if not pairs:
        return zero

    def resid(t):
        return jnp.concatenate([v.project(jnp.asarray(p3 + 0.0)[None, :] + t[None, :])[0] - jnp.asarray(q)
                                for v, p3, q in pairs])

    t = jnp.zeros(3)
    jac = jax.jacfwd(resid)
    for _ in range(10):
        r, j = resid(t), jac(t)
        h = j.T @ j
        lam = 1e-6 * jnp.trace(h) + 1e-9
        t = t - jnp.linalg.solve(h + lam * jnp.eye(3, dtype=h.dtype), j.T @ r)
    return np.zeros(3), np.asarray(t, dtype=np.float64), 0.0


def _span(points) -> float:
    """Largest coordinate extent of a point set."""
    return float(np.ptp(np.asarray(points), axis=0).max())


def _check_ratio(obs_span: float, mod_span: float, message) -> None:
    """``ValueError(message(ratio))`` when observed and model extents differ by more than 5x."""
    ratio = obs_span / max(mod_span, 1e-12)
    if not 0.2 < ratio < 5.0:
        raise ValueError(message(ratio))


def check_units(model: ShapeModel, observations) -> None:
    """Raise ``ValueError`` when observations and model disagree in scale by > 5x (units)."""
    mean = np.asarray(model.mean, dtype=np.float64)
    extent = float(np.ptp(mean, axis=0).max())
    if extent < 1.0:
        warnings.warn(
            f"the model's mean shape spans only {extent:.3g} units; bayesshape works in mm "
            "(a model in metres would look like this)", UserWarning, stacklevel=3)
    for o in observations:
        if isinstance(o, Landmarks3D) and o.ids.shape[0] >= 2:
            obs_span, mod_span = _span(o.points), _span(mean[np.asarray(o.ids)])
            _check_ratio(obs_span, mod_span, lambda r: (
                f"Landmarks3D: the observed landmarks span {obs_span:.4g} but the model's landmarks span "
                f"{mod_span:.4g} (ratio {r:.3g}); model and observations must share units (mm). "
                "Metres against mm give a ratio of 1000 or 1/1000."))
        if isinstance(o, SurfacePoints):
            obs_span = _span(o.points)
            if obs_span > 5.0 * extent:
                raise ValueError(
                    f"SurfacePoints: the observed points span {obs_span:.4g} mm but the whole model spans "
                    f"{extent:.4g} mm; check the units (mm expected)")
        if isinstance(o, (Contour, Silhouette)):
            name = type(o).__name__
            obs_span = _span(o.points if isinstance(o, Contour) else o.pixels)
            mod_span = _span(o.view.project(jnp.asarray(mean)))
            _check_ratio(obs_span, mod_span, lambda r: (
                f"{name}: the observed contour spans {obs_span:.1f} px but the model's mean shape projects to "
                f"{mod_span:.1f} px in that view (ratio {r:.3g}); check the units of the model (mm) and the "
                "view's pixel spacing (mm per pixel)"))
