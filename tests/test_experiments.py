"""Smoke tests: the experiment scripts run end to end on a tiny setting and write their outputs."""

import json
import runpy
import sys
import warnings
from pathlib import Path

import pytest

EXP = Path(__file__).resolve().parents[1] / "experiments"


def _run_script(name, argv, exit_code=0):
    """Run an experiment script as ``__main__``; the scripts switch on float64 at import, so the
    suite's setting is restored afterwards."""
    import jax

    old, x64 = sys.argv, jax.config.jax_enable_x64
    sys.argv = [name, *argv]
    code = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # reliability warnings belong to the results
            runpy.run_path(str(EXP / name), run_name="__main__")
    except SystemExit as e:
        code = e.code
    finally:
        sys.argv = old
        jax.config.update("jax_enable_x64", x64)
    assert code == exit_code


@pytest.mark.slow
def test_calibration_smoke(tmp_path):
    _run_script("calibration.py", ["--smoke", "--out", str(tmp_path)])
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


def test_calibration_refuses_a_headline_of_no_cases(tmp_path, capsys):
    _run_script("calibration.py", ["--quick", "--n-headline", "0", "--out", str(tmp_path)], exit_code=2)
    assert "--n-headline: expected a positive number of cases, got 0" in capsys.readouterr().err
    assert not (tmp_path / "summary.json").exists()


@pytest.mark.slow
def test_sampler_efficiency_functions_on_a_gaussian():
    """The script's samplers on a 6-d correlated Gaussian: both recover the covariance, and NUTS
    gives more effective draws per log-density gradient than random-walk MH per evaluation."""
    pytest.importorskip("blackjax")
    import jax
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(EXP))
    from sampler_efficiency import ess, run_nuts, run_rwmh

    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    cov = jnp.asarray(a @ a.T / 6 + 0.1 * np.eye(6))
    prec = jnp.linalg.inv(cov)
    logdensity = jax.jit(lambda x: -0.5 * x @ prec @ x)
    x0 = jnp.zeros(6)
    nuts, _, steps = run_nuts(logdensity, x0, cov, jax.random.key(0), 200, 400, 2)
    rw, _, acc = run_rwmh(logdensity, x0, cov, jax.random.key(1), 5000, 2)
    for smp in (nuts, rw):
        emp = np.cov(smp.reshape(-1, 6).T)
        np.testing.assert_allclose(np.diag(emp), np.diag(np.asarray(cov)), rtol=0.25)
    assert 0.15 < acc < 0.45  # the optimal-scaling proposal accepts about 0.3 in 6 dimensions
    bulk_n, tail_n = ess(nuts)
    bulk_r, _ = ess(rw)
    assert bulk_n.min() > 200 and tail_n.min() > 100
    assert bulk_n.min() / steps > bulk_r.min() / rw.size * 6  # per gradient vs per density evaluation


def test_in_model_parameter_calibration_on_exact_posteriors():
    """in_model.py's parameter-space check on synthetic rows: a truth drawn from its Gaussian posterior
    is inside the joint ellipsoid and the central intervals at the nominal rates (400 draws: binomial sd
    at most 2.5 points, tolerance 8); a posterior twice too narrow is caught."""
    import numpy as np

    sys.path.insert(0, str(EXP))
    from in_model import joint_calibration

    rng = np.random.default_rng(0)
    names = [f"alpha[{i}]" for i in range(10)] + ["rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z"]
    for scale, ok in ((1.0, True), (2.0, False)):
        z = scale * rng.normal(size=(400, len(names)))
        rows = [{"theta": {"names": names, "z": list(zi), "mahalanobis2": float(zi @ zi)}} for zi in z]
        out = joint_calibration(rows)
        for key in ("joint_coverage", "interval_coverage_shape", "interval_coverage_pose"):
            err = max(abs(out[key][lv] - float(lv)) for lv in out[key])
            assert (err < 0.08) == ok, (scale, key, out[key])
        assert out["n_params"] == len(names)
        assert abs(out["mahalanobis2_mean"] - scale**2 * len(names)) < 0.1 * scale**2 * len(names)


def test_in_model_worst_parameter_is_read_family_wise():
    """The furthest-from-calibration parameter: on z-scores of a calibrated posterior from 300 draws each
    (Student's t, 100 cases, 25 parameters) the family-wise p-value is not small, while one parameter
    whose intervals are 30% too narrow is named, with a family-wise p below 0.01 (its sum of squares
    sits about 6 chi-square standard deviations out)."""
    import numpy as np

    sys.path.insert(0, str(EXP))
    from in_model import worst_parameter

    rng = np.random.default_rng(3)
    n, draws, dim = 300, 100, 25
    names = [f"alpha[{i}]" for i in range(dim - 6)] + ["rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z"]
    z = np.sqrt(1 + 1 / n) * rng.standard_t(n - 1, size=(draws, dim))
    calm = worst_parameter(z, names, np.full(draws, n))
    assert calm["p_family"] > 0.05 and calm["draws"] == draws, calm
    z[:, 19] *= 1.3
    out = worst_parameter(z, names, np.full(draws, n))
    assert out["name"] == "rot_x" and out["p_family"] < 0.01 and abs(out["rms"] - 1.3) < 0.2, out


def test_in_model_joint_calibration_accounts_for_the_estimated_covariance():
    """The truth's Mahalanobis^2 under a covariance estimated from n posterior draws follows Hotelling's
    T^2, not chi-square: with 16 parameters and 40 draws its mean is 29.1, not 16. Calibrated rows (truth
    and draws from the same Gaussian, 400 replicates: binomial sd at most 2.5 points, tolerance 8) are
    within tolerance with the sample count, and the chi-square reading without it calls them badly short."""
    import numpy as np

    sys.path.insert(0, str(EXP))
    from in_model import joint_calibration

    rng = np.random.default_rng(1)
    p, n = 16, 40
    names = [f"alpha[{i}]" for i in range(p - 6)] + ["rot_x", "rot_y", "rot_z", "trans_x", "trans_y", "trans_z"]
    rows = []
    for _ in range(400):
        x = rng.normal(size=(n, p))
        d = rng.normal(size=p) - x.mean(0)
        cov = np.cov(x.T)
        rows.append(
            {
                "theta": {
                    "names": names,
                    "z": list(d / np.sqrt(np.diag(cov))),
                    "mahalanobis2": float(d @ np.linalg.solve(cov, d)),
                    "n_samples": n,
                }
            }
        )
    out = joint_calibration(rows)
    assert out["mahalanobis2_reference"] == "hotelling"
    assert abs(out["mahalanobis2_expected"] - p * (n + 1) * (n - 1) / (n * (n - p - 2))) < 1e-9
    assert abs(out["mahalanobis2_mean"] / out["mahalanobis2_expected"] - 1) < 0.1
    assert max(abs(c - float(lv)) for lv, c in out["joint_coverage"].items()) < 0.08, out["joint_coverage"]
    for r in rows:
        del r["theta"]["n_samples"]
    naive = joint_calibration(rows)
    assert naive["mahalanobis2_expected"] == p and naive["joint_coverage"]["0.5"] < 0.3
    assert joint_calibration(rows, default_samples=n)["joint_coverage"] == out["joint_coverage"]


def test_in_model_pool_combines_runs_that_differ_only_in_seed(tmp_path):
    """in_model.py --pool: the pooled coverage is the mean over all draws of the runs (not the mean of the
    runs' means), the standard error shrinks with the draws; runs with other settings or the same seed are
    refused by name."""
    import json

    import numpy as np

    sys.path.insert(0, str(EXP))
    from _cases import LEVELS
    from in_model import main, summarize

    settings = {"method": "laplace", "obs": "silhouette", "mask_noise": 0.5, "size": 128, "jitter": 0.5}
    rng = np.random.default_rng(0)

    def run(name, seed, n, **override):
        levels = [str(lv) for lv in LEVELS]
        rows = [
            {
                "coverage": {lv: float(c) for lv, c in zip(levels, np.sort(rng.uniform(size=4)))},
                "coverage_normal": {lv: 0.5 for lv in levels},
                "vertex_error_mean": 1.0,
                "surface_mean": 0.3,
                "misfit": 1.0,
                "wall_s": 1.0,
            }
            for _ in range(n)
        ]
        d = tmp_path / name
        d.mkdir()
        (d / "cases.json").write_text(json.dumps(rows))
        (d / "summary.json").write_text(json.dumps({**summarize(rows, {**settings, **override}), "seed": seed}))
        return d, rows

    a, rows_a = run("a", 0, 3)
    b, rows_b = run("b", 1, 7)
    assert main(["--pool", str(a), str(b), "--out", str(tmp_path / "pooled")]) == 0
    pooled = json.loads((tmp_path / "pooled" / "summary.json").read_text())
    want = np.mean([r["coverage"]["0.5"] for r in rows_a + rows_b])
    assert pooled["n"] == 10 and abs(pooled["coverage"]["0.5"] - want) < 1e-12
    se = np.std([r["coverage"]["0.8"] for r in rows_a + rows_b], ddof=1) / np.sqrt(10)
    assert abs(pooled["coverage_se"]["0.8"] - se) < 1e-12
    assert [p["seed"] for p in pooled["pooled_from"]] == [0, 1]
    c, _ = run("c", 2, 4, mask_noise=0.3)
    with pytest.raises(SystemExit):
        main(["--pool", str(a), str(c), "--out", str(tmp_path / "bad")])
    d, _ = run("d", 0, 4)
    with pytest.raises(SystemExit):
        main(["--pool", str(a), str(d), "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()


def test_exact_contours_lie_on_the_truths_occluding_contour():
    """The in-model control's contour points: without jitter they lie on the truth's projected
    contour-generator edges, about one per pixel of its length; with jitter they scatter by its sd."""
    import jax.numpy as jnp
    import numpy as np

    sys.path.insert(0, str(EXP))
    from _cases import Case, exact_contours, make_views

    import bayesshape as bs
    from bayesshape.obs.contour import _point_segment_distance
    from bayesshape.projection.render import contour_weights
    from bayesshape.projection.topology import Topology

    truth = bs.datasets.example_shapes(1, seed=3)[0]
    views = make_views(2, 96)
    topo = Topology.from_faces(truth.faces, len(truth.vertices))
    for jitter in (0.0, 0.5):
        case = Case("x", "in_model", truth, views, views, jitter=jitter)
        for view, pts in zip(views, exact_contours(case, seed=1)):
            w, seg = contour_weights(jnp.asarray(truth.vertices), topo, view)
            seg = np.asarray(seg)[np.asarray(w) > 0.5]
            d = np.asarray(
                _point_segment_distance(jnp.asarray(pts), jnp.asarray(seg[:, 0]), jnp.asarray(seg[:, 1]))
            ).min(1)
            length = np.linalg.norm(seg[:, 1] - seg[:, 0], axis=1).sum()
            assert abs(len(pts) - length) <= 1.0
            if jitter == 0:
                assert d.max() < 1e-5
            else:  # the distance to the outline is about |N(0, jitter^2)| (less where edges are close)
                assert 0.25 < np.sqrt(np.mean(d**2)) < 0.55


@pytest.mark.slow
def test_noisy_masks_follow_the_probit_model():
    """The in-model masks of ``--mask-noise``: without noise they are the rasterised masks (the fine mask's
    distance transform puts every pixel centre on the right side); with noise sd 0.5 px, the pixels
    labelled differently lie close to the outline, and their number matches the probit model's
    expectation ``sum_p Phi(-|s_p| / 0.5)`` over the library's own signed distances (a check of the two
    independent computations against each other; Poisson error of the count about 4%)."""
    import jax.numpy as jnp
    import numpy as np
    from scipy.stats import norm

    sys.path.insert(0, str(EXP))
    from _cases import Case, make_views, noisy_masks

    import bayesshape as bs

    truth = bs.datasets.example_shapes(1, seed=3)[0]
    views = make_views(2, 128)
    case = Case("x", "in_model", truth, views, views)
    native = bs.simulate_xray(truth, views, seed=0).masks
    for m0, m in zip(noisy_masks(case, seed=1, sigma=0.0), native):
        np.testing.assert_array_equal(m0, m)
    flipped, expected = 0, 0.0
    for view, m, mn in zip(views, native, noisy_masks(case, seed=1, sigma=0.5)):
        o = bs.obs.Silhouette(view, m, 0.5, band=4.0).bind(np.asarray(truth.faces), truth.vertices)
        s = np.asarray(o.signed_distance(jnp.asarray(truth.vertices))[0])
        pix = np.asarray(o.pixels).astype(int)
        assert np.sum(mn != m) == np.sum(mn[pix[:, 0], pix[:, 1]] != m[pix[:, 0], pix[:, 1]])  # all in the band
        flipped += int(np.sum(mn[pix[:, 0], pix[:, 1]] != m[pix[:, 0], pix[:, 1]]))
        expected += float(np.sum(norm.cdf(-np.abs(s) / 0.5)))
    assert abs(flipped - expected) < 4 * np.sqrt(expected)


def _write_example_shapes(folder: Path, kind: str, n: int = 6, every: int = 1):
    import numpy as np

    from bayesshape import datasets, io

    folder.mkdir()
    for i, m in enumerate(datasets.example_shapes(n, seed=5, spread=2.0)):
        if kind == "ply":
            io.write_mesh(folder / f"shape_{i:02d}.ply", m)
        else:
            pts = np.asarray(m.vertices)[::every]
            text = "# x y z (mm)\n" + "\n".join(f"{x:.6f},{y:.6f},{z:.6f}" for x, y, z in pts)
            (folder / f"shape_{i:02d}.csv").write_text(text + "\n")


def _check_loo_outputs(out: Path, n_cases: int):
    import csv

    s = json.loads((out / "summary.json").read_text())
    for key in ("coverage", "coverage_se", "spearman_vertex", "error_mm", "floor_mm", "prior_error_mm"):
        assert key in s, key
    assert -1.0 <= s["spearman_vertex_ideal"] <= 1.0
    cov = [s["coverage"][k] for k in ("0.5", "0.8", "0.9", "0.95")]
    assert all(0.0 <= c <= 1.0 for c in cov) and cov == sorted(cov)
    with (out / "cases.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == n_cases == s["n_cases"]
    assert all(float(r["error_mm"]) >= 0 and float(r["floor_mm"]) >= 0 for r in rows)
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return s


@pytest.mark.slow
def test_loo_calibration_on_ply_meshes(tmp_path):
    _write_example_shapes(tmp_path / "meshes", "ply")
    out = tmp_path / "out"
    argv = ["--shapes", str(tmp_path / "meshes"), "--views", "biplanar", "--obs", "contour", "--size", "48"]
    _run_script(
        "loo_calibration.py", [*argv, "--cases", "1", "--coarse-faces", "0", "--max-rank", "20", "--out", str(out)]
    )
    s = _check_loo_outputs(out, 1)
    assert s["settings"]["model_error"] is True
    # the prior mean is further from the truth than the posterior mean
    assert s["error_mm"] < s["prior_error_mm"]


def test_loo_calibration_on_csv_point_sets(tmp_path):
    _write_example_shapes(tmp_path / "points", "csv", every=20)
    out = tmp_path / "out"
    argv = ["--shapes", str(tmp_path / "points"), "--obs", "landmarks3d", "--points", "15", "--noise", "0.5"]
    more = ["--only", "shape_03,shape_01", "--model-error-scale", "1.5", "--max-rank", "10", "--out", str(out)]
    _run_script("loo_calibration.py", [*argv, *more])
    _check_loo_outputs(out, 2)
    import csv

    with (out / "cases.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["case"] for r in rows] == ["shape_03", "shape_01"]
    assert all(float(r["model_error_scale"]) == 1.5 and float(r["misfit"]) > 0 for r in rows)
    _run_script("loo_calibration.py", [*argv, "--only", "shape_99", "--out", str(tmp_path / "o3")], exit_code=2)
    # a point set has no surface to project
    _run_script(
        "loo_calibration.py",
        ["--shapes", str(tmp_path / "points"), "--obs", "contour", "--out", str(tmp_path / "o2")],
        exit_code=2,
    )


@pytest.mark.slow
def test_spine_smoke(tmp_path):
    """One spine and the fracture case at a tiny setting: every summary key the page reports."""
    from tests.conftest import shared

    data = shared("lumbar_l2l5")
    argv = "--cases 1 --faces 300 --prior trained --train 6 --error-rank 4 --truth-rank 8 --detector 48".split()
    argv += ["--map-modes", "4"]
    _run_script(
        "spine.py", [*argv, "--block-size", "8", "--samples", "50", "--data", str(data), "--out", str(tmp_path)]
    )
    s = json.loads((tmp_path / "summary.json").read_text())
    for key in ("dice_mean", "surface_error_mm", "rotation_error_deg", "lordosis_error_deg", "fracture_flagged"):
        assert key in s
    assert set(s["angle_coverage"]) == {"0.5", "0.8", "0.9", "0.95"}
    assert 0.5 < s["dice_mean"] <= 1.0
    assert s["prior"] == "trained" and s["modes_per_vertebra"] == [5 + 4] * 4  # 6 shapes: 5 PCA modes
    # the wedge fracture and each vertebra's morphometry: heights reduced as measured on the truth
    frac = {v["vertebra"]: v for v in s["fracture_case"]}
    assert set(frac) == {"L2", "L3", "L4", "L5"}
    for v in frac.values():
        assert -1 < v["height_reduction"] < 1 and 0 <= v["p_genant_1"] <= 1 and v["genant_grade"] in (0, 1, 2, 3)
    assert set(s["fracture_flags_by_wedge"]) <= set(frac) and "flagged_by_wedge_in_normal_cases" in s
    assert sum(s["wedge_flags_against_truth"].values()) == 2 * 4  # one spine and the fracture case
    assert 0 <= s["height_reduction_coverage_95"] <= 1 and s["height_reduction_error"] >= 0
    rows = (tmp_path / "angles.csv").read_text().splitlines()
    assert len(rows) == 1 + 3 * 3 + 2  # header, three planes at three joints, two lordosis angles
