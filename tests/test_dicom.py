"""DICOM radiographs: geometry from the tags, pixels to line integrals, and the CLI path
simulate --dicom -> infer --xray against the same images as .npy."""

import json
import warnings

import numpy as np
import pydicom
import pytest

import bayesshape as bs
from bayesshape.cli import main
from bayesshape.io import read_radiograph, write_radiograph
from bayesshape.projection.views import view_from_dicom


def _view(lao=0.0, cranial=0.0, shape=(40, 56)):
    return bs.carm_view(
        lao=lao,
        cranial=cranial,
        source_to_isocenter=700.0,
        source_to_detector=1100.0,
        detector_shape=shape,
        pixel_spacing=0.8,
    )


def _line_integrals(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 3.0, shape)


def _same_view(a, b, atol=1e-3):
    for f in ("source", "origin", "u", "v", "direction", "spacing"):
        np.testing.assert_allclose(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), atol=atol, err_msg=f)
    assert a.detector_shape == b.detector_shape and a.is_parallel == b.is_parallel


@pytest.mark.parametrize("lao, cranial", [(0.0, 0.0), (90.0, 0.0), (-35.0, 20.0), (120.0, -25.0), (180.0, 0.0)])
def test_radiograph_round_trip(tmp_path, lao, cranial):
    view = _view(lao, cranial)
    p = _line_integrals(view.detector_shape)
    quantised = write_radiograph(tmp_path / "x.dcm", p, view, air=50000.0)
    # 16-bit counts: the line integrals survive to half a count in 50000 * exp(-3) = 2489
    assert np.abs(quantised - p).max() < 0.5 / 2489 * 1.01
    xr = read_radiograph(tmp_path / "x.dcm", air=50000.0)
    _same_view(xr.view, view)
    np.testing.assert_array_equal(xr.line_integrals, quantised)
    assert xr.modality == "DX" and not xr.mirrored
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.PixelIntensityRelationship == "LIN"
    assert float(ds.DistanceSourceToDetector) == pytest.approx(1100.0)
    assert float(ds.DistanceSourceToPatient) == pytest.approx(700.0)
    # a view built from the tags alone, by XRayView.from_dicom, is the same view
    _same_view(bs.XRayView.from_dicom(tmp_path / "x.dcm"), view)


def test_flat_field_monochrome2_mirrored_and_log(tmp_path):
    view = _view(0.0, 0.0)
    p = _line_integrals(view.detector_shape, seed=1)
    quantised = write_radiograph(tmp_path / "x.dcm", p, view, air=40000.0)
    flat = np.full(view.detector_shape, 40000.0)
    np.testing.assert_allclose(read_radiograph(tmp_path / "x.dcm", flat_field=flat).line_integrals, quantised)
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    counts = ds.pixel_array.astype(np.int64)
    # the same intensities stored inverted, as MONOCHROME2 with sign -1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelIntensityRelationshipSign = -1
    ds.PixelData = (65535 - counts).astype(np.uint16).tobytes()
    ds.save_as(tmp_path / "inv.dcm")
    np.testing.assert_allclose(read_radiograph(tmp_path / "inv.dcm", air=40000.0).line_integrals, quantised)
    # the image stored mirrored left to right (PatientOrientation's row letter flipped): flipped back
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    row, col = ds.PatientOrientation
    flip = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
    ds.PatientOrientation = ["".join(flip[c] for c in row), col]
    ds.PixelData = np.ascontiguousarray(counts[:, ::-1]).astype(np.uint16).tobytes()
    ds.save_as(tmp_path / "mirror.dcm")
    xr = read_radiograph(tmp_path / "mirror.dcm", air=40000.0)
    assert xr.mirrored
    np.testing.assert_allclose(xr.line_integrals, quantised)
    _same_view(xr.view, view)
    # LOG images: values = 1000 * log(I)
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    ds.PixelIntensityRelationship = "LOG"
    log_counts = np.rint(1000 * np.log(np.maximum(counts, 1))).astype(np.uint16)
    ds.PixelData = log_counts.tobytes()
    ds.save_as(tmp_path / "log.dcm")
    with pytest.raises(ValueError, match="log_scale"):
        read_radiograph(tmp_path / "log.dcm", air=40000.0)
    with pytest.raises(ValueError, match="air: expected a positive open-beam intensity"):
        read_radiograph(tmp_path / "log.dcm", air=0.0, log_scale=1000.0)  # not a silent log(0)
    xr = read_radiograph(tmp_path / "log.dcm", air=40000.0, log_scale=1000.0)
    np.testing.assert_allclose(xr.line_integrals, np.log(40000.0) - log_counts / 1000.0, atol=1e-12)


@pytest.mark.parametrize(
    "tag, argument",
    [
        ("DistanceSourceToDetector", "source_to_detector"),
        ("DistanceSourceToPatient", "source_to_isocenter"),
        ("ImagerPixelSpacing", "pixel_spacing"),
    ],
)
def test_missing_geometry_tag_is_named(tmp_path, tag, argument):
    view = _view(30.0, 10.0)
    write_radiograph(tmp_path / "x.dcm", _line_integrals(view.detector_shape), view)
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    value = ds.data_element(tag).value
    del ds[tag]
    if tag == "ImagerPixelSpacing":
        del ds["PixelSpacing"]
        value = [float(x) for x in value][0]
    ds.save_as(tmp_path / "missing.dcm")
    with pytest.raises(ValueError, match=f"{tag}.*{argument}") as e:
        read_radiograph(tmp_path / "missing.dcm", air=60000.0)
    assert "\n" not in str(e.value)
    # the value given instead of the tag gives the same view
    xr = read_radiograph(tmp_path / "missing.dcm", air=60000.0, **{argument: float(value)})
    _same_view(xr.view, view)


def test_pixel_spacing_with_magnification_factor(tmp_path):
    view = _view(-20.0, 5.0)
    write_radiograph(tmp_path / "x.dcm", _line_integrals(view.detector_shape), view)
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    del ds["ImagerPixelSpacing"]  # left: PixelSpacing at the isocentre and the magnification factor
    _same_view(view_from_dicom(ds)[0], view)


def test_not_a_radiograph_is_refused(tmp_path):
    view = _view()
    write_radiograph(tmp_path / "x.dcm", _line_integrals(view.detector_shape), view)
    ds = pydicom.dcmread(tmp_path / "x.dcm")
    ds.Modality = "CT"
    ds.save_as(tmp_path / "ct.dcm")
    with pytest.raises(ValueError, match="Modality 'CT' is not a projection radiograph"):
        read_radiograph(tmp_path / "ct.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"not dicom")
    with pytest.raises(ValueError, match="not a readable DICOM file"):
        read_radiograph(tmp_path / "junk.dcm")
    with pytest.raises(ValueError, match="parallel view has no DICOM geometry"):
        write_radiograph(
            tmp_path / "p.dcm", np.zeros((8, 8)), bs.XRayView.parallel((0.0, 1.0, 0.0), detector_shape=(8, 8))
        )


def _run(argv):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return main(argv)


@pytest.mark.slow
def test_dicom_through_the_cli_gives_the_npy_posterior(tmp_path, capsys):
    model, xray = tmp_path / "m.npz", tmp_path / "xray"
    assert _run(["build-model", "--example", "10", "--out", str(model)]) == 0
    # the example bone is 423 mm long: 48 px of 16 mm at the detector cover 489 mm at the isocentre
    views = [
        bs.carm_view(
            lao=a, source_to_isocenter=700.0, source_to_detector=1100.0, detector_shape=(48, 48), pixel_spacing=16.0
        )
        for a in (0.0, 90.0)
    ]
    bs.io.write_views(tmp_path / "views.json", views, ["AP", "LAT"])
    sim = ["simulate", "--model", str(model), "--sample-seed", "3", "--views", str(tmp_path / "views.json")]
    assert _run([*sim, "--dicom", "--out", str(xray)]) == 0
    assert json.loads((xray / "simulation.json").read_text())["files"]["dicom"] == ["AP.dcm", "LAT.dcm"]
    common = ["--method", "laplace", "--samples", "100", "--export-samples", "0", "--quiet", "--model", str(model)]
    case_x, case_n = tmp_path / "case_x", tmp_path / "case_n"
    xr = ["--xray", str(xray / "AP.dcm"), str(xray / "LAT.dcm"), "--flat-field", str(xray / "flat_field.dcm")]
    assert _run(["infer", *common, *xr, "--out", str(case_x)]) == 0
    npy = ["--views", str(xray / "views.json"), "--images", str(xray / "AP_drr.npy"), str(xray / "LAT_drr.npy")]
    assert _run(["infer", *common, *npy, "--out", str(case_n)]) == 0
    a, b = bs.io.load_posterior(case_x / "posterior.npz"), bs.io.load_posterior(case_n / "posterior.npz")
    # the same views (to the bit) and the same line integrals: the same posterior, to float32 rounding
    np.testing.assert_allclose(a.mean_vertices(), b.mean_vertices(), rtol=0, atol=1e-5)
    np.testing.assert_allclose(a.credible_radius(0.95), b.credible_radius(0.95), rtol=0, atol=1e-5)
    # a file without DistanceSourceToDetector: refused on one line naming the tag and the option
    ds = pydicom.dcmread(xray / "LAT.dcm")
    del ds["DistanceSourceToDetector"]
    ds.save_as(tmp_path / "LAT_bad.dcm")
    capsys.readouterr()
    bad = ["--xray", str(xray / "AP.dcm"), str(tmp_path / "LAT_bad.dcm"), "--air", "60000"]
    assert _run(["infer", *common, *bad, "--out", str(tmp_path / "bad")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "DistanceSourceToDetector" in err[0] and "--source-to-detector" in err[0], err
