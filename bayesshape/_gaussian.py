"""Draws from a Gaussian whose covariance may be nearly singular."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def gaussian_draws(key, mean, cov, n: int):
    """``(n, d)`` draws of ``N(mean, cov)`` through the eigendecomposition of ``cov``.

    ``jax.random.multivariate_normal(..., method="eigh")`` takes the square root of the
    eigenvalues as they come; in float32 a covariance with a condition number near 1e8 (a pose
    that the data pin down next to modes they do not) has eigenvalues of -1e-9 and the draws
    become NaN. Here the covariance is symmetrised and its eigenvalues clipped at zero, which
    changes it by no more than its own rounding error.
    """
    mean = jnp.asarray(mean)
    cov = jnp.asarray(cov, dtype=mean.dtype)
    cov = 0.5 * (cov + cov.T)
    w, v = jnp.linalg.eigh(cov)
    factor = v * jnp.sqrt(jnp.clip(w, 0.0, None))[None, :]
    z = jax.random.normal(key, (n, mean.shape[-1]), dtype=mean.dtype)
    return mean[None, :] + z @ factor.T
