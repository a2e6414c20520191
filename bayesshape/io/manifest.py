"""Cohort manifests: one reconstruction case per row, for ``bayesshape batch``.

A manifest is a CSV file with a header row, or a YAML file. Each case names its input files,
as ``bayesshape infer`` takes them; paths are relative to the manifest's folder (or absolute).

CSV (lines starting with ``#`` are comments, empty cells are "not given", several files in one
cell are separated by ``;``)::

    case,views,masks,truth
    case01,case01/views.json,case01/AP_mask.png;case01/LAT_mask.png,case01/truth.ply
    case02,case02/views.json,case02/AP_mask.png;case02/LAT_mask.png,

YAML (a list of cases, or a mapping with ``cases`` and optional ``defaults`` merged into each)::

    defaults:
      views: views.json
    cases:
      - case: case01
        masks: [case01/AP_mask.png, case01/LAT_mask.png]
        truth: case01/truth.ply
      - case: case02
        masks: [case02/AP_mask.png, case02/LAT_mask.png]
"""

from __future__ import annotations

import csv
import dataclasses
import re
from pathlib import Path
from typing import Any

__all__ = ["Case", "read_manifest", "MANIFEST_COLUMNS"]

#: columns naming files: one file, or several (one per view)
_ONE_FILE = ("views", "flat_field", "landmarks", "model_landmarks", "truth")
_FILES = ("masks", "images", "contours", "xray", "landmarks2d", "labels")
#: columns holding numbers (the ``bayesshape infer`` option of the same name, for this case alone)
_NUMBERS: dict[str, type] = {
    "seed": int,
    "sigma": float,
    "mu": float,
    "landmark_sigma": float,
    "air": float,
    "log_scale": float,
    "frame": int,
    "source_to_detector": float,
    "source_to_isocenter": float,
    "pixel_spacing": float,
}
_NUMBER_LISTS = ("primary_angle", "secondary_angle")

#: every column a manifest may have, besides ``case``
MANIFEST_COLUMNS = _ONE_FILE + _FILES + tuple(_NUMBERS) + _NUMBER_LISTS

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclasses.dataclass(frozen=True)
class Case:
    """One row of a manifest.

    Attributes:
        name: the case's name (its output folder's name): letters, digits, ``.``, ``_``, ``-``.
        inputs: column -> value, only the columns given: a path (``str``, resolved against the
            manifest's folder) for one-file columns, a tuple of paths for per-view columns, a number,
            or a tuple of numbers (angles).
        row: the row's number in the manifest (1 = the first case), for messages.
    """

    name: str
    inputs: dict[str, Any]
    row: int


def _split(value) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    return [v.strip() for v in str(value).split(";") if v.strip()]


def _parse(raw: dict, row: int, folder: Path, where: str) -> Case:
    unknown = sorted(k for k in raw if k != "case" and k not in MANIFEST_COLUMNS)
    if unknown:
        raise ValueError(
            f"{where}: unknown column(s) {', '.join(unknown)}; expected case and any of {', '.join(MANIFEST_COLUMNS)}"
        )
    name = raw.get("case")
    name = "" if name is None else str(name).strip()
    if not name:
        raise ValueError(f"{where}: case {row} has no name (the 'case' column)")
    if not _NAME.match(name):
        raise ValueError(
            f"{where}: case name {name!r} (case {row}) must be letters, digits, '.', '_' or '-' (it names a folder)"
        )
    inputs: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "case" or value is None or (isinstance(value, str) and not value.strip()):
            continue
        if key in _ONE_FILE:
            parts = _split(value)
            if len(parts) != 1:
                raise ValueError(f"{where}: case {name}: column {key} takes one file, got {len(parts)}")
            inputs[key] = str(folder / parts[0])
        elif key in _FILES:
            inputs[key] = tuple(str(folder / str(p)) for p in _split(value))
        else:
            kind = _NUMBERS.get(key, float)
            values = _split(value) if key in _NUMBER_LISTS else [value]
            try:
                parsed = [kind(str(v).strip()) if kind is int else float(v) for v in values]
            except (TypeError, ValueError):
                what = "an integer" if kind is int else "a number"
                raise ValueError(f"{where}: case {name}: column {key} must be {what}, got {value!r}") from None
            inputs[key] = tuple(parsed) if key in _NUMBER_LISTS else parsed[0]
    return Case(name, inputs, row)


def read_manifest(path) -> list[Case]:
    """Read a cohort manifest (CSV or YAML; see the module docstring).

    Args:
        path: ``.csv``, ``.yaml`` or ``.yml`` file.

    Returns:
        The cases in manifest order, with paths resolved against the manifest's folder. The files
        themselves are not opened here: a missing or corrupt file fails its case alone when the
        case runs.

    Raises:
        ValueError: unknown columns, a case without a name or with a name that cannot be a folder
            name, two cases of one name, a number column that does not hold a number, no cases.

    Example:
        >>> cases = read_manifest("cohort.csv")          # doctest: +SKIP
        >>> cases[0].name, cases[0].inputs["masks"]       # doctest: +SKIP
        ('case01', ('/data/case01/AP_mask.png', '/data/case01/LAT_mask.png'))
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"manifest {path}: no such file")
    folder = path.resolve().parent
    suffix = path.suffix.lower()
    rows: list[dict]
    if suffix == ".csv":
        with open(path, newline="") as fh:
            lines = [ln for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
        reader = csv.DictReader(lines)
        header = [h.strip() for h in (reader.fieldnames or [])]
        if "case" not in header:
            raise ValueError(f"manifest {path}: expected a header row with a 'case' column, got {header}")
        rows = []
        for r in reader:
            if None in r:
                raise ValueError(f"manifest {path}: a row has more cells than the header: {r[None]}")
            rows.append({(k or "").strip(): v for k, v in r.items()})
    elif suffix in (".yaml", ".yml"):
        import yaml

        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"manifest {path}: not valid YAML ({str(e).splitlines()[0]})") from None
        defaults: dict = {}
        if isinstance(doc, dict):
            extra = sorted(set(doc) - {"cases", "defaults"})
            if extra or "cases" not in doc:
                raise ValueError(f"manifest {path}: expected the keys 'cases' (and 'defaults'), got {sorted(doc)}")
            defaults = doc.get("defaults") or {}
            doc = doc["cases"]
            if not isinstance(defaults, dict):
                raise ValueError(f"manifest {path}: 'defaults' must be a mapping of columns")
        if not isinstance(doc, list) or not all(isinstance(c, dict) for c in doc):
            raise ValueError(f"manifest {path}: expected a list of cases, each a mapping of columns")
        rows = [{**defaults, **c} for c in doc]
    else:
        raise ValueError(f"manifest {path}: expected a .csv, .yaml or .yml file, got {path.suffix!r}")
    cases = [_parse(r, i + 1, folder, f"manifest {path}") for i, r in enumerate(rows)]
    if not cases:
        raise ValueError(f"manifest {path}: no cases")
    seen: dict[str, int] = {}
    for c in cases:
        if c.name in seen:
            raise ValueError(f"manifest {path}: case name {c.name!r} is given twice (cases {seen[c.name]} and {c.row})")
        seen[c.name] = c.row
    return cases
