"""The lumbar spine's shapes and posture from biplanar DRRs, with credible intervals for its angles.

The population: the mean lumbar spine of ``../shared/data/lumbar_l2l5`` (L2 to L5, one mesh per
vertebra in its natural posture), each vertebra decimated; its shapes vary as a Gaussian process
(``Assembly.from_meshes``' default kernel: 2 mm of variation over 40 mm and 1 mm over 15 mm, 150
modes, the rigid motions of each vertebra taken out so that a vertebra's pose is its posture's
alone); its postures vary per level independently:

* flexion-extension (about the left-right axis) sd 3 degrees, lateral bending (about the
  anterior axis) sd 2 degrees, axial rotation sd 1 degree, translations sd 0.5 mm.

These are a standing posture's spread around the mean, well inside the lumbar ranges of
motion per level (White and Panjabi, *Clinical Biomechanics of the Spine*, 2nd ed., 1990, table
2-7: flexion-extension 12 to 17 degrees, lateral bending 6 to 8, axial rotation 2 per level).

Two priors (``--prior``):

* ``gp`` (default): each vertebra's prior is a GP model of its mean mesh with the population's
  kernel at ``--rank`` modes (150, the population's own: no detail of a true shape lies outside
  it), and the posture prior is the population's. The MAP is fitted in each vertebra's first
  ``--map-modes`` modes (60; the true shapes keep about 0.8 mm RMS of detail outside them), the
  rest marginalised by Gauss-Newton steps in all of them and the Laplace covariance there
  (``bs.Laplace(map_modes=60)``); ``--map-modes 0`` fits all of them.
* ``trained``: the prior is learned from ``--train`` training spines drawn from the population,
  as a user would build it from their own segmented spines: a PCA model per vertebra with its
  leave-one-out model error (:func:`bayesshape.prior.fit_model_error`) in ``--error-rank`` modes
  (150; 0: none), and the posture prior's mean and covariance from the training postures
  (``PosturePrior.from_postures``).

Each test spine is a fresh draw of shapes and posture (outside any training draws), under a random
global pose (3 degrees, 5 mm); two parallel views (AP and lateral), DRRs with 1% noise, counted
with composite-likelihood weights over 16 x 16-pixel blocks (``DRR(block_size=16)``). Inferred with
the Laplace approximation, the global pose unknown. One more case has a wedge fracture of L4 (its
anterior body height reduced by 35%).

    python experiments/spine.py --quick --out out/spine     # 6 spines, minutes on 2 cores
    python experiments/spine.py --out out/spine             # 20 spines

Writes ``summary.json``, ``cases.csv`` (one row per spine and vertebra) and ``angles.csv`` (one
row per spine and angle) to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

import trimesh  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

import bayesshape as bs  # noqa: E402
from bayesshape._atomic import atomic_path  # noqa: E402
from bayesshape._geometry import surface_distances, volume_dice  # noqa: E402
from bayesshape.export import write_json  # noqa: E402
from bayesshape.posterior import morphometry, posture  # noqa: E402
from bayesshape.prior import Assembly, PosturePrior, coarsen_mesh, without_rigid_motion  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lumbar_l2l5"
NAMES = ("L2", "L3", "L4", "L5")
LEVELS = (0.5, 0.8, 0.9, 0.95)
# sd of the relative rotation about x (lateral bending), y (flexion-extension), z (axial), degrees
ROTATION_SD_DEG = (2.0, 3.0, 1.0)
TRANSLATION_SD_MM = 0.5


def load_spine(folder: Path, n_faces: int) -> dict[str, trimesh.Trimesh]:
    out = {}
    for name in NAMES:
        path = folder / f"{name}.ply"
        if not path.exists():
            raise SystemExit(f"spine: {path} not found (the mean lumbar spine, one mesh per vertebra; --data DIR)")
        m = bs.io.read_mesh(path)
        index, faces = coarsen_mesh(np.asarray(m.vertices), np.asarray(m.faces), n_faces)
        out[name] = trimesh.Trimesh(np.asarray(m.vertices)[index], faces, process=False)
    return out


def endplate_normal(mesh: trimesh.Trimesh, side: int) -> np.ndarray:
    """The unit normal of a vertebra's upper (``side=+1``) or lower (``-1``) endplate: the area-weighted
    normal of the body's faces (anterior of the centroid) that face up (down), refined once to the
    faces within 25 degrees of it."""
    fn, fc, area = mesh.face_normals, mesh.triangles_center, mesh.area_faces
    body = fc[:, 0] > mesh.vertices[:, 0].mean()
    sel = body & (side * fn[:, 2] > 0.7)
    n = (fn[sel] * area[sel, None]).sum(0)
    n /= np.linalg.norm(n)
    sel = body & (fn @ n > np.cos(np.radians(25.0)))
    n = (fn[sel] * area[sel, None]).sum(0)
    return n / np.linalg.norm(n)


def wedge(vertices: np.ndarray, points: morphometry.BodyPoints, loss: float = 0.35) -> np.ndarray:
    """A wedge fracture: the body's height (about its mid-height) reduced by ``loss`` at its anterior
    wall, by nothing at its posterior wall, linearly in between (along x, anterior), as Genant's
    semi-quantitative grading measures it (anterior against posterior height: 35% is grade 2)."""
    v = vertices.copy()
    x_ant = v[list(points.anterior), 0].mean()
    x_post = v[list(points.posterior), 0].mean()
    body = v[:, 0] > x_post
    zmid = np.median(v[body, 2])
    f = 1.0 - loss * np.clip((v[body, 0] - x_post) / (x_ant - x_post), 0.0, 1.0)
    v[body, 2] = zmid + (v[body, 2] - zmid) * f
    return v


def simulate_case(
    asm: Assembly,
    truth_models,
    physiological: PosturePrior,
    rng: np.random.Generator,
    *,
    fracture: str | None = None,
    body: dict | None = None,
):
    """Truth vertices per object (natural posture), the posture increments, the global pose, and the
    posed combined mesh."""
    shapes = [draw_shape(tm, rng) for tm in truth_models]
    shapes = [wedge(v, body[name]) if name == fracture else v for name, v in zip(asm.names, shapes)]
    inc = draw_postures(physiological, rng, 1)[0]
    return _posed(asm, shapes, inc, rng)


def draw_postures(prior: PosturePrior, rng: np.random.Generator, n: int) -> np.ndarray:
    """``(n, n_levels, 6)`` postures drawn from ``prior``."""
    cov = np.asarray(prior.covariance)
    z = rng.normal(size=(n, cov.shape[0]))
    return (np.asarray(prior.mean).reshape(-1) + z @ np.linalg.cholesky(cov).T).reshape(n, -1, 6)


def draw_shape(model, rng: np.random.Generator) -> np.ndarray:
    """``(N, 3)`` vertices of one shape drawn from ``model``'s prior (mm)."""
    return np.asarray(model.instance(jax.numpy.asarray(rng.normal(0.0, 1.0, model.n_modes))))


def build_prior(
    meshes, truth_models, physiological: PosturePrior, n_train: int, error_rank: int, seed: int
) -> Assembly:
    """The assembly a user would build from ``n_train`` segmented spines of the population: a PCA
    model per vertebra (with its leave-one-out model error in ``error_rank`` modes, unless 0) and
    the postures' sample mean and covariance. Its own random stream, apart from the test spines'."""
    rng = np.random.default_rng([seed, 1])
    models = {}
    for (name, mesh), tm in zip(meshes.items(), truth_models):
        train = [draw_shape(tm, rng) for _ in range(n_train)]
        faces = np.asarray(mesh.faces)
        models[name] = bs.build_pca_model(train, faces=faces, align=None)
        if error_rank:
            error = bs.prior.fit_model_error(train, align=None, faces=faces, seed=seed)
            models[name] = bs.add_model_error(models[name], error, rank=error_rank)
    posture_prior = PosturePrior.from_postures(draw_postures(physiological, rng, n_train))
    return Assembly.from_meshes(models, posture=posture_prior)


def _posed(asm: Assembly, shapes, inc, rng):
    from bayesshape.inference._assembly import object_transforms

    rots, trans = (np.asarray(x) for x in object_transforms(jax.numpy.asarray(inc), asm.joints))
    placed = [s @ r.T + t for s, r, t in zip(shapes, rots, trans)]
    allv = np.concatenate(placed)
    c = allv.mean(0)
    g_rot = Rotation.from_rotvec(rng.normal(0, np.radians(3.0), 3)).as_matrix()
    g_t = rng.normal(0, 5.0, 3)
    world = (allv - c) @ g_rot.T + c + g_t
    faces = np.asarray(asm.combined_model().faces)
    return world, faces, inc


def _wedge_columns(w, truth, points) -> dict:
    if w is None:
        return {}
    ha, hp = morphometry.height_ratios(truth, points)
    return {
        "true_height_reduction": float(1.0 - (ha / hp) / w.reference_ratio),
        "height_ratio": w.ratio,
        "height_reduction": w.reduction,
        # the 95% interval of the loss, from that of the ratio
        "height_reduction_lo95": float(1.0 - w.ratio_interval[1] / w.reference_ratio),
        "height_reduction_hi95": float(1.0 - w.ratio_interval[0] / w.reference_ratio),
        "p_genant_1": w.probability,
        "genant_grade": w.grade,
        "flagged_wedge": w.flagged,
    }


def _loss_covered(row) -> bool:
    return row["height_reduction_lo95"] <= row["true_height_reduction"] <= row["height_reduction_hi95"]


def _confusion(rows) -> dict:
    truth = [r["true_height_reduction"] >= morphometry.GENANT_THRESHOLDS[0] for r in rows]
    flag = [r["flagged_wedge"] for r in rows]
    return {
        "true_positive": sum(t and f for t, f in zip(truth, flag)),
        "false_positive": sum(f and not t for t, f in zip(truth, flag)),
        "false_negative": sum(t and not f for t, f in zip(truth, flag)),
        "true_negative": sum(not t and not f for t, f in zip(truth, flag)),
    }


def run_case(
    asm,
    truth_models,
    physiological,
    views,
    rng,
    normals,
    *,
    fracture=None,
    samples=400,
    seed=0,
    likelihood=None,
    block=8,
    body=None,
    map_modes=None,
):
    world, faces, inc = simulate_case(asm, truth_models, physiological, rng, fracture=fracture, body=body)
    sim = bs.simulate_xray((world, faces), views, seed=seed, noise=0.01, mu=0.02)
    t0 = time.perf_counter()
    post = bs.infer(
        asm,
        sim.observations("drr", block_size=block or None),
        bs.Laplace(map_modes=map_modes),
        bs.RigidPose(rotation_sd=0.1, translation_sd=10.0),
        num_samples=samples,
        seed=seed,
        likelihood=likelihood,
    )
    wall = time.perf_counter() - t0
    mean_v = post.mean_vertices()
    off = asm.vertex_offsets
    rel = posture.object_reliability(post)
    wedges = {w.name: w for w in morphometry.wedge_assessment(post, body)} if body else {}
    vert_rows = []
    for k, name in enumerate(asm.names):
        f = np.asarray(asm.models[k].faces)
        est, tru = mean_v[off[k] : off[k + 1]], world[off[k] : off[k + 1]]
        d = surface_distances(est, f, tru, f)
        vert_rows.append(
            {
                "vertebra": name,
                "surface_mean_mm": float(d.mean()),
                "surface_p95_mm": float(np.quantile(d, 0.95)),
                "vertex_error_mm": float(np.linalg.norm(est - tru, axis=1).mean()),
                "dice": volume_dice(est, f, tru, f, pitch=1.0),
                "credible_radius_95_mm": rel[k].credible_radius_95,
                "shape_mahalanobis": rel[k].shape_mahalanobis,
                "misfit": rel[k].misfit,
                "misfit_p_value": rel[k].misfit_p_value,
                "flagged_misfit": rel[k].flagged,
                **_wedge_columns(wedges.get(name), tru, body and body.get(name)),
            }
        )
        vert_rows[-1]["flagged"] = vert_rows[-1]["flagged_misfit"] or vert_rows[-1].get("flagged_wedge", False)
    # angles: posterior draws against the truth
    draws = posture.joint_angles(post)
    truth = posture.posture_angles(asm, inc)
    up, down = normals
    lord = ("L2", up), ("L5", -down)
    draws["lordosis_sagittal"] = posture.plane_angle(post, *lord, plane=(0, 2))
    draws["lordosis_coronal"] = posture.plane_angle(post, *lord, plane=(1, 2))
    truth["lordosis_sagittal"] = posture.posture_plane_angle(asm, inc, *lord, plane=(0, 2))
    truth["lordosis_coronal"] = posture.posture_plane_angle(asm, inc, *lord, plane=(1, 2))
    angle_rows = []
    for key in ("sagittal", "coronal", "axial", "lordosis_sagittal", "lordosis_coronal"):
        d, t = np.asarray(draws[key]), np.asarray(truth[key])
        d = d[:, None] if d.ndim == 1 else d
        t = t.reshape(-1)
        for c in range(d.shape[1]):
            label = key if key.startswith("lordosis") else f"{key}[{draws['joints'][c]}]"
            row = {
                "angle": label,
                "truth_deg": float(t[c]),
                "mean_deg": float(d[:, c].mean()),
                "sd_deg": float(d[:, c].std()),
            }
            for lev in LEVELS:
                lo, hi = np.quantile(d[:, c], [0.5 - lev / 2, 0.5 + lev / 2])
                row[f"covered_{lev:g}"] = bool(lo <= t[c] <= hi)
            angle_rows.append(row)
    # relative rotation error per level (geodesic, posterior mean rotation vector against the truth)
    inc_draws = np.asarray(jax.vmap(post.problem.increments)(jax.numpy.asarray(post.flat_theta())))
    rot_err = []
    for j in range(inc.shape[0]):
        r_est = Rotation.from_rotvec(inc_draws[:, j, :3].mean(0))
        r_true = Rotation.from_rotvec(inc[j, :3])
        rot_err.append(float(np.degrees((r_est.inv() * r_true).magnitude())))
    weights = post.diagnostics.map.composite_weights
    return {
        "vertebrae": vert_rows,
        "angles": angle_rows,
        "rotation_error_deg": rot_err,
        "wall_s": wall,
        "weights": weights,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="6 spines (minutes on 2 cores) instead of 20")
    ap.add_argument("--cases", type=int, default=None, help="spines (default 20, --quick 6)")
    ap.add_argument("--data", type=Path, default=DATA, help="folder with L2.ply ... L5.ply")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--faces", type=int, default=1200, help="faces per vertebra after decimation")
    ap.add_argument("--detector", type=int, default=128, help="detector side, pixels (field of view 192 mm)")
    ap.add_argument("--samples", type=int, default=400, help="posterior draws per spine")
    ap.add_argument("--block-size", type=int, default=16, help="DRR composite-likelihood blocks, pixels (0: none)")
    ap.add_argument("--prior", choices=("gp", "trained"), default="gp", help="the prior (see above)")
    ap.add_argument("--rank", type=int, default=150, help="modes of each vertebra's GP model (--prior gp)")
    ap.add_argument("--train", type=int, default=30, help="training spines (--prior trained)")
    ap.add_argument(
        "--error-rank",
        type=int,
        default=150,
        help="modes of each vertebra's leave-one-out model error (--prior trained; 0: none)",
    )
    ap.add_argument(
        "--map-modes",
        type=int,
        default=60,
        help="fit the MAP in each vertebra's first K modes, the rest marginalised (Laplace(map_modes=K); 0: all)",
    )
    ap.add_argument("--truth-rank", type=int, default=150, help="modes of the population's shape process")
    args = ap.parse_args(argv)
    n_cases = args.cases or (6 if args.quick else 20)
    n_faces = args.faces
    meshes = load_spine(args.data, n_faces)
    kernel = bs.kernels.multiscale((4.0, 1.0), (40.0, 15.0))
    truth_models = [without_rigid_motion(bs.gp_model(m, kernel, args.truth_rank)) for m in meshes.values()]
    physiological = PosturePrior.independent(3, rotation_deg=ROTATION_SD_DEG, translation_mm=TRANSLATION_SD_MM)
    if args.prior == "gp":
        asm = Assembly.from_meshes(meshes, rank=args.rank, kernel=kernel, posture=physiological)
    else:
        asm = build_prior(meshes, truth_models, physiological, args.train, args.error_rank, args.seed)
    normals = (endplate_normal(meshes["L2"], +1), endplate_normal(meshes["L5"], -1))
    allv = np.concatenate([m.vertices for m in meshes.values()])
    views = bs.biplanar(isocenter=tuple(allv.mean(0)), field_of_view=192.0, detector_shape=(args.detector,) * 2)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    cases = []
    lik = bs.LikelihoodOptions()
    # the ends of each body's anterior and posterior heights (x anterior, z superior)
    body = {name: morphometry.body_points(m) for name, m in meshes.items()}
    settings = {
        "likelihood": lik,
        "block": args.block_size,
        "samples": args.samples,
        "body": body,
        "map_modes": args.map_modes or None,
    }

    def case(seed, fracture=None):
        return run_case(asm, truth_models, physiological, views, rng, normals, fracture=fracture, seed=seed, **settings)

    for i in range(n_cases):
        r = case(args.seed + i)
        cases.append(r)
        print(
            f"spine {i}: {r['wall_s']:.0f} s, dice {np.mean([v['dice'] for v in r['vertebrae']]):.3f}, "
            f"surface {np.mean([v['surface_mean_mm'] for v in r['vertebrae']]):.2f} mm, "
            f"rotation error {np.round(r['rotation_error_deg'], 2).tolist()} deg, composite weights {r['weights']}",
            flush=True,
        )
    frac = case(args.seed + 1000, fracture="L4")
    flagged = [v["vertebra"] for v in frac["vertebrae"] if v["flagged"]]
    print(
        f"fracture of L4: flagged {flagged}; "
        + ", ".join(
            f"{v['vertebra']} misfit {v['misfit']:.2f} maha {v['shape_mahalanobis']:.2f} "
            f"height reduction {100 * v['height_reduction']:.0f}% (P(grade >= 1) {v['p_genant_1']:.2f})"
            for v in frac["vertebrae"]
        )
    )

    verts = [v for c in cases for v in c["vertebrae"]]
    angles = [a for c in cases for a in c["angles"]]
    lordosis = [a for a in angles if a["angle"] == "lordosis_sagittal"]
    # the clinical angles: sagittal and coronal, per joint and the lordosis; axial rotation apart
    clinical = [a for a in angles if not a["angle"].startswith("axial")]
    axial = [a for a in angles if a["angle"].startswith("axial")]
    coverage = {f"{lev:g}": float(np.mean([a[f"covered_{lev:g}"] for a in clinical])) for lev in LEVELS}
    se = {k: float(np.sqrt(v * (1 - v) / len(clinical))) for k, v in coverage.items()}

    def abs_err(rows):
        return float(np.mean([abs(a["mean_deg"] - a["truth_deg"]) for a in rows]))

    def mean_sd(rows):
        return float(np.mean([a["sd_deg"] for a in rows]))

    summary = {
        "cases": n_cases,
        "faces_per_vertebra": n_faces,
        "prior": args.prior,
        "map_modes": args.map_modes or None,
        **({"training_spines": args.train, "model_error_rank": args.error_rank} if args.prior == "trained" else {}),
        "modes_per_vertebra": [m.n_modes for m in asm.models],
        "dice_mean": float(np.mean([v["dice"] for v in verts])),
        "dice_per_vertebra": {n: float(np.mean([v["dice"] for v in verts if v["vertebra"] == n])) for n in NAMES},
        "surface_error_mm": float(np.mean([v["surface_mean_mm"] for v in verts])),
        "surface_error_per_vertebra_mm": {
            n: float(np.mean([v["surface_mean_mm"] for v in verts if v["vertebra"] == n])) for n in NAMES
        },
        "rotation_error_deg": float(np.mean([e for c in cases for e in c["rotation_error_deg"]])),
        "rotation_error_per_level_deg": [float(np.mean([c["rotation_error_deg"][j] for c in cases])) for j in range(3)],
        "lordosis_error_deg": float(np.mean([abs(a["mean_deg"] - a["truth_deg"]) for a in lordosis])),
        "angle_coverage": coverage,
        "angle_coverage_se": se,
        "angles_per_case": len(clinical) // n_cases,
        "axial_coverage": {f"{lev:g}": float(np.mean([a[f"covered_{lev:g}"] for a in axial])) for lev in LEVELS},
        "angle_error_deg": {
            p: abs_err([a for a in angles if a["angle"].startswith(p)]) for p in ("sagittal", "coronal", "axial")
        },
        "angle_sd_deg": {
            p: mean_sd([a for a in angles if a["angle"].startswith(p)]) for p in ("sagittal", "coronal", "axial")
        },
        "flagged_in_normal_cases": sum(v["flagged"] for v in verts),
        "flagged_by_misfit_in_normal_cases": sum(v["flagged_misfit"] for v in verts),
        "flagged_by_wedge_in_normal_cases": sum(v["flagged_wedge"] for v in verts),
        "fracture_flags_by_misfit": [v["vertebra"] for v in frac["vertebrae"] if v["flagged_misfit"]],
        "fracture_flags_by_wedge": [v["vertebra"] for v in frac["vertebrae"] if v["flagged_wedge"]],
        "fracture_height_reduction": {v["vertebra"]: v["height_reduction"] for v in frac["vertebrae"]},
        # the morphometric flag against the truth's own loss (Genant's grade 1: 20%), every vertebra
        "wedge_flags_against_truth": _confusion(verts + frac["vertebrae"]),
        "height_reduction_error": float(
            np.mean([abs(v["height_reduction"] - v["true_height_reduction"]) for v in verts])
        ),
        "height_reduction_coverage_95": float(np.mean([_loss_covered(v) for v in verts])),
        "fracture_flagged": flagged == ["L4"],
        "fracture_flags": flagged,
        "fracture_case": frac["vertebrae"],
        "wall_s_mean": float(np.mean([c["wall_s"] for c in cases])),
    }
    write_json(args.out / "summary.json", summary)
    for fname, rows in (
        ("cases.csv", [{"case": i, **v} for i, c in enumerate(cases) for v in c["vertebrae"]]),
        ("angles.csv", [{"case": i, **a} for i, c in enumerate(cases) for a in c["angles"]]),
    ):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        with atomic_path(args.out / fname) as tmp:
            Path(tmp).write_text(buf.getvalue())
    print(
        f"dice {summary['dice_mean']:.3f}, surface {summary['surface_error_mm']:.2f} mm, rotation "
        f"{summary['rotation_error_deg']:.2f} deg, lordosis {summary['lordosis_error_deg']:.2f} deg, coverage "
        + " / ".join(f"{100 * v:.0f}" for v in coverage.values())
        + f" %, fracture flagged on L4 alone: {summary['fracture_flagged']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
