"""ArviZ: a posterior's InferenceData has the groups az.from_numpyro gives (named dims, sampler
statistics, pointwise log-likelihood, observed data), ArviZ's own functions run on it, and a saved
posterior keeps what it needs to convert."""

import warnings

import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest

import bayesshape as bs

az = pytest.importorskip("arviz")
matplotlib.use("Agg")


@pytest.fixture(scope="module")
def landmark_case():
    shapes = bs.datasets.example_shapes(12, seed=0)
    model = bs.build_pca_model(shapes, align=None)
    truth = bs.datasets.example_shapes(1, seed=5)[0]
    ids = np.arange(0, 3000, 150)
    points = truth.vertices[ids] + np.random.default_rng(0).normal(size=(len(ids), 3))
    return model, bs.obs.Landmarks3D(ids, points, 1.0), ids, points


@pytest.fixture(scope="module")
def nuts_posterior(landmark_case):
    model, lm, _, _ = landmark_case
    return bs.infer(model, lm, method=bs.NUTS(num_warmup=200, num_chains=2), num_samples=200, seed=0, progress=False)


def test_nuts_inference_data_is_complete(nuts_posterior, landmark_case, tmp_path):
    model, lm, ids, points = landmark_case
    post = nuts_posterior
    idata = post.to_arviz()
    assert set(idata.groups()) >= {"posterior", "sample_stats", "log_likelihood", "observed_data"}
    assert idata.posterior["alpha"].dims == ("chain", "draw", "mode")
    assert idata.posterior.sizes == {"chain": 2, "draw": 200, "mode": model.n_modes}
    np.testing.assert_array_equal(idata.posterior["alpha"].values, np.asarray(post.theta)[..., : model.n_modes])
    stats = idata.sample_stats
    for name in ("diverging", "tree_depth", "n_steps", "energy", "lp", "acceptance_rate", "step_size"):
        assert stats[name].dims == ("chain", "draw"), name
    assert int(stats["diverging"].sum()) == post.diagnostics.info.divergences
    # lp is the log density (up to its constant): the prior plus the likelihood at each draw
    th = np.asarray(post.theta)[0, :5]
    lp = [float(-0.5 * jnp.sum(t * t) + post.problem.log_likelihood(jnp.asarray(t))) for t in th]
    np.testing.assert_allclose(stats["lp"].values[0, :5] - lp, stats["lp"].values[0, 0] - lp[0], atol=1e-6)
    # one log-likelihood term per landmark, summing to the likelihood at every draw
    ll = idata.log_likelihood["data"]
    assert ll.dims == ("chain", "draw", "datum") and ll.sizes["datum"] == len(ids)
    assert set(ll.coords["observation"].values) == {"0:Landmarks3D"}
    want = [float(post.problem.log_likelihood(jnp.asarray(t))) for t in th]
    np.testing.assert_allclose(ll.values[0, :5].sum(-1), want, rtol=1e-9)
    np.testing.assert_array_equal(idata.observed_data["obs0_Landmarks3D"].values, points)

    summary = az.summary(idata, var_names=["alpha"])
    assert list(summary.index[:2]) == ["alpha[0]", "alpha[1]"] and (summary["r_hat"] < 1.05).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ArviZ's Pareto-k advice for influential landmarks
        loo, waic = az.loo(idata), az.waic(idata)
    assert np.isfinite(loo.elpd_loo) and loo.n_data_points == len(ids)
    assert np.isfinite(waic.elpd_waic)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)  # inside ArviZ 0.x's plotting
        axes = az.plot_trace(idata, var_names=["alpha"], coords={"mode": [0, 1]})
    assert axes.shape == (1, 2)  # one row (alpha, both modes), density and trace
    matplotlib.pyplot.close("all")

    # the saved posterior keeps the parameter samples and statistics: the loaded one converts too
    bs.io.save_posterior(post, tmp_path / "p.npz", log_likelihood="pointwise")
    loaded = bs.io.load_posterior(tmp_path / "p.npz")
    back = loaded.to_arviz()
    np.testing.assert_array_equal(back.posterior["alpha"].values, idata.posterior["alpha"].values)
    np.testing.assert_array_equal(back.sample_stats["diverging"].values, stats["diverging"].values)
    np.testing.assert_array_equal(back.log_likelihood["data"].values, ll.values)
    assert list(back.log_likelihood.coords["observation"].values) == list(ll.coords["observation"].values)
    # vertex samples alone cannot be converted, and say so
    with pytest.raises(ValueError, match="vertices only"):
        bs.posterior.ShapeSamples(np.zeros((3, 4, 3)), None).to_arviz()


def test_divergences_reach_sample_stats(landmark_case):
    """A Cauchy likelihood with an outlier and a low target acceptance diverges; ArviZ sees every one."""
    model, _, ids, points = landmark_case
    pts = points[::4].copy()
    pts[0] += 40.0
    lm = bs.obs.Landmarks3D(ids[::4], pts, 0.3, df=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the divergence warning itself
        post = bs.infer(
            model, lm, method=bs.NUTS(num_warmup=100, num_chains=2, target_accept_prob=0.3), num_samples=100, seed=0
        )
    idata = post.to_arviz(log_likelihood=None)
    assert "log_likelihood" not in idata.groups()
    n = int(idata.sample_stats["diverging"].sum())
    assert n > 0 and n == post.diagnostics.info.divergences


def test_other_methods_and_options(landmark_case):
    model, lm, _, _ = landmark_case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        imp = bs.infer(model, lm, method=bs.Importance(rounds=2, samples=300), pose="rigid", num_samples=200, seed=0)
    idata = imp.to_arviz(log_likelihood="observation")
    assert float(idata.sample_stats["pareto_k"]) == pytest.approx(imp.diagnostics.info.khat)
    assert float(idata.sample_stats["importance_ess"]) == pytest.approx(imp.diagnostics.info.ess)
    assert idata.posterior["rotation"].dims == ("chain", "draw", "axis")
    assert list(idata.posterior.coords["axis"].values) == ["x", "y", "z"]
    assert idata.log_likelihood["data"].dims == ("chain", "draw", "observation")
    with pytest.raises(ValueError, match="log_likelihood: expected 'pointwise', 'observation' or None"):
        imp.to_arviz(log_likelihood="all")
