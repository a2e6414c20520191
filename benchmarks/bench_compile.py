"""Compilation: the command line with and without its persistent compilation cache, and an eager
``render_drr`` call compiled as one program against the same call run operation by operation.

    python benchmarks/bench_compile.py [--size 256] [--repeat 3]

Prints one table per part; every figure sits next to its reference from the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def demo_runs(size: int) -> list[tuple[str, float]]:
    """Wall time of ``bayesshape demo`` three ways, each in a fresh process: without the cache, with an
    empty cache (compiles and writes it) and with the cache the previous run wrote."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
        env["XDG_CACHE_HOME"] = str(Path(tmp) / "cache")
        for label, extra in (
            ("--no-compile-cache (reference)", ["--no-compile-cache"]),
            ("empty cache (compiles, writes it)", []),
            ("warm cache (loads)", []),
        ):
            out = Path(tmp) / f"demo{len(rows)}"
            cmd = [sys.executable, "-m", "bayesshape.cli", *extra, "demo", "--out", str(out), "--quiet"]
            cmd += ["--size", str(size)]
            t0 = time.perf_counter()
            subprocess.run(cmd, env=env, check=True, capture_output=True)
            rows.append((label, time.perf_counter() - t0))
    return rows


def eager_render(size: int, repeat: int) -> list[tuple[str, float, float]]:
    """First and best-of-``repeat`` later call of an eager ``render_drr`` of the example shape (pixel
    areas), against the same function run operation by operation (what an eager call did before)."""
    import jax.numpy as jnp

    import bayesshape as bs
    from bayesshape.projection import render

    shape = bs.datasets.example_shapes(1, seed=0)[0]
    v, f = jnp.asarray(shape.vertices), jnp.asarray(shape.faces)
    view = bs.biplanar(field_of_view=480, detector_shape=(size, size))[0]
    k = bs.projection.drr_footprint(v, f, view, margin=0.5)
    out = []
    for label, fn in (
        ("operation by operation (reference)", render._render_drr_checked),
        ("render_drr (one compiled program)", render.render_drr),
    ):
        times = []
        for _ in range(repeat + 1):
            t0 = time.perf_counter()
            fn(v, f, view, footprint=k, mu=None, pixel="area").block_until_ready()
            times.append(time.perf_counter() - t0)
        out.append((label, times[0], min(times[1:])))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256, help="detector side, pixels")
    ap.add_argument("--repeat", type=int, default=3, help="later calls timed (best of)")
    args = ap.parse_args(argv)
    print(f"bayesshape demo --size {args.size}, wall time per fresh process")
    rows = demo_runs(args.size)
    for label, t in rows:
        print(f"  {label:38s} {t:7.1f} s   ({t / rows[0][1]:.2f} x the reference)")
    print(f"\neager render_drr of the example shape, {args.size} x {args.size}, pixel='area'")
    rows2 = eager_render(args.size, args.repeat)
    for label, first, later in rows2:
        print(f"  {label:38s} first {first:7.2f} s   later {1e3 * later:8.1f} ms")
    print(f"  speed-up: first call {rows2[0][1] / rows2[1][1]:.1f} x, later calls {rows2[0][2] / rows2[1][2]:.1f} x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
