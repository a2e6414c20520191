"""Pixel-area integration of triangles for the DRR (``render_drr(..., pixel="area")``).

For a triangle ``T`` with an affine function ``f`` on it (the depth) and a pixel square
``S = [x0, x0 + 1] x [y0, y0 + 1]`` (pixel units), the integral of ``f`` over ``T n S``
follows from Green's theorem with ``Phi(x, y) = int_{x0}^{x} f(s, y) ds``
(so ``dPhi/dx = f`` and ``Phi = 0`` on the square's left side)::

    int_{T n S} f dA = oint_{boundary of T n S} Phi dy.

The boundary of ``T n S`` is made of the triangle's edges clipped to ``S`` and the
square's sides clipped to ``T``. The top and bottom sides have ``dy = 0`` and the left
side has ``Phi = 0``, so only two kinds of piece remain:

* every triangle edge, clipped to the square (Liang-Barsky). ``Phi`` is quadratic along
  it, so Simpson's rule is exact;
* the square's right side ``x = x0 + 1``, clipped to the triangle: an interval in ``y``
  on which ``Phi(x0 + 1, y) = f(x0 + 1/2, y)`` is linear, so the midpoint rule is exact.

No polygon is built and no loop runs over pixels: every (triangle, window pixel) pair is
one element of a batched, branch-free computation.
"""

from __future__ import annotations

import jax.numpy as jnp


def _clip(offset, inv, moving, inside):
    """Parameters ``t`` in [0, 1] where ``offset + t * delta`` lies in ``[0, 1]``, with ``offset``
    the start relative to the square's lower side and ``inv = 1 / delta``; a segment parallel to
    the sides is in (``inside``: ``0 <= offset < 1``, half-open so that an edge on a side shared
    by two pixels counts once) or out."""
    ta = -offset * inv
    tb = ta + inv
    t_lo = jnp.where(moving, jnp.minimum(ta, tb), jnp.where(inside, 0.0, 1.0))
    t_hi = jnp.where(moving, jnp.maximum(ta, tb), jnp.where(inside, 1.0, 0.0))
    return t_lo, t_hi


def triangle_pixel_integrals(x, y, d, px0, py0):
    """Integrals of each triangle's affine depth over unit pixel squares.

    Args:
        x, y: ``(F, 3)`` projected vertex columns and rows (pixels), positively oriented
            (``(x1 - x0)(y2 - y0) - (y1 - y0)(x2 - x0) > 0``) and non-degenerate.
        d: ``(F, 3)`` vertex depths (mm), interpolated affinely over each triangle.
        px0, py0: ``(F, K, K)`` lower corners (least column, least row) of the pixel squares.

    Returns:
        ``(F, K, K)``: ``int_{T n S} f dA`` in mm x pixel^2.
    """
    e = (slice(None), None, None)
    dx1, dy1, dd1 = x[:, 1] - x[:, 0], y[:, 1] - y[:, 0], d[:, 1] - d[:, 0]
    dx2, dy2, dd2 = x[:, 2] - x[:, 0], y[:, 2] - y[:, 0], d[:, 2] - d[:, 0]
    area2 = dx1 * dy2 - dy1 * dx2
    gx = (dd1 * dy2 - dd2 * dy1) / area2  # df/dx
    gy = (dx1 * dd2 - dx2 * dd1) / area2  # df/dy
    # f at the middle of the square's right side's column, as an affine function of the row
    f_mid = d[:, 0][e] + gx[e] * (px0 + 0.5 - x[:, 0][e]) - gy[e] * y[:, 0][e]

    # the three edges a -> b along axis 1: (F, 3, 1, 1) against the squares (F, 1, K, K)
    g = (slice(None), slice(None), None, None)
    xa, ya, da = x[g], y[g], d[g]
    ex = (jnp.roll(x, -1, axis=1) - x)[g]
    ey = (jnp.roll(y, -1, axis=1) - y)[g]
    ed = (jnp.roll(d, -1, axis=1) - d)[g]
    left, low = px0[:, None], py0[:, None]  # the squares, (F, 1, K, K)
    mx, my = ex != 0, ey != 0
    inv_x = 1.0 / jnp.where(mx, ex, 1.0)
    inv_y = 1.0 / jnp.where(my, ey, 1.0)
    u0 = xa - left  # the edge's start, from the square's left side (pixels)
    v0 = ya - low
    # the edge, clipped to the square (Liang-Barsky)
    tx0, tx1 = _clip(u0, inv_x, mx, (u0 >= 0) & (u0 < 1))
    ty0, ty1 = _clip(v0, inv_y, my, (v0 >= 0) & (v0 < 1))
    t0 = jnp.maximum(jnp.maximum(tx0, ty0), 0.0)
    length = jnp.maximum(jnp.minimum(jnp.minimum(tx1, ty1), 1.0) - t0, 0.0)
    # Phi(t) = u (f - gx u / 2) along the edge, with u = u0 + t ex and f = d_a + t (d_b - d_a):
    # quadratic in t, so Simpson's rule is exact
    gxe = gx[:, None, None, None]

    def phi(t):
        u = u0 + t * ex
        return u * (da + t * ed - 0.5 * gxe * u)

    simpson = (phi(t0) + 4.0 * phi(t0 + 0.5 * length) + phi(t0 + length)) / 6.0
    total = jnp.sum(ey * length * simpson, axis=1)
    # the right side x = px0 + 1 lies inside an edge's half-plane where
    # ex (y - y_a) - ey (px0 + 1 - x_a) >= 0: a bound on y for a slanted edge
    bound = ya + ey * inv_x * (1.0 - u0)
    y_lo = jnp.max(jnp.where(ex > 0, bound, -jnp.inf), axis=1)
    y_hi = jnp.min(jnp.where(ex < 0, bound, jnp.inf), axis=1)
    # a vertical edge: the side is inside or not; on the edge itself it belongs to the
    # triangle on the left (ey > 0), whose own edge is then not counted (half-open clip)
    empty = jnp.any(~mx & ((ey * (1.0 - u0) > 0) | ((u0 == 1.0) & (ey < 0))), axis=1)
    lo = jnp.maximum(y_lo, py0)
    hi = jnp.minimum(y_hi, py0 + 1.0)
    seg = jnp.where(empty, 0.0, jnp.maximum(hi - lo, 0.0))
    mid = jnp.where(seg > 0, 0.5 * (lo + hi), py0)
    return total + seg * (f_mid + gy[e] * mid)
