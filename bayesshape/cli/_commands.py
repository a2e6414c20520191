"""The subcommands build-model, simulate, infer, export and report."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import as_file_stem, as_seed
from ..posterior.samples import verdict_sentence
from . import _files

BUILD_HELP = """\
Build a PCA shape model from meshes in correspondence (same vertex count, order and
triangles), from raw surfaces (--raw: each registered to --reference, with landmarks
when given), or convert a Statismo .h5 model. Writes .npz (bayesshape) or .h5 (Statismo).

example:
  bayesshape build-model --meshes ../shared/data/femur10/*.ply --align rigid --out femur.npz
  bayesshape build-model --statismo torus_model.h5 --out torus.npz
  bayesshape build-model --example 20 --out example.npz        # built-in example shapes
  bayesshape build-model --raw vertebrae_l1/raw --reference vertebrae_l1/reference.ply \
      --landmarks vertebrae_l1/reference.json --out l1.npz      # raw surfaces, registered first
"""

SIMULATE_HELP = """\
Simulate X-rays of a mesh (or of a shape drawn from a model) in the views of a view
geometry file: DRR line-integral images (.npy), masks (.png), contour points (.csv),
the views (views.json) and the true shape (truth.ply); with --dicom, also DICOM DX
radiographs (NAME.dcm) and the open beam (flat_field.dcm) of cone-beam views.

example:
  bayesshape simulate --model example.npz --sample-seed 3 --views views.json --out xray
  bayesshape simulate --mesh bone.ply --biplanar 480 --out xray
  bayesshape simulate --model example.npz --views carm.json --dicom --out xray_dicom
"""

INFER_HELP = """\
Infer the posterior over 3D shapes from X-ray observations and write a case folder:
posterior.npz, confidence meshes (.ply .vtk .vtp), sample meshes, summary.json
(and report.html with --report). Give one mask, image or contour file per view,
in the order of the view geometry file; or DICOM radiographs (--xray), whose tags
give the views; and/or landmarks (--landmarks, --landmarks2d with --model-landmarks).

example:
  bayesshape infer --model example.npz --views xray/views.json \\
      --masks xray/AP_mask.png xray/LAT_mask.png --method laplace --pose rigid --out case1
  bayesshape infer --model example.npz --views xray/views.json \\
      --masks xray/AP_mask.png xray/LAT_mask.png --mask-likelihood silhouette --out case1s
  bayesshape infer --model example.npz --views xray/views.json \\
      --images xray/AP_drr.npy xray/LAT_drr.npy --mu 0.05 --out case2 --report
  bayesshape infer --model example.npz --xray xray/AP.dcm xray/LAT.dcm \
      --flat-field xray/flat_field.dcm --out case3
  bayesshape infer --model example.npz --xray xray/AP.dcm xray/LAT.dcm --air 60000 \
      --masks AP_seg.nrrd LAT_seg.nrrd --out case4
  bayesshape infer --model example.npz --landmarks patient.mrk.json \
      --model-landmarks model_landmarks.mrk.json --landmark-sigma 1 --out case5
"""

EXPORT_HELP = """\
Export a posterior file: confidence meshes (.ply .vtk .vtp), the mean and sample meshes,
and summary.json.

example:
  bayesshape export --posterior case1/posterior.npz --out case1_export --truth xray/truth.ply
"""

REPORT_HELP = """\
Write pictures and a self-contained HTML report (report.html) for a case folder made by
`bayesshape infer` or `bayesshape demo`; it opens offline in any browser.

example:
  bayesshape report --case case1
"""


def build_model(args) -> int:
    import bayesshape as bs

    sources = sum(x is not None and x != [] for x in (args.meshes, args.statismo, args.example, args.raw))
    if sources != 1:
        raise ValueError("give exactly one of --meshes, --raw, --statismo or --example")
    if args.raw is None and (args.reference or args.landmarks):
        raise ValueError("--reference and --landmarks go with --raw")
    if args.statismo and args.variance != "sample":
        raise ValueError("--variance loo needs the training meshes; a Statismo file holds only the model")
    if args.statismo:
        model = bs.io.load_statismo(args.statismo, group=args.group)
    elif args.raw:
        model = _model_from_raw(args)
    elif args.example:
        model = bs.build_pca_model(
            bs.datasets.example_shapes(args.example, seed=args.seed),
            align=None if args.align == "none" else args.align,
            n_modes=args.modes,
            variance=args.variance,
        )
    else:
        paths = sorted(Path(p) for p in args.meshes)
        if len(paths) < 2:
            raise ValueError(f"--meshes: expected at least 2 meshes in correspondence, got {len(paths)}")
        meshes = [bs.io.read_mesh(p) for p in paths]
        model = bs.build_pca_model(
            meshes, align=None if args.align == "none" else args.align, n_modes=args.modes, variance=args.variance
        )
    if args.modes is not None and args.statismo:
        model = model.truncate(args.modes)
    _files.write_model(model, args.out)
    ev = float(np.asarray(model.explained_variance_ratio).sum())
    print(f"wrote {args.out}: {model.n_vertices} vertices, {model.n_modes} modes ({100 * ev:.1f}% of the variance)")
    return 0


def _model_from_raw(args):
    import bayesshape as bs
    from bayesshape.io import LANDMARK_SUFFIXES, MESH_SUFFIXES

    folder = Path(args.raw)
    if not folder.is_dir():
        raise ValueError(f"--raw: {folder} is not a folder")
    if not args.reference:
        raise ValueError("--raw needs --reference, the mesh every surface is registered to")
    ref = Path(args.reference).resolve()
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in MESH_SUFFIXES and p.resolve() != ref)
    if len(paths) < 2:
        raise ValueError(
            f"--raw: expected at least 2 meshes ({', '.join(MESH_SUFFIXES)}) in {folder}, got {len(paths)}"
        )
    landmarks = None
    if args.landmarks:
        name = Path(args.landmarks).name.lower()
        suffix = next((s for s in sorted(LANDMARK_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)
        if suffix is None:
            raise ValueError(f"--landmarks: expected one of {LANDMARK_SUFFIXES}, got {args.landmarks}")
        landmarks = [p.with_name(p.stem + suffix) for p in paths]
        missing = [str(p) for p in landmarks if not p.exists()]
        if missing:
            raise ValueError(f"--landmarks: no landmark file beside each surface; missing {missing}")
    if args.variance != "sample":
        raise ValueError("--variance loo is not available with --raw")
    options = bs.registration.RegistrationOptions(rank=args.rank)
    built = bs.build_model_from_surfaces(
        [str(p) for p in paths],
        str(ref),
        landmarks=None if landmarks is None else [str(p) for p in landmarks],
        reference_landmarks=args.landmarks,
        options=options,
        align="similarity" if args.align == "similarity" else "rigid",
        n_modes=args.modes,
        correspondence_uncertainty=args.correspondence_uncertainty,
        seed=args.seed,
        progress=not args.quiet,
    )
    d = np.array([r.info.mean_distance_mm for r in built.registrations])
    print(f"registered {len(paths)} surfaces: mean surface distance {d.mean():.3f} mm (worst {d.max():.3f} mm)")
    return built.model


def _views(args):
    import bayesshape as bs

    if args.views and args.biplanar:
        raise ValueError("give --views or --biplanar, not both")
    if args.views:
        return bs.read_views(args.views)
    if args.biplanar:
        return list(bs.biplanar(field_of_view=args.biplanar, detector_shape=(args.size, args.size))), ["AP", "LAT"]
    raise ValueError("give the view geometry: --views FILE (JSON/YAML) or --biplanar FIELD_OF_VIEW_MM")


def simulate(args) -> int:
    import bayesshape as bs

    _files.check_output_folder(args.out)
    if (args.model is None) == (args.mesh is None):
        raise ValueError("give exactly one of --model or --mesh")
    if args.mesh:
        mesh = bs.io.read_mesh(args.mesh)
    else:
        model = _files.read_model(args.model, args.group)
        if model.faces is None:
            raise ValueError(f"{args.model}: simulating X-rays needs a mesh model (with faces)")
        import jax

        v = model.sample(jax.random.key(args.sample_seed), 1)[0] if args.sample_seed is not None else model.mean
        mesh = model.mesh(np.asarray(v))
    views, names = _views(args)
    for name in names:  # view names become file names in --out
        as_file_stem(name, f"view name in {args.views}" if getattr(args, "views", None) else "view name")
    sim = bs.simulate_xray(
        mesh, views, seed=args.seed, noise=args.noise, contour_jitter=args.jitter, mu=args.mu, pixel=args.drr_pixel
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bs.write_views(out / "views.json", views, names)
    files: dict[str, Any] = {"views": "views.json", "truth": "truth.ply", "drr": [], "masks": [], "contours": []}
    if args.dicom:
        from ..io.dicom import write_radiograph

        air = 60000.0
        files["dicom"] = []
        drr = []
        for name, img, view in zip(names, sim.drr, views):
            drr.append(write_radiograph(out / f"{name}.dcm", img, view, air=air, seed=args.seed))
            files["dicom"].append(f"{name}.dcm")
        write_radiograph(out / "flat_field.dcm", np.zeros(views[0].detector_shape), views[0], air=air, seed=args.seed)
        files["flat_field"] = "flat_field.dcm"
        sim = dataclasses.replace(sim, drr=tuple(drr))
    for name, img, mask, pts in zip(names, sim.drr, sim.masks, sim.contours):
        # with --dicom, the quantised line integrals of the DICOM files, in full precision
        _files.write_npy(out / f"{name}_drr.npy", np.asarray(img, dtype=np.float64 if args.dicom else np.float32))
        bs.io.write_mask(out / f"{name}_mask.png", mask)
        _files.write_points_csv(out / f"{name}_contour.csv", pts)
        files["drr"].append(f"{name}_drr.npy")
        files["masks"].append(f"{name}_mask.png")
        files["contours"].append(f"{name}_contour.csv")
    bs.io.write_mesh(out / "truth.ply", mesh)
    from ..export import write_json

    write_json(
        out / "simulation.json",
        {
            "files": files,
            "noise": args.noise,
            "contour_jitter_px": args.jitter,
            "mu_per_mm": args.mu,
            "noise_sd": sim.noise_sd,
            "seed": args.seed,
            "drr_pixel": args.drr_pixel,
        },
    )
    print(f"simulated {len(views)} views ({', '.join(names)}); wrote {len(list(out.iterdir()))} files to {out}")
    return 0


def _radiographs(args):
    """Views, names and line-integral images of the ``--xray`` DICOM files."""
    from ..io.dicom import read_radiograph

    if args.views:
        raise ValueError("--xray: the views come from the DICOM files; drop --views")
    geometry = {
        "source_to_detector": args.source_to_detector,
        "source_to_isocenter": args.source_to_isocenter,
        "pixel_spacing": args.pixel_spacing,
    }
    angles = {"primary_angle": args.primary_angle, "secondary_angle": args.secondary_angle}
    for key, values in angles.items():
        if values is not None and len(values) != len(args.xray):
            flag = "--" + key.replace("_", "-")
            raise ValueError(f"{flag}: expected one angle per --xray file ({len(args.xray)}), got {len(values)}")
    views, names, images = [], [], []
    for i, path in enumerate(args.xray):
        geometry.update({k: None if v is None else v[i] for k, v in angles.items()})
        try:
            xr = read_radiograph(
                path,
                air=args.air,
                flat_field=args.flat_field,
                log_scale=args.log_scale,
                frame=args.frame,
                **geometry,
            )
        except ValueError as e:
            raise ValueError(f"--xray {path}: {e}") from None
        for note in xr.notes:
            print(f"{path}: {note}")
        views.append(xr.view)
        names.append(Path(path).name.split(".")[0] or f"view{i}")
        images.append(xr.line_integrals)
    return views, names, images


def _landmark_observations(args, model, views) -> list:
    """``--landmarks`` and ``--landmarks2d``, tied to model vertices through ``--model-landmarks``."""
    import bayesshape as bs

    if not (args.landmarks or args.landmarks2d):
        if args.model_landmarks:
            raise ValueError("--model-landmarks: give the patient's --landmarks or --landmarks2d too")
        return []
    if not args.model_landmarks:
        raise ValueError(
            "--landmarks/--landmarks2d: give --model-landmarks FILE, the same landmarks (by name) on the model's "
            "mean shape"
        )
    if not args.landmark_sigma > 0:
        raise ValueError(f"--landmark-sigma: expected a positive sd, got {args.landmark_sigma}")
    ref = bs.io.read_landmarks(args.model_landmarks)
    mean = np.asarray(model.mean, dtype=np.float64)
    vertex_of, far = {}, []
    for name, p in zip(ref.names, ref.points):
        d = np.linalg.norm(mean - p[None], axis=1)
        vertex_of[name] = int(np.argmin(d))
        if d.min() > 5.0:
            far.append(f"{name} ({d.min():.1f} mm)")
    if far:
        print(f"note: model landmarks far from the mean shape's nearest vertex: {', '.join(far)}")

    def ids_for(names, path):
        unknown = [n for n in names if n not in vertex_of]
        if unknown:
            raise ValueError(f"{path}: landmarks {unknown} are not in --model-landmarks ({', '.join(ref.names)})")
        return np.asarray([vertex_of[n] for n in names], dtype=np.int64)

    out: list = []
    if args.landmarks:
        lms = bs.io.read_landmarks(args.landmarks)
        out.append(bs.obs.Landmarks3D(ids_for(lms.names, args.landmarks), lms.points, args.landmark_sigma))
    if args.landmarks2d:
        if len(args.landmarks2d) != len(views):
            raise ValueError(
                f"--landmarks2d: expected one file per view ({len(views)} views), got {len(args.landmarks2d)}"
            )
        for path, view in zip(args.landmarks2d, views):
            names, pixels = _files.read_named_pixels(path)
            out.append(bs.obs.Landmarks2D(view, ids_for(names, path), pixels, args.landmark_sigma))
    return out


def _label_values(args) -> dict | None:
    """``--label-values NAME=VALUE ...`` as ``{name: label}``, or None when not given."""
    if not args.label_values:
        return None
    out = {}
    for item in args.label_values:
        name, _, value = item.partition("=")
        if not value.strip().lstrip("-").isdigit():
            raise ValueError(f"--label-values {item!r}: expected NAME=VALUE with an integer label (e.g. L3=2)")
        out[name.strip()] = int(value)
    return out


def _label_observations(args, model, views):
    """Per-object observations from label images (``--labels``), for an assembly model."""
    import bayesshape as bs

    if not isinstance(model, bs.prior.Assembly):
        raise ValueError(
            "--labels: label images need a model of several objects (an assembly file, written by "
            "bayesshape.io.save_assembly); for a single object give its mask with --masks"
        )
    if args.masks or args.images or args.contours or args.xray:
        raise ValueError("--labels: give the label images alone (not with --masks, --images, --contours or --xray)")
    if len(args.labels) != len(views):
        raise ValueError(f"--labels: expected one label image per view ({len(views)} views), got {len(args.labels)}")
    images = [bs.io.read_image(p, "label image") for p in args.labels]
    kind = "silhouette" if args.mask_likelihood == "silhouette" else "contour"
    obs = bs.obs.label_observations(views, images, model, kind=kind, sigma=args.sigma, labels=_label_values(args))
    points = [bs.obs.mask_contour_points(np.asarray(img) > 0) for img in images]
    return obs, [np.asarray(img, np.float64) for img in images], ["labels"] * len(images), points


def _observations(args, views, xray_images=None):
    import bayesshape as bs

    given = [
        (k, v)
        for k, v in (("masks", args.masks), ("images", args.images), ("contours", args.contours), ("xray", args.xray))
        if v
    ]
    # radiographs with their segmentations: the DICOM files give the views and the pictures' backdrop,
    # the masks or contours the likelihood
    backdrop = xray_images if args.xray and (args.masks or args.contours) else None
    if backdrop is not None:
        given = [g for g in given if g[0] != "xray"]
    if len(given) > 1:
        raise ValueError(
            "give one kind of image input: --masks, --images, --contours or --xray (one file per view); --xray "
            "goes with --masks or --contours as the radiographs they segment"
        )
    if not given:
        return [], [], [], []
    kind, paths = given[0]
    if len(paths) != len(views):
        raise ValueError(
            f"--{kind}: expected one file per view ({len(views)} views in the geometry file), got {len(paths)}"
        )
    obs, images, points, kinds = [], [], [], []
    for i, (p, view) in enumerate(zip(paths, views)):
        h, w = view.detector_shape
        if kind == "contours":
            pts = _files.read_points_csv(p)
            sigma = args.sigma or 1.0
            obs.append(bs.obs.Contour(view, pts, sigma))
            img = np.zeros((h, w)) if backdrop is None else np.asarray(backdrop[i], dtype=np.float64)
            points.append(pts)
            kinds.append("contour")
        else:
            if kind == "xray":
                arr = xray_images[i]
            else:
                arr = bs.io.read_mask(p) if kind == "masks" else bs.io.read_image(p, "image")
            if arr.shape != (h, w):
                raise ValueError(
                    f"{p}: image of {arr.shape[0]} x {arr.shape[1]} pixels does not match view {i}'s "
                    f"detector of {h} x {w} pixels"
                )
            if kind == "masks" and args.mask_likelihood == "silhouette":
                obs.append(bs.obs.Silhouette(view, arr, args.sigma or 0.5))
                points.append(bs.obs.mask_contour_points(arr))
                kinds.append("mask")
            elif kind == "masks":
                obs.append(bs.obs.Contour(view, arr, args.sigma or 1.0))
                points.append(bs.obs.mask_contour_points(arr))
                kinds.append("mask")
            else:
                if not np.all(np.isfinite(arr)):
                    raise ValueError(f"{p}: the image has NaN or inf pixels")
                sigma = args.sigma or max(_files.noise_sd_estimate(arr), 1e-6)
                obs.append(
                    bs.obs.DRR(
                        view, arr, sigma, mu=args.mu, fit_scale_offset=args.fit_scale_offset, pixel=args.drr_pixel
                    )
                )
                points.append(None)
                kinds.append("drr")
            img = arr.astype(np.float64) if backdrop is None else np.asarray(backdrop[i], dtype=np.float64)
        images.append(img)
    return obs, images, kinds, points


def infer(args) -> int:
    import bayesshape as bs

    from ..report import make_report, write_case

    t0 = time.perf_counter()
    _files.check_output_folder(args.out)
    as_seed(args.seed)
    model = _files.read_model(args.model, args.group)
    xray_images = None
    if args.xray:
        views, names, xray_images = _radiographs(args)
    elif args.views:
        views, names = bs.read_views(args.views)
    elif args.masks or args.images or args.contours or args.landmarks2d or args.labels:
        raise ValueError("give the view geometry: --views FILE, or DICOM radiographs with --xray")
    else:
        views, names = [], []
    assembly = isinstance(model, bs.prior.Assembly)
    if args.labels:
        obs, images, kinds, points = _label_observations(args, model, views)
    else:
        obs, images, kinds, points = _observations(args, views, xray_images)
    if assembly and (args.landmarks or args.landmarks2d):
        raise ValueError(
            "--landmarks, --landmarks2d: not available with an assembly model from the command line (use "
            "bayesshape.obs.OnObject in Python); give --labels, --images or --masks"
        )
    landmark_obs = _landmark_observations(args, model, views)
    if not obs and not landmark_obs:
        raise ValueError("give observations: --masks, --images, --contours or --xray per view, and/or --landmarks")
    obs = obs + landmark_obs
    kind = kinds[0] if kinds else "landmarks"
    truth = bs.io.read_mesh(args.truth) if args.truth else None
    what = f"{len(views)} views, {kind}" + (" and landmarks" if kinds and landmark_obs else "")
    if assembly:
        print(
            f"inferring with {args.method} ({what}, pose {args.pose}, {len(model.names)} objects "
            f"{', '.join(model.names)}, {model.mode_offsets[-1]} modes)"
        )
    else:
        print(f"inferring with {args.method} ({what}, pose {args.pose}, {model.n_modes} modes)")
    post = bs.infer(
        model,
        obs,
        method=method_from_args(args),
        pose=None if args.pose == "none" else args.pose,
        likelihood=bs.LikelihoodOptions(model_error_scale=args.model_error_scale),
        num_samples=args.samples,
        seed=args.seed,
        progress=not args.quiet,
    )
    inputs = {
        "model": str(args.model),
        "views": str(args.views) if args.views else ("from the DICOM files" if args.xray else None),
        "kind": kind,
        "likelihood": type(obs[0]).__name__,
        "files": [str(p) for p in (args.labels or args.masks or args.images or args.contours or args.xray or [])],
    }
    if assembly:
        inputs["objects"] = list(model.names)
    if landmark_obs:
        inputs["landmarks"] = [str(p) for p in ([args.landmarks] if args.landmarks else []) + (args.landmarks2d or [])]
        inputs["model_landmarks"] = str(args.model_landmarks)
    settings = {
        "method": args.method,
        "pose": args.pose,
        "seed": args.seed,
        "samples": args.samples,
        **({"chains": args.chains} if args.method == "nuts" else {}),
        "sigma": [float(o.sigma) for o in obs],
    }
    if kind == "drr":
        settings["drr_pixel"] = args.drr_pixel
    if args.model_error_scale != 1.0:
        settings["model_error_scale"] = args.model_error_scale
    summary = write_case(
        args.out,
        post,
        views,
        names,
        images,
        kinds,
        points=points,
        mu=args.mu,
        truth=truth,
        n_samples=args.export_samples,
        level=args.level,
        tolerance_mm=args.tolerance,
        inputs=inputs,
        settings=settings,
        extra={"wall_time_s": time.perf_counter() - t0},
    )
    _print_summary(summary)
    if args.report:
        print(f"report: {make_report(args.out)}")
    print(f"wrote case folder {args.out} ({time.perf_counter() - t0:.0f} s)")
    return 0


def _print_summary(s: dict) -> None:
    r = s["reliability"]
    u = s["uncertainty_mm"]["credible_radius_95"]
    print(f"95% credible radius: mean {u['mean']:.2f} mm, max {u['max']:.2f} mm")
    if "error_mm" in s:
        e = s["error_mm"]
        print(
            f"error of the posterior mean: mean {e['vertex_mean']:.2f} mm, 95th percentile "
            f"{e['vertex_p95']:.2f} mm; truth inside the 95% ball at {100 * e['coverage_95']:.1f}% of vertices"
        )
    d = s["posterior"]["diagnostics"]
    line = diagnostics_line(d)
    if line:
        print(line)
    for w in d.get("warnings", []):
        print(f"warning: {w}")
    print(f"reliability: {verdict_sentence(r)}")


def method_from_args(args):
    """The method object of ``--method``, ``--samples`` (also NUTS's warm-up) and ``--chains``."""
    import bayesshape as bs

    if args.method == "nuts":
        return bs.NUTS(num_warmup=args.samples, num_chains=args.chains)
    return args.method


def diagnostics_line(d: dict) -> str:
    """One line of the method's diagnostics from their JSON form (``summary.json``)."""
    method = d.get("method")
    if method == "nuts" and "max_rhat" in d:
        return (
            f"diagnostics: max R-hat {d['max_rhat']:.3f}, min bulk ESS {d['min_ess_bulk']:.0f}, "
            f"divergences {d['divergences']}"
        )
    if method == "nuts":
        return f"diagnostics: min bulk ESS {d['min_ess_bulk']:.0f}, divergences {d['divergences']}"
    if method == "svi":
        return f"diagnostics: SVI converged: {d['converged']}, final loss {d['final_loss']:.1f}"
    if method == "importance":
        return (
            f"diagnostics: importance-sampling ESS {d['is_ess']:.0f} of {d['is_samples']} draws, "
            f"Pareto k-hat {d['is_khat']:.2f}"
        )
    return ""


def export(args) -> int:
    import bayesshape as bs

    from ..report import export_case

    _files.check_output_folder(args.out)
    post = bs.load_posterior(args.posterior)
    truth = bs.io.read_mesh(args.truth) if args.truth else None
    summary = export_case(
        post,
        args.out,
        truth=truth,
        n_samples=args.samples,
        level=args.level,
        tolerance_mm=args.tolerance,
        inputs={"posterior": str(args.posterior)},
    )
    _print_summary(summary)
    print(f"wrote {', '.join(sorted(p.name for p in Path(args.out).iterdir()))} to {args.out}")
    return 0


def report(args) -> int:
    from ..report import make_report

    path = make_report(args.case, title=args.title)
    print(f"wrote {path}")
    return 0
