"""Shapes in correspondence as arrays: stacking, similarity transforms, generalised Procrustes and
the PCA of aligned shapes; shared by model building and the leave-one-out residuals."""

from __future__ import annotations

import numpy as np

from .._checks import as_faces, as_points

__all__ = ["as_shapes", "similarity_transform", "procrustes_align", "pca"]


def as_shapes(meshes, faces=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Stack meshes (trimesh objects or vertex arrays) into ``(n, N, 3)`` float64."""
    if isinstance(meshes, np.ndarray) and meshes.ndim == 3:
        items = list(meshes)
    else:
        items = list(meshes)
    if len(items) < 2:
        raise ValueError(f"meshes: a PCA model needs at least 2 shapes, got {len(items)}")
    shapes: list[np.ndarray] = []
    ref_faces: np.ndarray | None = None
    for i, m in enumerate(items):
        if hasattr(m, "vertices"):
            v = as_points(m.vertices, f"meshes[{i}].vertices")
            f = getattr(m, "faces", None)
            if f is not None and len(f):
                f = as_faces(f, v.shape[0], f"meshes[{i}].faces")
                if ref_faces is None:
                    ref_faces = f
                elif f.shape != ref_faces.shape or not np.array_equal(f, ref_faces):
                    raise ValueError(
                        f"meshes[{i}]: faces differ from meshes[0]'s "
                        f"({f.shape[0]} vs {ref_faces.shape[0]} triangles or different connectivity); "
                        "shapes must be in correspondence (same triangulation)"
                    )
        else:
            v = as_points(m, f"meshes[{i}]")
        if shapes and v.shape != shapes[0].shape:
            raise ValueError(
                f"meshes[{i}]: has {v.shape[0]} vertices but meshes[0] has {shapes[0].shape[0]}; "
                "shapes must be in correspondence (same vertex count and order)"
            )
        shapes.append(v)
    stack = np.stack(shapes)
    if faces is not None:
        ref_faces = as_faces(faces, stack.shape[1])
    return stack, ref_faces


def similarity_transform(source, target, *, scale: bool = True):
    """Least-squares similarity (or rigid) transform mapping ``source`` onto ``target``.

    Umeyama's method: returns ``(s, R, t)`` with ``target ~ s * source @ R.T + t``;
    ``R`` is a proper rotation (det +1). Points ``(N, 3)`` in mm.
    """
    src = np.asarray(source, dtype=np.float64)
    dst = np.asarray(target, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    u, sv, vt = np.linalg.svd(cov)
    d = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1.0
    rot = (u * d) @ vt
    var_s = (a**2).sum() / len(src)
    s = float((sv * d).sum() / var_s) if scale else 1.0
    t = mu_d - s * rot @ mu_s
    return s, rot, t


def procrustes_align(shapes, *, scale: bool = True, max_iter: int = 100, tol: float = 1e-10):
    """Generalised Procrustes alignment of ``(n, N, 3)`` shapes.

    Each shape is aligned (rigid, or similarity with ``scale=True``) to the running
    mean until the mean stops changing. The mean is kept at the first shape's
    centroid, orientation and size, so the aligned shapes stay in that shape's
    units and frame (mm), rather than being normalised to unit size.

    Returns:
        The aligned shapes, ``(n, N, 3)``.
    """
    shapes = np.asarray(shapes, dtype=np.float64)
    ref = shapes[0]
    mean = ref.copy()
    aligned = shapes.copy()
    for _ in range(max_iter):
        for i, x in enumerate(shapes):
            s, r, t = similarity_transform(x, mean, scale=scale)
            aligned[i] = s * x @ r.T + t
        new_mean = aligned.mean(0)
        # keep the frame and size of the reference: re-anchor the mean to it
        s, r, t = similarity_transform(new_mean, ref, scale=scale)
        new_mean = s * new_mean @ r.T + t
        change = np.sqrt(((new_mean - mean) ** 2).sum(1).mean())
        mean = new_mean
        if change < tol * max(1.0, np.abs(ref).max()):
            break
    for i, x in enumerate(shapes):
        s, r, t = similarity_transform(x, mean, scale=scale)
        aligned[i] = s * x @ r.T + t
    return aligned


def pca(shapes: np.ndarray, n_modes: int | None = None):
    """PCA of aligned ``(n, N, 3)`` shapes by an SVD of the centred ``n x 3N`` data matrix.

    Returns ``(mean (N, 3), basis (3N, k), variance (k,), total_variance)`` with the modes of
    non-zero variance (or the first ``n_modes``).
    """
    n = shapes.shape[0]
    data = shapes.reshape(n, -1)
    mean = data.mean(0)
    _, sv, vt = np.linalg.svd(data - mean[None, :], full_matrices=False)
    var = sv**2 / (n - 1)
    total = float(var.sum())
    keep = int(np.sum(var > 1e-12 * max(total, 1e-300)))
    if n_modes is not None:
        if not 1 <= n_modes <= keep:
            raise ValueError(f"n_modes: expected 1..{keep} (modes with non-zero variance), got {n_modes}")
        keep = n_modes
    if keep == 0:
        raise ValueError("meshes: all shapes are identical after alignment; there is no variation to model")
    return mean.reshape(-1, 3), vt[:keep].T, var[:keep], total
