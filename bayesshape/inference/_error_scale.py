"""The model error's scale for one case, chosen by the Laplace evidence.

With the whitened coefficients ``u`` of the model as fitted (prior ``N(0, I)``) and the
model error's share ``Q Q^T`` of that prior, a factor ``s`` on the model error's sd makes
the prior ``N(0, S)`` with ``S = I + (s^2 - 1) Q Q^T``; write ``u = L z``, ``L L^T = S``,
``z ~ N(0, I)``. Linearising the whitened residuals at the MAP ``u0`` (``r = J u - b``), the
marginal likelihood of the data is Gaussian and, up to a constant free of ``s``,

    log p(data | s) = 1/2 (L c)^T A^-1 (L c) - 1/2 log det A,   A = I + L G L,

with ``G = J^T J`` (the Gauss-Newton information) and ``c = J^T b = (G + I) u0 - grad``
(``grad`` the gradient of the negative log posterior at ``u0``, zero at an exact mode).
Both come from the Laplace approximation already at hand: ``G + I`` is the inverse of its
covariance. The posterior mean under ``s`` is ``z = A^-1 L c``.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ..prior.model_error import _scaled_model
from ._problem import Problem
from .laplace import neg_log_density_and_grad
from .map import refine_map

__all__ = ["log_evidence", "rescale"]

#: the factors tried by ``"evidence"`` (never below 1: one case's evidence is too noisy to narrow
#: the model error below what the training shapes show)
GRID = np.geomspace(1.0, 6.0, 37)


def _pieces(problem: Problem, theta_map, cov):
    k = problem.n_modes + problem.n_pose
    prec = np.linalg.inv(np.asarray(cov, np.float64))[:k, :k]
    prec = 0.5 * (prec + prec.T)
    grad = np.asarray(neg_log_density_and_grad(theta_map, problem)[1], np.float64)[:k]
    u0 = np.asarray(theta_map, np.float64)[:k]
    g = prec - np.eye(k)
    c = prec @ u0 - grad
    q = np.asarray(problem.model.error_factor, np.float64)
    vq, sq, _ = np.linalg.svd(q, full_matrices=False)
    return g, c, vq, sq, k


def _lmat(vq, sq, s: float, k: int) -> np.ndarray:
    grow = np.sqrt(1.0 + (s * s - 1.0) * sq**2)
    lm = np.eye(k)
    n = vq.shape[0]
    lm[:n, :n] += (vq * (grow - 1.0)) @ vq.T
    return lm


def log_evidence(problem: Problem, theta_map, cov, scales) -> np.ndarray:
    """The linearised log evidence (nats, up to a constant) at each factor in ``scales``."""
    g, c, vq, sq, k = _pieces(problem, theta_map, cov)
    out = []
    for s in np.asarray(scales, np.float64):
        lm = _lmat(vq, sq, float(s), k)
        a = np.eye(k) + lm @ g @ lm
        lc = lm @ c
        sign, logdet = np.linalg.slogdet(a)
        out.append(0.5 * lc @ np.linalg.solve(a, lc) - 0.5 * logdet if sign > 0 else -np.inf)
    return np.asarray(out)


def rescale(problem: Problem, theta_map, cov, scale):
    """``(problem, theta, cov, scale)``: the problem with the model error scaled (``scale`` a number,
    or ``"evidence"``: the best of :data:`GRID`), its MAP (the linearised posterior mean, refined
    by Gauss-Newton) with the Gauss-Newton covariance there (or ``None``), and the factor used.
    Unchanged when the factor is 1."""
    if scale == "evidence":
        ev = log_evidence(problem, theta_map, cov, GRID)
        scale = float(GRID[int(np.argmax(ev))])
    scale = float(scale)
    if scale == 1.0:
        return problem, theta_map, cov, scale
    g, c, vq, sq, k = _pieces(problem, theta_map, cov)
    lm = _lmat(vq, sq, scale, k)
    z = np.linalg.solve(np.eye(k) + lm @ g @ lm, lm @ c)
    model, _, v = _scaled_model(problem.model, scale)
    n = problem.n_modes
    theta = np.asarray(theta_map, np.float64).copy()
    theta[:n] = v.T @ z[:n]
    theta[n:k] = z[n:k]
    scaled = eqx.tree_at(lambda p: p.model, problem, model)
    theta_j = jnp.asarray(theta, dtype=theta_map.dtype)
    theta_j, cov_j, _ = refine_map(scaled, theta_j)
    return scaled, theta_j, cov_j, scale
