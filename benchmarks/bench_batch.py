"""Many cases with one model: ``bs.infer_batch`` against ``bs.infer`` case by case, in the same run.

    python benchmarks/bench_batch.py --obs drr --cases 8 --size 64 --out out/bench_batch
    python benchmarks/bench_batch.py --obs landmarks --cases 16 --out out/bench_batch

Example model (20 shapes), cone-beam AP and lateral views, the rigid pose inferred, Laplace. Each
path first runs on a warm-up cohort of the same layout and size (its compilation), then on the timed
cohort. Prints the wall time per case of both paths after compilation, their ratio, the compilation
time, and how the MAPs agree (log density of the batched MAP minus the case-by-case one; mean 95%
credible radius). Writes OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np

import bayesshape as bs
from bayesshape._atomic import atomic_path


def cohort(model, views, kind: str, n: int, seed: int, size: int) -> list:
    truths = bs.datasets.example_shapes(n, seed=seed)
    ids = np.linspace(0, model.n_vertices - 1, 12).astype(int)
    cases = []
    for i, t in enumerate(truths):
        sim = bs.simulate_xray(t, views, seed=seed + i, noise=0.01, landmark_ids=ids, landmark_sigma=0.5)
        cases.append(sim.observations("drr" if kind == "drr" else "landmarks"))
    return cases


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--obs", choices=("drr", "landmarks"), default="drr")
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--size", type=int, default=64, help="detector pixels per side")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")  # misfit warnings of individual cases are not what is timed
    model = bs.build_pca_model(bs.datasets.example_shapes(20, seed=0))
    views = bs.biplanar(field_of_view=480, detector_shape=(args.size, args.size), projection="cone")
    warm = cohort(model, views, args.obs, args.cases, 1000, args.size)
    timed = cohort(model, views, args.obs, args.cases, 2000, args.size)

    def loop(cases):
        return [bs.infer(model, c, bs.Laplace(), pose="rigid", num_samples=100, seed=i) for i, c in enumerate(cases)]

    def batch(cases):
        return bs.infer_batch(model, cases, bs.Laplace(), pose="rigid", num_samples=100, batch_size=args.batch_size)

    figures: dict = {"device": str(jax.devices()[0]), "obs": args.obs, "cases": args.cases, "size": args.size}
    posts = {}
    for name, run in (("loop", loop), ("batch", batch)):
        t0 = time.perf_counter()
        run(warm)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        posts[name] = run(timed)
        wall = time.perf_counter() - t0
        figures[f"{name}_s_per_case"] = wall / args.cases
        figures[f"{name}_compile_s"] = first - wall
        print(
            f"{name:5s}: {1000 * wall / args.cases:9.1f} ms per case after compilation (warm-up cohort {first:.1f} s)"
        )
    figures["batch_over_loop"] = figures["batch_s_per_case"] / figures["loop_s_per_case"]
    gain = [
        b.diagnostics.map.log_density - a.diagnostics.map.log_density for a, b in zip(posts["loop"], posts["batch"])
    ]
    radius = [
        float(np.mean(b.credible_radius(0.95)) / np.mean(a.credible_radius(0.95)))
        for a, b in zip(posts["loop"], posts["batch"])
    ]
    figures["log_density_batch_minus_loop"] = gain
    figures["radius95_batch_over_loop"] = radius
    print(f"batch / loop time per case: {figures['batch_over_loop']:.2f}")
    print(
        f"MAP log density, batch minus loop (nats): median {np.median(gain):.3g}, min {np.min(gain):.3g}, "
        f"max {np.max(gain):.3g}"
    )
    print(f"mean 95% credible radius, batch / loop: {np.min(radius):.3f} to {np.max(radius):.3f}")
    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out / "results.json") as tmp:
        Path(tmp).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
