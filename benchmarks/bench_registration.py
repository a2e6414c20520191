"""Registration speed on a raw vertebra, side by side with trimesh's rigid ICP on the same surfaces.

    python benchmarks/bench_registration.py --out out/bench_registration [--repeat 3]

For one raw L1 vertebra (9206 vertices) of ../shared/data/vertebrae_l1 (and the 5000-vertex reference),
measures the wall time of:

* building the reference's GP model (300 modes, pivoted Cholesky);
* ``bs.register`` with landmarks and default options (rigid stage + five non-rigid stages,
  both directions of closest points), without and with the posterior;
* ``trimesh.registration.icp``, rigid only, 50 iterations to the target's vertices, from the same
  landmark alignment:
  a peer that does a tenth of the work (6 parameters instead of 300), as a yardstick for the
  cost of a closest-point pass on this machine.

Prints a Markdown table; writes ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

import bayesshape as bs
from bayesshape.registration import RegistrationOptions, register

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "vertebrae_l1"


def _time(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--target", default="sub-verse013_segment_20.ply", help="a file of raw/ (9206 vertices)")
    args = p.parse_args(argv)
    surfaces = sorted((DATA / "raw").glob("*.ply"))
    if not surfaces:
        print(f"no data at {DATA}", file=sys.stderr)
        return 2
    import trimesh

    target_path = DATA / "raw" / args.target
    ref = bs.io.read_mesh(DATA / "reference.ply")
    target = bs.io.read_mesh(target_path)
    lms = (str(DATA / "reference.json"), str(target_path.with_suffix(".json")))
    options = RegistrationOptions()
    t_gp, gp = _time(lambda: bs.gp_model(ref, options.kernel(), rank=options.rank), args.repeat)
    register(gp, target, landmarks=lms)  # warm-up: the first call compiles the distance kernels
    t_reg, reg = _time(lambda: register(gp, target, landmarks=lms), args.repeat)
    t_post, _ = _time(lambda: register(gp, target, landmarks=lms, posterior=True), args.repeat)

    from bayesshape.io import read_landmarks
    from bayesshape.registration._icp import similarity_matrix

    r, t = read_landmarks(lms[0]), read_landmarks(lms[1])
    start = similarity_matrix(r.points, t.subset(r.names).points)
    t_icp, (_, _, cost) = _time(
        lambda: trimesh.registration.icp(
            np.asarray(ref.vertices), np.asarray(target.vertices), initial=start, max_iterations=50, threshold=1e-6
        ),
        args.repeat,
    )
    rows = [
        ("GP model of the reference (300 modes)", t_gp, ""),
        ("bs.register, non-rigid, landmarks", t_reg, f"surface distance {reg.info.mean_distance_mm:.2f} mm"),
        ("bs.register, with the posterior", t_post, ""),
        ("trimesh.registration.icp, rigid, 50 iterations", t_icp, f"mean squared distance {cost:.2f} mm^2"),
    ]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()}"
    print(f"target {target_path.name}: {len(target.vertices)} vertices; reference {len(ref.vertices)} vertices")
    print(f"machine: {machine}\n")
    print("| step | wall time (s) | result |\n|---|---:|---|")
    for name, sec, note in rows:
        print(f"| {name} | {sec:.1f} | {note} |")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps(
            {
                "target": target_path.name,
                "target_vertices": len(target.vertices),
                "machine": machine,
                "rows": [{"step": n, "seconds": s, "note": note} for n, s, note in rows],
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
