"""ShapeModel and PCA building."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesshape as bs


def test_femur_model_reproduces_training_shapes(femur_meshes):
    model = bs.build_pca_model(femur_meshes, align=None)
    assert model.n_modes == 9
    for m in femur_meshes:
        rec = np.asarray(model.project(jnp.asarray(m.vertices)))
        assert np.abs(rec - m.vertices).max() < 0.01  # mm; coordinates are ~1000 mm


def test_femur_model_float32_reproduces_training_shapes(femur_meshes):
    model = bs.build_pca_model(femur_meshes, align=None)
    alphas = [np.asarray(model.coefficients(jnp.asarray(m.vertices)), np.float32) for m in femur_meshes[:3]]
    with jax.enable_x64(False):
        m32 = bs.ShapeModel(
            np.asarray(model.mean), np.asarray(model.basis), np.asarray(model.variance), faces=np.asarray(model.faces)
        )
        assert m32.basis.dtype == jnp.float32
        for m, alpha in zip(femur_meshes[:3], alphas):
            rec = np.asarray(m32.instance(jnp.asarray(alpha)))
            assert rec.dtype == np.float32
            assert np.abs(rec - m.vertices).max() < 0.01


def test_pca_variance_matches_sample_covariance(example_shapes):
    model = bs.build_pca_model(example_shapes, align=None)
    data = np.stack([m.vertices.reshape(-1) for m in example_shapes])
    total = np.var(data, axis=0, ddof=1).sum()
    np.testing.assert_allclose(float(model.total_variance), total, rtol=1e-10)
    np.testing.assert_allclose(float(model.variance.sum()), total, rtol=1e-8)
    b = np.asarray(model.basis)
    np.testing.assert_allclose(b.T @ b, np.eye(model.n_modes), atol=1e-10)
    assert np.all(np.diff(np.asarray(model.variance)) <= 0)


def test_alignment_removes_rigid_motion(example_shapes):
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix()
    moved = [example_shapes[0].vertices @ rot.T + np.array([10.0, -5.0, 3.0])[None, :]] + [
        m.vertices for m in example_shapes[1:]
    ]
    a = bs.build_pca_model(example_shapes, align="rigid", faces=example_shapes[0].faces)
    b = bs.build_pca_model(moved, align="rigid", faces=example_shapes[0].faces)
    np.testing.assert_allclose(np.asarray(a.variance), np.asarray(b.variance), rtol=1e-6)
    # rescaling all shapes but the first (whose size sets the frame) changes nothing after similarity GPA
    sim = bs.build_pca_model(
        [example_shapes[0].vertices]
        + [1.2 * m.vertices for m in example_shapes[1:6]]
        + [m.vertices for m in example_shapes[6:]],
        align="similarity",
        faces=example_shapes[0].faces,
    )
    ref = bs.build_pca_model([m.vertices for m in example_shapes], align="similarity", faces=example_shapes[0].faces)
    np.testing.assert_allclose(np.asarray(sim.variance), np.asarray(ref.variance), rtol=1e-5)


def test_vertex_covariance_matches_samples(example_model):
    cov = np.asarray(example_model.vertex_covariance())
    xs = np.asarray(example_model.sample(jax.random.key(0), 5000))[:, ::7]
    d = xs - xs.mean(0)[None]
    emp = np.einsum("sni,snj->nij", d, d) / (xs.shape[0] - 1)
    # sd of a variance estimate from 5000 samples is 2% of the variance: 8% is 4 sd
    scale = np.trace(cov[::7], axis1=1, axis2=2)[:, None, None]
    assert np.max(np.abs(emp - cov[::7]) / scale) < 0.08


def test_coefficients_roundtrip_and_noise_shrinkage(example_model):
    alpha = jax.random.normal(jax.random.key(3), (example_model.n_modes,))
    x = example_model.instance(alpha)
    np.testing.assert_allclose(np.asarray(example_model.coefficients(x)), np.asarray(alpha), atol=1e-8)
    noisy = bs.ShapeModel(
        example_model.mean, example_model.basis, example_model.variance, noise_variance=4.0, faces=example_model.faces
    )
    shrunk = np.asarray(noisy.coefficients(x))
    expected = np.asarray(alpha) * np.asarray(example_model.variance) / (np.asarray(example_model.variance) + 4.0)
    np.testing.assert_allclose(shrunk, expected, rtol=1e-8)


def test_jit_vmap_grad_and_compile_once(example_model):
    k = example_model.n_modes
    alphas = jax.random.normal(jax.random.key(1), (5, k))
    loop = np.stack([np.asarray(example_model.instance(a)) for a in alphas])
    traces = []

    @jax.jit
    def f(model, a):
        traces.append(1)
        return jax.vmap(model.instance)(a)

    np.testing.assert_allclose(np.asarray(f(example_model, alphas)), loop, atol=1e-10)
    f(example_model, alphas + 1.0)
    f(
        example_model.truncate(k).__class__(
            example_model.mean * 2, example_model.basis, example_model.variance, faces=example_model.faces
        ),
        alphas,
    )
    assert len(traces) == 1  # same shapes: one compilation

    g = jax.jit(jax.grad(lambda a: jnp.sum(example_model.instance(a) ** 2)))(alphas[0])
    eps = 1e-6
    e0 = jnp.zeros(k).at[0].set(eps)
    fd = (
        jnp.sum(example_model.instance(alphas[0] + e0) ** 2) - jnp.sum(example_model.instance(alphas[0] - e0) ** 2)
    ) / (2 * eps)
    np.testing.assert_allclose(float(g[0]), float(fd), rtol=1e-6)

    lp = jax.jit(jax.vmap(example_model.log_prob))(alphas)
    ref = [float(jax.scipy.stats.norm.logpdf(a).sum()) for a in alphas]
    np.testing.assert_allclose(np.asarray(lp), ref, rtol=1e-12)
    gl = jax.grad(example_model.log_prob)(alphas[0])
    np.testing.assert_allclose(np.asarray(gl), -np.asarray(alphas[0]), rtol=1e-12)

    s1 = example_model.sample(jax.random.key(7), 3)
    s2 = jax.jit(lambda m, key: m.sample(key, 3))(example_model, jax.random.key(7))
    assert s1.shape == (3, example_model.n_vertices, 3)
    np.testing.assert_allclose(np.asarray(s1), np.asarray(s2), atol=1e-10)


def test_truncate(example_model):
    t = example_model.truncate(3)
    assert t.n_modes == 3 and t.basis.shape == (3 * example_model.n_vertices, 3)
    assert float(t.total_variance) == float(example_model.total_variance)
    with pytest.raises(ValueError, match="k: expected an integer"):
        example_model.truncate(0)


def test_point_set_model_without_faces(example_shapes):
    pts = [m.vertices[::50] for m in example_shapes]
    model = bs.build_pca_model(pts, align="rigid")
    assert model.faces is None
    assert model.instance(jnp.zeros(model.n_modes)).shape == (pts[0].shape[0], 3)
    with pytest.raises(ValueError, match="point-set model"):
        model.mesh()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda ms: ms[:3] + [ms[3][:-1]], "has .* vertices but meshes\\[0\\] has"),
        (lambda ms: ms[:3] + [np.where(np.arange(ms[3].size).reshape(ms[3].shape) == 7, np.nan, ms[3])], "NaN or inf"),
        (lambda ms: ms[:3] + [np.where(np.arange(ms[3].size).reshape(ms[3].shape) == 7, np.inf, ms[3])], "NaN or inf"),
        (lambda ms: ms[:1], "at least 2 shapes"),
    ],
)
def test_build_rejects_bad_shapes(example_shapes, mutate, message):
    verts = [m.vertices.copy() for m in example_shapes[:4]]
    with pytest.raises(ValueError, match=message):
        bs.build_pca_model(mutate(verts), faces=example_shapes[0].faces)


def test_build_rejects_bad_faces(example_shapes):
    import trimesh

    verts = [m.vertices for m in example_shapes[:4]]
    f = example_shapes[0].faces
    with pytest.raises(ValueError, match="expected triangles"):
        bs.build_pca_model(verts, faces=np.concatenate([f, f[:, :1]], axis=1))
    bad = f.copy()
    bad[0, 0] = len(verts[0])
    with pytest.raises(ValueError, match="out of range"):
        bs.build_pca_model(verts, faces=bad)
    other = [trimesh.Trimesh(v, f, process=False) for v in verts]
    other[2] = trimesh.Trimesh(verts[2], f[::-1].copy(), process=False)
    with pytest.raises(ValueError, match="faces differ"):
        bs.build_pca_model(other)


def test_instance_rejects_wrong_alpha(example_model):
    with pytest.raises(ValueError, match="alpha: expected"):
        example_model.instance(jnp.zeros(example_model.n_modes + 1))
    with pytest.raises(ValueError, match="points: expected"):
        example_model.coefficients(jnp.zeros((3, 3)))


def test_loo_residual_covariance():
    import bayesshape as bs

    rng = np.random.default_rng(0)
    mean = rng.normal(scale=10.0, size=(50, 3))
    basis = rng.normal(size=(2, 50, 3))
    coef = rng.normal(scale=5.0, size=(30, 2))
    exact = mean[None] + np.einsum("ik,knj->inj", coef, basis)
    # shapes in a 2-mode affine subspace: every left-out shape is represented exactly
    cov0 = bs.loo_residual_covariance(list(exact), align=None, shrinkage=0.0)
    assert cov0.shape == (50, 3, 3) and np.abs(cov0).max() < 1e-18
    # plus isotropic noise of sd 0.5 mm: the residual variance per coordinate is about 0.25 mm^2,
    # a little more for left-out shapes (their noise is not in the model): ~ (1 + 3/29) * 0.25
    noisy = exact + rng.normal(scale=0.5, size=exact.shape)
    cov = bs.loo_residual_covariance(list(noisy), align=None)
    per_coord = np.trace(cov, axis1=1, axis2=2).mean() / 3
    assert 0.2 < per_coord < 0.35, per_coord
    post = bs.posterior.ShapeSamples(np.repeat(exact[:1], 4000, axis=0) + 0.0, None)
    widened = post.with_model_error(cov, seed=1)
    np.testing.assert_allclose(widened.vertex_covariance().mean(0), cov.mean(0), atol=0.02)
    with pytest.raises(ValueError, match="at least 3"):
        bs.loo_residual_covariance(list(exact[:2]))
    with pytest.raises(ValueError, match="covariance"):
        post.with_model_error(np.zeros((5, 3, 3)))


def test_best_fit_undoes_a_rigid_motion(example_model):
    from scipy.spatial.transform import Rotation

    import bayesshape as bs

    shape = np.asarray(example_model.instance(jnp.linspace(-1.0, 1.0, example_model.n_modes)))
    rot = Rotation.from_rotvec([0.05, -0.02, 0.03]).as_matrix()
    moved = shape @ rot.T + np.array([3.0, -2.0, 5.0])
    x, fit = bs.prior.best_fit(example_model, moved, align="rigid")
    np.testing.assert_allclose(fit, shape, atol=1e-6)  # the model shape, back in the model frame
    np.testing.assert_allclose(x, fit, atol=1e-6)  # nothing left that the model cannot represent
    with pytest.raises(ValueError, match="align"):
        bs.prior.best_fit(example_model, moved, align="affine")


def _gaussian_shapes(rng, n, sd, n_points=40):
    """``n`` point sets (no alignment needed) drawn from a Gaussian with mode sds ``sd`` (mm)."""
    basis, _ = np.linalg.qr(rng.normal(size=(3 * n_points, len(sd))))
    mean = rng.normal(scale=10.0, size=3 * n_points)
    coef = rng.normal(size=(n, len(sd))) * np.asarray(sd)[None]
    return (mean[None] + coef @ basis.T).reshape(n, n_points, 3)


def test_loo_variance_ratio_is_one_when_the_sample_variances_are_right():
    import bayesshape as bs

    # 200 shapes of a 3-mode Gaussian: the sample variances are within a few % of the truth, and so
    # should the leave-one-out spread of unseen shapes be (ratio 1 + O(1/n))
    rng = np.random.default_rng(0)
    shapes = _gaussian_shapes(rng, 200, [6.0, 3.0, 1.5])
    r = bs.prior.loo_variance_ratio(list(shapes), align=None)
    assert r.shape == (3,)
    np.testing.assert_allclose(r, 1.0, atol=0.25)


def test_loo_variances_predict_unseen_shapes_better_than_sample_variances():
    import bayesshape as bs

    # 20 training shapes of a 30-mode Gaussian whose mode sds fall by 0.7 per mode: the model keeps 19
    # sample modes, whose trailing variances are too small for a new shape
    sd = 8.0 * 0.7 ** np.arange(30)
    train = _gaussian_shapes(np.random.default_rng(0), 20, sd)
    fresh = _gaussian_shapes(np.random.default_rng(0), 20 + 400, sd)[20:]  # same mean and basis, new draws
    sample = bs.build_pca_model(list(train), align=None)
    loo = bs.build_pca_model(list(train), align=None, variance="loo")
    ratio = bs.prior.loo_variance_ratio(list(train), align=None)
    assert ratio.shape == (19,) and np.all(np.diff(ratio) >= -1e-12)
    np.testing.assert_allclose(np.sort(np.asarray(loo.variance))[::-1], np.asarray(loo.variance))
    np.testing.assert_allclose(np.sort(np.asarray(loo.variance)), np.sort(np.asarray(sample.variance) * ratio))

    def projections(model):
        mean, basis = np.asarray(model.mean).reshape(-1), np.asarray(model.basis)
        return (fresh.reshape(len(fresh), -1) - mean) @ basis, np.asarray(model.variance)

    def log_score(model):  # mean log density of the fresh shapes' coefficients under the model's prior
        p, lam = projections(model)
        return float(np.mean(np.sum(-0.5 * np.log(2 * np.pi * lam) - 0.5 * p**2 / lam, axis=1)))

    p, lam = projections(sample)
    # the sample prior is several times too narrow along its last modes ...
    assert np.min(np.mean(p**2, axis=0)[-5:] / lam[-5:]) > 2.0
    # ... and the calibrated one predicts unseen shapes better (the proper score of a prior)
    assert log_score(loo) > log_score(sample) + 10.0, (log_score(loo), log_score(sample))


def test_loo_variance_rejects_bad_input():
    import bayesshape as bs

    shapes = _gaussian_shapes(np.random.default_rng(2), 3, [2.0, 1.0])
    with pytest.raises(ValueError, match="at least 4 shapes"):
        bs.prior.loo_variance_ratio(list(shapes), align=None)
    with pytest.raises(ValueError, match="variance: expected 'sample' or 'loo'"):
        bs.build_pca_model(list(shapes), align=None, variance="unbiased")
