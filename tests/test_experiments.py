"""Smoke tests: the experiment scripts run end to end on a tiny setting and write their outputs."""

import json
import runpy
import sys
import warnings
from pathlib import Path

import pytest

EXP = Path(__file__).resolve().parents[1] / "experiments"


def _run_script(name, argv):
    old = sys.argv
    sys.argv = [name, *argv]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # reliability warnings belong to the results
            runpy.run_path(str(EXP / name), run_name="__main__")
    except SystemExit as e:
        assert e.code == 0
    finally:
        sys.argv = old


@pytest.mark.slow
def test_calibration_smoke(tmp_path):
    import jax

    x64 = jax.config.jax_enable_x64
    try:
        _run_script("calibration.py", ["--smoke", "--out", str(tmp_path)])
    finally:
        jax.config.update("jax_enable_x64", x64)
    s = json.loads((tmp_path / "summary.json").read_text())
    assert set(s["coverage"]) == {"0.5", "0.8", "0.9", "0.95"}
    assert all(0.0 <= v <= 1.0 for v in s["coverage"].values())
    assert s["coverage"]["0.5"] <= s["coverage"]["0.95"]
    assert "auroc" in s and "spearman" in s and "coverage_with_model_error" in s
    cases = json.loads((tmp_path / "cases.json").read_text())
    assert [c["kind"] for c in cases] == ["held_out"]
    assert 0.0 < cases[0]["dice"] <= 1.0 and cases[0]["floor"] >= 0.0
    for name in ("cases.csv", "calibration.png", "uncertainty_vs_error.png"):
        assert (tmp_path / name).exists()


@pytest.mark.slow
def test_sampler_efficiency_smoke(tmp_path):
    pytest.importorskip("blackjax")
    _run_script("sampler_efficiency.py", ["--smoke", "--out", str(tmp_path)])
    r = json.loads((tmp_path / "sampler_efficiency.json").read_text())
    for k in ("nuts", "rwmh"):
        assert r[k]["ess_bulk_min"] > 0 and r[k]["wall_s"] > 0
    assert 0.0 < r["rwmh"]["acceptance"] < 1.0
