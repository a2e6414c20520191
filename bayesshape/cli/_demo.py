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
  bayesshape demo --spine --out spine_demo   # four vertebrae and their posture from biplanar DRRs

With --spine: an example lumbar spine (L2 to L5), a GP shape model per vertebra and a Gaussian
posture prior (an assembly), biplanar DRRs of another spine in a posture drawn from the prior,
and the posterior of every vertebra's shape and of the joint angles. The case folder gains one
confidence mesh per vertebra (objects/) and the inputs for `bayesshape infer` (inputs/: the
assembly's model file, the views and label images), with the command that reruns the case.
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
    if args.spine:
        if args.cohort is not None:
            raise ValueError("--spine and --cohort: give one of them")
        return _spine_demo(args)
    args.size = args.size or 256
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


def _spine_demo(args) -> int:
    """``demo --spine``: four vertebrae and their posture from biplanar DRRs."""
    from pathlib import Path

    import jax.numpy as jnp
    import numpy as np
    import trimesh
    from scipy.spatial.transform import Rotation

    import bayesshape as bs
    from bayesshape._geometry import surface_distances
    from bayesshape.inference._assembly import object_transforms
    from bayesshape.posterior import morphometry, posture
    from bayesshape.prior import Assembly, PosturePrior
    from bayesshape.report import make_report, write_case

    from ._commands import diagnostics_line, method_from_args

    if args.method not in ("laplace", "importance"):
        raise ValueError(f"--spine: --method laplace or importance, got {args.method!r}")
    size = args.size or 128
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    print("[1/4] an example lumbar spine (L2 to L5): a GP shape model per vertebra and a posture prior")
    spine = bs.datasets.example_spine()
    # LPS: flexion-extension turns about x (left-right), lateral bending about y, axial rotation about z
    prior = PosturePrior.independent(3, rotation_deg=(3.0, 2.0, 1.0), translation_mm=0.5)
    asm = Assembly.from_meshes(spine, rank=20, posture=prior)
    print(
        f"      {asm.n_objects} vertebrae, {asm.vertex_offsets[-1]} vertices, {asm.mode_offsets[-1]} shape modes; "
        "posture sd per level: flexion-extension 3, lateral bending 2, axial rotation 1 degree, 0.5 mm"
    )
    # the truth: another spine (its sizes vary), in a posture drawn from the prior, moved as a whole
    truth_spine = bs.datasets.example_spine(seed=args.seed + 1000)
    cov = np.asarray(prior.covariance)
    inc = (np.linalg.cholesky(cov) @ rng.standard_normal(cov.shape[0])).reshape(-1, 6)
    rots, trans = (np.asarray(x) for x in object_transforms(jnp.asarray(inc), asm.joints))
    placed = np.concatenate([np.asarray(m.vertices) @ r.T + t for m, r, t in zip(truth_spine.values(), rots, trans)])
    c = placed.mean(0)
    g_rot = Rotation.from_rotvec(rng.normal(0.0, np.radians(2.0), 3)).as_matrix()
    world = (placed - c) @ g_rot.T + c + rng.normal(0.0, 3.0, 3)
    faces = np.asarray(asm.combined_model().faces)
    truth = trimesh.Trimesh(world, faces, process=False)
    views = list(bs.biplanar(isocenter=tuple(c), field_of_view=192.0, detector_shape=(size, size)))
    names = ["AP", "LAT"]
    print(f"[2/4] simulating biplanar DRRs ({size} x {size}) of another spine in a posture drawn from the prior")
    sim = bs.simulate_xray(truth, views, seed=args.seed, noise=0.01, mu=0.02, object_ids=asm.object_ids())
    obs = sim.observations("drr", block_size=16)
    print(f"[3/4] inferring the shapes and the posture with {args.method} (the spine's pose unknown)")
    post = bs.infer(
        asm,
        obs,
        method_from_args(args),
        bs.RigidPose(rotation_sd=0.1, translation_sd=10.0),
        num_samples=args.samples,
        seed=args.seed,
        progress=not args.quiet,
    )
    mean = post.mean_vertices()
    per_object = {}
    for k, name in enumerate(asm.names):
        sl = asm.vertex_slice(name)
        f = np.asarray(asm.models[k].faces)
        d = np.asarray(surface_distances(jnp.asarray(mean[sl]), jnp.asarray(f), jnp.asarray(world[sl]), jnp.asarray(f)))
        per_object[name] = {"mean": float(d.mean()), "p95": float(np.quantile(d, 0.95))}
    # each body's anterior and posterior heights, and Genant's grade of a wedge deformity (LPS: anterior -y)
    body = {name: morphometry.body_points(m, forward=(0.0, -1.0, 0.0)) for name, m in spine.items()}
    wedges = {w.name: w for w in morphometry.wedge_assessment(post, body)}
    true_angles = posture.posture_angles(asm, inc, forward=1, lateral=0, up=2)
    true_angles = {k: v if k == "joints" else np.asarray(v).reshape(-1) for k, v in true_angles.items()}
    true_angles["joints"] = list(true_angles["joints"])
    print("[4/4] writing the case folder, the inputs for `bayesshape infer`, pictures and report")
    out = Path(args.out)
    summary = write_case(
        out,
        post,
        views,
        names,
        list(sim.drr),
        ["drr", "drr"],
        mu=sim.mu,
        truth=truth,
        tolerance_mm=args.tolerance,
        n_samples=10,
        inputs={
            "model": "example lumbar spine L2-L5, a GP model of each vertebra (rank 20), posture prior",
            "truth": f"example spine, seed {args.seed + 1000}, posture and pose drawn with seed {args.seed}",
            "views": names,
            "observations": "DRRs, 1% noise, composite-likelihood blocks of 16 x 16 pixels",
        },
        settings={"method": args.method, "pose": "rigid", "seed": args.seed, "detector": [size, size]},
        extra={
            "surface_error_per_object_mm": per_object,
            "posture_truth_deg": {
                f"{key}[{joint}]": float(true_angles[key][j])
                for key in ("sagittal", "coronal", "axial")
                for j, joint in enumerate(true_angles["joints"])
            },
            "vertebral_morphometry": {name: w.as_dict() for name, w in wedges.items()},
            "wall_time_s": time.perf_counter() - t0,
        },
    )
    inputs = out / "inputs"
    inputs.mkdir(exist_ok=True)
    bs.io.save_assembly(asm, inputs / "spine.npz")
    bs.io.write_views(inputs / "views.json", views, names)
    for name, lab in zip(names, sim.labels or ()):
        bs.io.write_image(inputs / f"{name}_labels.png", lab)
    make_report(out, title="bayesshape demo: a lumbar spine's shapes and posture from biplanar DRRs")
    print("\nvertebra  surface error (mean, p95)  95% radius  flagged  anterior height lost (P(>= 20%))")
    for name in asm.names:
        o, e, w = summary["objects"][name], per_object[name], wedges[name]
        print(
            f"{name:8s}  {e['mean']:.2f} mm, {e['p95']:.2f} mm{'':10s}{o['credible_radius_95']:.2f} mm"
            f"     {'yes' if o['flagged'] else 'no ':8s} {100 * w.reduction:5.1f}% ({w.probability:.2f})"
        )
    print("\njoint angle            truth    posterior mean (95% interval), degrees")
    for key, row in summary["posture_deg"].items():
        t = summary["posture_truth_deg"][key]
        print(f"{key:22s} {t:6.2f}   {row['mean']:6.2f} ({row['lo_95']:.2f} to {row['hi_95']:.2f})")
    line = diagnostics_line(post.diagnostics.to_dict())
    if line:
        print(line)
    print(
        f"\nwrote {out} ({time.perf_counter() - t0:.0f} s; open {out / 'report.html'}); the same case from "
        "label images on the command line:\n  bayesshape infer --model "
        f"{inputs / 'spine.npz'} --views {inputs / 'views.json'} --labels {inputs / 'AP_labels.png'} "
        f"{inputs / 'LAT_labels.png'} --mask-likelihood silhouette --out {out}_labels --report"
    )
    return 0
