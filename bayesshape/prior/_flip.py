"""Edge flips that remove sliver triangles from a mesh without moving its vertices.

Used by :func:`bayesshape.prior.coarsen_mesh`: snapping a decimated mesh's vertices back
to original vertices leaves a few slivers (triangles of near-zero area for their edge
lengths). A sliver's normal turns fast when its vertices move a little, so the contour
weight of its edges (:func:`bayesshape.projection.contour_weights`) switches almost
discontinuously and a gradient-based sampler sees a jump in the contour likelihood.
"""

from __future__ import annotations

import numpy as np

__all__ = ["flip_slivers"]


def _quality(v, f):
    """Triangle quality ``4 sqrt(3) area / sum(edge^2)``: 1 for equilateral, 0 for degenerate."""
    t = v[f]
    n = np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0])
    e2 = np.sum((t - np.roll(t, 1, axis=1)) ** 2, axis=(1, 2))
    return 2.0 * np.sqrt(3.0) * np.linalg.norm(n, axis=1) / np.maximum(e2, 1e-300), n


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)


def flip_slivers(
    vertices,
    faces,
    *,
    bad: float = 0.3,
    max_bend_deg: float = 20.0,
    min_gain: float = 1.2,
    max_height: float = 0.05,
    max_passes: int = 50,
) -> np.ndarray:
    """Flip interior edges of poor triangles where that raises the worse quality of the two.

    An edge ``a-b`` shared by the (consistently oriented) triangles ``(a, b, c)`` and
    ``(b, a, d)`` becomes ``c-d`` (triangles ``(c, a, d)`` and ``(d, b, c)``) when one of the two
    has a quality (``4 sqrt(3) area / sum of squared edges``, 1 for equilateral) below ``bad``, the
    lower quality of the pair rises by a factor of at least ``min_gain``, the new
    triangles bend by at most ``max_bend_deg`` from the old pair's area-weighted normal (the
    surface keeps its shape), the tetrahedron ``(a, b, c, d)`` is flat (its volume over the
    pair's area, times 3, at most ``max_height`` times the length of ``a-b``), ``c-d`` is not
    already an edge, and ``a`` and ``b`` keep at least three neighbours. Each pass flips, at
    once, every edge that is the best candidate of both of its triangles (so no two flips share
    a triangle); passes repeat until none is left.

    Args:
        vertices: ``(N, 3)``; faces: ``(F, 3)`` consistently oriented, manifold.

    Returns:
        The new ``(F, 3)`` faces (same vertices, same orientation, same count).
    """
    v = np.asarray(vertices, dtype=np.float64)
    f = np.array(faces, dtype=np.int64)
    cos_bend = np.cos(np.deg2rad(max_bend_deg))
    n_vert = v.shape[0]
    for _ in range(max_passes):
        nf = f.shape[0]
        # directed half-edges (i -> j) of face k, opposite vertex o
        i = f.reshape(-1)
        j = np.roll(f, -1, axis=1).reshape(-1)
        o = np.roll(f, -2, axis=1).reshape(-1)
        face = np.repeat(np.arange(nf), 3)
        key = i * n_vert + j
        twin_key = j * n_vert + i
        order = np.argsort(key)
        pos = np.searchsorted(key[order], twin_key)
        pos = np.minimum(pos, key.size - 1)
        has_twin = key[order][pos] == twin_key
        twin = np.where(has_twin, order[pos], -1)
        # each interior edge once: the half-edge with i < j
        h = np.nonzero(has_twin & (i < j))[0]
        if h.size == 0:
            break
        t = twin[h]
        a, b, c, d = i[h], j[h], o[h], o[t]
        f1, f2 = face[h], face[t]
        q, n = _quality(v, f)
        old = np.minimum(q[f1], q[f2])
        new_f1 = np.stack([c, a, d], axis=1)
        new_f2 = np.stack([d, b, c], axis=1)
        q1, n1 = _quality(v, new_f1)
        q2, n2 = _quality(v, new_f2)
        new = np.minimum(q1, q2)

        # against the area-weighted normal of the old pair (a sliver's own normal means little)
        u = _unit(n[f1] + n[f2])
        bend_ok = (np.sum(_unit(n1) * u, axis=1) > cos_bend) & (np.sum(_unit(n2) * u, axis=1) > cos_bend)
        valence = np.bincount(f.reshape(-1), minlength=n_vert)  # faces per vertex (= neighbours, closed mesh)
        exists = np.isin(np.minimum(c, d) * n_vert + np.maximum(c, d), np.minimum(i, j) * n_vert + np.maximum(i, j))
        # the flip replaces the surface over the tetrahedron (a, b, c, d): its height over the pair,
        # relative to the edge, bounds how far the surface moves (small for a sliver: c lies near a-b)
        vol = np.abs(np.sum((v[b] - v[a]) * np.cross(v[c] - v[a], v[d] - v[a]), axis=1)) / 6.0
        area = 0.5 * (np.linalg.norm(n[f1], axis=1) + np.linalg.norm(n[f2], axis=1))
        height = 3.0 * vol / np.maximum(area * np.linalg.norm(v[b] - v[a], axis=1), 1e-300)
        good = (
            (old < bad)
            & (height < max_height)
            & (new > min_gain * old)
            & bend_ok
            & ~exists
            & (c != d)
            & (valence[a] > 3)
            & (valence[b] > 3)
        )
        if not good.any():
            break
        # every face keeps its best candidate edge (ties broken by edge order, so each face's best
        # is unique); flip the edges that are best for both of their faces: no two share a face
        gain = np.where(good, new / np.maximum(old, 1e-300) + 1e-9 * np.arange(h.size) / h.size, 0.0)
        best = np.zeros(nf)
        np.maximum.at(best, f1, gain)
        np.maximum.at(best, f2, gain)
        idx = np.nonzero(good & (gain == best[f1]) & (gain == best[f2]))[0]
        f[f1[idx]] = new_f1[idx]
        f[f2[idx]] = new_f2[idx]
    return f
