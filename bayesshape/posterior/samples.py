"""A distribution over meshes in correspondence, held as vertex samples: uncertainty maps,
reliability flags, derived measurements, and the posterior file (``.npz``).

:class:`ShapeSamples` is what every posterior offers at the vertex level;
:class:`~bayesshape.posterior.Posterior` (from :func:`bayesshape.infer`) extends it with
the parameter samples and the observations. :func:`save_posterior` writes either to a
file that :func:`load_posterior` reads back as a :class:`ShapeSamples`, which is all that
exports, pictures and reports need.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

__all__ = ["ShapeSamples", "Reliability", "Measurement", "verdict_sentence"]


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
        return {
            "mean": f(self.mean),
            "sd": f(self.sd),
            "lower": f(self.lower),
            "upper": f(self.upper),
            "level": self.level,
        }


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
        score: case-level unreliability score for ranking cases, larger is worse:
            ``max(mean credible radius / tolerance, max misfit / misfit_threshold)``;
            above 1 when the mean radius exceeds the tolerance or an observation is
            misfitting. A case can be ``uncertain`` with a score below 1: when a region's
            radii exceed the tolerance and the mean radius does not (the demo's case).
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
    max_fraction: float = 0.05
    misfit_threshold: float = 4.0

    @property
    def reliable(self) -> bool:
        return not (self.uncertain or self.misfitting)

    def verdict(self) -> str:
        """The case's verdict as one sentence that states its rule (see :func:`verdict_sentence`)."""
        return verdict_sentence(self.summary())

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
            "max_fraction": self.max_fraction,
            "misfit_threshold": self.misfit_threshold,
        }


def verdict_sentence(summary: dict) -> str:
    """The verdict of a reliability summary (:meth:`Reliability.summary`, as in ``summary.json``)
    in one sentence that states the rule it applied.

    A case is UNRELIABLE when it is too uncertain (more than ``max_fraction`` of the vertices
    have a credible radius above the tolerance) or misfitting (an observation's mean squared
    standardised residual above ``misfit_threshold``); otherwise RELIABLE. The score only ranks
    cases and is not part of the rule.

    Example:
        >>> verdict_sentence({"reliable": False, "uncertain": True, "misfitting": False, "level": 0.95,
        ...                   "tolerance_mm": 2.0, "fraction_vertices_flagged": 0.143, "max_fraction": 0.05,
        ...                   "misfit": [{"mean_sq_std_residual": 1.19}, {"mean_sq_std_residual": 1.0}],
        ...                   "misfit_threshold": 4.0, "score": 0.74})
        ... # doctest: +NORMALIZE_WHITESPACE
        'UNRELIABLE: too uncertain: 14.3% of the vertices have a 95% credible radius above 2 mm
         (more than 5% is flagged); misfit 1.19, 1.00 (above 4 is flagged); ranking score 0.74'
    """
    level = 100 * float(summary.get("level", 0.95))
    tol = float(summary.get("tolerance_mm", 2.0))
    frac = 100 * float(summary.get("fraction_vertices_flagged", 0.0))
    max_frac = 100 * float(summary.get("max_fraction", 0.05))
    thr = float(summary.get("misfit_threshold", 4.0))
    misfits = ", ".join(f"{float(m['mean_sq_std_residual']):.2f}" for m in summary.get("misfit", [])) or "none"
    uncertain, misfitting = bool(summary.get("uncertain")), bool(summary.get("misfitting"))
    parts = []
    if uncertain:
        parts.append(
            f"too uncertain: {frac:.1f}% of the vertices have a {level:.0f}% credible radius above {tol:g} mm "
            f"(more than {max_frac:g}% is flagged)"
        )
    else:
        parts.append(
            f"{frac:.1f}% of the vertices have a {level:.0f}% credible radius above {tol:g} mm (at most "
            f"{max_frac:g}% allowed)"
        )
    if misfitting:
        parts.append(
            f"misfitting: misfit {misfits} (above {thr:g} is flagged: the shape may lie outside the model, "
            "or the inputs are wrong)"
        )
    else:
        parts.append(f"misfit {misfits} (above {thr:g} is flagged)")
    head = "RELIABLE" if summary.get("reliable") else "UNRELIABLE"
    return f"{head}: " + "; ".join(parts) + f"; ranking score {float(summary.get('score', float('nan'))):.2f}"


class ShapeSamples:
    """Samples of meshes in correspondence, with per-vertex summaries (mm).

    Args:
        vertices: ``(n_samples, n_vert, 3)`` sample vertices, mm.
        faces: ``(n_face, 3)`` triangles shared by all samples (or None).
        method: how the samples were made (``"nuts"``, ``"svi"``, ...).
        diagnostics: the run's :class:`~bayesshape.inference.Diagnostics` record, or None.
        misfit: per observation, the posterior-predictive misfit (see :class:`Reliability`).

    Example:
        >>> s = ShapeSamples(np.random.default_rng(0).normal(size=(100, 4, 3)), None)
        >>> s.vertex_std().shape
        (4,)
    """

    def __init__(self, vertices, faces=None, *, method: str = "samples", diagnostics=None, misfit: list | None = None):
        v = np.asarray(vertices)
        self._init(method, diagnostics, faces, v.shape[1] if v.ndim == 3 else None)
        if v.ndim != 3 or v.shape[-1] != 3 or v.shape[0] < 2:
            raise ValueError(f"vertices: expected shape (n_samples >= 2, n_vert, 3), got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ValueError("vertices: samples contain NaN or inf")
        self._vertices = v
        self._misfit = list(misfit or [])

    def _init(self, method: str, diagnostics, faces, n_vertices: int | None) -> None:
        """What every distribution over shapes validates and holds, whatever holds its samples."""
        if not isinstance(method, str) or not method:
            raise ValueError(f"method: expected a non-empty name, got {method!r}")
        if diagnostics is not None and not callable(getattr(diagnostics, "to_dict", None)):
            raise ValueError(f"diagnostics: expected a Diagnostics record or None, got {type(diagnostics).__name__}")
        f = None
        if faces is not None:
            f = np.asarray(faces)
            if (
                f.ndim != 2
                or f.shape[1] != 3
                or not np.issubdtype(f.dtype, np.integer)
                or (f.size and (f.min() < 0 or (n_vertices is not None and f.max() >= n_vertices)))
            ):
                raise ValueError(
                    f"faces: expected (n_face, 3) vertex indices below {n_vertices}, got shape "
                    f"{f.shape} and dtype {f.dtype}"
                )
            f = f.astype(np.int64)
        self._faces = f
        self.method = method
        self.diagnostics = diagnostics
        self.inference_groups: dict | None = None  # ArviZ groups kept by a posterior file

    # ------------------------------------------------------------ samples
    @property
    def faces(self) -> np.ndarray | None:
        return self._faces

    def vertex_samples(self):
        """``(n_samples, n_vert, 3)`` vertices of every sample, mm."""
        return self._vertices

    def sample_vertices(self, n: int, *, seed: int = 0) -> np.ndarray:
        """``n`` shapes drawn from the samples, ``(n, n_vert, 3)`` mm."""
        if n < 1:
            raise ValueError(f"n: expected a positive number of samples, got {n}")
        x = np.asarray(self.vertex_samples())
        idx = np.random.default_rng(seed).choice(x.shape[0], n, replace=n > x.shape[0])
        return x[idx]

    def predictive_misfit(self) -> list:
        """Per observation: type, number of data, mean squared standardised residual."""
        return self._misfit

    def _cached(self, key, compute) -> np.ndarray:
        """Summaries of the (immutable) samples are computed once; callers get a copy."""
        cache = self.__dict__.setdefault("_stats", {})
        if key not in cache:
            cache[key] = np.asarray(compute())
        return cache[key].copy()

    def with_model_error(self, covariance, *, seed: int = 0) -> ShapeSamples:
        """These samples plus independent per-vertex model error ``N(0, covariance[v])``.

        Use the leave-one-out residual covariance of the model
        (:func:`bayesshape.loo_residual_covariance`) so that credible regions also
        cover what the model cannot represent. The error is added in the frame of the
        samples (it is assumed to be rotated little by the inferred pose).

        Args:
            covariance: ``(n_vert, 3, 3)`` mm^2, symmetric positive semi-definite.
            seed: seed of the added noise.
        """
        x = np.asarray(self.vertex_samples(), dtype=np.float64)
        cov = np.asarray(covariance, dtype=np.float64)
        if cov.shape != (x.shape[1], 3, 3):
            raise ValueError(f"covariance: expected shape ({x.shape[1]}, 3, 3) mm^2, got {cov.shape}")
        if not np.all(np.isfinite(cov)):
            raise ValueError("covariance: contains NaN or inf")
        w, v = np.linalg.eigh(0.5 * (cov + np.swapaxes(cov, 1, 2)))
        if w.min() < -1e-9 * max(float(w.max()), 1.0):
            raise ValueError("covariance: not positive semi-definite")
        root = v * np.sqrt(np.maximum(w, 0.0))[:, None, :]
        z = np.random.default_rng(seed).standard_normal(x.shape)
        noisy = x + np.einsum("nij,snj->sni", root, z)
        return ShapeSamples(
            noisy,
            self.faces,
            method=f"{self.method}+model_error",
            diagnostics=self.diagnostics,
            misfit=self.predictive_misfit(),
        )

    # ----------------------------------------------------------- summaries
    def mean_vertices(self) -> np.ndarray:
        """Posterior mean of every vertex, ``(n_vert, 3)`` mm."""
        return self._cached("mean", lambda: np.asarray(self.vertex_samples(), dtype=np.float64).mean(axis=0))

    def mean_mesh(self):
        """The posterior mean as a ``trimesh.Trimesh``."""
        import trimesh

        if self.faces is None:
            raise ValueError("mean_mesh: these samples have no faces (a point model)")
        return trimesh.Trimesh(self.mean_vertices(), self.faces, process=False)

    def vertex_covariance(self) -> np.ndarray:
        """Per-vertex 3 x 3 covariance, ``(n_vert, 3, 3)`` mm^2, from the samples."""

        def compute():
            x = np.asarray(self.vertex_samples(), dtype=np.float64)
            d = x - self.mean_vertices()[None]
            return np.einsum("sni,snj->nij", d, d) / max(x.shape[0] - 1, 1)

        return self._cached("covariance", compute)

    def vertex_std(self) -> np.ndarray:
        """Per-vertex RMS distance (mm) from the posterior mean: ``sqrt(trace(cov))``, ``(n_vert,)``."""
        return np.sqrt(np.trace(self.vertex_covariance(), axis1=1, axis2=2))

    def normal_std(self) -> np.ndarray:
        """Posterior sd (mm) of every vertex along the mean surface's normal, ``(n_vert,)``."""

        def compute():
            n = np.asarray(self.mean_mesh().vertex_normals)
            return np.sqrt(np.maximum(np.einsum("ni,nij,nj->n", n, self.vertex_covariance(), n), 0.0))

        return self._cached("normal_std", compute)

    def credible_radius(self, level: float = 0.95) -> np.ndarray:
        """Radius (mm) of the ball around each vertex's posterior mean that holds the
        vertex with posterior probability ``level``, ``(n_vert,)``."""
        if not 0 < level < 1:
            raise ValueError(f"level: expected a probability in (0, 1), got {level}")

        def sorted_distances():
            x = np.asarray(self.vertex_samples(), dtype=np.float64)
            return np.sort(np.linalg.norm(x - self.mean_vertices()[None], axis=-1), axis=0)

        def compute():
            # np.quantile's default (linear) rule on the distances sorted once for every level
            d = self._cached(("sorted_distances",), sorted_distances)
            pos = level * (d.shape[0] - 1)
            lo = int(np.floor(pos))
            hi = min(lo + 1, d.shape[0] - 1)
            return d[lo] + (pos - lo) * (d[hi] - d[lo])

        return self._cached(("credible_radius", float(level)), compute)

    def reliability(
        self,
        tolerance_mm: float = 2.0,
        *,
        level: float = 0.95,
        max_fraction: float = 0.05,
        misfit_threshold: float = 4.0,
    ) -> Reliability:
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
        if not np.isfinite(tolerance_mm) or tolerance_mm <= 0:
            raise ValueError(f"tolerance_mm: expected a positive tolerance in mm, got {tolerance_mm}")
        r = self.credible_radius(level)
        flags = r > tolerance_mm
        misfit = self.predictive_misfit()
        worst = max((m["mean_sq_std_residual"] for m in misfit), default=0.0)
        frac = float(flags.mean())
        score = max(float(r.mean()) / tolerance_mm, worst / misfit_threshold)
        return Reliability(
            flags,
            r,
            float(tolerance_mm),
            float(level),
            frac,
            misfit,
            frac > max_fraction,
            worst > misfit_threshold,
            score,
            float(max_fraction),
            float(misfit_threshold),
        )

    def to_shape_model(self, rank: int | None = None):
        """The posterior as a low-rank Gaussian :class:`~bayesshape.ShapeModel` over the shape.

        Its mean is the posterior mean and its covariance the samples' covariance (PCA of the
        samples, at most ``n_samples - 1`` modes; ``rank`` keeps the largest). Saved with
        :func:`bayesshape.io.save_statismo`, a reconstruction's posterior opens in scalismo-ui and
        Statismo's tools like any shape model.

        Example:
            >>> bs.io.save_statismo(post.to_shape_model(), "posterior_model.h5")   # doctest: +SKIP
        """
        from ..prior._shapes import pca
        from ..prior.model import ShapeModel

        if rank is not None and (not isinstance(rank, int | np.integer) or rank < 1):
            raise ValueError(f"rank: expected a positive number of modes or None, got {rank!r}")
        mean, basis, var, total = pca(np.asarray(self.vertex_samples(), dtype=np.float64))
        k = var.shape[0] if rank is None else min(int(rank), var.shape[0])
        return ShapeModel(mean, basis[:, :k], var[:k], faces=self.faces, total_variance=total)

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
        return Measurement(
            np.asarray(vals.mean(0)),
            np.asarray(vals.std(0, ddof=1)),
            np.asarray(np.quantile(vals, a, axis=0)),
            np.asarray(np.quantile(vals, 1 - a, axis=0)),
            float(level),
            vals,
        )

    def to_arviz(self):
        """An ``arviz.InferenceData`` of the parameter samples that a posterior file keeps (see
        :meth:`bayesshape.Posterior.to_arviz`); vertex samples alone cannot be converted."""
        if not self.inference_groups:
            raise ValueError(
                "to_arviz: these samples hold vertices only, no parameter samples; convert the Posterior that "
                "bayesshape.infer returned, or a posterior file written by save_posterior from one"
            )
        from ._arviz import to_inference_data

        return to_inference_data(self.inference_groups)

    def summary(self) -> dict:
        """JSON-ready summary: method, number of samples, diagnostics (no large arrays)."""
        diag = {} if self.diagnostics is None else self.diagnostics.to_dict(compact=True)
        return {"method": self.method, "n_samples": int(self.vertex_samples().shape[0]), "diagnostics": diag}
