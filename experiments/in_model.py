"""In-model coverage: are the credible regions calibrated when the model is right?

Shapes drawn from the prior itself (the PCA model of the example family), each moved by a
small random rigid motion, observed in simulated biplanar X-rays (contours or DRRs), and
reconstructed with the pose unknown. When the truth is a draw from the prior and the data
come from the likelihood's own noise model, a correct posterior covers the truth at the
nominal rate (averaged over draws); departures measure the approximation (Laplace, SVI,
NUTS with finite chains) and the misspecification of the image likelihood itself (pixel
quantisation, correlated contour residuals), not model error.

    python experiments/in_model.py --method laplace --n 20 --out out/in_model
    python experiments/in_model.py --method nuts --n 6 --size 96 --out out/in_model_nuts

Writes ``cases.json`` and ``summary.json`` (coverage at 50/80/90/95%, per case and mean,
with a binomial-over-cases standard error) to ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np
import trimesh

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bayesshape as bs  # noqa: E402
from _cases import LEVELS, Case, ece, make_views, move, reconstruct  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--method", default="laplace", choices=["laplace", "importance", "svi", "nuts"])
    ap.add_argument("--obs", default="contour", choices=["contour", "drr"])
    ap.add_argument("--n", type=int, default=20, help="number of shapes drawn from the model")
    ap.add_argument("--size", type=int, default=128, help="detector pixels")
    ap.add_argument("--jitter", type=float, default=0.5, help="contour noise, px")
    ap.add_argument("--samples", type=int, default=300, help="posterior draws (NUTS: per chain, also warm-up)")
    ap.add_argument("--likelihood-faces", type=int, default=None, help="coarse likelihood mesh (infer's option)")
    ap.add_argument("--no-contour-weights", action="store_true", help="the nominal contour likelihood "
                    "(no composite-likelihood weights)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = bs.build_pca_model(bs.datasets.example_shapes(20, seed=0), align="rigid")
    rng = np.random.default_rng(args.seed)
    key = jax.random.key(args.seed)
    draws = np.asarray(model.sample(key, args.n))
    rows = []
    t0 = time.perf_counter()
    for i in range(args.n):
        truth = move(trimesh.Trimesh(draws[i], np.asarray(model.faces), process=False), rng)
        views = make_views(2, args.size)
        case = Case(f"draw{i}", "in_model", truth, views, views, jitter=args.jitter)
        r = reconstruct(model, case, method=args.method, seed=args.seed + i, kind=args.obs,
                        num_samples=args.samples, num_warmup=args.samples, likelihood_faces=args.likelihood_faces,
                        contour_weights=not args.no_contour_weights)
        rows.append(r)
        print(f"[{time.perf_counter() - t0:5.0f} s] {case.name}: vertex error {r['vertex_error_mean']:.2f} mm, "
              f"coverage " + "/".join(f"{r['coverage'][str(lv)]:.2f}" for lv in LEVELS)
              + f", misfit {r['misfit']:.2f}, weights {r['diagnostics'].get('contour_weights')}, "
              f"{r['wall_s']:.0f} s", flush=True)
    cov = {str(lv): float(np.mean([r["coverage"][str(lv)] for r in rows])) for lv in LEVELS}
    se = {str(lv): float(np.std([r["coverage"][str(lv)] for r in rows], ddof=1) / np.sqrt(len(rows)))
          for lv in LEVELS} if len(rows) > 1 else {}
    cov_n = {str(lv): float(np.mean([r["coverage_normal"][str(lv)] for r in rows])) for lv in LEVELS}
    summary = {"method": args.method, "contour_weights": not args.no_contour_weights, "obs": args.obs,
               "n": len(rows), "size": args.size, "jitter": args.jitter,
               "coverage": cov, "coverage_se": se, "ece": ece(cov), "coverage_normal": cov_n,
               "vertex_error_mean": float(np.mean([r["vertex_error_mean"] for r in rows])),
               "surface_mean": float(np.mean([r["surface_mean"] for r in rows])),
               "misfit_mean": float(np.mean([r["misfit"] for r in rows])),
               "wall_s_mean": float(np.mean([r["wall_s"] for r in rows])),
               "wall_time_s": time.perf_counter() - t0}
    bs.export.write_json(args.out / "cases.json", rows)
    bs.export.write_json(args.out / "summary.json", summary)
    print("coverage " + " / ".join(f"{cov[str(lv)]:.3f} +- {se.get(str(lv), float('nan')):.3f}" for lv in LEVELS)
          + f" at {'/'.join(str(lv) for lv in LEVELS)}; along the normal "
          + " / ".join(f"{cov_n[str(lv)]:.2f}" for lv in LEVELS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
