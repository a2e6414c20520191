r"""Leave-one-out reconstruction of the femur10 femurs from a biplanar X-ray.

For each femur: a PCA model from the other nine (rigid Procrustes), a simulated biplanar
(AP + lateral, cone beam, SID 1000 mm, SDD 1300 mm) X-ray of the left-out femur, observed
as contours (or the masks pixel by pixel, ``--obs silhouette``) and, separately, as DRRs; the
rigid pose is inferred (its initial guess found automatically). Reported per case: mean and
95th-percentile surface distance of the posterior mean to the truth, the generalization floor
(best fit of the same model to the full 3D truth, rigid pose and shape), their ratio, the
coverage of the credible balls (without and with the leave-one-out model error of the
nine-femur model), and the wall time.

    python experiments/femur_loo.py --methods laplace svi nuts --out out/femur_loo
    python experiments/femur_loo.py --methods nuts --obs contour --warmup 100 --samples 250 --out out/femur_loo
    python experiments/femur_loo.py --methods nuts --obs contour --cases 3 --chains 4 --warmup 400 --samples 1000 \
        --nuts-mass adapt --out out/femur_loo   # the mass matrix adapted from the Laplace one

Contour likelihoods are evaluated on a 4000-face decimation of the model's mesh
(``infer(likelihood=bs.LikelihoodOptions(coarse_faces=4000))``, 6.6x faster per gradient than the 23294-face mesh; the
posterior and all errors stay on the full mesh); DRRs on the full mesh at ``--drr-size``
pixels (or a decimation, ``--drr-likelihood-faces``), sampled at pixel centres or, with
``--drr-pixel area``, averaged over each pixel (what NUTS needs: docs/likelihoods.md).
Rows already in ``--out/femur_loo.json`` are kept and not recomputed, so a long run can be
split and resumed.

Reads ``../shared/data/femur10``; exits with a message when it is absent.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import trimesh

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cases import Case, coverage, floor, method_config, metrics, observations  # noqa: E402

import bayesshape as bs  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--methods", nargs="+", default=["laplace"], choices=["laplace", "importance", "svi", "nuts"])
    ap.add_argument(
        "--obs",
        nargs="+",
        default=["contour", "drr"],
        choices=["contour", "silhouette", "drr"],
        help="contour: the masks' outline points (Contour); silhouette: the masks pixel by pixel "
        "(Silhouette, sigma 0.5 px); drr: the images",
    )
    ap.add_argument("--cases", nargs="+", type=int, help="left-out femur indices (default all)")
    ap.add_argument("--size", type=int, default=256, help="detector pixels (contours and silhouettes)")
    ap.add_argument("--drr-size", type=int, default=128, help="detector pixels (DRRs)")
    ap.add_argument(
        "--drr-likelihood-faces", type=int, default=0, help="coarse mesh for the DRR likelihood (0: the full mesh)"
    )
    ap.add_argument(
        "--drr-pixel",
        choices=["centre", "area"],
        default="centre",
        help="DRRs simulated and modelled at pixel centres, or averaged over each pixel's area (a "
        "likelihood smooth in the shape, which NUTS needs)",
    )
    ap.add_argument(
        "--likelihood-faces", type=int, default=4000, help="coarse mesh for the contour likelihood (0: the full mesh)"
    )
    ap.add_argument("--samples", type=int, default=300, help="NUTS draws per chain; SVI/Laplace draws")
    ap.add_argument(
        "--warmup",
        type=int,
        default=150,
        help="NUTS warm-up steps per chain (with the default --nuts-mass laplace the warm-up tunes the step size only)",
    )
    ap.add_argument(
        "--nuts-mass",
        choices=["laplace", "adapt"],
        default="laplace",
        help="NUTS inverse mass matrix: fixed at the Laplace covariance, or adapted from it in the warm-up "
        "(rows are kept by femur, observation and method, so give a run with another mass its own --out)",
    )
    ap.add_argument("--chains", type=int, default=2, help="NUTS chains (run one after the other on a CPU)")
    ap.add_argument("--svi-steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--prior-variance",
        choices=["sample", "loo"],
        default="sample",
        help="the PCA prior's mode variances: the sample's, or calibrated by leave-one-out",
    )
    args = ap.parse_args(argv)
    folder = DATA / "femur10"
    if not folder.exists():
        print(f"femur_loo: {folder} not found; nothing to do", file=sys.stderr)
        return 0
    files = sorted(folder.glob("*.ply"))
    femurs = [trimesh.load(f, process=False) for f in files]
    args.out.mkdir(parents=True, exist_ok=True)
    done = args.out / "femur_loo.json"
    rows = json.loads(done.read_text()) if done.exists() else []
    have = {(r["case"], r["obs"], r["method"]) for r in rows}
    for i in args.cases if args.cases is not None else range(len(femurs)):
        if all((files[i].stem, kind, m) in have for kind in args.obs for m in args.methods):
            continue
        train = [m for j, m in enumerate(femurs) if j != i]
        model = bs.build_pca_model(train, align="rigid", variance=args.prior_variance)
        resid = bs.loo_residual_covariance(train, align="rigid")
        truth = femurs[i]
        iso = truth.vertices.mean(0)
        fl = floor(model, truth)
        for kind in args.obs:
            todo = [m for m in args.methods if (files[i].stem, kind, m) not in have]
            if not todo:
                continue
            size = args.drr_size if kind == "drr" else args.size
            views = list(bs.biplanar(iso, field_of_view=520, detector_shape=(size, size), projection="cone"))
            case = Case(files[i].stem, "held_out", truth, views, views, jitter=0.5)
            obs, _ = observations(case, args.seed + i, kind, drr_pixel=args.drr_pixel)
            lf = args.drr_likelihood_faces if kind == "drr" else args.likelihood_faces
            lf = lf if lf > 0 else None
            for method in todo:
                t0 = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", UserWarning)
                    config = method_config(
                        method,
                        num_warmup=args.warmup,
                        num_chains=args.chains,
                        svi_steps=args.svi_steps,
                        nuts_mass=args.nuts_mass,
                    )
                    post = bs.infer(
                        model,
                        obs,
                        method=config,
                        pose="rigid",
                        likelihood=bs.LikelihoodOptions(coarse_faces=lf),
                        num_samples=args.samples,
                        seed=args.seed,
                        progress=False,
                    )
                wall = time.perf_counter() - t0
                m = metrics(post, truth)
                r = {
                    "case": files[i].stem,
                    "obs": kind,
                    "method": method,
                    "floor": fl,
                    "size": size,
                    "drr_pixel": args.drr_pixel if kind == "drr" else None,
                    "likelihood_faces": lf,
                    "ratio": m["surface_mean"] / fl,
                    "wall_s": wall,
                    "coverage_with_model_error": coverage(post.with_model_error(resid, seed=i), truth),
                    "diagnostics": {
                        k: v
                        for k, v in post.diagnostics.to_dict().items()
                        if k
                        in (
                            "max_rhat",
                            "min_ess_bulk",
                            "min_ess_tail",
                            "divergences",
                            "num_chains",
                            "converged",
                            "laplace_hessian",
                            "mean_num_steps",
                            "nuts_mass",
                            "num_samples",
                            "num_warmup",
                            "map_newton_steps",
                            "map_newton_decrement",
                            "is_ess",
                            "is_khat",
                            "svi_start",
                            "tree_depth_saturated",
                        )
                    },
                    "warnings": [str(w.message)[:120] for w in caught],
                    **m,
                }
                info = post.diagnostics.info
                if isinstance(info, bs.inference.NUTSInfo):  # per parameter: which direction mixes slowly
                    r["diagnostics"]["per_parameter"] = {
                        "names": post.problem.names(),
                        "ess_bulk": list(info.ess_bulk),
                        "rhat": None if info.rhat is None else list(info.rhat),
                    }
                rows.append(r)
                print(
                    f"{r['case']} {kind:<7} {method:<7} surface {m['surface_mean']:.2f} mm (p95 "
                    f"{m['surface_p95']:.2f}), floor {fl:.2f} mm, ratio {r['ratio']:.2f}, cov95 "
                    f"{m['coverage']['0.95']:.2f} / {r['coverage_with_model_error']['0.95']:.2f} with model error, "
                    f"{wall:.0f} s",
                    flush=True,
                )
                bs.export.write_json(args.out / "femur_loo.json", rows)
    table = [
        "| femur | obs | method | surface mean (mm) | p95 (mm) | floor (mm) | ratio | Dice | cov95 "
        "| cov95 + model error | normal cov95 | score | R-hat | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {"contour": 0, "silhouette": 1, "drr": 2, "laplace": 0, "importance": 1, "svi": 2, "nuts": 3}
    rows.sort(key=lambda r: (r["case"], order[r["obs"]], order[r["method"]]))
    for r in rows:
        rhat = r["diagnostics"].get("max_rhat")
        table.append(
            f"| {r['case']} | {r['obs']} | {r['method']} | {r['surface_mean']:.2f} | {r['surface_p95']:.2f} "
            f"| {r['floor']:.2f} | {r['ratio']:.2f} | {r['dice']:.3f} | {r['coverage']['0.95']:.2f} "
            f"| {r['coverage_with_model_error']['0.95']:.2f} | {r['coverage_normal']['0.95']:.2f} "
            f"| {r['score']:.2f} | {'' if rhat is None else f'{rhat:.3f}'} | {r['wall_s']:.0f} |"
        )
    for kind in ("contour", "silhouette", "drr"):
        for method in ("laplace", "importance", "svi", "nuts"):
            rs = [r for r in rows if r["obs"] == kind and r["method"] == method]
            if rs:
                table.append(
                    f"| **mean of {len(rs)}** | {kind} | {method} "
                    f"| {np.mean([r['surface_mean'] for r in rs]):.2f} "
                    f"| {np.mean([r['surface_p95'] for r in rs]):.2f} | {np.mean([r['floor'] for r in rs]):.2f} "
                    f"| {np.mean([r['ratio'] for r in rs]):.2f} | {np.mean([r['dice'] for r in rs]):.3f} "
                    f"| {np.mean([r['coverage']['0.95'] for r in rs]):.2f} "
                    f"| {np.mean([r['coverage_with_model_error']['0.95'] for r in rs]):.2f} "
                    f"| {np.mean([r['coverage_normal']['0.95'] for r in rs]):.2f} | | "
                    f"| {np.mean([r['wall_s'] for r in rs]):.0f} |"
                )
    (args.out / "femur_loo.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
