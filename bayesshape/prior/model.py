"""The low-rank Gaussian shape model that every prior in bayesshape produces."""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .._checks import as_faces, as_points, is_concrete

__all__ = ["ShapeModel"]


class ShapeModel(eqx.Module):
    """A low-rank Gaussian distribution over shapes in correspondence.

    A shape is the vertex array ``x = mean + reshape(U @ (sqrt(variance) * alpha))``
    with ``alpha ~ N(0, I)``, where ``U`` (``basis``) has orthonormal columns over
    the interleaved coordinates ``x0 y0 z0 x1 ...``. An optional isotropic
    ``noise_variance`` (mm^2) models observation noise per coordinate, as in
    Statismo's probabilistic PCA.

    Fields are arrays (pytree leaves), so a model can be passed through
    ``jax.jit``/``jax.vmap`` like any other argument.

    Attributes:
        mean: ``(n_vert, 3)`` mean shape, mm.
        basis: ``(3 n_vert, n_modes)`` orthonormal basis.
        variance: ``(n_modes,)`` variance of each mode, mm^2, non-increasing.
        noise_variance: scalar isotropic noise variance, mm^2.
        faces: ``(n_face, 3)`` int32 triangles, or ``None`` for a point-set model.
        total_variance: scalar total variance of the distribution the model was
            built from (data or kernel trace), mm^2; ``variance.sum() / total_variance``
            is the fraction the retained modes explain.
        vertex_noise: ``(n_vert, 3, 3)`` per-vertex covariance (mm^2) of the part of the
            model error that no image can see, independent between vertices, or ``None``.
            :func:`~bayesshape.prior.add_model_error` puts there the sliding of the
            correspondence along the surface; posteriors add it to their vertex samples.
        error_factor: ``(n_modes, m)`` the model error's share of the prior in the whitened
            coefficients: ``alpha``'s prior covariance ``I`` splits into ``(I - Q Q^T)``, the
            shape population's, and ``Q Q^T``, the model error's (set by
            :func:`~bayesshape.prior.add_model_error`, ``None`` otherwise). It lets
            :func:`~bayesshape.prior.scale_model_error` (and ``infer``'s
            ``LikelihoodOptions(model_error_scale=...)``) widen the model error alone.

    Example:
        >>> import jax, bayesshape as bs
        >>> model = bs.build_pca_model(bs.datasets.example_shapes(8, seed=0))
        >>> x = model.instance(jax.numpy.zeros(model.n_modes))   # the mean, (n_vert, 3)
        >>> xs = model.sample(jax.random.key(0), 4)                # (4, n_vert, 3)
    """

    mean: Float[Array, "n_vert 3"]
    basis: Float[Array, "n_coord n_modes"]
    variance: Float[Array, " n_modes"]
    noise_variance: Float[Array, ""]
    faces: Int[Array, "n_face 3"] | None
    total_variance: Float[Array, ""]
    vertex_noise: Float[Array, "n_vert 3 3"] | None
    error_factor: Float[Array, "n_modes m"] | None

    def __init__(
        self,
        mean,
        basis,
        variance,
        noise_variance=0.0,
        faces=None,
        total_variance=None,
        vertex_noise=None,
        error_factor=None,
    ):
        if all(is_concrete(a) for a in (mean, basis, variance)):
            mean_np = as_points(mean, "mean")
            n = mean_np.shape[0]
            basis_np = np.asarray(basis, dtype=np.float64)
            var_np = np.asarray(variance, dtype=np.float64)
            if basis_np.ndim != 2 or basis_np.shape[0] != 3 * n:
                raise ValueError(f"basis: expected shape (3 * n_vert, n_modes) = ({3 * n}, K), got {basis_np.shape}")
            if var_np.shape != (basis_np.shape[1],):
                raise ValueError(
                    f"variance: expected shape ({basis_np.shape[1]},) to match the basis's "
                    f"{basis_np.shape[1]} modes, got {var_np.shape}"
                )
            if not (np.all(np.isfinite(basis_np)) and np.all(np.isfinite(var_np))):
                raise ValueError("basis/variance: contain NaN or inf")
            if np.any(var_np < 0):
                raise ValueError(f"variance: must be >= 0, got minimum {var_np.min()}")
            nv = float(np.asarray(noise_variance))
            if not np.isfinite(nv) or nv < 0:
                raise ValueError(f"noise_variance: expected a finite value >= 0 (mm^2), got {nv}")
            if faces is not None:
                faces = jnp.asarray(as_faces(faces, n))
            tv = float(var_np.sum()) if total_variance is None else float(np.asarray(total_variance))
            self.mean = jnp.asarray(mean_np)
            self.basis = jnp.asarray(basis_np)
            self.variance = jnp.asarray(var_np)
            self.noise_variance = jnp.asarray(nv)
            self.faces = faces
            self.total_variance = jnp.asarray(tv)
            self.vertex_noise = None if vertex_noise is None else jnp.asarray(_as_vertex_noise(vertex_noise, n))
            q = None if error_factor is None else _as_error_factor(error_factor, len(var_np))
            self.error_factor = None if q is None else jnp.asarray(q)
        else:  # built from traced values (e.g. inside a transformation): no eager checks
            self.mean, self.basis, self.variance = mean, basis, variance
            self.noise_variance = jnp.asarray(noise_variance)
            self.faces = faces
            self.total_variance = jnp.asarray(jnp.sum(variance) if total_variance is None else total_variance)
            self.vertex_noise = vertex_noise
            self.error_factor = error_factor

    # ------------------------------------------------------------------ sizes
    @property
    def n_modes(self) -> int:
        """Number of modes ``K``."""
        return self.variance.shape[0]

    @property
    def n_vertices(self) -> int:
        """Number of vertices (points) ``N``."""
        return self.mean.shape[0]

    @property
    def explained_variance_ratio(self) -> Float[Array, " n_modes"]:
        """Fraction of the total variance explained by each retained mode."""
        return self.variance / self.total_variance

    # --------------------------------------------------------------- mapping
    def _check_alpha(self, alpha) -> None:
        if jnp.shape(alpha)[-1:] != (self.n_modes,):
            raise ValueError(
                f"alpha: expected the last axis to hold the model's {self.n_modes} coefficients, "
                f"got shape {jnp.shape(alpha)}"
            )

    def instance(self, alpha: Float[Array, " n_modes"]) -> Float[Array, "n_vert 3"]:
        """The shape for standardized coefficients ``alpha``, mm.

        Pure, jit/vmap/grad-safe; batch with ``jax.vmap(model.instance)``.
        """
        self._check_alpha(alpha)
        if jnp.ndim(alpha) != 1:
            raise ValueError(
                f"alpha: expected shape ({self.n_modes},); for a batch use jax.vmap(model.instance), "
                f"got shape {jnp.shape(alpha)}"
            )
        offset = self.basis @ (jnp.sqrt(self.variance) * alpha)
        return self.mean + offset.reshape(self.mean.shape)

    def sample(self, key: PRNGKeyArray, n: int, *, noise: bool = False) -> Float[Array, "n n_vert 3"]:
        """Draw ``n`` shapes, ``(n, n_vert, 3)`` mm; ``noise=True`` adds the isotropic noise and
        the per-vertex ``vertex_noise``."""
        k_alpha, k_noise, k_vertex = jax.random.split(key, 3)
        alpha = jax.random.normal(k_alpha, (n, self.n_modes), dtype=self.variance.dtype)
        shapes = jax.vmap(self.instance)(alpha)
        if noise:
            eps = jax.random.normal(k_noise, shapes.shape, dtype=shapes.dtype)
            shapes = shapes + jnp.sqrt(self.noise_variance) * eps + self.vertex_noise_draws(k_vertex, n)
        return shapes

    def vertex_noise_root(self) -> Float[Array, "n_vert 3 3"] | None:
        """Symmetric square roots of ``vertex_noise`` (mm), or ``None`` when the model has none."""
        if self.vertex_noise is None:
            return None
        w, v = jnp.linalg.eigh(self.vertex_noise)
        return jnp.einsum("nij,nj,nkj->nik", v, jnp.sqrt(jnp.maximum(w, 0.0)), v)

    def vertex_noise_draws(self, key: PRNGKeyArray, n: int) -> Float[Array, "n n_vert 3"]:
        """``n`` independent draws of the per-vertex noise ``N(0, vertex_noise)`` (zeros without it)."""
        shape = (n, *self.mean.shape)
        root = self.vertex_noise_root()
        if root is None:
            return jnp.zeros(shape, self.mean.dtype)
        z = jax.random.normal(key, shape, dtype=self.mean.dtype)
        return jnp.einsum("nij,snj->sni", root, z)

    def coefficients(self, points: Float[Array, "n_vert 3"]) -> Float[Array, " n_modes"]:
        """Regularised least-squares coefficients of a shape in correspondence.

        Solves ``min_a |x - instance(a)|^2 / noise_variance + |a|^2`` (the posterior
        mean of ``alpha`` under the model's noise); with ``noise_variance = 0`` it is
        the orthogonal projection onto the model.
        """
        if is_concrete(points):
            as_points(points, "points", n=self.n_vertices)
        elif jnp.shape(points) != self.mean.shape:
            raise ValueError(f"points: expected shape {self.mean.shape}, got {jnp.shape(points)}")
        resid = (points - self.mean).reshape(-1)
        proj = self.basis.T @ resid
        sd = jnp.sqrt(self.variance)
        return sd * proj / (self.variance + self.noise_variance)

    def project(self, points: Float[Array, "n_vert 3"]) -> Float[Array, "n_vert 3"]:
        """The model shape closest to ``points``: ``instance(coefficients(points))``."""
        return self.instance(self.coefficients(points))

    def log_prob(self, alpha: Float[Array, " n_modes"]) -> Float[Array, ""]:
        """Log density of the standard normal prior on ``alpha``."""
        self._check_alpha(alpha)
        return -0.5 * jnp.sum(alpha**2) - 0.5 * self.n_modes * math.log(2 * math.pi)

    def vertex_covariance(self) -> Float[Array, "n_vert 3 3"]:
        """Per-vertex 3 x 3 marginal covariance (mm^2), noise (isotropic and per vertex) included."""
        b = self.basis.reshape(self.n_vertices, 3, self.n_modes)
        cov = jnp.einsum("nik,k,njk->nij", b, self.variance, b)
        cov = cov + self.noise_variance * jnp.eye(3, dtype=cov.dtype)[None, :, :]
        return cov if self.vertex_noise is None else cov + self.vertex_noise

    def truncate(self, k: int) -> ShapeModel:
        """The model restricted to its first ``k`` modes (1 <= k <= n_modes)."""
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= self.n_modes:
            raise ValueError(f"k: expected an integer in [1, {self.n_modes}], got {k!r}")
        return ShapeModel(
            self.mean,
            self.basis[:, :k],
            self.variance[:k],
            self.noise_variance,
            self.faces,
            self.total_variance,
            self.vertex_noise,
            None if self.error_factor is None else self.error_factor[:k],
        )

    def mesh(self, vertices=None):
        """A ``trimesh.Trimesh`` of ``vertices`` (default: the mean). Needs faces."""
        import trimesh

        if self.faces is None:
            raise ValueError("this is a point-set model (no faces); a mesh needs triangles")
        v = self.mean if vertices is None else vertices
        return trimesh.Trimesh(np.asarray(v, dtype=np.float64), np.asarray(self.faces), process=False)


def _as_vertex_noise(cov, n: int) -> np.ndarray:
    """``(n, 3, 3)`` symmetric positive semi-definite finite covariances, or a ValueError."""
    # rounding of single-precision input (JAX without x64) leaves eigenvalues a few ulp below zero
    rel = 1e-9 if np.asarray(cov).dtype == np.float64 else 1e-5
    c = np.asarray(cov, dtype=np.float64)
    if c.shape != (n, 3, 3):
        raise ValueError(f"vertex_noise: expected shape ({n}, 3, 3) (one covariance per vertex, mm^2), got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("vertex_noise: contains NaN or inf")
    if np.abs(c - np.swapaxes(c, 1, 2)).max() > rel * max(float(np.abs(c).max()), 1.0):
        raise ValueError("vertex_noise: the per-vertex covariances are not symmetric")
    c = 0.5 * (c + np.swapaxes(c, 1, 2))
    w = np.linalg.eigvalsh(c)
    if w.min() < -rel * max(float(w.max()), 1.0):
        bad = int(np.argmin(w.min(axis=1)))
        raise ValueError(
            f"vertex_noise: not positive semi-definite (vertex {bad} has eigenvalue {w[bad].min():.3g} mm^2)"
        )
    return c


def _as_error_factor(q, k: int) -> np.ndarray:
    """``(k, m)`` finite factor whose ``Q Q^T`` lies below the identity, or a ValueError."""
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != k or q.shape[1] < 1:
        raise ValueError(f"error_factor: expected shape ({k}, m) (one row per mode), got {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError("error_factor: contains NaN or inf")
    top = float(np.linalg.svd(q, compute_uv=False)[0]) if q.size else 0.0
    if top > 1.0 + 1e-6:
        raise ValueError(
            f"error_factor: Q Q^T must not exceed the identity (the model error's share of a unit prior), "
            f"largest singular value {top:.6g}"
        )
    return q
