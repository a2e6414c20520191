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

__all__ = ["PARAMETERS", "sample_parameters", "make_shape", "example_shapes", "template_faces", "icosphere"]

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
