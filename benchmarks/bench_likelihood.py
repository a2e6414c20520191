"""Likelihood and DRR speed on a femur, side by side with DiffDRR and a NumPy contour likelihood.

    python benchmarks/bench_likelihood.py --out out/bench [--diffdrr-python .venv-bench/bin/python]

Measures, after compilation, for the first femur of ../shared/data/femur10 (11649
vertices, 23294 faces) and two 256 x 256 views (AP + lateral, cone beam):

* time per value-and-gradient (shape coefficients + rigid pose) of the contour, the
  silhouette (the masks pixel by pixel, :class:`bayesshape.obs.Silhouette`) and the DRR
  log-likelihood (JAX, jit; pixels sampled at their centres, and averaged over their area), on the
  full mesh;
* DRR renders per second (JAX);
* the same contour log-likelihood in plain NumPy/SciPy: one value, and a gradient by
  forward finite differences (n_params + 1 values), since NumPy has no autodiff;
* DiffDRR (PyTorch, Siddon ray marching) rendering a 1 mm voxelisation of the same
  femur at the same detector size, forward and forward+backward (w.r.t. pose), run in
  its own environment (``--diffdrr-python``) in the same invocation.

Prints a Markdown table and the ratios; writes ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", False)

import bayesshape as bs  # noqa: E402
from bayesshape.projection import Topology  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _reference_paths as R  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def timeit(fn, repeats):
    out = fn()
    jax.block_until_ready(out)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


# ---------------------------------------------------------------- NumPy peer
class NumpyContour:
    """The Contour log-likelihood (same formula as bayesshape.obs.Contour) in NumPy/SciPy; NumPy's
    boolean indexing keeps only the candidate contour edges (no static capacity needed)."""

    def __init__(self, obs: bs.obs.Contour, topo: Topology):
        v = obs.view
        self.source, self.origin = np.asarray(v.source), np.asarray(v.origin)
        self.u, self.vv, self.d = np.asarray(v.u), np.asarray(v.v), np.asarray(v.direction)
        self.sp = np.asarray(v.spacing)
        self.parallel = v.is_parallel
        self.points = np.asarray(obs.points)
        self.dist = np.asarray(obs.distance)
        self.sigma = float(obs.sigma)
        self.faces = np.asarray(topo.faces)
        self.edges = np.asarray(topo.edges)
        self.ef = np.asarray(topo.edge_faces)

    def project(self, x):
        if self.parallel:
            rel = x - self.origin
        else:
            rs = x - self.source
            lam = ((self.origin - self.source) @ self.d) / (rs @ self.d)
            rel = self.source + lam[:, None] * rs - self.origin
        return np.stack([rel @ self.vv / self.sp[0], rel @ self.u / self.sp[1]], axis=1)

    def __call__(self, x):
        from scipy.ndimage import map_coordinates

        tri = x[self.faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        nn = np.sqrt((n * n).sum(1) + 1e-30)
        if self.parallel:
            cos = n @ self.d / nn
        else:
            ray = tri.mean(1) - self.source
            cos = (n * ray).sum(1) / (nn * np.linalg.norm(ray, axis=1))
        t = np.tanh(cos / 0.05)
        w_all = 0.5 * (1 - t[self.ef[:, 0]] * t[self.ef[:, 1]])
        cand = w_all > 0.02
        if not cand.any():
            return -np.inf
        w = w_all[cand]
        p = self.project(x)
        seg = p[self.edges[cand]]
        a, b = seg[:, 0], seg[:, 1]
        length = np.linalg.norm(b - a, axis=1) * w
        mid = 0.5 * (a + b)
        h, wd = self.dist.shape
        r = np.clip(mid[:, 0], 0, h - 1)
        c = np.clip(mid[:, 1], 0, wd - 1)
        dm = map_coordinates(self.dist, [r, c], order=1, mode="nearest") + np.hypot(mid[:, 0] - r, mid[:, 1] - c)
        mean_model = np.sum(length * dm**2) / np.sum(length)
        dvec = b - a
        dd = np.maximum(np.sum(dvec * dvec, axis=1), 1e-300)
        q = self.points
        t = np.clip(((q[:, None, :] - a[None]) * dvec[None]).sum(-1) / dd[None], 0, 1)
        res = q[:, None, :] - (a[None] + t[..., None] * dvec[None])
        pen = 10.0 * np.maximum(1 - 2 * w, 0)
        d_img = (np.sqrt((res**2).sum(-1)) + pen[None, :]).min(axis=1)
        m = len(q)
        cc = 0.5 * (np.mean(d_img**2) + mean_model)
        return -m * cc / (2 * self.sigma**2) - m * np.log(self.sigma) - 0.5 * m * np.log(2 * np.pi)


def numpy_forward(model_np, center, params, k):
    mean, basis, sd = model_np
    alpha, rv, t = params[:k], params[k : k + 3], params[k + 3 : k + 6]
    x = mean + (basis @ (sd * alpha)).reshape(-1, 3)
    from scipy.spatial.transform import Rotation

    r = Rotation.from_rotvec(rv).as_matrix()
    return (x - center) @ r.T + center + t


def voxelise(mesh, pitch):
    vox = mesh.voxelized(pitch=pitch, method="subdivide").fill()
    occ = vox.matrix.astype(np.float32)
    origin = vox.transform[:3, 3]
    return occ, origin


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--diffdrr-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import trimesh

    folder = DATA / "femur10"
    files = sorted(folder.glob("*.ply"))
    if not files:
        print(f"no femurs in {folder}: this benchmark needs ../shared/data/femur10", file=sys.stderr)
        return 2
    meshes = [trimesh.load(f, process=False) for f in files]
    truth = meshes[0]
    model = bs.build_pca_model(meshes[1:], align=None)
    k = model.n_modes
    iso = truth.bounds.mean(0)
    fov = 500.0
    sid, sdd = 1000.0, 1300.0
    views = bs.biplanar(
        iso,
        field_of_view=fov,
        detector_shape=(args.size, args.size),
        projection="cone",
        source_to_isocenter=sid,
        source_to_detector=sdd,
    )
    delx = float(views[0].spacing[0])
    sim = bs.simulate_xray(truth, views, seed=0, noise=0.01)
    refs = np.asarray(model.mean)[None]
    contour = [o.bind(model.faces, refs) for o in sim.observations("contour")]
    drr = [o.bind(model.faces, refs) for o in sim.observations("drr")]
    drr_area = [o.bind(model.faces, refs) for o in sim.observations("drr", pixel="area")]
    silhouette = [o.bind(model.faces, refs) for o in sim.observations("silhouette")]
    center = model.mean.mean(0)

    def make_ll(observations):
        def ll(params):
            v = bs.projection.Pose(params[k : k + 3], params[k + 3 : k + 6], jnp.zeros((), params.dtype)).apply(
                model.instance(params[:k]), center
            )
            return sum(o.log_likelihood(v) for o in observations)

        return ll

    x0 = jnp.concatenate([jnp.full(k, 0.2), jnp.array([0.01, -0.01, 0.005, 1.0, -1.0, 0.5])]).astype(model.mean.dtype)

    tiles = [R.edge_tiles(o.pixels) for o in silhouette]

    def make_ref_ll(name):
        def ll(params):
            v = bs.projection.Pose(params[k : k + 3], params[k + 3 : k + 6], jnp.zeros((), params.dtype)).apply(
                model.instance(params[:k]), center
            )
            if name == "contour":
                return sum(R.contour_log_likelihood(o, v) for o in contour)
            return sum(R.silhouette_log_likelihood(o, v, t) for o, t in zip(silhouette, tiles))

        return ll

    res = {}
    ms = {}
    for name, observations in (("contour", contour), ("silhouette", silhouette), ("drr", drr), ("drr_area", drr_area)):
        vg = jax.jit(jax.value_and_grad(make_ll(observations)))
        t0 = time.perf_counter()
        jax.block_until_ready(vg(x0))
        res[f"jax_{name}_compile_s"] = time.perf_counter() - t0
        res[f"jax_{name}_value_and_grad_s"] = timeit(lambda vg=vg: vg(x0), args.repeats)
        val = jax.jit(make_ll(observations))
        res[f"jax_{name}_value_s"] = timeit(lambda val=val: val(x0), args.repeats)
        ms[f"{name}_vg"] = 1000 * res[f"jax_{name}_value_and_grad_s"]
        # the reference: the previous implementation where it changed (benchmarks/_reference_paths.py),
        # else the same code timed again, so that every ratio comes from one run
        ref = make_ref_ll(name) if name in ("contour", "silhouette") else make_ll(observations)
        vg_ref = jax.jit(jax.value_and_grad(ref))
        with R.previous_centre_rasteriser():  # compiled here: the DRR's reference keeps the previous rasteriser
            value_ref = vg_ref(x0)
        value_new = vg(x0)
        res[f"{name}_value_new_vs_reference"] = [float(value_new[0]), float(value_ref[0])]
        res[f"{name}_gradient_max_rel_diff"] = float(
            jnp.max(jnp.abs(value_new[1] - value_ref[1])) / jnp.max(jnp.abs(value_ref[1]))
        )
        ms[f"{name}_vg_reference"] = 1000 * timeit(lambda vg_ref=vg_ref: vg_ref(x0), args.repeats)
    stacked = bs.projection.stack_views(views)
    faces = model.faces
    # one render per view: the DRR likelihood's face groups (each face in the window it needs) against
    # the single window that holds the largest triangle (the reference)
    groups, fps = bs.projection.drr_face_groups(np.asarray(model.mean), model.faces, views[0])
    fp = max(bs.projection.drr_footprint(truth.vertices, truth.faces, vw) for vw in views)
    render1 = jax.jit(lambda v: bs.projection.render_drr(v, groups, views[0], footprint=fps))
    render1_ref = jax.jit(lambda v: bs.projection.render_drr(v, faces, views[0], footprint=fp))
    verts = jnp.asarray(truth.vertices, dtype=model.mean.dtype)
    with R.previous_centre_rasteriser():
        jax.block_until_ready(render1_ref(verts))
    render2 = jax.jit(lambda v: jax.vmap(lambda vw: bs.projection.render_drr(v, faces, vw, footprint=fp))(stacked))
    ms["render"] = 1000 * timeit(lambda: render1(verts), args.repeats)
    ms["render_reference"] = 1000 * timeit(lambda: render1_ref(verts), args.repeats)
    res["render_max_abs_diff_mm"] = float(jnp.max(jnp.abs(render1(verts) - render1_ref(verts))))
    res["ms"] = ms
    res["jax_render_2views_s"] = timeit(lambda: render2(verts), args.repeats)
    res["jax_renders_per_s"] = 2.0 / res["jax_render_2views_s"]
    imgs = np.asarray(render2(verts))
    res["jax_image_sum"] = float(imgs.sum())
    res["jax_image_nonzero_fraction"] = [float((im > 0).mean()) for im in imgs]
    res["footprint_px"] = fp

    # NumPy contour peer
    topo = contour[0].topology
    peers = [NumpyContour(o, topo) for o in contour]
    model_np = (
        np.asarray(model.mean, np.float64),
        np.asarray(model.basis, np.float64),
        np.sqrt(np.asarray(model.variance, np.float64)),
    )
    c_np = np.asarray(center, np.float64)
    x0n = np.asarray(x0, np.float64)

    def np_ll(p):
        x = numpy_forward(model_np, c_np, p, k)
        return sum(pe(x) for pe in peers)

    ts = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        v_np = np_ll(x0n)
        ts.append(time.perf_counter() - t0)
    res["numpy_contour_value_s"] = statistics.median(ts)
    t0 = time.perf_counter()
    np_ll(x0n)  # the base value, as a finite-difference gradient needs it
    for i in range(len(x0n)):
        e = np.zeros_like(x0n)
        e[i] = 1e-6
        np_ll(x0n + e)
    res["numpy_contour_fd_gradient_s"] = time.perf_counter() - t0
    res["numpy_vs_jax_contour_value"] = [float(v_np), float(jax.jit(make_ll(contour))(x0))]

    # DiffDRR peer
    py = Path(args.diffdrr_python)
    if py.exists():
        occ, origin = voxelise(truth, 1.0)
        with tempfile.TemporaryDirectory() as tmp:
            vol = Path(tmp) / "femur_vox.npz"
            np.savez(vol, occupancy=occ, pitch=np.array([1.0, 1.0, 1.0]), origin=origin)
            cmd = [
                str(py),
                str(ROOT / "benchmarks" / "_diffdrr_peer.py"),
                str(vol),
                "--height",
                str(args.size),
                "--delx",
                str(delx),
                "--sdd",
                str(sdd),
                "--sid",
                str(sid),
                "--repeats",
                str(args.repeats),
                "--threads",
                str(os.cpu_count() or 1),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode == 0:
            res["diffdrr"] = json.loads(out.stdout.strip().splitlines()[-1])
            res["voxel_volume_mm3"] = float(occ.sum())
        else:
            res["diffdrr_error"] = out.stderr[-2000:]
    else:
        res["diffdrr_error"] = f"no DiffDRR environment at {py}"

    res["machine"] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "dtype": str(model.mean.dtype),
    }
    res["mesh"] = {
        "vertices": int(truth.vertices.shape[0]),
        "faces": int(truth.faces.shape[0]),
        "detector": [args.size, args.size],
        "views": 2,
        "pixel_mm": delx,
        "params": int(len(x0)),
    }
    (args.out / "results.json").write_text(json.dumps(res, indent=2))

    rows = [
        ("contour log-lik value+grad, 2 views", res["jax_contour_value_and_grad_s"]),
        ("contour log-lik value, 2 views", res["jax_contour_value_s"]),
        ("silhouette log-lik value+grad, 2 views", res["jax_silhouette_value_and_grad_s"]),
        ("silhouette log-lik value, 2 views", res["jax_silhouette_value_s"]),
        ("DRR log-lik value+grad, 2 views", res["jax_drr_value_and_grad_s"]),
        ("DRR log-lik value, 2 views", res["jax_drr_value_s"]),
        ("DRR (pixel-area) log-lik value+grad, 2 views", res["jax_drr_area_value_and_grad_s"]),
        ("DRR (pixel-area) log-lik value, 2 views", res["jax_drr_area_value_s"]),
        ("DRR render, 2 views", res["jax_render_2views_s"]),
        ("NumPy contour log-lik value, 2 views", res["numpy_contour_value_s"]),
        (f"NumPy contour gradient by finite differences ({len(x0) + 1} values)", res["numpy_contour_fd_gradient_s"]),
    ]
    if "diffdrr" in res:
        rows += [
            ("DiffDRR render (1 mm voxels), 2 views", res["diffdrr"]["render_2views_s"]),
            ("DiffDRR render + backward (pose), 2 views", res["diffdrr"]["value_and_grad_2views_s"]),
        ]
    print(f"machine: {res['machine']}")
    print("| what (2 views; render: one view) | ms | reference ms | reference / ms |\n|---|---|---|---|")
    for key in ("contour_vg", "silhouette_vg", "drr_vg", "drr_area_vg", "render"):
        print(f"| {key} | {ms[key]:.1f} | {ms[key + '_reference']:.1f} | {ms[key + '_reference'] / ms[key]:.2f} |")
    print()
    print("| what | ms |\n|---|---|")
    for name, t in rows:
        print(f"| {name} | {1000 * t:.1f} |")
    print(f"\nJAX DRR renders per second: {res['jax_renders_per_s']:.1f}")
    print(f"ratio NumPy/JAX contour value: {res['numpy_contour_value_s'] / res['jax_contour_value_s']:.1f}x")
    print(
        f"ratio NumPy FD gradient / JAX value+grad (contour): "
        f"{res['numpy_contour_fd_gradient_s'] / res['jax_contour_value_and_grad_s']:.1f}x"
    )
    if "diffdrr" in res:
        print(f"ratio DiffDRR/JAX render: {res['diffdrr']['render_2views_s'] / res['jax_render_2views_s']:.1f}x")
        print(
            f"sanity (same femur in view): fraction of pixels covered, bayesshape "
            f"{res['jax_image_nonzero_fraction']}, DiffDRR {res['diffdrr']['image_nonzero_fraction']}; "
            f"voxelisation volume {res['voxel_volume_mm3']:.0f} mm^3 vs mesh {truth.volume:.0f} mm^3"
        )
        print(
            f"ratio DiffDRR render+backward / JAX DRR log-lik value+grad: "
            f"{res['diffdrr']['value_and_grad_2views_s'] / res['jax_drr_value_and_grad_s']:.1f}x"
        )
    else:
        print(f"DiffDRR not run: {res.get('diffdrr_error')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
