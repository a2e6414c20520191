"""2D images and segmentation masks on disk: NumPy, PNG, TIFF, NRRD and NIfTI.

Every reader returns a ``(rows, cols)`` array indexed ``[row, col]`` as the rest of bayesshape
(pixel ``(0, 0)`` top left, rows growing down the image). The formats and their readers:

========================  ==========================  =============================================
suffix                    reader                      notes
========================  ==========================  =============================================
``.npy``                  NumPy (``allow_pickle``     exact floats; the format to keep line integrals
                          off)
``.png``                  Pillow                      8 or 16 bit grey (the first channel of colour)
``.tif`` ``.tiff``        tifffile                    any bit depth, float32 included (ImageJ, Fiji)
``.nrrd``                 pynrrd                      3D Slicer's label maps; axis 0 is the image's
                                                      columns (x), axis 1 its rows (y)
``.nii`` ``.nii.gz``      nibabel                     as NRRD: axis 0 columns, axis 1 rows
========================  ==========================  =============================================

NRRD and NIfTI files from segmentation tools hold a volume; a 2D image there is a volume of one
slice, and a singleton third axis is dropped. A mask is read as ``True`` where an integer (label)
image is non-zero or a floating-point image exceeds 0.5. Writers are atomic.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .._atomic import atomic_path

__all__ = ["IMAGE_SUFFIXES", "read_image", "write_image", "read_mask", "write_mask"]

#: image suffixes that :func:`read_image` and :func:`write_image` take (``.dcm``: see :mod:`bayesshape.io.dicom`)
IMAGE_SUFFIXES = (".npy", ".png", ".tif", ".tiff", ".nrrd", ".nii", ".nii.gz")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"not a plain .npy array ({e})") from None


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
            return np.asarray(im.convert("RGB"))[..., 0]
        return np.asarray(im)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    a = np.asarray(tifffile.imread(path))
    if a.ndim == 3 and a.shape[-1] in (3, 4):  # colour: the first channel
        a = a[..., 0]
    return a


def _from_volume(a: np.ndarray) -> np.ndarray:
    """A 2D image from a volume in (x, y[, 1]) order: drop singleton axes beyond the second, transpose."""
    while a.ndim > 2 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"expected a 2D image or a volume of one slice, got a volume of shape {a.shape}")
    return a.T


def _read_nrrd(path: Path) -> np.ndarray:
    import nrrd

    data, _ = nrrd.read(str(path))
    return _from_volume(np.asarray(data))


def _read_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    img = nib.load(str(path))
    return _from_volume(np.asarray(img.dataobj))  # type: ignore[attr-defined]


_READERS = {
    ".npy": _read_npy,
    ".png": _read_png,
    ".tif": _read_tiff,
    ".tiff": _read_tiff,
    ".nrrd": _read_nrrd,
    ".nii": _read_nifti,
    ".nii.gz": _read_nifti,
}


def read_image(path, what: str = "image") -> np.ndarray:
    """A 2D image ``(rows, cols)`` from ``.npy``, ``.png``, ``.tif``, ``.nrrd`` or ``.nii(.gz)``.

    Args:
        path: the file.
        what: what the image is, for error messages (``"mask"``, ``"image"``).

    Returns:
        The stored values, in the file's dtype.

    Raises:
        ValueError: a missing, unreadable or non-2D file, or another suffix (DICOM radiographs are
            read by :func:`bayesshape.io.read_radiograph`, which also converts them).

    Example:
        >>> mask = read_image("ap_mask.nrrd", "mask") > 0   # doctest: +SKIP
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".dcm":
        raise ValueError(
            f"{what} {path}: a DICOM file; radiographs are read with bayesshape.io.read_radiograph "
            "(CLI: --xray), which converts them to line integrals and reads the view geometry"
        )
    if suffix not in _READERS:
        raise ValueError(f"{what} {path}: expected one of {', '.join(IMAGE_SUFFIXES)}, got {suffix or 'no suffix'!r}")
    if not path.exists():
        raise ValueError(f"{what} {path}: no such file")
    try:
        arr = np.asarray(_READERS[suffix](path))
    except ValueError as e:
        raise ValueError(f"{what} {path}: {e}") from None
    except Exception as e:  # the readers raise their own errors on damaged files
        raise ValueError(f"{what} {path}: not a readable {suffix} file ({type(e).__name__}: {e})") from None
    if arr.ndim != 2:
        raise ValueError(f"{what} {path}: expected a 2D image (rows, cols), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} {path}: expected numbers, got dtype {arr.dtype}")
    return arr


def read_mask(path) -> np.ndarray:
    """A binary mask ``(rows, cols)``: non-zero labels, or values above 0.5 for a float image."""
    a = read_image(path, "mask")
    return a > 0.5 if a.dtype.kind == "f" else a != 0


def write_image(path, image) -> None:
    """Write a 2D array to any suffix of :data:`IMAGE_SUFFIXES` (atomic).

    ``.npy``, ``.tif``, ``.nrrd`` and ``.nii`` keep the dtype (float32 and float64 included);
    ``.png`` holds 8 or 16 bit integers (booleans are written 0/255).
    """
    path = Path(path)
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.uint8) * (255 if _suffix(path) == ".png" else 1)
    if a.ndim != 2:
        raise ValueError(f"image: expected a 2D array (rows, cols), got shape {a.shape}")
    suffix = _suffix(path)
    if suffix not in _READERS:
        raise ValueError(f"{path}: expected one of {', '.join(IMAGE_SUFFIXES)}, got {suffix or 'no suffix'!r}")
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, a, allow_pickle=False)
        elif suffix == ".png":
            from PIL import Image

            if a.dtype not in (np.uint8, np.uint16):
                raise ValueError(f"{path}: PNG holds 8 or 16 bit integers, got {a.dtype}; use .tif or .npy for floats")
            Image.fromarray(a).save(tmp, format="PNG")
        elif suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, a)
        elif suffix == ".nrrd":
            import nrrd

            nrrd.write(str(tmp), np.ascontiguousarray(a.T), {"space": "left-posterior-superior"}, index_order="F")
        else:
            import nibabel as nib

            data = nib.Nifti1Image(np.ascontiguousarray(a.T)[:, :, None], np.eye(4)).to_bytes()
            Path(tmp).write_bytes(gzip.compress(data, mtime=0) if suffix == ".nii.gz" else data)


def write_mask(path, mask) -> None:
    """Write a binary mask: 0/1 labels (0/255 in PNG), readable by :func:`read_mask` and by 3D Slicer."""
    write_image(path, np.asarray(mask, dtype=bool))
