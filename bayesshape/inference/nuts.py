"""The No-U-Turn sampler (NumPyro) around the MAP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from .._gaussian import gaussian_draws
from ._numpyro import numpyro_promotion
from ._problem import Problem
from .config import NUTS as NUTSConfig
from .diagnostics import NUTSInfo, ess_bulk_tail

__all__ = ["run_nuts", "numpyro_model"]


def numpyro_model(problem: Problem):
    """The NumPyro model: ``theta ~ N(0, I)`` and a factor with the log-likelihood."""
    import numpyro
    import numpyro.distributions as dist

    def model():
        theta = numpyro.sample("theta", dist.Normal(jnp.zeros(problem.dim), 1.0).to_event(1))
        ll = problem.log_likelihood(theta)
        numpyro.factor("log_likelihood", jnp.where(jnp.isnan(ll), -jnp.inf, ll))

    return model


_EXTRA_FIELDS = ("diverging", "num_steps", "energy", "potential_energy", "accept_prob", "adapt_state.step_size")


def _chain_method(num_chains: int) -> str:
    if num_chains == 1:
        return "sequential"
    if jax.local_device_count() >= num_chains:
        return "parallel"
    return "vectorized" if jax.default_backend() != "cpu" else "sequential"


def run_nuts(problem: Problem, theta_map, cov, key, config: NUTSConfig, num_samples: int, progress: bool):
    """NUTS chains started around the MAP, with the Laplace covariance as the inverse mass matrix.

    Returns ``(theta (chains, draws, dim), NUTSInfo, sample_stats)``; ``sample_stats`` maps ArviZ's
    names (``diverging``, ``tree_depth``, ``n_steps``, ``energy``, ``lp``, ``acceptance_rate``,
    ``step_size``) to ``(chains, draws)`` arrays.
    """
    from numpyro.diagnostics import split_gelman_rubin
    from numpyro.infer import MCMC, NUTS

    num_warmup, num_chains, mass = config.num_warmup, config.num_chains, config.mass
    target_accept_prob, max_tree_depth = config.target_accept_prob, config.max_tree_depth
    model = numpyro_model(problem)
    k_init, k_run = jax.random.split(key)
    # over-dispersed starts around the MAP (from the Laplace covariance), so R-hat means something
    starts = gaussian_draws(k_init, theta_map, cov, num_chains)
    # the Laplace covariance is the inverse mass matrix: the pose directions are pinned far more
    # tightly by the data than by their prior, and an identity mass matrix makes trajectories very
    # long. "laplace" keeps it (the warm-up tunes the step size); "adapt" re-estimates it in Stan's
    # windows, which with a short warm-up (a first slow window of 25 draws for 25 parameters) gives a
    # rank-deficient dense estimate and trees at the maximum depth
    dense = problem.dim <= 80 or mass == "laplace"
    inv_mass = cov if dense else jnp.diag(cov)
    kernel = NUTS(
        model,
        dense_mass=dense,
        target_accept_prob=target_accept_prob,
        inverse_mass_matrix={("theta",): inv_mass},
        adapt_mass_matrix=mass == "adapt",
        max_tree_depth=max_tree_depth,
    )
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=_chain_method(num_chains),
        progress_bar=progress,
    )
    with numpyro_promotion():
        mcmc.run(
            k_run,
            init_params={"theta": starts if num_chains > 1 else starts[0]},
            extra_fields=_EXTRA_FIELDS,
        )
    theta = mcmc.get_samples(group_by_chain=True)["theta"]
    by_chain = {
        k: np.asarray(v).reshape(num_chains, num_samples) for k, v in mcmc.get_extra_fields(group_by_chain=True).items()
    }
    n_steps = by_chain["num_steps"].astype(np.int64)
    # ArviZ's names (as az.from_numpyro): a tree of n leapfrog steps has depth floor(log2(n)) + 1
    stats = {
        "diverging": by_chain["diverging"].astype(bool),
        "n_steps": n_steps,
        "tree_depth": (np.floor(np.log2(np.maximum(n_steps, 1))) + 1).astype(np.int64),
        "energy": by_chain["energy"].astype(np.float64),
        "lp": -by_chain["potential_energy"].astype(np.float64),
        "acceptance_rate": by_chain["accept_prob"].astype(np.float64),
        "step_size": by_chain["adapt_state.step_size"].astype(np.float64),
    }
    div = int(stats["diverging"].sum())
    th = np.asarray(theta, dtype=np.float64)
    steps = n_steps
    # a tree of depth d holds 2**(d-1) to 2**d - 1 leapfrog steps: Stan's treedepth__ == max_depth
    max_rhat = rhat = None
    # a chain stuck at one value (divergences everywhere) has no within-chain variance: its R-hat
    # is infinite and its ESS zero, not NaN
    with np.errstate(invalid="ignore", divide="ignore"):
        if num_chains > 1:
            r = np.nan_to_num(np.asarray(split_gelman_rubin(th)), nan=np.inf)
            max_rhat, rhat = float(np.max(r)), tuple(r.tolist())
        ess, tail = ess_bulk_tail(th)
    ess, tail = np.nan_to_num(ess, nan=0.0), np.nan_to_num(tail, nan=0.0)
    info = NUTSInfo(
        num_chains=num_chains,
        num_samples=num_samples,
        num_warmup=num_warmup,
        mass=mass,
        divergences=div,
        mean_num_steps=float(np.mean(steps)),
        max_tree_depth=max_tree_depth,
        tree_depth_saturated=float(np.mean(steps >= 2 ** (max_tree_depth - 1))),
        max_rhat=max_rhat,
        rhat=rhat,
        min_ess_bulk=float(np.min(ess)),
        min_ess_tail=float(np.min(tail)),
        ess_bulk=tuple(ess.tolist()),
    )
    return theta, info, stats
