"""The robust (sandwich) Laplace covariance: closed forms, an independent computation of the
block scores, and what it does with independent against correlated pixel errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesshape as bs
from bayesshape import obs


def _drr_problem(example_shapes, image_error=None, block_size=8):
    from bayesshape.inference import reference_shapes
    from bayesshape.inference._problem import Problem
    from bayesshape.projection.render import render_drr

    model = bs.build_pca_model(example_shapes[:6], align="rigid")  # 5 modes
    alpha = jnp.asarray(np.random.default_rng(4).normal(scale=0.8, size=model.n_modes))
    truth = model.instance(alpha)
    refs = reference_shapes(model)
    rng = np.random.default_rng(11)
    sigma = 0.5
    drrs = []
    for view in bs.biplanar(field_of_view=480, detector_shape=(40, 40)):
        img = np.asarray(render_drr(truth, model.faces, view, footprint=8))
        img = img + rng.normal(0.0, sigma, img.shape)
        if image_error is not None:
            img = img + image_error(img)
        drrs.append(obs.DRR(view, img, sigma, block_size=block_size).bind(model.faces, refs))
    zero = jnp.zeros(3)
    problem = Problem(
        model, tuple(drrs), jnp.asarray(model.mean).mean(0), zero, zero, jnp.zeros(()), bs.RigidPose(0.1, 10.0), None
    )
    return problem, jnp.concatenate([alpha, jnp.zeros(6)])


def test_robust_covariance_equals_the_laplace_covariance_without_blocks(example_model):
    """Landmarks have no residual blocks: every residual counts as independent, the middle of the
    sandwich is the information itself and ``H^-1 (I + J^T J) H^-1 = H^-1``: the linear-Gaussian
    closed form, which the Gauss-Newton Laplace covariance is."""
    truth = bs.datasets.example_shapes(1, seed=7)[0]
    ids = [0, 300, 700, 1100, 1500, 1900, 2100]
    y = truth.vertices[ids] + np.random.default_rng(0).normal(0, 1.0, (len(ids), 3))
    lm = obs.Landmarks3D(ids, y, sigma=1.0)
    plain = bs.infer(example_model, lm, method=bs.Laplace(), num_samples=10, seed=0)
    robust = bs.infer(example_model, lm, method=bs.Laplace(robust=True), num_samples=10, seed=0)
    assert robust.diagnostics.info.robust_blocks == 0 and plain.diagnostics.info.robust_blocks is None
    np.testing.assert_allclose(robust.gaussian[1], plain.gaussian[1], atol=1e-10)
    np.testing.assert_allclose(robust.gaussian[0], plain.gaussian[0], atol=0)


def test_robust_covariance_equals_an_independent_block_sum(example_shapes):
    """The sandwich against a direct computation: the full Jacobian by ``jax.jacfwd``, each 8 x 8
    pixel block's score ``J_b^T r_b`` summed over a mask of its own pixels, in a loop; and the
    blocks matter (the same residuals counted as independent give another covariance)."""
    from bayesshape.inference import laplace_covariance, robust_covariance

    # a smooth image error the model cannot make: the blocks' scores then disagree
    yy, xx = np.mgrid[0:40, 0:40]
    problem, theta = _drr_problem(example_shapes, lambda img: 3.0 * np.sin(xx / 6.0) * np.cos(yy / 7.0))
    cov, n_blocks = robust_covariance(problem, theta)
    k = theta.shape[0]

    def resid(th):
        vs = problem.observation_vertices(problem.vertices(th))
        return jnp.concatenate([o.whitened_residuals(v).reshape(-1) for o, v in zip(problem.observations, vs)])

    r = np.asarray(resid(theta))
    jac = np.asarray(jax.jacfwd(resid)(theta))
    middle = np.eye(k)
    count = 0
    for v in range(2):
        for by in range(5):
            for bx in range(5):
                mask = np.zeros((40, 40), bool)
                mask[8 * by : 8 * by + 8, 8 * bx : 8 * bx + 8] = True
                sel = v * 1600 + np.flatnonzero(mask.reshape(-1))
                g = jac[sel].T @ r[sel]
                count += bool(np.any(g != 0))
                middle += np.outer(g, g)
    h_inv = np.linalg.inv(np.eye(k) + jac.T @ jac)
    expected = h_inv @ middle @ h_inv
    assert n_blocks == count and 0 < count <= 50
    np.testing.assert_allclose(np.asarray(cov), expected, atol=1e-9 * np.abs(expected).max())
    # independent residuals would give the model-based covariance, far narrower here
    plain, _ = laplace_covariance(problem, theta)
    ratio = np.diag(np.asarray(cov)) / np.diag(np.asarray(plain))
    assert ratio.max() > 3.0


def test_robust_covariance_keeps_the_width_for_pixel_noise_and_widens_for_correlated_errors(example_shapes):
    """With independent pixel noise the blocks' scores vary as the noise predicts, and the
    sandwich's variances scatter around the model-based ones (each a sum over about 30 covered
    blocks: sd about 25% per entry; the geometric mean over the 11 parameters within 0.6 to 1.6);
    a smooth error field common to neighbouring pixels widens them (geometric mean above 2)."""
    from bayesshape.inference import laplace_covariance, robust_covariance

    ratios = []
    yy, xx = np.mgrid[0:40, 0:40]
    for error in (None, lambda img: 3.0 * np.sin(xx / 6.0) * np.cos(yy / 7.0)):
        problem, theta = _drr_problem(example_shapes, error)
        robust, _ = robust_covariance(problem, theta)
        plain, _ = laplace_covariance(problem, theta)
        ratios.append(float(np.exp(np.mean(np.log(np.diag(np.asarray(robust)) / np.diag(np.asarray(plain)))))))
    assert 0.6 < ratios[0] < 1.6, ratios
    assert ratios[1] > 2.0, ratios


def test_robust_laplace_settings_are_checked():
    with pytest.raises(ValueError, match="Gauss-Newton"):
        bs.Laplace(hessian="finite-difference", robust=True)
    info = bs.inference.LaplaceInfo("gauss-newton", 12)
    assert bs.inference.LaplaceInfo.from_dict(info.to_dict()) == info
