"""Many cases with one model: ``infer_batch`` fits their MAPs and Laplace Gaussians together.

Cases whose bound observations have the same layout (the same observation types in the same
order, arrays of the same shapes, the same static settings; e.g. DRRs or masks of one detector
size, landmarks of the same points) form a group. A group's cases are stacked along a leading
axis and every step before the method runs is one compiled program over them: the L-BFGS MAP
(optax, in a ``lax.while_loop``), the Gauss-Newton steps to the mode and the Gauss-Newton
information. On a GPU the cases are ``vmap``-ed and evaluated together; on a CPU they run one
after the other inside the program (``lax.map``), which saves SciPy's per-evaluation round trips.
Each case then gets its own posterior by the chosen method (:class:`~bayesshape.Laplace`: its
draws; the others run case by case from that MAP)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._checks import as_count
from ..obs.base import Observation
from ..posterior.posterior import Posterior
from ..prior.assembly import Assembly
from ..prior.model import ShapeModel
from ._problem import Problem
from .config import Laplace, LikelihoodOptions, Method
from .diagnostics import MapInfo
from .infer import (
    _as_observations,
    _build,
    _checked_arguments,
    _composite_weighting,
    _map_warning,
    _method_caveats,
    _posterior,
    reference_shapes,
)
from .laplace import neg_log_density_and_grad
from .map import refine_map

__all__ = ["infer_batch"]


# ------------------------------------------------------------------ stacking problems
def _batched_parts(problem: Problem):
    """The per-case arrays of a problem (its observations' arrays and its initial pose) and the
    observations' non-array part, which a group shares."""
    arrays, static = eqx.partition(problem.observations, eqx.is_array)
    return (
        (arrays, problem.center, problem.init_rotvec, problem.init_translation, problem.init_log_scale),
        static,
    )


def _same_leaf(a, b) -> bool:
    try:
        return bool(a == b) if not isinstance(a, (np.ndarray, jax.Array)) else bool(np.array_equal(a, b))
    except Exception:  # noqa: BLE001 - values that cannot be compared are not the same
        return False


def _same_layout(p: Problem, q: Problem) -> bool:
    """Can ``p`` and ``q`` be stacked: the same tree, array shapes and dtypes, and static parts?"""
    (pa, ps), (qa, qs) = _batched_parts(p), _batched_parts(q)
    la, ta = jax.tree.flatten(pa)
    lb, tb = jax.tree.flatten(qa)
    same_tree: bool = ta == tb  # type: ignore[operator]
    if not same_tree or any(x.shape != y.shape or x.dtype != y.dtype for x, y in zip(la, lb)):
        return False
    sa, sta = jax.tree.flatten(ps)
    sb, stb = jax.tree.flatten(qs)
    same_static: bool = sta == stb  # type: ignore[operator]
    return same_static and all(_same_leaf(x, y) for x, y in zip(sa, sb))


def _groups(problems: Sequence[Problem]) -> list[list[int]]:
    groups: list[list[int]] = []
    for i, p in enumerate(problems):
        for g in groups:
            if _same_layout(problems[g[0]], p):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def _stack(problems: Sequence[Problem]):
    parts = [_batched_parts(p)[0] for p in problems]
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *parts)


def _unstack(template: Problem, arrays) -> Problem:
    """The problem of one case from the group's template and that case's arrays (inside ``vmap``)."""
    obs_arrays, center, rotvec, translation, log_scale = arrays
    observations = eqx.combine(obs_arrays, _batched_parts(template)[1])
    return eqx.tree_at(
        lambda p: (p.observations, p.center, p.init_rotvec, p.init_translation, p.init_log_scale),
        template,
        (observations, center, rotvec, translation, log_scale),
    )


# ------------------------------------------------------------------ the MAP, in JAX
def _lbfgs(fun, x0, steps, gtol: float, ftol: float):
    """L-BFGS (optax, zoom line search) on ``fun`` from ``x0``: ``(x, function evaluations)``. Stops as
    SciPy's L-BFGS-B does: when the largest gradient entry is below ``gtol``, when a step lowers
    ``fun`` by less than ``ftol`` relative, when the line search finds no decrease (the previous
    point is kept: in float32 the value's rounding ends the fit there), or after
    ``steps`` iterations."""
    opt = optax.lbfgs(linesearch=optax.scale_by_zoom_linesearch(max_linesearch_steps=15))
    value_and_grad = optax.value_and_grad_from_state(fun)

    def cond(carry):
        _, _, n, _, go = carry
        return (n < steps) & go

    def body(carry):
        x, state, n, evals, _ = carry
        v, g = value_and_grad(x, state=state)
        # optax mixes its int32 counters with int64 ones under x64: allow it the standard promotion
        with jax.numpy_dtype_promotion("standard"):
            updates, new_state = opt.update(g, state, x, value=v, grad=g, value_fn=fun)
        x_new = optax.apply_updates(x, updates)
        v_new = optax.tree_utils.tree_get(new_state, "value")
        # a line search that found no decrease at all (or left the finite numbers) ends the fit at the previous point
        failed = ~(v_new < v) | ~jnp.all(jnp.isfinite(x_new))
        g_new = optax.tree_utils.tree_get(new_state, "grad")
        change = (v - v_new) / jnp.maximum(jnp.maximum(jnp.abs(v), jnp.abs(v_new)), 1.0)
        go = ~failed & (change > ftol) & (jnp.max(jnp.abs(g_new)) > gtol)
        x = jnp.where(failed, x, x_new)
        state = jax.tree.map(lambda a, b: jnp.where(failed, a, b), state, new_state)
        evals = evals + jnp.asarray(optax.tree_utils.tree_get(new_state, "num_linesearch_steps"), jnp.int32)
        return x, state, n + 1, evals, go

    one = jnp.asarray(1, jnp.int32)
    start = (x0, opt.init(x0), 0 * one, jnp.where(steps > 0, one, 0 * one), jnp.asarray(True))
    x, _, _, evals, _ = jax.lax.while_loop(cond, body, start)
    return x, evals


def _tolerances(dtype) -> tuple[float, float]:
    # SciPy's L-BFGS-B settings of find_map in float64; float32 cannot resolve them
    return (1e-6, 1e-10) if dtype == jnp.float64 else (1e-3, 1e-7)


def _newton(problem: Problem, theta):
    """Value, Newton step ``cov @ grad``, Newton decrement and the Gauss-Newton information (the
    prior precision plus ``J^T J``) at ``theta``."""
    from .laplace import _gn_information

    v, g = jax.value_and_grad(lambda th: -problem.log_density(th))(theta)
    k = problem.n_modes + problem.n_pose
    h = jnp.eye(problem.dim, dtype=theta.dtype).at[:k, :k].add(_gn_information(problem, theta))
    h = 0.5 * (h + h.T)
    step = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(h), g)
    return v, step, 0.5 * g @ step, h


def _refine(problem: Problem, theta, steps, tol: float):
    """:func:`~bayesshape.inference.refine_map` in JAX: Newton steps ``-cov @ grad`` with the
    Gauss-Newton covariance, Armijo-backtracked (at most 8 halvings), until the Newton decrement
    is below ``tol``, no step rises, or ``steps`` steps were taken."""

    def cond(carry):
        _, _, n, dec, stuck = carry
        return (n < steps) & (dec >= tol) & ~stuck

    def body(carry):
        th, v, n, _, _ = carry
        _, step, dec, _ = _newton(problem, th)

        def try_cond(c):
            j, ok, _, _ = c
            return (j < 8) & ~ok

        def try_body(c):
            j, _, _, _ = c
            t = jnp.asarray(0.5, th.dtype) ** j.astype(th.dtype)
            trial = th - t * step
            vt = -problem.log_density(trial)
            return j + 1, vt <= v - 1e-4 * t * 2.0 * dec, trial, vt

        _, ok, trial, vt = jax.lax.while_loop(
            try_cond, try_body, (jnp.asarray(0, jnp.int32), jnp.asarray(False), th, v)
        )
        moved = ok & (dec >= tol)
        return jnp.where(moved, trial, th), jnp.where(moved, vt, v), n + moved.astype(n.dtype), dec, ~ok

    v0, _, dec0, _ = _newton(problem, theta)
    start = (theta, v0, jnp.asarray(0, jnp.int32), dec0, jnp.asarray(False))
    theta, _, n, _, _ = jax.lax.while_loop(cond, body, start)
    v, _, dec, information = _newton(problem, theta)
    return theta, information, dec, n, -v


def _fit_one(problem: Problem, start, stage_steps, refine_steps, gauss_newton: bool):
    """The MAP of one case as :func:`~bayesshape.inference.find_map` and
    :func:`~bayesshape.inference.refine_map` fit it: L-BFGS on the pose alone (``stage_steps[0]``
    iterations at most; 0 skips it), then on everything (``stage_steps[1]``), then Gauss-Newton
    steps (``refine_steps``) and the Gauss-Newton information there. The two L-BFGS stages are one traced loop
    (a ``scan`` over masks), so each layout compiles one program."""
    gtol, ftol = _tolerances(start.dtype)

    def nld(theta):
        v = -problem.log_density(theta)
        return jnp.where(jnp.isfinite(v), v, jnp.asarray(1e30, v.dtype))

    k, kp = problem.n_modes, problem.n_modes + problem.n_pose
    pose_mask = jnp.zeros(problem.dim, dtype=bool).at[k:kp].set(True)
    masks = jnp.stack([pose_mask, jnp.ones(problem.dim, dtype=bool)])

    def stage(x, inputs):
        mask, steps = inputs
        x, n = _lbfgs(lambda y: nld(jnp.where(mask, y, x)), x, steps, gtol, ftol)
        return x, n

    x, n = jax.lax.scan(stage, start, (masks, stage_steps))
    if not gauss_newton:
        return x, jnp.sum(n), None, None, None, -nld(x)
    theta, information, dec, n_newton, logp = _refine(problem, x, refine_steps, 1e-3)
    return theta, jnp.sum(n), information, dec, n_newton, logp


def _vectorise() -> bool:
    """``vmap`` the cases of a chunk (a GPU evaluates them together), or run them one after the
    other inside the compiled program (``lax.map``: a CPU gains nothing from evaluating them
    together, and a ``vmap``-ed loop runs until its slowest case is done)."""
    return jax.default_backend() != "cpu"


@eqx.filter_jit
def _batched_fit(template: Problem, arrays, starts, stage_steps, refine_steps, gauss_newton: bool, vectorise: bool):
    def one(a, s):
        return _fit_one(_unstack(template, a), s, stage_steps, refine_steps, gauss_newton)

    if vectorise:
        return jax.vmap(one)(arrays, starts)
    return jax.lax.map(lambda xs: one(*xs), (arrays, starts))


@eqx.filter_jit
def _batched_value(template: Problem, arrays, thetas):
    return jax.vmap(lambda a, th: -_unstack(template, a).log_density(th))(arrays, thetas)


# ------------------------------------------------------------------ one group
_STEPS = 150  # L-BFGS iterations per stage, as find_map
_NEWTON_STEPS = 10  # Gauss-Newton steps, as refine_map


def _gauss_newton(problem: Problem) -> bool:
    return all(o.has_gauss_newton() for o in problem.observations) and problem.n_noise == 0


def _run(problems: list[Problem], starts, pose_first: bool, refine: bool, batch_size: int):
    """``_fit_one`` on every case of a group, ``batch_size`` cases at a time: a group smaller than
    ``batch_size`` runs in one chunk of the next power of two, a larger one in chunks of
    ``batch_size``; the last chunk is padded with copies of its last case (their results are
    dropped), so a layout compiles once per chunk size. Returns numpy arrays per case."""
    template = problems[0]
    gn = _gauss_newton(template)
    stage_steps = jnp.asarray([_STEPS if pose_first and template.pose_prior is not None else 0, _STEPS], jnp.int32)
    refine_steps = jnp.asarray(_NEWTON_STEPS if refine and gn else 0, jnp.int32)
    n = len(problems)
    size = min(batch_size, 1 << (n - 1).bit_length())
    parts: list[list[np.ndarray | None]] = []
    for lo in range(0, n, size):
        idx = list(range(lo, min(lo + size, n)))
        idx += [idx[-1]] * (size - len(idx))
        out = _batched_fit(
            template,
            _stack([problems[i] for i in idx]),
            starts[np.asarray(idx)],
            stage_steps,
            refine_steps,
            gn,
            _vectorise(),
        )
        parts.append([None if o is None else np.asarray(o)[: min(size, n - lo)] for o in out])
    theta, iterations, information, dec, newton_steps, logp = (
        None if parts[0][j] is None else np.concatenate([p[j] for p in parts]) for j in range(6)
    )
    return {
        "theta": theta,
        "iterations": iterations,
        "information": information,
        "dec": dec,
        "newton_steps": newton_steps,
        "logp": logp,
    }


def _fit_group(problems: list[Problem], cases, binds, likelihood: LikelihoodOptions, seeds, names, batch_size):
    """The MAPs of a group of stackable cases, as :func:`infer` fits them one by one. Returns per
    case ``(problem, theta_map, gauss_newton_cov or None, MapInfo)``."""
    template = problems[0]
    dtype = template.model.variance.dtype
    zeros = jnp.zeros((len(problems), template.dim), dtype=dtype)
    for p, name in zip(problems, names):
        if not np.isfinite(float(neg_log_density_and_grad(zeros[0], p)[0])):
            raise ValueError(
                f"infer_batch: case {name}: the log-likelihood is not finite at the initial shape and pose; "
                "the model does not project into the views (check the geometry, the pose, or the units)"
            )
    iterations = np.zeros(len(problems), dtype=int)
    warm = [[o.warm_start() for o in obs] for obs in cases]
    warm_started = any(w is not None for ws in warm for w in ws)
    thetas = zeros
    if warm_started:
        stand_ins = [
            p.with_observations(bind([o if w is None else w for o, w in zip(obs, ws)]))
            for p, obs, bind, ws in zip(problems, cases, binds, warm)
        ]
        # stand-ins (e.g. a chamfer contour) may not stack where the observations do
        for g in _groups(stand_ins):
            r = _run([stand_ins[i] for i in g], zeros[: len(g)], True, False, batch_size)
            thetas = thetas.at[np.asarray(g)].set(r["theta"])
            iterations[g] += r["iterations"]
    weighted = likelihood.composite_weights and any(o.correlated_residuals for o in template.observations)
    r = _run(problems, thetas, not warm_started, not weighted, batch_size)
    iterations += r["iterations"]
    weights: list[Any] = [None] * len(problems)
    if weighted:
        problems = list(problems)
        for i in range(len(problems)):
            problems[i], weights[i] = _composite_weighting(problems[i], jnp.asarray(r["theta"][i]), seeds[i])
        # the weights are arrays of the observations: the group still stacks
        r = _run(problems, jnp.asarray(r["theta"]), False, True, batch_size)
        iterations += r["iterations"]
    out = []
    for i, p in enumerate(problems):
        theta = jnp.asarray(r["theta"][i], dtype=dtype)
        if r["information"] is not None:
            # inverted in float64, as laplace_covariance does (float32 loses the small variances)
            h = np.asarray(r["information"][i], dtype=np.float64)
            inverse = np.linalg.inv(0.5 * (h + h.T))
            cov = jnp.asarray(0.5 * (inverse + inverse.T), dtype=dtype)
            newton = {"map_newton_decrement": float(r["dec"][i]), "map_newton_steps": int(r["newton_steps"][i])}
            logp = float(r["logp"][i])
        else:
            theta, cov, newton = refine_map(p, theta)
            logp = -float(neg_log_density_and_grad(theta, p)[0])
        info = MapInfo(
            log_density=logp,
            iterations=int(iterations[i]),
            newton_decrement=float(newton["map_newton_decrement"]),
            newton_steps=int(newton["map_newton_steps"]),
            warm_start=tuple(None if w is None else type(w).__name__ for w in warm[i]) if warm_started else None,
            composite_weights=None if weights[i] is None else tuple(float(w) for w in weights[i]),
        )
        _map_warning(info, stacklevel=4)
        out.append((p, theta, cov, info))
    return out


# ------------------------------------------------------------------ the public driver
def infer_batch(
    model: ShapeModel | Assembly,
    cases,
    method: Method | str = "laplace",
    pose=None,
    *,
    likelihood: LikelihoodOptions | None = None,
    num_samples: int = 500,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool | None = None,
) -> list[Posterior]:
    """Posteriors of many cases that share a model, fitted together.

    The same as ``[infer(model, case, method, pose, ..., seed=seed + i) for i, case in
    enumerate(cases)]`` up to the optimiser's tolerance, but the MAP fits, the Gauss-Newton steps
    and the Laplace covariances of cases with the same layout (the same observation types, image
    sizes and numbers of points) run as one ``vmap``-ed, compiled program: a GPU evaluates the
    cases together, and each layout compiles once. Cases of other layouts form groups of their own.

    Args:
        model: the prior (:class:`~bayesshape.ShapeModel`), shared by every case.
        cases: a sequence of cases, each one observation or a list of observations
            (``bayesshape.obs``), each with its own views.
        method: as for :func:`~bayesshape.infer`; default :class:`~bayesshape.Laplace`, the
            method the batch serves best (its draws are one matrix product per case). The other
            methods start from the batched MAP and run case by case.
        pose: the pose prior, shared (each case starts from its own initial pose).
        likelihood: :class:`~bayesshape.LikelihoodOptions`, shared.
        num_samples: posterior draws kept per case (per chain for NUTS).
        seed: case ``i`` uses seed ``seed + i`` (a non-negative integer).
        batch_size: cases evaluated together (>= 1). A group of fewer cases runs as one batch
            padded to the next power of two, a larger one in batches of this size, so each layout
            compiles at most once per batch size. On a GPU raise it until the memory is full.
        progress: progress bars of the sampling methods.

    Returns:
        One :class:`~bayesshape.Posterior` per case, in order; ``diagnostics.wall_time_s`` is the
        case's share of its group's fit plus its own method's time.

    Raises:
        ValueError: no cases, a case that is not observations (naming it), or an
            :class:`~bayesshape.prior.Assembly` (infer its cases with :func:`~bayesshape.infer`).

    Example:
        >>> import bayesshape as bs
        >>> shapes = bs.datasets.example_shapes(12, seed=0)
        >>> model = bs.build_pca_model(shapes, align=None)
        >>> ids = [0, 400, 800, 1200, 1600, 2000]
        >>> cases = [bs.obs.Landmarks3D(ids, s.vertices[ids], sigma=1.0) for s in shapes[:3]]
        >>> posts = bs.infer_batch(model, cases, bs.Laplace(), num_samples=100)
        >>> [p.credible_radius(0.95).shape for p in posts] == [(model.n_vertices,)] * 3
        True
    """
    if isinstance(model, Assembly):
        raise ValueError("infer_batch: expected a ShapeModel; infer the cases of an Assembly with bs.infer")
    run = _checked_arguments(model, method, pose, likelihood, num_samples, seed, progress)
    if isinstance(run.config, Laplace) and run.config.map_modes is not None:
        raise ValueError("infer_batch: Laplace(map_modes=...) runs case by case; use bs.infer")
    if isinstance(cases, Observation) or not isinstance(cases, Sequence) or len(cases) == 0:
        raise ValueError("cases: expected a non-empty sequence of cases, each one observation or a list of them")
    observations = []
    for i, case in enumerate(cases):
        try:
            observations.append(_as_observations(case))
        except ValueError as err:
            raise ValueError(f"cases[{i}]: {err}") from None
    _method_caveats(run.config, observations, stacklevel=3)
    seeds = [run.seed + i for i in range(len(observations))]
    batch_size = as_count(batch_size, "batch_size", 1)
    t_start = time.perf_counter()
    references = reference_shapes(cast(ShapeModel, run.model))  # assemblies were refused above
    built = []
    for obs in observations:  # a loop, not a comprehension: the warnings' stacklevel points at the caller
        built.append(_build(run.model, obs, run.pose_prior, run.likelihood, 3, references))
    problems = [p for p, _ in built]
    fitted: list[Any] = [None] * len(problems)
    shares: list[float] = [0.0] * len(problems)
    for g in _groups(problems):
        t0 = time.perf_counter()
        out = _fit_group(
            [problems[i] for i in g],
            [observations[i] for i in g],
            [built[i][1] for i in g],
            run.likelihood,
            [seeds[i] for i in g],
            [str(i) for i in g],
            batch_size,
        )
        share = (time.perf_counter() - t0) / len(g)
        for i, r in zip(g, out):
            fitted[i], shares[i] = r, share
    # each case's wall time: its share of the binding and of its group's fit, then its own method
    build_share = max((time.perf_counter() - t_start - sum(shares)) / len(problems), 0.0)
    posts = []
    for obs, fit, s, share in zip(observations, fitted, seeds, shares):
        posts.append(_posterior(run, obs, *fit, seed=s, t_start=time.perf_counter() - share - build_share))
    return posts
