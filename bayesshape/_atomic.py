"""Atomic file output: write to a temporary file in the target folder, then rename."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    An exception inside the block removes the temporary file and leaves any
    existing ``path`` untouched, so an interrupted run never leaves a
    half-written output.

    Example:
        >>> with atomic_path("model.h5") as tmp:   # doctest: +SKIP
        ...     write_something(tmp)
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise ValueError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent or ".")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_STALE = re.compile(r"^\..+\.tmp(\.[A-Za-z0-9]+)?$")


def remove_stale_temporaries(folder) -> int:
    """Remove the hidden temporary files that :func:`atomic_path` leaves in ``folder`` (not below it)
    when a process is killed mid-write; returns how many were removed."""
    folder = Path(folder)
    n = 0
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and _STALE.match(p.name):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
                    n += 1
    return n


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike):
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` as a whole.

    A folder written this way is complete or absent: a run killed inside the block leaves only a
    hidden ``.NAME.partial-*`` sibling (removed by the next write to the same path), and an
    existing folder at ``path`` is replaced only once the new one is complete.
    """
    path = Path(path)
    parent = path.parent
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path}: exists and is not a folder")
    parent.mkdir(parents=True, exist_ok=True)
    for stale in list(parent.glob(f".{path.name}.partial-*")) + list(parent.glob(f".{path.name}.old-*")):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if path.exists():
            old = parent / f".{path.name}.old-{os.getpid()}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def json_default(o):
    """``json.dumps`` fallback: NumPy arrays as lists, NumPy scalars as Python numbers."""
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return str(o)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _check_npz_members(path: Path, what: str) -> None:
    """Every array header of an ``.npz`` against the bytes it holds, before anything is read: an
    object array (pickled data, never loaded) or an array that declares more data than its member
    holds (a corrupt or forged header) is refused here, not by a MemoryError later."""
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            with zf.open(info) as fh:
                try:
                    version = np.lib.format.read_magic(fh)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(fh)  # the header only, no data
                except ValueError as e:
                    raise ValueError(f"{path}: {info.filename} is not a NumPy array ({e})") from None
                header = fh.tell()
            if dtype.hasobject:
                raise ValueError(
                    f"{path}: {info.filename} holds Python objects (pickled data), which bayesshape never loads; "
                    f"this is not a bayesshape {what} file"
                )
            declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if declared > info.file_size - header:
                raise ValueError(
                    f"{path}: {info.filename} declares an array of shape {shape} ({declared:.3g} bytes) but holds "
                    f"{info.file_size - header} bytes; the file is corrupt"
                )


def read_npz(path, what: str) -> dict:
    """All arrays of an ``.npz`` file, never unpickling; ``ValueError`` naming ``what`` and the
    problem otherwise (missing, another format, corrupt, forged sizes, pickled objects)."""

    import numpy as np

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file (a bayesshape {what} file was expected)")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a {what} file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(_HDF5_SIGNATURE):
        raise ValueError(
            f"{path}: this is an HDF5 file, not a bayesshape {what} file (.npz); Statismo and Scalismo models "
            "are read with bayesshape.io.load_statismo (the command line takes them as .h5)"
        )
    if not head.startswith(b"PK"):
        raise ValueError(f"{path}: not a bayesshape {what} file (not an .npz archive: corrupt or another format)")
    try:
        _check_npz_members(path, what)
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except ValueError:
        raise
    except Exception as e:  # zip and OS errors on damaged files
        raise ValueError(
            f"{path}: not a readable {what} file, corrupt or truncated ({type(e).__name__}: {e})"
        ) from None
