"""View-geometry files (JSON or YAML): the calibrated views of an X-ray study.

A file holds a list of views under ``views``; each is either explicit geometry
(what :func:`write_views` writes, exact) or a preset built by the constructors::

    {"format": "bayesshape-views", "version": 1, "units": "mm",
     "views": [
       {"name": "AP", "projection": "cone", "detector_shape": [256, 256],
        "source": [0, -1000, 0], "origin": [-200, 300, 200], "u": [1, 0, 0], "v": [0, 0, -1],
        "spacing": [1.5, 1.5]},
       {"name": "LAT", "preset": "carm", "lao": 90, "source_to_isocenter": 800,
        "source_to_detector": 1200, "detector_shape": [256, 256], "pixel_spacing": 1.5}
     ]}

Presets: ``"cone_beam"`` (arguments of :meth:`XRayView.cone_beam`), ``"parallel"``
(:meth:`XRayView.parallel`), ``"carm"`` (:func:`carm_view`). A whole file may instead be
``{"preset": "biplanar", ...}`` with the arguments of :func:`biplanar`. Units: mm
(``"units": "m"`` is refused, not converted). ``.yaml``/``.yml`` files need PyYAML.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path
from .._checks import as_file_stem
from ..projection.views import XRayView, _shape, biplanar, carm_view
from ._format import check_format

__all__ = ["read_views", "write_views", "view_to_dict", "view_from_dict"]

FORMAT = "bayesshape-views"
VERSION = 1


def view_to_dict(view: XRayView, name: str | None = None) -> dict[str, Any]:
    """Explicit geometry of a view (mm), JSON-ready."""
    d: dict[str, Any] = {
        "projection": "parallel" if view.is_parallel else "cone",
        "detector_shape": [int(x) for x in view.detector_shape],
    }
    if name is not None:
        d = {"name": name, **d}
    for key in ("source", "origin", "u", "v", "direction", "spacing"):
        d[key] = [float(x) for x in np.asarray(getattr(view, key), dtype=np.float64)]
    return d


def _vec(d: dict, key: str, n: int, where: str) -> np.ndarray:
    if key not in d:
        raise ValueError(f"{where}: missing {key!r}")
    try:
        a = np.asarray(d[key], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"{where}.{key}: expected {n} numbers, got {d[key]!r}") from None
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise ValueError(f"{where}.{key}: expected {n} finite numbers, got {d[key]!r}")
    return a


_EXPLICIT_KEYS = {"projection", "detector_shape", "source", "origin", "u", "v", "direction", "spacing"}
_PRESET_KEYS = {
    "cone_beam": {
        "source_to_detector",
        "source_to_isocenter",
        "detector_shape",
        "pixel_spacing",
        "isocenter",
        "direction",
        "up",
        "principal_point",
    },
    "parallel": {"direction", "up", "detector_shape", "pixel_spacing", "center"},
    "carm": set(inspect.signature(carm_view).parameters),
}


def view_from_dict(d: dict, where: str = "view") -> XRayView:
    """A view from explicit geometry or a preset (see the module docstring)."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(d).__name__}")
    kw = {k: v for k, v in d.items() if k not in ("name", "preset")}
    preset = d.get("preset")
    allowed = _PRESET_KEYS.get(preset, _EXPLICIT_KEYS) if preset is not None else _EXPLICIT_KEYS
    unknown = sorted(set(kw) - allowed) if preset in _PRESET_KEYS or preset is None else []
    if unknown:
        raise ValueError(
            f"{where}: unknown setting(s) {', '.join(map(repr, unknown))}"
            + (f" for preset {preset!r}" if preset else "")
            + f"; expected some of {', '.join(sorted(allowed))}"
        )
    try:
        if preset == "cone_beam":
            return XRayView.cone_beam(**kw)
        if preset == "parallel":
            return XRayView.parallel(**kw)
        if preset == "carm":
            return carm_view(**kw)
    except TypeError as e:
        raise ValueError(f"{where}: bad arguments for preset {preset!r}: {e}") from None
    if preset is not None:
        raise ValueError(f"{where}.preset: expected 'cone_beam', 'parallel' or 'carm', got {preset!r}")
    proj = d.get("projection")
    if proj not in ("cone", "parallel"):
        raise ValueError(f"{where}.projection: expected 'cone' or 'parallel', got {proj!r}")
    try:
        h, w = _shape(d.get("detector_shape", ()))
    except ValueError as e:
        raise ValueError(f"{where}.{e}") from None
    source, origin = _vec(d, "source", 3, where), _vec(d, "origin", 3, where)
    u, v, spacing = _vec(d, "u", 3, where), _vec(d, "v", 3, where), _vec(d, "spacing", 2, where)
    if abs(np.linalg.norm(u) - 1) > 1e-6 or abs(np.linalg.norm(v) - 1) > 1e-6 or abs(u @ v) > 1e-6:
        raise ValueError(
            f"{where}: u and v must be orthogonal unit vectors (|u|={np.linalg.norm(u):.6g}, "
            f"|v|={np.linalg.norm(v):.6g}, u.v={u @ v:.3g})"
        )
    if np.any(spacing <= 0):
        raise ValueError(f"{where}.spacing: expected positive mm per pixel, got {spacing}")
    direction = np.cross(u, v)
    if "direction" in d:
        given = _vec(d, "direction", 3, where)
        if np.linalg.norm(given / np.linalg.norm(given) - direction) > 1e-5:
            raise ValueError(f"{where}.direction: {given} is not u x v = {direction}")
    if proj == "cone" and (origin - source) @ direction <= 0:
        raise ValueError(f"{where}: the detector must lie in front of the source along u x v")
    return XRayView._make(source, origin, u, v, direction, spacing, (h, w), proj == "parallel")


def _load(path: Path):
    text = path.read_text()
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ValueError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use JSON") from None
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({e})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def read_views(path) -> tuple[list[XRayView], list[str]]:
    """Read a view-geometry file (``.json``, ``.yaml``, ``.yml``).

    Returns:
        ``(views, names)``; unnamed views are called ``view0``, ``view1``, ...

    Example:
        >>> views, names = read_views("views.json")    # doctest: +SKIP
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such view-geometry file")
    doc = _load(path)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a mapping with 'views' (or a 'preset')")
    check_format(
        path, "view-geometry", doc.get("format"), doc.get("version"), FORMAT, (VERSION,), version_required=False
    )
    units = doc.get("units", "mm")
    if units != "mm":
        raise ValueError(f"{path}: units {units!r}; view geometry must be in mm")
    if doc.get("preset") == "biplanar":
        kw = {k: v for k, v in doc.items() if k not in ("preset", "units", "format", "version")}
        try:
            return list(biplanar(**kw)), ["AP", "LAT"]
        except TypeError as e:
            raise ValueError(f"{path}: bad arguments for preset 'biplanar': {e}") from None
    if "preset" in doc:
        raise ValueError(f"{path}: file preset must be 'biplanar', got {doc['preset']!r}")
    items = doc.get("views")
    if not isinstance(items, list) or not items:
        raise ValueError(f"{path}: expected a non-empty list under 'views'")
    views = [view_from_dict(d, f"{path.name}: views[{i}]") for i, d in enumerate(items)]
    names = [as_file_stem(d.get("name", f"view{i}"), f"{path}: views[{i}].name") for i, d in enumerate(items)]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: view names must be unique, got {names}")
    return views, names


def write_views(path, views, names=None) -> None:
    """Write views as explicit geometry (JSON, or YAML for ``.yaml``/``.yml``), atomically."""
    path = Path(path)
    views = [views] if isinstance(views, XRayView) else list(views)
    names = [f"view{i}" for i in range(len(views))] if names is None else list(names)
    if len(names) != len(views):
        raise ValueError(f"names: expected {len(views)} names, got {len(names)}")
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "units": "mm",
        "views": [view_to_dict(v, n) for v, n in zip(views, names)],
    }
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        text = yaml.safe_dump(doc, sort_keys=False)
    else:
        text = json.dumps(doc, indent=2)
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
