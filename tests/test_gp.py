"""Kernels, GP models and augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesshape as bs
from bayesshape import kernels


@pytest.fixture(scope="module")
def reference():
    return bs.datasets.make_shape()


@pytest.mark.slow
def test_gp_samples_match_kernel(reference):
    k = kernels.GaussianKernel(scale=16.0, length=120.0)
    model = bs.gp_model(reference, k, retained=0.99)
    retained = float(model.variance.sum() / model.total_variance)
    assert retained >= 0.99
    xs = np.asarray(model.sample(jax.random.key(0), 10000))
    v = reference.vertices
    rng = np.random.default_rng(0)
    d = xs - xs.mean(0)[None]
    checked = 0
    for i in rng.choice(len(v), 40, replace=False):
        j = int(np.argsort(np.linalg.norm(v - v[i][None, :], axis=1))[rng.integers(0, 200)])
        kij = float(k.diagonal_matrix(jnp.asarray(v[i : i + 1]), jnp.asarray(v[j : j + 1]))[0, 0, 0])
        emp = (d[:, i, :] * d[:, j, :]).sum(0) / (xs.shape[0] - 1)  # per axis
        # within 5% of the kernel variance; the sd of one estimate from 10k samples is ~1.4%
        assert np.all(np.abs(emp - kij) < 0.05 * k.scale), (i, j, emp, kij)
        checked += 1
    assert checked == 40


def test_rank_against_retained_variance(reference):
    k = kernels.GaussianKernel(scale=16.0, length=60.0)
    ranks = []
    for r in (0.9, 0.95, 0.99):
        m = bs.gp_model(reference, k, retained=r)
        assert float(m.variance.sum() / m.total_variance) >= r
        ranks.append(m.n_modes)
    assert ranks == sorted(ranks) and ranks[0] < ranks[-1]
    fixed = bs.gp_model(reference, k, rank=30)
    assert fixed.n_modes == 30
    b = np.asarray(fixed.basis)
    np.testing.assert_allclose(b.T @ b, np.eye(30), atol=1e-8)


def test_kernel_algebra_and_diagonal(reference):
    x = jnp.asarray(reference.vertices[:50])
    g1, g2 = kernels.GaussianKernel(4.0, 50.0), kernels.GaussianKernel(1.0, 10.0)
    s = (g1 + g2).diagonal_matrix(x, x)
    np.testing.assert_allclose(np.asarray(s), np.asarray(g1.diagonal_matrix(x, x) + g2.diagonal_matrix(x, x)))
    np.testing.assert_allclose(
        np.asarray(kernels.multiscale([4.0, 1.0], [50.0, 10.0]).diagonal_matrix(x, x)), np.asarray(s)
    )
    p = (g1 * g2).diagonal_matrix(x, x)
    np.testing.assert_allclose(np.asarray(p), np.asarray(g1.diagonal_matrix(x, x) * g2.diagonal_matrix(x, x)))
    np.testing.assert_allclose(np.asarray((3.0 * g1).variance(x)), 12.0)
    dk = kernels.DiagonalKernel(g1, g1, kernels.GaussianKernel(9.0, 80.0))
    assert not dk.is_isotropic and (g1 + g2).is_isotropic
    m = bs.gp_model(reference, dk, retained=0.95)
    cov = np.asarray(m.vertex_covariance())
    # z variance ~ 9, x/y ~ 4 at every vertex (up to the 5% dropped)
    assert np.median(cov[:, 2, 2]) > 8.0 and np.median(cov[:, 0, 0]) < 4.2 and np.median(cov[:, 0, 0]) > 3.5
    np.testing.assert_allclose(cov[:, 0, 1], 0.0, atol=1e-8)
    with pytest.raises(ValueError, match="length"):
        kernels.GaussianKernel(1.0, -2.0)


def test_augment_explains_unseen_shapes(example_shapes):
    train = example_shapes[:6]
    test = bs.datasets.example_shapes(4, seed=99)
    pca = bs.build_pca_model(train, align=None)
    aug = bs.augment(pca, kernels.GaussianKernel(9.0, 80.0), rank=60)
    assert aug.n_modes == 60
    b = np.asarray(aug.basis)
    np.testing.assert_allclose(b.T @ b, np.eye(60), atol=1e-8)
    # the augmented covariance contains the PCA covariance: PCA directions keep their variance
    u = np.asarray(pca.basis)
    pb = u.T @ b
    proj = (pb**2 * np.asarray(aug.variance)[None, :]).sum(1)
    assert np.all(proj >= 0.98 * np.asarray(pca.variance))
    err_pca = np.mean(
        [np.linalg.norm(np.asarray(pca.project(jnp.asarray(m.vertices))) - m.vertices, axis=1).mean() for m in test]
    )
    err_aug = np.mean(
        [np.linalg.norm(np.asarray(aug.project(jnp.asarray(m.vertices))) - m.vertices, axis=1).mean() for m in test]
    )
    assert err_aug < 0.8 * err_pca
