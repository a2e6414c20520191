"""Imaging geometry, pose, topology and renderers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesshape as bs
from bayesshape.projection import Topology, rotation_matrix


@pytest.fixture(scope="module")
def sphere():
    return bs.datasets.icosphere(60.0, 5)


def test_sphere_drr_parallel_matches_chord_length(sphere):
    r, sp = 60.0, 0.6
    view = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (256, 256), sp)
    img = np.asarray(bs.projection.render_drr(jnp.asarray(sphere.vertices), jnp.asarray(sphere.faces), view))
    g = np.asarray(view.pixel_grid())
    rho = np.hypot(g[..., 0] - 127.5, g[..., 1] - 127.5) * sp
    inside = rho < 0.9 * r
    analytic = 2 * np.sqrt(np.clip(r**2 - rho**2, 0, None))
    assert np.abs(img - analytic)[inside].mean() < 0.01 * r
    assert np.all(img[rho > r] == 0.0)  # the inscribed mesh lies inside the sphere
    assert img.min() >= 0.0


def test_sphere_cone_beam_silhouette_radius(sphere):
    r, sid, sdd = 60.0, 1000.0, 1300.0
    view = bs.XRayView.cone_beam(sdd, sid, (256, 256), 1.0)
    img = np.asarray(bs.projection.render_drr(jnp.asarray(sphere.vertices), jnp.asarray(sphere.faces), view))
    analytic = sdd * np.tan(np.arcsin(r / sid))  # radius of the tangent cone on the detector, px
    g = np.asarray(view.pixel_grid())
    rho = np.hypot(g[..., 0] - 127.5, g[..., 1] - 127.5)
    measured = np.sqrt((img > 0).sum() / np.pi)
    assert abs(measured - analytic) < 1.0
    assert rho[img > 0].max() < analytic + 1.0
    # the central ray crosses the full diameter
    assert abs(img[127:129, 127:129].max() - 2 * r) < 0.01 * r


def test_drr_inward_mesh_and_translation_invariance(sphere):
    view = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (64, 64), 2.5)
    v, f = jnp.asarray(sphere.vertices), jnp.asarray(sphere.faces)
    a = bs.projection.render_drr(v, f, view)
    b = bs.projection.render_drr(v, f[:, ::-1], view)  # inverted orientation
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-9)
    # shifting along the ray does not change a parallel DRR
    c = bs.projection.render_drr(v + jnp.array([0.0, 37.0, 0.0])[None, :], f, view)
    np.testing.assert_allclose(np.asarray(a), np.asarray(c), atol=1e-9)


@pytest.mark.slow
def test_femur_drr_integral_equals_volume(femur_meshes):
    for m in femur_meshes:
        c = m.bounds.mean(0)
        view = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (256, 256), 500.0 / 256, center=c)
        img = np.asarray(bs.projection.render_drr(jnp.asarray(m.vertices), jnp.asarray(m.faces), view))
        vol = img.sum() * (500.0 / 256) ** 2
        assert abs(vol - m.volume) / m.volume < 0.01


def test_vmap_over_views_equals_loop(example_shapes):
    m = example_shapes[0]
    v, f = jnp.asarray(m.vertices), jnp.asarray(m.faces)
    views = [
        bs.carm_view(lao=a, cranial=c, detector_shape=(96, 96), pixel_spacing=6.0)
        for a, c in [(0, 0), (30, 10), (-45, -5), (90, 0)]
    ]
    fp = max(bs.projection.drr_footprint(m.vertices, m.faces, vw) for vw in views)
    loop = np.stack([np.asarray(bs.projection.render_drr(v, f, vw, footprint=fp)) for vw in views])
    stacked = bs.projection.stack_views(views)
    traces = []

    @jax.jit
    def render_all(v, sv):
        traces.append(1)
        return jax.vmap(lambda view: bs.projection.render_drr(v, f, view, footprint=fp))(sv)

    out = np.asarray(render_all(v, stacked))
    np.testing.assert_allclose(out, loop, atol=1e-9)
    render_all(v + 1.0, stacked)
    assert len(traces) == 1
    proj = jax.vmap(lambda view: view.project(v[:5]))(stacked)
    np.testing.assert_allclose(np.asarray(proj[2]), np.asarray(views[2].project(v[:5])), atol=1e-9)


def test_view_conventions_and_roundtrip():
    ap, lat = bs.biplanar(field_of_view=400.0, detector_shape=(200, 200))
    c = np.array([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 0.0, 10.0]])
    p = np.asarray(ap.project(jnp.asarray(c)))
    assert p[1, 1] > p[0, 1] and abs(p[1, 0] - p[0, 0]) < 1e-9  # +x to image right in AP
    assert p[2, 0] < p[0, 0]  # +z is image up
    assert np.allclose(p[0], [99.5, 99.5])
    np.testing.assert_allclose(np.asarray(lat.direction), [1.0, 0.0, 0.0])
    cone = bs.XRayView.cone_beam(1200.0, 800.0, (128, 160), (0.7, 0.6), direction=(1, 1, 0.2))
    px = jnp.asarray([[3.0, 4.0], [100.5, 7.25]])
    w = cone.pixel_to_world(px)
    np.testing.assert_allclose(np.asarray(cone.project(w)), np.asarray(px), atol=1e-9)
    start, d = cone.rays(px)
    mid = start + 500.0 * d
    np.testing.assert_allclose(np.asarray(cone.project(mid)), np.asarray(px), atol=1e-9)
    # magnification: an object at the isocentre appears source_to_detector / source_to_isocenter times larger
    q = np.asarray(cone.project(jnp.asarray([[0.0, 0.0, 0.0], [0.0, 0.0, 10.0]])))
    assert abs(np.linalg.norm(q[1] - q[0]) * 0.7 - 10.0 * 1200 / 800) < 0.3


def test_bad_views():
    with pytest.raises(ValueError, match="source_to_isocenter"):
        bs.XRayView.cone_beam(1000.0, 0.0, (64, 64), 1.0)
    with pytest.raises(ValueError, match="source_to_isocenter"):
        bs.XRayView.cone_beam(500.0, 800.0, (64, 64), 1.0)
    with pytest.raises(ValueError, match="direction"):
        bs.XRayView.cone_beam(1000.0, 800.0, (64, 64), 1.0, direction=(np.nan, 0, 1))
    with pytest.raises(ValueError, match="isocenter"):
        bs.XRayView.cone_beam(1000.0, 800.0, (64, 64), 1.0, isocenter=(0, np.nan, 0))
    with pytest.raises(ValueError, match="zero vector"):
        bs.XRayView.parallel((0, 0, 0))
    with pytest.raises(ValueError, match="parallel to the viewing direction"):
        bs.XRayView.parallel((0, 0, 1), up=(0, 0, 1))
    with pytest.raises(ValueError, match="pixel_spacing"):
        bs.XRayView.parallel((0, 1, 0), pixel_spacing=-1.0)
    with pytest.raises(ValueError, match="detector_shape"):
        bs.XRayView.parallel((0, 1, 0), detector_shape=(1, 64))
    with pytest.raises(ValueError, match="same detector shape"):
        bs.projection.stack_views(
            [
                bs.XRayView.parallel((0, 1, 0), detector_shape=(8, 8)),
                bs.XRayView.parallel((0, 1, 0), detector_shape=(8, 9)),
            ]
        )


def test_drr_needs_footprint_under_jit_and_checks_it(sphere):
    from bayesshape.projection.render import render_drr  # eager calls run compiled, with the run-time checks

    view = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (64, 64), 2.5)
    v, f = jnp.asarray(sphere.vertices), jnp.asarray(sphere.faces)
    with pytest.raises(ValueError, match="footprint is required"):
        jax.jit(lambda v: bs.projection.render_drr(v, f, view))(v)
    big = bs.datasets.icosphere(60.0, 1)
    with pytest.raises(Exception, match="larger than the footprint"):
        render_drr(jnp.asarray(big.vertices), jnp.asarray(big.faces), view, footprint=2)
    cone = bs.XRayView.cone_beam(1300.0, 1000.0, (64, 64), 4.0)
    with pytest.raises(Exception, match="behind the X-ray source"):
        render_drr(v - jnp.array([0.0, 1000.0, 0.0])[None, :], f, cone, footprint=8)


def test_rotation_matrix_and_pose():
    from scipy.spatial.transform import Rotation

    for rv in ([0.3, -0.2, 0.5], [1e-6, 0.0, 2e-6], [0.0, 0.0, 0.0], [2.0, 1.0, -0.5]):
        r = np.asarray(rotation_matrix(jnp.asarray(rv)))
        np.testing.assert_allclose(r, Rotation.from_rotvec(rv).as_matrix(), atol=1e-12)
    g = jax.jacfwd(rotation_matrix)(jnp.zeros(3))
    assert np.all(np.isfinite(np.asarray(g)))
    # d R / d r_z at 0 is the generator [[0,-1,0],[1,0,0],[0,0,0]]
    np.testing.assert_allclose(np.asarray(g[..., 2]), [[0, -1, 0], [1, 0, 0], [0, 0, 0]], atol=1e-12)
    pts = jnp.asarray(np.random.default_rng(0).normal(size=(20, 3)))
    pose = bs.projection.Pose(jnp.asarray([0.1, 0.2, 0.3]), jnp.asarray([1.0, 2.0, 3.0]), jnp.asarray(np.log(1.1)))
    c = pts.mean(0)
    out = pose.apply(pts, c)
    np.testing.assert_allclose(np.asarray(out.mean(0)), np.asarray(c) + [1.0, 2.0, 3.0], atol=1e-12)
    d0 = np.linalg.norm(np.asarray(pts[0] - pts[1]))
    d1 = np.linalg.norm(np.asarray(out[0] - out[1]))
    assert d1 / d0 == pytest.approx(1.1)


def test_topology(sphere, example_shapes):
    topo = Topology.from_faces(sphere.faces)
    assert topo.n_edges == 3 * len(sphere.faces) // 2
    assert not bool(topo.boundary.any())
    e = np.asarray(topo.edges)
    ef = np.asarray(topo.edge_faces)
    faces = np.asarray(sphere.faces)
    for k in range(0, len(e), 997):
        for fi in ef[k]:
            assert set(e[k]) <= set(faces[fi])
    open_mesh = np.asarray(sphere.faces)[:-1]
    assert int(Topology.from_faces(open_mesh).boundary.sum()) == 3
    with pytest.raises(ValueError, match="manifold"):
        Topology.from_faces(np.concatenate([faces, faces[:1]]))


def test_sphere_contour_generator_is_the_rim(sphere):
    view = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (256, 256), 0.6)
    topo = Topology.from_faces(sphere.faces)
    is_c, seg = bs.projection.contour_generator(jnp.asarray(sphere.vertices), topo, view)
    seg = np.asarray(seg)[np.asarray(is_c)]
    rho = np.hypot(seg[..., 0] - 127.5, seg[..., 1] - 127.5) * 0.6
    assert len(seg) > 100
    assert np.all(np.abs(rho - 60.0) < 0.3)  # within the mesh's chord error of the rim


def test_beer_lambert_and_soft_silhouette(sphere):
    view = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (64, 64), 2.5)
    v, f = jnp.asarray(sphere.vertices), jnp.asarray(sphere.faces)
    length = bs.projection.render_drr(v, f, view)
    i = bs.projection.beer_lambert(0.02 * length, 1000.0)
    np.testing.assert_allclose(np.asarray(i), 1000.0 * np.exp(-0.02 * np.asarray(length)))
    s = np.asarray(bs.projection.soft_silhouette(v, f, view, tau=20.0))
    assert s.min() == 0.0 and s.max() <= 1.0 and s[32, 32] > 0.99
    assert np.any((s > 0.05) & (s < 0.95))  # a soft rim


@pytest.fixture(scope="module")
def tilted_sphere():
    """A small icosphere turned off the pixel grid: no vertex or edge on a pixel boundary."""
    from scipy.spatial.transform import Rotation

    s = bs.datasets.icosphere(20.0, 2)
    rot = Rotation.from_rotvec([0.3, -0.2, 0.45]).as_matrix()
    return jnp.asarray(s.vertices @ rot.T + np.array([0.123, 0.0, -0.272])), jnp.asarray(s.faces), s.volume


@pytest.mark.slow
@pytest.mark.parametrize("projection", ["parallel", "cone"])
def test_area_drr_is_the_pixel_average_of_the_path_length(tilted_sphere, projection):
    v, f, volume = tilted_sphere
    n = 8  # the reference: the centre DRR on an 8x finer detector, averaged over 8 x 8 blocks
    if projection == "parallel":
        view = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (24, 24), 2.0)
        fine = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (24 * n, 24 * n), 2.0 / n)
    else:
        view = bs.XRayView.cone_beam(1300.0, 1000.0, (24, 24), 2.5)
        fine = bs.XRayView.cone_beam(1300.0, 1000.0, (24 * n, 24 * n), 2.5 / n)
    area = np.asarray(bs.projection.render_drr(v, f, view, pixel="area"))
    centre = np.asarray(bs.projection.render_drr(v, f, view))
    ref = np.asarray(bs.projection.render_drr(v, f, fine)).reshape(24, n, 24, n).mean(axis=(1, 3))
    # the 8x8 point average is itself off by up to ~1 mm in rim pixels; the pixel-centre DRR by ~10 mm
    assert np.abs(area - ref).max() < 1.0
    assert np.abs(centre - ref).max() > 3.0
    assert np.abs(area - ref).mean() < 0.2 * np.abs(centre - ref).mean()
    if projection == "parallel":
        # the integral over the detector is the volume, exactly (the centre DRR only approximates it)
        assert area.sum() * 2.0**2 == pytest.approx(volume, rel=1e-10)
        assert abs(centre.sum() * 2.0**2 / volume - 1.0) > 1e-4


@pytest.mark.parametrize(
    ("pixel", "projection", "h"), [("centre", "parallel", 1e-6), ("centre", "cone", 1e-6), ("area", "cone", 1e-5)]
)
def test_drr_gradient_matches_finite_differences(tilted_sphere, pixel, projection, h):
    """Away from degenerate positions the DRR's reverse-mode derivative is the path length's: for pixel
    centres, whose depth comes from one affine function per triangle (value at the window's corner, two
    slopes), and for pixel areas."""
    v, f, _ = tilted_sphere
    if projection == "cone":
        view = bs.XRayView.cone_beam(1300.0, 1000.0, (24, 24), 2.5)
    else:
        view = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (24, 24), 2.5)
    k = bs.projection.drr_footprint(v, f, view, margin=0.5)
    w = jax.random.normal(jax.random.key(0), (24, 24))

    def loss(x):
        return jnp.sum(w * bs.projection.render_drr(x, f, view, footprint=k, pixel=pixel))

    g = jax.jit(jax.grad(loss))(v)
    loss = jax.jit(loss)
    for i in range(3):
        d = jax.random.normal(jax.random.key(i + 1), v.shape)
        fd = (loss(v + h * d) - loss(v - h * d)) / (2 * h)
        assert float(jnp.sum(g * d)) == pytest.approx(float(fd), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("shift_px", [0.0, 0.5])
def test_area_drr_gradient_at_vertices_and_edges_on_pixel_sides(shift_px):
    """A sphere centred on a pixel corner (or side) of a parallel detector: vertices lie on pixel
    corners and sides and edges along pixel sides. The image is differentiable there; every pixel's
    derivative (forward mode) and the weighted sum's (reverse mode) match central differences."""
    s = bs.datasets.icosphere(15.0, 2)
    spacing = 0.5
    view = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (72, 72), spacing, center=(shift_px * spacing, 0.0, 0.0))
    v, f = jnp.asarray(s.vertices), jnp.asarray(s.faces)
    p = np.asarray(view.project(v))
    on_grid = np.isclose(np.mod(p + 0.5, 1.0), 0.0, atol=1e-12) | np.isclose(np.mod(p + 0.5, 1.0), 1.0, atol=1e-12)
    assert on_grid.any(axis=1).sum() >= 10  # the degenerate positions are there
    k = bs.projection.drr_footprint(v, f, view, margin=0.5)

    @jax.jit
    def image(scale, tx):
        return bs.projection.render_drr(
            v * scale + jnp.stack([tx, 0.0, 0.0])[None, :], f, view, footprint=k, pixel="area"
        )

    h = 1e-6
    for tangent in [(1.0, 0.0), (0.0, 1.0), (1.0, 0.7)]:
        _, jvp = jax.jit(lambda t: jax.jvp(image, (1.0, 0.0), t))(tangent)
        fd = (image(1.0 + h * tangent[0], h * tangent[1]) - image(1.0 - h * tangent[0], -h * tangent[1])) / (2 * h)
        np.testing.assert_allclose(np.asarray(jvp), np.asarray(fd), atol=1e-4 * float(jnp.abs(fd).max()))
    w = jax.random.normal(jax.random.key(1), (72, 72))
    grad = jax.jit(jax.grad(lambda sc: jnp.sum(w * image(sc, 0.0))))(1.0)
    fd = (jnp.sum(w * image(1.0 + h, 0.0)) - jnp.sum(w * image(1.0 - h, 0.0))) / (2 * h)
    assert float(grad) == pytest.approx(float(fd), rel=1e-6)


@pytest.mark.slow
def test_area_drr_is_smooth_where_the_centre_drr_creases(tilted_sphere):
    """Along a line of translations the area DRR's squared misfit has a bounded second
    derivative; the centre DRR's has spikes that grow as 1/h (creases where pixel centres
    cross projected edges), which stall NUTS on real anatomy (docs/likelihoods.md)."""
    v, f, _ = tilted_sphere
    view = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (24, 24), 2.5)
    target = jnp.asarray(np.random.default_rng(0).uniform(0, 40, (24, 24)))
    k = bs.projection.drr_footprint(v, f, view, margin=0.5, any_pose=True)
    h = 2e-3
    ts = jnp.arange(0.0, 5.0, h)
    second = {}
    for pixel in ("centre", "area"):

        def misfit(t, pixel=pixel):
            img = bs.projection.render_drr(
                v + jnp.stack([t, 0.0 * t, 0.3 * t])[None, :], f, view, footprint=k, pixel=pixel
            )
            return jnp.sum((img - target) ** 2)

        vals = np.asarray(jax.jit(jax.vmap(misfit))(ts))
        second[pixel] = np.abs(np.diff(vals, 2)) / h**2
    assert second["area"].max() < 5 * np.median(second["area"])
    assert second["centre"].max() > 1000 * second["area"].max()


@pytest.mark.slow
@pytest.mark.parametrize("pixel", ["centre", "area"])
def test_face_groups_render_the_same_image(pixel):
    m = bs.datasets.example_shapes(1, seed=3)[0]
    view = bs.carm_view(lao=20, cranial=5, detector_shape=(64, 64), pixel_spacing=3.0)
    v, f = jnp.asarray(m.vertices), jnp.asarray(m.faces)
    groups, fps = bs.projection.drr_face_groups(m.vertices, m.faces, view)
    assert sum(len(g) for g in groups) == len(m.faces)
    assert sorted(map(tuple, np.concatenate([np.asarray(g) for g in groups]).tolist())) == sorted(
        map(tuple, np.asarray(m.faces).tolist())
    )
    assert list(fps) == sorted(fps) and len(set(fps)) == len(fps)
    one = bs.projection.render_drr(v, f, view, footprint=max(fps), pixel=pixel)
    grouped = jax.jit(lambda x: bs.projection.render_drr(x, groups, view, footprint=fps, pixel=pixel))(v)
    np.testing.assert_allclose(np.asarray(grouped), np.asarray(one), atol=1e-9)
    with pytest.raises(ValueError, match="one window per face group"):
        bs.projection.render_drr(v, groups, view, footprint=fps[:1] if len(fps) > 1 else (3, 3))
    with pytest.raises(ValueError, match="pixel: expected one of"):
        bs.projection.render_drr(v, f, view, pixel="corner")
