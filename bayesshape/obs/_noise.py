"""Noise models shared by the observation types."""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax.scipy.special import gammaln


def log_density(resid, sigma, df: float | None):
    """Sum of i.i.d. log densities of residuals ``resid`` with scale ``sigma``.

    Gaussian when ``df`` is None, else Student-t with ``df`` degrees of freedom
    (heavier tails: robust to outliers).
    """
    r = resid / sigma
    n = resid.size
    if df is None:
        return -0.5 * jnp.sum(r * r) - n * jnp.log(sigma) - 0.5 * n * math.log(2 * math.pi)
    nu = float(df)
    const = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * math.log(nu * math.pi)
    return n * const - n * jnp.log(sigma) - 0.5 * (nu + 1) * jnp.sum(jnp.log1p(r * r / nu))


def check_df(df):
    if df is None:
        return None
    d = float(df)
    if not math.isfinite(d) or d <= 0:
        raise ValueError(f"df: expected positive Student-t degrees of freedom or None (Gaussian), got {df}")
    return d
