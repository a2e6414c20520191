r"""Leave-one-out calibration of the whole pipeline on your own training shapes.

Point it at a folder of shapes in correspondence; each of the first ``--cases`` shapes is left
out in turn: a PCA model of the others (with or without the model error in its prior), simulated
X-rays of the left-out shape, a reconstruction with the pose unknown, and the posterior checked
against the truth it never saw.

    python experiments/loo_calibration.py --shapes ../shared/data/femur10 --views biplanar --obs contour \
        --method laplace --model-error --out out/loo_femur10
    python experiments/loo_calibration.py --shapes my_points/ --obs landmarks3d --points 30 --noise 1.0 \
        --method laplace --out out/loo_points

Shapes: meshes in correspondence (``.ply .stl .obj .vtk .vtp``, the same triangles), or point sets
without faces as ``.csv``/``.txt`` (one point per row, ``x y z`` in mm, separated by commas or
blanks; lines starting with ``#`` are comments) or ``.npy`` (``(N, 3)`` float). Files are taken in
name order.

Observations (``--obs``), simulated from the left-out shape in ``--views`` (``ap``, ``lateral``,
``biplanar`` or four C-arm views ``carm4``; ``--projection parallel|cone``, ``--size`` pixels over a
field of view 1.3 times the shapes' extent):

* ``contour``: points along the truth's projected occluding contour, one per pixel of length,
  jittered by ``--noise`` px (default 0.5); likelihood sigma ``max(noise, 0.5)`` px. This is a
  sub-pixel segmentation's outline, the contour likelihood's own noise model.
* ``silhouette``: the binary masks at pixel centres, pixel by pixel (sigma 0.5 px).
* ``drr``: the images with ``--noise`` relative Gaussian noise (default 0.01), averaged over
  each pixel's area.
* ``landmarks2d``: ``--points`` vertices (fixed random ids) projected into every view,
  ``--noise`` px; ``landmarks3d``: the same vertices in 3D, ``--noise`` mm. The only kinds for
  point sets.

Per case (``cases.csv``): the posterior mean's error (mean surface distance for meshes, mean
point distance for point sets), the model's floor (its best fit to the truth, rigid pose and
shape), the prior mean's error, coverage of the per-vertex credible balls at 50/80/90/95%,
Spearman of the 95% credible radius against the vertex error (and the same with the truth
replaced by fresh posterior draws: the Spearman a calibrated posterior reaches with these radii),
the case's residual against the training shapes' (RMS ratio, with ``--model-error``), the case score
(``post.reliability().score``), the misfit of each view at the MAP (mean squared standardised
residual), the model error's scale (``--model-error-scale``) and the wall time. ``summary.json``
averages them over the cases (standard errors over cases: a case's vertices are covered or missed together), and
``reliability.png`` is the reliability diagram (nominal against empirical coverage).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cases import Case, auroc, exact_contours  # noqa: E402

import bayesshape as bs  # noqa: E402
from bayesshape._atomic import atomic_path, json_default  # noqa: E402
from bayesshape._geometry import surface_distances  # noqa: E402

LEVELS = (0.5, 0.8, 0.9, 0.95)
DIAGRAM_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
MESH_SUFFIXES = (".ply", ".stl", ".obj", ".vtk", ".vtp")
POINT_SUFFIXES = (".csv", ".txt", ".npy")
OBS = ("landmarks2d", "landmarks3d", "contour", "silhouette", "drr")


def read_points(path: Path) -> np.ndarray:
    """An ``(N, 3)`` point set from ``.npy`` or text (comma or blank separated, ``#`` comments)."""
    if path.suffix == ".npy":
        x = np.load(path, allow_pickle=False)
    else:
        text = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
        rows = [ln.replace(",", " ").split() for ln in text if ln]
        try:
            x = np.array([[float(v) for v in r] for r in rows], dtype=np.float64)
        except ValueError as e:
            raise ValueError(f"{path}: expected numbers x y z on every line ({e})") from None
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3 or x.shape[0] < 3:
        raise ValueError(f"{path}: expected one point per row with 3 coordinates (x y z, mm), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{path}: contains NaN or inf")
    return x


def read_shapes(folder: Path):
    """``(names, (n, N, 3) vertices, faces or None)`` of the shapes in ``folder``."""
    if not folder.is_dir():
        raise ValueError(f"--shapes: {folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MESH_SUFFIXES + POINT_SUFFIXES)
    kinds = {p.suffix.lower() in MESH_SUFFIXES for p in files}
    if not files:
        raise ValueError(f"--shapes: {folder} holds no {' '.join(MESH_SUFFIXES + POINT_SUFFIXES)} files")
    if len(kinds) > 1:
        raise ValueError(f"--shapes: {folder} mixes meshes and point sets; use one kind")
    if kinds == {True}:
        meshes = [bs.io.read_mesh(p) for p in files]
        faces = np.asarray(meshes[0].faces)
        for p, m in zip(files, meshes):
            if m.vertices.shape != meshes[0].vertices.shape or not np.array_equal(np.asarray(m.faces), faces):
                raise ValueError(
                    f"--shapes: {p.name} has {len(m.vertices)} vertices and {len(m.faces)} faces, "
                    f"{files[0].name} {len(meshes[0].vertices)} and {len(faces)}: meshes in correspondence "
                    "share their vertex count and triangles"
                )
        pts = np.stack([np.asarray(m.vertices, dtype=np.float64) for m in meshes])
    else:
        sets = [read_points(p) for p in files]
        for p, s in zip(files, sets):
            if s.shape != sets[0].shape:
                raise ValueError(
                    f"--shapes: {p.name} has {s.shape[0]} points, {files[0].name} {sets[0].shape[0]}: point sets in "
                    "correspondence have the same number of points"
                )
        pts, faces = np.stack(sets), None
    if len(files) < 5:
        raise ValueError(f"--shapes: leave-one-out with a model error needs at least 5 shapes, got {len(files)}")
    return [p.stem for p in files], pts, faces


def make_views(kind: str, projection: str, centre, fov: float, size: int):
    shape = (size, size)
    if kind == "carm4":
        if projection == "parallel":
            raise ValueError("--views carm4: C-arm views are cone beam; use --projection cone")
        return [
            bs.carm_view(
                centre,
                lao=a,
                detector_shape=shape,
                pixel_spacing=fov * 1.5 / size,
                source_to_isocenter=800,
                source_to_detector=1200,
            )
            for a in (0.0, 45.0, 90.0, 135.0)
        ]
    ap, lat = bs.biplanar(centre, field_of_view=fov, detector_shape=shape, projection=projection)
    return {"ap": [ap], "lateral": [lat], "biplanar": [ap, lat]}[kind]


def observations(args, truth_v, faces, views, ids, seed: int):
    rng = np.random.default_rng(seed)
    if args.obs == "landmarks3d":
        noise = 1.0 if args.noise is None else args.noise
        return [bs.obs.Landmarks3D(ids, truth_v[ids] + noise * rng.standard_normal((len(ids), 3)), noise)]
    if args.obs == "landmarks2d":
        noise = 1.0 if args.noise is None else args.noise
        out = []
        for v in views:
            px = np.asarray(v.project(truth_v[ids]))
            out.append(bs.obs.Landmarks2D(v, ids, px + noise * rng.standard_normal(px.shape), noise))
        return out
    import trimesh

    truth = trimesh.Trimesh(truth_v, faces, process=False)
    if args.obs == "contour":
        noise = 0.5 if args.noise is None else args.noise
        case = Case("loo", "held_out", truth, views, views, jitter=noise)
        return [bs.obs.Contour(v, c, max(noise, 0.5)) for v, c in zip(views, exact_contours(case, seed))]
    noise = 0.01 if args.noise is None else args.noise
    sim = bs.simulate_xray(truth, views, seed=seed, noise=noise, pixel="area" if args.obs == "drr" else "centre")
    if args.obs == "silhouette":
        return [bs.obs.Silhouette(v, m, 0.5) for v, m in zip(views, sim.masks)]
    return [bs.obs.DRR(v, d, max(sim.noise_sd, 1e-3), mu=sim.mu, pixel="area") for v, d in zip(views, sim.drr)]


def method_config(args):
    if args.method == "nuts":
        return bs.NUTS(num_warmup=args.warmup, num_chains=args.chains)
    if args.method == "svi":
        return bs.SVI(steps=args.svi_steps)
    if args.method == "importance":
        return bs.Importance()
    return bs.Laplace()


def map_misfit(post) -> list[float]:
    """Per observation: the mean squared standardised residual at the MAP."""
    problem = post.problem
    vs = problem.observation_vertices(problem.vertices(post.theta_map))
    return [float(np.mean(np.asarray(o.residuals(v)) ** 2)) for o, v in zip(problem.observations, vs)]


def shape_error(x, y, faces) -> float:
    """Mean surface distance (meshes, symmetric) or mean point distance (point sets), mm."""
    if faces is None:
        return float(np.linalg.norm(x - y, axis=1).mean())
    f = jax.numpy.asarray(faces)
    return float(surface_distances(jax.numpy.asarray(x), f, jax.numpy.asarray(y), f).mean())


def run_case(args, i, names, shapes, faces, fov):
    truth_v = shapes[i]
    train = np.delete(shapes, i, axis=0)
    align = None if args.align == "none" else args.align
    t0 = time.perf_counter()
    base = bs.build_pca_model(list(train), align=align, faces=faces, variance=args.prior_variance)
    model = base
    if args.model_error:
        err = bs.prior.fit_model_error(list(train), align=align, faces=faces, seed=args.seed)
        model = bs.add_model_error(base, err, max_rank=args.max_rank)
    x_fit, fit = bs.prior.best_fit(base, truth_v, align=align)
    floor = shape_error(fit, x_fit, faces)
    # this case's residual against the training shapes' (RMS per vertex): how far outside them it lies
    residual_ratio = float(np.sqrt(np.mean(np.sum((x_fit - fit) ** 2, -1)))) / err.rms_mm if args.model_error else None
    m0 = np.asarray(base.mean)
    if align is not None:  # the truth moved onto the model's mean, as the model's own fit moves it
        s, r, t = bs.prior.similarity_transform(truth_v, m0, scale=align == "similarity")
        prior_error = shape_error(m0, s * truth_v @ r.T + t, faces)
    else:
        prior_error = shape_error(m0, truth_v, faces)
    centre = truth_v.mean(0)
    views = make_views(args.views, args.projection, centre, fov, args.size)
    n_pts = shapes.shape[1]
    ids = np.random.default_rng(args.seed).choice(n_pts, size=min(args.points, n_pts), replace=False)
    obs = observations(args, truth_v, faces, views, np.sort(ids), args.seed + 1000 * (i + 1))
    pose = None if align is None else (bs.SimilarityPose() if align == "similarity" else bs.RigidPose())
    lik = bs.LikelihoodOptions(
        coarse_faces=args.coarse_faces if faces is not None and args.coarse_faces else None,
        model_error_scale=args.model_error_scale if args.model_error else 1.0,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        post = bs.infer(
            model,
            obs,
            method=method_config(args),
            pose=pose,
            likelihood=lik,
            num_samples=args.samples,
            seed=args.seed,
            progress=args.progress,
        )
    wall = time.perf_counter() - t0
    mean = post.mean_vertices()
    verr = np.linalg.norm(mean - truth_v, axis=1)
    from scipy.stats import spearmanr

    r95 = post.credible_radius(0.95)
    row = {
        "case": names[i],
        "error_mm": shape_error(mean, truth_v, faces),
        "floor_mm": floor,
        "prior_error_mm": prior_error,
        "vertex_error_mm": float(verr.mean()),
        **{f"coverage_{lv}": float(np.mean(verr <= post.credible_radius(lv))) for lv in DIAGRAM_LEVELS},
        "spearman_vertex": float(spearmanr(r95, verr).statistic),
        # the same with the truth replaced by fresh posterior draws: what a calibrated posterior reaches
        "spearman_vertex_ideal": float(
            np.mean(
                [
                    spearmanr(r95, np.linalg.norm(d - mean, axis=1)).statistic
                    for d in post.sample_vertices(20, seed=args.seed + 1)
                ]
            )
        ),
        "vertex_auroc_2mm": auroc(r95, verr > 2.0),
        "mean_r95_mm": float(r95.mean()),
        "score": float(post.reliability().score),
        "n_params": post.problem.dim,
        "model_error_scale": post.diagnostics.map.model_error_scale or 1.0,
        "residual_ratio": residual_ratio,
        # per view: mean squared standardised residual of the data at the MAP (1: fitted to the noise)
        "misfit": " / ".join(f"{m:.2f}" for m in map_misfit(post)),
        "wall_s": wall,
        "warnings": " | ".join(sorted({str(w.message)[:100] for w in caught})),
    }
    return row


def _error_scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (np.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def summarise(rows, args, names_used) -> dict:
    cov = np.array([[r[f"coverage_{lv}"] for lv in LEVELS] for r in rows])
    n = len(rows)
    se = cov.std(0, ddof=1) / np.sqrt(n) if n > 1 else np.full(len(LEVELS), np.nan)
    return {
        "coverage": {str(lv): float(c) for lv, c in zip(LEVELS, cov.mean(0))},
        "coverage_se": {str(lv): (None if not np.isfinite(s) else float(s)) for lv, s in zip(LEVELS, se)},
        "spearman_vertex": float(np.mean([r["spearman_vertex"] for r in rows])),
        "spearman_vertex_ideal": float(np.mean([r["spearman_vertex_ideal"] for r in rows])),
        "error_mm": float(np.mean([r["error_mm"] for r in rows])),
        "floor_mm": float(np.mean([r["floor_mm"] for r in rows])),
        "prior_error_mm": float(np.mean([r["prior_error_mm"] for r in rows])),
        "vertex_error_mm": float(np.mean([r["vertex_error_mm"] for r in rows])),
        "score": [r["score"] for r in rows],
        "wall_s": float(np.sum([r["wall_s"] for r in rows])),
        "n_cases": n,
        "cases": names_used,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }


def diagram(rows, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lv = np.array(DIAGRAM_LEVELS)
    cov = np.array([[r[f"coverage_{x}"] for x in DIAGRAM_LEVELS] for r in rows])
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, label="calibrated")
    ax.fill_between([0, 1], [-0.05, 0.95], [0.05, 1.05], color="0.9", label="within 5 points")
    for c in cov:
        ax.plot(lv, c, color="C0", alpha=0.25, lw=0.8)
    ax.plot(lv, cov.mean(0), "o-", color="C0", label=f"mean of {len(rows)} cases")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="credible level", ylabel="share of vertices covered", title=title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_csv(rows, path: Path) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", type=Path, required=True, help="folder of shapes in correspondence")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--align", choices=["rigid", "similarity", "none"], default="rigid")
    ap.add_argument("--views", choices=["ap", "lateral", "biplanar", "carm4"], default="biplanar")
    ap.add_argument("--projection", choices=["parallel", "cone"], default="cone")
    ap.add_argument("--obs", choices=OBS, default="contour")
    ap.add_argument("--points", type=int, default=20, help="landmark count (fixed random vertex ids)")
    ap.add_argument("--noise", type=float, help="px (contours, 2D landmarks), mm (3D landmarks), relative (DRRs)")
    ap.add_argument("--method", choices=["laplace", "importance", "svi", "nuts"], default="laplace")
    ap.add_argument(
        "--model-error",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the leave-one-out model error inside the prior (bs.add_model_error); --no-model-error without",
    )
    ap.add_argument("--max-rank", type=int, default=200, help="model-error modes at most")
    ap.add_argument(
        "--model-error-scale",
        type=_error_scale,
        default=1.0,
        help="factor on the model error's sd (LikelihoodOptions(model_error_scale=...))",
    )
    ap.add_argument("--prior-variance", choices=["sample", "loo"], default="sample")
    ap.add_argument("--cases", type=int, help="leave out the first N shapes in turn (default: all)")
    ap.add_argument("--only", help="leave out these shapes only (comma-separated names, without the suffix)")
    ap.add_argument("--size", type=int, default=256, help="detector pixels per side")
    ap.add_argument("--coarse-faces", type=int, default=4000, help="likelihood mesh faces (0: the full mesh)")
    ap.add_argument("--samples", type=int, default=300, help="posterior draws (per chain for NUTS)")
    ap.add_argument("--warmup", type=int, default=200, help="NUTS warm-up steps per chain")
    ap.add_argument("--chains", type=int, default=2, help="NUTS chains")
    ap.add_argument("--svi-steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--progress", action="store_true", help="progress bars of the samplers")
    args = ap.parse_args(argv)
    try:
        names, shapes, faces = read_shapes(args.shapes)
        if faces is None and args.obs in ("contour", "silhouette", "drr"):
            raise ValueError(f"--obs {args.obs}: point sets have no surface to project; use landmarks2d or landmarks3d")
        if args.points < 1:
            raise ValueError(f"--points: expected a positive count, got {args.points}")
        n_cases = len(names) if args.cases is None else args.cases
        if not 1 <= n_cases <= len(names):
            raise ValueError(f"--cases: expected 1..{len(names)}, got {n_cases}")
        chosen = list(range(n_cases))
        if args.only:
            wanted = [w.strip() for w in args.only.split(",") if w.strip()]
            unknown = [w for w in wanted if w not in names]
            if unknown:
                raise ValueError(f"--only: no shape named {', '.join(unknown)} in {args.shapes}")
            chosen = [names.index(w) for w in wanted]
        args.out.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as e:
        print(f"loo_calibration: {e}", file=sys.stderr)
        return 2
    extent = float(np.max(np.linalg.norm(shapes.max(1) - shapes.min(1), axis=1)))
    fov = 1.3 * extent
    rows = []
    for i in chosen:
        row = run_case(args, i, names, shapes, faces, fov)
        rows.append(row)
        print(
            f"{row['case']}: error {row['error_mm']:.2f} mm (floor {row['floor_mm']:.2f}), coverage "
            + " / ".join(f"{100 * row[f'coverage_{lv}']:.0f}" for lv in LEVELS)
            + f"%, Spearman {row['spearman_vertex']:.2f}, score {row['score']:.2f}, {row['wall_s']:.0f} s",
            flush=True,
        )
    summary = summarise(rows, args, [names[i] for i in chosen])
    write_csv(rows, args.out / "cases.csv")
    with atomic_path(args.out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=json_default))
    title = f"{args.obs}, {args.views}, {args.method}" + (", model error" if args.model_error else "")
    diagram(rows, args.out / "reliability.png", title)
    c = summary["coverage"]
    print(
        "coverage at 50/80/90/95%: " + " / ".join(f"{100 * c[str(lv)]:.1f}" for lv in LEVELS) + "%; "
        f"Spearman {summary['spearman_vertex']:.2f} (a calibrated posterior's: "
        f"{summary['spearman_vertex_ideal']:.2f}); error {summary['error_mm']:.2f} mm against a floor of "
        f"{summary['floor_mm']:.2f} mm; {summary['wall_s']:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
