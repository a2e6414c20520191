"""Geometric helpers shared by likelihoods and evaluation metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "point_triangle_distance",
    "points_to_surface",
    "nearest_surface_distance",
    "surface_distances",
    "winding_numbers",
    "inside_grid",
    "volume_dice",
]


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


@jax.jit
def _paired_distance(p, a, b, c):
    return jax.vmap(lambda p, a, b, c: point_triangle_distance(p[None], a[None], b[None], c[None])[0, 0])(p, a, b, c)


def nearest_surface_distance(points, vertices, faces) -> np.ndarray:
    """Exact distance (mm) from each point ``(P, 3)`` to a triangle surface, ``(P,)``, for
    evaluation (not differentiable; far faster than :func:`points_to_surface` on large meshes).

    A k-d tree prunes the triangles: the nearest vertex gives an upper bound ``u`` on a
    point's distance, and a triangle can only be nearer if its centroid lies within
    ``u + R`` of the point (``R`` the largest centroid-to-vertex distance); the exact
    point-triangle distance is taken to every such candidate.
    """
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64)
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces)
    tri = v[f]
    cen = tri.mean(axis=1)
    r_max = float(np.sqrt(((tri - cen[:, None, :]) ** 2).sum(-1)).max())
    upper, _ = cKDTree(v).query(pts)
    cand = cKDTree(cen).query_ball_point(pts, upper + r_max + 1e-9)
    counts = np.fromiter((len(c) for c in cand), dtype=np.int64, count=len(cand))
    owner = np.repeat(np.arange(len(pts)), counts)
    fid = np.fromiter((i for c in cand for i in c), dtype=np.int64, count=int(counts.sum()))
    out = np.full(len(pts), np.inf)
    chunk = 1 << 18
    for lo in range(0, owner.size, chunk):
        o, t = owner[lo : lo + chunk], fid[lo : lo + chunk]
        d = np.asarray(
            _paired_distance(
                jnp.asarray(pts[o]), jnp.asarray(tri[t, 0]), jnp.asarray(tri[t, 1]), jnp.asarray(tri[t, 2])
            )
        )
        np.minimum.at(out, o, d)
    return out


def surface_distances(vertices_a, faces_a, vertices_b, faces_b) -> np.ndarray:
    """Distances from every vertex of A to surface B and of B to surface A (mm), concatenated."""
    d_ab = nearest_surface_distance(vertices_a, vertices_b, faces_b)
    d_ba = nearest_surface_distance(vertices_b, vertices_a, faces_a)
    return np.concatenate([d_ab, d_ba])


def winding_numbers(points, vertices, faces, *, chunk: int = 256):
    """Generalised winding number of a closed triangle mesh at each point ``(P,)``: about 1
    inside, 0 outside (Van Oosterom-Strackee solid angles, summed over faces)."""
    tri = vertices[faces]

    def one(p):
        a, b, c = tri[:, 0] - p[None, :], tri[:, 1] - p[None, :], tri[:, 2] - p[None, :]
        la, lb, lc = (jnp.linalg.norm(x, axis=-1) for x in (a, b, c))
        num = jnp.sum(a * jnp.cross(b, c), axis=-1)
        den = la * lb * lc + jnp.sum(a * b, axis=-1) * lc + jnp.sum(a * c, axis=-1) * lb + jnp.sum(b * c, axis=-1) * la
        return jnp.sum(2.0 * jnp.arctan2(num, den)) / (4.0 * jnp.pi)

    return jax.lax.map(one, points, batch_size=chunk)


def inside_grid(vertices, faces, axes) -> np.ndarray:
    """Voxels of the grid ``axes = (xs, ys, zs)`` (mm) inside a closed mesh, ``(X, Y, Z)`` bool.

    Ray parity along +z per ``(x, y)`` column: the crossings of the column with every
    triangle are found at once (barycentric test of the projected triangles), and a voxel
    is inside when an odd number of crossings lie below it.
    """
    v = np.asarray(vertices, dtype=np.float64)
    tri = v[np.asarray(faces)]
    xs, ys, zs = (np.asarray(a, dtype=np.float64) for a in axes)
    px, py = np.meshgrid(xs, ys, indexing="ij")
    q = np.stack([px.ravel(), py.ravel()], axis=1)  # (C, 2)
    inside = np.zeros((q.shape[0], zs.size), dtype=bool)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok = np.abs(det) > 1e-12
    a, b, c, det = a[ok], b[ok], c[ok], det[ok]
    for start in range(0, q.shape[0], 256):
        qq = q[start : start + 256]
        dx = qq[:, None, 0] - a[None, :, 0]
        dy = qq[:, None, 1] - a[None, :, 1]
        l1 = (dx * (c[None, :, 1] - a[None, :, 1]) - dy * (c[None, :, 0] - a[None, :, 0])) / det[None]
        l2 = ((b[None, :, 0] - a[None, :, 0]) * dy - (b[None, :, 1] - a[None, :, 1]) * dx) / det[None]
        hit = (l1 >= 0) & (l2 >= 0) & (l1 + l2 < 1)
        z = a[None, :, 2] + l1 * (b[None, :, 2] - a[None, :, 2]) + l2 * (c[None, :, 2] - a[None, :, 2])
        z = np.where(hit, z, np.inf)
        below = (z[:, :, None] < zs[None, None, :]).sum(axis=1)
        inside[start : start + 256] = below % 2 == 1
    return inside.reshape(xs.size, ys.size, zs.size)


def volume_dice(vertices_a, faces_a, vertices_b, faces_b, *, pitch: float = 2.0) -> float:
    """Volumetric Dice of two closed meshes on a grid of spacing ``pitch`` (mm) over both boxes."""
    va, vb = np.asarray(vertices_a, np.float64), np.asarray(vertices_b, np.float64)
    lo = np.minimum(va.min(0), vb.min(0)) - pitch
    hi = np.maximum(va.max(0), vb.max(0)) + pitch
    # an irrational offset keeps grid points off mesh vertices and edges
    axes = [np.arange(lo[i] + pitch * 0.5137, hi[i], pitch) for i in range(3)]
    ina = inside_grid(va, faces_a, axes)
    inb = inside_grid(vb, faces_b, axes)
    total = ina.sum() + inb.sum()
    return float(2.0 * (ina & inb).sum() / total) if total else 1.0


def closed_surface_problems(faces, n_vertices: int) -> list[str]:
    """What keeps a triangle mesh from being a closed, consistently oriented surface (the DRR's
    path length needs one), by trimesh's edge checks: edges of one triangle only (holes), edges of
    more than two (non-manifold, duplicated triangles), inconsistent winding. Empty when the
    surface is closed and oriented."""
    import trimesh
    from trimesh.grouping import group_rows

    f = np.asarray(faces, dtype=np.int64)
    mesh = trimesh.Trimesh(np.zeros((n_vertices, 3)), f, process=False, validate=False)
    if mesh.is_watertight and mesh.is_winding_consistent:
        return []
    problems = []
    counts = np.array([len(g) for g in group_rows(mesh.edges_sorted)])  # triangles per undirected edge
    n_single = int((counts == 1).sum())
    n_multi = int((counts > 2).sum())
    if n_single:
        problems.append(f"{n_single} edges belong to one triangle only (the surface has holes)")
    if n_multi:
        problems.append(f"{n_multi} edges are shared by more than two triangles (non-manifold or duplicated triangles)")
    if not n_single and not n_multi and not mesh.is_winding_consistent:
        problems.append("the triangles are not consistently oriented (some are flipped)")
    return problems or ["the surface is not closed"]
