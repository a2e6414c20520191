"""VTK legacy POLYDATA files (``.vtk``), ASCII and binary, read and write.

3D Slicer, ParaView, Statismo and ShapeWorks use this format; meshio does not read
POLYDATA, hence this small reader. Supported: ``POINTS``, ``POLYGONS`` (legacy
count-prefixed cells and the 5.1 ``OFFSETS``/``CONNECTIVITY`` layout), ``VERTICES``
and ``LINES`` (skipped), ``TRIANGLE_STRIPS`` (converted to triangles),
``POINT_DATA`` with ``SCALARS``, ``NORMALS``, ``VECTORS`` and ``FIELD`` arrays.
Polygons with more than three corners are fan-triangulated.
"""

from __future__ import annotations

from pathlib import Path
from typing import NoReturn

import numpy as np

from .._atomic import atomic_path

__all__ = ["read_vtk_polydata", "write_vtk_polydata"]

_TYPES = {
    "bit": "u1",
    "unsigned_char": "u1",
    "char": "i1",
    "unsigned_short": "u2",
    "short": "i2",
    "unsigned_int": "u4",
    "int": "i4",
    "unsigned_long": "u8",
    "long": "i8",
    "float": "f4",
    "double": "f8",
    "vtkidtype": "i4",
    "vtktypeint64": "i8",
    "vtktypeuint64": "u8",
    "vtktypeint32": "i4",
    "vtktypeuint32": "u4",
}


class _Reader:
    def __init__(self, data: bytes, binary: bool, path):
        self.data, self.binary, self.pos, self.path = data, binary, 0, path

    def fail(self, msg) -> NoReturn:
        raise ValueError(f"{self.path}: {msg}")

    def line(self) -> str | None:
        while self.pos < len(self.data):
            end = self.data.find(b"\n", self.pos)
            end = len(self.data) if end < 0 else end
            text = self.data[self.pos : end].decode("latin-1").strip()
            self.pos = end + 1
            if text:
                return text
        return None

    def skip_metadata(self) -> None:
        """Skip a VTK 9 ``METADATA`` block (``INFORMATION`` and ``COMPONENT_NAMES`` lines up to the
        first empty line) where one follows a data array."""
        save = self.pos
        if (self.line() or "").upper() != "METADATA":
            self.pos = save
            return
        self.skip_to_blank_line()

    def skip_to_blank_line(self) -> None:
        while self.pos < len(self.data):
            end = self.data.find(b"\n", self.pos)
            end = len(self.data) if end < 0 else end
            text = self.data[self.pos : end].strip()
            self.pos = end + 1
            if not text:
                return

    def array(self, count: int, vtk_type: str) -> np.ndarray:
        code = _TYPES.get(vtk_type.lower())
        if code is None:
            self.fail(f"unsupported VTK data type {vtk_type!r}")
        if self.binary:
            nbytes = count * np.dtype(code).itemsize
            if self.pos + nbytes > len(self.data):
                self.fail("file ends inside a binary data block (truncated?)")
            out = np.frombuffer(self.data, dtype=">" + code, count=count, offset=self.pos)
            self.pos += nbytes
            self.skip_metadata()
            return out.astype(code)
        vals: list[str] = []
        while len(vals) < count:
            ln = self.line()
            if ln is None:
                self.fail(f"file ends while reading {count} values (truncated?)")
            vals.extend(ln.split())
        if len(vals) != count:
            self.fail(f"expected {count} values in a data block, found {len(vals)}")
        try:
            out = np.asarray(vals, dtype=np.float64).astype(code)
        except ValueError:
            self.fail("non-numeric value in an ASCII data block")
        self.skip_metadata()
        return out


def _cells_legacy(arr: np.ndarray, n_cells: int, path):
    cells, i = [], 0
    for _ in range(n_cells):
        if i >= arr.size:
            raise ValueError(f"{path}: cell list shorter than its declared size")
        k = int(arr[i])
        cells.append(arr[i + 1 : i + 1 + k])
        i += 1 + k
    return cells


def _triangulate(polys) -> np.ndarray:
    tris = []
    for c in polys:
        c = np.asarray(c, dtype=np.int64)
        for j in range(1, len(c) - 1):
            tris.append((c[0], c[j], c[j + 1]))
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def _strips(strips) -> np.ndarray:
    tris = []
    for s in strips:
        for j in range(len(s) - 2):
            a, b, c = s[j], s[j + 1], s[j + 2]
            tris.append((a, b, c) if j % 2 == 0 else (b, a, c))
    return np.asarray(tris, dtype=np.int64).reshape(-1, 3)


def read_vtk_polydata(path):
    """Read a legacy VTK POLYDATA file.

    Returns:
        ``(points (N, 3) float64, faces (F, 3) int64, point_data dict[str, ndarray])``.

    Raises:
        ValueError: not a legacy VTK file, not POLYDATA, truncated, or malformed.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    data = path.read_bytes()
    head = _Reader(data, False, path)
    if not (head.line() or "").startswith("# vtk DataFile"):
        raise ValueError(f"{path}: not a legacy VTK file (first line must start with '# vtk DataFile')")
    head.line()  # title
    fmt = (head.line() or "").upper()
    if fmt not in ("ASCII", "BINARY"):
        raise ValueError(f"{path}: third line must be ASCII or BINARY, got {fmt!r}")
    rd = _Reader(data, fmt == "BINARY", path)
    rd.pos = head.pos
    ds = (rd.line() or "").split()
    if ds[:2] != ["DATASET", "POLYDATA"]:
        raise ValueError(f"{path}: expected 'DATASET POLYDATA', got {' '.join(ds)!r}")
    points, polys, point_data, n_points = None, [], {}, None
    section = None
    while True:
        ln = rd.line()
        if ln is None:
            break
        tok = ln.split()
        key = tok[0].upper()
        if key == "POINTS":
            n_points = int(tok[1])
            points = rd.array(3 * n_points, tok[2]).astype(np.float64).reshape(n_points, 3)
        elif key in ("POLYGONS", "TRIANGLE_STRIPS", "VERTICES", "LINES"):
            n_cells, size = int(tok[1]), int(tok[2])
            nxt_pos = rd.pos
            nxt = rd.line()
            if nxt is not None and nxt.upper().startswith("OFFSETS"):
                offsets = rd.array(n_cells, nxt.split()[1]).astype(np.int64)
                conn_hdr = (rd.line() or "").split()
                if not conn_hdr or conn_hdr[0].upper() != "CONNECTIVITY":
                    raise ValueError(f"{path}: OFFSETS without CONNECTIVITY")
                conn = rd.array(size, conn_hdr[1]).astype(np.int64)
                cells = [conn[offsets[i] : offsets[i + 1]] for i in range(n_cells - 1)]
            else:
                rd.pos = nxt_pos
                cells = _cells_legacy(rd.array(size, "int").astype(np.int64), n_cells, path)
            if key == "POLYGONS":
                polys.append(_triangulate(cells))
            elif key == "TRIANGLE_STRIPS":
                polys.append(_strips(cells))
        elif key == "POINT_DATA":
            section = "point"
        elif key == "CELL_DATA":
            section = "cell"
        elif key == "METADATA":  # a block not after an array (the readers above skip those)
            rd.skip_to_blank_line()
        elif key in ("SCALARS", "NORMALS", "VECTORS", "TENSORS", "FIELD", "TEXTURE_COORDINATES", "COLOR_SCALARS"):
            n = n_points if section == "point" else None
            if n is None:
                raise ValueError(f"{path}: {key} outside POINT_DATA is not supported")
            store = point_data if section == "point" else {}
            if key == "SCALARS":
                ncomp = int(tok[3]) if len(tok) > 3 else 1
                save = rd.pos
                lut = rd.line()
                if lut is None or not lut.upper().startswith("LOOKUP_TABLE"):
                    rd.pos = save
                arr = rd.array(n * ncomp, tok[2])
                store[tok[1]] = arr.reshape(n, ncomp) if ncomp > 1 else arr
            elif key in ("NORMALS", "VECTORS"):
                store[tok[1]] = rd.array(n * 3, tok[2]).reshape(n, 3)
            elif key == "TEXTURE_COORDINATES":
                store[tok[1]] = rd.array(n * int(tok[2]), tok[3]).reshape(n, int(tok[2]))
            elif key == "TENSORS":
                store[tok[1]] = rd.array(n * 9, tok[2]).reshape(n, 3, 3)
            elif key == "COLOR_SCALARS":
                ncomp = int(tok[2])
                arr = rd.array(n * ncomp, "unsigned_char" if rd.binary else "float")
                store[tok[1]] = arr.reshape(n, ncomp)
            else:  # FIELD name k, then k arrays "name ncomp ntuples type"
                for _ in range(int(tok[2])):
                    hdr = (rd.line() or "").split()
                    if len(hdr) < 4:
                        raise ValueError(f"{path}: malformed FIELD array header")
                    ncomp, ntup = int(hdr[1]), int(hdr[2])
                    arr = rd.array(ncomp * ntup, hdr[3])
                    store[hdr[0]] = arr.reshape(ntup, ncomp) if ncomp > 1 else arr
        else:
            raise ValueError(f"{path}: unsupported VTK keyword {tok[0]!r}")
    if points is None:
        raise ValueError(f"{path}: no POINTS section")
    faces = np.concatenate(polys) if polys else np.zeros((0, 3), dtype=np.int64)
    if faces.size and (faces.min() < 0 or faces.max() >= n_points):
        raise ValueError(f"{path}: polygon vertex index out of range (0..{n_points - 1})")
    return points, faces, point_data


def _vtk_type(a: np.ndarray) -> tuple[str, str]:
    """(VTK legacy type name, NumPy code) an array is written as."""
    if a.dtype == bool or a.dtype == np.uint8:
        return "unsigned_char", "u1"
    if np.issubdtype(a.dtype, np.integer):
        return "int", "i4"
    return ("double", "f8") if a.dtype == np.float64 else ("float", "f4")


def write_vtk_polydata(
    path,
    points,
    faces,
    point_data: dict | None = None,
    *,
    active: str | None = None,
    binary: bool = True,
    title: str = "bayesshape",
    space: str = "LPS",
) -> None:
    """Write points, triangles and per-vertex arrays as legacy VTK POLYDATA (atomic).

    The active array (``active``, default the first of ``point_data``) is written as
    ``SCALARS``, and every other array in one ``FIELD`` block, so that a default
    ``vtkPolyDataReader`` (ParaView, VTK) sees all of them, not only the first as with a
    run of ``SCALARS``. Types: ``bool`` and ``uint8`` as ``unsigned_char`` (colours, flags),
    other integers as ``int``, ``float64`` as ``double``, other floats as ``float``. The
    header line carries ``SPACE=LPS`` (or ``space``), which 3D Slicer reads as the frame.

    Args:
        path: the ``.vtk`` file.
        points: ``(N, 3)`` vertices, mm.
        faces: ``(F, 3)`` triangles.
        point_data: names (no spaces) to arrays ``(N,)`` or ``(N, c)``.
        active: the array to make the active scalars.
        binary: binary (default) or ASCII data.
        title: the header line (``SPACE=...`` is appended).
        space: ``"LPS"`` or ``"RAS"``.
    """
    pts = np.asarray(points, dtype=np.float64)
    fc = np.asarray(faces, dtype=np.int64)
    n = pts.shape[0]
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"points: expected shape (N, 3), got {pts.shape}")
    if fc.ndim != 2 or fc.shape[1] != 3:
        raise ValueError(f"faces: expected shape (F, 3), got {fc.shape}")
    if space not in ("LPS", "RAS"):
        raise ValueError(f"space: expected 'LPS' or 'RAS', got {space!r}")
    if "\n" in title:
        raise ValueError("title: must be one line")
    arrays = {}
    for name, arr in (point_data or {}).items():
        a = np.asarray(arr)
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"point_data: array name {name!r} must be non-empty and without spaces")
        if a.shape[:1] != (n,) or a.ndim > 2 or (a.ndim == 2 and not 1 <= a.shape[1] <= 4):
            raise ValueError(f"point_data[{name!r}]: expected shape ({n},) or ({n}, c<=4), got {a.shape}")
        arrays[name] = a
    if active is not None and active not in arrays:
        raise ValueError(f"active: {active!r} is not one of the point_data arrays {sorted(arrays)}")
    chunks: list[bytes] = []

    def put(text: str):
        chunks.append(text.encode("ascii"))

    def block(arr: np.ndarray, code: str):
        if binary:
            chunks.append(np.ascontiguousarray(arr, dtype=">" + code).tobytes())
            put("\n")
        else:
            flat = np.asarray(arr).reshape(-1)
            fmtv = "%d" if code.startswith(("i", "u")) else "%.17g"
            put("\n".join(" ".join(fmtv % v for v in flat[i : i + 9]) for i in range(0, flat.size, 9)) + "\n")

    put(f"# vtk DataFile Version 3.0\n{title} SPACE={space}\n{'BINARY' if binary else 'ASCII'}\nDATASET POLYDATA\n")
    put(f"POINTS {n} double\n")
    block(pts, "f8")
    cells = np.concatenate([np.full((fc.shape[0], 1), 3, dtype=np.int64), fc], axis=1)
    put(f"POLYGONS {fc.shape[0]} {cells.size}\n")
    block(cells.astype(np.int32), "i4")
    if arrays:
        put(f"POINT_DATA {n}\n")
        first = active or next(iter(arrays))
        a = arrays[first]
        vt, code = _vtk_type(a)
        put(f"SCALARS {first} {vt} {1 if a.ndim == 1 else a.shape[1]}\nLOOKUP_TABLE default\n")
        block(a.astype(code), code)
        rest = {k: v for k, v in arrays.items() if k != first}
        if rest:
            put(f"FIELD FieldData {len(rest)}\n")
            for name, a in rest.items():
                vt, code = _vtk_type(a)
                put(f"{name} {1 if a.ndim == 1 else a.shape[1]} {n} {vt}\n")
                block(a.astype(code), code)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(b"".join(chunks))
