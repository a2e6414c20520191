"""Registration of raw surfaces: known deformations recovered, the posterior's shape, bad input,
models from raw surfaces, the model evaluation, landmark files."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import pytest
import trimesh

import bayesshape as bs
from bayesshape.io import LandmarkSet, read_landmarks, write_landmarks
from bayesshape.registration import RegistrationOptions, _icp, register

FAST = RegistrationOptions(
    rank=60,
    anneal=(8.0, 4.0, 2.0, 1.0),
    points=(500, 1000, 2000, 4000),
    iterations=6,
    noise_sd=0.5,
    sliding_stages=1,
)


def _remesh(vertices, faces, keep=0.5):
    import fast_simplification

    v, f = fast_simplification.simplify(
        np.array(vertices, np.float64), np.array(faces, np.int64), target_reduction=1 - keep
    )
    v, f = trimesh.remesh.subdivide(v, f)
    return trimesh.Trimesh(v, f, process=False)


def _rigid(angle_deg, axis, t):
    out = np.eye(4)
    out[:3, :3] = _icp.rotation(np.deg2rad(angle_deg) * np.asarray(axis, float) / np.linalg.norm(axis))
    out[:3, 3] = t
    return out


@pytest.fixture(scope="module")
def reference():
    return bs.datasets.example_shapes(1, seed=0)[0]


@pytest.fixture(scope="module")
def gp(reference):
    return bs.gp_model(reference, bs.kernels.multiscale([36.0, 4.0], [120.0, 40.0]), rank=60)


@pytest.fixture(scope="module")
def case(gp):
    """A target drawn from the model, remeshed (another vertex count and triangulation), moved rigidly."""
    truth = np.asarray(gp.sample(jax.random.key(3), 1)[0])
    move = _rigid(12.0, [0.3, 1.0, 0.2], [15.0, -8.0, 30.0])
    target = _remesh(_icp.apply(move, truth), np.asarray(gp.faces))
    return truth, move, target


@pytest.fixture(scope="module")
def registered(gp, case):
    _, _, target = case
    return register(gp, target, options=FAST, posterior=True, seed=0)


def test_registration_recovers_a_known_deformation_and_pose(registered, case, gp):
    truth, move, target = case
    assert len(target.vertices) != gp.n_vertices
    err = np.linalg.norm(registered.mesh.vertices - _icp.apply(move, truth), axis=1)
    # the target is the model's own shape, moved by 12 degrees and 35 mm: the correspondence is found
    # to a fraction of the mesh's edge (4.8 mm) and the surface to a fraction of a millimetre
    assert err.mean() < 2.0, err.mean()
    assert registered.info.mean_distance_mm < 0.2
    assert registered.distances.shape == (gp.n_vertices,)
    assert np.array_equal(registered.mesh.faces, np.asarray(gp.faces))
    # the transform maps the model's frame to the target's: the registered mesh is T(x(alpha))
    x = np.asarray(gp.instance(jax.numpy.asarray(registered.coefficients)))
    np.testing.assert_allclose(_icp.apply(registered.transform, x), registered.mesh.vertices, atol=1e-9)


def test_posterior_covers_the_truth_and_leaves_the_sliding_free(gp):
    """A target drawn from the model in the model's frame, remeshed: where the registration converges,
    the credible ellipsoids of the correspondence hold the truth, and they are long along the surface."""
    truth = np.asarray(gp.sample(jax.random.key(5), 1)[0])
    target = _remesh(truth, np.asarray(gp.faces))
    reg = register(gp, target, options=dataclasses.replace(FAST, pose="none"), posterior=True, seed=0)
    post = reg.posterior
    cov = np.asarray(post.vertex_covariance())
    assert np.all(np.linalg.eigvalsh(cov) > -1e-9)
    np.testing.assert_allclose(np.asarray(post.mean_mesh().vertices), reg.mesh.vertices, atol=0.2)
    # along the normal the surface pins the correspondence; along the surface only the prior does
    n = _icp.vertex_normals(np.asarray(reg.mesh.vertices), np.asarray(reg.mesh.faces))
    var_n = np.einsum("ni,nij,nj->n", n, cov, n)
    var_total = np.trace(cov, axis1=1, axis2=2)
    assert np.median((var_total - var_n) / 2) > 4 * np.median(var_n)
    e = truth - reg.mesh.vertices
    d2 = np.einsum("ni,nij,nj->n", e, np.linalg.inv(cov), e)
    from scipy.stats import chi2

    # the 90% ellipsoids hold the true correspondence of at least 90% of the vertices (the posterior
    # is conservative: docs/models.md measures it)
    assert np.mean(d2 <= chi2.ppf(0.9, 3)) > 0.9


def test_landmarks_fix_the_rigid_stage_and_are_reported(gp, case):
    truth, move, target = case
    ids = [0, 400, 900, 1500, 2200, 3000]
    ref = LandmarkSet(tuple("ABCDEF"), np.asarray(gp.mean)[ids])
    tgt = LandmarkSet(tuple("FBCDEA"), _icp.apply(move, truth[[ids[5], ids[1], ids[2], ids[3], ids[4], ids[0]]]))
    reg = register(gp, target, landmarks=(ref, tgt), options=FAST)
    assert set(reg.landmark_error) == set("ABCDEF")
    assert max(reg.landmark_error.values()) < 2.0
    bad = LandmarkSet(("A", "B", "Z"), tgt.points[:3])
    with pytest.raises(ValueError, match=r"\['Z'\] are not among the reference's"):
        register(gp, target, landmarks=(ref, bad), options=FAST)


def test_bad_targets_are_named(gp, case):
    _, _, target = case
    metres = trimesh.Trimesh(np.asarray(target.vertices) / 1000.0, target.faces, process=False)
    with pytest.raises(ValueError, match="metres"):
        register(gp, metres, options=FAST)
    far = trimesh.Trimesh(np.asarray(target.vertices) * np.array([1.0, 1.0, 0.1]), target.faces, process=False)
    with pytest.raises(ValueError, match="do not overlap after the rigid stage"):
        register(gp, far, options=RegistrationOptions(pose="rigid", rank=60, iterations=2))
    flipped = trimesh.Trimesh(np.asarray(target.vertices), np.asarray(target.faces)[:, ::-1], process=False)
    with pytest.warns(UserWarning, match="normals point inwards"):
        reg = register(gp, flipped, options=FAST)
    assert reg.info.mean_distance_mm < 0.3
    holed = trimesh.Trimesh(np.asarray(target.vertices), np.asarray(target.faces)[40:], process=False)
    with pytest.warns(UserWarning, match="holes"):
        register(gp, holed, options=FAST)
    with pytest.raises(ValueError, match="pose"):
        RegistrationOptions(pose="affine")


def test_model_from_raw_surfaces(gp, reference):
    targets = []
    for k in range(4):
        x = np.asarray(gp.sample(jax.random.key(20 + k), 1)[0])
        targets.append(_remesh(x, np.asarray(gp.faces)))
    built = bs.build_model_from_surfaces(targets, gp, options=FAST, correspondence_uncertainty=True)
    assert built.model.n_vertices == gp.n_vertices and built.model.n_modes == 3
    assert built.model.vertex_noise is not None
    assert len(built.registrations) == 4
    assert all(r.info.mean_distance_mm < 0.3 for r in built.registrations)


def test_evaluate_model_on_a_two_mode_family():
    """Shapes that vary along exactly two directions: a leave-one-out model of the others spans
    them, so the generalization with two modes is zero, and the compactness reaches 100%."""
    base = bs.datasets.example_shapes(1, seed=0)[0]
    v = np.asarray(base.vertices)
    rng = np.random.default_rng(0)
    d1 = np.zeros_like(v)
    d1[:, 0] = v[:, 2] / 50.0
    d2 = np.zeros_like(v)
    d2[:, 1] = np.sin(v[:, 2] / 40.0)
    coef = rng.standard_normal((6, 2)) * 3.0
    shapes = [v + a * d1 + b * d2 for a, b in coef]
    ev = bs.prior.evaluate_model(shapes, align=None, n_samples=50)
    assert list(ev.modes) == [1, 2]  # two directions of variation, though six shapes
    assert np.all(np.diff(ev.compactness) >= -1e-12) and ev.compactness[1] == pytest.approx(1.0)
    assert ev.generalization[1] < 1e-6 < ev.generalization[0]
    assert np.all(ev.specificity > 0)
    assert "| 2 |" in ev.table()
    with pytest.raises(ValueError, match="at least 4"):
        bs.prior.evaluate_model(shapes[:3])


@pytest.mark.parametrize("suffix", [".json", ".mrk.json", ".fcsv", ".csv"])
def test_landmark_files_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 3))
    cov = np.stack([a @ a.T + np.eye(3) * k for k in (1, 2, 3)]) if suffix == ".json" else None
    lms = LandmarkSet(("tip", "B-2", "c"), rng.standard_normal((3, 3)) * 50, cov)
    path = tmp_path / f"lm{suffix}"
    write_landmarks(path, lms)
    back = read_landmarks(path)
    assert back.names == lms.names
    np.testing.assert_allclose(back.points, lms.points, rtol=0, atol=1e-12)
    if cov is not None:
        np.testing.assert_allclose(back.covariance, cov, atol=1e-10)


def test_slicer_ras_files_are_converted_to_lps(tmp_path):
    mrk = {
        "markups": [
            {"type": "Fiducial", "coordinateSystem": "RAS", "controlPoints": [{"label": "A", "position": [1, 2, 3]}]}
        ]
    }
    (tmp_path / "a.mrk.json").write_text(json.dumps(mrk))
    np.testing.assert_array_equal(read_landmarks(tmp_path / "a.mrk.json").points, [[-1.0, -2.0, 3.0]])
    (tmp_path / "a.fcsv").write_text(
        "# Markups fiducial file version = 4.6\n# CoordinateSystem = 0\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
        "vtkMRMLMarkupsFiducialNode_0,1,2,3,0,0,0,1,1,1,0,A,,\n"
    )
    np.testing.assert_array_equal(read_landmarks(tmp_path / "a.fcsv").points, [[-1.0, -2.0, 3.0]])
    (tmp_path / "h.csv").write_text("name,x,y,z\nA,1,2,3\nB,4,5,6\n")
    assert read_landmarks(tmp_path / "h.csv").names == ("A", "B")
    for reader in (read_landmarks, bs.io.load_model, bs.io.load_statismo):
        with pytest.raises(ValueError, match="HDF5-JSON"):
            reader(tmp_path / "m.h5.json")
    (tmp_path / "bad.csv").write_text("A,1,x,3\n")
    with pytest.raises(ValueError, match="row 1"):
        read_landmarks(tmp_path / "bad.csv")


def test_shared_landmark_files_read(tmp_path):
    from tests.conftest import shared

    ref = read_landmarks(shared("vertebrae_l1", "reference.json"))
    assert len(ref) == 10 and ref.covariance is not None
    np.testing.assert_allclose(ref.covariance[0], np.eye(3))
    femur = read_landmarks(shared("femur_raw", "VSD001-lm.csv"))
    assert femur.names == ("A", "B", "C", "D")
