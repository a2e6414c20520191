"""The bayesshape command line: the demo end to end (small settings)."""

import json
import warnings

import numpy as np
import trimesh

from bayesshape import io
from bayesshape.cli import main


def test_demo_writes_outputs(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # reliability warnings are part of the demo's output
        code = main(["demo", "--out", str(tmp_path), "--size", "96", "--train", "10", "--method", "laplace",
                     "--quiet"])
    assert code == 0
    for name in ("posterior_mean.ply", "confidence.ply", "confidence.vtk", "summary.json"):
        assert (tmp_path / name).exists(), name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["surface_error_mm"]["mean"] < 3.0
    ply = trimesh.load(tmp_path / "confidence.ply", process=False)
    props = ply.metadata["_ply_raw"]["vertex"]["data"].dtype.names
    for p in ("std", "normal_std", "credible_radius", "flag", "error", "red", "green", "blue"):
        assert p in props
    _, _, data = io.read_vtk_polydata(tmp_path / "confidence.vtk")
    np.testing.assert_allclose(data["credible_radius"], ply.metadata["_ply_raw"]["vertex"]["data"]["credible_radius"],
                               rtol=1e-6)


def test_errors_are_one_line(tmp_path, capsys):
    code = main(["demo", "--out", str(tmp_path), "--size", "1", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bayesshape demo: error:")
