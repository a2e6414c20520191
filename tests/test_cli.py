"""The bayesshape command line: the demo, simulate -> infer -> export -> report end to end, and its errors."""

import json
import warnings

import numpy as np
import pytest
import trimesh

import bayesshape as bs
from bayesshape import io
from bayesshape.cli import build_parser, main

SUBCOMMANDS = ("demo", "build-model", "simulate", "infer", "export", "report")


def _run(argv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # reliability warnings are part of the printed output
        return main(argv)


@pytest.mark.slow
def test_demo_writes_outputs(tmp_path):
    # 64 px and 10 training shapes: the same compiled likelihood as the end-to-end test below
    assert _run(["demo", "--out", str(tmp_path), "--size", "64", "--train", "10", "--quiet"]) == 0
    for name in (
        "confidence.ply",
        "confidence.vtk",
        "confidence.vtp",
        "summary.json",
        "report.html",
        "posterior.npz",
        "samples/mean.ply",
        "pictures/credible_radius.png",
        "pictures/overlay_0.png",
    ):
        assert (tmp_path / name).exists(), name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["surface_error_mm"]["mean"] < 3.75  # half a 7.5 mm pixel
    assert summary["measurements"]["length_mm"]["lower"] < summary["measurements"]["length_mm"]["upper"]
    ply = trimesh.load(tmp_path / "confidence.ply", process=False)
    props = ply.metadata["_ply_raw"]["vertex"]["data"].dtype.names
    for p in ("std", "normal_std", "credible_radius", "flag", "error", "red", "green", "blue"):
        assert p in props
    _, _, data = io.read_vtk_polydata(tmp_path / "confidence.vtk")
    np.testing.assert_allclose(
        data["credible_radius"], ply.metadata["_ply_raw"]["vertex"]["data"]["credible_radius"], rtol=1e-6
    )


@pytest.mark.slow
def test_simulate_infer_export_report(tmp_path):
    model, xray, case = tmp_path / "m.npz", tmp_path / "xray", tmp_path / "case"
    assert _run(["build-model", "--example", "10", "--out", str(model)]) == 0
    assert (
        _run(
            [
                "simulate",
                "--model",
                str(model),
                "--sample-seed",
                "3",
                "--biplanar",
                "480",
                "--size",
                "64",
                "--out",
                str(xray),
            ]
        )
        == 0
    )
    sim = json.loads((xray / "simulation.json").read_text())
    assert sim["files"]["masks"] == ["AP_mask.png", "LAT_mask.png"]
    assert (
        _run(
            [
                "infer",
                "--model",
                str(model),
                "--views",
                str(xray / "views.json"),
                "--masks",
                str(xray / "AP_mask.png"),
                str(xray / "LAT_mask.png"),
                "--truth",
                str(xray / "truth.ply"),
                "--method",
                "laplace",
                "--samples",
                "100",
                "--report",
                "--quiet",
                "--out",
                str(case),
            ]
        )
        == 0
    )
    summary = json.loads((case / "summary.json").read_text())
    assert summary["inputs"]["kind"] == "mask" and summary["posterior"]["method"] == "laplace"
    assert summary["inputs"]["likelihood"] == "Contour"
    # 64 px over 480 mm: 7.5 mm pixels; the mean still lands within a pixel of the truth
    assert summary["error_mm"]["vertex_mean"] < 7.5
    # the same masks pixel by pixel
    assert (
        _run(
            [
                "infer",
                "--model",
                str(model),
                "--views",
                str(xray / "views.json"),
                "--mask-likelihood",
                "silhouette",
                "--masks",
                str(xray / "AP_mask.png"),
                str(xray / "LAT_mask.png"),
                "--truth",
                str(xray / "truth.ply"),
                "--method",
                "laplace",
                "--samples",
                "100",
                "--quiet",
                "--out",
                str(tmp_path / "case_s"),
            ]
        )
        == 0
    )
    summary_s = json.loads((tmp_path / "case_s" / "summary.json").read_text())
    assert summary_s["inputs"]["likelihood"] == "Silhouette" and summary_s["settings"]["sigma"] == [0.5, 0.5]
    assert summary_s["error_mm"]["vertex_mean"] < 7.5
    # pixel-area DRRs, simulated and modelled from the command line (the observations infer would use;
    # a pixel-area inference itself is tested in test_obs and measured in docs/experiments.md)
    from bayesshape.cli import _commands

    assert (
        _run(
            [
                "simulate",
                "--model",
                str(model),
                "--sample-seed",
                "3",
                "--biplanar",
                "480",
                "--size",
                "48",
                "--drr-pixel",
                "area",
                "--out",
                str(tmp_path / "xray_a"),
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "xray_a" / "simulation.json").read_text())["drr_pixel"] == "area"
    args = build_parser().parse_args(
        [
            "infer",
            "--model",
            str(model),
            "--views",
            str(tmp_path / "xray_a" / "views.json"),
            "--images",
            str(tmp_path / "xray_a" / "AP_drr.npy"),
            str(tmp_path / "xray_a" / "LAT_drr.npy"),
            "--drr-pixel",
            "area",
            "--out",
            str(tmp_path / "case_a"),
        ]
    )
    observations, _, kinds, _ = _commands._observations(args, bs.read_views(args.views)[0])
    assert kinds == ["drr", "drr"] and [o.pixel for o in observations] == ["area", "area"]
    assert "<canvas" in (case / "report.html").read_text()
    assert (
        _run(["export", "--posterior", str(case / "posterior.npz"), "--samples", "2", "--out", str(tmp_path / "exp")])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "exp" / "samples").iterdir()) == [
        "mean.ply",
        "sample_000.ply",
        "sample_001.ply",
    ]
    (case / "report.html").unlink()
    assert _run(["report", "--case", str(case)]) == 0
    assert (case / "report.html").exists()


def _one_line_error(capsys, command):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"bayesshape {command}: error:")
    return err[0]


def test_infer_errors_are_one_line(tmp_path, capsys):
    model, xray = tmp_path / "m.npz", tmp_path / "xray"
    assert _run(["build-model", "--example", "6", "--out", str(model)]) == 0
    assert _run(["simulate", "--model", str(model), "--biplanar", "480", "--size", "48", "--out", str(xray)]) == 0
    capsys.readouterr()
    views = str(xray / "views.json")
    masks = [str(xray / "AP_mask.png"), str(xray / "LAT_mask.png")]
    base = ["infer", "--views", views, "--out", str(tmp_path / "case"), "--quiet"]

    assert main(base + ["--model", str(tmp_path / "missing.npz"), "--masks", *masks]) == 2
    assert "no such file" in _one_line_error(capsys, "infer")

    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04 this is not a model")
    assert main(base + ["--model", str(tmp_path / "corrupt.npz"), "--masks", *masks]) == 2
    assert "corrupt.npz" in _one_line_error(capsys, "infer")

    (tmp_path / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    assert main(base + ["--model", str(tmp_path / "corrupt.h5"), "--masks", *masks]) == 2
    assert "corrupt.h5" in _one_line_error(capsys, "infer")

    np.save(tmp_path / "small.npy", np.zeros((32, 32)))
    assert main(base + ["--model", str(model), "--masks", masks[0], str(tmp_path / "small.npy")]) == 2
    line = _one_line_error(capsys, "infer")
    assert "small.npy" in line and "does not match" in line and "48 x 48" in line

    assert main(base + ["--model", str(model), "--masks", masks[0]]) == 2
    assert "one file per view" in _one_line_error(capsys, "infer")

    assert main(base + ["--model", str(model), "--masks", *masks, "--model-error-scale", "2"]) == 2
    assert "no model error to scale" in _one_line_error(capsys, "infer")

    assert main(["report", "--case", str(tmp_path / "nowhere")]) == 2
    assert "no such case folder" in _one_line_error(capsys, "report")

    assert main(["demo", "--out", str(tmp_path / "d"), "--size", "1", "--quiet"]) == 2
    _one_line_error(capsys, "demo")

    assert (
        main(
            [
                "build-model",
                "--statismo",
                str(tmp_path / "corrupt.h5"),
                "--variance",
                "loo",
                "--out",
                str(tmp_path / "x.npz"),
            ]
        )
        == 2
    )
    assert "needs the training meshes" in _one_line_error(capsys, "build-model")
    loo = tmp_path / "loo.npz"
    assert _run(["build-model", "--example", "6", "--variance", "loo", "--out", str(loo)]) == 0
    a, b = bs.io.load_model(model), bs.io.load_model(loo)
    assert a.n_modes == b.n_modes == 5
    # the calibrated variances are the sample ones times the leave-one-out ratios (re-sorted)
    ratio = bs.prior.loo_variance_ratio(bs.datasets.example_shapes(6, seed=0))
    np.testing.assert_allclose(np.sort(np.asarray(b.variance)), np.sort(np.asarray(a.variance) * ratio), rtol=1e-9)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "example:" in out and f"bayesshape {command} " in out
    # every example is a complete command: a line that continues ends with a backslash
    lines = out[out.index("example:") :].splitlines()[1:]
    for line, following in zip(lines, lines[1:]):
        if following.startswith("      --"):
            assert line.rstrip().endswith("\\"), f"{command} --help: {line!r} lacks its line continuation"


@pytest.mark.slow
def test_build_model_from_raw_surfaces_then_simulate_infer_report(tmp_path):
    """Raw surfaces (no correspondence, another triangulation each) with CSV landmarks -> build-model
    --raw -> model file -> simulate -> infer -> report."""
    import fast_simplification
    import jax

    from bayesshape.io import LandmarkSet, write_landmarks

    ref = bs.datasets.example_shapes(1, seed=0)[0]
    gp = bs.gp_model(ref, bs.kernels.multiscale([36.0, 4.0], [120.0, 40.0]), rank=30)
    raw = tmp_path / "raw"
    raw.mkdir()
    ids = [0, 700, 1600, 2500, 3100]
    names = tuple("ABCDE")
    io.write_mesh(tmp_path / "reference.ply", ref)
    write_landmarks(tmp_path / "reference.csv", LandmarkSet(names, np.asarray(ref.vertices)[ids]))
    for k in range(4):
        x = np.asarray(gp.sample(jax.random.key(k), 1)[0])
        v, f = fast_simplification.simplify(np.array(x), np.array(ref.faces, np.int64), target_reduction=0.4)
        io.write_mesh(raw / f"bone{k}.ply", v, f)
        write_landmarks(raw / f"bone{k}.csv", LandmarkSet(names, x[ids]))
    model = tmp_path / "raw_model.npz"
    argv = ["build-model", "--raw", str(raw), "--reference", str(tmp_path / "reference.ply")]
    assert (
        _run([*argv, "--landmarks", str(tmp_path / "reference.csv"), "--rank", "60", "--quiet", "--out", str(model)])
        == 0
    )
    built = io.load_model(model)
    assert built.n_vertices == len(ref.vertices) and built.n_modes == 3
    xray, case = tmp_path / "xray", tmp_path / "case"
    assert _run(["simulate", "--model", str(model), "--biplanar", "480", "--size", "48", "--out", str(xray)]) == 0
    masks = [str(xray / "AP_mask.png"), str(xray / "LAT_mask.png")]
    assert (
        _run(
            [
                "infer",
                "--model",
                str(model),
                "--views",
                str(xray / "views.json"),
                "--masks",
                *masks,
                "--samples",
                "50",
                "--report",
                "--quiet",
                "--out",
                str(case),
            ]
        )
        == 0
    )
    assert (case / "report.html").exists()


def test_build_model_raw_errors(tmp_path, capsys):
    assert main(["build-model", "--raw", str(tmp_path), "--out", str(tmp_path / "m.npz")]) == 2
    assert "--reference" in capsys.readouterr().err
    assert main(["build-model", "--example", "5", "--reference", "r.ply", "--out", str(tmp_path / "m.npz")]) == 2
    assert "go with --raw" in capsys.readouterr().err


def test_infer_from_slicer_landmarks(tmp_path, capsys):
    """3D landmarks alone: a patient's .fcsv against the same names on the model's mean (.mrk.json)."""
    model_path = tmp_path / "m.npz"
    assert _run(["build-model", "--example", "10", "--out", str(model_path)]) == 0
    model = bs.io.load_model(model_path)
    mean = np.asarray(model.mean)
    ids = np.arange(0, mean.shape[0], 300)
    names = tuple(f"L{i}" for i in range(len(ids)))
    bs.io.write_landmarks(tmp_path / "model.mrk.json", bs.io.LandmarkSet(names, mean[ids]))
    truth = bs.datasets.example_shapes(1, seed=21)[0]
    points = truth.vertices[ids] + np.random.default_rng(0).normal(scale=0.5, size=(len(ids), 3))
    bs.io.write_landmarks(tmp_path / "patient.fcsv", bs.io.LandmarkSet(names[::-1], points[::-1]))  # any order
    trimesh.Trimesh(truth.vertices, truth.faces, process=False).export(tmp_path / "truth.ply")
    common = ["infer", "--model", str(model_path), "--landmarks", str(tmp_path / "patient.fcsv")]
    case = tmp_path / "case"
    argv = [*common, "--model-landmarks", str(tmp_path / "model.mrk.json"), "--landmark-sigma", "0.5"]
    assert _run([*argv, "--truth", str(tmp_path / "truth.ply"), "--quiet", "--out", str(case)]) == 0
    summary = json.loads((case / "summary.json").read_text())
    assert summary["inputs"]["kind"] == "landmarks" and summary["inputs"]["likelihood"] == "Landmarks3D"
    assert summary["error_mm"]["vertex_mean"] < 2.0  # 11 landmarks of 0.5 mm noise pin a 9-mode model
    assert not (case / "views.json").exists()
    capsys.readouterr()
    assert _run([*common, "--out", str(tmp_path / "bad")]) == 2
    assert "--model-landmarks" in _one_line_error(capsys, "infer")
    bs.io.write_landmarks(tmp_path / "other.mrk.json", bs.io.LandmarkSet(("A", "B"), mean[:2]))
    bad = [*common, "--model-landmarks", str(tmp_path / "other.mrk.json"), "--out", str(tmp_path / "bad")]
    assert _run(bad) == 2
    assert "are not in --model-landmarks" in _one_line_error(capsys, "infer")


def _pair_files(tmp_path):
    """An assembly file of two example vertebrae, its views and simulated label images (one per view)."""
    from bayesshape.prior import Assembly, PosturePrior

    a = bs.datasets.example_vertebra(subdivisions=2)
    b = bs.datasets.example_vertebra(subdivisions=2)
    b.apply_translation([0.0, 0.0, -36.0])
    prior = PosturePrior.independent(1, rotation_deg=3.0, translation_mm=1.0)
    asm = Assembly.from_meshes(
        {"upper": a, "lower": b}, rank=4, posture=prior, kernel=bs.kernels.GaussianKernel(2.0, 15.0)
    )
    io.save_assembly(asm, tmp_path / "pair.npz")
    views = list(bs.biplanar(isocenter=(0.0, 0.0, -18.0), field_of_view=100.0, detector_shape=(48, 48)))
    io.write_views(tmp_path / "views.json", views, ["AP", "LAT"])
    m = asm.combined_model()
    v = np.asarray(m.mean) + np.array([1.0, -0.5, 0.5])
    sim = bs.simulate_xray((v, np.asarray(m.faces)), views, seed=0, object_ids=asm.object_ids())
    labels = []
    for name, lab in zip(("AP", "LAT"), sim.labels):
        labels.append(str(tmp_path / f"{name}_labels.png"))
        io.write_image(labels[-1], lab)
    io.write_mesh(tmp_path / "truth.ply", v, np.asarray(m.faces))
    return asm, labels


def test_infer_label_images_errors(tmp_path, capsys):
    asm, labels = _pair_files(tmp_path)
    base = ["infer", "--views", str(tmp_path / "views.json"), "--out", str(tmp_path / "case")]
    stray = io.read_image(labels[1]).copy()
    stray[0, 0] = 9
    io.write_image(tmp_path / "stray.png", stray)
    assert main(base + ["--model", str(tmp_path / "pair.npz"), "--labels", labels[0], str(tmp_path / "stray.png")]) == 2
    line = _one_line_error(capsys, "infer")
    assert "view 1" in line and "[9] match no object" in line and "upper=1, lower=2" in line
    argv = base + ["--model", str(tmp_path / "pair.npz"), "--labels", *labels, "--label-values", "upper=1", "lower=5"]
    assert main(argv) == 2
    line = _one_line_error(capsys, "infer")
    assert "[2] match no object" in line and "upper=1, lower=5" in line and "--label-values" in line
    assert main(base + ["--model", str(tmp_path / "pair.npz"), "--labels", *labels, "--label-values", "upper"]) == 2
    assert "NAME=VALUE" in _one_line_error(capsys, "infer")
    io.save_model(asm.models[0], tmp_path / "one.npz")
    assert main(base + ["--model", str(tmp_path / "one.npz"), "--labels", *labels]) == 2
    assert "several objects" in _one_line_error(capsys, "infer")
    assert main(base + ["--model", str(tmp_path / "pair.npz"), "--labels", labels[0]]) == 2
    assert "one label image per view" in _one_line_error(capsys, "infer")
    assert main(["demo", "--spine", "--cohort", "2", "--out", str(tmp_path / "d")]) == 2
    assert "give one of them" in _one_line_error(capsys, "demo")


@pytest.mark.slow
def test_infer_assembly_from_label_images(tmp_path):
    asm, labels = _pair_files(tmp_path)
    case = tmp_path / "case"
    argv = ["infer", "--model", str(tmp_path / "pair.npz"), "--views", str(tmp_path / "views.json")]
    argv += ["--labels", *labels, "--mask-likelihood", "contour", "--truth", str(tmp_path / "truth.ply")]
    assert _run(argv + ["--samples", "100", "--quiet", "--report", "--out", str(case)]) == 0
    summary = json.loads((case / "summary.json").read_text())
    assert summary["inputs"]["objects"] == ["upper", "lower"]
    assert summary["error_mm"]["vertex_mean"] < 1.0  # the pair moved by 1.2 mm, 2 mm pixels
    assert set(summary["objects"]) == {"upper", "lower"} and len(summary["posture_deg"]) == 3
    for name in ("objects/upper.ply", "objects/lower.ply", "report.html", "pictures/overlay_1.png"):
        assert (case / name).exists(), name


def test_compiled_programs_are_kept_between_runs(tmp_path):
    """The command line keeps compiled programs in $XDG_CACHE_HOME/bayesshape/jax (not with
    --no-compile-cache); a second run loads them and writes the same files."""
    import os
    import subprocess
    import sys

    model = tmp_path / "m.npz"
    assert _run(["build-model", "--example", "6", "--out", str(model)]) == 0
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

    def simulate(out, home, *extra):
        cmd = [sys.executable, "-m", "bayesshape.cli", *extra, "simulate", "--model", str(model)]
        cmd += ["--biplanar", "480", "--size", "32", "--out", str(tmp_path / out)]
        run = subprocess.run(cmd, env={**env, "XDG_CACHE_HOME": str(tmp_path / home)}, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return {p.name: p.read_bytes() for p in sorted((tmp_path / out).iterdir()) if p.is_file()}

    first = simulate("a", "home")
    cache = tmp_path / "home" / "bayesshape" / "jax"
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "nothing was cached"
    assert simulate("b", "home") == first
    assert sorted(p.name for p in cache.iterdir()) == entries  # loaded, not compiled and written again
    simulate("c", "elsewhere", "--no-compile-cache")
    assert not (tmp_path / "elsewhere").exists()
