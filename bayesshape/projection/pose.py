"""Rigid and similarity pose of a shape, parameterised smoothly for gradient-based sampling.

Parameterisation: ``x' = s R (x - c) + c + t`` with

* ``R = exp([r]_x)``, the rotation vector ``r`` (axis times angle, radians);
* ``t`` a translation in mm;
* ``s = exp(log_scale)``;
* ``c`` the rotation centre (the model mean's centroid, fixed).

Why: the rotation vector is an unconstrained point in R^3, smooth everywhere it
is used (angles well below pi around the initial guess), without the gimbal lock
of Euler angles or the unit-norm constraint and double cover of quaternions, so
NUTS and gradient optimisers move in a flat space. Rotating about the shape's own
centroid decouples rotation from translation (a small rotation does not swing the
shape across the image), which keeps the posterior close to axis-aligned and well
conditioned. The log scale keeps scale positive and symmetric (x1.1 and /1.1 are
equally far from 1).
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["Pose", "RigidPose", "SimilarityPose", "as_pose_prior", "rotation_matrix", "transform_points"]


def rotation_matrix(rotvec: Float[Array, 3]) -> Float[Array, "3 3"]:
    """Rodrigues' formula, smooth (and with exact gradients) through ``rotvec = 0``."""
    theta2 = jnp.sum(rotvec * rotvec)
    small = theta2 < 1e-8
    safe2 = jnp.where(small, 1.0, theta2)
    theta = jnp.sqrt(safe2)
    a = jnp.where(small, 1.0 - theta2 / 6.0, jnp.sin(theta) / theta)
    b = jnp.where(small, 0.5 - theta2 / 24.0, (1.0 - jnp.cos(theta)) / safe2)
    x, y, z = rotvec[0], rotvec[1], rotvec[2]
    zero = jnp.zeros_like(x)
    k = jnp.stack([jnp.stack([zero, -z, y]), jnp.stack([z, zero, -x]), jnp.stack([-y, x, zero])])
    eye = jnp.eye(3, dtype=rotvec.dtype)
    return eye + a * k + b * (k @ k)


class Pose(eqx.Module):
    """Rigid (optionally similarity) transform about a fixed centre.

    Attributes:
        rotvec: ``(3,)`` rotation vector, radians.
        translation: ``(3,)`` mm.
        log_scale: scalar, ``log`` of the isotropic scale (0 for rigid).

    Example:
        >>> pose = Pose(jnp.array([0.0, 0.0, 0.1]), jnp.array([5.0, 0.0, 0.0]), jnp.array(0.0))
        >>> moved = pose.apply(vertices, center=vertices.mean(0))     # doctest: +SKIP
    """

    rotvec: Float[Array, 3]
    translation: Float[Array, 3]
    log_scale: Float[Array, ""]

    @classmethod
    def identity(cls, dtype=None) -> Pose:
        """The identity pose."""
        z = jnp.zeros(3, dtype=dtype)
        return cls(z, z, jnp.zeros((), dtype=z.dtype))

    def matrix(self) -> Float[Array, "3 3"]:
        """``s R``."""
        return jnp.exp(self.log_scale) * rotation_matrix(self.rotvec)

    def apply(self, points: Float[Array, "n 3"], center: Float[Array, 3]) -> Float[Array, "n 3"]:
        """Transform ``(n, 3)`` points (mm) about ``center``."""
        return transform_points(points, rotation_matrix(self.rotvec), self.translation, jnp.exp(self.log_scale), center)


def transform_points(points, rotation, translation, scale, center):
    """``scale * rotation @ (x - center) + center + translation`` for ``(n, 3)`` points: the one
    pose transform of the package (:meth:`Pose.apply` and the inference parameterisation)."""
    c = center.astype(points.dtype)
    return scale * (points - c[None, :]) @ rotation.T + (c + translation)[None, :]


def _initial(initial):
    """``(rotvec, translation, log_scale)`` as float64 numpy values from a :class:`Pose` or a triple."""
    import numpy as np

    if initial is None:
        return None
    if isinstance(initial, Pose):
        initial = (initial.rotvec, initial.translation, initial.log_scale)
    try:
        rv, tr, ls = initial
        rv, tr, ls = np.asarray(rv, np.float64), np.asarray(tr, np.float64), float(ls)
    except (TypeError, ValueError):
        raise ValueError("initial: expected a Pose or (rotvec (3,) rad, translation (3,) mm, log_scale)") from None
    if (
        rv.shape != (3,)
        or tr.shape != (3,)
        or not (np.all(np.isfinite(rv)) and np.all(np.isfinite(tr)) and np.isfinite(ls))
    ):
        raise ValueError(
            f"initial: expected finite rotvec (3,) rad, translation (3,) mm and log_scale; got {rv}, {tr}, {ls}"
        )
    return (tuple(rv.tolist()), tuple(tr.tolist()), ls)


def _sd(value, name: str) -> float:
    from .._checks import as_positive

    return as_positive(value, name)


@dataclasses.dataclass(frozen=True)
class RigidPose:
    """A prior on the rigid pose of the shape in the world (the views' frame).

    The pose is ``R(r) R0`` about the model mean's centroid and ``t0 + t``, with the rotation
    vector ``r ~ N(0, rotation_sd^2 I)`` (radians) and ``t ~ N(0, translation_sd^2 I)`` (mm)
    around an initial pose ``(R0, t0)``.

    Args:
        rotation_sd: prior sd of each rotation-vector component, radians.
        translation_sd: prior sd of each translation component, mm.
        initial: the initial pose, a :class:`Pose` or ``(rotvec, translation, log_scale)``;
            default: estimated from the observations (each observation's
            :meth:`~bayesshape.obs.Observation.pose_anchor`: 3D landmarks by a Procrustes fit,
            2D data by centring the model on the observed outlines).
    """

    rotation_sd: float = 0.1
    translation_sd: float = 10.0
    initial: Pose | tuple | None = None

    kind = "rigid"
    n_params = 6

    def __post_init__(self):
        object.__setattr__(self, "rotation_sd", _sd(self.rotation_sd, "rotation_sd"))
        object.__setattr__(self, "translation_sd", _sd(self.translation_sd, "translation_sd"))
        object.__setattr__(self, "initial", _initial(self.initial))

    @property
    def scale_sd(self) -> float:
        return 0.0


@dataclasses.dataclass(frozen=True)
class SimilarityPose:
    """A prior on a similarity pose: :class:`RigidPose` and an isotropic scale
    ``exp(log_scale0 + s)``, ``s ~ N(0, scale_sd^2)``.

    Args:
        rotation_sd: as :class:`RigidPose`.
        translation_sd: as :class:`RigidPose`.
        initial: as :class:`RigidPose`.
        scale_sd: prior sd of the log scale (0.05: about 5%).
    """

    rotation_sd: float = 0.1
    translation_sd: float = 10.0
    scale_sd: float = 0.05
    initial: Pose | tuple | None = None

    kind = "similarity"
    n_params = 7

    def __post_init__(self):
        object.__setattr__(self, "rotation_sd", _sd(self.rotation_sd, "rotation_sd"))
        object.__setattr__(self, "translation_sd", _sd(self.translation_sd, "translation_sd"))
        object.__setattr__(self, "scale_sd", _sd(self.scale_sd, "scale_sd"))
        object.__setattr__(self, "initial", _initial(self.initial))


PosePrior = RigidPose | SimilarityPose


def as_pose_prior(pose) -> PosePrior | None:
    """A pose prior from itself, its name (``"rigid"``, ``"similarity"``: the defaults) or None
    (the pose is fixed at the identity: the model frame is the world frame)."""
    if pose is None or isinstance(pose, (RigidPose, SimilarityPose)):
        return pose
    if pose == "rigid":
        return RigidPose()
    if pose == "similarity":
        return SimilarityPose()
    raise ValueError(
        f"pose: expected bs.RigidPose(...), bs.SimilarityPose(...), 'rigid', 'similarity' or None, got {pose!r}"
    )
