"""Initial pose from the observations, and checks that the data can inform the model.

Both go through the observation contract (:meth:`~bayesshape.obs.Observation.pose_anchor`,
:meth:`~bayesshape.obs.Observation.check_units`), so user-written observations take part.
"""

from __future__ import annotations

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..prior.build import similarity_transform
from ..prior.model import ShapeModel

__all__ = ["initial_pose", "check_units", "mean_centroid", "problem_fields"]


def mean_centroid(model: ShapeModel) -> np.ndarray:
    """The centroid of the model mean: of its enclosed volume for a closed mesh, else of its vertices."""
    mean = np.asarray(model.mean, dtype=np.float64)
    if model.faces is None:
        return mean.mean(0)
    tri = mean[np.asarray(model.faces)]
    vol = np.einsum("fi,fi->f", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])) / 6.0
    if abs(vol.sum()) < 1e-9:
        return mean.mean(0)
    return (vol[:, None] * tri.sum(1) / 4.0).sum(0) / vol.sum()


def initial_pose(model: ShapeModel, observations, pose: str | None):
    """Initial ``(rotvec, translation, log_scale)`` mapping the model frame to the world.

    From the observations' :meth:`~bayesshape.obs.Observation.pose_anchor`:

    * 3D correspondences (>= 3 points, e.g. 3D landmarks): the similarity (or rigid) transform
      of the model mean's points onto the observed ones (Umeyama);
    * otherwise 2D anchors: the translation that brings each anchor's model point onto its
      observed pixel in every view (damped Gauss-Newton; directions no view constrains stay
      at zero). Rotation starts at the identity.
    """
    zero = (np.zeros(3), np.zeros(3), 0.0)
    if pose is None:
        return zero
    c = mean_centroid(model)
    mean = np.asarray(model.mean, dtype=np.float64)
    anchors = [a for a in (o.pose_anchor(mean, c) for o in observations) if a is not None]
    src = [a.model_points for a in anchors if a.world_points is not None]
    if src and sum(len(s) for s in src) >= 3:
        from scipy.spatial.transform import Rotation

        dst = np.concatenate([a.world_points for a in anchors if a.world_points is not None])
        s, rot, t = similarity_transform(np.concatenate(src), dst, scale=(pose == "similarity"))
        # world = s R (x - c) + c + T  =>  T = s R c + t - c
        return Rotation.from_matrix(rot).as_rotvec(), s * rot @ c + t - c, float(np.log(s))
    pairs = [
        (a.view, np.asarray(a.model_points, np.float64)[0], np.asarray(a.pixels, np.float64)[0])
        for a in anchors
        if a.view is not None
    ]
    if not pairs:
        return zero

    views = tuple(v for v, _, _ in pairs)
    points = tuple(jnp.asarray(p3) for _, p3, _ in pairs)
    pixels = tuple(jnp.asarray(q) for _, _, q in pairs)
    t = _anchor_translation(views, points, pixels)
    return np.zeros(3), np.asarray(t, dtype=np.float64), 0.0


@eqx.filter_jit
def _anchor_translation(views, points, pixels):
    """The translation that brings each model point onto its pixel in its view: ten damped
    Gauss-Newton steps from zero, compiled as one program (views of the same layout share it)."""

    def resid(t):
        return jnp.concatenate([v.project(p3[None, :] + t[None, :])[0] - q for v, p3, q in zip(views, points, pixels)])

    t = jnp.zeros(3, dtype=points[0].dtype)
    jac = jax.jacfwd(resid)
    for _ in range(10):
        r, j = resid(t), jac(t)
        h = j.T @ j
        lam = 1e-6 * jnp.trace(h) + 1e-9
        t = t - jnp.linalg.solve(h + lam * jnp.eye(3, dtype=h.dtype), j.T @ r)
    return t


def check_units(model: ShapeModel, observations) -> None:
    """Raise ``ValueError`` when observations and model disagree in scale by > 5x (units);
    warn when the model itself looks like it is not in mm."""
    mean = np.asarray(model.mean, dtype=np.float64)
    extent = float(np.ptp(mean, axis=0).max())
    if extent < 1.0:
        warnings.warn(
            f"the model's mean shape spans only {extent:.3g} units; bayesshape works in mm "
            "(a model in metres would look like this)",
            UserWarning,
            stacklevel=3,
        )
    for o in observations:
        o.check_units(mean)


def problem_fields(model: ShapeModel, bound, pose_prior, likelihood) -> dict:
    """The fields a :class:`~bayesshape.inference._problem.Problem` takes after its observations:
    the rotation centre, the initial pose (rotation vector, translation, log scale) as arrays, the
    pose prior without its initial pose, and the inferred noise's sd (or None)."""
    import dataclasses

    if pose_prior is None:
        rv, tr, ls = np.zeros(3), np.zeros(3), 0.0
    elif isinstance(pose_prior.initial, tuple):
        rv, tr, ls = pose_prior.initial
    else:
        rv, tr, ls = initial_pose(model, bound, pose_prior.kind)
    dt = model.variance.dtype
    return {
        "center": jnp.asarray(mean_centroid(model), dtype=dt),
        "init_rotvec": jnp.asarray(rv, dtype=dt),
        "init_translation": jnp.asarray(tr, dtype=dt),
        "init_log_scale": jnp.asarray(ls, dtype=dt),
        # the initial pose lives in the arrays above; kept out of the static prior, problems that differ
        # only in it share one compilation
        "pose_prior": None if pose_prior is None else dataclasses.replace(pose_prior, initial=None),
        "noise_sd": likelihood.noise_sd if likelihood.infer_noise else None,
    }
