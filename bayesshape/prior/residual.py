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

from .build import _as_shapes, build_pca_model, procrustes_align, similarity_transform

__all__ = ["loo_residual_covariance", "best_fit"]


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


def loo_residual_covariance(meshes, *, align: str | None = "rigid", n_modes: int | None = None,
                            shrinkage: float = 0.3) -> np.ndarray:
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
    shapes, _ = _as_shapes(meshes, None)
    n = shapes.shape[0]
    if n < 3:
        raise ValueError(f"meshes: leave-one-out needs at least 3 shapes, got {n}")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage: expected a weight in [0, 1], got {shrinkage}")
    if align not in (None, "rigid", "similarity"):
        raise ValueError(f"align: expected None, 'rigid' or 'similarity', got {align!r}")
    if align is not None:
        shapes = procrustes_align(shapes, scale=align == "similarity")
    resid = np.empty_like(shapes)
    k = None if n_modes is None else min(n_modes, n - 2)
    for i in range(n):
        model = build_pca_model(list(np.delete(shapes, i, axis=0)), align=None, n_modes=k)
        x, fit = best_fit(model, shapes[i], align=align)
        resid[i] = x - fit
    cov = np.einsum("inj,ink->njk", resid, resid) / n
    iso = np.trace(cov, axis1=1, axis2=2)[:, None, None] / 3.0 * np.eye(3)[None]
    return (1.0 - shrinkage) * cov + shrinkage * iso
