"""``bayesshape batch``: manifests, resumption after kill -9 (of the command and of a Dask worker),
a failing case that stops nothing, and a 2-worker local cluster equal to the serial run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bayesshape.cli import main
from bayesshape.cli._cohort_example import write_example_cohort
from bayesshape.io.manifest import MANIFEST_COLUMNS, read_manifest
from bayesshape.report.cohort import COHORT_COLUMNS, RUN_COLUMNS

N_CASES = 4
CORRUPT = "case003"


# ------------------------------------------------------------------ manifests
def test_manifest_csv_and_yaml_agree(tmp_path):
    (tmp_path / "a.csv").write_text(
        "# a comment\ncase,views,masks,truth,seed,primary_angle\n"
        "p1,v.json,p1/AP.png;p1/LAT.png,p1/t.ply,3,0;90\n"
        "p2,v.json,p2/AP.png ; p2/LAT.png,,,\n"
    )
    (tmp_path / "a.yaml").write_text(
        "defaults:\n  views: v.json\ncases:\n"
        "  - {case: p1, masks: [p1/AP.png, p1/LAT.png], truth: p1/t.ply, seed: 3, primary_angle: [0, 90]}\n"
        "  - {case: p2, masks: p2/AP.png;p2/LAT.png}\n"
    )
    a, b = read_manifest(tmp_path / "a.csv"), read_manifest(tmp_path / "a.yaml")
    assert a == b
    assert [c.name for c in a] == ["p1", "p2"]
    assert a[0].inputs["masks"] == (str(tmp_path / "p1/AP.png"), str(tmp_path / "p1/LAT.png"))
    assert a[0].inputs["seed"] == 3 and a[0].inputs["primary_angle"] == (0.0, 90.0)
    assert "truth" not in a[1].inputs and "seed" not in a[1].inputs
    assert set(a[0].inputs) <= set(MANIFEST_COLUMNS)


@pytest.mark.parametrize(
    "text, match",
    [
        ("case,mask\np1,a.png\n", "unknown column"),
        ("views,masks\nv.json,a.png\n", "'case' column"),
        ("case,masks\np1,a.png\np1,b.png\n", "given twice"),
        ("case,masks\n../up,a.png\n", "folder"),
        ("case,masks\n,a.png\n", "no name"),
        ("case,seed\np1,one\n", "seed must be an integer"),
        ("case,truth\np1,a.ply;b.ply\n", "takes one file"),
        ("case,masks\n", "no cases"),
    ],
)
def test_manifest_errors_name_the_problem(tmp_path, text, match):
    (tmp_path / "m.csv").write_text(text)
    with pytest.raises(ValueError, match=match):
        read_manifest(tmp_path / "m.csv")


def test_batch_refuses_a_bad_manifest_before_any_work(tmp_path, capsys):
    (tmp_path / "m.txt").write_text("case\n")
    assert main(["batch", str(tmp_path / "m.txt"), "--model", "x.npz", "--out", str(tmp_path / "o")]) == 2
    assert "expected a .csv, .yaml or .yml file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------ cohorts
@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cohort")
    manifest = write_example_cohort(folder / "in", N_CASES, size=64, train=8)
    (folder / "in" / CORRUPT / "LAT_mask.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png at all")
    return manifest, folder / "in" / "model.npz"


def _cli(*args):
    return [sys.executable, "-m", "bayesshape.cli", "batch", *map(str, args), "--quiet"]


def _run(*args):
    return subprocess.run(_cli(*args), capture_output=True, text=True, timeout=400)


def _done(out: Path) -> list[str]:
    done = []
    for p in sorted((out / "status").glob("*.json")) if (out / "status").is_dir() else []:
        try:
            if json.loads(p.read_text())["status"] == "done":
                done.append(p.stem)
        except (ValueError, KeyError):
            pass
    return done


def _wait(proc, out, n, timeout=240.0):
    t0 = time.monotonic()
    while len(_done(out)) < n:
        assert proc.poll() is None, f"batch ended before {n} cases were done: {proc.communicate()}"
        assert time.monotonic() - t0 < timeout, "batch too slow"
        time.sleep(0.2)


def _stamps(out: Path) -> dict:
    return {p.parent.name: p.stat().st_mtime_ns for p in (out / "cases").glob("*/posterior.npz")}


def _rows(out: Path) -> list[dict]:
    doc = json.loads((out / "cohort.json").read_text())
    return [{k: v for k, v in r.items() if k not in RUN_COLUMNS} for r in doc["cases"]]


@pytest.mark.slow
def test_batch_resumes_after_kill_and_a_cluster_matches_serial(cohort, tmp_path):
    manifest, model = cohort
    # every batch process here compiles the same likelihoods: the run's persistent compilation cache
    # (tests/conftest.py, inherited through the environment) lets the later ones load them
    assert os.environ.get("JAX_COMPILATION_CACHE_DIR")
    serial = tmp_path / "serial"

    # serial, killed with SIGKILL once a case is done
    proc = subprocess.Popen(_cli(manifest, "--model", model, "--out", serial), start_new_session=True)
    try:
        _wait(proc, serial, 1)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = _stamps(serial)
    assert 1 <= len(before) < N_CASES - 1 and not (serial / "cohort.json").exists()
    assert all(not p.name.startswith(".") for p in (serial / "cases").iterdir() if p.name in before)

    # the re-run skips the finished cases, runs the rest; the corrupt case fails alone
    # (each run is a process of its own: the CLI's float32, not the test process's float64)
    run = _run(manifest, "--model", model, "--out", serial)
    assert run.returncode == 1, run.stderr
    assert f"{N_CASES} cases: {len(before)} finished before, {N_CASES - len(before)} to run" in run.stdout
    assert {k: v for k, v in _stamps(serial).items() if k in before} == before  # finished cases not redone
    assert f"case {CORRUPT}: failed: ValueError:" in run.stdout and "LAT_mask.png" in run.stdout
    rows = {r["case"]: r for r in _rows(serial)}
    assert set(rows) == {f"case{i:03d}" for i in range(1, N_CASES + 1)}
    assert rows[CORRUPT]["status"] == "failed" and "LAT_mask.png" in rows[CORRUPT]["error"]
    assert all(r["status"] == "done" and r["error_mean_mm"] < 5.0 for k, r in rows.items() if k != CORRUPT)
    assert not list((serial / "cases").glob(".*")), "temporary folders left behind"
    csv_lines = (serial / "cohort.csv").read_text().splitlines()
    assert csv_lines[0].split(",") == list(COHORT_COLUMNS) and len(csv_lines) == N_CASES + 1
    assert "<table>" in (serial / "cohort.html").read_text()

    # a 2-worker local cluster, one worker killed (SIGKILL) mid-run: the run still completes, and
    # equals the serial one except for the wall times
    cluster = tmp_path / "cluster"
    proc = subprocess.Popen(
        _cli(manifest, "--model", model, "--out", cluster, "--workers", 2),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait(proc, cluster, 1)
        pid = int(json.loads((cluster / "status" / f"{_done(cluster)[0]}.json").read_text())["worker"].split(":")[1])
        assert pid != proc.pid
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 1, stderr
    assert f"cohort: {N_CASES - 1} of {N_CASES} cases done, 1 failed" in stdout
    assert _rows(cluster) == _rows(serial)
