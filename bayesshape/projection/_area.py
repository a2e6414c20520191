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

Degenerate positions
--------------------
The area of ``T n S`` is not differentiable where a projected edge lies on a pixel side or
runs through a corner (voxel meshes on parallel views sit there), though the image, a sum
over triangles, is. Each such tie is broken as if the pixel grid were shifted by an
infinitesimal ``(eps_x, eps_y)``, ``eps_y << eps_x``: every quantity compared carries its
coefficients in ``eps_x`` and ``eps_y`` and ties are settled by them, so that all the pieces
of a pixel take the derivative on the same side and sum to the image's derivative. The
values are those of the unshifted grid. An edge's crossing of a side is exactly 0 or 1 where
one of its ends lies on that side, whatever the division rounds to; a tie in the middle of an
edge (an edge through a corner) is settled only where the divisions are exact, as they are
on grids of halves and quarters of a pixel.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax


def _gt(a, b):
    """``a > b`` for perturbed quantities ``(value, eps_x coefficient, eps_y coefficient)``."""
    return (a[0] > b[0]) | ((a[0] == b[0]) & ((a[1] > b[1]) | ((a[1] == b[1]) & (a[2] > b[2]))))


def _pick(take, a, b):
    return tuple(jnp.where(take, p, q) for p, q in zip(a, b, strict=True))


def _max(a, b):
    """The larger perturbed quantity; the derivative is the one of the side taken."""
    return _pick(_gt(a, b), a, b)


def _min(a, b):
    return _pick(_gt(b, a), a, b)


def _over_edges(op, q):
    """``op`` (:func:`_max` or :func:`_min`) over the three edges (axis 1) of a perturbed quantity."""
    edge = [tuple(c[:, i] for c in q) for i in range(3)]
    return op(op(edge[0], edge[1]), edge[2])


def _snap(value, exact):
    """``exact``'s value with ``value``'s derivative."""
    return value + lax.stop_gradient(exact - value)


def _clip(a, delta, b, side0, moving, eps):
    """Parameters ``t`` in [0, 1] where the segment ``a -> b`` (``delta = b - a``, one coordinate)
    lies between ``side0`` and ``side0 + 1`` shifted by ``eps``, as perturbed quantities. The
    crossings are ``(side - a) / delta``, and exactly 0 or 1 for an end on a side. A
    segment parallel to the sides is in (``side0 < a <= side0 + 1``: the side it lies on is
    shifted past it) or out."""
    safe = jnp.where(moving, delta, 1.0)
    side1 = side0 + 1.0

    def cross(side):  # an end on the side gives exactly 0 or 1, whatever the division rounds to
        t = (side - a) / safe
        return _snap(t, jnp.where(a == side, 0.0, jnp.where(b == side, 1.0, t)))

    ta, tb = cross(side0), cross(side1)
    inside = (a > side0) & (a <= side1)
    zero = jnp.zeros_like(ta)
    coef = jnp.where(moving, 1.0 / safe, 0.0)  # d t / d eps
    lo = jnp.where(moving, jnp.minimum(ta, tb), jnp.where(inside, 0.0, 1.0))
    hi = jnp.where(moving, jnp.maximum(ta, tb), jnp.where(inside, 1.0, 0.0))
    if eps == "x":
        return (lo, coef, zero), (hi, coef, zero)
    return (lo, zero, coef), (hi, zero, coef)


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
    xb, yb = jnp.roll(x, -1, axis=1)[g], jnp.roll(y, -1, axis=1)[g]
    ex, ey = xb - xa, yb - ya
    ed = (jnp.roll(d, -1, axis=1) - d)[g]
    left, low = px0[:, None], py0[:, None]  # the squares, (F, 1, K, K)
    right = left + 1.0
    mx, my = ex != 0, ey != 0
    u0 = xa - left  # the edge's start, from the square's left side (pixels)
    # the edge, clipped to the square (Liang-Barsky) with ties settled by the perturbation
    tx0, tx1 = _clip(xa, ex, xb, left, mx, "x")
    ty0, ty1 = _clip(ya, ey, yb, low, my, "y")
    zero = jnp.zeros_like(tx0[0])
    t0 = _max(_max(tx0, ty0), (zero, zero, zero))
    t1 = _min(_min(tx1, ty1), (zero + 1.0, zero, zero))
    span = tuple(p - q for p, q in zip(t1, t0, strict=True))
    length = jnp.where(_gt(span, (zero, zero, zero)), span[0], 0.0)
    t0 = t0[0]
    # Phi(t) = u (f - gx u / 2) along the edge, with u = u0 + t ex and f = d_a + t (d_b - d_a):
    # quadratic in t, so Simpson's rule is exact
    gxe = gx[:, None, None, None]

    def phi(t):
        u = u0 + t * ex
        return u * (da + t * ed - 0.5 * gxe * u)

    simpson = (phi(t0) + 4.0 * phi(t0 + 0.5 * length) + phi(t0 + length)) / 6.0
    total = jnp.sum(ey * length * simpson, axis=1)
    # the right side x = px0 + 1 (+ eps_x) lies inside an edge's half-plane where
    # ex (y - y_a) - ey (px0 + 1 - x_a) >= 0: a bound on y for a slanted edge
    # (an end on the side gives its own row exactly)
    safe_x = jnp.where(mx, ex, 1.0)
    slope = ey / safe_x
    bound = ya + ey * ((right - xa) / safe_x)
    bound = _snap(bound, jnp.where(xa == right, ya, jnp.where(xb == right, yb, bound)))
    inf = jnp.full_like(bound, jnp.inf)
    zb = jnp.zeros_like(bound)
    y_lo = (jnp.where(ex > 0, bound, -inf), jnp.where(ex > 0, slope, 0.0), zb)
    y_hi = (jnp.where(ex < 0, bound, inf), jnp.where(ex < 0, slope, 0.0), zb)
    y_lo = _over_edges(_max, y_lo)
    y_hi = _over_edges(_min, y_hi)
    # a vertical edge: the shifted side is inside its half-plane or not
    shifted_out = ((ey > 0) & (xa <= right)) | ((ey < 0) & (xa > right))
    empty = jnp.any(~mx & shifted_out, axis=1)
    zs, ones = jnp.zeros_like(py0), jnp.ones_like(py0)
    lo = _max(y_lo, (py0, zs, ones))
    hi = _min(y_hi, (py0 + 1.0, zs, ones))
    gap = tuple(p - q for p, q in zip(hi, lo, strict=True))
    open_ = _gt(gap, (zs, zs, zs)) & ~empty
    seg = jnp.where(open_, gap[0], 0.0)
    mid = jnp.where(open_, 0.5 * (lo[0] + hi[0]), py0)
    return total + seg * (f_mid + gy[e] * mid)
