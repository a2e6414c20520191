"""Vertebral morphometry: the body's height points, the wedge deformity's posterior probability against
a closed form, a wedge recovered from landmarks, assembly offsets, and the errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from scipy.stats import norm

import bayesshape as bs
from bayesshape.posterior.morphometry import BodyPoints, body_points, height_ratios, wedge_assessment

ANTERIOR = (0.0, -1.0, 0.0)  # example_vertebra's frame is LPS: anterior is -y


def _box(extents=(40.0, 30.0, 25.0), subdivisions=4):
    m = trimesh.creation.box(extents=extents)
    for _ in range(subdivisions):
        m = m.subdivide()
    return m


def _wedge(vertices, loss, forward=ANTERIOR, up=(0.0, 0.0, 1.0)):
    """The body's height scaled by ``1 - loss`` at its front, by 1 at the centroid, linearly between."""
    v = np.array(vertices, np.float64)
    fw, u = np.asarray(forward), np.asarray(up)
    s = (v - v.mean(0)) @ fw
    front = s > 0
    h = v @ u
    mid = np.median(h[front])
    f = 1.0 - loss * s[front] / s.max()
    v[front] += ((mid + (h[front] - mid) * f) - h[front])[:, None] * u
    return v


def test_body_points_of_a_box_and_of_a_wedged_box():
    box = _box()
    pts = body_points(box, forward=(1.0, 0.0, 0.0))
    v = np.asarray(box.vertices)
    ha, hp = height_ratios(v, pts)
    assert ha == pytest.approx(25.0) and hp == pytest.approx(25.0)
    assert v[pts.anterior[0], 0] == pytest.approx(20.0)  # the front face
    assert v[pts.anterior[0], 2] == pytest.approx(12.5) and v[pts.anterior[1], 2] == pytest.approx(-12.5)
    # the back fifth of the body's half: 0 <= x <= 4 mm
    assert 0.0 <= v[pts.posterior[0], 0] <= 4.0 and 0.0 <= v[pts.posterior[1], 0] <= 4.0
    # wedged by 30% at the front: the anterior height falls by 30%, the posterior by loss * x / 20
    w = _wedge(v, 0.3, forward=(1.0, 0.0, 0.0))
    ha_w, hp_w = height_ratios(w, pts)
    assert ha_w == pytest.approx(25.0 * 0.7)
    assert hp_w == pytest.approx(25.0 * (1 - 0.3 * v[pts.posterior[0], 0] / 20.0))
    # a forward axis along the up axis is refused
    with pytest.raises(ValueError, match="perpendicular"):
        body_points(box, forward=(0.0, 0.0, 1.0))


class _FakeProblem:
    def __init__(self, mean):
        self.model = type("M", (), {"mean": mean, "n_vertices": mean.shape[0]})()


class _FakePost:
    """A posterior of one box whose front is scaled by draws ``f``: ``Ha / Hp = f`` exactly."""

    def __init__(self, box, pts, f):
        v = np.asarray(box.vertices, np.float64)
        self.problem = _FakeProblem(v)
        draws = np.repeat(v[None], f.size, axis=0)
        a, b = pts.anterior
        for i in (a, b):
            draws[:, i, 2] = v[i, 2] * f
        self._draws = draws

    def vertex_samples(self):
        return self._draws


def test_wedge_probability_and_grade_against_the_closed_form():
    box = _box()
    pts = body_points(box, forward=(1.0, 0.0, 0.0))
    rng = np.random.default_rng(0)
    n = 20000
    f = rng.normal(0.72, 0.05, n)  # the anterior height 72% of normal, sd 5%
    (a,) = wedge_assessment(_FakePost(box, pts, f), pts)
    # P(reduction >= 0.2) = P(f <= 0.8) = Phi(1.6); binomial sd 0.0016 at n = 20000
    assert a.probability == pytest.approx(norm.cdf(1.6), abs=0.006)
    assert a.reduction == pytest.approx(0.28, abs=0.002)
    assert a.grade == 2 and a.flagged and a.reference_ratio == pytest.approx(1.0)
    assert a.ratio_interval[0] == pytest.approx(0.72 - 1.96 * 0.05, abs=0.003)
    # a normal body: grade 0, not flagged; a severe one: grade 3
    (ok,) = wedge_assessment(_FakePost(box, pts, rng.normal(1.0, 0.05, 2000)), pts)
    assert ok.grade == 0 and not ok.flagged and ok.probability < 0.01
    (bad,) = wedge_assessment(_FakePost(box, pts, np.full(10, 0.5)), pts)
    assert bad.grade == 3 and bad.probability == 1.0
    # a stricter level of evidence: P = Phi(1.6) = 0.945 is short of 0.99
    (strict,) = wedge_assessment(_FakePost(box, pts, f), pts, probability=0.99)
    assert not strict.flagged


@pytest.mark.slow
@pytest.mark.parametrize("loss", [0.0, 0.35])
def test_a_wedge_is_recovered_from_landmarks_and_flagged_only_when_present(loss):
    """A GP model of a vertebra; the truth is its mean shape, wedged or not, seen as 3D landmarks on every
    vertex. The posterior's reduction follows the truth's."""
    vert = bs.datasets.example_vertebra(subdivisions=3)
    model = bs.gp_model(vert, bs.kernels.GaussianKernel(6.0, 20.0), 80)
    pts = body_points(vert, forward=ANTERIOR)
    truth = _wedge(vert.vertices, loss)
    ha, hp = height_ratios(truth, pts)
    ref_a, ref_p = height_ratios(np.asarray(vert.vertices), pts)
    true_reduction = 1 - (ha / hp) / (ref_a / ref_p)
    ids = np.arange(model.n_vertices)
    post = bs.infer(model, bs.obs.Landmarks3D(ids, truth, 0.5), "laplace", num_samples=400, seed=0)
    (a,) = wedge_assessment(post, pts)
    assert a.reduction == pytest.approx(true_reduction, abs=0.04)
    assert a.flagged == (true_reduction >= 0.2)
    if loss:
        assert true_reduction > 0.25 and a.grade >= 1


@pytest.mark.slow
def test_wedge_assessment_reads_each_object_of_an_assembly():
    spine = {k: v for k, v in bs.datasets.example_spine(subdivisions=2).items() if k in ("L3", "L4")}
    asm = bs.prior.Assembly.from_meshes(spine, rank=3)
    pts = {k: body_points(m, forward=ANTERIOR) for k, m in spine.items()}
    m = asm.combined_model()
    ids = np.arange(0, m.n_vertices, 5)
    post = bs.infer(asm, bs.obs.Landmarks3D(ids, np.asarray(m.mean)[ids], 1.0), "laplace", num_samples=50, seed=0)
    got = {a.name: a for a in wedge_assessment(post, pts)}
    draws = np.asarray(post.vertex_samples())
    for name, p in pts.items():
        sl = asm.vertex_slice(name)
        ha, hp = height_ratios(draws[:, sl], p)
        assert got[name].anterior_mm == pytest.approx(ha.mean()) and got[name].posterior_mm == pytest.approx(hp.mean())
        ra, rp = height_ratios(np.asarray(m.mean)[sl], p)
        assert got[name].reference_ratio == pytest.approx(ra / rp)
    with pytest.raises(ValueError, match="object 'L9' not in this posterior"):
        wedge_assessment(post, {"L9": pts["L3"]})
    with pytest.raises(ValueError, match="several objects"):
        wedge_assessment(post, pts["L3"])
    with pytest.raises(ValueError, match="out of range"):
        wedge_assessment(post, {"L3": BodyPoints((0, 1), (2, 10**6))})


def test_bad_morphometry_input():
    with pytest.raises(ValueError, match="two different non-negative vertex indices"):
        BodyPoints((1, 1), (2, 3))
    with pytest.raises(ValueError, match="expected a triangle mesh"):
        body_points(np.zeros((10, 3)))
    with pytest.raises(ValueError, match="expected a posterior"):
        wedge_assessment(object(), BodyPoints((0, 1), (2, 3)))
    with pytest.raises(ValueError, match="threshold"):
        wedge_assessment(
            _FakePost(_box(), BodyPoints((0, 1), (2, 3)), np.ones(3)), BodyPoints((0, 1), (2, 3)), threshold=1.5
        )
