"""A cohort of case folders: one row per case (status, error against the truth where known,
reliability, diagnostics, wall time) as CSV, JSON and a self-contained HTML page.

Layout of a cohort folder (``bayesshape batch``)::

    OUT/cases/NAME/          each case's folder (write_case), complete or absent
    OUT/status/NAME.json     each case's last run: done or failed (with the error), wall time, worker
    OUT/cohort.csv, OUT/cohort.json, OUT/cohort.html
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from pathlib import Path

from .._atomic import atomic_path
from ..export import write_json
from .case import _check_summary
from .html import _CSS

__all__ = ["case_finished", "cohort_row", "read_summary", "write_cohort", "COHORT_COLUMNS"]

#: the columns of ``cohort.csv``, in order (``cohort.json`` holds the same per case)
COHORT_COLUMNS = (
    "case",
    "status",
    "error",
    "method",
    "reliable",
    "uncertain",
    "misfitting",
    "score",
    "fraction_vertices_flagged",
    "mean_credible_radius_mm",
    "max_credible_radius_mm",
    "error_mean_mm",
    "error_p95_mm",
    "error_max_mm",
    "coverage_95",
    "max_rhat",
    "min_ess_bulk",
    "divergences",
    "warnings",
    "wall_time_s",
)

#: columns that differ between two runs of the same cohort (timing, where it ran)
RUN_COLUMNS = ("wall_time_s",)


def read_summary(case_dir) -> dict | None:
    """A case folder's ``summary.json`` when the folder is complete and the file valid, else ``None``."""
    case_dir = Path(case_dir)
    path = case_dir / "summary.json"
    if not (path.is_file() and (case_dir / "posterior.npz").is_file()):
        return None
    try:
        summary = json.loads(path.read_text())
        _check_summary(summary, path)
    except (ValueError, OSError):
        return None
    return summary


def case_finished(case_dir) -> bool:
    """Is this case folder complete (posterior and a valid ``summary.json``)? Case folders are
    written whole and renamed into place, so a killed run leaves none."""
    return read_summary(case_dir) is not None


def cohort_row(name: str, summary: dict | None, status: dict | None) -> dict:
    """One row of the cohort table from a case's ``summary.json`` (``None`` when it has none) and its
    status record (``None`` when it never ran)."""
    row: dict = dict.fromkeys(COHORT_COLUMNS)
    row["case"] = name
    if summary is None:
        row["status"] = "failed" if status and status.get("status") == "failed" else "missing"
        row["error"] = (status or {}).get("error")
        row["wall_time_s"] = (status or {}).get("wall_time_s")
        return row
    row["status"] = "done"
    rel = summary.get("reliability", {})
    for key in ("reliable", "uncertain", "misfitting", "score", "fraction_vertices_flagged"):
        row[key] = rel.get(key)
    for key in ("mean_credible_radius_mm", "max_credible_radius_mm"):
        row[key] = rel.get(key)
    post = summary.get("posterior", {})
    row["method"] = post.get("method")
    diag = post.get("diagnostics", {})
    for key in ("max_rhat", "min_ess_bulk", "divergences"):
        row[key] = diag.get(key)
    row["warnings"] = len(diag.get("warnings", []))
    err = summary.get("error_mm")
    if err:
        row["error_mean_mm"] = err.get("vertex_mean")
        row["error_p95_mm"] = err.get("vertex_p95")
        row["error_max_mm"] = err.get("vertex_max")
        row["coverage_95"] = err.get("coverage_95")
    row["wall_time_s"] = summary.get("wall_time_s", (status or {}).get("wall_time_s"))
    return row


def _totals(rows: list[dict]) -> dict:
    done = [r for r in rows if r["status"] == "done"]

    def mean(key):
        vals = [float(r[key]) for r in done if isinstance(r[key], (int, float)) and not isinstance(r[key], bool)]
        return float(sum(vals) / len(vals)) if vals else None

    return {
        "cases": len(rows),
        "done": len(done),
        "failed": sum(r["status"] == "failed" for r in rows),
        "missing": sum(r["status"] == "missing" for r in rows),
        "reliable": sum(bool(r["reliable"]) for r in done),
        "error_mean_mm": mean("error_mean_mm"),
        "error_p95_mm": mean("error_p95_mm"),
        "coverage_95": mean("coverage_95"),
        "mean_credible_radius_mm": mean("mean_credible_radius_mm"),
        "wall_time_s": sum(float(r["wall_time_s"] or 0.0) for r in rows),
    }


def _csv_text(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COHORT_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: "" if r[k] is None else (repr(r[k]) if isinstance(r[k], float) else r[k]) for k in r})
    return buf.getvalue()


def _cell(key: str, v) -> str:
    if v is None:
        return "<td></td>"
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, float):
        if not math.isfinite(v):
            return f"<td class=num>{v}</td>"
        text = f"{100 * v:.1f}%" if key in ("coverage_95", "fraction_vertices_flagged") else f"{v:.2f}"
        return f"<td class=num>{text}</td>"
    if isinstance(v, int):
        return f"<td class=num>{v}</td>"
    return f"<td>{html.escape(str(v))}</td>"


def _html(rows: list[dict], totals: dict, title: str, links: dict) -> str:
    shown = [c for c in COHORT_COLUMNS if any(r[c] is not None for r in rows)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in shown)
    body = []
    for r in rows:
        cls = {"done": "ok" if r["reliable"] else "", "failed": "bad", "missing": "bad"}[r["status"]]
        cells = []
        for c in shown:
            if c == "case" and r["case"] in links:
                cells.append(f'<td><a href="{html.escape(links[r["case"]])}">{html.escape(r["case"])}</a></td>')
            else:
                cells.append(_cell(c, r[c]))
        body.append(f'<tr class="{cls}">' + "".join(cells) + "</tr>")
    tot = "".join(f"<tr><th>{html.escape(k)}</th>{_cell(k, v)}</tr>" for k, v in totals.items())
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><h2>Cohort</h2><table>{tot}</table>"
        "<h2>Cases</h2><p class=muted>Green: reliable; red: failed or not run. A case name links to its report "
        "where one was written (--report).</p>"
        f"<table><tr>{head}</tr>{''.join(body)}</table></body></html>"
    )


def write_cohort(out, rows: list[dict], *, title: str = "bayesshape cohort") -> dict:
    """Write ``cohort.csv``, ``cohort.json`` and ``cohort.html`` into ``out`` (each atomically)
    from :func:`cohort_row` rows; returns the JSON document (``{"totals": ..., "cases": rows}``)."""
    out = Path(out)
    totals = _totals(rows)
    doc = {"columns": list(COHORT_COLUMNS), "totals": totals, "cases": rows}
    write_json(out / "cohort.json", doc)
    with atomic_path(out / "cohort.csv") as tmp:
        Path(tmp).write_text(_csv_text(rows))
    links = {r["case"]: f"cases/{r['case']}/report.html" for r in rows}
    links = {k: v for k, v in links.items() if (out / v).is_file()}
    with atomic_path(out / "cohort.html") as tmp:
        Path(tmp).write_text(_html(rows, totals, title, links))
    return doc
