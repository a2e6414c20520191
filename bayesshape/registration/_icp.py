"""The numerical core of surface registration: normals, closest points, rigid fits and one
regularised Gauss-Newton step of the model coefficients and the pose."""

from __future__ import annotations

import numpy as np

from ..prior._shapes import similarity_transform


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``(N, 3)`` (outward for a counter-clockwise closed mesh)."""
    tri = vertices[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    norm = np.linalg.norm(vn, axis=1, keepdims=True)
    return vn / np.where(norm > 0, norm, 1.0)


def boundary_vertices(faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """``(N,)`` bool: vertices on an edge of one triangle only (the rim of a hole)."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(e, axis=0, return_counts=True)
    out = np.zeros(n_vertices, dtype=bool)
    out[uniq[counts == 1].ravel()] = True
    return out


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    tri = vertices[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def rotation(omega: np.ndarray) -> np.ndarray:
    """Rodrigues: the rotation by the angle ``|omega|`` about ``omega``."""
    theta = float(np.linalg.norm(omega))
    if theta < 1e-12:
        return np.eye(3)
    k = omega / theta
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(theta) * kx + (1 - np.cos(theta)) * (kx @ kx)


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ transform[:3, :3].T + transform[:3, 3]


def similarity_matrix(src: np.ndarray, dst: np.ndarray, *, scale: bool = False) -> np.ndarray:
    """The 4 x 4 rigid (``scale``: similarity) transform that moves ``src`` onto ``dst`` in least
    squares (Umeyama, :func:`~bayesshape.prior.similarity_transform`)."""
    s, r, t = similarity_transform(src, dst, scale=scale)
    out = np.eye(4)
    out[:3, :3] = s * r
    out[:3, 3] = t
    return out


def principal_frames(points: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Centroid and the four proper rotations onto the principal axes (the sign ambiguity)."""
    c = points.mean(axis=0)
    _, vecs = np.linalg.eigh(np.cov((points - c).T))
    frames = []
    for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        r = vecs * np.array([sx, sy, 1.0])
        if np.linalg.det(r) < 0:
            r[:, 2] *= -1
        frames.append(r)
    return c, frames


def student_weights(resid: np.ndarray, sd: float, dof: float | None) -> np.ndarray:
    """IRLS weights of a Student-t likelihood (all ones for a Gaussian, ``dof=None``)."""
    if dof is None:
        return np.ones_like(resid)
    return (dof + 1.0) / (dof + (resid / sd) ** 2)


def gauss_newton_step(rows, resid, weights, alpha, sd: float, n_pose: int, pose_damping: float = 1.0):
    """One regularised Gauss-Newton step: minimise ``sum w (row . d - r)^2 / sd^2 + |alpha + d_alpha|^2``
    (``+ pose_ridge |d_pose|^2``) over ``d = (d_alpha, d_pose)``.

    Returns ``(d_alpha, d_pose, precision)``; the precision is the Gauss-Newton Hessian
    of the objective (halved), the inverse covariance of the linearised posterior.
    """
    k = alpha.shape[0]
    aw = rows * (weights / sd**2)[:, None]
    prec = rows.T @ aw
    prec[np.arange(k), np.arange(k)] += 1.0
    damped = prec.copy()
    if n_pose:
        p = np.arange(k, k + n_pose)
        # Levenberg-Marquardt damping of the pose alone: it has no prior, and a step along a
        # direction the shape can undo (a scale the coefficients shrink back) must stay small
        damped[p, p] += pose_damping * prec[p, p] + 1e-9
    rhs = aw.T @ resid
    rhs[:k] -= alpha
    step = np.linalg.solve(damped, rhs)
    return step[:k], step[k:], prec


def tangents(normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to each normal and to each other."""
    a = np.where(np.abs(normals[:, :1]) < 0.9, np.array([[1.0, 0.0, 0.0]]), np.array([[0.0, 1.0, 0.0]]))
    t1 = np.cross(normals, a)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    return t1, np.cross(normals, t1)
