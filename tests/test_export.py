"""Confidence meshes, sample meshes, JSON summaries, posterior files and view files: round trips
through real files, read back by independent readers (trimesh, meshio, VTK, a plain PLY parser)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import trimesh

import bayesshape as bs
from bayesshape.export import COLORMAP, confidence_fields


@pytest.fixture(scope="module")
def samples(example_model):
    v = np.asarray(example_model.sample(jax.random.key(3), 300))
    return bs.posterior.ShapeSamples(
        v,
        np.asarray(example_model.faces),
        method="test",
        misfit=[{"type": "Contour", "n_data": 256, "mean_sq_std_residual": 0.7}],
    )


@pytest.fixture(scope="module")
def truth(example_model):
    return example_model.mesh(np.asarray(example_model.sample(jax.random.key(4), 1)[0]))


def _plain_ply(path):
    """A PLY reader written from the format description (binary_little_endian, vertex/face)."""
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    assert header[0] == "ply" and header[1].startswith("format binary_little_endian")
    types = {
        "float": "<f4",
        "double": "<f8",
        "uchar": "u1",
        "int": "<i4",
        "uint": "<u4",
        "char": "i1",
        "short": "<i2",
        "ushort": "<u2",
    }
    n_vertex, props, section = 0, [], None
    for line in header:
        tok = line.split()
        if tok[0] == "element":
            section = tok[1]
            if section == "vertex":
                n_vertex = int(tok[2])
        elif tok[0] == "property" and section == "vertex":
            props.append((tok[2], types[tok[1]]))
    return np.frombuffer(raw, dtype=np.dtype(props), count=n_vertex, offset=end)


def test_confidence_mesh_round_trip(tmp_path, samples, truth):
    meshio = pytest.importorskip("meshio")
    fields = confidence_fields(samples, truth=truth, tolerance_mm=2.0)
    assert set(fields) == {"std", "normal_std", "credible_radius", "flag", "error"}
    for suffix in (".ply", ".vtk", ".vtp", ".vtu"):
        bs.export_confidence_mesh(samples, tmp_path / f"c{suffix}", truth=truth, tolerance_mm=2.0)

    # PLY: trimesh, and a plain header parser
    mesh = trimesh.load(tmp_path / "c.ply", process=False)
    np.testing.assert_allclose(mesh.vertices, samples.mean_vertices(), atol=1e-9)  # double vertices
    assert mesh.vertex_attributes == {}  # trimesh's reader alone drops the properties...
    through = bs.io.read_mesh(tmp_path / "c.ply")  # ...reading through bayesshape keeps them
    for name, val in fields.items():
        np.testing.assert_allclose(through.vertex_attributes[name], val, rtol=1e-6, atol=1e-6, err_msg=name)
    header = (tmp_path / "c.ply").read_bytes().split(b"end_header")[0].decode("ascii").splitlines()
    assert "comment SPACE=LPS" in header
    for line in ("property float quality", "property uchar flag", "property uchar red", "property double x"):
        assert line in header, line
    for name in ("std", "normal_std", "credible_radius", "error"):
        assert f"property float {name}" in header, name
    np.testing.assert_array_equal(mesh.faces, samples.faces)
    raw = mesh.metadata["_ply_raw"]["vertex"]["data"]
    plain = _plain_ply(tmp_path / "c.ply")
    for name, val in fields.items():
        np.testing.assert_allclose(raw[name], val, rtol=1e-6, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(plain[name], val, rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(plain["quality"], fields["credible_radius"], rtol=1e-6)  # MeshLab's scalar
    # colours: viridis of the credible radius on 0..2*tolerance
    from matplotlib import colormaps

    want = (colormaps[COLORMAP](np.clip(fields["credible_radius"] / 4.0, 0, 1))[:, :3] * 255).round()
    np.testing.assert_array_equal(np.stack([plain["red"], plain["green"], plain["blue"]], 1), want)

    # VTU: meshio
    m = meshio.read(tmp_path / "c.vtu")
    np.testing.assert_allclose(m.points, samples.mean_vertices(), atol=1e-9)
    np.testing.assert_array_equal(m.cells_dict["triangle"], samples.faces)
    for name, val in fields.items():
        np.testing.assert_allclose(np.asarray(m.point_data[name]).reshape(-1), val, rtol=1e-6, atol=1e-6)
    # legacy VTK: our reader (meshio reads no POLYDATA; VTK's own reader below)
    _, _, data = bs.io.read_vtk_polydata(tmp_path / "c.vtk")
    for name, val in fields.items():
        np.testing.assert_allclose(data[name], val, rtol=1e-6, atol=1e-6)

    # VTP: our reader, and VTK's own XML reader where installed
    pts, faces, data = bs.io.read_vtp_polydata(tmp_path / "c.vtp")
    np.testing.assert_allclose(pts, samples.mean_vertices(), atol=1e-9)
    np.testing.assert_array_equal(faces, samples.faces)
    for name, val in fields.items():
        np.testing.assert_allclose(data[name], val, rtol=1e-6, atol=1e-6)
    # VTK's own readers (ParaView's and Slicer's) for .vtp, .vtk and .vtu
    vtk = pytest.importorskip("vtk")
    from vtk.util.numpy_support import vtk_to_numpy

    for suffix, reader in (
        (".vtp", vtk.vtkXMLPolyDataReader),
        (".vtk", vtk.vtkPolyDataReader),
        (".vtu", vtk.vtkXMLUnstructuredGridReader),
    ):
        r = reader()
        r.SetFileName(str(tmp_path / f"c{suffix}"))
        r.Update()  # default settings: no ReadAllScalarsOn for the legacy file
        out = r.GetOutput()
        if suffix != ".vtu":
            pd = out.GetPointData()
            names = {pd.GetArrayName(i): pd.GetArray(i).GetDataTypeAsString() for i in range(pd.GetNumberOfArrays())}
            assert names == {
                "credible_radius": "float",
                "std": "float",
                "normal_std": "float",
                "error": "float",
                "flag": "unsigned char",
                "rgb": "unsigned char",
            }, suffix
            assert pd.GetScalars().GetName() == "credible_radius", suffix
            assert pd.GetArray("rgb").GetNumberOfComponents() == 3
        if suffix == ".vtk":
            assert r.GetHeader().endswith("SPACE=LPS")
        if suffix == ".vtp":
            assert out.GetFieldData().GetAbstractArray("SPACE").GetValue(0) == "LPS"
        assert out.GetNumberOfPoints() == samples.mean_vertices().shape[0], suffix
        assert out.GetNumberOfCells() == samples.faces.shape[0], suffix
        np.testing.assert_allclose(vtk_to_numpy(out.GetPoints().GetData()), samples.mean_vertices(), atol=1e-5)
        for name, val in fields.items():
            np.testing.assert_allclose(
                vtk_to_numpy(out.GetPointData().GetArray(name)), val, rtol=1e-6, atol=1e-6, err_msg=f"{suffix} {name}"
            )


def test_vtp_reads_vtk_written_files(tmp_path, example_shapes):
    vtk = pytest.importorskip("vtk")
    mesh = example_shapes[0]
    f = np.linspace(0, 1, len(mesh.vertices)).astype(np.float32)
    bs.io.write_mesh(tmp_path / "a.vtp", mesh, point_data={"f": f})
    r = vtk.vtkXMLPolyDataReader()
    r.SetFileName(str(tmp_path / "a.vtp"))
    r.Update()
    for mode in ("Binary", "Ascii"):
        w = vtk.vtkXMLPolyDataWriter()
        w.SetFileName(str(tmp_path / f"{mode}.vtp"))
        w.SetInputData(r.GetOutput())
        w.SetCompressorTypeToNone()
        getattr(w, f"SetDataModeTo{mode}")()
        w.Write()
        m = bs.io.read_mesh(tmp_path / f"{mode}.vtp")
        np.testing.assert_allclose(m.vertices, mesh.vertices, atol=1e-6)
        np.testing.assert_array_equal(m.faces, mesh.faces)
        np.testing.assert_allclose(m.vertex_attributes["f"], f, atol=1e-6)
    # vtkXMLPolyDataWriter with its default settings: appended raw data, zlib-compressed, as ParaView
    # and 3D Slicer save; read through vtk
    w = vtk.vtkXMLPolyDataWriter()
    w.SetFileName(str(tmp_path / "z.vtp"))
    w.SetInputData(r.GetOutput())
    w.Write()
    assert b"AppendedData" in (tmp_path / "z.vtp").read_bytes() and b"compressor" in (tmp_path / "z.vtp").read_bytes()
    m = bs.io.read_mesh(tmp_path / "z.vtp")
    np.testing.assert_allclose(m.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(m.faces, mesh.faces)
    np.testing.assert_array_equal(m.vertex_attributes["f"], f)
    # without vtk installed: a message saying what to install
    import builtins

    real_import = builtins.__import__

    def no_vtk(name, *args, **kwargs):
        if name == "vtk" or name.startswith("vtk."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    builtins.__import__ = no_vtk
    try:
        with pytest.raises(ValueError, match="needs the vtk package: pip install vtk"):
            bs.io.read_vtp_polydata(tmp_path / "z.vtp")
    finally:
        builtins.__import__ = real_import


def test_vtp_rejects_bad_files(tmp_path):
    (tmp_path / "junk.vtp").write_text("<VTKFile type='PolyData'><PolyData><Piece")
    with pytest.raises(ValueError, match="not a valid XML"):
        bs.io.read_vtp_polydata(tmp_path / "junk.vtp")
    (tmp_path / "grid.vtp").write_text("<VTKFile type='ImageData'/>")
    with pytest.raises(ValueError, match="not a VTK XML PolyData"):
        bs.io.read_vtp_polydata(tmp_path / "grid.vtp")


def test_export_samples(tmp_path, samples):
    paths = bs.export.export_samples(samples, tmp_path / "s", 3, seed=5)
    assert [p.name for p in paths] == ["mean.ply", "sample_000.ply", "sample_001.ply", "sample_002.ply"]
    want = samples.sample_vertices(3, seed=5)
    for p, v in zip(paths[1:], want):
        np.testing.assert_allclose(bs.io.read_mesh(p).vertices, v, atol=1e-4)
    np.testing.assert_allclose(bs.io.read_mesh(paths[0]).vertices, samples.mean_vertices(), atol=1e-4)


def test_summary_json(tmp_path, samples, truth):
    length = lambda v: v[:, 2].max() - v[:, 2].min()  # noqa: E731
    s = bs.export.write_summary(
        samples,
        tmp_path / "summary.json",
        inputs={"views": ["AP", "LAT"]},
        settings={"method": "test"},
        measurements={"length_mm": length},
        truth=truth,
    )
    back = json.loads((tmp_path / "summary.json").read_text())
    assert back["inputs"] == {"views": ["AP", "LAT"]}
    assert back["versions"]["bayesshape"] == bs.__version__ and back["versions"]["jax"] == jax.__version__
    m = back["measurements"]["length_mm"]
    lengths = np.asarray(jax.vmap(length)(samples.vertex_samples()))
    np.testing.assert_allclose(m["mean"], lengths.mean(), rtol=1e-9)
    assert m["lower"] < m["mean"] < m["upper"]
    np.testing.assert_allclose(m["lower"], np.quantile(lengths, 0.025), rtol=1e-9)
    assert back["reliability"]["misfit"][0]["mean_sq_std_residual"] == 0.7
    err = np.linalg.norm(samples.mean_vertices() - truth.vertices, axis=1)
    np.testing.assert_allclose(back["error_mm"]["vertex_mean"], err.mean(), rtol=1e-9)
    assert s["uncertainty_mm"]["vertex_std"]["max"] >= s["uncertainty_mm"]["vertex_std"]["mean"] > 0


def test_posterior_file_round_trip(tmp_path, example_model):
    ids = np.arange(0, example_model.n_vertices, 300)
    pts = np.asarray(example_model.mean)[ids] + 1.0
    post = bs.posterior_from_landmarks(example_model, ids, pts, 1.0, n_samples=400)
    bs.save_posterior(post, tmp_path / "p.npz", max_samples=300)
    back = bs.load_posterior(tmp_path / "p.npz")
    assert back.vertex_samples().shape == (300, example_model.n_vertices, 3)
    assert back.method == "closed_form"
    np.testing.assert_array_equal(back.faces, np.asarray(example_model.faces))
    # the kept samples are a subset: their std agrees with the full set within sampling error
    np.testing.assert_allclose(np.median(back.vertex_std() / post.vertex_std()), 1.0, atol=0.1)
    assert back.predictive_misfit() == post.predictive_misfit()
    with pytest.raises(ValueError, match="no such"):
        bs.load_posterior(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="posterior"):
        bs.load_posterior(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", vertices=np.array([{"a": 1}], dtype=object), meta=np.array("{}"))
    with pytest.raises(ValueError, match="posterior"):
        bs.load_posterior(tmp_path / "obj.npz")
    np.savez(tmp_path / "other.npz", vertices=np.zeros((3, 4, 3)), meta=np.array('{"format": "x"}'))
    with pytest.raises(ValueError, match="format"):
        bs.load_posterior(tmp_path / "other.npz")


def test_interrupted_export_leaves_nothing(tmp_path, samples, monkeypatch):
    bs.export_confidence_mesh(samples, tmp_path / "c.vtp")
    before = (tmp_path / "c.vtp").read_bytes()

    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("bayesshape.io.vtp.ET.tostring", boom)
    with pytest.raises(KeyboardInterrupt):
        bs.export_confidence_mesh(samples, tmp_path / "c.vtp")
    with pytest.raises(KeyboardInterrupt):
        bs.export_confidence_mesh(samples, tmp_path / "new.vtp")
    assert sorted(os.listdir(tmp_path)) == ["c.vtp"]  # no temporary files, no half-written new file
    assert (tmp_path / "c.vtp").read_bytes() == before


def test_export_rejects_bad_input(tmp_path, samples):
    with pytest.raises(ValueError, match=r"\.ply, \.vtk, \.vtp or \.vtu"):
        bs.export_confidence_mesh(samples, tmp_path / "c.stl")
    with pytest.raises(ValueError, match="truth"):
        bs.export_confidence_mesh(samples, tmp_path / "c.ply", truth=np.zeros((5, 3)))
    with pytest.raises(ValueError, match="tolerance_mm"):
        samples.reliability(tolerance_mm=0.0)
    with pytest.raises(ValueError, match="n_samples >= 2"):
        bs.posterior.ShapeSamples(np.zeros((1, 4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        bs.posterior.ShapeSamples(np.full((3, 4, 3), np.nan))


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_views_file_round_trip(tmp_path, suffix):
    views = [*bs.biplanar(field_of_view=480, projection="cone"), bs.carm_view(lao=30, cranial=10)]
    views.append(bs.XRayView.parallel((1, 1, 0), detector_shape=(64, 80), pixel_spacing=(2.0, 1.5)))
    bs.write_views(tmp_path / f"v{suffix}", views, ["AP", "LAT", "C", "P"])
    back, names = bs.read_views(tmp_path / f"v{suffix}")
    assert names == ["AP", "LAT", "C", "P"]
    pts = jnp.asarray(np.random.default_rng(0).normal(scale=50.0, size=(20, 3)))
    for a, b in zip(views, back):
        assert a.detector_shape == b.detector_shape and a.is_parallel == b.is_parallel
        np.testing.assert_allclose(b.project(pts), a.project(pts), atol=1e-9)
        np.testing.assert_allclose(b.direction, a.direction, atol=1e-12)


def test_views_file_presets_and_errors(tmp_path):
    (tmp_path / "b.json").write_text(
        json.dumps({"preset": "biplanar", "field_of_view": 480, "detector_shape": [64, 64]})
    )
    views, names = bs.read_views(tmp_path / "b.json")
    ref = bs.biplanar(field_of_view=480, detector_shape=(64, 64))
    assert names == ["AP", "LAT"]
    np.testing.assert_allclose(views[1].origin, ref[1].origin)
    (tmp_path / "c.yaml").write_text("views:\n  - {name: A, preset: carm, lao: 20}\n")
    assert bs.read_views(tmp_path / "c.yaml")[1] == ["A"]
    good = bs.io.view_to_dict(ref[0])
    bad_cases = {
        "units": ({"units": "m", "views": [good]}, "must be in mm"),
        "ortho": ({"views": [{**good, "v": good["u"]}]}, "orthogonal unit"),
        "missing": ({"views": [{k: v for k, v in good.items() if k != "origin"}]}, "missing 'origin'"),
        "preset": ({"views": [{"preset": "fisheye"}]}, "preset"),
        "args": ({"views": [{"preset": "carm", "zoom": 3}]}, "unknown setting\\(s\\) .zoom. for preset .carm."),
        "empty": ({"views": []}, "non-empty list"),
    }
    for name, (doc, msg) in bad_cases.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
        with pytest.raises(ValueError, match=msg):
            bs.read_views(tmp_path / f"{name}.json")
    (tmp_path / "junk.json").write_text("{views: [")
    with pytest.raises(ValueError, match="not valid JSON"):
        bs.read_views(tmp_path / "junk.json")


@pytest.mark.parametrize("binary", [False, True])
def test_vtk9_legacy_files_with_metadata_are_read(tmp_path, binary):
    """VTK 9's vtkPolyDataWriter adds METADATA blocks (value ranges, component names) after arrays."""
    vtk = pytest.importorskip("vtk")
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=10.0)
    n = len(mesh.vertices)
    rng = np.random.default_rng(0)
    arrays = {
        "s": rng.random(n).astype(np.float32),
        "flag": (rng.random(n) > 0.5).astype(np.uint8),
        "rgb": rng.integers(0, 256, (n, 3)).astype(np.uint8),
    }
    bs.io.write_vtk_polydata(tmp_path / "ours.vtk", mesh.vertices, mesh.faces, arrays)
    r = vtk.vtkPolyDataReader()
    r.SetFileName(str(tmp_path / "ours.vtk"))
    r.Update()
    poly = r.GetOutput()
    rgb = poly.GetPointData().GetArray("rgb")
    for i, c in enumerate("RGB"):
        rgb.SetComponentName(i, c)  # written as COMPONENT_NAMES metadata
    for i in range(poly.GetPointData().GetNumberOfArrays()):
        poly.GetPointData().GetArray(i).GetRange(-1)  # caches L2_NORM_RANGE information, written as metadata
    poly.GetPoints().GetData().GetRange(-1)
    w = vtk.vtkPolyDataWriter()
    w.SetInputData(poly)
    w.SetFileName(str(tmp_path / "vtk9.vtk"))
    w.SetFileTypeToBinary() if binary else w.SetFileTypeToASCII()
    w.Write()
    text = (tmp_path / "vtk9.vtk").read_bytes()
    assert b"METADATA" in text and b"COMPONENT_NAMES" in text and b"Version 5.1" in text
    pts, faces, data = bs.io.read_vtk_polydata(tmp_path / "vtk9.vtk")
    np.testing.assert_allclose(pts, mesh.vertices, rtol=1e-6)
    np.testing.assert_array_equal(faces, mesh.faces)
    assert set(data) == set(arrays)
    for k, v in arrays.items():  # VTK's ASCII writer keeps 6 significant digits of a float
        np.testing.assert_allclose(data[k], v, rtol=0 if binary else 1e-5, err_msg=k)
        assert data[k].dtype == v.dtype, k


def test_measurements_as_slicer_markups(tmp_path, samples):
    out = bs.export.export_markups(
        samples, tmp_path / "m.mrk.json", lines={"length": (0, 1600)}, angles={"bend": (0, 800, 1600)}, level=0.9
    )
    data = json.loads((tmp_path / "m.mrk.json").read_text())
    assert data["@schema"].endswith("markups-schema-v1.0.3.json#")
    line, angle = data["markups"]
    assert (line["type"], angle["type"]) == ("Line", "Angle")
    v = samples.vertex_samples()
    mean = np.asarray(v).mean(0)
    # the control points are the posterior mean positions, in LPS mm
    np.testing.assert_allclose([cp["position"] for cp in angle["controlPoints"]], mean[[0, 800, 1600]])
    assert angle["coordinateSystem"] == "LPS" and angle["coordinateUnits"] == "mm"
    # the measurement over the samples: the same as Posterior.measure of the same function
    length = samples.measure(lambda x: jnp.linalg.norm(x[1600] - x[0]), level=0.9)
    np.testing.assert_allclose(
        [out["length"].mean, out["length"].lower, out["length"].upper],
        [length.mean, length.lower, length.upper],
        rtol=1e-6,
    )
    assert line["measurements"][0] == pytest.approx(
        {"name": "length", "enabled": True, "value": float(length.mean), "units": "mm", "printFormat": "%-#4.4g%s"}
    )
    assert f"{float(length.lower):.2f} to {float(length.upper):.2f} mm" in line["description"]
    u, w = v[:, 0] - v[:, 800], v[:, 1600] - v[:, 800]
    deg = np.degrees(np.arccos(np.sum(u * w, -1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(w, axis=-1)))
    assert float(out["bend"].mean) == pytest.approx(float(deg.mean()), rel=1e-9)
    assert angle["measurements"][0]["units"] == "deg"
    # the first markup's points read back as landmarks
    lms = bs.io.read_landmarks(tmp_path / "m.mrk.json")
    np.testing.assert_allclose(lms.points, mean[[0, 1600]])
    with pytest.raises(ValueError, match=r"vertex indices must lie in 0\.\."):
        bs.export.export_markups(samples, tmp_path / "x.mrk.json", lines={"bad": (0, 10**7)})
    with pytest.raises(ValueError, match="end in .mrk.json"):
        bs.export.export_markups(samples, tmp_path / "x.json", lines={"a": (0, 1)})


def test_meshlab_reads_the_credible_radius_as_quality(tmp_path, samples):
    """MeshLab's own reader (pymeshlab): the credible radius as vertex quality, the colours as vertex colours."""
    pymeshlab = pytest.importorskip("pymeshlab")
    fields = bs.export_confidence_mesh(samples, tmp_path / "c.ply")
    ms = pymeshlab.MeshSet()
    ms.load_new_mesh(str(tmp_path / "c.ply"))
    m = ms.current_mesh()
    assert m.vertex_number() == len(samples.mean_vertices()) and m.has_vertex_scalar()
    np.testing.assert_allclose(m.vertex_scalar_array(), fields["credible_radius"], rtol=1e-6)
    np.testing.assert_allclose(m.vertex_matrix(), samples.mean_vertices(), atol=1e-9)
    plain = _plain_ply(tmp_path / "c.ply")
    np.testing.assert_array_equal(np.rint(m.vertex_color_matrix()[:, 0] * 255), plain["red"])
