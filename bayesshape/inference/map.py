"""The maximum a posteriori fit: L-BFGS (SciPy) on the jit-compiled log density, then
Gauss-Newton steps to the mode itself."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._problem import Problem
from .laplace import laplace_covariance, neg_log_density_and_grad

__all__ = ["find_map", "refine_map"]


def _neg_log_density_part(part, theta, problem, lo, hi):
    return -problem.log_density(jnp.concatenate([theta[:lo], part, theta[hi:]]))


_vg_part = jax.jit(jax.value_and_grad(_neg_log_density_part), static_argnums=(3, 4))


def _minimize(vg, x0, steps: int):
    """L-BFGS (SciPy) on a jit-compiled value-and-gradient ``vg(x)``; returns ``(x, loss history)``."""
    from scipy.optimize import minimize

    dtype = x0.dtype
    history = []

    def f(x):
        try:
            v, g = vg(jnp.asarray(x, dtype=dtype))
            v = float(v)
        except eqx.EquinoxRuntimeError:
            # a trial point where an observation's run-time check refuses to evaluate (bayesshape's own
            # likelihoods return -inf there instead; user-defined ones may raise): the line search backs off
            v, g = np.inf, None
        history.append(v)
        if not np.isfinite(v):
            return 1e300, np.zeros_like(x)
        return v, np.asarray(g, dtype=np.float64)

    res = minimize(
        f,
        np.asarray(x0, dtype=np.float64),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": steps, "ftol": 1e-10, "gtol": 1e-6},
    )
    return jnp.asarray(res.x, dtype=dtype), history


def find_map(problem: Problem, *, steps: int = 150, start=None):
    """Maximum a posteriori ``theta`` (L-BFGS): pose first, then everything (from ``start``:
    everything at once)."""
    if start is not None:
        return _minimize(lambda th: neg_log_density_and_grad(th, problem), jnp.asarray(start), steps)
    x0 = jnp.zeros(problem.dim, dtype=problem.model.variance.dtype)
    if not np.isfinite(float(neg_log_density_and_grad(x0, problem)[0])):
        raise ValueError(
            "infer: the log-likelihood is not finite at the initial shape and pose; the model does not "
            "project into the views (check the geometry, the pose, or the units)"
        )
    history = []
    if problem.pose is not None:
        k, kp = problem.n_modes, problem.n_modes + problem.n_pose
        base = x0
        p, h = _minimize(lambda p: _vg_part(p, base, problem, k, kp), x0[k:kp], steps)
        x0 = x0.at[k:kp].set(p)
        history += h
    x, h = _minimize(lambda th: neg_log_density_and_grad(th, problem), x0, steps)
    return x, history + h


def refine_map(
    problem: Problem, theta: Float[Array, " dim"], *, steps: int = 10, tol: float = 1e-3, min_steps: int = 0
):
    """Gauss-Newton steps from an L-BFGS MAP, to the mode itself.

    L-BFGS stops early on very sharp posteriors: on biplanar DRRs (131 072 pixels at 1% noise)
    the stopped fit was 78 to 167 nats below the mode, more than ten posterior sd away, and the
    Laplace Gaussian centred there covered 22% of the vertices at 95% (97% once refined). Each step
    is ``-cov @ grad`` with ``cov`` the Laplace (Gauss-Newton) covariance, backtracked (Armijo)
    until the density rises; it stops when the Newton decrement ``grad @ cov @ grad / 2`` (the
    nats a full step would gain on the quadratic model) is below ``tol``, or when no step along it
    rises (a kink of a contour likelihood).

    Args:
        problem: the inference problem (``post.problem``).
        theta: ``(dim,)`` whitened parameters (prior sd units) to start from, e.g. ``find_map``'s.
        steps: at most this many Newton steps (>= 0).
        tol: stop when the Newton decrement is below this (nats, > 0).
        min_steps: take at least this many steps whatever the decrement (from a point known
            not to be the mode, such as a fit in some of the parameters), unless none rises.

    Returns:
        ``(theta, cov, info)``: the refined ``(dim,)`` parameters; ``cov`` the ``(dim, dim)``
        Gauss-Newton covariance there (``None`` where the observations have no Gauss-Newton form:
        no step is taken then); ``info`` the decrement there (``map_newton_decrement``, nats) and
        the steps taken (``map_newton_steps``).

    Example:
        >>> theta, cov, info = refine_map(post.problem, post.theta_map)    # doctest: +SKIP
        >>> info["map_newton_decrement"] < 1e-3                              # doctest: +SKIP
        True
    """
    theta = jnp.asarray(theta)
    if theta.shape != (problem.dim,):
        raise ValueError(
            f"theta: expected shape ({problem.dim},) (whitened parameters of this problem), got {theta.shape}"
        )
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps: expected a non-negative integer, got {steps}")
    if not np.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol: expected a positive Newton decrement in nats, got {tol}")
    if int(min_steps) != min_steps or not 0 <= min_steps <= steps:
        raise ValueError(f"min_steps: expected an integer from 0 to steps ({steps}), got {min_steps}")
    if not all(o.has_gauss_newton() for o in problem.observations):
        return theta, None, {"map_newton_decrement": float("nan"), "map_newton_steps": 0}
    v = float(neg_log_density_and_grad(theta, problem)[0])
    n = 0
    while True:
        cov, used = laplace_covariance(problem, theta)
        g = neg_log_density_and_grad(theta, problem)[1]
        step = cov @ g
        dec = 0.5 * float(g @ step)
        if used != "gauss-newton":
            cov = None
        if cov is None or (dec < tol and n >= min_steps) or n >= steps:
            break
        for t in 0.5 ** np.arange(8):
            trial = theta - t * step
            v_trial = float(neg_log_density_and_grad(trial, problem)[0])
            if v_trial <= v - 1e-4 * t * 2.0 * dec:
                break
        else:
            break
        theta, v, n = trial, v_trial, n + 1
    return theta, cov, {"map_newton_decrement": dec, "map_newton_steps": n}
