"""bayesshape's own model file: a NumPy ``.npz`` archive of plain arrays.

Loaded with ``allow_pickle=False``: a model file holds numbers only and can never
run code. Keys: ``format`` (``"bayesshape.ShapeModel"``), ``format_version`` (1, or 2 with a
model error), ``mean (N,3)``, ``basis (3N,K)``, ``variance (K,)``, ``noise_variance ()``,
``total_variance ()``, ``faces (F,3)`` for mesh models, and for models with a model error
``vertex_noise (N,3,3)`` and ``error_factor (K,m)`` (format version 2; version 1 files, without
them, still load). All float64 (mm, mm^2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._atomic import atomic_path, read_npz
from ..prior.model import ShapeModel
from ._format import check_format, refuse_hdf5_json

__all__ = ["save_model", "load_model"]

_FORMAT = "bayesshape.ShapeModel"
_VERSION = 2


def save_model(model: ShapeModel, path) -> None:
    """Write ``model`` to ``path`` (``.npz``), atomically.

    Example:
        >>> save_model(model, "femur_model.npz")      # doctest: +SKIP
        >>> model = load_model("femur_model.npz")      # doctest: +SKIP
    """
    if not isinstance(model, ShapeModel):
        raise ValueError(f"model: expected a ShapeModel, got {type(model).__name__}")
    arrays: dict[str, Any] = {
        "format": np.array(_FORMAT),
        "format_version": np.array(_VERSION if model.vertex_noise is not None or model.error_factor is not None else 1),
        "mean": np.asarray(model.mean, np.float64),
        "basis": np.asarray(model.basis, np.float64),
        "variance": np.asarray(model.variance, np.float64),
        "noise_variance": np.asarray(model.noise_variance, np.float64),
        "total_variance": np.asarray(model.total_variance, np.float64),
    }
    if model.faces is not None:
        arrays["faces"] = np.asarray(model.faces, np.int32)
    if model.vertex_noise is not None:
        arrays["vertex_noise"] = np.asarray(model.vertex_noise, np.float64)
    if model.error_factor is not None:
        arrays["error_factor"] = np.asarray(model.error_factor, np.float64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_model(path) -> ShapeModel:
    """Read a model written by :func:`save_model`.

    Raises:
        ValueError: missing, corrupt or foreign file, or arrays of inconsistent shapes.
    """
    refuse_hdf5_json(path)
    data = read_npz(path, "model")
    check_format(
        path,
        "model",
        str(data["format"]) if "format" in data else None,
        data["format_version"].item() if "format_version" in data else None,
        _FORMAT,
        (1, _VERSION),
    )
    missing = {"mean", "basis", "variance", "noise_variance", "total_variance"} - set(data)
    if missing:
        raise ValueError(f"{path}: missing arrays {sorted(missing)}")
    basis = np.asarray(data["basis"], dtype=np.float64)
    if basis.ndim == 2 and basis.shape[1] > 0:
        gram = basis.T @ basis
        off = float(np.abs(gram - np.eye(gram.shape[0])).max())
        if off > 1e-4:
            norms = np.sqrt(np.diag(gram))
            raise ValueError(
                f"{path}: the model's basis columns are not orthonormal (column norms {norms.min():.3g} to "
                f"{norms.max():.3g}, largest deviation of B^T B from the identity {off:.3g}); the variances would "
                "not mean what they say. Re-save the model with bayesshape.io.save_model from a ShapeModel"
            )
    try:
        return ShapeModel(
            data["mean"],
            data["basis"],
            data["variance"],
            data["noise_variance"],
            faces=data.get("faces"),
            total_variance=data["total_variance"],
            vertex_noise=data.get("vertex_noise"),
            error_factor=data.get("error_factor"),
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
