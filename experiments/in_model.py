"""In-model coverage: are the credible regions calibrated when the model is right?

Shapes drawn from the prior itself (the PCA model of the example family), each in a pose
drawn from the pose prior, observed in simulated biplanar X-rays (contours or DRRs), and
reconstructed with the pose unknown. When the truth is a draw from the prior and the data
come from the likelihood's own noise model, a correct posterior covers the truth at the
nominal rate (averaged over draws); departures measure the approximation (Laplace, SVI,
NUTS with finite chains) and the misspecification of the image likelihood itself (pixel
quantisation, correlated contour residuals), not model error. ``--contour-source exact`` takes the
contour points from the truth's projected occluding contour instead of a mask, jittered the same way:
data from the likelihood's own noise model, the control without pixel quantisation. ``--obs silhouette``
observes the masks themselves with the probit likelihood (:class:`bayesshape.obs.Silhouette`);
``--mask-noise S`` draws them from its own model (each pixel's signed distance to the truth's outline plus
Gaussian noise of sd S px), ``0`` takes the rasterised masks.

The pose (``--pose-prior matched``, the default) is an exact draw from the prior that
``infer`` is given: a rotation vector ``N(0, rotation_sd^2 I)`` about the model mean's
centroid and a translation ``N(0, translation_sd^2 I)``, with the initial pose the identity.
``--pose-prior legacy`` is the earlier protocol: the truth moved by 0.02 rad and
3 mm about its own centroid, reconstructed with ``infer``'s default pose prior (0.1 rad,
10 mm around the pose it estimates from the silhouettes), so the rotation prior is five times
wider than the rotations drawn.

    python experiments/in_model.py --method laplace --n 20 --out out/in_model
    python experiments/in_model.py --method nuts --n 6 --size 96 --out out/in_model_nuts
    python experiments/in_model.py --supersample 8 --n 20 --out out/in_model_fine   # finer quantisation
    python experiments/in_model.py --contour-source exact --n 20 --out out/in_model_exact   # no masks
    python experiments/in_model.py --obs silhouette --mask-noise 0.5 --n 20 --out out/in_model_sil   # masks, probit

Writes ``cases.json`` and ``summary.json`` (coverage at 50/80/90/95%, per case and mean,
with the standard error over draws; the truth's parameter-space calibration, with the parameter
furthest from calibration and its family-wise p-value, ``z_worst``) to ``--out``. A draw's vertices move together (the
pose and a few shape directions dominate their errors), so the draws are the independent
trials and 20 of them leave the 50% level uncertain by 5 to 8 points; ``--pool`` combines
runs with different seeds:

    python experiments/in_model.py --pool out/in_model_sil out/in_model_sil_seed1 --out out/in_model_sil_pooled
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

from _cases import LEVELS, Case, ece, make_views, mean_coverage, move, reconstruct  # noqa: E402

import bayesshape as bs  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--method", default="laplace", choices=["laplace", "importance", "svi", "nuts"])
    ap.add_argument(
        "--obs",
        default="contour",
        choices=["contour", "drr", "silhouette"],
        help="contour: points of the mask's outline (Contour); silhouette: the mask itself, pixel by "
        "pixel (Silhouette, the probit likelihood); drr: the images",
    )
    ap.add_argument(
        "--mask-noise",
        type=float,
        default=0.0,
        help="silhouette: sd (px) of the probit noise the masks are drawn with (0: the rasterised mask)",
    )
    ap.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="likelihood noise sd (px); default: contour max(jitter, 0.5), silhouette the mask noise "
        "or 0.5 px for noise-free masks",
    )
    ap.add_argument("--n", type=int, default=20, help="number of shapes drawn from the model")
    ap.add_argument("--size", type=int, default=128, help="detector pixels")
    ap.add_argument("--jitter", type=float, default=0.5, help="contour noise, px")
    ap.add_argument("--samples", type=int, default=300, help="posterior draws (NUTS: per chain, also warm-up)")
    ap.add_argument("--likelihood-faces", type=int, default=None, help="coarse likelihood mesh (infer's option)")
    ap.add_argument(
        "--no-contour-weights",
        action="store_true",
        help="the nominal contour likelihood (no composite-likelihood weights)",
    )
    ap.add_argument(
        "--pose-prior",
        default="matched",
        choices=["matched", "legacy"],
        help="matched: the truth's pose is drawn from infer's pose prior; legacy: the earlier protocol "
        "(truth moved 0.02 rad and 3 mm, default pose prior)",
    )
    ap.add_argument("--rotation-sd", type=float, default=0.1, help="pose prior sd, rad (matched)")
    ap.add_argument("--translation-sd", type=float, default=10.0, help="pose prior sd, mm (matched)")
    ap.add_argument(
        "--supersample",
        type=int,
        default=1,
        help="contour points from a mask this many times finer, subsampled to the native count: "
        "the pixel quantisation shrinks, but the sparser points leave gaps in the model-to-image "
        "distance (docs/experiments.md)",
    )
    ap.add_argument(
        "--contour-source",
        default="mask",
        choices=["mask", "exact"],
        help="mask: the jittered contour of the simulated mask (pixel quantisation); exact: points "
        "along the truth's projected occluding contour, jittered (the likelihood's own noise model)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--pool",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="run nothing: pool the finished runs in these --out folders (same settings, different "
        "seeds) into --out/summary.json; rows that do not record their posterior sample count "
        "are taken to have --samples draws (2 chains of them with --method nuts)",
    )
    args = ap.parse_args(argv)
    if args.pool:
        try:
            print_summary(pool(args.pool, args.out, args.samples if args.method != "nuts" else 2 * args.samples))
        except ValueError as e:
            ap.error(str(e))
        return 0
    if args.supersample < 1:
        ap.error(f"--supersample: expected an integer >= 1, got {args.supersample}")
    if args.mask_noise < 0 or (args.mask_noise > 0 and args.obs != "silhouette"):
        ap.error(f"--mask-noise: expected an sd >= 0 px, with --obs silhouette; got {args.mask_noise}")
    if args.sigma is not None and not args.sigma > 0:
        ap.error(f"--sigma: expected a positive sd in px, got {args.sigma}")
    if args.contour_source == "exact" and (args.supersample > 1 or args.obs != "contour"):
        ap.error(
            "--contour-source exact: contour observations only, and not with --supersample (both replace "
            "the mask's points)"
        )
    for name in ("rotation_sd", "translation_sd"):
        if not getattr(args, name) > 0:
            ap.error(f"--{name.replace('_', '-')}: expected a positive sd, got {getattr(args, name)}")
    args.out.mkdir(parents=True, exist_ok=True)
    model = bs.build_pca_model(bs.datasets.example_shapes(20, seed=0), align="rigid")
    rng = np.random.default_rng(args.seed)
    key = jax.random.key(args.seed)
    draws = model.sample(key, args.n)
    alpha = np.asarray(jax.vmap(model.coefficients)(draws))  # exact: the PCA model has no noise variance
    draws = np.asarray(draws)
    if args.pose_prior == "matched":
        # the pose the prior draws: about the centroid infer rotates about (the mean mesh's volume centroid)
        center = trimesh.Trimesh(np.asarray(model.mean), np.asarray(model.faces), process=False).center_mass
        pose_kw = dict(
            pose=bs.RigidPose(
                rotation_sd=args.rotation_sd,
                translation_sd=args.translation_sd,
                initial=(np.zeros(3), np.zeros(3), 0.0),
            )
        )
        motion = dict(rot_sd=args.rotation_sd, trans_sd=args.translation_sd, center=center)
    else:
        pose_kw, motion = {}, {}
    rows = []
    t0 = time.perf_counter()
    for i in range(args.n):
        truth, (rotvec, t) = move(
            trimesh.Trimesh(draws[i], np.asarray(model.faces), process=False), rng, return_pose=True, **motion
        )
        # the truth's whitened parameters, when it is an exact draw from infer's prior
        theta = (
            np.concatenate([np.asarray(alpha[i]), rotvec / args.rotation_sd, t / args.translation_sd])
            if args.pose_prior == "matched"
            else None
        )
        views = make_views(2, args.size)
        case = Case(f"draw{i}", "in_model", truth, views, views, jitter=args.jitter)
        r = reconstruct(
            model,
            case,
            method=args.method,
            seed=args.seed + i,
            kind=args.obs,
            num_samples=args.samples,
            num_warmup=args.samples,
            likelihood_faces=args.likelihood_faces,
            contour_weights=not args.no_contour_weights,
            supersample=args.supersample,
            truth_theta=theta,
            contour_source=args.contour_source,
            mask_noise=args.mask_noise,
            sigma=args.sigma,
            **pose_kw,
        )
        rows.append(r)
        print(
            f"[{time.perf_counter() - t0:5.0f} s] {case.name}: vertex error {r['vertex_error_mean']:.2f} mm, "
            f"coverage "
            + "/".join(f"{r['coverage'][str(lv)]:.2f}" for lv in LEVELS)
            + f", misfit {r['misfit']:.2f}, weights {r['diagnostics'].get('composite_weights')}, "
            f"{r['wall_s']:.0f} s",
            flush=True,
        )
    settings = {
        "method": args.method,
        "contour_weights": not args.no_contour_weights,
        "obs": args.obs,
        "pose_prior": args.pose_prior,
        "supersample": args.supersample,
        "contour_source": args.contour_source,
        "mask_noise": args.mask_noise,
        "sigma": args.sigma,
        **(
            {"rotation_sd": args.rotation_sd, "translation_sd": args.translation_sd}
            if args.pose_prior == "matched"
            else {}
        ),
        "size": args.size,
        "jitter": args.jitter,
    }
    summary = {
        **summarize(rows, settings),
        "seed": args.seed,
        "samples": args.samples,
        "wall_time_s": time.perf_counter() - t0,
    }
    bs.export.write_json(args.out / "cases.json", rows)
    bs.export.write_json(args.out / "summary.json", summary)
    print_summary(summary)
    return 0


# the settings two runs must share to be pooled (everything but the seed, the number of draws and the times)
SETTINGS = (
    "method",
    "contour_weights",
    "obs",
    "pose_prior",
    "supersample",
    "contour_source",
    "mask_noise",
    "sigma",
    "rotation_sd",
    "translation_sd",
    "size",
    "jitter",
)


def summarize(rows, settings: dict, default_samples: int | None = None) -> dict:
    """Coverage of the vertex balls at every level (mean over draws, with the standard error over draws:
    a draw's vertices are strongly correlated, so the draws, not the vertices, are the independent trials),
    along the normal, errors, and the parameter-space calibration when the rows carry the truth's
    whitened parameters."""
    cov, se = mean_coverage(rows)
    cov_n, _ = mean_coverage(rows, "coverage_normal")
    joint = joint_calibration(rows, default_samples) if all(r.get("theta") for r in rows) else {}
    return {
        **settings,
        "n": len(rows),
        "coverage": cov,
        "coverage_se": se,
        "ece": ece(cov),
        "coverage_normal": cov_n,
        "vertex_error_mean": float(np.mean([r["vertex_error_mean"] for r in rows])),
        "surface_mean": float(np.mean([r["surface_mean"] for r in rows])),
        "misfit_mean": float(np.mean([r["misfit"] for r in rows])),
        "wall_s_mean": float(np.mean([r["wall_s"] for r in rows])),
        **joint,
    }


def print_summary(summary: dict) -> None:
    cov, se, cov_n = summary["coverage"], summary["coverage_se"], summary["coverage_normal"]
    print(
        f"{summary['n']} draws: coverage "
        + " / ".join(f"{cov[str(lv)]:.3f} +- {se.get(str(lv), float('nan')):.3f}" for lv in LEVELS)
        + f" at {'/'.join(str(lv) for lv in LEVELS)}; along the normal "
        + " / ".join(f"{cov_n[str(lv)]:.2f}" for lv in LEVELS)
    )
    if "joint_coverage" in summary:
        print(
            "parameters: truth inside the joint credible ellipsoid "
            + " / ".join(f"{summary['joint_coverage'][str(lv)]:.2f}" for lv in LEVELS)
            + "; central intervals, shape "
            + " / ".join(f"{summary['interval_coverage_shape'][str(lv)]:.2f}" for lv in LEVELS)
            + ", pose "
            + " / ".join(f"{summary['interval_coverage_pose'][str(lv)]:.2f}" for lv in LEVELS)
            + f"; mean Mahalanobis^2 {summary['mahalanobis2_mean']:.1f} for {summary['n_params']} parameters "
            f"(calibrated: {summary['mahalanobis2_expected']:.1f}, {summary['mahalanobis2_reference']})"
        )
    if "z_worst" in summary:
        w = summary["z_worst"]
        print(
            f"furthest from calibration: {w['name']} (RMS z {w['rms']:.2f} over {w['draws']} draws, p {w['p']:.3f}; "
            f"among {summary['n_params']} parameters, family-wise p {w['p_family']:.2f})"
        )


def pool(dirs, out: Path, default_samples: int | None = None) -> dict:
    """Pool finished runs (each a ``--out`` folder with ``summary.json`` and ``cases.json``) that differ
    only in their seed: one summary over all their draws, written to ``out/summary.json`` with the runs
    it came from. Runs with different settings, or the same seed twice, are refused. Rows written before
    the posterior sample count was recorded are taken to have ``default_samples``."""
    import json

    runs = []
    for d in map(Path, dirs):
        files = [d / "summary.json", d / "cases.json"]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ValueError(f"--pool: {', '.join(missing)} not found; expected the --out folder of a finished run")
        runs.append((d, json.loads(files[0].read_text()), json.loads(files[1].read_text())))
    ref_dir, ref, _ = runs[0]
    for d, s, _ in runs[1:]:
        diff = [k for k in SETTINGS if s.get(k) != ref.get(k)]
        if diff:
            raise ValueError(
                f"--pool: {d} and {ref_dir} differ in "
                + ", ".join(f"{k} ({s.get(k)!r} against {ref.get(k)!r})" for k in diff)
                + "; only runs that differ in "
                "their seed can be pooled"
            )
    seeds = [s.get("seed") for _, s, _ in runs]
    known = [x for x in seeds if x is not None]
    if len(set(known)) < len(known) or len({str(d.resolve()) for d, _, _ in runs}) < len(runs):
        raise ValueError(f"--pool: the same run or seed twice (seeds {seeds}); each draw must count once")
    rows = [r for _, _, rs in runs for r in rs]
    summary = {
        **summarize(rows, {k: ref.get(k) for k in SETTINGS if k in ref}, default_samples),
        "pooled_from": [
            {"out": str(d), "seed": s.get("seed"), "n": s["n"], "coverage": s["coverage"]} for d, s, _ in runs
        ],
        "wall_time_s": float(sum(s.get("wall_time_s", 0.0) for _, s, _ in runs)),
    }
    out.mkdir(parents=True, exist_ok=True)
    bs.export.write_json(out / "summary.json", summary)
    return summary


def joint_calibration(rows, default_samples: int | None = None) -> dict:
    """Calibration in parameter space (the truth is a prior draw with known whitened parameters): the share
    of draws inside the joint credible ellipsoid and of the central intervals of each shape coefficient and
    pose parameter holding the truth, at every level.

    The ellipsoid is the posterior samples' mean and covariance, estimated from ``n`` draws (each row's
    ``theta["n_samples"]``, else ``default_samples``). The truth's Mahalanobis^2 under an estimated covariance
    is not chi-square: with ``p`` parameters, ``n / (n + 1)`` times it follows Hotelling's ``T^2(p, n - 1)``,
    i.e. ``(n - p) / (p (n - 1))`` times that is ``F(p, n - p)``. Its mean is
    ``p (n + 1) (n - 1) / (n (n - p - 2))``, 10% above ``p`` for 25 parameters and 300 draws: a chi-square
    reading would call a calibrated posterior 10% too narrow. The thresholds are Hotelling's where ``n``
    is known and chi-square otherwise (``mahalanobis2_reference`` says which)."""
    from scipy.stats import chi2, norm
    from scipy.stats import f as f_dist

    d2 = np.array([r["theta"]["mahalanobis2"] for r in rows])
    z = np.array([r["theta"]["z"] for r in rows])
    names = rows[0]["theta"]["names"]
    shape = np.array([n.startswith("alpha") for n in names])
    dim = len(names)
    ns = [r["theta"].get("n_samples", default_samples) for r in rows]
    if all(n is not None and n > dim + 2 for n in ns):
        ns = np.array(ns, dtype=float)

        def inside(lv):
            return np.mean(d2 <= (ns + 1) / ns * dim * (ns - 1) / (ns - dim) * f_dist.ppf(lv, dim, ns - dim))

        expected = float(np.mean(dim * (ns + 1) * (ns - 1) / (ns * (ns - dim - 2))))
        reference = "hotelling"
    else:

        def inside(lv):
            return np.mean(d2 <= chi2.ppf(lv, dim))

        expected, reference = float(dim), "chi-square (sample counts unknown)"
    return {
        "n_params": dim,
        "mahalanobis2_mean": float(d2.mean()),
        "mahalanobis2_expected": expected,
        "mahalanobis2_reference": reference,
        "joint_coverage": {str(lv): float(inside(lv)) for lv in LEVELS},
        "interval_coverage_shape": {
            str(lv): float(np.mean(np.abs(z[:, shape]) <= norm.ppf(0.5 + lv / 2))) for lv in LEVELS
        },
        "interval_coverage_pose": {
            str(lv): float(np.mean(np.abs(z[:, ~shape]) <= norm.ppf(0.5 + lv / 2))) for lv in LEVELS
        },
        "pose_z_rms": dict(
            zip(
                [n for n, s in zip(names, shape) if not s],
                np.sqrt(np.mean(z[:, ~shape] ** 2, axis=0)).round(3).tolist(),
            )
        ),
        "z_worst": worst_parameter(z, names, ns if reference == "hotelling" else None),
    }


def worst_parameter(z, names, n_samples=None) -> dict:
    """The parameter whose z-scores stray furthest from calibration, and whether that is more than chance.

    Each parameter's z-scores over the draws are tested against a standard normal with the two-sided
    chi-square test of their sum of squares (too wide or too narrow). With ``dim`` parameters the smallest
    of ``dim`` p-values is small by chance, so the family-wise p-value (Sidak: ``1 - (1 - p)^dim``) is the
    one to read: a single parameter at p = 0.01 among 25 is what calibration gives one time in four.
    A z-score from ``n`` posterior draws (mean and sd estimated) is ``sqrt(1 + 1/n)`` times Student's t with
    ``n - 1`` degrees of freedom, not normal; where ``n_samples`` is known each is mapped through that
    distribution to a standard normal first, so the test is exact for a calibrated Gaussian posterior sampled
    independently (Laplace); NUTS draws are autocorrelated and make it approximate. Sidak's correction treats the
    parameters' tests as independent; the posterior correlates them, so the family-wise p is approximate too."""
    from scipy.stats import chi2, norm
    from scipy.stats import t as t_dist

    z = np.asarray(z, dtype=float)
    if n_samples is not None:
        ns = np.asarray(n_samples, dtype=float)[:, None]
        z = norm.ppf(t_dist.cdf(z / np.sqrt(1 + 1 / ns), ns - 1))
    n, dim = z.shape
    ss = np.sum(z**2, axis=0)
    p = np.minimum(1.0, 2 * np.minimum(chi2.sf(ss, n), chi2.cdf(ss, n)))
    j = int(np.argmin(p))
    return {
        "name": names[j],
        "rms": float(np.sqrt(ss[j] / n)),
        "p": float(p[j]),
        "p_family": float(1 - (1 - p[j]) ** dim),
        "draws": n,
    }


if __name__ == "__main__":
    sys.exit(main())
