"""Mesh files: PLY, STL, OBJ, OFF through trimesh; VTK POLYDATA (legacy ``.vtk`` and XML ``.vtp``) through
:mod:`.vtk` and :mod:`.vtp`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from .._checks import as_faces, as_points
from .ply import ply_vertex_properties, write_ply
from .vtk import read_vtk_polydata, write_vtk_polydata
from .vtp import read_vtp_polydata, write_vtp_polydata

__all__ = ["read_mesh", "write_mesh", "MESH_SUFFIXES"]

MESH_SUFFIXES = (".ply", ".stl", ".obj", ".off", ".vtk", ".vtp")


def read_mesh(path):
    """Read a triangle mesh (``.ply .stl .obj .off .vtk .vtp``) as a ``trimesh.Trimesh``.

    Vertices and their order are kept exactly as stored (no merging or reordering),
    which matters for meshes in correspondence. VTK point-data arrays are attached
    as ``mesh.vertex_attributes``, and so are PLY vertex properties other than ``x y z``
    (which trimesh's own reader leaves out).
    """
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unsupported mesh format {suffix!r}; expected one of {MESH_SUFFIXES}")
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if suffix in (".vtk", ".vtp"):
        pts, faces, data = (read_vtk_polydata if suffix == ".vtk" else read_vtp_polydata)(path)
        mesh = trimesh.Trimesh(pts, faces, process=False)
        for k, v in data.items():
            mesh.vertex_attributes[k] = v
        return mesh
    try:
        mesh = trimesh.load(path, force="mesh", process=False, maintain_order=True)
    except Exception as e:  # trimesh raises many types on malformed files
        raise ValueError(f"{path}: cannot read mesh: {e}") from None
    if not len(mesh.faces):
        raise ValueError(f"{path}: file holds no triangles")
    if suffix == ".ply":
        for k, v in ply_vertex_properties(mesh).items():
            if v.shape[0] == len(mesh.vertices):
                mesh.vertex_attributes[k] = v
    return mesh


def write_mesh(
    path, mesh_or_vertices, faces=None, *, point_data: dict | None = None, active: str | None = None
) -> None:
    """Write a triangle mesh atomically; the format follows the suffix.

    Args:
        path: ``.ply .stl .obj .off`` (trimesh), ``.vtk`` (legacy POLYDATA, binary) or ``.vtp``
            (VTK XML PolyData).
        mesh_or_vertices: a trimesh mesh or ``(N, 3)`` vertices (mm).
        faces: ``(F, 3)`` triangles when vertices are given.
        point_data: per-vertex arrays (``.ply``, ``.vtk`` and ``.vtp`` only); an ``(N, 3)`` ``uint8``
            array named ``rgb`` is the vertex colours.
        active: the array that tools show first: the active scalars of ``.vtk`` and ``.vtp``, and
            the ``quality`` property of ``.ply`` (default: the first array; none for ``.ply``).
    """
    import trimesh

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise ValueError(f"{path}: unsupported mesh format {suffix!r}; expected one of {MESH_SUFFIXES}")
    if hasattr(mesh_or_vertices, "vertices"):
        verts, fc = np.asarray(mesh_or_vertices.vertices), np.asarray(mesh_or_vertices.faces)
    else:
        verts = as_points(mesh_or_vertices, "vertices")
        if faces is None:
            raise ValueError("faces: required when vertices are given")
        fc = as_faces(faces, verts.shape[0])
    if suffix == ".vtk":
        write_vtk_polydata(path, verts, fc, point_data, active=active)
        return
    if suffix == ".vtp":
        write_vtp_polydata(path, verts, fc, point_data, active=active)
        return
    if suffix == ".ply" and point_data:
        write_ply(path, verts, fc, point_data, quality=active)
        return
    mesh = trimesh.Trimesh(verts, fc, process=False)
    if point_data:
        if suffix != ".ply":
            raise ValueError(f"point_data: only .ply, .vtk and .vtp files carry per-vertex arrays, not {suffix}")
        for k, v in point_data.items():
            mesh.vertex_attributes[k] = np.asarray(v)
    blob = mesh.export(file_type=suffix[1:])
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(blob if isinstance(blob, bytes) else str(blob).encode())
