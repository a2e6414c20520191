"""The Laplace approximation: a Gaussian at the MAP with the inverse (Gauss-Newton or
finite-difference) Hessian of the negative log posterior as covariance."""

from __future__ import annotations

import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._gaussian import gaussian_draws
from ._problem import Problem

__all__ = ["laplace_covariance", "laplace_draws", "neg_log_density_and_grad"]


def _neg_log_density(theta, problem):
    return -problem.log_density(theta)


# module-level jitted functions take the problem as an argument, so repeated inferences with
# observations of the same shapes (experiments, leave-one-out, the tests) reuse one compilation
neg_log_density_and_grad = jax.jit(jax.value_and_grad(_neg_log_density))


def _gn_information(problem, theta_map):
    """``J^T J`` over the shape and pose entries of ``theta``, with ``J`` the Jacobian of every
    observation's whitened residuals at ``theta_map`` (one linearisation, then one
    forward-mode pass per parameter)."""
    k = problem.n_modes + problem.n_pose
    sig = problem.sigmas(theta_map)

    def resid(x):
        vs = problem.observation_vertices(problem.vertices(jnp.concatenate([x, theta_map[k:]])))
        return jnp.concatenate(
            [o.whitened_residuals(v, sigma=s).reshape(-1) for o, s, v in zip(problem.observations, sig, vs)]
        )

    _, lin = jax.linearize(resid, theta_map[:k])
    jt = jax.lax.map(lin, jnp.eye(k, dtype=theta_map.dtype))
    return jt @ jt.T


_gn_info = eqx.filter_jit(_gn_information)


def laplace_covariance(problem: Problem, theta_map, hessian: str = "gauss-newton", step: float = 1e-2):
    """Covariance of the Laplace approximation and the Hessian used (``"gauss-newton"`` or
    ``"finite-difference"``).

    ``"gauss-newton"`` (default): the prior precision (the identity) plus the Fisher
    information of the data at the MAP, ``J^T J`` with ``J`` the exact (autodiff) Jacobian
    of the observations' whitened residuals (:meth:`Observation.whitened_residuals`), plus
    each inferred noise scale's Fisher information on its own. Positive definite by
    construction, exact for linear-Gaussian data, and it leaves out the second-derivative
    terms that rasterised image likelihoods get wrong (kinks at the pixel scale). Used when
    every observation implements it; otherwise the finite-difference Hessian.

    ``"finite-difference"``: central differences of the exact gradient (``2 dim`` gradient
    evaluations, step ``1e-2`` in whitened units, i.e. a hundredth of a prior sd); its
    eigenvalues are clipped below at 1, the prior precision (negative curvature from
    non-convexity or rounding keeps the prior variance, with a warning).
    """
    dim = problem.dim
    if hessian == "gauss-newton" and all(o.has_gauss_newton() for o in problem.observations):
        k = problem.n_modes + problem.n_pose
        info = np.asarray(_gn_info(problem, theta_map), dtype=np.float64)
        if np.all(np.isfinite(info)):
            h = np.eye(dim)
            h[:k, :k] += info
            for i, o in enumerate(problem.observations[: problem.n_noise]):
                h[k + i, k + i] += float(problem.noise_sd or 0.0) ** 2 * o.log_sigma_information()
            cov: Any = np.linalg.inv(0.5 * (h + h.T))
            return jnp.asarray(0.5 * (cov + cov.T), dtype=theta_map.dtype), "gauss-newton"
        warnings.warn(
            "Laplace: the Gauss-Newton information is not finite at the MAP; using the finite-difference Hessian",
            UserWarning,
            stacklevel=3,
        )
    # the value-and-gradient function the MAP fit compiled (a separate gradient function would compile again)
    eye = jnp.eye(dim, dtype=theta_map.dtype)
    cols = [
        (
            neg_log_density_and_grad(theta_map + step * e, problem)[1]
            - neg_log_density_and_grad(theta_map - step * e, problem)[1]
        )
        / (2 * step)
        for e in eye
    ]
    hfd = jnp.stack(cols, axis=1)
    hsym = 0.5 * (hfd + hfd.T)
    w, v = jnp.linalg.eigh(hsym)
    if float(w.min()) < 0.0:
        warnings.warn(
            "Laplace: the Hessian at the MAP is not positive definite (a saddle or a poorly converged "
            "MAP); directions of negative curvature keep their prior variance",
            UserWarning,
            stacklevel=3,
        )
    w = jnp.maximum(w, 1.0)
    cov = (v / w[None, :]) @ v.T
    return 0.5 * (cov + cov.T), "finite-difference"


def laplace_draws(key, theta_map, cov, num_samples: int):
    """``(1, num_samples, dim)`` draws of the Laplace Gaussian."""
    return gaussian_draws(key, theta_map, cov, num_samples)[None]
