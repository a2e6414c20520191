"""Shared pieces of the experiments: test cases (held-out and failure cases), one
reconstruction, and the metrics (coverage, calibration error, rank correlation, AUROC,
surface distance, Dice)."""

from __future__ import annotations

import dataclasses
import time
import warnings

import jax.numpy as jnp
import numpy as np
import trimesh
from scipy.spatial.transform import Rotation
from scipy.stats import rankdata, spearmanr

import bayesshape as bs
from bayesshape._geometry import nearest_surface_distance, surface_distances, volume_dice

LEVELS = (0.5, 0.8, 0.9, 0.95)


@dataclasses.dataclass
class Case:
    name: str
    kind: str  # "held_out" or the failure type
    truth: trimesh.Trimesh
    views: list  # views the data are simulated in
    model_views: list  # views the likelihood uses (differ for a miscalibrated view)
    jitter: float = 0.5  # contour noise, px
    scale: float = 1.0
    occlude: float = 0.0  # share of each contour removed (a band of rows)


def move(mesh, rng, rot_sd=0.02, trans_sd=3.0, center=None, return_pose=False):
    """A random rigid motion: rotation vector ``N(0, rot_sd^2 I)`` (rad) about ``center``
    (default: the mesh's vertex centroid), then a translation ``N(0, trans_sd^2 I)`` (mm).
    ``return_pose``: also return ``(rotvec, translation)``."""
    c = mesh.vertices.mean(0) if center is None else np.asarray(center, dtype=np.float64)
    rotvec = rng.normal(scale=rot_sd, size=3)
    t = rng.normal(scale=trans_sd, size=3)
    v = (mesh.vertices - c) @ Rotation.from_rotvec(rotvec).as_matrix().T + c + t
    moved = trimesh.Trimesh(v, mesh.faces, process=False)
    return (moved, (rotvec, t)) if return_pose else moved


def make_views(n_views: int, size: int):
    if n_views == 2:
        return list(bs.biplanar(field_of_view=480, detector_shape=(size, size)))
    if n_views == 1:
        return [bs.biplanar(field_of_view=480, detector_shape=(size, size))[0]]
    return [
        bs.carm_view(
            lao=a,
            detector_shape=(size, size),
            pixel_spacing=480 * 1.5 / size,
            source_to_isocenter=800,
            source_to_detector=1200,
        )
        for a in np.linspace(0, 180, n_views, endpoint=False)
    ]


def deform(mesh, kind: str):
    """Failure cases the model cannot explain."""
    v = mesh.vertices.copy()
    faces = mesh.faces
    z = v[:, 2]
    z0, z1 = z.min(), z.max()
    if kind == "scaled":
        c = v.mean(0)
        v = c + 1.15 * (v - c)
    elif kind == "mirrored":
        c = v.mean(0)
        v[:, 0] = 2 * c[0] - v[:, 0]
        faces = faces[:, ::-1]
    elif kind == "fracture":
        # a malunited fracture: the distal 45% angulated by 12 degrees and shifted 4 mm
        cut = z0 + 0.45 * (z1 - z0)
        sel = z < cut
        pivot = np.array([v[:, 0].mean(), v[:, 1].mean(), cut])
        r = Rotation.from_rotvec([np.radians(12.0), 0.0, 0.0]).as_matrix()
        v[sel] = (v[sel] - pivot) @ r.T + pivot + np.array([4.0, 0.0, 0.0])
    elif kind == "deformity":
        # a bowed shaft: lateral bending, 10 mm at mid-length
        t = (z - z0) / (z1 - z0)
        v[:, 0] += 10.0 * np.sin(np.pi * t)
    else:
        raise ValueError(kind)
    return trimesh.Trimesh(v, faces, process=False)


def miscalibrate(view):
    """The same view with its source and detector shifted 8 mm along the detector's vertical axis ``v``.

    A calibration error the other view can contradict: a shift along ``u`` of the lateral view would be
    a shift along the AP beam, i.e. a pure translation of the bone that no image shows.
    """
    shift = 8.0 * np.asarray(view.v)
    return bs.XRayView._make(
        np.asarray(view.source) + shift,
        np.asarray(view.origin) + shift,
        np.asarray(view.u),
        np.asarray(view.v),
        np.asarray(view.direction),
        np.asarray(view.spacing),
        view.detector_shape,
        view.is_parallel,
    )


def _fine_views(views, factor: int) -> list:
    """The same detectors with ``factor`` times finer pixels; with an odd ``factor``, the centre of
    native pixel ``(i, j)`` is the centre of fine pixel ``(factor i + (factor - 1) / 2, ...)``."""
    return [
        bs.XRayView._make(
            np.asarray(v.source),
            np.asarray(v.origin)
            - 0.5 * (1 - 1 / factor) * (np.asarray(v.u) * v.spacing[1] + np.asarray(v.v) * v.spacing[0]),
            np.asarray(v.u),
            np.asarray(v.v),
            np.asarray(v.direction),
            np.asarray(v.spacing) / factor,
            (v.detector_shape[0] * factor, v.detector_shape[1] * factor),
            v.is_parallel,
        )
        for v in views
    ]


def noisy_masks(case: Case, seed: int, sigma: float, factor: int = 9) -> list:
    """Masks drawn from the probit model of :class:`bayesshape.obs.Silhouette`, independently of its code:
    the signed distance (px, positive inside) of each pixel centre to the truth's silhouette, from the
    Euclidean distance transform of a ``factor`` times finer rendered mask (error about ``0.5 / factor`` px),
    plus Gaussian noise of sd ``sigma`` px, thresholded at 0. ``sigma = 0``: the native mask, up to that error."""
    from scipy.ndimage import distance_transform_edt

    if factor % 2 != 1:
        raise ValueError(f"factor: expected an odd integer, got {factor}")
    rng = np.random.default_rng(seed)
    fine = bs.simulate_xray(case.truth, _fine_views(case.views, factor), seed=seed, noise=0.01).masks
    out = []
    for m in fine:
        s = np.where(m, distance_transform_edt(m) - 0.5, 0.5 - distance_transform_edt(~m)) / factor
        s = s[factor // 2 :: factor, factor // 2 :: factor]
        out.append(s + sigma * rng.standard_normal(s.shape) > 0)
    return out


def _fine_contours(case: Case, seed: int, factor: int, counts) -> list:
    """Contour points of a ``factor`` times finer mask in the same detectors, mapped to the case's pixels,
    jittered by ``case.jitter`` px and subsampled to ``counts`` points per view: the native mask's
    quantisation (half-pixel steps shared along runs of pixels) shrinks ``factor`` times. The random
    subsample is sparser along the outline than a native mask's points, which leaves gaps in the
    model-to-image distance image (0.7 px RMS at the truth against 0.6 px; docs/experiments.md)."""
    rng = np.random.default_rng(seed)
    fine = _fine_views(case.views, factor)
    sim = bs.simulate_xray(case.truth, fine, seed=seed, noise=0.01)
    probe = np.asarray(case.truth.vertices)[:: max(1, len(case.truth.vertices) // 50)]
    out = []
    for v, vf, pts, n in zip(case.views, fine, sim.contours, counts):
        # the same detector: fit the (affine) map between the two pixel grids on projected points
        a = np.asarray(vf.project(probe))
        b = np.asarray(v.project(probe))
        coef, *_ = np.linalg.lstsq(np.c_[a, np.ones(len(a))], b, rcond=None)
        q = np.c_[pts, np.ones(len(pts))] @ coef
        q = q[rng.choice(len(q), size=min(n, len(q)), replace=False)]
        out.append(q + rng.normal(scale=case.jitter, size=q.shape))
    return out


def exact_contours(case: Case, seed: int, spacing: float = 1.0) -> list:
    """Contour points drawn from the contour likelihood's own noise model: points along the truth's
    projected occluding contour (its contour-generator edges, :func:`bayesshape.projection.contour_generator`,
    interior folds included), one per ``spacing`` px of length from a random start, jittered by ``case.jitter`` px
    (isotropic Gaussian). No pixel quantisation: the control that separates the likelihood and the
    inference from the quantisation of masks (docs/experiments.md)."""
    from bayesshape.projection.render import contour_generator
    from bayesshape.projection.topology import Topology

    rng = np.random.default_rng(seed)
    topo = Topology.from_faces(np.asarray(case.truth.faces), len(case.truth.vertices))
    out = []
    for view in case.views:
        on, seg = contour_generator(jnp.asarray(case.truth.vertices), topo, view)
        seg = np.asarray(seg)[np.asarray(on)]
        a, b = seg[:, 0], seg[:, 1]
        cum = np.concatenate([[0.0], np.cumsum(np.linalg.norm(b - a, axis=1))])
        s = (np.arange(int(cum[-1] / spacing)) + rng.uniform()) * spacing
        k = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(a) - 1)
        t = np.clip((s - cum[k]) / np.maximum(cum[k + 1] - cum[k], 1e-12), 0.0, 1.0)
        p = a[k] + t[:, None] * (b[k] - a[k])
        out.append(p + case.jitter * rng.standard_normal(p.shape))
    return out


def observations(
    case: Case,
    seed: int,
    kind: str = "contour",
    sigma: float | None = None,
    supersample: int = 1,
    source: str = "mask",
    mask_noise: float = 0.0,
    drr_pixel: str = "centre",
):
    """The case's observations: ``kind`` ``"contour"`` (points of the mask's outline, or ``source="exact"``),
    ``"drr"``, or ``"silhouette"`` (the mask itself, with probit noise of sd ``mask_noise`` px; likelihood
    sigma default ``mask_noise``, or 0.5 px for a noise-free mask). DRRs are simulated and modelled with
    pixels sampled as ``drr_pixel`` says (``"centre"`` or ``"area"``)."""
    sim = bs.simulate_xray(
        case.truth, case.views, seed=seed, noise=0.01, contour_jitter=max(case.jitter, 1e-6), pixel=drr_pixel
    )
    if kind == "silhouette":
        masks = sim.masks if mask_noise == 0 else noisy_masks(case, seed, mask_noise)
        s = sigma if sigma is not None else (mask_noise if mask_noise > 0 else 0.5)
        return [bs.obs.Silhouette(v, m, s) for v, m in zip(case.model_views, masks)], sim
    if supersample > 1 and kind == "contour":
        sim = dataclasses.replace(
            sim, contours=tuple(_fine_contours(case, seed, supersample, [len(c) for c in sim.contours]))
        )
    if source == "exact" and kind == "contour":
        sim = dataclasses.replace(sim, contours=tuple(exact_contours(case, seed)))
    obs = []
    for i, view in enumerate(case.model_views):
        if kind == "drr":
            obs.append(bs.obs.DRR(view, sim.drr[i], max(sim.noise_sd, 1e-3), mu=sim.mu, pixel=drr_pixel))
            continue
        pts = sim.contours[i]
        if case.occlude > 0:
            rows = pts[:, 0]
            lo = np.quantile(rows, 0.5)
            hi = np.quantile(rows, min(0.5 + case.occlude, 1.0))
            pts = pts[(rows < lo) | (rows > hi)]
        obs.append(bs.obs.Contour(view, pts, sigma if sigma is not None else max(case.jitter, 0.5)))
    return obs, sim


def method_config(
    method: str,
    *,
    num_warmup: int = 300,
    num_chains: int = 2,
    svi_steps: int = 1500,
    is_rounds: int = 4,
    is_samples: int = 1000,
    nuts_mass: str = "laplace",
):
    """The method object for a method name and the experiments' settings."""
    if method == "nuts":
        return bs.NUTS(num_warmup=num_warmup, num_chains=num_chains, mass=nuts_mass)
    if method == "svi":
        return bs.SVI(steps=svi_steps)
    if method == "importance":
        return bs.Importance(rounds=is_rounds, samples=is_samples)
    return bs.Laplace()


def reconstruct(
    model,
    case: Case,
    *,
    method: str,
    seed: int,
    kind: str = "contour",
    sigma=None,
    num_samples: int = 400,
    num_warmup: int = 300,
    num_chains: int = 2,
    residual_cov=None,
    likelihood_faces=None,
    svi_steps: int = 1500,
    contour_weights: bool = True,
    is_rounds: int = 4,
    is_samples: int = 1000,
    supersample: int = 1,
    truth_theta=None,
    contour_source: str = "mask",
    mask_noise: float = 0.0,
    drr_pixel: str = "centre",
    pose=None,
) -> dict:
    """One reconstruction and its metrics (errors in mm); ``pose`` is the pose prior given to
    :func:`bayesshape.infer` (default ``bs.RigidPose()``). ``truth_theta``: the truth's whitened parameters
    (when it is a draw from the prior infer is given): adds their z-scores and Mahalanobis distance under
    the posterior. ``drr_pixel``: how DRRs are simulated and modelled (:func:`observations`)."""
    obs, _ = observations(case, seed, kind, sigma, supersample, contour_source, mask_noise, drr_pixel=drr_pixel)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        post = bs.infer(
            model,
            obs,
            method=method_config(
                method,
                num_warmup=num_warmup,
                num_chains=num_chains,
                svi_steps=svi_steps,
                is_rounds=is_rounds,
                is_samples=is_samples,
            ),
            pose=pose or bs.RigidPose(),
            likelihood=bs.LikelihoodOptions(coarse_faces=likelihood_faces, composite_weights=contour_weights),
            num_samples=num_samples,
            seed=seed,
            progress=False,
        )
    wall = time.perf_counter() - t0
    out = metrics(post, case.truth)
    out.update(
        name=case.name,
        kind=case.kind,
        method=method,
        obs=kind,
        views=len(case.views),
        jitter=case.jitter,
        drr_pixel=drr_pixel if kind == "drr" else None,
        wall_s=wall,
        warnings=[str(w.message)[:160] for w in caught],
        diagnostics={
            k: v
            for k, v in post.diagnostics.to_dict().items()
            if k
            in (
                "max_rhat",
                "min_ess_bulk",
                "min_ess_tail",
                "divergences",
                "converged",
                "composite_weights",
                "laplace_hessian",
                "mean_num_steps",
                "map_newton_steps",
                "map_newton_decrement",
                "is_ess",
                "is_khat",
                "tree_depth_saturated",
            )
        },
    )
    if residual_cov is not None:
        out["with_model_error"] = coverage(post.with_model_error(residual_cov, seed=seed), case.truth)
    if truth_theta is not None:
        th = np.asarray(post.flat_theta(), dtype=np.float64)
        d = np.asarray(truth_theta, dtype=np.float64) - th.mean(0)
        cov = np.cov(th.T)
        out["theta"] = {
            "names": post.problem.names(),
            "z": (d / np.sqrt(np.diag(cov))).tolist(),
            "mahalanobis2": float(d @ np.linalg.solve(cov, d)),
            "n_samples": int(th.shape[0]),
        }
    return out


def coverage(post, truth) -> dict:
    err = np.linalg.norm(post.mean_vertices() - truth.vertices, axis=1)
    return {str(lv): float(np.mean(err <= post.credible_radius(lv))) for lv in LEVELS}


def normal_coverage(post, truth) -> dict:
    """Coverage along the surface normal: the distance of each mean vertex to the true surface
    against the central interval ``+- z * normal_std`` (Gaussian), at every level."""
    from scipy.stats import norm

    d = nearest_surface_distance(post.mean_vertices(), truth.vertices, truth.faces)
    sd = post.normal_std()
    return {str(lv): float(np.mean(d <= norm.ppf(0.5 + lv / 2) * sd)) for lv in LEVELS}


def metrics(post, truth) -> dict:
    mean = post.mean_vertices()
    err = np.linalg.norm(mean - truth.vertices, axis=1)
    r95 = post.credible_radius(0.95)
    d = surface_distances(
        jnp.asarray(mean), jnp.asarray(post.faces), jnp.asarray(truth.vertices), jnp.asarray(truth.faces)
    )
    rel = post.reliability(tolerance_mm=2.0)
    return {
        "coverage": coverage(post, truth),
        "coverage_normal": normal_coverage(post, truth),
        "vertex_error_mean": float(err.mean()),
        "surface_mean": float(d.mean()),
        "surface_p95": float(np.quantile(d, 0.95)),
        "dice": volume_dice(mean, post.faces, truth.vertices, truth.faces, pitch=3.0),
        "mean_r95": float(r95.mean()),
        "mean_std": float(post.vertex_std().mean()),
        "spearman_vertex": float(spearmanr(r95, err).statistic),
        "score": float(rel.score),
        "misfit": max(m["mean_sq_std_residual"] for m in rel.misfit),
        "flagged": not rel.reliable,
        "vertex_auroc": auroc(r95, err > 2.0),
    }


def floor(model, truth) -> float:
    """Generalization floor: mean surface distance of the model's best fit (rigid + shape) to the truth."""
    x, fit = bs.prior.best_fit(model, truth.vertices, align="rigid")
    d = surface_distances(jnp.asarray(fit), jnp.asarray(model.faces), jnp.asarray(x), jnp.asarray(truth.faces))
    return float(d.mean())


def auroc(score, label) -> float | None:
    """Area under the ROC curve of ``score`` for binary ``label`` (Mann-Whitney), None if one class is empty."""
    score, label = np.asarray(score, dtype=np.float64), np.asarray(label, dtype=bool)
    n1, n0 = int(label.sum()), int((~label).sum())
    if n1 == 0 or n0 == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[label].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def mean_coverage(rows, key: str = "coverage") -> tuple[dict, dict]:
    """The mean over cases of ``row[key]`` at every level, and its standard error over cases (``{}`` for
    fewer than two). A case's vertices are covered or missed largely together (the pose and a few shape
    directions move them all), so the cases, not the vertices, are the independent trials."""
    vals = np.array([[r[key][str(lv)] for lv in LEVELS] for r in rows], dtype=np.float64)
    mean = {str(lv): float(m) for lv, m in zip(LEVELS, vals.mean(0))}
    se = {str(lv): float(e) for lv, e in zip(LEVELS, vals.std(0, ddof=1) / np.sqrt(len(rows)))} if len(rows) > 1 else {}
    return mean, se


def ece(cov: dict) -> float:
    """Expected calibration error over the levels: mean |coverage - level|."""
    return float(np.mean([abs(cov[str(lv)] - lv) for lv in LEVELS]))
