"""Bad input, by kind: files, views, observations, inference arguments and the command line.

Every case asserts the exception type and that the message names the argument or file; the
command line must answer with one line on stderr, exit code 2 and no traceback. Each case here
was once accepted silently, or refused with a misleading or crashing error."""

import io
import json
import os
import warnings
import zipfile

import numpy as np
import pytest
import trimesh

import bayesshape as bs
from bayesshape import obs
from bayesshape.cli import main


@pytest.fixture(scope="module")
def small_model():
    return bs.build_pca_model(bs.datasets.example_shapes(6, seed=0), align="rigid")


@pytest.fixture
def model_file(tmp_path, small_model):
    path = tmp_path / "model.npz"
    bs.io.save_model(small_model, path)
    return path


def _cli(argv, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _one_line(argv, capsys, command):
    code, err = _cli(argv, capsys)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith(f"bayesshape {command}: error:"), err
    assert "Traceback" not in err[0]
    return err[0]


# ------------------------------------------------------------------ files


def test_random_bytes_or_hdf5_named_npz_is_not_a_model(tmp_path):
    (tmp_path / "random.npz").write_bytes(os.urandom(2000))
    with pytest.raises(ValueError, match=r"random\.npz: not a bayesshape model file .*another format"):
        bs.io.load_model(tmp_path / "random.npz")
    import h5py

    with h5py.File(tmp_path / "h5.npz", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(ValueError, match=r"h5\.npz: this is an HDF5 file.*load_statismo"):
        bs.io.load_model(tmp_path / "h5.npz")
    np.savez(tmp_path / "objects.npz", mean=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match=r"objects\.npz: mean\.npy holds Python objects"):
        bs.io.load_model(tmp_path / "objects.npz")


def _forged(path, member="mean.npy", shape=(10**12,)):
    header = np.lib.format.header_data_from_array_1_0(np.zeros(3))
    header["shape"] = shape
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(np.zeros(3).tobytes())
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, buf.getvalue())


def test_declared_sizes_are_checked_before_reading(tmp_path, capsys):
    _forged(tmp_path / "forged.npz")
    with pytest.raises(ValueError, match=r"forged\.npz: mean\.npy declares an array of shape \(1000000000000,\)"):
        bs.io.load_model(tmp_path / "forged.npz")
    line = _one_line(
        ["simulate", "--model", str(tmp_path / "forged.npz"), "--biplanar", "480", "--out", str(tmp_path / "x")],
        capsys,
        "simulate",
    )
    assert "forged.npz" in line and "corrupt" in line


def test_a_model_whose_basis_is_not_orthonormal_is_refused(tmp_path, model_file):
    data = dict(np.load(model_file))
    data["basis"] = data["basis"] * 37.0
    np.savez(tmp_path / "scaled.npz", **data)
    with pytest.raises(ValueError, match=r"scaled\.npz: the model's basis columns are not orthonormal .*37"):
        bs.io.load_model(tmp_path / "scaled.npz")
    bs.io.load_model(model_file)  # the good one loads


def test_a_posterior_file_with_1d_vertices_is_refused(tmp_path, capsys):
    meta = json.dumps({"format": "bayesshape-posterior", "version": 1, "method": "laplace"})
    np.savez(tmp_path / "post.npz", vertices=np.zeros(12, np.float32), meta=np.array(meta))
    with pytest.raises(ValueError, match=r"post\.npz: the vertex samples have shape \(12,\)"):
        bs.load_posterior(tmp_path / "post.npz")
    line = _one_line(
        ["export", "--posterior", str(tmp_path / "post.npz"), "--out", str(tmp_path / "e")], capsys, "export"
    )
    assert "post.npz" in line


def test_a_summary_with_the_wrong_types_is_refused_by_report(tmp_path, capsys, small_model):
    post = bs.posterior_from_landmarks(
        small_model, [0, 10, 20], np.asarray(small_model.mean)[[0, 10, 20]], 1.0, n_samples=50
    )
    from bayesshape.report import export_case

    case = tmp_path / "case"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        export_case(post, case, n_samples=2)
    bs.save_posterior(post, case / "posterior.npz")
    summary = json.loads((case / "summary.json").read_text())
    summary["reliability"]["score"] = [1, 2]
    (case / "summary.json").write_text(json.dumps(summary))
    line = _one_line(["report", "--case", str(case)], capsys, "report")
    assert "summary.json" in line and "reliability.score must be a number" in line


# ------------------------------------------------------------------ views


def test_view_values_are_checked_when_built():
    with pytest.raises(ValueError, match="principal_point: expected finite"):
        bs.XRayView.cone_beam(1300.0, 1000.0, (64, 64), 1.0, principal_point=(np.nan, 3.0))
    with pytest.raises(ValueError, match=r"detector_shape: expected whole numbers of pixels, got \(48\.9, 47\.5\)"):
        bs.XRayView.cone_beam(1300.0, 1000.0, (48.9, 47.5), 1.0)
    with pytest.raises(ValueError, match=r"detector_shape: 100000 x 100000 = 1e\+10 pixels is more than"):
        bs.XRayView.parallel((0, 1, 0), detector_shape=(100_000, 100_000))
    good = bs.XRayView.parallel((0, 1, 0), detector_shape=(8, 8))
    # the invariants live on the class: a view built directly, not through a constructor, is checked too
    with pytest.raises(ValueError, match="orthonormal frame"):
        bs.XRayView(good.source, good.origin, good.u, good.u, good.direction, good.spacing, (8, 8), True)
    with pytest.raises(ValueError, match=r"view\.spacing: expected shape \(2,\)"):
        bs.XRayView(good.source, good.origin, good.u, good.v, good.direction, good.spacing[:1], (8, 8), True)


def test_views_files_refuse_unknown_settings_and_path_like_names(tmp_path):
    (tmp_path / "typo.json").write_text(json.dumps({"views": [{"preset": "carm", "lao": 10, "pixel_size": 1.0}]}))
    with pytest.raises(
        ValueError, match=r"typo\.json: views\[0\]: unknown setting\(s\) 'pixel_size' for preset 'carm'"
    ):
        bs.read_views(tmp_path / "typo.json")
    good = bs.io.view_to_dict(bs.biplanar(field_of_view=480, detector_shape=(32, 32))[0])
    (tmp_path / "extra.json").write_text(json.dumps({"views": [{**good, "spcing": [1, 1]}]}))
    with pytest.raises(ValueError, match=r"unknown setting\(s\) 'spcing'"):
        bs.read_views(tmp_path / "extra.json")
    (tmp_path / "escape.json").write_text(json.dumps({"views": [{**good, "name": "../../escaped_by_view_name"}]}))
    with pytest.raises(ValueError, match=r"views\[0\]\.name: '\.\./\.\./escaped_by_view_name' cannot be used"):
        bs.read_views(tmp_path / "escape.json")
    (tmp_path / "v1.json").write_text(json.dumps({"format": "bayesshape-views", "version": 99, "views": [good]}))
    with pytest.raises(ValueError, match="view-geometry format version 99 is not supported"):
        bs.read_views(tmp_path / "v1.json")


@pytest.mark.parametrize("name", ["../../escaped", "/abs/path", "a/b", "..", "with space", "x" * 101, ""])
def test_no_user_name_reaches_outside_the_output_folder(tmp_path, capsys, model_file, name):
    """A view name becomes a file name in `simulate`: refused before anything is written, and
    nothing appears outside --out (the security defect)."""
    good = bs.io.view_to_dict(bs.biplanar(field_of_view=480, detector_shape=(32, 32))[0])
    views = tmp_path / "views.json"
    views.write_text(json.dumps({"views": [{**good, "name": name}]}))
    out = tmp_path / "deep" / "out"
    line = _one_line(
        ["simulate", "--model", str(model_file), "--views", str(views), "--out", str(out)], capsys, "simulate"
    )
    assert "cannot be used in a file name" in line
    # nothing was written: not inside --out, not beside it, not above it
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["model.npz", "views.json"]
    assert not list(tmp_path.parent.glob("*escaped*"))


# ------------------------------------------------------------------ meshes and simulation


def test_simulate_refuses_open_non_manifold_and_flipped_meshes():
    m = bs.datasets.icosphere(30.0, 3)
    views = bs.biplanar(field_of_view=200, detector_shape=(32, 32))
    cases = {
        "holes": trimesh.Trimesh(m.vertices, m.faces[20:], process=False),
        "more than two triangles": trimesh.Trimesh(m.vertices, np.vstack([m.faces, m.faces[:10]]), process=False),
        "not consistently oriented": trimesh.Trimesh(
            m.vertices, np.vstack([m.faces[:5, ::-1], m.faces[5:]]), process=False
        ),
    }
    for what, mesh in cases.items():
        with pytest.raises(ValueError, match=f"mesh: a DRR needs a closed, consistently oriented surface.*{what}"):
            bs.simulate_xray(mesh, views)
    bs.simulate_xray(m, views)  # the closed sphere is fine


def test_a_source_inside_the_object_is_refused_before_any_allocation(small_model):
    inside = bs.XRayView.cone_beam(1300.0, 5.0, (64, 64), 1.0)
    mesh = small_model.mesh(small_model.mean)
    with pytest.raises(ValueError, match="mesh in view 0: .* points lie at or behind the X-ray source"):
        bs.simulate_xray(mesh, inside)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    with pytest.raises(ValueError, match="Contour: the model's shapes: .* lie at or behind the X-ray source"):
        bs.infer(small_model, obs.Contour(inside, mask, 1.0), method="laplace")


# ------------------------------------------------------------------ observations


def test_contour_input_is_checked():
    view = bs.biplanar(field_of_view=480, detector_shape=(64, 64))[0]
    pts = np.stack([np.linspace(10, 50, 40), np.linspace(20, 40, 40)], axis=1)
    obs.Contour(view, pts, 1.0)  # on the detector: fine
    with pytest.raises(ValueError, match=r"points: 40 of 40 contour points lie off the view's 64 x 64 detector"):
        obs.Contour(view, pts + [1000.0, 0.0], 1.0)
    with pytest.raises(ValueError, match=r"a \(40, 2\) array of 0s and 1s looks like a mask"):
        obs.Contour(view, np.random.default_rng(0).integers(0, 2, (40, 2)), 1.0)
    mask = np.zeros((64, 64))
    mask[20:40, 20:40] = 1.0
    mask[0, 0] = np.nan
    with pytest.raises(ValueError, match="mask_or_points: 1 values are NaN or infinite"):
        obs.Contour(view, mask, 1.0)
    with pytest.raises(ValueError, match="mask: 1 pixels are NaN or infinite"):
        obs.Silhouette(view, mask, 1.0)


def test_an_empty_drr_is_refused():
    view = bs.biplanar(field_of_view=480, detector_shape=(32, 32))[0]
    with pytest.raises(ValueError, match="image: every pixel is zero or negative"):
        obs.DRR(view, np.zeros((32, 32)), 0.1)
    with pytest.raises(ValueError, match="image: every pixel has the same value"):
        obs.DRR(view, np.ones((32, 32)), 0.1, fit_scale_offset=True)


# ------------------------------------------------------------------ inference arguments


def test_seed_is_checked_before_any_work(small_model):
    lm = obs.Landmarks3D([0, 10, 20], np.asarray(small_model.mean)[[0, 10, 20]], 1.0)
    for seed in (2**70, -1):
        with pytest.raises(ValueError, match="seed: expected a non-negative integer below 2\\*\\*63"):
            bs.infer(small_model, lm, method="laplace", seed=seed)
    for seed in ("abc", 1.5):  # a type error (the test checker catches it first)
        with pytest.raises((ValueError, TypeError), match="seed"):
            bs.infer(small_model, lm, method="laplace", seed=seed)
    with pytest.raises((ValueError, TypeError), match="seed"):
        bs.simulate_xray(small_model.mesh(small_model.mean), bs.biplanar(field_of_view=480), seed="abc")


@pytest.mark.slow
def test_views_given_with_each_others_outlines_warn(small_model):
    """The AP outline given with the lateral view and the other way round fits badly and much better
    swapped: infer warns."""
    from scipy.spatial.transform import Rotation

    model = bs.build_pca_model(bs.datasets.example_shapes(10, seed=0), align="rigid")
    truth = bs.datasets.example_shapes(1, seed=1000)[0]
    c = truth.vertices.mean(0)
    moved = (truth.vertices - c) @ Rotation.from_rotvec([0.02, -0.03, 0.04]).as_matrix().T + c + [4.0, -3.0, 5.0]
    views = bs.biplanar(field_of_view=480, detector_shape=(64, 64))
    sim = bs.simulate_xray(trimesh.Trimesh(moved, truth.faces, process=False), views, seed=0, contour_jitter=0.5)
    swapped = [obs.Contour(v, m, 0.5) for v, m in zip(views, sim.masks[::-1])]
    with pytest.warns(UserWarning, match="fit much better with the views swapped"):
        post = bs.infer(model, swapped, method="laplace", pose="rigid", seed=0)
    assert any("views swapped" in w for w in post.diagnostics.warnings)
    # the right pairing never runs the check here (its outlines fit: composite weights of 0.5 or more);
    # every contour reconstruction of the suite runs with warnings as errors, so a false alarm would fail it


# ------------------------------------------------------------------ command line and output folders


def test_an_unusable_out_is_refused_before_the_work(tmp_path, capsys, model_file):
    (tmp_path / "a_file").write_text("x")
    line = _one_line(
        ["demo", "--out", str(tmp_path / "a_file"), "--size", "32", "--train", "5", "--quiet"], capsys, "demo"
    )
    assert "a_file: exists and is not a folder" in line
    line = _one_line(
        ["simulate", "--model", str(model_file), "--biplanar", "480", "--out", str(tmp_path / "a_file" / "x")],
        capsys,
        "simulate",
    )
    assert "is a file, so the folder cannot be made" in line


def test_a_case_folder_is_complete_or_absent(tmp_path, small_model, monkeypatch):
    """write_case writes under a temporary name and renames: a failure half-way leaves the old
    folder as it was and no partial one; the next write removes the stale temporary."""
    from bayesshape.report import case as case_module

    post = bs.posterior_from_landmarks(
        small_model, [0, 10, 20], np.asarray(small_model.mean)[[0, 10, 20]], 1.0, n_samples=50
    )
    views = bs.biplanar(field_of_view=480, detector_shape=(16, 16))
    images = [np.zeros((16, 16), bool), np.zeros((16, 16), bool)]
    out = tmp_path / "case"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        case_module.write_case(out, post, views, ["AP", "LAT"], images, ["mask", "mask"], n_samples=2)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert (out / "summary.json").exists()

    def boom(*args, **kwargs):
        raise RuntimeError("killed half-way")

    monkeypatch.setattr(case_module, "write_summary", boom)
    with pytest.raises(RuntimeError), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        case_module.write_case(out, post, views, ["AP", "LAT"], images, ["mask", "mask"], n_samples=3)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # the old case, untouched
    assert not list(tmp_path.glob(".case.partial-*"))
    # a kill -9 leaves a partial sibling and temporaries; the next write and the report remove them
    (tmp_path / ".case.partial-stale").mkdir()
    (out / ".summary.json.abc123.tmp.json").write_text("{")
    monkeypatch.undo()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        case_module.write_case(out, post, views, ["AP", "LAT"], images, ["mask", "mask"], n_samples=2)
    assert not list(tmp_path.glob(".case.partial-*")) and not list(out.glob(".*.tmp*"))
