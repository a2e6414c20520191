"""infer(), the posterior, the closed form, reliability and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesshape as bs
from bayesshape import obs


class Plain(obs.Observation):
    """A user-written observation: log-likelihood, residuals and n_data only (no Gauss-Newton form,
    no pose anchor, no unit check)."""

    inner: obs.Landmarks3D

    def log_likelihood(self, vertices, sigma=None):
        return self.inner.log_likelihood(vertices, sigma)

    def residuals(self, vertices):
        return self.inner.residuals(vertices)

    @property
    def n_data(self):
        return self.inner.n_data


def _landmark_setup(model):
    rng = np.random.default_rng(0)
    ids = np.linspace(0, model.n_vertices - 1, 10).astype(int)
    truth = np.asarray(model.instance(jnp.asarray(rng.standard_normal(model.n_modes))))
    points = truth[ids] + rng.standard_normal((10, 3))  # sigma 1 mm
    exact = bs.posterior_from_landmarks(model, ids, points, 1.0, n_samples=4000, seed=1)
    return model, ids, points, exact


@pytest.fixture(scope="module", params=["femur10", "example"])
def femur_setup(request):
    """Ten noisy 3D landmarks and their closed-form posterior: on the real femur model where
    ../shared/data is present, and always on the built-in example model, so these never all skip."""
    if request.param == "femur10":
        meshes = request.getfixturevalue("femur_meshes")
        return _landmark_setup(bs.build_pca_model(meshes, align=None))
    return _landmark_setup(request.getfixturevalue("example_model"))


def test_closed_form_matches_dense_gaussian_conditioning(example_model):
    model = example_model
    ids = np.array([5, 700, 1500, 2900])
    rng = np.random.default_rng(3)
    y = np.asarray(model.mean)[ids] + rng.normal(scale=2.0, size=(4, 3))
    post = bs.posterior_from_landmarks(model, ids, y, 1.5)
    # dense conditioning of the joint Gaussian of all coordinates on the landmark coordinates
    b = np.asarray(model.basis) * np.sqrt(np.asarray(model.variance))[None, :]
    cov = b @ b.T
    obs_idx = (3 * ids[:, None] + np.arange(3)[None, :]).reshape(-1)
    s_oo = cov[np.ix_(obs_idx, obs_idx)] + 1.5**2 * np.eye(12)
    gain = cov[:, obs_idx] @ np.linalg.inv(s_oo)
    mean = np.asarray(model.mean).reshape(-1) + gain @ (y.reshape(-1) - np.asarray(model.mean).reshape(-1)[obs_idx])
    pcov = cov - gain @ cov[obs_idx, :]
    vc = post.vertex_covariance()
    for v in (0, 5, 1000, 3000):
        np.testing.assert_allclose(vc[v], pcov[3 * v : 3 * v + 3, 3 * v : 3 * v + 3], atol=1e-8)
    mean_cf = np.asarray(model.instance(post.gaussian[0])).reshape(-1)
    np.testing.assert_allclose(mean_cf, mean, atol=1e-8)
    # the sample mean agrees within Monte Carlo error (4000 draws: sd/63)
    sd = np.sqrt(np.trace(vc, axis1=1, axis2=2))
    err = np.linalg.norm(post.mean_vertices() - mean.reshape(-1, 3), axis=1)
    assert np.median(err / sd) < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("method, tol", [("nuts", 0.10), ("svi", 0.20)])
def test_sampling_methods_match_closed_form(femur_setup, method, tol):
    model, ids, points, exact = femur_setup
    config = bs.NUTS(num_warmup=300, num_chains=2) if method == "nuts" else bs.SVI(steps=1000)
    post = bs.infer(model, obs.Landmarks3D(ids, points, 1.0), method=config, num_samples=600, seed=0)
    sd_exact = exact.vertex_std()
    sd = post.vertex_std()
    # median relative error of the per-vertex sd; with ESS ~ 1000 (2 x 600 draws) the MC error of an sd is ~2%
    assert np.median(np.abs(sd / sd_exact - 1)) < tol
    mean_err = np.linalg.norm(post.mean_vertices() - np.asarray(model.instance(exact.gaussian[0])), axis=1)
    assert np.median(mean_err / sd_exact) < 0.1
    if method == "nuts":
        info = post.diagnostics.info
        assert info.max_rhat < 1.01
        assert info.divergences == 0
        assert info.min_ess_bulk > 400
        # the target is Gaussian and the mass matrix its exact covariance (nuts_mass="laplace"): the
        # trajectories are short (an identity or a badly adapted dense mass matrix takes tens to hundreds)
        assert info.mass == "laplace" and info.mean_num_steps < 8
    else:
        assert post.diagnostics.info.converged


@pytest.mark.slow
def test_svi_optimises_from_a_wrong_start(femur_setup):
    """infer's SVI starts at the Laplace approximation, which is exact for landmarks; started instead 1.5
    posterior sd off in every parameter with a covariance 3 times too wide, it must reach the closed form."""
    from bayesshape.inference import run_svi

    model, ids, points, exact = femur_setup
    lap = bs.infer(model, obs.Landmarks3D(ids, points, 1.0), method="laplace", num_samples=10, seed=0)
    theta_map, cov = lap.gaussian
    start = theta_map + 1.5 * jnp.sqrt(jnp.diag(cov))
    before = np.asarray(model.instance(start[: model.n_modes]))
    theta, diag = run_svi(lap.problem, start, 3.0 * cov, jax.random.key(0), bs.SVI(1500, 0.01), 1000, False)
    post = bs.Posterior(lap.problem, theta, "svi", diag)
    sd_exact = exact.vertex_std()
    exact_mean = np.asarray(model.instance(exact.gaussian[0]))
    # the start is off by about 1.5 sd and 1.7 times too wide; 1000 draws: the MC error of an sd is ~2%
    assert np.median(np.linalg.norm(before - exact_mean, axis=1) / sd_exact) > 1.0
    assert np.median(np.abs(post.vertex_std() / sd_exact - 1)) < 0.1
    assert np.median(np.linalg.norm(post.mean_vertices() - exact_mean, axis=1) / sd_exact) < 0.1
    assert diag.converged


def test_svi_refuses_a_covariance_without_a_cholesky_factor(example_model):
    """SVI starts from the Laplace approximation; an indefinite covariance must stop it with a ValueError
    that says what to do, not run on a NaN Cholesky factor."""
    from bayesshape.inference import run_svi

    model = example_model
    ids = np.array([5, 700, 1500, 2900])
    y = np.asarray(model.mean)[ids]
    lap = bs.infer(model, obs.Landmarks3D(ids, y, 1.5), method="laplace", num_samples=10, seed=0)
    theta_map, cov = lap.gaussian
    bad = cov.at[0, 0].set(-1.0)  # indefinite
    with pytest.raises(ValueError, match=r"not positive definite.*method=bs.NUTS\(\)"):
        run_svi(lap.problem, theta_map, bad, jax.random.key(0), bs.SVI(10, 0.01), 10, False)


@pytest.mark.slow
def test_contour_inference_recovers_shape_and_pose(example_model):
    from scipy.spatial.transform import Rotation

    model = example_model
    truth = bs.datasets.example_shapes(1, seed=42)[0]
    c = truth.vertices.mean(0)
    tv = (truth.vertices - c) @ Rotation.from_rotvec([0.02, -0.03, 0.04]).as_matrix().T + c + np.array([4.0, -3.0, 5.0])
    import trimesh

    sim = bs.simulate_xray(
        trimesh.Trimesh(tv, truth.faces, process=False),
        bs.biplanar(field_of_view=480, detector_shape=(128, 128)),
        seed=0,
    )
    post = bs.infer(
        model,
        sim.observations("contour", sigma=1.0, n_points=160),
        method="laplace",
        pose="rigid",
        seed=0,
        likelihood=bs.LikelihoodOptions(coarse_faces=2400),
    )
    assert post.diagnostics.info.hessian == "gauss-newton"  # positive definite: no warning (errors here)
    # the likelihood saw a coarse mesh; the posterior lives on the full one
    assert post.mean_vertices().shape == tv.shape and post.problem.likelihood_index.shape[0] < 0.5 * len(tv)
    err = np.linalg.norm(post.mean_vertices() - tv, axis=1)
    start = np.linalg.norm(np.asarray(model.mean) - tv, axis=1)
    assert err.mean() < 1.5 and err.mean() < 0.3 * start.mean()
    rel = post.reliability(tolerance_mm=3.0)
    assert not rel.misfitting
    vol = post.measure(lambda v: jnp.sum(v[:, 2]))  # any derived measurement
    assert vol.lower <= vol.mean <= vol.upper


def test_gauss_newton_laplace_is_exact_for_linear_gaussian_landmarks(example_model):
    """Linear-Gaussian data: the Gauss-Newton Laplace covariance is the exact posterior's; an
    observation without whitened residuals falls back to the finite-difference Hessian (also
    exact here, the log density being quadratic)."""
    model = example_model
    ids = np.array([5, 700, 1500, 2900])
    y = np.asarray(model.mean)[ids] + np.random.default_rng(3).normal(scale=2.0, size=(4, 3))
    exact = bs.posterior_from_landmarks(model, ids, y, 1.5)
    post = bs.infer(model, obs.Landmarks3D(ids, y, 1.5), method="laplace", num_samples=10)
    assert post.diagnostics.info.hessian == "gauss-newton"
    np.testing.assert_allclose(post.gaussian[1], exact.gaussian[1], atol=1e-10)
    np.testing.assert_allclose(post.gaussian[0], exact.gaussian[0], atol=1e-6)  # L-BFGS tolerance
    assert post.diagnostics.map.newton_decrement < 1e-10
    # the Gauss-Newton refinement after L-BFGS: one Newton step is exact for a quadratic log density
    from bayesshape.inference import refine_map

    start = post.theta_map + 0.3 * jnp.sin(jnp.arange(model.n_modes, dtype=post.theta_map.dtype))
    theta, cov, info = refine_map(post.problem, start)
    assert info["map_newton_steps"] == 1
    np.testing.assert_allclose(theta, exact.gaussian[0], atol=1e-9)
    np.testing.assert_allclose(cov, exact.gaussian[1], atol=1e-10)
    with pytest.raises(ValueError, match="theta: expected shape"):
        refine_map(post.problem, start[:-1])
    with pytest.raises(ValueError, match="tol: expected a positive"):
        refine_map(post.problem, start, tol=0.0)
    with pytest.raises(ValueError, match="min_steps: expected an integer from 0 to steps"):
        refine_map(post.problem, start, steps=2, min_steps=3)

    fd = bs.infer(model, Plain(obs.Landmarks3D(ids, y, 1.5)), method="laplace", num_samples=10)
    assert fd.diagnostics.info.hessian == "finite-difference"
    np.testing.assert_allclose(fd.gaussian[1], exact.gaussian[1], atol=1e-8)

    # the MAP in the first three modes, then Gauss-Newton steps in all: the exact posterior too
    lead = bs.infer(model, obs.Landmarks3D(ids, y, 1.5), method=bs.Laplace(map_modes=3), num_samples=10)
    np.testing.assert_allclose(lead.gaussian[0], exact.gaussian[0], atol=1e-6)
    np.testing.assert_allclose(lead.gaussian[1], exact.gaussian[1], atol=1e-10)
    assert lead.diagnostics.map.newton_steps == 1 and lead.diagnostics.map.newton_decrement < 1e-10
    assert np.abs(np.asarray(exact.gaussian[0])[3:]).max() > 1e-3  # the later modes are informed
    with pytest.raises(ValueError, match="infer_batch: Laplace\\(map_modes"):
        bs.infer_batch(model, [obs.Landmarks3D(ids, y, 1.5)], bs.Laplace(map_modes=3))


@pytest.mark.slow
def test_gauss_newton_laplace_equals_the_hessian_on_a_noise_free_drr(example_shapes):
    """Where the model reproduces the image exactly the residuals vanish and the Hessian of the
    negative log density is exactly ``I + J^T J``: the Gauss-Newton Laplace precision (autodiff
    Jacobian through the renderer, rigid pose, both views) against central differences of the
    exact gradient (step 1e-5: truncation error ~1e-10 relative), at the true parameters."""
    from bayesshape.inference import laplace_covariance, reference_shapes
    from bayesshape.inference._problem import Problem
    from bayesshape.projection.render import render_drr

    model = bs.build_pca_model(example_shapes[:6], align="rigid")  # 5 modes: a cheaper Hessian
    alpha = jnp.asarray(np.random.default_rng(4).normal(scale=0.8, size=model.n_modes))
    truth = model.instance(alpha)
    refs = reference_shapes(model)
    drrs = []
    for view in bs.biplanar(field_of_view=480, detector_shape=(40, 40)):
        drrs.append(obs.DRR(view, render_drr(truth, model.faces, view, footprint=8), 0.5).bind(model.faces, refs))
    zero = jnp.zeros(3)
    problem = Problem(
        model, tuple(drrs), jnp.asarray(model.mean).mean(0), zero, zero, jnp.zeros(()), bs.RigidPose(0.1, 10.0), None
    )
    theta = jnp.concatenate([alpha, jnp.zeros(6)])
    resid = jax.jit(lambda th: drrs[0].residuals(problem.vertices(th)))(theta)
    assert float(jnp.max(jnp.abs(resid))) < 1e-9
    cov, used = laplace_covariance(problem, theta)
    assert used == "gauss-newton"
    cov_fd, used = laplace_covariance(problem, theta, "finite-difference", step=1e-5)
    assert used == "finite-difference"
    h = np.linalg.inv(np.asarray(cov_fd))
    assert np.abs(h - np.eye(len(theta))).max() > 10  # the images are informative
    np.testing.assert_allclose(np.linalg.inv(np.asarray(cov)), h, atol=1e-5 * np.abs(h).max())
    # Gauss-Newton refinement to the MAP (next to the truth: the prior pulls a little) from the truth
    # and from 0.05 prior sd off in every parameter (many posterior sd: the images are sharp) ends at
    # the same point, where the Newton decrement (gain of a full step, nats) vanishes
    from bayesshape.inference import refine_map

    ends = []
    for start in (theta, theta + 0.05 * jnp.cos(jnp.arange(len(theta), dtype=theta.dtype))):
        end, _, info = refine_map(problem, start)
        assert 1 <= info["map_newton_steps"] < 10 and info["map_newton_decrement"] < 1e-3
        ends.append(end)
    np.testing.assert_allclose(ends[0], ends[1], atol=1e-4)


@pytest.mark.slow
def test_measure_matches_exact_marginal(femur_setup):
    model, ids, points, exact = femur_setup
    m = exact.measure(lambda v: v[123, 0], level=0.9)
    cov = exact.vertex_covariance()[123]
    mean = np.asarray(model.instance(exact.gaussian[0]))[123, 0]
    assert abs(float(m.mean) - mean) < 0.05 * np.sqrt(cov[0, 0])
    assert float(m.sd) == pytest.approx(np.sqrt(cov[0, 0]), rel=0.05)
    assert float(m.upper - m.lower) == pytest.approx(2 * 1.6449 * np.sqrt(cov[0, 0]), rel=0.06)


def test_misfit_flags_out_of_model_data(example_model):
    model = example_model
    ids = np.arange(0, model.n_vertices, 100)
    good = np.asarray(model.instance(jnp.zeros(model.n_modes)))[ids]
    bad = good.copy()
    bad[:, 0] += 25.0 * np.sin(np.arange(len(ids)))  # no smooth shape of the model does this
    post_good = bs.infer(model, obs.Landmarks3D(ids, good, 1.0), method="laplace")
    assert post_good.reliability().reliable is True or not post_good.reliability().misfitting
    with pytest.warns(UserWarning, match="fit badly"):
        post_bad = bs.infer(model, obs.Landmarks3D(ids, bad, 1.0), method="laplace")
    assert post_bad.reliability().misfitting


def test_bad_input_gets_clear_messages(example_model):
    model = example_model
    ids = np.arange(0, model.n_vertices, 300)
    pts_mm = np.asarray(model.mean)[ids]
    with pytest.raises(ValueError, match="units"):
        bs.infer(model, obs.Landmarks3D(ids, pts_mm / 1000.0, 0.001), method="laplace")
    with pytest.warns(UserWarning, match="free parameters"):
        bs.infer(model, obs.Landmarks3D(ids[:1], pts_mm[:1], 1.0), method="laplace", pose="rigid")
    with pytest.raises(ValueError, match="method"):
        bs.infer(model, obs.Landmarks3D(ids, pts_mm, 1.0), method="mcmc")
    with pytest.raises(ValueError, match="pose"):
        bs.infer(model, obs.Landmarks3D(ids, pts_mm, 1.0), pose="affine")
    # method settings are validated when the method is built, before any work
    with pytest.raises(ValueError, match="mass"):
        bs.NUTS(mass="diagonal")
    for cls, bad in (
        (bs.NUTS, {"num_chains": 0}),
        (bs.NUTS, {"num_warmup": -1}),
        (bs.SVI, {"steps": 0}),
        (bs.NUTS, {"max_tree_depth": 0}),
        (bs.Importance, {"rounds": 0}),
    ):
        with pytest.raises(ValueError, match=f"{next(iter(bad))}: expected an integer"):
            cls(**bad)
    with pytest.raises(ValueError, match="hessian"):
        bs.Laplace(hessian="exact")
    with pytest.raises(ValueError, match="target_accept_prob"):
        bs.NUTS(target_accept_prob=1.5)
    with pytest.raises(ValueError, match="initial"):
        bs.RigidPose(initial=(np.zeros(3), [np.nan] * 3, 0.0))
    with pytest.raises(ValueError, match="rotation_sd"):
        bs.SimilarityPose(rotation_sd=-1.0)
    # a setting of one method cannot reach another: infer takes no method keywords at all
    with pytest.raises(TypeError):
        bs.infer(model, obs.Landmarks3D(ids, pts_mm, 1.0), method="laplace", num_warmup=10)  # type: ignore[call-arg]
    # wrong types are refused naming the argument: a ValueError from infer's own checks, or (these tests run
    # with the jaxtyping/beartype checker on) the checker's TypeError, before any work either way
    with pytest.raises((ValueError, TypeError), match="likelihood"):
        bs.infer(model, obs.Landmarks3D(ids, pts_mm, 1.0), method="laplace", likelihood={"coarse_faces": 10})
    for seed in ("abc", 1.5):
        with pytest.raises((ValueError, TypeError), match="seed"):
            bs.infer(model, obs.Landmarks3D(ids, pts_mm, 1.0), method="laplace", seed=seed)
    for seed in (2**70, -1):
        with pytest.raises(ValueError, match="seed: expected a non-negative integer"):
            bs.infer(model, obs.Landmarks3D(ids, pts_mm, 1.0), method="laplace", seed=seed)
    points_only = bs.ShapeModel(model.mean, model.basis, model.variance)
    with pytest.raises(ValueError, match="coarse_faces"):
        bs.infer(
            points_only,
            obs.Landmarks3D(ids, pts_mm, 1.0),
            method="laplace",
            likelihood=bs.LikelihoodOptions(coarse_faces=1000),
        )
    # NUTS on centre-sampled DRRs is pointed to pixel-area DRRs (checked before any work: the point-set
    # model then fails to bind the DRR)
    view = bs.biplanar(field_of_view=480, detector_shape=(64, 64))[0]
    with pytest.warns(UserWarning, match=r"DRR\(\.\.\., pixel='area'\)"), pytest.raises(ValueError, match="mesh model"):
        bs.infer(points_only, obs.DRR(view, np.ones((64, 64)), 0.1), method="nuts")
    # contradicting observations: 3D landmarks on one place, 2D landmarks saying another
    view = bs.biplanar(field_of_view=480, detector_shape=(128, 128))[0]
    shifted = np.asarray(view.project(jnp.asarray(pts_mm + np.array([30.0, 0.0, 0.0])[None, :])))
    with pytest.warns(UserWarning, match="fit badly"):
        bs.infer(model, [obs.Landmarks3D(ids, pts_mm, 0.5), obs.Landmarks2D(view, ids, shifted, 0.5)], method="laplace")


def test_short_chains_warn(example_model):
    ids = np.arange(0, example_model.n_vertices, 300)
    pts = np.asarray(example_model.mean)[ids]
    with pytest.warns(UserWarning, match="ESS|R-hat"):
        post = bs.infer(
            example_model,
            obs.Landmarks3D(ids, pts, 1.0),
            method=bs.NUTS(num_warmup=10, num_chains=2),
            num_samples=20,
            seed=0,
        )
    # a Gaussian posterior under its own covariance as the mass matrix needs a few leapfrog steps, far from the cap
    assert post.diagnostics.info.max_tree_depth == 10
    assert post.diagnostics.info.tree_depth_saturated == 0.0
    assert not any("tree depth" in m for m in post.diagnostics.warnings)
    assert any("ESS" in m or "R-hat" in m for m in post.diagnostics.warnings)


def test_saturated_trees_warn(example_model):
    """At ``max_tree_depth=2`` a draw takes 1 to 3 leapfrog steps and reaches depth 2 with 2 or 3 of them. This
    posterior's trees take about 14 steps at the default depth (``mean_num_steps`` 14.4 with this test's settings and
    seed; none near the cap, ``test_short_chains_warn``), so at depth 2 nearly every tree runs into the cap: the
    share is reported and warned about."""
    ids = np.arange(0, example_model.n_vertices, 300)
    pts = np.asarray(example_model.mean)[ids]
    with pytest.warns(UserWarning) as rec:
        post = bs.infer(
            example_model,
            obs.Landmarks3D(ids, pts, 1.0),
            method=bs.NUTS(num_warmup=50, num_chains=1, max_tree_depth=2),
            num_samples=50,
            seed=0,
        )
    d = post.diagnostics.info
    share = d.tree_depth_saturated
    assert d.max_tree_depth == 2 and d.mean_num_steps <= 3.0
    assert share > 0.5
    assert any(f"{share:.0%} of NUTS draws reached the maximum tree depth 2" in str(w.message) for w in rec)


def test_ess_is_positive_and_capped_like_stan():
    """Independent draws have an ESS near their number; an alternating chain (super-efficient, for which
    NumPyro's raw estimate is negative) gets Stan's cap n log10(n), never a negative ESS."""
    from numpyro.diagnostics import effective_sample_size

    from bayesshape.inference import ess_bulk_tail as _ess_bulk_tail

    rng = np.random.default_rng(0)
    iid = rng.standard_normal((4, 1000, 3))
    bulk, tail = _ess_bulk_tail(iid)
    assert np.all((bulk > 0.8 * 4000) & (bulk < 1.25 * 4000))  # sd of the estimate is a few percent at n = 4000
    assert np.all((tail > 0.6 * 4000) & (tail < 1.5 * 4000))
    alt = np.array([(-1.0) ** i for i in range(200)])[None, :, None] + 0.1 * rng.standard_normal((1, 200, 1))
    assert float(np.asarray(effective_sample_size(alt))[0]) < 0  # the raw estimate this guards against
    bulk, _ = _ess_bulk_tail(alt)
    np.testing.assert_allclose(bulk, 200 * np.log10(200))


@pytest.mark.slow
def test_in_model_coverage_of_credible_balls(example_model):
    """Shapes drawn from the model, 3D landmarks with noise, the exact posterior: the truth falls
    inside the per-vertex credible balls at the nominal rate. 100 cases; the per-case coverage of this
    posterior has an sd of 0.25 (50% level) down to 0.11 (95%), measured over 150 cases, so the mean
    over cases has an sd of 0.025 to 0.011 and 5 points is 2 to 4.5 sd."""
    rng = np.random.default_rng(11)
    ids = np.arange(0, example_model.n_vertices, 160)
    levels = (0.5, 0.8, 0.9, 0.95)
    hits = np.zeros(len(levels))
    n_cases = 100
    keys = jax.random.split(jax.random.key(5), n_cases)
    for i in range(n_cases):
        truth = np.asarray(example_model.sample(keys[i], 1)[0])
        pts = truth[ids] + rng.normal(scale=2.0, size=(len(ids), 3))
        post = bs.posterior_from_landmarks(example_model, ids, pts, 2.0, n_samples=500, seed=i)
        err = np.linalg.norm(post.mean_vertices() - truth, axis=1)
        hits += [np.mean(err <= post.credible_radius(lv)) for lv in levels]
        if i == 0:  # the radius is np.quantile's (linear) rule on the sample distances
            d = np.linalg.norm(post.vertex_samples() - post.mean_vertices()[None], axis=-1)
            np.testing.assert_allclose(post.credible_radius(0.9), np.quantile(d, 0.9, axis=0), rtol=1e-12)
    cov = hits / n_cases
    np.testing.assert_allclose(cov, levels, atol=0.05)


@pytest.mark.slow
def test_silhouette_inference_recovers_an_in_model_shape(example_model):
    """Masks observed pixel by pixel (``obs.Silhouette``) of a shape drawn from the model, moved by a
    rigid motion: the MAP is first fitted with the masks' chamfer contours (the warm start), the
    posterior mean lands within a fraction of the start's error, and the reliability check passes."""
    import trimesh
    from scipy.spatial.transform import Rotation

    model = example_model
    alpha = np.random.default_rng(7).standard_normal(model.n_modes)
    v = np.asarray(model.instance(jnp.asarray(alpha)))
    c = v.mean(0)
    tv = (v - c) @ Rotation.from_rotvec([0.05, -0.04, 0.06]).as_matrix().T + c + np.array([5.0, -4.0, 6.0])
    sim = bs.simulate_xray(
        trimesh.Trimesh(tv, np.asarray(model.faces), process=False),
        bs.biplanar(field_of_view=480, detector_shape=(128, 128)),
        seed=0,
    )
    masks = [obs.Silhouette(view, m, 0.5) for view, m in zip(sim.views, sim.masks)]
    assert isinstance(masks[0].warm_start(), obs.Contour)
    post = bs.infer(
        model, masks, method="laplace", pose="rigid", seed=0, likelihood=bs.LikelihoodOptions(coarse_faces=2400)
    )
    assert post.diagnostics.map.warm_start == ("Contour", "Contour")
    assert post.diagnostics.info.hessian == "gauss-newton"
    err = np.linalg.norm(post.mean_vertices() - tv, axis=1)
    start = np.linalg.norm(np.asarray(model.mean) - tv, axis=1)
    assert err.mean() < 1.0 and err.mean() < 0.15 * start.mean()
    assert not post.reliability(tolerance_mm=3.0).misfitting


def test_a_user_written_observation_gets_the_contract(example_model):
    """infer uses an observation only through the base class's contract, so a user-written one gets
    the initial pose from its pose_anchor, its unit check before any work, and the overflow warning;
    without them it gets the defaults (no anchor: the identity pose)."""
    model = example_model
    ids = np.arange(0, model.n_vertices, 200)
    shift = np.array([20.0, -5.0, 8.0])
    pts = np.asarray(model.mean)[ids] + shift

    class Anchored(Plain):
        def pose_anchor(self, model_mean, centroid):
            return obs.PoseAnchor(np.asarray(model_mean)[ids], world_points=np.asarray(self.inner.points))

    class Overflowing(Anchored):
        def overflow(self, vertices):
            return True

    class WrongUnits(Plain):
        def check_units(self, model_mean):
            raise ValueError("WrongUnits: these data are in metres")

    from bayesshape.inference import build_problem

    lm = obs.Landmarks3D(ids, pts, 1.0)
    plain, _ = build_problem(model, [Plain(lm)], bs.RigidPose())
    anchored, _ = build_problem(model, [Anchored(lm)], bs.RigidPose())
    builtin, _ = build_problem(model, [lm], bs.RigidPose())
    np.testing.assert_allclose(np.asarray(plain.init_translation), 0.0)
    np.testing.assert_allclose(np.asarray(anchored.init_translation), shift, atol=1e-6)
    np.testing.assert_allclose(np.asarray(anchored.init_translation), np.asarray(builtin.init_translation))
    with pytest.raises(ValueError, match="in metres"):
        bs.infer(model, WrongUnits(lm), method="laplace")
    with pytest.warns(UserWarning, match="capacity"):
        post = bs.infer(model, Overflowing(lm), method="laplace", pose="rigid", num_samples=10)
    assert any("capacity" in w for w in post.diagnostics.warnings)
    assert not Plain(lm).correlated_residuals and not Plain.has_gauss_newton()
    with pytest.raises(NotImplementedError, match="Plain takes no composite-likelihood weight"):
        Plain(lm).with_weight(0.5)


def test_silhouette_overflow_is_detected(example_model):
    """A Silhouette whose edge buffer is smaller than a shape's contour edges says so (it had no
    overflow check, so infer never warned for it); bound as infer binds it, the mean does not overflow."""
    from bayesshape.inference import reference_shapes

    model = example_model
    view = bs.biplanar(field_of_view=480, detector_shape=(96, 96))[0]
    sim = bs.simulate_xray(model.mesh(model.mean), [view], seed=0)
    sil = obs.Silhouette(view, sim.masks[0], 0.5).bind(model.faces, reference_shapes(model))
    v = jnp.asarray(model.mean)
    assert not sil.overflow(v)
    small = obs.Silhouette(
        view,
        None,
        float(sil.sigma),
        band=sil.band,
        topology=sil.topology,
        capacity=8,
        footprint=sil.footprint,
        _arrays=(sil.mask, sil.outline, sil.pixels, sil.labels),
    )
    assert small.overflow(v)


def test_gaussian_draws_survive_a_nearly_singular_float32_covariance():
    from bayesshape._gaussian import gaussian_draws

    key = jax.random.key(0)
    a = jax.random.normal(jax.random.key(1), (5, 5))
    well = a @ a.T + jnp.eye(5)
    # where the covariance is well conditioned: jax's own eigh draws, to the bit
    np.testing.assert_array_equal(
        gaussian_draws(key, jnp.arange(5.0), well, 9),
        jax.random.multivariate_normal(key, jnp.arange(5.0), well, (9,), method="eigh"),
    )
    # a pose pinned to 1e-8 next to unit modes: float32 eigenvalues come out slightly negative
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.key(2), (6, 6)).astype(jnp.float32))
    cov = (q * jnp.array([1e-8, 3e-8, 1e-7, 1.0, 1.0, 2.0], dtype=jnp.float32)[None, :]) @ q.T
    assert bool(jnp.any(jnp.linalg.eigh(cov)[0] < 0))
    draws = gaussian_draws(key, jnp.zeros(6, jnp.float32), cov, 4000)
    assert bool(jnp.all(jnp.isfinite(draws)))
    # and the draws still have the covariance (4000 draws: entries of size 1 to within ~0.1)
    np.testing.assert_allclose(np.cov(np.asarray(draws).T), np.asarray(cov), atol=0.15)
