"""Running NumPyro under bayesshape's numerical settings."""

from __future__ import annotations

import jax

__all__ = ["numpyro_promotion"]


def numpyro_promotion():
    """NumPyro's internals rely on JAX's standard dtype and rank promotion; run them under it even
    when the caller has made promotion strict (bayesshape's own code is strict-clean)."""
    import contextlib

    stack = contextlib.ExitStack()
    stack.enter_context(jax.numpy_dtype_promotion("standard"))
    stack.enter_context(jax.numpy_rank_promotion("allow"))
    return stack
