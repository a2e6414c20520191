"""What a shape model cannot represent: the per-vertex covariance of its leave-one-out residual.

A PCA model built from ``n`` shapes spans at most ``n - 1`` directions; an unseen shape
differs from its best model fit by a residual that no posterior over the model's
coefficients can know about. Its size is measured by leave-one-out: build the model
without shape ``i``, fit shape ``i`` (pose and coefficients), keep the residual. The
per-vertex ``3 x 3`` covariance of these residuals is the model error that
:meth:`bayesshape.ShapeSamples.with_model_error` adds to a posterior, so that credible
regions account for anatomy outside the model (docs/experiments.md measures the effect).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ._shapes import as_shapes, pca, procrustes_align, similarity_transform
from .model import ShapeModel

__all__ = ["loo_residual_covariance", "loo_variance_ratio", "best_fit"]


def best_fit(model, points, *, align: str | None = "rigid", iterations: int = 3):
    """The model's closest shape to ``points`` after moving them onto the model.

    Alternates a pose fit (Umeyama, ``"rigid"`` or ``"similarity"``) of the points onto
    their current model projection with the projection itself (least squares over the
    vertices); ``align=None`` projects once without moving them.

    Args:
        model: a :class:`ShapeModel`.
        points: ``(n_vert, 3)`` shape in correspondence, mm.

    Returns:
        ``(moved points (n_vert, 3), model fit (n_vert, 3))`` in the model frame, mm;
        their difference is what the model cannot represent.

    Example:
        >>> x, fit = best_fit(model, truth.vertices)      # doctest: +SKIP
    """
    if align not in (None, "rigid", "similarity"):
        raise ValueError(f"align: expected None, 'rigid' or 'similarity', got {align!r}")
    x = np.asarray(points, dtype=np.float64)
    if align is not None:
        for _ in range(iterations):
            target = np.asarray(model.project(jnp.asarray(x)))
            s, r, t = similarity_transform(x, target, scale=align == "similarity")
            x = s * x @ r.T + t
    return x, np.asarray(model.project(jnp.asarray(x)))


def _loo_fits(shapes, align, n_modes=None):
    """For each of the (aligned) ``shapes``: the model of the others, the left-out shape moved onto it
    and its fit, ``(model, x, fit)``."""
    for i in range(shapes.shape[0]):
        mean, basis, var, total = pca(np.delete(shapes, i, axis=0), n_modes)
        model = ShapeModel(mean, basis, var, total_variance=total)
        x, fit = best_fit(model, shapes[i], align=align)
        yield model, x, fit


def loo_residuals(shapes: np.ndarray, align, n_modes: int | None = None) -> np.ndarray:
    """``(n, N, 3)`` residuals of each aligned shape from its best fit by a PCA model of the others."""
    return np.stack([x - fit for _, x, fit in _loo_fits(shapes, align, n_modes)])


def loo_residual_covariance(
    meshes, *, align: str | None = "rigid", n_modes: int | None = None, shrinkage: float = 0.3
) -> np.ndarray:
    """Per-vertex covariance ``(N, 3, 3)`` (mm^2) of the leave-one-out model residual.

    Args:
        meshes: the training shapes of the model (meshes or ``(N, 3)`` arrays, mm, in
            correspondence), at least 3.
        align: ``"rigid"``, ``"similarity"`` or ``None``, as for :func:`build_pca_model`;
            the left-out shape is fitted with the same kind of transform.
        n_modes: modes of the leave-one-out models (default: all).
        shrinkage: weight of the isotropic part ``trace(C)/3 I`` mixed into each
            vertex's covariance ``C`` (0: the raw estimate from ``n`` residuals).

    Returns:
        The covariance of each vertex's residual, in the frame of the aligned shapes.

    Example:
        >>> shapes = bs.datasets.example_shapes(12, seed=0)
        >>> cov = loo_residual_covariance(shapes)            # (3202, 3, 3) mm^2
    """
    shapes, _ = as_shapes(meshes, None)
    n = shapes.shape[0]
    if n < 3:
        raise ValueError(f"meshes: leave-one-out needs at least 3 shapes, got {n}")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage: expected a weight in [0, 1], got {shrinkage}")
    if align not in (None, "rigid", "similarity"):
        raise ValueError(f"align: expected None, 'rigid' or 'similarity', got {align!r}")
    if align is not None:
        shapes = procrustes_align(shapes, scale=align == "similarity")
    k = None if n_modes is None else min(n_modes, n - 2)
    resid = loo_residuals(shapes, align, k)
    cov = np.einsum("inj,ink->njk", resid, resid) / n
    iso = np.trace(cov, axis1=1, axis2=2)[:, None, None] / 3.0 * np.eye(3)[None]
    return (1.0 - shrinkage) * cov + shrinkage * iso


def loo_variance_ratio(meshes, *, align: str | None = "rigid", n_modes: int | None = None) -> np.ndarray:
    """How much wider than its sample variance each PCA mode is for an unseen shape, ``(K,)``.

    The sample variances of a PCA model describe the training shapes; a new shape spreads
    further along most modes, the more so the smaller the mode (the trailing eigenvalues
    of a sample covariance are biased low, and the sample eigenvectors are off the true
    ones). Leave-one-out measures it: for each shape ``i``, build the model from the others,
    fit shape ``i`` (pose, then orthogonal projection) and take its squared standardised
    coefficient on each mode, ``c_ij^2 = (u_j . (x_i - mean)) ^ 2 / lambda_j``. The ratio of mode
    ``j`` is the mean over ``i`` of ``c_ij^2`` (1 when the sample variance is right), made
    non-decreasing along the modes by isotonic regression (it pools the noisy per-mode means:
    each rests on ``n`` shapes). Modes beyond those of the leave-one-out models (the full model has
    one more) take the last ratio. :func:`build_pca_model` with ``variance="loo"`` applies it.

    Args:
        meshes: the training shapes (meshes or ``(N, 3)`` arrays, mm, in correspondence), at least 4.
        align: ``"rigid"``, ``"similarity"`` or ``None``, as for :func:`build_pca_model`.
        n_modes: the number of modes of the full model (default: all with non-zero variance).

    Returns:
        Ratios ``(n_modes,)``, dimensionless.

    Example:
        >>> r = loo_variance_ratio(bs.datasets.example_shapes(20, seed=0))   # doctest: +SKIP
        >>> r[:3], r[-3:]  # about 1 for the leading modes, 10 to 60 for the last  # doctest: +SKIP
    """
    shapes, _ = as_shapes(meshes, None)
    n = shapes.shape[0]
    if n < 4:
        raise ValueError(f"meshes: leave-one-out mode variances need at least 4 shapes, got {n}")
    if align not in (None, "rigid", "similarity"):
        raise ValueError(f"align: expected None, 'rigid' or 'similarity', got {align!r}")
    if align is not None:
        shapes = procrustes_align(shapes, scale=align == "similarity")
    full = pca(shapes)[2].shape[0]
    k = full if n_modes is None else int(n_modes)
    if not 1 <= k <= full:
        raise ValueError(f"n_modes: expected 1..{full} (the modes with non-zero variance), got {k}")
    return variance_ratio_of_aligned(shapes, align, k)


def variance_ratio_of_aligned(shapes, align, k: int) -> np.ndarray:
    """:func:`loo_variance_ratio` of already aligned ``(n, N, 3)`` shapes, for ``k`` checked modes."""
    from scipy.optimize import isotonic_regression

    sq = []
    for model, x, _ in _loo_fits(shapes, align):
        resid = (x - np.asarray(model.mean)).reshape(-1)
        c = (np.asarray(model.basis).T @ resid) / np.sqrt(np.asarray(model.variance))
        sq.append(c[:k] ** 2)
    m = min(len(c) for c in sq)
    fitted = isotonic_regression(np.mean([c[:m] for c in sq], axis=0), increasing=True).x
    return np.concatenate([fitted, np.full(k - m, fitted[-1])]) if k > m else fitted[:k]
