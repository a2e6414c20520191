"""The ``bayesshape`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main"]

DEMO_HELP = """\
Build a model from the built-in example shapes, simulate a biplanar X-ray of an
unseen shape, infer its posterior (Laplace by default, rigid pose), and write the posterior mean
and a confidence mesh. Prints the surface error, diagnostics and reliability.

example:
  bayesshape demo --out demo
  bayesshape demo --out demo --method laplace --views 4
"""


def _demo(args) -> int:
    import jax.numpy as jnp
    import numpy as np
    import trimesh
    from scipy.spatial.transform import Rotation

    import bayesshape as bs
    from bayesshape._geometry import surface_distances
    from bayesshape.export import export_confidence_mesh, write_json

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"[1/4] building a PCA model from {args.train} example shapes")
    model = bs.build_pca_model(bs.datasets.example_shapes(args.train, seed=0), align="rigid")
    print(f"      {model.n_vertices} vertices, {model.n_modes} modes, "
          f"{100 * float(model.explained_variance_ratio[:5].sum()):.1f}% of the variance in the first 5")
    truth = bs.datasets.example_shapes(1, seed=args.seed + 1000)[0]
    c = truth.vertices.mean(0)
    rot = Rotation.from_rotvec([0.02, -0.03, 0.04]).as_matrix()
    tv = (truth.vertices - c) @ rot.T + c + np.array([4.0, -3.0, 5.0])
    truth = trimesh.Trimesh(tv, truth.faces, process=False)
    if args.views == 2:
        views = list(bs.biplanar(field_of_view=480, detector_shape=(args.size, args.size)))
    else:
        views = [bs.carm_view(lao=a, detector_shape=(args.size, args.size), pixel_spacing=480 * 1.5 / args.size,
                              source_to_isocenter=800, source_to_detector=1200) for a in
                 np.linspace(0, 180, args.views, endpoint=False)]
    print(f"[2/4] simulating {len(views)} X-ray views ({args.size} x {args.size}) of an unseen shape")
    sim = bs.simulate_xray(truth, views, seed=args.seed, noise=0.01, contour_jitter=args.jitter)
    obs = sim.observations("contour", sigma=max(args.jitter, 0.5))
    print(f"[3/4] inferring the posterior with {args.method} (rigid pose)")
    post = bs.infer(model, obs, method=args.method, pose="rigid", seed=args.seed, num_samples=args.samples,
                    num_warmup=args.samples, num_chains=args.chains, progress=not args.quiet)
    mean = post.mean_mesh()
    d = surface_distances(jnp.asarray(mean.vertices), jnp.asarray(mean.faces), jnp.asarray(truth.vertices),
                          jnp.asarray(truth.faces))
    vertex_err = np.linalg.norm(mean.vertices - truth.vertices, axis=1)
    rel = post.reliability(tolerance_mm=args.tolerance)
    print("[4/4] writing outputs")
    bs.io.write_mesh(out / "posterior_mean.ply", mean)
    export_confidence_mesh(post, out / "confidence.ply", truth=truth, tolerance_mm=args.tolerance)
    export_confidence_mesh(post, out / "confidence.vtk", truth=truth, tolerance_mm=args.tolerance)
    bs.io.write_mesh(out / "truth.ply", truth)
    r95 = rel.credible_radius
    summary = {
        "surface_error_mm": {"mean": float(d.mean()), "p95": float(np.quantile(d, 0.95)), "max": float(d.max())},
        "vertex_error_mm": {"mean": float(vertex_err.mean())},
        "coverage_of_95pct_credible_balls": float(np.mean(vertex_err <= r95)),
        "posterior": post.summary(),
        "reliability": rel.summary(),
        "wall_time_s": time.perf_counter() - t0,
    }
    write_json(out / "summary.json", summary)
    diag = post.diagnostics
    print(f"\nsurface error of the posterior mean: mean {d.mean():.2f} mm, 95th percentile "
          f"{np.quantile(d, 0.95):.2f} mm")
    print(f"95% credible radius: median {np.median(r95):.2f} mm; the truth lies inside it at "
          f"{100 * summary['coverage_of_95pct_credible_balls']:.1f}% of the vertices")
    if args.method == "nuts":
        print(f"diagnostics: max R-hat {diag.get('max_rhat', float('nan')):.3f}, min bulk ESS "
              f"{diag.get('min_ess_bulk', float('nan')):.0f}, divergences {diag.get('divergences')}")
    elif args.method == "svi":
        print(f"diagnostics: SVI converged: {diag.get('converged')}, final loss {diag.get('final_loss'):.1f}")
    r = rel.summary()
    print(f"reliability: {'RELIABLE' if r['reliable'] else 'UNRELIABLE'} (score {r['score']:.2f}; "
          f"{100 * r['fraction_vertices_flagged']:.1f}% of vertices above {args.tolerance} mm; misfit "
          + ", ".join(f"{m['mean_sq_std_residual']:.2f}" for m in r["misfit"]) + ")")
    print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}  ({summary['wall_time_s']:.0f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bayesshape", description="Probabilistic 3D shape reconstruction from X-rays.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="the main job on built-in example data", description=DEMO_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--out", required=True, help="output folder (created)")
    d.add_argument("--method", choices=["nuts", "svi", "laplace"], default="laplace")
    d.add_argument("--views", type=int, default=2, help="2 (biplanar) or more C-arm views")
    d.add_argument("--size", type=int, default=256, help="detector size in pixels")
    d.add_argument("--train", type=int, default=20, help="training shapes for the model")
    d.add_argument("--samples", type=int, default=300, help="NUTS warm-up and samples per chain")
    d.add_argument("--chains", type=int, default=2)
    d.add_argument("--jitter", type=float, default=0.5, help="contour noise, pixels")
    d.add_argument("--tolerance", type=float, default=2.0, help="clinical tolerance, mm")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=_demo)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        if args.debug:
            raise
        print(f"bayesshape {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
