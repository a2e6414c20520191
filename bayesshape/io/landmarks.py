"""Named 3D landmarks in the files the field uses: Scalismo's landmark JSON, 3D Slicer's markups
(``.mrk.json`` and the legacy ``.fcsv``) and plain CSV (``name,x,y,z``).

Coordinates are returned in the **LPS** frame, the one 3D Slicer (since 4.11) and Scalismo write
meshes in, so that landmarks and meshes from these tools line up without a flip. A Slicer file
that declares RAS (``"coordinateSystem": "RAS"``, ``CoordinateSystem = RAS`` or the older code
``0``) is converted by negating x and y. Scalismo's JSON and CSV carry no frame and are read as
they are. Writers write LPS and say so where the format can.
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from ._format import HDF5_JSON_MESSAGE

__all__ = ["LandmarkSet", "read_landmarks", "write_landmarks", "LANDMARK_SUFFIXES"]

LANDMARK_SUFFIXES = (".json", ".mrk.json", ".fcsv", ".csv")
_SLICER_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class LandmarkSet:
    """Named 3D points, mm, LPS.

    Attributes:
        names: ``(L,)`` landmark names (Scalismo's ``id``, Slicer's ``label``), unique.
        points: ``(L, 3)`` positions, mm.
        covariance: ``(L, 3, 3)`` per-landmark covariance, mm^2 (Scalismo's ``uncertainty``),
            or ``None`` where the file gives none.

    Example:
        >>> lms = LandmarkSet(("A", "B"), np.zeros((2, 3)))
        >>> lms.subset(["B"]).names
        ('B',)
    """

    names: tuple[str, ...]
    points: np.ndarray
    covariance: np.ndarray | None = None

    def __post_init__(self):
        names = tuple(str(n) for n in self.names)
        pts = np.asarray(self.points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 3 or pts.shape[0] != len(names):
            raise ValueError(f"points: expected shape ({len(names)}, 3), one row per name, got {pts.shape}")
        if not np.all(np.isfinite(pts)):
            raise ValueError("points: landmark coordinates contain NaN or inf")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"names: landmark names must be unique, repeated: {dup}")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "points", pts)
        if self.covariance is not None:
            cov = np.asarray(self.covariance, dtype=np.float64)
            if cov.shape != (len(names), 3, 3):
                raise ValueError(f"covariance: expected shape ({len(names)}, 3, 3), got {cov.shape}")
            object.__setattr__(self, "covariance", cov)

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, names) -> LandmarkSet:
        """The landmarks named in ``names``, in that order (``ValueError`` naming any missing)."""
        names = [str(n) for n in names]
        missing = [n for n in names if n not in self.names]
        if missing:
            raise ValueError(f"landmarks: no landmark named {missing}; these are {list(self.names)}")
        idx = [self.names.index(n) for n in names]
        cov = None if self.covariance is None else self.covariance[idx]
        return LandmarkSet(tuple(names), self.points[idx], cov)

    def sd(self) -> np.ndarray | None:
        """``(L,)`` the root-mean-square standard deviation of each landmark, mm, or ``None``."""
        if self.covariance is None:
            return None
        return np.sqrt(np.trace(self.covariance, axis1=1, axis2=2) / 3.0)


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".mrk.json"):
        return "slicer_json"
    if name.endswith(".h5.json"):
        raise ValueError(f"{path}: not landmarks but {HDF5_JSON_MESSAGE}")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix == ".fcsv":
        return "fcsv"
    if suffix == ".csv":
        return "csv"
    raise ValueError(f"{path}: unsupported landmark file {suffix!r}; expected one of {LANDMARK_SUFFIXES}")


def read_landmarks(path) -> LandmarkSet:
    """Read named 3D landmarks: Scalismo ``.json``, Slicer ``.mrk.json`` / ``.fcsv``, or ``.csv``.

    A ``.json`` file holding a Slicer markups object is read as one. CSV rows are
    ``name,x,y,z``; a first row whose coordinates are not numbers is taken as a header.

    Example:
        >>> lms = read_landmarks("reference.json")          # doctest: +SKIP
        >>> lms.names, lms.points.shape                      # doctest: +SKIP
        (('A', 'B', ...), (10, 3))
    """
    path = Path(path)
    kind = _kind(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    try:
        if kind in ("json", "slicer_json"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"not valid JSON ({e})") from None
            if isinstance(data, dict) and "markups" in data:
                return _from_slicer_json(data)
            if kind == "slicer_json":
                raise ValueError("expected a Slicer markups object with a 'markups' list")
            return _from_scalismo(data)
        if kind == "fcsv":
            return _from_fcsv(text)
        return _from_csv(text)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _from_scalismo(data) -> LandmarkSet:
    if not isinstance(data, list) or not data:
        raise ValueError("expected Scalismo's landmark JSON: a non-empty list of {id, coordinates, uncertainty}")
    names, pts = [], []
    covs: list[np.ndarray | None] = []
    for i, lm in enumerate(data):
        if not isinstance(lm, dict) or "id" not in lm or "coordinates" not in lm:
            raise ValueError(f"landmark {i}: expected an object with 'id' and 'coordinates', got {lm!r:.80}")
        c = np.asarray(lm["coordinates"], dtype=np.float64)
        if c.shape != (3,):
            raise ValueError(f"landmark {lm['id']!r}: expected 3 coordinates, got {c.shape}")
        names.append(str(lm["id"]))
        pts.append(c)
        unc = lm.get("uncertainty")
        if unc is not None:
            sd = np.asarray(unc.get("stddevs"), dtype=np.float64)
            vec = np.asarray(unc.get("pcvectors"), dtype=np.float64)
            if sd.shape != (3,) or vec.shape != (3, 3):
                raise ValueError(f"landmark {lm['id']!r}: 'uncertainty' needs 3 stddevs and 3 x 3 pcvectors")
            # pcvectors are the principal axes, one per row (Scalismo writes them so)
            covs.append(vec.T @ np.diag(sd**2) @ vec)
        else:
            covs.append(None)
    given = [c for c in covs if c is not None]
    cov = np.stack(given) if len(given) == len(covs) else None
    return LandmarkSet(tuple(names), np.stack(pts), cov)


def _from_slicer_json(data) -> LandmarkSet:
    markups = data.get("markups")
    if not isinstance(markups, list) or not markups:
        raise ValueError("the 'markups' list is empty")
    m = markups[0]
    cps = m.get("controlPoints") or []
    if not cps:
        raise ValueError("the first markup has no control points")
    system = str(m.get("coordinateSystem", "LPS")).upper()
    if system not in ("LPS", "RAS"):
        raise ValueError(f"coordinateSystem: expected 'LPS' or 'RAS', got {system!r}")
    units = str(m.get("coordinateUnits", "mm"))
    if units != "mm":
        raise ValueError(f"coordinateUnits: expected 'mm', got {units!r}")
    names = [str(cp.get("label") or cp.get("id") or f"F-{i + 1}") for i, cp in enumerate(cps)]
    pts = np.asarray([cp.get("position") for cp in cps], dtype=np.float64)
    if pts.shape != (len(cps), 3):
        raise ValueError("every control point needs a 3-element 'position'")
    if system == "RAS":
        pts = pts * _RAS_TO_LPS
    return LandmarkSet(tuple(names), pts)


def _from_fcsv(text: str) -> LandmarkSet:
    system = "LPS"
    columns = "id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID".split(",")
    rows = []
    for line in text.splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition("=")
            key, value = key.strip().lower(), value.strip()
            if key == "coordinatesystem":
                system = {"0": "RAS", "1": "LPS"}.get(value, value.upper())
            elif key == "columns":
                columns = [c.strip() for c in value.split(",")]
            continue
        if line.strip():
            rows.append(next(csv.reader([line])))
    if system not in ("LPS", "RAS"):
        raise ValueError(f"CoordinateSystem: expected LPS, RAS, 0 or 1, got {system!r}")
    if not rows:
        raise ValueError("no control points")
    col = {c: i for i, c in enumerate(columns)}
    if not {"x", "y", "z"} <= set(col):
        raise ValueError(f"columns: expected x, y and z among {columns}")
    name_col = col.get("label", col.get("id", 0))
    try:
        pts = np.asarray([[float(r[col[a]]) for a in "xyz"] for r in rows])
    except (ValueError, IndexError):
        raise ValueError("a control point row has a missing or non-numeric coordinate") from None
    names = [r[name_col] if name_col < len(r) and r[name_col] else f"F-{i + 1}" for i, r in enumerate(rows)]
    if system == "RAS":
        pts = pts * _RAS_TO_LPS
    return LandmarkSet(tuple(names), pts)


def _from_csv(text: str) -> LandmarkSet:
    rows = [r for r in csv.reader(_io.StringIO(text)) if r and any(c.strip() for c in r)]
    if rows and not any(_is_number(c) for c in rows[0][1:4]):
        rows = rows[1:]  # a header
    if not rows:
        raise ValueError("no landmark rows; expected name,x,y,z per line")
    names, pts = [], []
    for i, r in enumerate(rows):
        if len(r) < 4:
            raise ValueError(f"row {i + 1}: expected name,x,y,z, got {','.join(r)!r}")
        try:
            pts.append([float(c) for c in r[1:4]])
        except ValueError:
            raise ValueError(f"row {i + 1}: coordinates are not numbers: {','.join(r)!r}") from None
        names.append(r[0].strip())
    return LandmarkSet(tuple(names), np.asarray(pts))


def write_landmarks(path, landmarks: LandmarkSet) -> None:
    """Write landmarks atomically; the format follows the suffix (``.json`` Scalismo, ``.mrk.json``
    and ``.fcsv`` Slicer in LPS, ``.csv`` ``name,x,y,z``).

    Scalismo's JSON gets each landmark's ``uncertainty`` (its covariance's principal axes and
    standard deviations) when the set has a covariance.
    """
    if not isinstance(landmarks, LandmarkSet):
        raise ValueError(f"landmarks: expected a LandmarkSet, got {type(landmarks).__name__}")
    path = Path(path)
    kind = _kind(path)
    names, pts = landmarks.names, landmarks.points
    if kind == "json":
        out = []
        for i, n in enumerate(names):
            lm: dict = {"id": n, "coordinates": [float(c) for c in pts[i]]}
            if landmarks.covariance is not None:
                w, v = np.linalg.eigh(landmarks.covariance[i])
                lm["uncertainty"] = {
                    "stddevs": [math.sqrt(max(float(x), 0.0)) for x in w],
                    "pcvectors": [[float(c) for c in v[:, j]] for j in range(3)],
                }
            out.append(lm)
        text = json.dumps(out)
    elif kind == "slicer_json":
        cps = [
            {
                "id": str(i + 1),
                "label": n,
                "position": [float(c) for c in pts[i]],
                "selected": True,
                "locked": False,
                "visibility": True,
                "positionStatus": "defined",
            }
            for i, n in enumerate(names)
        ]
        markup = {"type": "Fiducial", "coordinateSystem": "LPS", "coordinateUnits": "mm", "controlPoints": cps}
        text = json.dumps({"@schema": _SLICER_SCHEMA, "markups": [markup]}, indent=2)
    elif kind == "fcsv":
        lines = [
            "# Markups fiducial file version = 4.11",
            "# CoordinateSystem = LPS",
            "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID",
        ]
        for i, n in enumerate(names):
            x, y, z = (repr(float(c)) for c in pts[i])
            lines.append(f"{i + 1},{x},{y},{z},0,0,0,1,1,1,0,{_csv_field(n)},,")
        text = "\n".join(lines) + "\n"
    else:
        buf = _io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        for i, n in enumerate(names):
            writer.writerow([n, *(repr(float(c)) for c in pts[i])])
        text = buf.getvalue()
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _csv_field(s: str) -> str:
    if any(c in s for c in ',"\n'):
        raise ValueError(f"landmark name {s!r}: an .fcsv name cannot hold a comma, quote or newline")
    return s
