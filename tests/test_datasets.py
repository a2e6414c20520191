import numpy as np
import pytest

from bayesshape import datasets


def test_example_shapes_are_watertight_and_in_correspondence():
    shapes = datasets.example_shapes(6, seed=3)
    for m in shapes:
        assert m.is_watertight and m.is_winding_consistent and m.volume > 0
        assert m.vertices.shape == shapes[0].vertices.shape
        np.testing.assert_array_equal(m.faces, shapes[0].faces)
    assert 1000 < len(shapes[0].vertices) < 10000


def test_example_shapes_are_seeded():
    a = datasets.example_shapes(2, seed=5)
    b = datasets.example_shapes(2, seed=5)
    c = datasets.example_shapes(2, seed=6)
    np.testing.assert_array_equal(a[0].vertices, b[0].vertices)
    assert not np.allclose(a[0].vertices, c[0].vertices)


def test_parameters_are_interpretable():
    base = datasets.make_shape()
    longer = datasets.make_shape({"length": 470.0})
    ext = lambda m: m.vertices[:, 2].max() - m.vertices[:, 2].min()
    assert ext(longer) - ext(base) == pytest.approx(50.0, rel=0.02)
    thick = datasets.make_shape({"shaft_radius": 15.0})
    assert thick.volume > base.volume
    with pytest.raises(ValueError, match="unknown parameter"):
        datasets.make_shape({"lenght": 1.0})
