"""Built-in procedural example shapes: a seeded family of long-bone-like surfaces.

Every shape is the same triangulated sphere (same vertex count, order and faces)
mapped onto a femur-like long bone, so shapes are **in correspondence** and
**watertight** by construction. Units are mm. No downloads.

The family has nine interpretable parameters (see :data:`PARAMETERS`), drawn from
independent normal distributions:

===============  ======  =====  ==================================================
parameter        mean    sd     meaning
===============  ======  =====  ==================================================
length           420     25     bone length, mm
shaft_radius     13      1.3    mid-shaft radius, mm
head             0.9     0.15   proximal bulb width, relative to the shaft
condyles         1.4     0.2    distal bulb width, relative to the shaft
bow              8       4      anterior bow of the shaft, mm
neck_offset      15      5      medial offset of the proximal end, mm
flattening       0.3     0.08   distal medio-lateral widening (relative)
torsion          0       12     rotation of the distal widening about the long axis, deg
neck_height      0       0.025  shift of the proximal bulb along the axis (fraction of length/2)
===============  ======  =====  ==================================================

``torsion`` and ``neck_height`` act nonlinearly, so the family does not lie in a
low-dimensional linear subspace: a PCA model built from a few shapes does not
reproduce a new shape exactly, as with real anatomy.

Example:
    >>> from bayesshape import datasets
    >>> shapes = datasets.example_shapes(5, seed=0)      # list of trimesh.Trimesh
    >>> shapes[0].is_watertight
    True
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "PARAMETERS",
    "sample_parameters",
    "make_shape",
    "example_shapes",
    "template_faces",
    "icosphere",
    "SPINE_LEVELS",
    "example_vertebra",
    "example_spine",
]

#: name -> (mean, standard deviation)
PARAMETERS: dict[str, tuple[float, float]] = {
    "length": (420.0, 25.0),
    "shaft_radius": (13.0, 1.3),
    "head": (0.9, 0.15),
    "condyles": (1.4, 0.2),
    "bow": (8.0, 4.0),
    "neck_offset": (15.0, 5.0),
    "flattening": (0.3, 0.08),
    "torsion": (0.0, 12.0),
    "neck_height": (0.0, 0.025),
}

_N_RINGS = 80
_N_AROUND = 40


def _grid():
    s = np.linspace(-1.0, 1.0, _N_RINGS + 2)[1:-1]
    t = 0.5 * s + 0.5 * (-np.cos(np.pi * (s + 1) / 2))  # denser towards the ends
    phi = 2 * np.pi * np.arange(_N_AROUND) / _N_AROUND
    return t, phi


def template_faces() -> np.ndarray:
    """Faces ``(F, 3)`` shared by every example shape (outward-oriented)."""
    r, a = _N_RINGS, _N_AROUND
    south, north = 0, 1 + r * a

    def vid(i, k):
        return 1 + i * a + (k % a)

    faces = []
    for k in range(a):
        faces.append((south, vid(0, k + 1), vid(0, k)))
        faces.append((north, vid(r - 1, k), vid(r - 1, k + 1)))
    for i in range(r - 1):
        for k in range(a):
            v00, v01, v10, v11 = vid(i, k), vid(i, k + 1), vid(i + 1, k), vid(i + 1, k + 1)
            faces.append((v00, v01, v11))
            faces.append((v00, v11, v10))
    return np.asarray(faces, dtype=np.int32)


def sample_parameters(n: int, *, seed: int = 0, spread: float = 1.0) -> list[dict[str, float]]:
    """Draw ``n`` parameter sets (independent normals; ``spread`` scales every sd)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(n)):
        out.append({k: float(m + spread * s * rng.standard_normal()) for k, (m, s) in PARAMETERS.items()})
    return out


def make_shape(params: dict[str, float] | None = None):
    """The example shape for a parameter dict (missing keys take the mean), as a trimesh."""
    import trimesh

    p = {k: m for k, (m, _) in PARAMETERS.items()}
    if params:
        unknown = set(params) - set(p)
        if unknown:
            raise ValueError(f"params: unknown parameter(s) {sorted(unknown)}; expected some of {list(p)}")
        p.update(params)
    if p["length"] <= 0 or p["shaft_radius"] <= 0:
        raise ValueError("params: length and shaft_radius must be positive (mm)")
    t, phi = _grid()
    half = p["length"] / 2
    bump_p = np.exp(-(((t - 0.84 - p["neck_height"]) / 0.1) ** 2))
    bump_d = np.exp(-(((t + 0.84) / 0.1) ** 2))
    rad = p["shaft_radius"] * (1 + p["head"] * bump_p + p["condyles"] * bump_d)
    rad = rad * np.sqrt(np.clip(1 - t**16, 0, None))
    widen = 1 + p["flattening"] * bump_d
    smooth_p = 1 / (1 + np.exp(-(t - 0.75) / 0.04))
    cx = p["neck_offset"] * smooth_p
    cy = p["bow"] * (1 - t**2)
    tau = np.deg2rad(p["torsion"])
    # ellipse widened along the direction tau (distal end only; widen = 1 elsewhere)
    u = rad[:, None] * widen[:, None] * np.cos(phi - tau)[None, :]
    v = rad[:, None] * np.sin(phi - tau)[None, :]
    x = cx[:, None] + u * np.cos(tau) - v * np.sin(tau)
    y = cy[:, None] + u * np.sin(tau) + v * np.cos(tau)
    z = np.broadcast_to(half * t[:, None], x.shape)
    ring = np.stack([x, y, z], axis=-1).reshape(-1, 3)
    south = np.array([[0.0, 0.0, -half]])
    north = np.array([[p["neck_offset"], 0.0, half]])
    verts = np.concatenate([south, ring, north], axis=0)
    return trimesh.Trimesh(verts, template_faces(), process=False)


def example_shapes(n: int, *, seed: int = 0, spread: float = 1.0) -> list:
    """``n`` seeded example shapes in correspondence (trimesh list, mm).

    Different seeds give different shapes, so ``example_shapes(20, seed=0)`` for
    training and ``example_shapes(5, seed=1)`` for testing are disjoint draws.
    """
    return [make_shape(p) for p in sample_parameters(n, seed=seed, spread=spread)]


def icosphere(radius: float = 1.0, subdivisions: int = 4, center=(0.0, 0.0, 0.0)):
    """A triangulated sphere (trimesh), for tests and analytic checks; radius in mm."""
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    m.apply_translation(np.asarray(center, dtype=np.float64))
    return m


#: the vertebrae of :func:`example_spine`, top to bottom
SPINE_LEVELS = ("L2", "L3", "L4", "L5")
# per level: body half-width (left-right), half-depth (anterior-posterior), half-height (mm), and the
# tilt about the left-right axis (degrees) and the anterior shift (mm) of the natural posture
_LEVEL_SIZE = {
    "L2": (21.0, 15.5, 12.5, -4.0, 0.0),
    "L3": (22.5, 16.0, 13.0, 0.0, 3.0),
    "L4": (23.5, 16.5, 13.0, 4.0, 3.5),
    "L5": (24.5, 17.0, 12.5, 10.0, 0.5),
}


def example_vertebra(
    width: float = 22.0,
    depth: float = 16.0,
    height: float = 13.0,
    *,
    spinous: float = 28.0,
    transverse: float = 16.0,
    subdivisions: int = 3,
):
    """A procedural vertebra-like closed surface (trimesh, mm), centred on its body.

    A sphere triangulation mapped radially onto a body with flat endplates (a superellipsoid of
    half-width ``width`` along x, half-depth ``depth`` along y and half-height ``height`` along z)
    with a spinous process of length ``spinous`` pointing posteriorly (+y) and down, and two
    transverse processes of length ``transverse`` to the sides. Frame: LPS (x to the left, y
    posterior, z superior). Star-shaped about its centre, so watertight and never
    self-intersecting; every vertebra with the same ``subdivisions`` has the same vertices and faces
    (in correspondence).
    """
    import trimesh

    for name, val in (("width", width), ("depth", depth), ("height", height)):
        if not (np.isfinite(val) and val > 0):
            raise ValueError(f"{name}: expected a positive size in mm, got {val}")
    if not (spinous >= 0 and transverse >= 0):
        raise ValueError(f"spinous, transverse: expected process lengths >= 0 mm, got {spinous}, {transverse}")
    sphere = trimesh.creation.icosphere(subdivisions=int(subdivisions), radius=1.0)
    u = np.asarray(sphere.vertices, np.float64)
    u = u / np.linalg.norm(u, axis=1, keepdims=True)
    p, q = 2.5, 6.0  # a rounded body in plan view, flat endplates
    body = (np.abs(u[:, 0] / width) ** p + np.abs(u[:, 1] / depth) ** p) ** (q / p) + np.abs(u[:, 2] / height) ** q
    r = body ** (-1.0 / q)

    def lobe(direction, length, width_rad):
        d = np.asarray(direction, np.float64)
        d /= np.linalg.norm(d)
        angle = np.arccos(np.clip(u @ d, -1.0, 1.0))
        return length * np.exp(-0.5 * (angle / width_rad) ** 2)

    r = r + lobe((0.0, 1.0, -0.35), spinous, 0.22)
    r = r + lobe((1.0, 0.55, 0.0), transverse, 0.2) + lobe((-1.0, 0.55, 0.0), transverse, 0.2)
    return trimesh.Trimesh(u * r[:, None], np.asarray(sphere.faces), process=False)


def example_spine(*, seed: int | None = None, spread: float = 0.05, subdivisions: int = 3) -> dict:
    """A procedural lumbar spine, L2 to L5 (:data:`SPINE_LEVELS`), in a lordotic natural posture.

    Returns ``{name: trimesh}`` in chain order, top to bottom, in one LPS frame (mm): bodies 36 to
    38 mm apart along z with 10 mm discs, tilted about the left-right axis and shifted anteriorly
    (-y) as in a standing lumbar lordosis of about 14 degrees from L2 to L5. ``seed=None`` gives the
    mean spine; a seed gives one whose body sizes and process lengths vary by independent normal
    factors of sd ``spread`` (relative) around the mean. Each vertebra is an
    :func:`example_vertebra` with ``subdivisions``, so the vertebrae of every spine correspond.

    Example:
        >>> spine = example_spine()
        >>> list(spine), spine["L3"].is_watertight
        (['L2', 'L3', 'L4', 'L5'], True)
    """
    import trimesh

    rng = None if seed is None else np.random.default_rng(seed)

    def vary(x):
        return x if rng is None else x * float(np.exp(spread * rng.standard_normal()))

    out, z = {}, 0.0
    prev_height = None
    for name in SPINE_LEVELS:
        w, d, h, tilt, shift = _LEVEL_SIZE[name]
        w, d, h = vary(w), vary(d), vary(h)
        if prev_height is not None:
            z -= prev_height + 10.0 + h
        prev_height = h
        v = example_vertebra(w, d, h, spinous=vary(28.0), transverse=vary(16.0), subdivisions=subdivisions)
        c, s = np.cos(np.radians(tilt)), np.sin(np.radians(tilt))
        rot = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])  # about x (left-right)
        verts = np.asarray(v.vertices) @ rot.T + np.array([0.0, -shift, z])
        out[name] = trimesh.Trimesh(verts, np.asarray(v.faces), process=False)
    return out
