"""Non-rigid surface registration: a deformable model of a reference fitted to a target surface,
with the posterior of the correspondence.

The reference is a :class:`~bayesshape.ShapeModel` (a PCA model, a Gaussian-process model of a
mesh, or both), or a mesh, of which a Gaussian-process model with a two-scale Gaussian kernel
is built. Its shape ``x(alpha) = mean + U D alpha`` (``alpha ~ N(0, I)``) is moved into the
target's frame by a rigid transform ``T``.

The fit is iterated closest points (ICP) with a prior, as in Scalismo's GP registration:

1. **Rigid stage.** From landmark pairs (Kabsch), or else from the principal axes of both
   surfaces (each of the four proper sign choices is refined by rigid ICP; the closest wins).
2. **Non-rigid stages.** Each iteration pairs points in *both* directions, every model vertex
   with its nearest target point and every target point with its nearest model vertex, so that
   thin parts and tips are pulled in as well as pulled onto. Each pair contributes a point-to-
   plane residual along the surface normal (a surface says nothing about sliding along
   itself), with a Student-t likelihood (IRLS weights) that discounts outliers, and pairs whose
   normals disagree or that end on the rim of a hole are dropped. One regularised Gauss-Newton
   step then updates ``alpha`` (prior ``N(0, I)``) and the pose together. The noise scale is
   annealed from ``anneal[0] * noise_sd`` down to ``noise_sd`` while the number of points grows
   (``points``): coarse and smooth first, then the detail.
3. **Posterior.** At the final pairs the likelihood is linear in ``alpha``, so the posterior is
   Gaussian: precision ``I + A^T W A / sd^2``. Along a smooth shaft or across a flat plate the
   normals leave the sliding free, and the prior alone holds it: the per-vertex spread shows
   where the correspondence is uncertain (Madsen et al. 2019).
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import as_faces, as_points, as_positive, as_seed
from .._gaussian import gaussian_draws
from ..inference._problem import fixed_problem
from ..inference.diagnostics import ClosedFormInfo, Diagnostics
from ..io.landmarks import LandmarkSet, read_landmarks
from ..io.mesh import read_mesh
from ..posterior.posterior import Posterior
from ..prior.gp import gp_model
from ..prior.kernels import Kernel, multiscale
from ..prior.model import ShapeModel
from . import _icp

__all__ = ["RegistrationOptions", "Registration", "RegistrationInfo", "register"]


@dataclass(frozen=True)
class RegistrationOptions:
    """Settings of :func:`register`.

    Attributes:
        kernel_sd: standard deviation (mm) of each Gaussian kernel of the GP model built for a
            mesh reference (one per scale).
        kernel_length: correlation length (mm) of each kernel. The defaults, a broad 80 mm
            component of 12 mm and a 25 mm one of 4 mm, suit bones from a vertebra to a femur.
        rank: modes of that GP model (pivoted Cholesky; see :func:`~bayesshape.gp_model`).
        noise_sd: the final noise scale of the point-to-plane residuals, mm; the posterior's.
        anneal: the noise scale of each stage as a multiple of ``noise_sd``, coarse first.
        points: the most model vertices and target points paired in each stage (a random
            subset when there are more), as long as ``anneal``.
        iterations: the most Gauss-Newton steps per stage; a stage ends sooner when no vertex
            moves more than ``tolerance`` mm.
        robust_dof: degrees of freedom of the Student-t likelihood; ``None`` for a Gaussian.
        pose: ``"rigid"`` (a rigid stage, then the pose refined with the shape) or ``"none"``
            (the target is already in the reference's frame).
        landmark_sd: standard deviation (mm) of each landmark pair's residual, per
            coordinate, unless a landmark file gives its own.
        symmetric: pair target points with model vertices too (tips and thin parts).
        tolerance: mm, see ``iterations``.
        n_samples: draws of the posterior (when one is asked for).
    """

    kernel_sd: tuple[float, ...] = (12.0, 4.0)
    kernel_length: tuple[float, ...] = (80.0, 25.0)
    rank: int = 300
    noise_sd: float = 0.5
    anneal: tuple[float, ...] = (16.0, 8.0, 4.0, 2.0, 1.0)
    points: tuple[int, ...] = (1000, 2000, 4000, 8000, 16000)
    iterations: int = 10
    robust_dof: float | None = 4.0
    pose: str = "similarity"
    landmark_sd: float = 2.0
    symmetric: bool = True
    tolerance: float = 0.01
    sliding: float | None = 4.0
    sliding_stages: int | None = None
    n_samples: int = 1000

    def __post_init__(self):
        sds, lens = tuple(self.kernel_sd), tuple(self.kernel_length)
        if not sds or len(sds) != len(lens):
            raise ValueError(
                f"kernel_sd and kernel_length: expected two non-empty tuples of equal length, got {sds} and {lens}"
            )
        for v in (*sds, *lens):
            as_positive(v, "kernel_sd / kernel_length (mm)")
        object.__setattr__(self, "kernel_sd", sds)
        object.__setattr__(self, "kernel_length", lens)
        if not isinstance(self.rank, int) or self.rank < 1:
            raise ValueError(f"rank: expected a positive integer, got {self.rank!r}")
        as_positive(self.noise_sd, "noise_sd (mm)")
        as_positive(self.landmark_sd, "landmark_sd (mm)")
        as_positive(self.tolerance, "tolerance (mm)")
        anneal, pts = tuple(float(a) for a in self.anneal), tuple(int(p) for p in self.points)
        if not anneal or len(anneal) != len(pts):
            raise ValueError(f"anneal and points: expected tuples of equal length, got {anneal} and {pts}")
        if any(a < 1.0 for a in anneal) or any(p < 10 for p in pts):
            raise ValueError("anneal: multiples of noise_sd, each >= 1; points: each >= 10")
        object.__setattr__(self, "anneal", anneal)
        object.__setattr__(self, "points", pts)
        if not isinstance(self.iterations, int) or self.iterations < 1:
            raise ValueError(f"iterations: expected a positive integer, got {self.iterations!r}")
        if self.robust_dof is not None:
            as_positive(self.robust_dof, "robust_dof")
        if self.pose not in ("similarity", "rigid", "none"):
            raise ValueError(f"pose: expected 'similarity', 'rigid' or 'none', got {self.pose!r}")
        if not isinstance(self.n_samples, int) or self.n_samples < 1:
            raise ValueError(f"n_samples: expected a positive integer, got {self.n_samples!r}")

    def kernel(self) -> Kernel:
        """The GP kernel of a mesh reference: the sum of the Gaussian kernels."""
        return multiscale([s**2 for s in self.kernel_sd], list(self.kernel_length))


@dataclass(frozen=True)
class RegistrationInfo:
    """What a registration reports.

    Attributes:
        iterations: Gauss-Newton steps taken in each stage.
        mean_distance_mm: mean distance of the registered vertices to the target surface.
        p95_distance_mm: their 95th percentile.
        rigid_mean_distance_mm: the same mean after the rigid stage alone.
        n_modes: coefficients of the model.
        wall_time_s: seconds, compilation included.
        warnings: what was wrong with the input and how it was handled.
    """

    iterations: tuple[int, ...]
    mean_distance_mm: float
    p95_distance_mm: float
    rigid_mean_distance_mm: float
    n_modes: int
    wall_time_s: float
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "iterations": list(self.iterations),
            "mean_distance_mm": self.mean_distance_mm,
            "p95_distance_mm": self.p95_distance_mm,
            "rigid_mean_distance_mm": self.rigid_mean_distance_mm,
            "n_modes": self.n_modes,
            "wall_time_s": self.wall_time_s,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Registration:
    """The result of :func:`register`.

    Attributes:
        mesh: the registered reference, a ``trimesh.Trimesh`` in the reference's topology and the
            target's frame: vertex ``i`` is the target's point corresponding to reference vertex ``i``.
        coefficients: ``(K,)`` the model coefficients ``alpha`` (prior ``N(0, I)``).
        transform: ``(4, 4)`` the rigid transform from the reference's frame to the target's.
        distances: ``(N,)`` distance of each registered vertex to the target surface, mm.
        model: the deformable model that was fitted, in the reference's frame.
        info: a :class:`RegistrationInfo`.
        landmark_error: distance (mm) between each registered reference landmark and the
            target's, by name; empty without landmarks.
        posterior: with ``posterior=True``, the Gaussian posterior of the correspondence (a
            :class:`~bayesshape.Posterior` in the target's frame: ``credible_radius``,
            ``vertex_std``, ``sample_vertices``, confidence meshes); else ``None``.
    """

    mesh: Any
    coefficients: np.ndarray
    transform: np.ndarray
    distances: np.ndarray
    model: ShapeModel
    info: RegistrationInfo
    landmark_error: dict = field(default_factory=dict)
    posterior: Posterior | None = None


# ---------------------------------------------------------------------------------------- inputs


def _as_mesh(obj, what: str):
    import trimesh

    if isinstance(obj, (str, Path)):
        return read_mesh(obj)
    if hasattr(obj, "vertices") and hasattr(obj, "faces"):
        v = as_points(obj.vertices, f"{what}.vertices")
        return trimesh.Trimesh(v, as_faces(obj.faces, v.shape[0], f"{what}.faces"), process=False)
    if isinstance(obj, tuple) and len(obj) == 2:
        v = as_points(obj[0], f"{what}[0] (vertices)")
        return trimesh.Trimesh(v, as_faces(obj[1], v.shape[0], f"{what}[1] (faces)"), process=False)
    raise ValueError(f"{what}: expected a mesh, a (vertices, faces) pair or a mesh file, got {type(obj).__name__}")


def _as_landmarks(obj, what: str) -> LandmarkSet:
    if isinstance(obj, LandmarkSet):
        return obj
    if isinstance(obj, (str, Path)):
        return read_landmarks(obj)
    pts = as_points(obj, what)
    return LandmarkSet(tuple(str(i) for i in range(pts.shape[0])), pts)


def _pair_landmarks(landmarks) -> tuple[LandmarkSet, LandmarkSet]:
    if not (isinstance(landmarks, (tuple, list)) and len(landmarks) == 2):
        raise ValueError(
            "landmarks: expected a pair (reference landmarks, target landmarks), each a LandmarkSet, a file "
            "or an (L, 3) array"
        )
    ref = _as_landmarks(landmarks[0], "landmarks[0] (reference)")
    tgt = _as_landmarks(landmarks[1], "landmarks[1] (target)")
    unknown = [n for n in tgt.names if n not in ref.names]
    if unknown:
        raise ValueError(
            f"landmarks: the target's landmarks {unknown} are not among the reference's {list(ref.names)}; "
            "landmark ids must match"
        )
    if len(tgt) < 3:
        raise ValueError(f"landmarks: a rigid alignment needs at least 3 landmark pairs, got {len(tgt)}")
    return ref.subset(tgt.names), tgt


def _size(points: np.ndarray) -> float:
    return float(np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean()))


def _check_target(target, ref_size: float, notes: list[str]):
    import trimesh

    from .._geometry import closed_surface_problems

    v, f = np.asarray(target.vertices, np.float64), np.asarray(target.faces)
    size = _size(v)
    ratio = size / ref_size
    if ratio < 0.02 or ratio > 50:
        hint = " (is it in metres? multiply by 1000)" if ratio < 0.02 else " (is the reference in metres?)"
        raise ValueError(
            f"target: its size (RMS radius {size:.4g}) is {ratio:.3g} times the reference's ({ref_size:.4g}); "
            f"both must be in mm{hint}"
        )
    problems = closed_surface_problems(f, v.shape[0])
    if problems:
        msg = f"target: not a closed surface: {'; '.join(problems)}; pairs on the rim of a hole are ignored"
        notes.append(msg)
        warnings.warn(msg, stacklevel=3)
    elif _icp.signed_volume(v, f) < 0:
        msg = "target: its normals point inwards (negative volume); the triangles were flipped to face outwards"
        notes.append(msg)
        warnings.warn(msg, stacklevel=3)
        f = f[:, ::-1]
    return trimesh.Trimesh(v, f, process=False)


# ----------------------------------------------------------------------------------- the fitting


class _Fit:
    """The state of one registration: the model's factor, the target and its tree."""

    def __init__(self, model: ShapeModel, target, options: RegistrationOptions, rng):
        from scipy.spatial import cKDTree

        self.o = options
        self.mean = np.asarray(model.mean, np.float64)
        k = model.n_modes
        self.factor = (np.asarray(model.basis, np.float64) * np.sqrt(np.asarray(model.variance, np.float64))).reshape(
            -1, 3, k
        )
        self.faces = np.asarray(model.faces)
        self.n = self.mean.shape[0]
        self.k = k
        self.tv = np.asarray(target.vertices, np.float64)
        tf = np.asarray(target.faces)
        self.tn = _icp.vertex_normals(self.tv, tf)
        self.t_rim = _icp.boundary_vertices(tf, self.tv.shape[0])
        self.t_tree = cKDTree(self.tv)
        self.rng = rng
        self.lm_rows = None  # (L, 3, K) barycentric combinations of the factor's rows
        self.lm_mean = None
        self.lm_target = None
        self.lm_sd = None
        self._subsets: dict = {}

    def shape(self, alpha):
        return self.mean + self.factor @ alpha

    def set_landmarks(self, bary_ids, bary_w, target_pts, sd):
        self.lm_rows = np.einsum("lj,ljck->lck", bary_w, self.factor[bary_ids])
        self.lm_mean = np.einsum("lj,ljc->lc", bary_w, self.mean[bary_ids])
        self.lm_target = target_pts
        self.lm_sd = sd

    def landmark_positions(self, alpha):
        return self.lm_mean + self.lm_rows @ alpha

    def subsets(self, n_points: int):
        """The model vertices and target points of a stage: a random subset, the same for every step."""
        if n_points not in self._subsets:
            m = self.tv.shape[0]
            sel = self.rng.choice(self.n, n_points, replace=False) if n_points < self.n else np.arange(self.n)
            tsel = self.rng.choice(m, n_points, replace=False) if n_points < m else np.arange(m)
            self._subsets[n_points] = (np.sort(sel), np.sort(tsel))
        return self._subsets[n_points]

    def pairs(self, x, transform, n_points: int, sd: float, *, with_shape: bool, sliding: bool = True):
        """Rows (point-to-plane derivatives, model frame), residuals and weights of the pairs."""
        from scipy.spatial import cKDTree

        r = transform[:3, :3]
        inv = np.linalg.inv(transform)
        c = x.mean(axis=0)
        xn = _icp.vertex_normals(x, self.faces)
        sel, tsel = self.subsets(n_points)
        # model -> target
        xs = x[sel]
        _, j = self.t_tree.query(_icp.apply(transform, xs))
        y = _icp.apply(inv, self.tv[j])
        nrm = self.tn[j] @ r  # target normals in the model's frame
        keep = (~self.t_rim[j]) & (np.einsum("ij,ij->i", nrm, xn[sel]) > 0.3)
        ids = [sel[keep]]
        nrms = [nrm[keep]]
        ys = [y[keep]]
        term = [np.full(int(keep.sum()), 1.0 / max(int(keep.sum()), 1))]
        if self.o.symmetric:
            yt = _icp.apply(inv, self.tv[tsel])
            _, i = cKDTree(x).query(yt)
            tnrm = self.tn[tsel] @ r
            keep = np.einsum("ij,ij->i", tnrm, xn[i]) > 0.3
            ids.append(i[keep])
            nrms.append(xn[i][keep])
            ys.append(yt[keep])
            term.append(np.full(int(keep.sum()), 1.0 / max(int(keep.sum()), 1)))
        ids_a, n_a, y_a = np.concatenate(ids), np.concatenate(nrms), np.concatenate(ys)
        # each direction counts as one observation per model vertex in total
        scale = self.n / len(term)
        w_term = np.concatenate(term) * scale
        diff = y_a - x[ids_a]
        resid = np.einsum("ij,ij->i", n_a, diff)
        w = w_term * _icp.student_weights(resid, sd, self.o.robust_dof)
        dirs = [n_a]
        wts = [w]
        if self.o.sliding is not None and sliding:
            t1, t2 = _icp.tangents(n_a)
            dirs += [t1, t2]
            wts += [w / self.o.sliding**2, w / self.o.sliding**2]
        d_all = np.concatenate(dirs)
        ids_all = np.tile(ids_a, len(dirs))
        resid = np.einsum("ij,ij->i", d_all, np.tile(diff, (len(dirs), 1)))
        cols = []
        if with_shape:
            cols.append(np.einsum("ic,ick->ik", d_all, self.factor[ids_all]))
        if self.o.pose != "none":
            cols += [np.cross(x[ids_all] - c, d_all), d_all]
        if self.o.pose == "similarity":
            cols.append(np.einsum("ij,ij->i", x[ids_all] - c, d_all)[:, None])
        rows = np.concatenate(cols, axis=1)
        return rows, resid, np.concatenate(wts), c

    def landmark_rows(self, alpha, transform, c, with_shape: bool):
        assert self.lm_rows is not None and self.lm_target is not None
        p = self.landmark_positions(alpha)
        resid = (_icp.apply(np.linalg.inv(transform), self.lm_target) - p).reshape(-1)
        cols = []
        if with_shape:
            cols.append(self.lm_rows.reshape(-1, self.k))
        if self.o.pose != "none":
            v = p - c
            skew = np.zeros((len(p), 3, 3))
            skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = v[:, 2], -v[:, 1], v[:, 0]
            skew[:, 1, 0], skew[:, 2, 0], skew[:, 2, 1] = -v[:, 2], v[:, 1], -v[:, 0]
            # d(omega x v)/d omega = -[v]x
            cols += [skew.reshape(-1, 3), np.tile(np.eye(3), (len(p), 1))]
        if self.o.pose == "similarity":
            cols.append((p - c).reshape(-1, 1))
        return np.concatenate(cols, axis=1), resid

    def step(self, alpha, transform, n_points, sd, *, with_shape=True, sliding=True):
        # residuals are measured in the model's frame: a noise of sd mm in the target's frame is
        # sd / scale there (else growing the scale would shrink every misfit)
        sd = sd / float(np.cbrt(np.linalg.det(transform[:3, :3])))
        x = self.shape(alpha)
        rows, resid, w, c = self.pairs(x, transform, n_points, sd, with_shape=with_shape, sliding=sliding)
        if self.lm_rows is not None:
            lrows, lres = self.landmark_rows(alpha, transform, c, with_shape)
            # weights relative to the surface pairs' noise: (sd / landmark sd)^2
            lw = np.repeat((sd / self.lm_sd) ** 2, 3)
            rows, resid, w = np.concatenate([rows, lrows]), np.concatenate([resid, lres]), np.concatenate([w, lw])
        n_pose = {"none": 0, "rigid": 6, "similarity": 7}[self.o.pose]
        a0 = alpha if with_shape else np.zeros(0)
        d_alpha, d_pose, prec = _icp.gauss_newton_step(rows, resid, w, a0, sd, n_pose)
        if n_pose:
            d = np.eye(4)
            rot = _icp.rotation(d_pose[:3]) * (1.0 + (d_pose[6] if n_pose == 7 else 0.0))
            d[:3, :3] = rot
            d[:3, 3] = c - rot @ c + d_pose[3:6]
            transform = transform @ d
        if with_shape:
            alpha = alpha + d_alpha
        move = np.abs(self.shape(alpha) - x).max() if with_shape else float(np.abs(d_pose).max()) * _size(x)
        return alpha, transform, float(move), prec


def _rigid_start(fit: _Fit, ref_lms, tgt_lms) -> np.ndarray:
    """The rigid stage: Kabsch on the landmarks, or the best of the principal-axis frames."""
    zero = np.zeros(fit.k)
    x = fit.shape(zero)
    if ref_lms is not None:
        start = _icp.similarity_matrix(fit.landmark_positions(zero), tgt_lms.points, scale=fit.o.pose == "similarity")
        candidates = [start]
    else:
        cx, fx = _icp.principal_frames(x)
        ct, ft = _icp.principal_frames(fit.tv)
        # the frame as given (centroids matched) first: data are often roughly aligned already
        start = np.eye(4)
        start[:3, 3] = ct - cx
        candidates = [start]
        for f in fx:
            t = np.eye(4)
            t[:3, :3] = ft[0] @ f.T * (_size(fit.tv) / _size(x) if fit.o.pose == "similarity" else 1.0)
            t[:3, 3] = ct - t[:3, :3] @ cx
            candidates.append(t)
    best, best_d = None, np.inf
    for t in candidates:
        for s in range(10):
            sd = fit.o.noise_sd * fit.o.anneal[0] * 2.0 ** max(0, 3 - s)
            _, t, move, _ = fit.step(zero, t, min(fit.o.points[0], 2000), sd, with_shape=False)
            if move < fit.o.tolerance:
                break
        d, _ = fit.t_tree.query(_icp.apply(t, x))
        if float(np.mean(d)) < best_d - 1e-6:
            best, best_d = t, float(np.mean(d))
    assert best is not None
    return best


def register(
    reference,
    target,
    *,
    landmarks=None,
    options: RegistrationOptions | None = None,
    posterior: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> Registration:
    """Register a reference to a target surface: the reference deformed onto the target, in its topology.

    Args:
        reference: a triangle mesh (a trimesh mesh, ``(vertices, faces)`` or a mesh file; a GP
            model of it is built from ``options``'s kernel), or a :class:`~bayesshape.ShapeModel`
            with faces (a PCA model, a GP model, or both: :func:`~bayesshape.augment`).
        target: the target surface (mesh, pair or file), mm; it need not be in correspondence
            with anything or have any particular vertex count.
        landmarks: ``(reference landmarks, target landmarks)``, each a
            :class:`~bayesshape.io.LandmarkSet`, a landmark file (Scalismo ``.json``, Slicer
            ``.mrk.json`` / ``.fcsv``, ``.csv``) or an ``(L, 3)`` array in the same order.
            Named landmarks are paired by name; every target landmark must exist on the
            reference. They fix the rigid stage and stay as a term of the fit.
        options: a :class:`RegistrationOptions` (kernel, rank, noise, stages, robustness).
        posterior: also return the Gaussian posterior of the correspondence.
        seed: seed of the point subsets and the posterior draws.
        progress: print one line per stage to stderr.

    Returns:
        a :class:`Registration`.

    Raises:
        ValueError: a target in other units than the reference (metres), landmark names that
            do not match, or a reference and target that do not overlap after the rigid stage.
            A target that is not closed (holes) or whose normals point inwards is registered
            with a warning.

    Example:
        >>> import bayesshape as bs
        >>> ref, tgt = bs.datasets.example_shapes(2, seed=0)
        >>> reg = bs.register(ref, tgt)                       # doctest: +SKIP
        >>> float(reg.distances.mean()) < 0.5                 # doctest: +SKIP
        True
    """
    t0 = time.perf_counter()
    options = RegistrationOptions() if options is None else options
    if not isinstance(options, RegistrationOptions):
        raise ValueError(f"options: expected a RegistrationOptions, got {type(options).__name__}")
    seed = as_seed(seed)
    rng = np.random.default_rng(seed)
    notes: list[str] = []

    if isinstance(reference, ShapeModel):
        if reference.faces is None:
            raise ValueError("reference: a point-set model cannot be registered to a surface; it needs faces")
        model = reference
    else:
        ref_mesh = _as_mesh(reference, "reference")
        model = gp_model(ref_mesh, options.kernel(), rank=min(options.rank, 3 * len(ref_mesh.vertices)))
    mean = np.asarray(model.mean, np.float64)
    tgt = _check_target(_as_mesh(target, "target"), _size(mean), notes)

    fit = _Fit(model, tgt, options, rng)
    ref_lms = tgt_lms = None
    if landmarks is not None:
        ref_lms, tgt_lms = _pair_landmarks(landmarks)
        ids, w = _barycentric(mean, np.asarray(model.faces), ref_lms.points)
        cov = tgt_lms.covariance
        lm_sd = tgt_lms.sd() if cov is not None else np.full(len(tgt_lms), options.landmark_sd)
        fit.set_landmarks(ids, w, tgt_lms.points, lm_sd)

    transform = np.eye(4)
    if options.pose != "none":
        transform = _rigid_start(fit, ref_lms, tgt_lms)
    x0 = fit.shape(np.zeros(fit.k))
    d_rigid, _ = fit.t_tree.query(_icp.apply(transform, x0))
    rigid_mean = float(np.mean(d_rigid))
    if options.pose != "none" and float(np.median(d_rigid)) > 0.25 * _size(mean):
        raise ValueError(
            f"reference and target do not overlap after the rigid stage (median distance {np.median(d_rigid):.1f} "
            f"mm, {np.median(d_rigid) / _size(mean):.0%} of the reference's size); give landmark pairs, or check "
            "that both are the same bone and in the same units"
        )
    if progress:
        print(f"register: rigid stage, mean distance {rigid_mean:.2f} mm", file=sys.stderr)

    alpha = np.zeros(fit.k)
    its: list[int] = []
    for s, (mult, n_pts) in enumerate(zip(options.anneal, options.points)):
        sd = options.noise_sd * mult
        slide = options.sliding_stages is None or s < options.sliding_stages
        steps = 0
        while steps < options.iterations:
            alpha, transform, move, _ = fit.step(alpha, transform, n_pts, sd, sliding=slide)
            steps += 1
            if move < options.tolerance:
                break
        its.append(steps)
        if progress:
            d, _ = fit.t_tree.query(_icp.apply(transform, fit.shape(alpha)))
            print(
                f"register: stage {s + 1}/{len(options.anneal)} (sd {sd:.2g} mm, {n_pts} points): {steps} steps, "
                f"mean distance {float(np.mean(d)):.3f} mm",
                file=sys.stderr,
            )

    from .._geometry import nearest_surface_distance

    verts = _icp.apply(transform, fit.shape(alpha))
    dist = nearest_surface_distance(verts, fit.tv, np.asarray(tgt.faces))
    lm_err = {}
    if tgt_lms is not None:
        p = _icp.apply(transform, fit.landmark_positions(alpha))
        lm_err = {n: float(e) for n, e in zip(tgt_lms.names, np.linalg.norm(p - tgt_lms.points, axis=1))}

    import trimesh

    mesh = trimesh.Trimesh(verts, np.asarray(model.faces), process=False)
    post = None
    if posterior:
        # the likelihood of the posterior is the surface's alone: point-to-plane residuals, which
        # say nothing of the sliding along the surface (the tangential term only steers the fit)
        _, _, _, prec = fit.step(alpha, transform, options.points[-1], options.noise_sd, sliding=False)
        post = _posterior(model, alpha, prec[: fit.k, : fit.k], transform, options.n_samples, seed)
    info = RegistrationInfo(
        iterations=tuple(its),
        mean_distance_mm=float(dist.mean()),
        p95_distance_mm=float(np.percentile(dist, 95)),
        rigid_mean_distance_mm=rigid_mean,
        n_modes=fit.k,
        wall_time_s=time.perf_counter() - t0,
        warnings=tuple(notes),
    )
    return Registration(mesh, alpha, transform, dist, model, info, landmark_error=lm_err, posterior=post)


def _barycentric(vertices, faces, points):
    """Each point's closest surface point as ``(vertex ids (L, 3), barycentric weights (L, 3))``: the
    projection onto the nearest of the triangles around its nearest vertex, clipped to the triangle."""
    from scipy.spatial import cKDTree

    _, near = cKDTree(vertices).query(points)
    ids, weights = [], []
    for p, v in zip(points, near):
        cand = faces[np.any(faces == v, axis=1)]
        tri = vertices[cand]  # (C, 3, 3)
        e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        d = p[None] - tri[:, 0]
        g = np.stack([np.einsum("ij,ij->i", e1, e1), np.einsum("ij,ij->i", e1, e2), np.einsum("ij,ij->i", e2, e2)], 1)
        det = g[:, 0] * g[:, 2] - g[:, 1] ** 2
        b1 = (g[:, 2] * np.einsum("ij,ij->i", d, e1) - g[:, 1] * np.einsum("ij,ij->i", d, e2)) / det
        b2 = (g[:, 0] * np.einsum("ij,ij->i", d, e2) - g[:, 1] * np.einsum("ij,ij->i", d, e1)) / det
        w = np.clip(np.stack([1 - b1 - b2, b1, b2], 1), 0.0, None)
        w /= w.sum(1, keepdims=True)
        q = np.einsum("cj,cjk->ck", w, tri)
        best = int(np.argmin(((q - p[None]) ** 2).sum(1)))
        ids.append(cand[best])
        weights.append(w[best])
    return np.asarray(ids), np.asarray(weights)


def _posterior(model: ShapeModel, alpha, prec, transform, n_samples: int, seed: int) -> Posterior:
    """The Gaussian posterior of the coefficients, as a Posterior of the model moved into the target frame."""
    import jax
    import jax.numpy as jnp

    cov = np.linalg.inv(prec)
    cov = 0.5 * (cov + cov.T)
    scale = float(np.cbrt(np.linalg.det(transform[:3, :3])))
    r = transform[:3, :3] / scale
    n, k = model.n_vertices, model.n_modes
    basis = np.einsum("ij,njk->nik", r, np.asarray(model.basis, np.float64).reshape(n, 3, k)).reshape(3 * n, k)
    noise = model.vertex_noise
    if noise is not None:
        noise = scale**2 * np.einsum("ij,njk,lk->nil", r, np.asarray(noise, np.float64), r)
    moved = ShapeModel(
        _icp.apply(transform, np.asarray(model.mean, np.float64)),
        basis,
        scale**2 * np.asarray(model.variance, np.float64),
        noise_variance=scale**2 * float(model.noise_variance),
        faces=np.asarray(model.faces),
        total_variance=scale**2 * float(model.total_variance),
        vertex_noise=noise,
        error_factor=model.error_factor,
    )
    dt = moved.variance.dtype
    mean_j, cov_j = jnp.asarray(alpha, dt), jnp.asarray(cov, dt)
    theta = gaussian_draws(jax.random.key(seed), mean_j, cov_j, n_samples)
    problem = fixed_problem(moved, ())
    diag = Diagnostics("closed_form", 0, k, ClosedFormInfo())
    return Posterior(problem, theta[None], "closed_form", diag, theta_map=mean_j, gaussian=(mean_j, cov_j), seed=seed)
