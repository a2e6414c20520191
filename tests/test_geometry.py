"""Evaluation geometry: inside tests and volumetric Dice against analytic solids."""

import jax.numpy as jnp
import numpy as np
import pytest

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


@pytest.mark.slow
def test_volume_dice_of_shifted_spheres():
    r, d = 30.0, 20.0
    a = bs.datasets.icosphere(r, 4)
    b = bs.datasets.icosphere(r, 4, center=(d, 0.0, 0.0))
    lens = np.pi * (4 * r + d) * (2 * r - d) ** 2 / 12  # volume of the intersection of two balls
    want = 2 * lens / (a.volume + b.volume)
    assert abs(volume_dice(a.vertices, a.faces, b.vertices, b.faces, pitch=1.0) - want) < 0.01
    assert volume_dice(a.vertices, a.faces, a.vertices, a.faces, pitch=2.0) == 1.0


def test_coarsen_mesh_keeps_original_vertices_and_the_surface():
    from bayesshape._geometry import points_to_surface
    from bayesshape.prior import coarsen_mesh

    s = bs.datasets.example_shapes(1, seed=3)[0]
    index, faces = coarsen_mesh(s.vertices, s.faces, 1600)
    assert abs(faces.shape[0] - 1600) <= 0.02 * 1600
    assert np.unique(index).size == index.size and faces.min() == 0 and faces.max() == index.size - 1
    import trimesh

    coarse = trimesh.Trimesh(s.vertices[index], faces, process=False)
    assert coarse.is_watertight and coarse.euler_number == s.euler_number == 2
    # 4x fewer faces and sliver flips (which cut a little off convex edges) lose up to 4% of the volume
    assert coarse.volume > 0 and abs(coarse.volume / s.volume - 1) < 0.04
    # every fine vertex lies close to the coarse surface: within a third of a coarse edge on average
    d = np.asarray(points_to_surface(jnp.asarray(s.vertices), jnp.asarray(coarse.vertices), jnp.asarray(faces)))
    assert d.mean() < coarse.edges_unique_length.mean() / 3
    # fewer slivers (quality 4 sqrt(3) area / sum of squared edges: 285 triangles below 0.1 and a
    # minimum of 0.023 before the edge flips)
    from bayesshape.prior._flip import _quality

    q = _quality(coarse.vertices, faces)[0]
    assert q.min() > 0.05 and np.sum(q < 0.1) < 20
    assert coarse.is_winding_consistent
    # no-op above the face count; bad targets refused
    i2, f2 = coarsen_mesh(s.vertices, s.faces, 10**6)
    np.testing.assert_array_equal(i2, np.arange(len(s.vertices)))
    import pytest

    with pytest.raises(ValueError, match="n_faces"):
        coarsen_mesh(s.vertices, s.faces, 2)
    with pytest.raises(ValueError, match="faces"):
        coarsen_mesh(s.vertices, s.faces[:, :2], 100)


def test_nearest_surface_distance_equals_brute_force():
    from bayesshape._geometry import nearest_surface_distance, points_to_surface

    s = bs.datasets.example_shapes(1, seed=5)[0]
    rng = np.random.default_rng(0)
    # points near the surface, far from it, and on it
    pts = np.concatenate(
        [
            s.vertices[::7] + rng.normal(scale=2.0, size=(len(s.vertices[::7]), 3)),
            s.vertices[:20] + rng.normal(scale=60.0, size=(20, 3)),
            s.vertices[:5],
        ]
    )
    fast = nearest_surface_distance(pts, s.vertices, s.faces)
    brute = np.asarray(points_to_surface(jnp.asarray(pts), jnp.asarray(s.vertices), jnp.asarray(s.faces)))
    np.testing.assert_allclose(fast, brute, rtol=0, atol=1e-9)
    assert np.all(fast[-5:] < 1e-9)
