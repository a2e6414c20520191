"""Geometric helpers shared by likelihoods and evaluation metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["point_triangle_distance", "points_to_surface", "surface_distances"]


def point_triangle_distance(p, a, b, c):
    """Exact distance from points ``p (P, 3)`` to triangles ``(F, 3)`` each: ``(P, F)``."""
    ab, ac = b - a, c - a
    n = jnp.cross(ab, ac)
    nn = jnp.sum(n * n, axis=-1)
    nn_safe = jnp.where(nn > 0, nn, 1.0)
    ap = p[:, None, :] - a[None, :, :]
    # barycentric coordinates of the projection onto the plane
    v = jnp.sum(jnp.cross(ap, ac[None, :, :]) * n[None, :, :], axis=-1) / nn_safe[None, :]
    w = jnp.sum(jnp.cross(ab[None, :, :], ap) * n[None, :, :], axis=-1) / nn_safe[None, :]
    inside = (v >= 0) & (w >= 0) & (v + w <= 1) & (nn > 0)[None, :]
    d_plane = jnp.abs(jnp.sum(ap * n[None, :, :], axis=-1)) / jnp.sqrt(nn_safe)[None, :]

    def seg(q0, q1):
        d = q1 - q0
        dd = jnp.sum(d * d, axis=-1)
        t = jnp.sum((p[:, None, :] - q0[None]) * d[None], axis=-1) / jnp.where(dd > 0, dd, 1.0)[None, :]
        t = jnp.clip(t, 0.0, 1.0)
        r = p[:, None, :] - (q0[None] + t[..., None] * d[None])
        return jnp.sum(r * r, axis=-1)

    d_edge2 = jnp.minimum(jnp.minimum(seg(a, b), seg(b, c)), seg(c, a))
    d_edge = jnp.sqrt(jnp.maximum(d_edge2, 1e-30))
    return jnp.where(inside, d_plane, d_edge)



def points_to_surface(points, vertices, faces, *, chunk: int = 16):
    """Exact distance (mm) from each point ``(P, 3)`` to a triangle surface, ``(P,)``."""
    tri = jnp.asarray(vertices)[jnp.asarray(faces)]
    pts = jnp.asarray(points)
    n = pts.shape[0]
    pad = (-n) % chunk
    pts = jnp.concatenate([pts, jnp.repeat(pts[:1], pad, axis=0)], axis=0)

    def one(p):
        return jnp.min(point_triangle_distance(p, tri[:, 0], tri[:, 1], tri[:, 2]), axis=1)

    return jax.lax.map(one, pts.reshape(-1, chunk, 3)).reshape(-1)[:n]


def surface_distances(vertices_a, faces_a, vertices_b, faces_b) -> np.ndarray:
    """Distances from every vertex of A to surface B and of B to surface A (mm), concatenated."""
    f = jax.jit(points_to_surface)
    d_ab = np.asarray(f(vertices_a, vertices_b, faces_b))
    d_ba = np.asarray(f(vertices_b, vertices_a, faces_a))
    return np.concatenate([d_ab, d_ba])
