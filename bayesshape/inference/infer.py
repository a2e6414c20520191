"""``bayesshape.infer``: the driver that assembles the MAP fit, the method and the diagnostics."""

from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._checks import as_count, as_seed
from ..obs.assembly import OnObject
from ..obs.base import Observation
from ..obs.contour import composite_weights as estimate_composite_weights
from ..obs.drr import DRR, drr_composite_weights
from ..posterior.posterior import Posterior, observation_vertices, standardised_residuals
from ..prior.assembly import Assembly
from ..prior.model import ShapeModel
from ..prior.model_error import scale_model_error
from ..projection.pose import as_pose_prior
from ._assembly import build_assembly_problem
from ._problem import Problem
from .config import SVI, Importance, Laplace, LikelihoodOptions, Method, as_method
from .diagnostics import Diagnostics, ImportanceInfo, LaplaceInfo, MapInfo, MethodInfo, sampler_warnings
from .importance import importance_sample
from .init import check_units, problem_fields
from .laplace import laplace_covariance, laplace_draws, neg_log_density_and_grad
from .map import find_map, refine_map
from .nuts import run_nuts
from .svi import run_svi

__all__ = ["infer", "reference_shapes", "build_problem"]


def reference_shapes(model: ShapeModel, n_sd: float = 3.0, max_modes: int = 10) -> np.ndarray:
    """The mean and the ``+-n_sd`` extremes along the leading modes, ``(R, n_vert, 3)``;
    observations use them to size their static buffers (``obs.bind``)."""
    shapes = [np.asarray(model.mean)]
    for i in range(min(model.n_modes, max_modes)):
        for s in (-n_sd, n_sd):
            a = jnp.zeros(model.n_modes, dtype=model.variance.dtype).at[i].set(s)
            shapes.append(np.asarray(model.instance(a)))
    return np.stack(shapes)


_fitted_vertices = eqx.filter_jit(lambda problem, theta: problem.observation_vertices(problem.vertices(theta)))


def _as_observations(observations) -> list[Observation]:
    if isinstance(observations, Observation):
        observations = [observations]
    try:
        observations = list(observations)
    except TypeError:
        observations = []
    if not observations or not all(isinstance(o, Observation) for o in observations):
        raise ValueError("observations: expected one or more bayesshape.obs observations")
    return observations


def build_problem(
    model: ShapeModel, observations, pose=None, likelihood: LikelihoodOptions | None = None, *, references=None
):
    """Bind the observations to the model's mesh and assemble the log density.

    ``references``: :func:`reference_shapes` of the model where already computed (many cases of
    one model), else computed here.

    Returns ``(problem, bind)``: the :class:`Problem` and the function that binds other
    observations (e.g. warm-start stand-ins) the same way.
    """
    likelihood = likelihood or LikelihoodOptions()
    pose_prior = as_pose_prior(pose)
    refs = reference_shapes(model) if references is None else references
    faces = None if model.faces is None else np.asarray(model.faces)
    index: Any = None
    on_coarse: tuple[bool, ...] = ()
    if likelihood.coarse_faces is not None:
        if faces is None:
            raise ValueError("coarse_faces: the model is a point set (no faces); there is no mesh to coarsen")
        from ..prior.coarsen import coarsen_mesh

        index, coarse_faces = coarsen_mesh(np.asarray(model.mean), faces, likelihood.coarse_faces)
        on_coarse = tuple(bool(o.renders_mesh) for o in observations)

        def bind(obs):
            return [o.bind(coarse_faces, refs[:, index]) if c else o.bind(faces, refs) for o, c in zip(obs, on_coarse)]

        index = jnp.asarray(index)
    else:

        def bind(obs):
            return [o.bind(faces, refs) for o in obs]

    bound = bind(observations)
    check_units(model, bound)
    problem = Problem(
        model,
        tuple(bound),
        **problem_fields(model, bound, pose_prior, likelihood),
        likelihood_index=index,
        on_coarse=on_coarse,
    )
    return problem, bind


def _fit_map(problem: Problem, observations, bind, likelihood: LikelihoodOptions, seed: int):
    """The MAP (with warm-start stand-ins and composite weights where they apply), refined by
    Gauss-Newton. Returns ``(problem, theta_map, gauss_newton_cov or None, MapInfo)``."""
    warm = [o.warm_start() for o in observations]
    warm_started = any(w is not None for w in warm)
    if warm_started:
        # fit the basin with the wider-reaching stand-ins first (e.g. a Silhouette's chamfer Contour)
        stand_in = problem.with_observations(bind([o if w is None else w for o, w in zip(observations, warm)]))
        theta_warm, history = find_map(stand_in)
        theta_map, more = find_map(problem, start=theta_warm)
        history += more
    else:
        theta_map, history = find_map(problem)
    weights = None
    if likelihood.composite_weights and any(o.correlated_residuals for o in problem.observations):
        problem, weights = _composite_weighting(problem, theta_map, seed)
        theta_map, more = find_map(problem, start=theta_map)
        history += more
    theta_map, gn_cov, newton = refine_map(problem, theta_map)
    info = MapInfo(
        log_density=-float(neg_log_density_and_grad(theta_map, problem)[0]),
        iterations=len(history),
        newton_decrement=float(newton["map_newton_decrement"]),
        newton_steps=int(newton["map_newton_steps"]),
        warm_start=tuple(None if w is None else type(w).__name__ for w in warm) if warm_started else None,
        composite_weights=None if weights is None else tuple(float(w) for w in weights),
    )
    _map_warning(info, stacklevel=4)
    return problem, theta_map, gn_cov, info


def _leading_modes(model, k: int):
    """``model`` (a ShapeModel or an Assembly) with each shape model cut to its first ``k`` modes,
    or None where none has more."""
    if isinstance(model, Assembly):
        if all(m.n_modes <= k for m in model.models):
            return None
        cut = tuple(m.truncate(k) if m.n_modes > k else m for m in model.models)
        return eqx.tree_at(lambda a: a.models, model, cut)
    return None if model.n_modes <= k else model.truncate(k)


def _mode_offsets(problem: Problem) -> tuple[int, ...]:
    offsets = getattr(problem, "mode_offsets", ())
    return tuple(offsets) if offsets else (0, problem.n_modes)


def _fit_map_leading(run, problem: Problem, observations, bind, k: int):
    """:func:`_fit_map` in each model's first ``k`` modes, then Gauss-Newton steps in all modes
    from there (the rest at zero) to the full mode, with the composite weights of the small fit."""
    small = _leading_modes(run.model, k)
    if small is None:
        return _fit_map(problem, observations, bind, run.likelihood, run.seed)
    small_problem, small_bind = _build(small, observations, run.pose_prior, run.likelihood, stacklevel=4)
    with warnings.catch_warnings():
        # the small fit's convergence is not the posterior's: the full step below is checked
        warnings.filterwarnings("ignore", message="MAP not converged")
        small_problem, theta_small, _, small_info = _fit_map(
            small_problem, observations, small_bind, run.likelihood, run.seed
        )
    if small_info.composite_weights is not None:
        problem = _with_weights(problem, small_info.composite_weights)
    so, fo = _mode_offsets(small_problem), _mode_offsets(problem)
    theta = jnp.zeros(problem.dim, dtype=theta_small.dtype)
    for a, b, c in zip(so[:-1], so[1:], fo[:-1]):
        theta = theta.at[c : c + (b - a)].set(theta_small[a:b])
    theta = theta.at[problem.n_modes :].set(theta_small[small_problem.n_modes :])
    # to the mode, as after a full fit (a single step left the spine's posteriors 8 to 25 nats
    # short), and at least one step: the later modes start at zero, not at their fit
    theta_map, gn_cov, newton = refine_map(problem, theta, min_steps=1)
    info = dataclasses.replace(
        small_info,
        log_density=-float(neg_log_density_and_grad(theta_map, problem)[0]),
        newton_decrement=float(newton["map_newton_decrement"]),
        newton_steps=int(newton["map_newton_steps"]),
    )
    _map_warning(info, stacklevel=4)
    return problem, theta_map, gn_cov, info


def _composite_weighting(problem: Problem, theta_map, seed: int):
    """Composite weights of the observations with correlated residuals, estimated at ``theta_map``:
    ``(the problem with them, the weights)``."""
    correlated = [i for i, o in enumerate(problem.observations) if o.correlated_residuals]
    vs = _fitted_vertices(problem, theta_map)
    # an observation of one object of an assembly: its own observation and the object's vertices
    inner = {}
    for i in correlated:
        o = problem.observations[i]
        inner[i] = (o.observation, o._rows(vs[i])) if isinstance(o, OnObject) else (o, vs[i])
    images = [i for i in correlated if isinstance(inner[i][0], DRR)]
    outlines = [i for i in correlated if i not in images]
    found = dict(
        zip(
            outlines,
            estimate_composite_weights([inner[i][0] for i in outlines], [inner[i][1] for i in outlines], seed=seed)
            if outlines
            else [],
        )
    )
    if images:
        found.update(zip(images, drr_composite_weights([inner[i][0] for i in images], [inner[i][1] for i in images])))
    weights = [found[i] for i in correlated]
    return _with_weights(problem, weights), weights


def _with_weights(problem: Problem, weights) -> Problem:
    """``problem`` with its observations that have correlated residuals weighted, in order."""
    correlated = [i for i, o in enumerate(problem.observations) if o.correlated_residuals]
    obs_w = list(problem.observations)
    for i, w in zip(correlated, weights):
        obs_w[i] = obs_w[i].with_weight(w)
    return problem.with_observations(obs_w)


def _map_warning(info: MapInfo, stacklevel: int) -> None:
    if info.newton_decrement > 5.0:
        warnings.warn(
            f"MAP not converged: after {info.newton_steps} Gauss-Newton steps a full step would still gain "
            f"{info.newton_decrement:.1f} nats; the Laplace approximation and the MCMC starts are off-centre "
            "(a log density rough at the posterior's scale, e.g. DRRs of a shape outside the model): prefer "
            "NUTS, or treat the Laplace credible regions as approximate",
            UserWarning,
            stacklevel=stacklevel,
        )


def _covariance(problem, theta_map, gn_cov, hessian: str = "gauss-newton"):
    if hessian == "gauss-newton" and gn_cov is not None:
        return gn_cov, "gauss-newton"
    return laplace_covariance(problem, theta_map, hessian)


def infer(
    model: ShapeModel | Assembly,
    observations,
    method: Method | str = "nuts",
    pose=None,
    *,
    likelihood: LikelihoodOptions | None = None,
    num_samples: int = 500,
    seed: int = 0,
    progress: bool | None = None,
) -> Posterior:
    """Posterior over 3D shapes given observations in any number of views.

    Args:
        model: the prior, a :class:`ShapeModel` (PCA, GP or augmented), or an
            :class:`~bayesshape.prior.Assembly` of several objects (then the posterior's vertices
            are the combined mesh's; :mod:`bayesshape.posterior.posture` summarises the posture).
        observations: one observation or a list (``bayesshape.obs``), any mix; with an assembly,
            an observation sees every object unless wrapped in :class:`~bayesshape.obs.OnObject`.
        method: :class:`~bayesshape.NUTS` (default), :class:`~bayesshape.SVI`,
            :class:`~bayesshape.Laplace` or :class:`~bayesshape.Importance`, with its settings;
            or its name (``"nuts"``, ``"svi"``, ``"laplace"``, ``"importance"``) for the defaults.
        pose: the pose prior: :class:`~bayesshape.RigidPose`, :class:`~bayesshape.SimilarityPose`,
            ``"rigid"`` / ``"similarity"`` (their defaults), or ``None`` (default): the model frame
            is the world frame and the pose is not inferred.
        likelihood: :class:`~bayesshape.LikelihoodOptions` (coarse likelihood mesh, composite
            weights, inferred noise scales); default ``LikelihoodOptions()``.
        num_samples: posterior draws kept (per chain for NUTS).
        seed: seed of every random draw (a non-negative integer).
        progress: progress bars (default: when stderr is a terminal).

    Every method first fits the MAP: L-BFGS, through each observation's wider-reaching stand-in
    first where it has one (:meth:`~bayesshape.obs.Observation.warm_start`), then composite
    weights for observations with correlated residuals, then Gauss-Newton steps to the mode.

    Returns:
        A :class:`Posterior` whose ``diagnostics`` is a :class:`~bayesshape.inference.Diagnostics`
        record. Bad diagnostics (R-hat > 1.01, low ESS, divergences, unconverged SVI), data
        the model cannot explain and overflowing buffers raise warnings, also kept in
        ``diagnostics.warnings``.

    Example:
        >>> import bayesshape as bs
        >>> model = bs.build_pca_model(bs.datasets.example_shapes(12, seed=0))
        >>> truth = bs.datasets.example_shapes(1, seed=7)[0]
        >>> ids = [0, 400, 800, 1200, 1600, 2000]
        >>> landmarks = bs.obs.Landmarks3D(ids, truth.vertices[ids], sigma=1.0)
        >>> post = bs.infer(model, landmarks, method=bs.Laplace(), num_samples=200, seed=0)
        >>> post.credible_radius(0.95).shape == (len(truth.vertices),)
        True
        >>> post.diagnostics.info
        LaplaceInfo(hessian='gauss-newton')
    """
    run = _checked_arguments(model, method, pose, likelihood, num_samples, seed, progress)
    observations = _as_observations(observations)
    _method_caveats(run.config, [observations], stacklevel=3)
    t_start = time.perf_counter()
    problem, bind = _build(run.model, observations, run.pose_prior, run.likelihood, stacklevel=3)
    if isinstance(run.config, Laplace) and run.config.map_modes is not None:
        fitted = _fit_map_leading(run, problem, observations, bind, run.config.map_modes)
    else:
        fitted = _fit_map(problem, observations, bind, run.likelihood, run.seed)
    return _posterior(run, observations, *fitted, seed=run.seed, t_start=t_start)


@dataclasses.dataclass(frozen=True)
class _Run:
    """The checked settings of one call of :func:`infer` or
    :func:`~bayesshape.inference.infer_batch`, shared by its cases."""

    model: ShapeModel | Assembly  # its model error scaled where likelihood.model_error_scale asks
    config: Method
    likelihood: LikelihoodOptions
    pose_prior: Any
    num_samples: int
    seed: int
    progress: bool


def _checked_arguments(model, method, pose, likelihood, num_samples, seed, progress) -> _Run:
    """The structural checks shared by :func:`infer` and :func:`~bayesshape.inference.infer_batch`."""
    if not isinstance(model, (ShapeModel, Assembly)):
        raise ValueError(f"model: expected a ShapeModel or an Assembly, got {type(model).__name__}")
    config = as_method(method)
    likelihood = LikelihoodOptions() if likelihood is None else likelihood
    if not isinstance(likelihood, LikelihoodOptions):
        raise ValueError(f"likelihood: expected bs.LikelihoodOptions(...), got {type(likelihood).__name__}")
    pose_prior = as_pose_prior(pose)
    error_scale = likelihood.model_error_scale
    if error_scale != 1.0 and isinstance(model, ShapeModel) and model.error_factor is None:
        raise ValueError(
            f"likelihood.model_error_scale={error_scale!r}: the model has no model error to scale "
            "(build it with build_pca_model(..., model_error=True) or bs.add_model_error)"
        )
    if error_scale != 1.0 and isinstance(model, ShapeModel):
        model = scale_model_error(model, float(error_scale))
    num_samples = as_count(num_samples, "num_samples", 1)
    seed = as_seed(seed)
    if progress is None:
        progress = sys.stderr.isatty()
    return _Run(model, config, likelihood, pose_prior, num_samples, seed, bool(progress))


def _method_caveats(config, cases, stacklevel: int) -> None:
    if config.name == "nuts":
        caveats = (o.sampling_caveat() for observations in cases for o in observations)
        for caveat in dict.fromkeys(c for c in caveats if c):
            warnings.warn(caveat, UserWarning, stacklevel=stacklevel)


def _build(model, observations, pose_prior, likelihood, stacklevel: int, references=None):
    """The bound problem of one case and its binding function, with the few-data warning."""
    if isinstance(model, Assembly):
        problem, bind = build_assembly_problem(model, observations, pose_prior, likelihood)
    else:
        problem, bind = build_problem(model, observations, pose_prior, likelihood, references=references)
    n_data = sum(o.n_data for o in problem.observations)
    if n_data < problem.dim:
        warnings.warn(
            f"only {n_data} data for {problem.dim} free parameters: most of the posterior will be the prior; "
            "add observations or views, or fix the pose",
            UserWarning,
            stacklevel=stacklevel,
        )
    return problem, bind


def _posterior(
    run: _Run, observations, problem, theta_map, gn_cov, map_info, *, seed: int, t_start: float
) -> Posterior:
    """From the MAP of one case to its posterior: the method, the diagnostics and the warnings."""
    model, config, likelihood, pose_prior = run.model, run.config, run.likelihood, run.pose_prior
    num_samples, progress = run.num_samples, run.progress
    n_data = sum(o.n_data for o in problem.observations)
    pairing: tuple[str, ...] = ()
    if isinstance(model, ShapeModel):
        pairing = _view_pairing_warnings(model, observations, problem, theta_map, map_info, pose_prior, likelihood)
    if likelihood.model_error_scale != 1.0:
        map_info = dataclasses.replace(map_info, model_error_scale=float(likelihood.model_error_scale))

    key = jax.random.key(seed)
    gaussian = None
    sample_stats: dict = {}
    info: MethodInfo
    if isinstance(config, (Laplace, Importance)):
        cov, used = _covariance(problem, theta_map, gn_cov, config.hessian)
        if isinstance(config, Laplace):
            gaussian = (theta_map, cov)
            theta = laplace_draws(key, theta_map, cov, num_samples)
            info = LaplaceInfo(hessian=used)
        else:
            theta, d = importance_sample(
                problem,
                theta_map,
                cov,
                key=key,
                rounds=config.rounds,
                samples_per_round=config.samples,
                num_samples=num_samples,
            )
            info = ImportanceInfo.from_dict({**d, "laplace_hessian": used})
            sample_stats = {"importance_ess": np.asarray(info.ess), "pareto_k": np.asarray(info.khat)}
    elif isinstance(config, SVI):
        cov, _ = _covariance(problem, theta_map, gn_cov)
        theta, info = run_svi(problem, theta_map, cov, key, config, num_samples, progress)
    else:
        cov, _ = _covariance(problem, theta_map, gn_cov)
        theta, info, sample_stats = run_nuts(problem, theta_map, cov, key, config, num_samples, progress)

    diag = Diagnostics(
        method=config.name,
        n_data=int(n_data),
        n_params=problem.dim,
        info=info,
        map=map_info,
        wall_time_s=time.perf_counter() - t_start,
        warnings=pairing + sampler_warnings(info),
    )
    post = Posterior(
        problem,
        theta,
        config.name,
        diag,
        theta_map=theta_map,
        gaussian=gaussian,
        seed=seed,
        sample_stats=sample_stats,
    )
    extra = _misfit_warnings(post) + _overflow_warnings(post)
    if extra:
        post = post.with_diagnostics(dataclasses.replace(diag, warnings=diag.warnings + extra))
    return post


def _mean_square_residual(problem: Problem, theta, indices) -> float:
    vs = _fitted_vertices(problem, theta)
    return float(
        np.mean([float(jnp.mean(standardised_residuals(problem.observations[i], vs[i]) ** 2)) for i in indices])
    )


def _view_pairing_warnings(model, observations, problem, theta_map, map_info, pose_prior, likelihood):
    """Two outlines (observations with correlated residuals, each of one view) that fit the model so
    badly that their composite weights fall below 0.5 may have been given with each other's views.
    Then the MAP is fitted once more with the two views swapped; when that fits much better (its mean
    squared residual below half), warn. Nothing is run when the outlines fit (weights of 0.5 or more)."""
    weights = map_info.composite_weights
    outlines = [i for i, o in enumerate(problem.observations) if o.correlated_residuals]
    if weights is None or min(weights) >= 0.5 or len(outlines) != 2:
        return ()
    i, j = outlines
    vi, vj = observations[i].image_view, observations[j].image_view
    if vi is None or vj is None or vi is vj or vi.detector_shape != vj.detector_shape:
        return ()
    swapped = list(observations)
    swapped[i], swapped[j] = observations[i].with_view(vj), observations[j].with_view(vi)
    plain = dataclasses.replace(likelihood, composite_weights=False)
    problem2, _ = build_problem(model, swapped, pose_prior, plain)
    theta2, _ = find_map(problem2)
    given = _mean_square_residual(problem, theta_map, outlines)
    other = _mean_square_residual(problem2, theta2, outlines)
    if not other < 0.5 * given:
        return ()
    msg = (
        f"observations {i} and {j} fit badly with their views (mean squared standardised residual {given:.2f}, "
        f"composite weights {min(weights):.2f}) and fit much better with the views swapped ({other:.2f}): "
        "check that each mask or contour is given with its own view"
    )
    warnings.warn(msg, UserWarning, stacklevel=4)
    return (msg,)


def _overflow_warnings(post: Posterior) -> tuple[str, ...]:
    vs = observation_vertices(post.problem, jnp.asarray(post.mean_vertices()))
    msgs = []
    for o, v in zip(post.problem.observations, vs):
        if o.overflow(v):
            msg = (
                f"{type(o).__name__}: the posterior mean needs more than the static buffer the likelihood was "
                "bound with (its capacity); part of the data was ignored. Bind with reference shapes closer to "
                "the data."
            )
            msgs.append(msg)
            warnings.warn(msg, UserWarning, stacklevel=4)
    return tuple(msgs)


def _misfit_warnings(post: Posterior, threshold: float = 4.0) -> tuple[str, ...]:
    mis = post.predictive_misfit()
    bad = [m for m in mis if m["mean_sq_std_residual"] > threshold]
    if not bad:
        return ()
    kinds = ", ".join(f"{m['type']} ({m['mean_sq_std_residual']:.1f})" for m in bad)
    good = [m for m in mis if m["mean_sq_std_residual"] <= threshold]
    hint = (
        "the other observations are fitted; these contradict them or are wrong"
        if good
        else "no shape of the model explains the data: the anatomy may lie outside the model, "
        "or the views, units or noise levels are wrong"
    )
    msg = f"observations fit badly at the posterior mean (mean squared standardised residual): {kinds}; {hint}"
    warnings.warn(msg, UserWarning, stacklevel=4)
    return (msg,)
