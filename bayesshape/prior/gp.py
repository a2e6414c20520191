"""Gaussian-process shape models: low-rank approximation of a kernel on a mesh.

Low-rank method: **pivoted Cholesky** of the kernel matrix on the reference
vertices, followed by a thin SVD of the factor. Pivoted Cholesky needs only the
kernel's diagonal and one column per step (memory ``O(3N r)``, never the
``3N x 3N`` matrix), and it knows its own error exactly: the trace of the
residual ``K - L L^T`` is the sum of the remaining diagonal. The SVD of ``L``
turns the factor into orthonormal eigenvectors and variances. The retained
fraction of the kernel's trace is stored on the model
(``model.variance.sum() / model.total_variance``), so the approximation error in
trace norm is ``1 - retained``.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from .._checks import as_faces, as_points
from .kernels import Kernel
from .model import ShapeModel

__all__ = ["gp_model", "augment", "low_rank_kernel"]


def _pivoted_cholesky(diag: np.ndarray, column, max_rank: int, tol_trace: float) -> np.ndarray:
    """Greedy pivoted Cholesky ``K ~ L L^T``; stops at ``max_rank`` or residual trace <= tol."""
    d = diag.astype(np.float64).copy()
    m = d.shape[0]
    max_rank = min(max_rank, m)
    factor = np.zeros((m, max_rank))
    k = 0
    for k in range(max_rank + 1):
        if k == max_rank or d.sum() <= tol_trace:
            break
        p = int(np.argmax(d))
        if d[p] <= 0:
            break
        col = column(p) - factor[:, :k] @ factor[p, :k]
        factor[:, k] = col / math.sqrt(d[p])
        d = np.maximum(d - factor[:, k] ** 2, 0.0)
    return factor[:, :k]


def _eigen_from_factor(factor: np.ndarray):
    u, s, _ = np.linalg.svd(factor, full_matrices=False)
    return s**2, u


def low_rank_kernel(points, kernel: Kernel, *, rank: int | None = None, retained: float = 0.99):
    """Low-rank eigen-approximation of a matrix-valued kernel on ``points``.

    Args:
        points: ``(N, 3)`` points, mm.
        kernel: a :class:`~bayesshape.kernels.Kernel`.
        rank: number of modes to return; default: the fewest that keep
            ``retained`` of the kernel's trace.
        retained: target fraction of the trace (used when ``rank`` is None).

    Returns:
        ``(variance (K,), basis (3N, K), trace)``: eigenvalues (mm^2, descending),
        orthonormal eigenvectors over interleaved coordinates, and the kernel's
        total trace.
    """
    x = as_points(points, "points")
    n = x.shape[0]
    if not 0 < retained <= 1:
        raise ValueError(f"retained: expected a fraction in (0, 1], got {retained}")
    if rank is not None and not 1 <= rank <= 3 * n:
        raise ValueError(f"rank: expected 1..{3 * n} (3 x number of points), got {rank}")
    xj = jnp.asarray(x)
    var = np.asarray(kernel.variance(xj), dtype=np.float64)  # (N, 3)
    trace = float(var.sum())
    # run the factorisation a little beyond the target so the leading eigenpairs are accurate
    tol = trace * max(0.0, 1.0 - retained) * 0.1 if rank is None else 0.0

    if kernel.is_isotropic:

        def column(p):
            return np.asarray(kernel.diagonal_matrix(xj, xj[p : p + 1])[:, 0, 0], dtype=np.float64)

        want = n if rank is None else min(n, int(1.5 * math.ceil(rank / 3)) + 10)
        f = _pivoted_cholesky(var[:, 0], column, want, tol / 3)
        lam, u = _eigen_from_factor(f)
        lam_all = np.repeat(lam, 3)
        basis = np.zeros((3 * n, 3 * lam.size))
        for a in range(3):
            basis[a::3, a::3] = u
    else:

        def column(c):
            p, a = divmod(c, 3)
            col = np.zeros(3 * n)
            col[a::3] = np.asarray(kernel.diagonal_matrix(xj, xj[p : p + 1])[:, 0, a], dtype=np.float64)
            return col

        want = 3 * n if rank is None else min(3 * n, int(1.5 * rank) + 10)
        f = _pivoted_cholesky(var.reshape(-1), column, want, tol)
        lam_all, basis = _eigen_from_factor(f)

    order = np.argsort(-lam_all, kind="stable")
    lam_all, basis = lam_all[order], basis[:, order]
    if rank is None:
        cum = np.cumsum(lam_all) / trace
        rank = min(int(np.searchsorted(cum, retained)) + 1, int(lam_all.size))
    rank = min(rank, lam_all.size)
    return lam_all[:rank], basis[:, :rank], trace


def gp_model(
    reference_mesh, kernel: Kernel, rank: int | None = None, *, retained: float = 0.99, noise_variance: float = 0.0
) -> ShapeModel:
    """A Gaussian-process shape model: the reference shape deformed by a GP.

    ``x = reference + u``, ``u ~ GP(0, kernel)`` on the reference vertices,
    approximated at rank ``rank`` by pivoted Cholesky and SVD (see module doc).

    Args:
        reference_mesh: a trimesh mesh, ``(vertices, faces)``, or ``(N, 3)`` points (mm).
        kernel: matrix-valued kernel, e.g. ``kernels.GaussianKernel(scale=100., length=50.)``.
        rank: number of modes; default: the fewest that keep ``retained`` of the trace.
        retained: fraction of the kernel's trace to keep when ``rank`` is None.

    Example:
        >>> import bayesshape as bs
        >>> ref = bs.datasets.example_shapes(1, seed=0)[0]
        >>> gp = bs.gp_model(ref, bs.kernels.GaussianKernel(25.0, 100.0), retained=0.99)
        >>> float(gp.variance.sum() / gp.total_variance) >= 0.99
        True
    """
    vertices, faces = _reference(reference_mesh)
    lam, basis, trace = low_rank_kernel(vertices, kernel, rank=rank, retained=retained)
    return ShapeModel(vertices, basis, lam, noise_variance=noise_variance, faces=faces, total_variance=trace)


def augment(pca_model: ShapeModel, kernel: Kernel, rank: int, *, kernel_rank: int | None = None) -> ShapeModel:
    """PCA covariance plus a kernel, re-approximated at rank ``rank``.

    The covariance ``U diag(var) U^T + K`` (``K`` the kernel on the model's mean
    vertices) is factored as ``[U diag(sqrt var), L]`` with ``L`` the pivoted
    Cholesky factor of ``K`` (``kernel_rank`` columns, default ``2 * rank``), and its
    leading ``rank`` eigenpairs are taken from a thin SVD of that factor. This is the
    usual way to let a model built from few training shapes explain unseen shapes.
    """
    if not isinstance(pca_model, ShapeModel):
        raise ValueError(f"pca_model: expected a ShapeModel, got {type(pca_model).__name__}")
    mean = np.asarray(pca_model.mean, dtype=np.float64)
    n3 = mean.size
    if not isinstance(rank, (int, np.integer)) or not 1 <= rank <= n3:
        raise ValueError(f"rank: expected an integer in 1..{n3}, got {rank!r}")
    kr = 2 * rank if kernel_rank is None else kernel_rank
    lam_k, basis_k, trace_k = low_rank_kernel(mean, kernel, rank=min(kr, n3))
    pca_factor = np.asarray(pca_model.basis, np.float64) * np.sqrt(np.asarray(pca_model.variance, np.float64))[None, :]
    factor = np.concatenate([pca_factor, basis_k * np.sqrt(lam_k)[None, :]], axis=1)
    lam, basis = _eigen_from_factor(factor)
    rank = min(rank, lam.size)
    total = float(pca_model.total_variance) + trace_k
    return ShapeModel(
        mean,
        basis[:, :rank],
        lam[:rank],
        noise_variance=float(pca_model.noise_variance),
        faces=pca_model.faces,
        total_variance=total,
        vertex_noise=pca_model.vertex_noise,
    )


def _reference(mesh):
    if hasattr(mesh, "vertices"):
        v = as_points(mesh.vertices, "reference_mesh.vertices")
        f = getattr(mesh, "faces", None)
        f = as_faces(f, v.shape[0], "reference_mesh.faces") if f is not None and len(f) else None
        return v, f
    if isinstance(mesh, tuple) and len(mesh) == 2:
        v = as_points(mesh[0], "reference_mesh[0] (vertices)")
        return v, as_faces(mesh[1], v.shape[0], "reference_mesh[1] (faces)")
    return as_points(mesh, "reference_mesh"), None
