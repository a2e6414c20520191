"""Assemblies in and out: the assembly file, the example spine, label images (their checks, simulated
label images, per-object observations that leave out other objects' pixels), per-object confidence
meshes, the summary's objects and posture, and the command line with an assembly and label images."""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

import bayesshape as bs
from bayesshape.prior import Assembly, PosturePrior


def _two_spheres(rank=4):
    a = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    b = trimesh.creation.icosphere(subdivisions=2, radius=9.0)
    b.apply_translation([0.0, 0.0, -24.0])
    prior = PosturePrior.independent(1, rotation_deg=3.0, translation_mm=1.0)
    return Assembly.from_meshes(
        {"upper": a, "lower": b}, rank=rank, posture=prior, kernel=bs.kernels.GaussianKernel(2.0, 15.0)
    )


def test_assembly_file_round_trip_and_refusals(tmp_path):
    asm = _two_spheres()
    path = tmp_path / "pair.npz"
    bs.io.save_assembly(asm, path)
    back = bs.io.load_assembly(path)
    assert back.names == asm.names
    for m, n in zip(asm.models, back.models):
        np.testing.assert_array_equal(np.asarray(m.mean), np.asarray(n.mean))
        np.testing.assert_array_equal(np.asarray(m.basis), np.asarray(n.basis))
        np.testing.assert_array_equal(np.asarray(m.faces), np.asarray(n.faces))
    np.testing.assert_array_equal(np.asarray(back.joints), np.asarray(asm.joints))
    np.testing.assert_array_equal(np.asarray(back.posture.covariance), np.asarray(asm.posture.covariance))
    with pytest.raises(ValueError, match="load_assembly"):
        bs.io.load_model(path)
    bs.io.save_model(asm.models[0], tmp_path / "one.npz")
    with pytest.raises(ValueError, match="single shape model.*load_model"):
        bs.io.load_assembly(tmp_path / "one.npz")
    # a posture covariance that is not positive definite, written by hand: named on reading
    data = dict(np.load(path, allow_pickle=False))
    data["posture_covariance"] = -np.asarray(data["posture_covariance"])
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(ValueError, match="bad.npz.*not positive definite"):
        bs.io.load_assembly(tmp_path / "bad.npz")
    del data["joints"]
    np.savez(tmp_path / "short.npz", **data)
    with pytest.raises(ValueError, match=r"missing arrays \['joints'\]"):
        bs.io.load_assembly(tmp_path / "short.npz")


def test_example_spine_is_four_closed_vertebrae_in_correspondence_that_do_not_intersect():
    mean = bs.datasets.example_spine()
    other = bs.datasets.example_spine(seed=3)
    assert list(mean) == list(bs.datasets.SPINE_LEVELS)
    for name in mean:
        assert mean[name].is_watertight and mean[name].volume > 0
        np.testing.assert_array_equal(mean[name].faces, other[name].faces)
        assert not np.allclose(mean[name].vertices, other[name].vertices)
    np.testing.assert_array_equal(other["L3"].vertices, bs.datasets.example_spine(seed=3)["L3"].vertices)
    tops = [m.vertices[:, 2].max() for m in mean.values()]
    assert all(a > b for a, b in zip(tops[:-1], tops[1:]))  # top to bottom
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asm = Assembly.from_meshes(mean, rank=3)
    assert asm.check_overlap() == []
    with pytest.raises(ValueError, match="height"):
        bs.datasets.example_vertebra(height=-1.0)


def _label_views():
    return list(bs.biplanar(isocenter=(0.0, 0.0, -12.0), field_of_view=80.0, detector_shape=(48, 48)))


def test_label_image_checks_name_what_is_wrong():
    asm = _two_spheres()
    views = _label_views()
    img = np.zeros((48, 48), np.uint8)
    img[5:15, 5:15], img[30:40, 30:40] = 1, 2
    assert bs.obs.check_label_images(views, [img, img], asm) == {"upper": 1, "lower": 2}
    stray = img.copy()
    stray[0, 0] = 7
    with pytest.raises(ValueError, match=r"view 1: label\(s\) \[7\] match no object \(objects: upper=1, lower=2"):
        bs.obs.check_label_images(views, [img, stray], asm)
    only_one = np.where(img == 2, 0, img)
    with pytest.raises(ValueError, match=r"lower \(label 2\) appear in no view"):
        bs.obs.check_label_images(views, [only_one, only_one], asm)
    with pytest.raises(ValueError, match=r"view 0: shape \(40, 48\), expected the view's detector shape \(48, 48\)"):
        bs.obs.check_label_images(views, [img[:40], img], asm)
    with pytest.raises(ValueError, match="integer labels"):
        bs.obs.check_label_images(views, [img + 0.5, img], asm)
    with pytest.raises(ValueError, match="share a label"):
        bs.obs.check_label_images(views, [img, img], asm, labels={"upper": 1, "lower": 1})
    with pytest.raises(ValueError, match=r"\['middle'\] are not objects"):
        bs.obs.check_label_images(views, [img, img], asm, labels={"upper": 1, "lower": 2, "middle": 3})
    with pytest.raises(ValueError, match="one per view"):
        bs.obs.check_label_images(views, [img], asm)
    # relabelled images pass with their labels
    assert bs.obs.check_label_images(views, [img * 10, img * 10], asm, labels={"upper": 10, "lower": 20})["lower"] == 20


def test_simulated_label_images_partition_the_union_mask_by_the_longest_path():
    asm = _two_spheres()
    v = np.asarray(asm.combined_model().mean)
    f = np.asarray(asm.combined_model().faces)
    views = _label_views()
    sim = bs.simulate_xray((v, f), views, seed=0, object_ids=asm.object_ids())
    one = bs.simulate_xray((v[: asm.vertex_offsets[1]], np.asarray(asm.models[0].faces)), views, seed=0)
    for lab, mask, own in zip(sim.labels, sim.masks, one.clean_drr):
        np.testing.assert_array_equal(lab > 0, mask)
        assert set(np.unique(lab)) == {0, 1, 2}
        # where only the upper sphere is on the ray, the label is 1
        assert np.all(lab[(own > 0) & (lab > 0)] == 1) or np.any(lab[own > 0] == 2)
        assert np.all(lab[own > 0] != 0)
    bad = np.asarray(asm.object_ids()).copy()
    bad[f[0, 0]] = 1 - bad[f[0, 0]]
    with pytest.raises(ValueError, match="joins vertices of two objects"):
        bs.simulate_xray((v, f), views, object_ids=bad)


def test_label_observations_leave_out_other_objects_pixels():
    """Two objects that overlap in the image: each one's silhouette band holds no pixel of the other's
    label (those may hide it), and its contour no outline point next to the other."""
    view = bs.biplanar(isocenter=(0.0, 0.0, 0.0), field_of_view=64.0, detector_shape=(64, 64))[0]
    lab = np.zeros((64, 64), np.uint8)
    lab[10:40, 10:40] = 1
    lab[30:55, 25:50] = 2  # on top of object 1 where they overlap
    obs = bs.obs.label_observations([view], [lab], ["a", "b"], kind="silhouette")
    assert [o.name for o in obs] == ["a", "b"]
    for o, own, other in ((obs[0], 1, 2), (obs[1], 2, 1)):
        px = np.asarray(o.observation.pixels).astype(int)
        labels_seen = lab[px[:, 0], px[:, 1]]
        assert not np.any(labels_seen == other)
        assert np.any(labels_seen == own) and np.any(labels_seen == 0)
    full = bs.obs.Silhouette(view, lab == 1, 0.5)
    assert obs[0].observation.n_data < full.n_data
    cont = bs.obs.label_observations([view], [lab], ["a", "b"], kind="contour")
    pts = np.asarray(cont[0].observation.points)
    assert np.all(np.min(np.linalg.norm(pts[:, None] - np.argwhere(lab == 2)[None], axis=2), axis=1) > 1.0)
    with pytest.raises(ValueError, match="inside the mask"):
        bs.obs.Silhouette(view, lab == 1, 0.5, ignore=lab > 0)


def _vertebra_pair(rank=4):
    a = bs.datasets.example_vertebra(subdivisions=2)
    b = bs.datasets.example_vertebra(subdivisions=2)
    b.apply_translation([0.0, 0.0, -36.0])
    prior = PosturePrior.independent(1, rotation_deg=3.0, translation_mm=1.0)
    kernel = bs.kernels.GaussianKernel(2.0, 15.0)
    return Assembly.from_meshes({"upper": a, "lower": b}, rank=rank, posture=prior, kernel=kernel)


def _posed(asm, inc):
    from bayesshape.inference._assembly import object_transforms

    rots, trans = (np.asarray(x) for x in object_transforms(jnp.asarray(inc), asm.joints))
    return np.concatenate([np.asarray(m.mean) @ r.T + t for m, r, t in zip(asm.models, rots, trans)])


def test_label_silhouettes_prefer_the_true_posture():
    """The per-object label silhouettes of a posed vertebra pair: their log-likelihood is highest at the
    true posture, lower with the lower vertebra turned by a degree either way (a turn about y, in the
    plane of the AP view)."""
    from bayesshape.inference._assembly import build_assembly_problem

    asm = _vertebra_pair()
    inc = np.array([[0.0, 0.06, 0.0, 0.5, 0.0, 0.0]])
    v = _posed(asm, inc)
    f = np.asarray(asm.combined_model().faces)
    views = list(bs.biplanar(isocenter=(0.0, 0.0, -18.0), field_of_view=100.0, detector_shape=(48, 48)))[:1]
    sim = bs.simulate_xray((v, f), views, seed=0, object_ids=asm.object_ids())
    obs = sim.observations("label-silhouette", objects=asm)
    assert len(obs) == 2 and {o.name for o in obs} == {"upper", "lower"}
    problem, _ = build_assembly_problem(asm, obs, pose=None)
    total = jax.jit(lambda x: sum(o.log_likelihood(x) for o in problem.observations))
    at_truth = float(total(jnp.asarray(v)))
    for angle in (-1.0, 1.0):
        moved = _posed(asm, inc + np.array([[0.0, np.radians(angle), 0.0, 0.0, 0.0, 0.0]]))
        assert float(total(jnp.asarray(moved))) < at_truth - 1.0


def test_assembly_case_folder_has_object_meshes_posture_and_report(tmp_path):
    """An assembly's case folder: one confidence mesh per object (its rows of the combined one, with the
    combined mesh's fields), the summary's objects (errors against the truth) and joint angles (in LPS
    axes: a turn about y is the coronal angle), and the report's tables."""
    from bayesshape.report import make_report, write_case

    asm = _vertebra_pair()
    inc = np.array([[0.0, 0.06, 0.0, 0.5, 0.0, 0.0]])
    v = _posed(asm, inc)
    f = np.asarray(asm.combined_model().faces)
    ids = np.arange(0, v.shape[0], 3)
    post = bs.infer(
        asm, bs.obs.Landmarks3D(ids, v[ids], 0.3), bs.Laplace(), None, num_samples=300, seed=0, progress=False
    )
    err = np.linalg.norm(post.mean_vertices() - v, axis=1)
    views = list(bs.biplanar(isocenter=(0.0, 0.0, -18.0), field_of_view=100.0, detector_shape=(48, 48)))
    sim = bs.simulate_xray((v, f), views, seed=0)
    summary = write_case(
        tmp_path / "case",
        post,
        views,
        ["AP", "LAT"],
        list(sim.drr),
        ["drr", "drr"],
        truth=trimesh.Trimesh(v, f, process=False),
    )
    assert set(summary["objects"]) == {"upper", "lower"}
    assert summary["objects"]["lower"]["vertex_error_mm"] == pytest.approx(err[asm.vertex_slice("lower")].mean())
    row = summary["posture_deg"]["coronal[upper/lower]"]
    assert row["lo_95"] < np.degrees(0.06) < row["hi_95"] and 0 < row["sd"] < 1.0
    assert abs(summary["posture_deg"]["sagittal[upper/lower]"]["mean"]) < 4 * row["sd"] + 0.2
    combined = trimesh.load(tmp_path / "case" / "confidence.ply", process=False)
    radius_all = np.asarray(combined.metadata["_ply_raw"]["vertex"]["data"]["credible_radius"])
    object_id = np.asarray(combined.metadata["_ply_raw"]["vertex"]["data"]["object_id"])
    np.testing.assert_array_equal(object_id, asm.object_ids())
    for name in asm.names:
        part = trimesh.load(tmp_path / "case" / "objects" / f"{name}.ply", process=False)
        rows = asm.vertex_slice(name)
        np.testing.assert_allclose(part.vertices, combined.vertices[rows], atol=1e-5)
        np.testing.assert_array_equal(part.faces, np.asarray(asm.models[asm.index(name)].faces))
        radius = np.asarray(part.metadata["_ply_raw"]["vertex"]["data"]["credible_radius"])
        np.testing.assert_allclose(radius, radius_all[rows])
    html = make_report(tmp_path / "case").read_text()
    assert "Objects of the assembly" in html and "coronal[upper/lower]" in html
    json.loads((tmp_path / "case" / "summary.json").read_text())
