"""Observation likelihoods: gradients, closed forms, bad input."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import bayesshape as bs
from bayesshape import obs


@pytest.fixture(scope="module")
def setup():
    shapes = bs.datasets.example_shapes(12, seed=0)
    model = bs.build_pca_model(shapes, align=None)
    truth = bs.datasets.example_shapes(1, seed=5)[0]
    views = bs.biplanar(field_of_view=480, detector_shape=(128, 128))
    cone = bs.carm_view(lao=20, cranial=5, detector_shape=(128, 128), pixel_spacing=5.0)
    ids = np.arange(0, 3000, 250)
    sim = bs.simulate_xray(truth, [*views, cone], seed=1, landmark_ids=ids, landmark_sigma=0.5)
    return model, truth, sim


def _observations(model, truth, sim):
    refs = np.asarray(model.mean)[None]
    ids = np.arange(0, 3000, 250)
    rng = np.random.default_rng(0)
    out = {
        "landmarks3d": [obs.Landmarks3D(ids, truth.vertices[ids] + rng.normal(size=(len(ids), 3)), 1.0)],
        "landmarks3d_t": [obs.Landmarks3D(ids, truth.vertices[ids], 1.0, df=4.0)],
        "landmarks2d": sim.observations("landmarks"),
        "surface": [obs.SurfacePoints(truth.vertices[::97] + 0.3, 1.0)],
        "contour": sim.observations("contour"),
        "contour_points": [obs.Contour(sim.views[0], sim.contours[0], 1.0)],
        "silhouette": [obs.Silhouette(v, m, 0.5) for v, m in zip(sim.views, sim.masks)],
        "drr": sim.observations("drr"),
        "drr_scaled": sim.observations("drr", fit_scale_offset=True),
        "drr_area": sim.observations("drr", pixel="area")[:1],  # one view: the costlier renderer
    }
    return {k: [o.bind(model.faces, refs) for o in v] for k, v in out.items()}


@pytest.mark.parametrize(
    "kind",
    [
        "landmarks3d",
        "landmarks3d_t",
        "landmarks2d",
        "surface",
        "contour",
        "contour_points",
        pytest.param("silhouette", marks=pytest.mark.slow),
        pytest.param("drr", marks=pytest.mark.slow),
        pytest.param("drr_scaled", marks=pytest.mark.slow),
        pytest.param("drr_area", marks=pytest.mark.slow),
    ],
)
def test_gradients_match_finite_differences(setup, kind):
    model, truth, sim = setup
    observations = _observations(model, truth, sim)[kind]
    center = model.mean.mean(0)

    def f(params):
        alpha, rv, t, ls = params[: model.n_modes], params[-7:-4], params[-4:-1], params[-1]
        v = bs.projection.Pose(rv, t, ls).apply(model.instance(alpha), center)
        return sum(o.log_likelihood(v) for o in observations)

    x0 = jnp.concatenate([jnp.full(model.n_modes, 0.3), jnp.array([0.01, 0.02, -0.01, 1.0, 2.0, 0.5, 0.01])])
    g = np.asarray(jax.jit(jax.grad(f))(x0))
    f = jax.jit(f)
    assert np.isfinite(float(f(x0)))
    # h: float64 rounding error ~ 1e-16 |f| / h; the DRR's and contour's kinks (pixel centres crossing
    # triangle edges) are O(h) rarer with smaller h. 1e-7 keeps both well below 1e-4.
    h = 1e-7
    for i in list(range(3)) + list(range(model.n_modes, model.n_modes + 7)):
        e = jnp.zeros_like(x0).at[i].set(h)
        fd = float((f(x0 + e) - f(x0 - e)) / (2 * h))
        scale = max(abs(fd), 1e-3 * np.abs(g).max())
        assert abs(g[i] - fd) <= 1e-4 * scale, (kind, i, g[i], fd)


@pytest.mark.parametrize("kind", ["landmarks3d", "landmarks2d", "surface", "contour", "drr_scaled"])
def test_whitened_residuals_reproduce_the_gaussian_log_likelihood(setup, kind):
    """``log_likelihood = -|r|^2 / 2 + (terms free of the vertices)``: the Gauss-Newton Laplace
    approximation rests on it. Checked as differences between two shapes, at the stored sigma
    and at an overriding one, with a contour weight below 1."""
    model, truth, sim = setup
    observations = _observations(model, truth, sim)[kind][:1]  # one view: the views differ only in geometry
    if kind.startswith("contour"):
        observations = [o.with_weight(0.4) for o in observations]
    v1 = jnp.asarray(truth.vertices)
    v2 = model.instance(jnp.full(model.n_modes, 0.2))
    ll = eqx.filter_jit(lambda o, v, s: o.log_likelihood(v, sigma=s))
    res = eqx.filter_jit(lambda o, v, s: o.whitened_residuals(v, sigma=s))
    for o in observations:
        for sigma in (o.sigma, 1.7 * o.sigma):
            dll = float(ll(o, v1, sigma) - ll(o, v2, sigma))
            r1, r2 = res(o, v1, sigma), res(o, v2, sigma)
            assert abs(dll) > 1e-3
            assert dll == pytest.approx(-0.5 * float(jnp.sum(r1**2) - jnp.sum(r2**2)), rel=1e-9, abs=1e-9)
        assert o.log_sigma_information() == pytest.approx(2.0 * o.n_data * (0.4 if kind.startswith("contour") else 1))


@pytest.mark.parametrize(
    "kind",
    [
        "landmarks3d",
        "landmarks3d_t",
        "landmarks2d",
        "surface",
        "contour",
        pytest.param("silhouette", marks=pytest.mark.slow),
        "drr_scaled",
    ],
)
def test_pointwise_log_likelihood_sums_to_the_log_likelihood(setup, kind):
    """``arviz.loo`` rests on it: one term per datum, summing to the log-likelihood, at the stored
    sigma and at another one, with a contour weight below 1."""
    model, truth, sim = setup
    observations = _observations(model, truth, sim)[kind][:1]
    if kind.startswith("contour"):
        observations = [o.with_weight(0.4) for o in observations]
    v = model.instance(jnp.full(model.n_modes, 0.2))
    ll = eqx.filter_jit(lambda o, v, s: o.log_likelihood(v, sigma=s))
    pw = eqx.filter_jit(lambda o, v, s: o.pointwise_log_likelihood(v, sigma=s))
    per_datum = {"landmarks3d": 3, "landmarks3d_t": 3, "landmarks2d": 2}.get(kind, 1)
    for o in observations:
        for sigma in (o.sigma, 1.7 * o.sigma):
            terms = np.asarray(pw(o, v, sigma))
            assert terms.ndim == 1 and np.all(np.isfinite(terms))
            if kind != "silhouette":  # the silhouette's terms are its band's pixels, not its outline's
                assert terms.size * per_datum == o.n_data
            assert float(np.sum(terms)) == pytest.approx(float(ll(o, v, sigma)), rel=1e-9)


def test_student_t_fisher_information():
    """Student-t residuals: location information ``(df + 1) / ((df + 3) sigma^2)`` and log-scale
    information ``2 df / (df + 3)`` per datum, against Monte Carlo expectations of the score."""
    from bayesshape.obs._noise import fisher_scale, log_density, log_sigma_information

    df, sigma = 4.0, 1.3
    x = jnp.asarray(np.random.default_rng(0).standard_t(df, size=400_000) * sigma)
    loc_score = jax.vmap(jax.grad(lambda m, xi: log_density(xi - m, sigma, df)), (None, 0))(0.0, x)
    scale_score = jax.vmap(jax.grad(lambda ls, xi: log_density(xi, jnp.exp(ls), df)), (None, 0))(math.log(sigma), x)
    # 400k draws: the Monte Carlo error of a mean square is well below 1%
    assert float(jnp.mean(loc_score**2)) == pytest.approx(fisher_scale(df) ** 2 / sigma**2, rel=0.02)
    assert float(jnp.mean(scale_score**2)) == pytest.approx(log_sigma_information(1, df), rel=0.02)
    o = obs.Landmarks3D(np.arange(4), np.zeros((4, 3)), sigma, df=df)
    v = jnp.ones((10, 3))
    np.testing.assert_allclose(o.whitened_residuals(v), fisher_scale(df) * np.ones(12) / sigma, rtol=1e-12)


def test_landmark_likelihood_closed_form():
    pts = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    o = obs.Landmarks3D([0, 1], pts, 2.0)
    v = jnp.asarray(pts + np.array([[0.5, -1.0, 0.0], [0.0, 0.0, 2.0]]))
    r = np.array([0.5, -1.0, 0.0, 0.0, 0.0, 2.0])
    expected = -0.5 * np.sum((r / 2.0) ** 2) - 6 * math.log(2.0) - 3 * math.log(2 * math.pi)
    assert float(o.log_likelihood(v)) == pytest.approx(expected, rel=1e-12)
    t = obs.Landmarks3D([0, 1], pts, 2.0, df=3.0)
    from scipy.stats import t as student

    assert float(t.log_likelihood(v)) == pytest.approx(student.logpdf(r, 3.0, scale=2.0).sum(), rel=1e-10)


@pytest.mark.slow
def test_drr_likelihood_is_exact_at_the_truth(setup):
    model, truth, sim = setup
    o = obs.DRR(sim.views[0], sim.clean_drr[0], 0.01, mu=sim.mu).bind(truth.faces, truth.vertices[None])
    ll = float(o.log_likelihood(jnp.asarray(truth.vertices)))
    n = o.n_data
    assert ll == pytest.approx(-n * math.log(0.01) - 0.5 * n * math.log(2 * math.pi), rel=1e-9)
    scaled = obs.DRR(sim.views[0], 3.0 * sim.clean_drr[0] + 0.2, 0.01, mu=sim.mu, fit_scale_offset=True)
    scaled = scaled.bind(truth.faces, truth.vertices[None])
    assert float(scaled.log_likelihood(jnp.asarray(truth.vertices))) == pytest.approx(ll, rel=1e-6)


def test_drr_likelihood_is_minus_inf_beyond_the_renderer_support(setup):
    """A shape with a triangle beyond the static footprint: the likelihood is -inf (a sampler
    rejects it) rather than a wrong value or an exception inside NUTS/SVI; the residuals,
    used for reporting, still refuse it."""
    model, truth, sim = setup
    o = obs.DRR(sim.views[0], sim.clean_drr[0], 0.01, mu=sim.mu).bind(truth.faces, truth.vertices[None])
    v = jnp.asarray(truth.vertices)
    big = v * 4.0  # triangles four times larger than any the footprint was sized for
    assert np.isfinite(float(o.log_likelihood(v)))
    assert float(jax.jit(lambda o, v: o.log_likelihood(v))(o, big)) == -np.inf
    img, too_big, behind = bs.projection.render_drr_flagged(v, o.face_groups, o.view, footprint=o.footprint, mu=o.mu)
    assert not bool(too_big) and not bool(behind)
    # the same image (compiled as one program, so equal up to rounding)
    np.testing.assert_allclose(np.asarray(img), np.asarray(o.render(v)), rtol=1e-12, atol=1e-12)
    with pytest.raises(Exception, match="footprint"):
        o.residuals(big)


def test_contour_prefers_the_truth(setup):
    model, truth, sim = setup
    o = sim.observations("contour")[0].bind(model.faces, np.asarray(model.mean)[None])
    at_truth = float(o.log_likelihood(jnp.asarray(truth.vertices)))
    shifted = float(o.log_likelihood(jnp.asarray(truth.vertices) + jnp.array([5.0, 0.0, 0.0])[None, :]))
    at_mean = float(o.log_likelihood(model.mean))
    assert at_truth > at_mean and at_truth > shifted
    d = np.asarray(o.residuals(jnp.asarray(truth.vertices)))
    assert np.median(d) < 0.5  # observed contour points lie on the projected model contour


def test_surface_points_distance_is_exact():
    s = bs.datasets.icosphere(10.0, 4)
    o = obs.SurfacePoints(np.array([[0.0, 0.0, 15.0], [0.0, 0.0, 0.0], [12.0, 0.0, 0.0]]), 1.0).bind(
        s.faces, s.vertices[None]
    )
    d = np.asarray(o.distances(jnp.asarray(s.vertices)))
    np.testing.assert_allclose(d, [5.0, 10.0, 2.0], atol=0.02)


def test_vmap_likelihood_over_shapes_equals_loop(setup):
    model, truth, sim = setup
    o = sim.observations("contour")[0].bind(model.faces, np.asarray(model.mean)[None])
    alphas = jax.random.normal(jax.random.key(0), (3, model.n_modes))
    vm = jax.jit(jax.vmap(lambda a: o.log_likelihood(model.instance(a))))(alphas)
    loop = [float(o.log_likelihood(model.instance(a))) for a in alphas]
    np.testing.assert_allclose(np.asarray(vm), loop, rtol=1e-10)


def test_bad_observations(setup):
    model, truth, sim = setup
    view = sim.views[0]
    with pytest.raises(ValueError, match="mask is empty"):
        obs.Contour(view, np.zeros(view.detector_shape, bool), 1.0)
    with pytest.raises(ValueError, match="detector shape"):
        obs.Contour(view, np.ones((10, 10), bool), 1.0)
    with pytest.raises(ValueError, match="does not match the view's detector shape"):
        obs.DRR(view, np.zeros((64, 64)), 0.1)
    with pytest.raises(ValueError, match="NaN or inf"):
        obs.DRR(view, np.full(view.detector_shape, np.nan), 0.1)
    with pytest.raises(ValueError, match=r"pixel: expected one of \('centre', 'area'\), got 'middle'"):
        obs.DRR(view, sim.drr[0], 0.1, pixel="middle")
    with pytest.raises(ValueError, match="pixel: expected one of"):
        bs.simulate_xray(truth, view, pixel="corner")
    with pytest.raises(ValueError, match="sigma"):
        obs.Landmarks3D([0], [[0.0, 0.0, 0.0]], 0.0)
    with pytest.raises(ValueError, match="match one to one"):
        obs.Landmarks3D([0, 1], [[0.0, 0.0, 0.0]], 1.0)
    with pytest.raises(ValueError, match="out of range"):
        obs.Landmarks3D([10**6], [[0.0, 0.0, 0.0]], 1.0).bind(model.faces, model.mean)
    away = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (128, 128), 1.0, center=(5000.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="does not project into this view"):
        obs.Contour(away, sim.masks[0], 1.0).bind(model.faces, np.asarray(model.mean)[None])
    with pytest.raises(ValueError, match="does not project into this view"):
        obs.DRR(away, sim.drr[0], 1.0).bind(model.faces, np.asarray(model.mean)[None])
    with pytest.raises(ValueError, match="call obs.bind"):
        obs.Contour(view, sim.masks[0], 1.0).log_likelihood(model.mean)
    # a shape that leaves the view entirely: contour has no edges inside -> finite, DRR scale fit -> -inf
    o = obs.DRR(view, sim.drr[0], 0.1, fit_scale_offset=True).bind(model.faces, np.asarray(model.mean)[None])
    assert float(o.log_likelihood(model.mean + jnp.array([5000.0, 0.0, 0.0])[None, :])) == -np.inf


def test_simulate_xray(setup):
    model, truth, sim = setup
    for img, clean, mask in zip(sim.drr, sim.clean_drr, sim.masks):
        np.testing.assert_array_equal(mask, clean > 0)
        assert np.std(img - clean) == pytest.approx(0.01 * clean.max(), rel=0.05)
    again = bs.simulate_xray(truth, sim.views, seed=1, landmark_ids=sim.landmark_ids, landmark_sigma=0.5)
    np.testing.assert_array_equal(again.drr[0], sim.drr[0])
    assert len(sim.observations("contour")) == 3
    # pixel-area images: the same noise draw, the clean image averaged over each pixel, the same masks
    area = bs.simulate_xray(truth, sim.views[:1], seed=1, pixel="area")
    view = sim.views[0]
    ref = bs.projection.render_drr(jnp.asarray(truth.vertices), jnp.asarray(truth.faces), view, pixel="area")
    np.testing.assert_allclose(area.clean_drr[0], sim.mu * np.asarray(ref), atol=1e-12)
    np.testing.assert_array_equal(area.masks[0], sim.masks[0])
    assert np.abs(area.clean_drr[0] - sim.clean_drr[0]).max() > 0.01 * sim.clean_drr[0].max()
    assert {o.pixel for o in area.observations("drr")} == {"area"}
    assert {o.pixel for o in sim.observations("drr")} == {"centre"}
    with pytest.raises(ValueError, match="kind"):
        sim.observations("ct")
    with pytest.raises(ValueError, match="not visible"):
        bs.simulate_xray(truth, bs.XRayView.parallel((0, 1, 0), center=(5000.0, 0, 0)))


def test_composite_weights_see_correlated_contour_errors(example_model):
    """Independent jitter keeps the contour likelihood (weights near 1); a smooth error field
    along the outline (correlated residuals) is detected and down-weighted."""
    from bayesshape.inference import reference_shapes

    truth = bs.datasets.example_shapes(1, seed=77)[0]
    views = bs.biplanar(field_of_view=480, detector_shape=(128, 128))
    refs = reference_shapes(example_model)
    v = jnp.asarray(truth.vertices)
    iid, smooth = [], []
    for seed in range(3):
        sim = bs.simulate_xray(truth, views, seed=seed, contour_jitter=1.5)
        obs_iid = [bs.obs.Contour(vw, c, 1.5).bind(truth.faces, refs) for vw, c in zip(views, sim.contours)]
        iid += bs.obs.composite_weights(obs_iid, v, seed=seed)
        clean = bs.simulate_xray(truth, views, seed=seed, contour_jitter=0.0)
        obs_smooth = []
        for vw, c in zip(views, clean.contours):
            field = np.stack([np.sin(2 * np.pi * c[:, 0] / 40 + seed), np.cos(2 * np.pi * c[:, 1] / 40 + seed)], 1)
            pts = c + 1.0 * field + 0.2 * np.random.default_rng(seed).standard_normal(c.shape)
            obs_smooth.append(bs.obs.Contour(vw, pts, 0.5).bind(truth.faces, refs))
        smooth += bs.obs.composite_weights(obs_smooth, v, seed=seed)
    # independent errors: the pooled inflation is chi2-distributed around 1 (sd ~25%), the misfit ~1
    assert np.mean(iid) > 0.7 and min(iid) > 0.4
    assert max(smooth) < 0.35
    with pytest.raises(ValueError, match="weight"):
        bs.obs.Contour(views[0], clean.contours[0], 0.5, weight=0.0)


@pytest.mark.slow
def test_contour_likelihood_has_no_jumps_along_a_line(setup):
    """Along lines through shape space the log-likelihood changes only as its gradient says.

    On a coarsened mesh (the ``infer(likelihood_faces=...)`` path) two things used to make it
    jump: sliver triangles left by the decimation, whose normals (and so their edges' contour
    weights) turn almost discontinuously, and edges entering the candidate set (contour weight
    0.02) with their full share. ``|f(t+h) - f(t) - h (f'(t) + f'(t+h)) / 2|`` is O(h^3) where f
    is smooth and at most ``h |jump in f'| / 2`` at a kink; a jump of f leaves its size. Before
    the fix the first line gave 0.027 against a bound of 0.0012.
    """
    from bayesshape.prior import coarsen_mesh

    model, truth, sim = setup
    index, faces = coarsen_mesh(np.asarray(model.mean), np.asarray(model.faces), 800)
    observations = [o.bind(faces, np.asarray(model.mean)[None][:, index]) for o in sim.observations("contour")]
    rng = np.random.default_rng(3)
    # skip the generator's first line: in a probe with two parallel views the old code's error on it
    # stayed within the kink bound (it crosses a steep kink, no jump), so it told nothing
    rng.normal(size=2 * model.n_modes)
    h = 1e-3
    ts = jnp.arange(300, dtype=model.mean.dtype) * h
    for _ in range(2):
        direction = jnp.asarray(rng.normal(size=model.n_modes))
        start = jnp.asarray(rng.normal(size=model.n_modes)) * 0.5

        def f(t, direction=direction, start=start):
            v = model.instance(start + t * direction)[index]
            return sum(o.log_likelihood(v) for o in observations)

        vals, grads = jax.lax.map(jax.value_and_grad(f), ts, batch_size=50)
        vals, grads = np.asarray(vals), np.asarray(grads)
        assert np.all(np.isfinite(vals))
        err = np.abs(np.diff(vals) - 0.5 * h * (grads[1:] + grads[:-1])).max()
        kink = 0.5 * h * np.abs(np.diff(grads)).max()
        assert err < max(2 * kink, 1e-3), (err, kink)


def test_nearest_edge_distance_equals_a_numpy_brute_force():
    """The nearest-edge distance (with contour-weight penalties, entry ramps and padding) equals an
    independent NumPy computation in float64, point by point, on a dense noisy polyline; its gradient
    with respect to the end points matches central differences."""
    from bayesshape.obs import contour as C

    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, 301)
    ring = np.stack([64 + 40 * np.sin(t) + rng.normal(0, 0.3, t.size), 64 + 30 * np.cos(t)], axis=1)
    a, b = ring[:-1], ring[1:]
    n = a.shape[0]
    wgt = rng.uniform(0.2, 1.0, n)
    ramp = np.where(rng.uniform(size=n) < 0.05, 0.5, 1.0)
    valid = np.arange(n) < n - 20
    pts = ring[rng.integers(0, 300, 500)] + rng.normal(0, 1.5, (500, 2))
    shape = (128, 128)
    edges = (jnp.asarray(a), jnp.asarray(b), jnp.asarray(wgt), jnp.asarray(ramp), jnp.asarray(valid))
    got = np.asarray(C.nearest_edge_distance(jnp.asarray(pts), edges, shape))

    d = b - a
    u = np.clip(np.einsum("mek,ek->me", pts[:, None] - a[None], d) / np.einsum("ek,ek->e", d, d)[None], 0, 1)
    dist = np.linalg.norm(pts[:, None] - (a[None] + u[..., None] * d[None]), axis=-1)
    extra = C._PENALTY * np.maximum(1 - 2 * wgt, 0) + C._ENTRY * sum(shape) * (1 - ramp)
    want = np.min(np.where(valid[None], dist + extra[None], np.inf), axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)

    def loss(r):  # the end points move with the polyline's vertices, as a mesh's edges do
        return jnp.sum(C.nearest_edge_distance(jnp.asarray(pts), (r[:-1], r[1:], *edges[2:]), shape) ** 2)

    g = np.asarray(jax.grad(loss)(jnp.asarray(ring)))
    direction = rng.normal(size=ring.shape)
    h = 1e-6
    fd = (loss(jnp.asarray(ring + h * direction)) - loss(jnp.asarray(ring - h * direction))) / (2 * h)
    assert float(np.sum(g * direction)) == pytest.approx(float(fd), rel=1e-6)


def _disc_mask(view, center_px, radius_px):
    r, c = np.indices(view.detector_shape)
    return (r - center_px[0]) ** 2 + (c - center_px[1]) ** 2 <= radius_px**2


@pytest.fixture(scope="module")
def sphere_silhouette():
    """A fine icosphere (radius 40 mm) in a parallel view at 2 mm per pixel, observed as its mask."""
    sphere = bs.datasets.icosphere(40.0, 4)
    view = bs.XRayView.parallel((0, 1, 0), (0, 0, 1), (64, 64), 2.0)
    v = jnp.asarray(sphere.vertices)
    center = np.asarray(view.project(jnp.zeros((1, 3))))[0]
    mask = bs.simulate_xray(sphere, [view], seed=0).masks[0]
    o = obs.Silhouette(view, mask, 0.5).bind(np.asarray(sphere.faces), sphere.vertices)
    return sphere, view, v, center, mask, o


@pytest.mark.slow
def test_silhouette_signed_distance_of_a_sphere(sphere_silhouette):
    """A sphere projects to a disc: the signed distance of a pixel centre to its outline is
    ``R - |p - c|`` (px), up to the polygon's error (icosphere level 4: the outline lies within
    0.1 mm of the circle, 0.05 px here); the sign is the mask's label at every band pixel."""
    sphere, view, v, center, mask, o = sphere_silhouette
    s, ok = eqx.filter_jit(lambda o, v: o.signed_distance(v))(o, v)
    s = np.asarray(s)
    pix = np.asarray(o.pixels)
    exact = 20.0 - np.linalg.norm(pix - center, axis=1)
    assert bool(ok)
    assert np.abs(s - exact).max() < 0.06
    np.testing.assert_array_equal(np.sign(s), np.asarray(o.labels))
    # the band: every pixel within 2 px of one of the other label, and no other
    assert np.abs(exact).max() < 2.6 and np.abs(exact).min() < 0.5
    assert o.n_data == int(np.sum(np.abs(exact) < 2.6))
    # the log-likelihood is the probit sum over the band, at the stored and an overriding sigma
    from scipy.special import log_ndtr

    for sigma in (0.5, 0.9):
        ll = float(o.log_likelihood(v, sigma=jnp.asarray(sigma)))
        assert ll == pytest.approx(float(np.sum(log_ndtr(np.asarray(o.labels) * exact / sigma))), rel=2e-2)


@pytest.mark.slow
def test_silhouette_fisher_information_equals_the_score_variance(sphere_silhouette):
    """Information equality for the sphere's position along the detector's rows: labels drawn from the
    probit model at the truth, the variance of the score ``d log L / d t`` over 4000 draws against
    ``J^T J`` of :meth:`Silhouette.whitened_residuals` (the Gauss-Newton information). The sampling
    error of a variance from 4000 draws is about 2.2%; asserted within 7%."""
    sphere, view, v, center, mask, o = sphere_silhouette
    shift = jnp.asarray(view.v)  # mm per unit t along the rows

    def signed(t):
        return o.signed_distance(v + t * shift[None, :])[0]

    s0 = signed(0.0)
    ds = jax.jacfwd(signed)(0.0)
    u = np.asarray(s0) / 0.5
    rng = np.random.default_rng(0)
    from scipy.special import log_ndtr

    p_in = np.exp(log_ndtr(u))
    labels = np.where(rng.uniform(size=(4000, u.size)) < p_in, 1.0, -1.0)
    # d/dt log Phi(y s / sigma) = y phi(u) / Phi(y u) * ds / sigma
    phi = np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi)
    score = np.sum(labels * phi / np.exp(log_ndtr(labels * u)) * np.asarray(ds) / 0.5, axis=1)
    j = jax.jacfwd(lambda t: o.whitened_residuals(v + t * shift[None, :]))(0.0)
    info = float(jnp.sum(j**2))
    assert abs(score.mean()) < 4 * score.std() / np.sqrt(4000)
    assert score.var() == pytest.approx(info, rel=0.07)


def test_silhouette_prefers_the_truth_and_flags_a_misfit(sphere_silhouette):
    """The log-likelihood falls as the sphere moves off its mask (in either in-plane direction) or
    grows; the standardised residuals' mean square is below 1 at the truth (a noise-free mask has only
    the outline points' quantisation, about 0.29 px against sqrt(0.5^2 + 1/12) = 0.58 px) and large for
    a sphere 15% too big (3 px beyond the mask)."""
    sphere, view, v, center, mask, o = sphere_silhouette
    ll0 = float(o.log_likelihood(v))
    for d in (view.u, view.v):
        for step in (-2.0, 2.0):
            assert float(o.log_likelihood(v + step * jnp.asarray(d)[None, :])) < ll0 - 5.0
    assert float(o.log_likelihood(1.05 * v)) < ll0 - 5.0
    assert float(jnp.mean(o.residuals(v) ** 2)) < 0.6
    assert float(jnp.mean(o.residuals(1.15 * v) ** 2)) > 10.0


def test_bad_silhouettes(setup):
    model, truth, sim = setup
    view = sim.views[0]
    with pytest.raises(ValueError, match="mask is empty"):
        obs.Silhouette(view, np.zeros(view.detector_shape, bool))
    with pytest.raises(ValueError, match="whole image"):
        obs.Silhouette(view, np.ones(view.detector_shape, bool))
    with pytest.raises(ValueError, match=r"detector shape \(128, 128\)"):
        obs.Silhouette(view, np.ones((10, 10), bool))
    with pytest.raises(ValueError, match="detector shape"):
        obs.Silhouette(view, sim.contours[0])
    with pytest.raises(ValueError, match="band"):
        obs.Silhouette(view, sim.masks[0], band=0.5)
    with pytest.raises(ValueError, match="sigma"):
        obs.Silhouette(view, sim.masks[0], sigma=0.0)
    with pytest.raises(ValueError, match="call obs.bind"):
        obs.Silhouette(view, sim.masks[0]).log_likelihood(model.mean)
    with pytest.raises(ValueError, match="point set"):
        obs.Silhouette(view, sim.masks[0]).bind(None, model.mean)
    # a shape beyond the renderer's static footprint: -inf, not NaN
    o = obs.Silhouette(view, sim.masks[0]).bind(model.faces, np.asarray(model.mean)[None])
    assert float(o.log_likelihood(5.0 * model.mean)) == -np.inf


def test_drr_composite_weight_is_one_for_pixel_noise_and_small_for_a_shape_error():
    """Residuals that are pixel noise give a weight near 1 (block means vary as independent errors
    predict); a shape error (a sphere 4% larger than the model's) gives correlated residuals and a
    weight far below 1, which scales the log-likelihood and its Gauss-Newton residuals."""
    import trimesh

    from bayesshape.obs import DRR, drr_composite_weights
    from bayesshape.projection.render import render_drr

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=20.0)
    v, f = jnp.asarray(sphere.vertices), jnp.asarray(sphere.faces)
    view = bs.XRayView.parallel([0, 1, 0], detector_shape=(64, 64), pixel_spacing=1.0)
    clean = np.asarray(render_drr(v, f, view, mu=0.02))
    rng = np.random.default_rng(0)
    sigma = 0.01
    noisy = clean + rng.normal(0, sigma, clean.shape)
    bigger = np.asarray(render_drr(v * 1.04, f, view, mu=0.02)) + rng.normal(0, sigma, clean.shape)
    weights = []
    for img in (noisy, bigger):
        o = DRR(view, img, sigma, mu=0.02, block_size=8).bind(np.asarray(f), np.asarray(v)[None])
        (w,) = drr_composite_weights([o], v)
        weights.append(w)
    assert weights[0] > 0.8
    assert weights[1] < 0.05
    o = DRR(view, bigger, sigma, mu=0.02, block_size=8).bind(np.asarray(f), np.asarray(v)[None])
    ow = o.with_weight(weights[1])
    assert o.correlated_residuals and not DRR(view, bigger, sigma, mu=0.02).correlated_residuals
    assert float(ow.log_likelihood(v)) == pytest.approx(weights[1] * float(o.log_likelihood(v)), rel=1e-12)
    np.testing.assert_allclose(
        np.asarray(ow.whitened_residuals(v)), np.sqrt(weights[1]) * np.asarray(o.whitened_residuals(v)), rtol=1e-12
    )
    with pytest.raises(ValueError, match="block_size: expected an integer >= 2"):
        DRR(view, bigger, sigma, block_size=1)
