"""What a reconstruction leaves behind: confidence meshes (the posterior mean with per-vertex
uncertainty, for 3D Slicer, ParaView and MeshLab), posterior sample meshes, and a JSON summary.

Every file is written atomically (a temporary file in the same folder, then a rename).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from ._atomic import atomic_path, json_default
from .io.mesh import write_mesh

__all__ = [
    "confidence_fields",
    "export_confidence_mesh",
    "export_samples",
    "export_object_meshes",
    "export_markups",
    "write_summary",
    "write_json",
    "package_versions",
    "COLORMAP",
]

#: colormap of the vertex colours (perceptually uniform), and its scale
COLORMAP = "viridis"


def confidence_fields(posterior, *, truth=None, level: float = 0.95, tolerance_mm: float = 2.0) -> dict:
    """Per-vertex arrays (all ``(N,)``, mm unless noted).

    ``std`` (RMS distance from the posterior mean), ``normal_std`` (sd along the
    surface normal), ``credible_radius`` (at ``level``), ``flag`` (1 where the credible
    radius exceeds ``tolerance_mm``), and ``error`` (distance of the posterior mean to
    the corresponding vertex of ``truth``) when a truth mesh in correspondence is given. The
    posterior of an :class:`~bayesshape.prior.Assembly` adds ``object_id`` (``uint16``: each vertex's
    object, in the assembly's order).
    """
    fields = {
        "std": posterior.vertex_std(),
        "normal_std": posterior.normal_std(),
        "credible_radius": posterior.credible_radius(level),
    }
    fields["flag"] = (fields["credible_radius"] > tolerance_mm).astype(np.uint8)
    ids = getattr(getattr(posterior, "problem", None), "object_ids", None)
    if ids is not None:
        fields["object_id"] = np.asarray(ids).astype(np.uint16)
    if truth is not None:
        tv = np.asarray(getattr(truth, "vertices", truth), dtype=np.float64)
        mean = posterior.mean_vertices()
        if tv.shape != mean.shape:
            raise ValueError(f"truth: expected {mean.shape[0]} vertices in correspondence, got shape {tv.shape}")
        fields["error"] = np.linalg.norm(mean - tv, axis=1)
    return fields


def colour_scale(values, vmax):
    """RGB ``uint8`` colours ``(N, 3)`` of ``values`` (mm) on :data:`COLORMAP`, linear from 0 to ``vmax`` mm."""
    from matplotlib import colormaps

    cmap = colormaps[COLORMAP]
    t = np.clip(np.asarray(values, dtype=np.float64) / max(vmax, 1e-12), 0.0, 1.0)
    return (cmap(t)[:, :3] * 255).round().astype(np.uint8)


def export_confidence_mesh(
    posterior,
    path,
    *,
    truth=None,
    level: float = 0.95,
    tolerance_mm: float = 2.0,
    colour_by: str = "credible_radius",
    vmax: float | None = None,
) -> dict:
    """Write the posterior mean with per-vertex confidence as ``.ply``, ``.vtk``, ``.vtp`` or ``.vtu``.

    PLY: binary little-endian, with named vertex properties (see :func:`confidence_fields`:
    ``std normal_std credible_radius`` and ``error`` with a truth as float, ``flag`` as uchar),
    the field ``colour_by`` once more as ``quality`` (MeshLab's per-vertex scalar: it colours,
    filters and plots it), and vertex colours ``red green blue`` (uchar) from the perceptually
    uniform ``viridis`` colormap, scaled linearly from 0 mm (dark blue) to ``vmax`` mm (yellow;
    default ``2 * tolerance_mm``), of the field ``colour_by``. VTK (legacy POLYDATA, binary), VTP
    (XML PolyData) and VTU (XML UnstructuredGrid of triangles, through meshio): the same named
    point-data arrays, the colours as a 3-component unsigned-char ``rgb`` array, and
    ``colour_by`` as the active scalars. Coordinates are in the package's world frame, which is
    LPS (x to the patient's left, y posterior, z superior); PLY, VTK and VTP files say so
    (``SPACE=LPS``), so 3D Slicer places them without asking. Atomic write.

    Args:
        posterior: a :class:`~bayesshape.Posterior` or :class:`~bayesshape.ShapeSamples`.
        path: output file, ``.ply``, ``.vtk``, ``.vtp`` or ``.vtu``.
        truth: optional truth mesh (or ``(N, 3)`` vertices) in correspondence, mm.
        level: credible level of ``credible_radius``.
        tolerance_mm: clinical tolerance for ``flag``.

    Returns:
        The fields written (name -> array).

    Example:
        >>> export_confidence_mesh(post, "out/confidence.ply", truth=truth_mesh)   # doctest: +SKIP
    """
    path = Path(path)
    fields = confidence_fields(posterior, truth=truth, level=level, tolerance_mm=tolerance_mm)
    if colour_by not in fields:
        raise ValueError(f"colour_by: expected one of {sorted(fields)}, got {colour_by!r}")
    vmax = 2.0 * tolerance_mm if vmax is None else float(vmax)
    mesh = posterior.mean_mesh()
    data = _point_data(fields, colour_by, vmax)
    if path.suffix.lower() not in (".ply", ".vtk", ".vtp", ".vtu"):
        raise ValueError(f"{path}: confidence meshes are written as .ply, .vtk, .vtp or .vtu")
    if path.suffix.lower() == ".vtu":
        _write_vtu(path, mesh, data)
    else:
        write_mesh(path, mesh, point_data=data, active=colour_by)
    return fields


def _point_data(fields: dict, colour_by: str, vmax: float, rows=None) -> dict:
    """The arrays a mesh file stores: ``fields`` (float as float32; ``rows`` of them when given) and
    ``rgb`` colours of ``colour_by`` from 0 to ``vmax`` mm."""
    sel = slice(None) if rows is None else rows
    data = {k: (v[sel].astype(np.float32) if v.dtype.kind == "f" else v[sel]) for k, v in fields.items()}
    data["rgb"] = colour_scale(fields[colour_by][sel], vmax)
    return data


def _write_vtu(path, mesh, data):
    """VTK XML UnstructuredGrid of triangles through meshio (for tools that want .vtu)."""
    import meshio

    m = meshio.Mesh(
        np.asarray(mesh.vertices, dtype=np.float64),
        [("triangle", np.asarray(mesh.faces))],
        point_data={k: np.asarray(v) for k, v in data.items()},
    )
    with atomic_path(path) as tmp:
        meshio.write(tmp, m, file_format="vtu", binary=True, compression=None)


def export_samples(posterior, folder, n: int = 10, *, seed: int = 0, suffix: str = ".ply") -> list[Path]:
    """Write the posterior mean and ``n`` posterior sample meshes into ``folder``.

    Files: ``mean{suffix}`` and ``sample_000{suffix}`` ... (atomic writes).

    Returns:
        The paths written, the mean first.
    """
    folder = Path(folder)
    if n < 0:
        raise ValueError(f"n: expected a number of samples >= 0, got {n}")
    if posterior.faces is None:
        raise ValueError("export_samples: the posterior has no faces (a point model)")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"mean{suffix}"]
    write_mesh(paths[0], posterior.mean_vertices(), posterior.faces)
    if n:
        for i, v in enumerate(posterior.sample_vertices(n, seed=seed)):
            paths.append(folder / f"sample_{i:03d}{suffix}")
            write_mesh(paths[-1], v, posterior.faces)
    return paths


def export_object_meshes(
    posterior,
    folder,
    *,
    truth=None,
    level: float = 0.95,
    tolerance_mm: float = 2.0,
    suffix: str = ".ply",
) -> list[Path]:
    """One confidence mesh per object of an assembly's posterior: ``folder/<name><suffix>`` (characters
    other than letters, digits, ``.``, ``_`` and ``-`` in a name become ``_``).

    Each holds the object's vertices and faces of the posterior mean with the fields of
    :func:`confidence_fields` (the combined mesh, with its ``object_id`` array, is what
    :func:`export_confidence_mesh` writes). Colours as there, on the credible radius.

    Returns:
        The paths written, in the assembly's order.
    """
    problem = getattr(posterior, "problem", None)
    names = getattr(problem, "object_names", ())
    if not names:
        raise ValueError("export_object_meshes: expected the posterior of an assembly (bs.infer with an Assembly)")
    if posterior.faces is None:
        raise ValueError("export_object_meshes: the assembly's objects are point sets (no faces)")
    if suffix.lower() not in (".ply", ".vtk", ".vtp"):
        raise ValueError(f"suffix: expected '.ply', '.vtk' or '.vtp', got {suffix!r}")
    fields = confidence_fields(posterior, truth=truth, level=level, tolerance_mm=tolerance_mm)
    ids = np.asarray(fields["object_id"])
    per_object = {key: v for key, v in fields.items() if key != "object_id"}
    faces = np.asarray(posterior.faces)
    mean = posterior.mean_vertices()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, name in enumerate(names):
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        rows = np.flatnonzero(ids == k)
        start = int(rows[0])
        own = faces[(ids[faces] == k).all(axis=1)] - start
        data = _point_data(per_object, "credible_radius", 2.0 * tolerance_mm, rows)
        path = folder / f"{stem}{suffix}"
        write_mesh(path, mean[rows], own, point_data=data, active="credible_radius")
        paths.append(path)
    return paths


_SLICER_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)


def _vertex_ids(spec, n_points: int, n_vertices: int, what: str) -> np.ndarray:
    ids = np.asarray(spec)
    if ids.shape != (n_points,) or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"{what}: expected {n_points} vertex indices, got {spec!r}")
    if ids.min() < 0 or ids.max() >= n_vertices:
        raise ValueError(f"{what}: vertex indices must lie in 0..{n_vertices - 1}, got {ids.tolist()}")
    return ids.astype(np.int64)


def _angle_deg(a, b, c):
    """The angle at ``b`` between ``a - b`` and ``c - b``, degrees."""
    u, v = a - b, c - b
    cos = jnp.sum(u * v) / (jnp.linalg.norm(u) * jnp.linalg.norm(v))
    return jnp.degrees(jnp.arccos(jnp.clip(cos, -1.0, 1.0)))


def export_markups(posterior, path, *, lines: dict | None = None, angles: dict | None = None, level: float = 0.95):
    """Write distances and angles between vertices, with their credible intervals, as 3D Slicer
    markups (``.mrk.json``: one ``Line`` or ``Angle`` markup each), to open beside the confidence mesh.

    Each markup's control points are the posterior mean positions of its vertices (LPS, mm); its
    ``measurements`` hold the posterior mean (``length`` in mm, ``angle`` in degrees), and its
    ``description`` the mean, sd and central credible interval, which Slicer shows in the
    Markups module. The intervals come from every posterior sample. Atomic write.

    Args:
        posterior: a :class:`~bayesshape.Posterior` or :class:`~bayesshape.ShapeSamples`.
        path: the ``.mrk.json`` file.
        lines: name -> ``(vertex_a, vertex_b)``: distances.
        angles: name -> ``(vertex_a, vertex_b, vertex_c)``: the angle at ``vertex_b``.
        level: credible level of the intervals.

    Returns:
        name -> :class:`~bayesshape.posterior.samples.Measurement` (mm or degrees).

    Example:
        >>> export_markups(post, "case/measurements.mrk.json", lines={"length": (12, 3040)})  # doctest: +SKIP
    """
    path = Path(path)
    if not path.name.endswith(".mrk.json"):
        raise ValueError(f"{path}: Slicer markups files end in .mrk.json")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a probability in (0, 1), got {level}")
    lines, angles = dict(lines or {}), dict(angles or {})
    if not lines and not angles:
        raise ValueError("give lines= and/or angles= to export")
    if set(lines) & set(angles):
        raise ValueError(f"names used twice: {sorted(set(lines) & set(angles))}")
    mean = posterior.mean_vertices()
    n_vertices = mean.shape[0]
    out, markups = {}, []
    for kind, items in (("Line", lines), ("Angle", angles)):
        for name, spec in items.items():
            ids = _vertex_ids(spec, 2 if kind == "Line" else 3, n_vertices, f"{kind.lower()}s[{name!r}]")
            if kind == "Line":
                quantity, units = "length", "mm"
                m = posterior.measure(lambda v, i=ids: jnp.linalg.norm(v[i[1]] - v[i[0]]), level)
            else:
                quantity, units = "angle", "deg"
                m = posterior.measure(lambda v, i=ids: _angle_deg(v[i[0]], v[i[1]], v[i[2]]), level)
            out[name] = m
            text = (
                f"{quantity} {float(m.mean):.2f} {units} (sd {float(m.sd):.2f}); {100 * level:g}% credible interval "
                f"{float(m.lower):.2f} to {float(m.upper):.2f} {units}"
            )
            points = [
                {
                    "id": str(j + 1),
                    "label": f"{name}-{j + 1}",
                    "description": f"vertex {int(i)}",
                    "position": [float(c) for c in mean[i]],
                    "positionStatus": "defined",
                }
                for j, i in enumerate(ids)
            ]
            markups.append(
                {
                    "type": kind,
                    "name": name,
                    "description": text,
                    "coordinateSystem": "LPS",
                    "coordinateUnits": "mm",
                    "locked": True,
                    "controlPoints": points,
                    "measurements": [
                        {
                            "name": quantity,
                            "enabled": True,
                            "value": float(m.mean),
                            "units": units,
                            "printFormat": "%-#4.4g%s",
                        },
                    ],
                }
            )
    write_json(path, {"@schema": _SLICER_SCHEMA, "markups": markups})
    return out


def package_versions() -> dict:
    """Versions of bayesshape and the libraries a result depends on."""
    from importlib import metadata

    from ._version import __version__

    out: dict = {"bayesshape": __version__}
    for name in ("jax", "jaxlib", "numpyro", "optax", "equinox", "numpy", "scipy", "trimesh"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    import jax

    out["jax_backend"] = jax.default_backend()
    return out


def write_summary(
    posterior,
    path,
    *,
    inputs: dict | None = None,
    settings: dict | None = None,
    measurements: dict | None = None,
    truth=None,
    tolerance_mm: float = 2.0,
    extra: dict | None = None,
    posture_axes: tuple[int, int, int] = (1, 0, 2),
) -> dict:
    """Write the JSON summary of a reconstruction (atomic) and return it.

    Holds: ``inputs`` and ``settings`` as given, ``versions`` (:func:`package_versions`),
    ``posterior`` (method, sample counts, diagnostics), ``reliability`` (case verdict,
    score, flagged fraction, misfit per observation), ``uncertainty_mm`` (mean, median
    and max of the per-vertex std and 95% credible radius), ``measurements`` (each a
    name -> function of the vertices ``(N, 3) -> scalar``, reported as mean, sd and
    95% interval), and ``error_mm`` against ``truth`` when given.

    The posterior of an assembly adds ``objects`` (per object: its reliability line,
    :func:`bayesshape.posterior.posture.object_reliability`, and its vertex error against ``truth``)
    and ``posture_deg`` (per joint, the sagittal, coronal and axial angles of
    :func:`bayesshape.posterior.posture.joint_angles`: posterior mean, sd and 95% interval, degrees),
    with ``posture_axes`` the (anterior-posterior, left-right, inferior-superior) axes of the frame:
    ``(1, 0, 2)`` in LPS.
    """
    rel = posterior.reliability(tolerance_mm=tolerance_mm)
    std = posterior.vertex_std()
    out = {
        "inputs": inputs or {},
        "settings": settings or {},
        "versions": package_versions(),
        "posterior": posterior.summary(),
        "reliability": rel.summary(),
        "uncertainty_mm": {
            "vertex_std": {"mean": float(std.mean()), "median": float(np.median(std)), "max": float(std.max())},
            "credible_radius_95": {
                "mean": float(rel.credible_radius.mean()),
                "median": float(np.median(rel.credible_radius)),
                "max": float(rel.credible_radius.max()),
            },
        },
        "measurements": {name: posterior.measure(fn).as_dict() for name, fn in (measurements or {}).items()},
    }
    err = None
    if truth is not None:
        err = confidence_fields(posterior, truth=truth, tolerance_mm=tolerance_mm)["error"]
        out["error_mm"] = {
            "vertex_mean": float(err.mean()),
            "vertex_p95": float(np.quantile(err, 0.95)),
            "vertex_max": float(err.max()),
            "coverage_95": float(np.mean(err <= rel.credible_radius)),
        }
    if getattr(getattr(posterior, "problem", None), "object_names", ()):
        out.update(_assembly_summary(posterior, err, posture_axes))
    if extra:
        out.update(extra)
    write_json(path, out)
    return out


def _assembly_summary(posterior, err, axes) -> dict:
    """``objects`` and ``posture_deg`` of an assembly's summary; ``err`` the per-vertex error or None."""
    from .posterior import posture

    names = posterior.problem.object_names
    ids = np.asarray(posterior.problem.object_ids)
    objects = {}
    for k, r in enumerate(posture.object_reliability(posterior)):
        row = {key: val for key, val in r.as_dict().items() if key != "name"}
        if err is not None:
            row["vertex_error_mm"] = float(err[ids == k].mean())
        objects[names[k]] = row
    fw, lat, up = axes
    table = posture.interval_table(posture.joint_angles(posterior, forward=fw, lateral=lat, up=up), levels=(0.95,))
    angles = {
        row["name"]: {"mean": row["mean"], "sd": row["sd"], "lo_95": row["lo_0.95"], "hi_95": row["hi_0.95"]}
        for row in table
    }
    return {"objects": objects, "posture_deg": angles}


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""

    text = json.dumps(obj, indent=2, default=json_default)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
