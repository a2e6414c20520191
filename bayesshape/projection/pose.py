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

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

__all__ = ["Pose", "rotation_matrix"]


def rotation_matrix(rotvec: Float[Array, "3"]) -> Float[Array, "3 3"]:
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

    rotvec: Float[Array, "3"]
    translation: Float[Array, "3"]
    log_scale: Float[Array, ""]

    @classmethod
    def identity(cls, dtype=None) -> Pose:
        """The identity pose."""
        z = jnp.zeros(3, dtype=dtype)
        return cls(z, z, jnp.zeros((), dtype=z.dtype))

    def matrix(self) -> Float[Array, "3 3"]:
        """``s R``."""
        return jnp.exp(self.log_scale) * rotation_matrix(self.rotvec)

    def apply(self, points: Float[Array, "n 3"], center: Float[Array, "3"]) -> Float[Array, "n 3"]:
        """Transform ``(n, 3)`` points (mm) about ``center``."""
        m = self.matrix()
        return (points - center[None, :]) @ m.T + (center + self.translation)[None, :]
