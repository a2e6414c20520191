"""Statismo HDF5 shape-model files (format version 0.9), as Statismo and Scalismo use them.

Layout read and written (``N`` points, ``M`` triangles, ``K`` modes)::

    /version/majorVersion        scalar int32 = 0
    /version/minorVersion        scalar int32 = 9
    /representer                 attrs name, datasetType ("POLYGON_MESH" | "POINT_SET"),
                                       version/majorVersion, version/minorVersion
    /representer/points          float32 (3, N)
    /representer/cells           int32   (3, M)          (meshes only)
    /model/mean                  float32 (3N,)  interleaved x0 y0 z0 x1 ...
    /model/pcaBasis              float32 (3N, K)
    /model/pcaVariance           float32 (K,)
    /model/noiseVariance         float32 (1,)
    /modelinfo/build-time, /modelinfo/scores, /modelinfo/modelBuilder-0/{builderName,buildTime,
                                                                        dataInfo/, parameters/}

The sample formula of a file is ``mean + pcaBasis @ (sqrt(pcaVariance) * alpha)``.
Version 0.9 promises an orthonormal ``pcaBasis``, but real files (Scalismo's among
them) need not have one; :func:`load_statismo` re-orthonormalises with an SVD of
``pcaBasis @ diag(sqrt(pcaVariance))``, which keeps the file's distribution
(mean and covariance) exactly. Version 0.8 files store ``U sqrt(variance)`` as the
basis and are converted. Files are written atomically.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from ..prior.model import ShapeModel
from ._format import refuse_hdf5_json

__all__ = ["load_statismo", "save_statismo"]


def _open(path):
    import h5py

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {e}") from None


def _dataset(f, name, path):
    if name not in f:
        raise ValueError(f"{path}: not a Statismo model file: missing dataset /{name}")
    try:
        return np.asarray(f[name][()])
    except Exception as e:  # h5py raises OSError/KeyError on damaged data
        raise ValueError(f"{path}: dataset /{name} cannot be read (corrupt file?): {e}") from None


def _attr_str(obj, key, default=None):
    if key not in obj.attrs:
        return default
    v = obj.attrs[key]
    v = np.asarray(v).reshape(-1)[0] if np.ndim(v) else v
    return v.decode() if isinstance(v, bytes) else str(v)


def load_statismo(path) -> ShapeModel:
    """Read a Statismo/Scalismo HDF5 shape model (version 0.8 or 0.9).

    Args:
        path: ``.h5`` file.

    Returns:
        A :class:`ShapeModel` with the file's mean and covariance (point-set model
        when the representer is ``POINT_SET``).

    Raises:
        ValueError: missing, truncated or corrupt file; missing datasets; datasets
            of inconsistent shapes.

    Example:
        >>> model = load_statismo("../shared/data/statismo/torus_model.h5")  # doctest: +SKIP
    """
    refuse_hdf5_json(path)
    with _open(path) as f:
        if "representer" not in f:
            raise ValueError(f"{path}: not a Statismo model file: missing group /representer")
        rep = f["representer"]
        dtype = _attr_str(rep, "datasetType", "POLYGON_MESH")
        if dtype not in ("POLYGON_MESH", "POINT_SET"):
            raise ValueError(f"{path}: representer datasetType {dtype!r} is not supported (POLYGON_MESH or POINT_SET)")
        points = _dataset(f, "representer/points", path).astype(np.float64)
        if points.ndim != 2 or points.shape[0] != 3:
            raise ValueError(f"{path}: /representer/points must be 3 x N, got shape {points.shape}")
        n = points.shape[1]
        faces = None
        if dtype == "POLYGON_MESH":
            cells = _dataset(f, "representer/cells", path)
            if cells.ndim != 2 or cells.shape[0] != 3:
                raise ValueError(f"{path}: /representer/cells must be 3 x M triangles, got shape {cells.shape}")
            faces = cells.T
        mean = _dataset(f, "model/mean", path).astype(np.float64).reshape(-1)
        basis = _dataset(f, "model/pcaBasis", path).astype(np.float64)
        var = _dataset(f, "model/pcaVariance", path).astype(np.float64).reshape(-1)
        noise = float(_dataset(f, "model/noiseVariance", path).reshape(-1)[0]) if "model/noiseVariance" in f else 0.0
        major, minor = 0, 9
        if "version/majorVersion" in f:
            major = int(_dataset(f, "version/majorVersion", path).reshape(-1)[0])
            minor = int(_dataset(f, "version/minorVersion", path).reshape(-1)[0])
        elif _attr_str(rep, "name", "") in ("vtkPolyDataRepresenter", "itkMeshRepresenter"):
            major, minor = 0, 8
    if mean.shape != (3 * n,):
        raise ValueError(f"{path}: /model/mean has {mean.size} values, expected 3 x {n} points = {3 * n}")
    if basis.ndim != 2 or basis.shape[0] != 3 * n:
        raise ValueError(f"{path}: /model/pcaBasis must be (3N, K) = ({3 * n}, K), got shape {basis.shape}")
    if var.shape != (basis.shape[1],):
        raise ValueError(f"{path}: /model/pcaVariance has {var.size} values but pcaBasis has {basis.shape[1]} columns")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(basis)) and np.all(np.isfinite(var))):
        raise ValueError(f"{path}: model datasets contain NaN or inf")
    if np.any(var < 0):
        raise ValueError(f"{path}: /model/pcaVariance has negative entries")
    if (major, minor) == (0, 8):
        sd = np.sqrt(var)
        basis = basis / np.where(sd > 1e-8, sd, 1.0)[None, :]
    elif (major, minor) not in ((0, 9), (1, 0)):
        raise ValueError(f"{path}: Statismo format version {major}.{minor} is not supported (0.8, 0.9)")
    w, s, _ = np.linalg.svd(basis * np.sqrt(var)[None, :], full_matrices=False)
    lam = s**2
    keep = lam > 1e-12 * max(lam.max(initial=0.0), 1e-300)
    return ShapeModel(
        mean.reshape(n, 3),
        w[:, keep],
        lam[keep],
        noise_variance=noise,
        faces=faces,
        total_variance=float(lam.sum()),
    )


def save_statismo(model: ShapeModel, path) -> None:
    """Write ``model`` as a Statismo 0.9 HDF5 file (readable by Statismo and Scalismo).

    The basis written is orthonormal; coordinates are stored as float32 as both
    tools expect. Point-set models get a ``POINT_SET`` representer. Atomic write.
    """
    if isinstance(model, ShapeModel) and model.vertex_noise is not None:
        raise ValueError(
            "model: it has per-vertex noise (vertex_noise, e.g. from bs.add_model_error), which the Statismo "
            "format cannot hold (its noise is one isotropic variance); save it with bayesshape.io.save_model, "
            "or write the model without it (add the model error after loading)"
        )
    import h5py

    if not isinstance(model, ShapeModel):
        raise ValueError(f"model: expected a ShapeModel, got {type(model).__name__}")
    mean = np.asarray(model.mean, dtype=np.float64)
    now = time.asctime()
    sdt = h5py.string_dtype(encoding="ascii", length=None)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("version/majorVersion", data=np.int32(0))
            f.create_dataset("version/minorVersion", data=np.int32(9))
            rep = f.create_group("representer")
            mesh = model.faces is not None
            rep.attrs["name"] = np.bytes_("itkStandardMeshRepresenter" if mesh else "itkPointSetRepresenter")
            rep.attrs["datasetType"] = np.bytes_("POLYGON_MESH" if mesh else "POINT_SET")
            rep.attrs["version/majorVersion"] = np.bytes_("0")
            rep.attrs["version/minorVersion"] = np.bytes_("9")
            rep.create_dataset("points", data=mean.T.astype(np.float32))
            if mesh:
                rep.create_dataset("cells", data=np.asarray(model.faces).T.astype(np.int32))
            m = f.create_group("model")
            m.create_dataset("mean", data=mean.reshape(-1).astype(np.float32))
            m.create_dataset("pcaBasis", data=np.asarray(model.basis).astype(np.float32))
            m.create_dataset("pcaVariance", data=np.asarray(model.variance).astype(np.float32))
            m.create_dataset("noiseVariance", data=np.asarray([float(model.noise_variance)], dtype=np.float32))
            info = f.create_group("modelinfo")
            info.create_dataset("build-time", data=np.array([now], dtype=sdt))
            info.create_dataset("scores", data=np.zeros((1, 1), dtype=np.float32))
            b = info.create_group("modelBuilder-0")
            b.create_dataset("builderName", data=np.array(["bayesshape"], dtype=sdt))
            b.create_dataset("buildTime", data=np.array([now], dtype=sdt))
            b.create_group("dataInfo")
            b.create_group("parameters")
