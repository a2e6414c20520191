"""Adaptive importance sampling (``infer(method="importance")``) against closed-form posteriors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesshape as bs
from bayesshape import obs
from bayesshape.inference import importance_sample, pareto_khat


@pytest.fixture(scope="module")
def landmark_case(example_model):
    model = example_model
    ids = np.array([5, 700, 1500, 2900, 2200])
    y = np.asarray(model.mean)[ids] + np.random.default_rng(5).normal(scale=2.0, size=(5, 3))
    exact = bs.posterior_from_landmarks(model, ids, y, 1.0)
    return model, ids, y, exact


def test_gaussian_target_from_the_exact_proposal_has_equal_weights(landmark_case):
    """Linear-Gaussian landmarks: the Laplace Gaussian is the posterior, every weight is equal
    (ESS = all the draws, k-hat ~ 0), and the draws match the closed form."""
    model, ids, y, exact = landmark_case
    post = bs.infer(
        model, obs.Landmarks3D(ids, y, 1.0), method=bs.Importance(rounds=1, samples=1000), num_samples=1000, seed=0
    )
    d = post.diagnostics.to_dict()
    assert post.method == "importance" and post.theta.shape == (1, 1000, model.n_modes)
    # equal up to the MAP's L-BFGS tolerance
    assert d["is_samples"] == 1000 and d["is_ess"] > 0.999 * 1000 and d["is_khat"] < 0.3
    assert not d["warnings"]
    sd_exact = exact.vertex_std()
    # 1000 resampled draws of ~1000 effective: MC error of an sd ~ 3%, of a mean ~ sd/30
    assert np.median(np.abs(post.vertex_std() / sd_exact - 1)) < 0.08
    err = np.linalg.norm(post.mean_vertices() - np.asarray(model.instance(exact.gaussian[0])), axis=1)
    assert np.median(err / sd_exact) < 0.1


@pytest.mark.slow
@pytest.mark.parametrize("shift, scale", [(1.0, 1.0), (0.0, 0.6), (0.5, 1.8)])
def test_adaptation_corrects_a_wrong_start(landmark_case, shift, scale):
    """Started off-centre (by ``shift`` posterior sd in every coordinate: sqrt(dim) sd in all)
    or too narrow or too wide, the rounds move the proposal onto the closed-form posterior:
    the ESS grows from round to round and the moments of the draws match (the plain importance
    estimate from the wrong start alone is off)."""
    model, ids, y, exact = landmark_case
    problem = _problem(model, ids, y)
    mean, cov = exact.gaussian
    sd = jnp.sqrt(jnp.diag(cov))
    start = mean + shift * sd
    theta, diag = importance_sample(
        problem, start, scale**2 * cov, key=jax.random.key(1), rounds=5, samples_per_round=800, num_samples=3000
    )
    ess = diag["is_ess_rounds"]
    assert ess[-1] > 1.5 * ess[0] and ess[-1] > 800
    assert diag["is_khat"] < 0.7
    th = np.asarray(theta[0])
    # per-coordinate z-score of the mean; the ESS (> 800) bounds the MC error at ~0.035 sd
    z = (th.mean(0) - np.asarray(mean)) / np.asarray(sd)
    assert np.max(np.abs(z)) < 0.2
    np.testing.assert_allclose(th.std(0), np.asarray(sd), rtol=0.12)


def test_importance_sample_is_reproducible_and_checks_its_input(landmark_case):
    model, ids, y, exact = landmark_case
    problem = _problem(model, ids, y)
    mean, cov = exact.gaussian
    a, _ = importance_sample(problem, mean, cov, key=jax.random.key(3), rounds=1, samples_per_round=100, num_samples=50)
    b, _ = importance_sample(problem, mean, cov, key=jax.random.key(3), rounds=1, samples_per_round=100, num_samples=50)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="mean, cov: expected shapes"):
        importance_sample(problem, mean[:-1], cov[:-1, :-1], key=jax.random.key(0))
    with pytest.raises(ValueError, match="samples_per_round: expected an integer >= 50"):
        importance_sample(problem, mean, cov, key=jax.random.key(0), samples_per_round=10)
    with pytest.raises(ValueError, match="positive definite"):
        importance_sample(problem, mean, -cov, key=jax.random.key(0))
    with pytest.raises(ValueError, match="rounds: expected an integer >= 1"):
        bs.Importance(rounds=0)


def test_pareto_khat_recovers_the_tail_shape():
    rng = np.random.default_rng(0)
    from scipy.stats import genpareto

    for k in (0.3, 0.8):
        w = genpareto.rvs(k, size=20000, random_state=rng)
        assert pareto_khat(np.log(w)) == pytest.approx(k, abs=0.15)
    assert pareto_khat(0.05 * rng.normal(size=4000)) < 0.2  # near-equal weights: a light tail
    with pytest.raises(ValueError, match="at least 25 finite"):
        pareto_khat(np.zeros(10))


def test_heavy_weights_warn(landmark_case):
    """A proposal far too narrow and off-centre, one round: a few draws carry the weight."""
    model, ids, y, exact = landmark_case
    problem = _problem(model, ids, y)
    mean, cov = exact.gaussian
    _, diag = importance_sample(
        problem,
        mean + 2.0 * jnp.sqrt(jnp.diag(cov)),
        0.05 * cov,
        key=jax.random.key(0),
        rounds=1,
        samples_per_round=400,
        num_samples=100,
    )
    assert diag["is_ess"] < 20
    from bayesshape.inference import ImportanceInfo, sampler_warnings

    info = ImportanceInfo(
        "gauss-newton",
        diag["is_ess"],
        diag["is_khat"],
        tuple(diag["is_ess_rounds"]),
        diag["is_rounds"],
        diag["is_samples"],
    )
    with pytest.warns(UserWarning, match="importance sampling"):
        sampler_warnings(info)


def _problem(model, ids, y):
    """The inference problem of ``infer`` (no pose) for 1 mm landmarks."""
    post = bs.infer(model, obs.Landmarks3D(ids, y, 1.0), method="laplace", num_samples=2, seed=0)
    return post.problem
