"""The ``bayesshape`` command line: demo, build-model, simulate, infer, batch, export, report.

Errors are one line on stderr with exit code 2 (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import sys

from . import _batch, _commands, _demo

__all__ = ["main", "build_parser"]


def _sub(sub, name, help_, description, func):
    p = sub.add_parser(name, help=help_, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def _inference_args(p, default_method: str):
    p.add_argument(
        "--method",
        choices=["nuts", "svi", "laplace", "importance"],
        default=default_method,
        help="laplace: a Gaussian at the MAP (fastest); importance: adaptive importance sampling "
        "from it (corrects a skewed posterior, about 4000 more likelihood evaluations); svi; nuts "
        "(slowest on a CPU)",
    )
    p.add_argument(
        "--samples", type=int, default=300, help="NUTS warm-up and samples per chain; Laplace/importance/SVI samples"
    )
    p.add_argument("--chains", type=int, default=2, help="NUTS chains")
    p.add_argument("--tolerance", type=float, default=2.0, help="clinical tolerance for the flags, mm")
    p.add_argument("--seed", type=int, default=0, help="seed for every random draw")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _infer_options(i):
    """The options of `infer` that are not input files (shared by every case of `batch`)."""
    i.add_argument("--model", required=True, help="model file (.npz or .h5)")
    i.add_argument("--group", help="HDF5 group of a nested Statismo model (e.g. shape)")
    i.add_argument(
        "--landmark-sigma", type=float, default=2.0, help="landmark noise sd: mm (3D) or pixels (2D); default 2"
    )
    i.add_argument(
        "--mask-likelihood",
        choices=["contour", "silhouette"],
        default="contour",
        help="masks: the chamfer of their outline points (Contour, default) or every pixel near the "
        "boundary (Silhouette, a probit of its signed distance to the outline; docs/likelihoods.md)",
    )
    i.add_argument(
        "--sigma",
        type=float,
        help="noise sd: contours and masks in pixels (default 1; 0.5 with "
        "--mask-likelihood silhouette), images in image units "
        "(default: estimated from the image)",
    )
    i.add_argument("--mu", type=float, default=0.05, help="attenuation coefficient of the images, 1/mm")
    i.add_argument("--fit-scale-offset", action="store_true", help="DRR: fit an unknown intensity scale and offset")
    i.add_argument(
        "--drr-pixel",
        choices=["centre", "area"],
        default="centre",
        help="images: the model DRR at pixel centres, or averaged over each pixel's area (smooth in the "
        "shape, which NUTS needs; several times slower; docs/likelihoods.md)",
    )
    i.add_argument("--pose", choices=["none", "rigid", "similarity"], default="rigid")
    i.add_argument(
        "--model-error-scale",
        type=float,
        default=1.0,
        help="factor on the model error's sd, for a model built with one (model_error=True); default 1",
    )
    i.add_argument("--level", type=float, default=0.95, help="credible level of the exported radius")
    i.add_argument("--export-samples", type=int, default=10, help="posterior sample meshes to write")
    i.add_argument("--report", action="store_true", help="also write pictures and report.html")
    _inference_args(i, "laplace")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bayesshape", description="Probabilistic 3D shape reconstruction from X-rays.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument(
        "--no-compile-cache",
        action="store_true",
        help="do not keep compiled likelihoods between runs (by default up to 1 GiB of them are kept in "
        "$XDG_CACHE_HOME/bayesshape/jax, or where JAX_COMPILATION_CACHE_DIR says)",
    )
    sub = p.add_subparsers(dest="command", required=True)

    d = _sub(sub, "demo", "the main job on built-in example data", _demo.DEMO_HELP, _demo.demo)
    d.add_argument("--out", required=True, help="output folder (created)")
    d.add_argument("--views", type=int, default=2, help="2 (biplanar) or more C-arm views")
    d.add_argument("--size", type=int, help="detector size in pixels (default 256; 128 with --spine)")
    d.add_argument("--train", type=int, default=20, help="training shapes for the model")
    d.add_argument("--jitter", type=float, default=0.5, help="contour noise, pixels")
    d.add_argument("--spine", action="store_true", help="instead: a lumbar spine (four vertebrae and their posture)")
    d.add_argument("--cohort", type=int, help="instead: an example cohort of this many cases, run by `batch`")
    d.add_argument("--workers", type=int, help="with --cohort: local Dask workers (default: serial)")
    _inference_args(d, "laplace")

    b = _sub(
        sub,
        "build-model",
        "build a shape model from meshes in correspondence",
        _commands.BUILD_HELP,
        _commands.build_model,
    )
    b.add_argument("--meshes", nargs="+", help="meshes in correspondence (.ply .stl .obj .off .vtk .vtp)")
    b.add_argument(
        "--raw",
        help="a folder of raw surfaces, not in correspondence: each is registered to --reference first",
    )
    b.add_argument("--reference", help="with --raw: the reference mesh every surface is registered to")
    b.add_argument(
        "--landmarks",
        help="with --raw: the reference's landmark file (.json Scalismo, .mrk.json, .fcsv, .csv); each surface's "
        "is the file beside it with the same stem and suffix",
    )
    b.add_argument("--rank", type=int, default=300, help="with --raw: modes of the reference's GP model")
    b.add_argument(
        "--correspondence-uncertainty",
        action="store_true",
        help="with --raw: carry each registration's posterior spread into the model as per-vertex noise",
    )
    b.add_argument("--quiet", action="store_true", help="no progress lines")
    b.add_argument("--statismo", help="a Statismo .h5 model to convert")
    b.add_argument("--group", help="with --statismo: the HDF5 group of a nested model (e.g. shape)")
    b.add_argument("--example", type=int, help="build from this many built-in example shapes")
    b.add_argument(
        "--align",
        choices=["rigid", "similarity", "none"],
        default="rigid",
        help="Procrustes alignment of the meshes (default rigid)",
    )
    b.add_argument("--modes", type=int, help="keep this many modes")
    b.add_argument(
        "--variance",
        choices=["sample", "loo"],
        default="sample",
        help="mode variances: the sample's (default), or calibrated by leave-one-out for unseen shapes "
        "(wider trailing modes; recommended for inference, needs 4 or more meshes)",
    )
    b.add_argument("--seed", type=int, default=0, help="seed of the example shapes")
    b.add_argument("--out", required=True, help="model file, .npz (bayesshape) or .h5 (Statismo)")

    s = _sub(sub, "simulate", "simulate X-rays of a mesh or model shape", _commands.SIMULATE_HELP, _commands.simulate)
    s.add_argument("--model", help="model file (.npz or .h5); simulates its mean or a sample")
    s.add_argument("--sample-seed", type=int, help="draw the shape from the model with this seed (default: the mean)")
    s.add_argument("--mesh", help="mesh file to simulate instead of a model shape")
    s.add_argument("--views", help="view geometry file (JSON or YAML)")
    s.add_argument("--biplanar", type=float, help="instead of --views: parallel AP + lateral, this field of view (mm)")
    s.add_argument("--size", type=int, default=256, help="detector size for --biplanar, pixels")
    s.add_argument("--noise", type=float, default=0.01, help="DRR noise sd, fraction of the image maximum")
    s.add_argument("--jitter", type=float, default=0.0, help="contour point noise sd, pixels")
    s.add_argument("--mu", type=float, default=0.05, help="attenuation coefficient, 1/mm")
    s.add_argument(
        "--drr-pixel",
        choices=["centre", "area"],
        default="centre",
        help="DRR pixels: the path length at each pixel centre, or averaged over each pixel's area",
    )
    s.add_argument(
        "--dicom",
        action="store_true",
        help="also write each view as a DICOM DX radiograph (NAME.dcm, cone-beam views only) and the open beam "
        "(flat_field.dcm); the .npy images then hold the line integrals the DICOM files hold (16-bit counts)",
    )
    s.add_argument("--group", help="HDF5 group of a nested Statismo model (e.g. shape)")
    s.add_argument("--seed", type=int, default=0, help="seed of the noise")
    s.add_argument("--out", required=True, help="output folder (created)")

    i = _sub(sub, "infer", "infer the posterior from X-ray inputs", _commands.INFER_HELP, _commands.infer)
    i.add_argument("--views", help="view geometry file (JSON or YAML); not needed with --xray")
    i.add_argument("--masks", nargs="+", help="segmentation masks, one per view (.png .tif .nrrd .nii .nii.gz .npy)")
    i.add_argument(
        "--images", nargs="+", help="DRR line-integral images, one per view (.npy .tif .nrrd .nii .nii.gz .png)"
    )
    i.add_argument(
        "--xray",
        nargs="+",
        help="DICOM radiographs (DX, CR, XA), one per view: converted to line integrals, views from their tags; "
        "with --masks or --contours, the radiographs those segment (the views, and the backdrop of the pictures)",
    )
    i.add_argument("--flat-field", help="--xray: the open-beam image (.dcm) for the air reference")
    i.add_argument("--air", type=float, help="--xray: the open-beam intensity (instead of --flat-field)")
    i.add_argument("--log-scale", type=float, help="--xray: pixel values per natural-log unit (LOG images)")
    i.add_argument("--frame", type=int, help="--xray: the frame of multi-frame files")
    i.add_argument("--source-to-detector", type=float, help="--xray: DistanceSourceToDetector, mm (missing tag)")
    i.add_argument("--source-to-isocenter", type=float, help="--xray: DistanceSourceToPatient, mm (missing tag)")
    i.add_argument("--pixel-spacing", type=float, help="--xray: detector pixel spacing, mm (missing tag)")
    i.add_argument(
        "--primary-angle",
        type=float,
        nargs="+",
        help="--xray: PositionerPrimaryAngle, degrees, one per file (missing tag)",
    )
    i.add_argument(
        "--secondary-angle",
        type=float,
        nargs="+",
        help="--xray: PositionerSecondaryAngle, degrees, one per file (missing tag)",
    )
    i.add_argument("--contours", nargs="+", help="contour points, one CSV (row,col) per view")
    i.add_argument(
        "--labels",
        nargs="+",
        help="label images, one per view (0 background, one integer label per object), for an assembly model",
    )
    i.add_argument(
        "--label-values",
        nargs="+",
        metavar="NAME=VALUE",
        help="with --labels: each object's label (default: the objects in order are 1, 2, ...)",
    )
    i.add_argument(
        "--landmarks",
        help="3D landmarks of the patient, mm, LPS (.json Scalismo, .mrk.json or .fcsv Slicer, .csv name,x,y,z)",
    )
    i.add_argument("--landmarks2d", nargs="+", help="2D landmarks on the X-rays, one CSV (name,row,col) per view")
    i.add_argument(
        "--model-landmarks",
        help="the same landmarks, by name, on the model's mean shape (each is tied to its nearest vertex)",
    )
    i.add_argument("--truth", help="true mesh in correspondence, for simulated cases (error maps)")
    _infer_options(i)
    i.add_argument("--out", required=True, help="case folder (created)")

    bt = _sub(sub, "batch", "reconstruct every case of a manifest (a cohort)", _batch.BATCH_HELP, _batch.batch)
    bt.add_argument("manifest", help="the cases: a CSV or YAML manifest (see above)")
    _infer_options(bt)
    bt.add_argument("--workers", type=int, help="run on a local Dask cluster of this many worker processes")
    bt.add_argument("--scheduler", help="run on a running Dask cluster: its scheduler's address (tcp://host:8786)")
    bt.add_argument("--out", required=True, help="cohort folder (created; an existing one is resumed)")

    e = _sub(sub, "export", "export a posterior file as meshes and JSON", _commands.EXPORT_HELP, _commands.export)
    e.add_argument("--posterior", required=True, help="posterior.npz written by infer")
    e.add_argument("--truth", help="true mesh in correspondence (adds the error field)")
    e.add_argument("--samples", type=int, default=10, help="posterior sample meshes to write")
    e.add_argument("--level", type=float, default=0.95, help="credible level of the radius")
    e.add_argument("--tolerance", type=float, default=2.0, help="clinical tolerance for the flags, mm")
    e.add_argument("--out", required=True, help="output folder (created)")

    r = _sub(sub, "report", "pictures and an HTML report of a case folder", _commands.REPORT_HELP, _commands.report)
    r.add_argument("--case", required=True, help="case folder written by infer or demo")
    r.add_argument("--title", help="page title")
    return p


def _use_compilation_cache() -> None:
    """Keep compiled programs on disk (JAX's persistent compilation cache), so that a second run on
    inputs of the same sizes loads its likelihoods instead of compiling them again: the same
    executables, so the same numbers. JAX_COMPILATION_CACHE_DIR, where set, is JAX's own setting and
    wins; a cache folder that cannot be created is skipped without a word (the run only compiles)."""
    import os
    from pathlib import Path

    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or getattr(jax.config, "jax_compilation_cache_dir", None):
        return
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    folder = Path(base) / "bayesshape" / "jax"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder)  # for worker processes (batch --workers)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_compilation_cache_max_size", 2**30)  # 1 GiB, the least recently used go first


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.no_compile_cache:
        _use_compilation_cache()
    try:
        return args.func(args)
    except (ValueError, OSError) as e:
        if args.debug:
            raise
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"bayesshape {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
