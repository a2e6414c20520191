"""The posterior density of an assembly (:class:`~bayesshape.prior.Assembly`) over one whitened vector.

``theta = (alpha, global pose, posture, noise)``: the combined shape coefficients (grouped by
object), the assembly's global pose (as :class:`~bayesshape.inference._problem.Problem`), then
``z`` with the joint increments ``d = mean + L z`` (``L`` the posture prior's Cholesky factor),
so the prior is ``N(0, I)`` as for one object.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..obs.assembly import OnObject
from ..prior.assembly import Assembly
from ..projection.pose import as_pose_prior, rotation_matrix, transform_points
from ._problem import Problem
from .config import LikelihoodOptions
from .init import check_units, problem_fields

__all__ = ["AssemblyProblem", "build_assembly_problem", "object_transforms"]


def object_transforms(increments: Float[Array, "n_joint 6"], joints: Float[Array, "n_joint 3"]):
    """``(K, 3, 3)`` rotations and ``(K, 3)`` translations placing each object (``x -> R x + t``) for
    the joint increments (module doc of :mod:`bayesshape.prior.assembly`). The chain is composed in
    order; object 0 stays where it is."""
    dt = increments.dtype
    rots = [jnp.eye(3, dtype=dt)]
    trans = [jnp.zeros(3, dtype=dt)]
    for i in range(increments.shape[0]):
        r = rotation_matrix(increments[i, :3])
        p = joints[i].astype(dt)
        # J(x) = r (x - p) + p + t;  T_i = T_{i-1} o J
        local_t = p + increments[i, 3:] - r @ p
        rots.append(rots[-1] @ r)
        trans.append(rots[-2] @ local_t + trans[-1])
    return jnp.stack(rots), jnp.stack(trans)


class AssemblyProblem(Problem):
    """:class:`Problem` of an assembly: the model is the combined one, and the vertices of each object
    are placed by the posture before the global pose (module doc)."""

    object_ids: Array | None = None
    joints: Array | None = None
    posture_mean: Array | None = None
    posture_chol: Array | None = None
    object_names: tuple = eqx.field(static=True, default=())
    #: each object's first coefficient, and the total
    mode_offsets: tuple = eqx.field(static=True, default=())

    @property
    def n_posture(self) -> int:
        return 0 if self.posture_mean is None else int(self.posture_mean.size)

    @property
    def n_pose(self) -> int:
        return (0 if self.pose_prior is None else self.pose_prior.n_params) + self.n_posture

    def names(self) -> list[str]:
        base = super().names()
        k = self.n_modes + self.n_pose - self.n_posture
        post = [
            f"posture[{a}/{b}].{c}"
            for a, b in zip(self.object_names[:-1], self.object_names[1:])
            for c in ("rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z")
        ]
        return base[:k] + post + base[k:]

    def increments(self, theta) -> Float[Array, "n_joint 6"]:
        """The joint increments ``(n_joint, 6)`` (rotation vector rad, translation mm) for ``theta``."""
        k = self.n_modes + self.n_pose - self.n_posture
        z = theta[k : k + self.n_posture]
        dt = theta.dtype
        assert self.posture_mean is not None and self.posture_chol is not None
        return self.posture_mean.astype(dt) + (self.posture_chol.astype(dt) @ z).reshape(-1, 6)

    def object_transforms(self, theta):
        """Per-object ``(K, 3, 3)`` rotations and ``(K, 3)`` translations in the assembly's frame (before
        the global pose)."""
        return object_transforms(self.increments(theta), self.joints)

    def vertices(self, theta):
        x = self.model.instance(self.alpha(theta))
        rots, trans = self.object_transforms(theta)
        ids = self.object_ids
        x = jnp.einsum("nij,nj->ni", rots[ids], x) + trans[ids]
        rot, tr, scale = self.pose_params(theta)
        return transform_points(x, rot, tr, scale, self.center)


def _reference_shapes(assembly: Assembly, model, n_sd: float = 3.0, per_object: int = 3) -> np.ndarray:
    """The combined mean and ``+-n_sd`` along each object's leading modes, for binding buffers."""
    shapes = [np.asarray(model.mean)]
    for i in range(assembly.n_objects):
        lo = assembly.mode_offsets[i]
        for j in range(min(per_object, assembly.models[i].n_modes)):
            for s in (-n_sd, n_sd):
                a = jnp.zeros(model.n_modes, dtype=model.variance.dtype).at[lo + j].set(s)
                shapes.append(np.asarray(model.instance(a)))
    return np.stack(shapes)


def build_assembly_problem(assembly: Assembly, observations, pose=None, likelihood: LikelihoodOptions | None = None):
    """Bind the observations to the assembly (each :class:`~bayesshape.obs.OnObject` to its object's
    mesh, the others to the combined mesh) and assemble the log density. Returns ``(problem, bind)``
    as :func:`~bayesshape.inference.build_problem`."""
    likelihood = likelihood or LikelihoodOptions()
    if likelihood.coarse_faces is not None:
        raise ValueError("coarse_faces: not available for an assembly; coarsen each object's model instead")
    if likelihood.model_error_scale != 1.0:
        raise ValueError("model_error_scale: not available for an assembly; scale each object's model error")
    pose_prior = as_pose_prior(pose)
    model = assembly.combined_model()
    refs = _reference_shapes(assembly, model)
    faces = None if model.faces is None else np.asarray(model.faces)
    off = assembly.vertex_offsets

    def bind(obs):
        out = []
        for o in obs:
            if isinstance(o, OnObject):
                i = assembly.index(o.name)
                m = assembly.models[i]
                f = None if m.faces is None else np.asarray(m.faces)
                out.append(o.locate(off[i], off[i + 1]).bind(f, refs[:, off[i] : off[i + 1]]))
            else:
                out.append(o.bind(faces, refs))
        return out

    bound = bind(observations)
    check_units(model, bound)
    dt = model.variance.dtype
    problem = AssemblyProblem(
        model,
        tuple(bound),
        **problem_fields(model, bound, pose_prior, likelihood),
        object_ids=jnp.asarray(assembly.object_ids()),
        joints=jnp.asarray(assembly.joints, dtype=dt),
        posture_mean=jnp.asarray(assembly.posture.mean, dtype=dt),
        posture_chol=jnp.asarray(np.linalg.cholesky(np.asarray(assembly.posture.covariance, np.float64)), dtype=dt),
        object_names=assembly.names,
        mode_offsets=assembly.mode_offsets,
    )
    return problem, bind
