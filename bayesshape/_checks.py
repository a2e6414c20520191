"""Eager (Python-level) validation of user input.

Structure checks (ranks, sizes, finiteness, index ranges) happen here, before
anything is traced, and raise ``ValueError`` naming the argument, what was
received and what was expected.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = [
    "as_points",
    "as_faces",
    "as_positive",
    "is_concrete",
]


def is_concrete(x) -> bool:
    """True when ``x`` holds values (not a JAX tracer)."""
    import jax.core

    return not isinstance(x, jax.core.Tracer)


def as_points(x, name: str = "points", *, n: int | None = None, dim: int = 3) -> np.ndarray:
    """Return ``x`` as a finite float64 array of shape ``(n, dim)``.

    Raises:
        ValueError: wrong rank, wrong size, or non-finite values.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name}: expected an array of shape (n, {dim}), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} points, got {arr.shape[0]}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one point, got none")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.unique(np.nonzero(bad)[0])
        raise ValueError(f"{name}: {rows.size} point(s) have NaN or inf coordinates (first at index {rows[0]})")
    return arr


def as_faces(faces, n_vertices: int, name: str = "faces") -> np.ndarray:
    """Return ``faces`` as an int32 array ``(F, 3)`` of valid vertex indices.

    Raises:
        ValueError: not triangles, non-integer, negative or out-of-range indices.
    """
    arr = np.asarray(faces)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name}: expected triangles, an integer array of shape (n_faces, 3), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one triangle, got none")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: expected integer vertex indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi >= n_vertices:
        raise ValueError(
            f"{name}: vertex index out of range: indices span [{lo}, {hi}] but there are "
            f"{n_vertices} vertices (valid: 0..{n_vertices - 1})"
        )
    return arr.astype(np.int32)


def as_positive(x, name: str) -> float:
    """Return ``x`` as a positive finite float or raise ``ValueError``."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a positive number, got {x!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name}: expected a positive finite number, got {v}")
    return v


def as_count(x, name: str, minimum: int) -> int:
    """Return ``x`` as an integer ``>= minimum`` or raise ``ValueError``."""
    try:
        ok = int(x) == x and x >= minimum
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {x!r}")
    return int(x)


_STEM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,99}")


def as_file_stem(name, what: str) -> str:
    """``name`` if it can be used as part of a file name inside an output folder: letters, digits
    and ``_ . + -`` (not first), at most 100 characters, no path separators and no ``..``;
    ``ValueError`` naming ``what`` otherwise (a name from a user's file must never reach outside
    the folder it is written to)."""
    s = str(name)
    if not _STEM.fullmatch(s) or ".." in s:
        raise ValueError(
            f"{what}: {s!r} cannot be used in a file name; use letters, digits and _ . + - only "
            "(no path separators, no '..', at most 100 characters)"
        )
    return s


def as_seed(seed, what: str = "seed") -> int:
    """A seed as a non-negative integer below 2**63, or ``ValueError`` naming ``what``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise ValueError(f"{what}: expected a non-negative integer below 2**63, got {seed!r}")
    return int(seed)
