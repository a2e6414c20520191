"""Assemblies of several objects: kinematics, the posture prior, additive DRRs, closed-form posterior,
gradients, vmap against loops, and the errors for bad input."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh
from scipy.spatial.transform import Rotation

import bayesshape as bs
from bayesshape.inference._assembly import build_assembly_problem, object_transforms
from bayesshape.posterior import posture
from bayesshape.prior import Assembly, PosturePrior
from bayesshape.projection.render import render_drr


def _sphere(center, radius=10.0, subdivisions=2):
    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    m.apply_translation(center)
    return m


def _three_spheres(rank=4, **kw):
    meshes = {"a": _sphere([0, 0, 30]), "b": _sphere([2, 0, 5], 11.0), "c": _sphere([-1, 1, -22], 12.0)}
    return Assembly.from_meshes(meshes, rank=rank, kernel=bs.kernels.GaussianKernel(4.0, 20.0), **kw)


def test_object_transforms_match_composed_homogeneous_matrices(rng):
    """The chain T_i = T_{i-1} o J_i (J_i: rotation about joint p_i, then translation), built here
    with scipy rotations and 4 x 4 matrices."""
    joints = rng.normal(0, 20, (3, 3))
    inc = np.concatenate([rng.normal(0, 0.2, (3, 3)), rng.normal(0, 3, (3, 3))], axis=1)
    rots, trans = object_transforms(jnp.asarray(inc), jnp.asarray(joints))
    t = np.eye(4)
    expected = [t.copy()]
    for (rv, tr), p in zip(zip(inc[:, :3], inc[:, 3:]), joints):
        j = np.eye(4)
        r = Rotation.from_rotvec(rv).as_matrix()
        j[:3, :3], j[:3, 3] = r, p + tr - r @ p
        t = t @ j
        expected.append(t.copy())
    for k, e in enumerate(expected):
        np.testing.assert_allclose(np.asarray(rots[k]), e[:3, :3], atol=1e-12)
        np.testing.assert_allclose(np.asarray(trans[k]), e[:3, 3], atol=1e-10)


def test_assembly_vertices_gather_equals_loop_over_objects_and_vmap_equals_loop(rng):
    asm = _three_spheres()
    mean = np.asarray(asm.combined_model().mean)
    lm = bs.obs.Landmarks3D([0, 200, 400], mean[[0, 200, 400]], 1.0)
    problem, _ = build_assembly_problem(asm, [lm], pose="rigid")
    thetas = jnp.asarray(rng.normal(0, 1, (4, problem.dim)))
    off = asm.vertex_offsets
    for th in thetas:
        x = problem.model.instance(problem.alpha(th))
        rots, trans = problem.object_transforms(th)
        rot, tr, sc = problem.pose_params(th)
        parts = []
        for k in range(asm.n_objects):  # the loop the vectorised gather replaces
            xk = x[off[k] : off[k + 1]] @ rots[k].T + trans[k][None]
            parts.append(sc * (xk - problem.center[None]) @ rot.T + (problem.center + tr)[None])
        np.testing.assert_allclose(np.asarray(problem.vertices(th)), np.asarray(jnp.concatenate(parts)), atol=1e-10)
    batched = jax.vmap(problem.vertices)(thetas)
    for i, th in enumerate(thetas):
        np.testing.assert_allclose(np.asarray(batched[i]), np.asarray(problem.vertices(th)), atol=1e-12)


def test_assembly_drr_is_the_sum_of_single_object_drrs():
    """Overlapping objects included: path lengths add."""
    a, b = _sphere([0, 0, 0], 10.0, 2), _sphere([6, 0, 0], 8.0, 2)  # overlapping
    asm = Assembly(
        ("a", "b"),
        (
            bs.gp_model(a, bs.kernels.GaussianKernel(1.0, 10.0), 2),
            bs.gp_model(b, bs.kernels.GaussianKernel(1.0, 10.0), 2),
        ),
        jnp.asarray([[3.0, 0.0, 0.0]]),
        PosturePrior.independent(1),
    )
    m = asm.combined_model()
    view = bs.XRayView.parallel([0, 1, 0], detector_shape=(32, 32), pixel_spacing=1.0)
    for pixel in ("centre", "area"):
        both = np.asarray(render_drr(m.mean, m.faces, view, pixel=pixel))
        single = sum(
            np.asarray(render_drr(jnp.asarray(x.vertices), jnp.asarray(x.faces), view, pixel=pixel)) for x in (a, b)
        )
        assert both.max() > 25.0  # the rays through the overlap see both spheres
        np.testing.assert_allclose(both, single, atol=1e-9)


def _linear_two_object_posterior(asm, ids, points, sigma, rot_sd):
    """The closed-form Gaussian posterior of the whitened parameters (shape, posture) of a two-object
    assembly observed by 3D landmarks, with the rotation linearised (exact as rot_sd -> 0)."""
    m = asm.combined_model()
    k = m.n_modes
    n = m.n_vertices
    b = (np.asarray(m.basis) * np.sqrt(np.asarray(m.variance))[None]).reshape(n, 3, k)
    chol = np.linalg.cholesky(np.asarray(asm.posture.covariance))
    lower = np.arange(n) >= asm.vertex_offsets[1]
    v = np.asarray(m.mean) - np.asarray(asm.joints)[0]
    jac_pose = np.zeros((n, 3, 6))
    # d/dr of R(r)(x - p) at r = 0 is -[x - p]_x; d/dt is I: only the lower object moves
    cross = np.zeros((n, 3, 3))
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -v[:, 2], v[:, 1], -v[:, 0]
    cross = cross - np.transpose(cross, (0, 2, 1))
    jac_pose[:, :, :3] = -cross
    jac_pose[:, :, 3:] = np.eye(3)
    jac_pose[~lower] = 0.0
    jac = np.concatenate([b, jac_pose @ chol], axis=2)[ids].reshape(-1, k + 6)
    y = (np.asarray(points) - np.asarray(m.mean)[ids]).reshape(-1)
    prec = np.eye(k + 6) + jac.T @ jac / sigma**2
    cov = np.linalg.inv(prec)
    return cov @ jac.T @ y / sigma**2, cov


def _nearly_linear_pair(rank):
    """Two spheres whose relative rotation is all but fixed (0.005 degrees): the posterior is the
    linear one of :func:`_linear_two_object_posterior`. Returns the assembly and its combined model."""
    asm = Assembly.from_meshes(
        {"up": _sphere([0, 0, 14]), "down": _sphere([0, 0, -14])},
        rank=rank,
        kernel=bs.kernels.GaussianKernel(4.0, 15.0),
        posture=PosturePrior.independent(1, rotation_deg=0.005, translation_mm=2.0),
    )
    return asm, asm.combined_model()


def _shifted_landmarks(asm, m):
    """40 landmarks of the pair with 1 mm noise, the lower object's moved by 1.5 mm."""
    rng = np.random.default_rng(3)
    ids = rng.choice(m.n_vertices, 40, replace=False)
    points = (
        np.asarray(m.mean)[ids]
        + rng.normal(0, 1.0, (40, 3))
        + np.where(ids[:, None] >= asm.vertex_offsets[1], 1.5, 0.0)
    )
    return ids, points


def test_two_object_landmarks_laplace_equals_closed_form_posterior():
    asm, m = _nearly_linear_pair(rank=5)
    ids, points = _shifted_landmarks(asm, m)
    sigma = 0.8
    post = bs.infer(asm, bs.obs.Landmarks3D(ids, points, sigma), method=bs.Laplace(), num_samples=100, seed=0)
    mean, cov = _linear_two_object_posterior(asm, ids, points, sigma, 0.005)
    theta_map, gcov = post.gaussian
    np.testing.assert_allclose(np.asarray(theta_map), mean, atol=2e-4)
    np.testing.assert_allclose(np.asarray(gcov), cov, atol=2e-4)
    # the lower object's translation is informed (its posterior sd below the prior's 2 mm), though the
    # shape modes, nearly rigid on a sphere this size, take part of it
    sd_t = np.sqrt(np.diag(cov)[-3:]) * 2.0
    assert np.all(sd_t < 1.5)


def test_two_object_landmarks_nuts_matches_closed_form_posterior():
    """NUTS on an assembly's posterior (shape coefficients and posture): its draws' mean and sd of every
    parameter against the closed-form Gaussian, within what the effective sample size allows."""
    asm, m = _nearly_linear_pair(rank=3)
    rng = np.random.default_rng(4)
    ids = rng.choice(m.n_vertices, 40, replace=False)
    points = np.asarray(m.mean)[ids] + rng.normal(0, 1.0, (40, 3))
    sigma = 0.8
    post = bs.infer(
        asm,
        bs.obs.Landmarks3D(ids, points, sigma),
        method=bs.NUTS(num_warmup=300, num_chains=2),
        num_samples=600,
        seed=1,
        progress=False,
    )
    mean, cov = _linear_two_object_posterior(asm, ids, points, sigma, 0.005)
    draws = np.asarray(post.flat_theta())[:, : mean.shape[0]]
    sd = np.sqrt(np.diag(cov))
    ess = np.asarray(post.diagnostics.info.ess_bulk)[: mean.shape[0]]
    assert np.all(ess > 200), ess
    # the mean within 4 Monte Carlo standard errors (the bulk ESS, at most the draws: NUTS's antithetic
    # draws can beat independent ones for the mean, not to be relied on); the sd within 4 of its own
    # relative standard error, about 1 / sqrt(2 n) with n the tail ESS (the sd is a second moment)
    n_draws = draws.shape[0]
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean), 4 * sd / np.sqrt(np.minimum(ess, n_draws)))
    n_sd = min(post.diagnostics.info.min_ess_tail, n_draws)
    np.testing.assert_array_less(np.abs(draws.std(0) / sd - 1), 4 / np.sqrt(2 * n_sd))
    assert post.diagnostics.info.max_rhat < 1.02


def test_assembly_log_density_gradient_matches_finite_differences(rng):
    asm = _three_spheres(rank=3)
    view = bs.XRayView.parallel([0, 1, 0], detector_shape=(40, 40), pixel_spacing=2.0)
    truth = np.asarray(asm.combined_model().mean)
    img = np.asarray(render_drr(jnp.asarray(truth), asm.combined_model().faces, view, pixel="area", mu=0.05))
    obs = [
        bs.obs.DRR(view, img, 0.05, mu=0.05, pixel="area"),
        bs.obs.OnObject(bs.obs.Landmarks3D([0, 5, 9], np.asarray(asm.models[1].mean)[[0, 5, 9]] + 0.5, 1.0), "b"),
    ]
    problem, _ = build_assembly_problem(asm, obs, pose="rigid")
    th = jnp.asarray(rng.normal(0, 0.3, problem.dim))
    grad = np.asarray(jax.jit(jax.grad(problem.log_density))(th))
    f = jax.jit(lambda x: problem.log_density(x))
    # one shape coefficient per object, the global pose and every posture parameter
    k = problem.n_modes
    for i in [0, k // 2, k - 1, *range(k, problem.dim)]:
        e = jnp.zeros(problem.dim).at[i].set(1e-5)
        fd = (float(f(th + e)) - float(f(th - e))) / 2e-5
        assert grad[i] == pytest.approx(fd, rel=1e-4, abs=1e-4), problem.names()[i]


def test_posture_angles_of_known_increments(tmp_path):
    """One joint bent by known angles: the posterior of a sharp prior around them reports them."""
    asm = _three_spheres(
        posture=PosturePrior.independent(
            2,
            rotation_deg=0.01,
            translation_mm=0.01,
            mean=[[0, np.radians(5.0), 0, 0, 0, 0], [np.radians(-3.0), 0, 0, 0, 0, 0]],
        )
    )
    ids = np.arange(0, 160, 8)
    post = bs.infer(asm, bs.obs.Landmarks3D(ids, np.asarray(asm.models[0].mean)[ids], 1.0), "laplace", num_samples=50)
    ang = posture.joint_angles(post)
    np.testing.assert_allclose(ang["sagittal"].mean(0), [5.0, 0.0], atol=0.05)
    # -3 degrees about x tilts the up axis towards +y: +3 degrees coronal
    np.testing.assert_allclose(ang["coronal"].mean(0), [0.0, 3.0], atol=0.05)
    up = posture.plane_angle(post, ("a", [0, 0, 1]), ("c", [0, 0, 1]), plane=(0, 2))
    assert np.mean(up) == pytest.approx(5.0, abs=0.05)
    rows = posture.interval_table(ang)
    assert [r["name"] for r in rows][:2] == ["sagittal[a/b]", "sagittal[b/c]"]
    # the combined confidence mesh carries each vertex's object, read back by trimesh's PLY reader
    bs.export_confidence_mesh(post, tmp_path / "spine.ply")
    data = trimesh.load(tmp_path / "spine.ply", process=False).metadata["_ply_raw"]["vertex"]["data"]
    np.testing.assert_array_equal(np.asarray(data["object_id"]), asm.object_ids())


def test_bad_assembly_input():
    with pytest.raises(ValueError, match="not positive definite"):
        PosturePrior(jnp.zeros((1, 6)), jnp.diag(jnp.asarray([1.0, 1, 1, 1, 1, -1])))
    with pytest.raises(ValueError, match="for 2 levels"):
        PosturePrior(jnp.zeros((2, 6)), jnp.eye(6))
    with pytest.raises(ValueError, match="prior for 2 joints"):
        model = bs.gp_model(_sphere([0, 0, 0]), bs.kernels.GaussianKernel(1.0, 5.0), 2)
        Assembly(("a", "b"), (model, model), jnp.zeros((1, 3)), PosturePrior.independent(2))
    with pytest.warns(UserWarning, match="intersect at the natural posture"):
        Assembly.from_meshes({"a": _sphere([0, 0, 0]), "b": _sphere([0, 0, 8])}, rank=2)
    asm = _three_spheres(rank=2)
    with pytest.raises(ValueError, match="object 'L9': not in this assembly"):
        bs.infer(asm, bs.obs.OnObject(bs.obs.Landmarks3D([0], np.zeros((1, 3)), 1.0), "L9"), "laplace")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="expected the posterior of an assembly"):
            posture.joint_angles(object())


def test_posture_angles_of_increments_equal_the_posteriors():
    asm = _three_spheres(rank=2)
    rng = np.random.default_rng(5)
    problem, _ = build_assembly_problem(
        asm, [bs.obs.Landmarks3D([0, 200, 400], np.asarray(asm.combined_model().mean)[[0, 200, 400]], 1.0)]
    )
    theta = jnp.asarray(rng.normal(0, 1, (3, problem.dim)))
    inc = np.asarray(jax.vmap(problem.increments)(theta))

    class _Post:  # the two things the posture functions read
        def __init__(self):
            self.problem = problem

        def flat_theta(self):
            return theta

    got = posture.joint_angles(_Post())
    want = posture.posture_angles(asm, inc)
    for key in ("sagittal", "coronal", "axial"):
        np.testing.assert_allclose(got[key], want[key], atol=1e-9)
    a, c = ("a", [0.0, 0.2, 1.0]), ("c", [0.1, 0.0, 1.0])
    np.testing.assert_allclose(
        posture.plane_angle(_Post(), a, c), posture.posture_plane_angle(asm, inc, a, c), atol=1e-9
    )


@pytest.mark.slow
def test_map_in_the_leading_modes_equals_the_closed_form_posterior():
    """``Laplace(map_modes=2)``: the MAP fitted in each object's first two of five modes, then
    Gauss-Newton steps in all of them (one: the problem is nearly linear), reaches the closed-form
    posterior as the full fit does; the step matters (the fit alone leaves modes 3 to 5 at zero)."""
    asm, m = _nearly_linear_pair(rank=5)
    ids, points = _shifted_landmarks(asm, m)
    sigma = 0.8
    lm = bs.obs.Landmarks3D(ids, points, sigma)
    post = bs.infer(asm, lm, method=bs.Laplace(map_modes=2), num_samples=100, seed=0)
    mean, cov = _linear_two_object_posterior(asm, ids, points, sigma, 0.005)
    theta_map, gcov = post.gaussian
    np.testing.assert_allclose(np.asarray(theta_map), mean, atol=2e-4)
    np.testing.assert_allclose(np.asarray(gcov), cov, atol=2e-4)
    later = np.r_[2:5, 7:10]  # each object's modes 3 to 5
    assert np.abs(mean[later]).max() > 0.01
    assert post.diagnostics.map.newton_steps == 1
    with pytest.raises(ValueError, match="map_modes"):
        bs.Laplace(map_modes=0)
    with pytest.raises(ValueError, match="map_modes"):
        bs.Laplace(map_modes=3, hessian="finite-difference")


@pytest.mark.slow
def test_two_object_landmarks_svi_matches_closed_form_posterior():
    """SVI on an assembly (full-rank Gaussian guide, exact in family here): 2000 draws' mean and sd of
    every parameter against the closed-form Gaussian. Monte Carlo error: 0.022 sd for the mean and
    1.6% for the sd; the bounds (0.15 sd, 10%) leave room for the optimiser's noise."""
    asm, m = _nearly_linear_pair(rank=3)
    rng = np.random.default_rng(4)
    ids = rng.choice(m.n_vertices, 40, replace=False)
    points = np.asarray(m.mean)[ids] + rng.normal(0, 1.0, (40, 3))
    post = bs.infer(asm, bs.obs.Landmarks3D(ids, points, 0.8), method=bs.SVI(), num_samples=2000, seed=1)
    assert post.diagnostics.info.converged
    mean, cov = _linear_two_object_posterior(asm, ids, points, 0.8, 0.005)
    draws = np.asarray(post.flat_theta())[:, : mean.shape[0]]
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_array_less(np.abs(draws.mean(0) - mean) / sd, 0.15)
    np.testing.assert_array_less(np.abs(draws.std(0) / sd - 1), 0.1)


def _correlated_residuals(rng, rho, length, shape=(64, 64)):
    """Standard-normal residual images, a share ``rho`` of their variance a smooth field."""
    from scipy.ndimage import gaussian_filter

    g = gaussian_filter(rng.normal(size=shape), length)
    return np.sqrt(1 - rho) * rng.normal(size=shape) + np.sqrt(rho) * g / g.std()


def test_misfit_p_values_hold_their_level_for_correlated_residuals():
    """Three objects' misfits from residuals that are alike everywhere (the null): the share of
    p-values below 5% is 5% within 5 standard errors (1800 tests), for independent pixels and
    for pixels correlated over a few pixels, where counting every pixel as independent gives 30%."""
    from bayesshape.obs.drr import block_dispersion
    from bayesshape.posterior.posture import _misfit_p_values

    rng = np.random.default_rng(0)
    regions = np.zeros((3, 64, 64), bool)
    regions[0, 4:28, 8:40] = regions[1, 30:50, 10:56] = regions[2, 50:62, 20:44] = True
    cnt = regions.sum((1, 2))
    for rho, length in ((0.0, 1.0), (0.7, 3.0)):
        p, naive = [], []
        for _ in range(600):
            r = _correlated_residuals(rng, rho, length)
            sq = np.array([(r[m] ** 2).sum() for m in regions])
            between, dof = block_dispersion(r, regions.any(0), 8)
            p.extend(_misfit_p_values(sq, cnt, between / dof))
            naive.extend(_misfit_p_values(sq, cnt, 1.0))
        rate, se = np.mean(np.asarray(p) < 0.05), np.sqrt(0.05 * 0.95 / len(p))
        assert abs(rate - 0.05) < 5 * se, (rho, rate)
        if rho > 0:
            assert np.mean(np.asarray(naive) < 0.05) > 0.2


@pytest.mark.slow
def test_object_reliability_flags_alone_the_object_its_model_cannot_make():
    """Three spheres in biplanar DRRs: drawn as the model's mean, none is flagged; with the middle
    one flattened by 40% (beyond its 6-mode GP), that one alone, with a misfit p-value near 0."""
    asm = _three_spheres(rank=6)
    m = asm.combined_model()
    off = asm.vertex_offsets
    for flatten in (None, 0.6):
        x = np.asarray(m.mean).copy()
        if flatten:
            b = x[off[1] : off[2]]
            b[:, 0] = b[:, 0].mean() + (b[:, 0] - b[:, 0].mean()) * flatten
        views = bs.biplanar(isocenter=tuple(x.mean(0)), field_of_view=90.0, detector_shape=(64, 64))
        sim = bs.simulate_xray((x, np.asarray(m.faces)), views, seed=0, noise=0.01, mu=0.02)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="MAP not converged")
            post = bs.infer(
                asm,
                sim.observations("drr", block_size=8),
                bs.Laplace(),
                bs.RigidPose(rotation_sd=0.1, translation_sd=5.0),
                num_samples=100,
                seed=0,
            )
        rel = posture.object_reliability(post)
        if flatten is None:
            assert not any(r.flagged for r in rel)
            assert min(r.misfit_p_value for r in rel) > 0.05
        else:
            assert [r.flagged for r in rel] == [False, True, False]
            assert rel[1].misfit_p_value < 1e-6 < min(rel[0].misfit_p_value, rel[2].misfit_p_value)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5, float("nan")])
def test_object_reliability_refuses_a_misfit_alpha_that_is_not_a_probability(alpha):
    with pytest.raises(ValueError, match="misfit_alpha"):
        posture.object_reliability(None, misfit_alpha=alpha)
