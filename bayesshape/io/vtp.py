"""VTK XML PolyData files (``.vtp``), the format ParaView and 3D Slicer save by default.

Written with inline ``binary`` (base64) data arrays and a ``UInt64`` header, no compression,
the active scalars named on ``PointData``, and the frame in a ``SPACE`` field-data string
(``LPS``), where 3D Slicer looks for it. Read: inline ``ascii`` and ``binary`` arrays directly;
compressed or appended files (what ``vtkXMLPolyDataWriter`` writes by default, so what ParaView
and Slicer save) through the ``vtk`` package when it is installed (``pip install vtk``), with an
error saying so when it is not.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from .._atomic import atomic_path

__all__ = ["read_vtp_polydata", "write_vtp_polydata"]

_TYPE_OF = {
    "f4": "Float32",
    "f8": "Float64",
    "i1": "Int8",
    "u1": "UInt8",
    "i2": "Int16",
    "u2": "UInt16",
    "i4": "Int32",
    "u4": "UInt32",
    "i8": "Int64",
    "u8": "UInt64",
}
_CODE_OF = {v: k for k, v in _TYPE_OF.items()}


def _data_array(parent, name: str | None, arr: np.ndarray):
    arr = np.ascontiguousarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    code = arr.dtype.str[1:]
    if code not in _TYPE_OF:
        arr = arr.astype(np.float32 if arr.dtype.kind == "f" else np.int64)
        code = arr.dtype.str[1:]
    attrs = {"type": _TYPE_OF[code], "format": "binary"}
    if name is not None:
        attrs["Name"] = name
    if arr.ndim == 2:
        attrs["NumberOfComponents"] = str(arr.shape[1])
    el = ET.SubElement(parent, "DataArray", attrs)
    raw = arr.astype("<" + code, copy=False).tobytes()
    el.text = base64.b64encode(np.uint64(len(raw)).tobytes() + raw).decode("ascii")
    return el


def write_vtp_polydata(
    path, points, faces, point_data: dict | None = None, *, active: str | None = None, space: str = "LPS"
) -> None:
    """Write points, triangles and named per-vertex arrays as VTK XML PolyData (atomic).

    Args:
        path: output ``.vtp`` file.
        points: ``(N, 3)`` vertex positions, mm (stored as Float64).
        faces: ``(F, 3)`` triangles (stored as Int64 connectivity and offsets).
        point_data: name -> ``(N,)`` or ``(N, c)`` array; kept in its dtype
            (bool as UInt8).
        active: the array made the active scalars (default: the first of ``point_data``).
        space: the frame written in the ``SPACE`` field data, ``"LPS"`` or ``"RAS"``.

    Example:
        >>> write_vtp_polydata("mean.vtp", mesh.vertices, mesh.faces, {"std": std})  # doctest: +SKIP
    """
    pts = np.asarray(points, dtype=np.float64)
    fc = np.asarray(faces, dtype=np.int64)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points: expected shape (N, 3), got {pts.shape}")
    if fc.ndim != 2 or fc.shape[1] != 3:
        raise ValueError(f"faces: expected shape (F, 3), got {fc.shape}")
    if space not in ("LPS", "RAS"):
        raise ValueError(f"space: expected 'LPS' or 'RAS', got {space!r}")
    if point_data and active is not None and active not in point_data:
        raise ValueError(f"active: {active!r} is not one of the point_data arrays {sorted(point_data)}")
    n = pts.shape[0]
    root = ET.Element(
        "VTKFile", {"type": "PolyData", "version": "1.0", "byte_order": "LittleEndian", "header_type": "UInt64"}
    )
    poly = ET.SubElement(root, "PolyData")
    field = ET.SubElement(poly, "FieldData")
    # a VTK string array in ASCII: each string's character codes, then a 0
    codes = " ".join(str(ord(c)) for c in space) + " 0"
    ET.SubElement(
        field, "DataArray", {"type": "String", "Name": "SPACE", "NumberOfTuples": "1", "format": "ascii"}
    ).text = codes
    piece = ET.SubElement(
        poly,
        "Piece",
        {
            "NumberOfPoints": str(n),
            "NumberOfVerts": "0",
            "NumberOfLines": "0",
            "NumberOfStrips": "0",
            "NumberOfPolys": str(fc.shape[0]),
        },
    )
    if point_data:
        pd = ET.SubElement(piece, "PointData", {"Scalars": active or next(iter(point_data))})
        for name, arr in point_data.items():
            a = np.asarray(arr)
            if a.shape[0] != n or a.ndim > 2:
                raise ValueError(f"point_data[{name!r}]: expected shape ({n},) or ({n}, c), got {a.shape}")
            _data_array(pd, name, a)
    _data_array(ET.SubElement(piece, "Points"), "Points", pts)
    polys = ET.SubElement(piece, "Polys")
    _data_array(polys, "connectivity", fc.reshape(-1))
    _data_array(polys, "offsets", 3 * np.arange(1, fc.shape[0] + 1, dtype=np.int64))
    blob = b'<?xml version="1.0"?>\n' + ET.tostring(root)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(blob)


def _read_array(el, path, header: str) -> np.ndarray:
    typ = el.get("type")
    if typ not in _CODE_OF:
        raise ValueError(f"{path}: unsupported DataArray type {typ!r}")
    code = "<" + _CODE_OF[typ]
    fmt = el.get("format", "ascii")
    ncomp = int(el.get("NumberOfComponents", "1"))
    text = (el.text or "").strip()
    if fmt == "ascii":
        arr = np.array(text.split(), dtype=np.float64).astype(code)
    elif fmt == "binary":
        try:
            raw = base64.b64decode(text, validate=False)
        except ValueError:
            raise ValueError(f"{path}: DataArray {el.get('Name')!r} is not valid base64") from None
        hsize = 8 if header == "UInt64" else 4
        if len(raw) < hsize:
            raise ValueError(f"{path}: DataArray {el.get('Name')!r} is truncated")
        nbytes = int(np.frombuffer(raw[:hsize], dtype="<u8" if hsize == 8 else "<u4")[0])
        if len(raw) < hsize + nbytes:
            raise ValueError(f"{path}: DataArray {el.get('Name')!r} is truncated")
        arr = np.frombuffer(raw[hsize : hsize + nbytes], dtype=code)
    else:
        raise ValueError(
            f"{path}: DataArray format {fmt!r} is not supported (only inline ascii and binary); "
            "re-save the file with inline, uncompressed data"
        )
    arr = arr.astype(code[1:])
    return arr.reshape(-1, ncomp) if ncomp > 1 else arr


def read_vtp_polydata(path):
    """Read a ``.vtp`` file: ``(points (N, 3), triangles (F, 3), point_data dict)``.

    Polygons with more than three corners are fan-triangulated.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}: not a valid XML file ({e})") from None
    if root.tag != "VTKFile" or root.get("type") != "PolyData":
        raise ValueError(f"{path}: not a VTK XML PolyData file")
    inline = all(el.get("format", "ascii") in ("ascii", "binary") for el in root.iter("DataArray"))
    if root.get("compressor") or root.find("AppendedData") is not None or not inline:
        return _read_with_vtk(path)
    if root.get("byte_order", "LittleEndian") != "LittleEndian":
        return _read_with_vtk(path)
    header = root.get("header_type", "UInt32")
    piece = root.find("PolyData/Piece")
    if piece is None:
        raise ValueError(f"{path}: no PolyData Piece")
    n = int(piece.get("NumberOfPoints", "0"))
    pel = piece.find("Points/DataArray")
    if pel is None:
        raise ValueError(f"{path}: no Points")
    pts = _read_array(pel, path, header).reshape(-1, 3).astype(np.float64)
    if pts.shape[0] != n:
        raise ValueError(f"{path}: NumberOfPoints is {n} but {pts.shape[0]} points are stored")
    arrays = {el.get("Name"): el for el in piece.findall("Polys/DataArray")}
    if "connectivity" not in arrays or "offsets" not in arrays:
        raise ValueError(f"{path}: Polys needs connectivity and offsets arrays")
    conn = _read_array(arrays["connectivity"], path, header).astype(np.int64)
    offs = _read_array(arrays["offsets"], path, header).astype(np.int64)
    starts = np.concatenate([[0], offs[:-1]])
    counts = offs - starts
    if np.all(counts == 3):
        faces = conn.reshape(-1, 3)
    else:
        tris = [
            np.stack([np.full(c - 2, conn[s]), conn[s + 1 : s + c - 1], conn[s + 2 : s + c]], axis=1)
            for s, c in zip(starts, counts)
            if c >= 3
        ]
        faces = np.concatenate(tris) if tris else np.zeros((0, 3), dtype=np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= n):
        raise ValueError(f"{path}: polygon vertex index out of range (0..{n - 1})")
    data = {}
    for el in piece.findall("PointData/DataArray"):
        a = _read_array(el, path, header)
        if a.shape[0] != n:
            raise ValueError(f"{path}: point array {el.get('Name')!r} has {a.shape[0]} tuples, expected {n}")
        data[el.get("Name")] = a
    return pts, faces, data


def _read_with_vtk(path: Path):
    """A compressed, appended or big-endian ``.vtp`` through VTK's own reader."""
    try:
        import vtk
        from vtk.util.numpy_support import vtk_to_numpy
    except ImportError:
        raise ValueError(
            f"{path}: compressed or appended VTK XML (vtkXMLPolyDataWriter's default) needs the vtk package: "
            "pip install vtk (or re-save the file uncompressed, with inline data)"
        ) from None
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    if reader.GetErrorCode() or reader.GetOutput() is None:
        raise ValueError(f"{path}: vtkXMLPolyDataReader could not read the file")
    triangles = vtk.vtkTriangleFilter()
    triangles.SetInputData(reader.GetOutput())
    triangles.PassVertsOff()
    triangles.PassLinesOff()
    triangles.Update()
    out = triangles.GetOutput()
    n = reader.GetOutput().GetNumberOfPoints()
    if n == 0:
        raise ValueError(f"{path}: no points")
    pts = vtk_to_numpy(reader.GetOutput().GetPoints().GetData()).astype(np.float64)
    polys = out.GetPolys()
    if polys.GetNumberOfCells():
        faces = vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64).reshape(-1, 3)
    else:
        faces = np.zeros((0, 3), dtype=np.int64)
    data = {}
    pd = reader.GetOutput().GetPointData()
    for i in range(pd.GetNumberOfArrays()):
        arr = pd.GetArray(i)
        if arr is not None and arr.GetName():  # numeric arrays (string arrays are skipped)
            data[arr.GetName()] = vtk_to_numpy(arr).copy()
    return pts, faces, data
