"""A case folder's inputs file (``inputs.npz``): the images given per view, their kinds, the observed
points and the attenuation scale, so that a report can draw the fit on the inputs. No pickles; a
format tag and version checked on reading."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._atomic import atomic_path, read_npz
from ._format import check_format

__all__ = ["save_inputs", "load_inputs"]

INPUTS_FORMAT = "bayesshape-case-inputs"
INPUTS_VERSION = 1


def save_inputs(path, images, kinds, points=None, mu: float = 0.05) -> None:
    """Store the input images (one ``(H, W)`` per view), their kinds (``"contour"``,
    ``"drr"``, ``"mask"``, ``"landmarks"``) and optional observed points per view (atomic)."""
    arrays: dict[str, Any] = {
        "format": np.array(INPUTS_FORMAT),
        "version": np.array(INPUTS_VERSION),
        "kinds": np.array([str(k) for k in kinds]),
        "mu": np.array(float(mu)),
    }
    for i, img in enumerate(images):
        arrays[f"image_{i}"] = np.asarray(img, dtype=np.float32)
    for i, p in enumerate(points or []):
        if p is not None:
            arrays[f"points_{i}"] = np.asarray(p, dtype=np.float64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


def load_inputs(path):
    """Read :func:`save_inputs`' file: ``(images, kinds, points, mu)``."""
    data = read_npz(path, "case inputs")
    check_format(
        path,
        "case inputs",
        str(data["format"]) if "format" in data else None,
        data["version"].item() if "version" in data else None,
        INPUTS_FORMAT,
        (INPUTS_VERSION,),
        version_required=False,
    )
    if "kinds" not in data:
        raise ValueError(f"{path}: not a bayesshape case inputs file (no 'kinds')")
    kinds = [str(k) for k in data["kinds"]]
    missing = [f"image_{i}" for i in range(len(kinds)) if f"image_{i}" not in data]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    images = [data[f"image_{i}"] for i in range(len(kinds))]
    points = [data.get(f"points_{i}") for i in range(len(kinds))]
    return images, kinds, points, float(data.get("mu", 0.05))
