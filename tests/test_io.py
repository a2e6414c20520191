"""Model files (own and Statismo) and mesh files."""

import h5py
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
        assert rep.attrs["name"] == b"itkStandardMeshRepresenter"
        assert f["representer/points"].shape == (3, 11649)
        assert f["representer/cells"].shape == (3, 23294) and f["representer/cells"].dtype == np.int32
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
