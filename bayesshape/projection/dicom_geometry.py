"""The view geometry of a projection radiograph from its DICOM tags (DX, CR, XA).

bayesshape's world frame is DICOM's patient frame, LPS: +x the patient's left, +y posterior,
+z superior (head), in mm, with the isocentre at the origin unless given. The tags read:

====================================================  ========================================================
tag                                                   use
====================================================  ========================================================
DistanceSourceToDetector (0018,1110)                  ``source_to_detector``: source to detector plane, mm
DistanceSourceToPatient (0018,1111)                   ``source_to_isocenter``: source to isocentre, mm
ImagerPixelSpacing (0018,1164)                        pixel spacing at the detector (row, col), mm
DetectorElementSpacing (0018,7022)                    the same, where ImagerPixelSpacing is absent
PixelSpacing (0028,0030) with                         spacing at the isocentre; times the magnification
EstimatedRadiographicMagnificationFactor (0018,1114)  gives the spacing at the detector
PositionerPrimaryAngle (0018,1510)                    detector position from RAO (-) to LAO (+), degrees
PositionerSecondaryAngle (0018,1511)                  detector position from caudal (-) to cranial (+)
ViewPosition (0018,5101)                              AP, PA, LL, RL where the angles are absent
PatientOrientation (0020,0020)                        the patient directions of the image rows and columns
Rows, Columns (0028,0010-11)                          detector shape
====================================================  ========================================================

At primary and secondary angle 0 the detector is anterior (the beam runs posterior to anterior,
DICOM's convention for the C-arm). The central ray meets the detector at its centre (DICOM has no
principal-point tag). Where PatientOrientation is absent the patient's head is taken to be at the
top of the image; where it says the image is mirrored (the columns run against ``direction x up``),
the view is that of the image flipped left to right, which :func:`bayesshape.io.read_radiograph`
returns.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["dicom_view_parameters", "dicom_angles", "patient_orientation", "cos_sin_degrees"]

_LETTERS = {"L": (1, 0, 0), "R": (-1, 0, 0), "P": (0, 1, 0), "A": (0, -1, 0), "H": (0, 0, 1), "F": (0, 0, -1)}

#: central-ray direction (source to detector) of each DX ViewPosition (LL: the patient's left
#: side at the detector)
_VIEW_POSITIONS = {"AP": (0, 1, 0), "PA": (0, -1, 0), "LL": (1, 0, 0), "RL": (-1, 0, 0)}


def cos_sin_degrees(angle: float) -> tuple[float, float]:
    """``(cos, sin)`` of an angle in degrees, exact at multiples of 90 degrees (where ``math.cos``
    of the radian value is off by 1e-16, which would make a view's frame differ with the path
    that built it)."""
    angle = float(angle)
    quarter, rest = divmod(angle, 90.0)
    if rest == 0.0:
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[int(quarter) % 4]
    r = math.radians(angle)
    return math.cos(r), math.sin(r)


def _tag(ds, name: str):
    v = getattr(ds, name, None) if not isinstance(ds, dict) else ds.get(name)
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    return v


def _floats(v, n: int, name: str) -> np.ndarray:
    try:
        a = np.asarray([float(x) for x in (v if isinstance(v, list | tuple) or hasattr(v, "__iter__") else [v])])
    except (TypeError, ValueError):
        raise ValueError(f"DICOM tag {name}: expected {n} number(s), got {v!r}") from None
    if a.shape != (n,) or not np.all(np.isfinite(a)):
        raise ValueError(f"DICOM tag {name}: expected {n} finite number(s), got {v!r}")
    return a


def _direction_from_letters(s: str) -> np.ndarray:
    s = str(s).strip().upper()
    if not s or any(c not in _LETTERS for c in s):
        raise ValueError(f"DICOM tag PatientOrientation: {s!r} is not made of the letters L R A P H F")
    return np.asarray(_LETTERS[s[0]], dtype=np.float64)  # the dominant direction comes first


def dicom_angles(direction) -> tuple[float, float]:
    """PositionerPrimaryAngle and PositionerSecondaryAngle (degrees) of a central-ray direction."""
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    return math.degrees(math.atan2(d[0], -d[1])), math.degrees(math.asin(max(-1.0, min(1.0, d[2]))))


def patient_orientation(u, v) -> list[str]:
    """PatientOrientation of an image whose columns grow along ``u`` and rows along ``v``: letters of
    the components above 1e-3, largest first."""
    out = []
    for axis in (u, v):
        a = np.asarray(axis, dtype=np.float64)
        order = np.argsort(-np.abs(a))
        out.append("".join("LPH"[i] if a[i] > 0 else "RAF"[i] for i in order if abs(a[i]) > 1e-3))
    return out


def dicom_view_parameters(ds, **overrides: Any) -> dict[str, Any]:
    """The parameters of a DICOM radiograph's view (for :meth:`bayesshape.XRayView.cone_beam`):
    ``source_to_detector``, ``source_to_isocenter``, ``detector_shape``, ``pixel_spacing``,
    ``direction``, ``up``, and ``row_direction`` (the patient direction of the image rows from
    PatientOrientation, or None), from which a mirrored image is recognised.

    Args:
        ds: a ``pydicom.Dataset`` (or a dict of tag keywords to values).
        overrides: values that replace missing or wrong tags: ``source_to_detector``,
            ``source_to_isocenter`` (mm), ``pixel_spacing`` (mm at the detector, a number or (row, col)),
            ``primary_angle``, ``secondary_angle`` (degrees), ``up`` (world direction shown as image up).

    Raises:
        ValueError: naming every missing tag, and the argument that can be given instead.
    """
    allowed = {"source_to_detector", "source_to_isocenter", "pixel_spacing", "primary_angle", "secondary_angle", "up"}
    unknown = set(overrides) - allowed
    if unknown:
        raise ValueError(f"unknown geometry overrides {sorted(unknown)}; expected some of {sorted(allowed)}")
    ov = {k: v for k, v in overrides.items() if v is not None}
    missing: list[str] = []

    rows, cols = _tag(ds, "Rows"), _tag(ds, "Columns")
    if rows is None or cols is None:
        missing.append("Rows/Columns (the image size; not replaceable)")
    sdd = ov.get("source_to_detector", _tag(ds, "DistanceSourceToDetector"))
    if sdd is None:
        missing.append("DistanceSourceToDetector (0018,1110) (or source_to_detector=, CLI --source-to-detector)")
    sod = ov.get("source_to_isocenter", _tag(ds, "DistanceSourceToPatient"))
    if sod is None:
        missing.append("DistanceSourceToPatient (0018,1111) (or source_to_isocenter=, CLI --source-to-isocenter)")

    spacing = ov.get("pixel_spacing")
    if spacing is None:
        for name in ("ImagerPixelSpacing", "DetectorElementSpacing"):
            if _tag(ds, name) is not None:
                spacing = _floats(_tag(ds, name), 2, name)
                break
        else:
            ps, emf = _tag(ds, "PixelSpacing"), _tag(ds, "EstimatedRadiographicMagnificationFactor")
            if ps is not None and emf is not None:
                spacing = _floats(ps, 2, "PixelSpacing") * _floats(emf, 1, "EstimatedRadiographicMagnificationFactor")
            else:
                missing.append(
                    "ImagerPixelSpacing (0018,1164) (or DetectorElementSpacing, or PixelSpacing with "
                    "EstimatedRadiographicMagnificationFactor; or pixel_spacing=, CLI --pixel-spacing)"
                )

    primary = ov.get("primary_angle", _tag(ds, "PositionerPrimaryAngle"))
    secondary = ov.get("secondary_angle", _tag(ds, "PositionerSecondaryAngle"))
    direction = None
    if primary is not None:
        ca, sa = cos_sin_degrees(float(_floats(primary, 1, "PositionerPrimaryAngle")[0]))
        b = float(_floats(secondary, 1, "PositionerSecondaryAngle")[0]) if secondary is not None else 0.0
        cb, sb = cos_sin_degrees(b)
        direction = np.array([sa * cb, -ca * cb, sb])
    else:
        vp = _tag(ds, "ViewPosition")
        if vp is not None and str(vp).strip().upper() in _VIEW_POSITIONS:
            direction = np.asarray(_VIEW_POSITIONS[str(vp).strip().upper()], dtype=np.float64)
        else:
            missing.append(
                "PositionerPrimaryAngle (0018,1510) or a ViewPosition (0018,5101) of AP, PA, LL or RL "
                f"(found {vp!r}; or primary_angle=/secondary_angle=, CLI --primary-angle, --secondary-angle)"
            )
    if missing:
        raise ValueError("the DICOM file lacks the view geometry: missing " + "; ".join(missing))
    assert direction is not None and spacing is not None

    orientation = _tag(ds, "PatientOrientation")
    up = ov.get("up")
    row_dir = None
    if orientation is not None and len(list(orientation)) == 2:
        row_dir = _direction_from_letters(orientation[0])
        col_dir = _direction_from_letters(orientation[1])
        if up is None:
            up = -col_dir
    if up is None:
        up = (0.0, 0.0, 1.0)
    up = np.asarray(up, dtype=np.float64)
    if abs(float(up @ direction)) > 0.999 * np.linalg.norm(up):
        up = np.array([0.0, 0.0, 1.0]) if abs(direction[2]) < 0.9 else np.array([0.0, -1.0, 0.0])
    return {
        "source_to_detector": float(_floats(sdd, 1, "DistanceSourceToDetector")[0]),
        "source_to_isocenter": float(_floats(sod, 1, "DistanceSourceToPatient")[0]),
        "detector_shape": (int(rows), int(cols)),
        "pixel_spacing": np.broadcast_to(np.asarray(spacing, dtype=np.float64), (2,)).copy(),
        "direction": direction,
        "up": up,
        "row_direction": row_dir,
    }
