"""A posterior's ArviZ groups as plain arrays (what a posterior file stores) and their
``arviz.InferenceData`` (the same groups and names as ``az.from_numpyro``)."""

from __future__ import annotations

import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

#: above this many values (chains x draws x data) the pointwise log-likelihood is refused
MAX_POINTWISE = 50_000_000


def _terms(problem, theta, pointwise: bool) -> list:
    """Each observation's log-likelihood at ``theta``: its terms per datum, or its total."""
    vs = problem.observation_vertices(problem.vertices(theta))
    sigmas = problem.sigmas(theta)
    if pointwise:
        return [o.pointwise_log_likelihood(v, sigma=s) for o, s, v in zip(problem.observations, sigmas, vs)]
    return [o.log_likelihood(v, sigma=s)[None] for o, s, v in zip(problem.observations, sigmas, vs)]


@eqx.filter_jit
def _log_likelihood_batch(problem, thetas, pointwise: bool):
    return jax.lax.map(lambda t: jnp.concatenate(_terms(problem, t, pointwise)), thetas, batch_size=16)


def _pointwise_sizes(problem, theta) -> list[int]:
    shapes = eqx.filter_eval_shape(lambda p, t: _terms(p, t, True), problem, theta)
    return [int(t.shape[0]) for t in shapes]


def _observed(o) -> np.ndarray | None:
    for name in ("points", "pixels", "image", "mask"):
        if hasattr(o, name):
            return np.asarray(getattr(o, name))
    return None


def observation_names(problem) -> list[str]:
    """``"0:Landmarks3D"``, ``"1:Contour"``, ...: each observation's index and type."""
    return [f"{i}:{type(o).__name__}" for i, o in enumerate(problem.observations)]


def arviz_groups(post, log_likelihood: str | None = "pointwise") -> dict[str, Any]:
    """The ArviZ groups of a :class:`~bayesshape.Posterior` as NumPy arrays, with dims and coords."""
    if log_likelihood not in ("pointwise", "observation", None):
        raise ValueError(f"log_likelihood: expected 'pointwise', 'observation' or None, got {log_likelihood!r}")
    problem = post.problem
    th = np.asarray(post.theta, dtype=np.float64)
    chains, draws = th.shape[:2]
    k = problem.n_modes
    posterior: dict[str, np.ndarray] = {"alpha": th[..., :k]}
    dims: dict[str, list[str]] = {"alpha": ["mode"]}
    coords: dict[str, list] = {"mode": list(range(k))}
    prior = problem.pose_prior
    if prior is not None:
        posterior["rotation"] = th[..., k : k + 3] * float(prior.rotation_sd)
        posterior["translation"] = th[..., k + 3 : k + 6] * float(prior.translation_sd)
        dims.update({"rotation": ["axis"], "translation": ["axis"]})
        coords["axis"] = ["x", "y", "z"]
        if problem.pose == "similarity":
            posterior["log_scale"] = th[..., k + 6] * float(prior.scale_sd)
    names = observation_names(problem)
    if problem.noise_sd is not None:
        z = th[..., k + problem.n_pose :]
        posterior["noise_scale"] = np.exp(float(problem.noise_sd) * z)
        dims["noise_scale"] = ["observation"]
        coords["observation"] = names
    groups: dict[str, Any] = {"posterior": posterior}
    stats = {name: np.asarray(v) for name, v in (post.sample_stats or {}).items()}
    if stats:
        groups["sample_stats"] = stats
    if log_likelihood is not None:
        flat = jnp.asarray(post.flat_theta())
        if log_likelihood == "pointwise":
            sizes = _pointwise_sizes(problem, flat[0])
            n_data = sum(sizes)
            if chains * draws * n_data > MAX_POINTWISE:
                raise ValueError(
                    f"log_likelihood='pointwise': {chains * draws} draws x {n_data} data terms is more than "
                    f"{MAX_POINTWISE:.0e} values; pass log_likelihood='observation' (one term per observation) "
                    "or None"
                )
            dims["data"] = ["datum"]
            coords["datum"] = list(range(n_data))
            coords["datum_observation"] = [n for n, m in zip(names, sizes) for _ in range(m)]
        else:
            dims["data"] = ["observation"]
            coords["observation"] = names
        ll = _log_likelihood_batch(problem, flat, log_likelihood == "pointwise")
        groups["log_likelihood"] = {"data": np.asarray(ll, dtype=np.float64).reshape(chains, draws, -1)}
    observed = {}
    for name, o in zip(names, problem.observations):
        a = _observed(o)
        if a is not None:
            var = "obs" + name.replace(":", "_")
            observed[var] = a.astype(np.uint8) if a.dtype == bool else a
            dims[var] = [f"{var}_dim_{i}" for i in range(a.ndim)]
    if observed:
        groups["observed_data"] = observed
    groups["dims"], groups["coords"] = dims, coords
    return groups


def to_inference_data(groups: dict[str, Any]):
    """An ``arviz.InferenceData`` from :func:`arviz_groups`'s dictionary."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # ArviZ announces its 1.0 refactor on import
            import arviz as az
    except ImportError:
        raise ImportError("to_arviz needs ArviZ: pip install arviz") from None
    dims = {k: list(v) for k, v in groups.get("dims", {}).items()}
    coords = {k: list(v) for k, v in groups.get("coords", {}).items() if k != "datum_observation"}
    stats = {k: np.asarray(v) for k, v in (groups.get("sample_stats") or {}).items()}
    per_draw = {k: v for k, v in stats.items() if v.ndim >= 2}
    per_run = {k: v for k, v in stats.items() if v.ndim < 2}  # importance sampling's ESS and k-hat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        idata = az.from_dict(
            posterior={k: np.asarray(v) for k, v in groups["posterior"].items()},
            sample_stats=per_draw or None,
            log_likelihood=groups.get("log_likelihood") or None,
            observed_data=groups.get("observed_data") or None,
            dims=dims,
            coords=coords,
        )
    import xarray as xr

    if per_run:
        run = xr.Dataset({k: xr.DataArray(v) for k, v in per_run.items()})
        if "sample_stats" in idata.groups():
            idata.sample_stats = idata.sample_stats.merge(run)
        else:
            idata.add_groups(sample_stats=run)
    if "datum_observation" in groups.get("coords", {}) and "log_likelihood" in idata.groups():
        idata.log_likelihood = idata.log_likelihood.assign_coords(
            observation=("datum", list(groups["coords"]["datum_observation"]))
        )
    return idata
