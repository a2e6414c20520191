"""File helpers of the command line: models, images, masks, contours (no pickles)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .._atomic import atomic_path


def read_model(path, group: str | None = None):
    """A shape model from ``.npz`` (bayesshape) or ``.h5`` (Statismo; ``group`` for a nested one), or
    an assembly of several objects (``.npz`` written by :func:`bayesshape.io.save_assembly`)."""
    from ..io import load_statismo
    from ..io.native import load_model_file

    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        return load_statismo(path, group=group)
    if group is not None:
        raise ValueError(f"--group {group}: only Statismo .h5 models have groups, got {path}")
    if path.suffix.lower() == ".npz":
        return load_model_file(path)
    raise ValueError(f"{path}: model files are .npz (bayesshape) or .h5 (Statismo), got {path.suffix!r}")


def write_model(model, path):
    from ..io import save_model, save_statismo

    path = Path(path)
    if path.suffix.lower() in (".h5", ".hdf5"):
        save_statismo(model, path)
    elif path.suffix.lower() == ".npz":
        save_model(model, path)
    else:
        raise ValueError(f"{path}: model files are .npz (bayesshape) or .h5 (Statismo), got {path.suffix!r}")


def read_points_csv(path) -> np.ndarray:
    """Contour points ``(M, 2)`` ``(row, col)`` pixels from a CSV with a ``row,col`` header."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"contour {path}: no such file")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0][:2]] != ["row", "col"]:
        raise ValueError(f"contour {path}: expected a CSV with the header 'row,col'")
    try:
        pts = np.array([[float(r[0]), float(r[1])] for r in rows[1:] if r], dtype=np.float64)
    except (ValueError, IndexError):
        raise ValueError(f"contour {path}: every line must hold two numbers 'row,col' (pixels)") from None
    if pts.shape[0] < 3:
        raise ValueError(f"contour {path}: expected at least 3 points, got {pts.shape[0]}")
    return pts


def read_named_pixels(path) -> tuple[list[str], np.ndarray]:
    """2D landmarks on an X-ray: a CSV ``name,row,col`` (pixels; a header line is allowed)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"landmarks {path}: no such file")
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r) and not r[0].startswith("#")]
    if rows and [c.strip() for c in rows[0][:3]] == ["name", "row", "col"]:
        rows = rows[1:]
    names, pts = [], []
    for i, r in enumerate(rows):
        try:
            names.append(r[0].strip())
            pts.append([float(r[1]), float(r[2])])
        except (ValueError, IndexError):
            raise ValueError(f"landmarks {path}: row {i + 1} is not 'name,row,col' (pixels): {','.join(r)!r}") from None
    if not names:
        raise ValueError(f"landmarks {path}: no rows; expected 'name,row,col' per line (pixels)")
    return names, np.asarray(pts, dtype=np.float64)


def write_points_csv(path, points) -> None:
    lines = ["row,col"] + [f"{r:.4f},{c:.4f}" for r, c in np.asarray(points)]
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n")


def write_npy(path, arr) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(arr), allow_pickle=False)


def noise_sd_estimate(image) -> float:
    """Robust pixel-noise sd of an image: MAD of horizontal neighbour differences / sqrt(2)."""
    d = np.diff(np.asarray(image, dtype=np.float64), axis=1).ravel()
    return float(np.median(np.abs(d - np.median(d))) / 0.6745 / np.sqrt(2.0))


def check_output_folder(path, flag: str = "--out") -> Path:
    """Refuse an output folder that cannot be written, before any work: a path that is a file, or
    one whose nearest existing folder is not writable."""
    import os

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} {path}: exists and is not a folder")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"{flag} {path}: {probe} is a file, so the folder cannot be made")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path}: {probe} is not writable")
    return path
