"""A coarse copy of a model's mesh for the image likelihoods.

Contour and DRR likelihoods cost time in proportion to the mesh: its edges (contour
generators) and its triangles (ray casting). A femur mesh of 11649 vertices needs about
0.4 s per contour gradient on a 2-core CPU; the silhouette of a 2.6 mm-pixel X-ray does
not need that many. :func:`coarsen_mesh` decimates the mean shape (quadric edge
collapse, the ``fast-simplification`` library) and keeps, for every coarse vertex, one
of the model's own vertices, then flips edges to remove the slivers that this
snapping leaves (a sliver's normal, and so its contour weight, turns almost
discontinuously with the shape). The coarse mesh is therefore a *row subset* of the model:
``vertices[index]`` with new faces, exact for every shape of the model, so the posterior
over the shape coefficients and the pose stays the posterior of the full mesh.
"""

from __future__ import annotations

import numpy as np

from ._flip import flip_slivers

__all__ = ["coarsen_mesh"]


def coarsen_mesh(vertices, faces, n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Decimate a triangle mesh to about ``n_faces`` faces, keeping original vertices.

    Args:
        vertices: ``(N, 3)`` vertices (mm), e.g. a model's mean shape.
        faces: ``(F, 3)`` triangles (vertex indices).
        n_faces: target face count, ``4 <= n_faces``; at or above ``F`` the mesh is
            returned unchanged.

    Returns:
        ``(index, coarse_faces)``: ``index (n,)`` the original vertex kept for each
        coarse vertex (the one closest to the quadric-optimal position of its cluster),
        and ``coarse_faces (f, 3)`` indexing ``index``. The coarse mesh of any shape
        ``X`` in correspondence is ``(X[index], coarse_faces)``.

    Example:
        >>> index, cf = coarsen_mesh(model.mean, model.faces, 4000)     # doctest: +SKIP
        >>> coarse = trimesh.Trimesh(np.asarray(model.mean)[index], cf)  # doctest: +SKIP
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices: expected shape (N, 3), got {v.shape}")
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"faces: expected integer triangles of shape (F, 3), got {f.shape} {f.dtype}")
    n_faces = int(n_faces)
    if n_faces < 4:
        raise ValueError(f"n_faces: expected a target of at least 4 faces, got {n_faces}")
    if n_faces >= f.shape[0]:
        return np.arange(v.shape[0]), f.astype(np.int64)
    import fast_simplification

    pts = v.astype(np.float32)
    tri = f.astype(np.int32)
    reduction = 1.0 - n_faces / f.shape[0]
    out_pts, out_faces, collapses = fast_simplification.simplify(
        pts, tri, target_reduction=reduction, return_collapses=True
    )
    _, faces2, cluster = fast_simplification.replay_simplification(pts, tri, collapses)
    out_pts = np.asarray(out_pts, dtype=np.float64)
    cluster = np.asarray(cluster)
    n = out_pts.shape[0]
    # per cluster, the original vertex closest to the coarse vertex (vectorised arg-min by sorting)
    d = np.sum((v - out_pts[cluster]) ** 2, axis=1)
    order = np.lexsort((d, cluster))
    first = np.ones(order.size, dtype=bool)
    first[1:] = cluster[order][1:] != cluster[order][:-1]
    reps = order[first]
    if reps.size != n:
        raise RuntimeError(f"coarsen_mesh: {n - reps.size} coarse vertices have no original vertex")
    index = np.empty(n, dtype=np.int64)
    index[cluster[reps]] = reps
    cf = np.asarray(faces2, dtype=np.int64)
    # drop faces that became degenerate when the vertices were snapped back
    a, b, c = v[index[cf[:, 0]]], v[index[cf[:, 1]]], v[index[cf[:, 2]]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    cf = cf[area > 1e-9 * max(float(np.ptp(v)), 1.0) ** 2]
    # keep only referenced vertices
    used = np.unique(cf)
    remap = np.full(n, -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    index, cf = index[used], remap[cf]
    # snapping back to original vertices leaves slivers; flip them away (same vertices)
    return index, flip_slivers(v[index], cf)
