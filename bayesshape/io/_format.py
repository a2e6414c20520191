"""The one format-and-version check of bayesshape's own files (models, posteriors, views)."""

from __future__ import annotations

__all__ = ["check_format", "refuse_hdf5_json"]

HDF5_JSON_MESSAGE = (
    "a Scalismo model in HDF5-JSON (.h5.json), which bayesshape does not read; convert it to HDF5 with "
    "the h5json package (`jsontoh5 model.h5.json model.h5`) and load the .h5 with bayesshape.io.load_statismo"
)


def refuse_hdf5_json(path) -> None:
    """Raise ``ValueError`` for a Scalismo ``.h5.json`` model, saying what to do instead."""
    if str(path).lower().endswith(".h5.json"):
        raise ValueError(f"{path}: {HDF5_JSON_MESSAGE}")


def check_format(
    path,
    what: str,
    found_format,
    found_version,
    expected_format: str,
    supported: tuple[int, ...],
    *,
    version_required: bool = True,
) -> int:
    """Raise ``ValueError`` naming the file unless it carries ``expected_format`` at a supported
    version; return the version (the newest supported one when the file has none and
    ``version_required`` is False)."""
    if found_format is not None and str(found_format) != expected_format:
        raise ValueError(
            f"{path}: not a bayesshape {what} file (format tag {str(found_format)!r}, expected {expected_format!r})"
        )
    if found_format is None and version_required:
        raise ValueError(f"{path}: not a bayesshape {what} file (no format tag; expected {expected_format!r})")
    if found_version is None:
        if version_required:
            raise ValueError(f"{path}: the {what} file has no format version")
        return max(supported)
    try:
        v = int(found_version)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: the {what} file's format version {found_version!r} is not a number") from None
    if v not in supported:
        raise ValueError(
            f"{path}: {what} format version {v} is not supported by this bayesshape "
            f"(supported: {', '.join(map(str, supported))})"
        )
    return v
