"""Building PCA shape models from meshes in correspondence."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ._shapes import as_shapes, pca, procrustes_align, similarity_transform
from .model import ShapeModel
from .residual import variance_ratio_of_aligned

__all__ = ["build_pca_model", "procrustes_align", "similarity_transform"]


def build_pca_model(
    meshes: Sequence,
    *,
    align: str | None = "similarity",
    faces=None,
    n_modes: int | None = None,
    noise_variance: float = 0.0,
    variance: str = "sample",
    model_error: bool = False,
) -> ShapeModel:
    """Build a PCA shape model from shapes in correspondence.

    Args:
        meshes: trimesh meshes or ``(N, 3)`` vertex arrays (mm) with the same vertex
            count and order; meshes must share their triangulation.
        align: ``"similarity"`` or ``"rigid"`` generalised Procrustes alignment, or
            ``None`` to use the shapes as given.
        faces: ``(F, 3)`` triangles for vertex arrays (default: taken from the meshes;
            ``None`` for a point-set model).
        n_modes: keep this many modes (default: all with non-zero variance, at most
            ``n - 1``).
        noise_variance: isotropic noise variance of the model, mm^2.
        variance: ``"sample"`` (default): the sample variance of each mode, as every PCA
            model (and Statismo) has it; ``"loo"``: each mode's variance multiplied by the
            leave-one-out ratio of :func:`~bayesshape.prior.loo_variance_ratio`, so that the
            prior is as wide as the spread of *unseen* shapes along the modes. With few
            training shapes the trailing sample variances are several times too small for
            a new shape (docs/models.md), and a posterior built on them is over-confident
            where the data leave the prior in charge. Needs at least 4 shapes. The modes
            are re-sorted by their new variance.
        model_error: add the model's leave-one-out residual to the prior as a Gaussian
            process (:func:`~bayesshape.prior.fit_model_error` and
            :func:`~bayesshape.prior.add_model_error` with their defaults): extra modes
            along the surface normal and per-vertex noise along the surface, so that
            posteriors stay honest about anatomy outside the span of the training shapes.
            Needs at least 4 shapes. Use it for real anatomy (docs/experiments.md
            measures the coverage it buys).

    PCA is an SVD of the centred ``n x 3N`` data matrix (in float64), never an
    ``3N x 3N`` covariance; mode variances are ``s^2 / (n - 1)``. The model's
    ``total_variance`` is the total sample variance, so
    ``model.explained_variance_ratio`` is the fraction each mode explains.

    Example:
        >>> import bayesshape as bs
        >>> model = bs.build_pca_model(bs.datasets.example_shapes(10, seed=0), align="rigid")
    """
    shapes, ref_faces = as_shapes(meshes, faces)
    if align not in ("similarity", "rigid", None):
        raise ValueError(f"align: expected 'similarity', 'rigid' or None, got {align!r}")
    if variance not in ("sample", "loo"):
        raise ValueError(f"variance: expected 'sample' or 'loo', got {variance!r}")
    if not isinstance(model_error, bool):
        raise ValueError(f"model_error: expected True or False, got {model_error!r}")
    if model_error and shapes.shape[0] < 4:
        raise ValueError(f"meshes: model_error=True needs at least 4 shapes, got {shapes.shape[0]}")
    if variance == "loo" and shapes.shape[0] < 4:
        raise ValueError(f"meshes: variance='loo' needs at least 4 shapes, got {shapes.shape[0]}")
    if align is not None:
        shapes = procrustes_align(shapes, scale=(align == "similarity"))
    mean, basis, var, total = pca(shapes, n_modes)
    keep = var.shape[0]
    if variance == "loo":
        ratio = variance_ratio_of_aligned(shapes, align, keep)
        new = var * ratio
        order = np.argsort(-new, kind="stable")
        total += float(new.sum() - var.sum())
        basis, var = basis[:, order], new[order]
    model = ShapeModel(
        mean,
        basis,
        var,
        noise_variance=noise_variance,
        faces=ref_faces,
        total_variance=total,
    )
    if model_error:
        from .model_error import add_model_error, fit_model_error

        model = add_model_error(model, fit_model_error(shapes, align=align, faces=ref_faces, n_modes=n_modes))
    return model
