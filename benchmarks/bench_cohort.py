"""`bayesshape batch` on an example cohort: serial against a local Dask cluster (wall time, equal
summaries), a re-run after kill -9 of the command, a run with one worker killed, a corrupt case.

    python benchmarks/bench_cohort.py --cases 20 --workers 2 --out out/cohort

Prints one line per figure and writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bayesshape.cli._cohort_example import write_example_cohort
from bayesshape.report.cohort import RUN_COLUMNS


def _cli(*args):
    return [sys.executable, "-m", "bayesshape.cli", "batch", *map(str, args), "--quiet"]


def _done(out: Path) -> list[str]:
    names = []
    for p in sorted((out / "status").glob("*.json")) if (out / "status").is_dir() else []:
        try:
            if json.loads(p.read_text())["status"] == "done":
                names.append(p.stem)
        except (ValueError, KeyError):
            pass
    return names


def _wait(proc, out: Path, n: int) -> None:
    while len(_done(out)) < n:
        if proc.poll() is not None:
            raise SystemExit(f"batch ended before {n} cases were done")
        time.sleep(0.2)


def _rows(out: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k not in RUN_COLUMNS}
        for r in json.loads((out / "cohort.json").read_text())["cases"]
    ]


def _stamps(out: Path) -> dict:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "cases").glob("*/posterior.npz")}


def _timed(args) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    run = subprocess.run(_cli(*args), capture_output=True, text=True)
    return time.perf_counter() - t0, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=128, help="detector pixels of the example masks")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    shutil.rmtree(out, ignore_errors=True)
    manifest = write_example_cohort(out / "in", a.cases, size=a.size)
    bad = sorted(p for p in (out / "in").iterdir() if p.is_dir())[a.cases // 3]
    (bad / "LAT_mask.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    model = out / "in" / "model.npz"
    res: dict = {"cases": a.cases, "workers": a.workers, "corrupt_case": bad.name}

    t_serial, run = _timed((manifest, "--model", model, "--out", out / "serial"))
    res["serial_s"] = t_serial
    t_cluster, run_c = _timed((manifest, "--model", model, "--out", out / "cluster", "--workers", a.workers))
    res["cluster_s"] = t_cluster
    res["summaries_equal"] = _rows(out / "serial") == _rows(out / "cluster")
    failed = [r for r in json.loads((out / "serial" / "cohort.json").read_text())["cases"] if r["status"] != "done"]
    res["failed"] = [(r["case"], r["error"]) for r in failed]
    print(f"serial: {t_serial:.0f} s; {a.workers}-worker local cluster: {t_cluster:.0f} s")
    print(f"summaries equal (all but wall time): {res['summaries_equal']}")
    print(f"failed cases: {res['failed']}")

    # kill -9 of the command once a third of the cases are done, then a re-run
    killed = out / "killed"
    proc = subprocess.Popen(_cli(manifest, "--model", model, "--out", killed), start_new_session=True)
    _wait(proc, killed, a.cases // 3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _stamps(killed)
    t, run = _timed((manifest, "--model", model, "--out", killed))
    kept = {k: v for k, v in _stamps(killed).items() if k in before} == before
    res["kill_command"] = {"finished_before": len(before), "rerun_s": t, "finished_kept": kept}
    res["kill_command"]["equal_to_serial"] = _rows(killed) == _rows(out / "serial")
    print(
        f"kill -9 of the command after {len(before)} cases: re-run {t:.0f} s, finished cases kept: {kept}, "
        f"summary equal to serial: {res['kill_command']['equal_to_serial']}"
    )

    # kill -9 of one worker once a case is done; the run goes on
    worker = out / "worker"
    proc = subprocess.Popen(
        _cli(manifest, "--model", model, "--out", worker, "--workers", a.workers),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait(proc, worker, 2)
    pid = int(json.loads((worker / "status" / f"{_done(worker)[0]}.json").read_text())["worker"].split(":")[1])
    os.kill(pid, signal.SIGKILL)
    stdout, _ = proc.communicate()
    res["kill_worker"] = {
        "returncode": proc.returncode,
        "cohort_line": next((ln for ln in stdout.splitlines() if ln.startswith("cohort:")), ""),
        "equal_to_serial": _rows(worker) == _rows(out / "serial"),
    }
    stamps = _stamps(worker)
    t, run = _timed((manifest, "--model", model, "--out", worker))
    res["kill_worker"]["rerun_line"] = run.stdout.splitlines()[0]
    res["kill_worker"]["finished_kept"] = _stamps(worker) == stamps
    print(f"kill -9 of a worker: {res['kill_worker']}")
    (out / "results.json").write_text(json.dumps(res, indent=2))
    print(f"wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
