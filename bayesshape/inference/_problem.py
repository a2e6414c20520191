"""The posterior density as a function of one whitened parameter vector.

Every unknown is one entry of ``theta ~ N(0, I)``:

* ``theta[:K]``: the shape coefficients ``alpha`` (already standard normal);
* rigid pose: rotation ``r = rotation_sd * theta[K:K+3]`` (radians, a rotation
  vector composed *after* the initial rotation) and translation
  ``t = translation_sd * theta[K+3:K+6]`` (mm, added to the initial translation);
* similarity: ``log_scale = init + scale_sd * theta[K+6]``;
* inferred noise scales: ``sigma_i = sigma_i0 * exp(noise_sd * theta_i)`` per observation.

So the prior is exactly ``N(0, I)`` and its scales are folded into the map from
``theta`` to the shape. NUTS, SVI and the Laplace approximation all work on
``theta``, where the posterior is close to unit scale (well conditioned).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..prior.model import ShapeModel
from ..projection.pose import RigidPose, SimilarityPose, rotation_matrix, transform_points

__all__ = ["Problem", "fixed_problem"]


class Problem(eqx.Module):
    """The model, the bound observations, the pose prior and the noise prior, as one log density
    over a whitened parameter vector ``theta`` (see the module docstring)."""

    model: ShapeModel
    observations: tuple
    center: Float[Array, 3]
    init_rotvec: Float[Array, 3]
    init_translation: Float[Array, 3]
    init_log_scale: Float[Array, ""]
    #: the pose prior (:class:`~bayesshape.RigidPose`, :class:`~bayesshape.SimilarityPose`) or None
    pose_prior: RigidPose | SimilarityPose | None = eqx.field(static=True)
    #: the sd of each inferred log noise scale, or None (noise scales fixed)
    noise_sd: float | None = eqx.field(static=True)
    #: model vertices kept by the coarse likelihood mesh, or None
    likelihood_index: Array | None = None
    #: per observation: does it see the coarse mesh?
    on_coarse: tuple = eqx.field(static=True, default=())

    # ----------------------------------------------------------- layout
    @property
    def pose(self) -> str | None:
        """``None``, ``"rigid"`` or ``"similarity"``."""
        return None if self.pose_prior is None else self.pose_prior.kind

    @property
    def n_modes(self) -> int:
        return self.model.n_modes

    @property
    def n_pose(self) -> int:
        return 0 if self.pose_prior is None else self.pose_prior.n_params

    @property
    def infer_noise(self) -> bool:
        return self.noise_sd is not None

    @property
    def n_noise(self) -> int:
        return len(self.observations) if self.infer_noise else 0

    @property
    def dim(self) -> int:
        return self.n_modes + self.n_pose + self.n_noise

    def names(self) -> list[str]:
        n = [f"alpha[{i}]" for i in range(self.n_modes)]
        if self.pose:
            n += ["rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z"]
        if self.pose == "similarity":
            n += ["log_scale"]
        n += [f"log_noise[{i}]" for i in range(self.n_noise)]
        return n

    # ------------------------------------------------------------ mapping
    def alpha(self, theta):
        return theta[: self.n_modes]

    def pose_params(self, theta):
        """``(rotation matrix, translation (mm), scale)`` of the full pose for ``theta``."""
        k = self.n_modes
        dt = theta.dtype
        r0 = rotation_matrix(self.init_rotvec.astype(dt))
        prior = self.pose_prior
        if prior is None:
            return r0, self.init_translation.astype(dt), jnp.exp(self.init_log_scale.astype(dt))
        rot = rotation_matrix(prior.rotation_sd * theta[k : k + 3]) @ r0
        trans = self.init_translation.astype(dt) + prior.translation_sd * theta[k + 3 : k + 6]
        ls = self.init_log_scale.astype(dt)
        if prior.kind == "similarity":
            ls = ls + prior.scale_sd * theta[k + 6]
        return rot, trans, jnp.exp(ls)

    def vertices(self, theta: Float[Array, " dim"]) -> Float[Array, "n_vert 3"]:
        """World-frame vertices (mm) for ``theta``."""
        rot, trans, scale = self.pose_params(theta)
        return transform_points(self.model.instance(self.alpha(theta)), rot, trans, scale, self.center)

    def observation_vertices(self, vertices) -> list:
        """The vertices each observation sees: the model's, or the coarse likelihood mesh's
        (a row subset of them)."""
        if self.likelihood_index is None:
            return [vertices] * len(self.observations)
        coarse = vertices[self.likelihood_index]
        return [coarse if c else vertices for c in self.on_coarse]

    def sigmas(self, theta):
        if self.noise_sd is None:
            return [None] * len(self.observations)
        z = theta[self.n_modes + self.n_pose :]
        return [o.sigma * jnp.exp(self.noise_sd * z[i]) for i, o in enumerate(self.observations)]

    # ------------------------------------------------------------ density
    def log_likelihood(self, theta):
        vs = self.observation_vertices(self.vertices(theta))
        total = jnp.zeros((), dtype=theta.dtype)
        for o, s, v in zip(self.observations, self.sigmas(theta), vs):
            total = total + o.log_likelihood(v, sigma=s)
        return total

    def log_density(self, theta):
        """Unnormalised log posterior; ``-inf`` (never NaN) where the likelihood is undefined."""
        lp = -0.5 * jnp.sum(theta * theta) + self.log_likelihood(theta)
        return jnp.where(jnp.isnan(lp), -jnp.inf, lp)

    def vertices_batch(self, thetas, batch_size: int = 64):
        """``(n, n_vert, 3)`` vertices for ``(n, dim)`` parameter vectors."""
        return jax.lax.map(self.vertices, thetas, batch_size=batch_size)

    def with_observations(self, observations) -> Problem:
        """A copy with other (bound) observations of the same layout."""
        return eqx.tree_at(lambda p: p.observations, self, tuple(observations))


def fixed_problem(model: ShapeModel, observations) -> Problem:
    """A problem of the shape alone: pose fixed at the identity, noise scales fixed."""
    dt = model.variance.dtype
    z = jnp.zeros(3, dt)
    return Problem(model, tuple(observations), z, z, z, jnp.zeros((), dt), None, None)
