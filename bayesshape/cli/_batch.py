"""``bayesshape batch``: every case of a manifest through ``bayesshape infer``, serially or on a
Dask cluster, resumable, with a cohort summary."""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import sys
import time
import traceback
import warnings
from pathlib import Path

from . import _commands, _files

BATCH_HELP = """\
Reconstruct a cohort: every case of a manifest (CSV or YAML, one case per row, its input files
as `bayesshape infer` takes them) with one model and one set of options. Writes one case folder
per case (OUT/cases/NAME), a status record per case (OUT/status/NAME.json) and the cohort
summary (OUT/cohort.csv, cohort.json, cohort.html).

Resumable: a case whose folder is complete is skipped on a re-run; a case that was interrupted
or failed is run again. A failing case is recorded with its error and does not stop the others
(the exit code is then 1). Serial by default; --workers N starts a local Dask cluster of N
worker processes, --scheduler ADDRESS uses a running one (each case is one task).

manifest columns: case (the folder name), views, masks, labels, images, contours, xray, flat_field,
landmarks, landmarks2d, model_landmarks, truth (files; several per cell separated by ';',
relative to the manifest's folder), and per-case numbers seed, sigma, mu, landmark_sigma, air,
log_scale, frame, source_to_detector, source_to_isocenter, pixel_spacing, primary_angle,
secondary_angle.

example:
  bayesshape batch cohort.csv --model femur.npz --method laplace --out cohort
  bayesshape batch cohort.yaml --model femur.npz --workers 4 --out cohort
  bayesshape batch cohort.csv --model femur.npz --scheduler tcp://10.0.0.5:8786 --out cohort
"""

#: manifest column -> ``bayesshape infer`` argument (the same name unless listed)
_PER_VIEW = ("masks", "images", "contours", "xray", "landmarks2d", "labels")


def case_namespace(base: dict, inputs: dict, out: Path) -> argparse.Namespace:
    """The ``bayesshape infer`` arguments of one case: the batch's options, then the manifest row."""
    ns = dict(base)
    for key, value in inputs.items():
        ns[key] = list(value) if key in _PER_VIEW or key in ("primary_angle", "secondary_angle") else value
    ns["out"] = str(out)
    ns["quiet"] = True
    return argparse.Namespace(**ns)


def run_case(spec: dict) -> dict:
    """Run one case (``bayesshape infer`` with its arguments) and write its status record.

    Returns the record: ``case``, ``status`` (``done`` or ``failed``), ``error`` (one line: the
    exception's type and message), ``wall_time_s``, ``worker`` (host:pid), ``log`` (what infer
    printed) and ``warnings``. Any exception of the case is caught and recorded."""
    from ..export import write_json

    t0 = time.perf_counter()
    buf = io.StringIO()
    error, detail = None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with contextlib.redirect_stdout(buf):
                _commands.infer(argparse.Namespace(**spec["args"]))
        except Exception as e:  # a case's failure is recorded, whatever it is; the cohort goes on
            msg = str(e).splitlines()[0] if str(e) else ""
            error = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
            if not isinstance(e, (ValueError, OSError)):
                detail = traceback.format_exc().splitlines()
    record = {
        "case": spec["name"],
        "status": "failed" if error else "done",
        "error": error,
        "wall_time_s": time.perf_counter() - t0,
        "worker": f"{socket.gethostname()}:{os.getpid()}",
        "log": buf.getvalue().splitlines(),
        "warnings": list(dict.fromkeys(str(w.message).splitlines()[0] for w in caught)),
    }
    if detail:
        record["traceback"] = detail
    write_json(spec["status"], record)
    return record


def _client(args):
    """A Dask client: of a running scheduler (``--scheduler``) or of a new local cluster (``--workers``)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ValueError(
            "--workers/--scheduler need Dask distributed: pip install 'bayesshape[cluster]' (or 'dask[distributed]')"
        ) from None
    if args.scheduler:
        return Client(args.scheduler, timeout=30), None
    cluster = LocalCluster(
        n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    )
    return Client(cluster), cluster


def _run_all(specs: list[dict], args, progress) -> list[dict]:
    if not (args.workers or args.scheduler):
        out = []
        for spec in specs:
            out.append(run_case(spec))
            progress(out[-1])
        return out
    from dask.distributed import as_completed

    client, cluster = _client(args)
    try:
        futures = client.map(run_case, specs, key=[f"bayesshape-{s['name']}-{time.time_ns()}" for s in specs])
        name_of = {f.key: s["name"] for f, s in zip(futures, specs)}
        status_of = {s["name"]: s["status"] for s in specs}
        out = []
        for fut in as_completed(futures):
            try:
                rec = fut.result()
            except Exception as e:  # the task itself failed: its worker died too often (KilledWorker)
                from ..export import write_json

                name = name_of[fut.key]
                msg = str(e).splitlines()[0] if str(e) else ""
                rec = {"case": name, "status": "failed", "error": f"{type(e).__name__}: {msg}", "wall_time_s": None}
                write_json(status_of[name], rec)
            out.append(rec)
            progress(rec)
        return out
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def batch(args) -> int:
    import json

    from ..io.manifest import read_manifest
    from ..report.cohort import cohort_row, read_summary, write_cohort
    from . import build_parser

    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers: expected a positive number of worker processes, got {args.workers}")
    if args.workers and args.scheduler:
        raise ValueError("give --workers (a local cluster) or --scheduler (a running one), not both")
    cases = read_manifest(args.manifest)
    _files.check_output_folder(args.out)
    model = _files.read_model(args.model, args.group)  # a bad model fails the batch before any case
    del model
    out = Path(args.out)
    (out / "cases").mkdir(parents=True, exist_ok=True)
    (out / "status").mkdir(exist_ok=True)

    base = vars(build_parser().parse_args(["infer", "--model", "m", "--out", "o"]))
    for key, value in vars(args).items():
        if key in base and key not in ("func", "command", "out"):
            base[key] = value
    base["model"] = str(Path(args.model).resolve())
    base.pop("func")

    specs, finished = [], []
    for case in cases:
        case_dir = out / "cases" / case.name
        if read_summary(case_dir) is not None:
            finished.append(case.name)
            continue
        ns = case_namespace(base, case.inputs, case_dir)
        specs.append({"name": case.name, "args": vars(ns), "status": str(out / "status" / f"{case.name}.json")})
    how = f"{args.workers} local workers" if args.workers else (args.scheduler or "serially")
    print(f"{len(cases)} cases: {len(finished)} finished before, {len(specs)} to run ({how})")

    from tqdm.auto import tqdm

    bar = tqdm(total=len(specs), unit="case", disable=args.quiet or not specs, file=sys.stderr)
    failed = []

    def progress(rec):
        bar.update(1)
        if rec["status"] == "failed":
            failed.append(rec["case"])
            bar.write(f"case {rec['case']} failed: {rec['error']}", file=sys.stderr)

    try:
        _run_all(specs, args, progress)
    finally:
        bar.close()

    rows = []
    for case in cases:
        status_path = out / "status" / f"{case.name}.json"
        status = None
        if status_path.is_file():
            with contextlib.suppress(ValueError, OSError):
                status = json.loads(status_path.read_text())
        rows.append(cohort_row(case.name, read_summary(out / "cases" / case.name), status))
    doc = write_cohort(out, rows, title=f"bayesshape cohort: {Path(args.manifest).name}")
    t = doc["totals"]
    line = f"cohort: {t['done']} of {t['cases']} cases done, {t['failed']} failed, {t['reliable']} reliable"
    if t["error_mean_mm"] is not None:
        line += f"; mean vertex error {t['error_mean_mm']:.2f} mm, 95% coverage {100 * t['coverage_95']:.1f}%"
    print(line)
    for r in rows:
        if r["status"] != "done":
            print(f"case {r['case']}: {r['status']}" + (f": {r['error']}" if r["error"] else ""))
    print(f"wrote {out / 'cohort.csv'}, cohort.json and cohort.html")
    return 0 if t["done"] == t["cases"] else 1
