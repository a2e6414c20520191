"""The posture of an assembly's posterior: relative rotations at the joints, clinical angles with
credible intervals, and a reliability summary per object.

Works on the :class:`~bayesshape.Posterior` that :func:`bayesshape.infer` returns for an
:class:`~bayesshape.prior.Assembly`. Angles are measured in the assembly's frame (before its
global pose, so they do not depend on how the patient stood in the imager). The default axes are
those of a spine in its usual frame: ``x`` anterior, ``y`` left-right, ``z`` superior; then the
sagittal angle of a joint is its flexion-extension, the coronal one its lateral bending and the
axial one its axial rotation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "ObjectReliability",
    "joint_angles",
    "plane_angle",
    "posture_angles",
    "posture_plane_angle",
    "interval_table",
    "object_reliability",
]


def _check(post):
    problem = getattr(post, "problem", None)
    if problem is None or not hasattr(problem, "object_transforms"):
        raise ValueError("post: expected the posterior of an assembly (bs.infer with a bs.prior.Assembly)")
    return problem


def _transforms(post):
    problem = _check(post)
    rots, trans = jax.jit(jax.vmap(problem.object_transforms))(jnp.asarray(post.flat_theta()))
    return np.asarray(rots, np.float64), np.asarray(trans, np.float64)


def _axes(forward: int, lateral: int, up: int):
    if sorted((forward, lateral, up)) != [0, 1, 2]:
        raise ValueError(
            f"forward, lateral, up: expected a permutation of the axes 0, 1, 2, got {(forward, lateral, up)}"
        )
    return forward, lateral, up


def joint_angles(post, *, forward: int = 0, lateral: int = 1, up: int = 2) -> dict:
    """Draws of each joint's relative rotation as three angles, degrees.

    For object ``i`` relative to object ``i-1`` (rotation ``R``): ``sagittal`` is the tilt of the
    lower object's up axis in the forward-up plane (``atan2(R[f, u], R[u, u])``), ``coronal`` its
    tilt in the lateral-up plane (``atan2(R[l, u], R[u, u])``) and ``axial`` the turn of its forward
    axis about the up axis (``atan2(R[l, f], R[f, f])``).

    Returns:
        ``{"joints": names "A/B", "sagittal": (n, J), "coronal": (n, J), "axial": (n, J)}``.
    """
    problem = _check(post)
    rots, _ = _transforms(post)
    return _angles(rots, problem.object_names, _axes(forward, lateral, up))


def _angles(rots: np.ndarray, names, axes) -> dict:
    fw, lat, up = axes
    rel = np.einsum("nkji,nkjl->nkil", rots[:, :-1], rots[:, 1:])  # R_{i-1}^T R_i
    return {
        "joints": [f"{a}/{b}" for a, b in zip(names[:-1], names[1:])],
        "sagittal": np.degrees(np.arctan2(rel[..., fw, up], rel[..., up, up])),
        "coronal": np.degrees(np.arctan2(rel[..., lat, up], rel[..., up, up])),
        "axial": np.degrees(np.arctan2(rel[..., lat, fw], rel[..., fw, fw])),
    }


def posture_angles(assembly, increments, *, forward: int = 0, lateral: int = 1, up: int = 2) -> dict:
    """:func:`joint_angles` of given postures: ``increments`` ``(n, n_joint, 6)`` (or one,
    ``(n_joint, 6)``) joint increments of ``assembly`` (e.g. a simulated truth)."""
    rots = _increment_rotations(assembly, increments)
    return _angles(rots, assembly.names, _axes(forward, lateral, up))


def _increment_rotations(assembly, increments) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    inc = np.array(increments, np.float64)  # a writable copy (scipy's rotations need one)
    if inc.ndim == 2:
        inc = inc[None]
    if inc.shape[1:] != (assembly.n_objects - 1, 6):
        raise ValueError(f"increments: expected shape (n, {assembly.n_objects - 1}, 6), got {inc.shape}")
    rots = [np.broadcast_to(np.eye(3), (inc.shape[0], 3, 3))]
    for i in range(inc.shape[1]):
        rots.append(
            np.einsum("nij,njk->nik", rots[-1], Rotation.from_rotvec(np.ascontiguousarray(inc[:, i, :3])).as_matrix())
        )
    return np.stack(rots, axis=1)


def plane_angle(post, a: tuple[str, object], b: tuple[str, object], *, plane: tuple[int, int] = (0, 2)) -> np.ndarray:
    """Draws (degrees) of the signed angle from direction ``b`` to direction ``a`` in a plane.

    Each direction is ``(object name, (3,) vector)`` given in the natural posture (e.g. an endplate's
    normal) and moves with its object. The lumbar lordosis is ``a = ("L2", normal of L2's upper
    endplate)``, ``b = ("L5", normal of L5's lower endplate, turned to point up)`` in the sagittal
    plane ``(0, 2)`` (forward, up).
    """
    problem = _check(post)
    rots, _ = _transforms(post)
    return _plane_angle(rots, list(problem.object_names), a, b, plane)


def posture_plane_angle(assembly, increments, a, b, *, plane: tuple[int, int] = (0, 2)) -> np.ndarray:
    """:func:`plane_angle` of given postures ``(n, n_joint, 6)`` (or ``(n_joint, 6)``) of ``assembly``."""
    return _plane_angle(_increment_rotations(assembly, increments), list(assembly.names), a, b, plane)


def _plane_angle(rots, names, a, b, plane) -> np.ndarray:
    i, j = plane
    dirs = []
    for name, vec in (a, b):
        if name not in names:
            raise ValueError(f"object {name!r}: not in this assembly (objects: {', '.join(names)})")
        v = np.asarray(vec, np.float64)
        if v.shape != (3,) or not np.all(np.isfinite(v)) or np.linalg.norm(v) == 0:
            raise ValueError(f"direction of {name!r}: expected a finite non-zero (3,) vector, got {vec!r}")
        dirs.append((names.index(name), v / np.linalg.norm(v)))
    va = np.einsum("nij,j->ni", rots[:, dirs[0][0]], dirs[0][1])
    vb = np.einsum("nij,j->ni", rots[:, dirs[1][0]], dirs[1][1])
    cross = vb[:, i] * va[:, j] - vb[:, j] * va[:, i]
    dot = vb[:, i] * va[:, i] + vb[:, j] * va[:, j]
    return np.degrees(np.arctan2(cross, dot))


def interval_table(draws: dict, levels=(0.5, 0.8, 0.9, 0.95)) -> list[dict]:
    """Rows ``{"name", "mean", "sd", "lo_<level>", "hi_<level>"}`` of equal-tailed credible intervals for
    each column of each ``(n,)`` or ``(n, m)`` array in ``draws`` (names get ``[m]`` suffixes, or the
    ``joints`` entry's names)."""
    joints = draws.get("joints")
    rows = []
    for key, val in draws.items():
        if key == "joints":
            continue
        arr = np.asarray(val, np.float64)
        cols = arr[:, None] if arr.ndim == 1 else arr
        for c in range(cols.shape[1]):
            label = key if arr.ndim == 1 else f"{key}[{joints[c] if joints else c}]"
            x = cols[:, c]
            row = {"name": label, "mean": float(x.mean()), "sd": float(x.std(ddof=1)) if len(x) > 1 else 0.0}
            for lev in levels:
                lo, hi = np.quantile(x, [0.5 - lev / 2, 0.5 + lev / 2])
                row[f"lo_{lev:g}"], row[f"hi_{lev:g}"] = float(lo), float(hi)
            rows.append(row)
    return rows


@dataclasses.dataclass(frozen=True)
class ObjectReliability:
    """How well one object of an assembly is determined and fitted.

    Attributes:
        name: the object.
        credible_radius_95: the mean over its vertices of the 95% credible radius, mm.
        shape_mahalanobis: ``|alpha|^2 / k`` of its shape coefficients at the posterior mean
            (about 1 for a shape typical of its model, far above for one it can barely make).
        misfit: the mean squared standardised residual of the image data where this object is what
            the ray sees most (its share of each pixel's path length above one half), over every
            image observation; ``nan`` where no pixel is its own.
        misfit_p_value: were this object fitted no worse than the others, the probability of a
            misfit this much above theirs: the ratio of its misfit to the others' pooled one
            against an F distribution whose degrees of freedom are the objects' pixel counts
            divided by the residuals' variance inflation over blocks (residuals correlated over
            many pixels are few independent ones); ``nan`` without a misfit.
        flagged: see :func:`object_reliability`.
    """

    name: str
    credible_radius_95: float
    shape_mahalanobis: float
    misfit: float
    misfit_p_value: float
    flagged: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def object_reliability(
    post,
    *,
    misfit_threshold: float = 2.0,
    misfit_ratio: float = 1.3,
    misfit_alpha: float = 0.01,
    mahalanobis_threshold: float = 4.0,
) -> list[ObjectReliability]:
    """Per object: its credible radius, how atypical its fitted shape is and how badly its own pixels
    fit (:class:`ObjectReliability`).

    An object is flagged when its misfit is above ``misfit_threshold``, above ``misfit_ratio``
    times the median misfit of the assembly's objects, *and* significantly above the others'
    (``misfit_p_value`` below ``misfit_alpha``): a shape the model cannot make shows up as one
    object fitting worse than its neighbours, which share the views, the noise and the model's
    general limits, by more than the spread of a misfit over a few hundred correlated pixels.
    It is also flagged when its shape's Mahalanobis norm is above ``mahalanobis_threshold``.
    """
    from ..obs.drr import block_dispersion
    from ..projection.render import render_drr

    if not 0.0 < misfit_alpha <= 1.0:
        raise ValueError(f"misfit_alpha: expected a probability in (0, 1], got {misfit_alpha!r}")

    problem = _check(post)
    ids = np.asarray(problem.object_ids)
    names = problem.object_names
    r95 = np.asarray(post.credible_radius(0.95))
    alpha = np.asarray(post.alpha).mean(0)
    mean_v = jnp.asarray(post.mean_vertices())
    faces = None if problem.model.faces is None else np.asarray(problem.model.faces)
    n_obj = len(names)
    sq = np.zeros(n_obj)
    cnt = np.zeros(n_obj)
    between, dof = 0.0, 0
    for o in problem.observations:
        view = getattr(o, "view", None)
        if view is None or faces is None or getattr(o, "rows", None) is not None:
            continue
        try:
            res = np.asarray(o.residuals(mean_v), np.float64)
        except (NotImplementedError, ValueError):
            continue
        h, w = view.detector_shape
        if res.size != h * w:
            continue
        face_obj = ids[faces[:, 0]]
        lengths = np.stack(
            [np.asarray(render_drr(mean_v, jnp.asarray(faces[face_obj == k]), view)) for k in range(n_obj)]
        )
        total = lengths.sum(0)
        own = (lengths > 0.5 * np.maximum(total, 1e-9)[None]) & (total > 0)[None]
        r2 = (res**2).reshape(h, w)
        block = getattr(o, "block_size", None)
        if block is not None:
            b, d = block_dispersion(res.reshape(h, w), own.any(0), int(block))
            between, dof = between + b, dof + d
        for k in range(n_obj):
            sq[k] += r2[own[k]].sum()
            cnt[k] += own[k].sum()
    mis = np.where(cnt > 0, sq / np.maximum(cnt, 1), np.nan)
    typical = float(np.nanmedian(mis)) if np.isfinite(mis).any() else np.nan
    p_values = _misfit_p_values(sq, cnt, between / dof if dof else 1.0)
    out = []
    mo = problem.mode_offsets
    for k, name in enumerate(names):
        a = alpha[mo[k] : mo[k + 1]]
        maha = float(np.mean(a**2)) if a.size else 0.0
        bad_fit = (
            np.isfinite(mis[k])
            and mis[k] > misfit_threshold
            and mis[k] > misfit_ratio * typical
            and p_values[k] < misfit_alpha
        )
        flag = bool(bad_fit or maha > mahalanobis_threshold)
        out.append(ObjectReliability(name, float(r95[ids == k].mean()), maha, float(mis[k]), float(p_values[k]), flag))
    return out


def _misfit_p_values(sq: np.ndarray, cnt: np.ndarray, inflation: float) -> np.ndarray:
    """Per object, the one-sided p-value of its misfit ``sq / cnt`` (sums of squared standardised
    residuals over its ``cnt`` pixels) against the others' pooled misfit: the ratio against
    F(``cnt_k / inflation``, ``sum_j cnt_j / inflation``), the degrees of freedom being the pixel
    counts over the residuals' variance inflation (at least 1). ``nan`` where there is no misfit."""
    from scipy import stats

    sq, cnt = np.asarray(sq, np.float64), np.asarray(cnt, np.float64)
    eff = np.where(cnt > 0, np.maximum(cnt / max(float(inflation), 1.0), 1.0), 0.0)
    sq_rest, cnt_rest, eff_rest = sq.sum() - sq, cnt.sum() - cnt, eff.sum() - eff
    ok = (cnt > 0) & (cnt_rest > 0) & (sq_rest > 0)
    ratio = np.where(ok, sq / np.maximum(cnt, 1.0) / np.where(ok, sq_rest / np.maximum(cnt_rest, 1.0), 1.0), 1.0)
    return np.where(ok, stats.f.sf(ratio, np.maximum(eff, 1.0), np.maximum(eff_rest, 1.0)), np.nan)
