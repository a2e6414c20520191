"""PLY meshes with named per-vertex properties, written for MeshLab, ParaView and 3D Slicer.

trimesh writes vertex properties but its reader drops them (``vertex_attributes`` comes back
empty), and MeshLab keeps only the properties it knows: ``quality`` (a scalar it colours,
filters and plots a histogram of), ``red green blue (alpha)`` and normals. So a confidence
mesh carries its main field twice: by name (``credible_radius``) and as ``quality``.
:func:`write_ply` writes binary little-endian PLY with float64 vertices, the frame in a
``comment SPACE=LPS`` line (read by 3D Slicer), and every array as a vertex property;
:func:`ply_vertex_properties` reads them back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._atomic import atomic_path

__all__ = ["write_ply", "ply_vertex_properties"]

_PLY_TYPE = {"f8": "double", "f4": "float", "u1": "uchar", "i1": "char", "u2": "ushort", "i2": "short"}
_PLY_TYPE.update({"i4": "int", "u4": "uint"})
_NUMPY_OF = {v: k for k, v in _PLY_TYPE.items()}
_NUMPY_OF.update({"float32": "f4", "float64": "f8", "uint8": "u1", "int8": "i1", "int32": "i4", "uint32": "u4"})
_NUMPY_OF.update({"int16": "i2", "uint16": "u2"})
_COLOURS = ("red", "green", "blue", "alpha")


def _code(a: np.ndarray) -> str:
    if a.dtype == bool:
        return "u1"
    code = a.dtype.str[1:]
    if code in _PLY_TYPE:
        return code
    return "f8" if a.dtype.kind == "f" else "i4"


def write_ply(
    path,
    points,
    faces,
    point_data: dict | None = None,
    *,
    quality: str | None = None,
    space: str = "LPS",
    comment: str = "bayesshape",
) -> None:
    """Write a triangle mesh with per-vertex properties as binary PLY (atomic).

    Args:
        path: the ``.ply`` file.
        points: ``(N, 3)`` vertices, mm (written as double).
        faces: ``(F, 3)`` triangles.
        point_data: name -> ``(N,)`` array (a property each, in its dtype; bool as uchar), or
            ``(N, 3)`` / ``(N, 4)`` ``uint8`` colours under the name ``rgb`` / ``rgba`` (written as
            ``red green blue (alpha)``).
        quality: the array written a second time as ``quality``, MeshLab's per-vertex scalar.
        space: the frame named in the header (``comment SPACE=LPS``).
        comment: a header comment line.
    """
    pts = np.asarray(points, dtype=np.float64)
    fc = np.asarray(faces, dtype=np.int64)
    n = pts.shape[0]
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points: expected shape (N, 3), got {pts.shape}")
    if fc.ndim != 2 or fc.shape[1] != 3 or (fc.size and (fc.min() < 0 or fc.max() >= n)):
        raise ValueError(f"faces: expected (F, 3) vertex indices in 0..{n - 1}, got shape {fc.shape}")
    if space not in ("LPS", "RAS"):
        raise ValueError(f"space: expected 'LPS' or 'RAS', got {space!r}")
    columns: list[tuple[str, np.ndarray]] = [("x", pts[:, 0]), ("y", pts[:, 1]), ("z", pts[:, 2])]
    data = dict(point_data or {})
    for name, arr in data.items():
        a = np.asarray(arr)
        if name in ("rgb", "rgba") and a.ndim == 2 and a.shape == (n, len(name)):
            columns += [(c, a[:, i].astype(np.uint8)) for i, c in enumerate(_COLOURS[: a.shape[1]])]
            continue
        if a.shape != (n,):
            raise ValueError(f"point_data[{name!r}]: expected shape ({n},), got {a.shape}")
        if not name.isidentifier() or name in ("x", "y", "z", "quality", *_COLOURS):
            raise ValueError(f"point_data: {name!r} is not a usable PLY property name")
        columns.append((name, a.astype(_code(a))))
    if quality is not None:
        if quality not in data or np.asarray(data[quality]).shape != (n,):
            raise ValueError(f"quality: expected the name of a scalar array of point_data, got {quality!r}")
        columns.append(("quality", np.asarray(data[quality], dtype=np.float32)))
    vdtype = np.dtype([(name, "<" + _code(a)) for name, a in columns])
    vertices = np.empty(n, dtype=vdtype)
    for name, a in columns:
        vertices[name] = a
    fdtype = np.dtype([("n", "u1"), ("v", "<i4", (3,))])
    tris = np.empty(fc.shape[0], dtype=fdtype)
    tris["n"] = 3
    tris["v"] = fc
    header = ["ply", "format binary_little_endian 1.0", f"comment {comment}", f"comment SPACE={space}"]
    header.append(f"element vertex {n}")
    header += [f"property {_PLY_TYPE[_code(a)]} {name}" for name, a in columns]
    header += [f"element face {fc.shape[0]}", "property list uchar int vertex_indices", "end_header"]
    blob = ("\n".join(header) + "\n").encode("ascii") + vertices.tobytes() + tris.tobytes()
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(blob)


def ply_vertex_properties(mesh) -> dict[str, np.ndarray]:
    """The vertex properties other than ``x y z`` of a PLY mesh that trimesh read
    (``trimesh.load(..., process=False)``), which trimesh keeps only in its raw metadata."""
    raw = getattr(mesh, "metadata", {}).get("_ply_raw", {}).get("vertex", {}).get("data")
    if raw is None or raw.dtype.names is None:
        return {}
    return {name: np.array(raw[name]).reshape(-1) for name in raw.dtype.names if name not in ("x", "y", "z")}
