"""The posterior over 3D shapes from inference: parameter samples, with the vertex-level summaries of
:class:`~bayesshape.posterior.samples.ShapeSamples`."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._gaussian import gaussian_draws
from ._arviz import arviz_groups, to_inference_data
from .samples import ShapeSamples

__all__ = ["Posterior", "observation_vertices", "standardised_residuals"]


@jax.jit
def _vertices_batch(problem, theta):
    # module level: one compilation for every posterior of the same structure
    return problem.vertices_batch(theta)


@jax.jit
def _vertex_noise_batch(problem, theta, key):
    """Draws of the model's per-vertex noise (model frame), carried into the world frame by each
    sample's pose: rotation and scale."""
    eps = problem.model.vertex_noise_draws(key, theta.shape[0])
    rots, _, scales = jax.vmap(problem.pose_params)(theta)
    return scales[:, None, None] * jnp.einsum("sij,snj->sni", rots, eps)


def _with_vertex_noise(problem, theta, vertices, seed: int):
    if problem.model.vertex_noise is None:
        return vertices
    return vertices + _vertex_noise_batch(problem, theta, jax.random.fold_in(jax.random.key(seed), 0x5EED))


class Posterior(ShapeSamples):
    """Posterior over shapes (and pose), represented by samples of the parameters.

    Built by :func:`bayesshape.infer` or :func:`bayesshape.posterior_from_landmarks`.
    All vertex quantities are in the world frame of the observations, in mm, and
    include pose uncertainty when the pose was inferred.

    Attributes:
        method: ``"nuts"``, ``"svi"``, ``"laplace"``, ``"importance"`` or ``"closed_form"``.
        theta: ``(chains, draws, dim)`` samples of the whitened parameters.
        diagnostics: the run's :class:`~bayesshape.inference.Diagnostics` record (R-hat, ESS,
            divergences, loss curve, warnings, timings; ``.to_dict()`` for JSON).
        seed: seed of the model's per-vertex noise (``ShapeModel.vertex_noise``: the part of
            the model error no image sees), which every vertex sample includes.

    Example:
        >>> post = bs.infer(model, observations, method="laplace", seed=0)   # doctest: +SKIP
        >>> mesh = post.mean_mesh(); r95 = post.credible_radius(0.95)        # doctest: +SKIP
    """

    def __init__(
        self,
        problem,
        theta,
        method: str,
        diagnostics=None,
        *,
        theta_map=None,
        gaussian=None,
        seed: int = 0,
        sample_stats: dict | None = None,
    ):
        theta = jnp.asarray(theta)
        if theta.ndim == 2:
            theta = theta[None]
        model = problem.model
        self._init(method, diagnostics, model.faces, model.n_vertices)
        if theta.ndim != 3 or theta.shape[-1] != problem.dim or theta.shape[0] * theta.shape[1] < 1:
            raise ValueError(f"theta: expected shape (chains, draws, {problem.dim}), got {theta.shape}")
        if not bool(jnp.all(jnp.isfinite(theta))):
            raise ValueError("theta: samples contain NaN or inf")
        self.problem = problem
        self.theta = theta
        self.theta_map = theta_map
        self.gaussian = gaussian  # (mean, cov) of theta when the posterior is Gaussian
        self.seed = int(seed)
        self.sample_stats = dict(sample_stats or {})
        self._vertices: Any = None
        self._misfit: Any = None

    # ------------------------------------------------------------ samples
    @property
    def model(self):
        return self.problem.model

    @property
    def n_samples(self) -> int:
        return int(self.theta.shape[0] * self.theta.shape[1])

    def flat_theta(self):
        return self.theta.reshape(-1, self.theta.shape[-1])

    @property
    def alpha(self) -> np.ndarray:
        """``(n_samples, n_modes)`` shape-coefficient samples."""
        return np.asarray(self.flat_theta()[:, : self.problem.n_modes])

    def pose_samples(self) -> dict:
        """Pose samples: rotation vectors (rad), translations (mm) and scales, world frame."""
        from scipy.spatial.transform import Rotation

        rots, trans, scales = jax.vmap(self.problem.pose_params)(self.flat_theta())
        return {
            "rotvec": Rotation.from_matrix(np.asarray(rots)).as_rotvec(),
            "translation": np.asarray(trans),
            "scale": np.asarray(scales),
        }

    def vertex_samples(self) -> jnp.ndarray:
        """``(n_samples, n_vert, 3)`` world-frame vertices of every sample (cached)."""
        if self._vertices is None:
            th = self.flat_theta()
            self._vertices = _with_vertex_noise(self.problem, th, _vertices_batch(self.problem, th), self.seed)
        return self._vertices

    def sample_vertices(self, n: int, *, seed: int = 0) -> np.ndarray:
        """``n`` posterior shapes, ``(n, n_vert, 3)`` mm (drawn from the samples, or fresh
        from the Gaussian for closed-form and Laplace posteriors)."""
        if n < 1:
            raise ValueError(f"n: expected a positive number of samples, got {n}")
        key = jax.random.key(seed)
        if self.gaussian is not None:
            mean, cov = self.gaussian
            th = gaussian_draws(key, mean, cov, n)
            return np.asarray(_with_vertex_noise(self.problem, th, _vertices_batch(self.problem, th), seed))
        idx = jax.random.choice(key, self.n_samples, (n,), replace=n > self.n_samples)
        return np.asarray(self.vertex_samples()[idx])

    def vertex_covariance(self) -> np.ndarray:
        """Per-vertex 3 x 3 posterior covariance, ``(n_vert, 3, 3)`` mm^2.

        Exact for a closed-form posterior without pose; otherwise from the samples.
        """
        if self.gaussian is not None and self.method == "closed_form" and self.problem.pose is None:

            def exact():
                _, cov = self.gaussian
                k = self.problem.n_modes
                b = self.model.basis.reshape(self.model.n_vertices, 3, k) * jnp.sqrt(self.model.variance)[None, None, :]
                out = jnp.einsum("nik,kl,njl->nij", b, cov[:k, :k], b)
                return out if self.model.vertex_noise is None else out + self.model.vertex_noise

            return self._cached("exact_covariance", exact)
        return super().vertex_covariance()

    def with_diagnostics(self, diagnostics) -> Posterior:
        """The same posterior with another diagnostics record (the samples are shared)."""
        out = Posterior(
            self.problem,
            self.theta,
            self.method,
            diagnostics,
            theta_map=self.theta_map,
            gaussian=self.gaussian,
            seed=self.seed,
            sample_stats=self.sample_stats,
        )
        for name in ("_vertices", "_misfit", "_stats"):  # the caches: samples and summaries are the same
            if name in self.__dict__:
                out.__dict__[name] = self.__dict__[name]
        return out

    def mean_mesh(self):
        """The posterior mean shape as a ``trimesh.Trimesh`` (needs a mesh model)."""
        return self.model.mesh(self.mean_vertices())

    def predictive_misfit(self) -> list:
        """Per observation: type, mean squared standardised residual at the posterior mean."""
        if self._misfit is not None:
            return self._misfit
        theta_mean = jnp.mean(self.flat_theta(), axis=0)
        vs = observation_vertices(self.problem, jnp.asarray(self.mean_vertices()))
        out = []
        for o, s, v in zip(self.problem.observations, self.problem.sigmas(theta_mean), vs):
            r = standardised_residuals(o, v) if s is None else standardised_residuals(o, v) * (o.sigma / s)
            out.append(
                {"type": type(o).__name__, "n_data": int(o.n_data), "mean_sq_std_residual": float(jnp.mean(r * r))}
            )
        self._misfit = out
        return out

    def arviz_groups(self, log_likelihood: str | None = "pointwise") -> dict:
        """The groups of :meth:`to_arviz` as NumPy arrays (``posterior``, ``sample_stats``,
        ``log_likelihood``, ``observed_data``, with ``dims`` and ``coords``): what a posterior file keeps."""
        return arviz_groups(self, log_likelihood)

    def to_arviz(self, log_likelihood: str | None = "pointwise"):
        """An ``arviz.InferenceData`` with the groups ``az.from_numpyro`` gives (needs ``pip install arviz``).

        * ``posterior``: ``alpha`` (dims ``chain, draw, mode``: the whitened shape coefficients),
          with a pose ``rotation`` (rotation vector, rad) and ``translation`` (mm) over ``axis``
          (``x y z``), ``log_scale`` for a similarity pose, and ``noise_scale`` over
          ``observation`` where noise scales were inferred;
        * ``sample_stats``: for NUTS ``diverging``, ``tree_depth``, ``n_steps``, ``energy``,
          ``lp``, ``acceptance_rate`` and ``step_size`` per draw; for importance sampling the run's
          ``importance_ess`` and Pareto ``pareto_k``;
        * ``log_likelihood``: ``data``, one term per datum (a landmark, a contour point, a pixel;
          the coordinate ``observation`` names the observation each belongs to), summing to the
          log-likelihood, so that ``az.loo`` and ``az.waic`` run; ``log_likelihood="observation"``
          keeps one term per observation (leave one view out), ``None`` none;
        * ``observed_data``: each observation's data (points, pixels, image or mask).

        Example:
            >>> idata = post.to_arviz()                               # doctest: +SKIP
            >>> az.summary(idata, var_names=["alpha"]); az.loo(idata)  # doctest: +SKIP
        """
        return to_inference_data(self.arviz_groups(log_likelihood))

    def summary(self) -> dict:
        """JSON-ready summary: method, sample counts, diagnostics (no large arrays)."""
        out = super().summary()
        if self.method == "nuts":
            out.update({"chains": int(self.theta.shape[0]), "draws": int(self.theta.shape[1])})
        out.update({"n_modes": self.problem.n_modes, "pose": self.problem.pose})
        return out


# compiled once per observation type and shape: posterior summaries hold concrete arrays, and
# op-by-op evaluation of a contour or DRR likelihood costs seconds
standardised_residuals = eqx.filter_jit(lambda o, v: o.residuals(v))
observation_vertices = eqx.filter_jit(lambda problem, v: problem.observation_vertices(v))
