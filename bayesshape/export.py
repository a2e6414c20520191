"""Confidence meshes: the posterior mean with per-vertex uncertainty, for 3D Slicer, ParaView, MeshLab."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._atomic import atomic_path
from .io.mesh import write_mesh

__all__ = ["confidence_fields", "export_confidence_mesh", "write_json"]

#: colormap of the vertex colours (perceptually uniform), and its scale
COLORMAP = "viridis"


def confidence_fields(posterior, *, truth=None, level: float = 0.95, tolerance_mm: float = 2.0) -> dict:
    """Per-vertex arrays (all ``(N,)``, mm unless noted).

    ``std`` (RMS distance from the posterior mean), ``normal_std`` (sd along the
    surface normal), ``credible_radius`` (at ``level``), ``flag`` (1 where the credible
    radius exceeds ``tolerance_mm``), and ``error`` (distance of the posterior mean to
    the corresponding vertex of ``truth``) when a truth mesh in correspondence is given.
    """
    fields = {
        "std": posterior.vertex_std(),
        "normal_std": posterior.normal_std(),
        "credible_radius": posterior.credible_radius(level),
    }
    fields["flag"] = (fields["credible_radius"] > tolerance_mm).astype(np.uint8)
    if truth is not None:
        tv = np.asarray(getattr(truth, "vertices", truth), dtype=np.float64)
        mean = posterior.mean_vertices()
        if tv.shape != mean.shape:
            raise ValueError(f"truth: expected {mean.shape[0]} vertices in correspondence, got shape {tv.shape}")
        fields["error"] = np.linalg.norm(mean - tv, axis=1)
    return fields


def _colours(values, vmax):
    from matplotlib import colormaps

    cmap = colormaps[COLORMAP]
    t = np.clip(np.asarray(values, dtype=np.float64) / max(vmax, 1e-12), 0.0, 1.0)
    return (cmap(t)[:, :3] * 255).round().astype(np.uint8)


def export_confidence_mesh(posterior, path, *, truth=None, level: float = 0.95, tolerance_mm: float = 2.0,
                           colour_by: str = "credible_radius", vmax: float | None = None) -> dict:
    """Write the posterior mean with per-vertex confidence as ``.ply`` or ``.vtk``.

    PLY: binary, with named float vertex properties (see :func:`confidence_fields`) and
    vertex colours ``red green blue`` from the ``viridis`` colormap scaled linearly from
    0 mm to ``vmax`` (default: ``2 * tolerance_mm``). VTK: legacy POLYDATA with the same
    named point-data arrays (``SCALARS``) and the colours as ``rgb``. Atomic write.

    Returns:
        The fields written (name -> array).
    """
    path = Path(path)
    fields = confidence_fields(posterior, truth=truth, level=level, tolerance_mm=tolerance_mm)
    if colour_by not in fields:
        raise ValueError(f"colour_by: expected one of {sorted(fields)}, got {colour_by!r}")
    vmax = 2.0 * tolerance_mm if vmax is None else float(vmax)
    rgb = _colours(fields[colour_by], vmax)
    mesh = posterior.mean_mesh()
    data = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in fields.items()}
    if path.suffix.lower() == ".ply":
        data.update({"red": rgb[:, 0], "green": rgb[:, 1], "blue": rgb[:, 2]})
    elif path.suffix.lower() == ".vtk":
        data["rgb"] = rgb
    else:
        raise ValueError(f"{path}: confidence meshes are written as .ply or .vtk")
    write_mesh(path, mesh, point_data=data)
    return fields


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""

    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (np.floating, np.integer, np.bool_)):
            return o.item()
        return str(o)

    text = json.dumps(obj, indent=2, default=default)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
