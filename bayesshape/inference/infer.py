"""``bayesshape.infer``: posterior shape distributions with NumPyro and optax."""

from __future__ import annotations

import sys
import time
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._checks import as_count
from ..obs.base import Observation
from ..obs.contour import Contour, composite_weights
from ..obs.drr import DRR
from ..posterior.posterior import Posterior, _observation_vertices, warn_diagnostics
from ..prior.model import ShapeModel
from ._problem import Problem
from .importance import importance_sample
from .init import _mean_centroid, check_units
from .init import initial_pose as estimate_initial_pose

__all__ = ["infer", "find_map", "reference_shapes", "numpyro_model"]


def reference_shapes(model: ShapeModel, n_sd: float = 3.0, max_modes: int = 10) -> np.ndarray:
    """The mean and the ``+-n_sd`` extremes along the leading modes, ``(R, n_vert, 3)``;
    observations use them to size their static buffers (``obs.bind``)."""
    shapes = [np.asarray(model.mean)]
    for i in range(min(model.n_modes, max_modes)):
        for s in (-n_sd, n_sd):
            a = jnp.zeros(model.n_modes, dtype=model.variance.dtype).at[i].set(s)
            shapes.append(np.asarray(model.instance(a)))
    return np.stack(shapes)


def numpyro_model(problem: Problem):
    """The NumPyro model: ``theta ~ N(0, I)`` and a factor with the log-likelihood."""
    import numpyro
    import numpyro.distributions as dist

    def model():
        theta = numpyro.sample("theta", dist.Normal(jnp.zeros(problem.dim), 1.0).to_event(1))
        ll = problem.log_likelihood(theta)
        numpyro.factor("log_likelihood", jnp.where(jnp.isnan(ll), -jnp.inf, ll))

    return model


def _neg_log_density(theta, problem):
    return -problem.log_density(theta)


def _neg_log_density_part(part, theta, problem, lo, hi):
    return -problem.log_density(jnp.concatenate([theta[:lo], part, theta[hi:]]))


# module-level jitted functions take the problem as an argument, so repeated inferences with
# observations of the same shapes (experiments, leave-one-out, the tests) reuse one compilation
_vg_full = jax.jit(jax.value_and_grad(_neg_log_density))
_vg_part = jax.jit(jax.value_and_grad(_neg_log_density_part), static_argnums=(3, 4))
_fitted_vertices = eqx.filter_jit(lambda problem, theta: problem.observation_vertices(problem.vertices(theta)))


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

    res = minimize(f, np.asarray(x0, dtype=np.float64), jac=True, method="L-BFGS-B",
                   options={"maxiter": steps, "ftol": 1e-10, "gtol": 1e-6})
    return jnp.asarray(res.x, dtype=dtype), history


def find_map(problem: Problem, *, steps: int = 150, start=None):
    """Maximum a posteriori ``theta`` (L-BFGS): pose first, then everything (from ``start``:
    everything at once)."""
    if start is not None:
        return _minimize(lambda th: _vg_full(th, problem), jnp.asarray(start), steps)
    x0 = jnp.zeros(problem.dim, dtype=problem.model.variance.dtype)
    if not np.isfinite(float(_vg_full(x0, problem)[0])):
        raise ValueError(
            "infer: the log-likelihood is not finite at the initial shape and pose; the model does not "
            "project into the views (check the geometry, the pose, or the units)")
    history = []
    if problem.pose is not None:
        k, kp = problem.n_modes, problem.n_modes + problem.n_pose
        base = x0
        p, h = _minimize(lambda p: _vg_part(p, base, problem, k, kp), x0[k:kp], steps)
        x0 = x0.at[k:kp].set(p)
        history += h
    x, h = _minimize(lambda th: _vg_full(th, problem), x0, steps)
    return x, history + h


def refine_map(problem: Problem, theta: Float[Array, " dim"], *, steps: int = 10, tol: float = 1e-3):
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
        raise ValueError(f"theta: expected shape ({problem.dim},) (whitened parameters of this problem), "
                         f"got {theta.shape}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps: expected a non-negative integer, got {steps}")
    if not np.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol: expected a positive Newton decrement in nats, got {tol}")
    if not all(_has_gauss_newton(o) for o in problem.observations):
        return theta, None, {"map_newton_decrement": float("nan"), "map_newton_steps": 0}
    v = float(_vg_full(theta, problem)[0])
    n = 0
    while True:
        cov, used = _laplace(problem, theta)
        g = _vg_full(theta, problem)[1]
        step = cov @ g
        dec = 0.5 * float(g @ step)
        if used != "gauss-newton":
            cov = None
        if cov is None or dec < tol or n >= steps:
            break
        for t in 0.5 ** np.arange(8):
            trial = theta - t * step
            v_trial = float(_vg_full(trial, problem)[0])
            if v_trial <= v - 1e-4 * t * 2.0 * dec:
                break
        else:
            break
        theta, v, n = trial, v_trial, n + 1
    return theta, cov, {"map_newton_decrement": dec, "map_newton_steps": n}


def _chain_method(num_chains: int) -> str:
    if num_chains == 1:
        return "sequential"
    if jax.local_device_count() >= num_chains:
        return "parallel"
    return "vectorized" if jax.default_backend() != "cpu" else "sequential"


def _gn_information(problem, theta_map):
    """``J^T J`` over the shape and pose entries of ``theta``, with ``J`` the Jacobian of every
    observation's whitened residuals at ``theta_map`` (one linearisation, then one
    forward-mode pass per parameter)."""
    k = problem.n_modes + problem.n_pose
    sig = problem.sigmas(theta_map)

    def resid(x):
        vs = problem.observation_vertices(problem.vertices(jnp.concatenate([x, theta_map[k:]])))
        return jnp.concatenate([o.whitened_residuals(v, sigma=s).reshape(-1)
                                for o, s, v in zip(problem.observations, sig, vs)])

    _, lin = jax.linearize(resid, theta_map[:k])
    jt = jax.lax.map(lin, jnp.eye(k, dtype=theta_map.dtype))
    return jt @ jt.T


_gn_info = eqx.filter_jit(_gn_information)


def _has_gauss_newton(o) -> bool:
    return type(o).whitened_residuals is not Observation.whitened_residuals


def _laplace(problem, theta_map, hessian: str = "gauss-newton", step: float = 1e-2):
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
    if hessian == "gauss-newton" and all(_has_gauss_newton(o) for o in problem.observations):
        k = problem.n_modes + problem.n_pose
        info = np.asarray(_gn_info(problem, theta_map), dtype=np.float64)
        if np.all(np.isfinite(info)):
            h = np.eye(dim)
            h[:k, :k] += info
            for i, o in enumerate(problem.observations[: problem.n_noise]):
                h[k + i, k + i] += problem.noise_sd ** 2 * o.log_sigma_information()
            cov = np.linalg.inv(0.5 * (h + h.T))
            return jnp.asarray(0.5 * (cov + cov.T), dtype=theta_map.dtype), "gauss-newton"
        warnings.warn("Laplace: the Gauss-Newton information is not finite at the MAP; using the "
                      "finite-difference Hessian", UserWarning, stacklevel=3)
    # the value-and-gradient function the MAP fit compiled (a separate gradient function would compile again)
    eye = jnp.eye(dim, dtype=theta_map.dtype)
    cols = [(_vg_full(theta_map + step * e, problem)[1] - _vg_full(theta_map - step * e, problem)[1]) / (2 * step)
            for e in eye]
    h = jnp.stack(cols, axis=1)
    h = 0.5 * (h + h.T)
    w, v = jnp.linalg.eigh(h)
    if float(w.min()) < 0.0:
        warnings.warn("Laplace: the Hessian at the MAP is not positive definite (a saddle or a poorly converged "
                      "MAP); directions of negative curvature keep their prior variance", UserWarning, stacklevel=3)
    w = jnp.maximum(w, 1.0)
    cov = (v / w[None, :]) @ v.T
    return 0.5 * (cov + cov.T), "finite-difference"


def infer(
    model: ShapeModel,
    observations,
    *,
    method: str = "nuts",
    pose: str | None = None,
    initial_pose=None,
    rotation_sd: float = 0.1,
    translation_sd: float = 10.0,
    scale_sd: float = 0.05,
    infer_noise: bool = False,
    noise_sd: float = 0.5,
    num_samples: int = 500,
    num_warmup: int = 500,
    num_chains: int = 2,
    target_accept_prob: float = 0.85,
    nuts_mass: str = "laplace",
    max_tree_depth: int = 10,
    svi_steps: int = 3000,
    learning_rate: float = 0.01,
    is_rounds: int = 4,
    is_samples: int = 1000,
    likelihood_faces: int | None = None,
    contour_weights: bool = True,
    laplace_hessian: str = "gauss-newton",
    seed: int = 0,
    progress: bool | None = None,
) -> Posterior:
    """Posterior over 3D shapes given observations in any number of views.

    Args:
        model: the prior, a :class:`ShapeModel` (PCA, GP or augmented).
        observations: one observation or a list (``bayesshape.obs``), any mix. The MAP of
            observations with a wider-reaching stand-in (:meth:`Observation.warm_start`, e.g. a
            :class:`~bayesshape.obs.Silhouette`'s chamfer contour) is fitted through the stand-ins
            first (``diagnostics["map_warm_start"]``).
        method: ``"nuts"`` (NumPyro NUTS, several chains), ``"svi"`` (variational,
            full-rank normal guide for up to 60 parameters, low-rank beyond; optax Adam,
            in coordinates whitened by the Laplace covariance and started from it),
            ``"laplace"`` (MAP by L-BFGS plus a Gaussian with the inverse
            Hessian as covariance) or ``"importance"`` (adaptive importance sampling
            started from that Gaussian, :func:`~bayesshape.inference.importance_sample`:
            corrects a skewed posterior for a few thousand log-density evaluations).
        pose: ``None`` (the shape is in the observations' frame), ``"rigid"`` or
            ``"similarity"``: the pose is inferred too.
        initial_pose: ``(rotvec (rad), translation (mm), log_scale)``; default found
            from the observations (3D landmarks, else silhouette/intensity centroids).
        rotation_sd, translation_sd, scale_sd: prior sd of the pose around the initial
            one (rad, mm, log-scale).
        infer_noise: also infer one noise-scale multiplier per observation
            (log-normal prior with sd ``noise_sd``).
        num_samples: posterior draws kept (per chain for NUTS).
        num_warmup, num_chains, target_accept_prob: NUTS settings.
        nuts_mass: NUTS inverse mass matrix. ``"laplace"`` (default): fixed at the
            Laplace (Gauss-Newton) covariance at the MAP, the warm-up tunes the step size
            only; ``"adapt"``: started there and re-estimated by Stan's windowed warm-up
            (dense up to 80 parameters), which needs a warm-up of many times the number of
            parameters: a slow window of a few dozen draws gives a rank-deficient dense
            estimate, tiny steps and very long trajectories.
        max_tree_depth: NUTS's largest tree: a draw costs at most ``2**max_tree_depth - 1``
            gradients. The share of draws that reach it is ``diagnostics["tree_depth_saturated"]``,
            with a warning above 1% (the step size is small against the posterior's extent).
        svi_steps, learning_rate: SVI settings (Adam steps; the rate decays to a tenth, cosine).
        is_rounds, is_samples: importance-sampling rounds and draws per round.
        likelihood_faces: evaluate the contour and DRR likelihoods on a decimated copy of
            the model's mesh with about this many faces (:func:`bayesshape.prior.coarsen_mesh`:
            a subset of the model's own vertices, so the posterior, its samples and every
            uncertainty map stay on the full mesh). Their cost falls in proportion; the
            surface of a 4000-face femur lies 0.10 mm from the 23294-face one on average.
            Default: the full mesh. Landmark and surface-point observations always use it.
        contour_weights: temper each contour likelihood by a composite-likelihood weight
            estimated at the MAP (:func:`bayesshape.obs.composite_weights`: the variance
            inflation of its correlated residuals times its misfit), then re-fit the MAP;
            without it, contour credible regions are too small (docs/experiments.md).
            The weights are in ``diagnostics["contour_weights"]``.
        laplace_hessian: ``"gauss-newton"`` (prior precision plus the Fisher information
            ``J^T J`` of the data, exact Jacobian; positive definite) or
            ``"finite-difference"`` (central differences of the gradient, eigenvalues
            clipped at the prior precision) for ``method="laplace"``; the one used is in
            ``diagnostics["laplace_hessian"]``.
        seed: seed for every random draw.
        progress: progress bars (default: when stderr is a terminal).

    Returns:
        A :class:`Posterior`. Bad diagnostics (R-hat > 1.01, low ESS, divergences,
        unconverged SVI) and observations the model cannot explain raise warnings.

    Example:
        >>> model = bs.build_pca_model(bs.datasets.example_shapes(20, seed=0))
        >>> sim = bs.simulate_xray(bs.datasets.example_shapes(1, seed=7)[0], bs.biplanar(field_of_view=480))
        >>> post = bs.infer(model, sim.observations("contour"), method="laplace", pose="rigid")
        >>> post.mean_mesh(), post.credible_radius(0.95)          # doctest: +SKIP
    """
    if not isinstance(model, ShapeModel):
        raise ValueError(f"model: expected a ShapeModel, got {type(model).__name__}")
    if isinstance(observations, Observation):
        observations = [observations]
    observations = list(observations)
    if not observations or not all(isinstance(o, Observation) for o in observations):
        raise ValueError("observations: expected one or more bayesshape.obs observations")
    if method not in ("nuts", "svi", "laplace", "importance"):
        raise ValueError(f"method: expected 'nuts', 'svi', 'laplace' or 'importance', got {method!r}")
    if nuts_mass not in ("laplace", "adapt"):
        raise ValueError(f"nuts_mass: expected 'laplace' or 'adapt', got {nuts_mass!r}")
    if laplace_hessian not in ("gauss-newton", "finite-difference"):
        raise ValueError(f"laplace_hessian: expected 'gauss-newton' or 'finite-difference', got {laplace_hessian!r}")
    for name, val, lo in (("num_samples", num_samples, 1), ("num_warmup", num_warmup, 0), ("num_chains", num_chains, 1),
                          ("max_tree_depth", max_tree_depth, 1), ("svi_steps", svi_steps, 1),
                          ("is_rounds", is_rounds, 1), ("is_samples", is_samples, 50)):
        as_count(val, name, lo)
    if pose not in (None, "rigid", "similarity"):
        raise ValueError(f"pose: expected None, 'rigid' or 'similarity', got {pose!r}")
    for name, val in (("rotation_sd", rotation_sd), ("translation_sd", translation_sd), ("scale_sd", scale_sd),
                      ("noise_sd", noise_sd)):
        if not np.isfinite(val) or val <= 0:
            raise ValueError(f"{name}: expected a positive prior sd, got {val}")
    if progress is None:
        progress = sys.stderr.isatty()
    if method == "nuts" and any(isinstance(o, DRR) and o.pixel == "centre" for o in observations):
        warnings.warn(
            "NUTS on DRRs sampled at pixel centres: where the shape cannot reproduce the image (anatomy outside "
            "the model) the log density has creases at every pixel centre a projected edge crosses, and NUTS's "
            "step size collapses; build the observations with DRR(..., pixel='area') (docs/likelihoods.md)",
            UserWarning, stacklevel=2)
    t_start = time.perf_counter()

    refs = reference_shapes(model)
    faces = None if model.faces is None else np.asarray(model.faces)
    index, on_coarse = None, ()
    if likelihood_faces is not None:
        if faces is None:
            raise ValueError("likelihood_faces: the model is a point set (no faces); there is no mesh to coarsen")
        from ..prior.coarsen import coarsen_mesh

        index, coarse_faces = coarsen_mesh(np.asarray(model.mean), faces, likelihood_faces)
        on_coarse = tuple(bool(o.renders_mesh) for o in observations)

        def bind(obs):
            return [o.bind(coarse_faces, refs[:, index]) if c else o.bind(faces, refs)
                    for o, c in zip(obs, on_coarse)]

        index = jnp.asarray(index)
    else:
        def bind(obs):
            return [o.bind(faces, refs) for o in obs]

    bound = bind(observations)
    check_units(model, bound)
    n_data = sum(o.n_data for o in bound)
    if initial_pose is None:
        rv, tr, ls = estimate_initial_pose(model, bound, pose)
    else:
        try:
            rv, tr, ls = initial_pose
        except (TypeError, ValueError):
            raise ValueError("initial_pose: expected (rotvec (3,), translation (3,), log_scale)") from None
        rv, tr, ls = np.asarray(rv, np.float64), np.asarray(tr, np.float64), float(ls)
        if rv.shape != (3,) or tr.shape != (3,) or not (np.all(np.isfinite(rv)) and np.all(np.isfinite(tr))
                                                        and np.isfinite(ls)):
            raise ValueError(f"initial_pose: expected finite rotvec (3,) rad, translation (3,) mm and log_scale; "
                             f"got {rv}, {tr}, {ls}")
    dt = model.variance.dtype
    problem = Problem(
        model, tuple(bound), jnp.asarray(_mean_centroid(model), dtype=dt), jnp.asarray(rv, dtype=dt),
        jnp.asarray(tr, dtype=dt), jnp.asarray(ls, dtype=dt), pose, float(rotation_sd), float(translation_sd),
        float(scale_sd), bool(infer_noise), float(noise_sd), index, on_coarse,
    )
    if n_data < problem.dim:
        warnings.warn(
            f"only {n_data} data for {problem.dim} free parameters: most of the posterior will be the prior; "
            "add observations or views, or fix the pose", UserWarning, stacklevel=2)

    warm = [o.warm_start() for o in observations]
    warm_started = any(w is not None for w in warm)
    if warm_started:
        # fit the basin with the wider-reaching stand-ins first (e.g. a Silhouette's chamfer Contour)
        stand_in = eqx.tree_at(lambda p: p.observations, problem,
                               tuple(bind([o if w is None else w for o, w in zip(observations, warm)])))
        theta_warm, map_history = find_map(stand_in)
        theta_map, more = find_map(problem, start=theta_warm)
        map_history += more
    else:
        theta_map, map_history = find_map(problem)
    weights = None
    contours = [i for i, o in enumerate(problem.observations) if isinstance(o, Contour)]
    if contour_weights and contours:
        vs = _fitted_vertices(problem, theta_map)
        weights = composite_weights([problem.observations[i] for i in contours], [vs[i] for i in contours],
                                    seed=seed)
        obs_w = list(problem.observations)
        for i, w in zip(contours, weights):
            obs_w[i] = obs_w[i].with_weight(w)
        problem = eqx.tree_at(lambda p: p.observations, problem, tuple(obs_w))
        theta_map, more = find_map(problem, start=theta_map)
        map_history += more
    theta_map, gn_cov, newton = refine_map(problem, theta_map)
    diag = {"map_log_density": -float(_vg_full(theta_map, problem)[0]), "n_data": int(n_data),
            "n_params": problem.dim, "map_iterations": len(map_history), **newton}
    if warm_started:
        diag["map_warm_start"] = [None if w is None else type(w).__name__ for w in warm]
    if newton["map_newton_decrement"] > 5.0:
        warnings.warn(
            f"MAP not converged: after {newton['map_newton_steps']} Gauss-Newton steps a full step would still gain "
            f"{newton['map_newton_decrement']:.1f} nats; the Laplace approximation and the MCMC starts are off-centre "
            "(a log density rough at the posterior's scale, e.g. DRRs of a shape outside the model): prefer NUTS, "
            "or treat the Laplace credible regions as approximate",
            UserWarning, stacklevel=2)
    if weights is not None:
        diag["contour_weights"] = weights
    key = jax.random.key(seed)
    gaussian = None
    if method in ("laplace", "importance"):
        if laplace_hessian == "gauss-newton" and gn_cov is not None:
            cov, diag["laplace_hessian"] = gn_cov, "gauss-newton"
        else:
            cov, diag["laplace_hessian"] = _laplace(problem, theta_map, laplace_hessian)
        if method == "laplace":
            gaussian = (theta_map, cov)
            theta = jax.random.multivariate_normal(key, theta_map, cov, (num_samples,), method="eigh")[None]
        else:
            theta, diag_is = importance_sample(problem, theta_map, cov, key=key, rounds=is_rounds,
                                               samples_per_round=is_samples, num_samples=num_samples)
            diag.update(diag_is)
    elif method == "svi":
        theta, diag_svi = _svi(problem, theta_map, key, svi_steps, learning_rate, num_samples, progress, cov=gn_cov)
        diag.update(diag_svi)
    else:
        theta, diag_nuts = _nuts(problem, theta_map, key, num_samples, num_warmup, num_chains,
                                 target_accept_prob, progress, nuts_mass, cov=gn_cov, max_tree_depth=max_tree_depth)
        diag.update(diag_nuts)
    diag["wall_time_s"] = time.perf_counter() - t_start
    diag["warnings"] = warn_diagnostics(diag)
    post = Posterior(problem, theta, method, diag, theta_map=theta_map, gaussian=gaussian)
    _warn_misfit(post)
    _warn_overflow(post)
    return post


def _warn_overflow(post: Posterior):
    vs = _observation_vertices(post.problem, jnp.asarray(post.mean_vertices()))
    for o, v in zip(post.problem.observations, vs):
        if hasattr(o, "overflow") and o.overflow(v):
            msg = (f"{type(o).__name__}: the posterior mean has more contour edges than the likelihood's capacity "
                   f"({o.capacity}); some edges were ignored. Bind with reference shapes closer to the data.")
            post.diagnostics.setdefault("warnings", []).append(msg)
            warnings.warn(msg, UserWarning, stacklevel=3)


def _warn_misfit(post: Posterior, threshold: float = 4.0):
    mis = post.predictive_misfit()
    bad = [m for m in mis if m["mean_sq_std_residual"] > threshold]
    if bad:
        kinds = ", ".join(f"{m['type']} ({m['mean_sq_std_residual']:.1f})" for m in bad)
        good = [m for m in mis if m["mean_sq_std_residual"] <= threshold]
        hint = ("the other observations are fitted; these contradict them or are wrong"
                if good else "no shape of the model explains the data: the anatomy may lie outside the model, "
                "or the views, units or noise levels are wrong")
        msg = f"observations fit badly at the posterior mean (mean squared standardised residual): {kinds}; {hint}"
        post.diagnostics.setdefault("warnings", []).append(msg)
        warnings.warn(msg, UserWarning, stacklevel=3)


def _numpyro_promotion():
    """NumPyro's internals rely on JAX's standard dtype and rank promotion; run them under it even
    when the caller has made promotion strict (bayesshape's own code is strict-clean)."""
    import contextlib

    stack = contextlib.ExitStack()
    stack.enter_context(jax.numpy_dtype_promotion("standard"))
    stack.enter_context(jax.numpy_rank_promotion("allow"))
    return stack


def _whitened_model(problem: Problem, loc, chol):
    """The NumPyro model in coordinates ``z`` with ``theta = loc + chol @ z``: its density is the
    posterior's (the Jacobian ``|chol|`` is a constant), so SVI's ELBO is unchanged up to a constant.

    With ``loc, chol`` the MAP and the Cholesky factor of the Laplace covariance the posterior in
    ``z`` is close to ``N(0, I)``: Adam's steps, about ``learning_rate`` per parameter whatever the
    gradient's scale, are then in units of posterior sd for every parameter. In ``theta`` (prior
    sd units) a pose parameter the data pin to a hundredth of its prior sd would take 1e-2 steps,
    its posterior's own width, and the scale of the guide would shrink over thousands of steps.
    """
    import numpyro
    import numpyro.distributions as dist

    def model():
        z = numpyro.sample("z", dist.Normal(jnp.zeros(problem.dim), 1.0).to_event(1))
        theta = loc + chol @ z
        ld = problem.log_density(theta) + 0.5 * jnp.sum(z**2)  # replaces the N(0, I) on z
        numpyro.factor("log_density", jnp.where(jnp.isnan(ld), -jnp.inf, ld))

    return model


def _svi(problem, theta_map, key, steps, lr, num_samples, progress, cov=None):
    """Variational inference with a multivariate normal guide (low-rank above 60 parameters),
    in coordinates whitened by the Laplace approximation and started from it (:func:`_whitened_model`)."""
    import optax
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoMultivariateNormal
    from numpyro.infer.initialization import init_to_value
    from numpyro.optim import optax_to_numpyro

    if cov is None:
        cov, _ = _laplace(problem, theta_map)
    chol = jnp.linalg.cholesky(jnp.asarray(cov))
    if not bool(jnp.all(jnp.isfinite(chol))):
        raise ValueError("svi: the Laplace covariance at the MAP is not positive definite (its Cholesky factor is "
                         "not finite), so SVI cannot start from it; use method='nuts' or check the observations")
    model = _whitened_model(problem, theta_map, chol)
    # the guide starts at the Laplace approximation: z ~ N(0, I)
    init = init_to_value(values={"z": jnp.zeros_like(theta_map)})
    if problem.dim <= 60:
        guide = AutoMultivariateNormal(model, init_loc_fn=init, init_scale=1.0)
    else:
        guide = AutoLowRankMultivariateNormal(model, init_loc_fn=init, init_scale=1.0, rank=30)
    # Adam's steps on the noisy ELBO gradient jitter the guide about the optimum by about the learning
    # rate: decay it to a tenth over the run (on the femur landmarks from a 1.5-sd-off start, 1500 steps:
    # mean 0.11 posterior sd off at a constant rate, 0.03 with the decay)
    sched = optax.cosine_decay_schedule(lr, steps, alpha=0.1)
    optim = optax_to_numpyro(optax.chain(optax.clip_by_global_norm(10.0), optax.adam(sched)))
    svi = SVI(model, guide, optim, loss=Trace_ELBO(num_particles=4))
    k1, k2 = jax.random.split(key)
    with _numpyro_promotion():
        res = svi.run(k1, steps, progress_bar=progress, stable_update=True)
        z = guide.sample_posterior(k2, res.params, sample_shape=(num_samples,))["z"]
    samples = theta_map[None, :] + z @ chol.T
    losses = np.asarray(res.losses)
    w = max(steps // 10, 10)
    last, prev = losses[-w:].mean(), losses[-2 * w : -w].mean()
    spread = losses[-w:].std() / np.sqrt(w)
    converged = bool(abs(prev - last) < max(3 * spread, 1e-4 * abs(last)))
    return samples[None], {"loss": losses.tolist(), "final_loss": float(last), "converged": converged,
                           "svi_start": "laplace"}


def _nuts(problem, theta_map, key, num_samples, num_warmup, num_chains, target_accept_prob, progress,
          mass="laplace", cov=None, max_tree_depth=10):
    from numpyro.diagnostics import split_gelman_rubin
    from numpyro.infer import MCMC, NUTS

    model = numpyro_model(problem)
    k_init, k_run = jax.random.split(key)
    # over-dispersed starts around the MAP (from the Laplace covariance), so R-hat means something
    if cov is None:
        cov, _ = _laplace(problem, theta_map)
    starts = jax.random.multivariate_normal(k_init, theta_map, cov, (num_chains,), method="eigh")
    # the Laplace covariance is the inverse mass matrix: the pose directions are pinned far more
    # tightly by the data than by their prior, and an identity mass matrix makes trajectories very
    # long. "laplace" keeps it (the warm-up tunes the step size); "adapt" re-estimates it in Stan's
    # windows, which with a short warm-up (a first slow window of 25 draws for 25 parameters) gives a
    # rank-deficient dense estimate and trees at the maximum depth
    dense = problem.dim <= 80 or mass == "laplace"
    inv_mass = cov if dense else jnp.diag(cov)
    kernel = NUTS(model, dense_mass=dense, target_accept_prob=target_accept_prob,
                  inverse_mass_matrix={("theta",): inv_mass}, adapt_mass_matrix=mass == "adapt",
                  max_tree_depth=max_tree_depth)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method=_chain_method(num_chains), progress_bar=progress)
    with _numpyro_promotion():
        mcmc.run(k_run, init_params={"theta": starts if num_chains > 1 else starts[0]},
                 extra_fields=("diverging", "num_steps"))
    theta = mcmc.get_samples(group_by_chain=True)["theta"]
    extra = mcmc.get_extra_fields()
    div = int(np.asarray(extra["diverging"]).sum())
    th = np.asarray(theta, dtype=np.float64)
    steps = np.asarray(extra["num_steps"])
    # a tree of depth d holds 2**(d-1) to 2**d - 1 leapfrog steps: Stan's treedepth__ == max_depth
    diag = {"divergences": div, "num_chains": num_chains, "num_samples": num_samples, "num_warmup": num_warmup,
            "nuts_mass": mass, "mean_num_steps": float(np.mean(steps)), "max_tree_depth": max_tree_depth,
            "tree_depth_saturated": float(np.mean(steps >= 2 ** (max_tree_depth - 1)))}
    if num_chains > 1:
        rhat = np.asarray(split_gelman_rubin(th))
        diag["max_rhat"] = float(np.max(rhat))
        diag["rhat"] = rhat.tolist()
    ess, tail = _ess_bulk_tail(th)
    diag["min_ess_bulk"] = float(np.min(ess))
    diag["min_ess_tail"] = float(np.nanmin(tail))
    diag["ess_bulk"] = ess.tolist()
    return theta, diag


def _ess_bulk_tail(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bulk and tail effective sample size per parameter of ``(chains, draws, dim)`` samples.

    Bulk: NumPyro's multi-chain ESS. Tail: the smaller ESS of the indicators of the 5% and
    95% quantiles (Vehtari et al. 2021). Like Stan and ArviZ, the integrated autocorrelation
    time is kept at or above ``1 / log10(chains * draws)``, i.e. an ESS at most
    ``chains * draws * log10(chains * draws)``: NumPyro's raw estimate turns negative for
    strongly anti-correlated draws (an alternating chain), which are in fact super-efficient.
    """
    from numpyro.diagnostics import effective_sample_size

    th = np.asarray(samples, dtype=np.float64)
    n = th.shape[0] * th.shape[1]
    cap = n * np.log10(max(n, 2))

    def capped(x):
        e = np.asarray(effective_sample_size(x), dtype=np.float64)
        return np.where((e < 0) | (e > cap), cap, e)

    q05, q95 = np.quantile(th, 0.05, axis=(0, 1)), np.quantile(th, 0.95, axis=(0, 1))
    tail = np.minimum(capped((th <= q05).astype(np.float64)), capped((th <= q95).astype(np.float64)))
    return capped(th), tail
