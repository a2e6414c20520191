"""Leave-one-out reconstruction of the femur10 femurs from a biplanar X-ray.

For each femur: a PCA model from the other nine (rigid Procrustes), a simulated biplanar
(AP + lateral, cone beam, SID 1000 mm, SDD 1300 mm) X-ray of the left-out femur, observed
as contours and, separately, as DRRs; the rigid pose is inferred (its initial guess found
automatically). Reported per case: mean and 95th-percentile surface distance of the
posterior mean to the truth, the generalization floor (best fit of the same model to the
full 3D truth, rigid pose and shape), their ratio, the coverage of the credible balls
(without and with the leave-one-out model error of the nine-femur model), and the wall
time.

    python experiments/femur_loo.py --methods laplace --out out/femur_loo
    python experiments/femur_loo.py --methods laplace svi nuts --cases 0 1 --out out/femur_loo

Reads ``../shared/data/femur10``; exits with a message when it is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import trimesh

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bayesshape as bs  # noqa: E402
from _cases import Case, coverage, floor, metrics, observations  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--methods", nargs="+", default=["laplace"], choices=["laplace", "svi", "nuts"])
    ap.add_argument("--obs", nargs="+", default=["contour", "drr"], choices=["contour", "drr"])
    ap.add_argument("--cases", nargs="+", type=int, help="left-out femur indices (default all)")
    ap.add_argument("--size", type=int, default=256, help="detector pixels")
    ap.add_argument("--samples", type=int, default=300, help="NUTS warm-up and draws per chain; SVI/Laplace draws")
    ap.add_argument("--svi-steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    folder = DATA / "femur10"
    if not folder.exists():
        print(f"femur_loo: {folder} not found; nothing to do", file=sys.stderr)
        return 0
    files = sorted(folder.glob("*.ply"))
    femurs = [trimesh.load(f, process=False) for f in files]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in args.cases if args.cases is not None else range(len(femurs)):
        train = [m for j, m in enumerate(femurs) if j != i]
        model = bs.build_pca_model(train, align="rigid")
        resid = bs.loo_residual_covariance(train, align="rigid")
        truth = femurs[i]
        iso = truth.vertices.mean(0)
        views = list(bs.biplanar(iso, field_of_view=520, detector_shape=(args.size, args.size), projection="cone"))
        fl = floor(model, truth)
        for kind in args.obs:
            case = Case(files[i].stem, "held_out", truth, views, views, jitter=0.5)
            obs, _ = observations(case, args.seed + i, kind)
            for method in args.methods:
                t0 = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", UserWarning)
                    post = bs.infer(model, obs, method=method, pose="rigid", seed=args.seed, num_samples=args.samples,
                                    num_warmup=args.samples, num_chains=2, svi_steps=args.svi_steps, progress=False)
                wall = time.perf_counter() - t0
                m = metrics(post, truth)
                r = {"case": files[i].stem, "obs": kind, "method": method, "floor": fl,
                     "ratio": m["surface_mean"] / fl, "wall_s": wall,
                     "coverage_with_model_error": coverage(post.with_model_error(resid, seed=i), truth),
                     "diagnostics": {k: v for k, v in post.diagnostics.items()
                                     if k in ("max_rhat", "min_ess_bulk", "divergences", "converged")},
                     "warnings": [str(w.message)[:120] for w in caught], **m}
                rows.append(r)
                print(f"{r['case']} {kind:<7} {method:<7} surface {m['surface_mean']:.2f} mm (p95 "
                      f"{m['surface_p95']:.2f}), floor {fl:.2f} mm, ratio {r['ratio']:.2f}, cov95 "
                      f"{m['coverage']['0.95']:.2f} / {r['coverage_with_model_error']['0.95']:.2f} with model error, "
                      f"{wall:.0f} s", flush=True)
                bs.export.write_json(args.out / "femur_loo.json", rows)
    table = ["| femur | obs | method | surface mean (mm) | p95 (mm) | floor (mm) | ratio | cov95 | cov95 + model error "
             "| wall (s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['case']} | {r['obs']} | {r['method']} | {r['surface_mean']:.2f} | {r['surface_p95']:.2f} "
                     f"| {r['floor']:.2f} | {r['ratio']:.2f} | {r['coverage']['0.95']:.2f} "
                     f"| {r['coverage_with_model_error']['0.95']:.2f} | {r['wall_s']:.0f} |")
    (args.out / "femur_loo.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
