"""Can the uncertainty be trusted? Calibration, failure flagging and accuracy against views.

Held-out shapes of the example family (drawn with other seeds than the model's 20 training
shapes), each moved by a small random rigid motion, observed in simulated X-rays; the
posterior is inferred with the pose unknown and compared with the truth:

1. calibration: per-vertex coverage of the 50/80/90/95% credible balls, expected
   calibration error, Spearman correlation of the 95% credible radius with the error
   (per vertex within a case, and per case), for 1/2/4 views, two contour noise levels,
   contours and DRRs, and the methods;
2. failure flagging: scaled by 15%, mirrored, fractured, bowed, a miscalibrated view,
   heavy contour noise, an occluded silhouette, mixed with the held-out cases; AUROC of
   the case reliability score for mean surface error > 2 mm, and per-vertex AUROC of the
   credible radius for vertex error > 2 mm;
3. accuracy: mean and 95th-percentile surface distance and volumetric Dice against the
   number of views, next to the generalization floor (best fit of the model to the truth).

    python experiments/calibration.py --quick --out out/calibration     # minutes on 2 cores
    python experiments/calibration.py --out out/calibration             # the full setting

Writes ``cases.csv``, ``cases.json``, ``summary.json`` and PNG figures to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cases import (
    LEVELS,
    Case,
    auroc,
    deform,
    ece,
    floor,
    make_views,
    mean_coverage,
    miscalibrate,  # noqa: E402
    move,
    reconstruct,
)
from scipy.stats import spearmanr  # noqa: E402

import bayesshape as bs  # noqa: E402
from bayesshape.export import write_json  # noqa: E402

HEADLINE_OBS = {"contour": "contours", "silhouette": "silhouettes (masks, probit)", "drr": "DRRs ({pixel} pixels)"}
FAILURES = ("scaled", "mirrored", "fracture", "deformity", "miscalibrated", "heavy_noise", "occluded")

SETTINGS = {
    #        cases per group: smoke, quick, full
    # headline / failure: the method of those cases; methods: compared with the headline's in the "other" group
    # nuts: (warm-up, draws) per chain; the mass matrix is the Laplace covariance, the warm-up tunes the step size
    # importance: (rounds, draws per round) of adaptive importance sampling from the Laplace Gaussian
    "smoke": dict(size=64, n_head=1, n_other=0, n_fail=0, headline="laplace", methods=(), n_train=10, nuts=(50, 100)),
    # quick: 10 headline cases (`--n-headline 5` runs the first five): with 5 the standard
    # error of the 90% coverage was 4.4 points, too wide to tell a 5-point miss from chance
    "quick": dict(
        size=128,
        n_head=10,
        n_other=1,
        n_fail=1,
        headline="importance",
        failure="laplace",
        methods=(),
        n_train=20,
        other_views=(1,),
        nuts=(100, 250),
        importance=(3, 800),
    ),
    "full": dict(
        size=256,
        n_head=20,
        n_other=8,
        n_fail=3,
        headline="laplace",
        methods=("svi", "nuts", "importance"),
        n_train=20,
        nuts=(200, 500),
    ),
}


def held_out(i: int, n_views: int, size: int, jitter: float, rng, rot_sd: float = 0.02) -> Case:
    truth = move(bs.datasets.example_shapes(1, seed=1000 + i)[0], rng, rot_sd=rot_sd)
    views = make_views(n_views, size)
    return Case(f"heldout{i}", "held_out", truth, views, views, jitter=jitter)


def failure(kind: str, i: int, size: int, rng, rot_sd: float = 0.02) -> Case:
    base = move(bs.datasets.example_shapes(1, seed=5000 + i)[0], rng, rot_sd=rot_sd)
    views = make_views(2, size)
    case = Case(f"{kind}{i}", kind, base, views, views)
    if kind in ("scaled", "mirrored", "fracture", "deformity"):
        case.truth = deform(base, kind)
    elif kind == "miscalibrated":
        case.model_views = [views[0], miscalibrate(views[1])]
    elif kind == "heavy_noise":
        case.jitter = 3.0
    elif kind == "occluded":
        case.occlude = 0.3
    return case


def run(args) -> dict:
    cfg = dict(SETTINGS[args.setting])
    if args.n_headline is not None:
        cfg["n_head"] = args.n_headline
    if args.methods:
        cfg["methods"] = tuple(args.methods)
    head_method = args.headline_method or cfg["headline"]
    fail_method = args.headline_method or cfg.get("failure", head_method)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    train = bs.datasets.example_shapes(cfg["n_train"], seed=0)
    model = bs.build_pca_model(train, align="rigid", variance=args.prior_variance, model_error=args.model_error)
    resid = bs.loo_residual_covariance(train, align="rigid")
    rng = np.random.default_rng(args.seed)
    rows = []

    def record(case, group, **kw):
        t0 = time.perf_counter()
        if kw.get("method") == "nuts":
            kw["num_warmup"], kw["num_samples"] = cfg["nuts"]
        if kw.get("method") == "importance":
            kw["is_rounds"], kw["is_samples"] = cfg.get("importance", (4, 1000))
        r = reconstruct(model, case, seed=args.seed + len(rows), residual_cov=resid, drr_pixel=args.drr_pixel, **kw)
        r["group"] = group
        r["floor"] = floor(model, case.truth) if case.kind == "held_out" else None
        rows.append(r)
        write_json(out / "cases.json", rows)  # as it goes: a stopped run keeps its cases
        print(
            f"[{time.perf_counter() - t_start:6.0f} s] {group:<22} {case.name:<14} {r['method']:<7} "
            f"surface {r['surface_mean']:.2f} mm, cov95 {r['coverage']['0.95']:.2f}, score {r['score']:.2f} "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )

    size = cfg["size"]
    rs = args.case_rotation_sd
    groups = set(args.groups or ("headline", "other", "failure"))
    # 1. headline: biplanar contours, jitter 0.5 px
    for i in range(cfg["n_head"] if "headline" in groups else 0):
        record(held_out(i, 2, size, 0.5, rng, rs), "headline", method=head_method, kind=args.headline_obs)
    # other settings (fewer cases): views, noise, DRR, methods
    for i in range(cfg["n_other"] if "other" in groups else 0):
        k = 100 + i
        for nv in cfg.get("other_views", (1, 4)):
            record(held_out(k, nv, size, 0.5, rng, rs), f"{nv} view{'s' if nv > 1 else ''}", method="laplace")
        record(held_out(k, 2, size, 1.5, rng, rs), "2 views, jitter 1.5 px", method="laplace")
        record(held_out(k, 2, size, 0.5, rng, rs), "2 views, DRR", method="laplace", kind="drr")
        for m in cfg["methods"]:
            if m != head_method:
                record(held_out(k, 2, size, 0.5, rng, rs), f"2 views, {m}", method=m)
    # 2. failure cases
    for i in range(cfg["n_fail"] if "failure" in groups else 0):
        for kind in args.failures or cfg.get("failures", FAILURES):
            record(failure(kind, i, size, rng, rs), f"failure: {kind}", method=fail_method)
    summary = summarise(rows, (head_method, fail_method), args, cfg, time.perf_counter() - t_start)
    write_outputs(out, rows, summary)
    return summary


def summarise(rows, flag_methods, args, cfg, wall) -> dict:
    """``flag_methods``: (headline method, failure method); the case-level AUROC and Spearman pool
    every case of either method."""
    head_method = flag_methods[0]
    head = [r for r in rows if r["group"] == "headline"]
    groups = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    table = {}
    for g, rs in groups.items():
        cov, cov_se = mean_coverage(rs)
        cov_me, _ = mean_coverage(rs, "with_model_error")
        cov_n, _ = mean_coverage(rs, "coverage_normal")
        floors = [r["floor"] for r in rs if r["floor"] is not None]
        table[g] = {
            "n": len(rs),
            "coverage": cov,
            "coverage_se": cov_se,
            "ece": ece(cov),
            "coverage_with_model_error": cov_me,
            "coverage_normal": cov_n,
            "ece_normal": ece(cov_n),
            "coverage_per_case_95": [r["coverage"]["0.95"] for r in rs],
            "surface_mean": float(np.mean([r["surface_mean"] for r in rs])),
            "surface_p95": float(np.mean([r["surface_p95"] for r in rs])),
            "dice": float(np.mean([r["dice"] for r in rs])),
            "floor": float(np.mean(floors)) if floors else None,
            "spearman_vertex": float(np.mean([r["spearman_vertex"] for r in rs])),
            "mean_r95": float(np.mean([r["mean_r95"] for r in rs])),
            "wall_s": float(np.mean([r["wall_s"] for r in rs])),
            "flagged": int(sum(r["flagged"] for r in rs)),
        }
    same = [r for r in rows if r["method"] in flag_methods]
    err = np.array([r["surface_mean"] for r in same])
    score = np.array([r["score"] for r in same])
    label = err > 2.0
    case_auroc = auroc(score, label)
    sp_case = spearmanr([r["mean_r95"] for r in same], err).statistic if len(same) > 2 else float("nan")
    vertex_aurocs = [r["vertex_auroc"] for r in rows if r["vertex_auroc"] is not None]
    head_cov = table["headline"]["coverage"] if head else {}
    return {
        "setting": args.setting,
        "headline": f"biplanar {HEADLINE_OBS[args.headline_obs].format(pixel=args.drr_pixel)}, "
        f"{head_method}, {cfg['size']} px detector, held-out example shapes",
        "coverage": head_cov,
        "coverage_se": table["headline"]["coverage_se"] if head else {},
        "ece": ece(head_cov) if head else None,
        "auroc": case_auroc,
        "spearman": float(sp_case),
        "spearman_vertex": table["headline"]["spearman_vertex"] if head else None,
        "coverage_with_model_error": table["headline"]["coverage_with_model_error"] if head else {},
        "coverage_normal": table["headline"]["coverage_normal"] if head else {},
        "vertex_auroc_mean": float(np.mean(vertex_aurocs)) if vertex_aurocs else None,
        "auroc_cases": {"n": len(same), "n_above_2mm": int(label.sum()), "methods": sorted(set(flag_methods))},
        "groups": table,
        "wall_time_s": wall,
        "prior_variance": args.prior_variance,
        "case_rotation_sd": args.case_rotation_sd,
        "drr_pixel": args.drr_pixel,
        "machine": f"{jax.default_backend()} ({jax.device_count()} device), seed {args.seed}",
    }


def write_outputs(out: Path, rows, summary) -> None:
    from bayesshape.report import calibration_png
    from bayesshape.report.pictures import _plt, save_figure

    write_json(out / "cases.json", rows)
    write_json(out / "summary.json", summary)
    keys = [
        "group",
        "name",
        "kind",
        "method",
        "obs",
        "views",
        "jitter",
        "surface_mean",
        "surface_p95",
        "dice",
        "vertex_error_mean",
        "mean_r95",
        "spearman_vertex",
        "score",
        "misfit",
        "flagged",
        "wall_s",
        "floor",
    ]
    tmp = out / ".cases.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(keys + [f"cov{lv}" for lv in LEVELS])
        for r in rows:
            w.writerow([r[k] for k in keys] + [r["coverage"][str(lv)] for lv in LEVELS])
    tmp.replace(out / "cases.csv")
    g = summary["groups"]
    held = {k: v for k, v in g.items() if not k.startswith("failure")}
    calibration_png(
        LEVELS,
        {k: [v["coverage"][str(lv)] for lv in LEVELS] for k, v in held.items()},
        out / "calibration.png",
        counts={k: v["n"] for k, v in held.items()},
    )
    calibration_png(
        LEVELS,
        {k: [v["coverage_normal"][str(lv)] for lv in LEVELS] for k, v in held.items()},
        out / "calibration_normal.png",
        counts={k: v["n"] for k, v in held.items()},
        title="Coverage along the surface normal (mean vertex to true surface)",
    )
    calibration_png(
        LEVELS,
        {k + " + model error": [v["coverage_with_model_error"][str(lv)] for lv in LEVELS] for k, v in held.items()},
        out / "calibration_model_error.png",
        counts={k + " + model error": v["n"] for k, v in held.items()},
        title="Coverage with the leave-one-out model error added",
    )
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for kind in sorted({r["kind"] for r in rows}):
        rs = [r for r in rows if r["kind"] == kind]
        ax.scatter([r["mean_r95"] for r in rs], [r["surface_mean"] for r in rs], label=kind, s=18)
    ax.axhline(2.0, color="k", lw=0.6, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("mean 95% credible radius (mm)")
    ax.set_ylabel("mean surface error (mm)")
    ax.legend(fontsize=6)
    save_figure(fig, out / "uncertainty_vs_error.png")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="the quick setting (minutes on 2 cores)")
    ap.add_argument("--smoke", action="store_true", help="one tiny case (for the test suite)")
    ap.add_argument(
        "--headline-method",
        choices=["laplace", "importance", "svi", "nuts"],
        help="method of the headline and failure cases (default: the setting's; quick: importance "
        "for the headline, laplace for the failures)",
    )
    ap.add_argument(
        "--groups",
        nargs="+",
        choices=["headline", "other", "failure"],
        help="run only these groups of cases (default all); the headline cases are the same whatever "
        "else runs, so e.g. `--groups headline --headline-method nuts` measures NUTS on them alone",
    )
    ap.add_argument(
        "--methods",
        nargs="+",
        choices=["laplace", "importance", "svi", "nuts"],
        help="the methods compared in the 'other' group (default: the setting's; the full setting's "
        "are laplace svi nuts), e.g. `--groups other --methods laplace svi` leaves NUTS out",
    )
    ap.add_argument(
        "--failures",
        nargs="+",
        choices=FAILURES,
        help="run only these failure kinds (default all), e.g. `--groups failure --failures occluded`",
    )
    ap.add_argument(
        "--headline-obs",
        choices=sorted(HEADLINE_OBS),
        default="contour",
        help="the headline cases' observations: the masks' contour points, jittered 0.5 px (Contour, "
        "default), the noise-free masks pixel by pixel (Silhouette, sigma 0.5 px), or the DRRs "
        "(1%% noise)",
    )
    ap.add_argument(
        "--drr-pixel",
        choices=["centre", "area"],
        default="centre",
        help="DRRs (every DRR case) simulated and modelled at pixel centres (default), or averaged over "
        "each pixel's area (smooth in the shape: what NUTS needs)",
    )
    ap.add_argument(
        "--case-rotation-sd",
        type=float,
        default=0.02,
        help="sd (rad) of the cases' random rotation; infer's pose prior has 0.1 (match it with 0.1)",
    )
    ap.add_argument(
        "--n-headline",
        type=int,
        help="number of headline cases (default: the setting's; smoke 1, quick 10, full 20). The cases "
        "are drawn in order, so the first n are the same for any larger n; the other groups' poses "
        "follow the headline's draws, so they change with n)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--model-error",
        action="store_true",
        help="the model's leave-one-out residual in the prior (build_pca_model(..., model_error=True))",
    )
    ap.add_argument(
        "--prior-variance",
        choices=["sample", "loo"],
        default="loo",
        help="the PCA prior's mode variances: calibrated by leave-one-out (default), or the sample's",
    )
    args = ap.parse_args(argv)
    args.setting = "smoke" if args.smoke else "quick" if args.quick else "full"
    if args.n_headline is not None and args.n_headline < 1:
        ap.error(f"--n-headline: expected a positive number of cases, got {args.n_headline}")
    if not args.case_rotation_sd > 0:
        ap.error(f"--case-rotation-sd: expected a positive sd in rad, got {args.case_rotation_sd}")
    s = run(args)
    print(
        json.dumps(
            {k: s[k] for k in ("headline", "coverage", "coverage_se", "auroc", "spearman", "wall_time_s")}, indent=1
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
