"""Closed-form posterior for 3D landmarks with Gaussian noise (known pose)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._checks import as_points, as_positive
from .._gaussian import gaussian_draws
from ..obs import Landmarks3D
from ..posterior.posterior import Posterior
from ..prior.model import ShapeModel
from ._problem import fixed_problem
from .diagnostics import ClosedFormInfo, Diagnostics

__all__ = ["posterior_from_landmarks"]


def posterior_from_landmarks(
    model: ShapeModel, ids, points, noise_std: float, *, n_samples: int = 4000, seed: int = 0
) -> Posterior:
    """Exact posterior of the shape given 3D landmarks (the posterior shape model).

    With ``x = mean + U D alpha`` (``D = diag(sqrt(variance))``), landmarks
    ``y = x[ids] + e``, ``e ~ N(0, (noise_std^2 + noise_variance) I + vertex_noise[ids])``, the posterior of
    ``alpha`` is Gaussian (Albrecht et al. 2013):

    ``Sigma = (I + D U_L^T U_L D / s^2)^-1``, ``mu = Sigma D U_L^T (y - mean_L) / s^2``.

    The returned :class:`Posterior` has the same interface as :func:`infer`'s; its
    vertex covariance is exact and its samples are ``n_samples`` fresh draws.

    Args:
        model: the prior.
        ids: ``(L,)`` vertex indices of the landmarks.
        points: ``(L, 3)`` observed positions, mm, in the model's frame.
        noise_std: landmark noise sd per coordinate, mm.
    """
    pts = as_points(points, "points")
    s = as_positive(noise_std, "noise_std (mm)")
    obs = Landmarks3D(ids, pts, s).bind(model.faces, np.asarray(model.mean))
    ids_np = np.asarray(obs.ids)
    k = model.n_modes
    var = s**2 + float(model.noise_variance)
    dt = model.variance.dtype
    u = model.basis.reshape(model.n_vertices, 3, k)[ids_np]
    d = jnp.sqrt(model.variance)
    a = u * d[None, None, :]
    resid = jnp.asarray(pts, dtype=dt) - model.mean[ids_np]
    # each landmark's noise: the measurement's, plus the model's per-vertex noise at its vertex (the
    # landmark sees where the vertex is, sliding included), whitened by its Cholesky factor
    noise = var * jnp.eye(3, dtype=dt)[None]
    if model.vertex_noise is not None:
        noise = noise + model.vertex_noise[ids_np]
    chol = jnp.linalg.cholesky(noise)
    a = jax.scipy.linalg.solve_triangular(chol, a, lower=True).reshape(-1, k)
    resid = jax.scipy.linalg.solve_triangular(chol, resid[:, :, None], lower=True).reshape(-1)
    prec = jnp.eye(k, dtype=dt) + a.T @ a
    cov = jnp.linalg.inv(prec)
    cov = 0.5 * (cov + cov.T)
    mean = cov @ (a.T @ resid)
    problem = fixed_problem(model, (obs,))
    theta = gaussian_draws(jax.random.key(seed), mean, cov, n_samples)
    diag = Diagnostics("closed_form", obs.n_data, k, ClosedFormInfo())
    return Posterior(problem, theta[None], "closed_form", diag, theta_map=mean, gaussian=(mean, cov), seed=seed)
