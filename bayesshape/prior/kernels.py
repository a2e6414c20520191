"""Positive-definite kernels for Gaussian-process shape models.

Every kernel is matrix valued with a diagonal 3 x 3 value: ``k(x, y) = diag(k_x, k_y, k_z)``
(the deformation along each axis is its own Gaussian process). A scalar kernel used
as a shape kernel is isotropic: the same value on all three axes.

Kernels combine with ``+`` (sum), ``*`` (product of kernels, or scaling by a
number) and can be evaluated with :meth:`Kernel.diagonal_matrix` on point sets.

Example:
    >>> from bayesshape import kernels
    >>> k = kernels.GaussianKernel(scale=9.0, length=80.0) + kernels.GaussianKernel(1.0, 20.0)
    >>> k = kernels.multiscale([9.0, 1.0], [80.0, 20.0])   # the same
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import as_positive

__all__ = [
    "Kernel",
    "GaussianKernel",
    "SumKernel",
    "ProductKernel",
    "ScaledKernel",
    "DiagonalKernel",
    "multiscale",
]


def _sqdist(x, y):
    d = x[:, None, :] - y[None, :, :]
    return jnp.sum(d * d, axis=-1)


class Kernel(eqx.Module):
    """Base class. Subclasses implement :meth:`diagonal_matrix`."""

    def diagonal_matrix(self, x: Float[Array, "n 3"], y: Float[Array, "m 3"]) -> Float[Array, "n m 3"]:
        """Per-axis kernel values ``k_a(x_i, y_j)``, shape ``(n, m, 3)``."""
        raise NotImplementedError

    def variance(self, x: Float[Array, "n 3"]) -> Float[Array, "n 3"]:
        """Per-axis prior variance at each point, ``k_a(x_i, x_i)`` (mm^2)."""
        return jnp.diagonal(self.diagonal_matrix(x, x), axis1=0, axis2=1).T

    @property
    def is_isotropic(self) -> bool:
        """True when all three axes share one scalar kernel."""
        return False

    def __add__(self, other):
        if not isinstance(other, Kernel):
            return NotImplemented
        return SumKernel(self, other)

    def __mul__(self, other):
        if isinstance(other, Kernel):
            return ProductKernel(self, other)
        if isinstance(other, (int, float)):
            return ScaledKernel(self, float(other))
        return NotImplemented

    __rmul__ = __mul__


class _ScalarKernel(Kernel):
    def scalar_matrix(self, x, y):
        raise NotImplementedError

    def diagonal_matrix(self, x, y):
        k = self.scalar_matrix(x, y)
        return jnp.broadcast_to(k[:, :, None], k.shape + (3,))

    def variance(self, x):
        k = jnp.diagonal(self.scalar_matrix(x, x))
        return jnp.broadcast_to(k[:, None], k.shape + (3,))

    @property
    def is_isotropic(self) -> bool:
        return True


class GaussianKernel(_ScalarKernel):
    """``k(x, y) = scale * exp(-|x - y|^2 / length^2)``, isotropic.

    Args:
        scale: variance at each point, mm^2 (the standard deviation of the
            deformation along each axis is ``sqrt(scale)`` mm).
        length: correlation length, mm (Scalismo's ``GaussianKernel(sigma)`` with
            ``sigma = length``).
    """

    scale: float = eqx.field(static=True)
    length: float = eqx.field(static=True)

    def __init__(self, scale: float, length: float):
        self.scale = as_positive(scale, "scale")
        self.length = as_positive(length, "length")

    def scalar_matrix(self, x, y):
        return self.scale * jnp.exp(-_sqdist(x, y) / self.length**2)

    def variance(self, x):
        return jnp.full(x.shape, self.scale, dtype=x.dtype)


class SumKernel(Kernel):
    """``k1 + k2``."""

    k1: Kernel
    k2: Kernel

    def diagonal_matrix(self, x, y):
        return self.k1.diagonal_matrix(x, y) + self.k2.diagonal_matrix(x, y)

    def variance(self, x):
        return self.k1.variance(x) + self.k2.variance(x)

    @property
    def is_isotropic(self) -> bool:
        return self.k1.is_isotropic and self.k2.is_isotropic


class ProductKernel(Kernel):
    """``k1 * k2`` (elementwise per axis; a product of PD kernels is PD)."""

    k1: Kernel
    k2: Kernel

    def diagonal_matrix(self, x, y):
        return self.k1.diagonal_matrix(x, y) * self.k2.diagonal_matrix(x, y)

    def variance(self, x):
        return self.k1.variance(x) * self.k2.variance(x)

    @property
    def is_isotropic(self) -> bool:
        return self.k1.is_isotropic and self.k2.is_isotropic


class ScaledKernel(Kernel):
    """``factor * k`` with ``factor > 0``."""

    kernel: Kernel
    factor: float = eqx.field(static=True)

    def __init__(self, kernel: Kernel, factor: float):
        self.kernel = kernel
        self.factor = as_positive(factor, "factor")

    def diagonal_matrix(self, x, y):
        return self.factor * self.kernel.diagonal_matrix(x, y)

    def variance(self, x):
        return self.factor * self.kernel.variance(x)

    @property
    def is_isotropic(self) -> bool:
        return self.kernel.is_isotropic


class DiagonalKernel(Kernel):
    """A 3 x 3 diagonal matrix-valued kernel from one scalar kernel per axis.

    Example:
        >>> k = DiagonalKernel(GaussianKernel(4.0, 50.0), GaussianKernel(4.0, 50.0),
        ...                    GaussianKernel(25.0, 100.0))   # more variation along z
    """

    kx: Kernel
    ky: Kernel
    kz: Kernel

    def diagonal_matrix(self, x, y):
        parts = [k.diagonal_matrix(x, y)[:, :, a] for a, k in enumerate((self.kx, self.ky, self.kz))]
        return jnp.stack(parts, axis=-1)

    def variance(self, x):
        parts = [k.variance(x)[:, a] for a, k in enumerate((self.kx, self.ky, self.kz))]
        return jnp.stack(parts, axis=-1)


def multiscale(scales, lengths) -> Kernel:
    """Sum of Gaussian kernels, one per ``(scale, length)`` pair (mm^2, mm)."""
    scales, lengths = list(scales), list(lengths)
    if len(scales) != len(lengths) or not scales:
        raise ValueError(
            f"scales and lengths: expected two non-empty lists of equal length, got {len(scales)} and {len(lengths)}"
        )
    k: Kernel = GaussianKernel(scales[0], lengths[0])
    for s, ell in zip(scales[1:], lengths[1:]):
        k = k + GaussianKernel(s, ell)
    return k
