"""A case folder: everything one reconstruction leaves behind, and the report made from it.

Layout (all written atomically)::

    DIR/posterior.npz        vertex samples, faces, diagnostics (save_posterior)
    DIR/views.json           the view geometry (write_views)
    DIR/inputs.npz           per view: the input image, its kind, observed contour points
    DIR/confidence.{ply,vtk,vtp}, DIR/samples/{mean,sample_000,...}.ply
    DIR/objects/<name>.ply   (an assembly) one confidence mesh per object
    DIR/summary.json         inputs, settings, versions, diagnostics, reliability, measurements
    DIR/truth.ply            (optional) the true shape, for simulated cases
    DIR/pictures/*.png, DIR/report.html   (make_report)
"""

from __future__ import annotations

import json
from pathlib import Path

from .._atomic import atomic_folder, remove_stale_temporaries
from ..export import (
    COLORMAP,
    confidence_fields,
    export_confidence_mesh,
    export_object_meshes,
    export_samples,
    write_summary,
)
from ..io.case_inputs import load_inputs, save_inputs
from ..io.mesh import read_mesh, write_mesh
from ..io.posterior import load_posterior, save_posterior
from ..io.views import read_views, write_views
from .html import write_report
from .pictures import confidence_png, drr_residual_png, overlay_png

__all__ = ["write_case", "export_case", "make_report"]


def export_case(
    posterior,
    out,
    *,
    truth=None,
    n_samples: int = 10,
    level: float = 0.95,
    tolerance_mm: float = 2.0,
    inputs: dict | None = None,
    settings: dict | None = None,
    measurements: dict | None = None,
    extra: dict | None = None,
    posture_axes: tuple[int, int, int] = (1, 0, 2),
) -> dict:
    """Confidence meshes (``.ply``, ``.vtk``, ``.vtp``), sample meshes and ``summary.json``; for an
    assembly also one confidence mesh per object in ``objects/`` and its objects and posture in the
    summary (``posture_axes``: see :func:`~bayesshape.export.write_summary`).

    ``summary.json`` is written last and removed first: a folder without it is incomplete (a
    killed export), and :func:`make_report` refuses it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)
    remove_stale_temporaries(out)
    remove_stale_temporaries(out / "samples")
    for suffix in (".ply", ".vtk", ".vtp"):
        export_confidence_mesh(
            posterior, out / f"confidence{suffix}", truth=truth, level=level, tolerance_mm=tolerance_mm
        )
    export_samples(posterior, out / "samples", n_samples)
    if getattr(getattr(posterior, "problem", None), "object_names", ()):
        remove_stale_temporaries(out / "objects")
        export_object_meshes(posterior, out / "objects", truth=truth, level=level, tolerance_mm=tolerance_mm)
    if truth is not None:
        write_mesh(out / "truth.ply", truth)
    settings = dict(
        settings or {}, level=level, tolerance_mm=tolerance_mm, colour_scale=f"{COLORMAP}, 0 to {2 * tolerance_mm} mm"
    )
    return write_summary(
        posterior,
        out / "summary.json",
        inputs=inputs,
        settings=settings,
        measurements=measurements,
        truth=truth,
        tolerance_mm=tolerance_mm,
        extra=extra,
        posture_axes=posture_axes,
    )


def write_case(out, posterior, views, names, images, kinds, *, points=None, mu: float = 0.05, **export_kw) -> dict:
    """Write a whole case folder (see the module docstring) and return its summary.

    The folder is written under a temporary name and renamed into place when complete, so a case
    folder is complete or absent: a killed run never leaves a partial one, nor a mix of an old
    and a new case."""
    with atomic_folder(out) as tmp:
        save_posterior(posterior, tmp / "posterior.npz")
        if len(views):  # 3D landmarks alone: no views, no images
            write_views(tmp / "views.json", views, names)
            save_inputs(tmp / "inputs.npz", images, kinds, points, mu)
        return export_case(posterior, tmp, **export_kw)


def _check_summary(summary, path) -> None:
    """``ValueError`` naming the key when ``summary.json`` does not have the types a report reads."""

    def number(where, key, x):
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise ValueError(f"{path}: {where}{key} must be a number, got {x!r}")

    if not isinstance(summary, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    for section in ("settings", "reliability", "inputs", "versions", "posterior", "error_mm", "uncertainty_mm"):
        if section in summary and not isinstance(summary[section], dict):
            raise ValueError(f"{path}: {section} must be an object, got {type(summary[section]).__name__}")
    settings = summary.get("settings", {})
    for key in ("tolerance_mm", "level"):
        if key in settings:
            number("settings.", key, settings[key])
    rel = summary.get("reliability", {})
    for key in ("score", "tolerance_mm", "level", "fraction_vertices_flagged", "max_fraction", "misfit_threshold"):
        if key in rel:
            number("reliability.", key, rel[key])
    misfit = rel.get("misfit", [])
    if not isinstance(misfit, list) or not all(
        isinstance(m, dict) and isinstance(m.get("mean_sq_std_residual"), (int, float)) for m in misfit
    ):
        raise ValueError(f"{path}: reliability.misfit must be a list of objects with a mean_sq_std_residual number")


def make_report(case_dir, *, n_overlay_samples: int = 8, title: str | None = None) -> Path:
    """Pictures (``DIR/pictures/*.png``) and ``DIR/report.html`` for a case folder.

    Needs ``posterior.npz`` and ``summary.json``; uses ``views.json`` and ``inputs.npz``
    for the X-ray overlays and ``truth.ply`` for an error map when they are there.

    Example:
        >>> make_report("out/case1")   # doctest: +SKIP
    """
    case = Path(case_dir)
    if not case.is_dir():
        raise ValueError(f"{case}: no such case folder")
    post = load_posterior(case / "posterior.npz")
    sp = case / "summary.json"
    if not sp.exists():
        raise ValueError(f"{sp}: missing; run `bayesshape export` first")
    try:
        summary = json.loads(sp.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{sp}: not valid JSON ({e})") from None
    if post.faces is None:
        raise ValueError(f"{case / 'posterior.npz'}: a report needs a mesh posterior (faces)")
    _check_summary(summary, sp)
    tol = float(summary.get("settings", {}).get("tolerance_mm", 2.0))
    level = float(summary.get("settings", {}).get("level", 0.95))
    pics = case / "pictures"
    pics.mkdir(exist_ok=True)
    remove_stale_temporaries(case)
    remove_stale_temporaries(pics)
    mean = post.mean_vertices()
    truth = read_mesh(case / "truth.ply") if (case / "truth.ply").exists() else None
    if truth is not None and truth.vertices.shape != mean.shape:
        truth = None  # not in correspondence: no error map
    fields = confidence_fields(post, truth=truth, level=level, tolerance_mm=tol)
    r = fields["credible_radius"]
    pictures = {}
    pictures[f"{100 * level:.0f}% credible radius"] = confidence_png(
        mean,
        post.faces,
        r,
        pics / "credible_radius.png",
        vmax=2 * tol,
        label=f"{100 * level:.0f}% credible radius (mm)",
    )
    pictures["Standard deviation along the surface normal"] = confidence_png(
        mean, post.faces, fields["normal_std"], pics / "normal_std.png", vmax=tol, label="normal sd (mm)"
    )
    if "error" in fields:
        pictures["Error of the posterior mean against the truth"] = confidence_png(
            mean, post.faces, fields["error"], pics / "error.png", vmax=2 * tol, label="vertex error (mm)"
        )
    if (case / "views.json").exists() and (case / "inputs.npz").exists():
        views, names = read_views(case / "views.json")
        images, kinds, points, mu = load_inputs(case / "inputs.npz")
        if len(images) != len(views):
            raise ValueError(f"{case}: {len(images)} input images for {len(views)} views")
        samples = post.sample_vertices(n_overlay_samples, seed=0) if n_overlay_samples else None
        for i, (view, name, img, kind, pts) in enumerate(zip(views, names, images, kinds, points)):
            pictures[f"View {name}: posterior-predictive contours on the input"] = overlay_png(
                img,
                view,
                mean,
                post.faces,
                pics / f"overlay_{i}.png",
                sample_vertices=samples,
                observed_points=pts,
                title=f"{name} ({kind})",
            )
            if kind == "drr":
                pictures[f"View {name}: DRR residual"] = drr_residual_png(
                    img, view, mean, post.faces, pics / f"drr_residual_{i}.png", mu=mu, title=name
                )
    shown = (
        ("credible_radius", f"{100 * level:.0f}% credible radius", "mm", 2 * tol),
        ("normal_std", "sd along the surface normal", "mm", tol),
        ("flag", f"flag (credible radius above {tol:g} mm)", "", 1.0),
        ("error", "error against the truth", "mm", 2 * tol),
    )
    viewer_fields = [
        {"name": name, "label": label, "unit": unit, "vmax": vmax, "values": fields[name]}
        for name, label, unit, vmax in shown
        if name in fields
    ]
    mesh = {"vertices": mean, "faces": post.faces, "fields": viewer_fields}
    return write_report(
        case / "report.html",
        title=title or f"bayesshape reconstruction: {case.name}",
        summary=summary,
        pictures=pictures,
        mesh=mesh,
    )
