"""bayesshape's own model file: a NumPy ``.npz`` archive of plain arrays.

Loaded with ``allow_pickle=False``: a model file holds numbers only and can never
run code. Keys: ``format`` (``"bayesshape.ShapeModel"``), ``format_version`` (1, or 2 with a
model error), ``mean (N,3)``, ``basis (3N,K)``, ``variance (K,)``, ``noise_variance ()``,
``total_variance ()``, ``faces (F,3)`` for mesh models, and for models with a model error
``vertex_noise (N,3,3)`` and ``error_factor (K,m)`` (format version 2; version 1 files, without
them, still load). All float64 (mm, mm^2).

An assembly of several objects (:class:`~bayesshape.prior.Assembly`) is one ``.npz`` too
(:func:`save_assembly`): each object's model arrays under ``object{i}/``, the joints and the
posture prior.
"""

from __future__ import annotations

import json
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path, read_npz
from ..prior.assembly import Assembly, PosturePrior
from ..prior.model import ShapeModel
from ._format import check_format, refuse_hdf5_json

__all__ = ["save_model", "load_model", "save_assembly", "load_assembly"]

_FORMAT = "bayesshape.ShapeModel"
_VERSION = 2
_ASSEMBLY_FORMAT = "bayesshape.Assembly"
_ASSEMBLY_VERSION = 1


def _model_arrays(model: ShapeModel, prefix: str = "") -> dict[str, Any]:
    """The arrays of one model under ``prefix``."""
    arrays: dict[str, Any] = {
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
    return {prefix + k: v for k, v in arrays.items()}


def _model_from_arrays(data, path, prefix: str = "") -> ShapeModel:
    """A :class:`ShapeModel` from the arrays under ``prefix``, checked."""
    where = f"{path}" + (f" (object {prefix.rstrip('/')})" if prefix else "")
    keys = ("mean", "basis", "variance", "noise_variance", "total_variance")
    missing = sorted(k for k in keys if prefix + k not in data)
    if missing:
        raise ValueError(f"{where}: missing arrays {missing}")
    basis = np.asarray(data[prefix + "basis"], dtype=np.float64)
    if basis.ndim == 2 and basis.shape[1] > 0:
        gram = basis.T @ basis
        off = float(np.abs(gram - np.eye(gram.shape[0])).max())
        if off > 1e-4:
            norms = np.sqrt(np.diag(gram))
            raise ValueError(
                f"{where}: the model's basis columns are not orthonormal (column norms {norms.min():.3g} to "
                f"{norms.max():.3g}, largest deviation of B^T B from the identity {off:.3g}); the variances would "
                "not mean what they say. Re-save the model with bayesshape.io.save_model from a ShapeModel"
            )
    try:
        return ShapeModel(
            data[prefix + "mean"],
            basis,
            data[prefix + "variance"],
            data[prefix + "noise_variance"],
            faces=data.get(prefix + "faces"),
            total_variance=data[prefix + "total_variance"],
            vertex_noise=data.get(prefix + "vertex_noise"),
            error_factor=data.get(prefix + "error_factor"),
        )
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _write(path, arrays) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def save_model(model: ShapeModel, path) -> None:
    """Write ``model`` to ``path`` (``.npz``), atomically.

    Example:
        >>> save_model(model, "femur_model.npz")      # doctest: +SKIP
        >>> model = load_model("femur_model.npz")      # doctest: +SKIP
    """
    if not isinstance(model, ShapeModel):
        raise ValueError(f"model: expected a ShapeModel, got {type(model).__name__}")
    version = _VERSION if model.vertex_noise is not None or model.error_factor is not None else 1
    _write(path, {"format": np.array(_FORMAT), "format_version": np.array(version), **_model_arrays(model)})


def load_model(path) -> ShapeModel:
    """Read a model written by :func:`save_model`.

    Raises:
        ValueError: missing, corrupt or foreign file (an assembly file names :func:`load_assembly`),
            or arrays of inconsistent shapes.
    """
    refuse_hdf5_json(path)
    data = read_npz(path, "model")
    if "format" in data and str(data["format"]) == _ASSEMBLY_FORMAT:
        raise ValueError(
            f"{path}: an assembly of several objects, not a single shape model; read it with "
            "bayesshape.io.load_assembly (the command line does so itself)"
        )
    return _model_from_file(data, path)


def _model_from_file(data, path) -> ShapeModel:
    check_format(
        path,
        "model",
        str(data["format"]) if "format" in data else None,
        data["format_version"].item() if "format_version" in data else None,
        _FORMAT,
        (1, _VERSION),
    )
    return _model_from_arrays(data, path)


def save_assembly(assembly: Assembly, path) -> None:
    """Write an :class:`~bayesshape.prior.Assembly` (every object's model, the joints and the posture
    prior) to one ``.npz`` file, atomically.

    Keys: ``format`` (``"bayesshape.Assembly"``), ``format_version`` (1), ``names`` (JSON list),
    ``joints (K-1, 3)``, ``posture_mean (K-1, 6)``, ``posture_covariance (6(K-1), 6(K-1))``, and per
    object ``i`` the arrays of a model file under ``object{i}/``.

    Example:
        >>> save_assembly(spine, "spine.npz"); spine = load_assembly("spine.npz")  # doctest: +SKIP
    """
    if not isinstance(assembly, Assembly):
        raise ValueError(f"assembly: expected a bayesshape.prior.Assembly, got {type(assembly).__name__}")
    arrays: dict[str, Any] = {
        "format": np.array(_ASSEMBLY_FORMAT),
        "format_version": np.array(_ASSEMBLY_VERSION),
        "names": np.array(json.dumps(list(assembly.names))),
        "joints": np.asarray(assembly.joints, np.float64),
        "posture_mean": np.asarray(assembly.posture.mean, np.float64),
        "posture_covariance": np.asarray(assembly.posture.covariance, np.float64),
    }
    for i, m in enumerate(assembly.models):
        arrays.update(_model_arrays(m, f"object{i}/"))
    _write(path, arrays)


def load_assembly(path) -> Assembly:
    """Read an assembly written by :func:`save_assembly`.

    Raises:
        ValueError: missing, corrupt or foreign file (a single model's file names :func:`load_model`),
            or a posture prior that is not positive definite.
    """
    data = read_npz(path, "assembly")
    if "format" in data and str(data["format"]) == _FORMAT:
        raise ValueError(f"{path}: a single shape model, not an assembly; read it with bayesshape.io.load_model")
    return _assembly_from_file(data, path)


def _assembly_from_file(data, path) -> Assembly:
    check_format(
        path,
        "assembly",
        str(data["format"]) if "format" in data else None,
        data["format_version"].item() if "format_version" in data else None,
        _ASSEMBLY_FORMAT,
        (_ASSEMBLY_VERSION,),
    )
    missing = sorted({"names", "joints", "posture_mean", "posture_covariance"} - set(data))
    if missing:
        raise ValueError(f"{path}: missing arrays {missing}")
    try:
        names = json.loads(str(data["names"]))
    except json.JSONDecodeError:
        raise ValueError(f"{path}: corrupt object names") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: the object names must be a JSON list of strings")
    models = tuple(_model_from_arrays(data, path, f"object{i}/") for i in range(len(names)))
    try:
        posture = PosturePrior(
            jnp.asarray(np.asarray(data["posture_mean"], np.float64)),
            jnp.asarray(np.asarray(data["posture_covariance"], np.float64)),
        )
        return Assembly(tuple(names), models, jnp.asarray(np.asarray(data["joints"], np.float64)), posture)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def load_model_file(path) -> ShapeModel | Assembly:
    """A bayesshape ``.npz`` model file of either kind, read once: a :class:`ShapeModel` (written by
    :func:`save_model`) or an :class:`~bayesshape.prior.Assembly` (written by :func:`save_assembly`)."""
    refuse_hdf5_json(path)
    data = read_npz(path, "model")
    if "format" in data and str(data["format"]) == _ASSEMBLY_FORMAT:
        return _assembly_from_file(data, path)
    return _model_from_file(data, path)
