"""Registration of raw surfaces, checked where the answer is known.

Three experiments, each writing JSON and Markdown into --out:

- ``femur10``: each femur of ``shared/data/femur10`` except the reference is remeshed
  (quadric decimation to 30% then midpoint subdivision: another vertex count and
  triangulation), registered with a GP model of the first femur, and compared with its true
  correspondence, and the true correspondence is projected onto the same GP (what it cannot
  make, and the prior energy of what it can, against the registration's); then PCA models from
  the registered and from the true femurs are compared by leave-one-out generalization.
- ``vertebrae``: the seven raw L1 vertebrae of ``shared/data/vertebrae_l1`` registered to the
  reference with their landmarks: surface distance, landmark error, time; the model built from
  them (compactness, generalization, specificity); a picture coloured by distance and by the
  registration's per-vertex uncertainty.
- ``calibration``: targets drawn from the GP model of the vertebra reference (known
  deformation), remeshed, registered with the posterior: coverage of the true correspondence
  by the credible ellipsoids at 50/80/90/95%.

    python experiments/registration.py femur10 --out out/reg --rank 600
    python experiments/registration.py vertebrae --out out/reg --figure docs/figures/registration_vertebrae.png
    python experiments/registration.py calibration --out out/reg --cases 6
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import bayesshape as bs  # noqa: E402
from bayesshape.registration import RegistrationOptions, build_model_from_surfaces, register  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LEVELS = (0.5, 0.8, 0.9, 0.95)


def remesh(mesh, keep: float = 0.3):
    """Another triangulation of the same surface: quadric decimation, then midpoint subdivision."""
    import fast_simplification
    import trimesh

    v, f = fast_simplification.simplify(
        np.array(mesh.vertices, np.float64), np.array(mesh.faces, np.int64), target_reduction=1 - keep
    )
    v, f = trimesh.remesh.subdivide(v, f)
    return trimesh.Trimesh(v, f, process=False)


def _write(out: Path, name: str, result: dict, text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"{name}.md").write_text(text + "\n")
    print(text)


def femur10(args) -> int:
    import trimesh

    files = sorted((DATA / "femur10").glob("*.ply"))
    if len(files) < 4:
        print(f"femur10: no data at {DATA / 'femur10'}", file=sys.stderr)
        return 2
    meshes = [trimesh.load(f, process=False) for f in files]
    options = RegistrationOptions(rank=args.rank)
    gp = bs.gp_model(meshes[0], options.kernel(), rank=options.rank)
    rows, registered = [], [np.asarray(meshes[0].vertices)]
    for i in range(1, len(meshes)):
        target = remesh(meshes[i])
        t0 = time.perf_counter()
        reg = register(gp, target, options=options, seed=args.seed)
        wall = time.perf_counter() - t0
        err = np.linalg.norm(reg.mesh.vertices - meshes[i].vertices, axis=1)
        # the true correspondence as a deformation of the reference: how much of it the GP can
        # make (least squares after a similarity fit) and at what prior energy, against the MAP's
        x, _ = bs.prior.best_fit(gp, meshes[i].vertices, align="similarity")
        alpha_true = gp.coefficients(jax.numpy.asarray(x))
        fit = np.asarray(gp.instance(alpha_true))
        alpha_true = np.asarray(alpha_true)
        rows.append(
            {
                "femur": files[i].stem,
                "target_vertices": len(target.vertices),
                "correspondence_mean_mm": float(err.mean()),
                "correspondence_p95_mm": float(np.percentile(err, 95)),
                "surface_mean_mm": float(reg.distances.mean()),
                "surface_p95_mm": float(np.percentile(reg.distances, 95)),
                "time_s": wall,
                "truth_residual_mm": float(np.linalg.norm(x - fit, axis=1).mean()),
                "truth_prior_energy": float(alpha_true @ alpha_true),
                "registered_prior_energy": float(np.sum(np.asarray(reg.coefficients) ** 2)),
            }
        )
        registered.append(np.asarray(reg.mesh.vertices))
        print(json.dumps(rows[-1]), flush=True)
    truth = [np.asarray(m.vertices) for m in meshes]
    faces = np.asarray(meshes[0].faces)
    ev_reg = bs.prior.evaluate_model(registered, faces=faces, seed=args.seed)
    ev_true = bs.prior.evaluate_model(truth, faces=faces, seed=args.seed)
    m8 = min(8, int(ev_true.modes[-1])) - 1
    summary = {
        "correspondence_mean_mm": float(np.mean([r["correspondence_mean_mm"] for r in rows])),
        "correspondence_p95_mm": float(np.mean([r["correspondence_p95_mm"] for r in rows])),
        "surface_mean_mm": float(np.mean([r["surface_mean_mm"] for r in rows])),
        "truth_residual_mm": float(np.mean([r["truth_residual_mm"] for r in rows])),
        "truth_prior_energy": float(np.mean([r["truth_prior_energy"] for r in rows])),
        "registered_prior_energy": float(np.mean([r["registered_prior_energy"] for r in rows])),
        "generalization_registered_mm": ev_reg.generalization.tolist(),
        "generalization_true_mm": ev_true.generalization.tolist(),
        "generalization_at_8_modes": [float(ev_reg.generalization[m8]), float(ev_true.generalization[m8])],
        "rank": args.rank,
    }
    lines = [
        "| femur | correspondence mean / p95 (mm) | surface mean / p95 (mm) | time (s) "
        "| truth in the GP: residual (mm) / prior energy | registered: prior energy |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['femur']} | {r['correspondence_mean_mm']:.2f} / {r['correspondence_p95_mm']:.2f} | "
            f"{r['surface_mean_mm']:.3f} / {r['surface_p95_mm']:.2f} | {r['time_s']:.0f} | "
            f"{r['truth_residual_mm']:.2f} / {r['truth_prior_energy']:.0f} | {r['registered_prior_energy']:.0f} |"
        )
    lines.append(
        f"| **mean** | **{summary['correspondence_mean_mm']:.2f} / {summary['correspondence_p95_mm']:.2f}** | "
        f"**{summary['surface_mean_mm']:.3f}** | | {summary['truth_residual_mm']:.2f} / "
        f"{summary['truth_prior_energy']:.0f} | {summary['registered_prior_energy']:.0f} |"
    )
    lines += [
        "",
        "Leave-one-out generalization (mean vertex distance, mm) of PCA models of the ten femurs:",
        "",
        "| modes | registered | true correspondence |",
        "|---:|---:|---:|",
    ]
    for j, m in enumerate(ev_true.modes):
        lines.append(f"| {int(m)} | {ev_reg.generalization[j]:.2f} | {ev_true.generalization[j]:.2f} |")
    _write(Path(args.out), "femur10", {"rows": rows, "summary": summary}, "\n".join(lines))
    return 0


def vertebrae(args) -> int:
    root = DATA / "vertebrae_l1"
    surfaces = sorted((root / "raw").glob("*.ply"))
    if not surfaces:
        print(f"vertebrae: no data at {root}", file=sys.stderr)
        return 2
    options = RegistrationOptions(rank=args.rank)
    t0 = time.perf_counter()
    gp = bs.gp_model(bs.io.read_mesh(root / "reference.ply"), options.kernel(), rank=options.rank)
    gp_time = time.perf_counter() - t0
    built = build_model_from_surfaces(
        [str(s) for s in surfaces],
        gp,
        landmarks=[str(s.with_suffix(".json")) for s in surfaces],
        reference_landmarks=str(root / "reference.json"),
        options=options,
        correspondence_uncertainty=True,
        seed=args.seed,
        progress=True,
    )
    rows = []
    for s, reg in zip(surfaces, built.registrations):
        lm = np.array(list(reg.landmark_error.values()))
        radius = np.asarray(reg.posterior.credible_radius(0.95))
        rows.append(
            {
                "vertebra": s.stem.split("_")[0],
                "surface_mean_mm": reg.info.mean_distance_mm,
                "surface_p95_mm": reg.info.p95_distance_mm,
                "landmark_mean_mm": float(lm.mean()),
                "landmark_max_mm": float(lm.max()),
                "credible_radius95_median_mm": float(np.median(radius)),
                "time_s": reg.info.wall_time_s,
            }
        )
    ev = bs.prior.evaluate_model([r.mesh for r in built.registrations], seed=args.seed)
    lines = [
        "| vertebra | surface mean / p95 (mm) | landmarks mean / max (mm) | 95% radius, median (mm) | time (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['vertebra']} | {r['surface_mean_mm']:.2f} / {r['surface_p95_mm']:.2f} | "
            f"{r['landmark_mean_mm']:.2f} / {r['landmark_max_mm']:.2f} | {r['credible_radius95_median_mm']:.2f} | "
            f"{r['time_s']:.1f} |"
        )
    lines += ["", f"GP model of the reference: {gp.n_modes} modes in {gp_time:.1f} s.", "", ev.table()]
    _write(Path(args.out), "vertebrae", {"rows": rows, "evaluation": ev.to_dict()}, "\n".join(lines))
    if args.figure:
        _figure(built.registrations, [r["vertebra"] for r in rows], Path(args.figure))
    return 0


def _figure(regs, names, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(regs)
    fig = plt.figure(figsize=(2.2 * n, 4.6))
    for row, (field, label, vmax) in enumerate(
        [("distance", "distance to target (mm)", 1.0), ("radius", "95% credible radius (mm)", None)]
    ):
        values = [r.distances if field == "distance" else np.asarray(r.posterior.credible_radius(0.95)) for r in regs]
        top = vmax or float(np.percentile(np.concatenate(values), 99))
        for i, (reg, val) in enumerate(zip(regs, values)):
            ax = fig.add_subplot(2, n, row * n + i + 1, projection="3d")
            v = np.asarray(reg.mesh.vertices)
            v = v - v.mean(0)
            f = np.asarray(reg.mesh.faces)
            surf = ax.plot_trisurf(v[:, 0], v[:, 1], v[:, 2], triangles=f, linewidth=0, antialiased=False)
            surf.set_array(val[f].mean(1))
            surf.set_cmap("viridis")
            surf.set_clim(0, top)
            ax.view_init(elev=90, azim=-90)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(names[i], fontsize=8)
        cax = fig.add_axes((0.92, 0.55 - 0.47 * row, 0.01, 0.35))
        fig.colorbar(plt.cm.ScalarMappable(plt.Normalize(0, top), "viridis"), cax=cax).set_label(label, fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def calibration(args) -> int:
    from scipy.stats import chi2

    root = DATA / "vertebrae_l1"
    if (root / "reference.ply").exists():
        ref = bs.io.read_mesh(root / "reference.ply")
    else:
        ref = bs.datasets.example_shapes(1, seed=0)[0]
    options = RegistrationOptions(rank=args.rank, pose=args.pose, kernel_sd=tuple(args.kernel_sd))
    gp = bs.gp_model(ref, options.kernel(), rank=options.rank)
    bounds = chi2.ppf(LEVELS, df=3)
    rows = []
    for c in range(args.cases):
        truth = np.asarray(gp.sample(jax.random.key(1000 + c), 1)[0])
        import trimesh

        target = remesh(trimesh.Trimesh(truth, np.asarray(gp.faces), process=False), keep=0.5)
        reg = register(gp, target, options=options, posterior=True, seed=args.seed + c)
        cov = np.asarray(reg.posterior.vertex_covariance())
        e = truth - np.asarray(reg.mesh.vertices)
        d2 = np.einsum("ni,nij,nj->n", e, np.linalg.inv(cov), e)
        cover = [float(np.mean(d2 <= b)) for b in bounds]
        rows.append(
            {
                "case": c,
                "coverage": cover,
                "error_mean_mm": float(np.linalg.norm(e, axis=1).mean()),
                "sd_mean_mm": float(np.sqrt(np.trace(cov, axis1=1, axis2=2) / 3).mean()),
                "surface_mean_mm": reg.info.mean_distance_mm,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    cov_all = np.array([r["coverage"] for r in rows])
    mean, se = cov_all.mean(0), cov_all.std(0, ddof=1) / np.sqrt(len(rows)) if len(rows) > 1 else np.zeros(4)
    lines = ["| nominal | coverage of the true correspondence | se over cases |", "|---:|---:|---:|"]
    for lv, m, s in zip(LEVELS, mean, se):
        lines.append(f"| {100 * lv:.0f}% | {100 * m:.1f}% | {100 * s:.1f} |")
    lines.append("")
    lines.append(
        f"{len(rows)} targets, correspondence error {np.mean([r['error_mean_mm'] for r in rows]):.2f} mm, "
        f"posterior sd {np.mean([r['sd_mean_mm'] for r in rows]):.2f} mm (means over vertices and targets)."
    )
    _write(Path(args.out), "calibration", {"rows": rows, "coverage": mean.tolist()}, "\n".join(lines))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=["femur10", "vertebrae", "calibration"])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--rank", type=int, default=300, help="modes of the reference's GP model")
    p.add_argument("--cases", type=int, default=6, help="calibration: targets drawn from the model")
    p.add_argument("--figure", help="vertebrae: write the picture here (.png)")
    p.add_argument(
        "--pose", choices=["similarity", "rigid", "none"], default="rigid", help="calibration: the pose fitted"
    )
    p.add_argument(
        "--kernel-sd", type=float, nargs=2, default=(6.0, 2.0), help="calibration: sd (mm) of the two kernels"
    )
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    return {"femur10": femur10, "vertebrae": vertebrae, "calibration": calibration}[args.experiment](args)


if __name__ == "__main__":
    sys.exit(main())
