"""infer_batch: the batched MAP and Laplace fit equal infer's case by case, groups by layout,
compile once per layout and batch size, and refuse bad input."""

import jax.numpy as jnp
import numpy as np
import pytest

import bayesshape as bs
from bayesshape import obs
from bayesshape.inference import batch as batch_module


class Plain(obs.Observation):
    """A user-written observation without a Gauss-Newton form (the batch then refines case by case)."""

    inner: obs.Landmarks3D

    def log_likelihood(self, vertices, sigma=None):
        return self.inner.log_likelihood(vertices, sigma)

    def residuals(self, vertices):
        return self.inner.residuals(vertices)

    @property
    def n_data(self):
        return self.inner.n_data


class Nowhere(Plain):
    """An observation no shape explains: its log-likelihood is -inf everywhere."""

    def log_likelihood(self, vertices, sigma=None):
        return -jnp.inf * jnp.ones((), vertices.dtype)


def _truths(model, n, seed):
    rng = np.random.default_rng(seed)
    return [np.asarray(model.instance(jnp.asarray(rng.standard_normal(model.n_modes)))) for _ in range(n)]


def _projected_cases(model, ids_per_case, seed=0):
    """Biplanar 2D landmarks (cone beam) of model draws turned and moved a little: a nonlinear
    posterior (the rigid pose is inferred)."""
    views = bs.biplanar(field_of_view=480, detector_shape=(128, 128), projection="cone")
    rng = np.random.default_rng(seed)
    cases = []
    for truth, ids in zip(_truths(model, len(ids_per_case), seed), ids_per_case):
        c = truth.mean(0)
        angle = rng.normal(scale=0.05)
        rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        posed = (truth - c) @ rot.T + c + rng.normal(scale=2.0, size=3)
        cases.append(
            [
                obs.Landmarks2D(
                    v,
                    ids,
                    np.asarray(v.project(jnp.asarray(posed[ids]))) + rng.normal(scale=0.5, size=(len(ids), 2)),
                    0.5,
                )
                for v in views
            ]
        )
    return cases


@pytest.mark.slow
def test_infer_batch_equals_infer_case_by_case(example_model, monkeypatch):
    """Three cases of one layout and one of another (more landmarks): two groups. Every case's
    MAP, Laplace covariance and draws equal ``infer``'s with seed ``seed + i``, up to the
    optimisers' tolerance (a hundredth of a posterior sd). The cases are ``vmap``-ed as on a GPU."""
    monkeypatch.setattr(batch_module, "_vectorise", lambda: True)
    model = example_model
    ids = np.linspace(0, model.n_vertices - 1, 12).astype(int)
    more = np.linspace(3, model.n_vertices - 4, 16).astype(int)
    cases = _projected_cases(model, [ids, ids, more, ids], seed=4)
    assert [g for g in batch_module._groups([bs.inference.build_problem(model, c, "rigid")[0] for c in cases])] == [
        [0, 1, 3],
        [2],
    ]
    posts = bs.infer_batch(model, cases, bs.Laplace(), pose="rigid", num_samples=200, seed=10)
    assert len(posts) == 4
    for i, (case, post) in enumerate(zip(cases, posts)):
        ref = bs.infer(model, case, bs.Laplace(), pose="rigid", num_samples=200, seed=10 + i)
        sd = np.sqrt(np.diag(np.asarray(ref.gaussian[1])))
        assert np.max(np.abs(np.asarray(post.theta_map) - np.asarray(ref.theta_map)) / sd) < 0.01
        # the covariance in units of the posterior sd (each entry over sd_i sd_j)
        scaled = (np.asarray(post.gaussian[1]) - np.asarray(ref.gaussian[1])) / np.outer(sd, sd)
        assert np.max(np.abs(scaled)) < 1e-3
        assert post.diagnostics.map.newton_decrement < 1e-3
        assert post.diagnostics.info.hessian == "gauss-newton"
        assert post.seed == 10 + i
        np.testing.assert_allclose(post.credible_radius(0.95), ref.credible_radius(0.95), rtol=0.01)
        np.testing.assert_allclose(post.mean_vertices(), ref.mean_vertices(), atol=0.05)
        assert abs(post.diagnostics.map.log_density - ref.diagnostics.map.log_density) < 1e-4


@pytest.mark.parametrize("vectorise", [True, False], ids=["vmap", "map"])
def test_infer_batch_is_the_closed_form_for_3d_landmarks(example_model, monkeypatch, vectorise):
    """Linear-Gaussian data, pose fixed: each case's Laplace Gaussian is the exact posterior, with
    the cases ``vmap``-ed (as on a GPU) or run one after the other (as on a CPU)."""
    monkeypatch.setattr(batch_module, "_vectorise", lambda: vectorise)
    model = example_model
    ids = np.array([5, 700, 1500, 2900, 3100])
    rng = np.random.default_rng(2)
    points = [t[ids] + rng.normal(scale=1.5, size=(len(ids), 3)) for t in _truths(model, 3, 8)]
    posts = bs.infer_batch(model, [obs.Landmarks3D(ids, p, 1.5) for p in points], "laplace", num_samples=20)
    for p, post in zip(points, posts):
        exact = bs.posterior_from_landmarks(model, ids, p, 1.5)
        np.testing.assert_allclose(post.gaussian[1], exact.gaussian[1], atol=1e-10)
        # the MAP to the optimiser's tolerance: a thousandth of a posterior sd
        sd = np.sqrt(np.diag(np.asarray(exact.gaussian[1])))
        assert np.max(np.abs(np.asarray(post.gaussian[0]) - np.asarray(exact.gaussian[0])) / sd) < 1e-3


@pytest.mark.slow
def test_infer_batch_without_gauss_newton_and_with_other_methods(example_model):
    """A user observation without whitened residuals: L-BFGS in the batch, then the case-by-case
    finite-difference Laplace, as infer does. Importance sampling runs per case from the batched MAP."""
    model = example_model
    ids = np.array([5, 700, 1500, 2900])
    rng = np.random.default_rng(5)
    points = [t[ids] + rng.normal(scale=1.0, size=(len(ids), 3)) for t in _truths(model, 2, 9)]
    cases = [Plain(obs.Landmarks3D(ids, p, 1.0)) for p in points]
    posts = bs.infer_batch(model, cases, bs.Laplace(), num_samples=20)
    for p, post in zip(points, posts):
        exact = bs.posterior_from_landmarks(model, ids, p, 1.0)
        assert post.diagnostics.info.hessian == "finite-difference"
        np.testing.assert_allclose(post.gaussian[1], exact.gaussian[1], atol=1e-7)
        sd = np.sqrt(np.diag(np.asarray(exact.gaussian[1])))
        assert np.max(np.abs(np.asarray(post.gaussian[0]) - np.asarray(exact.gaussian[0])) / sd) < 1e-3
    importance = bs.Importance(rounds=2, samples=200)
    posts = bs.infer_batch(model, cases, importance, num_samples=100, seed=3)
    for i, (case, post) in enumerate(zip(cases, posts)):
        ref = bs.infer(model, case, importance, num_samples=100, seed=3 + i)
        assert post.diagnostics.method == "importance"
        # the same proposals from the same key around MAPs a thousandth of an sd apart
        np.testing.assert_allclose(post.theta, ref.theta, atol=0.02)
        assert abs(post.diagnostics.info.ess - ref.diagnostics.info.ess) < 0.05 * ref.diagnostics.info.ess


def test_infer_batch_compiles_once_per_layout_and_batch_size(example_model, monkeypatch):
    """The batched fit is traced once for a layout and a chunk size: a second cohort of the same
    layout and size, and a larger cohort run in chunks of that size, reuse it."""
    model = example_model
    traced = []
    fit_one = batch_module._fit_one

    def counting(*args, **kwargs):
        traced.append(1)
        return fit_one(*args, **kwargs)

    monkeypatch.setattr(batch_module, "_fit_one", counting)
    ids = np.linspace(11, model.n_vertices - 12, 7).astype(int)  # a layout no other test uses
    rng = np.random.default_rng(6)

    def cohort(n, seed):
        return [obs.Landmarks3D(ids, t[ids] + rng.normal(size=(7, 3)), 1.0) for t in _truths(model, n, seed)]

    bs.infer_batch(model, cohort(3, 1), "laplace", num_samples=5)  # padded to 4
    assert len(traced) == 1
    bs.infer_batch(model, cohort(4, 2), "laplace", num_samples=5)
    assert len(traced) == 1
    posts = bs.infer_batch(model, cohort(9, 3), "laplace", num_samples=5, batch_size=4)  # 4 + 4 + 1 padded to 4
    assert len(traced) == 1 and len(posts) == 9
    bs.infer_batch(model, cohort(2, 4), "laplace", num_samples=5)  # a new chunk size
    assert len(traced) == 2


def test_infer_batch_refuses_bad_input(example_model, example_shapes):
    model = example_model
    ids = np.array([5, 700, 1500, 2100])
    good = obs.Landmarks3D(ids, np.asarray(model.mean)[ids], 1.0)
    with pytest.raises(ValueError, match="cases: expected a non-empty sequence"):
        bs.infer_batch(model, [], "laplace")
    with pytest.raises(ValueError, match="cases: expected a non-empty sequence"):
        bs.infer_batch(model, good, "laplace")
    with pytest.raises(ValueError, match=r"cases\[1\]: observations: expected"):
        bs.infer_batch(model, [good, "mask.png"], "laplace")
    with pytest.raises(ValueError, match="batch_size"):
        bs.infer_batch(model, [good], "laplace", batch_size=0)
    with pytest.raises(ValueError, match="method"):
        bs.infer_batch(model, [good], "gibbs")
    with pytest.raises(ValueError, match="Assembly"):
        from bayesshape.prior import Assembly, PosturePrior

        assembly = Assembly(("a", "b"), (model, model), jnp.zeros((1, 3)), PosturePrior.independent(1))
        bs.infer_batch(assembly, [good], "laplace")
    with pytest.raises(ValueError, match="case 1: the log-likelihood is not finite"):
        bs.infer_batch(model, [Plain(good), Nowhere(good)], "laplace")
