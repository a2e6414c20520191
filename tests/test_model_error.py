"""Model error inside the prior: fitting the residual process, adding it to a model, and posteriors
that carry it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesshape as bs
from bayesshape.prior.model_error import ModelError, correlation_factor


@pytest.fixture(scope="module")
def shapes():
    return bs.datasets.example_shapes(8, seed=0, spread=2.0)


@pytest.fixture(scope="module")
def fitted(shapes):
    model = bs.build_pca_model(shapes, align="rigid")
    err = bs.prior.fit_model_error(shapes, align="rigid")
    return model, err, bs.add_model_error(model, err, max_rank=60)


def _sphere_points(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, 3))
    return 50.0 * x / np.linalg.norm(x, axis=1, keepdims=True)


def test_prior_marginals_gain_exactly_the_fitted_residual(fitted):
    """Each vertex's prior covariance grows by the fitted residual covariance exactly (the low-rank factor's
    rows are rescaled to unit norm), split into a part along the normal (modes) and one across it (noise)."""
    model, err, with_err = fitted
    added = np.asarray(with_err.vertex_covariance()) - np.asarray(model.vertex_covariance())
    np.testing.assert_allclose(added, err.covariance(), atol=1e-9 * float(np.abs(added).max()))
    # the noise part is across the normal: no variance along it
    normals = np.asarray(model.mesh().vertex_normals)
    along = np.einsum("ni,nij,nj->n", normals, np.asarray(with_err.vertex_noise), normals)
    assert np.abs(along).max() < 1e-9 * float(np.asarray(with_err.vertex_noise).max())
    # the extra modes carry the normal part, and the model's own modes are still in its span
    b = np.asarray(with_err.basis)
    u = np.asarray(model.basis)
    assert np.abs(u - b @ (b.T @ u)).max() < 1e-8
    assert with_err.n_modes > model.n_modes


def test_fitted_correlation_length_recovers_a_known_process():
    """Residuals drawn from a known Gaussian process (point set, no faces): the fitted short length is
    within 25% of the truth (the correlogram rests on 12 draws of 400 points)."""
    pts = _sphere_points(400)
    truth = ModelError(jnp.asarray(np.broadcast_to(2.0 * np.eye(3), (400, 3, 3)).copy()), None, 15.0, 15.0, 0.0, 0, 0)
    phi = correlation_factor(pts, truth, rank=400)
    rng = np.random.default_rng(1)
    model = bs.ShapeModel(pts, np.eye(1200)[:, :1], np.array([1.0]))
    draws = [pts + 2.0 * (phi @ rng.standard_normal((phi.shape[1], 3))) for _ in range(12)]
    err = bs.prior.fit_model_error(draws, model=model, align=None)
    assert abs(err.length - 15.0) < 0.25 * 15.0, err.length
    assert err.noise is None and err.factor.shape == (400, 3, 3)
    # per-point sd about 2 mm per axis
    sd = np.sqrt(np.trace(err.covariance(), axis1=1, axis2=2) / 3)
    assert 1.6 < float(np.median(sd)) < 2.4


def test_point_set_model_gains_three_components_per_column_and_no_noise():
    pts = _sphere_points(120)
    shapes = [pts + np.random.default_rng(s).normal(scale=1.0, size=pts.shape) for s in range(6)]
    model = bs.build_pca_model(shapes, align=None, faces=None)
    err = bs.prior.fit_model_error(shapes, align=None)
    out = bs.add_model_error(model, err, rank=10)
    assert out.vertex_noise is None
    assert out.n_modes == model.n_modes + 3 * 10
    np.testing.assert_allclose(
        np.asarray(out.vertex_covariance()) - np.asarray(model.vertex_covariance()), err.covariance(), atol=1e-9
    )


def test_build_pca_model_option_equals_the_two_steps(shapes):
    one = bs.build_pca_model(shapes, align="rigid", model_error=True)
    two = bs.add_model_error(bs.build_pca_model(shapes, align="rigid"), bs.prior.fit_model_error(shapes, align="rigid"))
    np.testing.assert_allclose(np.asarray(one.vertex_covariance()), np.asarray(two.vertex_covariance()), atol=1e-9)


@pytest.mark.slow
def test_closed_form_posterior_with_model_error_is_calibrated_in_model(fitted):
    """Truths drawn from the augmented prior (modes and per-vertex noise), observed by 3D landmarks: the
    closed-form posterior's 90% credible balls cover 90% of the vertices over 20 draws (pooled over
    3202 vertices per draw; the per-draw coverage varies by about 3 points, so the mean is within 3)."""
    _, _, model = fitted
    rng = np.random.default_rng(0)
    ids = np.sort(rng.choice(model.n_vertices, 40, replace=False))
    covs = []
    for s in range(20):
        x = np.asarray(model.sample(jax.random.key(s), 1, noise=True)[0])
        obs = x[ids] + 0.5 * rng.standard_normal((len(ids), 3))
        post = bs.posterior_from_landmarks(model, ids, obs, 0.5, n_samples=300, seed=s)
        err = np.linalg.norm(post.mean_vertices() - x, axis=1)
        covs.append(float(np.mean(err <= post.credible_radius(0.9))))
    assert abs(np.mean(covs) - 0.9) < 0.03, np.mean(covs)


def test_posterior_samples_carry_the_vertex_noise_in_the_world_frame(fitted):
    """A posterior's vertex samples include the per-vertex noise, reproducibly for a seed; its sample
    covariance at observed vertices is the closed form's (noise included) to Monte Carlo precision."""
    _, _, model = fitted
    ids = np.arange(0, model.n_vertices, 97)
    obs = np.asarray(model.mean)[ids]
    a = bs.posterior_from_landmarks(model, ids, obs, 0.3, n_samples=1000, seed=3)
    b = bs.posterior_from_landmarks(model, ids, obs, 0.3, n_samples=1000, seed=3)
    np.testing.assert_array_equal(np.asarray(a.vertex_samples()), np.asarray(b.vertex_samples()))
    exact = a.vertex_covariance()
    emp = super(bs.Posterior, a).vertex_covariance()
    tr_e, tr_x = np.trace(emp, axis1=1, axis2=2), np.trace(exact, axis1=1, axis2=2)
    # 1000 draws: the trace of a 3x3 sample covariance is within about 3 sd = 3 * sqrt(2/1000) of its value
    assert np.median(np.abs(tr_e / tr_x - 1)) < 0.13
    noise_tr = np.trace(np.asarray(model.vertex_noise), axis1=1, axis2=2)
    assert np.all(tr_x >= noise_tr - 1e-9)


def test_model_error_inputs_are_checked(fitted, shapes):
    model, err, _ = fitted
    other = bs.build_pca_model(bs.datasets.example_shapes(5, seed=1), align="rigid").truncate(2)
    small = bs.ShapeModel(np.asarray(other.mean)[:100], np.eye(300)[:, :2], np.ones(2))
    with pytest.raises(ValueError, match="fitted on 3202 vertices, the model has 100"):
        bs.add_model_error(small, err)
    with pytest.raises(ValueError, match="at least 4 shapes"):
        bs.prior.fit_model_error(shapes[:3])
    with pytest.raises(ValueError, match="factor: expected shape"):
        ModelError(jnp.zeros((10, 3, 2)), None, 1.0, 1.0, 0.0, 0, 0.0)
    bad = np.zeros((model.n_vertices, 3, 3))
    bad[7] = -np.eye(3)
    with pytest.raises(ValueError, match="vertex 7"):
        bs.ShapeModel(model.mean, model.basis, model.variance, vertex_noise=bad)
    with pytest.raises(ValueError, match="sd_mm"):
        ModelError.isotropic(model.mean, -1.0, 20.0)


def test_stated_model_error_for_a_model_without_training_shapes(fitted):
    """A Gaussian-process model has no training shapes: a stated error adds sd^2 per axis at every vertex."""
    model, _, _ = fitted
    err = ModelError.isotropic(np.asarray(model.mean), 1.5, 20.0, faces=np.asarray(model.faces))
    out = bs.add_model_error(model, err, max_rank=40)
    added = np.trace(np.asarray(out.vertex_covariance()) - np.asarray(model.vertex_covariance()), axis1=1, axis2=2)
    np.testing.assert_allclose(added, 3 * 1.5**2, rtol=1e-9)


def test_model_with_vertex_noise_round_trips_and_statismo_refuses_it(fitted, tmp_path):
    _, _, model = fitted
    bs.io.save_model(model, tmp_path / "m.npz")
    back = bs.io.load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(np.asarray(back.vertex_noise), np.asarray(model.vertex_noise))
    np.testing.assert_array_equal(np.asarray(back.basis), np.asarray(model.basis))
    np.testing.assert_array_equal(np.asarray(back.error_factor), np.asarray(model.error_factor))
    with pytest.raises(ValueError, match="Statismo format cannot hold"):
        bs.io.save_statismo(model, tmp_path / "m.h5")


def test_error_factor_is_the_model_errors_share_of_the_prior(fitted):
    """``Q Q^T`` in the whitened coefficients maps to the added modes' covariance exactly: the model's own
    prior plus ``B sqrt(v) Q Q^T sqrt(v) B^T`` is the augmented prior (vertex noise aside)."""
    model, _, with_err = fitted
    b, v, q = (np.asarray(a, np.float64) for a in (with_err.basis, with_err.variance, with_err.error_factor))
    root = b * np.sqrt(v)[None, :]
    own = np.asarray(model.basis) * np.sqrt(np.asarray(model.variance))[None, :]
    np.testing.assert_allclose(root @ (np.eye(len(v)) - q @ q.T) @ root.T, own @ own.T, atol=1e-8 * float(v[0]))
    assert np.linalg.svd(q, compute_uv=False)[0] <= 1.0 + 1e-12


@pytest.mark.parametrize("scale", [0.5, 2.5])
def test_scaled_model_error_widens_the_error_alone(fitted, scale):
    """``scale_model_error``: each vertex's added covariance (modes and noise) is multiplied by ``scale^2``
    exactly, the population's part is unchanged, and scaling back by ``1 / scale`` restores the model."""
    model, err, with_err = fitted
    scaled = bs.prior.scale_model_error(with_err, scale)
    added = np.asarray(scaled.vertex_covariance()) - np.asarray(model.vertex_covariance())
    np.testing.assert_allclose(added, scale**2 * err.covariance(), atol=1e-8 * scale**2 * float(np.abs(added).max()))
    back = bs.prior.scale_model_error(scaled, 1.0 / scale)
    np.testing.assert_allclose(
        np.asarray(back.vertex_covariance()), np.asarray(with_err.vertex_covariance()), atol=1e-8
    )
    b = np.asarray(scaled.basis)
    np.testing.assert_allclose(b.T @ b, np.eye(b.shape[1]), atol=1e-9)
    with pytest.raises(ValueError, match="no model error to scale"):
        bs.prior.scale_model_error(model, 2.0)
    with pytest.raises(ValueError, match="scale: expected a positive number"):
        bs.prior.scale_model_error(with_err, -1.0)


def test_infer_with_the_model_error_scale(fitted):
    """``LikelihoodOptions(model_error_scale=...)`` gives the closed-form posterior of the scaled model; a
    model without a model error is refused."""
    model, _, with_err = fitted
    rng = np.random.default_rng(5)
    ids = np.sort(rng.choice(with_err.n_vertices, 80, replace=False))
    wide = bs.prior.scale_model_error(with_err, 2.0)
    truth = np.asarray(wide.sample(jax.random.key(1), 1)[0])
    y = truth[ids] + 0.3 * rng.standard_normal((len(ids), 3))
    obs = bs.obs.Landmarks3D(ids, y, sigma=0.3)
    fixed = bs.infer(with_err, obs, "laplace", likelihood=bs.LikelihoodOptions(model_error_scale=2.0), seed=0)
    # infer's landmark likelihood leaves the per-vertex noise to the samples; the closed form of the modes alone
    modes = bs.ShapeModel(wide.mean, wide.basis, wide.variance, faces=wide.faces)
    exact = bs.posterior_from_landmarks(modes, ids, y, 0.3, n_samples=10, seed=0)
    got, want = (np.asarray(p.problem.vertices(p.theta_map)) for p in (fixed, exact))
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert fixed.diagnostics.map.model_error_scale == 2.0
    # the per-vertex noise (the sliding along the surface) widens with it
    ratio = np.trace(np.asarray(fixed.problem.model.vertex_noise), axis1=1, axis2=2) / np.trace(
        np.asarray(with_err.vertex_noise), axis1=1, axis2=2
    )
    np.testing.assert_allclose(ratio[np.isfinite(ratio)], 4.0, rtol=1e-9)
    with pytest.raises(ValueError, match="no model error to scale"):
        bs.infer(model, obs, "laplace", likelihood=bs.LikelihoodOptions(model_error_scale=2.0))
    for bad in (-1.0, 0.0, float("nan")):
        with pytest.raises(ValueError, match="model_error_scale"):
            bs.LikelihoodOptions(model_error_scale=bad)
