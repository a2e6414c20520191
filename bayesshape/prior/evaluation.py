"""The standard evaluation of a shape model (Styner et al. 2003): compactness, generalization and
specificity against the number of modes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._shapes import as_shapes, pca, procrustes_align
from .model import ShapeModel
from .residual import best_fit

__all__ = ["ModelEvaluation", "evaluate_model"]


@dataclass(frozen=True)
class ModelEvaluation:
    """Compactness, generalization and specificity of a PCA model, one value per number of modes.

    Attributes:
        modes: ``(M,)`` the numbers of modes, 1 to ``n - 2`` (the most a leave-one-out model has), or
            fewer when the shapes vary along fewer directions.
        compactness: ``(M,)`` fraction of the training variance the first modes explain.
        generalization: ``(M,)`` mean vertex distance (mm) of each left-out shape to its best fit
            by the model of the others (rigid pose and coefficients), averaged over the shapes.
        generalization_se: ``(M,)`` its standard error over the shapes.
        specificity: ``(M,)`` mean vertex distance (mm) of random model shapes to their nearest
            training shape, averaged over ``n_samples`` draws.
        specificity_se: ``(M,)`` its standard error over the draws.
    """

    modes: np.ndarray
    compactness: np.ndarray
    generalization: np.ndarray
    generalization_se: np.ndarray
    specificity: np.ndarray
    specificity_se: np.ndarray

    def to_dict(self) -> dict:
        return {k: np.asarray(getattr(self, k)).tolist() for k in self.__dataclass_fields__}

    def table(self) -> str:
        """A Markdown table, one row per number of modes."""
        rows = [
            "| modes | compactness | generalization (mm) | specificity (mm) |",
            "|---:|---:|---:|---:|",
        ]
        for i, m in enumerate(self.modes):
            rows.append(
                f"| {int(m)} | {100 * self.compactness[i]:.1f}% | {self.generalization[i]:.2f} ± "
                f"{self.generalization_se[i]:.2f} | {self.specificity[i]:.2f} ± {self.specificity_se[i]:.2f} |"
            )
        return "\n".join(rows)


def evaluate_model(
    meshes, *, align: str | None = "rigid", faces=None, n_samples: int = 200, seed: int = 0
) -> ModelEvaluation:
    """Compactness, generalization (leave-one-out) and specificity of PCA models of ``meshes``.

    Args:
        meshes: shapes in correspondence (meshes or ``(N, 3)`` arrays, mm), at least 4.
        align: generalised Procrustes alignment of the shapes first (``"rigid"``,
            ``"similarity"`` or ``None``); the left-out shape is fitted with the same pose.
        n_samples: random shapes drawn for the specificity.
        seed: seed of those draws.

    Example:
        >>> ev = evaluate_model(bs.datasets.example_shapes(8, seed=0))   # doctest: +SKIP
        >>> print(ev.table())                                            # doctest: +SKIP
    """
    shapes, _ = as_shapes(meshes, faces)
    n = shapes.shape[0]
    if n < 4:
        raise ValueError(f"meshes: a model evaluation needs at least 4 shapes, got {n}")
    if align not in ("rigid", "similarity", None):
        raise ValueError(f"align: expected 'rigid', 'similarity' or None, got {align!r}")
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples: expected a positive integer, got {n_samples!r}")
    if align is not None:
        shapes = procrustes_align(shapes, scale=align == "similarity")
    mean, basis, var, total = pca(shapes, None)
    max_m = min(n - 2, var.shape[0])
    modes = np.arange(1, max_m + 1)

    compact = np.cumsum(var)[:max_m] / total

    gen = np.zeros((n, max_m))
    for i in range(n):
        mu, b, v, t = pca(np.delete(shapes, i, axis=0), None)
        for m in modes:
            k = min(m, v.shape[0])
            model = ShapeModel(mu, b[:, :k], v[:k], total_variance=t)
            x, fit = best_fit(model, shapes[i], align=align)
            gen[i, m - 1] = np.linalg.norm(x - fit, axis=1).mean()

    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_samples, var.shape[0]))
    spec = np.zeros((n_samples, max_m))
    for m in modes:
        draws = mean.reshape(1, -1) + (z[:, :m] * np.sqrt(var[:m])) @ basis[:, :m].T
        draws = draws.reshape(n_samples, -1, 3)
        d = np.stack([np.linalg.norm(draws - s, axis=-1).mean(-1) for s in shapes], axis=1)  # (S, n)
        spec[:, m - 1] = d.min(axis=1)
    return ModelEvaluation(
        modes=modes,
        compactness=compact,
        generalization=gen.mean(0),
        generalization_se=gen.std(0, ddof=1) / np.sqrt(n),
        specificity=spec.mean(0),
        specificity_se=spec.std(0, ddof=1) / np.sqrt(n_samples),
    )
