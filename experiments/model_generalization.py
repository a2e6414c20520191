"""Leave-one-out generalization of PCA models, variance per mode, and GP rank vs retained variance.

Writes a Markdown report (the tables in docs/models.md) and a JSON file.

    python experiments/model_generalization.py --out out/models
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

import bayesshape as bs  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def loo(meshes):
    """Mean vertex distance (mm) of each left-out shape to its best fit, per number of modes."""
    n = len(meshes)
    rows = []
    for i in range(n):
        train = [m for j, m in enumerate(meshes) if j != i]
        model = bs.build_pca_model(train, align=None)
        target = jnp.asarray(meshes[i].vertices)
        alpha = model.coefficients(target)
        errs = []
        for k in range(1, model.n_modes + 1):
            a = alpha.at[k:].set(0.0)
            errs.append(float(jnp.linalg.norm(model.instance(a) - target, axis=1).mean()))
        rows.append(errs)
    return np.asarray(rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report, results = [], {}

    sets = {"example family (10 shapes, seed 0)": bs.datasets.example_shapes(10, seed=0)}
    femur_dir = DATA / "femur10"
    if femur_dir.exists():
        import trimesh

        sets["femur10"] = [trimesh.load(f, process=False) for f in sorted(femur_dir.glob("*.ply"))]
    else:
        print(f"skipping femur10: {femur_dir} not found", file=sys.stderr)

    for name, meshes in sets.items():
        model = bs.build_pca_model(meshes, align=None)
        ratio = np.asarray(model.explained_variance_ratio)
        errs = loo(meshes)
        mean_err = errs.mean(0)
        results[name] = {
            "explained_variance_ratio": ratio.tolist(),
            "loo_mean_vertex_distance_mm": mean_err.tolist(),
            "loo_per_case_all_modes_mm": errs[:, -1].tolist(),
        }
        report.append(
            f"### {name}\n\n| modes | variance explained (mode) | cumulative | LOO mean vertex distance (mm) |\n"
            "|---|---|---|---|"
        )
        cum = np.cumsum(ratio)
        for k in range(len(mean_err)):
            report.append(f"| {k + 1} | {100 * ratio[k]:.1f}% | {100 * cum[k]:.1f}% | {mean_err[k]:.2f} |")
        mean_only = np.mean(
            [
                np.linalg.norm(
                    m.vertices - np.mean([x.vertices for j, x in enumerate(meshes) if j != i], 0), axis=1
                ).mean()
                for i, m in enumerate(meshes)
            ]
        )
        report.append(f"\nWith 0 modes (the mean shape) the LOO error is {mean_only:.2f} mm.\n")

    ref = bs.datasets.make_shape()
    report.append(
        "### GP model rank against retained variance (example mean shape, Gaussian kernel)\n\n"
        "| kernel | retained target | rank | retained |\n|---|---|---|---|"
    )
    gp_rows = []
    for length in (50.0, 100.0, 200.0):
        k = bs.kernels.GaussianKernel(scale=16.0, length=length)
        for target in (0.9, 0.95, 0.99):
            m = bs.gp_model(ref, k, retained=target)
            got = float(m.variance.sum() / m.total_variance)
            gp_rows.append({"length": length, "target": target, "rank": m.n_modes, "retained": got})
            report.append(
                f"| Gaussian(scale 16 mm^2, length {length:g} mm) | {target:.2f} | {m.n_modes} | {100 * got:.2f}% |"
            )
    results["gp_rank"] = gp_rows
    (args.out / "models.md").write_text("\n".join(report) + "\n")
    (args.out / "models.json").write_text(json.dumps(results, indent=2))
    print("\n".join(report))


if __name__ == "__main__":
    main()
