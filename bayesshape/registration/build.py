"""Shape models from raw surfaces: every surface registered to one reference, then Procrustes and PCA."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..prior._shapes import similarity_transform
from ..prior.build import build_pca_model
from ..prior.gp import gp_model
from ..prior.model import ShapeModel
from .register import Registration, RegistrationOptions, _as_landmarks, _as_mesh, register

__all__ = ["SurfaceModel", "build_model_from_surfaces"]


@dataclass(frozen=True)
class SurfaceModel:
    """What :func:`build_model_from_surfaces` returns.

    Attributes:
        model: the PCA model of the registered surfaces (in the reference's topology).
        registrations: one :class:`~bayesshape.registration.Registration` per surface, in order.
    """

    model: ShapeModel
    registrations: tuple[Registration, ...]


def build_model_from_surfaces(
    surfaces: Sequence,
    reference,
    *,
    landmarks: Sequence | None = None,
    reference_landmarks=None,
    options: RegistrationOptions | None = None,
    align: str = "rigid",
    n_modes: int | None = None,
    correspondence_uncertainty: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> SurfaceModel:
    """Build a shape model from surfaces that are not in correspondence.

    Each surface is registered to the reference (:func:`~bayesshape.registration.register`, a
    GP model of the reference built once and shared), which puts all of them in the
    reference's topology; generalised Procrustes alignment and PCA follow
    (:func:`~bayesshape.build_pca_model`). The model's mean is centred at the origin, where
    views look.

    Args:
        surfaces: meshes or mesh files, mm, at least 2.
        reference: the reference mesh (or file), or a :class:`~bayesshape.ShapeModel` to register with.
        landmarks: one landmark set (a :class:`~bayesshape.io.LandmarkSet` or a file) per
            surface, paired by name with ``reference_landmarks``; ``None`` to align by the
            surfaces' principal axes.
        reference_landmarks: the reference's landmarks (needed with ``landmarks``).
        options: the registration's :class:`~bayesshape.registration.RegistrationOptions`.
        align: ``"rigid"`` or ``"similarity"`` Procrustes before the PCA.
        n_modes: keep this many modes (default: all).
        correspondence_uncertainty: register with the posterior, and give the model the mean
            of the registrations' per-vertex posterior covariances as its ``vertex_noise``:
            the correspondence is not known exactly, and the model says so (Madsen et al. 2019).
        seed: seed of every registration.
        progress: one line per surface on stderr.

    Example:
        >>> built = build_model_from_surfaces(paths, "reference.ply", landmarks=lm_paths,
        ...                                   reference_landmarks="reference.json")  # doctest: +SKIP
        >>> built.model.n_modes                                                       # doctest: +SKIP
        6
    """
    surfaces = list(surfaces)
    if len(surfaces) < 2:
        raise ValueError(f"surfaces: expected at least 2 surfaces, got {len(surfaces)}")
    if align not in ("rigid", "similarity"):
        raise ValueError(f"align: expected 'rigid' or 'similarity', got {align!r}")
    if landmarks is not None:
        landmarks = list(landmarks)
        if len(landmarks) != len(surfaces):
            raise ValueError(f"landmarks: expected one per surface ({len(surfaces)}), got {len(landmarks)}")
        if reference_landmarks is None:
            raise ValueError("reference_landmarks: needed to pair the surfaces' landmarks with the reference's")
        ref_lms = _as_landmarks(reference_landmarks, "reference_landmarks")
    options = RegistrationOptions() if options is None else options
    if isinstance(reference, ShapeModel):
        model = reference
    else:
        ref_mesh = _as_mesh(reference, "reference")
        model = gp_model(ref_mesh, options.kernel(), rank=min(options.rank, 3 * len(ref_mesh.vertices)))
    regs = []
    for i, surface in enumerate(surfaces):
        lms = None if landmarks is None else (ref_lms, landmarks[i])
        try:
            reg = register(
                model, surface, landmarks=lms, options=options, posterior=correspondence_uncertainty, seed=seed
            )
        except ValueError as e:
            name = surface if isinstance(surface, str) else type(surface).__name__
            raise ValueError(f"surface {i} ({name}): {e}") from None
        regs.append(reg)
        if progress:
            lm = f", landmarks {np.mean(list(reg.landmark_error.values())):.2f} mm" if reg.landmark_error else ""
            print(
                f"build-model: registered {i + 1}/{len(surfaces)}: surface distance "
                f"{reg.info.mean_distance_mm:.3f} mm{lm}, {reg.info.wall_time_s:.1f} s",
                file=sys.stderr,
            )
    # centred: raw surfaces sit wherever their scanner put them, and views look at the origin
    centred = [np.asarray(r.mesh.vertices) - np.asarray(r.mesh.vertices).mean(0) for r in regs]
    pca = build_pca_model(centred, faces=np.asarray(model.faces), align=align, n_modes=n_modes)
    mean = np.asarray(pca.mean, np.float64)
    mean = mean - mean.mean(0)
    noise = _correspondence_noise(mean, regs, align) if correspondence_uncertainty else None
    pca = ShapeModel(
        mean, pca.basis, pca.variance, faces=pca.faces, total_variance=float(pca.total_variance), vertex_noise=noise
    )
    return SurfaceModel(pca, tuple(regs))


def _correspondence_noise(mean: np.ndarray, regs, align: str) -> np.ndarray:
    """``(N, 3, 3)`` the mean per-vertex posterior covariance of the registrations, rotated (and
    scaled) into the frame of the model's mean."""
    cov = np.zeros((mean.shape[0], 3, 3))
    for r in regs:
        s, rot, _ = similarity_transform(np.asarray(r.mesh.vertices), mean, scale=align == "similarity")
        c = np.asarray(r.posterior.vertex_covariance())
        cov += s**2 * np.einsum("ij,njk,lk->nil", rot, c, rot)
    cov /= len(regs)
    return 0.5 * (cov + np.swapaxes(cov, 1, 2))
