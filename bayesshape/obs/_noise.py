"""Noise models shared by the observation types."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax.scipy.special import gammaln


def gaussian_log_density(sum_sq, n, sigma):
    """The log density of ``n`` i.i.d. Gaussian residuals of sd ``sigma`` whose squares sum to
    ``sum_sq``: the one Gaussian log-density of the package."""
    return -0.5 * sum_sq / sigma**2 - n * jnp.log(sigma) - 0.5 * n * math.log(2 * math.pi)


def log_density(resid, sigma, df: float | None):
    """Sum of i.i.d. log densities of residuals ``resid`` with scale ``sigma``.

    Gaussian when ``df`` is None, else Student-t with ``df`` degrees of freedom
    (heavier tails: robust to outliers).
    """
    n = resid.size
    if df is None:
        r = resid / sigma
        return gaussian_log_density(jnp.sum(r * r) * sigma**2, n, sigma)
    r = resid / sigma
    nu = float(df)
    const = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * math.log(nu * math.pi)
    return n * const - n * jnp.log(sigma) - 0.5 * (nu + 1) * jnp.sum(jnp.log1p(r * r / nu))


def log_density_terms(resid, sigma, df: float | None):
    """The terms of :func:`log_density`, one per residual (same shape as ``resid``)."""
    r = resid / sigma
    if df is None:
        return -0.5 * r * r - jnp.log(sigma) - 0.5 * math.log(2 * math.pi)
    nu = float(df)
    const = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * math.log(nu * math.pi)
    return const - jnp.log(sigma) - 0.5 * (nu + 1) * jnp.log1p(r * r / nu)


def fisher_scale(df: float | None) -> float:
    """Square root of the Fisher information of a location, in units of ``1 / sigma^2``:
    1 for Gaussian noise, ``sqrt((df + 1) / (df + 3))`` for Student-t."""
    return 1.0 if df is None else math.sqrt((float(df) + 1.0) / (float(df) + 3.0))


def log_sigma_information(n: int, df: float | None) -> float:
    """Fisher information of ``log(sigma)`` from ``n`` residuals: ``2 n`` for Gaussian noise,
    ``2 n df / (df + 3)`` for Student-t."""
    return 2.0 * n if df is None else 2.0 * n * float(df) / (float(df) + 3.0)


def check_df(df):
    if df is None:
        return None
    d = float(df)
    if not math.isfinite(d) or d <= 0:
        raise ValueError(f"df: expected positive Student-t degrees of freedom or None (Gaussian), got {df}")
    return d
