"""Model files (own and Statismo) and mesh files."""

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesshape as bs
from bayesshape import io

from .conftest import shared


def test_native_roundtrip(tmp_path, example_model):
    p = tmp_path / "m.npz"
    io.save_model(example_model, p)
    m = io.load_model(p)
    for a in ("mean", "basis", "variance", "faces", "noise_variance", "total_variance"):
        np.testing.assert_array_equal(np.asarray(getattr(m, a)), np.asarray(getattr(example_model, a)))
    assert not list(tmp_path.glob(".*tmp*"))


def test_native_rejects_corrupt_and_pickles(tmp_path, example_model):
    p = tmp_path / "m.npz"
    io.save_model(example_model, p)
    (tmp_path / "trunc.npz").write_bytes(p.read_bytes()[:200])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        io.load_model(tmp_path / "trunc.npz")
    np.savez(
        tmp_path / "obj.npz",
        format=np.array("bayesshape.ShapeModel"),
        format_version=np.array(1),
        mean=np.array([object()], dtype=object),
    )
    with pytest.raises(ValueError, match="refused|pickle"):
        io.load_model(tmp_path / "obj.npz")
    with pytest.raises(ValueError, match="no such file"):
        io.load_model(tmp_path / "missing.npz")


def test_torus_statismo_file():
    path = shared("statismo", "torus_model.h5")
    model = io.load_statismo(path)
    with h5py.File(path, "r") as f:
        mean = f["model/mean"][()].astype(np.float64)
        U = f["model/pcaBasis"][()].astype(np.float64)
        lam = f["model/pcaVariance"][()].astype(np.float64)
        faces = f["representer/cells"][()].T
    assert model.n_vertices == 1400 and model.faces.shape == (2800, 3)
    np.testing.assert_array_equal(np.asarray(model.faces), faces)
    np.testing.assert_allclose(np.asarray(model.mean).reshape(-1), mean)
    file_total = float(np.sum(lam * (U**2).sum(0)))  # trace of U diag(lam) U^T
    assert abs(float(model.variance.sum()) - file_total) / file_total < 1e-3
    b = np.asarray(model.basis)
    np.testing.assert_allclose(b.T @ b, np.eye(b.shape[1]), atol=1e-8)
    # the file's own sample formula, reproduced through the re-orthonormalised model
    alpha = np.random.default_rng(0).standard_normal(lam.size)
    sample = (mean + U @ (np.sqrt(lam) * alpha)).reshape(-1, 3)
    rec = np.asarray(model.instance(model.coefficients(jnp.asarray(sample))))
    assert np.abs(rec - sample).max() < 1e-6 * np.abs(sample).max()
    # covariance: compare on a few coordinates
    cov_file = (U[:30] * lam[None, :]) @ U[:30].T
    bb = b[:30]
    np.testing.assert_allclose(
        bb @ np.diag(np.asarray(model.variance)) @ bb.T, cov_file, rtol=1e-6, atol=1e-6 * np.abs(cov_file).max()
    )


def test_statismo_femur_write_and_read(tmp_path, femur_meshes):
    model = bs.build_pca_model(femur_meshes, align=None)
    p = tmp_path / "femur.h5"
    io.save_statismo(model, p)
    with h5py.File(p, "r") as f:
        assert f["version/majorVersion"].shape == () and f["version/majorVersion"].dtype == np.int32
        assert int(f["version/minorVersion"][()]) == 9
        rep = f["representer"]
        assert rep.attrs["datasetType"] == b"POLYGON_MESH"
        assert rep.attrs["name"] == b"vtkStandardMeshRepresenter" and rep.attrs["version"] == b"1.0"
        assert f["representer/points"].shape == (3, 11649)
        assert f["representer/cells"].shape == (3, 23294) and f["representer/cells"].dtype == np.uint32
        assert f["model/mean"].shape == (3 * 11649,)
        np.testing.assert_allclose(f["model/mean"][:3], np.asarray(model.mean)[0], rtol=1e-7)
        U = f["model/pcaBasis"][()].astype(np.float64)
        np.testing.assert_allclose(U.T @ U, np.eye(9), atol=1e-5)
        assert f["model/pcaVariance"].shape == (9,)
        assert "noiseVariance" in f["model"]
        for key in (
            "modelinfo/build-time",
            "modelinfo/scores",
            "modelinfo/modelBuilder-0/builderName",
            "modelinfo/modelBuilder-0/buildTime",
            "modelinfo/modelBuilder-0/dataInfo",
            "modelinfo/modelBuilder-0/parameters",
        ):
            assert key in f
    back = io.load_statismo(p)
    np.testing.assert_allclose(np.asarray(back.mean), np.asarray(model.mean), atol=1e-3)  # float32 on disk
    np.testing.assert_allclose(np.asarray(back.variance), np.asarray(model.variance), rtol=1e-4)
    c1 = np.asarray(model.vertex_covariance())
    c2 = np.asarray(back.vertex_covariance())
    assert np.abs(c1 - c2).max() < 1e-4 * np.abs(c1).max()


def _objects(group, prefix=""):
    """Every dataset, group and attribute under ``group``: path -> (kind, dtype kind, ndim)."""
    out = {}
    for key, val in group.attrs.items():
        a = np.asarray(val)
        out[f"{prefix}@{key}"] = ("attr", a.dtype.kind, a.ndim)
    for name, obj in group.items():
        path = f"{prefix}/{name}"
        if isinstance(obj, h5py.Group):
            out[path] = ("group", "", 0)
            out.update(_objects(obj, path))
        else:
            out[path] = ("dataset", obj.dtype.kind, obj.ndim)
    return out


def test_statismo_written_like_statismos_own_writer(tmp_path, example_model):
    """Every object and attribute that Statismo's C++ writer puts in a mesh model file (what its reader
    opens) is in ours, with the same kind, dtype kind (fixed-length strings 'S', not variable-length 'O')
    and rank; the build's free-form dataInfo and parameters entries excepted."""
    cpp = shared("statismo", "mandibles_statismo_cpp.h5")
    io.save_statismo(example_model, tmp_path / "m.h5")
    with h5py.File(cpp, "r") as f:
        want = {k: v for k, v in _objects(f).items() if "/dataInfo/" not in k and "/parameters/" not in k}
    with h5py.File(tmp_path / "m.h5", "r") as f:
        have = _objects(f)
    missing = sorted(set(want) - set(have))
    assert not missing
    differ = {k: (want[k], have[k]) for k in want if want[k] != have[k]}
    assert not differ
    assert not any(v[1] == "O" for v in have.values())  # no variable-length strings anywhere


def test_statismo_cpp_and_nested_fixtures():
    m = io.load_statismo(shared("statismo", "mandibles_statismo_cpp.h5"))
    assert (m.n_vertices, m.n_modes, m.faces.shape) == (7516, 14, (15052, 3))
    path = shared("statismo", "face_random_l4_nested.h5")
    with pytest.raises(ValueError, match=r"missing group /representer; the file has a model in /shape.*group='shape'"):
        io.load_statismo(path)
    with pytest.raises(ValueError, match=r"no group /nose in the file"):
        io.load_statismo(path, group="nose")
    face = io.load_statismo(path, group="/shape")
    with h5py.File(path, "r") as f:
        mean = f["shape/model/mean"][()].astype(np.float64)
        U = f["shape/model/pcaBasis"][()].astype(np.float64)
        lam = f["shape/model/pcaVariance"][()].astype(np.float64)
    assert (face.n_vertices, face.n_modes) == (1529, 19)
    # an orthonormal file basis is kept: coefficients mean what they meant in the file
    alpha = np.random.default_rng(1).standard_normal(19)
    want = (mean + U @ (np.sqrt(lam) * alpha)).reshape(-1, 3)
    assert np.abs(np.asarray(face.instance(jnp.asarray(alpha))) - want).max() < 1e-4
    for m in (face, io.load_statismo(path, group="color")):
        b = np.asarray(m.basis)
        np.testing.assert_allclose(b.T @ b, np.eye(b.shape[1]), atol=1e-10)


@pytest.mark.parametrize("fmt", ["native", "statismo"])
def test_saved_coefficients_keep_their_meaning(tmp_path, femur_meshes, fmt):
    """The same coefficients give the same shape after a save/load round trip (to 1e-4 mm): no mode's
    sign or order changes (Statismo's loader used to re-orthonormalise and flip modes)."""
    model = bs.build_pca_model(femur_meshes, align=None)
    if fmt == "native":
        io.save_model(model, tmp_path / "m.npz")
        back = io.load_model(tmp_path / "m.npz")
    else:
        io.save_statismo(model, tmp_path / "m.h5")
        back = io.load_statismo(tmp_path / "m.h5")
    alphas = np.random.default_rng(0).standard_normal((5, model.n_modes)) * 2
    for a in alphas:
        d = np.asarray(back.instance(jnp.asarray(a))) - np.asarray(model.instance(jnp.asarray(a)))
        assert np.abs(d).max() < 1e-4
    for j in range(model.n_modes):  # every mode on its own, so that one flipped mode cannot hide
        e = np.zeros(model.n_modes)
        e[j] = 3.0
        d = np.asarray(back.instance(jnp.asarray(e))) - np.asarray(model.instance(jnp.asarray(e)))
        assert np.abs(d).max() < 1e-4, j


def test_posterior_as_statismo_model(tmp_path, example_model):
    """A posterior exported as a Statismo model reads back with the posterior's mean and covariance."""
    rng = np.random.default_rng(3)
    alpha = rng.standard_normal((400, example_model.n_modes)) * 0.3 + 0.5
    x = np.asarray(jax.vmap(example_model.instance)(jnp.asarray(alpha)))
    post = bs.posterior.ShapeSamples(x, np.asarray(example_model.faces))
    pm = post.to_shape_model()
    assert pm.n_modes == min(399, example_model.n_modes)
    io.save_statismo(pm, tmp_path / "post.h5")
    back = io.load_statismo(tmp_path / "post.h5")
    mean = post.mean_vertices()
    assert np.abs(np.asarray(back.mean) - mean).max() < 1e-5 * np.abs(mean).max()
    c_post = post.vertex_covariance()
    c_back = np.asarray(back.vertex_covariance())
    assert np.abs(c_back - c_post).max() < 1e-5 * np.abs(c_post).max()
    # the full covariance between two vertices too (not only the per-vertex blocks)
    d = (x - mean[None]).reshape(400, -1)
    full = d[:, :6].T @ d[:, 6:12] / 399
    b = np.asarray(back.basis)
    full_back = (b[:6] * np.asarray(back.variance)[None]) @ b[6:12].T
    assert np.abs(full_back - full).max() < 1e-5 * np.abs(c_post).max()
    assert post.to_shape_model(rank=2).n_modes == 2
    with pytest.raises(ValueError, match="rank: expected a positive"):
        post.to_shape_model(rank=0)


def test_statismo_bad_files(tmp_path, example_model):
    p = tmp_path / "m.h5"
    io.save_statismo(example_model, p)
    blob = p.read_bytes()
    (tmp_path / "trunc.h5").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="trunc.h5"):
        io.load_statismo(tmp_path / "trunc.h5")
    (tmp_path / "junk.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        io.load_statismo(tmp_path / "junk.h5")
    with h5py.File(p, "a") as f:
        del f["model/pcaVariance"]
        f["model/pcaVariance"] = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="pcaVariance has 3 values"):
        io.load_statismo(p)
    io.save_statismo(example_model, p)
    with h5py.File(p, "a") as f:
        del f["model/mean"]
    with pytest.raises(ValueError, match="missing dataset /model/mean"):
        io.load_statismo(p)
    io.save_statismo(example_model, p)
    with h5py.File(p, "a") as f:
        del f["representer/points"]
        f["representer/points"] = np.zeros((4, 10), np.float32)
    with pytest.raises(ValueError, match="3 x N"):
        io.load_statismo(p)


def test_point_set_statismo_roundtrip(tmp_path, example_shapes):
    model = bs.build_pca_model([m.vertices[::40] for m in example_shapes], align=None)
    io.save_statismo(model, tmp_path / "ps.h5")
    back = io.load_statismo(tmp_path / "ps.h5")
    assert back.faces is None and back.n_vertices == model.n_vertices


@pytest.mark.parametrize("suffix", [".ply", ".stl", ".obj", ".off", ".vtk"])
def test_mesh_roundtrip(tmp_path, suffix, example_shapes):
    m = example_shapes[0]
    io.write_mesh(tmp_path / f"x{suffix}", m)
    back = io.read_mesh(tmp_path / f"x{suffix}")
    if suffix == ".stl":  # STL stores triangle soups: compare the surfaces
        np.testing.assert_allclose(back.volume, m.volume, rtol=1e-5)
        return
    np.testing.assert_allclose(back.vertices, m.vertices, atol=1e-4)
    np.testing.assert_array_equal(back.faces, m.faces)


@pytest.mark.parametrize("binary", [True, False])
def test_vtk_point_data_roundtrip(tmp_path, binary, example_shapes):
    m = example_shapes[1]
    n = len(m.vertices)
    data = {"std": np.linspace(0, 1, n), "flag": (np.arange(n) % 2).astype(np.int32), "vec": np.ones((n, 3))}
    io.write_vtk_polydata(tmp_path / "c.vtk", m.vertices, m.faces, data, binary=binary)
    pts, faces, pd = io.read_vtk_polydata(tmp_path / "c.vtk")
    np.testing.assert_allclose(pts, m.vertices, rtol=1e-12 if binary else 1e-8)
    np.testing.assert_array_equal(faces, m.faces)
    np.testing.assert_allclose(pd["std"], data["std"], rtol=1e-6)
    np.testing.assert_array_equal(pd["flag"], data["flag"])
    np.testing.assert_allclose(pd["vec"], data["vec"])


def test_read_real_vtk_polydata():
    path = shared("femur_raw", "VSD001_femur.vtk")
    mesh = io.read_mesh(path)
    assert mesh.vertices.shape == (18934, 3) and len(mesh.faces) > 30000
    assert mesh.is_watertight
    lm = np.loadtxt(shared("femur_raw", "VSD001-lm.csv"), delimiter=",", usecols=(1, 2, 3))
    # the landmarks lie on (or next to) the surface, within 5 mm
    from scipy.spatial import cKDTree

    d = cKDTree(mesh.vertices).query(lm)[0]
    assert np.all(d < 5.0)


def test_vtk_rejects_bad_files(tmp_path):
    (tmp_path / "a.vtk").write_text("# vtk DataFile Version 3.0\nx\nASCII\nDATASET UNSTRUCTURED_GRID\n")
    with pytest.raises(ValueError, match="POLYDATA"):
        io.read_vtk_polydata(tmp_path / "a.vtk")
    (tmp_path / "b.vtk").write_text(
        "# vtk DataFile Version 3.0\nx\nASCII\nDATASET POLYDATA\nPOINTS 3 float\n0 0 0 1 1\n"
    )
    with pytest.raises(ValueError, match="truncated"):
        io.read_vtk_polydata(tmp_path / "b.vtk")
    (tmp_path / "c.vtk").write_text("hello")
    with pytest.raises(ValueError, match="not a legacy VTK file"):
        io.read_vtk_polydata(tmp_path / "c.vtk")


# --- images and masks -------------------------------------------------------------------------


def _asymmetric_mask():
    m = np.zeros((30, 45), dtype=bool)
    m[3:12, 5:40] = True  # a wide bar near the top
    m[12:27, 30:38] = True  # and a leg down on the right: any transpose or flip shows
    return m


@pytest.mark.parametrize("suffix", [".png", ".tif", ".nrrd", ".nii", ".nii.gz", ".npy"])
def test_masks_round_trip(tmp_path, suffix):
    mask = _asymmetric_mask()
    path = tmp_path / f"mask{suffix}"
    io.write_mask(path, mask)
    back = io.read_mask(path)
    assert back.dtype == bool
    np.testing.assert_array_equal(back, mask)
    # and the format's own reader sees the same picture, in its own axis order
    if suffix == ".png":
        from PIL import Image

        np.testing.assert_array_equal(np.asarray(Image.open(path)) > 0, mask)
    elif suffix == ".tif":
        import tifffile

        np.testing.assert_array_equal(tifffile.imread(path) > 0, mask)
    elif suffix == ".nrrd":
        import nrrd

        data, header = nrrd.read(str(path))  # Fortran order: axis 0 is x, the image's columns
        np.testing.assert_array_equal(data.T > 0, mask)
        assert header["space"] == "left-posterior-superior"
    elif suffix.startswith(".nii"):
        import nibabel as nib

        np.testing.assert_array_equal(np.asarray(nib.load(path).dataobj)[:, :, 0].T > 0, mask)


@pytest.mark.parametrize("suffix", [".tif", ".nrrd", ".nii.gz", ".npy"])
def test_float_images_round_trip_exactly(tmp_path, suffix):
    img = np.random.default_rng(0).normal(size=(17, 23))
    for dtype in (np.float32, np.float64):
        io.write_image(tmp_path / f"a{suffix}", img.astype(dtype))
        back = io.read_image(tmp_path / f"a{suffix}")
        assert back.dtype == dtype
        np.testing.assert_array_equal(back, img.astype(dtype))


def test_image_readers_refuse_clearly(tmp_path):
    with pytest.raises(ValueError, match="DICOM file; radiographs are read with bayesshape.io.read_radiograph"):
        io.read_image(tmp_path / "x.dcm")
    with pytest.raises(ValueError, match=r"expected one of \.npy, \.png"):
        io.read_mask(tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="no such file"):
        io.read_mask(tmp_path / "x.png")
    np.save(tmp_path / "vol.npy", np.zeros((4, 5, 3)))
    with pytest.raises(ValueError, match=r"expected a 2D image \(rows, cols\), got shape \(4, 5, 3\)"):
        io.read_mask(tmp_path / "vol.npy")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(ValueError, match=r"bad\.tif: not a"):
        io.read_image(tmp_path / "bad.tif")
    with pytest.raises(ValueError, match="PNG holds 8 or 16 bit integers"):
        io.write_image(tmp_path / "f.png", np.zeros((3, 3)))
