"""Evaluation geometry: inside tests and volumetric Dice against analytic solids."""

import numpy as np
import jax.numpy as jnp

import bayesshape as bs
from bayesshape._geometry import inside_grid, volume_dice, winding_numbers


def test_inside_grid_matches_winding_numbers_and_volume():
    s = bs.datasets.icosphere(30.0, 4)
    axes = [np.arange(-35.0, 35.0, 3.0) + 0.3] * 3
    inside = inside_grid(s.vertices, s.faces, axes)
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    w = np.asarray(winding_numbers(jnp.asarray(grid), jnp.asarray(s.vertices), jnp.asarray(s.faces)))
    np.testing.assert_array_equal(np.abs(w) > 0.5, inside.ravel())
    assert abs(inside.sum() * 27.0 / s.volume - 1.0) < 0.02


def test_volume_dice_of_shifted_spheres():
    r, d = 30.0, 20.0
    a = bs.datasets.icosphere(r, 4)
    b = bs.datasets.icosphere(r, 4, center=(d, 0.0, 0.0))
    lens = np.pi * (4 * r + d) * (2 * r - d) ** 2 / 12  # volume of the intersection of two balls
    want = 2 * lens / (a.volume + b.volume)
    assert abs(volume_dice(a.vertices, a.faces, b.vertices, b.faces, pitch=1.0) - want) < 0.01
    assert volume_dice(a.vertices, a.faces, a.vertices, a.faces, pitch=2.0) == 1.0
