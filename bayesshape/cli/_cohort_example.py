"""An example cohort on disk: a model file, simulated biplanar masks of unseen example shapes,
their true meshes, and a manifest for ``bayesshape batch`` (``bayesshape demo --cohort N``)."""

from __future__ import annotations

from pathlib import Path


def write_example_cohort(folder, n_cases: int, *, size: int = 128, train: int = 12, seed: int = 0) -> Path:
    """Write ``folder/model.npz``, ``folder/views.json``, ``folder/NAME/{AP,LAT}_mask.png`` and
    ``folder/NAME/truth.ply`` for ``n_cases`` unseen example shapes (each moved by a small rigid
    transform), and ``folder/manifest.csv``; returns the manifest's path."""
    import numpy as np
    import trimesh
    from scipy.spatial.transform import Rotation

    import bayesshape as bs

    from ._files import write_model

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = bs.build_pca_model(bs.datasets.example_shapes(train, seed=seed), align="rigid", variance="loo")
    write_model(model, folder / "model.npz")
    views = list(bs.biplanar(field_of_view=480, detector_shape=(size, size)))
    bs.write_views(folder / "views.json", views, ["AP", "LAT"])
    rng = np.random.default_rng(seed)
    lines = ["case,views,masks,truth,seed"]
    for i, shape in enumerate(bs.datasets.example_shapes(n_cases, seed=seed + 1000)):
        name = f"case{i + 1:03d}"
        c = shape.vertices.mean(0)
        rot = Rotation.from_rotvec(rng.normal(0.0, 0.02, 3)).as_matrix()
        v = (shape.vertices - c) @ rot.T + c + rng.normal(0.0, 3.0, 3)
        truth = trimesh.Trimesh(v, shape.faces, process=False)
        sim = bs.simulate_xray(truth, views, seed=seed + i)
        (folder / name).mkdir(exist_ok=True)
        for view_name, mask in zip(("AP", "LAT"), sim.masks):
            bs.io.write_mask(folder / name / f"{view_name}_mask.png", mask)
        bs.io.write_mesh(folder / name / "truth.ply", truth)
        lines.append(f"{name},views.json,{name}/AP_mask.png;{name}/LAT_mask.png,{name}/truth.ply,{i}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest
