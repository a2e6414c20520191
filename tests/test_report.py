"""Pictures and the HTML report; the report is loaded in headless Chromium when it is installed."""

import html as html_module
import json
import re
import shutil
import subprocess

import jax
import numpy as np
import pytest

import bayesshape as bs
from bayesshape.report import READY_MESSAGE, calibration_png, confidence_png, make_report, overlay_png, write_case

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def case(tmp_path_factory, example_model):
    """A case folder from a simulated biplanar X-ray and a sample-based posterior around the truth."""
    folder = tmp_path_factory.mktemp("case")
    key_truth, key_post = jax.random.split(jax.random.key(7))
    truth = np.asarray(example_model.sample(key_truth, 1)[0])
    views = list(bs.biplanar(field_of_view=480, detector_shape=(64, 64)))
    sim = bs.simulate_xray((truth, np.asarray(example_model.faces)), views, seed=0, noise=0.01)
    noise = 0.5 * np.asarray(jax.random.normal(key_post, (50, 1, 3)))
    post = bs.posterior.ShapeSamples(
        truth[None] + noise,
        np.asarray(example_model.faces),
        method="test",
        misfit=[{"type": "DRR", "n_data": 4096, "mean_sq_std_residual": 1.1}],
    )
    write_case(
        folder,
        post,
        views,
        ["AP", "LAT"],
        sim.drr,
        ["drr", "mask"],
        points=[None, sim.contours[1]],
        truth=example_model.mesh(truth),
        n_samples=2,
    )
    return folder


@pytest.fixture(scope="module")
def page(case):
    return make_report(case)


def test_pictures(tmp_path, example_model):
    v = np.asarray(example_model.mean)
    p = confidence_png(v, np.asarray(example_model.faces), np.linspace(0, 3, len(v)), tmp_path / "c.png", vmax=4.0)
    assert p.read_bytes()[:8] == PNG
    view = bs.biplanar(field_of_view=480, detector_shape=(64, 64))[0]
    with pytest.raises(ValueError, match="detector shape"):
        overlay_png(np.zeros((32, 32)), view, v, np.asarray(example_model.faces), tmp_path / "o.png")
    with pytest.raises(ValueError, match="values"):
        confidence_png(v, np.asarray(example_model.faces), np.zeros(3), tmp_path / "x.png", vmax=1.0)
    p = calibration_png([0.5, 0.8, 0.9, 0.95], {"NUTS": [0.52, 0.8, 0.88, 0.93]}, tmp_path / "cal.png")
    assert p.read_bytes()[:8] == PNG


def test_report_is_self_contained(case, page):
    html = page.read_text()
    for name in ("credible_radius", "normal_std", "error", "overlay_0", "overlay_1", "drr_residual_0"):
        assert (case / "pictures" / f"{name}.png").read_bytes()[:8] == PNG, name
    assert not (case / "pictures" / "drr_residual_1.png").exists()  # view 1 is a mask
    assert html.count("data:image/png;base64,") == 6
    # nothing is fetched at view time: no external scripts, styles or images
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", html)
    # the verdict printed is the one summary.json holds, with the rule it applied
    rel = json.loads((case / "summary.json").read_text())["reliability"]
    from bayesshape.posterior.samples import verdict_sentence

    assert html_module.escape(verdict_sentence(rel)) in html
    assert ("UNRELIABLE" in html) == (not rel["reliable"])
    assert "Accuracy against the truth" in html and "Software" in html


def _visible_text(page_html: str) -> str:
    body = re.sub(r"<script.*?</script>", " ", page_html, flags=re.S)
    return html_module.unescape(re.sub(r"<[^>]+>", " ", body))


def _row(page_html: str, label: str) -> str:
    m = re.search(r"<tr><th>" + re.escape(html_module.escape(label)) + r"</th><td[^>]*>(.*?)</td></tr>", page_html)
    assert m, label
    return html_module.unescape(m.group(1))


def test_report_tables_read_as_figures_with_units(case, page):
    page_html = page.read_text()
    summary = json.loads((case / "summary.json").read_text())
    err, rel = summary["error_mm"], summary["reliability"]
    assert _row(page_html, "Mean vertex error") == f"{err['vertex_mean']:.3g} mm"
    assert _row(page_html, "Vertices whose truth lies inside their 95% credible ball") == (
        f"{100 * err['coverage_95']:.1f}%"
    )
    assert _row(page_html, "Vertices whose credible radius exceeds the tolerance") == (
        f"{100 * rel['fraction_vertices_flagged']:.1f}%"
    )
    assert _row(page_html, "Clinical tolerance") == "2 mm"
    u = summary["uncertainty_mm"]["credible_radius_95"]
    assert _row(page_html, "95% credible radius") == (
        f"mean {u['mean']:.3g} mm, median {u['median']:.3g} mm, largest {u['max']:.3g} mm"
    )
    text = _visible_text(page_html)
    for raw in (
        "vertex_p95",
        "coverage_95",
        "fraction_vertices_flagged",
        "map_newton_decrement",
        "mean_sq_std_residual",
    ):
        assert raw not in text, raw
    # clinical figures first, the solver's diagnostics after the pictures
    assert text.index("Accuracy against the truth") < text.index("Confidence mesh") < text.index("Solver diagnostics")
    # the 3D view offers every field
    for name in ("credible_radius", "normal_std", "flag", "error"):
        assert f"<option value='{name}'>" in page_html, name


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_report_renders_in_headless_chromium(case, page):
    exe = _chromium()
    if exe is None:
        pytest.skip(
            "headless Chromium is not installed (Debian: apt-get install chromium chromium-driver); "
            "the report was not opened in a browser"
        )
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=5000",
        "--dump-dom",
        page.resolve().as_uri(),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    console = [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln]
    # the page's script ran to its end and drew the mesh ...
    assert any(READY_MESSAGE in ln for ln in console), res.stderr[-2000:]
    assert 'data-rendered="1"' in res.stdout
    n_vert = len(bs.load_posterior(case / "posterior.npz").mean_vertices())
    assert f"3D view: {n_vert} vertices" in res.stdout
    # ... and logged nothing else: no exceptions, no errors
    others = [ln for ln in console if READY_MESSAGE not in ln]
    assert not others, others
    # the colour-bar ticks follow the field; a link can open another field
    assert re.search(r'<span style="left:100%">4 mm \+</span>', res.stdout), res.stdout[-3000:]
    res = subprocess.run(
        [*cmd[:-1], page.resolve().as_uri() + "#field=flag"], capture_output=True, text=True, timeout=180
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "colour: flag (credible radius above 2 mm)" in res.stdout
    assert '<span style="left:50%">0.5</span>' in res.stdout
    assert not [ln for ln in res.stderr.splitlines() if ":CONSOLE" in ln and READY_MESSAGE not in ln]
