"""The previous implementation of the contour and silhouette likelihoods' inner loops, kept as the
reference that ``bench_likelihood.py`` times beside the package's own in the same run.

The two differ only in how the arithmetic is laid out, not in what it computes:

* segment distances were computed on ``(M, E, 2)`` arrays with a trailing axis of 2 (the package now
  works on separate row and column arrays, which XLA's CPU backend vectorises);
* the contour weights' face normals were cross products of ``(F, 3)`` arrays (now separate x, y, z
  arrays);
* the silhouette searched each pixel's nearest edge among a tile's candidates first (``top_k`` of
  box distances), with the brute force as its fallback (now the brute force alone);
* the pixel-centre DRR interpolated each triangle's depth from its three edge functions at every
  window pixel (now from an affine function per face: fewer cotangents to sum in reverse mode).

The values are the same up to float rounding; the benchmark prints both.
"""

from __future__ import annotations

from contextlib import contextmanager

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import log_ndtr

from bayesshape.obs import contour as C
from bayesshape.obs._noise import gaussian_log_density
from bayesshape.projection import render as _render
from bayesshape.projection.render import render_drr_flagged


def _segment_vectors(q, a, b):
    d = b - a
    dd = jnp.sum(d * d, axis=-1)
    t = jnp.clip(jnp.sum((q - a) * d, axis=-1) / jnp.where(dd > 0, dd, 1.0), 0.0, 1.0)
    return q - (a + t[..., None] * d)


def _segment_distance(q, a, b):
    r = _segment_vectors(q, a, b)
    return jnp.sqrt(jnp.sum(r * r, axis=-1) + 1e-12)


def _contour_weights(vertices, topology, view, tau=0.05):
    tri = vertices[topology.faces]
    n = jnp.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    nn = jnp.sqrt(jnp.sum(n * n, axis=-1) + 1e-30)
    if view.is_parallel:
        cos = (n @ view.direction) / nn
    else:
        ray = tri.mean(axis=1) - view.source[None, :]
        cos = jnp.sum(n * ray, axis=-1) / (nn * jnp.sqrt(jnp.sum(ray * ray, axis=-1)))
    t = jnp.tanh(cos / tau)
    w = 0.5 * (1.0 - t[topology.edge_faces[:, 0]] * t[topology.edge_faces[:, 1]])
    w = jnp.where(topology.boundary, 1.0, w)
    return w, view.project(vertices)[topology.edges]


def _candidate_edges(vertices, topology, view, capacity):
    w_all, seg = _contour_weights(vertices, topology, view)
    cand = w_all > C._MIN_WEIGHT
    count = jnp.sum(cand)
    idx = jnp.nonzero(cand, size=capacity, fill_value=0)[0]
    valid = jnp.arange(capacity) < count
    s = seg[idx]
    wgt = jnp.where(valid, w_all[idx], 0.0)
    ramp = jnp.clip((wgt - C._MIN_WEIGHT) / C._MIN_WEIGHT, 0.0, 1.0)
    return s[:, 0], s[:, 1], wgt, ramp, valid, count


def edge_tiles(points, size=6.0, k=160):
    """``(tile_of, lo, hi, k)``: 6-px tiles of fixed points and their bounding boxes."""
    pts = np.asarray(points, dtype=np.float64)
    _, tile_of = np.unique(np.floor(pts / size).astype(np.int64), axis=0, return_inverse=True)
    tile_of = tile_of.reshape(-1)
    n = int(tile_of.max()) + 1
    lo = np.full((n, 2), np.inf)
    hi = np.full((n, 2), -np.inf)
    np.minimum.at(lo, tile_of, pts)
    np.maximum.at(hi, tile_of, pts)
    return jnp.asarray(tile_of, dtype=jnp.int32), jnp.asarray(lo), jnp.asarray(hi), int(k)


def _nearest_tiled(points, tiles, a, b, score, brute):
    tile_of, lo, hi, k = tiles
    emin, emax = jnp.minimum(a, b), jnp.maximum(a, b)
    gap = jnp.maximum(jnp.maximum(emin[None] - hi[:, None], lo[:, None] - emax[None]), 0.0)
    bound = jnp.sqrt(jnp.sum(gap * gap, axis=-1)) + score[None]
    neg, idx = jax.lax.top_k(-bound, k + 1)
    cand = jnp.sort(idx[:, :k], axis=1)[tile_of]
    d = _segment_distance(points[:, None, :], a[cand], b[cand]) + score[cand]
    j = jnp.argmin(d, axis=1)
    rows = jnp.arange(points.shape[0])
    ok = jnp.all(d[rows, j] <= -neg[tile_of, k])
    return jax.lax.cond(ok, lambda: cand[rows, j].astype(jnp.int32), lambda: brute().astype(jnp.int32))


def _nearest_edge_distance(points, edges, detector_shape, tiles=None):
    a, b, wgt, ramp, valid = edges
    extra = C._PENALTY * jnp.maximum(1.0 - 2.0 * wgt, 0.0) + C._ENTRY * sum(detector_shape) * (1.0 - ramp)
    sg = jax.lax.stop_gradient
    score = jnp.where(valid, sg(extra), jnp.inf)

    def brute():
        return jnp.argmin(_segment_distance(points[:, None, :], sg(a)[None], sg(b)[None]) + score[None, :], axis=1)

    k = _nearest_tiled(points, tiles, sg(a), sg(b), score, brute) if tiles is not None else brute()
    d = _segment_distance(points, a[k], b[k])
    return jnp.where(jnp.any(valid), d + extra[k], 0.0)


def contour_log_likelihood(o, vertices):
    """:meth:`bayesshape.obs.Contour.log_likelihood`, as previously computed."""
    a, b, wgt, ramp, valid, count = _candidate_edges(vertices, o.topology, o.view, o.capacity)
    length = jnp.sqrt(jnp.sum((b - a) ** 2, axis=-1) + 1e-12) * wgt * ramp
    d_model = C._sample(o.distance, 0.5 * (a + b))
    wsum = jnp.sum(length)
    frac = length / jnp.where(wsum > 0, wsum, 1.0)
    d_img = _nearest_edge_distance(o.points, (a, b, wgt, ramp, valid), o.view.detector_shape)
    m = o.points.shape[0]
    ll = gaussian_log_density(m * 0.5 * (jnp.mean(d_img**2) + jnp.sum(frac * d_model**2)), m, o.sigma)
    return jnp.where(count > 0, o.weight * ll, -jnp.inf)


def silhouette_log_likelihood(o, vertices, tiles):
    """:meth:`bayesshape.obs.Silhouette.log_likelihood`, as previously computed (``tiles``: :func:`edge_tiles`
    of ``o.pixels``)."""
    a, b, wgt, ramp, valid, count = _candidate_edges(vertices, o.topology, o.view, o.capacity)
    d = _nearest_edge_distance(o.pixels, (a, b, wgt, ramp, valid), o.view.detector_shape, tiles)
    img, too_big, behind = render_drr_flagged(
        jax.lax.stop_gradient(vertices), o.topology.faces, o.view, footprint=o.footprint
    )
    covered = img[o.pixels[:, 0].astype(jnp.int32), o.pixels[:, 1].astype(jnp.int32)] > 0
    s = jnp.where(covered, d, -d)
    ok = (count > 0) & ~too_big & ~behind
    return jnp.where(ok, o.weight * jnp.sum(log_ndtr(o.labels * s / o.sigma)), -jnp.inf)


def _centre_depths(x, y, tz, safe_area, valid_face, i0, j0, k, parallel):
    """The previous pixel-centre rasteriser's coverage and depth, with the current signature."""
    off = jnp.arange(k, dtype=x.dtype)
    py = i0.astype(x.dtype)[:, None, None] + off[None, :, None]
    px = j0.astype(x.dtype)[:, None, None] + off[None, None, :]

    def edge(a, b):
        ex, ey = x[:, b] - x[:, a], y[:, b] - y[:, a]
        e = ex[:, None, None] * (py - y[:, a][:, None, None]) - ey[:, None, None] * (px - x[:, a][:, None, None])
        owned = (ey > 0) | ((ey == 0) & (ex < 0))
        return e, (e > 0) | ((e == 0) & owned[:, None, None])

    e_bc, in_a = edge(1, 2)
    e_ca, in_b = edge(2, 0)
    e_ab, in_c = edge(0, 1)
    inside = in_a & in_b & in_c & valid_face[:, None, None]
    la = e_bc / safe_area[:, None, None]
    lb = e_ca / safe_area[:, None, None]
    lc = e_ab / safe_area[:, None, None]
    if parallel:
        depth = la * tz[:, 0, None, None] + lb * tz[:, 1, None, None] + lc * tz[:, 2, None, None]
    else:
        inv = la / tz[:, 0, None, None] + lb / tz[:, 1, None, None] + lc / tz[:, 2, None, None]
        depth = 1.0 / jnp.where(inside, inv, 1.0)
    return inside, depth


@contextmanager
def previous_centre_rasteriser():
    """Inside this block, functions traced for the first time render pixel-centre DRRs the previous way
    (compile them inside it; their compiled programs keep it)."""
    saved = _render._centre_depths
    _render._centre_depths = _centre_depths
    try:
        yield
    finally:
        _render._centre_depths = saved
