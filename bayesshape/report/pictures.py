"""Pictures (matplotlib, headless): confidence-mesh renders, posterior-predictive overlays on
the input X-rays, DRR residuals, and calibration (reliability) diagrams. Every function
writes one PNG atomically and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path
from ..projection.render import contour_generator, drr_footprint, render_drr
from ..projection.topology import Topology

__all__ = ["confidence_png", "overlay_png", "drr_residual_png", "calibration_png", "save_figure"]

#: (elevation, azimuth) in degrees of the default mesh renders: from the front, the patient's left, the back and the
#: patient's right (LPS: +x is the patient's left), whichever side the bone is from
VIEW_ANGLES = ((0.0, -90.0), (0.0, 0.0), (0.0, 90.0), (0.0, 180.0))
VIEW_NAMES = ("anterior", "left (+x)", "posterior", "right (-x)")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    plt = _plt()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def confidence_png(
    vertices,
    faces,
    values,
    path,
    *,
    vmax: float,
    label: str = "95% credible radius (mm)",
    angles=VIEW_ANGLES,
    names=VIEW_NAMES,
    title: str | None = None,
) -> Path:
    """Render a mesh coloured by a per-vertex field from several angles, with a colourbar.

    An orthographic view per ``(elevation, azimuth)`` (degrees; azimuth about +z, the
    long axis shown upright), drawn far-to-near. Faces take the mean of their vertices'
    values on ``viridis`` (0 to ``vmax``); brightness is modulated by a headlight
    (x0.55 to x1) so the shape reads, which darkens but never changes the hue that
    encodes the value.

    Args:
        vertices: ``(N, 3)`` mm. faces: ``(F, 3)``. values: ``(N,)`` the field, mm.
        path: output PNG. vmax: top of the colour scale, mm. angles: (elev, azim) pairs.
    """
    from matplotlib import colormaps
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import Normalize

    plt = _plt()
    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    val = np.asarray(values, dtype=np.float64)
    if val.shape != (v.shape[0],):
        raise ValueError(f"values: expected shape ({v.shape[0]},), got {val.shape}")
    norm = Normalize(0.0, max(float(vmax), 1e-9))
    base = colormaps["viridis"](norm(val[f].mean(axis=1)))
    c = v - 0.5 * (v.max(0) + v.min(0))
    ext = v.max(0) - v.min(0)
    wxy = float(np.hypot(ext[0], ext[1]))
    panel_w = float(np.clip(5.6 * wxy / max(ext[2], 1e-9), 1.4, 5.6))
    fig, axes = plt.subplots(1, len(angles), figsize=(panel_w * len(angles) + 1.2, 6.0), squeeze=False)
    for ax, (elev, azim), name in zip(axes[0], angles, list(names) + [""] * len(angles)):
        # orthographic camera: azimuth about +z, then elevation; screen x right, screen y = +z up
        e, a = np.radians(elev), np.radians(azim)
        right = np.array([-np.sin(a), np.cos(a), 0.0])
        toward = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])  # towards the viewer
        up = np.cross(toward, right)
        sx, sy, depth = c @ right, c @ up, c @ toward
        tri2 = np.stack([sx[f], sy[f]], axis=-1)
        n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        cols = base.copy()
        cols[:, :3] *= (0.55 + 0.45 * np.abs(n @ toward))[:, None]
        order = np.argsort(depth[f].mean(axis=1))  # far to near
        ax.add_collection(
            PolyCollection(list(tri2[order]), facecolors=cols[order], edgecolors=cols[order], linewidths=0.2)
        )
        ax.set_xlim(-0.55 * wxy, 0.55 * wxy)
        ax.set_ylim(-0.52 * ext[2], 0.52 * ext[2])
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.set_title(name or f"{elev:.0f}/{azim:.0f}", fontsize=9)
    sm = plt.cm.ScalarMappable(norm=norm, cmap="viridis")
    cbar = fig.colorbar(sm, ax=list(axes[0]), shrink=0.7, pad=0.02)
    cbar.set_label(label)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


# every vertex set of a batch in one call; topology and view are arguments, so views and reports of
# the same mesh size share one compilation
_contour_batch = jax.jit(jax.vmap(contour_generator, in_axes=(0, None, None)))


def _contour_segments(vertex_sets, faces, view) -> list:
    """Occluding-contour segments ``(E_i, 2, 2)`` (pixels) of each vertex set, in one compiled call."""
    vs = jnp.asarray(np.asarray(vertex_sets))
    topo = Topology.from_faces(np.asarray(faces), vs.shape[1])
    is_c, seg = _contour_batch(vs, topo, view)
    return [s[m] for s, m in zip(np.asarray(seg), np.asarray(is_c))]


def overlay_png(
    image, view, mean_vertices, faces, path, *, sample_vertices=None, observed_points=None, title: str = ""
) -> Path:
    """The input X-ray with the posterior-predictive contours on top.

    Draws the occluding contour of a few posterior samples (thin, translucent orange),
    of the posterior mean (cyan), and the observed contour points (magenta dots)
    when given. Axes in pixels ``(col, row)``.

    Args:
        image: ``(H, W)`` the input image (DRR intensity or mask).
        view: its :class:`~bayesshape.XRayView`.
        mean_vertices: ``(N, 3)`` posterior mean, mm. faces: ``(F, 3)``.
        sample_vertices: ``(S, N, 3)`` a few posterior samples, mm (optional).
        observed_points: ``(M, 2)`` observed contour points ``(row, col)`` (optional).
    """
    from matplotlib.collections import LineCollection

    plt = _plt()
    img = np.asarray(image, dtype=np.float64)
    if img.shape != tuple(view.detector_shape):
        raise ValueError(f"image: expected the view's detector shape {view.detector_shape}, got {img.shape}")
    fig, ax = plt.subplots(figsize=(5.2, 5.2 * img.shape[0] / img.shape[1]))
    ax.imshow(img, cmap="gray", interpolation="nearest")
    sets = [np.asarray(mean_vertices)] + ([] if sample_vertices is None else list(np.asarray(sample_vertices)))
    segs = [s[..., ::-1] for s in _contour_segments(np.stack(sets), faces, view)]
    for k, seg in enumerate(segs[1:]):
        ax.add_collection(
            LineCollection(
                seg, colors="orange", linewidths=0.6, alpha=0.35, label="posterior samples" if k == 0 else None
            )
        )
    seg = segs[0]
    ax.add_collection(LineCollection(seg, colors="cyan", linewidths=1.0, label="posterior mean"))
    if observed_points is not None:
        p = np.asarray(observed_points)
        ax.plot(p[:, 1], p[:, 0], ".", color="magenta", ms=1.2, label="observed contour")
    # zoom to the object (posterior mean contour plus a margin), within the image
    lo, hi = seg.reshape(-1, 2).min(0), seg.reshape(-1, 2).max(0)
    pad = 0.15 * float(np.max(hi - lo)) + 5.0
    ax.set_xlim(max(lo[0] - pad, -0.5), min(hi[0] + pad, img.shape[1] - 0.5))
    ax.set_ylim(min(hi[1] + pad, img.shape[0] - 0.5), max(lo[1] - pad, -0.5))
    # the legend below the image, where it hides no part of the bone
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, fontsize=7, frameon=False)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    return save_figure(fig, path)


def drr_residual_png(image, view, mean_vertices, faces, path, *, mu: float = 0.05, title: str = "") -> Path:
    """Observed DRR, the DRR of the posterior mean (scale and offset fitted by least squares),
    and their residual on a diverging colour scale."""
    plt = _plt()
    img = np.asarray(image, dtype=np.float64)
    if img.shape != tuple(view.detector_shape):
        raise ValueError(f"image: expected the view's detector shape {view.detector_shape}, got {img.shape}")
    v, f = jnp.asarray(mean_vertices), jnp.asarray(np.asarray(faces))
    k = drr_footprint(v, f, view, margin=0.1)
    pred = mu * np.asarray(render_drr(v, f, view, footprint=k))
    a = np.stack([pred.ravel(), np.ones(pred.size)], axis=1)
    coef, *_ = np.linalg.lstsq(a, img.ravel(), rcond=None)
    fit = (a @ coef).reshape(img.shape)
    res = img - fit
    lim = float(np.quantile(np.abs(res), 0.995)) or 1.0
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.2))
    for ax, data, name, kw in (
        (axes[0], img, "observed", {"cmap": "gray"}),
        (axes[1], fit, "posterior mean", {"cmap": "gray"}),
        (axes[2], res, "residual", {"cmap": "RdBu_r", "vmin": -lim, "vmax": lim}),
    ):
        im = ax.imshow(data, interpolation="nearest", **kw)
        ax.set_title(name, fontsize=10)
        ax.set_axis_off()
        if name == "residual":
            fig.colorbar(im, ax=ax, shrink=0.8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def calibration_png(
    levels,
    coverage: dict,
    path,
    *,
    title: str = "Calibration of per-vertex credible regions",
    counts: dict | None = None,
) -> Path:
    """Reliability diagram: empirical coverage against nominal credible level.

    Args:
        levels: nominal levels, e.g. ``(0.5, 0.8, 0.9, 0.95)``.
        coverage: label -> empirical coverages at ``levels`` (one line each).
        counts: label -> number of cases (shown in the legend).
    """
    plt = _plt()
    lv = np.asarray(levels, dtype=np.float64)
    fig, ax = plt.subplots(figsize=(4.8, 4.6))
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="ideal")
    ax.fill_between([0, 1], [-0.05, 0.95], [0.05, 1.05], color="0.85", label="within 5 points")
    for name, cov in coverage.items():
        lab = name if counts is None or name not in counts else f"{name} (n={counts[name]})"
        ax.plot(lv, np.asarray(cov, dtype=np.float64), "o-", label=lab)
    ax.set_xlim(min(0.4, lv.min() - 0.05), 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("nominal credible level")
    ax.set_ylabel("empirical coverage (share of vertices)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    return save_figure(fig, path)
