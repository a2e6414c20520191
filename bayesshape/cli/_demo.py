"""``bayesshape demo``: the main job on built-in example data."""

from __future__ import annotations

import time

DEMO_HELP = """\
Build a model from the built-in example shapes, simulate a biplanar X-ray of an
unseen shape, infer its posterior (Laplace by default, rigid pose), and write a case folder:
the posterior mean and samples, confidence meshes (.ply .vtk .vtp), summary.json, pictures
and report.html. Prints the surface error, diagnostics and reliability.

example:
  bayesshape demo --out demo
  bayesshape demo --out demo --method laplace --views 4
  bayesshape demo --cohort 20 --workers 2 --out cohort_demo   # a cohort through `bayesshape batch`
"""


def demo(args) -> int:
    import jax.numpy as jnp
    import numpy as np
    import trimesh
    from scipy.spatial.transform import Rotation

    import bayesshape as bs
    from bayesshape._checks import as_seed
    from bayesshape._geometry import surface_distances
    from bayesshape.report import make_report, write_case

    from ._commands import diagnostics_line, method_from_args
    from ._files import check_output_folder

    out = check_output_folder(args.out)
    as_seed(args.seed)
    if args.cohort is not None:
        return _cohort_demo(args)
    t0 = time.perf_counter()
    print(f"[1/4] building a PCA model from {args.train} example shapes (mode variances calibrated by leave-one-out)")
    model = bs.build_pca_model(bs.datasets.example_shapes(args.train, seed=0), align="rigid", variance="loo")
    print(
        f"      {model.n_vertices} vertices, {model.n_modes} modes, "
        f"{100 * float(model.explained_variance_ratio[:5].sum()):.1f}% of the variance in the first 5"
    )
    truth = bs.datasets.example_shapes(1, seed=args.seed + 1000)[0]
    c = truth.vertices.mean(0)
    rot = Rotation.from_rotvec([0.02, -0.03, 0.04]).as_matrix()
    tv = (truth.vertices - c) @ rot.T + c + np.array([4.0, -3.0, 5.0])
    truth = trimesh.Trimesh(tv, truth.faces, process=False)
    if args.views == 2:
        views = list(bs.biplanar(field_of_view=480, detector_shape=(args.size, args.size)))
    else:
        views = [
            bs.carm_view(
                lao=a,
                detector_shape=(args.size, args.size),
                pixel_spacing=480 * 1.5 / args.size,
                source_to_isocenter=800,
                source_to_detector=1200,
            )
            for a in np.linspace(0, 180, args.views, endpoint=False)
        ]
    print(f"[2/4] simulating {len(views)} X-ray views ({args.size} x {args.size}) of an unseen shape")
    sim = bs.simulate_xray(truth, views, seed=args.seed, noise=0.01, contour_jitter=args.jitter)
    obs = sim.observations("contour", sigma=max(args.jitter, 0.5))
    print(f"[3/4] inferring the posterior with {args.method} (rigid pose)")
    post = bs.infer(
        model,
        obs,
        method=method_from_args(args),
        pose="rigid",
        num_samples=args.samples,
        seed=args.seed,
        progress=not args.quiet,
    )
    mean = post.mean_mesh()
    d = surface_distances(
        jnp.asarray(mean.vertices), jnp.asarray(mean.faces), jnp.asarray(truth.vertices), jnp.asarray(truth.faces)
    )
    rel = post.reliability(tolerance_mm=args.tolerance)
    print("[4/4] writing the case folder, pictures and report")
    r95 = rel.credible_radius
    extra = {
        "surface_error_mm": {"mean": float(d.mean()), "p95": float(np.quantile(d, 0.95)), "max": float(d.max())},
        "wall_time_s": time.perf_counter() - t0,
    }
    names = ["AP", "LAT"] if len(views) == 2 else [f"C{i}" for i in range(len(views))]
    length = lambda v: v[:, 2].max() - v[:, 2].min()  # noqa: E731
    summary = write_case(
        out,
        post,
        views,
        names,
        sim.masks,
        ["mask"] * len(views),
        points=sim.contours,
        truth=truth,
        tolerance_mm=args.tolerance,
        n_samples=10,
        inputs={
            "model": f"PCA of {args.train} example shapes (seed 0)",
            "truth": f"example shape, seed {args.seed + 1000}, moved",
            "views": names,
            "observations": f"contours, jitter {args.jitter} px",
        },
        settings={"method": args.method, "pose": "rigid", "seed": args.seed, "detector": [args.size, args.size]},
        measurements={"length_mm": length},
        extra=extra,
    )
    make_report(out, title="bayesshape demo: biplanar reconstruction of an unseen example shape")
    print(
        f"\nsurface error of the posterior mean: mean {d.mean():.2f} mm, 95th percentile {np.quantile(d, 0.95):.2f} mm"
    )
    print(
        f"95% credible radius: median {np.median(r95):.2f} mm; the truth lies inside it at "
        f"{100 * summary['error_mm']['coverage_95']:.1f}% of the vertices"
    )
    line = diagnostics_line(post.diagnostics.to_dict())
    if line:
        print(line)
    print(f"reliability: {rel.verdict()}")
    print(
        f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}  "
        f"({time.perf_counter() - t0:.0f} s; open {out / 'report.html'})"
    )
    return 0


def _cohort_demo(args) -> int:
    """``demo --cohort N``: an example cohort (model, masks, true meshes, manifest) in OUT/inputs,
    reconstructed by ``bayesshape batch`` into OUT/cohort."""
    from pathlib import Path

    from . import _batch, build_parser
    from ._cohort_example import write_example_cohort

    if args.cohort < 1:
        raise ValueError(f"--cohort: expected a positive number of cases, got {args.cohort}")
    out = Path(args.out)
    size = f"{args.size} x {args.size}"
    print(f"writing an example cohort of {args.cohort} cases ({size} biplanar masks) to {out / 'inputs'}")
    manifest = write_example_cohort(out / "inputs", args.cohort, size=args.size, train=args.train, seed=args.seed)
    argv = ["batch", str(manifest), "--model", str(out / "inputs" / "model.npz"), "--out", str(out / "cohort")]
    argv += ["--method", args.method, "--samples", str(args.samples), "--chains", str(args.chains)]
    argv += ["--tolerance", str(args.tolerance), "--seed", str(args.seed)] + (["--quiet"] if args.quiet else [])
    argv += ["--workers", str(args.workers)] if args.workers else []
    print("bayesshape " + " ".join(argv))
    return _batch.batch(build_parser().parse_args(argv))
