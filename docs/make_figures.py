"""Figures for the docs (geometry conventions).  python docs/make_figures.py"""

from pathlib import Path

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import bayesshape as bs  # noqa: E402

OUT = Path(__file__).parent / "figures"


def geometry():
    shape = bs.datasets.make_shape()
    ap, lat = bs.biplanar(
        field_of_view=480,
        detector_shape=(256, 256),
        projection="cone",
        source_to_isocenter=1000,
        source_to_detector=1300,
    )
    fig = plt.figure(figsize=(13, 5))
    ax = fig.add_subplot(1, 3, 1, projection="3d")
    v = shape.vertices
    ax.plot_trisurf(v[:, 0], v[:, 1], v[:, 2], triangles=shape.faces, color="0.8", linewidth=0)
    for view, col, name in ((ap, "tab:blue", "AP"), (lat, "tab:orange", "lateral")):
        s = np.asarray(view.source)
        corners = np.asarray(
            view.pixel_to_world(jnp.asarray([[0, 0], [0, 255], [255, 255], [255, 0], [0, 0]], dtype=jnp.float32))
        )
        ax.plot(corners[:, 0], corners[:, 1], corners[:, 2], color=col)
        for c in corners[:4]:
            ax.plot([s[0], c[0]], [s[1], c[1]], [s[2], c[2]], color=col, alpha=0.3, lw=0.8)
        ax.scatter(*s, color=col, s=30)
        ax.text(*s, f" {name} source", color=col)
        o = corners[0]
        ax.text(*o, " pixel (0,0)", color=col, fontsize=8)
    for d, lab in (
        (np.array([150, 0, 0]), "+x (left)"),
        (np.array([0, 150, 0]), "+y (posterior)"),
        (np.array([0, 0, 150]), "+z (up)"),
    ):
        ax.quiver(0, 0, 0, *d, color="k", arrow_length_ratio=0.1)
        ax.text(*(d * 1.1), lab)
    ax.set_title("world frame, mm")
    ax.set_box_aspect((1, 1, 1))
    lim = 1000
    ax.set_xlim(-lim, lim), ax.set_ylim(-lim, lim), ax.set_zlim(-lim, lim)
    for i, (view, name) in enumerate(((ap, "AP view"), (lat, "lateral view"))):
        img = np.asarray(bs.projection.render_drr(jnp.asarray(v, jnp.float32), jnp.asarray(shape.faces), view))
        a = fig.add_subplot(1, 3, 2 + i)
        a.imshow(img, cmap="gray")
        a.set_title(f"{name}: DRR path length (mm)\nrow = image down (-z), col = image right")
        a.set_xlabel("col (j)")
        a.set_ylabel("row (i)")
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / "geometry.png", dpi=90)


if __name__ == "__main__":
    geometry()
