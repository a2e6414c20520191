"""Assemblies of several objects (vertebrae, the bones of a joint), each with its own shape model,
linked by a prior on their relative poses (the posture).

Kinematics. The objects form a chain ``0, 1, ..., K-1`` in the order given (for a lumbar spine
L2 to L5, top to bottom). Object ``i >= 1`` moves relative to object ``i-1`` about the joint
point ``p_i`` between them (mm, in the frame of the natural posture) by a rotation vector
``r_i`` (radians) and a translation ``t_i`` (mm)::

    J_i(x) = R(r_i) (x - p_i) + p_i + t_i,        T_0 = I,   T_i = T_{i-1} o J_i,

and object ``i``'s points are placed at ``T_i(x)``. So ``(r_i, t_i) = 0`` is the natural posture
(the meshes as given), ``R(r_i)`` is exactly the rotation of object ``i`` relative to object
``i-1``, and bending one level carries every object below it along. A global rigid pose of the
whole assembly comes on top (the ``pose`` argument of :func:`bayesshape.infer`).

Posture prior. The stacked increments ``d = (r_1, t_1, ..., r_{K-1}, t_{K-1})`` are Gaussian,
``d ~ N(mean, covariance)`` (:class:`PosturePrior`): independent levels with stated ranges
(:meth:`PosturePrior.independent`) or learned from example postures
(:meth:`PosturePrior.from_postures`). The rotation vector is a smooth, unconstrained
parameterisation (no gimbal lock), so the prior is a Gaussian in a flat space.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import is_concrete
from .model import ShapeModel

__all__ = ["PosturePrior", "Assembly", "without_rigid_motion"]


def without_rigid_motion(model: ShapeModel) -> ShapeModel:
    """The model with the rigid motions of its mean taken out of its variation: the covariance
    ``P C P`` with ``P`` the projection orthogonal to the six fields of an infinitesimal rigid motion
    (three translations, three rotations about the mean's centroid), re-diagonalised.

    In an assembly a shape mode that moves a whole object rigidly (a GP model of a reference has
    them) is the same thing as a change of posture, so the posture would not be identifiable; a
    model built from Procrustes-aligned shapes has almost none, and loses almost nothing here.
    """
    mean = np.asarray(model.mean, np.float64)
    n = mean.shape[0]
    d = mean - mean.mean(0)
    fields = np.zeros((n, 3, 6))
    fields[:, :, :3] = np.eye(3)
    fields[:, :, 3] = np.stack([np.zeros(n), -d[:, 2], d[:, 1]], 1)  # e_x cross d
    fields[:, :, 4] = np.stack([d[:, 2], np.zeros(n), -d[:, 0]], 1)  # e_y cross d
    fields[:, :, 5] = np.stack([-d[:, 1], d[:, 0], np.zeros(n)], 1)  # e_z cross d
    q, _ = np.linalg.qr(fields.reshape(3 * n, 6))
    b = np.asarray(model.basis, np.float64) * np.sqrt(np.asarray(model.variance, np.float64))[None]
    b = b - q @ (q.T @ b)
    u, sv, _ = np.linalg.svd(b, full_matrices=False)
    keep = sv**2 > 1e-12 * max(float(sv[0]) ** 2, 1e-300)
    return ShapeModel(
        mean,
        u[:, keep],
        sv[keep] ** 2,
        noise_variance=float(model.noise_variance),
        faces=model.faces,
        total_variance=float(model.total_variance),
        vertex_noise=model.vertex_noise,
    )


class PosturePrior(eqx.Module):
    """A Gaussian prior on the relative poses of neighbouring objects.

    Attributes:
        mean: ``(n_levels, 6)`` mean increment of each level: rotation vector (radians, about the
            joint, in the upper object's frame) then translation (mm).
        covariance: ``(6 n_levels, 6 n_levels)`` covariance of the stacked increments, positive
            definite.

    Example:
        >>> import numpy as np
        >>> prior = PosturePrior.independent(3, rotation_deg=(1.5, 3.0, 1.0), translation_mm=0.5)
        >>> prior.covariance.shape
        (18, 18)
    """

    mean: Float[Array, "n_levels 6"]
    covariance: Float[Array, "n_par n_par"]

    def __check_init__(self):
        if not (is_concrete(self.mean) and is_concrete(self.covariance)):
            return
        m, c = np.asarray(self.mean), np.asarray(self.covariance)
        if m.ndim != 2 or m.shape[1] != 6:
            raise ValueError(
                f"posture mean: expected shape (n_levels, 6) (rotation vector, translation), got {m.shape}"
            )
        n = 6 * m.shape[0]
        if c.shape != (n, n):
            raise ValueError(f"posture covariance: expected shape ({n}, {n}) for {m.shape[0]} levels, got {c.shape}")
        if not (np.all(np.isfinite(m)) and np.all(np.isfinite(c))):
            raise ValueError("posture prior: mean and covariance must be finite")
        if not np.allclose(c, c.T, rtol=1e-8, atol=1e-12 * max(1.0, float(np.abs(c).max(initial=0.0)))):
            raise ValueError("posture covariance: not symmetric")
        if n:
            low = float(np.linalg.eigvalsh(c).min())
            if not low > 0:
                raise ValueError(
                    f"posture covariance: not positive definite (smallest eigenvalue {low:.3g}); every "
                    "rotation and translation of every level needs a positive variance"
                )

    @property
    def n_levels(self) -> int:
        return int(self.mean.shape[0])

    def cholesky(self) -> Float[Array, "n_par n_par"]:
        """The lower Cholesky factor of :attr:`covariance`."""
        return jnp.linalg.cholesky(self.covariance)

    @classmethod
    def independent(
        cls,
        n_levels: int,
        *,
        rotation_deg: float | Sequence[float] = 2.0,
        translation_mm: float | Sequence[float] = 0.5,
        mean=None,
    ) -> PosturePrior:
        """Independent levels and axes with the stated sds.

        Args:
            n_levels: number of joints (objects - 1).
            rotation_deg: sd of the relative rotation about each axis of the assembly's frame,
                degrees: one value, or three (about x, y, z).
            translation_mm: sd of the relative translation along each axis, mm: one or three.
            mean: ``(n_levels, 6)`` mean increments; default zero (the natural posture).
        """
        n = int(n_levels)
        if n < 0:
            raise ValueError(f"n_levels: expected >= 0, got {n_levels}")
        rot = np.broadcast_to(np.radians(np.asarray(rotation_deg, np.float64)), (3,))
        tr = np.broadcast_to(np.asarray(translation_mm, np.float64), (3,))
        sd = np.concatenate([rot, tr])
        if not np.all(np.isfinite(sd)) or np.any(sd <= 0):
            raise ValueError(f"rotation_deg and translation_mm: expected positive sds, got {rot} rad and {tr} mm")
        m = np.zeros((n, 6)) if mean is None else np.asarray(mean, np.float64)
        return cls(jnp.asarray(m), jnp.asarray(np.diag(np.tile(sd**2, n))))

    @classmethod
    def from_postures(cls, postures, *, ridge: float = 1e-6) -> PosturePrior:
        """The sample mean and covariance of example postures ``(n, n_levels, 6)`` (increments as in
        the module doc), with ``ridge`` times the average variance added to the diagonal so that a
        handful of examples still gives a positive definite covariance."""
        p = np.asarray(postures, np.float64)
        if p.ndim != 3 or p.shape[2] != 6 or p.shape[0] < 2:
            raise ValueError(f"postures: expected shape (n >= 2, n_levels, 6), got {p.shape}")
        flat = p.reshape(p.shape[0], -1)
        cov = np.cov(flat, rowvar=False).reshape(flat.shape[1], flat.shape[1])
        cov = cov + ridge * max(float(np.trace(cov)) / cov.shape[0], 1e-12) * np.eye(cov.shape[0])
        return cls(jnp.asarray(p.mean(0)), jnp.asarray(cov))


class Assembly(eqx.Module):
    """Named objects, each with a :class:`ShapeModel` in the natural posture, chained by joints and a
    :class:`PosturePrior`. :func:`bayesshape.infer` takes it in place of a single model.

    Attributes:
        names: the objects' names, in chain order.
        models: one shape model per object (objects may share one model object; each still gets
            its own coefficients).
        joints: ``(n_objects - 1, 3)`` joint points (mm): joint ``i`` links object ``i`` to ``i+1``.
        posture: the prior on the relative poses at the joints.

    Example:
        >>> import bayesshape as bs
        >>> a = bs.datasets.example_shapes(1, seed=0)[0]
        >>> b = a.copy(); _ = b.apply_translation([0.0, 0.0, -450.0])
        >>> asm = bs.prior.Assembly.from_meshes({"upper": a, "lower": b}, rank=5)
        >>> asm.combined_model().n_vertices == 2 * len(a.vertices)
        True
    """

    names: tuple[str, ...] = eqx.field(static=True)
    models: tuple[ShapeModel, ...]
    joints: Float[Array, "n_joint 3"]
    posture: PosturePrior

    def __check_init__(self):
        names = self.names
        if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"names: expected unique non-empty strings, got {names}")
        if len(self.models) != len(names) or not all(isinstance(m, ShapeModel) for m in self.models):
            raise ValueError(f"models: expected one ShapeModel per object ({len(names)}), got {len(self.models)}")
        if any((m.faces is None) != (self.models[0].faces is None) for m in self.models):
            raise ValueError("models: either every object is a mesh or every object is a point set")
        if tuple(self.joints.shape) != (len(names) - 1, 3):
            raise ValueError(f"joints: expected shape ({len(names) - 1}, 3), got {tuple(self.joints.shape)}")
        if self.posture.n_levels != len(names) - 1:
            raise ValueError(
                f"posture: a prior for {self.posture.n_levels} joints, but {len(names)} objects have {len(names) - 1}"
            )

    # ---------------------------------------------------------------- layout
    @property
    def n_objects(self) -> int:
        return len(self.names)

    @property
    def vertex_offsets(self) -> tuple[int, ...]:
        """``(n_objects + 1,)`` start of each object's vertices in the combined array, and the total."""
        out = [0]
        for m in self.models:
            out.append(out[-1] + m.n_vertices)
        return tuple(out)

    @property
    def mode_offsets(self) -> tuple[int, ...]:
        """Start of each object's coefficients in the combined coefficient vector, and the total."""
        out = [0]
        for m in self.models:
            out.append(out[-1] + m.n_modes)
        return tuple(out)

    def index(self, name: str) -> int:
        """The position of object ``name``."""
        if name not in self.names:
            raise ValueError(f"object {name!r}: not in this assembly (objects: {', '.join(self.names)})")
        return self.names.index(name)

    def vertex_slice(self, name: str) -> slice:
        """The rows of object ``name`` in the combined vertex array."""
        i, off = self.index(name), self.vertex_offsets
        return slice(off[i], off[i + 1])

    def object_ids(self) -> np.ndarray:
        """``(n_vert,)`` the object of each vertex of the combined mesh."""
        return np.repeat(np.arange(self.n_objects), np.diff(self.vertex_offsets)).astype(np.int32)

    def combined_model(self) -> ShapeModel:
        """One :class:`ShapeModel` of all objects in the natural posture: the means concatenated, the
        bases block-diagonal (object ``i``'s coefficients are ``alpha[mode_offsets[i]:mode_offsets[i+1]]``),
        the faces concatenated with offsets. Its modes are grouped by object, not sorted by variance."""
        mean = np.concatenate([np.asarray(m.mean) for m in self.models])
        n3, k = 3 * mean.shape[0], self.mode_offsets[-1]
        basis = np.zeros((n3, k))
        voff, moff = self.vertex_offsets, self.mode_offsets
        for i, m in enumerate(self.models):
            basis[3 * voff[i] : 3 * voff[i + 1], moff[i] : moff[i + 1]] = np.asarray(m.basis)
        variance = np.concatenate([np.asarray(m.variance) for m in self.models])
        faces = None
        if self.models[0].faces is not None:
            faces = np.concatenate([np.asarray(m.faces) + voff[i] for i, m in enumerate(self.models)])
        noise = None
        if any(m.vertex_noise is not None for m in self.models):
            noise = np.concatenate(
                [
                    np.zeros((m.n_vertices, 3, 3)) if m.vertex_noise is None else np.asarray(m.vertex_noise)
                    for m in self.models
                ]
            )
        return ShapeModel(
            mean,
            basis,
            variance,
            noise_variance=max(float(m.noise_variance) for m in self.models),
            faces=faces,
            total_variance=sum(float(m.total_variance) for m in self.models),
            vertex_noise=noise,
        )

    def split(self, vertices) -> dict[str, np.ndarray]:
        """``{name: (n_i, 3)}`` the rows of combined ``(n_vert, 3)`` vertices (or ``(..., n_vert, 3)``)."""
        v = np.asarray(vertices)
        off = self.vertex_offsets
        return {n: v[..., off[i] : off[i + 1], :] for i, n in enumerate(self.names)}

    # ---------------------------------------------------------------- building
    @classmethod
    def from_meshes(
        cls,
        objects: Mapping[str, object],
        *,
        posture: PosturePrior | None = None,
        joints=None,
        kernel=None,
        rank: int = 20,
        rigid_free: bool = True,
        overlap_tolerance: float = 0.01,
    ) -> Assembly:
        """An assembly from each object's mesh (or model) in the natural posture.

        Args:
            objects: ``{name: mesh or ShapeModel}`` in chain order (a mesh is a trimesh mesh or
                ``(vertices, faces)``, mm). A mesh becomes a GP model of itself with ``kernel``.
            posture: the posture prior; default :meth:`PosturePrior.independent` (2 degrees and
                0.5 mm per axis and level).
            joints: ``(n - 1, 3)`` joint points, mm; default where the two neighbours meet (the
                midpoint between the parts of each facing the other: for vertebrae, the disc).
            kernel: the kernel of the GP models; default ``multiscale((4, 1), (40, 15))``: 2 mm of
                smooth variation over 40 mm and 1 mm over 15 mm, a scale for vertebrae.
            rank: the modes of each GP model.
            rigid_free: take each object's rigid motions out of its model
                (:func:`without_rigid_motion`), so that its pose is the posture's alone.
            overlap_tolerance: warn when more than this fraction of an object's vertices lies
                inside a neighbour at the natural posture (meshes that intersect).
        """
        from .gp import gp_model
        from .kernels import multiscale

        if not isinstance(objects, Mapping) or not objects:
            raise ValueError("objects: expected a non-empty {name: mesh or ShapeModel} mapping, in chain order")
        kernel = multiscale((4.0, 1.0), (40.0, 15.0)) if kernel is None else kernel
        names = tuple(str(n) for n in objects)
        models = tuple(o if isinstance(o, ShapeModel) else gp_model(o, kernel, rank) for o in objects.values())
        if rigid_free:
            models = tuple(without_rigid_motion(m) for m in models)
        means = [np.asarray(m.mean, np.float64) for m in models]
        if joints is None:
            joints = np.stack([_closest_midpoint(a, b) for a, b in zip(means[:-1], means[1:])]).reshape(-1, 3)
        posture = PosturePrior.independent(len(names) - 1) if posture is None else posture
        out = cls(names, models, jnp.asarray(np.asarray(joints, np.float64)), posture)
        if models[0].faces is not None:
            out.check_overlap(overlap_tolerance)
        return out

    def check_overlap(self, tolerance: float = 0.01) -> list[tuple[str, str, float]]:
        """Warn (and return ``(inside, outside, fraction)``) for neighbours whose mean meshes intersect: more than
        ``tolerance`` of ``b``'s vertices inside ``a`` or the other way round."""
        from .._geometry import winding_numbers

        found: list[tuple[str, str, float]] = []
        for i in range(self.n_objects - 1):
            for ia, ib in ((i, i + 1), (i + 1, i)):
                ma, mb = self.models[ia], self.models[ib]
                w = np.asarray(winding_numbers(jnp.asarray(mb.mean), jnp.asarray(ma.mean), jnp.asarray(ma.faces)))
                frac = float(np.mean(np.abs(w) > 0.5))
                if frac > tolerance:
                    found.append((self.names[ib], self.names[ia], frac))
        for b, a, frac in found:
            warnings.warn(
                f"objects {b!r} and {a!r} intersect at the natural posture: {100 * frac:.1f}% of {b!r}'s vertices "
                f"lie inside {a!r}; check the meshes' frames (the same world frame for all objects, mm)",
                UserWarning,
                stacklevel=3,
            )
        return found


def _closest_midpoint(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Where two neighbours meet: the midpoint between the centroids of the 200 points of each that lie
    nearest the other's centroid (for vertebrae, the two endplates of the disc between them)."""
    ca, cb = a.mean(0), b.mean(0)
    near_a = a[np.argsort(np.linalg.norm(a - cb, axis=1))[:200]]
    near_b = b[np.argsort(np.linalg.norm(b - ca, axis=1))[:200]]
    return 0.5 * (near_a.mean(0) + near_b.mean(0))
