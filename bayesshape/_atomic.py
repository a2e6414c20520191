"""Atomic file output: write to a temporary file in the target folder, then rename."""

from __future__ import annotations

import contextlib
import os
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
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def json_default(o):
    """``json.dumps`` fallback: NumPy arrays as lists, NumPy scalars as Python numbers."""
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return str(o)


def read_npz(path, what: str) -> dict:
    """All arrays of an ``.npz`` file, never unpickling; ``ValueError`` naming ``what`` otherwise."""
    import numpy as np

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such {what} file")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:  # pickled object arrays (ValueError), zip and OS errors on junk files
        raise ValueError(f"{path}: not a readable {what} file ({type(e).__name__}: {e})") from None
