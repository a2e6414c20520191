"""Projection radiographs in DICOM (DX, CR, XA): pixels to line integrals, and the view geometry.

A radiograph's pixels measure the X-ray intensity ``I`` that reached the detector; the DRR
likelihood needs line integrals ``p = -log(I / I_air)``, where ``I_air`` is the intensity of the
unattenuated beam. :func:`read_radiograph` converts, in this order:

1. the modality LUT (RescaleSlope, RescaleIntercept), through pydicom;
2. PixelIntensityRelationship (0028,1040) and its sign (0028,1041), or where the sign is absent the
   PhotometricInterpretation: ``MONOCHROME1`` (low values shown white: low values are low intensity,
   sign +1) or ``MONOCHROME2`` (sign -1: the values are inverted, ``2^BitsStored - 1 - value``,
   before use). ``LIN`` values are proportional to the intensity; ``LOG`` values are
   ``sign * log_scale * log(I) + c``, and need ``log_scale`` (pixel values per natural-log unit);
3. the air reference ``I_air``: a flat-field image (``flat_field=``: the detector's response to the
   open beam, a DICOM file or an array read the same way), a number (``air=``), or, when neither is
   given, the 99.9th percentile of the image's intensities, which is right only when the image shows
   open beam somewhere (the estimate is recorded in :attr:`Radiograph.notes`);
4. the log, with intensities below half a count raised to it (also noted).

The view comes from the geometry tags (:meth:`bayesshape.XRayView.from_dicom`); a mirrored image is
flipped left to right so that it matches the view. :func:`write_radiograph` writes what a flat-panel
detector stores "for processing" (DX, 16 bit, MONOCHROME1, ``LIN``, sign +1), so that the whole path
can be tested without patient data.
"""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from .._atomic import atomic_path
from ..projection.dicom_geometry import dicom_angles, patient_orientation
from ..projection.views import XRayView, view_from_dicom

__all__ = ["Radiograph", "read_radiograph", "write_radiograph"]

_PROJECTION_MODALITIES = ("DX", "CR", "XA", "RF", "MG", "RG", "PX", "IO")
_DX_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"


@dataclasses.dataclass(frozen=True)
class Radiograph:
    """A DICOM radiograph read for reconstruction.

    Attributes:
        line_integrals: ``(rows, cols)`` ``-log(I / I_air)`` (dimensionless: attenuation times path
            length), in the orientation of :attr:`view`.
        view: the calibrated view, from the geometry tags.
        air: the air reference used (a number, or the mean of the flat field).
        mirrored: True when the stored image was flipped left to right to match the view.
        modality: the file's Modality.
        notes: what was assumed or estimated (the air reference, clipped pixels, ...).
    """

    line_integrals: np.ndarray
    view: XRayView
    air: float
    mirrored: bool
    modality: str
    notes: tuple[str, ...]


def _read(path):
    import pydicom

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    try:
        return pydicom.dcmread(path)
    except (OSError, pydicom.errors.InvalidDicomError) as e:
        raise ValueError(f"{path}: not a readable DICOM file ({e})") from None


def _values(ds, path, frame: int | None) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    if "PixelData" not in ds:
        raise ValueError(f"{path}: the DICOM file has no pixel data")
    try:
        arr = ds.pixel_array
    except Exception as e:  # compressed transfer syntaxes need a decoder plugin
        raise ValueError(
            f"{path}: the pixel data cannot be decoded ({e}); for compressed files install a pydicom decoder "
            "(pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg)"
        ) from None
    if int(getattr(ds, "SamplesPerPixel", 1)) != 1:
        raise ValueError(f"{path}: expected a grey-scale radiograph (SamplesPerPixel 1), got {ds.SamplesPerPixel}")
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if n_frames > 1:
        if frame is None:
            raise ValueError(f"{path}: the file holds {n_frames} frames; pass frame= (CLI --frame) to choose one")
        if not 0 <= frame < n_frames:
            raise ValueError(f"{path}: frame {frame} is outside 0..{n_frames - 1}")
        arr = arr[frame]
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)


def _intensity(ds, path, values: np.ndarray, log_scale: float | None, notes: list[str]):
    """(quantity linear in intensity, or log intensity when ``log`` is True), and ``log``."""
    relationship = str(getattr(ds, "PixelIntensityRelationship", "") or "LIN").strip().upper()
    sign = getattr(ds, "PixelIntensityRelationshipSign", None)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"{path}: PhotometricInterpretation {photometric!r}; expected MONOCHROME1 or MONOCHROME2")
    if sign is None:
        sign = 1 if photometric == "MONOCHROME1" else -1
        notes.append(f"PixelIntensityRelationshipSign absent: {sign:+d} from {photometric}")
    sign = int(sign)
    if sign not in (1, -1):
        raise ValueError(f"{path}: PixelIntensityRelationshipSign must be +1 or -1, got {sign}")
    if relationship == "LOG":
        if log_scale is None or not np.isfinite(log_scale) or log_scale <= 0:
            raise ValueError(
                f"{path}: PixelIntensityRelationship is LOG; pass log_scale= (CLI --log-scale), the pixel values "
                "per natural-log unit of intensity, to convert to line integrals"
            )
        return sign * values / float(log_scale), True
    if relationship != "LIN":
        raise ValueError(
            f"{path}: PixelIntensityRelationship {relationship!r} (a processed image?); bayesshape converts LIN "
            "or LOG images, 'for processing' as the detector stores them"
        )
    if sign == -1:
        top = float(2 ** int(getattr(ds, "BitsStored", 16)) - 1)
        notes.append(f"values inverted ({top:g} - value): higher values meant less intensity")
        values = top - values
    return values, False


def read_radiograph(
    path,
    *,
    air: float | None = None,
    flat_field=None,
    log_scale: float | None = None,
    frame: int | None = None,
    isocenter=(0.0, 0.0, 0.0),
    **geometry,
) -> Radiograph:
    """Read a DICOM radiograph as line integrals and its view.

    Args:
        path: the ``.dcm`` file.
        air: intensity of the open beam, in the file's (intensity) units.
        flat_field: the open-beam image: a ``.dcm`` path (read like ``path``) or an array of intensities.
        log_scale: for ``LOG`` files, pixel values per natural-log unit.
        frame: the frame of a multi-frame file.
        isocenter: world point on the central ray, mm.
        geometry: overrides of the geometry tags (see :meth:`bayesshape.XRayView.from_dicom`).

    Raises:
        ValueError: an unreadable file, a non-projection modality, unconvertible pixels, or missing
            geometry tags (each named, with the argument that can be given instead).

    Example:
        >>> xr = read_radiograph("AP.dcm", flat_field="flat_field.dcm")       # doctest: +SKIP
        >>> obs = bs.obs.DRR(xr.view, xr.line_integrals, sigma=0.02, mu=0.05)  # doctest: +SKIP
    """
    ds = _read(path)
    modality = str(getattr(ds, "Modality", "") or "")
    if modality and modality.upper() not in _PROJECTION_MODALITIES:
        raise ValueError(
            f"{path}: Modality {modality!r} is not a projection radiograph (expected one of "
            f"{', '.join(_PROJECTION_MODALITIES)})"
        )
    view, mirrored = view_from_dicom(ds, isocenter=isocenter, **geometry)
    notes: list[str] = []
    values, is_log = _intensity(ds, path, _values(ds, path, frame), log_scale, notes)
    if flat_field is not None and air is not None:
        raise ValueError("give air= or flat_field=, not both")
    if flat_field is not None:
        if isinstance(flat_field, str | Path):
            fds = _read(flat_field)
            ref, ref_log = _intensity(fds, flat_field, _values(fds, flat_field, None), log_scale, [])
            if ref_log != is_log:
                raise ValueError(f"{flat_field}: the flat field's PixelIntensityRelationship differs from {path}'s")
        else:
            ref = np.asarray(flat_field, dtype=np.float64)
        if ref.shape != values.shape:
            raise ValueError(f"flat field: {ref.shape} pixels, but the radiograph has {values.shape}")
        air_ref = ref
        notes.append("air reference: the flat field")
    elif air is not None:
        if not np.isfinite(air) or air <= 0:
            raise ValueError(f"air: expected a positive open-beam intensity, got {air}")
        air_ref = np.float64(np.log(air)) if is_log else np.float64(air)
    else:
        air_ref = np.float64(np.percentile(values, 99.9))
        notes.append(
            f"air reference estimated as the 99.9th percentile of the image ({float(air_ref):.6g}); pass air= or "
            "flat_field= when the image shows no open beam"
        )
    if is_log:
        p = -(values - air_ref)
    else:
        if np.any(np.asarray(air_ref) <= 0):
            raise ValueError(f"{path}: the air reference has values <= 0; expected positive intensities")
        low = values < 0.5
        if low.any():
            notes.append(f"{int(low.sum())} pixels below half a count raised to 0.5")
        p = -np.log(np.maximum(values, 0.5) / air_ref)
    if mirrored:
        p = p[:, ::-1]
        notes.append("image flipped left to right (PatientOrientation: mirrored)")
    return Radiograph(
        np.ascontiguousarray(p),
        view,
        float(np.mean(np.exp(air_ref) if is_log else air_ref)),
        mirrored,
        modality,
        tuple(notes),
    )


def write_radiograph(
    path,
    line_integrals,
    view: XRayView,
    *,
    air: float = 60000.0,
    patient_id: str = "SIMULATED",
    seed: int = 0,
) -> np.ndarray:
    """Write line integrals as a DICOM DX radiograph "for processing", with its view geometry.

    The pixels are the intensities ``round(air * exp(-p))`` as 16-bit integers (MONOCHROME1, LIN,
    sign +1): what a flat-panel detector stores. Only cone-beam views whose central ray meets the
    detector's centre can be written (a parallel view has no DICOM geometry). Atomic write.

    Args:
        path: the ``.dcm`` file.
        line_integrals: ``(rows, cols)`` line integrals in the view's orientation.
        view: a cone-beam view.
        air: the open-beam intensity, in counts (at most 65535).
        patient_id: PatientID and PatientName of the file.
        seed: makes the file's unique identifiers reproducible.

    Returns:
        The line integrals that :func:`read_radiograph` reads back with ``air=air`` (quantised).
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    p = np.asarray(line_integrals, dtype=np.float64)
    if view.is_parallel:
        raise ValueError("view: a parallel view has no DICOM geometry; write cone-beam views (XRayView.cone_beam)")
    if p.shape != tuple(view.detector_shape):
        raise ValueError(f"line_integrals: shape {p.shape} does not match the view's detector {view.detector_shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("line_integrals: contain NaN or inf")
    if not 0 < air <= 65535:
        raise ValueError(f"air: expected an open-beam intensity in (0, 65535] counts, got {air}")
    rows, cols = view.detector_shape
    d = np.asarray(view.direction, dtype=np.float64)
    source = np.asarray(view.source, dtype=np.float64)
    sdd = float(view.source_to_detector)
    centre = np.asarray(view.pixel_to_world(jnp.asarray([[(rows - 1) / 2, (cols - 1) / 2]], dtype=view.source.dtype)))
    centre = centre[0].astype(np.float64)
    if np.linalg.norm(centre - (source + sdd * d)) > 1e-6 * sdd:
        raise ValueError("view: its central ray does not meet the detector's centre, which DICOM cannot describe")
    # the isocentre: where the geometry puts it, at the origin's depth along the central ray
    sod = float(-source @ d)
    if not 0 < sod < sdd:
        raise ValueError(
            "view: the world origin must lie between the source and the detector on the central ray "
            f"(its depth is {sod:.1f} mm of {sdd:.1f}); DICOM's isocentre is the origin"
        )
    if np.linalg.norm(source + sod * d) > 1e-6 * sdd:
        raise ValueError("view: the central ray does not pass through the world origin (DICOM's isocentre)")
    counts = np.clip(np.rint(air * np.exp(-p)), 0, 65535).astype(np.uint16)
    primary, secondary = dicom_angles(d)
    rng = np.random.default_rng(seed)

    def uid():
        return generate_uid(entropy_srcs=[str(rng.integers(2**62))])

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_DX_FOR_PROCESSING)
    meta.MediaStorageSOPInstanceUID = uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _DX_FOR_PROCESSING
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(), uid()
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PROCESSING"
    ds.PatientName, ds.PatientID = patient_id, patient_id
    ds.ContentDate = datetime.date(2000, 1, 1).strftime("%Y%m%d")
    ds.Manufacturer = "bayesshape (simulated)"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    spacing = np.asarray(view.spacing, dtype=np.float64)
    ds.ImagerPixelSpacing = [f"{x:.10g}" for x in spacing]
    ds.DistanceSourceToDetector = f"{sdd:.10g}"
    ds.DistanceSourceToPatient = f"{sod:.10g}"
    ds.EstimatedRadiographicMagnificationFactor = f"{sdd / sod:.10g}"
    ds.PixelSpacing = [f"{x * sod / sdd:.10g}" for x in spacing]
    ds.PositionerPrimaryAngle = f"{primary:.10g}"
    ds.PositionerSecondaryAngle = f"{secondary:.10g}"
    ds.PatientOrientation = patient_orientation(np.asarray(view.u), np.asarray(view.v))
    ds.PixelData = counts.tobytes()
    ds.ImageComments = f"simulated; open-beam intensity {air:g} counts"
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return -np.log(np.maximum(counts.astype(np.float64), 0.5) / air)
