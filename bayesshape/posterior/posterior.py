"""The posterior over 3D shapes: samples, summaries, uncertainty maps and reliability."""

from __future__ import annotations

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Posterior", "Reliability", "Measurement"]


@dataclasses.dataclass(frozen=True)
class Measurement:
    """A derived measurement over the posterior: mean, sd and a central credible interval."""

    mean: np.ndarray
    sd: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float
    samples: np.ndarray

    def as_dict(self) -> dict:
        f = lambda a: np.asarray(a).tolist()  # noqa: E731
        return {"mean": f(self.mean), "sd": f(self.sd), "lower": f(self.lower), "upper": f(self.upper),
                "level": self.level}


@dataclasses.dataclass(frozen=True)
class Reliability:
    """Per-vertex flags and a case-level verdict.

    Attributes:
        vertex_flags: ``(N,)`` True where the credible radius exceeds the tolerance.
        credible_radius: ``(N,)`` radius (mm) at ``level``.
        tolerance_mm, level: the settings.
        fraction_flagged: share of flagged vertices.
        misfit: per observation, the mean squared standardised residual at the posterior
            mean (about 1, or below for contours, when the data fit the model; much larger
            when the shape lies outside the model or the data are wrong).
        uncertain: True when more than ``max_fraction`` of the vertices are flagged.
        misfitting: True when any observation's misfit exceeds ``misfit_threshold``.
        score: case-level unreliability score, larger is worse:
            ``max(mean credible radius / tolerance, max misfit / misfit_threshold)``;
            above 1 means the case is flagged.
    """

    vertex_flags: np.ndarray
    credible_radius: np.ndarray
    tolerance_mm: float
    level: float
    fraction_flagged: float
    misfit: list
    uncertain: bool
    misfitting: bool
    score: float

    @property
    def reliable(self) -> bool:
        return not (self.uncertain or self.misfitting)

    def summary(self) -> dict:
        return {
            "reliable": self.reliable,
            "uncertain": self.uncertain,
            "misfitting": self.misfitting,
            "score": self.score,
            "tolerance_mm": self.tolerance_mm,
            "level": self.level,
            "fraction_vertices_flagged": self.fraction_flagged,
            "mean_credible_radius_mm": float(np.mean(self.credible_radius)),
            "max_credible_radius_mm": float(np.max(self.credible_radius)),
            "misfit": self.misfit,
        }


class Posterior:
    """Posterior over shapes (and pose), represented by samples of the parameters.

    Built by :func:`bayesshape.infer` or :func:`bayesshape.posterior_from_landmarks`.
    All vertex quantities are in the world frame of the observations, in mm, and
    include pose uncertainty when the pose was inferred.

    Attributes:
        method: ``"nuts"``, ``"svi"``, ``"laplace"`` or ``"closed_form"``.
        theta: ``(chains, draws, dim)`` samples of the whitened parameters.
        diagnostics: dict (R-hat, ESS, divergences, loss curve, warnings, timings).

    Example:
        >>> post = bs.infer(model, observations, method="laplace", seed=0)   # doctest: +SKIP
        >>> mesh = post.mean_mesh(); r95 = post.credible_radius(0.95)        # doctest: +SKIP
    """

    def __init__(self, problem, theta, method: str, diagnostics: dict | None = None, *,
                 theta_map=None, gaussian=None):
        theta = jnp.asarray(theta)
        if theta.ndim == 2:
            theta = theta[None]
        self.problem = problem
        self.theta = theta
        self.method = method
        self.diagnostics = dict(diagnostics or {})
        self.theta_map = theta_map
        self.gaussian = gaussian  # (mean, cov) of theta when the posterior is Gaussian
        self._vertices = None

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
        return {"rotvec": Rotation.from_matrix(np.asarray(rots)).as_rotvec(),
                "translation": np.asarray(trans), "scale": np.asarray(scales)}

    def vertex_samples(self) -> jnp.ndarray:
        """``(n_samples, n_vert, 3)`` world-frame vertices of every sample (cached)."""
        if self._vertices is None:
            self._vertices = jax.jit(lambda p, th: p.vertices_batch(th))(self.problem, self.flat_theta())
        return self._vertices

    def sample_vertices(self, n: int, *, seed: int = 0) -> np.ndarray:
        """``n`` posterior shapes, ``(n, n_vert, 3)`` mm (drawn from the samples, or fresh
        from the Gaussian for closed-form and Laplace posteriors)."""
        if n < 1:
            raise ValueError(f"n: expected a positive number of samples, got {n}")
        key = jax.random.key(seed)
        if self.gaussian is not None:
            mean, cov = self.gaussian
            th = jax.random.multivariate_normal(key, mean, cov, (n,), method="eigh")
            return np.asarray(self.problem.vertices_batch(th))
        idx = jax.random.choice(key, self.n_samples, (n,), replace=n > self.n_samples)
        return np.asarray(self.vertex_samples()[idx])

    # ----------------------------------------------------------- summaries
    def mean_vertices(self) -> np.ndarray:
        """Posterior mean of every vertex, ``(n_vert, 3)`` mm."""
        return np.asarray(jnp.mean(self.vertex_samples(), axis=0))

    def mean_mesh(self):
        """The posterior mean shape as a ``trimesh.Trimesh`` (needs a mesh model)."""
        return self.model.mesh(self.mean_vertices())

    def vertex_covariance(self) -> np.ndarray:
        """Per-vertex 3 x 3 posterior covariance, ``(n_vert, 3, 3)`` mm^2.

        Exact for a closed-form posterior without pose; otherwise from the samples.
        """
        if self.gaussian is not None and self.method == "closed_form" and self.problem.pose is None:
            _, cov = self.gaussian
            k = self.problem.n_modes
            b = self.model.basis.reshape(self.model.n_vertices, 3, k) * jnp.sqrt(self.model.variance)[None, None, :]
            return np.asarray(jnp.einsum("nik,kl,njl->nij", b, cov[:k, :k], b))
        x = self.vertex_samples()
        d = x - jnp.mean(x, axis=0)[None]
        return np.asarray(jnp.einsum("sni,snj->nij", d, d) / max(x.shape[0] - 1, 1))

    def vertex_std(self) -> np.ndarray:
        """Per-vertex RMS distance (mm) from the posterior mean: ``sqrt(trace(cov))``, ``(n_vert,)``."""
        return np.sqrt(np.trace(self.vertex_covariance(), axis1=1, axis2=2))

    def normal_std(self) -> np.ndarray:
        """Posterior sd (mm) of every vertex along the mean surface's normal, ``(n_vert,)``."""
        n = np.asarray(self.mean_mesh().vertex_normals)
        return np.sqrt(np.maximum(np.einsum("ni,nij,nj->n", n, self.vertex_covariance(), n), 0.0))

    def credible_radius(self, level: float = 0.95) -> np.ndarray:
        """Radius (mm) of the ball around each vertex's posterior mean that holds the
        vertex with posterior probability ``level``, ``(n_vert,)``."""
        if not 0 < level < 1:
            raise ValueError(f"level: expected a probability in (0, 1), got {level}")
        x = self.vertex_samples()
        d = jnp.linalg.norm(x - jnp.mean(x, axis=0)[None], axis=-1)
        return np.asarray(jnp.quantile(d, level, axis=0))

    # ----------------------------------------------------------- checks
    def predictive_misfit(self) -> list:
        """Per observation: type, mean squared standardised residual at the posterior mean."""
        theta_mean = jnp.mean(self.flat_theta(), axis=0)
        v = jnp.asarray(self.mean_vertices())
        out = []
        for o, s in zip(self.problem.observations, self.problem.sigmas(theta_mean)):
            r = o.residuals(v) if s is None else o.residuals(v) * (o.sigma / s)
            out.append({"type": type(o).__name__, "n_data": int(o.n_data),
                        "mean_sq_std_residual": float(jnp.mean(r * r))})
        return out

    def reliability(self, tolerance_mm: float = 2.0, *, level: float = 0.95, max_fraction: float = 0.05,
                    misfit_threshold: float = 4.0) -> Reliability:
        """Flag vertices and the case as unreliable.

        Args:
            tolerance_mm: clinical tolerance; vertices whose ``level`` credible radius
                exceeds it are flagged ("too uncertain").
            level: credible level of the radius.
            max_fraction: the case is "uncertain" when more vertices than this are flagged.
            misfit_threshold: an observation whose mean squared standardised residual at
                the posterior mean exceeds this is "misfitting" (RMS residual above 2 sd
                by default): the data cannot be explained by any shape of the model,
                e.g. because the anatomy lies outside the model ("confidently wrong").
        """
        if tolerance_mm <= 0:
            raise ValueError(f"tolerance_mm: expected a positive tolerance in mm, got {tolerance_mm}")
        r = self.credible_radius(level)
        flags = r > tolerance_mm
        misfit = self.predictive_misfit()
        worst = max((m["mean_sq_std_residual"] for m in misfit), default=0.0)
        frac = float(flags.mean())
        score = max(float(r.mean()) / tolerance_mm, worst / misfit_threshold)
        return Reliability(flags, r, float(tolerance_mm), float(level), frac, misfit, frac > max_fraction,
                           worst > misfit_threshold, score)

    def measure(self, fn, level: float = 0.95) -> Measurement:
        """Credible interval of a derived measurement ``fn(vertices (n_vert, 3)) -> scalar or array``.

        Example:
            >>> length = post.measure(lambda v: jnp.linalg.norm(v[10] - v[2000]))   # doctest: +SKIP
            >>> length.mean, length.lower, length.upper                             # doctest: +SKIP
        """
        if not 0 < level < 1:
            raise ValueError(f"level: expected a probability in (0, 1), got {level}")
        vals = np.asarray(jax.lax.map(fn, self.vertex_samples(), batch_size=64))
        a = (1 - level) / 2
        return Measurement(np.asarray(vals.mean(0)), np.asarray(vals.std(0, ddof=1)),
                           np.asarray(np.quantile(vals, a, axis=0)), np.asarray(np.quantile(vals, 1 - a, axis=0)),
                           float(level), vals)

    def to_arviz(self):
        """An ``arviz.InferenceData`` of the parameter samples (needs ``pip install arviz``)."""
        try:
            import arviz as az
        except ImportError:
            raise ImportError("to_arviz needs ArviZ: pip install arviz") from None
        th = np.asarray(self.theta)
        k = self.problem.n_modes
        post = {"alpha": th[..., :k]}
        if self.problem.pose:
            post["rotation"] = th[..., k : k + 3] * self.problem.rotation_sd
            post["translation"] = th[..., k + 3 : k + 6] * self.problem.translation_sd
        if self.problem.pose == "similarity":
            post["log_scale"] = th[..., k + 6] * self.problem.scale_sd
        return az.from_dict(posterior=post)

    def summary(self) -> dict:
        """JSON-ready summary: method, sample counts, diagnostics (no large arrays)."""
        diag = {k: v for k, v in self.diagnostics.items() if k not in ("loss",)}
        return {"method": self.method, "chains": int(self.theta.shape[0]), "draws": int(self.theta.shape[1]),
                "n_modes": self.problem.n_modes, "pose": self.problem.pose, "diagnostics": diag}


def warn_diagnostics(diag: dict) -> list[str]:
    """Emit (and return) warnings for bad sampler diagnostics."""
    msgs = []
    if diag.get("max_rhat", 1.0) > 1.01:
        msgs.append(f"R-hat {diag['max_rhat']:.3f} > 1.01: chains disagree; run longer (num_samples, num_warmup) "
                    "or check for a multimodal posterior")
    if diag.get("min_ess_bulk", np.inf) < 100:
        msgs.append(f"bulk ESS {diag['min_ess_bulk']:.0f} < 100: too few effective samples; run longer")
    if diag.get("divergences", 0) > 0:
        msgs.append(f"{diag['divergences']} divergent transitions: the posterior has regions NUTS cannot "
                    "explore; raise target_accept_prob (e.g. 0.95), or check for contradicting observations")
    if diag.get("converged") is False:
        msgs.append("SVI did not converge (loss still changing); raise num_steps or lower the learning rate")
    for m in msgs:
        warnings.warn(m, UserWarning, stacklevel=3)
    return msgs
