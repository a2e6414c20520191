"""The posterior file (``.npz``): vertex samples, faces, diagnostics and misfit, and for a posterior
from :func:`bayesshape.infer` its parameter samples and sampler statistics (ArviZ's groups); no pickles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, json_default, read_npz
from ..inference.diagnostics import Diagnostics
from ..posterior.samples import ShapeSamples
from ._format import check_format

__all__ = ["save_posterior", "load_posterior", "POSTERIOR_FORMAT", "POSTERIOR_VERSION"]

POSTERIOR_FORMAT = "bayesshape-posterior"
POSTERIOR_VERSION = 1
_ARVIZ_GROUPS = ("posterior", "sample_stats", "log_likelihood", "observed_data")


def save_posterior(
    posterior: ShapeSamples,
    path,
    *,
    max_samples: int = 1000,
    seed: int = 0,
    log_likelihood: str | None = None,
) -> None:
    """Write a posterior's vertex samples, faces, diagnostics and misfit to ``.npz`` (atomic).

    At most ``max_samples`` vertex samples are kept (drawn without replacement with ``seed``),
    as float32 (about 12 bytes per vertex and sample). A :class:`~bayesshape.Posterior` also keeps
    every parameter sample and its sampler statistics (the groups of
    :meth:`~bayesshape.Posterior.to_arviz`), so that the loaded samples convert to ArviZ too;
    ``log_likelihood="pointwise"`` or ``"observation"`` adds the log-likelihood group (one more
    likelihood evaluation per draw; what ``az.loo`` needs). Everything else is stored as JSON
    text inside the file, so :func:`load_posterior` never needs pickles.

    Example:
        >>> save_posterior(post, "out/posterior.npz"); s = load_posterior("out/posterior.npz")  # doctest: +SKIP
    """
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: posterior files are .npz")
    x = np.asarray(posterior.vertex_samples())
    if x.shape[0] > max_samples:
        idx = np.sort(np.random.default_rng(seed).choice(x.shape[0], max_samples, replace=False))
        x = x[idx]
    diag = None if posterior.diagnostics is None else posterior.diagnostics.to_dict()
    meta = {
        "format": POSTERIOR_FORMAT,
        "version": POSTERIOR_VERSION,
        "method": posterior.method,
        "diagnostics": diag,
        "misfit": posterior.predictive_misfit(),
    }
    arrays: dict[str, Any] = {
        "vertices": x.astype(np.float32),
        "meta": np.array(json.dumps(meta, default=json_default)),
    }
    if posterior.faces is not None:
        arrays["faces"] = np.asarray(posterior.faces, dtype=np.int64)
    groups = posterior.arviz_groups(log_likelihood) if hasattr(posterior, "arviz_groups") else None
    if groups is None and posterior.inference_groups:
        groups = posterior.inference_groups
    if groups:
        stored: dict[str, list[str]] = {}
        for group in _ARVIZ_GROUPS:
            for name, arr in (groups.get(group) or {}).items():
                arrays[f"arviz/{group}/{name}"] = np.asarray(arr)
                stored.setdefault(group, []).append(name)
        meta["arviz"] = {"dims": groups.get("dims", {}), "coords": groups.get("coords", {}), "groups": stored}
        arrays["meta"] = np.array(json.dumps(meta, default=json_default))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def load_posterior(path) -> ShapeSamples:
    """Read a file written by :func:`save_posterior` (no pickles) as :class:`ShapeSamples`."""
    path = Path(path)
    data = read_npz(path, "posterior")
    if "meta" not in data or "vertices" not in data:
        raise ValueError(f"{path}: not a bayesshape posterior file (needs 'vertices' and 'meta')")
    try:
        meta = json.loads(str(data["meta"]))
    except json.JSONDecodeError:
        raise ValueError(f"{path}: corrupt metadata") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: corrupt metadata (expected a JSON object)")
    check_format(path, "posterior", meta.get("format"), meta.get("version"), POSTERIOR_FORMAT, (POSTERIOR_VERSION,))
    x = data["vertices"]
    if x.ndim != 3 or x.shape[-1] != 3 or x.shape[0] < 2 or x.dtype.kind not in "fiu":
        raise ValueError(
            f"{path}: the vertex samples have shape {x.shape} and dtype {x.dtype}; a posterior file holds "
            "(n_samples >= 2, n_vertices, 3) numbers"
        )
    x = x.astype(np.float64)
    faces = data.get("faces")
    if faces is not None and (faces.ndim != 2 or faces.shape[1] != 3 or faces.min() < 0 or faces.max() >= x.shape[1]):
        raise ValueError(f"{path}: faces do not match the {x.shape[1]} vertices")
    d = meta.get("diagnostics")
    diag = None if not d else Diagnostics.from_dict(d)
    out = ShapeSamples(x, faces, method=meta.get("method", "samples"), diagnostics=diag, misfit=meta.get("misfit"))
    az_meta = meta.get("arviz")
    if isinstance(az_meta, dict):
        groups: dict[str, Any] = {"dims": az_meta.get("dims", {}), "coords": az_meta.get("coords", {})}
        for group, names in (az_meta.get("groups") or {}).items():
            if group not in _ARVIZ_GROUPS:
                raise ValueError(f"{path}: unknown ArviZ group {group!r} in the metadata")
            try:
                groups[group] = {name: data[f"arviz/{group}/{name}"] for name in names}
            except KeyError as e:
                raise ValueError(f"{path}: the metadata names an array the file lacks ({e})") from None
        out.inference_groups = groups
    return out
