"""Vertebral morphometry of a posterior: the heights of a vertebral body, its wedge deformity, and
Genant's semi-quantitative grade, each with its posterior probability.

A vertebral fracture is graded by how much of a body's height is lost (Genant, Wu, van Kuijk and
Nevitt, *Vertebral fracture assessment using a semiquantitative technique*, J Bone Miner Res 8,
1993): grade 1 (mild) 20 to 25%, grade 2 (moderate) 25 to 40%, grade 3 (severe) above 40%. For a
wedge fracture the anterior height ``Ha`` is lost against the posterior height ``Hp``. Here the
reduction is measured against the shape model's own mean vertebra, so that a vertebra whose normal
shape is wedged (L5's body is taller in front) is not counted as deformed:
``reduction = 1 - (Ha / Hp) / (Ha / Hp of the model's mean shape)``.

Every posterior draw gives one ``Ha / Hp``, so the posterior gives the reduction's distribution
and the probability that it reaches a grade. Unlike :func:`~bayesshape.posterior.posture.object_reliability`,
which flags an object the model *cannot* make, this flags a deformity the model *can* make and the
images show: a wedge fracture within the shape model's span is fitted well and leaves no misfit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

__all__ = ["BodyPoints", "WedgeAssessment", "GENANT_THRESHOLDS", "body_points", "height_ratios", "wedge_assessment"]

#: the height reductions at which Genant's grades 1, 2 and 3 begin
GENANT_THRESHOLDS = (0.20, 0.25, 0.40)


@dataclasses.dataclass(frozen=True)
class BodyPoints:
    """Four vertices of a vertebral body, indices into its object's vertices.

    Attributes:
        anterior: ``(superior, inferior)`` ends of the anterior height.
        posterior: ``(superior, inferior)`` ends of the posterior height.
    """

    anterior: tuple[int, int]
    posterior: tuple[int, int]

    def __post_init__(self):
        for name in ("anterior", "posterior"):
            pair = getattr(self, name)
            try:
                a, b = (int(i) for i in pair)
            except (TypeError, ValueError):
                raise ValueError(f"{name}: expected two vertex indices (superior, inferior), got {pair!r}") from None
            if min(a, b) < 0 or a == b:
                raise ValueError(f"{name}: expected two different non-negative vertex indices, got {pair!r}")
            object.__setattr__(self, name, (a, b))

    def indices(self) -> np.ndarray:
        return np.array([*self.anterior, *self.posterior])


@dataclasses.dataclass(frozen=True)
class WedgeAssessment:
    """The posterior of one vertebral body's heights and of its wedge deformity.

    Attributes:
        name: the object.
        anterior_mm: posterior mean of the anterior height.
        posterior_mm: posterior mean of the posterior height.
        ratio: posterior mean of ``Ha / Hp``.
        ratio_interval: its 95% equal-tailed credible interval.
        reference_ratio: ``Ha / Hp`` of the model's mean shape.
        reduction: posterior median of ``1 - ratio / reference_ratio`` (0.3: 30% of the anterior
            height lost).
        probability: posterior probability that the reduction reaches ``threshold``.
        grade: Genant's grade (0 to 3) of the posterior median reduction.
        flagged: ``probability`` at or above the level asked for.
    """

    name: str
    anterior_mm: float
    posterior_mm: float
    ratio: float
    ratio_interval: tuple[float, float]
    reference_ratio: float
    reduction: float
    probability: float
    grade: int
    flagged: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def body_points(mesh, *, forward=(1.0, 0.0, 0.0), up=(0.0, 0.0, 1.0), band: float = 0.2) -> BodyPoints:
    """The ends of a vertebral body's anterior and posterior heights on a vertebra mesh.

    The vertebra is given in its natural frame: ``forward`` points anteriorly, ``up`` superiorly
    (roughly; the axis is refined to the mean of the two endplates' normals). The body is the part
    anterior of the vertebra's centroid; within ``band`` of its half-width about its mid-sagittal
    plane, the anterior height joins the highest and lowest vertices of the body's front tenth, the
    posterior height those of its back fifth. Pick the points by hand instead (e.g. from landmarks)
    where this geometry does not hold.

    Args:
        mesh: a trimesh (or an object with ``vertices`` and ``faces``) of one vertebra, mm.
        forward: the anterior direction of its frame.
        up: the superior direction of its frame.
        band: half-width of the mid-sagittal band, as a fraction of the body's half-width.

    Returns:
        :class:`BodyPoints` indexing ``mesh``'s vertices.
    """
    v = np.asarray(getattr(mesh, "vertices", None), np.float64)
    f = np.asarray(getattr(mesh, "faces", None))
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(v) < 8:
        raise ValueError("mesh: expected a triangle mesh of one vertebra (vertices (N, 3), faces (F, 3))")
    if not 0 < band <= 1:
        raise ValueError(f"band: expected a fraction in (0, 1], got {band}")
    fw, u = _unit(forward, "forward"), _unit(up, "up")
    if abs(fw @ u) > 0.9:
        raise ValueError("forward, up: expected two roughly perpendicular directions")
    c = v.mean(0)
    tri = v[f]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # area-weighted normals
    centre = tri.mean(1)
    in_body = (centre - c) @ fw > 0
    facing_up = (cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True), 1e-300)) @ u
    normals = []
    for side in (1.0, -1.0):
        sel = in_body & (side * facing_up > 0.7)
        if not sel.any():
            raise ValueError("mesh: no endplate found (no body face facing up and down); check forward and up")
        normals.append(side * cross[sel].sum(0))
    u = _unit(normals[0] / np.linalg.norm(normals[0]) + normals[1] / np.linalg.norm(normals[1]), "up")
    fw = _unit(fw - u * (fw @ u), "forward")
    lat = np.cross(u, fw)
    s, h, lt = (v - c) @ fw, (v - c) @ u, (v - c) @ lat
    body = s > 0
    mid = float(np.median(lt[body]))
    half = 0.5 * float(np.ptp(lt[body]))
    near = body & (np.abs(lt - mid) <= band * half)
    if near.sum() < 4:
        raise ValueError("mesh: too few vertices in the body's mid-sagittal band; widen band")
    front = float(s[near].max())
    ant = np.flatnonzero(near & (s >= 0.9 * front))
    post = np.flatnonzero(near & (s <= 0.2 * front))
    if ant.size < 2 or post.size < 2:
        raise ValueError("mesh: the body's front or back has too few vertices in the band; widen band")

    def ends(column):
        top = column[np.argmax(h[column])]
        # the lowest point below it: 1 mm sideways counts as 1 mm higher
        offset = np.hypot(s[column] - s[top], lt[column] - lt[top])
        return int(top), int(column[np.argmin(h[column] + offset)])

    return BodyPoints(ends(ant), ends(post))


def height_ratios(vertices, points: BodyPoints) -> tuple[np.ndarray, np.ndarray]:
    """Anterior and posterior heights (mm) of ``vertices`` ``(..., N, 3)``, each ``(...)``."""
    v = np.asarray(vertices, np.float64)
    if v.ndim < 2 or v.shape[-1] != 3:
        raise ValueError(f"vertices: expected shape (..., N, 3), got {v.shape}")
    idx = points.indices()
    if idx.max() >= v.shape[-2]:
        raise ValueError(f"points: vertex index {int(idx.max())} out of range for {v.shape[-2]} vertices")
    p = v[..., idx, :]
    return (
        np.asarray(np.linalg.norm(p[..., 0, :] - p[..., 1, :], axis=-1)),
        np.asarray(np.linalg.norm(p[..., 2, :] - p[..., 3, :], axis=-1)),
    )


def wedge_assessment(
    post, points, *, threshold: float = GENANT_THRESHOLDS[0], probability: float = 0.5, reference=None
) -> list[WedgeAssessment]:
    """Each vertebral body's heights, wedge deformity and Genant grade from a posterior.

    Args:
        post: a :class:`~bayesshape.Posterior` of an assembly (or of one object).
        points: ``{object name: BodyPoints}`` (indices into each object's own vertices; e.g. from
            :func:`body_points` on the objects' meshes), or one :class:`BodyPoints` for a posterior
            of one object.
        threshold: the reduction that counts as a deformity (default Genant's grade 1, 20%).
        probability: the posterior probability of at least ``threshold`` that flags a vertebra
            (default 0.5: the posterior median reduction reaches it).
        reference: ``{name: ratio}`` of a normal vertebra (default: the model's mean shape).

    Returns:
        One :class:`WedgeAssessment` per entry of ``points``, in the assembly's order.

    Example:
        >>> pts = {n: body_points(m) for n, m in spine_meshes.items()}   # doctest: +SKIP
        >>> [a.name for a in wedge_assessment(post, pts) if a.flagged]    # doctest: +SKIP
    """
    problem = getattr(post, "problem", None)
    if problem is None or not hasattr(post, "vertex_samples"):
        raise ValueError("post: expected a posterior from bs.infer")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold: expected a height reduction in (0, 1), got {threshold}")
    if not 0 < probability <= 1:
        raise ValueError(f"probability: expected a probability in (0, 1], got {probability}")
    names = list(getattr(problem, "object_names", ()) or ())
    ids = getattr(problem, "object_ids", None)
    if isinstance(points, BodyPoints):
        if names and len(names) > 1:
            raise ValueError("points: this posterior has several objects; give {object name: BodyPoints}")
        points = {names[0] if names else "shape": points}
    if not isinstance(points, Mapping) or not points:
        raise ValueError("points: expected {object name: BodyPoints} or one BodyPoints")
    offsets = {}
    if names:
        ids = np.asarray(ids)
        for k, name in enumerate(names):
            where = np.flatnonzero(ids == k)
            offsets[name] = (int(where[0]), int(where.size))
    else:
        offsets["shape"] = (0, int(problem.model.n_vertices))
    for name, pts in points.items():
        if name not in offsets:
            raise ValueError(f"points: object {name!r} not in this posterior (objects: {', '.join(offsets)})")
        if not isinstance(pts, BodyPoints):
            raise ValueError(f"points[{name!r}]: expected a BodyPoints, got {type(pts).__name__}")
        if pts.indices().max() >= offsets[name][1]:
            raise ValueError(
                f"points[{name!r}]: vertex index {int(pts.indices().max())} out of range; "
                f"the object has {offsets[name][1]} vertices"
            )
    draws = np.asarray(post.vertex_samples(), np.float64)
    mean_shape = np.asarray(problem.model.mean, np.float64)
    order = [n for n in offsets if n in points]
    out = []
    for name in order:
        start, count = offsets[name]
        pts = points[name]
        ha, hp = height_ratios(draws[:, start : start + count], pts)
        if np.any(hp <= 0) or np.any(ha <= 0):
            raise ValueError(f"points[{name!r}]: a height is zero in some draws (the two ends coincide)")
        if reference is not None and name in reference:
            ref = float(reference[name])
            if not (np.isfinite(ref) and ref > 0):
                raise ValueError(f"reference[{name!r}]: expected a positive ratio, got {reference[name]!r}")
        else:
            ref_a, ref_p = height_ratios(mean_shape[start : start + count], pts)
            ref = float(ref_a / ref_p)
        ratio = ha / hp
        reduction = 1.0 - ratio / ref
        med = float(np.median(reduction))
        p = float(np.mean(reduction >= threshold))
        lo, hi = np.quantile(ratio, [0.025, 0.975])
        out.append(
            WedgeAssessment(
                name,
                float(ha.mean()),
                float(hp.mean()),
                float(ratio.mean()),
                (float(lo), float(hi)),
                ref,
                med,
                p,
                int(np.searchsorted(GENANT_THRESHOLDS, med, side="right")),
                p >= probability,
            )
        )
    return out


def _unit(x, name: str) -> np.ndarray:
    a = np.asarray(x, np.float64)
    n = np.linalg.norm(a) if a.shape == (3,) else 0.0
    if not (np.isfinite(n) and n > 0):
        raise ValueError(f"{name}: expected a non-zero (3,) direction, got {x!r}")
    return a / n
