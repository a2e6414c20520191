"""Statismo HDF5 shape-model files (format version 0.9), as Statismo and Scalismo use them.

Layout read and written (``N`` points, ``M`` triangles, ``K`` modes)::

    /version/majorVersion        scalar int32 = 0
    /version/minorVersion        scalar int32 = 9
    /representer                 attrs name, datasetType ("POLYGON_MESH" | "POINT_SET"), version ("1.0")
    /representer/points          float32 (3, N)
    /representer/cells           uint32  (3, M)          (meshes only)
    /representer/pointData, /representer/cellData        (empty groups)
    /model/mean                  float32 (3N,)  interleaved x0 y0 z0 x1 ...
    /model/pcaBasis              float32 (3N, K)
    /model/pcaVariance           float32 (K,)
    /model/noiseVariance         float32 scalar
    /modelinfo/build-time, /modelinfo/scores, /modelinfo/modelBuilder-0/{builderName,buildTime,
                                                                        dataInfo/, parameters/}

Strings are scalar fixed-length ASCII, as Statismo's C++ writer stores them. The whole layout
may sit inside a group instead of at the file's root: scalismo-faces morphable models keep the
shape model under ``/shape`` (and a colour model under ``/color``); pass ``group="shape"``.

The sample formula of a file is ``mean + pcaBasis @ (sqrt(pcaVariance) * alpha)``.
Version 0.9 promises an orthonormal ``pcaBasis``, and when the file's basis is orthonormal (to
float32 precision) it is kept as it is, so that stored coefficients keep their meaning. Real files
need not have one; then :func:`load_statismo` re-orthonormalises with an SVD of
``pcaBasis @ diag(sqrt(pcaVariance))``, which keeps the file's distribution (mean and covariance)
exactly, and turns each new mode to the sign of the file's mode it is closest to. Version 0.8
files store ``U sqrt(variance)`` as the basis and are converted. Files are written atomically.
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


def _groups_with_model(f) -> list[str]:
    found: list[str] = []

    def visit(name, obj):
        if name.endswith("representer") and name.count("/") >= 1:
            found.append(name.rsplit("/", 1)[0])

    f.visititems(visit)
    return sorted(set(found), key=lambda g: (g != "shape", g))  # a morphable model's shape part first


def load_statismo(path, *, group: str | None = None) -> ShapeModel:
    """Read a Statismo/Scalismo HDF5 shape model (version 0.8 or 0.9).

    Args:
        path: ``.h5`` file.
        group: the HDF5 group that holds the model, for files where it is nested (``"shape"``
            in scalismo-faces morphable models); ``None`` for a model at the file's root.

    Returns:
        A :class:`ShapeModel` with the file's mean and covariance (point-set model
        when the representer is ``POINT_SET``).

    Raises:
        ValueError: missing, truncated or corrupt file; missing datasets; datasets
            of inconsistent shapes.

    Example:
        >>> model = load_statismo("../shared/data/statismo/torus_model.h5")  # doctest: +SKIP
        >>> face = load_statismo("random-l4.h5", group="shape")  # doctest: +SKIP
    """
    refuse_hdf5_json(path)
    with _open(path) as root:
        f = root
        if group is not None:
            name = str(group).strip("/")
            if name not in root or not hasattr(root[name], "keys"):
                raise ValueError(
                    f"{path}: no group /{name} in the file; groups that hold a model: "
                    f"{['/' + g for g in _groups_with_model(root)] or 'none'}"
                )
            f = root[name]
        if "representer" not in f:
            nested = _groups_with_model(root)
            hint = (
                f"; the file has a model in {', '.join('/' + g for g in nested)}: "
                f"pass group={nested[0]!r} (CLI: --group {nested[0]})"
                if nested
                else ""
            )
            where = "" if group is None else f"/{str(group).strip('/')}"
            raise ValueError(f"{path}: not a Statismo model file: missing group {where}/representer{hint}")
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
    basis, var = _orthonormal(basis, var)
    return ShapeModel(
        mean.reshape(n, 3),
        basis,
        var,
        noise_variance=noise,
        faces=faces,
        total_variance=float(var.sum()),
    )


def _orthonormal(basis: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An orthonormal basis and variances with the distribution of ``(basis, var)``.

    A basis that is orthonormal to float32 precision, with non-increasing variances, is kept
    (made exactly orthonormal by the nearest such matrix): an SVD would turn modes around (it fixes
    no sign), and coefficients
    stored for a patient would then give another shape. Otherwise an SVD of ``basis sqrt(var)``,
    each new mode turned to the sign of the file's mode it overlaps most.
    """
    k = basis.shape[1]
    if k == 0:
        return basis, var
    gram = basis.T @ basis
    if np.abs(gram - np.eye(k)).max() < 1e-4 and np.all(np.diff(var) <= 1e-6 * max(var.max(), 1e-300)):
        # orthonormal up to float32 rounding: the nearest exactly orthonormal basis, B (B^T B)^(-1/2),
        # moves each mode by ~1e-7 and keeps its order and sign
        e, v = np.linalg.eigh(gram)
        return basis @ (v / np.sqrt(e)[None, :]) @ v.T, var
    w, s, _ = np.linalg.svd(basis * np.sqrt(var)[None, :], full_matrices=False)
    lam = s**2
    keep = lam > 1e-12 * max(lam.max(initial=0.0), 1e-300)
    w, lam = w[:, keep], lam[keep]
    overlap = w.T @ basis  # (k_new, k_file)
    best = overlap[np.arange(w.shape[1]), np.argmax(np.abs(overlap), axis=1)]
    w = w * np.where(best < 0, -1.0, 1.0)[None, :]
    return w, lam


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
    text = lambda v: np.bytes_(v.encode("ascii"))  # noqa: E731  (scalar fixed-length, as Statismo writes)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("version/majorVersion", data=np.int32(0))
            f.create_dataset("version/minorVersion", data=np.int32(9))
            rep = f.create_group("representer")
            mesh = model.faces is not None
            rep.attrs["name"] = text("vtkStandardMeshRepresenter" if mesh else "itkPointSetRepresenter")
            rep.attrs["datasetType"] = text("POLYGON_MESH" if mesh else "POINT_SET")
            rep.attrs["version"] = text("1.0")
            rep.create_dataset("points", data=mean.T.astype(np.float32))
            if mesh:
                rep.create_dataset("cells", data=np.asarray(model.faces).T.astype(np.uint32))
            rep.create_group("pointData")
            rep.create_group("cellData")
            m = f.create_group("model")
            m.create_dataset("mean", data=mean.reshape(-1).astype(np.float32))
            m.create_dataset("pcaBasis", data=np.asarray(model.basis).astype(np.float32))
            m.create_dataset("pcaVariance", data=np.asarray(model.variance).astype(np.float32))
            m.create_dataset("noiseVariance", data=np.float32(model.noise_variance))
            info = f.create_group("modelinfo")
            info.create_dataset("build-time", data=text(now))
            info.create_dataset("scores", data=np.zeros((model.n_modes, 1), dtype=np.float32))
            b = info.create_group("modelBuilder-0")
            b.create_dataset("builderName", data=text("bayesshape"))
            b.create_dataset("buildTime", data=text(now))
            b.create_group("dataInfo")
            b.create_group("parameters")
