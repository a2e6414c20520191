"""bayesshape's own model file: a NumPy ``.npz`` archive of plain arrays.

Loaded with ``allow_pickle=False``: a model file holds numbers only and can never
run code. Keys: ``format`` (``"bayesshape.ShapeModel"``), ``format_version`` (1),
``mean (N,3)``, ``basis (3N,K)``, ``variance (K,)``, ``noise_variance ()``,
``total_variance ()``, and ``faces (F,3)`` for mesh models. All float64 (mm, mm^2).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path
from ..prior.model import ShapeModel
from ._format import check_format

__all__ = ["save_model", "load_model"]

_FORMAT = "bayesshape.ShapeModel"
_VERSION = 1


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
        "format_version": np.array(_VERSION),
        "mean": np.asarray(model.mean, np.float64),
        "basis": np.asarray(model.basis, np.float64),
        "variance": np.asarray(model.variance, np.float64),
        "noise_variance": np.asarray(model.noise_variance, np.float64),
        "total_variance": np.asarray(model.total_variance, np.float64),
    }
    if model.faces is not None:
        arrays["faces"] = np.asarray(model.faces, np.int32)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_model(path) -> ShapeModel:
    """Read a model written by :func:`save_model`.

    Raises:
        ValueError: missing, corrupt or foreign file, or arrays of inconsistent shapes.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    try:
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a bayesshape model file (corrupt or truncated?): {e}") from None
    except ValueError as e:  # object arrays refuse to load without pickle
        raise ValueError(f"{path}: refused to load: {e}") from None
    check_format(
        path,
        "model",
        str(data["format"]) if "format" in data else None,
        data["format_version"].item() if "format_version" in data else None,
        _FORMAT,
        (_VERSION,),
    )
    missing = {"mean", "basis", "variance", "noise_variance", "total_variance"} - set(data)
    if missing:
        raise ValueError(f"{path}: missing arrays {sorted(missing)}")
    try:
        return ShapeModel(
            data["mean"],
            data["basis"],
            data["variance"],
            data["noise_variance"],
            faces=data.get("faces"),
            total_variance=data["total_variance"],
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
